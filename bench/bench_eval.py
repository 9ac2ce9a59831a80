"""Executor throughput: the same episodes on the local pool and on local Ray, 1 and 2 workers, one run.

Runs ``--seeds`` episodes of ``--family`` (ideal sensor, 320x240) four times into fresh results
folders: local pool with 1 worker (the baseline), local pool with 2, local Ray with 1 CPU and with
2. Prints episodes per hour, the speed-up over the baseline, and the executor's overhead per
episode (the run's wall time beyond the episodes' own, per episode, with the workers' parallelism
taken out). Ray's rows include starting and stopping the local Ray instance.

    python bench/bench_eval.py [--family place] [--seeds 0-3] [--skip-ray]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from mnemobot.evaluation.matrix import Matrix
from mnemobot.evaluation.run import EvalConfig, run_eval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="place")
    ap.add_argument("--seeds", default="0-3")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    runs = [("local", 1), ("local", 2)] + ([] if args.skip_ray else [("ray", 1), ("ray", 2)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for executor, workers in runs:
            matrix = Matrix.build({"families": args.family, "seeds": args.seeds})
            cfg = EvalConfig(matrix=matrix, out=Path(tmp) / f"{executor}-{workers}", executor=executor,
                             workers=workers, episode_timeout_s=600.0)
            s = run_eval(cfg)
            per_h = 3600.0 * s.ran / s.wall_s
            overhead = (s.wall_s * workers - s.episode_wall_s) / s.ran
            rows.append((f"{executor}, {workers} worker{'s' if workers > 1 else ''}", s.ran, s.succeeded, s.wall_s,
                         per_h, overhead))
            print(f"  {rows[-1][0]}: {s.ran} episodes in {s.wall_s:.1f} s", flush=True)
    base = rows[0][4]
    print(f"\n{'executor':20s} {'episodes':>8s} {'ok':>3s} {'wall s':>7s} {'episodes/h':>10s} {'speed-up':>8s} "
          f"{'overhead s/ep':>13s}")
    for name, n, ok, wall, per_h, overhead in rows:
        print(f"{name:20s} {n:8d} {ok:3d} {wall:7.1f} {per_h:10.0f} {per_h / base:8.2f} {overhead:13.2f}")
    print("(speed-up: episodes/h over the local pool with 1 worker, same run; overhead: wall time x workers "
          "minus the episodes' own wall time, per episode)")


if __name__ == "__main__":
    main()
