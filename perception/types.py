"""Plain types shared by every organ: poses, camera intrinsics, proprioception, observations.

They live here because perception is the lowest organ that needs them (memory, control and the
agent all import perception; perception imports none of them).

Conventions (used everywhere in mnemobot):

* World frame: right-handed, z up, metres.
* Base frame: x forward, y left, z up; the base pose is planar ``(x, y, yaw)`` in the world.
* Camera optical frame (ROS REP 103 / ``*_optical_frame``): z forward along the optical axis,
  x right, y down in the image.
* Quaternions are ``(x, y, z, w)``, as in ROS and pybullet.
* Depth images hold the z coordinate in the optical frame, in metres (float32); 0 or non-finite
  means "no return".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "slerp",
    "CameraIntrinsics",
    "Observation",
    "ObservationError",
    "Pose",
    "Proprioception",
    "quat_from_matrix",
    "quat_multiply",
    "quat_to_matrix",
    "yaw_quat",
]


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of two ``(x, y, z, w)`` quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a unit ``(x, y, z, w)`` quaternion."""
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions, ``t`` in [0, 1]."""
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(d)
    return (math.sin((1 - t) * theta) * q0 + math.sin(t * theta) * q1) / math.sin(theta)


def quat_from_matrix(m: np.ndarray) -> np.ndarray:
    """Unit ``(x, y, z, w)`` quaternion of a 3x3 rotation matrix (w >= 0)."""
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q, dtype=float)
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion of a rotation by ``yaw`` radians about +z."""
    return np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])


@dataclass(frozen=True)
class Pose:
    """A rigid transform: ``position`` (metres) and ``quaternion`` ``(x, y, z, w)``.

    ``Pose`` of frame B in frame A maps points from B to A: ``p_A = pose.apply(p_B)``.
    """

    position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    quaternion: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0, 1.0]))

    def __post_init__(self) -> None:
        p = np.asarray(self.position, dtype=float).reshape(3)
        q = np.asarray(self.quaternion, dtype=float).reshape(4)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise ValueError(f"Pose has non-finite values: position={p}, quaternion={q}")
        n = np.linalg.norm(q)
        if n < 1e-9:
            raise ValueError("Pose quaternion has zero norm")
        object.__setattr__(self, "position", p)
        object.__setattr__(self, "quaternion", q / n)

    @classmethod
    def from_matrix(cls, m: np.ndarray) -> Pose:
        """Pose from a 4x4 homogeneous transform."""
        return cls(m[:3, 3].copy(), quat_from_matrix(m[:3, :3]))

    @classmethod
    def from_xyz_yaw(cls, x: float, y: float, z: float, yaw: float) -> Pose:
        return cls(np.array([x, y, z]), yaw_quat(yaw))

    @classmethod
    def look_at(cls, eye: Sequence[float], target: Sequence[float]) -> Pose:
        """Optical-frame camera pose at ``eye`` looking at ``target`` (z forward, x right, y down,
        the image's x level with the world's horizon). ``target`` must not be straight above or below."""
        e = np.asarray(eye, dtype=float)
        z = np.asarray(target, dtype=float) - e
        z /= np.linalg.norm(z)
        x = np.cross(z, [0.0, 0.0, 1.0])
        n = float(np.linalg.norm(x))
        if n < 1e-9:
            raise ValueError("look_at: the target is straight above or below the eye")
        x /= n
        return cls(e, quat_from_matrix(np.stack([x, np.cross(z, x), z], axis=1)))

    @property
    def rotation(self) -> np.ndarray:
        """3x3 rotation matrix."""
        return quat_to_matrix(self.quaternion)

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous transform."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.position
        return m

    def __matmul__(self, other: Pose) -> Pose:
        """Composition: ``(a @ b).apply(p) == a.apply(b.apply(p))``."""
        return Pose(
            self.position + self.rotation @ other.position,
            quat_multiply(self.quaternion, other.quaternion),
        )

    def inverse(self) -> Pose:
        r_t = self.rotation.T
        q = self.quaternion * np.array([-1.0, -1.0, -1.0, 1.0])
        return Pose(-r_t @ self.position, q)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points of shape ``(3,)`` or ``(N, 3)`` into the parent frame."""
        pts = np.asarray(points, dtype=float)
        return pts @ self.rotation.T + self.position

    @property
    def yaw(self) -> float:
        """Heading about +z of the frame's x axis, radians."""
        r = self.rotation
        return math.atan2(r[1, 0], r[0, 0])


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height``."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width: int, height: int, vertical_fov_deg: float) -> CameraIntrinsics:
        """Square-pixel intrinsics from a vertical field of view (degrees)."""
        f = height / (2.0 * math.tan(math.radians(vertical_fov_deg) / 2.0))
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    def matrix(self) -> np.ndarray:
        """3x3 K matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Proprioception:
    """What the robot knows about its own body at time ``t`` (seconds).

    * ``arm_q`` / ``arm_dq``: arm joint positions (rad) and velocities (rad/s), shape ``(n,)``.
    * ``gripper_width``: distance between the fingers, metres.
    * ``base_pose``: planar pose ``(x, y, yaw)`` of the base in the world (metres, rad).
    * ``base_twist``: ``(vx, vy, wz)`` in the base frame (m/s, m/s, rad/s).
    * ``head``: ``(pan, tilt)`` of the camera head, rad.
    """

    t: float
    arm_q: np.ndarray
    arm_dq: np.ndarray
    gripper_width: float
    base_pose: np.ndarray
    base_twist: np.ndarray = field(default_factory=lambda: np.zeros(3))
    head: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def base_pose3d(self) -> Pose:
        """The base pose as a 3D :class:`Pose` on the floor (z = 0)."""
        x, y, yaw = (float(v) for v in self.base_pose)
        return Pose.from_xyz_yaw(x, y, 0.0, yaw)


class ObservationError(ValueError):
    """A sensor frame whose arrays are malformed or disagree with each other or with its labels."""


@dataclass(frozen=True)
class Observation:
    """One synchronised sensor frame.

    * ``rgb``: ``(H, W, 3)`` uint8; ``depth``: ``(H, W)`` float32 metres along the optical axis.
    * ``camera_pose``: optical frame in the world frame.
    * ``instances``: optional ``(H, W)`` int32 instance ids, 0 = background/unlabelled;
      ``labels`` maps instance id -> label for the ids present (sim or a detector).
    * ``proprio``: the robot state at ``timestamp``.
    * ``scores``: detector confidence in [0, 1] per instance id; an id not listed scores 1.0
      (perfect masks list none).
    """

    timestamp: float
    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: CameraIntrinsics
    camera_pose: Pose
    instances: np.ndarray | None = None
    labels: dict[int, str] = field(default_factory=dict)
    proprio: Proprioception | None = None
    scores: dict[int, float] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`ObservationError` naming the problem if the frame is malformed.

        Checks, in order: ``rgb`` is ``(H, W, 3)`` uint8 and ``depth`` is ``(H, W)`` for the
        intrinsics' size; ``depth`` is floating point, has no negative or ``-inf`` pixel and at
        least one valid pixel (finite and > 0; 0, NaN and +inf are "no return" pixels and are
        allowed); the instance mask, when present, is ``(H, W)`` of an integer dtype and every
        non-zero id in it has an entry in ``labels``.
        """
        h, w = self.intrinsics.height, self.intrinsics.width
        if self.rgb.shape != (h, w, 3) or self.rgb.dtype != np.uint8:
            raise ObservationError(f"rgb must be ({h}, {w}, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.depth.shape != (h, w):
            raise ObservationError(f"depth must be ({h}, {w}), got {self.depth.shape}")
        if not np.issubdtype(self.depth.dtype, np.floating):
            raise ObservationError(f"depth must be floating point metres, got dtype {self.depth.dtype}")
        negative = int(np.count_nonzero(self.depth < 0))  # -inf counts; NaN compares False
        if negative:
            raise ObservationError(
                f"depth has {negative} pixels with negative values or -inf "
                "(no-return pixels must be 0, NaN or +inf)"
            )
        if not np.any(np.isfinite(self.depth) & (self.depth > 0)):
            raise ObservationError("depth has no valid pixels (every pixel is NaN, +inf or 0)")
        if self.instances is None:
            return
        if self.instances.shape != (h, w):
            raise ObservationError(f"instance mask must be ({h}, {w}), got {self.instances.shape}")
        if not np.issubdtype(self.instances.dtype, np.integer):
            raise ObservationError(f"instance mask must have an integer dtype, got {self.instances.dtype}")
        ids = self.instances
        if ids.size and int(ids.min()) >= 0 and int(ids.max()) < (1 << 20):  # counting pass, no sort
            present = np.flatnonzero(np.bincount(ids.ravel().astype(np.intp, copy=False)))
        else:
            present = np.unique(ids)
        missing = [i for i in present.tolist() if i != 0 and i not in self.labels]
        if missing:
            shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise ObservationError(f"instance ids [{shown}] are not in the label map")

