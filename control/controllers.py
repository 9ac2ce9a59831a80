"""The brainstem: turns skills' :class:`ControlTarget` s into limit-checked :class:`RobotCommand` s.

Pipeline of one control tick (``spec.control_dt`` seconds)::

    ControlTarget --(world -> arm base, workspace box, IK)--> RobotCommand --SafetyGuard--> robot

* End-effector targets are poses of ``spec.ee_link`` in the world frame. They are moved into the
  arm-base frame with the measured base pose (``state.base_pose``: ``(x, y, yaw)`` on the floor)
  and ``spec.arm_mount``, then solved by IK seeded with the last *commanded* joint vector.
* Every command is checked against the previous *commanded* one (the measured state lags the
  command), and refused with a :class:`~mnemobot.control.types.SafetyError` subclass, never
  clamped silently and never with ``assert``.
* Joint-space tracking (PD) is not done here: the command holds joint *position* targets and the
  robot's own motor controllers track them (in simulation, pybullet position motors with gains;
  on hardware, the arm's joint impedance/position controller). The gripper tracks its width
  target at its own speed, so the width is passed through without a rate check.

Example::

    ctl = Controller(robot.spec)
    ctl.reset(robot.read())
    state = robot.step(ctl.command(ControlTarget(ee_pose=goal), state))
"""

from __future__ import annotations

import math
import threading

import numpy as np

from mnemobot.control.kinematics import ArmKinematics, from_spec
from mnemobot.control.types import (
    ControlTarget,
    EStopError,
    JointLimitError,
    RobotCommand,
    RobotSpec,
    RobotState,
    SafetyError,
    VelocityLimitError,
    WorkspaceLimitError,
)
from mnemobot.perception.types import Pose

__all__ = ["Controller", "EStop", "SafetyGuard"]

_EPS = 1e-9


class EStop:
    """Emergency stop shared between threads (a UI button, a watchdog, the control loop).

    While engaged, :meth:`Controller.command` refuses every target; :meth:`Controller.hold`
    still works.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason = ""

    def engage(self, reason: str = "engaged") -> None:
        """Stop: from now on only holding still is allowed. ``reason`` is kept for reports."""
        with self._lock:
            self._reason = reason
            self._event.set()

    def release(self) -> None:
        """Allow commands again."""
        with self._lock:
            self._reason = ""
            self._event.clear()

    @property
    def engaged(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        """Why it was engaged; empty when released."""
        with self._lock:
            return self._reason


def command_from_state(state: RobotState, spec: RobotSpec | None = None) -> RobotCommand:
    """The command that keeps the robot where it is measured: same arm, gripper and head, base
    stopped. With ``spec``, measurements a hair outside a limit (sensor noise, a joint resting
    on its stop) are brought to the nearest legal target."""
    arm = np.asarray(state.arm_q, dtype=float).copy()
    grip = float(state.gripper_width)
    head = np.asarray(state.head, dtype=float).copy()
    if spec is not None:
        arm = np.clip(arm, spec.arm_lower, spec.arm_upper)
        grip = float(np.clip(grip, spec.gripper_min, spec.gripper_max))
        head = np.clip(head, spec.head_lower, spec.head_upper)
    return RobotCommand(arm_q=arm, gripper_width=grip, base_twist=np.zeros(3), head=head)


class SafetyGuard:
    """Checks commands against a :class:`RobotSpec`'s limits; raises, never clamps.

    Rates are measured from the previously *accepted* command over ``spec.control_dt``, with a
    relative ``tolerance`` (default 1 %) for joint and head steps.
    """

    def __init__(self, spec: RobotSpec, tolerance: float = 0.01) -> None:
        self.spec = spec
        self.tolerance = tolerance
        self.previous: RobotCommand | None = None

    def reset(self, state: RobotState) -> None:
        """Take the measured state as the previous command (call when control (re)starts)."""
        self.previous = command_from_state(state, self.spec)

    def check(self, cmd: RobotCommand) -> None:
        """Raise a :class:`SafetyError` subclass naming the first broken limit; else return."""
        if self.previous is None:
            raise SafetyError("SafetyGuard.reset(state) must be called before the first command")
        self._check_shapes(cmd)
        self._check_finite(cmd)
        self._check_arm(cmd.arm_q, self.previous.arm_q)
        self._check_gripper(cmd.gripper_width)
        self._check_base(cmd.base_twist)
        self._check_head(cmd.head, self.previous.head)

    def accept(self, cmd: RobotCommand) -> RobotCommand:
        """:meth:`check` ``cmd`` and, if it passes, remember it as the previous command."""
        self.check(cmd)
        self.previous = cmd
        return cmd

    def _check_shapes(self, cmd: RobotCommand) -> None:
        expected = {"arm_q": (self.spec.n_arm,), "base_twist": (3,), "head": (2,)}
        for name, shape in expected.items():
            got = np.shape(getattr(cmd, name))
            if got != shape:
                raise SafetyError(f"command field {name} has shape {got}, expected {shape}")

    def _check_finite(self, cmd: RobotCommand) -> None:
        for name in ("arm_q", "gripper_width", "base_twist", "head"):
            value = np.asarray(getattr(cmd, name), dtype=float)
            if not np.all(np.isfinite(value)):
                raise SafetyError(f"command field {name} is not finite: {value}")

    def _check_arm(self, q: np.ndarray, q_prev: np.ndarray) -> None:
        spec = self.spec
        for i, name in enumerate(spec.arm_joints):
            lo, hi = float(spec.arm_lower[i]), float(spec.arm_upper[i])
            if not lo - _EPS <= q[i] <= hi + _EPS:
                raise JointLimitError(f"arm joint {name} target {q[i]:.4f} rad outside [{lo:.4f}, {hi:.4f}]")
        rate = np.abs(np.asarray(q) - q_prev) / spec.control_dt
        limit = spec.arm_velocity * (1.0 + self.tolerance)
        i = int(np.argmax(rate - limit))
        if rate[i] > limit[i]:
            raise VelocityLimitError(
                f"arm joint {spec.arm_joints[i]} step {q[i] - q_prev[i]:+.4f} rad in {spec.control_dt} s "
                f"= {rate[i]:.3f} rad/s exceeds {spec.arm_velocity[i]:.3f} rad/s"
            )

    def _check_gripper(self, width: float) -> None:
        lo, hi = self.spec.gripper_min, self.spec.gripper_max
        if not lo - _EPS <= width <= hi + _EPS:
            raise JointLimitError(f"gripper width target {width:.4f} m outside [{lo:.4f}, {hi:.4f}]")

    def _check_base(self, twist: np.ndarray) -> None:
        linear = math.hypot(float(twist[0]), float(twist[1]))
        if linear > self.spec.base_max_linear + _EPS:
            raise VelocityLimitError(
                f"base linear speed {linear:.3f} m/s exceeds {self.spec.base_max_linear:.3f} m/s"
            )
        if abs(float(twist[2])) > self.spec.base_max_angular + _EPS:
            raise VelocityLimitError(
                f"base angular speed {float(twist[2]):+.3f} rad/s exceeds {self.spec.base_max_angular:.3f} rad/s"
            )

    def _check_head(self, head: np.ndarray, head_prev: np.ndarray) -> None:
        spec = self.spec
        for i, name in enumerate(("pan", "tilt")):
            lo, hi = float(spec.head_lower[i]), float(spec.head_upper[i])
            if not lo - _EPS <= head[i] <= hi + _EPS:
                raise JointLimitError(f"head {name} target {head[i]:.4f} rad outside [{lo:.4f}, {hi:.4f}]")
            rate = abs(float(head[i] - head_prev[i])) / spec.control_dt
            if rate > spec.head_velocity * (1.0 + self.tolerance):
                raise VelocityLimitError(
                    f"head {name} step {head[i] - head_prev[i]:+.4f} rad in {spec.control_dt} s "
                    f"= {rate:.3f} rad/s exceeds {spec.head_velocity:.3f} rad/s"
                )


class Controller:
    """The brainstem used by skills: IK, hold-last semantics, safety checks, e-stop.

    ``kinematics`` defaults to :func:`~mnemobot.control.kinematics.from_spec`; ``estop`` to a
    fresh :class:`EStop` (share one to stop several controllers). ``ik_restarts`` random
    restarts are tried when the IK seeded with the last command fails (default 0: a per-tick
    target is near the last command, and a far solution would break the joint velocity limit).
    """

    def __init__(
        self,
        spec: RobotSpec,
        kinematics: ArmKinematics | None = None,
        estop: EStop | None = None,
        *,
        ik_restarts: int = 0,
    ) -> None:
        self.spec = spec
        self.kinematics = kinematics if kinematics is not None else from_spec(spec)
        self.estop = estop if estop is not None else EStop()
        self.guard = SafetyGuard(spec)
        self.ik_restarts = ik_restarts
        self._last: RobotCommand | None = None

    @property
    def last_command(self) -> RobotCommand | None:
        """The last command accepted (or held); ``None`` before :meth:`reset`."""
        return self._last

    def reset(self, state: RobotState) -> None:
        """Start from the measured state: it becomes the last command (base stopped)."""
        self.guard.reset(state)
        self._last = self.guard.previous

    # -- frames -----------------------------------------------------------------------------------

    def arm_base_pose(self, state: RobotState) -> Pose:
        """Pose of the arm base (``spec.arm_base_link``) in the world frame."""
        return state.base_pose3d() @ self.spec.arm_mount

    def world_to_arm_base(self, state: RobotState) -> Pose:
        """Transform from world to arm-base coordinates: ``p_arm = T.apply(p_world)``, i.e. the
        pose of the world frame in the arm-base frame."""
        return self.arm_base_pose(state).inverse()

    def ee_pose(self, state: RobotState) -> Pose:
        """Measured pose of ``spec.ee_link`` in the world frame."""
        return self.arm_base_pose(state) @ self.kinematics.fk(np.asarray(state.arm_q, dtype=float))

    # -- commands ---------------------------------------------------------------------------------

    def hold(self, state: RobotState) -> RobotCommand:
        """Stop the base and keep the last commanded arm, gripper and head (allowed under e-stop)."""
        if self._last is None:
            self.reset(state)
        last = self._last
        held = RobotCommand(last.arm_q.copy(), last.gripper_width, np.zeros(3), last.head.copy())
        self._last = self.guard.previous = held
        return held

    def command(self, target: ControlTarget, state: RobotState) -> RobotCommand:
        """The checked command for one control tick towards ``target``.

        Raises :class:`EStopError` while the e-stop is engaged, :class:`WorkspaceLimitError` for
        an end-effector target outside the workspace box or not reachable, and the guard's
        :class:`SafetyError` subclasses for broken limits. Nothing is remembered on error.
        """
        self._refuse_if_stopped()
        if self._last is None:
            self.reset(state)
        last = self._last
        twist = np.zeros(3) if target.base_twist is None else np.asarray(target.base_twist, dtype=float)
        cmd = RobotCommand(
            arm_q=self._arm_target(target, state, last.arm_q),
            gripper_width=last.gripper_width if target.gripper_width is None else float(target.gripper_width),
            base_twist=twist,
            head=last.head.copy() if target.head is None else np.asarray(target.head, dtype=float),
        )
        self._refuse_if_stopped()  # engaged while IK ran
        self._last = self.guard.accept(cmd)
        return cmd

    def _refuse_if_stopped(self) -> None:
        if self.estop.engaged:
            raise EStopError(f"e-stop engaged: {self.estop.reason}")

    def _arm_target(self, target: ControlTarget, state: RobotState, q_last: np.ndarray) -> np.ndarray:
        if target.arm_q is not None:
            return np.asarray(target.arm_q, dtype=float).copy()
        if target.ee_pose is not None:
            return self.solve_ee(target.ee_pose, state, q_last)
        return q_last.copy()

    def solve_ee(self, ee_world: Pose, state: RobotState, q_seed: np.ndarray) -> np.ndarray:
        """Arm joints (rad) that put ``spec.ee_link`` at ``ee_world`` (world frame) from the
        measured base pose, or :class:`WorkspaceLimitError` if outside the box or unreachable."""
        local = self.world_to_arm_base(state) @ ee_world
        self.check_workspace(local.position)
        res = self.kinematics.ik(
            local, q_seed, self.spec.arm_lower, self.spec.arm_upper, restarts=self.ik_restarts
        )
        if not res.success:
            raise WorkspaceLimitError(
                f"unreachable: end-effector target {np.round(local.position, 3).tolist()} m in the arm-base "
                f"frame; IK stopped {res.pos_err * 1000:.1f} mm / {math.degrees(res.rot_err):.1f} deg away"
            )
        return res.q

    def check_workspace(self, p_arm: np.ndarray) -> None:
        """Raise :class:`WorkspaceLimitError` for a hand position (arm-base frame) outside the box."""
        lo, hi = self.spec.workspace_min, self.spec.workspace_max
        if np.any(p_arm < lo) or np.any(p_arm > hi):
            raise WorkspaceLimitError(
                f"end-effector target {np.round(p_arm, 3).tolist()} m (arm-base frame) outside the "
                f"workspace box {lo.tolist()} .. {hi.tolist()}"
            )
