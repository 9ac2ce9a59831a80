"""The ``mnemobot eval`` and ``mnemobot report`` verbs: their options and what they run."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_eval_parsers", "add_executor_options", "cmd_eval", "cmd_report"]


def _float_s(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """``--executor``, ``--workers``, ``--episode-timeout``, ``--retries``, ``--address`` (eval, suite)."""
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="'local': a pool of processes on this machine (default); 'ray': Ray tasks")
    p.add_argument("--workers", type=int, default=1, help="episodes at a time (local pool, local Ray; default: 1)")
    p.add_argument("--episode-timeout", type=_float_s, default=900.0, metavar="S",
                   help="wall-clock limit per episode; past it the process is killed (row: timeout; default: 900)")
    p.add_argument("--retries", type=_count, default=1,
                   help="times to restart an episode whose process died (default: 1)")
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="existing Ray cluster ('ray start --head' prints it); default: a local Ray instance")


def add_eval_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` (run a matrix of episodes) and ``report`` (Markdown + HTML of the results)."""
    p = sub.add_parser(
        "eval",
        help="run a matrix of episodes (families x seeds x conditions) into a results table",
        description="Run every episode of families x seeds x conditions, each in its own process with a time "
                    "limit, and write one row per episode to OUT/results.parquet and OUT/results.csv. Re-running "
                    "the same command with the same --out resumes (finished episodes are skipped). List options "
                    "take comma lists; a --matrix file takes the same keys, and flags override it. Exit 0 when every "
                    "episode ran to its end (whether or not its task succeeded), 1 when some timed out, died or "
                    "raised, 2 on bad input.",
    )
    p.add_argument("--matrix", type=Path, default=None, metavar="FILE.yaml",
                   help="matrix file with keys families, seeds, memory, planner, mode, inject, sensor_profile, "
                        "policy, checkpoint, width, height, steps_limit")
    p.add_argument("--families", default=None, metavar="F,...",
                   help="task families (see 'mnemobot tasks'; default: place)")
    p.add_argument("--seeds", default=None, metavar="RANGES", help="seeds, e.g. 0-9 or 0-4,7 (default: 0)")
    p.add_argument("--memory", default=None, metavar="on,off", help="memory conditions (default: on)")
    p.add_argument("--planner", default=None, metavar="P,...",
                   help="planners: symbolic, rule, hf, vlm, openai (default: symbolic)")
    p.add_argument("--mode", default=None, metavar="M,...", help="tree, per-step (default: tree)")
    p.add_argument("--inject", default=None, metavar="I,...",
                   help="anomaly injections: none, move, remove, grasp (default: none)")
    p.add_argument("--sensor-profile", default=None, metavar="S,...",
                   help="sensor profiles: ideal, kinect, realsense, heavy or FILE.yaml (default: ideal)")
    p.add_argument("--policy", default=None, metavar="skills,learned", help="action experts (default: skills)")
    p.add_argument("--checkpoint", default=None, metavar="CKPT", help="checkpoint folder for --policy learned")
    p.add_argument("--model", default=None, help="model path or name for the hf, vlm and openai planners")
    p.add_argument("--base-url", default=None, help="endpoint of the openai planner")
    p.add_argument("--width", default=None, help="camera width in pixels (default: 320)")
    p.add_argument("--height", default=None, help="camera height in pixels (default: 240)")
    p.add_argument("--steps-limit", default=None, help="stop each episode after this many control ticks")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="results folder (default: runs/eval-<timestamp>); an existing one of the same matrix "
                        "is resumed, one of another matrix is refused")
    add_executor_options(p)
    p.add_argument("--rerun-unfinished", action="store_true",
                   help="when resuming, run again the episodes that timed out, died or raised")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line; print only the summary")

    r = sub.add_parser(
        "report",
        help="write an evaluation's results as Markdown and HTML with plots",
        description="Write OUT.md and a self-contained OUT.html (inline SVG plots, no scripts) from the results "
                    "of 'mnemobot eval': success rates with 95% Wilson intervals per family and condition, "
                    "planner calls and wall time per episode; with --suite, memory accuracy against horizon per "
                    "short-term policy from a replayed suite. --against compares each (family, condition) with "
                    "other results (Fisher's exact test) and flags regressions.",
    )
    r.add_argument("results", type=Path, nargs="?", default=None,
                   help="evaluation folder, or its results.parquet / results.csv (may be left out with --suite)")
    r.add_argument("-o", "--out", type=Path, default=None, metavar="OUT",
                   help="output path without suffix (default: RESULTS/report, or SUITE/report)")
    r.add_argument("--against", type=Path, default=None, metavar="OTHER",
                   help="results to compare with (the baseline): folder, .parquet or .csv")
    r.add_argument("--suite", type=Path, default=None, metavar="SUITE",
                   help="a folder of 'mnemobot suite': replay each episode under every short-term policy and "
                        "plot memory accuracy against horizon")
    r.add_argument("--capacity", type=int, default=16, help="short-term capacity for --suite (default: 16)")
    r.add_argument("--policies", default=None, metavar="P,...",
                   help="short-term policies for --suite (default: all)")


def _command(args: argparse.Namespace, out: Path) -> list[str]:
    """The command line as given (options not given left out), with the output folder made explicit."""
    argv = ["mnemobot", "eval"]
    names = ("matrix", "families", "seeds", "memory", "planner", "mode", "inject", "sensor_profile", "policy",
             "checkpoint", "model", "base_url", "width", "height", "steps_limit")
    for name in names:
        value = getattr(args, name)
        if value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    argv += ["--out", str(out), "--executor", args.executor, "--workers", str(args.workers),
             "--episode-timeout", f"{args.episode_timeout:g}", "--retries", str(args.retries)]
    if args.address is not None:
        argv += ["--address", args.address]
    return argv


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``mnemobot eval``: 0 when every episode ran to its end (task success or not), 1 when
    some timed out, died or raised."""
    from mnemobot.evaluation.matrix import Matrix, load_matrix_file
    from mnemobot.evaluation.run import EvalConfig, Progress, default_out, run_eval

    layers = [load_matrix_file(args.matrix)] if args.matrix is not None else []
    layers.append({"families": args.families, "seeds": args.seeds, "memory": args.memory,
                   "planner": args.planner, "mode": args.mode, "inject": args.inject,
                   "sensor_profile": args.sensor_profile, "policy": args.policy, "checkpoint": args.checkpoint,
                   "model": args.model, "base_url": args.base_url, "width": args.width, "height": args.height,
                   "steps_limit": args.steps_limit})
    matrix = Matrix.build(*layers)
    out = args.out if args.out is not None else default_out()
    cfg = EvalConfig(matrix=matrix, out=out, executor=args.executor, workers=args.workers,
                     episode_timeout_s=args.episode_timeout, retries=args.retries, address=args.address,
                     rerun_unfinished=args.rerun_unfinished, command=_command(args, out))
    progress = Progress(len(matrix), 0, enabled=not args.quiet)
    say = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    summary = run_eval(cfg, progress=progress, say=say)
    print(summary.render())
    return 0 if summary.unfinished == 0 else 1


def cmd_report(args: argparse.Namespace) -> int:
    """Run ``mnemobot report``."""
    from mnemobot.evaluation.report import write_report

    t0 = time.perf_counter()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()] if args.policies else None
    paths = write_report(args.results, out=args.out, against=args.against, suite=args.suite,
                         capacity=args.capacity, policies=policies,
                         progress=lambda msg: print(f"report: {msg}", file=sys.stderr, flush=True))
    print(f"report: {paths[0]}, {paths[1]} ({len(paths) - 2} plots; {time.perf_counter() - t0:.2f} s)")
    return 0
