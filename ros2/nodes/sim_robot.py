"""``sim_robot``: the pybullet household (:class:`~mnemobot.sim.env.HouseholdEnv`) as a ROS 2 robot.

Run::

    python -m mnemobot.ros2.nodes.sim_robot --ros-args -p task:=fetch -p seed:=0 -p sensor_profile:=ideal

It plays the robot's drivers: it publishes what a real mobile manipulator's drivers publish and
takes the commands that ros2_control controllers would take. Every topic and frame name is a
parameter (``<role>_topic``, ``<role>_frame``); the defaults are those of
:class:`mnemobot.ros2.topics.TopicMap` and :data:`~mnemobot.ros2.topics.MNEMOBOT_TOPICS`, so live
topics and recorded bags (:mod:`mnemobot.ros2.record`) agree. QoS profiles: :mod:`.common`.

Published (all stamps are simulated time):

==============================================  ==============================  ======================
topic (default)                                 type, frame                     QoS
==============================================  ==============================  ======================
``/clock``                                      rosgraph_msgs/Clock             command (reliable 10)
``/joint_states``                               sensor_msgs/JointState: 7 arm,  sensor
                                                2 finger (width/2 each), head
                                                pan, head tilt (rad, m)
``/odom``                                       nav_msgs/Odometry, ``odom`` ->  command
                                                ``base_link``: the believed
                                                (odometry) pose, twist in base
``/tf``                                         tf2_msgs/TFMessage: ``map`` ->  tf (reliable 100)
                                                ``odom`` (identity: odometry
                                                starts at the map's start pose),
                                                ``odom`` -> ``base_link``,
                                                ``base_link`` -> ``camera_link``
                                                (moves with head pan/tilt)
``/tf_static``                                  ``camera_link`` ->              latched
                                                ``camera_color_optical_frame``
``/camera/color/image_raw``                     sensor_msgs/Image rgb8,         sensor (reliable 5;
                                                optical frame                   ``sensor_best_effort``)
``/camera/aligned_depth_to_color/image_raw``    Image 32FC1 metres (0 = none)   sensor
``/camera/color/camera_info``                   sensor_msgs/CameraInfo          sensor
``/camera/instances/image_raw``                 Image 16UC1 instance ids        sensor
                                                (0 = background)
``/camera/instances/labels``                    std_msgs/String JSON            latched
                                                ``{"id": "label"}`` (all seen
                                                so far; re-sent on change)
``/mnemobot/site_map``                          String JSON ``{"site_map":      latched
                                                {...}, "static_labels": [...],
                                                "object_classes": [...]}``
``/mnemobot/instruction``                       String: the task's instruction  latched
``/mnemobot/sensor_profile``                    String JSON (SensorModel)       latched
``/mnemobot/sim/score`` (service)               std_srvs/Trigger: the task      services default
                                                holds on simulator truth
                                                (scoring only)
==============================================  ==============================  ======================

Subscribed (driver command topics; QoS command, reliable keep-last 10):

==================================  ==============================================================
``/arm_controller/joint_trajectory``  trajectory_msgs/JointTrajectory: the arm joints (names; empty
                                      = the spec's order); the *first* point's positions are the
                                      target from the next control period on
``/cmd_vel``                          geometry_msgs/Twist in ``base_link``: linear.x, linear.y (m/s),
                                      angular.z (rad/s); held until the next one
``/gripper_controller/command``       std_msgs/Float64: finger opening target in metres (0..0.08)
``/head_controller/joint_trajectory`` JointTrajectory for ``head_pan_joint``/``head_tilt_joint``
                                      (first point's positions, rad; tilt > 0 looks down)
==================================  ==============================================================

Targets outside the robot's joint/gripper/head ranges, non-finite values and malformed messages
are refused (a throttled warning), as hardware controllers refuse them.

Stepping (lockstep): the simulation advances one control period (``spec.control_dt``) when a
command set has arrived: all four command kinds, or whatever came within ``gather_s`` wall seconds
of the first one. With no command for ``idle_step_s`` wall seconds it steps anyway with the last
targets and the last commanded base twist, so simulated time flows and a watchdog downstream
(``robot_bridge``) can stop the base. A camera frame is rendered every ``camera_period_ticks``
control periods of simulated time (default 4 = 5 Hz) and once at start.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, String
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import JointTrajectory

from mnemobot.control.types import RobotCommand
from mnemobot.perception.types import Observation, Pose
from mnemobot.ros2.convert import OPTICAL_IN_LINK
from mnemobot.ros2.nodes.common import (
    NodeConfigError,
    camera_info_msg,
    command_qos,
    declare,
    header,
    image_msg,
    joint_state_msg,
    latched_qos,
    run_node,
    sensor_qos,
    stamp,
    tf_qos,
    trajectory_positions,
    transform_msg,
)
from mnemobot.ros2.topics import FRAMES, MNEMOBOT_TOPICS, TopicMap

__all__ = ["FINGER_JOINTS", "HEAD_JOINTS", "DRIVER_TOPICS", "SimRobotNode", "joint_names", "main"]

FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")
HEAD_JOINTS = ("head_pan_joint", "head_tilt_joint")

DRIVER_TOPICS = {
    "arm": "/arm_controller/joint_trajectory",
    "base": "/cmd_vel",
    "gripper": "/gripper_controller/command",
    "head": "/head_controller/joint_trajectory",
}
"""Default driver command topics (what ros2_control controllers of a real robot would take)."""

_KINDS = frozenset(DRIVER_TOPICS)


def joint_names(arm_joints: Sequence[str]) -> list[str]:
    """``/joint_states`` order: arm joints, the two fingers, head pan and tilt (as bags record them)."""
    return [*arm_joints, *FINGER_JOINTS, *HEAD_JOINTS]


class CommandRefused(ValueError):
    """A driver command that cannot be executed (malformed, non-finite or outside the hardware range)."""


def trajectory_target(msg: JointTrajectory, names: Sequence[str], current: np.ndarray,
                      lower: np.ndarray, upper: np.ndarray, what: str) -> np.ndarray:
    """The first point of ``msg`` as targets for joints ``names`` (joints it omits keep ``current``);
    raises :class:`CommandRefused` naming the problem."""
    q = trajectory_positions(msg, names, current, what, CommandRefused)
    bad = [(names[i], q[i], lower[i], upper[i]) for i in range(len(q)) if not lower[i] - 1e-6 <= q[i] <= upper[i] + 1e-6]
    if bad:
        raise CommandRefused(f"{what} target outside the joint range: " + "; ".join(
            f"{n} = {v:.4f} not in [{lo:.4f}, {hi:.4f}]" for n, v, lo, hi in bad))
    return q


class SimRobotNode(Node):
    """The simulated robot's drivers; see the module docstring for topics, QoS and stepping."""

    def __init__(self) -> None:
        super().__init__("sim_robot")
        p = self._params()
        from mnemobot.sim.env import EnvConfig, HouseholdEnv

        try:
            self.env = HouseholdEnv(EnvConfig(task=p["task"], sensor_profile=p["sensor_profile"],
                                              width=p["width"], height=p["height"]))
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise NodeConfigError(f"sim_robot: cannot build the simulation: {e}") from None
        self.env.reset(seed=p["seed"])
        self.robot = self.env.robot
        self.spec = self.robot.spec
        self.names = joint_names(self.spec.arm_joints)
        state = self.robot.read()
        self._arm = state.arm_q.copy()
        self._gripper = float(np.clip(state.gripper_width, self.spec.gripper_min, self.spec.gripper_max))
        self._twist = np.zeros(3)
        self._head = state.head.copy()
        self._pending: set[str] = set()
        self._first_pending = 0.0
        self._last_step_wall = time.monotonic()
        self.ticks = 0
        self.idle_steps = 0
        self.partial_steps = 0
        """Steps taken after ``gather_s`` with part of a command set (a sender of fewer kinds, or a late one)."""
        """Steps taken with no command for ``idle_step_s`` (the orchestrator paused or is gone)."""
        self.refused = dict.fromkeys(sorted(_KINDS), 0)
        self._labels: dict[int, str] = {}

        T = self.topics
        sq = sensor_qos(best_effort=p["sensor_best_effort"])
        self._pub_clock = self.create_publisher(Clock, T["clock"], command_qos())
        self._pub_joints = self.create_publisher(JointState, T["joint_states"], sq)
        self._pub_odom = self.create_publisher(Odometry, T["odom"], command_qos())
        self._pub_tf = self.create_publisher(TFMessage, T["tf"], tf_qos())
        self._pub_tf_static = self.create_publisher(TFMessage, T["tf_static"], latched_qos())
        self._pub_rgb = self.create_publisher(Image, T["rgb"], sq)
        self._pub_depth = self.create_publisher(Image, T["depth"], sq)
        self._pub_info = self.create_publisher(CameraInfo, T["camera_info"], sq)
        self._pub_instances = self.create_publisher(Image, T["instances"], sq)
        self._pub_labels = self.create_publisher(String, T["labels"], latched_qos())
        self._pub_site = self.create_publisher(String, T["site_map"], latched_qos())
        self._pub_instruction = self.create_publisher(String, T["instruction"], latched_qos())
        self._pub_sensor = self.create_publisher(String, T["sensor_profile"], latched_qos())
        from std_srvs.srv import Trigger

        self.create_service(Trigger, T["score_service"], self._on_score)
        cq = command_qos()
        self.create_subscription(JointTrajectory, T["arm_command"], self._on_arm, cq)
        self.create_subscription(Twist, T["base_command"], self._on_base, cq)
        self.create_subscription(Float64, T["gripper_command"], self._on_gripper, cq)
        self.create_subscription(JointTrajectory, T["head_command"], self._on_head, cq)

        self._publish_latched()
        self._publish_state()
        self._publish_frame(self.robot.observe())
        task = self.env.task
        self.get_logger().info(
            f"sim_robot ready: task {p['task']!r} seed {p['seed']}, sensor {p['sensor_profile']!r}, "
            f"control period {self.spec.control_dt} s, camera every {self.camera_period_ticks} periods; "
            f"instruction: {task.instruction if task else ''!r}")

    # -- parameters ------------------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        d = declare
        p = {
            "task": d(self, "task", "fetch", "task family of the household (fetch, place, ...)"),
            "seed": d(self, "seed", 0, "episode seed: objects and task"),
            "sensor_profile": d(self, "sensor_profile", "ideal",
                                "what the robot perceives: ideal, kinect, realsense, heavy or a YAML file"),
            "width": d(self, "width", 320, "camera image width (pixels)"),
            "height": d(self, "height", 240, "camera image height (pixels)"),
            "sensor_best_effort": d(self, "sensor_best_effort", False,
                                    "publish sensor topics best effort (default reliable: large best-effort "
                                    "images are lost in fragments over loopback)"),
        }
        self.camera_period_ticks = int(d(self, "camera_period_ticks", 4,
                                         "render a camera frame every N control periods of sim time"))
        self.idle_step_s = float(d(self, "idle_step_s", 0.1,
                                   "wall seconds without a command after which the sim steps anyway"))
        self.gather_s = float(d(self, "gather_s", 0.1,
                                "wall seconds to wait for the rest of a command set after its first message"))
        if self.camera_period_ticks < 1 or self.idle_step_s <= 0 or self.gather_s < 0 or p["seed"] < 0:
            raise NodeConfigError("sim_robot: camera_period_ticks >= 1, idle_step_s > 0, gather_s >= 0 "
                                  "and seed >= 0 are required")
        tm = TopicMap()
        M = MNEMOBOT_TOPICS
        defaults = {
            "clock": ("/clock", "rosgraph_msgs/Clock: simulated time"),
            "joint_states": (tm.joint_states, "sensor_msgs/JointState: arm, fingers, head"),
            "odom": ("/odom", "nav_msgs/Odometry: believed base pose (odom frame), twist in base frame"),
            "tf": (tm.tf, "tf2_msgs/TFMessage: map->odom->base_link->camera_link"),
            "tf_static": (tm.tf_static, "tf2_msgs/TFMessage (latched): camera_link->optical frame"),
            "rgb": (tm.rgb, "sensor_msgs/Image rgb8"),
            "depth": (tm.depth, "sensor_msgs/Image 32FC1 metres"),
            "camera_info": (tm.camera_info, "sensor_msgs/CameraInfo"),
            "instances": (tm.instances, "sensor_msgs/Image 16UC1 instance ids"),
            "labels": (tm.labels, "std_msgs/String JSON {id: label} (latched)"),
            "site_map": (M["site_map"], "std_msgs/String JSON site map and static labels (latched)"),
            "instruction": (M["instruction"], "std_msgs/String task instruction (latched)"),
            "sensor_profile": (M["sensor_profile"], "std_msgs/String JSON sensor model (latched)"),
            "score_service": ("/mnemobot/sim/score", "std_srvs/Trigger: whether the task holds on simulator "
                              "truth (scoring only; message: JSON task, instruction, success)"),
            "arm_command": (DRIVER_TOPICS["arm"], "trajectory_msgs/JointTrajectory arm targets (subscribed)"),
            "base_command": (DRIVER_TOPICS["base"], "geometry_msgs/Twist base velocity (subscribed)"),
            "gripper_command": (DRIVER_TOPICS["gripper"], "std_msgs/Float64 finger opening, m (subscribed)"),
            "head_command": (DRIVER_TOPICS["head"], "trajectory_msgs/JointTrajectory head pan/tilt (subscribed)"),
        }
        self.topics = {k: d(self, f"{k}_topic", v, desc) for k, (v, desc) in defaults.items()}
        self.frames = {
            "map": d(self, "map_frame", FRAMES["world"], "fixed world frame"),
            "odom": d(self, "odom_frame", "odom", "odometry frame"),
            "base": d(self, "base_frame", FRAMES["base"], "robot base frame"),
            "camera_link": d(self, "camera_link_frame", FRAMES["camera_link"], "camera body frame (x forward)"),
            "optical": d(self, "camera_optical_frame", FRAMES["camera_optical"],
                         "camera optical frame (x right, y down, z forward)"),
        }
        return p

    # -- commands --------------------------------------------------------------------------------------
    def _refuse(self, kind: str, why: str) -> None:
        self.refused[kind] += 1
        self.get_logger().warning(f"refused {kind} command ({self.refused[kind]} so far): {why}",
                                  throttle_duration_sec=1.0)

    def _got(self, kind: str) -> None:
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending.add(kind)

    def _on_arm(self, msg: JointTrajectory) -> None:
        s = self.spec
        try:
            self._arm = trajectory_target(msg, s.arm_joints, self._arm, s.arm_lower, s.arm_upper, "arm")
        except CommandRefused as e:
            self._refuse("arm", str(e))
            return
        self._got("arm")

    def _on_head(self, msg: JointTrajectory) -> None:
        s = self.spec
        try:
            self._head = trajectory_target(msg, HEAD_JOINTS, self._head, s.head_lower, s.head_upper, "head")
        except CommandRefused as e:
            self._refuse("head", str(e))
            return
        self._got("head")

    def _on_gripper(self, msg: Float64) -> None:
        w, s = float(msg.data), self.spec
        if not (math.isfinite(w) and s.gripper_min - 1e-6 <= w <= s.gripper_max + 1e-6):
            self._refuse("gripper", f"opening {w} m not in [{s.gripper_min}, {s.gripper_max}]")
            return
        self._gripper = w
        self._got("gripper")

    def _on_base(self, msg: Twist) -> None:
        v = np.array([msg.linear.x, msg.linear.y, msg.angular.z], dtype=float)
        if not np.all(np.isfinite(v)):
            self._refuse("base", f"twist is not finite: {v.tolist()}")
            return
        self._twist = v
        self._got("base")

    def _on_score(self, request: Any, response: Any) -> Any:
        """Task success on simulator truth, for the orchestrator's result in simulation (scoring only)."""
        task = self.env.task
        response.success = bool(task.success(self.env.backend)) if task is not None else False
        response.message = json.dumps({"task": self.get_parameter("task").value, "ticks": self.ticks,
                                       "idle_steps": self.idle_steps,
                                       "partial_steps": self.partial_steps,
                                       "instruction": task.instruction if task is not None else "",
                                       "success": response.success})
        return response

    # -- stepping --------------------------------------------------------------------------------------
    def spin(self) -> None:
        """Lockstep loop: step on a complete command set, after ``gather_s`` or after ``idle_step_s``."""
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self)
        while rclpy.ok(context=self.context):
            now = time.monotonic()
            if self._pending:
                due = self._first_pending + self.gather_s
                if self._pending >= _KINDS or now >= due:
                    if not self._pending >= _KINDS:
                        self.partial_steps += 1
                    self.step()
                    continue
            else:
                due = self._last_step_wall + self.idle_step_s
                if now >= due:
                    self.idle_steps += 1
                    self.step()
                    continue
            executor.spin_once(timeout_sec=max(0.0, due - now))

    def step(self) -> None:
        """Advance one control period with the current targets and publish the new state."""
        self._pending.clear()
        self._last_step_wall = time.monotonic()
        cmd = RobotCommand(self._arm.copy(), self._gripper, self._twist.copy(), self._head.copy())
        self.robot.step(cmd)
        self.ticks += 1
        self._publish_state()
        if self.ticks % self.camera_period_ticks == 0:
            self._publish_frame(self.robot.observe())

    # -- publishing ------------------------------------------------------------------------------------
    def _publish_latched(self) -> None:
        env = self.env
        layout = env.config.layout
        static = sorted({f.name for f in layout.furniture} | set(layout.place_names))  # as recorded episodes
        # object_classes: what the simulated detector can name (its class list, as a real detector's
        # is known); never where anything is
        classes = sorted({o.label for o in layout.objects})
        self._pub_site.publish(String(data=json.dumps({"site_map": env.site_map.to_dict(), "static_labels": static,
                                                       "object_classes": classes}, separators=(",", ":"))))
        self._pub_instruction.publish(String(data=env.task.instruction if env.task else ""))
        self._pub_sensor.publish(String(data=json.dumps(env.sensor_model.to_dict(), separators=(",", ":"))))
        f = self.frames
        self._pub_tf_static.publish(TFMessage(transforms=[
            transform_msg(OPTICAL_IN_LINK, f["camera_link"], f["optical"], self.robot.backend.time)]))

    def _publish_state(self) -> None:
        robot, f = self.robot, self.frames
        t = float(robot.backend.time)
        self._pub_clock.publish(Clock(clock=stamp(t)))
        s = robot.read()  # believed base pose (odometry), as on a real robot
        half = float(s.gripper_width) / 2.0
        self._pub_joints.publish(joint_state_msg(
            self.names, [*s.arm_q, half, half, *s.head], [*s.arm_dq, 0.0, 0.0, 0.0, 0.0], t))
        base = s.base_pose3d()
        odom = Odometry(header=header(t, f["odom"]), child_frame_id=f["base"])
        odom.pose.pose.position.x, odom.pose.pose.position.y = float(base.position[0]), float(base.position[1])
        q = base.quaternion
        o = odom.pose.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        odom.twist.twist.linear.x, odom.twist.twist.linear.y = float(s.base_twist[0]), float(s.base_twist[1])
        odom.twist.twist.angular.z = float(s.base_twist[2])
        self._pub_odom.publish(odom)
        link = robot.camera_in_base(s.head) @ OPTICAL_IN_LINK.inverse()
        identity = Pose(np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0]))
        self._pub_tf.publish(TFMessage(transforms=[
            transform_msg(identity, f["map"], f["odom"], t),
            transform_msg(base, f["odom"], f["base"], t),
            transform_msg(link, f["base"], f["camera_link"], t)]))

    def _publish_frame(self, obs: Observation) -> None:
        t, cam = float(obs.timestamp), self.frames["optical"]
        self._pub_rgb.publish(image_msg(obs.rgb, "rgb8", t, cam))
        self._pub_depth.publish(image_msg(np.nan_to_num(obs.depth, nan=0.0, posinf=0.0), "32FC1", t, cam))
        self._pub_info.publish(camera_info_msg(obs.intrinsics, t, cam))
        if obs.instances is None:
            return
        labels = {int(k): str(v) for k, v in obs.labels.items()}
        if any(self._labels.get(k) != v for k, v in labels.items()):
            # Labels first: a subscriber that has the mask also has a label for every id in it.
            self._labels.update(labels)
            self._pub_labels.publish(String(data=json.dumps({str(k): v for k, v in sorted(self._labels.items())},
                                                            separators=(",", ":"))))
        ids = np.asarray(obs.instances)
        self._pub_instances.publish(image_msg(np.clip(ids, 0, 0xFFFF).astype(np.uint16), "16UC1", t, cam))


def main(argv: list[str] | None = None) -> int:
    """``python -m mnemobot.ros2.nodes.sim_robot --ros-args -p name:=value ...``"""
    return run_node(SimRobotNode, argv, spin=lambda node: node.spin())


if __name__ == "__main__":
    raise SystemExit(main())
