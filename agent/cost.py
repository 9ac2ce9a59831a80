"""Cost accounting: every planner decision with its calls, tokens and latency.

A *decision* is one time the cortex is consulted: the first plan, a re-plan after an anomaly
the organs could not handle, or (in the per-step baseline) the choice of the next skill. A
decision may take several model calls (sampled candidates, retries after invalid answers);
each call's prompt and completion tokens and wall latency are recorded. Embedded planners count
one call and zero tokens.

Usage::

    ledger = CostLedger()
    with ledger.decision("plan", planner="symbolic") as d:
        plan = planner.plan(instruction, ctx)
    ledger.summary()   # {"decisions": 1, "planner_calls": 1, "prompt_tokens": 0, ...}
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CostLedger", "Decision", "ModelCall"]


@dataclass
class ModelCall:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    valid: bool = True
    error: str = ""


@dataclass
class Decision:
    """One consultation of the planner (``kind``: plan | replan | step)."""

    kind: str
    planner: str
    t: float = 0.0
    calls: list[ModelCall] = field(default_factory=list)
    latency_s: float = 0.0
    fallback: str = ""
    """Why the decision fell back to the symbolic planner (empty when it did not)."""
    candidates: int = 0
    valid_candidates: int = 0

    def record(self, prompt_tokens: int = 0, completion_tokens: int = 0, latency_s: float = 0.0,
               valid: bool = True, error: str = "") -> None:
        self.calls.append(ModelCall(prompt_tokens, completion_tokens, latency_s, valid, error))

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.calls)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                 model_calls=len(self.calls), latency_s=round(self.latency_s, 4))
        del d["calls"]
        return d


class CostLedger:
    """Decisions of one episode (or task), in order."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    @contextmanager
    def decision(self, kind: str, planner: str, t: float = 0.0) -> Iterator[Decision]:
        d = Decision(kind, planner, t)
        t0 = time.perf_counter()
        try:
            yield d
        finally:
            d.latency_s = time.perf_counter() - t0
            if not d.calls:  # an embedded planner: one call, no tokens
                d.record(latency_s=d.latency_s)
            self.decisions.append(d)

    @property
    def planner_calls(self) -> int:
        return sum(len(d.calls) for d in self.decisions)

    def summary(self) -> dict[str, Any]:
        lat = [d.latency_s for d in self.decisions]
        return {
            "decisions": len(self.decisions),
            "planner_calls": self.planner_calls,
            "prompt_tokens": sum(d.prompt_tokens for d in self.decisions),
            "completion_tokens": sum(d.completion_tokens for d in self.decisions),
            "invalid_answers": sum(1 for d in self.decisions for c in d.calls if not c.valid),
            "fallbacks": sum(1 for d in self.decisions if d.fallback),
            "latency_s_per_decision": {"mean": round(statistics.fmean(lat), 4) if lat else 0.0,
                                       "max": round(max(lat), 4) if lat else 0.0},
            "by_kind": {k: sum(1 for d in self.decisions if d.kind == k)
                        for k in sorted({d.kind for d in self.decisions})},
        }
