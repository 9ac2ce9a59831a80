"""The ``mnemobot`` command: ``mnemobot <verb> [options]``.

Usage::

    mnemobot run --task-id fetch --seed 3
    mnemobot run --task "put the red cube on the tray" --seed 1 --summary-json out.json
    mnemobot run --task-id recall --seed 0 --memory-db house.db
    mnemobot memory house.db where mug
    mnemobot run --task-id recall --seed 0 --record runs/recall-0
    mnemobot replay runs/recall-0 --questions q.jsonl --report report.json
    mnemobot viz runs/recall-0 -o recall-0.rrd
    mnemobot run --task-id place --seed 0 --viz place-0.rrd
    mnemobot import-rgbd rgbd_dataset_freiburg1_desk fr1_desk --format tum
    mnemobot serve-model gemma3-270m --port 8080
    mnemobot run --task-id place --planner openai --base-url http://127.0.0.1:8080/v1
    mnemobot tasks
    mnemobot record-demos --task put_block_back --episodes 25 --out data/pbb
    mnemobot train --task put_block_back --data data/pbb --out ckpt/pbb
    mnemobot run --task-id put_block_back --seed 0 --policy learned --checkpoint ckpt/pbb
    mnemobot ros up --sim
    mnemobot ros task "bring the jenga from the bedroom to the kitchen table"

Exit codes: 0 success, 1 the episode ran but the task failed, 2 bad input (unknown task,
object or place, bad option), 3 the environment is missing a package or broke.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

EXIT_OK, EXIT_TASK_FAILED, EXIT_USAGE, EXIT_ENV = 0, 1, 2, 3


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the seed must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"the seed must be >= 0, got {value}")
    return value


def _planner_option(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    low = raw.strip().lower()
    value: object
    if low in ("true", "yes", "on", "false", "no", "off"):
        value = low in ("true", "yes", "on")
    else:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw
    return key.strip(), value


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run one simulated episode end to end",
        description="Run one episode in the pybullet household: plan, act, score.",
    )
    p.add_argument("--task-id", default="fetch", help="task family to generate (see 'mnemobot tasks'; default: fetch)")
    p.add_argument("--task", default=None, help="instruction text to carry out instead of the generated one")
    p.add_argument("--seed", type=_seed, default=0, help="world and task seed (default: 0)")
    p.add_argument("--gui", action="store_true", help="open the pybullet GUI window")
    p.add_argument("--steps-limit", type=_positive_int, default=None, help="stop after this many control ticks")
    p.add_argument("--summary-json", type=Path, default=None, help="write the run summary to this JSON file")
    p.add_argument("--agent", choices=("planner", "expert"), default="planner",
                   help="'planner': perception-driven agent (default); 'expert': scripted expert on ground truth")
    p.add_argument("--width", type=_positive_int, default=320, help="camera width in pixels (default: 320)")
    p.add_argument("--height", type=_positive_int, default=240, help="camera height in pixels (default: 240)")
    p.add_argument("--memory", choices=("on", "off"), default="on",
                   help="'on': scene-graph memory (default); 'off': the no-memory ablation (current frame only)")
    p.add_argument("--memory-db", type=Path, default=None,
                   help="SQLite file that keeps memory across episodes and restarts (created if missing)")
    p.add_argument("--memory-policy", default="lru",
                   help="short-term memory eviction policy: fifo, lru, lfu, w-tinylfu, none (default: lru)")
    p.add_argument("--short-term-capacity", type=_positive_int, default=32,
                   help="short-term memory capacity in object-state changes (default: 32)")
    p.add_argument("--planner", choices=("symbolic", "rule", "hf", "vlm", "openai"), default="symbolic",
                   help="cortex: 'symbolic' search (default, embedded), 'rule' grammar expansion, 'hf' a local "
                        "transformers model (--model PATH or .gguf), 'vlm' a local vision-language model, "
                        "'openai' an OpenAI-compatible endpoint (--base-url)")
    p.add_argument("--model", default=None, help="model path (hf, vlm) or model name (openai)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--planner-option", action="append", default=[], metavar="KEY=VALUE", type=_planner_option,
                   help="option of the hf/vlm/openai planner, repeatable: candidates, retries, temperature, "
                        "max_tokens, seed, images, system_role, timeout_s (e.g. --planner-option candidates=1)")
    p.add_argument("--mode", choices=("tree", "per-step"), default="tree",
                   help="'tree': plan once and walk the plan tree (default); 'per-step': consult the planner "
                        "before every skill (the ReAct-style baseline)")
    p.add_argument("--inject", choices=("none", "move", "remove", "grasp"), default="none",
                   help="inject an anomaly for evaluation: move or remove an object during the task, or make "
                        "a grasp fail (default: none)")
    p.add_argument("--record", type=Path, default=None, metavar="DIR",
                   help="record the episode as a rosbag2 bag (MCAP) in DIR, which must not exist")
    p.add_argument("--policy", choices=("skills", "learned"), default="skills",
                   help="action expert: the planner's 'skills' (default), or the 'learned' policy of --checkpoint "
                        "doing the whole task as one sub-task, with this run's memory")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="CKPT",
                   help="checkpoint folder written by 'mnemobot train' (for --policy learned)")
    add_sensor_profile_option(p)
    p.add_argument("--policy-temperature", type=float, default=1.0, metavar="T",
                   help="learned policy: scale of the noise its flow starts from (default 1; 0: from its mean)")
    p.add_argument("--policy-replan", type=int, default=None, metavar="N",
                   help="learned keyframe policy: keyframes executed per call (default: the checkpoint's, 8)")
    p.add_argument("--viz", type=Path, default=None, metavar="FILE.rrd",
                   help="write a rerun recording of the episode (camera, depth points, memory's objects, path, "
                        "events, memory operations) to FILE.rrd, which must not exist")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the final summary")


def add_sensor_profile_option(p: argparse.ArgumentParser) -> None:
    """``--sensor-profile NAME|FILE.yaml`` (``run``, ``suite``)."""
    p.add_argument("--sensor-profile", default="ideal", metavar="NAME|FILE.yaml",
                   help="what the robot perceives: 'ideal' (exact render, default), 'kinect', 'realsense', "
                        "'heavy' (depth, detector and pose noise from published sensor models) or a YAML file")


def _add_memory(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "memory",
        help="query a persistent memory database",
        description="Ask a memory database written by 'mnemobot run --memory-db' what it remembers.",
    )
    p.add_argument("db", type=Path, help="memory database (SQLite) written with --memory-db")
    p.add_argument("question", nargs="?", default="summary",
                   choices=("summary", "objects", "where", "contents", "changed", "last-seen", "search", "episodes"),
                   help="what to ask (default: summary)")
    p.add_argument("argument", nargs="?", default=None,
                   help="object label (where, last-seen), place (contents), description (search), time in s (changed)")
    p.add_argument("-k", type=_positive_int, default=5, help="answers to show for search (default: 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a recorded bag through perception and memory; answer and score memory questions",
        description="Feed a rosbag2 bag (MCAP or SQLite; mnemobot's or any RGB-D robot's) through perception "
                    "and memory with no simulator, answer memory questions at their times and score them.",
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory (with metadata.yaml) or a bare .mcap file")
    p.add_argument("--questions", type=Path, default=None, metavar="Q.jsonl",
                   help="memory questions (JSON lines, see README); without it, memory is built and summarised")
    p.add_argument("--answers", type=Path, default=None, metavar="OUT.jsonl", help="write one answer per question")
    p.add_argument("--report", type=Path, default=None, metavar="OUT.json", help="write the score report as JSON")
    p.add_argument("--topics", type=Path, default=None, metavar="MAP.yaml",
                   help="topic map for bags with other topic names (keys: rgb, depth, camera_info, instances, "
                        "labels, tf, tf_static, joint_states, world_frame, camera_frame, base_frame)")
    p.add_argument("--labels", type=Path, default=None, metavar="LABELS.json",
                   help="instance id -> label map (JSON) for bags without a labels topic")
    p.add_argument("--memory-policy", default="lru",
                   help="short-term memory eviction policy: fifo, lru, lfu, w-tinylfu, none (default: lru)")
    p.add_argument("--short-term-capacity", type=_positive_int, default=32,
                   help="short-term memory capacity in object-state changes (default: 32)")
    p.add_argument("--changes-from", choices=("graph", "short-term"), default="graph",
                   help="answer change questions from the scene graph (default) or the short-term table alone")
    p.add_argument("--sensor-profile", default=None, metavar="NAME|FILE.yaml",
                   help="the sensor the bag was recorded with (ideal, kinect, realsense, heavy or a YAML file); "
                        "memory's thresholds follow its noise. Default: the profile the bag declares, else "
                        "ideal for mnemobot's own recordings and kinect for other bags")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")


def _add_viz(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "viz",
        help="replay a recorded bag into a rerun recording (.rrd) of what the robot saw and remembered",
        description="Feed a rosbag2 bag through perception and memory (as 'mnemobot replay' does) and write a "
                    "rerun recording: camera images and pose, depth as world points, memory's objects as "
                    "labelled boxes coloured by state, map places, the base's path, plan and skill events and "
                    "memory operations, on the sim_time timeline. Open it with 'rerun FILE.rrd'.",
    )
    p.add_argument("bag", type=Path, help="rosbag2 directory (with metadata.yaml) or a bare .mcap file")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="FILE.rrd", help="the recording to write")
    p.add_argument("--force", action="store_true", help="replace FILE.rrd if it exists")
    p.add_argument("--stride", type=_positive_int, default=4,
                   help="every N-th depth pixel row and column becomes a world point (default: 4)")
    p.add_argument("--jpeg-quality", type=int, default=85, metavar="Q",
                   help="JPEG quality of the camera images, 1..100; 0 keeps raw RGB (about 10x larger; default: 85)")
    p.add_argument("--topics", type=Path, default=None, metavar="MAP.yaml", help="topic map (as for replay)")
    p.add_argument("--labels", type=Path, default=None, metavar="LABELS.json",
                   help="instance id -> label map (JSON) for bags without a labels topic")
    p.add_argument("--sensor-profile", default=None, metavar="NAME|FILE.yaml",
                   help="the sensor the bag was recorded with (default: the bag's declaration, as for replay)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")


def _intrinsics(text: str) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fx,fy,cx,cy (pixels), got {text!r}") from None
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"expected four numbers fx,fy,cx,cy (pixels), got {text!r}")
    return vals[0], vals[1], vals[2], vals[3]


def _add_import_rgbd(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-rgbd",
        help="convert a TUM RGB-D or 7-Scenes folder into a bag that 'mnemobot replay' reads",
        description="Convert a folder of RGB-D frames with camera poses (TUM RGB-D or 7-Scenes layout) into a "
                    "rosbag2 MCAP bag: rgb8 colour, 16UC1 depth (mm), camera_info, /tf map -> camera, the "
                    "sensor profile. Bad frames are skipped and counted; OUT must not exist.",
    )
    p.add_argument("dir", type=Path, help="data set folder (TUM: rgb.txt, depth.txt, groundtruth.txt; "
                                          "7-Scenes: frame-XXXXXX.color.png / .depth.png / .pose.txt)")
    p.add_argument("out", type=Path, help="bag directory to write (must not exist)")
    p.add_argument("--format", required=True, choices=("tum", "7scenes"), help="the folder's layout")
    p.add_argument("--intrinsics", type=_intrinsics, default=None, metavar="FX,FY,CX,CY",
                   help="pinhole intrinsics in pixels (default: TUM's published values for freiburg1/2/3 picked "
                        "from the folder name, else 525,525,319.5,239.5; 7-Scenes 585,585,320,240)")
    p.add_argument("--depth-scale", type=float, default=None, metavar="UNITS_PER_M",
                   help="TUM depth PNG units per metre (default: 5000)")
    p.add_argument("--fps", type=float, default=30.0, help="7-Scenes frame rate in Hz (default: 30)")
    p.add_argument("--up", choices=("auto", "x", "y", "z", "-x", "-y", "-z"), default="auto",
                   help="the data set world's up axis, rotated to +z; 'auto' (default) estimates it from the "
                        "camera poses, assuming the camera is held roughly level; write a negative axis as "
                        "--up=-y")
    p.add_argument("--sensor-profile", default="kinect", metavar="NAME|FILE.yaml",
                   help="the sensor the data came from, latched in the bag (default: kinect)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")


def _add_tasks(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("tasks", help="list task families, places and objects",
                   description="List the task families, places and objects of the household world.")


def _add_ros(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ros",
        help="run the ROS 2 node graph (ros up), send it a task (ros task)",
        description="Deploy the stack as ROS 2 nodes: 'ros up' starts the node graph as separate processes, "
                    "'ros task' sends an ExecuteTask goal to it.",
    )
    ros = p.add_subparsers(dest="ros_verb", metavar="<up|task>", required=True)
    up = ros.add_parser("up", help="start the node graph until Ctrl-C",
                        description="Start sim_robot (with --sim), robot_bridge, memory and orchestrator as separate "
                                    "processes; "
                                    "Ctrl-C or SIGTERM stops them all.")
    up.add_argument("--sim", action="store_true", help="also run the pybullet household as a ROS 2 robot")
    up.add_argument("--params", type=Path, default=None, metavar="FILE.yaml",
                    help="ROS 2 parameter file (default: launch/params/sim.yaml with --sim, robot.yaml without)")
    up.add_argument("--only", default="", metavar="NODE,...",
                    help="start only these nodes (comma list of sim_robot, robot_bridge, memory, orchestrator)")
    task = ros.add_parser("task", help="send a task to the running graph and wait for the result",
                          description="Send an ExecuteTask goal, print feedback and the result. Exit 0 on success, "
                                      "1 on a failed or cancelled task, 2 on a rejected goal or no action server.")
    task.add_argument("instruction", help="the task in words, e.g. \"bring the mug to the kitchen table\"")
    task.add_argument("--task-id", default="", help="task family id, for scoring on the simulated robot")
    task.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for the action server and for it to accept the goal (default: 30)")
    task.add_argument("--result-timeout", type=float, default=3600.0,
                      help="seconds to wait for the result before cancelling (default: 3600)")
    task.add_argument("-q", "--quiet", action="store_true", help="print only the result")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnemobot",
        description="mnemobot: an embodied robot agent stack built around memory.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    _add_run(sub)
    _add_memory(sub)
    _add_replay(sub)
    _add_viz(sub)
    _add_import_rgbd(sub)
    from mnemobot.evaluation.suite import add_suite_parser

    add_suite_parser(sub)
    from mnemobot.agent.serve import add_serve_parser

    add_serve_parser(sub)
    _add_tasks(sub)
    _add_ros(sub)
    from mnemobot.policy.cli import add_policy_parsers

    add_policy_parsers(sub)
    from mnemobot.evaluation.cli import add_eval_parsers

    add_eval_parsers(sub)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from mnemobot.agent.episode import RunConfig, run_episode

    cfg = RunConfig(
        task_id=args.task_id,
        task_text=args.task,
        seed=args.seed,
        gui=args.gui,
        steps_limit=args.steps_limit,
        agent=args.agent,
        width=args.width,
        height=args.height,
        memory=args.memory == "on",
        memory_db=str(args.memory_db) if args.memory_db is not None else None,
        memory_policy=args.memory_policy,
        short_term_capacity=args.short_term_capacity,
        record=str(args.record) if args.record is not None else None,
        planner=args.planner,
        model=args.model,
        base_url=args.base_url,
        mode=args.mode,
        inject=args.inject,
        planner_options=dict(args.planner_option),
        sensor_profile=args.sensor_profile,
        policy=args.policy,
        checkpoint=str(args.checkpoint) if args.checkpoint is not None else None,
        policy_temperature=args.policy_temperature,
        policy_replan=args.policy_replan,
    )
    progress = None if args.quiet else (lambda msg: print(msg, flush=True))
    viz = None
    if args.viz is not None:
        from mnemobot.evaluation.viz import RerunViz, check_output

        viz = RerunViz(check_output(args.viz)).open()
    try:
        summary = run_episode(cfg, progress=progress, **(viz.hooks() if viz is not None else {}))
    except BaseException:
        if viz is not None:
            viz.close(commit=False)
        raise
    print(summary.render())
    if viz is not None:
        print(f"viz         : {viz.close()}")
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return EXIT_OK if summary.success else EXIT_TASK_FAILED


def _cmd_memory(args: argparse.Namespace) -> int:
    from mnemobot.agent.memory_cli import run_memory_query

    text = run_memory_query(args.db, args.question, args.argument, k=args.k, as_json=args.json)
    print(text)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    from mnemobot.evaluation.replay import ReplayConfig, replay

    cfg = ReplayConfig(bag=args.bag, questions=args.questions, answers=args.answers, report=args.report,
                       topics=args.topics, labels=args.labels, memory_policy=args.memory_policy,
                       short_term_capacity=args.short_term_capacity, changes_from=args.changes_from,
                       sensor_profile=args.sensor_profile)
    progress = None if args.quiet else (lambda msg: print(msg, flush=True))
    result = replay(cfg, progress=progress)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.render(notes=args.quiet))
    return EXIT_OK


def _cmd_viz(args: argparse.Namespace) -> int:
    from mnemobot.evaluation.viz import VizBagConfig, VizConfig, viz_bag

    cfg = VizBagConfig(bag=args.bag, out=args.out, force=args.force, topics=args.topics, labels=args.labels,
                       sensor_profile=args.sensor_profile,
                       viz=VizConfig(stride=args.stride, jpeg_quality=args.jpeg_quality or None))
    result = viz_bag(cfg, progress=None if args.quiet else (lambda msg: print(msg, flush=True)))
    print(result.render())
    return EXIT_OK


def _cmd_import_rgbd(args: argparse.Namespace) -> int:
    from mnemobot.agent.errors import UserError
    from mnemobot.ros2.rgbd_import import RgbdImportError, import_rgbd

    say = (lambda _m: None) if args.quiet else (lambda msg: print(msg, flush=True))
    try:
        result = import_rgbd(args.dir, args.out, args.format, intrinsics=args.intrinsics,
                             depth_scale=args.depth_scale, fps=args.fps, up=args.up, sensor=args.sensor_profile,
                             say=say, warn=lambda msg: print(f"mnemobot: {msg}", file=sys.stderr, flush=True))
    except RgbdImportError as e:
        raise UserError(str(e)) from None
    if args.quiet:
        print(result.summary())
    return EXIT_OK


def _cmd_suite(args: argparse.Namespace) -> int:
    from mnemobot.evaluation.suite import cmd_suite

    return cmd_suite(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from mnemobot.agent.serve import cmd_serve

    return cmd_serve(args)


def _cmd_ros(args: argparse.Namespace) -> int:
    from mnemobot.agent.errors import UserError
    from mnemobot.ros2 import launcher

    if args.ros_verb == "up":
        only = tuple(n.strip() for n in args.only.split(",") if n.strip())
        return launcher.run_graph(sim=args.sim, params=args.params, only=only)
    if not args.instruction.strip():
        raise UserError("the task is empty")
    return launcher.send_task(args.instruction, task_id=args.task_id, timeout_s=args.timeout,
                              result_timeout_s=args.result_timeout, quiet=args.quiet)


def _cmd_record_demos(args: argparse.Namespace) -> int:
    from mnemobot.policy.cli import cmd_record_demos

    return cmd_record_demos(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from mnemobot.policy.cli import cmd_train

    return cmd_train(args)


def _cmd_tasks(_args: argparse.Namespace) -> int:
    from mnemobot.agent.episode import describe_world

    print(describe_world())
    return EXIT_OK


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a supervisor or launch system stopping us): unwinds like Ctrl-C, so bags and
    databases are closed on the way out."""


def _stop_on_sigterm():  # noqa: ANN202 - the previous handler
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(_signum: int, _frame: object) -> None:
        raise _Terminated

    return signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from mnemobot.agent.errors import UserError

    handlers = {"run": _cmd_run, "memory": _cmd_memory, "replay": _cmd_replay, "suite": _cmd_suite,
                "tasks": _cmd_tasks, "serve-model": _cmd_serve}
    handlers["import-rgbd"] = _cmd_import_rgbd
    handlers["viz"] = _cmd_viz
    handlers["ros"] = _cmd_ros
    handlers["record-demos"] = _cmd_record_demos
    handlers["train"] = _cmd_train
    from mnemobot.evaluation.cli import cmd_eval, cmd_report

    handlers["eval"], handlers["report"] = cmd_eval, cmd_report
    previous = _stop_on_sigterm()
    try:
        return handlers[args.verb](args)
    except UserError as e:
        print(f"mnemobot: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as e:
        print(f"mnemobot: error: {e}", file=sys.stderr)
        return EXIT_ENV
    except _Terminated:
        print("mnemobot: terminated (open bags, memory databases and model servers were closed)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("mnemobot: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_OK
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
