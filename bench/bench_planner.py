"""Orchestrator benchmark: success and planner calls per task for the plan-tree orchestrator with
memory, the per-step (ReAct-style) baseline and the no-memory ablation, in one run; then the
recovery rate of injected anomalies.

Usage::

    python bench/bench_planner.py                         # families x seeds 0-2 (about an hour on 2 cores)
    python bench/bench_planner.py --seeds 0 1 --families place recall
    python bench/bench_planner.py --skip-baselines        # injection only

Language-model planners' valid-plan rates are measured by ``bench/bench_models.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator

from mnemobot.agent.episode import RunConfig, run_episode

FAMILIES = ("place", "fetch", "memory", "recall")
CONFIGS = {
    "tree+memory": {"mode": "tree", "memory": True},
    "per-step+memory": {"mode": "per-step", "memory": True},
    "tree, no memory": {"mode": "tree", "memory": False},
}
RECOVERABLE = ("move", "grasp")


def _worlds(families: list[str], seeds: list[int]) -> Iterator[tuple[object, str, int]]:
    """``(environment, family, seed)`` for every family and seed; one environment per family,
    reset by each episode and closed when its family is done."""
    from mnemobot.sim.env import EnvConfig, HouseholdEnv

    for fam in families:
        env = HouseholdEnv(EnvConfig(task=fam))
        try:
            for seed in seeds:
                yield env, fam, seed
        finally:
            env.close()


def baselines(families: list[str], seeds: list[int]) -> None:
    print("\n== success and planner calls per task (symbolic planner) ==", flush=True)
    rows: dict[str, list[dict]] = defaultdict(list)
    for env, fam, seed in _worlds(families, seeds):
        for name, opts in CONFIGS.items():
            t0 = time.perf_counter()
            s = run_episode(RunConfig(task_id=fam, seed=seed, mode=opts["mode"], memory=opts["memory"]), env=env)
            rows[name].append({"family": fam, "seed": seed, "ok": s.success, "calls": s.planner_calls,
                               "decisions": s.cost.get("decisions", 0), "skills": s.skills_executed,
                               "wall": time.perf_counter() - t0})
            print(f"  {name:16s} {fam:7s} seed {seed}: {'ok  ' if s.success else 'FAIL'} "
                  f"{s.planner_calls:3d} planner calls, {s.skills_executed:3d} skills"
                  + ("" if s.success else f"  ({s.stop_reason})"), flush=True)
    print(f"\n{'configuration':18s} {'tasks':>5s} {'success':>8s} {'calls/task':>10s} {'skills/task':>11s} "
          f"{'calls/skill':>11s}")
    tree_calls = statistics.fmean(r["calls"] for r in rows["tree+memory"])
    for name, rs in rows.items():
        calls = statistics.fmean(r["calls"] for r in rs)
        skills = statistics.fmean(r["skills"] for r in rs)
        print(f"{name:18s} {len(rs):5d} {100 * sum(r['ok'] for r in rs) / len(rs):7.1f}% {calls:10.2f} "
              f"{skills:11.1f} {calls / max(skills, 1e-9):11.2f}")
    per_step = statistics.fmean(r["calls"] for r in rows["per-step+memory"])
    print(f"per-step / tree planner calls: {per_step / tree_calls:.1f}x")
    for fam in families:
        line = "  ".join(f"{name}: {sum(r['ok'] for r in rows[name] if r['family'] == fam)}/"
                         f"{sum(1 for r in rows[name] if r['family'] == fam)}" for name in rows)
        print(f"  {fam:7s} {line}")


def injection(families: list[str], seeds: list[int], kinds: list[str]) -> None:
    print("\n== injected anomalies (tree + memory) ==", flush=True)
    table: dict[str, list[dict]] = defaultdict(list)
    for env, fam, seed in _worlds(families, seeds):
        for kind in kinds:
            s = run_episode(RunConfig(task_id=fam, seed=seed, inject=kind), env=env)
            if not s.injected:
                print(f"  {kind:6s} {fam:7s} seed {seed}: not injected (no trigger in this task)")
                continue
            handled = [a for a in s.anomalies if a.get("outcome") == "recovered"]
            table[kind].append({"ok": s.success, "anomalies": len(s.anomalies), "local": len(handled),
                                "calls": s.planner_calls})
            kinds_seen = ",".join(sorted({str(a["kind"]) for a in s.anomalies})) or "-"
            print(f"  {kind:6s} {fam:7s} seed {seed}: {'recovered' if s.success else 'FAILED   '} "
                  f"anomalies {kinds_seen}; {len(handled)} handled locally; {s.planner_calls} planner calls"
                  + ("" if s.success else f"  ({s.stop_reason})"), flush=True)
    print(f"\n{'injection':10s} {'recoverable':>11s} {'episodes':>8s} {'task success':>12s} {'handled locally':>15s} "
          f"{'calls/task':>10s}")
    for kind, rs in table.items():
        print(f"{kind:10s} {'yes' if kind in RECOVERABLE else 'no':>11s} {len(rs):8d} "
              f"{100 * sum(r['ok'] for r in rs) / len(rs):11.1f}% {sum(r['local'] for r in rs):15d} "
              f"{statistics.fmean(r['calls'] for r in rs):10.2f}")
    rec = [r for k in RECOVERABLE for r in table.get(k, [])]
    if rec:
        print(f"recoverable injected anomalies recovered: {sum(r['ok'] for r in rec)}/{len(rec)} "
              f"({100 * sum(r['ok'] for r in rec) / len(rec):.1f}%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--inject", nargs="+", default=["move", "grasp", "remove"])
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--skip-injection", action="store_true")
    args = ap.parse_args()
    if not args.skip_baselines:
        baselines(args.families, args.seeds)
    if not args.skip_injection:
        injection(args.families, args.seeds, args.inject)


if __name__ == "__main__":
    main()
