"""``robot_bridge``: the safety gate between mnemobot's orchestrator and the robot's drivers.

Run (with the simulator's clock)::

    python -m mnemobot.ros2.nodes.robot_bridge --ros-args -p use_sim_time:=true -p watchdog_s:=0.5

It checks every command against the :class:`~mnemobot.control.types.RobotSpec` limits
(:func:`~mnemobot.control.robots.mobile_panda_spec`) **before** it republishes it to the driver
topics (those ``sim_robot`` subscribes; on a real robot the ros2_control controllers'). A command
outside a limit is refused, never clipped: it is dropped, counted and warned about (throttled).

Subscribed:

==========================  ===================================================  ==================
topic (default)             type, meaning                                        QoS
==========================  ===================================================  ==================
``/mnemobot/cmd/arm``       trajectory_msgs/JointTrajectory, the 7 arm joints    command (reliable
                            (empty names = spec order); first point = target      10)
                            of the next control period
``/mnemobot/cmd/base``      geometry_msgs/Twist in ``base_link`` (vx, vy, wz)     command
``/mnemobot/cmd/gripper``   std_msgs/Float64: finger opening (m)                  command
``/mnemobot/cmd/head``      JointTrajectory ``head_pan_joint``,                   command
                            ``head_tilt_joint`` (rad)
``/mnemobot/estop``         std_msgs/Bool; ``true`` engages the e-stop (latched   latched (transient
                            until the reset service); ``false`` does nothing      local, reliable 1)
``/joint_states``           sensor_msgs/JointState: the measured arm/head,        sensor (reliable 5)
                            the baseline of rate checks and of "hold"
==========================  ===================================================  ==================

Published: the driver topics (``/arm_controller/joint_trajectory``, ``/cmd_vel``,
``/gripper_controller/command``, ``/head_controller/joint_trajectory``; QoS command) and
``/mnemobot/bridge/status`` (std_msgs/String JSON, latched; on every stop or reset, within 0.1 s
wall of a refusal and every ``status_period_s`` wall seconds): ``forwarded`` and ``refused`` counts per kind,
``refused_by`` counts per reason, ``watchdog_stops``, ``estop`` (engaged), ``estops``,
``stale`` (the watchdog has stopped the robot and no command came since), ``last_refusal``.

Service ``/mnemobot/estop_reset`` (std_srvs/Trigger) releases the e-stop.

Checks: arm and head targets within the joint ranges; the step from the previous accepted target
(or the measured position after a stop) over ``spec.control_dt`` (or the point's
``time_from_start`` when set) within the joint velocity limits (+``tolerance``, 1 %), and the
point's velocities when given; gripper opening within its range; base linear speed
``hypot(vx, vy)`` and ``|wz|`` within the base limits, no z/roll/pitch components; all finite.

Watchdog: when no command was accepted for ``watchdog_s`` seconds of the node's clock (simulated
time with ``use_sim_time``), it publishes a zero twist and holds the arm at its last measured
position, once; the next valid command resumes. The e-stop does the same and then refuses every
command until reset.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mnemobot.control.robots import mobile_panda_spec
from mnemobot.control.types import JointLimitError, SafetyError, VelocityLimitError
from mnemobot.ros2.nodes.common import (
    NodeConfigError,
    command_qos,
    declare,
    latched_qos,
    run_node,
    sensor_qos,
    trajectory_positions,
)
from mnemobot.ros2.nodes.sim_robot import DRIVER_TOPICS, HEAD_JOINTS

__all__ = ["BRIDGE_TOPICS", "RobotBridgeNode", "main"]

BRIDGE_TOPICS = {
    "arm": "/mnemobot/cmd/arm",
    "base": "/mnemobot/cmd/base",
    "gripper": "/mnemobot/cmd/gripper",
    "head": "/mnemobot/cmd/head",
    "estop": "/mnemobot/estop",
    "estop_reset": "/mnemobot/estop_reset",
    "status": "/mnemobot/bridge/status",
}
"""Default command topics of the orchestrator side (and the e-stop, its reset service, the status)."""

_EPS = 1e-9


class RobotBridgeNode(Node):
    """Limit checks, watchdog and e-stop between orchestrator commands and the drivers."""

    def __init__(self) -> None:
        super().__init__("robot_bridge")
        d = declare
        self.watchdog_s = float(d(self, "watchdog_s", 0.5, "stop the base and hold the arm after this many "
                                  "seconds (node clock; sim time with use_sim_time) without a command"))
        self.tolerance = float(d(self, "tolerance", 0.01, "relative tolerance of joint velocity checks"))
        urdf = d(self, "robot_description_urdf", "", "arm URDF of the spec (empty: the Panda shipped with pybullet)")
        status_period = float(d(self, "status_period_s", 1.0, "wall seconds between status messages"))
        best_effort = d(self, "sensor_best_effort", False, "subscribe /joint_states best effort")
        if self.watchdog_s <= 0 or status_period <= 0 or self.tolerance < 0:
            raise NodeConfigError("robot_bridge: watchdog_s > 0, status_period_s > 0, tolerance >= 0 required")
        try:
            self.spec = mobile_panda_spec(urdf or None)
        except (FileNotFoundError, ImportError) as e:
            raise NodeConfigError(f"robot_bridge: {e}") from None
        t_in = {k: d(self, f"{k}_topic", v, f"orchestrator {k} command (subscribed)")
                for k, v in BRIDGE_TOPICS.items() if k in ("arm", "base", "gripper", "head")}
        t_out = {k: d(self, f"{k}_driver_topic", v, f"driver {k} command (published)") for k, v in DRIVER_TOPICS.items()}
        estop_topic = d(self, "estop_topic", BRIDGE_TOPICS["estop"], "std_msgs/Bool e-stop (latched subscriber)")
        reset_srv = d(self, "estop_reset_service", BRIDGE_TOPICS["estop_reset"], "std_srvs/Trigger: release the e-stop")
        status_topic = d(self, "status_topic", BRIDGE_TOPICS["status"], "std_msgs/String JSON counts (latched)")
        js_topic = d(self, "joint_states_topic", "/joint_states", "sensor_msgs/JointState measured joints")

        self.kinds = ("arm", "base", "gripper", "head")
        self.forwarded = dict.fromkeys(self.kinds, 0)
        self.refused = dict.fromkeys(self.kinds, 0)
        self.refused_by: dict[str, int] = {}
        self.watchdog_stops = 0
        self.estops = 0
        self.estop = False
        self.stale = True  # nothing commanded yet: nothing to stop
        self.last_refusal = ""
        self._measured_arm: np.ndarray | None = None
        self._measured_head: np.ndarray | None = None
        self._prev_arm: np.ndarray | None = None
        self._prev_head: np.ndarray | None = None
        self._last_cmd = self.get_clock().now()

        cq = command_qos()
        self._out = {
            "arm": self.create_publisher(JointTrajectory, t_out["arm"], cq),
            "base": self.create_publisher(Twist, t_out["base"], cq),
            "gripper": self.create_publisher(Float64, t_out["gripper"], cq),
            "head": self.create_publisher(JointTrajectory, t_out["head"], cq),
        }
        self._pub_status = self.create_publisher(String, status_topic, latched_qos())
        self.create_subscription(JointTrajectory, t_in["arm"], self._on_arm, cq)
        self.create_subscription(Twist, t_in["base"], self._on_base, cq)
        self.create_subscription(Float64, t_in["gripper"], self._on_gripper, cq)
        self.create_subscription(JointTrajectory, t_in["head"], self._on_head, cq)
        self.create_subscription(Bool, estop_topic, self._on_estop, latched_qos())
        self.create_subscription(JointState, js_topic, self._on_joint_states, sensor_qos(best_effort=best_effort))
        self.create_service(Trigger, reset_srv, self._on_reset)
        self.create_timer(self.spec.control_dt, self._watchdog)  # node clock: sim time with use_sim_time
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._status_dirty, self._status_wall = False, 0.0
        self.create_timer(status_period, self.publish_status, clock=steady)
        self.create_timer(0.1, self._flush_status, clock=steady)
        self.publish_status()
        self.get_logger().info(f"robot_bridge ready: {t_in} -> {t_out}, watchdog {self.watchdog_s} s")

    # -- status ----------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"forwarded": dict(self.forwarded), "refused": dict(self.refused), "refused_by": dict(self.refused_by),
                "watchdog_stops": self.watchdog_stops, "estop": self.estop, "estops": self.estops,
                "stale": self.stale, "last_refusal": self.last_refusal}

    def publish_status(self) -> None:
        self._status_dirty = False
        self._status_wall = time.monotonic()
        self._pub_status.publish(String(data=json.dumps(self.status(), separators=(",", ":"))))

    def _status_soon(self) -> None:
        """Publish the status now, or within 0.1 s wall when one just went out (a flood of refusals)."""
        if time.monotonic() - self._status_wall >= 0.1:
            self.publish_status()
        else:
            self._status_dirty = True

    def _flush_status(self) -> None:
        if self._status_dirty:
            self.publish_status()

    # -- measured state --------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        pos = dict(zip(msg.name, msg.position, strict=False))
        if all(n in pos for n in self.spec.arm_joints):
            self._measured_arm = np.array([pos[n] for n in self.spec.arm_joints], dtype=float)
        if all(n in pos for n in HEAD_JOINTS):
            self._measured_head = np.array([pos[n] for n in HEAD_JOINTS], dtype=float)

    # -- commands --------------------------------------------------------------------------------------
    def _accept(self, kind: str, msg: Any) -> None:
        self._out[kind].publish(msg)
        self.forwarded[kind] += 1
        self._last_cmd = self.get_clock().now()
        self.stale = False

    def _refuse(self, kind: str, error: SafetyError | str) -> None:
        reason = error if isinstance(error, str) else type(error).__name__
        self.refused[kind] += 1
        self.refused_by[reason] = self.refused_by.get(reason, 0) + 1
        self.last_refusal = f"{kind}: {error}"
        self.get_logger().warning(f"refused {kind} command ({self.refused[kind]} so far): {error}",
                                  throttle_duration_sec=1.0)
        self._status_soon()

    def _gate(self, kind: str) -> bool:
        if self.estop:
            self._refuse(kind, "estop")
            return False
        return True

    def _on_arm(self, msg: JointTrajectory) -> None:
        if not self._gate("arm"):
            return
        s = self.spec
        try:
            prev = self._prev_arm if self._prev_arm is not None else self._measured_arm
            q, dt = self._trajectory(msg, s.arm_joints, prev, s.arm_lower, s.arm_upper, "arm joint")
            self._check_rate(q, prev, dt, s.arm_velocity, s.arm_joints, "arm joint")
            self._check_point_velocities(msg, s.arm_joints, s.arm_velocity, "arm joint")
        except SafetyError as e:
            self._refuse("arm", e)
            return
        self._prev_arm = q
        if not msg.joint_names:
            msg.joint_names = list(s.arm_joints)
        self._accept("arm", msg)

    def _on_head(self, msg: JointTrajectory) -> None:
        if not self._gate("head"):
            return
        s = self.spec
        try:
            prev = self._prev_head if self._prev_head is not None else self._measured_head
            q, dt = self._trajectory(msg, HEAD_JOINTS, prev, s.head_lower, s.head_upper, "head joint")
            vel = np.full(2, s.head_velocity)
            self._check_rate(q, prev, dt, vel, HEAD_JOINTS, "head joint")
            self._check_point_velocities(msg, HEAD_JOINTS, vel, "head joint")
        except SafetyError as e:
            self._refuse("head", e)
            return
        self._prev_head = q
        if not msg.joint_names:
            msg.joint_names = list(HEAD_JOINTS)
        self._accept("head", msg)

    def _on_gripper(self, msg: Float64) -> None:
        if not self._gate("gripper"):
            return
        w, s = float(msg.data), self.spec
        if not math.isfinite(w):
            self._refuse("gripper", SafetyError(f"gripper opening is not finite: {w}"))
            return
        if not s.gripper_min - _EPS <= w <= s.gripper_max + _EPS:
            self._refuse("gripper", JointLimitError(
                f"gripper opening {w:.4f} m outside [{s.gripper_min:.4f}, {s.gripper_max:.4f}]"))
            return
        self._accept("gripper", msg)

    def _on_base(self, msg: Twist) -> None:
        if not self._gate("base"):
            return
        s = self.spec
        vals = [msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z]
        if not all(math.isfinite(v) for v in vals):
            self._refuse("base", SafetyError(f"base twist is not finite: {vals}"))
            return
        if any(abs(v) > _EPS for v in vals[2:5]):
            self._refuse("base", VelocityLimitError(
                f"a planar base cannot move along z, roll or pitch: linear.z={vals[2]}, angular.x={vals[3]}, "
                f"angular.y={vals[4]}"))
            return
        linear = math.hypot(msg.linear.x, msg.linear.y)
        if linear > s.base_max_linear + _EPS:
            self._refuse("base", VelocityLimitError(
                f"base linear speed {linear:.3f} m/s exceeds {s.base_max_linear:.3f} m/s"))
            return
        if abs(msg.angular.z) > s.base_max_angular + _EPS:
            self._refuse("base", VelocityLimitError(
                f"base angular speed {msg.angular.z:+.3f} rad/s exceeds {s.base_max_angular:.3f} rad/s"))
            return
        self._accept("base", msg)

    # -- checks ----------------------------------------------------------------------------------------
    def _trajectory(self, msg: JointTrajectory, names: tuple[str, ...], prev: np.ndarray | None,
                    lower: np.ndarray, upper: np.ndarray, what: str) -> tuple[np.ndarray, float]:
        """Targets of the first point for all ``names`` (omitted joints keep ``prev``) and its dt."""
        if prev is None:
            raise SafetyError(f"no measured {what} positions yet (/joint_states): cannot check the step")
        q = trajectory_positions(msg, names, prev, what, SafetyError)
        point = msg.points[0]
        for i, n in enumerate(names):
            if not lower[i] - _EPS <= q[i] <= upper[i] + _EPS:
                raise JointLimitError(f"{what} {n} target {q[i]:.4f} rad outside [{lower[i]:.4f}, {upper[i]:.4f}]")
        tfs = float(point.time_from_start.sec) + point.time_from_start.nanosec * 1e-9
        return q, (tfs if tfs > 0 else self.spec.control_dt)

    def _check_rate(self, q: np.ndarray, prev: np.ndarray | None, dt: float, limit: np.ndarray,
                    names: tuple[str, ...], what: str) -> None:
        if prev is None:
            return
        rate = np.abs(q - prev) / dt
        lim = np.asarray(limit, dtype=float) * (1.0 + self.tolerance)
        i = int(np.argmax(rate - lim))
        if rate[i] > lim[i]:
            raise VelocityLimitError(f"{what} {names[i]} step {q[i] - prev[i]:+.4f} rad in {dt:.3f} s = "
                                     f"{rate[i]:.3f} rad/s exceeds {limit[i]:.3f} rad/s")

    def _check_point_velocities(self, msg: JointTrajectory, names: tuple[str, ...], limit: np.ndarray,
                                what: str) -> None:
        vel = list(msg.points[0].velocities)
        if not vel:
            return
        given = list(msg.joint_names) or list(names)
        if len(vel) != len(given):
            raise SafetyError(f"{what} trajectory: {len(given)} joint names but {len(vel)} velocities")
        for n, v in zip(given, vel, strict=True):
            lim = float(limit[names.index(n)])
            if not math.isfinite(v) or abs(v) > lim * (1.0 + self.tolerance):
                raise VelocityLimitError(f"{what} {n} velocity {v:+.3f} rad/s exceeds {lim:.3f} rad/s")

    # -- stopping --------------------------------------------------------------------------------------
    def _stop(self) -> None:
        """Zero twist; arm (and head) targets at the measured positions, which become the rate baseline."""
        self._out["base"].publish(Twist())
        if self._measured_arm is not None:
            self._out["arm"].publish(JointTrajectory(
                joint_names=list(self.spec.arm_joints),
                points=[JointTrajectoryPoint(positions=[float(v) for v in self._measured_arm])]))
        else:
            self.get_logger().warning("stop: no /joint_states measured yet, the arm is not held")
        self._prev_arm = self._measured_arm
        self._prev_head = self._measured_head
        self.stale = True

    def _watchdog(self) -> None:
        if self.stale or self.estop:
            return
        now = self.get_clock().now()
        idle = (now - self._last_cmd).nanoseconds * 1e-9
        if idle < 0:  # the clock jumped back (a restarted simulator): count from now
            self._last_cmd = now
            return
        if idle >= self.watchdog_s - 1e-6:
            self.watchdog_stops += 1
            self.get_logger().warning(f"watchdog: no command for {idle:.2f} s: base stopped, arm held")
            self._stop()
            self.publish_status()

    def _on_estop(self, msg: Bool) -> None:
        if not msg.data:
            if self.estop:
                self.get_logger().info("e-stop stays engaged: call the reset service to release it")
            return
        if not self.estop:
            self.estops += 1
            self.get_logger().error("E-STOP engaged: base stopped, arm held, commands refused until reset")
        self.estop = True
        self._stop()
        self.publish_status()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was = self.estop
        self.estop = False
        self._prev_arm, self._prev_head = self._measured_arm, self._measured_head
        response.success = True
        response.message = "e-stop released" if was else "e-stop was not engaged"
        self.get_logger().info(response.message)
        self.publish_status()
        return response


def main(argv: list[str] | None = None) -> int:
    """``python -m mnemobot.ros2.nodes.robot_bridge --ros-args -p use_sim_time:=true ...``"""
    return run_node(RobotBridgeNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
