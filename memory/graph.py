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

**Noise**: every distance threshold is a floor widened by the sensor's noise at the sighting's
range (:meth:`SceneGraph.margin`: 3 sigma of depth, lateral and pose error, from
:class:`~mnemobot.perception.sensor.SensorModel`), so memory is strict on exact simulated data
and tolerant on a real camera, with no constant tuned to one recording.

**Association** (per frame, :meth:`SceneGraph.integrate`): each observation looks up stored
objects near it through a spatial hash (:class:`~mnemobot.memory.spatial.GridIndex`), so the
cost grows with the local density, not with the size of memory; objects wider than
``large_size`` or seen cut by the image border are also tested by the overlap of the view's
points with their box. Candidates must agree on label (the object's own, one it was also seen
under, or one the detector confuses with it; ``unknown`` matches ``unknown`` by size) and
colour; pairs are assigned greedily by a cost mixing centroid distance, colour distance, 3D
overlap and label agreement. Unmatched model-free segments that are pieces of a remembered
object confirm it, and one spanning several remembered objects confirms them (not fused). The
remaining sightings re-identify an object memory saw leave (``missing``), one it only guessed
(a release placeholder), or a same-label one close by whose place this frame cannot show; any
other is a new object: two same-looking objects seen apart stay two.

**Moves**: a fully seen object displaced beyond the noise of two sightings, on ``move_votes``
consistent sightings, is ``moved``; a partial view at the remembered pose only confirms it (a
wide object's box grows by the view). When an object goes ``missing`` and a same-looking one
first appeared after it was last seen, the two are one object that moved (``merged``).

**Existence** (:meth:`SceneGraph._negative_evidence`): remembered surface points are projected
into each frame; a frame that sees through most of them (depth beyond by more than the noise
margin) lowers the object's existence log-odds; one that finds the surface, or where something
nearer hides it, says nothing. Below ``missing_below`` the object is ``missing`` (or, seen only
once by a detector that makes false detections, dropped as ``spurious``).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from mnemobot.memory.ops import MemoryOp, OpKind, edge_key, json_safe
from mnemobot.memory.spatial import GridIndex, KeySet
from mnemobot.memory.types import MapLike, ObjectEstimate, PlaceLike
from mnemobot.memory.visible import estimate_from_observation
from mnemobot.perception.objects import ObjectObservation
from mnemobot.perception.sensor import SensorModel
from mnemobot.perception.types import CameraIntrinsics, Pose

__all__ = ["HELD", "MISSING", "PRESENT", "FrameInfo", "SceneGraph", "SceneGraphConfig", "replay"]

PRESENT, MISSING, HELD = "present", "missing", "held"
GRASP_REACH_M = 0.15
"""An object the body grasps is within this of the grasp point (half a hand's span plus the
remembered position's error): which of several same-label objects was taken."""


@dataclass
class SceneGraphConfig:
    """Association and dynamics thresholds (metres, log-odds).

    The distances are floors: each is widened by the noise of the sensor that made the sighting
    (``sensor``, see :meth:`SceneGraph.margin`), so the same memory is strict on perfect data and
    tolerant on a real camera without constants tuned to one recording.
    """

    cell: float = 0.5
    """Spatial hash cell size (m)."""
    match_radius: float = 0.20
    """An observation re-identifies a stored object whose centroid is within this distance
    (plus the noise margin at its range)."""
    move_min: float = 0.04
    """A fully seen object displaced by more than this, and by more than the noise of two
    sightings at its range, is away from its remembered pose."""
    refine_min: float = 0.008
    """Below this displacement a sighting only confirms memory (NOOP)."""
    colour_max: float = 0.30
    """Largest RGB distance (0..sqrt(3)) between sightings of one object."""
    size_ratio_max: float = 2.0
    """Largest extent ratio between sightings of one ``unknown`` object."""
    view_range: float = 4.0
    """Negative evidence only for objects nearer the camera than this (m)."""
    min_expected_pixels: int = 80
    """...and whose projection would cover at least this many pixels."""
    low_support: float = 0.8
    """A sighting with less than this fraction of the pixel support of the best view since the
    object last moved is a partial view (partial views give biased centres and yaws)."""
    overlap_same: float = 0.5
    """A partial view (cut by the image border, occluded, or of an object larger than
    ``large_size``) with at least this fraction of its points inside the remembered box, grown by
    the noise margin, is at the remembered pose, however far its centroid is."""
    large_size: float = 0.6
    """Objects longer than this (m; furniture) are judged by overlap, and their box is the union
    of their views."""
    free_fraction: float = 0.8
    """Negative evidence needs at least this fraction of an object's remembered surface points,
    where the frame has depth, to be seen through (depth beyond them by the noise margin)."""
    exist_max: float = 3.5
    """Cap of an object's existence log-odds (so a long-seen object can still be found gone)."""
    missing_below: float = -2.2
    """Existence log-odds under which an object is ``missing`` (probability 0.1)."""
    near_move: float = 1.0
    """A labelled sighting this close (m) to a same-label object whose place the frame cannot
    show is that object, displaced (see :meth:`SceneGraph._unverifiable_near`); farther away it
    is a second object until memory sees the first one's place empty."""
    near_radius: float = 0.25
    history_len: int = 64
    static_labels: frozenset[str] = frozenset()
    """Labels of map furniture (not objects); their observations are ignored."""
    sensor: SensorModel = field(default_factory=SensorModel)
    """The rig the sightings come from (:mod:`mnemobot.perception.sensor`)."""

    @property
    def move_votes(self) -> int:
        """Consistent sightings away from the remembered pose before a move is believed: one
        with a perfect sensor, two otherwise (one noisy centroid is never a move)."""
        return 1 if self.sensor.is_ideal else 2

    @property
    def hit_logodds(self) -> float:
        """Existence evidence of one detection: log(P(detected | there) / P(false detection))."""
        d = self.sensor.detector
        return min(self.exist_max, math.log((1.0 - d.miss_rate) / max(d.false_positive_rate, 0.01)))


@dataclass(frozen=True)
class FrameInfo:
    """What negative evidence needs from the frame the observations came from."""

    time: float
    camera_pose: Pose
    intrinsics: CameraIntrinsics
    depth: np.ndarray


@dataclass
class _Scratch:
    """Per-object transient state (not part of the graph, not logged).

    ``exist``: existence log-odds; ``surface``: a sample of the last view's world points (what
    negative evidence projects); ``votes``/``away``: consistent sightings away from the
    remembered pose and where they were."""

    exist: float = 0.0
    best_support: int = 0
    surface: np.ndarray | None = None
    votes: int = 0
    away: np.ndarray | None = None


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
        self.by_label: dict[str, KeySet] = {}
        self.layers: dict[str, KeySet] = {}
        self._scratch: dict[str, _Scratch] = {}
        self._label_of: dict[str, str] = {}
        self._sighting_noise = 0.0
        """The local noise margin of the sighting being integrated (stored with the object: support
        relations compare objects seen in the same views, so pose errors cancel)."""
        self._place_margin = 0.0
        """The full noise margin of the sighting being integrated (pose errors included): how far
        its estimate may lie off the map place it stands on."""
        self._border_px = 0.0
        self._border_fx = -1.0
        self._unwatched = KeySet()
        """Objects not seen at their remembered pose since the robot began watching
        (:meth:`begin_watch`): beliefs from before a gap nobody watched (see :meth:`_moved_candidate`)."""
        self._wide = KeySet()
        """Objects judged by overlap: larger than ``large_size``, or only seen cut by the image border."""
        self._next_obj = 1
        self._change_t: list[float] = []
        self._change_key: list[str] = []
        self._places: dict[str, PlaceLike] = {}
        self.site = site
        if site is not None:
            self._places = dict(site.places)

    def begin_watch(self) -> None:
        """The robot starts watching after a gap (a new episode, a restart): every object memory
        holds is a belief from before it, until a sighting at its remembered pose (or a move)
        renews it."""
        self._unwatched = KeySet(k for k in self.by_layer("object") if self.g.nodes[k].get("state") == PRESENT)

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
        if op.cause != "unconfirmed_move":  # a vote elsewhere is not a sighting where it was believed
            self._unwatched.discard(key)
        if op.kind is OpKind.ADD:
            attrs = dict(op.data)
            if "history" in attrs:  # the node's history grows in place: never share the op's list
                attrs["history"] = [list(h) for h in attrs["history"]]
            self.g.add_node(key, **attrs)
            self.layers.setdefault(attrs.get("layer", ""), KeySet()).add(key)
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
                self.layers.get(self.g.nodes[key].get("layer", ""), KeySet()).discard(key)
                self.g.remove_node(key)
                self.grid.remove(key)
                if label in self.by_label:
                    self.by_label[label].discard(key)
                self._scratch.pop(key, None)
                self._label_of.pop(key, None)
                self._wide.discard(key)
                self._note_change(op)

    def _note_change(self, op: MemoryOp) -> None:
        self._change_t.append(op.time)
        self._change_key.append(op.key)

    def _index_object(self, key: str) -> None:
        node = self.g.nodes[key]
        self.grid.insert(key, np.asarray(node["centroid"], dtype=float))
        before = self._label_of.get(key)
        if before is not None and before != node["label"]:
            self.by_label.get(before, KeySet()).discard(key)
        self._label_of[key] = node["label"]
        self.by_label.setdefault(node["label"], KeySet()).add(key)
        extent = node.get("extent")
        if node.get("partial") or (extent is not None and max(extent) > self.config.large_size):
            self._wide.add(key)
        else:
            self._wide.discard(key)

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
        self._label_of.clear()
        self._wide.clear()
        self._unwatched.clear()
        self._change_t.clear()
        self._change_key.clear()
        for key, attrs in state.get("nodes", []):
            attrs = dict(attrs)
            if "history" in attrs:
                attrs["history"] = [list(h) for h in attrs["history"]]
            self.g.add_node(key, **attrs)
            self.layers.setdefault(attrs.get("layer", ""), KeySet()).add(key)
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
                "surface": [float(v) for v in place.surface_size],
                "aliases": list(place.aliases),
            }
            if place.open_direction is not None:
                attrs.update(state="closed", opening=0.0, open_direction=[float(v) for v in place.open_direction])
                if getattr(place, "handle", None) is not None:
                    attrs["handle"] = [float(v) for v in place.handle.position]  # where it is, closed
            self.emit(OpKind.ADD, "node", key, "map", time, attrs)
            self.emit(OpKind.ADD, "edge", edge_key(f"room:{place.room}", "contains", key), "map", time)
        if "agent" not in self.g:
            self.emit(OpKind.ADD, "node", "agent", "map", time, {"layer": "agent", "label": "robot"})

    # -- queries used by the locator --------------------------------------------------------------
    def by_layer(self, layer: str) -> KeySet:
        """Node ids of one layer (``building``, ``room``, ``place``, ``object``, ``agent``), in
        the order they were added."""
        return self.layers.get(layer, KeySet())

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
        """The most recently seen object with ``label`` in one of ``states`` (confirmed ones first)."""
        want = set(states)
        keys = [k for k in self.by_label.get(label, ()) if self.g.nodes[k].get("state") in want]
        return max(keys, key=lambda k: (self.confirmed(k), self.g.nodes[k]["last_seen"]), default=None)

    def confirmed(self, key: str) -> bool:
        """Whether memory believes the object exists: not a single sighting by a detector that
        makes false detections (see :meth:`_tentative`)."""
        return not self._tentative(self.g.nodes[key])

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
    def place_at(self, position: Sequence[float], margin: float = 0.05) -> tuple[str | None, str | None]:
        """``(place name, relation)`` of the map place whose surface holds ``position``, within
        ``margin`` m of its edges (a sighting's noise: where the estimate may be off)."""
        p = np.asarray(position, dtype=float)
        best: tuple[int, float, str, str] | None = None
        for place in self._places.values():
            surface = place.surface
            node = self.g.nodes.get(f"place:{place.name}")
            if place.open_direction is not None and node is not None and node.get("opening", 0.0) > 0:
                shift = np.asarray(place.open_direction, dtype=float) * float(node["opening"])
                surface = Pose(surface.position + shift, surface.quaternion)
            local = surface.inverse().apply(p[None, :])[0]
            sx, sy = place.surface_size
            if abs(local[0]) <= sx / 2 + margin and abs(local[1]) <= sy / 2 + margin and -0.06 <= local[2] <= 0.45:
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

    # -- noise model ------------------------------------------------------------------------------
    def margin(self, z: float | np.ndarray, fx: float) -> float | np.ndarray:
        """How far (m) two sightings of one surface at range ``z`` may disagree: 3 sigma of the
        sensor's point error (depth, lateral and pose noise), at least 2 cm."""
        return np.maximum(0.02, self.config.sensor.surface_margin(z, fx))

    def _local_margin(self, z: float | np.ndarray, fx: float) -> float | np.ndarray:
        """How far (m) two objects seen in the same view may be from touching and still touch:
        3 sigma of depth and lateral noise (pose errors move both alike), at least 1 cm."""
        sensor = self.config.sensor
        return np.maximum(0.01, 3.0 * np.hypot(sensor.depth.sigma(z), sensor.lateral_sigma(z, fx)))

    def _move_threshold(self, margin: float) -> float:
        """Displacement beyond the noise of two independent sightings (sqrt 2 of one margin)."""
        return max(self.config.move_min, math.sqrt(2.0) * float(margin))

    def _free_logodds(self, z: float, fx: float, size: float) -> float:
        """Existence evidence of one frame that sees through an object's remembered surface:
        log(P(seen through | there) / P(seen through | gone)). Seeing through a present object
        takes a pose or depth error comparable with its size."""
        p_err = min(0.5, 0.02 + float(self.config.sensor.point_sigma(z, fx)) / max(size, 0.02))
        return math.log(p_err / 0.9)

    # -- integration ------------------------------------------------------------------------------
    def integrate(self, observations: Sequence[ObjectObservation], frame: FrameInfo,
                  skip_labels: Iterable[str] = ()) -> dict[str, str]:
        """Fuse one frame's observations; returns ``{object key: cause}`` for what changed.

        1. each sighting is paired with a remembered object of a compatible label and colour whose
           centroid is near (within ``match_radius`` plus the noise margin at its range), or,
           for a partial view or a large object, whose box holds most of its points;
        2. a sighting lying inside a remembered object that is already matched (a piece of an
           over-segmented object) confirms it; one that covers several remembered objects (an
           under-segmented group) confirms them and is not fused into one;
        3. the rest re-identify a same-label object that memory knows left its place (``missing``)
           or only guessed (a release placeholder), and are otherwise new objects;
        4. remembered objects in view that were not seen gather negative evidence.
        """
        cfg = self.config
        t = frame.time
        skip = set(skip_labels) | set(cfg.static_labels)
        obs = [o for o in observations if o.label not in skip]
        fx = frame.intrinsics.fx
        if fx != self._border_fx:  # colour a mask's border may take from behind: misregistration, dilation
            scaled = cfg.sensor.at_focal(fx)
            self._border_px = float(scaled.depth.misregistration_px + scaled.detector.dilate_px)
            self._border_fx = fx
        if obs:
            cam = frame.camera_pose.inverse().apply(np.array([o.centroid for o in obs], dtype=float))
            z = np.maximum(cam[:, 2], 0.1)
            margins = [float(m) for m in np.atleast_1d(self.margin(z, fx))]
            local = [float(m) for m in np.atleast_1d(self._local_margin(z, fx))]
        else:
            margins, local = [], []
        matched: dict[int, str] = {}
        taken: set[str] = set()
        pairs: list[tuple[float, int, str]] = []
        for i, o in enumerate(obs):
            for key, cost in self._candidates(o, margins[i]):
                pairs.append((cost, i, key))
        pairs.sort()
        for _cost, i, key in pairs:
            if i in matched or key in taken:
                continue
            matched[i] = key
            taken.add(key)
        confirmed: set[str] = set()
        rest: list[int] = []
        for i in (i for i in range(len(obs)) if i not in matched):
            pieces = self._segmentation_match(obs[i], margins[i])
            if pieces:
                confirmed.update(pieces)
            else:
                rest.append(i)
        changes: dict[str, str] = {}
        for i in rest:  # moved objects first: they re-use the identity of one memory saw leave
            key = self._moved_candidate(obs[i], taken) or self._unverifiable_near(obs[i], taken, frame)
            if key is not None:
                matched[i] = key
                taken.add(key)
        for i, o in enumerate(obs):
            key = matched.get(i)
            self._sighting_noise = local[i]
            self._place_margin = margins[i]
            if key is None:
                if i not in rest:
                    continue
                key = self._add(o, t, margins[i])
                taken.add(key)
                changes[key] = "observed"
            else:
                cause = self._update(key, o, t, margins[i])
                if cause != "confirmed":
                    changes[key] = cause
        for key in confirmed - taken:
            if key in self.g:
                self.emit(OpKind.NOOP, "node", key, "confirmed", t)
        for key, cause in self._negative_evidence(frame, taken | confirmed).items():
            changes[key] = cause
        return changes

    def _candidates(self, o: ObjectObservation, margin: float) -> Iterator[tuple[str, float]]:
        """``(key, cost)`` of the remembered objects this sighting may be."""
        cfg = self.config
        radius = cfg.match_radius + margin
        near = dict(self.grid.query(o.centroid, radius))
        for key in self._wide:
            if key not in near and self._box_gap(o, self.g.nodes[key]) <= margin:
                near[key] = float(np.linalg.norm(np.asarray(self.g.nodes[key]["centroid"]) - o.centroid))
        for key, dist in near.items():
            d = self.g.nodes[key]
            colour = self._appearance(o, d)
            if colour is None:
                continue
            inside = _inside_fraction(o.points, d["aabb_min"], d["aabb_max"], margin)
            if dist > radius and inside < cfg.overlap_same:
                continue
            overlap = max(_iou(o.aabb_min, o.aabb_max, d["aabb_min"], d["aabb_max"]), inside)
            yield key, (min(dist, radius) / radius + colour / self._colour_tolerance(o) + (1.0 - overlap)
                        + (1.0 - self._label_share(o.label, d)))

    def _segmentation_match(self, o: ObjectObservation, margin: float) -> list[str]:
        """Remembered objects an unmatched sighting is part of, or spans (see :meth:`integrate`)."""
        inside_of = [key for key, _d in self.grid.query(o.centroid, self.config.match_radius + 1.0)
                     if self._label_ok(o.label, self.g.nodes[key])
                     and self.g.nodes[key].get("state") == PRESENT
                     and _colour_distance(o, self.g.nodes[key]) <= self._colour_tolerance(o)
                     and float(np.max(self.g.nodes[key]["extent"])) >= float(np.max(o.extent))
                     and _inside_fraction(o.points, self.g.nodes[key]["aabb_min"],
                                          self.g.nodes[key]["aabb_max"], margin) >= 0.7]
        if inside_of:
            return inside_of[:1]
        if o.label != "unknown":
            return []
        lo, hi = o.aabb_min - margin, o.aabb_max + margin
        spanned = [key for key, _d in self.grid.query(o.centroid, float(np.max(o.extent)) + margin)
                   if self.g.nodes[key].get("state") == PRESENT
                   and np.all(np.asarray(self.g.nodes[key]["aabb_min"]) >= lo)
                   and np.all(np.asarray(self.g.nodes[key]["aabb_max"]) <= hi)]
        return spanned if len(spanned) >= 2 else []

    def _box_gap(self, o: ObjectObservation, d: dict[str, Any]) -> float:
        """Largest per-axis gap (m) between the sighting's box and a remembered box (0: they touch)."""
        gap = np.maximum(np.asarray(d["aabb_min"]) - o.aabb_max, o.aabb_min - np.asarray(d["aabb_max"]))
        return float(np.max(np.maximum(gap, 0.0)))

    def _label_ok(self, label: str, d: dict[str, Any]) -> bool:
        """A sighting labelled ``label`` may be the object ``d``: its label, one it was also seen
        as, or one the detector confuses with it (``unknown`` only matches ``unknown``)."""
        if label == d["label"]:
            return True
        if label == "unknown" or d["label"] == "unknown":
            return False
        return label in d.get("labels", {}) or self.config.sensor.detector.confusable(label, d["label"])

    @staticmethod
    def _label_share(label: str, d: dict[str, Any]) -> float:
        """The share of the sightings that gave ``label`` to the object (``labels`` counts the
        sightings under other labels than its own)."""
        others = d.get("labels") or {}
        n = max(int(d.get("n_obs", 1)), 1)
        if label == d["label"]:
            return max(n - sum(others.values()), 0) / n
        return float(others.get(label, 0)) / n

    def _appearance(self, o: ObjectObservation, d: dict[str, Any]) -> float | None:
        """Colour distance between a sighting and a stored object that could be the same one
        (not held, compatible label, similar size if unlabelled, similar colour); ``None`` otherwise."""
        if d.get("state") == HELD or not self._compatible(o, d):
            return None
        colour = _colour_distance(o, d)
        return colour if colour <= self._colour_tolerance(o) else None

    def _put_down_at(self, key: str, place: str, hand: np.ndarray, slack: float = 0.05) -> bool:
        """Whether a hand letting go at ``hand`` put object ``key`` down on or in ``place``: the hand
        over the place's surface (the open drawer's, where it is now) and no higher above it than
        the object is tall (the grasp point lies within the object), ``slack`` (m) each. A hand
        anywhere else let an object fall (a slip noticed after the arm moved on)."""
        spec = self._places[place]
        surface = spec.surface
        if spec.open_direction is not None:
            opening = float(self.g.nodes.get(f"place:{place}", {}).get("opening", 0.0))
            surface = Pose(surface.position + np.asarray(spec.open_direction, dtype=float) * opening,
                           surface.quaternion)
        local = surface.inverse().apply(np.asarray(hand, dtype=float))
        half = np.asarray(spec.surface_size, dtype=float) / 2 + slack
        height = float(np.asarray(self.g.nodes[key].get("extent", [0.0, 0.0, 0.1]), dtype=float)[2])
        return bool(np.all(np.abs(local[:2]) <= half) and -slack <= local[2] <= height + slack)

    def _colour_tolerance(self, o: ObjectObservation) -> float:
        """``colour_max``, widened for a small mask by what its border mixes in: under the sensor's
        colour/depth misregistration and mask dilation (``b`` pixels at this image's focal
        length), a band ``b`` wide along the border of a compact mask of ``n`` pixels, a fraction
        of about ``4 b / sqrt(n)``, may show what lies behind, which moves the mean colour by up
        to that fraction of the largest RGB distance. Ideal sensing: ``colour_max``."""
        if self._border_px <= 0.0:
            return self.config.colour_max
        f = min(1.0, 4.0 * self._border_px / math.sqrt(max(int(o.pixel_count), 1)))
        return self.config.colour_max + f * math.sqrt(3.0)

    def _compatible(self, o: ObjectObservation, d: dict[str, Any]) -> bool:
        if not self._label_ok(o.label, d):
            return False
        if o.label == "unknown" and not (o.truncated or d.get("partial")):
            a, b = np.asarray(d["extent"], dtype=float) + 0.01, np.asarray(o.extent, dtype=float) + 0.01
            ratio = np.maximum(a / b, b / a)
            if float(ratio.max()) > self.config.size_ratio_max:
                return False
        return True

    def _moved_candidate(self, o: ObjectObservation, taken: set[str]) -> str | None:
        """A same-label object this sighting elsewhere re-identifies: one memory saw leave its
        place (``missing``) or only guessed (a release placeholder), or, failing those, one not
        seen where memory holds it since the robot began watching (:meth:`begin_watch`). While the
        robot watches, an object memory believes in stays where it is and a second sighting of its label elsewhere
        is a second object; across a gap nobody watched, the one seen before is more likely this
        one, moved, than a new one beside it. A moved object still votes like any other
        (:meth:`_update`), so one false detection moves nothing. Objects larger than
        ``large_size`` (furniture in the masks) and anonymous segments never move this way."""
        best: tuple[int, float, str] | None = None
        for key in self.by_label.get(o.label, ()):
            if key in taken:
                continue
            d = self.g.nodes[key]
            if d.get("provisional"):
                rank = 0
            elif d.get("state") == MISSING:
                rank = 1
            elif (key in self._unwatched and o.label != "unknown"
                  and float(np.max(d["extent"])) <= self.config.large_size):
                rank = 2
            else:
                continue
            colour = self._appearance(o, d)
            if colour is None:
                continue
            if rank == 2:  # of look-alikes from before the gap, the nearest
                colour += 0.01 * float(np.linalg.norm(np.asarray(d["centroid"]) - o.centroid))
            if best is None or (rank, colour) < best[:2]:
                best = (rank, colour, key)
        return None if best is None else best[2]

    def _object_attrs(self, o: ObjectObservation, margin: float, box: tuple[Any, Any] | None = None
                      ) -> dict[str, Any]:
        """Node attributes of a sighting; ``box``: the (grown) box of a wide object instead of the view's."""
        if box is None and not self.config.sensor.is_ideal:  # stray points must not lift the top
            lo, hi = _robust_box(o)
            est = estimate_from_observation(o, None, (lo, hi))
        else:
            est = estimate_from_observation(o, None)
            lo, hi = (o.aabb_min, o.aabb_max) if box is None else (np.asarray(box[0]), np.asarray(box[1]))
        position, top_z = est.position, est.top_z
        centroid = o.centroid
        if box is not None:
            centroid = (lo + hi) / 2
            position, top_z = centroid.copy(), float(hi[2])
        place, relation = self.place_at(position, max(0.05, self._place_margin))
        room = self.room_at(position[:2])
        extent = np.asarray(o.extent) if box is None else np.sort(hi[:2] - lo[:2])[::-1].tolist() + [hi[2] - lo[2]]
        return {
            "position": np.asarray(position).tolist(), "centroid": np.asarray(centroid).tolist(),
            "top_z": float(top_z), "aabb_min": np.asarray(lo).tolist(), "aabb_max": np.asarray(hi).tolist(),
            "extent": np.asarray(extent).tolist(), "yaw": float(o.yaw) if box is None else 0.0,
            "colour": o.colour.tolist(), "place": place, "relation": relation, "room": room,
            "noise": round(self._sighting_noise, 4),
        }

    def _remember_surface(self, key: str, o: ObjectObservation, union: bool = False) -> None:
        """Keep a sample of the view's points (at most 64; 128 for wide objects, merged) for
        negative evidence."""
        s = self._scratch.setdefault(key, _Scratch())
        pts = np.asarray(o.points, dtype=float)
        if union and s.surface is not None:
            pts = np.concatenate([s.surface, pts])
        cap = 128 if union else 64
        if len(pts) > cap:
            pts = pts[np.linspace(0, len(pts) - 1, cap).astype(np.intp)]
        s.surface = pts

    def _add(self, o: ObjectObservation, t: float, margin: float) -> str:
        key = f"obj:{self._next_obj}"
        self._next_obj += 1
        box = _robust_box(o) if o.truncated else None
        attrs = self._object_attrs(o, margin, box)
        attrs.update(
            layer="object", label=o.label, state=PRESENT,
            first_seen=t, last_seen=t, last_changed=t, n_obs=1, confidence=float(o.confidence),
            history=[[t, *attrs["position"], attrs["place"] or ""]],
        )
        if o.truncated:
            attrs["partial"] = True
        self.emit(OpKind.ADD, "node", key, "observed", t, attrs)
        self._scratch[key] = _Scratch(exist=self.config.hit_logodds, best_support=o.pixel_count)
        self._remember_surface(key, o)
        self._relate(key, t)
        return key

    def _labels_after(self, o: ObjectObservation, d: dict[str, Any]) -> dict[str, Any]:
        """After a sighting under another label than the object's: the counts of other labels
        (``labels``), and the label when that one now has more sightings than the object's own."""
        others = dict(d.get("labels") or {})
        others[o.label] = int(others.get(o.label, 0)) + 1
        own = int(d.get("n_obs", 1)) + 1 - sum(others.values())
        out: dict[str, Any] = {"labels": others}
        if others[o.label] > own:
            others.pop(o.label)
            others[d["label"]] = max(own, 0)
            out["label"] = o.label
        return out

    def _update(self, key: str, o: ObjectObservation, t: float, margin: float) -> str:
        cfg = self.config
        d = self.g.nodes[key]
        s = self._scratch.setdefault(key, _Scratch(best_support=o.pixel_count))
        s.exist = min(cfg.exist_max, max(s.exist, 0.0) + cfg.hit_logodds)
        was_missing, provisional = d.get("state") == MISSING, bool(d.get("provisional"))
        displacement = float(np.linalg.norm(np.asarray(d["centroid"]) - o.centroid))
        wide = key in self._wide or o.truncated or float(np.max(o.extent)) > cfg.large_size
        partial = wide or o.pixel_count < cfg.low_support * s.best_support
        inside = _inside_fraction(o.points, d["aabb_min"], d["aabb_max"], margin)
        labels = self._labels_after(o, d) if o.label != d["label"] else {}
        if was_missing or provisional:
            return self._relocate(key, o, t, margin, "reappeared" if was_missing else "refined", labels)
        if displacement < self._move_threshold(margin) or inside >= cfg.overlap_same \
                or (wide and self._box_gap(o, d) <= margin):  # another part of a wide object
            s.votes, s.away = 0, None
            return self._confirm(key, o, t, margin, displacement, wide, partial, labels)
        # away from the remembered pose: believed only on consistent evidence
        if o.label == "unknown":  # anonymous: a segment elsewhere is another object until this one is seen gone
            self.emit(OpKind.NOOP, "node", key, "confirmed", t)
            return "confirmed"
        same_spot = s.away is not None and float(np.linalg.norm(s.away - o.centroid)) < self._move_threshold(margin)
        s.votes, s.away = (s.votes + 1 if same_spot else 1), o.centroid.copy()
        if s.votes < cfg.move_votes:
            self.emit(OpKind.NOOP, "node", key, "unconfirmed_move", t)
            return "confirmed"
        s.votes, s.away = 0, None
        return self._relocate(key, o, t, margin, "moved", labels)

    def _confirm(self, key: str, o: ObjectObservation, t: float, margin: float, displacement: float,
                 wide: bool, partial: bool, labels: dict[str, Any]) -> str:
        """A sighting at the remembered pose: NOOP, or a refined shape (a wide object's box grows
        by the view; a small one takes the best full view's centre and shape)."""
        d, s = self.g.nodes[key], self._scratch[key]
        if wide:
            lo, hi = _robust_box(o)
            lo = np.minimum(lo, d["aabb_min"])
            hi = np.maximum(hi, d["aabb_max"])
            grew = float(np.max(np.abs(np.r_[lo - np.asarray(d["aabb_min"]), hi - np.asarray(d["aabb_max"])])))
            self._remember_surface(key, o, union=True)
            if grew < max(self.config.refine_min, 0.5 * margin) and not labels:
                self.emit(OpKind.NOOP, "node", key, "confirmed", t)
                return "confirmed"
            attrs = self._object_attrs(o, margin, (lo, hi))
            attrs["partial"] = bool(o.truncated or d.get("partial"))
            grown = True
        else:
            grown = False
            if displacement < self.config.refine_min or partial:
                if labels:
                    self.emit(OpKind.UPDATE, "node", key, "relabelled", t,
                              {**labels, "last_seen": t, "n_obs": int(d.get("n_obs", 0)) + 1})
                    return "relabelled"
                self.emit(OpKind.NOOP, "node", key, "confirmed", t)
                if not d.get("place") and not self._edges_of(key, {"on", "in"}):
                    self._relate(key, t)  # nothing under it yet: what it stands on may be known now
                return "confirmed"
            s.best_support = max(s.best_support, o.pixel_count)
            self._remember_surface(key, o)
            attrs = self._object_attrs(o, margin)
            grown = True
        for name in ("place", "relation", "room"):  # the same pose: the same place
            attrs[name] = d.get(name)
        attrs.update(labels, last_seen=t, n_obs=int(d.get("n_obs", 0)) + 1,
                     confidence=max(float(d.get("confidence", 0.0)), float(o.confidence)))
        self.emit(OpKind.UPDATE, "node", key, "refined", t, attrs)
        self._relate(key, t)  # a better view may show what it stands on
        if grown:  # what stands on or in an object seen better may now be related to it
            lo, hi = np.asarray(attrs["aabb_min"]), np.asarray(attrs["aabb_max"])
            for other, _dist in list(self.grid.query((lo + hi) / 2, float(np.linalg.norm(hi - lo)) / 2 + 0.1)):
                c = np.asarray(self.g.nodes[other]["centroid"])
                if other != key and self.g.nodes[other].get("state") == PRESENT \
                        and np.all(c[:2] >= lo[:2]) and np.all(c[:2] <= hi[:2]):
                    self._relate(other, t)
        return "refined"

    def _relocate(self, key: str, o: ObjectObservation, t: float, margin: float, cause: str,
                  labels: dict[str, Any]) -> str:
        """The object is where this sighting shows it (a move, a reappearance, a placeholder resolved)."""
        d, s = self.g.nodes[key], self._scratch[key]
        s.best_support = o.pixel_count
        self._remember_surface(key, o)
        attrs = self._object_attrs(o, margin, _robust_box(o) if o.truncated else None)
        displacement = float(np.linalg.norm(np.asarray(d["centroid"]) - o.centroid))
        if cause != "moved" and (displacement >= self._move_threshold(margin) or attrs["place"] != d.get("place")):
            cause = "moved"  # a new place, or far from where it was believed
        attrs.update(labels, state=PRESENT, provisional=False, last_seen=t, last_changed=t,
                     n_obs=int(d.get("n_obs", 0)) + 1,
                     confidence=max(float(d.get("confidence", 0.0)), float(o.confidence)))
        if cause == "moved":
            attrs["+history"] = [t, *attrs["position"], attrs["place"] or ""]
        self.emit(OpKind.UPDATE, "node", key, cause, t, attrs)
        self._relate(key, t)
        return cause

    def _negative_evidence(self, frame: FrameInfo, seen: set[str]) -> dict[str, str]:
        """Existence evidence for remembered objects in view that no sighting matched.

        Each object's remembered surface points (or, without them, its box's centre and top face)
        are projected into the frame. Where the frame has depth, a point is *seen through* when
        the depth lies beyond it by more than the noise margin, *hidden* when nearer, and
        *there* otherwise. Only a view that sees through most of those not hidden
        (``free_fraction``) counts
        against the object; one that finds its surface there, or hides it, says nothing (a
        missed detection is not an absence). The object is ``missing`` once its existence
        log-odds fall below ``missing_below``.
        """
        cfg = self.config
        k, cam = frame.intrinsics, frame.camera_pose
        keys = {key for key, _d in self.grid.query(cam.position, cfg.view_range)} | {
            key for key in self._wide if self._box_distance(key, cam.position) <= cfg.view_range}
        keys = sorted(key for key in keys if key not in seen and self.g.nodes[key].get("state") == PRESENT)
        if not keys:
            return {}
        n_valid, n_free, z_med = self._view_evidence(keys, frame)
        out: dict[str, str] = {}
        for i, key in enumerate(keys):
            if key not in self.g:  # merged into an object that went missing earlier in this loop
                continue
            d = self.g.nodes[key]
            guessed = bool(d.get("provisional"))
            if (n_valid[i] < 1) if guessed else (n_valid[i] < 5 or n_free[i] < cfg.free_fraction * n_valid[i]):
                continue
            zi = float(z_med[i])
            size = float(np.max(d["extent"]))
            if k.fx * k.fy * size * max(float(np.min(d["extent"])), 0.02) / zi**2 < cfg.min_expected_pixels:
                continue  # too small at this range for the view to say much
            s = self._scratch.setdefault(key, _Scratch(exist=cfg.hit_logodds))
            if guessed:  # only a guessed spot: the evidence is that the detector did not see it there
                s.exist += math.log(max(cfg.sensor.detector.miss_rate, 0.02))
            else:
                s.exist += self._free_logodds(zi, k.fx, float(np.min(d["extent"][:2]))) * float(n_free[i] / n_valid[i])
            if s.exist < cfg.missing_below and self._tentative(d):
                self.emit(OpKind.DELETE, "node", key, "spurious", frame.time)  # a false detection
                out[key] = "spurious"
            elif s.exist < cfg.missing_below:
                self.emit(OpKind.UPDATE, "node", key, "not_seen", frame.time,
                          {"state": MISSING, "last_changed": frame.time, "confidence": 0.0})
                self._unrelate(key, frame.time)
                out[key] = "not_seen"
                twin = self._twin(key)
                if twin is not None:
                    self._merge(key, twin, frame.time)
                    out[key] = "moved"
        return out

    def _view_evidence(self, keys: Sequence[str], frame: FrameInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per object: how many of its remembered surface points the frame shows (depth there or
        beyond them, not hidden by something nearer), how many of those it sees through, and
        their median range (m). See :meth:`_negative_evidence`."""
        k, cam = frame.intrinsics, frame.camera_pose
        samples = [self._surface_points(key) for key in keys]
        owner = np.repeat(np.arange(len(keys)), [len(p) for p in samples])
        p = cam.inverse().apply(np.concatenate(samples))
        z = p[:, 2]
        safe_z = np.where(z > 0.15, z, 1.0)
        u = k.fx * p[:, 0] / safe_z + k.cx
        v = k.fy * p[:, 1] / safe_z + k.cy
        h, w = frame.depth.shape
        inside = (z > 0.15) & (u >= 2) & (u < w - 2) & (v >= 2) & (v < h - 2)
        measured = np.zeros(len(z))
        measured[inside] = frame.depth[v[inside].astype(np.intp), u[inside].astype(np.intp)]
        with np.errstate(invalid="ignore"):
            valid = inside & np.isfinite(measured) & (measured > 0)
        margin = self.margin(np.maximum(z, 0.1), k.fx)
        free = valid & (measured > z + margin)
        valid &= measured >= z - margin  # hidden points (something nearer) say nothing
        n = len(keys)
        counts = np.maximum(np.bincount(owner, minlength=n), 1)
        z_mean = np.bincount(owner, weights=np.maximum(z, 0.1), minlength=n) / counts
        return (np.bincount(owner, weights=valid, minlength=n), np.bincount(owner, weights=free, minlength=n),
                z_mean)

    def _unverifiable_near(self, o: ObjectObservation, taken: set[str], frame: FrameInfo) -> str | None:
        """The nearest same-label object within ``near_move`` of a sighting that nothing matched,
        whose remembered place this frame cannot show (out of view, or hidden: by the gripper
        taking it, say). A labelled object seen a little way from where memory holds it, while
        that place is out of sight, is that object, displaced; far away, or while its place is in
        view, it is another one."""
        near = [(dist, key) for key, dist in self.grid.query(o.centroid, self.config.near_move)
                if key not in taken and self.g.nodes[key].get("state") == PRESENT
                and not self.g.nodes[key].get("provisional") and self._appearance(o, self.g.nodes[key]) is not None]
        if not near or o.label == "unknown":
            return None
        near.sort()
        n_valid, _free, _z = self._view_evidence([key for _d, key in near], frame)
        for (_dist, key), shown in zip(near, n_valid.tolist(), strict=True):
            if shown < 5:
                return key
        return None

    def _tentative(self, d: dict[str, Any]) -> bool:
        """Seen once by a detector that makes false detections: gone, it was never there."""
        sensor = self.config.sensor
        noisy = sensor.detector.false_positive_rate > 0 or (d["label"] == "unknown" and not sensor.is_ideal)
        return int(d.get("n_obs", 1)) < 2 and noisy

    def _box_distance(self, key: str, point: np.ndarray) -> float:
        d = self.g.nodes[key]
        nearest = np.clip(point, d["aabb_min"], d["aabb_max"])
        return float(np.linalg.norm(nearest - point))

    def _surface_points(self, key: str) -> np.ndarray:
        """World points negative evidence tests: the last view's sample, or the box's centre and top
        face; for an object put down but not seen since, the spot memory guessed."""
        s = self._scratch.get(key)
        d = self.g.nodes[key]
        if d.get("provisional"):  # put down where the body said: its surface is not known yet
            return np.asarray([d["centroid"]], dtype=float)
        if s is not None and s.surface is not None and len(s.surface):
            return s.surface
        lo, hi = np.asarray(d["aabb_min"], dtype=float), np.asarray(d["aabb_max"], dtype=float)
        c = (lo + hi) / 2
        half = 0.3 * (hi - lo)
        top = [[c[0] + a * half[0], c[1] + b * half[1], hi[2]] for a in (-1, 0, 1) for b in (-1, 0, 1)]
        return np.array([c, *top])

    def _twin(self, key: str) -> str | None:
        """A present object of the same label and look, first seen after ``key`` was last seen
        where it was: the same object, seen elsewhere before memory knew it had left."""
        d = self.g.nodes[key]
        best: tuple[float, str] | None = None
        for other in self.by_label.get(d["label"], ()):
            e = self.g.nodes[other]
            if other == key or e.get("state") != PRESENT or float(e["first_seen"]) <= float(d["last_seen"]):
                continue
            colour = float(np.linalg.norm(np.asarray(d["colour"]) - np.asarray(e["colour"])))
            if colour > self.config.colour_max:
                continue
            if d["label"] == "unknown":
                a, b = np.asarray(d["extent"]) + 0.01, np.asarray(e["extent"]) + 0.01
                if float(np.max(np.maximum(a / b, b / a))) > self.config.size_ratio_max:
                    continue
            if best is None or colour < best[0]:
                best = (colour, other)
        return None if best is None else best[1]

    def _merge(self, key: str, twin: str, t: float) -> None:
        """``key`` moved to where ``twin`` was seen: it takes the twin's pose; the twin goes."""
        e = dict(self.g.nodes[twin])
        moved = {name: e[name] for name in ("position", "centroid", "top_z", "aabb_min", "aabb_max", "extent",
                                            "yaw", "colour", "place", "relation", "room", "noise") if name in e}
        moved.update(state=PRESENT, last_seen=e["last_seen"], last_changed=t, confidence=e.get("confidence", 1.0),
                     n_obs=int(self.g.nodes[key].get("n_obs", 0)) + int(e.get("n_obs", 1)),
                     **{"+history": [e["first_seen"], *e["position"], e.get("place") or ""]})
        scratch = self._scratch.get(twin)
        self.emit(OpKind.DELETE, "node", twin, "merged", t, {"into": key})
        self.emit(OpKind.UPDATE, "node", key, "moved", t, moved)
        if scratch is not None:
            self._scratch[key] = scratch
        self._relate(key, t)

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
                want.add((key, support[0], support[1]))
            elif d.get("place"):
                want.add((key, d.get("relation") or "on", f"place:{d['place']}"))
            for other, _dist in self.grid.query(np.asarray(d["centroid"]), self.config.near_radius):
                if other != key and self.g.nodes[other].get("state") == PRESENT \
                        and self.g.nodes[other].get("place") == d.get("place"):
                    a, b = sorted((key, other))
                    want.add((a, "near", b))
        # this object's own support edges and its near edges (what stands on it keeps its edges)
        have = {e for e in self._edges_of(key, {"on", "in", "near"}) if e[0] == key or e[1] == "near"}
        for u, r, v in sorted(have - want):
            self.emit(OpKind.DELETE, "edge", edge_key(u, r, v), "relation", t)
        for u, r, v in sorted(want - have):
            self.emit(OpKind.ADD, "edge", edge_key(u, r, v), "relation", t)

    def _support_object(self, key: str) -> tuple[str, str] | None:
        """``(relation, other)``: of the objects this one rests ``on`` (its bottom at the other's top,
        its centre over the other's footprint, within both sightings' noise margins) or stands
        ``in`` (a larger object whose box holds it, a shelf; or a wide shallow one its bottom
        stands inside of while its top sticks out, a tray): a holder it is in first, then the one
        with the smallest footprint (the nearest holder)."""
        d = self.g.nodes[key]
        lo, hi = np.asarray(d["aabb_min"]), np.asarray(d["aabb_max"])
        centre = (lo + hi) / 2
        others = {other for other, _dist in self.grid.query(np.asarray(d["centroid"]), 0.4)} | self._wide
        best: tuple[int, float, str, str] | None = None
        for other in others:
            e = self.g.nodes[other]
            if other == key or e.get("state") != PRESENT:
                continue
            olo, ohi = np.asarray(e["aabb_min"]), np.asarray(e["aabb_max"])
            tol = max(0.025, float(d.get("noise", 0.0)) + float(e.get("noise", 0.0)))
            over = bool(np.all(centre[:2] >= olo[:2] - tol) and np.all(centre[:2] <= ohi[:2] + tol))
            if not over:
                continue
            footprint = float(np.prod(ohi[:2] - olo[:2]))
            if abs(lo[2] - ohi[2]) < tol and hi[2] > ohi[2] and footprint >= 0.5 * float(np.prod(hi[:2] - lo[:2])):
                found = (1, footprint, "on", other)
            elif olo[2] - tol <= lo[2] and hi[2] <= ohi[2] + tol \
                    and float(np.prod(ohi - olo)) > 4.0 * float(np.prod(np.maximum(hi - lo, 0.01))):
                found = (0, footprint, "in", other)  # held inside a larger box (a shelf, a deep tray)
            elif olo[2] - tol <= lo[2] < ohi[2] - tol and hi[2] > ohi[2] \
                    and footprint > 4.0 * float(np.prod(np.maximum(hi[:2] - lo[:2], 0.01))):
                found = (0, footprint, "in", other)  # stands in a shallow one and sticks out (a tray)
            else:
                continue
            # a box the object stands in (the tray) before a top it stands on (the table under the
            # tray: a wide object's box grown by a poor view may reach past it); then the nearest
            # holder, the smallest footprint
            if best is None or found < best:
                best = found
        return None if best is None else (best[2], best[3])

    # -- body events (from proprioception and skill outcomes, never from the simulator) ----------
    def label_at(self, hand: Sequence[float] | None) -> str | None:
        """The label of the present (or missing) object nearest ``hand``, within
        :data:`GRASP_REACH_M`; None without one (or without a valid hand)."""
        at = np.asarray(hand, dtype=float).reshape(-1) if hand is not None else None
        if at is None or at.shape != (3,) or not np.all(np.isfinite(at)):
            return None
        best, best_d = None, GRASP_REACH_M
        for key, _ in self.grid.query(at, GRASP_REACH_M):
            d = self.g.nodes[key]
            if d.get("layer") != "object" or d.get("state") not in (PRESENT, MISSING):
                continue
            dist = float(np.linalg.norm(np.asarray(d["position"], dtype=float) - at))
            if dist <= best_d:
                best, best_d = str(d["label"]), dist
        return best

    def grasped(self, label: str, t: float, hand: Sequence[float] | None = None) -> str | None:
        """The body holds ``label``. With ``hand`` (the grasp point in the world), the object of
        that label nearest it (within :data:`GRASP_REACH_M`): of two look-alike blocks, the one the
        fingers closed on, not the one seen last."""
        key = None
        at = np.asarray(hand, dtype=float).reshape(-1) if hand is not None else None
        if at is not None and at.shape == (3,) and np.all(np.isfinite(at)):
            keys = [k for k in self.by_label.get(label, ()) if self.g.nodes[k].get("state") in (PRESENT, MISSING)]
            dist = {k: float(np.linalg.norm(np.asarray(self.g.nodes[k]["position"], dtype=float) - at)) for k in keys}
            near = [k for k in keys if dist[k] <= GRASP_REACH_M]
            key = min(near, key=lambda k: dist[k], default=None)
        if key is None:
            key = self.best(label, (PRESENT, MISSING))
        if key is None:
            return None
        self.emit(OpKind.UPDATE, "node", key, "grasped", t,
                  {"state": HELD, "place": None, "relation": None, "last_changed": t})
        self._unrelate(key, t)
        self.emit(OpKind.ADD, "edge", edge_key("agent", "holds", key), "grasped", t)
        return key

    def released(self, label: str, place: str | None, t: float, hand: Sequence[float] | None = None) -> str | None:
        """The body let go of ``label`` at ``place`` (None: at no named place). Put down at a place
        (see :meth:`_put_down_at`), until the camera sees it, the object is where the hand let go
        (``hand``: the grasp point in the world, from the arm's joints), else in the middle of the
        place: a placeholder a sighting re-identifies."""
        key = self.best(label, (HELD,))
        if key is None:
            return None
        relation = self._places[place].relation if place in self._places else None
        attrs: dict[str, Any] = {"state": PRESENT, "place": place, "relation": relation, "last_changed": t}
        at_hand = None
        if hand is not None:
            at_hand = np.asarray(hand, dtype=float).reshape(-1)
            if at_hand.shape != (3,) or not np.all(np.isfinite(at_hand)):
                at_hand = None
        pos = None
        if at_hand is not None and place in self._places and self._put_down_at(key, place, at_hand):
            pos = at_hand
        elif at_hand is not None and place is None:  # let go at no named place: where the hand is
            pos = at_hand
        elif place in self._places:  # the middle of where it was put
            spec = self._places[place]
            pos = spec.surface.position + np.array([0.0, 0.0, 0.03])
            if spec.open_direction is not None:  # an open drawer's bottom is out by its opening
                opening = float(self.g.nodes.get(f"place:{place}", {}).get("opening", 0.0))
                pos = pos + np.asarray(spec.open_direction, dtype=float) * opening
        if pos is not None:
            attrs.update(position=pos.tolist(), centroid=pos.tolist(), confidence=0.3, provisional=True)
            attrs["+history"] = [t, *pos.tolist(), place or ""]
        self.emit(OpKind.UPDATE, "node", key, "released", t, attrs)
        if self.g.has_edge("agent", key, key="holds"):
            self.emit(OpKind.DELETE, "edge", edge_key("agent", "holds", key), "released", t)
        self._scratch[key] = _Scratch(exist=self.config.hit_logodds)
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
                  {"state": state, "opening": float(opening), "last_changed": t,
                   "max_opening": max(float(d.get("max_opening", 0.0)), float(opening), before)})
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
                scratch = self._scratch.get(obj)
                if scratch is not None and scratch.surface is not None:
                    scratch.surface = scratch.surface + shift
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


def _colour_distance(o: ObjectObservation, d: dict[str, Any]) -> float:
    """RGB distance between a sighting's mean colour and a remembered object's."""
    return float(np.linalg.norm(np.asarray(d["colour"]) - o.colour))


def _inside_fraction(points: np.ndarray, lo: Sequence[float], hi: Sequence[float], margin: float) -> float:
    """Fraction of ``points`` inside the box ``[lo, hi]`` grown by ``margin`` on every side."""
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        return 0.0
    inside = np.all((pts >= np.asarray(lo) - margin) & (pts <= np.asarray(hi) + margin), axis=1)
    return float(np.count_nonzero(inside)) / len(pts)


def _robust_box(o: ObjectObservation) -> tuple[np.ndarray, np.ndarray]:
    """The 1st-99th percentile box of a view's points (flying pixels do not stretch it)."""
    pts = np.asarray(o.points, dtype=float)
    if len(pts) < 20:
        return np.asarray(o.aabb_min, dtype=float), np.asarray(o.aabb_max, dtype=float)
    lo, hi = np.percentile(pts, [1.0, 99.0], axis=0)
    return lo, hi


def replay(ops: Iterable[MemoryOp], graph: SceneGraph) -> SceneGraph:
    """Apply ``ops`` in order to ``graph`` (e.g. the tail after a snapshot)."""
    for op in ops:
        graph.apply(op)
    return graph

