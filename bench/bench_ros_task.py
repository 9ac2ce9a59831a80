"""A task over ROS 2 against the same task in one process: wall time of the orchestrator's loop.

Usage::

    python bench/bench_ros_task.py                    # fetch seed 0, once each (about 2 min on 2 cores)
    python bench/bench_ros_task.py --task fetch --seeds 0 1 --repeat 2

1. **in-process** (baseline): ``mnemobot run --task-id T --seed S`` (simulator, memory, orchestrator in
   one process); ``wall_s`` of its summary: from the first plan to the end, start-up excluded.
2. **ROS 2**: ``mnemobot ros up --sim`` (sim_robot, robot_bridge, memory, orchestrator: four processes
   over Fast DDS on loopback) and ``mnemobot ros task`` with the same task; ``wall_s`` of the result's
   summary, measured the same way. Also: control ticks (must match: the same skills on the same
   lockstep simulator), planner calls, success, and how long the orchestrator waited for memory.

The headline is the ratio of the ROS 2 wall time to the in-process one (target <= 1.25).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def in_process(task: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        subprocess.run([sys.executable, "-m", "mnemobot", "run", "--task-id", task, "--seed", str(seed), "-q",
                        "--summary-json", str(out)], check=True, capture_output=True, text=True, timeout=900)
        return json.loads(out.read_text())


def over_ros(task: str, seed: int) -> dict:
    env = {**os.environ, "ROS_DOMAIN_ID": str(160 + random.randrange(40)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    from mnemobot.ros2.launcher import default_params

    with tempfile.TemporaryDirectory() as tmp:
        params = yaml.safe_load(default_params(sim=True).read_text())
        params["sim_robot"]["ros__parameters"].update(task=task, seed=seed)
        pfile = Path(tmp) / "params.yaml"
        pfile.write_text(yaml.safe_dump(params))
        log = open(Path(tmp) / "graph.log", "w+")  # noqa: SIM115 - read back below
        graph = subprocess.Popen([sys.executable, "-m", "mnemobot", "ros", "up", "--sim", "--params", str(pfile)],
                                 stdout=log, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            instruction = None
            while time.monotonic() < deadline and instruction is None:
                time.sleep(0.5)
                log.seek(0)
                text = log.read()
                m = re.search(r"instruction: '(.*)'", text)
                if m and "site map:" in text.split("[orchestrator]")[-1] + text:
                    instruction = m.group(1)
            if instruction is None:
                sys.exit("bench_ros_task: the graph did not start:\n" + text[-3000:])
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", CLIENT, instruction, task], capture_output=True, text=True,
                                 env=env, timeout=900)
            client_s = time.perf_counter() - t0
            if res.returncode != 0:
                sys.exit(f"bench_ros_task: the task client failed:\n{res.stderr[-3000:]}")
            summary = json.loads(res.stdout)
            summary["client_s"] = client_s
            return summary
        finally:
            graph.send_signal(signal.SIGINT)
            try:
                graph.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(graph.pid, signal.SIGKILL)
            log.close()


CLIENT = """
import json, sys, rclpy
from rclpy.action import ActionClient
from mnemobot_interfaces.action import ExecuteTask
rclpy.init()
node = rclpy.create_node("bench_task_client")
client = ActionClient(node, ExecuteTask, "/mnemobot/execute_task")
assert client.wait_for_server(timeout_sec=60), "no action server"
fut = client.send_goal_async(ExecuteTask.Goal(instruction=sys.argv[1], task_id=sys.argv[2]))
rclpy.spin_until_future_complete(node, fut, timeout_sec=60)
handle = fut.result()
assert handle.accepted, "goal rejected"
res = handle.get_result_async()
rclpy.spin_until_future_complete(node, res, timeout_sec=900)
print(res.result().result.summary_json)
rclpy.shutdown()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="fetch")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:
        for _ in range(args.repeat):
            a = in_process(args.task, seed)
            b = over_ros(args.task, seed)
            rows.append((seed, a, b))
            print(f"seed {seed}: in-process {a['wall_s']:.1f} s ({a['steps']} ticks, success {a['success']}); "
                  f"ROS 2 {b['wall_s']:.1f} s ({b['steps']} ticks, success {b['success']}, "
                  f"memory waits {b['memory']['wait_s']:.1f} s over {b['memory']['frames_waited']} frames, "
                  f"client {b['client_s']:.1f} s; simulator {b.get('simulator')}; command round trip "
                  f"{b['robot']['round_trip_ms']} ms over {b['robot']['commands']} commands)", flush=True)
            for name, r in (("in-process", a), ("ROS 2", b)):
                print(f"  {name:10s} ticks per skill: "
                      + ", ".join(f"{k['skill']} {k.get('ticks', '?')}" for k in r["skills"]), flush=True)
    base = sum(a["wall_s"] for _, a, _ in rows)
    ros = sum(b["wall_s"] for _, _, b in rows)
    print()
    print(f"{'':22s}{'wall s':>9s}{'ticks':>8s}{'ticks/s':>9s}{'calls':>7s}{'success':>9s}")
    for name, key in (("in-process (baseline)", 1), ("ROS 2, 4 processes", 2)):
        wall = sum(r[key]["wall_s"] for r in rows)
        ticks = sum(r[key]["steps"] for r in rows)
        calls = sum(r[key]["planner_calls"] for r in rows)
        ok = sum(bool(r[key]["success"]) for r in rows)
        print(f"{name:22s}{wall:9.1f}{ticks:8d}{ticks / wall:9.1f}{calls:7d}{ok:6d}/{len(rows)}")
    print(f"\nROS 2 / in-process wall time: {ros / base:.2f}x (target <= 1.25)")
    ticks_a = sum(a["steps"] for _, a, _ in rows)
    ticks_b = sum(b["steps"] for _, _, b in rows)
    print(f"per control tick: {1000 * base / ticks_a:.1f} ms in-process, {1000 * ros / ticks_b:.1f} ms over ROS 2 "
          f"({(ros / ticks_b) / (base / ticks_a):.2f}x); ROS 2 command round trip (publish -> robot_bridge -> "
          f"sim_robot step -> state back) {1000 * sum(b['robot']['round_trip_s'] for _, _, b in rows) / ticks_b:.1f} ms")


if __name__ == "__main__":
    main()
