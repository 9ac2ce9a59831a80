"""The learned action expert's ablations in one run: what each memory contributes.

For each memory-dependent workcell family: success over the evaluation seeds of

* the scripted expert (ground truth at the start stands in for memory: the ceiling);
* the full policy (latent banks and scene-graph tokens);
* latent banks off (``--no-latent-memory``);
* scene-graph tokens off (``--no-symbolic-memory``);
* both off (chance level is the target: 1/3, 1/4, 1/2).

Demonstrations are recorded into ``OUT/demos-FAMILY`` (seeds from 100 on, disjoint from the
evaluation seeds 0..N-1) and checkpoints trained into ``OUT/ckpt-FAMILY-VARIANT``; both are reused
(and a stopped training resumed) when the script runs again, so a long run can be split. Also
printed: parameters, inference time per chunk (median over 50 calls, batch 1) and the training
time and loss curve of each checkpoint.

Usage::

    python bench/bench_policy.py --out runs/policy                    # 25 demos, 25 seeds, defaults
    python bench/bench_policy.py --out runs/policy --families put_block_back --seeds 5 --steps 500
    python bench/bench_policy.py --out /tmp/p --size tiny --steps 3 --demos 1 --seeds 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FAMILIES = ("reopen_drawer", "put_block_back", "rearrange")
VARIANTS = {
    "full": {},
    "no-latent": {"latent_memory": False},
    "no-symbolic": {"symbolic_memory": False},
    "both-off": {"latent_memory": False, "symbolic_memory": False},
}
CHANCE = {"reopen_drawer": 1 / 3, "put_block_back": 1 / 4, "rearrange": 1 / 2}


def record(out: Path, family: str, demos: int) -> Path:
    from mnemobot.policy.dataset import Dataset
    from mnemobot.policy.record import RecordConfig, record_demos

    root = out / f"demos-{family}"
    have = Dataset(root).num_episodes if (root / "meta" / "info.json").is_file() else 0
    if have < demos:
        t0 = time.perf_counter()
        res = record_demos(RecordConfig(task=family, out=root, episodes=demos - have, seed=100 + 2 * have,
                                        append=have > 0), progress=lambda m: print(f"  {m}", flush=True))
        print(f"recorded {len(res['kept'])} {family} demos in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def train_variant(out: Path, family: str, data: Path, variant: str, size: str, steps: int, history: int,
                  threads: int) -> tuple[Path, float]:
    from mnemobot.policy.cli import SIZES
    from mnemobot.policy.train import TrainConfig, train

    ckpt = out / f"ckpt-{family}-{variant}"
    t0 = time.perf_counter()
    train(data, ckpt, {**SIZES[size], **VARIANTS[variant]},
          TrainConfig(steps=steps, history=history, threads=threads, save_every=max(50, steps // 10)),
          families=[family], progress=lambda m: print(f"  [{family}/{variant}] {m}", flush=True))
    return ckpt, time.perf_counter() - t0


def evaluate(family: str, seeds: list[int], ckpt: Path | None) -> tuple[int, list[str]]:
    from mnemobot.agent.episode import RunConfig, run_episode

    ok, cells = 0, []
    for s in seeds:
        cfg = (RunConfig(task_id=family, seed=s, agent="expert") if ckpt is None else
               RunConfig(task_id=family, seed=s, policy="learned", checkpoint=str(ckpt)))
        r = run_episode(cfg)
        ok += bool(r.success)
        cells.append(f"{s}:{'ok' if r.success else '-'}")
    return ok, cells


def inference_ms(ckpt: Path, calls: int = 50) -> float:
    import torch

    from mnemobot.policy.train import load_policy

    model, _ = load_policy(ckpt)
    cfg = model.config
    h, w = cfg.image_size
    batch = {"observation.images.head": torch.rand(1, 3, h, w), "observation.state": torch.zeros(1, cfg.state_dim),
             "observation.memory": torch.zeros(1, cfg.max_memory_tokens, cfg.token_dim),
             "observation.memory_mask": torch.ones(1, cfg.max_memory_tokens, dtype=torch.bool),
             "task": ["put the block back"]}
    model.reset()
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        model.predict_action_chunk({**batch, "time": 0.8 * i})
        times.append(time.perf_counter() - t0)
    return float(np.median(times[5:])) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="work folder (demos and checkpoints are reused)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--demos", type=int, default=25, help="demonstrations per family")
    ap.add_argument("--seeds", type=int, default=25, help="evaluation seeds 0..N-1")
    ap.add_argument("--steps", type=int, default=1500, help="training steps per checkpoint")
    ap.add_argument("--history", type=int, default=8)
    ap.add_argument("--size", default="default", choices=("default", "small", "tiny"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-expert", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    rows: list[dict[str, Any]] = []
    for fam in args.families:
        data = record(args.out, fam, args.demos)
        if not args.skip_expert:
            ok, cells = evaluate(fam, seeds, None)
            rows.append({"family": fam, "variant": "scripted expert", "ok": ok, "n": len(seeds), "cells": cells})
            print(f"{fam} expert: {ok}/{len(seeds)}", flush=True)
        for var in args.variants:
            ckpt, train_s = train_variant(args.out, fam, data, var, args.size, args.steps, args.history, args.threads)
            ok, cells = evaluate(fam, seeds, ckpt)
            log = [json.loads(x) for x in (ckpt / "train_log.jsonl").read_text().splitlines() if x.strip()]
            rows.append({"family": fam, "variant": var, "ok": ok, "n": len(seeds), "cells": cells,
                         "train_s": train_s, "ms_per_chunk": inference_ms(ckpt),
                         "curve": [(r["step"], round(r["loss"], 4)) for r in log[:: max(1, len(log) // 8)]]})
            print(f"{fam} {var}: {ok}/{len(seeds)}", flush=True)
    print("\n== success on the memory-dependent workcell families ==")
    print(f"{'family':15s} {'variant':16s} {'success':>9s} {'chance':>7s} {'ms/chunk':>9s} {'train s':>8s}")
    for r in rows:
        ms = f"{r['ms_per_chunk']:.1f}" if "ms_per_chunk" in r else ""
        tr = f"{r['train_s']:.0f}" if "train_s" in r else ""
        print(f"{r['family']:15s} {r['variant']:16s} {100 * r['ok'] / r['n']:8.1f}% {100 * CHANCE[r['family']]:6.0f}% "
              f"{ms:>9s} {tr:>8s}")
    for var in ["scripted expert", *args.variants]:
        got = [r for r in rows if r["variant"] == var]
        if got:
            print(f"average {var:16s} {100 * np.mean([r['ok'] / r['n'] for r in got]):.1f}%")
    print("\n== loss curves (step, loss) ==")
    for r in rows:
        if "curve" in r:
            print(f"{r['family']}/{r['variant']}: {r['curve']}")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
