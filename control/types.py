"""Types of the brainstem and cerebellum: robot description, commands, targets, skill results.

Units: metres, radians, seconds. Frames: see :mod:`mnemobot.perception.types`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnemobot.perception.types import Pose, Proprioception

__all__ = [
    "ActionChunk",
    "ControlTarget",
    "EStopError",
    "JointLimitError",
    "RobotCommand",
    "RobotSpec",
    "RobotState",
    "SafetyError",
    "SkillResult",
    "SkillStatus",
    "VelocityLimitError",
    "WorkspaceLimitError",
]

RobotState = Proprioception
"""The brainstem reads the robot's proprioception as its state."""


class SafetyError(RuntimeError):
    """A command was refused because it would break a safety limit. Never an ``assert``."""


class JointLimitError(SafetyError):
    """A joint position target lies outside the joint's range."""


class VelocityLimitError(SafetyError):
    """A commanded velocity (joint, gripper, base or head) exceeds its limit."""


class WorkspaceLimitError(SafetyError):
    """An end-effector target lies outside the allowed workspace, or cannot be reached."""


class EStopError(SafetyError):
    """The emergency stop is engaged: only holding still is allowed."""


@dataclass(frozen=True)
class RobotSpec:
    """Static description of a mobile manipulator: limits, home posture, kinematics source.

    Arrays of length ``n_arm`` follow ``arm_joints`` order. The arm base (``arm_base_link`` of
    ``arm_urdf``) sits at ``arm_mount`` in the base frame. ``workspace_min/max`` bound
    end-effector targets in the arm-base frame. ``arm_home`` is the ready posture in front of
    the robot that manipulation starts from; ``arm_stow`` (defaults to ``arm_home``) the carry
    posture, folded out of the head camera's view, used while driving; ``arm_look`` (defaults to
    the carry posture) the posture the empty arm takes while the head looks down at something
    close (folded further back, so no link crosses the camera's view). The head's pan/tilt centre sits at
    ``head_mount`` in the base frame (pan about z, then tilt about the pan frame's y; tilt > 0
    looks down; at pan = tilt = 0 the optical axis points along the base's x axis).
    """

    arm_urdf: Path
    arm_joints: tuple[str, ...]
    arm_base_link: str
    ee_link: str
    arm_lower: np.ndarray
    arm_upper: np.ndarray
    arm_velocity: np.ndarray
    arm_home: np.ndarray
    arm_mount: Pose
    arm_stow: np.ndarray | None = None
    arm_look: np.ndarray | None = None
    gripper_min: float = 0.0
    gripper_max: float = 0.08
    gripper_speed: float = 0.2
    base_max_linear: float = 1.0
    base_max_angular: float = 1.5
    head_lower: np.ndarray = field(default_factory=lambda: np.array([-2.5, -0.2]))
    head_upper: np.ndarray = field(default_factory=lambda: np.array([2.5, 1.2]))
    head_velocity: float = 2.0
    head_mount: Pose = field(default_factory=lambda: Pose(np.array([-0.15, 0.0, 1.30])))
    workspace_min: np.ndarray = field(default_factory=lambda: np.array([-0.9, -0.9, -0.6]))
    workspace_max: np.ndarray = field(default_factory=lambda: np.array([0.9, 0.9, 1.2]))
    control_dt: float = 0.05

    @property
    def stow(self) -> np.ndarray:
        """The carry posture (``arm_stow``, or ``arm_home`` when none is given)."""
        return self.arm_home if self.arm_stow is None else self.arm_stow

    @property
    def look(self) -> np.ndarray:
        """The empty arm's posture while looking (``arm_look``, or the carry posture)."""
        return self.stow if self.arm_look is None else self.arm_look

    @property
    def n_arm(self) -> int:
        return len(self.arm_joints)

    @property
    def action_dim(self) -> int:
        """Length of the flat command vector: arm + gripper + base twist (3) + head (2)."""
        return self.n_arm + 1 + 3 + 2


@dataclass(frozen=True)
class RobotCommand:
    """One control-tick command, already checked against the limits by the controller.

    * ``arm_q``: arm joint position targets (rad);
    * ``gripper_width``: finger opening target (m);
    * ``base_twist``: ``(vx, vy, wz)`` in the base frame (m/s, m/s, rad/s);
    * ``head``: ``(pan, tilt)`` targets (rad).
    """

    arm_q: np.ndarray
    gripper_width: float
    base_twist: np.ndarray
    head: np.ndarray

    def to_array(self) -> np.ndarray:
        """Flat float32 vector ``[arm_q, gripper_width, vx, vy, wz, pan, tilt]``."""
        return np.concatenate(
            [self.arm_q, [self.gripper_width], self.base_twist, self.head]
        ).astype(np.float32)

    @classmethod
    def from_array(cls, a: np.ndarray, n_arm: int = 7) -> RobotCommand:
        a = np.asarray(a, dtype=float)
        return cls(a[:n_arm].copy(), float(a[n_arm]), a[n_arm + 1 : n_arm + 4].copy(), a[n_arm + 4 : n_arm + 6].copy())


@dataclass(frozen=True)
class ControlTarget:
    """What a skill asks of the brainstem for one control tick. ``None`` fields hold still.

    * ``ee_pose``: end-effector (``ee_link``) pose in the world frame; solved by IK;
    * ``arm_q``: joint targets, used instead of ``ee_pose`` when given;
    * ``gripper_width``: finger opening (m);
    * ``base_twist``: base velocity in the base frame; ``None`` = stop;
    * ``head``: ``(pan, tilt)`` targets.
    """

    ee_pose: Pose | None = None
    arm_q: np.ndarray | None = None
    gripper_width: float | None = None
    base_twist: np.ndarray | None = None
    head: np.ndarray | None = None


@dataclass
class ActionChunk:
    """A short sequence of control targets, one per control tick, produced by a skill."""

    targets: list[ControlTarget]

    def __len__(self) -> int:
        return len(self.targets)


class SkillStatus(str, enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass
class SkillResult:
    """Outcome of one skill call, for the orchestrator's anomaly handling and the summary.

    ``reason`` is a short machine-readable code on failure (``"not_found"``,
    ``"grasp_failed"``, ``"unreachable"``, ``"safety:JointLimitError"``, ``"timeout"``...);
    ``message`` a human-readable sentence. ``duration`` is simulated/robot time (s).
    """

    skill: str
    args: dict[str, str]
    status: SkillStatus
    reason: str = ""
    message: str = ""
    duration: float = 0.0
    ticks: int = 0
    data: dict[str, object] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status is SkillStatus.SUCCESS

    def to_dict(self) -> dict[str, object]:
        return {
            "skill": self.skill,
            "args": dict(self.args),
            "success": self.success,
            "reason": self.reason,
            "message": self.message,
            "duration_s": round(self.duration, 3),
            "ticks": self.ticks,
        } | ({"data": self.data} if self.data and not self.success else {})
