"""Serial-chain kinematics of a robot arm from its URDF: forward kinematics, Jacobian, IK.

Pure numpy (the URDF is read with :mod:`xml.etree.ElementTree`), so the same code runs in
simulation and on a real robot without pybullet.

Frames and units: every pose and Jacobian is expressed in the frame of ``base_link`` (the arm
base, e.g. ``panda_link0``); positions in metres, angles in radians, prismatic joints in metres.
The tip frame is the URDF *link* frame of ``tip_link`` (not its inertial frame).

Example::

    kin = ArmKinematics.from_urdf(urdf_path, "panda_link0", "panda_grasptarget")
    tip = kin.fk(q)                                  # Pose of the tip in panda_link0
    res = kin.ik(target, q_seed, lower, upper)       # IKResult; res.success, res.q
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnemobot.control.types import RobotSpec
from mnemobot.perception.types import Pose

__all__ = ["ArmKinematics", "IKResult", "UrdfJoint", "from_spec", "parse_urdf_joints", "rotation_error"]

_ACTUATED = ("revolute", "continuous", "prismatic")
_SUPPORTED = (*_ACTUATED, "fixed")


@dataclass(frozen=True)
class UrdfJoint:
    """One URDF joint: ``origin`` is the 4x4 transform of the joint frame in the parent link
    frame; ``axis`` a unit vector in the joint frame; limits in rad (or m), velocity in rad/s
    (or m/s). Continuous joints have infinite limits."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray
    axis: np.ndarray
    lower: float
    upper: float
    velocity: float

    @property
    def actuated(self) -> bool:
        return self.type in _ACTUATED


@dataclass
class IKResult:
    """Outcome of :meth:`ArmKinematics.ik`.

    ``q``: best joint vector found (within the limits); ``pos_err`` (m) and ``rot_err`` (rad)
    its tip errors; ``iters``: solver iterations over all attempts.
    """

    q: np.ndarray
    success: bool
    pos_err: float
    rot_err: float
    iters: int


# --------------------------------------------------------------------------------------------
# URDF parsing
# --------------------------------------------------------------------------------------------


def _floats(text: str | None, default: Sequence[float]) -> np.ndarray:
    if text is None:
        return np.asarray(default, dtype=float)
    return np.array([float(v) for v in text.split()], dtype=float)


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF fixed-axis roll/pitch/yaw (rad) as a 3x3 rotation: ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def _origin_matrix(elem: ET.Element | None) -> np.ndarray:
    m = np.eye(4)
    if elem is None:
        return m
    m[:3, :3] = rpy_matrix(*_floats(elem.get("rpy"), (0.0, 0.0, 0.0)))
    m[:3, 3] = _floats(elem.get("xyz"), (0.0, 0.0, 0.0))
    return m


def _parse_joint(elem: ET.Element) -> UrdfJoint:
    name = elem.get("name", "?")
    jtype = elem.get("type", "")
    parent, child = elem.find("parent"), elem.find("child")
    if parent is None or child is None:
        raise ValueError(f"URDF joint {name!r} lacks a parent or child link")
    axis_elem = elem.find("axis")
    axis = _floats(None if axis_elem is None else axis_elem.get("xyz"), (1.0, 0.0, 0.0))
    if jtype in _ACTUATED:
        norm = float(np.linalg.norm(axis))
        if norm < 1e-12:
            raise ValueError(f"URDF joint {name!r} has a zero axis")
        axis = axis / norm
    limit = elem.find("limit")
    lower, upper, velocity = -math.inf, math.inf, math.inf
    if limit is not None:
        velocity = float(limit.get("velocity", "inf"))
        if jtype != "continuous":
            lower, upper = float(limit.get("lower", "0")), float(limit.get("upper", "0"))
    return UrdfJoint(
        name=name,
        type=jtype,
        parent=parent.get("link", ""),
        child=child.get("link", ""),
        origin=_origin_matrix(elem.find("origin")),
        axis=axis,
        lower=lower,
        upper=upper,
        velocity=velocity,
    )


def parse_urdf_joints(path: str | Path) -> dict[str, UrdfJoint]:
    """All joints of a URDF file, keyed by child link name."""
    root = ET.parse(path).getroot()
    return {j.child: j for j in (_parse_joint(e) for e in root.iter("joint"))}


def _chain(joints_by_child: dict[str, UrdfJoint], base_link: str, tip_link: str) -> list[UrdfJoint]:
    """Joints from ``base_link`` down to ``tip_link``, in order from the base."""
    chain: list[UrdfJoint] = []
    link = tip_link
    while link != base_link:
        joint = joints_by_child.get(link)
        if joint is None:
            if not chain and link == tip_link:
                raise ValueError(f"tip link {tip_link!r} is not the child of any joint in the URDF")
            raise ValueError(f"link {base_link!r} is not an ancestor of {tip_link!r} in the URDF")
        if joint.type not in _SUPPORTED:
            raise ValueError(f"joint {joint.name!r} has unsupported type {joint.type!r}")
        chain.append(joint)
        link = joint.parent
    return chain[::-1]


# --------------------------------------------------------------------------------------------
# Small rotation helpers
# --------------------------------------------------------------------------------------------


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _cross_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of two (n, 3) arrays (``np.cross`` is 3x slower at this size)."""
    out = np.empty_like(a)
    a0, a1, a2 = a.T
    b0, b1, b2 = b.T
    out[:, 0] = a1 * b2 - a2 * b1
    out[:, 1] = a2 * b0 - a0 * b2
    out[:, 2] = a0 * b1 - a1 * b0
    return out


def rotation_error(r_target: np.ndarray, r_current: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, rad) that turns ``r_current`` into ``r_target``, expressed
    in the common parent frame: ``r_target = exp(skew(w)) @ r_current``."""
    r = r_target @ r_current.T
    v = 0.5 * np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    s = float(np.linalg.norm(v))
    c = 0.5 * (r[0, 0] + r[1, 1] + r[2, 2] - 1.0)
    angle = math.atan2(s, c)
    if s > 1e-6:
        return v * (angle / s)
    if c > 0:  # small angle: sin(angle) ~ angle
        return v
    # angle ~ pi: the axis is the dominant column of (R + I) / 2
    b = 0.5 * (r + np.eye(3))
    k = int(np.argmax(np.diag(b)))
    axis = b[:, k] / math.sqrt(max(b[k, k], 1e-12))
    return axis / np.linalg.norm(axis) * angle


# --------------------------------------------------------------------------------------------
# The arm
# --------------------------------------------------------------------------------------------


class ArmKinematics:
    """Forward kinematics, geometric Jacobian and damped-least-squares IK of a serial chain.

    Built from the URDF chain ``base_link`` -> ``tip_link``; the actuated joints (revolute,
    continuous, prismatic) in chain order are the variables ``q``. Fixed transforms are folded
    into per-joint constants at construction, so one FK costs one 3x5 matrix product per joint.
    """

    def __init__(self, chain: Sequence[UrdfJoint], base_link: str, tip_link: str) -> None:
        actuated = [j for j in chain if j.actuated]
        if not actuated:
            raise ValueError(f"no actuated joint between {base_link!r} and {tip_link!r}")
        self.base_link = base_link
        self.tip_link = tip_link
        self.joints: tuple[UrdfJoint, ...] = tuple(actuated)
        self.joint_names: tuple[str, ...] = tuple(j.name for j in actuated)
        self.lower = np.array([j.lower for j in actuated])
        self.upper = np.array([j.upper for j in actuated])
        self.velocity = np.array([j.velocity for j in actuated])
        self._compile(chain)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_urdf(
        cls,
        path: str | Path,
        base_link: str,
        tip_link: str,
        joint_names: Sequence[str] | None = None,
    ) -> ArmKinematics:
        """Read the chain ``base_link`` -> ``tip_link`` from a URDF file.

        If ``joint_names`` is given it must equal the chain's actuated joints in order;
        otherwise a ``ValueError`` names the difference.
        """
        chain = _chain(parse_urdf_joints(path), base_link, tip_link)
        kin = cls(chain, base_link, tip_link)
        if joint_names is not None and tuple(joint_names) != kin.joint_names:
            raise ValueError(
                f"joint names {tuple(joint_names)} do not match the actuated joints "
                f"{kin.joint_names} of the URDF chain {base_link!r} -> {tip_link!r} in {path}"
            )
        return kin

    def _compile(self, chain: Sequence[UrdfJoint]) -> None:
        """Fold fixed joints into constants.

        For actuated joint ``i`` with fixed pre-transform ``(Rp, tp)`` (everything since the
        previous actuated joint, including its own origin) and axis ``a``, the local transform
        is ``R = Rp @ Rot(a, q) = A + sin(q) B + (1 - cos(q)) C`` and ``t = tp + Rp a q``
        (prismatic). :meth:`_local` assembles ``[R | t | Rp a]`` (3x5) per joint from these.
        """
        n = len(self.joints)
        self._a = np.zeros((n, 3, 3))
        self._b = np.zeros((n, 3, 3))
        self._c = np.zeros((n, 3, 3))
        self._tp = np.zeros((n, 3))
        self._d = np.zeros((n, 3))
        self._revolute = np.zeros(n)
        self._prismatic = np.zeros(n)
        pending = np.eye(4)
        i = 0
        for joint in chain:
            pending = pending @ joint.origin
            if not joint.actuated:
                continue
            rp, k = pending[:3, :3], _skew(joint.axis)
            self._a[i], self._tp[i], self._d[i] = rp, pending[:3, 3], rp @ joint.axis
            if joint.type == "prismatic":
                self._prismatic[i] = 1.0
            else:
                self._revolute[i] = 1.0
                self._b[i], self._c[i] = rp @ k, rp @ k @ k
            pending = np.eye(4)
            i += 1
        self._tail = pending

    # -- forward kinematics ---------------------------------------------------------------------

    @property
    def n(self) -> int:
        """Number of actuated joints."""
        return len(self.joints)

    def _check_q(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        if q.shape != (self.n,):
            raise ValueError(f"q must have shape ({self.n},), got {q.shape}")
        return q

    def _local(self, q: np.ndarray) -> np.ndarray:
        """Per-joint 3x5 blocks ``[R_local | t_local | axis_in_parent]`` for ``q``."""
        sq = np.sin(q) * self._revolute
        vq = (1.0 - np.cos(q)) * self._revolute
        m = np.empty((self.n, 3, 5))
        m[:, :, :3] = self._a + sq[:, None, None] * self._b + vq[:, None, None] * self._c
        m[:, :, 3] = self._tp + self._d * (q * self._prismatic)[:, None]
        m[:, :, 4] = self._d
        return m

    def _forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Tip rotation (3x3), tip position (3,), joint axes (n, 3) and joint origins (n, 3)
        in the base frame. Origins are where each joint frame sits before the joint moves."""
        local = self._local(q)
        world = np.empty_like(local)
        r = np.eye(3)
        for i in range(self.n):
            np.matmul(r, local[i], out=world[i])
            r = world[i, :, :3]
        axes = world[:, :, 4]
        p_after = np.cumsum(world[:, :, 3], axis=0)
        origins = p_after - axes * (q * self._prismatic)[:, None]
        p = p_after[-1] + r @ self._tail[:3, 3]
        r = r @ self._tail[:3, :3]
        return r, p, axes, origins

    def fk_matrix(self, q: np.ndarray) -> np.ndarray:
        """4x4 transform of the tip link frame in the base link frame."""
        r, p, _, _ = self._forward(self._check_q(q))
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = r, p
        return m

    def fk(self, q: np.ndarray) -> Pose:
        """Pose of the tip link frame in the base link frame."""
        return Pose.from_matrix(self.fk_matrix(q))

    def _jacobian(self, p_tip: np.ndarray, axes: np.ndarray, origins: np.ndarray) -> np.ndarray:
        jac = np.empty((6, self.n))
        rev = self._revolute[:, None]
        jac[:3] = (_cross_rows(axes, p_tip - origins) * rev + axes * (1.0 - rev)).T
        jac[3:] = (axes * rev).T
        return jac

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """Geometric Jacobian (6, n) of the tip in the base frame: rows 0-2 linear velocity
        (m/s per joint unit), rows 3-5 angular velocity (rad/s per joint unit)."""
        _, p, axes, origins = self._forward(self._check_q(q))
        return self._jacobian(p, axes, origins)

    # -- inverse kinematics ---------------------------------------------------------------------

    def ik(
        self,
        target: Pose,
        q_seed: np.ndarray,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        *,
        max_iters: int = 100,
        pos_tol: float = 1e-3,
        rot_tol: float = 1e-2,
        position_only: bool = False,
        restarts: int = 3,
        seed: int = 0,
    ) -> IKResult:
        """Joint vector that puts the tip at ``target`` (a pose in the base frame).

        Damped least squares with adaptive (Levenberg-Marquardt) damping; every iterate is
        clamped to ``[lower, upper]`` (default: the URDF limits). Starts from ``q_seed``; only
        if that fails, tries up to ``restarts`` random seeds drawn with ``seed`` and keeps the
        best. ``max_iters`` bounds each attempt, so an unreachable target returns
        ``success=False`` in bounded time. ``position_only`` ignores orientation.
        """
        lo = self.lower if lower is None else np.asarray(lower, dtype=float)
        hi = self.upper if upper is None else np.asarray(upper, dtype=float)
        problem = _IKProblem(self, target, lo, hi, max_iters, pos_tol, rot_tol, position_only)
        best = problem.solve(self._check_q(q_seed))
        if best.success or restarts <= 0:
            return best
        rng = np.random.default_rng(seed)
        lo_f = np.where(np.isfinite(lo), lo, -math.pi)  # continuous joints: one turn
        hi_f = np.where(np.isfinite(hi), hi, math.pi)
        total = best.iters
        for _ in range(restarts):
            res = problem.solve(rng.uniform(lo_f, hi_f))
            total += res.iters
            if problem.cost_of(res) < problem.cost_of(best):
                best = res
            if best.success:
                break
        best.iters = total
        return best


class _IKProblem:
    """One IK target: its residual, and a Levenberg-Marquardt solve from a given start."""

    LAMBDA_INIT = 1e-3
    LAMBDA_MIN = 1e-7
    LAMBDA_MAX = 1e3
    MAX_STEP = 0.4  # rad (or m) per joint and iteration
    STALL_GAIN = 1e-3  # an accepted step that lowers the squared error by less than this share...
    STALL_ITERS = 10  # ...this many times in a row ends the attempt

    def __init__(
        self,
        kin: ArmKinematics,
        target: Pose,
        lower: np.ndarray,
        upper: np.ndarray,
        max_iters: int,
        pos_tol: float,
        rot_tol: float,
        position_only: bool,
    ) -> None:
        self.kin = kin
        self.p_target = target.position
        self.r_target = target.rotation
        self.lower, self.upper = lower, upper
        self.max_iters = max_iters
        self.pos_tol, self.rot_tol = pos_tol, rot_tol
        self.rows = 3 if position_only else 6
        self.position_only = position_only

    def residual(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Error vector (position m, then rotation vector rad) and the matching Jacobian rows."""
        r, p, axes, origins = self.kin._forward(q)
        jac = self.kin._jacobian(p, axes, origins)
        err = np.empty(6)
        err[:3] = self.p_target - p
        err[3:] = 0.0 if self.position_only else rotation_error(self.r_target, r)
        return err[: self.rows], jac[: self.rows]

    def cost_of(self, res: IKResult) -> float:
        rot = 0.0 if self.position_only else res.rot_err
        return (res.pos_err / self.pos_tol) ** 2 + (rot / self.rot_tol) ** 2

    def _result(self, q: np.ndarray, err: np.ndarray, iters: int) -> IKResult:
        pos_err = float(np.linalg.norm(err[:3]))
        rot_err = float(np.linalg.norm(err[3:])) if self.rows == 6 else 0.0
        ok = pos_err <= self.pos_tol and rot_err <= self.rot_tol
        return IKResult(q, ok, pos_err, rot_err, iters)

    def _converged(self, err: np.ndarray) -> bool:
        if float(err[:3] @ err[:3]) > self.pos_tol**2:
            return False
        return self.rows == 3 or float(err[3:] @ err[3:]) <= self.rot_tol**2

    def _dls(self, jac: np.ndarray, err: np.ndarray, lam: float) -> np.ndarray:
        h = jac @ jac.T
        h[np.diag_indices_from(h)] += lam
        return jac.T @ np.linalg.solve(h, err)

    def _step(self, q: np.ndarray, jac: np.ndarray, err: np.ndarray, lam: float) -> np.ndarray:
        """Damped least-squares step; joints that would push past a limit they sit on are
        frozen and the step re-solved with the others, so clamping does not waste it."""
        dq = self._dls(jac, err, lam)
        blocked = ((q <= self.lower) & (dq < 0)) | ((q >= self.upper) & (dq > 0))
        if blocked.any():
            dq = self._dls(jac * ~blocked, err, lam)
        biggest = float(np.max(np.abs(dq)))
        return dq * (self.MAX_STEP / biggest) if biggest > self.MAX_STEP else dq

    def solve(self, q_start: np.ndarray) -> IKResult:
        """Levenberg-Marquardt from ``q_start`` (clamped into the limits first)."""
        q = np.clip(q_start, self.lower, self.upper)
        err, jac = self.residual(q)
        cost = float(err @ err)
        lam = self.LAMBDA_INIT
        iters = stalled = 0
        while iters < self.max_iters and not self._converged(err):
            iters += 1
            q_new = np.clip(q + self._step(q, jac, err, lam), self.lower, self.upper)
            err_new, jac_new = self.residual(q_new)
            cost_new = float(err_new @ err_new)
            if cost_new < cost:
                stalled = stalled + 1 if cost - cost_new < self.STALL_GAIN * cost else 0
                q, err, jac, cost = q_new, err_new, jac_new, cost_new
                lam = max(lam * 0.1, self.LAMBDA_MIN)
                if stalled >= self.STALL_ITERS:  # creeping along a limit or the reach boundary
                    break
            else:
                lam *= 10.0
                if lam > self.LAMBDA_MAX:  # no descent direction left: a local minimum
                    break
        return self._result(q, err, iters)


def from_spec(spec: RobotSpec) -> ArmKinematics:
    """The arm kinematics of a :class:`RobotSpec`: ``arm_base_link`` -> ``ee_link`` of
    ``arm_urdf``, checked against ``arm_joints``."""
    return ArmKinematics.from_urdf(spec.arm_urdf, spec.arm_base_link, spec.ee_link, spec.arm_joints)
