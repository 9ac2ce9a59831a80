"""``RosRobot``: the :class:`~mnemobot.control.robot.RobotInterface` of a robot reached over ROS 2 topics.

The orchestrator process drives it exactly like the simulated robot: the
:class:`~mnemobot.control.executor.SkillExecutor` asks its
:class:`~mnemobot.control.controllers.Controller` for a checked :class:`RobotCommand` and calls
:meth:`RosRobot.step`, which publishes the command to ``robot_bridge``'s command topics and waits
for the robot's next ``/joint_states`` (a lockstep simulator steps one control period per command
set; a real robot's joint states arrive at their own rate). :meth:`RosRobot.observe` assembles the
newest camera frame (rgb, depth, camera_info, instance masks and labels of the same stamp) with the
camera pose from TF at the image stamp.

Usage::

    rclpy.init()
    node = rclpy.create_node("orchestrator")
    robot = RosRobot(node)            # spins ``node`` in its own executor thread
    robot.wait_ready(timeout_s=20)    # joint states, odometry and the bridge's command topics
    state = robot.step(RobotCommand(...))
    obs = robot.observe()
    robot.close()

Topics (defaults; see :class:`RosRobotTopics`): publishes ``/mnemobot/cmd/arm``
(trajectory_msgs/JointTrajectory, one point), ``/mnemobot/cmd/gripper`` (std_msgs/Float64, m),
``/mnemobot/cmd/base`` (geometry_msgs/Twist, base frame), ``/mnemobot/cmd/head`` (JointTrajectory
``head_pan_joint``, ``head_tilt_joint``), all reliable keep-last 10; subscribes ``/joint_states``,
``/odom``, ``/tf``, ``/tf_static``, the camera topics of :class:`~mnemobot.ros2.topics.TopicMap`
(reliable by default; ``sensor_best_effort`` for a best-effort driver) and the bridge's status.

Every wait has a timeout and raises :class:`RosRobotTimeout` naming the topic it waited for.

Timing: ``step`` returns the first state newer than the one before the command. Against the lockstep
simulator that is the state after the command's control period, unless the simulator's idle step
(``idle_step_s`` without commands, after a pause of the orchestrator) crossed the command in flight;
then that state is one period older, as states from a real robot's drivers arrive asynchronously.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, String
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mnemobot.control.controllers import command_from_state
from mnemobot.control.robots import mobile_panda_spec
from mnemobot.control.types import RobotCommand, RobotSpec, RobotState
from mnemobot.perception.types import Observation, Pose, Proprioception
from mnemobot.ros2.convert import (
    depth_from_msg,
    instances_from_msg,
    intrinsics_from_msg,
    pose_from_transform,
    rgb_from_msg,
)
from mnemobot.ros2.nodes.common import command_qos, latched_qos, sensor_qos, stamp_s, tf_qos
from mnemobot.ros2.nodes.robot_bridge import BRIDGE_TOPICS
from mnemobot.ros2.nodes.sim_robot import FINGER_JOINTS, HEAD_JOINTS
from mnemobot.ros2.tf import TFBuffer, TFError
from mnemobot.ros2.topics import FRAMES, TopicMap

__all__ = ["RosRobot", "RosRobotError", "RosRobotTimeout", "RosRobotTopics"]

_TM = TopicMap()


class RosRobotError(RuntimeError):
    """The robot's messages cannot be used (missing joints, no transform for a frame...)."""


class RosRobotTimeout(RosRobotError, TimeoutError):
    """A message the robot should have sent did not come in time (the topic is named)."""


@dataclass(frozen=True)
class RosRobotTopics:
    """Topic and frame names :class:`RosRobot` uses (``None``: the robot does not publish it)."""

    arm: str = BRIDGE_TOPICS["arm"]
    base: str = BRIDGE_TOPICS["base"]
    gripper: str = BRIDGE_TOPICS["gripper"]
    head: str = BRIDGE_TOPICS["head"]
    status: str | None = BRIDGE_TOPICS["status"]
    joint_states: str = "/joint_states"
    odom: str = "/odom"
    tf: str = _TM.tf
    tf_static: str | None = _TM.tf_static
    rgb: str = _TM.rgb
    depth: str = _TM.depth
    camera_info: str = _TM.camera_info
    instances: str | None = _TM.instances
    labels: str | None = _TM.labels
    world_frame: str = FRAMES["world"]
    camera_frame: str | None = None
    """Overrides the images' ``header.frame_id`` for the TF lookup of the camera pose."""


class RosRobot:
    """A mobile manipulator behind ``robot_bridge``; see the module docstring.

    ``node`` is the caller's rclpy node; with ``spin=True`` (default) it is spun by an executor in a
    daemon thread of this object (``close()`` stops it), otherwise the caller must spin it.
    ``timeout_s`` bounds every wait for the robot (wall seconds). ``camera=False`` subscribes the
    camera topics only on the first :meth:`observe` (a process whose memory perceives elsewhere then
    does not deserialize every image).
    """

    def __init__(self, node: Node, spec: RobotSpec | None = None, topics: RosRobotTopics | None = None, *,
                 timeout_s: float = 5.0, sensor_best_effort: bool = False, spin: bool = True,
                 camera: bool = True) -> None:
        self.node = node
        self.spec = spec or mobile_panda_spec()
        self.topics = T = topics or RosRobotTopics()
        self.timeout_s = float(timeout_s)
        self._cond = threading.Condition()
        self._js: JointState | None = None
        self._js_t = -1.0
        self._odom: Odometry | None = None
        self._odom_t = -1.0
        self._tf = TFBuffer(max_gap=0.5, history_s=10.0)
        self._tf_t = -1.0
        self._rgb: Image | None = None
        self._frames: dict[str, OrderedDict[float, Any]] = {"depth": OrderedDict(), "camera_info": OrderedDict(),
                                                            "instances": OrderedDict()}
        self._instances_seen = False
        self._labels: dict[int, str] = {}
        self.bridge_status: dict[str, Any] = {}
        """The latest status of ``robot_bridge`` (counts, ``estop``), ``{}`` before the first."""
        self._odom_in_world_warned = False
        self.steps = 0
        self.step_wait_s = 0.0
        """Commands sent by :meth:`step` and the wall time spent waiting for the state after them."""

        cq = command_qos()
        self._pub_arm = node.create_publisher(JointTrajectory, T.arm, cq)
        self._pub_base = node.create_publisher(Twist, T.base, cq)
        self._pub_gripper = node.create_publisher(Float64, T.gripper, cq)
        self._pub_head = node.create_publisher(JointTrajectory, T.head, cq)
        sq = sensor_qos(best_effort=sensor_best_effort)
        sub = node.create_subscription
        self._subs = [
            sub(JointState, T.joint_states, self._on_joint_states, sq),
            sub(Odometry, T.odom, self._on_odom, command_qos()),
            sub(TFMessage, T.tf, lambda m: self._on_tf(m, False), tf_qos()),
        ]
        if T.tf_static:
            self._subs.append(sub(TFMessage, T.tf_static, lambda m: self._on_tf(m, True), latched_qos(depth=10)))
        self._sq = sq
        self._camera_subscribed = False
        if camera:
            self._subscribe_camera()
        if T.status:
            self._subs.append(sub(String, T.status, self._on_status, latched_qos()))
        self._executor: SingleThreadedExecutor | None = None
        self._thread: threading.Thread | None = None
        if spin:
            self._executor = SingleThreadedExecutor(context=node.context)
            self._executor.add_node(node)
            self._thread = threading.Thread(target=self._spin, name="ros_robot_spin", daemon=True)
            self._thread.start()

    def _subscribe_camera(self) -> None:
        if self._camera_subscribed:
            return
        self._camera_subscribed = True
        T, sq, sub = self.topics, self._sq, self.node.create_subscription
        self._subs += [
            sub(Image, T.rgb, self._on_rgb, sq),
            sub(Image, T.depth, lambda m: self._on_frame_part("depth", m), sq),
            sub(CameraInfo, T.camera_info, lambda m: self._on_frame_part("camera_info", m), sq),
        ]
        if T.instances:
            self._subs.append(sub(Image, T.instances, lambda m: self._on_frame_part("instances", m), sq))
        if T.labels:
            self._subs.append(sub(String, T.labels, self._on_labels, latched_qos()))

    # -- executor --------------------------------------------------------------------------------------
    def _spin(self) -> None:
        ex = self._executor
        if ex is None:
            return
        try:
            ex.spin()
        except ExternalShutdownException:
            pass

    def close(self) -> None:
        """Stop the executor thread (the node stays the caller's) and remove this robot's endpoints."""
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=2.0)
            self._executor = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for s in self._subs:
            self.node.destroy_subscription(s)
        for p in (self._pub_arm, self._pub_base, self._pub_gripper, self._pub_head):
            self.node.destroy_publisher(p)
        self._subs = []

    def __enter__(self) -> RosRobot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- callbacks (executor thread) -------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        with self._cond:
            self._js, self._js_t = msg, stamp_s(msg.header.stamp)
            self._cond.notify_all()

    def _on_odom(self, msg: Odometry) -> None:
        with self._cond:
            self._odom, self._odom_t = msg, stamp_s(msg.header.stamp)
            self._cond.notify_all()

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        with self._cond:
            for tr in msg.transforms:
                t = stamp_s(tr.header.stamp)
                try:
                    self._tf.add(tr.header.frame_id, tr.child_frame_id, t, pose_from_transform(tr.transform),
                                 static=static)
                except (TFError, ValueError) as e:
                    self.node.get_logger().warning(f"ignored transform {tr.header.frame_id} -> "
                                                   f"{tr.child_frame_id}: {e}", throttle_duration_sec=5.0)
                    continue
                if not static:
                    self._tf_t = max(self._tf_t, t)
            self._cond.notify_all()

    def _on_rgb(self, msg: Image) -> None:
        with self._cond:
            self._rgb = msg
            self._cond.notify_all()

    def _on_frame_part(self, kind: str, msg: Any) -> None:
        with self._cond:
            parts = self._frames[kind]
            parts[stamp_s(msg.header.stamp)] = msg
            while len(parts) > 10:
                parts.popitem(last=False)
            if kind == "instances":
                self._instances_seen = True
            self._cond.notify_all()

    def _on_labels(self, msg: String) -> None:
        try:
            labels = {int(k): str(v) for k, v in json.loads(msg.data).items()}
        except (ValueError, AttributeError) as e:
            self.node.get_logger().warning(f"ignored labels that are not a JSON object of id -> label: {e}")
            return
        with self._cond:
            self._labels.update(labels)
            self._cond.notify_all()

    def _on_status(self, msg: String) -> None:
        try:
            status = json.loads(msg.data)
        except ValueError:
            return
        with self._cond:
            self.bridge_status = status if isinstance(status, dict) else {}

    # -- waiting ---------------------------------------------------------------------------------------
    def _wait(self, ready: Callable[[], bool], what: str, timeout_s: float | None = None) -> None:
        """Wait (holding ``_cond``) until ``ready()``; raise :class:`RosRobotTimeout` naming ``what``."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if not self._cond.wait_for(ready, timeout=timeout):
            raise RosRobotTimeout(f"RosRobot: no {what} within {timeout:g} s (are the robot driver and "
                                  f"robot_bridge running, on this ROS_DOMAIN_ID?)")

    def wait_ready(self, timeout_s: float | None = None) -> RobotState:
        """Wait for joint states, odometry and a subscriber on each command topic; return the state."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        T = self.topics
        for pub, topic in ((self._pub_arm, T.arm), (self._pub_base, T.base), (self._pub_gripper, T.gripper),
                           (self._pub_head, T.head)):
            while pub.get_subscription_count() == 0:
                if time.monotonic() > deadline:
                    raise RosRobotTimeout(f"RosRobot: nobody subscribes {topic} after {timeout:g} s "
                                          "(is robot_bridge running, on this ROS_DOMAIN_ID?)")
                time.sleep(0.02)
        with self._cond:
            self._wait(lambda: self._js is not None and self._odom is not None,
                       f"{T.joint_states} and {T.odom}", max(0.0, deadline - time.monotonic()))
        return self.read()

    # -- RobotInterface --------------------------------------------------------------------------------
    def read(self) -> RobotState:
        """The latest state: joints from ``/joint_states`` (its stamp is ``t``), base from ``/odom``
        (put in the world frame through TF's ``world -> odom`` when TF has it)."""
        with self._cond:
            self._wait(lambda: self._js is not None and self._odom is not None,
                       f"{self.topics.joint_states} and {self.topics.odom}")
            return self._state()

    def _state(self) -> RobotState:
        js, odom = self._js, self._odom
        if js is None or odom is None:
            raise RosRobotError("no joint states or odometry yet")
        pos = dict(zip(js.name, js.position, strict=False))
        vel = dict(zip(js.name, js.velocity, strict=False)) if len(js.velocity) == len(js.name) else {}
        s = self.spec
        needed = [*s.arm_joints, *FINGER_JOINTS, *HEAD_JOINTS]
        missing = [n for n in needed if n not in pos]
        if missing:
            raise RosRobotError(f"{self.topics.joint_states} lacks joints {missing}")
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        base = Pose(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))
        odom_frame = odom.header.frame_id.lstrip("/")
        world = self.topics.world_frame
        if odom_frame and odom_frame != world:
            try:
                base = self._tf.lookup(world, odom_frame, self._odom_t) @ base
            except TFError as e:
                if not self._odom_in_world_warned:
                    self._odom_in_world_warned = True
                    self.node.get_logger().warning(f"no TF {world} -> {odom_frame} ({e}); using the odometry "
                                                   f"pose as the world pose")
        yaw = _yaw(base.quaternion)
        tw = odom.twist.twist
        return Proprioception(
            t=self._js_t,
            arm_q=np.array([pos[n] for n in s.arm_joints], dtype=float),
            arm_dq=np.array([vel.get(n, 0.0) for n in s.arm_joints], dtype=float),
            gripper_width=float(pos[FINGER_JOINTS[0]] + pos[FINGER_JOINTS[1]]),
            base_pose=np.array([base.position[0], base.position[1], yaw], dtype=float),
            base_twist=np.array([tw.linear.x, tw.linear.y, tw.angular.z], dtype=float),
            head=np.array([pos[n] for n in HEAD_JOINTS], dtype=float),
        )

    def publish(self, cmd: RobotCommand) -> None:
        """Send ``cmd`` to the bridge (gripper, head, base, then arm) without waiting."""
        s = self.spec
        self._pub_gripper.publish(Float64(data=float(cmd.gripper_width)))
        self._pub_head.publish(JointTrajectory(joint_names=list(HEAD_JOINTS), points=[
            JointTrajectoryPoint(positions=[float(v) for v in cmd.head])]))
        vx, vy, wz = (float(v) for v in cmd.base_twist)
        tw = Twist()
        tw.linear.x, tw.linear.y, tw.angular.z = vx, vy, wz
        self._pub_base.publish(tw)
        self._pub_arm.publish(JointTrajectory(joint_names=list(s.arm_joints), points=[
            JointTrajectoryPoint(positions=[float(v) for v in cmd.arm_q])]))

    def step(self, cmd: RobotCommand) -> RobotState:
        """Publish ``cmd`` and return the first state newer than the one before it (odometry at least
        as new); raises :class:`RosRobotTimeout` after ``timeout_s``."""
        with self._cond:
            before = self._js_t
        t0 = time.perf_counter()
        self.publish(cmd)
        T = self.topics
        with self._cond:
            self._wait(lambda: self._js_t > before and self._odom_t >= self._js_t - 1e-9,
                       f"new {T.joint_states} and {T.odom} after a command on {T.arm}")
            state = self._state()
        self.steps += 1
        self.step_wait_s += time.perf_counter() - t0
        return state

    def hold(self) -> RobotState:
        """Stop the base and hold arm, gripper and head where they are measured, for one step."""
        return self.step(command_from_state(self.read(), self.spec))

    def observe(self) -> Observation:
        """The newest complete camera frame: rgb with depth and camera_info (and, when the robot
        publishes masks, instances and a label for each id) of the same stamp, the camera pose from
        TF at that stamp and the state at (or just after) it."""
        T = self.topics
        self._subscribe_camera()
        with self._cond:
            self._wait(lambda: self._rgb is not None, T.rgb)
            rgb = self._rgb
            if rgb is None:
                raise RosRobotError("no image")
            t = stamp_s(rgb.header.stamp)
            want = ["depth", "camera_info"] + (["instances"] if self._instances_seen else [])
            self._wait(lambda: all(t in self._frames[k] for k in want),
                       f"{', '.join(getattr(T, k) for k in want)} stamped {t:.3f} (the stamp of the newest {T.rgb})")
            depth_msg, info_msg = self._frames["depth"][t], self._frames["camera_info"][t]
            inst_msg = self._frames["instances"].get(t) if self._instances_seen else None
            frame = (T.camera_frame or rgb.header.frame_id).lstrip("/")
            self._wait(lambda: self._tf_t >= t - 1e-9, f"{T.tf} at {t:.3f}")
            try:
                camera_pose = self._tf.lookup(T.world_frame, frame, t)
            except TFError as e:
                raise RosRobotError(f"no camera pose for frame {frame!r} at {t:.3f}: {e}") from None
            instances = instances_from_msg(inst_msg) if inst_msg is not None else None
            labels: dict[int, str] = {}
            if instances is not None:
                ids = [int(i) for i in np.unique(instances) if i != 0]
                if T.labels:
                    self._wait(lambda: all(i in self._labels for i in ids), f"{T.labels} for instance ids {ids}")
                labels = {i: self._labels[i] for i in ids if i in self._labels}
                instances = np.where(np.isin(instances, list(labels)), instances, 0).astype(np.int32)
            state = self._state()
        return Observation(timestamp=t, rgb=rgb_from_msg(rgb), depth=depth_from_msg(depth_msg),
                          intrinsics=intrinsics_from_msg(info_msg), camera_pose=camera_pose,
                          instances=instances, labels=labels, proprio=state)


def _yaw(q: np.ndarray) -> float:
    x, y, z, w = (float(v) for v in q)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))
