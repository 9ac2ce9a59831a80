"""Report generation benchmark: ``mnemobot report`` on synthetic evaluation results.

Builds ``--rows`` synthetic episode rows (4 families x memory on/off x planner modes, seeded
success rates, planner calls and wall times), writes them as an evaluation's ``results.parquet``
and ``results.csv``, and times the whole report (read, statistics, SVG plots, Markdown and HTML),
with ``--against`` a second synthetic table, best of ``--repeat`` runs.

    python bench/bench_report.py [--rows 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from mnemobot.evaluation.report import write_report
from mnemobot.evaluation.results import write_tables

FAMILIES = ("place", "fetch", "memory", "recall")
CONDITIONS = [(mem, mode) for mem in ("on", "off") for mode in ("tree", "per-step")]


def synthetic(n: int, seed: int, shift: float = 0.0) -> list[dict[str, object]]:
    """``n`` rows spread over families x conditions; success probability falls with ``shift``."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        family = FAMILIES[i % len(FAMILIES)]
        mem, mode = CONDITIONS[(i // len(FAMILIES)) % len(CONDITIONS)]
        p = (0.9 if mem == "on" else 0.6) - (0.1 if mode == "per-step" else 0.0) - shift
        ok = rng.random() < p
        rows.append({"key": f"{family}.s{i}.mem-{mem}.{mode}", "family": family, "seed": i, "memory": mem,
                     "planner": "symbolic", "mode": mode, "inject": "none", "sensor_profile": "ideal",
                     "policy": "skills", "success": ok, "steps": rng.randint(400, 3000),
                     "planner_calls": 1 if mode == "tree" else rng.randint(3, 8), "sim_s": rng.uniform(20, 150),
                     "wall_s": rng.uniform(8, 60), "stop_reason": "" if ok else "goal not reached",
                     "attempts": 1, "process_s": rng.uniform(9, 62)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        new, base = Path(tmp) / "new", Path(tmp) / "base"
        new.mkdir()
        base.mkdir()
        write_tables(new, synthetic(args.rows, 0, shift=0.15))
        write_tables(base, synthetic(args.rows, 1))
        for label, against in (("report", None), ("report --against", base)):
            for source in ("results.parquet", "results.csv"):
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    paths = write_report(new / source, out=Path(tmp) / "r", against=against)
                    times.append(time.perf_counter() - t0)
                size = sum(p.stat().st_size for p in paths)
                print(f"{label:17s} {args.rows} rows from {source:15s}: best {1000 * min(times):6.1f} ms, "
                      f"median {1000 * sorted(times)[len(times) // 2]:6.1f} ms ({size / 1024:.0f} KiB written)")


if __name__ == "__main__":
    main()
