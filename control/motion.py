"""Action-chunk builders: straight Cartesian lines, joint-space moves, gripper and head moves.

Every builder returns an :class:`ActionChunk` of one :class:`ControlTarget` per control tick,
sized so that no joint, the gripper or the head is asked to exceed a fraction of its velocity
limit; the brainstem still checks every tick and raises if one does.
"""

from __future__ import annotations

import math

import numpy as np

from mnemobot.control.types import ActionChunk, ControlTarget, RobotSpec
from mnemobot.perception.types import Pose, quat_multiply, slerp, yaw_quat

__all__ = [
    "TOP_DOWN",
    "cartesian_line",
    "gripper_move",
    "head_angles_towards",
    "head_move",
    "hold",
    "joint_move",
    "slerp",
    "top_down_orientation",
    "wrap_angle",
]

#: Quaternion of a hand pointing straight down (rotation by pi about x).
TOP_DOWN = np.array([1.0, 0.0, 0.0, 0.0])


def wrap_angle(a: float) -> float:
    """Angle wrapped to ``[-pi, pi)``."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def top_down_orientation(yaw: float) -> np.ndarray:
    """Hand pointing down, its x axis at heading ``yaw`` (rad) in the world."""
    return quat_multiply(yaw_quat(yaw), TOP_DOWN)


def _angle_between(q0: np.ndarray, q1: np.ndarray) -> float:
    return 2 * math.acos(min(1.0, abs(float(np.dot(q0, q1)))))


def cartesian_line(
    start: Pose,
    goal: Pose,
    dt: float,
    speed: float = 0.25,
    angular_speed: float = 1.0,
    gripper_width: float | None = None,
) -> ActionChunk:
    """End-effector straight line from ``start`` to ``goal`` (world frame) at ``speed`` m/s."""
    dist = float(np.linalg.norm(goal.position - start.position))
    ang = _angle_between(start.quaternion, goal.quaternion)
    n = max(1, math.ceil(max(dist / (speed * dt), ang / (angular_speed * dt))))
    targets = []
    for i in range(1, n + 1):
        t = i / n
        s = t * t * (3 - 2 * t)  # smoothstep: zero velocity at both ends
        pose = Pose(start.position + s * (goal.position - start.position), slerp(start.quaternion, goal.quaternion, s))
        targets.append(ControlTarget(ee_pose=pose, gripper_width=gripper_width))
    return ActionChunk(targets)


def joint_move(
    spec: RobotSpec, q0: np.ndarray, q1: np.ndarray, speed_fraction: float = 0.6, gripper_width: float | None = None
) -> ActionChunk:
    """Joint-space move from ``q0`` to ``q1`` at ``speed_fraction`` of the slowest joint's limit."""
    dq = np.abs(np.asarray(q1) - np.asarray(q0))
    # smoothstep peaks at 1.5x the mean speed: size the move so the peak stays under the fraction
    ticks = dq * 1.5 / (spec.arm_velocity * speed_fraction * spec.control_dt)
    n = max(1, math.ceil(float(ticks.max())))
    out = []
    for i in range(1, n + 1):
        t = i / n
        s = t * t * (3 - 2 * t)
        out.append(ControlTarget(arm_q=q0 + s * (q1 - q0), gripper_width=gripper_width))
    return ActionChunk(out)


def gripper_move(spec: RobotSpec, w0: float, w1: float, settle_ticks: int = 6) -> ActionChunk:
    """Open or close the fingers from ``w0`` to ``w1`` metres, then wait ``settle_ticks``."""
    w1 = float(np.clip(w1, spec.gripper_min, spec.gripper_max))
    n = max(1, math.ceil(abs(w1 - w0) / (0.8 * spec.gripper_speed * spec.control_dt)))
    widths = [w0 + (w1 - w0) * (i / n) for i in range(1, n + 1)] + [w1] * settle_ticks
    return ActionChunk([ControlTarget(gripper_width=w) for w in widths])


def head_move(spec: RobotSpec, h0: np.ndarray, h1: np.ndarray, settle_ticks: int = 2) -> ActionChunk:
    """Pan/tilt move at 80% of the head's velocity limit."""
    h1 = np.clip(np.asarray(h1, dtype=float), spec.head_lower, spec.head_upper)
    d = float(np.max(np.abs(h1 - h0)))
    n = max(1, math.ceil(d / (0.8 * spec.head_velocity * spec.control_dt)))
    heads = [h0 + (h1 - h0) * (i / n) for i in range(1, n + 1)] + [h1] * settle_ticks
    return ActionChunk([ControlTarget(head=h) for h in heads])


def head_angles_towards(spec: RobotSpec, base_pose: Pose, point: np.ndarray) -> np.ndarray:
    """Head ``(pan, tilt)`` (rad, not clipped to limits) that point the optical axis, from the
    pan/tilt centre ``spec.head_mount``, at world ``point``; ``base_pose`` is the base in the world."""
    d = (base_pose @ spec.head_mount).inverse().apply(np.asarray(point, dtype=float))
    return np.array([math.atan2(d[1], d[0]), math.atan2(-d[2], math.hypot(d[0], d[1]))])


def hold(ticks: int) -> ActionChunk:
    """Hold everything still for ``ticks`` control periods."""
    return ActionChunk([ControlTarget() for _ in range(ticks)])
