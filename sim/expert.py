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
from mnemobot.perception.types import Observation
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
        on = self.backend.place_of(label)
        size = hi - lo
        yaw = pose.yaw if size[0] >= size[1] else pose.yaw + math.pi / 2
        return ObjectEstimate(
            label=label,
            position=np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2]),
            top_z=float(hi[2]),
            extent=np.array([max(size[0], size[1]), min(size[0], size[1]), size[2]]),
            yaw=float(yaw),
            place=on[0] if on else None,
            time=0.0,
        )

    def known_labels(self) -> set[str]:
        return set(self.backend.object_labels())
