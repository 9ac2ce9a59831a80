"""Anomaly injection: scripted changes of the world that test how the agent copes with surprises.

An :class:`AnomalyInjector` is called right before each skill call of an episode
(:meth:`AnomalyInjector.before_skill`) and, once per episode, changes the simulator's ground
truth behind the agent's back::

    injector = AnomalyInjector(env.backend, env.robot, InjectionConfig(kind="move", seed=3))
    record = injector.before_skill("find", {"object": "duck", "room": ""}, t=12.4)
    # None, or {"t", "kind", "object", "skill", "detail", "recoverable"} (also in injector.injected)

Kinds (:data:`INJECTIONS`):

* ``move``: at the first ``find(X)`` for an object ``X`` already named in an earlier skill call
  of the episode (an earlier ``find``/``pick``/``place``/``look_at`` of it: the agent has looked
  for or handled it, so its memory holds a location), ``X`` moves to a free spot on another
  surface (never the drawer), on the near part the arm reaches from the place's stand pose,
  out of view of the robot's camera at that moment (checked by rendering it); surfaces in rooms
  other than the robot's come first, the surface ``X`` started the episode on last. Memory then
  says "X is at P" while ``X`` is elsewhere, out of sight. The standard plans find an object
  twice in the ``memory`` family (after hiding it in the drawer) and the ``recall`` family (after
  moving it away); in ``place`` and ``fetch`` the agent has not seen the object before its one
  ``find``, so ``move`` fires there only when a failure makes the agent find it again.
  Recoverable: a search finds ``X`` on its new surface.
* ``remove``: same trigger; ``X`` is taken out of the house (below the floor, far outside the
  walls, where it falls freely): no search finds it and nothing can reach it. Not recoverable.
* ``grasp``: at the first ``pick(X)`` of an object resting on a surface, ``X`` slides on that
  surface (upright, same heading, clear of other objects, within the arm's reach from the
  place's stand pose, in view of the camera if it is now) so that a top-down grasp planned at its
  old position closes on air and the pick fails with ``grasp_failed``. Preferred: out of reach
  of the open fingers at any hand heading (7 cm from the grasp point, plus a margin for estimate
  errors), usually 10-12 cm; where that does not fit, out of reach of the fingers at the
  headings the pick can choose (across the narrow side of a long object; within 45 degrees of
  the base's heading for a square one), usually 6-9 cm. Looking at the place again and retrying can
  succeed. Recoverable.
* ``none``: never injects.

Only objects named in the skill's arguments are touched, never a held object. A kind whose
precondition does not hold at a candidate call (the object is held or not on a surface, no free
spot fits, every free spot is in view for ``move`` or hidden for ``grasp``) leaves the world as it
was and waits for the next candidate call. Objects are put down through the backend's resting
logic, then the world settles for :data:`SETTLE_S` simulated seconds; the episode clock does not
advance.

This is evaluation machinery: it reads and changes simulator ground truth and is never used by
memory or perception.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mnemobot.perception.types import Pose
from mnemobot.sim.layout import Rect

if TYPE_CHECKING:
    from mnemobot.sim.backend import PyBulletBackend
    from mnemobot.sim.robot import SimRobot

__all__ = ["INJECTIONS", "SETTLE_S", "AnomalyInjector", "InjectionConfig"]

INJECTIONS = ("move", "remove", "grasp", "none")
"""Anomaly kinds an :class:`InjectionConfig` may name."""

SETTLE_S = 0.1
"""Simulated seconds of physics after a change (the episode clock does not advance)."""

# Top-down gripper around its grasp point, hand frame (x along the hand's heading, y the closing
# axis), open: the fingers span |x| <= 1.4 cm, |y| <= 7 cm; widened by 1 cm for estimate errors.
FINGER_HALF = (0.024, 0.08)
GRASP_REACH = 0.085  # the open fingers at any heading, 1.5 cm widened for estimate errors
SHIFT_LENGTHS = tuple(round(0.06 + 0.005 * i, 3) for i in range(17))  # 6 .. 14 cm, shortest first
SHIFT_ANGLES = tuple(math.radians(a) for a in range(0, 360, 10))
SEEN_PIXELS = 20  # perception needs this many pixels of an object
VIEW_PIXELS = 40  # pixels of a shifted object that count as well in view
VIEW_TRIES = 8  # spots rendered to confirm they stay in view before taking the best one regardless
REMOVED_AT = (-25.0, -25.0, -5.0)  # below the floor, far outside the house


@dataclass(frozen=True)
class InjectionConfig:
    """``kind``: one of :data:`INJECTIONS`; ``seed``: chooses among equally good destinations."""

    kind: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INJECTIONS:
            raise ValueError(f"unknown injection kind {self.kind!r}; known: {', '.join(INJECTIONS)}")


class AnomalyInjector:
    """Injects at most one anomaly of ``config.kind`` per episode; see the module docstring.

    Build one per episode, after the environment's reset. ``avoid``: places never used as a
    destination (e.g. the task's receptacle, so that a move does not complete the task).
    """

    def __init__(self, backend: PyBulletBackend, robot: SimRobot, config: InjectionConfig | None = None,
                 avoid: Iterable[str] = ()) -> None:
        self.backend = backend
        self.robot = robot
        self.config = config or InjectionConfig()
        self.avoid = frozenset(avoid)
        self.injected: list[dict[str, Any]] = []
        self._rng = np.random.default_rng(self.config.seed)
        self._named: set[str] = set()
        self._start: dict[str, str | None] | None = None

    @property
    def done(self) -> bool:
        """Whether this episode's anomaly has been injected."""
        return bool(self.injected)

    # -- the hook ----------------------------------------------------------------------------------
    def before_skill(self, skill: str, args: dict[str, str], t: float) -> dict[str, Any] | None:
        """Called right before ``skill(**args)`` runs at episode time ``t`` (s).

        Returns the record of the anomaly injected now (also appended to :attr:`injected`), or None.
        """
        labels = set(self.backend.object_labels())
        if self._start is None:  # the world as the episode began, before any skill moved it
            self._start = {lb: self._place(lb) for lb in labels}
        obj = args.get("object", "")
        record = None
        if not self.done and obj in labels and not self.backend.is_held(obj):
            kind = self.config.kind
            if kind in ("move", "remove") and skill == "find" and obj in self._named:
                record = self._move(obj, t, skill) if kind == "move" else self._remove(obj, t, skill)
            elif kind == "grasp" and skill == "pick":
                record = self._shift(obj, t, skill)
        self._named.update(v for v in args.values() if v in labels)
        if record is not None:
            self.backend.settle(SETTLE_S)
            self.robot._frame = None  # a frame cached at this instant predates the change
            self.injected.append(record)
        return record

    # -- kinds -------------------------------------------------------------------------------------
    def _move(self, obj: str, t: float, skill: str) -> dict[str, Any] | None:
        backend, layout = self.backend, self.backend.layout
        current = self._place(obj)
        start = (self._start or {}).get(obj)
        robot_room = backend.robot_room()
        candidates = [
            spec.name for spec in layout.places
            if spec.relation == "on" and spec.spawn and spec.name != current and spec.name not in self.avoid
        ]
        order = self._rng.permutation(len(candidates))
        # rooms other than the robot's first (walls hide them), then the robot's own room; the
        # object's starting place only when nothing else is free and out of sight
        ranked = sorted((candidates[i] for i in order),
                        key=lambda p: (p == start, layout.room_of_place(p) == robot_room))
        before = self.backend.object_pose(obj)
        for place in ranked:
            xy = backend.free_spot(place, self._rng)
            if xy is None:
                continue
            backend.put_object(obj, place, xy_offset=xy, yaw=before.yaw)
            if obj in self._visible():
                continue
            return self._record(t, "move", obj, skill, True, {
                "from": current, "to": place, "position": _rounded(backend.object_pose(obj).position),
            })
        backend.teleport_object(obj, before)  # nowhere out of sight: leave it, try at a later call
        return None

    def _remove(self, obj: str, t: float, skill: str) -> dict[str, Any]:
        current = self._place(obj)
        index = self.backend.object_labels().index(obj)
        pose = self.backend.object_pose(obj)
        at = np.array(REMOVED_AT) + [-0.5 * index, 0.0, 0.0]
        self.backend.teleport_object(obj, Pose(at, pose.quaternion))
        return self._record(t, "remove", obj, skill, False, {"from": current, "to": None,
                                                              "position": _rounded(at)})

    def _shift(self, obj: str, t: float, skill: str) -> dict[str, Any] | None:
        backend, layout = self.backend, self.backend.layout
        where = backend.place_of(obj)
        if where is None or where[1] != "on":
            return None
        place = where[0]
        spec = layout.place_spec(place)
        surface = backend.place_surface(place)
        lo, hi = backend.object_aabb(obj)
        centre = (lo + hi) / 2
        pose = backend.object_pose(obj)
        half_obj = backend.object_extent(obj)[:2] / 2
        stand = layout.stand_pose(spec)
        heading = np.array([math.cos(stand[2]), math.sin(stand[2])])
        arm = np.array(stand[:2]) + float(self.robot.spec.arm_mount.position[0]) * heading
        fingers = _finger_corners(centre[:2], half_obj, pose.yaw, stand[2])
        others = [_box(*backend.object_aabb(o)) for o in backend.object_labels()
                  if o != obj and (backend.place_of(o) or ("",))[0] == place]
        surface_half = np.array(spec.surface_size) / 2
        loose = (0.04, float(np.linalg.norm(half_obj)) + 0.01,
                 (layout.spawn_reach[0] - 0.03, layout.spawn_reach[1] + 0.04))
        spawn_like = (layout.spawn_gap - 0.05, layout.spawn_margin, layout.spawn_reach)
        closer = (0.04, layout.spawn_margin, layout.spawn_reach)
        # (grasp clear of the old spot whatever the hand's heading?, gap to other objects' boxes,
        # margin of the centre from the surface edge, reach from the arm at the stand pose)
        tiers = [(True, *spawn_like), (True, *closer), (False, *spawn_like), (False, *closer),
                 (True, *loose), (False, *loose)]
        found: list[tuple[int, float, np.ndarray, np.ndarray]] = []
        for length in SHIFT_LENGTHS:
            for angle in SHIFT_ANGLES:
                new = centre[:2] + length * np.array([math.cos(angle), math.sin(angle)])
                local = surface.inverse().apply(np.array([new[0], new[1], surface.position[2]]))[:2]
                slack = float(np.min(surface_half - np.abs(local)))
                reach = float(np.linalg.norm(new - arm))
                body = Rect(tuple(new), tuple(2 * half_obj), pose.yaw)
                clear_any = _distance_to_box(centre[:2], new, half_obj, pose.yaw) >= GRASP_REACH
                clear_aimed = clear_any or not _overlaps_any(body.corners(), fingers)
                for rank, (any_heading, gap, margin, (near, far)) in enumerate(tiers):
                    if slack < margin or not near <= reach <= far:
                        continue
                    if not (clear_any if any_heading else clear_aimed):
                        continue
                    grown = Rect(tuple(new), tuple(2 * half_obj + 2 * gap), pose.yaw)
                    if any(grown.overlaps(o) for o in others):
                        continue
                    found.append((rank, length, local, new))
                    break
        if not found:
            return None
        ties = self._rng.permutation(len(found))
        shown = self._pixels(obj)
        in_view = shown >= SEEN_PIXELS  # in view now: keep it in view, so that looking again finds it
        wanted = min(shown, VIEW_PIXELS)
        top = float(hi[2])
        seen = self._unoccluded([_box_top(new, half_obj, pose.yaw, top) for *_, new in found], obj) if in_view \
            else np.ones(len(found), dtype=bool)
        order = sorted(range(len(found)), key=lambda i: (not seen[i], found[i][0], found[i][1], ties[i]))
        if not in_view:  # the pick is planned from memory alone: any spot will do
            best = found[order[0]][2]
            backend.put_object(obj, place, xy_offset=(float(best[0]), float(best[1])), yaw=pose.yaw)
            return self._shift_record(t, obj, skill, place, centre)
        for i in order[:VIEW_TRIES]:
            if not seen[i]:
                break
            local = found[i][2]
            backend.put_object(obj, place, xy_offset=(float(local[0]), float(local[1])), yaw=pose.yaw)
            if self._pixels(obj) >= wanted:
                return self._shift_record(t, obj, skill, place, centre)
        # every free spot is hidden from where the robot looks: a second look would not find the
        # object, so nothing is injected now (a later pick may do)
        backend.teleport_object(obj, pose)
        return None

    def _shift_record(self, t: float, obj: str, skill: str, place: str, centre: np.ndarray) -> dict[str, Any]:
        lo, hi = self.backend.object_aabb(obj)
        moved = (lo[:2] + hi[:2]) / 2
        return self._record(t, "grasp", obj, skill, True, {
            "place": place, "from_xy": _rounded(centre[:2]), "to_xy": _rounded(moved),
            "shift_m": round(float(np.linalg.norm(moved - centre[:2])), 4),
        })

    # -- helpers -----------------------------------------------------------------------------------
    def _place(self, obj: str) -> str | None:
        where = self.backend.place_of(obj)
        return None if where is None else where[0]

    def _pixels(self, obj: str) -> int:
        """How many pixels of ``obj`` the robot's camera sees right now (rendered ground truth)."""
        _, _, instances, _ = self.backend.render(self.robot.camera_pose())
        return int(np.count_nonzero(instances == self.backend.instance_id(obj)))

    def _unoccluded(self, tops: list[np.ndarray], obj: str) -> np.ndarray:
        """Per group of points ``(K, 3)``: whether most are in the camera's image with nothing in
        front of them but ``obj`` (one rendered depth image of the world as it is now)."""
        pose = self.robot.camera_pose()
        _, depth, instances, _ = self.backend.render(pose)
        k = self.backend.intrinsics
        own = self.backend.instance_id(obj)
        out = np.zeros(len(tops), dtype=bool)
        for i, points in enumerate(tops):
            cam = pose.inverse().apply(points)
            z = np.maximum(cam[:, 2], 1e-6)
            u = np.round(k.fx * cam[:, 0] / z + k.cx).astype(int)
            v = np.round(k.fy * cam[:, 1] / z + k.cy).astype(int)
            inside = (cam[:, 2] > 0.05) & (u >= 2) & (u < k.width - 2) & (v >= 2) & (v < k.height - 2)
            u, v = np.clip(u, 0, k.width - 1), np.clip(v, 0, k.height - 1)
            d = depth[v, u]
            clear = (d <= 0) | (d >= cam[:, 2] - 0.02) | (instances[v, u] == own)
            out[i] = np.count_nonzero(inside & clear) >= 0.6 * len(points)
        return out

    def _visible(self) -> set[str]:
        """Labels in the robot's camera view right now (rendered ground truth)."""
        _, _, _, labels = self.backend.render(self.robot.camera_pose())
        return set(labels.values())

    @staticmethod
    def _record(t: float, kind: str, obj: str, skill: str, recoverable: bool,
                detail: dict[str, Any]) -> dict[str, Any]:
        return {"t": float(t), "kind": kind, "object": obj, "skill": skill, "detail": detail,
                "recoverable": recoverable}


def _finger_corners(centre: np.ndarray, half: np.ndarray, yaw: float, base_yaw: float) -> np.ndarray:
    """Corners ``(H, 4, 2)`` of where the open fingers of a top-down grasp at ``centre`` may close.

    The pick closes the fingers across the object's narrow side as it estimates it: for a long
    object the hand heads along its long side; for a roughly square one, at the multiple of 90
    degrees from the object's heading nearest the base's, so within 45 degrees of the base's.
    Both cases are covered, with 15 degrees of slack on the long side's heading.
    """
    major = yaw if half[0] >= half[1] else yaw + math.pi / 2
    headings = [base_yaw + math.radians(a) for a in range(-45, 46, 5)]
    headings += [major + math.radians(a) for a in range(-15, 16, 5)]
    return np.array([Rect(tuple(centre), (2 * FINGER_HALF[0], 2 * FINGER_HALF[1]), h).corners() for h in headings])


def _axes(corners: np.ndarray) -> np.ndarray:
    """Unit edge directions of rectangles ``(..., 4, 2)`` -> ``(..., 2, 2)``."""
    edges = np.stack([corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 1, :]], axis=-2)
    return edges / np.linalg.norm(edges, axis=-1, keepdims=True)


def _overlaps_any(body: np.ndarray, rects: np.ndarray) -> bool:
    """Whether rectangle ``body`` (4, 2) overlaps any of ``rects`` (H, 4, 2) (separating axes)."""
    axes = np.concatenate([_axes(rects), np.broadcast_to(_axes(body), (len(rects), 2, 2))], axis=1)  # (H, 4, 2)
    a = np.einsum("ak,hjk->hja", body, axes)  # (H, 4 axes, 4 corners)
    b = np.einsum("hak,hjk->hja", rects, axes)
    separated = (a.max(axis=2) < b.min(axis=2)) | (b.max(axis=2) < a.min(axis=2))
    return bool(np.any(~separated.any(axis=1)))


def _distance_to_box(point: np.ndarray, centre: np.ndarray, half: np.ndarray, yaw: float) -> float:
    """Distance (m) from ``point`` to the rectangle at ``centre`` with ``half`` extents, heading ``yaw``."""
    c, s = math.cos(yaw), math.sin(yaw)
    d = np.array([[c, s], [-s, c]]) @ (np.asarray(point) - centre)
    return float(np.linalg.norm(d - np.clip(d, -half, half)))


def _box(lo: np.ndarray, hi: np.ndarray) -> Rect:
    """The floor rectangle of a world axis-aligned box."""
    return Rect((float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2), (float(hi[0] - lo[0]), float(hi[1] - lo[1])))


def _box_top(centre: np.ndarray, half: np.ndarray, yaw: float, top: float) -> np.ndarray:
    """Points ``(5, 3)`` on the top of a box: its centre and half way to each corner."""
    corners = Rect(tuple(centre), tuple(half), yaw).corners()  # a box of half the size: half way out
    return np.column_stack([np.vstack([centre, corners]), np.full(5, top)])


def _rounded(v: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in v]
