"""Memory accuracy against horizon, per short-term policy: every episode of a suite replayed.

Usage::

    scores = score_suite("suites/demo", capacity=16)
    for (memory, horizon), cell in scores.cells.items():
        print(memory, horizon, cell.correct, "/", cell.n)

Each episode of a suite written by ``mnemobot suite`` is replayed through perception and memory
once per memory configuration (no simulator; :func:`mnemobot.evaluation.replay.replay`):

* ``graph``: the long-term scene graph answers every question (the default memory);
* ``<policy>/<capacity>``: the change questions (``changed``, ``state``, ``order``, ``last_seen``)
  are answered from the short-term table alone, under that eviction policy
  (:data:`mnemobot.memory.short_term.POLICIES`) with ``capacity`` entries: where it starts to
  forget as the horizon grows;
* ``none``: no short-term memory, the baseline.

A question counts as correct when its score is 1 (a ``changed`` answer must name exactly the
objects that changed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnemobot.agent.errors import UserError

__all__ = ["HorizonScores", "Tally", "memory_configs", "score_suite"]

ALL = "all"


@dataclass
class Tally:
    """Correct answers out of ``n`` questions."""

    correct: int = 0
    n: int = 0

    def add(self, correct: int, n: int) -> None:
        self.correct += correct
        self.n += n

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None


@dataclass
class HorizonScores:
    """What :func:`score_suite` measured: ``cells[(memory, horizon)][question type or "all"]``."""

    suite: str
    capacity: int
    horizons: list[int]
    memories: list[str]
    episodes: int
    cells: dict[tuple[str, int], dict[str, Tally]] = field(default_factory=dict)
    hit_rate: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    latency_p95_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def tally(self, memory: str, horizon: int, kind: str = ALL) -> Tally:
        return self.cells.get((memory, horizon), {}).get(kind, Tally())

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "capacity": self.capacity, "horizons": self.horizons,
                "memories": self.memories, "episodes": self.episodes,
                "cells": [{"memory": m, "horizon": h, **{k: [t.correct, t.n] for k, t in c.items()}}
                          for (m, h), c in self.cells.items()]}


def memory_configs(capacity: int, policies: Sequence[str] | None = None,
                   baselines: bool = True) -> list[tuple[str, str, str, int]]:
    """``(name, policy, changes_from, capacity)`` of ``graph``, each policy, and ``none`` (the
    first and last only with ``baselines``)."""
    from mnemobot.memory.short_term import POLICIES

    names = [p for p in (policies if policies is not None else POLICIES) if p != "none"]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise UserError(f"unknown short-term policy {', '.join(unknown)}; known: {', '.join(POLICIES)}")
    if capacity < 1:
        raise UserError(f"the short-term capacity must be >= 1, got {capacity}")
    configs = [(f"{p}/{capacity}", p, "short-term", capacity) for p in names]
    if baselines:
        configs = [("graph", "lru", "graph", capacity), *configs, ("none", "none", "short-term", 1)]
    return configs


def _episodes(suite: Path) -> list[dict[str, Any]]:
    index = suite / "suite.json"
    try:
        episodes = json.loads(index.read_text(encoding="utf-8"))["episodes"]
        return [e for e in episodes if (suite / str(e["dir"]) / "questions.jsonl").is_file()
                and "horizon" in e]
    except FileNotFoundError:
        raise UserError(f"{suite} is not a suite folder (no suite.json; write one with 'mnemobot suite')") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read {index}: {e}") from None


def score_suite(suite: str | Path, capacity: int = 16, policies: Sequence[str] | None = None,
                progress: Callable[[str], None] | None = None, baselines: bool = True) -> HorizonScores:
    """Replay every episode of ``suite`` under each memory configuration (see the module;
    ``baselines``: also ``graph`` and ``none``)."""
    import time

    from mnemobot.evaluation.replay import ReplayConfig, replay

    suite = Path(suite)
    configs = memory_configs(capacity, policies, baselines)
    episodes = _episodes(suite)
    if not episodes:
        raise UserError(f"{suite} holds no recorded episodes")
    horizons = sorted({int(e["horizon"]) for e in episodes})
    out = HorizonScores(str(suite), capacity, horizons, [c[0] for c in configs], len(episodes))
    t0 = time.perf_counter()
    for name, policy, mode, cap in configs:
        for e in episodes:
            d = suite / str(e["dir"])
            res = replay(ReplayConfig(bag=d / "bag", questions=d / "questions.jsonl", memory_policy=policy,
                                      short_term_capacity=cap, changes_from=mode))
            cell = out.cells.setdefault((name, int(e["horizon"])), {})
            for kind, values in res.report.scores.items():
                right = sum(1 for v in values if v >= 1.0)
                cell.setdefault(kind, Tally()).add(right, len(values))
                cell.setdefault(ALL, Tally()).add(right, len(values))
            rep = res.report.to_dict()
            out.hit_rate.setdefault((name, int(e["horizon"])), []).append(
                (rep.get("short_term") or {}).get("hit_rate") or 0.0)
            out.latency_p95_ms.append(rep["latency_ms"]["p95"])
        if progress is not None:
            progress(f"{name}: {len(episodes)} episodes replayed ({time.perf_counter() - t0:.0f} s)")
    out.wall_s = time.perf_counter() - t0
    return out
