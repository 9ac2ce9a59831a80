"""The scripted expert's eyes: simulator ground truth.

Only the scripted expert uses this module. The agent's memory and perception
never do (they cannot import :mod:`mnemobot.sim`).

The expert is the same planner and skills as the agent, with :class:`GroundTruthLocator` in place
of perception: ``mnemobot run --agent expert``.
"""

from __future__ import annotations

import math

import numpy as np

from mnemobot.control.site import SiteMap
from mnemobot.memory.types import ObjectEstimate
from mnemobot.perception.types import Observation, Pose
from mnemobot.sim.backend import PyBulletBackend

__all__ = ["GroundTruthLocator"]


class GroundTruthLocator:
    """Answers "where is X?" from the simulator's object poses (expert demonstrations only)."""

    def __init__(self, backend: PyBulletBackend, site: SiteMap) -> None:
        self.backend, self.site = backend, site

    def update(self, obs: Observation, place: str | None = None) -> None:
        """Ground truth needs no frames."""

    def locate(self, label: str) -> ObjectEstimate | None:
        if label not in self.backend.object_labels() or self.backend.is_held(label):
            return None
        lo, hi = self.backend.object_aabb(label)
        pose = self.backend.object_pose(label)
        ext = self.backend.object_extent(label)  # along the object's own axes
        on = self.backend.place_of(label)
        major_is_x = ext[0] >= ext[1]
        drift = self._drift()  # the robot acts where it believes it is: give truth in that frame
        centre = drift.apply(((lo + hi) / 2)[None])[0]
        return ObjectEstimate(
            label=label,
            position=centre,
            top_z=float(hi[2]),
            extent=np.array([max(ext[0], ext[1]), min(ext[0], ext[1]), hi[2] - lo[2]]),
            yaw=float(pose.yaw + drift.yaw if major_is_x else pose.yaw + drift.yaw + math.pi / 2),
            place=on[0] if on else None,
            time=self.backend.time,
        )

    def known_labels(self) -> set[str]:
        return set(self.backend.object_labels())

    def _drift(self) -> Pose:
        """World -> the robot's believed world (identity without odometry noise)."""
        robot = getattr(self.backend, "robot", None)
        if robot is None:
            return Pose()
        true, believed = robot.base_pose, robot.believed_base_pose()
        t = Pose.from_xyz_yaw(float(true[0]), float(true[1]), 0.0, float(true[2]))
        b = Pose.from_xyz_yaw(float(believed[0]), float(believed[1]), 0.0, float(believed[2]))
        return b @ t.inverse()
