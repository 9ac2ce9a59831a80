"""Robot descriptions (:class:`RobotSpec`) for the robots mnemobot ships with."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from mnemobot.control.types import RobotSpec
from mnemobot.perception.types import Pose

__all__ = ["PANDA_ARM_JOINTS", "mobile_panda_spec", "panda_urdf_path"]

PANDA_ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))

# Limits from the Franka Panda datasheet (the URDF's hard limits, shrunk by the URDF's soft margin).
_PANDA_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
_PANDA_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
_PANDA_VELOCITY = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
# Ready posture: elbow up, hand pointing down in front of the base; manipulation starts here.
_PANDA_HOME = np.array([0.0, -0.6, 0.0, -2.4, 0.0, 1.8, 0.785])
# Carry posture: folded behind the head mast, hand down 0.63 m above the floor, out of the head
# camera's view (in the ready posture the hand hides objects on the surface being looked at).
_PANDA_STOW = np.array([2.8, -0.3, 0.0, -2.4, 0.0, 2.1, 0.785])
# Looking posture (empty hand, standing): the carry posture's upper arm still crosses about a
# fifth of the lower middle of the image, which hides what lies low and close (the inside of an
# open drawer). Leaning the shoulder back clears the view (under 0.1% of those pixels at any
# tilt); the hand then reaches 0.15 m behind the base, so it is not used while driving.
_PANDA_LOOK = np.array([2.8, 0.45, 0.0, -1.9, 0.0, 2.35, 0.785])

#: Arm base in the mobile base frame: the arm stands on top of a 0.30 m tall base, slightly forward.
MOBILE_BASE_HEIGHT = 0.30
ARM_MOUNT = Pose(np.array([0.10, 0.0, MOBILE_BASE_HEIGHT]))


def panda_urdf_path(path: str | Path | None = None) -> Path:
    """The Panda URDF to compute kinematics from.

    ``path`` wins when given (a robot's own description); otherwise the copy shipped in
    ``pybullet_data`` (installed with the ``sim`` extra).
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"robot description not found: {p}")
        return p
    spec = importlib.util.find_spec("pybullet_data")
    if spec is None or spec.origin is None:
        raise ImportError(
            "no Panda URDF given and pybullet_data is not installed: "
            "pass a URDF path or install the extra: pip install 'mnemobot[sim]'"
        )
    return Path(spec.origin).parent / "franka_panda" / "panda.urdf"


def mobile_panda_spec(urdf: str | Path | None = None, control_dt: float = 0.05) -> RobotSpec:
    """A Franka Panda on a holonomic mobile base with a pan/tilt RGB-D head."""
    return RobotSpec(
        arm_urdf=panda_urdf_path(urdf),
        arm_joints=PANDA_ARM_JOINTS,
        arm_base_link="panda_link0",
        ee_link="panda_grasptarget",
        arm_lower=_PANDA_LOWER.copy(),
        arm_upper=_PANDA_UPPER.copy(),
        arm_velocity=_PANDA_VELOCITY.copy(),
        arm_home=_PANDA_HOME.copy(),
        arm_mount=ARM_MOUNT,
        arm_stow=_PANDA_STOW.copy(),
        arm_look=_PANDA_LOOK.copy(),
        gripper_min=0.0,
        gripper_max=0.08,
        gripper_speed=0.2,
        base_max_linear=1.0,
        base_max_angular=1.5,
        control_dt=control_dt,
    )
