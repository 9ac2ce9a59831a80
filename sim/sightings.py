"""What the camera saw, from simulator ground truth: the gold source of memory questions.

:class:`SightingLog` is a frame hook for :func:`~mnemobot.agent.episode.run_episode`. For every
camera frame it records which movable objects the camera actually saw (their instance mask has at
least ``min_pixels`` pixels), where each one truly was at that moment (the centre of its pybullet
bounding box, world frame) and what it rested on or in; the drawer's true opening and whether the
drawer was in view; and, for checking, every object's true centre and the object in the hand.

Gold answers derived from it depend only on what the camera saw, never on changes it could not
see. This is ground truth: it is for scoring and gold generation only, never for memory or
perception.

Usage::

    log = SightingLog(env.backend)
    run_episode(cfg, env=env, frame_hook=log)
    log.last_sighting("mug", t=30.0)     # (time, centre, place) of the last sighting by t = 30 s

Times are episode (sim) seconds, the ``timestamp`` of the frames.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DRAWER_OPEN_M",
    "GLIMPSE_PIXELS",
    "MIN_PIXELS",
    "MOVE_M",
    "REFERENCE_AREA",
    "FrameRecord",
    "Sighting",
    "SightingLog",
]

MIN_PIXELS = 40
"""An object counts as seen with at least this many mask pixels in a 320x240 frame (twice what
perception needs to extract it: the head camera shows a 5 cm cube on a table about 1 m away with
some 60-200 pixels, so a stricter threshold would leave most objects unseen)."""
REFERENCE_AREA = 320 * 240
"""Image area (pixels) ``min_pixels`` refers to; larger images scale it up by their area. Smaller
ones keep :data:`MIN_PIXELS`: perception's extractor needs a fixed count of pixels whatever the
image size (at 160x120 the scaled threshold, 10, would be half of it, and gold would count as
seen what no memory could)."""
GLIMPSE_PIXELS = 20
VACANT_FRAMES = 2
"""Frames that must show a spot empty before the camera has established it (one frame at the edge
of a view is a glimpse, not a look)."""
VACANT_TOLERANCE_M = 0.05
"""A spot counts as seen (not hidden) when the depth there is at most this much nearer than the
spot (the old box centre lies a few cm above the surface the camera then sees)."""
"""Fewer pixels than a sighting, yet enough for perception to extract an object (its default)."""
DRAWER_OPEN_M = 0.02
"""The drawer counts as open beyond this opening (m)."""
MOVE_M = 0.15
"""A sighting farther than this from the first one shows the object moved (m)."""

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Sighting:
    """One object seen in one frame: time (s), true box centre (world, m), the place it rested
    on or in (None: none, e.g. on the floor) and its mask pixel count."""

    t: float
    label: str
    centre: Vec3
    place: str | None
    pixels: int


@dataclass(frozen=True)
class FrameRecord:
    """Ground truth at one camera frame.

    ``pixels``: mask pixel count of every movable object in view (held ones included);
    ``centres``: true box centre of every object; ``held``: the objects in the hand;
    ``drawer_opening`` (m) and ``drawer_visible`` (the drawer's mask has ``min_pixels``);
    ``base_pose``: the robot's ``(x, y, yaw)``.
    """

    t: float
    pixels: dict[str, int]
    centres: dict[str, Vec3]
    held: frozenset[str]
    drawer_opening: float
    drawer_visible: bool
    base_pose: Vec3 | None = None
    vacated: frozenset[tuple[str, Vec3]] = frozenset()
    """``(object, spot)``: a spot where the object was seen before, in view and unhidden in this
    frame while the object is elsewhere: the camera sees that spot empty (what tells a moved
    object from a second one that looks the same)."""


def _vec(v: Iterable[float]) -> Vec3:
    x, y, z = (float(a) for a in v)
    return (x, y, z)


class SightingLog:
    """Frame hook recording what the camera saw (see the module docstring).

    ``backend``: the world's ground truth (a :class:`~mnemobot.sim.backend.PyBulletBackend`); when
    None it is taken from the skill context's robot on the first frame. ``min_pixels``: pixels of
    a sighting, default :data:`MIN_PIXELS` scaled by the image area over 320x240 (never below it).
    """

    def __init__(self, backend: Any = None, min_pixels: int | None = None,
                 glimpse_pixels: int = GLIMPSE_PIXELS) -> None:
        if min_pixels is not None and min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
        self.backend = backend
        self.min_pixels = min_pixels
        self.glimpse_pixels = glimpse_pixels
        self.frames: list[FrameRecord] = []
        self.sightings: dict[str, list[Sighting]] = {}
        self._times: list[float] = []
        self._sight_times: dict[str, list[float]] = {}
        self._labels: tuple[str, ...] = ()
        self._drawer_place: str | None = None
        self._drawer_iid: int | None = None
        self._spots: dict[str, list[Vec3]] = {}
        self._extent: dict[str, tuple[float, ...]] = {}
        self._name_of: dict[int, str] = {}
        self._category: dict[str, str] = {}

    # -- recording ----------------------------------------------------------------------------------
    def _bind(self, obs: Any, ctx: Any) -> None:
        if self.backend is None:
            self.backend = ctx.robot.backend
        b = self.backend
        self._labels = tuple(b.object_labels())
        if self.min_pixels is None:
            h, w = np.asarray(obs.instances).shape[:2]
            self.min_pixels = max(MIN_PIXELS, int(round(MIN_PIXELS * h * w / REFERENCE_AREA)))
        self._drawer_place = b.drawer_place()
        if self._drawer_place is not None:
            furniture = b.layout.place_spec(self._drawer_place).furniture
            self._drawer_iid = b.instance_id(furniture)
        layout = getattr(b, "layout", None)
        for label in self._labels:
            self.sightings.setdefault(label, [])
            self._sight_times.setdefault(label, [])
            try:  # look-alike objects render with one category label: tell them apart by body
                self._name_of[int(b.instance_id(label))] = label
            except (AttributeError, KeyError):
                pass
            try:
                self._category[label] = layout.object_spec(label).detected_as
            except (AttributeError, KeyError):
                self._category[label] = label
            try:
                self._extent[label] = tuple(float(v) for v in b.object_extent(label))
            except (AttributeError, KeyError):
                pass

    def __call__(self, obs: Any, ctx: Any = None) -> None:
        """Record one camera frame (``obs`` with ``instances`` and ``labels``); a frame with the
        time of the previous one is the same frame and is ignored. When the robot perceives
        through a sensor model, its exact frame is read instead of ``obs``."""
        obs = self._true_frame(obs, ctx)
        if obs.instances is None:
            return
        t = float(obs.timestamp)
        if self._times and t <= self._times[-1]:
            return
        if not self._labels:
            self._bind(obs, ctx)
        b = self.backend
        min_pixels = self.min_pixels or MIN_PIXELS
        ids, counts = np.unique(np.asarray(obs.instances), return_counts=True)
        count_of = {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i != 0}
        movable = set(self._labels)
        held = {lb for lb in self._labels if b.is_held(lb)}
        body_held = getattr(ctx, "held", None)
        if body_held:
            held.add(str(body_held))
        centres: dict[str, Vec3] = {}
        for label in self._labels:
            lo, hi = b.object_aabb(label)
            centres[label] = _vec((np.asarray(lo) + np.asarray(hi)) / 2)
        pixels: dict[str, int] = {}
        for iid, n in count_of.items():
            label = self._name_of.get(iid) or obs.labels.get(iid)
            if label in movable:
                pixels[label] = pixels.get(label, 0) + n
        for label, n in pixels.items():
            if n < min_pixels or label in held:
                continue
            where = b.place_of(label)
            s = Sighting(t, label, centres[label], where[0] if where else None, n)
            self.sightings[label].append(s)
            self._sight_times[label].append(t)
            spots = self._spots.setdefault(label, [])
            if all(math.dist(s.centre, sp) > MOVE_M for sp in spots):
                spots.append(s.centre)
        drawer_px = count_of.get(self._drawer_iid, 0) if self._drawer_iid is not None else 0
        base = b.robot_base_pose()
        self.frames.append(FrameRecord(
            t=t, pixels=pixels, centres=centres, held=frozenset(held),
            drawer_opening=float(b.drawer_opening()), drawer_visible=drawer_px >= min_pixels,
            base_pose=None if base is None else _vec(base), vacated=self._vacated(obs, centres, pixels),
        ))
        self._times.append(t)

    def _vacated(self, obs: Any, centres: dict[str, Vec3], pixels: dict[str, int]) -> frozenset[tuple[str, Vec3]]:
        """Spots where an object was seen (its centre then) that project into this frame with
        nothing nearer in front, while the object itself is more than :data:`MOVE_M` away."""
        depth, pose, k = getattr(obs, "depth", None), getattr(obs, "camera_pose", None), getattr(obs, "intrinsics", None)
        if depth is None or pose is None or k is None:
            return frozenset()
        depth = np.asarray(depth, dtype=float)
        h, w = depth.shape[:2]
        world_to_cam = pose.inverse()
        out = set()
        for label, spots in self._spots.items():
            for spot in spots:
                if math.dist(spot, centres[label]) <= MOVE_M:
                    continue
                p = world_to_cam.apply(np.asarray(spot, dtype=float))
                if p[2] <= 0.1:
                    continue
                u, v = k.fx * p[0] / p[2] + k.cx, k.fy * p[1] / p[2] + k.cy
                if not (2 <= u < w - 2 and 2 <= v < h - 2):
                    continue
                # large enough at this range for a sighting, had the object been there
                ext = self._extent.get(label)
                if ext is not None and k.fx * k.fy * max(ext[0], ext[1]) * ext[2] / p[2] ** 2 < (self.min_pixels or MIN_PIXELS):
                    continue
                patch = depth[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3]
                patch = patch[np.isfinite(patch) & (patch > 0)]
                # the surface the object stood on is seen at (or behind) the spot: nothing hides it
                if patch.size and float(np.median(patch)) >= p[2] - VACANT_TOLERANCE_M:
                    out.add((label, spot))
        return frozenset(out)

    def vacated_between(self, label: str, spot: Vec3, t1: float, t2: float, frames: int = VACANT_FRAMES) -> bool:
        """Whether ``frames`` frames in ``(t1, t2]`` showed ``spot`` (where ``label`` was seen) empty."""
        n = sum(1 for f in self.frames_between(t1, t2)
                if any(lb == label and math.dist(sp, spot) <= MOVE_M for lb, sp in f.vacated))
        return n >= frames

    def _true_frame(self, obs: Any, ctx: Any) -> Any:
        """The simulator's exact render at ``obs``'s time (``obs`` itself when the robot offers none)."""
        robot = getattr(ctx, "robot", None) or getattr(self.backend, "robot", None)
        truth = getattr(robot, "true_observation", None)
        if truth is None:
            return obs
        frame = truth()
        return frame if frame.timestamp == obs.timestamp else obs

    # -- frames -------------------------------------------------------------------------------------
    @property
    def labels(self) -> tuple[str, ...]:
        """Labels of every movable object in the world."""
        return self._labels

    def category(self, label: str) -> str:
        """The class a detector reports for object ``label`` (shared by objects that look alike)."""
        return self._category.get(label, label)

    def look_alikes(self, label: str) -> tuple[str, ...]:
        """Every object (``label`` included) the camera cannot tell from ``label``."""
        cat = self.category(label)
        return tuple(lb for lb in self._labels if self.category(lb) == cat)

    @property
    def drawer(self) -> str | None:
        """Name of the drawer place (None: the world has none, or nothing was recorded)."""
        return self._drawer_place

    @property
    def start(self) -> float:
        return self._times[0] if self._times else 0.0

    @property
    def end(self) -> float:
        return self._times[-1] if self._times else 0.0

    def frame_at(self, t: float) -> FrameRecord | None:
        """The last frame at or before ``t``."""
        i = bisect.bisect_right(self._times, t) - 1
        return self.frames[i] if i >= 0 else None

    def frames_between(self, t1: float, t2: float) -> list[FrameRecord]:
        """Frames with ``t1 < t <= t2``."""
        return self.frames[bisect.bisect_right(self._times, t1):bisect.bisect_right(self._times, t2)]

    def gt_centre(self, label: str, t: float) -> Vec3 | None:
        """True box centre of ``label`` at the last frame at or before ``t``."""
        f = self.frame_at(t)
        return None if f is None else f.centres.get(label)

    def held_at(self, t: float) -> frozenset[str]:
        """Objects in the hand at the last frame at or before ``t``."""
        f = self.frame_at(t)
        return frozenset() if f is None else f.held

    def releases(self) -> list[tuple[float, str]]:
        """``(time, label)`` of every frame where an object left the hand."""
        out: list[tuple[float, str]] = []
        for a, b in zip(self.frames, self.frames[1:], strict=False):
            out += [(b.t, label) for label in sorted(a.held - b.held)]
        return out

    # -- sightings ----------------------------------------------------------------------------------
    def _upto(self, label: str, t: float) -> list[Sighting]:
        times = self._sight_times.get(label, [])
        return self.sightings.get(label, [])[:bisect.bisect_right(times, t)]

    def seen_objects(self, until: float) -> list[str]:
        """Labels seen at or before ``until``, sorted."""
        return sorted(lb for lb, times in self._sight_times.items() if times and times[0] <= until)

    def last_sighting(self, label: str, t: float) -> tuple[float, Vec3, str | None] | None:
        """``(time, centre, place)`` of the last sighting of ``label`` at or before ``t``."""
        seen = self._upto(label, t)
        if not seen:
            return None
        s = seen[-1]
        return s.t, s.centre, s.place

    def first_seen(self, label: str) -> float | None:
        times = self._sight_times.get(label)
        return times[0] if times else None

    def position_seen(self, label: str, t: float) -> Vec3 | None:
        """Centre at the last sighting at or before ``t`` (None: not seen by then)."""
        last = self.last_sighting(label, t)
        return None if last is None else last[1]

    def first_move(self, label: str) -> float | None:
        """Time of the first sighting more than :data:`MOVE_M` from the first sighting's centre
        (the first time the camera saw the object elsewhere), or None."""
        seen = self.sightings.get(label, [])
        if not seen:
            return None
        origin = seen[0].centre
        return next((s.t for s in seen[1:] if math.dist(s.centre, origin) > MOVE_M), None)

    def glimpses(self, label: str, t1: float, t2: float, min_pixels: int | None = None,
                 held: bool = True) -> list[float]:
        """Times of frames in ``(t1, t2]`` with at least ``min_pixels`` (default
        ``glimpse_pixels``) of ``label`` in view; ``held=False`` leaves out frames where it was in
        the hand. Any view counts: memory may take a glimpse, or an object in the hand before the
        robot knows it holds it, for a sighting."""
        need = self.glimpse_pixels if min_pixels is None else min_pixels
        return [f.t for f in self.frames_between(t1, t2)
                if f.pixels.get(label, 0) >= need and (held or label not in f.held)]

    def first_glimpse(self, label: str) -> float | None:
        """First frame with at least ``glimpse_pixels`` of ``label`` in view (held or not)."""
        g = self.glimpses(label, -math.inf, math.inf)
        return g[0] if g else None

    # -- containers ---------------------------------------------------------------------------------
    def container_state(self, name: str, t: float) -> str | None:
        """``"open"``/``"closed"`` of the drawer at the last frame at or before ``t`` (None: not a
        drawer of this world, or no frame yet)."""
        if name != self._drawer_place:
            return None
        f = self.frame_at(t)
        if f is None:
            return None
        return "open" if f.drawer_opening > DRAWER_OPEN_M else "closed"

    def container_known(self, name: str, t: float) -> bool:
        """Whether by ``t`` the drawer was in view or the robot had moved it."""
        if name != self._drawer_place:
            return False
        for f in self.frames:
            if f.t > t:
                return False
            if f.drawer_visible or f.drawer_opening > DRAWER_OPEN_M:
                return True
        return False

    # -- export -------------------------------------------------------------------------------------
    def to_dict(self, labels: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-safe record: settings, sightings per object and ground truth per frame."""

        def r(v: float) -> float:
            return round(float(v), 4)

        keep = list(self._labels if labels is None else labels)
        return {
            "min_pixels": self.min_pixels,
            "drawer": self._drawer_place,
            "categories": {lb: self.category(lb) for lb in keep if self.category(lb) != lb},
            "sightings": {lb: [[r(s.t), [r(v) for v in s.centre], s.place, s.pixels]
                               for s in self.sightings.get(lb, [])] for lb in keep},
            "frames": [{"t": r(f.t), "held": sorted(f.held), "drawer_opening": r(f.drawer_opening),
                        "drawer_visible": f.drawer_visible, "pixels": dict(sorted(f.pixels.items())),
                        "centres": {lb: [r(v) for v in f.centres[lb]] for lb in keep if lb in f.centres}}
                       for f in self.frames],
        }
