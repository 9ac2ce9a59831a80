"""Replay benchmark: throughput of bag -> perception -> memory, and memory-question accuracy
against horizon for each short-term policy (and for no short-term memory), in one table.

Usage::

    python bench/bench_replay.py                      # record, generate the suite, measure (about 10 min)
    python bench/bench_replay.py --horizons 1 2 --seeds 0 --capacity 4
    python bench/bench_replay.py --suite runs/suite   # reuse a suite made by 'mnemobot suite'

Throughput is measured on one recorded episode per resolution against a baseline measured in
the same run: reading and decoding the same frames with no perception or memory. Accuracy: every
episode of the suite is replayed once per configuration. ``graph`` answers every question from
the long-term scene graph; each policy row answers the change questions (``changed``, ``state``,
``order`` of moves) from the short-term table alone, at each ``--capacity``, so the rows show where
each policy starts to forget. ``none`` is the no-short-term-memory baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mnemobot.evaluation.horizon import score_suite
from mnemobot.evaluation.replay import ReplayConfig, replay
from mnemobot.ros2.bag import BagSource


def _record(out: Path, width: int, height: int, seed: int) -> Path:
    from mnemobot.agent.episode import RunConfig, run_episode

    bag = out / f"place-{width}x{height}"
    s = run_episode(RunConfig(task_id="place", seed=seed, width=width, height=height, record=str(bag)))
    print(f"  recorded {bag.name}: {s.recorded_messages} messages, {s.sim_s:.1f} s simulated, "
          f"{sum(f.stat().st_size for f in bag.iterdir()) / 1e6:.1f} MB", flush=True)
    return bag


def _read_only(bag: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    with BagSource(bag) as src:
        n = sum(1 for _ in src.frames())
    return n, time.perf_counter() - t0


def throughput(out: Path, seed: int, repeats: int) -> None:
    print("\n== replay throughput (one place episode per resolution, camera at 5 Hz) ==", flush=True)
    rows = []
    for w, h in ((320, 240), (640, 480)):
        bag = _record(out, w, h, seed)
        reads, fulls, upd = [], [], []
        for _ in range(repeats):
            n, s = _read_only(bag)
            reads.append(n / s)
            res = replay(ReplayConfig(bag=bag))
            fulls.append(res.fps)
            upd.append(statistics.median(res.update_ms))
        rows.append((f"{w}x{h}", n, statistics.median(reads), statistics.median(fulls), statistics.median(upd),
                     res.duration_s))
    print(f"{'image':9s} {'frames':>6s} {'read+decode f/s':>16s} {'replay f/s':>11s} {'ratio':>6s} "
          f"{'p+m ms p50':>10s} {'x real time':>11s}")
    for name, n, rd, full, ms, dur in rows:
        print(f"{name:9s} {n:6d} {rd:16.1f} {full:11.1f} {full / rd:6.2f} {ms:10.2f} {dur / (n / full):11.1f}")
    print("(ratio: replay with perception + memory over the read-and-decode baseline; "
          "x real time: bag duration over replay time)")


def _suite(args: argparse.Namespace, out: Path) -> list[dict]:
    if args.suite is not None:
        return json.loads((Path(args.suite) / "suite.json").read_text())["episodes"]
    from mnemobot.evaluation.suite import SuiteConfig, generate_suite

    t0 = time.perf_counter()
    rows = generate_suite(SuiteConfig(out_dir=out / "suite", horizons=tuple(args.horizons), seeds=tuple(args.seeds),
                                      per_type=args.per_type), progress=None)
    print(f"  suite: {len(rows)} episodes generated in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def accuracy(args: argparse.Namespace, out: Path) -> None:
    caps = ", ".join(map(str, args.capacity))
    print(f"\n== memory-question accuracy against horizon (short-term capacity {caps}) ==", flush=True)
    episodes = _suite(args, out)
    root = Path(args.suite) if args.suite is not None else out / "suite"
    runs = [score_suite(root, c, baselines=(i == 0)) for i, c in enumerate(sorted(args.capacity, reverse=True))]
    horizons = runs[0].horizons
    types = ["all", "locate", "changed", "state", "order", "last_seen", "count"]
    horizon_info = {int(e["horizon"]): e for e in episodes}
    print("horizon: " + "; ".join(
        f"h{h} = {horizon_info[h].get('interactions', h)} interactions, "
        f"{horizon_info[h].get('sim_s', horizon_info[h].get('duration_s', 0)):.0f} s" for h in horizons))
    head = f"{'memory':12s} {'h':>2s} " + " ".join(f"{t:>9s}" for t in types) + f" {'stm hits':>8s}"
    print(head)
    print("-" * len(head))
    order = [m for m in runs[0].memories if m != "none"] + [m for r in runs[1:] for m in r.memories] + ["none"]
    for name in order:
        hs = next(r for r in runs if name in r.memories)
        for h in horizons:
            vals = []
            for t in types:
                a = hs.tally(name, h, t).accuracy
                vals.append(f"{100 * a:8.1f}%" if a is not None else f"{'-':>9s}")
            hits = hs.hit_rate.get((name, h), [])
            hit = statistics.mean(hits) if hits else 0.0
            print(f"{name:12s} {h:2d} " + " ".join(vals) + f" {100 * hit:7.1f}%")
    print("(accuracy over the questions of that type in all seeds of the horizon; 'graph': long-term scene "
          "graph; 'policy/capacity' rows answer the change questions from the short-term table only)")
    lat = [v for r in runs for v in r.latency_p95_ms]
    print(f"answer latency p95 over all replays: {max(lat):.3f} ms max, {statistics.median(lat):.3f} ms median")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--per-type", type=int, default=4)
    ap.add_argument("--capacity", type=int, nargs="+", default=[4, 16],
                    help="short-term capacities for the policy rows (default: 4 16)")
    ap.add_argument("--suite", default=None, help="reuse a suite directory (with suite.json)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--out", default=None, help="keep recordings here (default: a temporary directory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mnemobot-bench-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if not args.skip_throughput:
            throughput(out, 0, args.repeats)
        if not args.skip_accuracy:
            accuracy(args, out)


if __name__ == "__main__":
    main()
