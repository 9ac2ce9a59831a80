"""The learned action expert's ablations in one run: what each memory contributes.

For each memory-dependent workcell family: success over the evaluation seeds of

* the scripted expert (ground truth at the start stands in for memory: the ceiling);
* the full policy (latent banks and scene-graph tokens);
* ``no-latent``: latent memory off (``--no-latent-memory``: the perceptual and cognitive banks
  and the hand's trace of executed keyframes);
* ``no-symbolic``: the scene-graph tokens show only the present (``--no-symbolic-memory``: where
  things are and their state now, not where they were first seen, what was open, ages or
  identities; :func:`mnemobot.policy.model.present_only`);
* ``both-off``: both (chance level is the target: 1/3, 1/4, 1/2);
* ``no-tokens``: no latent banks and no scene-graph tokens at all (``--no-scene-tokens``): the
  image is the policy's only view of the scene, and there is nothing to anchor keyframes on.

Demonstrations are recorded into ``OUT/demos-FAMILY`` (seeds from 100 on, disjoint from the
evaluation seeds 0..N-1). By default one keyframe policy per variant is trained on all the
families together (``OUT/ckpt-all-VARIANT``; ``--per-family`` trains ``OUT/ckpt-FAMILY-VARIANT``
instead, ``--frames`` the per-frame policy). Demonstrations and checkpoints are reused (a stopped
training resumed) when the script runs again, so a long run can be split, and checkpoints can be
trained beforehand with ``mnemobot train`` into those folders (``--no-train`` evaluates them as they
are). Episodes
are evaluated ``--workers`` at a time, each in a process of its own. Also printed: parameters,
inference time per chunk (median over 50 calls, batch 1, two threads; with the share of the two
threads' time the process got, and a note where other processes took the cores) and the training time
and loss curve of each checkpoint.

Usage::

    python bench/bench_policy.py --out runs/policy                    # 24 demos, 25 seeds, defaults
    python bench/bench_policy.py --out runs/policy --families put_block_back --seeds 5 --steps 500
    python bench/bench_policy.py --out /tmp/p --size tiny --steps 3 --demos 1 --seeds 1   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

FAMILIES = ("reopen_drawer", "put_block_back", "rearrange")
VARIANTS = {
    "full": {},
    "no-latent": {"latent_memory": False},
    "no-symbolic": {"symbolic_history": False},  # tokens of the present only (policy.model.present_only)
    "both-off": {"latent_memory": False, "symbolic_history": False},
    "no-tokens": {"latent_memory": False, "symbolic_memory": False},  # nor any scene-graph token to anchor on
}
BUSY_SHARE = 0.7
"""Inference timed with less than this share of its two threads' CPU time is flagged (measured
here: 0.99 on an idle machine, 0.48 beside two busy processes on two cores)."""
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


def train_variant(out: Path, name: str, families: list[str], data: list[Path], variant: str, size: str, steps: int,
                  history: int, threads: int, keyframes: bool) -> tuple[Path, float]:
    from mnemobot.policy.cli import KEYFRAME_MODE, SIZES
    from mnemobot.policy.train import TrainConfig, train

    ckpt = out / f"ckpt-{name}-{variant}"
    t0 = time.perf_counter()
    mode = KEYFRAME_MODE if keyframes else {}
    train(data[0] if len(data) == 1 else data, ckpt, {**SIZES[size], **VARIANTS[variant], **mode},
          TrainConfig(steps=steps, history=history, threads=threads, save_every=max(50, steps // 10)),
          families=families, progress=lambda m: print(f"  [{name}/{variant}] {m}", flush=True))
    return ckpt, time.perf_counter() - t0


def _die_with_parent() -> None:
    """Worker initializer: on Linux the kernel sends the worker SIGTERM when the bench process
    dies, however it dies (even SIGKILL), so no episode runs on unattended."""
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Evaluation workers (spawned processes) that end with the bench: on SIGTERM or Ctrl-C the
    queued episodes are cancelled and the running ones stopped before the error propagates
    (finished episodes are already in ``episodes.jsonl``); a worker whose parent dies ends too."""
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_die_with_parent)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, on_term)
    try:
        yield pool
    except BaseException:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=10)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        signal.signal(signal.SIGTERM, before)


def _episode(job: tuple[str, int, str | None, float]) -> tuple[str, int, bool, str]:
    """One evaluation episode (in a worker process): ``(family, seed, success, why not)``."""
    import torch

    from mnemobot.agent.episode import RunConfig, run_episode

    torch.set_num_threads(1)
    family, seed, ckpt, temperature = job
    cfg = (RunConfig(task_id=family, seed=seed, agent="expert") if ckpt is None else
           RunConfig(task_id=family, seed=seed, policy="learned", checkpoint=ckpt, policy_temperature=temperature))
    r = run_episode(cfg)
    why = "" if r.success else next((f"{k['skill']}:{k['reason']}" for k in r.skills if not k["success"]),
                                    r.stop_reason or "goal not reached")
    if not r.success and r.milestones:
        why += f" ({r.milestones_reached}/{len(r.milestones)} milestones)"
    return family, seed, bool(r.success), why


def evaluate(pool: ProcessPoolExecutor, out: Path, family: str, seeds: list[int], ckpt: Path | None,
             temperature: float = 1.0) -> tuple[int, list[str]]:
    """Success over ``seeds``; each episode's result is kept in ``OUT/episodes.jsonl`` (keyed by
    family, seed and checkpoint folder and step) and reused by a later run."""
    cache_file = out / "episodes.jsonl"
    tag = "expert" if ckpt is None else \
        f"{ckpt.resolve()}@{json.loads((ckpt / 'config.json').read_text())['step']}@T{temperature:g}"
    done: dict[tuple[str, int, str], tuple[bool, str]] = {}
    if cache_file.is_file():
        for line in cache_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["family"], r["seed"], r["tag"])] = (r["ok"], r["why"])
    todo = [s for s in seeds if (family, s, tag) not in done]
    with cache_file.open("a") as f:
        jobs = [(family, s, None if ckpt is None else str(ckpt), temperature) for s in todo]
        for fam, seed, ok, why in pool.map(_episode, jobs):
            done[(fam, seed, tag)] = (ok, why)
            f.write(json.dumps({"family": fam, "seed": seed, "tag": tag, "ok": ok, "why": why}) + "\n")
            f.flush()
    results = [(s, *done[(family, s, tag)]) for s in seeds]
    cells = [f"{s}:{'ok' if ok else why}" for s, ok, why in results]
    return sum(ok for _, ok, _ in results), cells


def inference_ms(ckpt: Path, calls: int = 50) -> tuple[float, float]:
    """Median wall time (ms) of a chunk over ``calls`` calls on two threads, and the share of
    those two threads' time the process got (its CPU time over twice the wall time): near 1 on
    an idle machine, lower where other processes took the cores, as they do while it is timed."""
    import torch

    from mnemobot.policy.train import load_policy

    model, _ = load_policy(ckpt)
    cfg = model.config
    h, w = cfg.image_size
    batch = {"observation.images.head": torch.rand(1, 3, h, w), "observation.state": torch.zeros(1, cfg.state_dim),
             "observation.memory": torch.zeros(1, cfg.max_memory_tokens, cfg.token_dim),
             "observation.memory_mask": torch.ones(1, cfg.max_memory_tokens, dtype=torch.bool),
             "task": ["put the block back"]}
    if getattr(cfg, "trace_length", 0):  # a full trace: the most tokens a call reads
        n = cfg.trace_length
        batch.update({"trace.state": torch.zeros(1, n, cfg.state_dim), "trace.action": torch.zeros(1, n, cfg.action_dim),
                      "trace_mask": torch.ones(1, n, dtype=torch.bool)})
    model.reset()
    times = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the target: 2 cores (timed between variants, with no episode running)
    try:
        for i in range(calls):
            if i == 5:  # after the warm-up calls
                wall0, cpu0 = time.perf_counter(), time.process_time()
            t0 = time.perf_counter()
            model.predict_action_chunk({**batch, "time": 0.8 * i, "step": float(8 * i)})
            times.append(time.perf_counter() - t0)
        share = (time.process_time() - cpu0) / max(2 * (time.perf_counter() - wall0), 1e-9)
    finally:
        torch.set_num_threads(before)
    return float(np.median(times[5:])) * 1e3, float(share)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="work folder (demos and checkpoints are reused)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--demos", type=int, default=24, help="demonstrations per family")
    ap.add_argument("--seeds", type=int, default=25, help="evaluation seeds 0..N-1")
    ap.add_argument("--steps", type=int, default=3000, help="training steps per checkpoint")
    ap.add_argument("--history", type=int, default=8)
    ap.add_argument("--size", default="default", choices=("default", "small", "tiny"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads while training (default: torch's choice)")
    ap.add_argument("--workers", type=int, default=2, help="evaluation episodes at a time")
    ap.add_argument("--per-family", action="store_true", help="one checkpoint per family and variant")
    ap.add_argument("--frames", action="store_true", help="the per-frame policy instead of keyframes")
    ap.add_argument("--temperature", type=float, default=1.0,
                    help="scale of the noise the policy's flow starts from (1: as trained; 0: its mean)")
    ap.add_argument("--skip-expert", action="store_true")
    ap.add_argument("--no-train", action="store_true",
                    help="evaluate only checkpoints that exist (trained beforehand); skip the others")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    rows: list[dict[str, Any]] = []
    data = {fam: record(args.out, fam, args.demos) for fam in args.families}
    groups = [[f] for f in args.families] if args.per_family else [list(args.families)]
    with worker_pool(args.workers) as pool:
        if not args.skip_expert:
            for fam in args.families:
                ok, cells = evaluate(pool, args.out, fam, seeds, None)
                rows.append({"family": fam, "variant": "scripted expert", "ok": ok, "n": len(seeds), "cells": cells})
                print(f"{fam} expert: {ok}/{len(seeds)}", flush=True)
        for var in args.variants:
            for group in groups:
                name = group[0] if args.per_family else "all"
                if args.no_train and not (args.out / f"ckpt-{name}-{var}" / "config.json").is_file():
                    print(f"no checkpoint {name}-{var}: skipped", flush=True)
                    continue
                if args.no_train:  # as trained (with mnemobot train, however far): not touched
                    ckpt, train_s = args.out / f"ckpt-{name}-{var}", float("nan")
                else:
                    ckpt, train_s = train_variant(args.out, name, group, [data[f] for f in group], var, args.size,
                                                  args.steps, args.history, args.threads, not args.frames)
                log = [json.loads(x) for x in (ckpt / "train_log.jsonl").read_text().splitlines() if x.strip()]
                ms, share = inference_ms(ckpt)
                for fam in group:
                    ok, cells = evaluate(pool, args.out, fam, seeds, ckpt, args.temperature)
                    rows.append({"family": fam, "variant": var, "ok": ok, "n": len(seeds), "cells": cells,
                                 "train_s": train_s, "train_log_s": sum(r.get("s", 0) for r in log),
                                 "ms_per_chunk": ms, "cpu_share": share,
                                 "curve": [(r["step"], round(r["loss"], 4)) for r in log[:: max(1, len(log) // 8)]]})
                    print(f"{fam} {var}: {ok}/{len(seeds)}  {' '.join(cells)}", flush=True)
    print(f"\n== success on the memory-dependent workcell families (policy temperature {args.temperature:g}) ==")
    print(f"{'family':15s} {'variant':16s} {'success':>9s} {'chance':>7s} {'ms/chunk':>9s} {'cpu':>5s} {'train s':>8s}")
    for r in rows:
        ms = f"{r['ms_per_chunk']:.1f}" if "ms_per_chunk" in r else ""
        cpu = f"{r['cpu_share']:.2f}" if "cpu_share" in r else ""
        tr = f"{r['train_log_s']:.0f}" if "train_log_s" in r else ""
        print(f"{r['family']:15s} {r['variant']:16s} {100 * r['ok'] / r['n']:8.1f}% {100 * CHANCE[r['family']]:6.0f}% "
              f"{ms:>9s} {cpu:>5s} {tr:>8s}")
    busy = sorted({r["variant"] for r in rows if r.get("cpu_share", 1.0) < BUSY_SHARE})
    if busy:
        print(f"note: inference of {', '.join(busy)} got less than {BUSY_SHARE:.0%} of its two threads' time (other "
              "processes took the cores): its ms/chunk is not comparable; time it again on an idle machine")
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
