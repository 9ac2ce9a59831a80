"""Soak: many episodes into one persistent memory database, through the executor and in one process.

Two runs of ``--episodes`` place episodes (seeds 0..N-1, small camera), each into a fresh memory
database that every episode of the run reopens and writes (``RunConfig.memory_db``):

* ``executor``: the episodes of ``mnemobot eval``'s local executor (one process per episode, one
  at a time: a memory database has one writer). After each: the database's size (main file plus
  write-ahead log) and its op count; the driver process's RSS.
* ``process``: the same episodes one after another in this process (a long-lived robot process
  that runs episode after episode). After each, with garbage collected: this process's RSS.

Printed: database bytes per episode over the first and the last tenth of the run and their ratio
(linear growth gives 1.0, growth that speeds up gives more), over the first and the second half,
and per 1,000 simulator steps (episodes differ in length: a failed one runs to its limit); the
objects memory holds after the first tenth and at the end (each episode rearranges the same
house's objects: memory should re-identify them, not grow a copy per episode); RSS after the first tenth against
the end (the first episodes load libraries and warm caches: that is the baseline) and the slope
of a least-squares line through the second half (kB per episode). At the end each database must
pass ``PRAGMA integrity_check``, reopen as a store with N episodes and a gapless op log, and load
into a scene graph.

    python bench/bench_soak.py [--episodes 100] [--runs executor,process] [--out DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mnemobot.evaluation.executor import Job, LocalExecutor

KW = {"task_id": "place", "width": 160, "height": 120}


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def op_count(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT COUNT(*) FROM ops").fetchone()[0])
    finally:
        con.close()


def object_count(db: Path) -> int:
    """Objects memory holds: added and not deleted (merged away), from the op log."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute(
            "SELECT (SELECT COUNT(DISTINCT key) FROM ops WHERE target='node' AND kind='ADD' AND key LIKE 'obj:%')"
            " - (SELECT COUNT(DISTINCT key) FROM ops WHERE target='node' AND kind='DELETE' AND key LIKE 'obj:%')"
        ).fetchone()[0])
    finally:
        con.close()


def check_db(db: Path, episodes: int) -> dict[str, object]:
    """Integrity, episode count, a gapless op log and a graph that loads."""
    from mnemobot.agent.memory_cli import load_graph

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        n, lo, hi = con.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM ops").fetchone()
    finally:
        con.close()
    graph, eps = load_graph(db)
    out = {"integrity": integrity, "episodes": len(eps), "ended": sum(1 for e in eps if e.get("ended")),
           "ops": n, "gapless": n == 0 or (hi - lo + 1) == n, "objects": len(graph.by_layer("object"))}
    out["ok"] = (integrity == "ok" and out["episodes"] == episodes and out["ended"] == episodes
                 and out["gapless"] and out["objects"] > 0)
    return out


def growth(sizes: list[int], base: int) -> tuple[float, float, float]:
    """Bytes per episode over the first and the last tenth, and last / first."""
    k = max(1, len(sizes) // 10)
    series = [base, *sizes]
    first = (series[k] - series[0]) / k
    last = (series[-1] - series[-1 - k]) / k
    return first, last, (last / first if first else float("inf"))


def halves(sizes: list[int], base: int) -> tuple[float, float, float]:
    """Bytes per episode over the first and the second half, and second / first (tenths are
    few episodes: a run of long ones sways them)."""
    h = len(sizes) // 2
    first = (sizes[h - 1] - base) / h
    second = (sizes[-1] - sizes[h - 1]) / (len(sizes) - h)
    return first, second, (second / first if first else float("inf"))


def per_step(sizes: list[int], steps: list[int], base: int) -> tuple[float, float, float]:
    """Bytes per 1,000 simulator steps over the first and the last tenth, and last / first.
    Episodes differ in length (a failed one runs to its limit), so bytes per episode mixes what
    memory stores per unit of robot activity with how long the robot was active."""
    k = max(1, len(sizes) // 10)
    series = [base, *sizes]
    first = (series[k] - series[0]) / max(sum(steps[:k]), 1) * 1e3
    last = (series[-1] - series[-1 - k]) / max(sum(steps[-k:]), 1) * 1e3
    return first, last, (last / first if first else float("inf"))


def rss_summary(rss: list[int]) -> dict[str, float]:
    k = max(1, len(rss) // 10)
    half = rss[len(rss) // 2:]
    slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) >= 2 else 0.0
    return {"after_first_tenth_mb": rss[k - 1] / 1024, "end_mb": rss[-1] / 1024,
            "ratio": rss[-1] / rss[k - 1], "slope_kb_per_episode_second_half": slope}


def run_executor(n: int, work: Path) -> dict[str, object]:
    db = work / "executor.db"
    base = 0
    ex = LocalExecutor(workers=1, timeout_s=600.0, retries=1, workdir=work / ".work", logdir=work / "logs")
    sizes, ops, rss, ok, steps, objects = [], [], [], [], [], []
    t0 = time.perf_counter()

    def on_result(job: Job, row: dict[str, object]) -> None:
        ok.append(bool(row.get("success")))
        steps.append(int(row.get("steps") or 0))  # type: ignore[call-overload]
        sizes.append(db_bytes(db))
        ops.append(op_count(db))
        objects.append(object_count(db))
        rss.append(rss_kb())
        if len(ok) % 10 == 0:
            print(f"  executor: {len(ok)}/{n} episodes, db {sizes[-1] / 1e6:.2f} MB, {ops[-1]} ops, "
                  f"{objects[-1]} objects, driver RSS {rss[-1] / 1024:.0f} MB", flush=True)

    jobs = [Job(f"place.s{i}", dict(KW, seed=i, memory_db=str(db))) for i in range(n)]
    ex.run(jobs, on_result)
    return {"wall_s": time.perf_counter() - t0, "succeeded": sum(ok), "sizes": sizes, "ops": ops, "steps": steps,
            "objects": objects, "growth": growth(sizes, base), "halves": halves(sizes, base),
            "per_step": per_step(sizes, steps, base),
            "op_growth": growth(ops, 0), "driver_rss": rss_summary(rss), "check": check_db(db, n)}


def run_process(n: int, work: Path) -> dict[str, object]:
    from mnemobot.agent.episode import RunConfig, run_episode

    db = work / "process.db"
    rss, sizes, ok, steps, objects = [], [], [], [], []
    t0 = time.perf_counter()
    for i in range(n):
        summary = run_episode(RunConfig(**dict(KW, seed=i, memory_db=str(db))))
        ok.append(bool(summary.success))
        steps.append(int(summary.steps))
        objects.append(object_count(db))
        del summary
        gc.collect()
        rss.append(rss_kb())
        sizes.append(db_bytes(db))
        if (i + 1) % 10 == 0:
            print(f"  process: {i + 1}/{n} episodes, RSS {rss[-1] / 1024:.0f} MB, db {sizes[-1] / 1e6:.2f} MB",
                  flush=True)
    return {"wall_s": time.perf_counter() - t0, "succeeded": sum(ok), "rss": rss, "sizes": sizes,
            "steps": steps, "objects": objects, "rss_summary": rss_summary(rss), "growth": growth(sizes, 0),
            "halves": halves(sizes, 0), "per_step": per_step(sizes, steps, 0), "check": check_db(db, n)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--runs", default="executor,process")
    ap.add_argument("--out", type=Path, default=None, help="keep the databases and a JSON of the series here")
    args = ap.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not set(runs) <= {"executor", "process"} or args.episodes < 2:
        ap.error("--runs takes executor,process; --episodes at least 2")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results: dict[str, dict[str, object]] = {}
        for name in runs:
            print(f"{name}: {args.episodes} place episodes into one memory database", flush=True)
            results[name] = (run_executor if name == "executor" else run_process)(args.episodes, work)
        if args.out is not None:
            (args.out / "soak.json").write_text(json.dumps(results, indent=1))
    good = True
    for name, r in results.items():
        first, last, ratio = r["growth"]  # type: ignore[misc]
        c = r["check"]
        good &= bool(c["ok"])  # type: ignore[index]
        print(f"\n{name}: {r['succeeded']}/{args.episodes} succeeded in {r['wall_s']:.0f} s")
        print(f"  database: {r['sizes'][-1] / 1e6:.2f} MB; bytes/episode first tenth {first / 1e3:.1f} kB, "
              f"last tenth {last / 1e3:.1f} kB, ratio {ratio:.2f}")
        f0, l0, q0 = r["halves"]  # type: ignore[misc]
        print(f"  bytes/episode first half {f0 / 1e3:.1f} kB, second half {l0 / 1e3:.1f} kB, ratio {q0:.2f}")
        f1, l1, q1 = r["per_step"]  # type: ignore[misc]
        print(f"  bytes/1,000 simulator steps first tenth {f1 / 1e3:.1f} kB, last tenth {l1 / 1e3:.1f} kB, "
              f"ratio {q1:.2f}")
        objs = r["objects"]
        k = max(1, len(objs) // 10)  # type: ignore[arg-type]
        print(f"  objects in memory: {objs[k - 1]} after the first tenth, {objs[-1]} at the end")  # type: ignore[index]
        if "op_growth" in r:
            f2, l2, q2 = r["op_growth"]  # type: ignore[misc]
            print(f"  ops/episode first tenth {f2:.0f}, last tenth {l2:.0f}, ratio {q2:.2f}")
        s = r.get("rss_summary") or r["driver_rss"]
        who = "this process" if name == "process" else "the driver"
        print(f"  RSS of {who}: {s['after_first_tenth_mb']:.0f} MB after the first tenth, {s['end_mb']:.0f} MB at "
              f"the end (ratio {s['ratio']:.3f}), second-half slope {s['slope_kb_per_episode_second_half']:+.0f} "
              "kB/episode")
        print(f"  check: {json.dumps(c)}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
