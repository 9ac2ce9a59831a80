"""What the learned policy sees and does, in numbers: one definition for recording and running.

* image: the head camera's colour image resized to ``IMAGE_SIZE`` (height, width), uint8;
* state (``STATE_NAMES``, 22): the 7 arm joints (rad), the finger opening (m), the end-effector
  pose in the arm-base frame (position, m, and the first two columns of its rotation matrix: the
  continuous "6D" rotation), the base pose the robot believes ``(x, y, yaw)`` (m, rad; map frame)
  and the head's pan and tilt (rad);
* action (``ACTION_NAMES``, 15): the commanded end-effector pose in the arm-base frame (position
  and 6D rotation), finger opening, base twist ``(vx, vy, wz)`` (base frame, m/s and rad/s) and
  head pan and tilt targets. The whole body: the experts drive the base and turn the head between
  the bench, the button and the drawers. An action is executed by the brainstem: the pose goes
  through IK, joint, velocity and workspace limits like any skill's target, and the base and head
  through theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnemobot.perception.types import Pose, quat_from_matrix

__all__ = ["ACTION_NAMES", "IMAGE_SIZE", "STATE_NAMES", "BodyAction", "action_features", "body_action",
           "from_rot6d", "image_features", "rot6d", "state_features"]

IMAGE_SIZE = (96, 128)
"""(height, width) of the policy's image: the head camera's 4:3 frame scaled down."""
_POSE_NAMES = ["ee_x", "ee_y", "ee_z", "r11", "r21", "r31", "r12", "r22", "r32"]
STATE_NAMES = [*(f"q{i}" for i in range(1, 8)), "gripper", *_POSE_NAMES, "base_x", "base_y", "base_yaw",
               "head_pan", "head_tilt"]
ACTION_NAMES = [*_POSE_NAMES, "gripper", "base_vx", "base_vy", "base_wz", "head_pan", "head_tilt"]


def rot6d(rotation: np.ndarray) -> np.ndarray:
    """The first two columns of a rotation matrix, ``(6,)``."""
    r = np.asarray(rotation, dtype=float)
    return np.concatenate([r[:, 0], r[:, 1]])


def from_rot6d(v: np.ndarray) -> np.ndarray:
    """The rotation matrix nearest a 6D rotation (Gram-Schmidt on its two columns)."""
    a, b = np.asarray(v[:3], dtype=float), np.asarray(v[3:6], dtype=float)
    na = np.linalg.norm(a)
    if na < 1e-6:
        raise ValueError("a 6D rotation with a zero first column")
    x = a / na
    b = b - x * float(x @ b)
    nb = np.linalg.norm(b)
    if nb < 1e-6:
        raise ValueError("a 6D rotation with parallel columns")
    y = b / nb
    return np.stack([x, y, np.cross(x, y)], axis=1)


def image_features(rgb: np.ndarray, size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """The camera image resized to ``size`` (height, width), uint8 ``(H, W, 3)``."""
    from PIL import Image

    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) colour image, got shape {img.shape}")
    if img.shape[:2] == tuple(size):
        return np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    pil = Image.fromarray(np.ascontiguousarray(img[..., :3], dtype=np.uint8))
    return np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR))


def _pose_features(kinematics: object, q: np.ndarray) -> np.ndarray:
    ee = kinematics.fk(np.asarray(q, dtype=float))  # type: ignore[attr-defined]
    return np.concatenate([ee.position, rot6d(ee.rotation)])


def state_features(state: object, kinematics: object) -> np.ndarray:
    """``STATE_NAMES`` of a robot state, float32 ``(22,)``."""
    q = np.asarray(state.arm_q, dtype=float)  # type: ignore[attr-defined]
    out = np.concatenate([q, [float(state.gripper_width)], _pose_features(kinematics, q),  # type: ignore[attr-defined]
                          np.asarray(state.base_pose, dtype=float)[:3], np.asarray(state.head, dtype=float)[:2]])  # type: ignore[attr-defined]
    return out.astype(np.float32)


def action_features(cmd: object, kinematics: object) -> np.ndarray:
    """``ACTION_NAMES`` of a brainstem command, float32 ``(15,)``."""
    pose = _pose_features(kinematics, np.asarray(cmd.arm_q, dtype=float))  # type: ignore[attr-defined]
    return np.concatenate([pose, [float(cmd.gripper_width)], np.asarray(cmd.base_twist, dtype=float)[:3],  # type: ignore[attr-defined]
                           np.asarray(cmd.head, dtype=float)[:2]]).astype(np.float32)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class BodyAction:
    """One action as the brainstem takes it: hand pose in the arm-base frame, finger opening (m),
    base twist ``(vx, vy, wz)`` and head ``(pan, tilt)``."""

    hand: Pose
    gripper: float
    base_twist: np.ndarray
    head: np.ndarray


def body_action(action: np.ndarray) -> BodyAction:
    """The :class:`BodyAction` of an action vector. Raises ``ValueError`` for a wrong size, NaN
    or a degenerate rotation."""
    a = np.asarray(action, dtype=float)
    if a.shape != (len(ACTION_NAMES),) or not np.all(np.isfinite(a)):
        raise ValueError(f"an action is {len(ACTION_NAMES)} finite numbers, got {np.round(a, 3).tolist()}")
    rot = from_rot6d(a[3:9])
    return BodyAction(Pose(a[:3], quat_from_matrix(rot)), float(a[9]), a[10:13].copy(), a[13:15].copy())
