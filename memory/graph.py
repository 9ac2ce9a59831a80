"""The layered 3D scene graph: long-term memory built online from perception.

Layers (networkx ``MultiDiGraph``, node attribute ``layer``):

* ``building`` -> ``room:<name>`` -> ``place:<name>`` (``contains`` edges), from the robot's map;
* ``obj:<n>`` objects, from perception only, each ``on``/``in`` a place (or on another object),
  ``near`` its neighbours on the same place;
* ``agent``, ``in`` a room and ``at`` a place, ``holds`` the object in its gripper.

Object nodes carry label, grasp-centre ``position``, ``centroid``, boxes, ``yaw``, ``extent``,
``colour``, ``state`` (``present`` | ``missing`` | ``held``), ``place``/``relation``/``room``,
``first_seen``/``last_seen``, ``n_obs``, ``confidence`` and a bounded pose ``history``
(``[t, x, y, z, place]``). Place nodes of containers carry ``state`` (``open``/``closed``) and
``opening``.

**Every change is a** :class:`~mnemobot.memory.ops.MemoryOp` applied by :meth:`SceneGraph.apply`,
the single mutation path, and appended to the log; a graph is exactly the replay of its ops (or
a snapshot plus the ops after it).

**Association** (per frame): each observation looks up stored objects within ``match_radius``
through a spatial hash (:class:`~mnemobot.memory.spatial.GridIndex`), so the cost grows with the
local density, not with the size of memory. Candidates must agree on label (``unknown`` matches
``unknown`` by size) and appearance (colour); pairs are assigned greedily by a cost mixing
centroid distance, colour distance and 3D overlap (box IoU). An observation with no partner nearby is first explained as a **move** of
a same-label object that is not confirmed elsewhere in this frame (its pose history grows);
only then is it a new object.

**Negative evidence**: a stored object whose centre projects inside the image, in front of the
observed depth (not occluded), large enough to be segmented, but which no observation matched
for ``missing_after`` frames becomes ``missing`` instead of silently staying where it was.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from mnemobot.memory.ops import MemoryOp, OpKind, edge_key, json_safe
from mnemobot.memory.spatial import GridIndex
from mnemobot.memory.types import MapLike, ObjectEstimate, PlaceLike
from mnemobot.memory.visible import estimate_from_observation
from mnemobot.perception.objects import ObjectObservation
from mnemobot.perception.types import CameraIntrinsics, Pose

__all__ = ["HELD", "MISSING", "PRESENT", "FrameInfo", "SceneGraph", "SceneGraphConfig", "replay"]

PRESENT, MISSING, HELD = "present", "missing", "held"


@dataclass
class SceneGraphConfig:
    """Association and dynamics thresholds (metres, frames)."""

    cell: float = 0.5
    """Spatial hash cell size (m)."""
    match_radius: float = 0.20
    """An observation re-identifies a stored object whose centroid is within this distance."""
    move_min: float = 0.04
    """A matched object displaced by more than this has moved (op cause ``moved``)."""
    refine_min: float = 0.008
    """Below this displacement a sighting only confirms memory (NOOP)."""
    colour_max: float = 0.30
    """Largest RGB distance (0..sqrt(3)) between sightings of one object."""
    size_ratio_max: float = 2.0
    """Largest extent ratio between sightings of one ``unknown`` object."""
    missing_after: int = 2
    """Frames in which an object should have been seen, but was not, before it is ``missing``."""
    view_range: float = 4.0
    """Negative evidence only for objects nearer the camera than this (m)."""
    min_expected_pixels: int = 80
    """...and whose projection would cover at least this many pixels."""
    low_support: float = 0.8
    """A sighting with less than this fraction of the pixel support of the best view since the
    object last moved only confirms it (partial views give biased centres and yaws)."""
    near_radius: float = 0.25
    history_len: int = 64
    static_labels: frozenset[str] = frozenset()
    """Labels of map furniture (not objects); their observations are ignored."""


@dataclass(frozen=True)
class FrameInfo:
    """What negative evidence needs from the frame the observations came from."""

    time: float
    camera_pose: Pose
    intrinsics: CameraIntrinsics
    depth: np.ndarray


@dataclass
class _Scratch:
    """Per-object transient state (not part of the graph, not logged)."""

    missed: int = 0
    best_support: int = 0


class SceneGraph:
    """Layered scene graph with an append-only operation log. See the module docstring."""

    def __init__(self, config: SceneGraphConfig | None = None, site: MapLike | None = None) -> None:
        self.config = config or SceneGraphConfig()
        self.g = nx.MultiDiGraph()
        self.seq = 0
        self.episode = 0
        self.pending: list[MemoryOp] = []
        self.tail: deque[MemoryOp] = deque(maxlen=4096)
        self.grid = GridIndex(self.config.cell)
        self.by_label: dict[str, set[str]] = {}
        self.layers: dict[str, set[str]] = {}
        self._scratch: dict[str, _Scratch] = {}
        self._next_obj = 1
        self._change_t: list[float] = []
        self._change_key: list[str] = []
        self._places: dict[str, PlaceLike] = {}
        self.site = site
        if site is not None:
            self._places = dict(site.places)

    # -- log / mutation ---------------------------------------------------------------------------
    def emit(self, kind: OpKind, target: str, key: str, cause: str, time: float,
             data: dict[str, Any] | None = None) -> MemoryOp:
        """Create the next op, apply it and queue it for the store."""
        op = MemoryOp(self.seq + 1, float(time), self.episode, kind, target, key, cause, json_safe(data or {}))
        self.apply(op)
        self.pending.append(op)
        return op

    def drain(self) -> list[MemoryOp]:
        """The ops emitted since the last drain (for persistence)."""
        out, self.pending = self.pending, []
        return out

    def apply(self, op: MemoryOp) -> None:
        """Apply one op (the only way the graph changes; also used to replay a log)."""
        if op.seq <= self.seq:
            raise ValueError(f"op {op.seq} is not after the graph's last op {self.seq}")
        self.seq = op.seq
        self.tail.append(op)
        if op.target == "edge":
            src, rel, dst = op.key.split("|")
            if op.kind is OpKind.ADD:
                self.g.add_edge(src, dst, key=rel, rel=rel, since=op.time)
            elif op.kind is OpKind.DELETE and self.g.has_edge(src, dst, key=rel):
                self.g.remove_edge(src, dst, key=rel)
            return
        key = op.key
        if op.kind is OpKind.ADD:
            attrs = dict(op.data)
            if "history" in attrs:  # the node's history grows in place: never share the op's list
                attrs["history"] = [list(h) for h in attrs["history"]]
            self.g.add_node(key, **attrs)
            self.layers.setdefault(attrs.get("layer", ""), set()).add(key)
            if attrs.get("layer") == "object":
                self.g.nodes[key]["last_cause"] = op.cause
                self._index_object(key)
                n = int(key.split(":", 1)[1]) if key.split(":", 1)[1].isdigit() else 0
                self._next_obj = max(self._next_obj, n + 1)
                self._note_change(op)
        elif op.kind is OpKind.UPDATE:
            node = self.g.nodes[key]
            data = dict(op.data)
            entry = data.pop("+history", None)
            node.update(data)
            if entry is not None:
                hist = node.setdefault("history", [])
                hist.append(entry)
                del hist[: max(0, len(hist) - self.config.history_len)]
            if node.get("layer") == "object":
                node["last_cause"] = op.cause
                self._index_object(key)
                self._note_change(op)
        elif op.kind is OpKind.NOOP:
            node = self.g.nodes.get(key)
            if node is not None and node.get("layer") == "object":
                node["last_seen"] = op.time
                node["n_obs"] = int(node.get("n_obs", 0)) + 1
        elif op.kind is OpKind.DELETE:
            if key in self.g:
                label = self.g.nodes[key].get("label")
                self.layers.get(self.g.nodes[key].get("layer", ""), set()).discard(key)
                self.g.remove_node(key)
                self.grid.remove(key)
                if label in self.by_label:
                    self.by_label[label].discard(key)
                self._scratch.pop(key, None)
                self._note_change(op)

    def _note_change(self, op: MemoryOp) -> None:
        self._change_t.append(op.time)
        self._change_key.append(op.key)

    def _index_object(self, key: str) -> None:
        node = self.g.nodes[key]
        self.grid.insert(key, np.asarray(node["centroid"], dtype=float))
        self.by_label.setdefault(node["label"], set()).add(key)

    # -- snapshot ---------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The whole graph as plain data (for snapshots)."""
        return {
            "seq": self.seq,
            "episode": self.episode,
            "nodes": [[n, json_safe(d)] for n, d in self.g.nodes(data=True)],
            "edges": [[u, k, v, d.get("since", 0.0)] for u, v, k, d in self.g.edges(keys=True, data=True)],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the graph by a snapshot (ops with larger seq can then be applied)."""
        self.g.clear()
        self.grid = GridIndex(self.config.cell)
        self.by_label.clear()
        self.layers.clear()
        self._scratch.clear()
        self._change_t.clear()
        self._change_key.clear()
        for key, attrs in state.get("nodes", []):
            attrs = dict(attrs)
            if "history" in attrs:
                attrs["history"] = [list(h) for h in attrs["history"]]
            self.g.add_node(key, **attrs)
            self.layers.setdefault(attrs.get("layer", ""), set()).add(key)
            if attrs.get("layer") == "object":
                self._index_object(key)
                tail = key.split(":", 1)[1]
                if tail.isdigit():
                    self._next_obj = max(self._next_obj, int(tail) + 1)
                changed = float(attrs.get("last_changed", attrs.get("first_seen", 0.0)))
                self._change_t.append(changed)
                self._change_key.append(key)
        order = np.argsort(self._change_t, kind="stable")
        self._change_t = [self._change_t[i] for i in order]
        self._change_key = [self._change_key[i] for i in order]
        for u, rel, v, since in state.get("edges", []):
            self.g.add_edge(u, v, key=rel, rel=rel, since=since)
        self.seq = int(state.get("seq", 0))
        self.episode = int(state.get("episode", 0))

    # -- map layers -------------------------------------------------------------------------------
    def load_map(self, site: MapLike, time: float = 0.0) -> None:
        """Add the building, room and place layers (idempotent: existing nodes are kept)."""
        self.site = site
        self._places = dict(site.places)
        if "building" not in self.g:
            self.emit(OpKind.ADD, "node", "building", "map", time, {"layer": "building", "label": "building"})
        for room in site.rooms.values():
            key = f"room:{room.name}"
            if key not in self.g:
                self.emit(OpKind.ADD, "node", key, "map", time, {
                    "layer": "room", "label": room.name, "center": list(room.center), "size": list(room.size)})
                self.emit(OpKind.ADD, "edge", edge_key("building", "contains", key), "map", time)
        for place in site.places.values():
            key = f"place:{place.name}"
            if key in self.g:
                continue
            attrs: dict[str, Any] = {
                "layer": "place", "label": place.label, "name": place.name, "room": place.room,
                "relation": place.relation, "center": place.surface.position.tolist(),
                "aliases": list(place.aliases),
            }
            if place.open_direction is not None:
                attrs.update(state="closed", opening=0.0)
            self.emit(OpKind.ADD, "node", key, "map", time, attrs)
            self.emit(OpKind.ADD, "edge", edge_key(f"room:{place.room}", "contains", key), "map", time)
        if "agent" not in self.g:
            self.emit(OpKind.ADD, "node", "agent", "map", time, {"layer": "agent", "label": "robot"})

    # -- queries used by the locator --------------------------------------------------------------
    def by_layer(self, layer: str) -> set[str]:
        """Node ids of one layer (``building``, ``room``, ``place``, ``object``, ``agent``)."""
        return self.layers.get(layer, set())

    @property
    def change_count(self) -> int:
        """Length of the change index (grows with every ADD/UPDATE/DELETE of an object)."""
        return len(self._change_key)

    def changes_newest_first(self) -> Iterator[str]:
        """Object keys of the change index, newest first (with repeats; no copy)."""
        return reversed(self._change_key)

    def changes_from(self, index: int) -> list[str]:
        """Object keys of the change index entries ``index:`` (with repeats)."""
        return self._change_key[index:]

    def objects(self, states: Iterable[str] | None = None) -> list[str]:
        want = set(states) if states is not None else None
        return [n for n in self.by_layer("object") if want is None or self.g.nodes[n].get("state") in want]

    def node(self, key: str) -> dict[str, Any]:
        return self.g.nodes[key]

    def best(self, label: str, states: Iterable[str] = (PRESENT, HELD)) -> str | None:
        """The most recently seen object with ``label`` in one of ``states``."""
        want = set(states)
        keys = [k for k in self.by_label.get(label, ()) if self.g.nodes[k].get("state") in want]
        return max(keys, key=lambda k: self.g.nodes[k]["last_seen"], default=None)

    def estimate(self, key: str) -> ObjectEstimate:
        d = self.g.nodes[key]
        return ObjectEstimate(
            label=d["label"], position=np.asarray(d["position"], dtype=float), top_z=float(d["top_z"]),
            extent=np.asarray(d["extent"], dtype=float), yaw=float(d["yaw"]), place=d.get("place"),
            time=float(d["last_seen"]), confidence=float(d.get("confidence", 1.0)),
        )

    def changed_since(self, t: float) -> list[str]:
        """Object keys with a logged change (ADD/UPDATE/DELETE) after ``t``, oldest change first."""
        i = bisect.bisect_right(self._change_t, t)
        seen: dict[str, None] = {}
        for key in self._change_key[i:]:
            seen.pop(key, None)
            seen[key] = None
        return list(seen)

    # -- geometry helpers -------------------------------------------------------------------------
    def place_at(self, position: Sequence[float]) -> tuple[str | None, str | None]:
        """``(place name, relation)`` of the map place whose surface holds ``position``."""
        p = np.asarray(position, dtype=float)
        best: tuple[float, str, str] | None = None
        for place in self._places.values():
            surface = place.surface
            node = self.g.nodes.get(f"place:{place.name}")
            if place.open_direction is not None and node is not None and node.get("opening", 0.0) > 0:
                shift = np.asarray(place.open_direction, dtype=float) * float(node["opening"])
                surface = Pose(surface.position + shift, surface.quaternion)
            local = surface.inverse().apply(p[None, :])[0]
            sx, sy = place.surface_size
            if abs(local[0]) <= sx / 2 + 0.05 and abs(local[1]) <= sy / 2 + 0.05 and -0.06 <= local[2] <= 0.45:
                if best is None or local[2] < best[0]:
                    best = (float(local[2]), place.name, place.relation)
        return (best[1], best[2]) if best is not None else (None, None)

    def room_at(self, xy: Sequence[float]) -> str | None:
        if self.site is None:
            return None
        for room in self.site.rooms.values():
            if abs(xy[0] - room.center[0]) <= room.size[0] / 2 and abs(xy[1] - room.center[1]) <= room.size[1] / 2:
                return room.name
        return None

    # -- integration ------------------------------------------------------------------------------
    def integrate(self, observations: Sequence[ObjectObservation], frame: FrameInfo,
                  skip_labels: Iterable[str] = ()) -> dict[str, str]:
        """Fuse one frame's observations; returns ``{object key: cause}`` for what changed."""
        cfg = self.config
        t = frame.time
        skip = set(skip_labels) | set(cfg.static_labels)
        obs = [o for o in observations if o.label not in skip]
        matched: dict[int, str] = {}
        taken: set[str] = set()
        pairs: list[tuple[float, int, str]] = []
        for i, o in enumerate(obs):
            for key, dist in self.grid.query(o.centroid, cfg.match_radius):
                d = self.g.nodes[key]
                colour = self._appearance(o, d)
                if colour is None:
                    continue
                overlap = _iou(o.aabb_min, o.aabb_max, d["aabb_min"], d["aabb_max"])
                pairs.append((dist / cfg.match_radius + colour / cfg.colour_max + (1.0 - overlap), i, key))
        pairs.sort()
        for _cost, i, key in pairs:
            if i in matched or key in taken:
                continue
            matched[i] = key
            taken.add(key)
        changes: dict[str, str] = {}
        unmatched = [i for i in range(len(obs)) if i not in matched]
        for i in unmatched:  # moved objects first: they re-use the identity of an unconfirmed one
            key = self._moved_candidate(obs[i], taken)
            if key is not None:
                matched[i] = key
                taken.add(key)
        for i, o in enumerate(obs):
            key = matched.get(i)
            if key is None:
                key = self._add(o, t)
                taken.add(key)
                changes[key] = "observed"
            else:
                cause = self._update(key, o, t)
                if cause != "confirmed":
                    changes[key] = cause
        for key, cause in self._negative_evidence(frame, taken).items():
            changes[key] = cause
        return changes

    def _appearance(self, o: ObjectObservation, d: dict[str, Any]) -> float | None:
        """Colour distance between a sighting and a stored object that could be the same one
        (not held, same label, similar size if unlabelled, similar colour); ``None`` otherwise."""
        if d.get("state") == HELD or not self._compatible(o, d):
            return None
        colour = float(np.linalg.norm(np.asarray(d["colour"]) - o.colour))
        return colour if colour <= self.config.colour_max else None

    def _compatible(self, o: ObjectObservation, d: dict[str, Any]) -> bool:
        if o.label != d["label"]:
            return False
        if o.label == "unknown":
            a, b = np.asarray(d["extent"], dtype=float) + 0.01, np.asarray(o.extent, dtype=float) + 0.01
            ratio = np.maximum(a / b, b / a)
            if float(ratio.max()) > self.config.size_ratio_max:
                return False
        return True

    def _moved_candidate(self, o: ObjectObservation, taken: set[str]) -> str | None:
        best: tuple[float, str] | None = None
        for key in self.by_label.get(o.label, ()):
            if key in taken:
                continue
            d = self.g.nodes[key]
            colour = self._appearance(o, d)
            if colour is None:
                continue
            if o.label == "unknown" and d.get("state") != MISSING:
                continue  # anonymous objects move only once memory saw they left
            score = colour - (0.5 if d.get("state") == MISSING else 0.0)
            if best is None or score < best[0]:
                best = (score, key)
        return None if best is None else best[1]

    def _object_attrs(self, o: ObjectObservation) -> dict[str, Any]:
        est = estimate_from_observation(o, None)
        place, relation = self.place_at(est.position)
        room = self.room_at(est.position[:2])
        return {
            "position": est.position.tolist(), "centroid": o.centroid.tolist(), "top_z": est.top_z,
            "aabb_min": o.aabb_min.tolist(), "aabb_max": o.aabb_max.tolist(),
            "extent": np.asarray(o.extent).tolist(), "yaw": float(o.yaw), "colour": o.colour.tolist(),
            "place": place, "relation": relation, "room": room,
        }

    def _add(self, o: ObjectObservation, t: float) -> str:
        key = f"obj:{self._next_obj}"
        self._next_obj += 1
        attrs = self._object_attrs(o)
        attrs.update(
            layer="object", label=o.label, state=PRESENT, first_seen=t, last_seen=t, last_changed=t, n_obs=1,
            confidence=float(o.confidence),
            history=[[t, *attrs["position"], attrs["place"] or ""]],
        )
        self.emit(OpKind.ADD, "node", key, "observed", t, attrs)
        self._scratch[key] = _Scratch(best_support=o.pixel_count)
        self._relate(key, t)
        return key

    def _update(self, key: str, o: ObjectObservation, t: float) -> str:
        cfg = self.config
        d = self.g.nodes[key]
        scratch = self._scratch.setdefault(key, _Scratch())
        scratch.missed = 0
        was_missing = d.get("state") == MISSING
        displacement = float(np.linalg.norm(np.asarray(d["centroid"]) - o.centroid))
        low_support = o.pixel_count < cfg.low_support * scratch.best_support
        moved = displacement >= cfg.move_min
        if not was_missing and (displacement < cfg.refine_min or (low_support and not moved)):
            self.emit(OpKind.NOOP, "node", key, "confirmed", t)
            return "confirmed"
        # the shape (yaw, extent) and centre come from the best view since the object last moved
        scratch.best_support = o.pixel_count if moved else max(scratch.best_support, o.pixel_count)
        attrs = self._object_attrs(o)
        relocated = moved or attrs["place"] != d.get("place")  # a new place counts as a move
        cause = "moved" if relocated else ("reappeared" if was_missing else "refined")
        attrs.update(state=PRESENT, last_seen=t, last_changed=t, n_obs=int(d.get("n_obs", 0)) + 1,
                     confidence=max(float(d.get("confidence", 0.0)), float(o.confidence)))
        if relocated:
            attrs["+history"] = [t, *attrs["position"], attrs["place"] or ""]
        self.emit(OpKind.UPDATE, "node", key, cause, t, attrs)
        if relocated or was_missing:
            self._relate(key, t)
        return cause

    def _negative_evidence(self, frame: FrameInfo, seen: set[str]) -> dict[str, str]:
        cfg = self.config
        k = frame.intrinsics
        cam = frame.camera_pose
        keys = [key for key, _d in self.grid.query(cam.position, cfg.view_range)
                if key not in seen and self.g.nodes[key].get("state") == PRESENT]
        if not keys:
            return {}
        nodes = [self.g.nodes[key] for key in keys]
        centroids = np.array([n["centroid"] for n in nodes], dtype=float)
        extents = np.array([n["extent"] for n in nodes], dtype=float)
        p = cam.inverse().apply(centroids)  # optical frame: z forward
        z = p[:, 2]
        safe_z = np.where(z > 0.15, z, 1.0)
        u = k.fx * p[:, 0] / safe_z + k.cx
        v = k.fy * p[:, 1] / safe_z + k.cy
        h, w = frame.depth.shape
        size = np.maximum(extents[:, 0], extents[:, 1]) * np.maximum(extents[:, 2], 0.02)
        area = k.fx * k.fy * size / safe_z**2
        candidates = np.nonzero((z > 0.15) & (u >= 3) & (u < w - 3) & (v >= 3) & (v < h - 3)
                                & (area >= cfg.min_expected_pixels))[0]
        out: dict[str, str] = {}
        for i in candidates.tolist():
            ui, vi = int(u[i]), int(v[i])
            patch = frame.depth[vi - 2: vi + 3, ui - 2: ui + 3]
            valid = patch[np.isfinite(patch) & (patch > 0)]
            if valid.size < 5:
                continue
            if float(np.median(valid)) < z[i] - max(0.05, 0.6 * float(extents[i].max())):
                continue  # something nearer hides it
            key = keys[i]
            scratch = self._scratch.setdefault(key, _Scratch())
            scratch.missed += 1
            if scratch.missed >= cfg.missing_after:
                self.emit(OpKind.UPDATE, "node", key, "not_seen", frame.time,
                          {"state": MISSING, "last_changed": frame.time, "confidence": 0.0})
                self._unrelate(key, frame.time)
                out[key] = "not_seen"
        return out

    # -- relations --------------------------------------------------------------------------------
    def _edges_of(self, key: str, rels: set[str]) -> list[tuple[str, str, str]]:
        out = [(key, r, v) for _, v, r in self.g.out_edges(key, keys=True) if r in rels]
        out += [(u, r, key) for u, _, r in self.g.in_edges(key, keys=True) if r in rels]
        return out

    def _unrelate(self, key: str, t: float, rels: set[str] | None = None) -> None:
        for u, r, v in self._edges_of(key, rels or {"on", "in", "near"}):
            self.emit(OpKind.DELETE, "edge", edge_key(u, r, v), "relation", t)

    def _relate(self, key: str, t: float) -> None:
        """Recompute ``key``'s on/in/near edges (local: only its neighbourhood is visited)."""
        d = self.g.nodes[key]
        want: set[tuple[str, str, str]] = set()
        if d.get("state") == PRESENT:
            support = self._support_object(key)
            if support is not None:
                want.add((key, "on", support))
            elif d.get("place"):
                want.add((key, d.get("relation") or "on", f"place:{d['place']}"))
            for other, _dist in self.grid.query(np.asarray(d["centroid"]), self.config.near_radius):
                if other != key and self.g.nodes[other].get("state") == PRESENT \
                        and self.g.nodes[other].get("place") == d.get("place"):
                    a, b = sorted((key, other))
                    want.add((a, "near", b))
        have = set(self._edges_of(key, {"on", "in", "near"}))
        for u, r, v in sorted(have - want):
            self.emit(OpKind.DELETE, "edge", edge_key(u, r, v), "relation", t)
        for u, r, v in sorted(want - have):
            self.emit(OpKind.ADD, "edge", edge_key(u, r, v), "relation", t)

    def _support_object(self, key: str) -> str | None:
        """Another object this one rests on (its bottom at the other's top, overlapping in x, y)."""
        d = self.g.nodes[key]
        lo, hi = np.asarray(d["aabb_min"]), np.asarray(d["aabb_max"])
        for other, _dist in self.grid.query(np.asarray(d["centroid"]), 0.4):
            if other == key:
                continue
            e = self.g.nodes[other]
            if e.get("state") != PRESENT:
                continue
            olo, ohi = np.asarray(e["aabb_min"]), np.asarray(e["aabb_max"])
            centre = (lo[:2] + hi[:2]) / 2
            if abs(lo[2] - ohi[2]) < 0.025 and np.all(centre >= olo[:2]) and np.all(centre <= ohi[:2]) \
                    and hi[2] > ohi[2]:
                return other
        return None

    # -- body events (from proprioception and skill outcomes, never from the simulator) ----------
    def grasped(self, label: str, t: float) -> str | None:
        key = self.best(label, (PRESENT, MISSING))
        if key is None:
            return None
        self.emit(OpKind.UPDATE, "node", key, "grasped", t,
                  {"state": HELD, "place": None, "relation": None, "last_changed": t})
        self._unrelate(key, t)
        self.emit(OpKind.ADD, "edge", edge_key("agent", "holds", key), "grasped", t)
        return key

    def released(self, label: str, place: str | None, t: float) -> str | None:
        key = self.best(label, (HELD,))
        if key is None:
            return None
        relation = self._places[place].relation if place in self._places else None
        attrs: dict[str, Any] = {"state": PRESENT, "place": place, "relation": relation, "last_changed": t}
        if place in self._places:  # until the camera sees it: the middle of where it was put
            spec = self._places[place]
            pos = spec.surface.position + np.array([0.0, 0.0, 0.03])
            if spec.open_direction is not None:  # an open drawer's bottom is out by its opening
                opening = float(self.g.nodes.get(f"place:{place}", {}).get("opening", 0.0))
                pos = pos + np.asarray(spec.open_direction, dtype=float) * opening
            attrs.update(position=pos.tolist(), centroid=pos.tolist(), confidence=0.3)
            attrs["+history"] = [t, *pos.tolist(), place]
        self.emit(OpKind.UPDATE, "node", key, "released", t, attrs)
        if self.g.has_edge("agent", key, key="holds"):
            self.emit(OpKind.DELETE, "edge", edge_key("agent", "holds", key), "released", t)
        self._scratch.setdefault(key, _Scratch()).missed = 0
        self._relate(key, t)
        return key

    def articulated(self, place: str, opening: float, t: float) -> None:
        key = f"place:{place}"
        if key not in self.g:
            return
        state = "open" if opening > 0.02 else "closed"
        d = self.g.nodes[key]
        if d.get("state") == state and abs(float(d.get("opening", 0.0)) - opening) < 0.01:
            return
        before = float(d.get("opening", 0.0))
        self.emit(OpKind.UPDATE, "node", key, "opened" if state == "open" else "closed", t,
                  {"state": state, "opening": float(opening)})
        spec = self._places.get(place)
        if spec is None or spec.open_direction is None:
            return
        # what is in the drawer rides with it; what the drawer now holds is re-related
        shift = np.asarray(spec.open_direction, dtype=float) * (float(opening) - before)
        centre = spec.surface.position + np.asarray(spec.open_direction, dtype=float) * float(opening)
        reach = 0.5 * float(np.hypot(*spec.surface_size)) + spec.open_distance + 0.1
        for obj, _dist in list(self.grid.query(centre, reach)):
            o = self.g.nodes[obj]
            if o.get("state") != PRESENT:
                continue
            if o.get("place") == place:
                moved = {name: (np.asarray(o[name], dtype=float) + shift).tolist()
                         for name in ("position", "centroid", "aabb_min", "aabb_max")}
                self.emit(OpKind.UPDATE, "node", obj, "carried", t, {**moved, "last_changed": t})
                continue
            where, relation = self.place_at(o["position"])
            if where == place:
                self.emit(OpKind.UPDATE, "node", obj, "relation", t,
                          {"place": where, "relation": relation, "last_changed": t})
                self._relate(obj, t)

    def agent_at(self, xy: Sequence[float], yaw: float, place: str | None, t: float) -> None:
        """Move the agent node when its room or place changes (not on every pose)."""
        room = self.room_at(xy)
        d = self.g.nodes.get("agent")
        if d is None:
            self.emit(OpKind.ADD, "node", "agent", "map", t, {"layer": "agent", "label": "robot"})
            d = self.g.nodes["agent"]
        if d.get("room") == room and d.get("place") == place:
            return
        self.emit(OpKind.UPDATE, "node", "agent", "moved", t,
                  {"room": room, "place": place, "pose": [float(xy[0]), float(xy[1]), float(yaw)]})
        for u, r, v in self._edges_of("agent", {"in", "at"}):
            self.emit(OpKind.DELETE, "edge", edge_key(u, r, v), "moved", t)
        if room is not None and f"room:{room}" in self.g:
            self.emit(OpKind.ADD, "edge", edge_key("agent", "in", f"room:{room}"), "moved", t)
        if place is not None and f"place:{place}" in self.g:
            self.emit(OpKind.ADD, "edge", edge_key("agent", "at", f"place:{place}"), "moved", t)


def _iou(lo1: np.ndarray, hi1: np.ndarray, lo2: Sequence[float], hi2: Sequence[float]) -> float:
    """Intersection over union of two axis-aligned boxes (3D overlap)."""
    lo = np.maximum(lo1, lo2)
    hi = np.minimum(hi1, hi2)
    inter = float(np.prod(np.clip(hi - lo, 0.0, None)))
    if inter <= 0.0:
        return 0.0
    v1 = float(np.prod(np.asarray(hi1) - np.asarray(lo1)))
    v2 = float(np.prod(np.asarray(hi2) - np.asarray(lo2)))
    return inter / max(v1 + v2 - inter, 1e-12)


def replay(ops: Iterable[MemoryOp], graph: SceneGraph) -> SceneGraph:
    """Apply ``ops`` in order to ``graph`` (e.g. the tail after a snapshot)."""
    for op in ops:
        graph.apply(op)
    return graph

