"""The orchestrator node over real DDS, as a user runs it: ``mnemobot ros up --sim`` (every node its
own process) and ``mnemobot ros task``. A task is planned once and carried out with feedback per
skill; goals it cannot ground are rejected with the reason; cancel stops the robot; the orchestrator
killed mid-motion leaves the robot to the bridge's watchdog; the memory node killed mid-task and
restarted on its database lets the task finish."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("mnemobot_interfaces.action")
pytest.importorskip("pybullet")

pytestmark = pytest.mark.slow

FETCH = "bring the jenga from the bedroom to the kitchen table"  # fetch, seed 0


@pytest.fixture()
def ros_env():
    env = {**os.environ, "ROS_DOMAIN_ID": str(100 + random.randrange(50)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    return env


@pytest.fixture()
def params(tmp_path: Path) -> Path:
    """The shipped sim parameters with a memory database in ``tmp_path``."""
    from mnemobot.ros2.launcher import default_params

    p = yaml.safe_load(default_params(sim=True).read_text())
    p["memory"]["ros__parameters"]["memory_db"] = str(tmp_path / "house.db")
    p["orchestrator"]["ros__parameters"]["memory_timeout_s"] = 30.0  # a restarted memory node loads torch...
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(p))
    return out


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_leftovers():
    """A failed test leaves no node or client running (each is its own process group)."""
    yield
    while _STARTED:
        p = _STARTED.pop()
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


class Proc:
    """A process whose merged output is collected by a thread, so a test can wait for a line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                  start_new_session=True)
        _STARTED.append(self.p)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in iter(self.p.stdout.readline, ""):
            self.lines.append(line)

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            m = rx.search(self.out)
            if m:
                return m
            if self.p.poll() is not None:
                time.sleep(0.2)
                m = rx.search(self.out)
                if m:
                    return m
                pytest.fail(f"exited ({self.p.returncode}) before {pattern!r}:\n{self.out[-4000:]}")
            time.sleep(0.05)
        pytest.fail(f"no {pattern!r} within {timeout} s:\n{self.out[-4000:]}")

    def finish(self, timeout: float) -> int:
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            pytest.fail(f"did not end within {timeout} s:\n{self.out[-4000:]}")
        self._t.join(timeout=5)
        return self.p.returncode

    def stop(self, timeout: float = 40.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        return self.finish(timeout)


def _up(env: dict[str, str], params: Path, only: str = "") -> Proc:
    args = [sys.executable, "-m", "mnemobot", "ros", "up", "--sim", "--params", str(params)]
    return Proc(args + (["--only", only] if only else []), env)


def _task(env: dict[str, str], instruction: str, *extra: str) -> Proc:
    return Proc([sys.executable, "-m", "mnemobot", "ros", "task", instruction, "--timeout", "90", *extra], env)


ODOM = """
import json, math, sys, time, rclpy
from nav_msgs.msg import Odometry
from std_msgs.msg import String
from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy
rclpy.init()
node = rclpy.create_node("stop_check")
speeds, status = [], {}
node.create_subscription(Odometry, "/odom", lambda m: speeds.append(
    math.hypot(m.twist.twist.linear.x, m.twist.twist.linear.y) + abs(m.twist.twist.angular.z)), 10)
node.create_subscription(String, "/mnemobot/bridge/status", lambda m: status.update(json.loads(m.data)),
                         QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                    durability=DurabilityPolicy.TRANSIENT_LOCAL))
start = time.monotonic()
while not speeds and time.monotonic() < start + 20:  # discovery
    rclpy.spin_once(node, timeout_sec=0.05)
del speeds[:]
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    rclpy.spin_once(node, timeout_sec=0.05)
print(json.dumps({"speeds": speeds[-20:], "status": status}))
rclpy.shutdown()
"""


def _observe(env: dict[str, str], seconds: float) -> dict:
    r = subprocess.run([sys.executable, "-c", ODOM, str(seconds)], capture_output=True, text=True, env=env,
                       timeout=60 + seconds)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


CLIENT = """
import json, sys, rclpy
from rclpy.action import ActionClient
from mnemobot_interfaces.action import ExecuteTask
rclpy.init()
node = rclpy.create_node("plain_task_client")
client = ActionClient(node, ExecuteTask, "/mnemobot/execute_task")
assert client.wait_for_server(timeout_sec=90), "no action server"
feedback = []
fut = client.send_goal_async(ExecuteTask.Goal(instruction=sys.argv[1], task_id=sys.argv[2]),
                             feedback_callback=lambda m: feedback.append(
                                 [m.feedback.event, m.feedback.skill, m.feedback.progress]))
rclpy.spin_until_future_complete(node, fut, timeout_sec=90)
handle = fut.result()
assert handle.accepted, "goal rejected"
res = handle.get_result_async()
rclpy.spin_until_future_complete(node, res, timeout_sec=600)
r = res.result()
print(json.dumps({"status": r.status, "success": r.result.success, "stop_reason": r.result.stop_reason,
                  "summary": json.loads(r.result.summary_json), "feedback": feedback}))
rclpy.shutdown()
"""


def test_execute_task_plans_once_reports_each_skill_and_rejects_what_it_cannot_ground(ros_env, params):
    graph = _up(ros_env, params)
    try:
        graph.wait_for(r"\[orchestrator\].*site map: \d+ places", 90)
        bad = _task(ros_env, "bring the unicorn to the kitchen table")
        assert bad.finish(120) == 2, bad.out
        assert "rejected: unknown object 'unicorn'" in bad.out, bad.out
        assert "Traceback" not in bad.out

        # a plain rclpy action client (not mnemobot code) sends the fetch task
        run = subprocess.run([sys.executable, "-c", CLIENT, FETCH, "fetch"], capture_output=True, text=True,
                             env=ros_env, timeout=700)
        assert run.returncode == 0, run.stderr[-3000:] + graph.out[-3000:]
    finally:
        rc = graph.stop()
    from action_msgs.msg import GoalStatus

    r = json.loads(run.stdout)
    assert r["status"] == GoalStatus.STATUS_SUCCEEDED and r["success"], r
    s = r["summary"]
    assert s["planner_calls"] == 1 and s["scored"] == "simulator", s  # the cortex once; scored on sim truth
    events = [(e, skill) for e, skill, _ in r["feedback"]]
    for skill in ("find(jenga, bedroom)", "pick(jenga)", "navigate_to(kitchen_table)", "place(jenga, kitchen_table, on)"):
        assert ("started", skill) in events and ("succeeded", skill) in events, (skill, events)
    progress = [p for _, _, p in r["feedback"]]
    assert progress == sorted(progress) or s["anomalies"], progress  # monotone unless a recovery re-planned
    assert r["feedback"][-1][:2] == ["succeeded", "place(jenga, kitchen_table, on)"] and progress[-1] == 1.0
    assert s["memory"]["objects"] >= 2, s["memory"]  # the mirror followed the memory node's graph
    assert rc == 0, graph.out[-3000:]


def test_cancel_stops_the_robot_and_a_second_goal_is_refused_while_busy(ros_env, params):
    graph = _up(ros_env, params)
    try:
        graph.wait_for(r"\[orchestrator\].*site map", 90)
        # across the house and back (about 20 m): still driving when the cancel comes, however
        # slowly this machine starts the second client
        first = _task(ros_env, "go to the bedroom table, then go to the drawer")
        first.wait_for(r"started\s+navigate_to\(bedroom_table\)", 120)
        time.sleep(2.0)  # driving
        moving = _observe(ros_env, 1.0)
        assert max(moving["speeds"], default=0.0) > 0.05, moving
        second = _task(ros_env, FETCH)
        assert second.finish(120) == 2, second.out
        assert "rejected: busy" in second.out, second.out

        first.p.send_signal(signal.SIGINT)  # Ctrl-C on the client cancels the goal
        assert first.finish(60) == 1, first.out
        assert "cancelling the task" in first.out and "Traceback" not in first.out, first.out
        assert "FAILURE (cancelled" in first.out, first.out  # the server's answer, waited for
        stopped = _observe(ros_env, 1.5)
        assert stopped["speeds"] and max(stopped["speeds"][-5:]) < 1e-3, stopped
        graph.wait_for(r"\[orchestrator\].*task ended: 'go to the bedroom table, then go to the drawer' \(cancelled\)", 30)

        after = _task(ros_env, "bring the unicorn to the kitchen table")  # not busy any more
        assert after.finish(120) == 2 and "unknown object 'unicorn'" in after.out, after.out
    finally:
        rc = graph.stop()
    assert rc == 0, graph.out[-3000:]


def test_orchestrator_killed_mid_motion_leaves_the_robot_stopped_by_the_bridge_watchdog(ros_env, params):
    robot = _up(ros_env, params, "sim_robot,robot_bridge,memory")
    orch = _up(ros_env, params, "orchestrator")
    try:
        pid = int(orch.wait_for(r"started orchestrator \(pid (\d+)\)", 60).group(1))
        orch.wait_for(r"site map", 90)
        task = _task(ros_env, "go to the kitchen table")
        task.wait_for(r"started\s+navigate_to", 120)
        time.sleep(2.0)
        assert max(_observe(ros_env, 1.0)["speeds"], default=0.0) > 0.05
        os.kill(pid, signal.SIGKILL)
        orch.finish(60)  # the launcher reports the dead node and exits
        seen = _observe(ros_env, 3.0)
        assert seen["status"].get("watchdog_stops", 0) >= 1 and seen["status"].get("stale"), seen
        assert seen["speeds"] and max(seen["speeds"][-5:]) < 1e-3, seen
        task.p.send_signal(signal.SIGINT)
        task.finish(60)
    finally:
        rc = robot.stop()
        if orch.p.poll() is None:
            orch.stop()
    assert rc == 0, robot.out[-3000:]


def test_memory_node_killed_mid_task_and_restarted_on_its_database_lets_the_task_finish(ros_env, params):
    rest = _up(ros_env, params, "sim_robot,robot_bridge,orchestrator")
    mem = _up(ros_env, params, "memory")
    mem2 = None
    try:
        pid = int(mem.wait_for(r"started memory \(pid (\d+)\)", 60).group(1))
        rest.wait_for(r"\[orchestrator\].*site map", 90)
        run = _task(ros_env, FETCH, "--task-id", "fetch")
        run.wait_for(r"succeeded\s+find\(jenga", 240)  # memory holds the jenga now
        os.kill(pid, signal.SIGKILL)
        mem.finish(60)
        mem2 = _up(ros_env, params, "memory")  # respawned, as a launch file's respawn=True does
        mem2.wait_for(r"configured: memory .*house\.db with [1-9]\d* objects", 90)  # reloaded from SQLite
        assert run.finish(400) == 0, run.out + rest.out[-3000:] + mem2.out[-2000:]
    finally:
        rc = rest.stop()
        if mem2 is not None:
            mem2.stop()
        if mem.p.poll() is None:
            mem.stop()
    assert "result      : SUCCESS (succeeded)" in run.out, run.out
    m = re.search(r"(\d+) reload\(s\)", run.out)
    assert m and int(m.group(1)) >= 2, run.out  # the graph was loaded again from the restarted node
    assert rc == 0, rest.out[-3000:]
