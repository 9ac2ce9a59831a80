"""The scripted expert's eyes and, for the memory-dependent families, its memory: ground truth.

Only the scripted expert uses this module. The agent's memory and perception
never do (they cannot import :mod:`mnemobot.sim`).

The expert is the same planner and skills as the agent, with :class:`GroundTruthLocator` in place
of perception: ``mnemobot run --agent expert``. The workcell families (``reopen_drawer``,
``put_block_back``, ``rearrange``) have instructions the symbolic planner does not parse ("the
drawer you closed"); for them the expert plays a script from :data:`EXPERT_SCRIPTS` instead. A
script is written once, at the episode start, from the truth it reads then (which drawer is open,
which patch the block stands on): the expert's stand-in for memory of the episode.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from mnemobot.control.site import SiteMap
from mnemobot.memory.types import ObjectEstimate
from mnemobot.perception.types import Observation, Pose
from mnemobot.sim.backend import PyBulletBackend
from mnemobot.sim.tasks import BESIDE, DRAWER_OPEN_MIN, Task
from mnemobot.sim.workcell import CENTRE_PATCH

__all__ = ["EXPERT_SCRIPTS", "ExpertCall", "GroundTruthLocator", "expert_script"]

ExpertCall = tuple[str, dict[str, str]]
"""One step of a script: a registered skill's name and its arguments."""


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


# -- scripts of the memory-dependent workcell families ---------------------------------------------------
def _button(backend: PyBulletBackend) -> str:
    lay = backend.layout
    for spec in lay.places:
        if lay.furniture_by_name(spec.furniture).kind == "button":
            return spec.name
    raise RuntimeError("the layout has no button")


def _press(button: str) -> list[ExpertCall]:
    return [("navigate_to", {"place": button}), ("press", {"button": button})]


def _move(label: str, place: str) -> list[ExpertCall]:
    """Find an object, pick it and put it on ``place``."""
    return [("find", {"object": label, "room": ""}), ("pick", {"object": label}),
            ("navigate_to", {"place": place}), ("look_at", {"target": place}),
            ("place", {"object": label, "receptacle": place, "relation": "on"})]


def _patch_of(backend: PyBulletBackend, label: str) -> str:
    where = backend.place_of(label)
    if where is None:
        raise RuntimeError(f"the {label} rests on no place at the start")
    return where[0]


def _reopen_drawer(backend: PyBulletBackend, task: Task) -> list[ExpertCall]:
    """Remember the drawer that is open now; close it, press the button, open that drawer again."""
    open_now = [d for d in backend.drawer_places() if backend.drawer_opening(d) > DRAWER_OPEN_MIN]
    if len(open_now) != 1:
        raise RuntimeError(f"expected one open drawer at the start, found {open_now}")
    drawer = open_now[0]
    return [("navigate_to", {"place": drawer}), ("close", {"container": drawer}), *_press(_button(backend)),
            ("navigate_to", {"place": drawer}), ("open", {"container": drawer})]


def _put_block_back(backend: PyBulletBackend, task: Task) -> list[ExpertCall]:
    """Remember the block's patch now; move it to the centre, press, put it back on that patch."""
    origin = _patch_of(backend, task.object)
    return [*_move(task.object, CENTRE_PATCH), *_press(_button(backend)), *_move(task.object, origin)]


def _rearrange(backend: PyBulletBackend, task: Task) -> list[ExpertCall]:
    """Remember which block stands on the centre patch now; move it to the coloured patch beside
    the other block, press, then move the other block to the centre."""
    labels = backend.object_labels()
    moved = next((lb for lb in labels if _patch_of(backend, lb) == CENTRE_PATCH), None)
    if moved is None:
        raise RuntimeError("no block on the centre patch at the start")
    other = next(lb for lb in labels if lb != moved)
    free = BESIDE[_patch_of(backend, other)]
    return [*_move(moved, free), *_press(_button(backend)), *_move(other, CENTRE_PATCH)]


EXPERT_SCRIPTS: dict[str, Callable[[PyBulletBackend, Task], list[ExpertCall]]] = {
    "reopen_drawer": _reopen_drawer,
    "put_block_back": _put_block_back,
    "rearrange": _rearrange,
}
"""Task family -> the expert's script, written from ground truth at the episode start."""


def expert_script(family: str, backend: PyBulletBackend, task: Task) -> list[ExpertCall] | None:
    """The expert's script for this episode (call right after the reset), or None when the
    family's instructions go through the planner."""
    make = EXPERT_SCRIPTS.get(family)
    return None if make is None else make(backend, task)
