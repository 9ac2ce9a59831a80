"""``mnemobot ros up`` and ``mnemobot ros task``: run the node graph, send it a task.

``mnemobot ros up [--sim] [--params FILE.yaml]`` starts each node as its own process (as
``ros2 launch`` would) with the same parameter file the launch files read, prefixes their
output with the node's name, and stops them all on Ctrl-C or SIGTERM (SIGINT first, then
SIGTERM, then SIGKILL after a grace period). When a node dies the others are stopped and the
exit status names it: a half graph never keeps running silently.

``mnemobot ros task "bring the jenga to the kitchen table"`` is a plain ``ExecuteTask`` action
client: it prints each feedback message and the result, and exits 0 on success, 1 on a failed
or cancelled task, 2 on a rejected goal (with the server's reason) or when no action server
answers within ``--timeout`` seconds. Ctrl-C cancels the goal (the robot stops) before exiting.

Nodes (``python -m mnemobot.ros2.nodes.<module>``; on a ROS 2 host ``ros2 run mnemobot <name>``):

=============  ===============  ==================================================================
node           module           role
=============  ===============  ==================================================================
sim_robot      sim_robot        the pybullet household on standard topics (``--sim`` only)
robot_bridge   robot_bridge     limits, stale-command watchdog and e-stop between the orchestrator
                                and the robot's drivers
memory         memory_node      perception + scene-graph memory; MarkerArray, ops, QueryMemory
orchestrator   orchestrator_    planner, skills and brainstem behind the ``ExecuteTask`` action
               node             server; reads memory by following the memory node's ops
=============  ===============  ==================================================================
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mnemobot.agent.errors import UserError

__all__ = ["NODES", "NodeProcess", "default_params", "run_graph", "send_task"]

EXIT_OK, EXIT_FAILED, EXIT_REJECTED = 0, 1, 2
ACTION_NAME = "/mnemobot/execute_task"
REJECTIONS_TOPIC = "/mnemobot/execute_task/rejected"
"""Latched ``std_msgs/String`` JSON ``{"goal_id": hex, "reason": text}``: a ROS 2 goal response
carries no reason, so the orchestrator says here why it refused a goal."""


@dataclass(frozen=True)
class NodeProcess:
    name: str
    module: str
    sim_only: bool = False
    sim_time: bool = True  # use /clock when the simulator runs (the simulator itself publishes it)


NODES = (
    NodeProcess("sim_robot", "sim_robot", sim_only=True, sim_time=False),
    NodeProcess("robot_bridge", "robot_bridge"),
    NodeProcess("memory", "memory_node"),
    NodeProcess("orchestrator", "orchestrator_node", sim_time=False),  # it keeps the robot's time itself
)
"""The node graph, in start order."""


def default_params(sim: bool) -> Path:
    """The parameter file shipped in ``launch/params`` (``sim.yaml`` or ``robot.yaml``)."""
    ref = resources.files("mnemobot.launch") / "params" / ("sim.yaml" if sim else "robot.yaml")
    return Path(str(ref))


def _command(node: NodeProcess, params: Path, sim: bool) -> list[str]:
    cmd = [sys.executable, "-m", f"mnemobot.ros2.nodes.{node.module}", "--ros-args", "-r", f"__node:={node.name}",
           "--params-file", str(params)]
    if sim and node.sim_time:
        cmd += ["-p", "use_sim_time:=true"]
    return cmd


def _pump(name: str, stream, out) -> None:  # noqa: ANN001 - text streams
    for line in iter(stream.readline, ""):
        out.write(f"[{name}] {line}")
        out.flush()
    stream.close()


def run_graph(sim: bool, params: Path | None = None, only: tuple[str, ...] = (), grace_s: float = 10.0,
              ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """Run the node graph until a node exits, Ctrl-C/SIGTERM, or ``stop`` is set.

    Returns 0 after a requested stop, 1 when a node died on its own (named on stderr).
    """
    params = Path(params) if params is not None else default_params(sim)
    if not params.is_file():
        raise UserError(f"parameter file not found: {params}")
    nodes = [n for n in NODES if (sim or not n.sim_only) and (not only or n.name in only)]
    unknown = set(only) - {n.name for n in NODES}
    if unknown:
        raise UserError(f"unknown node(s): {', '.join(sorted(unknown))}; the graph has "
                        f"{', '.join(n.name for n in NODES)}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # let each child set up its own library path
    procs: dict[str, subprocess.Popen] = {}
    stop = stop or threading.Event()
    previous = {}

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    died: tuple[str, int] | None = None
    try:
        for node in nodes:
            proc = subprocess.Popen(_command(node, params, sim), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env, start_new_session=True)
            procs[node.name] = proc
            threading.Thread(target=_pump, args=(node.name, proc.stdout, sys.stdout), daemon=True).start()
            print(f"mnemobot ros: started {node.name} (pid {proc.pid})", flush=True)
        if ready is not None:
            ready.set()
        while not stop.wait(0.2):
            for name, proc in procs.items():
                code = proc.poll()
                if code is not None:
                    died = (name, code)
                    break
            if died:
                break
    finally:
        _stop_all(procs, grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if died:
        print(f"mnemobot ros: node {died[0]} exited with status {died[1]}; stopped the others", file=sys.stderr)
        return EXIT_FAILED
    print("mnemobot ros: all nodes stopped", flush=True)
    return EXIT_OK


def _stop_all(procs: dict[str, subprocess.Popen], grace_s: float) -> None:
    """SIGINT (rclpy shuts down cleanly), then SIGTERM, then SIGKILL, each after a grace period."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        alive = [p for p in procs.values() if p.poll() is None]
        if not alive:
            return
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        for p in alive:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


# -- the action client -----------------------------------------------------------------------------------
def _render_feedback(fb) -> str:  # noqa: ANN001 - ExecuteTask.Feedback
    pct = f"{100.0 * float(fb.progress):3.0f}%"
    line = f"[{pct}] {fb.event:9s} {fb.skill}"
    if fb.message:
        line += f"  {fb.message}"
    return line


def send_task(instruction: str, task_id: str = "", timeout_s: float = 30.0, action: str = ACTION_NAME,
              result_timeout_s: float = 3600.0, quiet: bool = False, out=sys.stdout) -> int:  # noqa: ANN001
    """Send one ``ExecuteTask`` goal and wait for its result; the exit status of ``ros task``.

    Ctrl-C (or SIGTERM) cancels the goal and waits, at most 10 s each, for the server to accept
    the cancel and for the result. rclpy's own SIGINT handling is off: it would stop the
    executor before the cancel request went out, and the robot would drive on."""
    try:
        import rclpy
        from mnemobot_interfaces.action import ExecuteTask
        from rclpy.action import ActionClient
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String
    except ImportError as e:
        raise ImportError(f"'mnemobot ros' needs ROS 2 (rclpy and mnemobot_interfaces): run scripts/setup.sh, "
                          f"or source a ROS 2 workspace where they are built ({e})") from None
    rclpy.init(args=None, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(f"mnemobot_task_client_{uuid.uuid4().hex[:8]}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    interrupted = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda _s, _f: interrupted.set())
    reasons: dict[str, str] = {}

    def wait(done, seconds: float, interruptible: bool = True) -> bool:  # noqa: ANN001
        """Spin until ``done()``; False after ``seconds``; Ctrl-C raises KeyboardInterrupt."""
        deadline = time.monotonic() + seconds
        while not done():
            if interruptible and interrupted.is_set():
                raise KeyboardInterrupt
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            executor.spin_once(timeout_sec=min(0.1, left))
        return True

    def on_rejected(msg) -> None:  # noqa: ANN001
        try:
            data = json.loads(msg.data)
            reasons[str(data["goal_id"])] = str(data["reason"])
        except (ValueError, KeyError, TypeError):
            pass

    latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, REJECTIONS_TOPIC, on_rejected, latched)
    client = ActionClient(node, ExecuteTask, action)
    goal_handle = None
    try:
        if not wait(client.server_is_ready, timeout_s):
            print(f"mnemobot: error: no ExecuteTask action server on {action} within {timeout_s:g} s "
                  "(is 'mnemobot ros up' running, on the same ROS_DOMAIN_ID?)", file=sys.stderr)
            return EXIT_REJECTED

        def on_feedback(msg) -> None:  # noqa: ANN001
            if not quiet:
                print(_render_feedback(msg.feedback), file=out, flush=True)

        goal = ExecuteTask.Goal(instruction=instruction, task_id=task_id)
        future = client.send_goal_async(goal, feedback_callback=on_feedback)
        if not wait(future.done, timeout_s):
            print(f"mnemobot: error: the action server did not answer the goal within {timeout_s:g} s", file=sys.stderr)
            return EXIT_REJECTED
        goal_handle = future.result()
        if not goal_handle.accepted:
            gid = bytes(goal_handle.goal_id.uuid).hex()
            wait(lambda: gid in reasons, 3.0)
            print(f"mnemobot: error: the goal was rejected: {reasons.get(gid, 'no reason given')}", file=sys.stderr)
            return EXIT_REJECTED
        result_future = goal_handle.get_result_async()
        if not wait(result_future.done, result_timeout_s):
            print(f"mnemobot: error: no result within {result_timeout_s:g} s; cancelling", file=sys.stderr)
            _cancel(wait, goal_handle, result_future)
            return EXIT_FAILED
        return _print_result(result_future.result(), out)
    except KeyboardInterrupt:
        if goal_handle is not None and goal_handle.accepted:
            print("mnemobot: cancelling the task (the robot stops)", file=sys.stderr)
            result = _cancel(wait, goal_handle, goal_handle.get_result_async())
            if result is not None:
                _print_result(result, out)
        return EXIT_FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        executor.shutdown()
        client.destroy()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def _cancel(wait, goal_handle, result_future, timeout_s: float = 10.0):  # noqa: ANN001, ANN202
    """Cancel the goal and wait for the server to accept it and for the result (or None)."""
    fut = goal_handle.cancel_goal_async()
    if not wait(fut.done, timeout_s, interruptible=False):
        print(f"mnemobot: warning: the action server did not answer the cancel within {timeout_s:g} s",
              file=sys.stderr)
        return None
    if not wait(result_future.done, timeout_s, interruptible=False):
        print(f"mnemobot: warning: no result {timeout_s:g} s after the cancel", file=sys.stderr)
        return None
    return result_future.result()


def _print_result(wrapped, out) -> int:  # noqa: ANN001 - GetResult response
    from action_msgs.msg import GoalStatus

    result = wrapped.result
    status = {GoalStatus.STATUS_SUCCEEDED: "succeeded", GoalStatus.STATUS_ABORTED: "aborted",
              GoalStatus.STATUS_CANCELED: "cancelled"}.get(wrapped.status, str(wrapped.status))
    try:
        summary = json.loads(result.summary_json) if result.summary_json else {}
    except ValueError:
        summary = {}
    print("", file=out)
    print(f"result      : {'SUCCESS' if result.success else 'FAILURE'} ({status}"
          f"{'; ' + result.stop_reason if result.stop_reason else ''})", file=out)
    for key, label in (("task", "task"), ("skills_executed", "skills"), ("planner_calls", "planner calls"),
                       ("steps", "control ticks"), ("sim_s", "simulated s"), ("wall_s", "wall s")):
        if key in summary:
            print(f"{label:12s}: {summary[key]}", file=out)
    mem = summary.get("memory")
    if isinstance(mem, dict):
        print(f"memory      : {mem.get('objects', 0)} objects followed, {mem.get('reloads', 0)} reload(s), "
              f"{mem.get('frames_waited', 0)} frames waited for ({mem.get('wait_s', 0)} s)", file=out)
    return EXIT_OK if result.success and wrapped.status == GoalStatus.STATUS_SUCCEEDED else EXIT_FAILED
