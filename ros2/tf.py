"""A small TF buffer: static and dynamic transforms, chained and interpolated in time.

It holds what ``/tf`` and ``/tf_static`` carry (``tf2_msgs/TFMessage``) and answers
"where is frame ``source`` in frame ``target`` at time ``t``" by walking both frames up to
their common ancestor. Dynamic transforms are interpolated between the two samples around
``t`` (linear in translation, slerp in rotation); a sample is held for ``max_gap`` seconds past
the newest one and before the oldest one, as a robot's TF listener would wait for it.

Usage::

    buf = TFBuffer()
    buf.add(parent="map", child="base_link", t=0.1, pose=Pose(...))
    buf.add(parent="base_link", child="camera_link", t=0.0, pose=mount, static=True)
    cam_in_map = buf.lookup("map", "camera_link", t=0.15)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from mnemobot.perception.types import Pose, slerp

__all__ = ["TFBuffer", "TFError"]


class TFError(LookupError):
    """No transform between two frames at the asked time (unconnected frames, no sample near t)."""


@dataclass
class _Edge:
    parent: str
    static: bool
    times: list[float] = field(default_factory=list)
    poses: list[Pose] = field(default_factory=list)


class TFBuffer:
    """Transforms by child frame (each frame has one parent, as in tf2)."""

    def __init__(self, max_gap: float = 0.5, history_s: float | None = None) -> None:
        self.max_gap = max_gap
        self.history_s = history_s
        self._edges: dict[str, _Edge] = {}

    @property
    def frames(self) -> set[str]:
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def add(self, parent: str, child: str, t: float, pose: Pose, static: bool = False) -> None:
        """Record ``child``'s pose in ``parent`` at ``t`` (static: valid at every time)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if parent == child:
            raise TFError(f"transform from frame {child!r} to itself")
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            # A re-parented frame starts afresh (tf2 warns; a latest-wins graph is the useful reading).
            if self._creates_cycle(parent, child):
                raise TFError(f"transform {parent} -> {child} would make a loop in the TF tree")
            edge = self._edges[child] = _Edge(parent, static)
        if static:
            edge.times, edge.poses = [0.0], [pose]
            return
        if not edge.times or t >= edge.times[-1]:
            edge.times.append(t)
            edge.poses.append(pose)
        else:
            i = bisect.bisect_right(edge.times, t)
            edge.times.insert(i, t)
            edge.poses.insert(i, pose)
        if self.history_s is not None and edge.times[-1] - edge.times[0] > 2 * self.history_s:
            cut = bisect.bisect_left(edge.times, edge.times[-1] - self.history_s)
            del edge.times[:cut], edge.poses[:cut]

    def _creates_cycle(self, parent: str, child: str) -> bool:
        f, seen = parent, set()
        while f in self._edges and f not in seen:
            if f == child:
                return True
            seen.add(f)
            f = self._edges[f].parent
        return f == child

    def _at(self, child: str, t: float) -> Pose:
        e = self._edges[child]
        if e.static:
            return e.poses[0]
        times = e.times
        i = bisect.bisect_left(times, t)
        if i < len(times) and times[i] == t:
            return e.poses[i]
        if i == 0:
            if times[0] - t <= self.max_gap:
                return e.poses[0]
            raise TFError(f"no transform {e.parent} -> {child} at t={t:.3f}: the first is at {times[0]:.3f}")
        if i == len(times):
            if t - times[-1] <= self.max_gap:
                return e.poses[-1]
            raise TFError(f"no transform {e.parent} -> {child} at t={t:.3f}: the newest is at {times[-1]:.3f}")
        t0, t1 = times[i - 1], times[i]
        a = (t - t0) / (t1 - t0)
        p0, p1 = e.poses[i - 1], e.poses[i]
        return Pose(p0.position + a * (p1.position - p0.position), slerp(p0.quaternion, p1.quaternion, a))

    def _to_root(self, frame: str, t: float) -> tuple[list[str], list[Pose]]:
        chain, poses, seen = [frame], [], {frame}
        f = frame
        while f in self._edges:
            poses.append(self._at(f, t))
            f = self._edges[f].parent
            if f in seen:
                raise TFError(f"the TF tree has a loop through {f!r}")
            seen.add(f)
            chain.append(f)
        return chain, poses

    def lookup(self, target: str, source: str, t: float) -> Pose:
        """Pose of frame ``source`` in frame ``target`` at time ``t``; raises :class:`TFError`."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return Pose(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
        known = self.frames
        for f in (target, source):
            if f not in known:
                raise TFError(f"frame {f!r} is not in the TF tree (known: {', '.join(sorted(known)) or 'none'})")
        s_chain, _ = self._to_root(source, t) if source in self._edges else ([source], [])
        t_chain, _ = self._to_root(target, t) if target in self._edges else ([target], [])
        common = next((f for f in s_chain if f in set(t_chain)), None)
        if common is None:
            raise TFError(f"frames {target!r} and {source!r} are not connected "
                          f"({target!r} is under {t_chain[-1]!r}, {source!r} under {s_chain[-1]!r})")
        up = self._compose(s_chain, common, t)      # source in common
        down = self._compose(t_chain, common, t)    # target in common
        return down.inverse() @ up

    def ready(self, target: str, source: str, t: float) -> bool:
        """Whether every moving transform between the two frames has a sample at or after ``t``
        (a lookup at ``t`` then interpolates and later samples cannot change it)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        for f in (target, source):
            seen: set[str] = set()
            while f in self._edges and f not in seen:
                seen.add(f)
                e = self._edges[f]
                if not e.static and (not e.times or e.times[-1] < t):
                    return False
                f = e.parent
        known = self.frames
        return target == source or (target in known and source in known)

    def _compose(self, chain: list[str], common: str, t: float) -> Pose:
        pose = Pose(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
        for f in chain:
            if f == common:
                break
            pose = self._at(f, t) @ pose
        return pose
