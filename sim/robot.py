"""The simulated mobile manipulator: a kinematic holonomic base, a Franka Panda and a pan/tilt head.

:class:`SimRobot` implements :class:`mnemobot.control.robot.RobotInterface` on a
:class:`~mnemobot.sim.backend.PyBulletBackend`.

* Base: a 0.6 x 0.5 m box, ``MOBILE_BASE_HEIGHT`` tall, moved kinematically. The commanded twist
  ``(vx, vy, wz)`` (base frame, m/s and rad/s) is integrated every physics step; a step that would
  make the footprint overlap a wall or a piece of furniture on the floor is refused (the base
  slides along the obstacle when one axis is free, otherwise it stops).
* Arm: the Panda stands on the base at ``spec.arm_mount``; joints follow position targets with
  ``maxVelocity`` = ``spec.arm_velocity`` and the URDF's forces.
* Gripper: each finger to ``width / 2`` with ``grasp_force`` N. Grasp assist: when the gripper
  closes and both fingers touch the same object (or the drawer), a fixed constraint attaches it to
  ``panda_hand`` and the fingers stop at its width; opening past that width + ``release_margin``
  (or fully) releases it. Only contacts whose normal lies along the closing axis count, so
  fingers resting on top of an object do not grasp it. For a second after a release, fingers
  still touching the released object open with 4x the force: contact penetration can otherwise
  pin them to it and the object is carried away instead of being put down.
* Head: a camera on a mast, its optical centre at ``spec.head_mount`` (base frame). Its
  optical frame: pan about the base z axis, then tilt about the head's sideways axis (tilt > 0
  looks down). Pan and tilt move kinematically at ``spec.head_velocity``.
* Sensing: :meth:`SimRobot.observe` returns what the robot perceives. With a sensor model
  (``sensor``, see :mod:`mnemobot.sim.sensors`) that is the exact render with depth, detector and
  pose errors, and the base pose in it is dead-reckoned from noisy odometry; without one (or with
  the ``ideal`` profile) it is the exact render. Control reads the same believed base pose
  (:meth:`read`), so what perception places in the world and where the arm reaches agree, while
  the simulator moves the true body (``base_pose``); ground truth for scoring reads
  :meth:`true_observation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mnemobot.control.kinematics import ArmKinematics, from_spec
from mnemobot.control.motion import head_angles_towards
from mnemobot.control.robots import MOBILE_BASE_HEIGHT, mobile_panda_spec
from mnemobot.control.types import RobotCommand, RobotSpec, RobotState
from mnemobot.perception.sensor import SensorModel
from mnemobot.perception.types import Observation, Pose, Proprioception, quat_from_matrix
from mnemobot.sim.backend import PyBulletBackend, fast_panda_urdf, pybullet_data_path, quiet_native_output
from mnemobot.sim.layout import Rect
from mnemobot.sim.sensors import SensorSimulator

__all__ = ["Grasp", "SimRobot", "SimRobotConfig", "head_rotation"]

# Optical frame axes in the head frame (head: x forward, y left, z up; optical: z fwd, x right, y down).
_HEAD_TO_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def head_rotation(pan: float, tilt: float) -> np.ndarray:
    """Rotation of the camera optical frame in the base frame for head angles (rad)."""
    cp, sp, ct, st = math.cos(pan), math.sin(pan), math.cos(tilt), math.sin(tilt)
    rz = np.array([[cp, -sp, 0.0], [sp, cp, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[ct, 0.0, st], [0.0, 1.0, 0.0], [-st, 0.0, ct]])
    return rz @ ry @ _HEAD_TO_OPTICAL


@dataclass(frozen=True)
class SimRobotConfig:
    """Body and actuator settings of the simulated robot (metres, newtons, radians).

    ``start_head``: head ``(pan, tilt)`` at reset; ``start_gripper``: finger opening at reset.
    """

    base_size: tuple[float, float] = (0.6, 0.5)
    grasp_force: float = 40.0
    finger_friction: float = 1.5
    release_margin: float = 0.01
    pinch_cos: float = 0.6
    constraint_force: float = 300.0
    start_head: tuple[float, float] = (0.0, 0.5)
    start_gripper: float = 0.08
    base_rgba: tuple[float, float, float, float] = (0.2, 0.2, 0.22, 1.0)


@dataclass(frozen=True)
class Grasp:
    """An active grasp: the constraint id, the held body and link, and the finger width (m)."""

    constraint: int
    body: int
    link: int
    width: float


class SimRobot:
    """A simulated mobile Panda with an RGB-D head camera; see the module docstring."""

    def __init__(self, backend: PyBulletBackend, spec: RobotSpec | None = None,
                 config: SimRobotConfig | None = None, sensor: SensorModel | None = None) -> None:
        self.backend = backend
        self.spec = spec or mobile_panda_spec()
        self.config = config or SimRobotConfig()
        self._pb = backend.client
        self._substeps = max(1, int(round(self.spec.control_dt * backend.config.physics_hz)))
        self._obstacles = backend.layout.obstacles()
        corners = np.array([ob.corners() for ob in self._obstacles]).reshape(-1, 4, 2)
        self._obstacle_lo, self._obstacle_hi = corners.min(axis=1), corners.max(axis=1)
        self.base_pose = np.array(backend.layout.start_pose, dtype=float)
        self.base_twist = np.zeros(3)
        self.head = np.array(self.config.start_head, dtype=float)
        self._head_target = self.head.copy()
        self._gripper_target = self.config.start_gripper
        self.grasp: Grasp | None = None
        self._release_boost_until = -1.0
        self._released_body = -1
        self._kinematics: ArmKinematics | None = None
        self._frame: Observation | None = None
        self._truth: Observation | None = None
        self._odometer = np.zeros(2)  # metres driven, radians turned since the reset
        self.sensor: SensorSimulator | None = None
        if sensor is not None and not sensor.is_ideal:
            self.sensor = SensorSimulator(sensor, known_labels=backend.object_categories())
        with quiet_native_output():
            self._build()
        backend.attach_robot(self)
        self.reset()

    # -- building ----------------------------------------------------------------------------------
    def _build(self) -> None:
        pb, cfg = self._pb, self.config
        half = [cfg.base_size[0] / 2, cfg.base_size[1] / 2, MOBILE_BASE_HEIGHT / 2]
        mount = self.spec.head_mount.position
        mast_len = float(mount[2]) - MOBILE_BASE_HEIGHT - 0.06
        mast_pos = [float(mount[0]), float(mount[1]), MOBILE_BASE_HEIGHT + mast_len / 2]
        col = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=half, collisionFramePosition=[0, 0, half[2]])
        vis = pb.createVisualShapeArray(
            [pb.GEOM_BOX, pb.GEOM_CYLINDER], halfExtents=[half, [0, 0, 0]], radii=[0, 0.03],
            lengths=[0, mast_len], visualFramePositions=[[0, 0, half[2]], mast_pos],
        )
        self._base_uid = pb.createMultiBody(0.0, col, vis, basePosition=[0, 0, 0])
        pb.changeVisualShape(self._base_uid, -1, rgbaColor=cfg.base_rgba)
        self._arm_uid = pb.loadURDF(str(self._arm_urdf()), [0, 0, 0], useFixedBase=True,
                                    flags=pb.URDF_ENABLE_CACHED_GRAPHICS_SHAPES)
        self._index_joints()
        self._arm_inertial = Pose(*[np.asarray(v) for v in pb.getDynamicsInfo(self._arm_uid, -1)[3:5]])
        for link in (-1, 0):
            pb.setCollisionFilterPair(self._base_uid, self._arm_uid, -1, link, 0)
        for finger in self._fingers:
            pb.changeDynamics(self._arm_uid, finger, lateralFriction=cfg.finger_friction)

    def _arm_urdf(self) -> Path:
        """The spec's arm URDF; pybullet_data's Panda is swapped for its fast-rendering copy."""
        stock = Path(pybullet_data_path()) / "franka_panda" / "panda.urdf"
        if Path(self.spec.arm_urdf).resolve() == stock.resolve():
            return fast_panda_urdf(self.backend.config.cache_dir)
        return Path(self.spec.arm_urdf)

    def _index_joints(self) -> None:
        pb = self._pb
        by_name: dict[str, int] = {}
        links: dict[str, int] = {}
        self._max_force: dict[int, float] = {}
        for j in range(pb.getNumJoints(self._arm_uid)):
            info = pb.getJointInfo(self._arm_uid, j)
            by_name[info[1].decode()] = j
            links[info[12].decode()] = j
            self._max_force[j] = float(info[10])
        missing = [n for n in self.spec.arm_joints if n not in by_name]
        if missing:
            raise ValueError(f"arm URDF lacks joints {missing}")
        self._arm = [by_name[n] for n in self.spec.arm_joints]
        self._fingers = [by_name["panda_finger_joint1"], by_name["panda_finger_joint2"]]
        self._hand = links["panda_hand"]
        self.ee_link = links[self.spec.ee_link]

    # -- lifecycle ---------------------------------------------------------------------------------
    def reset(self, base_pose: tuple[float, float, float] | None = None, sensor_seed: int = 0) -> RobotState:
        """Back to the start state: base at ``base_pose`` (default: the layout's start pose),
        arm at ``spec.arm_home``, gripper open, head at ``config.start_head``, nothing held;
        the sensor's random streams restart from ``sensor_seed`` and its odometry at the truth."""
        self.release()
        pb = self._pb
        self.base_pose = np.array(base_pose if base_pose is not None else self.backend.layout.start_pose, float)
        self.base_twist = np.zeros(3)
        self.head = np.array(self.config.start_head, dtype=float)
        self._head_target = self.head.copy()
        self._place_bodies()
        for j, q in zip(self._arm, self.spec.arm_home, strict=True):
            pb.resetJointState(self._arm_uid, j, float(q), 0.0)
        for f in self._fingers:
            pb.resetJointState(self._arm_uid, f, self.config.start_gripper / 2, 0.0)
        self._set_arm_targets(self.spec.arm_home)
        self._set_gripper_target(self.config.start_gripper)
        self._frame = self._truth = None
        self._odometer = np.zeros(2)
        if self.sensor is not None:
            self.sensor.reset(sensor_seed, self.base_pose)
        return self.read()

    def release(self) -> None:
        """Drop whatever the grasp assist holds (removes its constraint)."""
        if self.grasp is None:
            return
        pb = self._pb
        ids = {pb.getConstraintUniqueId(i) for i in range(pb.getNumConstraints())}
        if self.grasp.constraint in ids:
            pb.removeConstraint(self.grasp.constraint)
        self._released_body = self.grasp.body
        self.grasp = None
        self._release_boost_until = self.backend.time + 1.0

    # -- RobotInterface ----------------------------------------------------------------------------
    def read(self) -> RobotState:
        """Current proprioception (time = backend sim time). Its base pose is the one the robot
        believes (odometry, with a sensor model): control, like perception, works in the robot's
        own estimate of where it is, as on a real robot; the simulator moves the true body."""
        return self._state(self.believed_base_pose())

    def _state(self, base_pose: np.ndarray) -> RobotState:
        pb = self._pb
        arm = pb.getJointStates(self._arm_uid, self._arm)
        fingers = pb.getJointStates(self._arm_uid, self._fingers)
        return Proprioception(
            t=self.backend.time,
            arm_q=np.array([s[0] for s in arm]),
            arm_dq=np.array([s[1] for s in arm]),
            gripper_width=float(fingers[0][0] + fingers[1][0]),
            base_pose=np.asarray(base_pose, dtype=float).copy(),
            base_twist=self.base_twist.copy(),
            head=self.head.copy(),
        )

    def step(self, cmd: RobotCommand) -> RobotState:
        """Apply ``cmd`` for ``spec.control_dt`` seconds (physics substeps) and return the state."""
        self._set_arm_targets(cmd.arm_q)
        self._set_gripper_target(float(cmd.gripper_width))
        self._head_target = np.clip(np.asarray(cmd.head, float), self.spec.head_lower, self.spec.head_upper)
        twist = np.asarray(cmd.base_twist, dtype=float)
        dt = self.backend.dt
        for _ in range(self._substeps):
            self._move_base(twist, dt)
            self._move_head(dt)
            self.backend.step()
            self._update_grasp()
        if self.sensor is not None:  # odometry integrates every control tick, whoever looks
            self.sensor.base_pose(self.base_pose, self._odometer)
        return self.read()

    def hold(self) -> RobotState:
        """Stop the base and hold the arm, gripper and head where they are for one control period."""
        state = self.read()
        cmd = RobotCommand(state.arm_q, self._gripper_target, np.zeros(3), state.head)
        return self.step(cmd)

    def observe(self) -> Observation:
        """The head camera's frame as the robot perceives it, with proprioception (cached per
        simulated timestamp): the exact render, through the sensor model when there is one."""
        if self._frame is not None and self._frame.timestamp == self.backend.time:
            return self._frame
        pose = self.camera_pose()
        rgb, depth, instances, labels = self.backend.render(pose)
        self._truth = Observation(
            timestamp=self.backend.time, rgb=rgb, depth=depth, intrinsics=self.backend.intrinsics,
            camera_pose=pose, instances=instances, labels=labels, proprio=self._state(self.base_pose),
        )
        self._frame = self._truth
        if self.sensor is not None:
            self._frame = self.sensor.perceive(self._truth, self.camera_in_base(), self._odometer)
        return self._frame

    def true_observation(self) -> Observation:
        """The exact render of the current frame with the true poses (ground truth: scoring and
        gold answers only, never perception or memory)."""
        self.observe()
        if self._truth is None:
            raise RuntimeError("no frame rendered")
        return self._truth

    def believed_base_pose(self) -> np.ndarray:
        """The base pose ``(x, y, yaw)`` the robot believes (odometry with the sensor model's
        errors; the true pose without a sensor model)."""
        if self.sensor is None:
            return self.base_pose.copy()
        return self.sensor.base_pose(self.base_pose, self._odometer)

    def perceived_state(self, state: RobotState) -> tuple[RobotState, Pose]:
        """``state`` with the believed base pose, and the camera pose built from it (no per-frame
        jitter): what a recording of the robot's own belief holds."""
        if self.sensor is None:
            return state, self.camera_pose()
        believed = self.believed_base_pose()
        camera = self.sensor.camera_pose(believed, self.camera_in_base(state.head), jitter=False)
        return replace(state, base_pose=believed), camera

    @property
    def arm_uid(self) -> int:
        """pybullet body id of the arm (for scripted experts, tools and benchmarks)."""
        return self._arm_uid

    @property
    def base_uid(self) -> int:
        """pybullet body id of the mobile base with its mast."""
        return self._base_uid

    # -- geometry helpers --------------------------------------------------------------------------
    def base_pose3d(self) -> Pose:
        x, y, yaw = (float(v) for v in self.base_pose)
        return Pose.from_xyz_yaw(x, y, 0.0, yaw)

    def camera_in_base(self, head: np.ndarray | None = None) -> Pose:
        """Optical-frame pose of the head camera in the base frame (``head`` angles, default current)."""
        pan, tilt = (float(v) for v in (self.head if head is None else head))
        return Pose(self.spec.head_mount.position, quat_from_matrix(head_rotation(pan, tilt)))

    def camera_pose(self, head: np.ndarray | None = None) -> Pose:
        """True optical-frame pose of the head camera in the world (``head`` angles, default current)."""
        return self.base_pose3d() @ self.camera_in_base(head)

    def head_angles_towards(self, point: np.ndarray) -> np.ndarray:
        """Head ``(pan, tilt)`` (rad, within limits) that centre world ``point`` in the image."""
        angles = head_angles_towards(self.spec, self.base_pose3d(), point)
        return np.clip(angles, self.spec.head_lower, self.spec.head_upper)

    def ee_pose(self) -> Pose:
        """World pose of ``spec.ee_link`` (the grasp target between the fingertips)."""
        state = self._pb.getLinkState(self._arm_uid, self.ee_link, computeForwardKinematics=True)
        return Pose(np.asarray(state[4]), np.asarray(state[5]))

    def ik(self, ee_pose: Pose, seed: np.ndarray | None = None) -> np.ndarray:
        """Arm joint targets (rad) putting ``ee_link`` at world ``ee_pose`` (tests and experts).

        Uses the brainstem's own URDF kinematics, seeded at ``seed`` (default: the current
        joints), with restarts; returns the best solution, which may miss an unreachable pose.
        """
        if self._kinematics is None:
            self._kinematics = from_spec(self.spec)
        arm_base = self.base_pose3d() @ self.spec.arm_mount
        q0 = self.read().arm_q if seed is None else np.asarray(seed, dtype=float)
        res = self._kinematics.ik(arm_base.inverse() @ ee_pose, q0, self.spec.arm_lower, self.spec.arm_upper,
                                  restarts=8)
        return res.q

    def footprint(self, pose: np.ndarray | None = None) -> Rect:
        x, y, yaw = (float(v) for v in (self.base_pose if pose is None else pose))
        return Rect((x, y), self.config.base_size, yaw)

    def collides(self, pose: np.ndarray) -> bool:
        """Whether the base footprint at ``pose`` overlaps a wall or furniture."""
        fp = self.footprint(pose)
        corners = fp.corners()
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        near = np.all((self._obstacle_lo <= hi) & (self._obstacle_hi >= lo), axis=1)
        return any(fp.overlaps(self._obstacles[i]) for i in np.flatnonzero(near))

    @property
    def held_label(self) -> str | None:
        """Label of the held object or ``"drawer"`` handle body's label, None when empty-handed."""
        return None if self.grasp is None else self.backend.label_of_body(self.grasp.body)

    # -- internals ---------------------------------------------------------------------------------
    def _place_bodies(self) -> None:
        """Put the base body and the arm where ``base_pose`` says (kinematic move)."""
        pb = self._pb
        base = self.base_pose3d()
        pb.resetBasePositionAndOrientation(self._base_uid, base.position.tolist(), base.quaternion.tolist())
        arm = base @ self.spec.arm_mount @ self._arm_inertial
        pb.resetBasePositionAndOrientation(self._arm_uid, arm.position.tolist(), arm.quaternion.tolist())

    def _move_base(self, twist: np.ndarray, dt: float) -> None:
        """Integrate the base twist over ``dt``, sliding along or stopping at obstacles."""
        if not np.any(twist):
            self.base_twist = np.zeros(3)
            return
        yaw = float(self.base_pose[2])
        c, s = math.cos(yaw), math.sin(yaw)
        dx = (c * twist[0] - s * twist[1]) * dt
        dy = (s * twist[0] + c * twist[1]) * dt
        dth = twist[2] * dt
        blocked_now = self.collides(self.base_pose)
        for delta in ((dx, dy, dth), (dx, dy, 0.0), (dx, 0.0, 0.0), (0.0, dy, 0.0), (0.0, 0.0, dth)):
            if not any(delta):
                continue
            new = self.base_pose + np.asarray(delta)
            new[2] = math.atan2(math.sin(new[2]), math.cos(new[2]))
            if blocked_now or not self.collides(new):
                self._apply_base_delta(np.asarray(delta), new, dt)
                return
        self.base_twist = np.zeros(3)

    def _apply_base_delta(self, delta: np.ndarray, new: np.ndarray, dt: float) -> None:
        yaw = float(self.base_pose[2])
        c, s = math.cos(yaw), math.sin(yaw)
        self.base_twist = np.array([c * delta[0] + s * delta[1], -s * delta[0] + c * delta[1], delta[2]]) / dt
        self._odometer += (math.hypot(float(delta[0]), float(delta[1])), abs(float(delta[2])))
        self.base_pose = new
        self._place_bodies()

    def _move_head(self, dt: float) -> None:
        step = self.spec.head_velocity * dt
        self.head = self.head + np.clip(self._head_target - self.head, -step, step)

    def _set_arm_targets(self, q: np.ndarray) -> None:
        pb = self._pb
        for j, target, vmax in zip(self._arm, np.asarray(q, float), self.spec.arm_velocity, strict=True):
            pb.setJointMotorControl2(self._arm_uid, j, pb.POSITION_CONTROL, targetPosition=float(target),
                                     maxVelocity=float(vmax), force=self._max_force[j])

    def _set_gripper_target(self, width: float) -> None:
        width = float(np.clip(width, self.spec.gripper_min, self.spec.gripper_max))
        if self.grasp is not None and width > min(self.grasp.width + self.config.release_margin,
                                                  self.spec.gripper_max - 1e-3):
            self.release()
        self._gripper_target = width
        hold = self.grasp.width if self.grasp is not None else width
        # right after a release, opening pushes with more force than the grasp squeezed, so
        # fingers left pressed into the object's contact (penetration) come free
        boost = (self.grasp is None and self.backend.time < self._release_boost_until
                 and hold > self._finger_width() + 0.005 and self._fingers_touch(self._released_body))
        force = self.config.grasp_force * (4.0 if boost else 1.0)
        for f in self._fingers:
            self._pb.setJointMotorControl2(self._arm_uid, f, self._pb.POSITION_CONTROL, targetPosition=hold / 2,
                                           maxVelocity=self.spec.gripper_speed / 2, force=force)

    def _finger_q(self) -> list[float]:
        return [float(s[0]) for s in self._pb.getJointStates(self._arm_uid, self._fingers)]

    def _finger_width(self) -> float:
        return float(sum(self._finger_q()))

    def _closing_axis(self) -> np.ndarray:
        """World direction along which the fingers close (the hand's y axis)."""
        quat = self._pb.getLinkState(self._arm_uid, self._hand, computeForwardKinematics=True)[1]
        return Pose(np.zeros(3), np.asarray(quat)).rotation[:, 1]

    def _pinched(self, finger: int, axis: np.ndarray) -> set[tuple[int, int]]:
        """Graspable ``(body, link)`` the finger presses along the closing axis (not on top)."""
        contacts = self._pb.getContactPoints(bodyA=self._arm_uid, linkIndexA=finger)
        return {
            (c[2], c[4]) for c in contacts
            if abs(float(np.dot(c[7], axis))) > self.config.pinch_cos and self.backend.is_graspable(c[2], c[4])
        }

    def _fingers_touch(self, body: int) -> bool:
        """Whether both fingers are in contact with ``body``."""
        pb = self._pb
        return all(any(c[2] == body for c in pb.getContactPoints(bodyA=self._arm_uid, linkIndexA=f))
                   for f in self._fingers)

    def _update_grasp(self) -> None:
        """Grasp assist: attach what both closing fingers pinch from opposite sides."""
        if self.grasp is not None:
            return
        width = self._finger_width()
        if self._gripper_target >= width - 1e-3:
            return
        axis = self._closing_axis()
        left = self._pinched(self._fingers[0], axis)
        if not left:
            return
        common = left & self._pinched(self._fingers[1], axis)
        if common:
            body, link = min(common)
            self._attach(body, link, width)

    def _attach(self, body: int, link: int, width: float) -> None:
        pb = self._pb
        hand = pb.getLinkState(self._arm_uid, self._hand, computeForwardKinematics=True)
        if link < 0:
            pos, quat = pb.getBasePositionAndOrientation(body)
        else:
            pos, quat = pb.getLinkState(body, link, computeForwardKinematics=True)[:2]
        hand_pose = Pose(np.asarray(hand[0]), np.asarray(hand[1]))
        rel = hand_pose.inverse() @ Pose(np.asarray(pos), np.asarray(quat))
        cid = pb.createConstraint(self._arm_uid, self._hand, body, link, pb.JOINT_FIXED, [0, 0, 0],
                                  rel.position.tolist(), [0, 0, 0], rel.quaternion.tolist(), [0, 0, 0, 1])
        pb.changeConstraint(cid, maxForce=self.config.constraint_force)
        self.grasp = Grasp(cid, body, link, width)
        self._set_gripper_target(self._gripper_target)

