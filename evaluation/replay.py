"""Replay a recorded bag through perception and memory, with no simulator, and score memory.

Usage::

    result = replay(ReplayConfig(bag="runs/ep0", questions="runs/ep0/questions.jsonl"))
    print(result.render())

Each question is answered when the replay reaches its time ``t``: after every frame stamped at
or before ``t`` and before any later one. Memory is built from the bag's camera frames only
(and, for mnemobot's own recordings, the robot's body facts: what it held and opened); the
memory operations recorded in the bag are not read, so the score measures memory afresh.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mnemobot.agent.errors import UserError
from mnemobot.evaluation.questions import (
    Question,
    QuestionError,
    Report,
    answer,
    load_questions,
    write_answers,
)

__all__ = ["ReplayConfig", "ReplayResult", "prefetch", "replay"]

T = TypeVar("T")


@dataclass
class ReplayConfig:
    """``changes_from``: ``graph`` (default) or ``short-term`` (change questions answered from
    the short-term table alone; see :mod:`mnemobot.evaluation.questions`)."""

    bag: str | Path
    questions: str | Path | None = None
    answers: str | Path | None = None
    report: str | Path | None = None
    topics: str | Path | None = None
    labels: str | Path | None = None
    memory_policy: str = "lru"
    short_term_capacity: int = 32
    changes_from: str = "graph"
    tol_m: float = 0.15
    tol_s: float = 1.0
    embedder: str = "lexical"
    sensor_profile: str | None = None
    """``ideal``, ``kinect``, ``realsense``, ``heavy`` or a YAML file; None: the bag's declaration
    (see :func:`sensor_for`)."""


@dataclass
class ReplayResult:
    bag: str
    storage: str
    duration_s: float
    frames: int
    wall_s: float
    update_ms: list[float]
    report: Report
    answers: list[tuple[Question, dict[str, Any]]]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = self.report.to_dict()
        d["replay"] = {"bag": self.bag, "storage": self.storage, "duration_s": round(self.duration_s, 3),
                       "frames": self.frames, "wall_s": round(self.wall_s, 3), "frames_per_s": round(self.fps, 2),
                       "notes": self.notes, "dropped": {k: v for k, v in self.stats.items() if k != "frames"},
                       "question_problems": self.problems, "memory": self.memory}
        return d

    def render(self, notes: bool = True) -> str:
        """The summary and score table; ``notes``: include the bag's notes (off when they were
        already printed as progress)."""
        lines = [f"bag        : {self.bag} ({self.storage}, {self.duration_s:.1f} s)",
                 f"frames     : {self.frames} in {self.wall_s:.1f} s ({self.fps:.1f} frames/s)",
                 f"memory     : {self.memory.get('objects', 0)} objects, {self.memory.get('ops', 0)} operations",
                 "changes    : " + (", ".join(f"{v} {k}" for k, v in sorted(self.memory.get("changes", {}).items()))
                                    or "none")]
        lines += [f"note       : {n}" for n in self.notes] if notes else []
        dropped = {k: v for k, v in self.stats.items() if k != "frames" and v}
        if dropped:
            lines.append("dropped    : " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in dropped.items()))
        if self.problems:
            lines.append(f"questions  : {len(self.problems)} malformed line(s) skipped:")
            lines += [f"  {p}" for p in self.problems[:20]]
        if self.answers:
            lines += ["", self.report.render()]
        return "\n".join(lines)


def prefetch(items: Iterator[T], depth: int = 4, timeout_s: float = 300.0) -> Iterator[T]:
    """``items``, produced by a background thread up to ``depth`` ahead: reading and decoding the
    next frames (decompression, deserialisation) runs while this one is perceived (both release
    the GIL in their native parts). An exception in the producer is raised here, in order; a
    producer silent for ``timeout_s`` raises :class:`TimeoutError` instead of hanging."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(("error", e))

    thread = threading.Thread(target=produce, name="replay-reader", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, value = q.get(timeout=timeout_s)
            except queue.Empty:
                raise TimeoutError(f"no frame from the bag reader for {timeout_s:.0f} s") from None
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5.0)


def sensor_for(cfg: ReplayConfig, info: Any) -> tuple[Any, str]:
    """The sensor model memory assumes for the bag, and why: the one asked for; else the one the
    bag declares (``/mnemobot/sensor_profile``); else ``ideal`` for a mnemobot recording made
    before profiles were declared (the simulator's exact camera) and ``kinect`` for any other
    bag (a real RGB-D camera: the conservative default)."""
    from mnemobot.perception.sensor import SensorError, SensorModel, sensor_model

    try:
        if cfg.sensor_profile is not None:
            model = sensor_model(cfg.sensor_profile)
            return model, f"sensor profile {model.name} (given)"
        declared = getattr(info, "sensor", None)
        if declared:
            model = SensorModel.from_dict(declared, f"bag {info.path}: its sensor profile")
            return model, f"sensor profile {model.name} (declared by the bag)"
    except SensorError as e:
        raise UserError(str(e)) from None
    if info.site_map is not None:
        return sensor_model("ideal"), "sensor profile ideal (a mnemobot recording that declares none)"
    return sensor_model("kinect"), "sensor profile kinect (the bag declares none; give --sensor-profile)"


def _memory(cfg: ReplayConfig, info: Any) -> Any:
    from mnemobot.memory.graph import SceneGraphConfig
    from mnemobot.memory.memory import Memory, MemoryConfig
    from mnemobot.memory.short_term import ShortTermConfig

    site = None
    if info.site_map is not None:
        from mnemobot.control.site import SiteMap

        try:
            site = SiteMap.from_dict(info.site_map)
        except ValueError as e:
            raise UserError(f"bag {info.path}: {e}") from None
    try:
        sensor, why = sensor_for(cfg, info)
        info.notes.append(why)
        mem = Memory(MemoryConfig(graph=SceneGraphConfig(static_labels=frozenset(info.static_labels)),
                                  short_term=ShortTermConfig(capacity=cfg.short_term_capacity,
                                                             policy=cfg.memory_policy),
                                  embedder=cfg.embedder, sensor=sensor), site=site)
    except ValueError as e:  # unknown policy or capacity
        raise UserError(str(e)) from None
    mem.begin_episode({"replay": str(info.path)})
    return mem


def bag_inputs(topics: Path | None, labels: Path | None) -> tuple[Any, dict[int, str] | None]:
    """The topic map (defaults without a file) and the instance labels of a bag to read; a bad
    file raises :class:`UserError`."""
    from mnemobot.ros2.bag import BagError, load_labels
    from mnemobot.ros2.topics import TopicMap, TopicMapError

    try:
        return (TopicMap.from_yaml(topics) if topics is not None else TopicMap(),
                load_labels(labels) if labels is not None else None)
    except (TopicMapError, BagError) as e:
        raise UserError(str(e)) from None


def apply_body(memory: Any, body: dict[str, Any] | None, t: float) -> None:
    """Give memory the body facts a recorded frame carries (``/mnemobot/body``: held object,
    opened containers, place, hand), if it has any."""
    if body is not None:
        memory.set_body(body.get("held"), dict(body.get("opened") or {}), body.get("at_place"), t=t,
                        hand=body.get("hand"))


def replay(cfg: ReplayConfig, progress: Callable[[str], None] | None = None) -> ReplayResult:
    """Replay ``cfg.bag``; bad input (bag, topic map, labels, questions) raises :class:`UserError`."""
    from mnemobot.perception.types import ObservationError
    from mnemobot.ros2.bag import BagError, BagSource

    say = progress or (lambda _m: None)
    if cfg.changes_from not in ("graph", "short-term"):
        raise UserError(f"--changes-from must be 'graph' or 'short-term', got {cfg.changes_from!r}")
    questions: list[Question] = []
    problems: list[str] = []
    try:
        if cfg.questions is not None:
            questions, problems = load_questions(cfg.questions)
    except QuestionError as e:
        raise UserError(str(e)) from None
    topics, labels = bag_inputs(cfg.topics, cfg.labels)
    for p in problems:
        say(f"questions: {p} (skipped)")
    report = Report(cfg.tol_m, cfg.tol_s)
    answers: list[tuple[Question, dict[str, Any]]] = []
    update_ms: list[float] = []
    bad_frames = 0
    try:
        with BagSource(cfg.bag, topics, labels) as src:
            info = src.info
            memory = _memory(cfg, info)
            for n in info.notes:
                say(f"note: {n}")
            pending = list(questions)
            qi = 0

            def ask_until(t: float) -> None:
                nonlocal qi
                while qi < len(pending) and pending[qi].t < t:
                    q = pending[qi]
                    qi += 1
                    t0 = time.perf_counter()
                    a = answer(q, memory, cfg.changes_from)
                    ms = (time.perf_counter() - t0) * 1e3
                    report.add(q, a, ms)
                    answers.append((q, a))

            wall0 = time.perf_counter()
            try:
                for frame in prefetch(src.frames()):
                    ask_until(frame.t)
                    t0 = time.perf_counter()
                    apply_body(memory, frame.body, frame.t)
                    try:
                        memory.update(frame.obs, place=(frame.body or {}).get("at_place"))
                    except ObservationError as e:
                        bad_frames += 1
                        if bad_frames <= 3:
                            say(f"frame at {frame.t:.2f} s skipped: {e}")
                        continue
                    update_ms.append((time.perf_counter() - t0) * 1e3)
                ask_until(float("inf"))
                wall = time.perf_counter() - wall0
            finally:
                memory.close()
            stats = dict(src.stats, bad_frames=bad_frames)
            result = ReplayResult(bag=str(info.path), storage=info.storage, duration_s=info.duration_s,
                                  frames=len(update_ms), wall_s=wall, update_ms=update_ms, report=report,
                                  answers=answers, notes=list(info.notes), problems=problems, stats=stats,
                                  memory=memory.stats())
    except BagError as e:
        raise UserError(str(e)) from None
    report.short_term = memory.short_term.stats
    if cfg.answers is not None:
        write_answers(cfg.answers, answers)
    if cfg.report is not None:
        import json

        Path(cfg.report).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.report).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result
