"""The hippocampus facade: perception -> scene graph -> short-term memory -> episodic store.

:class:`Memory` is what the agent holds. Every frame it extracts object observations, fuses them
into the :class:`~mnemobot.memory.graph.SceneGraph`, records state changes in the
:class:`~mnemobot.memory.short_term.ShortTermMemory`, and appends the frame's operations to the
:class:`~mnemobot.memory.store.EpisodicStore` in one transaction (when a database path is
given). It implements the :class:`~mnemobot.memory.types.ObjectLocator` protocol that skills
read, and answers the planner through :class:`~mnemobot.memory.retrieval.MemoryQuery`.

Usage::

    memory = Memory(MemoryConfig(db_path="house.db"), site=site_map)
    memory.begin_episode({"task": "fetch", "seed": 0})
    memory.update(observation, place="kitchen_table")   # every perception frame
    memory.query.where("mug")                            # planner questions
    memory.end_episode({"success": True}); memory.close()

Clock: observations carry episode time (seconds since the episode started). Memory keeps one
monotonic clock across episodes: an episode's time ``t`` is stored as ``offset + t``, where the
offset is one second after everything already remembered. :meth:`Memory.now` converts.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mnemobot.memory.articulation import perceive_openings
from mnemobot.memory.graph import HELD, PRESENT, FrameInfo, SceneGraph, SceneGraphConfig
from mnemobot.memory.retrieval import Hit, MemoryQuery, build_context
from mnemobot.memory.short_term import ShortTermConfig, ShortTermMemory, StateChange
from mnemobot.memory.types import MapLike, ObjectEstimate
from mnemobot.perception.objects import ObjectObservation, objects_from_observation
from mnemobot.perception.sensor import SensorModel
from mnemobot.perception.types import Observation

__all__ = ["Memory", "MemoryConfig"]

log = logging.getLogger(__name__)

OPENING_CHANGE_M = 0.05
"""A drawer seen this much more or less open than memory holds has been opened or closed (less
is the noise of the panel's percentile, and a push that did not move it)."""
_STM_CHANGES = {"observed": "appeared", "moved": "moved", "not_seen": "missing", "reappeared": "appeared",
                "grasped": "grasped", "released": "released", "opened": "opened", "closed": "closed"}


@dataclass
class MemoryConfig:
    """``db_path``: SQLite file for persistence across episodes and restarts (None: in-process).
    ``embedder``: ``auto`` | ``minilm`` | ``lexical`` | ``none`` (word overlap) for descriptions.
    ``snapshot_every``: ops between graph snapshots in the store (bounds reload time).
    ``sensor``: the camera rig's noise model; memory derives its association, move and
    existence thresholds from it (:mod:`mnemobot.perception.sensor`)."""

    db_path: str | Path | None = None
    graph: SceneGraphConfig = field(default_factory=SceneGraphConfig)
    short_term: ShortTermConfig = field(default_factory=ShortTermConfig)
    embedder: str = "auto"
    embedder_path: str | None = None
    snapshot_every: int = 2000
    record_trace: bool = False
    sensor: SensorModel = field(default_factory=SensorModel)


class Memory:
    """Long-term scene graph + short-term memory + optional persistent store. See module doc."""

    def __init__(self, config: MemoryConfig | None = None, site: MapLike | None = None,
                 extractor: Callable[[Observation], Sequence[ObjectObservation]] | None = None) -> None:
        self.config = config or MemoryConfig()
        graph_cfg = self.config.graph
        if graph_cfg.sensor.is_ideal and not self.config.sensor.is_ideal:
            graph_cfg = replace(graph_cfg, sensor=self.config.sensor)
        self.graph = SceneGraph(graph_cfg, site)
        self.short_term = ShortTermMemory(self.config.short_term)
        self._extract = extractor or _extractor_for(graph_cfg.sensor)
        self.store = None
        self.offset = 0.0
        self.episode = 0
        self.trace: list[dict[str, Any]] = []
        self.changes: Counter[str] = Counter()
        """State changes recorded so far, by kind (``appeared``, ``moved``, ``missing``, ``grasped``...)."""
        self.op_sinks: list[Callable[[list[Any]], None]] = []
        """Called with each batch of operations as it is flushed (a recorder, a viewer)."""
        self._held: str | None = None
        self._opened: dict[str, float] = {}
        self._at_place: str | None = None
        self._last_snapshot = 0
        self._last_t = 0.0
        if self.config.db_path is not None:
            self._open_store(Path(self.config.db_path))
        if site is not None:
            self.graph.load_map(site, self.offset)
            self._flush()
        self.query = MemoryQuery(self.graph, _make_embedder(self.config))

    # -- persistence --------------------------------------------------------------------------------
    def _open_store(self, path: Path) -> None:
        from mnemobot.memory.store import EpisodicStore

        self.store = EpisodicStore(path)
        state, ops = self.store.load()
        if state is not None:
            self.graph.load_state(state)
        for op in ops:
            self.graph.apply(op)
        self._last_snapshot = self.graph.seq
        self.offset = self._next_offset()
        log.info("memory: %d objects loaded from %s", len(self.graph.by_layer("object")), path)

    def _flush(self, events: Sequence[Any] = ()) -> None:
        ops = self.graph.drain()
        if ops:
            for sink in self.op_sinks:
                sink(ops)
        if self.store is None or (not ops and not events):
            return
        self.store.append(ops, events)
        if self.graph.seq - self._last_snapshot >= self.config.snapshot_every:
            self.snapshot()

    def snapshot(self) -> None:
        """Write the whole graph to the store (later loads replay only the ops after it)."""
        if self.store is not None:
            self.store.save_snapshot(self.graph.seq, self.now(self._last_t), self.graph.to_state())
            self._last_snapshot = self.graph.seq

    # -- episodes -----------------------------------------------------------------------------------
    def begin_episode(self, meta: dict[str, Any] | None = None) -> int:
        """Start an episode: a new clock offset after everything remembered, an episode id."""
        self.offset = self._next_offset()
        self.episode = self.store.begin_episode(dict(meta or {}, clock_offset=self.offset)) \
            if self.store is not None else self.episode + 1
        self.graph.episode = self.episode
        self.graph.begin_watch()  # what memory holds from before was not watched since
        self._held, self._opened, self._at_place, self._last_t = None, {}, None, 0.0
        if self.graph.site is not None:
            self.graph.load_map(self.graph.site, self.offset)
            self._flush()
        return self.episode

    def _next_offset(self) -> float:
        """One second after everything remembered (0 for an empty memory)."""
        latest = max((float(self.graph.node(n).get("last_seen", 0.0)) for n in self.graph.by_layer("object")),
                     default=0.0)
        if self.store is not None:
            latest = max(latest, self.store.last_time())
        return latest + 1.0 if latest > 0 else 0.0

    def end_episode(self, outcome: dict[str, Any] | None = None) -> None:
        self._flush()
        if self.store is not None:
            self.snapshot()
            self.store.end_episode(self.episode, dict(outcome or {}))

    def close(self) -> None:
        if self.store is not None:
            self._flush()
            self.store.close()
            self.store = None

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self, t: float) -> float:
        """Memory time of episode time ``t``."""
        return self.offset + t

    def local(self, memory_time: float) -> float:
        """Episode time of a memory time."""
        return memory_time - self.offset

    # -- body facts (proprioception and skill outcomes) ----------------------------------------------
    def set_body(self, held: str | None, opened: dict[str, float], at_place: str | None = None,
                 t: float | None = None, hand: Sequence[float] | None = None) -> None:
        """What the body knows: the object in the gripper, the containers it opened (how far),
        and where the hand is (``hand``: the grasp point in the world, from the arm's joints; a
        released object is remembered there until the camera sees it). A ``held`` name memory has
        no object of is the object nearest the hand (:meth:`SceneGraph.label_at`): the body may
        name it as the simulator does, or not at all (:data:`~mnemobot.control.skills.UNNAMED_HELD`).

        Called before each :meth:`update`; changes become grasped/released/opened/closed ops.
        """
        when = self.now(self._last_t if t is None else t)
        changes: list[tuple[str, str, str, dict[str, Any]]] = []
        if held is not None and not self.graph.by_label.get(held):
            # a name memory does not know (the simulator's "block_1" for a detector's "block", or
            # a hand closed on something no skill named): what is in the hand is the object at it
            held = self._held if self._held is not None else (self.graph.label_at(hand) or held)
        if held != self._held:
            if self._held is not None:
                key = self.graph.released(self._held, at_place, when, hand=hand)
                if key:
                    data: dict[str, Any] = {"place": at_place}
                    hist = self.graph.node(key).get("history", [])
                    if len(hist) >= 2 and hist[-1][0] == when:  # how far it was carried
                        data["moved_m"] = round(math.dist(hist[-1][1:4], hist[-2][1:4]), 3)
                    changes.append((key, self._held, "released", data))
            if held is not None:
                key = self.graph.grasped(held, when, hand=hand)
                if key:
                    changes.append((key, held, "grasped", {}))
            self._held = held
        for name in set(self._opened) | set(opened):
            now, before = float(opened.get(name, 0.0)), float(self._opened.get(name, 0.0))
            if abs(now - before) > 0.01 or (name in opened) != (name in self._opened):
                self.graph.articulated(name, now, when)
                changes.append((f"place:{name}", name, "opened" if now > 0.02 else "closed", {"opening": now}))
        self._opened = dict(opened)
        self._at_place = at_place
        for key, label, change, data in changes:
            self._remember(key, label, change, when, data)
        self._flush()

    @property
    def at_place(self) -> str | None:
        """The named place the body said it is at (:meth:`set_body`), if any."""
        return self._at_place

    # -- perception ----------------------------------------------------------------------------------
    def update(self, obs: Observation, place: str | None = None) -> dict[str, str]:
        """Integrate one frame; returns ``{object key: cause}`` of what changed.

        Bad frames (size mismatch, NaN-only depth, unknown mask ids...) raise before memory changes.
        """
        observations = self._extract(obs)
        self._last_t = float(obs.timestamp)
        t = self.now(obs.timestamp)
        frame = FrameInfo(t, obs.camera_pose, obs.intrinsics, obs.depth)
        skip = {self._held} if self._held else set()
        changes = self.graph.integrate(observations, frame, skip_labels=skip)
        if obs.proprio is not None:
            x, y, yaw = (float(v) for v in obs.proprio.base_pose)
            self.graph.agent_at((x, y), yaw, place, t)
        self._look_at_drawers(obs, t)
        for key, cause in changes.items():
            if key in self.graph.g:
                d = self.graph.node(key)
                hist = d.get("history") or [[t]]
                when = float(hist[-1][0]) if cause == "moved" else t  # a move dates from its first sighting
                self._remember(key, d["label"], _STM_CHANGES.get(cause, cause), when, {"place": d.get("place")})
        self._flush()
        return changes

    def _look_at_drawers(self, obs: Observation, t: float) -> None:
        """Drawers seen open or closed (:mod:`mnemobot.memory.articulation`): a change of more than
        :data:`OPENING_CHANGE_M` from what memory holds becomes an opened/closed change."""
        site = self.graph.site
        if site is None or obs.instances is None:
            return
        views = perceive_openings(obs, site.places.values(), self.graph.config.static_labels, self.graph.margin)
        for name, view in views.items():
            node = self.graph.g.nodes.get(f"place:{name}")
            if node is None or abs(view.opening - float(node.get("opening", 0.0))) <= OPENING_CHANGE_M:
                continue
            self.graph.articulated(name, view.opening, t)
            self._remember(f"place:{name}", name, "opened" if view.opening > 0.02 else "closed", t,
                           {"opening": round(view.opening, 3), "seen": True})

    def _remember(self, key: str, label: str, change: str, t: float, data: dict[str, Any]) -> None:
        if change == "refined":
            return
        self.changes[change] += 1
        rec = StateChange(key=key, label=label, change=change, time=t, data=data)
        self.short_term.record(rec)
        if self.config.record_trace:
            self.trace.append({"t": t, "op": "put", "key": key, "label": label, "change": change})

    # -- ObjectLocator ---------------------------------------------------------------------------------
    def locate(self, label: str) -> ObjectEstimate | None:
        key = self.graph.best(label, (PRESENT, HELD))
        if key is None:
            return None
        est = self.graph.estimate(key)
        return ObjectEstimate(est.label, est.position, est.top_z, est.extent, est.yaw, est.place,
                              self.local(est.time), est.confidence)

    def known_labels(self) -> set[str]:
        return {self.graph.node(k)["label"] for k in self.graph.objects((PRESENT, HELD))}

    # -- planner questions -------------------------------------------------------------------------------
    def ask(self, label: str) -> list[Hit]:
        """The planner asks where an object is: short-term memory first (counted), then the graph."""
        hits = self.query.where(label)
        key = hits[0].key if hits else f"label:{label}"
        self.short_term.get(key)
        if self.config.record_trace:
            self.trace.append({"t": self.now(self._last_t), "op": "get", "key": key, "label": label})
        return hits

    def recall_origin(self, label: str) -> str | None:
        """Where the object was when this episode first saw it (the place to put it back)."""
        self.ask(label)
        return self.query.origin(label, since=self.offset)

    def context(self, instruction: str, budget_tokens: int = 400) -> str:
        """Memory rendered for a planner prompt (see :func:`~mnemobot.memory.retrieval.build_context`)."""
        return build_context(self.query, instruction, budget_tokens, recent=self.short_term.recent(8),
                             now=self.now(self._last_t))

    def log_event(self, kind: str, data: dict[str, Any], object: str | None = None,  # noqa: A002
                  place: str | None = None, t: float | None = None) -> None:
        """Append an episodic event (instruction, plan, skill result...) to the store."""
        if self.store is None:
            return
        from mnemobot.memory.store import Event

        when = self.now(self._last_t if t is None else t)
        self._flush([Event(time=when, episode=self.episode, kind=kind, data=data, object=object, place=place)])

    def stats(self) -> dict[str, Any]:
        objects = self.graph.by_layer("object")
        states: dict[str, int] = {}
        for k in objects:
            s = self.graph.node(k).get("state", PRESENT)
            states[s] = states.get(s, 0) + 1
        st = self.short_term.stats
        return {"objects": len(objects), "states": states, "ops": self.graph.seq, "changes": dict(self.changes),
                "short_term": {"size": len(self.short_term), "hits": st.hits, "misses": st.misses}}


def _extractor_for(sensor: SensorModel) -> Callable[[Observation], Sequence[ObjectObservation]]:
    """Perception as the sensor needs it: exact data as it is; a real sensor's flying pixels
    removed (statistical outliers), mask pixels on another surface than the object's dropped
    (depth gate), masks smaller than its detector finds at the image's focal length dropped, and frames
    wider than 320 px segmented on every second pixel row and column (the segmenter's voxels
    are coarser than that)."""
    if sensor.is_ideal:
        return objects_from_observation
    from mnemobot.perception.objects import ObjectExtractorConfig
    from mnemobot.perception.segment import SegmenterConfig

    segmenters: dict[int, SegmenterConfig] = {}
    extractors: dict[float, ObjectExtractorConfig] = {}

    def extract(obs: Observation) -> Sequence[ObjectObservation]:
        stride = max(1, round(obs.intrinsics.width / 320))
        seg = segmenters.setdefault(stride, SegmenterConfig(pixel_stride=stride))
        fx = float(obs.intrinsics.fx)
        objects = extractors.get(fx)
        if objects is None:  # the detector's smallest mask, in pixels of this image
            smallest = sensor.at_focal(fx).detector.min_pixels
            objects = extractors[fx] = ObjectExtractorConfig(min_pixels=max(20, smallest), outlier_neighbors=12,
                                                             depth_gate=0.1)
        return objects_from_observation(obs, config=objects, segmenter=seg)

    return extract


class _LazyEmbedder:
    """Builds the configured embedder on first use (loading a model takes seconds)."""

    def __init__(self, kind: str, path: str | None) -> None:
        self.kind, self.path = kind, path
        self._impl: Any | None = None

    @property
    def impl(self) -> Any:
        if self._impl is None:
            from mnemobot.memory.embedding import make_embedder

            self._impl = make_embedder(self.kind, model_path=self.path)
        return self._impl

    @property
    def dim(self) -> int:
        return int(self.impl.dim)

    @property
    def name(self) -> str:
        return str(self.impl.name)

    def encode(self, texts: Sequence[str]) -> Any:
        return self.impl.encode(texts)


def _make_embedder(config: MemoryConfig) -> Any | None:
    if config.embedder == "none":
        return None
    return _LazyEmbedder(config.embedder, config.embedder_path)
