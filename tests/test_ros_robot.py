"""The robot side of the ROS 2 graph over real DDS: ``sim_robot`` and ``robot_bridge`` as processes,
a :class:`RosRobot` in this process; the bridge's limit checks, watchdog and e-stop.

All traffic stays on loopback in a ROS domain of its own; every wait has a timeout; the processes are
shared by the module's tests and always stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs")
pytest.importorskip("pybullet")

import rclpy  # noqa: E402
from geometry_msgs.msg import Twist  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

import mnemobot  # noqa: E402
from mnemobot.control.controllers import command_from_state  # noqa: E402
from mnemobot.control.types import RobotCommand  # noqa: E402
from mnemobot.ros2.nodes.common import latched_qos, stamp_s  # noqa: E402
from mnemobot.ros2.nodes.robot_bridge import BRIDGE_TOPICS  # noqa: E402
from mnemobot.ros2.nodes.sim_robot import DRIVER_TOPICS  # noqa: E402
from mnemobot.ros2.ros_robot import RosRobot, RosRobotTimeout, RosRobotTopics  # noqa: E402

pytestmark = pytest.mark.slow

WATCHDOG_S = 0.5
DT = 0.05


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Graph:
    robot: RosRobot
    node: Node
    env: dict[str, str]
    logs: Path

    def status(self) -> dict:
        return dict(self.robot.bridge_status)


def _spawn(module: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = log.open("wb")
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *args], env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Graph]:
    logs = tmp_path_factory.mktemp("ros_graph")
    root = str(Path(mnemobot.__file__).resolve().parent.parent)
    domain = str(100 + os.getpid() % 100)
    env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    os.environ.update(ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    procs = {
        "sim_robot": _spawn("mnemobot.ros2.nodes.sim_robot", ["-p", "task:=fetch", "-p", "seed:=0"], env,
                            logs / "sim_robot.log"),
        "robot_bridge": _spawn("mnemobot.ros2.nodes.robot_bridge",
                               ["-p", "use_sim_time:=true", "-p", f"watchdog_s:={WATCHDOG_S}"], env,
                               logs / "robot_bridge.log"),
    }
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("test_orchestrator", context=ctx)
    robot = RosRobot(node, timeout_s=5.0)
    try:
        try:
            robot.wait_ready(timeout_s=45.0)
        except RosRobotTimeout as e:
            tails = {n: (logs / f"{n}.log").read_text(errors="replace")[-2000:] for n in procs}
            raise AssertionError(f"{e}\n{tails}") from None
        yield Graph(robot, node, env, logs)
    finally:
        robot.close()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        codes = {n: _stop(p) for n, p in procs.items()}
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    # Shut down by SIGTERM: a clean exit, no traceback.
    assert codes == {"sim_robot": 0, "robot_bridge": 0}, codes
    for n in procs:
        assert "Traceback" not in (logs / f"{n}.log").read_text(errors="replace"), n


def _drive(robot: RosRobot, twist: tuple[float, float, float], steps: int) -> list:
    state = robot.read()
    states = []
    for _ in range(steps):
        cmd = command_from_state(state, robot.spec)
        state = robot.step(RobotCommand(cmd.arm_q, cmd.gripper_width, np.array(twist, float), cmd.head))
        states.append(state)
    return states


def test_drive_arm_and_observe(graph: Graph) -> None:
    robot = graph.robot
    s0 = robot.hold()
    states = _drive(robot, (0.3, 0.0, 0.0), 20)  # 1 s of simulated time forward
    sn = states[-1]
    # Lockstep: one control period per command (more only when an idle step crossed a command).
    assert sn.t - s0.t >= 19 * DT - 1e-9
    heading = np.array([np.cos(s0.base_pose[2]), np.sin(s0.base_pose[2])])
    moved = float(np.dot(sn.base_pose[:2] - s0.base_pose[:2], heading))
    assert moved / (sn.t - s0.t) == pytest.approx(0.3, abs=0.03)  # the commanded speed, straight ahead
    d = sn.base_pose[:2] - s0.base_pose[:2]
    assert abs(float(heading[0] * d[1] - heading[1] * d[0])) < 0.01  # no sideways drift
    assert sn.base_twist[0] == pytest.approx(0.3, abs=1e-6)
    s1 = robot.hold()
    assert np.allclose(robot.step(command_from_state(s1, robot.spec)).base_twist, 0.0)

    # A small arm move: joint 1 by +0.1 rad in five steps (0.4 rad/s), then held.
    q = s1.arm_q.copy()
    cmd = command_from_state(s1, robot.spec)
    for k in range(1, 6):
        target = q.copy()
        target[0] += 0.02 * k
        state = robot.step(RobotCommand(target, cmd.gripper_width, np.zeros(3), cmd.head))
    for _ in range(10):
        state = robot.step(RobotCommand(target, cmd.gripper_width, np.zeros(3), cmd.head))
    assert state.arm_q[0] == pytest.approx(q[0] + 0.1, abs=0.01)
    assert np.allclose(state.arm_q[1:], q[1:], atol=0.02)

    # Head pan +0.2 rad (1 rad/s) and the gripper half closed, then held: the camera's TF follows the head.
    head = state.head.copy()
    for k in range(1, 5):
        state = robot.step(RobotCommand(target, 0.04, np.zeros(3), head + [0.05 * k, 0.0]))
    for _ in range(10):
        state = robot.step(RobotCommand(target, 0.04, np.zeros(3), head + [0.2, 0.0]))
    assert state.head[0] == pytest.approx(head[0] + 0.2, abs=1e-3)
    assert state.gripper_width == pytest.approx(0.04, abs=0.005)

    obs = robot.observe()
    obs.validate()
    assert obs.labels and obs.rgb.shape == (240, 320, 3)
    assert state.t - 10 * DT <= obs.timestamp <= state.t + 1e-9
    # The camera pose from TF sits on the head mast above the base, looking along base yaw + pan.
    base = state.base_pose
    assert np.linalg.norm(obs.camera_pose.position[:2] - base[:2]) < 0.3
    assert obs.camera_pose.position[2] == pytest.approx(robot.spec.head_mount.position[2], abs=1e-6)
    axis = obs.camera_pose.rotation[:, 2]  # optical z: forward
    assert np.arctan2(axis[1], axis[0]) == pytest.approx(base[2] + head[0] + 0.2, abs=1e-3)
    robot.step(RobotCommand(target, 0.08, np.zeros(3), head + [0.2, 0.0]))


def test_controller_moves_the_hand_over_ros(graph: Graph) -> None:
    """The brainstem as skills use it (IK, safety guard) drives the ROS robot like the simulated one."""
    from mnemobot.control.controllers import Controller
    from mnemobot.control.types import ControlTarget
    from mnemobot.perception.types import Pose

    robot = graph.robot
    controller = Controller(robot.spec)
    state = robot.hold()
    controller.reset(state)
    start = controller.ee_pose(state)
    goal = Pose(start.position + [0.0, 0.0, -0.04], start.quaternion)
    for k in range(1, 9):  # 4 cm down in 8 ticks (0.1 m/s), then held
        p = Pose(start.position + [0.0, 0.0, -0.005 * k], start.quaternion)
        state = robot.step(controller.command(ControlTarget(ee_pose=p), state))
    for _ in range(8):
        state = robot.step(controller.command(ControlTarget(ee_pose=goal), state))
    reached = controller.ee_pose(state)
    assert np.linalg.norm(reached.position - goal.position) < 0.01
    state = robot.step(controller.hold(state))
    assert np.allclose(state.base_twist, 0.0)


def test_out_of_limit_arm_command_is_refused(graph: Graph) -> None:
    robot, node = graph.robot, graph.node
    got: list[JointTrajectory] = []
    sub = node.create_subscription(JointTrajectory, DRIVER_TOPICS["arm"], got.append, 10)
    try:
        wait_until(lambda: sub.get_publisher_count() >= 1, 10, "the bridge publishing on the driver topic")
        state = robot.hold()
        wait_until(lambda: len(got) >= 1, 5, "a legal arm command reaching the driver topic")
        refused0 = graph.status()["refused"]["arm"]
        got.clear()

        cmd = command_from_state(state, robot.spec)
        beyond = cmd.arm_q.copy()
        beyond[3] = 0.5  # joint 4's upper limit is -0.0698 rad
        robot.publish(RobotCommand(beyond, cmd.gripper_width, np.zeros(3), cmd.head))
        jump = cmd.arm_q.copy()
        jump[0] += 0.5  # 10 rad/s over one control period: beyond 2.175 rad/s
        robot.publish(RobotCommand(jump, cmd.gripper_width, np.zeros(3), cmd.head))
        wait_until(lambda: graph.status()["refused"]["arm"] >= refused0 + 2, 5, "the bridge refusing both")
        status = graph.status()
        assert status["refused_by"].get("JointLimitError", 0) >= 1
        assert status["refused_by"].get("VelocityLimitError", 0) >= 1

        # A legal command sent after them arrives; the refused ones never did (one ordered reliable stream).
        after = robot.step(cmd)
        wait_until(lambda: any(np.allclose(m.points[0].positions, cmd.arm_q) for m in got), 5,
                   "the legal arm command after the refused ones")
        for m in got:
            pos = np.asarray(m.points[0].positions)
            assert pos[3] < -0.06 and abs(pos[0] - cmd.arm_q[0]) < 0.2, pos
        assert after.arm_q[3] < -0.06
    finally:
        node.destroy_subscription(sub)


def test_watchdog_stops_base_when_commander_dies(graph: Graph) -> None:
    robot, node = graph.robot, graph.node
    robot.hold()
    odom: list[tuple[float, float]] = []
    forwarded: list[float] = []  # sim time (newest odometry stamp) when the bridge forwarded a moving twist
    sub = node.create_subscription(Odometry, "/odom", lambda m: odom.append(
        (stamp_s(m.header.stamp), float(m.twist.twist.linear.x))), 50)
    sub_cmd = node.create_subscription(Twist, DRIVER_TOPICS["base"], lambda m: forwarded.append(
        odom[-1][0] if odom and m.linear.x != 0.0 else -1.0), 50)
    commander = (
        "import rclpy, time\n"
        "from geometry_msgs.msg import Twist\n"
        "rclpy.init(); n = rclpy.create_node('commander')\n"
        f"p = n.create_publisher(Twist, {BRIDGE_TOPICS['base']!r}, 10)\n"
        "t = Twist(); t.linear.x = -0.3\n"  # backwards: the earlier tests drove forwards
        "while True:\n"
        "    p.publish(t); time.sleep(0.05)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", commander], env=graph.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: sum(1 for _, vx in odom[-5:] if vx < -0.29) >= 5, 20, "the commander driving the base")
        stops0 = graph.status().get("watchdog_stops", 0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        t_kill = odom[-1][0]
        wait_until(lambda: any(t > t_kill and vx == 0.0 for t, vx in odom), 10, "the base to stop")
        wait_until(lambda: odom[-1][0] > t_kill + WATCHDOG_S + 0.5, 10, "simulated time to go on")
        last_moving = max(t for t, vx in odom if vx != 0.0)
        last_cmd = max(forwarded)
        # The base moves for at most WATCHDOG_S of simulated time after the last command the bridge passed on
        # (+ one control period: the two stamps come from different topics), then stays stopped; the
        # commands still in flight when the commander died add at most a few periods to that.
        assert last_moving - last_cmd <= WATCHDOG_S + DT + 1e-6, (last_cmd, last_moving)
        assert last_moving - t_kill <= WATCHDOG_S + 0.25, (t_kill, last_moving)
        assert all(vx == 0.0 for t, vx in odom if t > last_moving)
        wait_until(lambda: graph.status().get("watchdog_stops", 0) > stops0, 5, "the bridge counting the stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        node.destroy_subscription(sub)
        node.destroy_subscription(sub_cmd)


def test_estop_latches_until_reset(graph: Graph) -> None:
    robot, node = graph.robot, graph.node
    estop = node.create_publisher(Bool, BRIDGE_TOPICS["estop"], latched_qos())
    reset = node.create_client(Trigger, BRIDGE_TOPICS["estop_reset"])
    try:
        assert reset.wait_for_service(timeout_sec=10)
        _drive(robot, (0.3, 0.0, 0.0), 5)
        assert robot.read().base_twist[0] == pytest.approx(0.3)
        refused0 = sum(graph.status()["refused"].values())
        estop.publish(Bool(data=True))
        wait_until(lambda: graph.status().get("estop") is True, 5, "the e-stop to engage")
        robot.step(command_from_state(robot.read(), robot.spec))  # let the stop reach the simulator
        stopped = robot.read()
        after = _drive(robot, (0.3, 0.0, 0.0), 6)  # refused: the simulator idles on with a zero twist
        assert all(np.allclose(s.base_twist, 0.0) for s in after)
        assert np.allclose(after[-1].base_pose, stopped.base_pose, atol=1e-6)
        wait_until(lambda: sum(graph.status()["refused"].values()) >= refused0 + 24, 5, "refusals counted")
        estop.publish(Bool(data=False))  # does not release it
        time.sleep(0.2)
        assert graph.status()["estop"] is True

        future = reset.call_async(Trigger.Request())
        wait_until(future.done, 5, "the reset service")
        assert future.result().success
        wait_until(lambda: graph.status().get("estop") is False, 5, "the e-stop to release")
        moving = _drive(robot, (0.3, 0.0, 0.0), 4)
        assert moving[-1].base_twist[0] == pytest.approx(0.3)
        robot.hold()
    finally:
        node.destroy_publisher(estop)
        node.destroy_client(reset)


def test_wait_timeout_names_the_topic(graph: Graph) -> None:
    quiet = RosRobot(graph.node, topics=RosRobotTopics(joint_states="/nobody/joint_states"), timeout_s=0.3,
                     spin=False)  # the node is already spun by the module's robot
    try:
        t0 = time.monotonic()
        with pytest.raises(RosRobotTimeout, match="/nobody/joint_states"):
            quiet.read()
        assert time.monotonic() - t0 < 2.0
    finally:
        quiet.close()


def test_bad_parameter_is_a_one_line_error(graph: Graph) -> None:
    done = subprocess.run([sys.executable, "-m", "mnemobot.ros2.nodes.sim_robot", "--ros-args", "-p", "task:=nope"],
                          env=graph.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown task family 'nope'" in done.stderr and "Traceback" not in done.stderr
