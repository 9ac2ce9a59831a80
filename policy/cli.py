"""``mnemobot record-demos`` and ``mnemobot train`` (the learned action expert's commands)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_policy_parsers", "cmd_record_demos", "cmd_train"]

SIZES = {
    "default": {},
    "small": {"d_model": 128, "n_heads": 4, "cognition_layers": 2, "decoder_layers": 3, "head_width": 256,
              "encoder_channels": (16, 32, 64, 128)},
    "tiny": {"d_model": 32, "n_heads": 4, "cognition_layers": 1, "decoder_layers": 1, "perceptual_tokens": 2,
             "encoder_channels": (8, 16), "vocab_buckets": 64, "id_buckets": 32, "flow_steps": 3, "head_width": 32,
             "head_queries": 2},
}
"""Policy sizes for ``mnemobot train --size``: ``default`` (about 15M parameters), ``small`` and
``tiny`` (tests and smoke runs)."""

TRACE_HAND = {"trace_state_columns": (7, 8, 9, 10), "trace_action_columns": (0, 1, 2, 9)}
"""The hand's trace as ``--keyframes`` trains it: a trace token shows the measured finger opening
and hand position (arm-base frame; ``STATE_NAMES`` 7-10), and the keyframe's hand position and
finger command (``KEYFRAME_ACTION_NAMES`` 0-2, 9); ``--trace-body`` shows all of both."""

KEYFRAME_MODE = {"action_mode": "keyframes", "direct_state": True, "flow_target": "sample", "anchors": True,
                 "trace_length": 16, **TRACE_HAND}
"""``mnemobot train --keyframes``: keyframe actions, proprioception's short path to the head, a
sample-predicting head and base poses anchored on the memory's points; with the hand's trace
(``--trace``, default 16 keyframes) or else a keyframe count (``--trace 0``)."""


def add_policy_parsers(sub: argparse._SubParsersAction) -> None:
    from mnemobot.agent.cli import _positive_int as _count

    rec = sub.add_parser(
        "record-demos",
        help="record scripted-expert demonstrations as a LeRobot v3.0 dataset",
        description="Run the scripted expert on a task family and write each successful episode (head camera, "
                    "proprioception, end-effector actions, scene-graph memory tokens) in the LeRobot v3.0 "
                    "dataset layout. OUT must be new or empty (or an earlier recording with --append).",
    )
    rec.add_argument("--task", required=True, help="task family (see 'mnemobot tasks'), e.g. put_block_back")
    rec.add_argument("--episodes", type=_count, default=25, help="successful episodes to keep (default: 25)")
    rec.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    rec.add_argument("--seed", type=int, default=0, help="first seed; failed seeds are skipped (default: 0)")
    rec.add_argument("--fps", type=float, default=10.0, help="frames per second of robot time (default: 10)")
    rec.add_argument("--sensor-profile", default="ideal", metavar="NAME|FILE.yaml",
                     help="what the recorded memory perceives (default: ideal)")
    rec.add_argument("--append", action="store_true", help="add episodes to an existing recording of the same kind")
    rec.add_argument("-q", "--quiet", action="store_true", help="print only the summary")

    tr = sub.add_parser(
        "train",
        help="train the memory-conditioned policy on recorded demonstrations",
        description="Train the learned action expert (latent memory banks, scene-graph tokens, flow-matching "
                    "action chunks) on a dataset written by 'mnemobot record-demos'. Running the same command "
                    "again resumes; OUT is never a folder holding anything else.",
    )
    tr.add_argument("--task", required=True,
                    help="task family (or comma list) the data shows; a checkpoint runs only on these")
    tr.add_argument("--data", required=True,
                    help="dataset folder (LeRobot v3.0 layout), or a comma list of folders recorded alike "
                         "(one per family, trained together)")
    tr.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    tr.add_argument("--steps", type=_count, default=3000, help="optimizer steps (default: 3000)")
    tr.add_argument("--batch-size", type=_count, default=8, help="batch size (default: 8)")
    tr.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default: 3e-4)")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    tr.add_argument("--history", type=int, default=16, help="frames the latent banks are rebuilt from (default: 16)")
    tr.add_argument("--size", choices=sorted(SIZES), default="default", help="policy size (default: about 15M)")
    tr.add_argument("--no-latent-memory", action="store_true", help="ablation: no perceptual/cognitive banks")
    tr.add_argument("--no-symbolic-memory", action="store_true",
                    help="ablation: scene-graph tokens show only the present (where things are and their state now; "
                         "not where they were first seen, what was open, ages or identities)")
    tr.add_argument("--no-scene-tokens", action="store_true",
                    help="ablation: no scene-graph tokens at all (the image is the only view of the scene)")
    tr.add_argument("--bank-merge", choices=("similar", "fifo"), default="similar",
                    help="full bank: merge the most similar adjacent pair (default) or drop the oldest")
    tr.add_argument("--stride", type=_count, default=1,
                    help="recorded frames per action of a chunk (default: 1; e.g. 5 at 10 fps: a chunk spans 8 s)")
    tr.add_argument("--keyframes", action="store_true",
                    help="act in keyframes: each action of a chunk is the next whole-body pose at which the expert "
                         "stopped, turned or worked its fingers (see README); default: one action per frame")
    tr.add_argument("--save-every", type=_count, default=500, help="checkpoint every N steps (default: 500)")
    tr.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    tr.add_argument("--step-jitter", type=int, default=0,
                    help="keyframes with --trace 0: show each sample's keyframe count off by up to N, so the policy "
                         "reads its phase from what it sees and remembers (default: 0)")
    tr.add_argument("--trace-body", action="store_true",
                    help="keyframes: each trace token shows the whole body's pose (arm joints, base, head), not "
                         "only the hand's position and the fingers")
    tr.add_argument("--loss-floor", action="store_true",
                    help="keyframes: weigh each action error in units of the error that matters (1 cm of hand, "
                         "5 mm of fingers, 2 cm of base) rather than of its spread")
    tr.add_argument("--contact-anchors", action="store_true",
                    help="keyframes: anchor the hand on the picked point only at a contact (within 15 cm of its "
                         "event), elsewhere only the base (experimental: the pointer does not yet tell the two apart)")
    tr.add_argument("--trace", type=int, default=16, metavar="N",
                    help="keyframes: the policy reads the last N keyframes it executed (the hand's trace, part of "
                         "the latent memory) instead of a count of them; 0: the count (default: 16)")


def cmd_record_demos(args: argparse.Namespace) -> int:
    from mnemobot.agent.errors import UserError
    from mnemobot.policy.dataset import DatasetError
    from mnemobot.policy.record import RecordConfig, record_demos
    from mnemobot.sim.tasks import TASK_FAMILIES

    if args.task not in TASK_FAMILIES:
        raise UserError(f"unknown task family {args.task!r}; known: {', '.join(sorted(TASK_FAMILIES))}")
    if not args.fps > 0:
        raise UserError(f"--fps must be > 0, got {args.fps}")
    say = (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))
    try:
        res = record_demos(RecordConfig(task=args.task, out=args.out, episodes=args.episodes, seed=args.seed,
                                        fps=args.fps, sensor_profile=args.sensor_profile, append=args.append),
                           progress=say)
    except DatasetError as e:
        raise UserError(str(e)) from None
    print(f"recorded {len(res['kept'])} episodes, {res['frames']} frames of {args.task} into {args.out}"
          + (f"; dropped seeds {[s for s, _ in res['dropped']]}" if res["dropped"] else ""))
    return 0 if len(res["kept"]) >= args.episodes else 1


def cmd_train(args: argparse.Namespace) -> int:
    from mnemobot.agent.errors import UserError
    from mnemobot.policy.dataset import DatasetError
    from mnemobot.policy.train import CheckpointError, TrainConfig, train
    from mnemobot.sim.tasks import TASK_FAMILIES

    families = [t.strip() for t in args.task.split(",") if t.strip()]
    unknown = [t for t in families if t not in TASK_FAMILIES]
    if unknown or not families:
        raise UserError(f"unknown task family {unknown or args.task!r}; known: {', '.join(sorted(TASK_FAMILIES))}")
    overrides = dict(SIZES[args.size])
    overrides.update(latent_memory=not args.no_latent_memory, symbolic_memory=not args.no_scene_tokens,
                     symbolic_history=not args.no_symbolic_memory,
                     bank_merge=args.bank_merge, action_stride=args.stride)
    if args.trace < 0:
        raise UserError(f"--trace must be >= 0, got {args.trace}")
    if args.keyframes:
        overrides.update(KEYFRAME_MODE, trace_length=args.trace, step_token=args.trace == 0)
        if args.trace_body:
            overrides.update(trace_state_columns=(), trace_action_columns=())
        if args.loss_floor:
            overrides["loss_units"] = "floor"
        if args.contact_anchors:
            overrides["contact_anchors"] = True
    if args.keyframes and args.stride != 1:
        raise UserError("--keyframes takes no --stride (each action is the next keyframe)")
    try:
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          history=args.history, save_every=args.save_every, threads=args.threads,
                          step_jitter=args.step_jitter)
        cfg.check()
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        data = [Path(d.strip()) for d in str(args.data).split(",") if d.strip()]
        meta = train(data[0] if len(data) == 1 else data, args.out, overrides, cfg, families=families,
                     progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (DatasetError, CheckpointError, FloatingPointError) as e:
        raise UserError(str(e)) from None
    print(f"checkpoint {args.out}: step {meta['step']}, {meta['dataset']['episodes']} episodes, "
          f"{meta['dataset']['frames']} frames of {', '.join(meta['families'])}")
    return 0
