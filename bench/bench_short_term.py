"""Short-term memory benchmark: hit rate of every eviction policy on access traces.

Replays every ``*.jsonl`` trace in a folder (default ``bench/traces/``; see
:func:`mnemobot.memory.short_term.load_trace` for the format) plus two synthetic control traces
generated here, deterministically:

* ``synthetic-zipf``: gets and puts of keys drawn from a Zipf(1.0) distribution over 400 objects
  (a stable working set; LFU-like policies should lead);
* ``synthetic-scan``: a small hot set interleaved with loops over more keys than the memory holds
  and long one-off scans (recency-only policies are flushed; W-TinyLFU should resist).

For each trace and capacity it prints the hit rate of every policy (``none`` is the
no-short-term-memory baseline, always 0) and the replay throughput of the fastest and slowest
policy, in trace events per second (including event validation and entry construction).

    python bench/bench_short_term.py [--traces DIR] [--capacities 4,8,16,32]
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
import time
from pathlib import Path
from typing import Any

from mnemobot.memory.short_term import POLICIES, ShortTermConfig, load_trace, replay_trace

DEFAULT_TRACES = Path(__file__).resolve().parent / "traces"
POLICY_ORDER = ("fifo", "lru", "lfu", "w-tinylfu", "none")

Event = dict[str, Any]


def _event(t: float, op: str, key: str) -> Event:
    ev: Event = {"t": round(t, 3), "op": op, "key": key}
    if op == "put":
        ev["label"] = key.split(":")[-1]
        ev["change"] = "moved"
    return ev


def _zipf_sampler(rng: random.Random, n: int, s: float) -> Any:
    cum = list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(n)))
    total = cum[-1]
    return lambda: bisect.bisect_left(cum, rng.random() * total)


def zipf_trace(n_events: int = 30_000, n_keys: int = 400, s: float = 1.0, seed: int = 0) -> list[Event]:
    """Zipf-skewed accesses: each one a get (75%) or a put (25%) of a key of rank ~ Zipf(s)."""
    rng = random.Random(seed)
    draw = _zipf_sampler(rng, n_keys, s)
    return [_event(0.1 * i, "get" if rng.random() < 0.75 else "put", f"obj:{draw()}")
            for i in range(n_events)]


def scan_trace(n_events: int = 30_000, seed: int = 1) -> list[Event]:
    """Loop- and scan-heavy accesses around a small hot set.

    Bursts alternate between: reads and writes of a hot set of 24 keys (Zipf 0.8); a loop that
    puts then gets each of 48 keys in order, twice (LRU's worst case at capacities below 48);
    and a one-off scan that records 40-120 never-seen keys (a sweep past a full shelf). Loop and
    scan keys are looked up before they are written, so a loop hit needs the key kept for a pass.
    """
    rng = random.Random(seed)
    hot = _zipf_sampler(rng, 24, 0.8)
    events: list[Event] = []
    t, fresh = 0.0, 0

    def emit(op: str, key: str) -> None:
        nonlocal t
        t += 0.1
        events.append(_event(t, op, key))

    while len(events) < n_events:
        burst = rng.random()
        if burst < 0.5:
            for _ in range(rng.randint(50, 150)):
                emit("get" if rng.random() < 0.7 else "put", f"obj:hot{hot()}")
        elif burst < 0.75:
            for _ in range(2):
                for j in range(48):
                    emit("get", f"obj:loop{j}")
                    emit("put", f"obj:loop{j}")
        else:
            for _ in range(rng.randint(40, 120)):
                emit("get", f"obj:scan{fresh}")
                emit("put", f"obj:scan{fresh}")
                fresh += 1
    return events[:n_events]


def run_row(events: list[Event], capacity: int) -> dict[str, tuple[float, float]]:
    """``{policy: (hit_rate, events_per_second)}`` for one trace at one capacity."""
    out = {}
    for policy in POLICY_ORDER:
        cfg = ShortTermConfig(capacity=capacity, policy=policy)
        t0 = time.perf_counter()
        res = replay_trace(events, cfg)
        out[policy] = (res.hit_rate, len(events) / max(time.perf_counter() - t0, 1e-9))
    return out


def parse_capacities(text: str) -> list[int]:
    try:
        caps = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"capacities must be comma-separated ints, got {text!r}") from None
    if not caps or min(caps) < 0:
        raise argparse.ArgumentTypeError(f"capacities must be non-negative ints, got {text!r}")
    return caps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="folder of *.jsonl traces")
    ap.add_argument("--capacities", type=parse_capacities, default=[4, 8, 16, 32])
    args = ap.parse_args(argv)
    missing = [p for p in POLICY_ORDER if p not in POLICIES]
    if missing:
        raise SystemExit(f"policies not registered: {missing}")

    traces: list[tuple[str, list[Event]]] = []
    if args.traces.is_dir():
        files = sorted(args.traces.glob("*.jsonl"))
        if not files:
            print(f"no *.jsonl traces in {args.traces}; using the synthetic traces only")
        for f in files:
            try:
                traces.append((f.stem, load_trace(f)))
            except (OSError, ValueError) as e:
                print(f"skipping {f.name}: {e}")
    else:
        print(f"trace folder {args.traces} does not exist; using the synthetic traces only")
    traces += [("synthetic-zipf", zipf_trace()), ("synthetic-scan", scan_trace())]

    t_start = time.perf_counter()
    name_w = max(14, *(len(n) for n, _ in traces))
    header = (f"{'trace':{name_w}s} {'events':>7s} {'cap':>4s} "
              + " ".join(f"{p:>9s}" for p in POLICY_ORDER)
              + f"  {'fastest (ev/s)':>24s}  {'slowest (ev/s)':>24s}")
    print("hit rate per policy (gets that found the key); throughput over fifo, lru, lfu, w-tinylfu")
    print(header)
    print("-" * len(header))
    for name, events in traces:
        for cap in args.capacities:
            row = run_row(events, cap)
            timed = sorted((row[p][1], p) for p in POLICY_ORDER if p != "none")
            (slow_rate, slow), (fast_rate, fast) = timed[0], timed[-1]
            best = max(row[p][0] for p in POLICY_ORDER)
            cells = " ".join(f"{100 * row[p][0]:8.1f}{'*' if row[p][0] == best and best > 0 else ' '}"
                             for p in POLICY_ORDER)
            print(f"{name:{name_w}s} {len(events):7d} {cap:4d} {cells} "
                  f"{fast:>11s} {fast_rate:12,.0f}  {slow:>11s} {slow_rate:12,.0f}")
    print(f"\nhit rates in %, * = best at that capacity; {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
