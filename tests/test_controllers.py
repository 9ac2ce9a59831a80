"""The brainstem: safety limits, e-stop, end-effector tracking, and no ``assert`` in control code."""

from __future__ import annotations

import ast
import dataclasses
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from mnemobot.control.controllers import Controller, EStop, SafetyGuard
from mnemobot.control.robots import mobile_panda_spec
from mnemobot.control.types import (
    ControlTarget,
    EStopError,
    JointLimitError,
    RobotCommand,
    RobotState,
    SafetyError,
    VelocityLimitError,
    WorkspaceLimitError,
)
from mnemobot.perception.types import Pose

CONTROL_DIR = Path(__file__).resolve().parents[1] / "control"


@pytest.fixture(scope="module")
def spec():
    pytest.importorskip("pybullet_data", reason="the Panda URDF ships with pybullet_data")
    return mobile_panda_spec()


def make_state(spec, arm_q=None, head=(0.0, 0.5), base=(1.0, -0.5, 0.3), gripper=0.04) -> RobotState:
    q = spec.arm_home.copy() if arm_q is None else np.asarray(arm_q, dtype=float)
    return RobotState(
        t=0.0,
        arm_q=q,
        arm_dq=np.zeros(spec.n_arm),
        gripper_width=gripper,
        base_pose=np.asarray(base, dtype=float),
        head=np.asarray(head, dtype=float),
    )


@pytest.fixture
def ctl(spec):
    c = Controller(spec)
    c.reset(make_state(spec))
    return c


# --- hold-last semantics -------------------------------------------------------------------------


def test_empty_target_holds_last_command(spec, ctl):
    state = make_state(spec)
    cmd = ctl.command(ControlTarget(), state)
    np.testing.assert_array_equal(cmd.arm_q, spec.arm_home)
    np.testing.assert_array_equal(cmd.base_twist, np.zeros(3))
    np.testing.assert_array_equal(cmd.head, [0.0, 0.5])
    assert cmd.gripper_width == pytest.approx(0.04)


def test_fields_pass_through(spec, ctl):
    state = make_state(spec)
    q = spec.arm_home + 0.05
    cmd = ctl.command(
        ControlTarget(
            arm_q=q, gripper_width=0.0, base_twist=np.array([0.5, -0.3, 0.8]), head=np.array([0.05, 0.45])
        ),
        state,
    )
    np.testing.assert_allclose(cmd.arm_q, q)
    assert cmd.gripper_width == 0.0
    np.testing.assert_allclose(cmd.base_twist, [0.5, -0.3, 0.8])
    np.testing.assert_allclose(cmd.head, [0.05, 0.45])
    # the next empty target holds the new arm/head/gripper, and stops the base
    cmd2 = ctl.command(ControlTarget(), state)
    np.testing.assert_allclose(cmd2.arm_q, q)
    np.testing.assert_allclose(cmd2.base_twist, np.zeros(3))
    assert cmd2.gripper_width == 0.0


# --- every limit raises its own type ---------------------------------------------------------------


def test_arm_joint_above_upper_limit(spec):
    near = spec.arm_home.copy()
    near[3] = spec.arm_upper[3] - 0.01
    ctl = Controller(spec)
    ctl.reset(make_state(spec, arm_q=near))
    bad = near.copy()
    bad[3] = spec.arm_upper[3] + 0.02
    with pytest.raises(JointLimitError, match="panda_joint4"):
        ctl.command(ControlTarget(arm_q=bad), make_state(spec, arm_q=near))


def test_arm_joint_below_lower_limit(spec):
    near = spec.arm_home.copy()
    near[5] = spec.arm_lower[5] + 0.01
    ctl = Controller(spec)
    ctl.reset(make_state(spec, arm_q=near))
    bad = near.copy()
    bad[5] = spec.arm_lower[5] - 0.02
    with pytest.raises(JointLimitError, match="panda_joint6"):
        ctl.command(ControlTarget(arm_q=bad), make_state(spec, arm_q=near))


def test_arm_joint_velocity(spec, ctl):
    state = make_state(spec)
    max_step = spec.arm_velocity[0] * spec.control_dt
    ok = spec.arm_home.copy()
    ok[0] += max_step * 1.005  # inside the 1 % tolerance
    ctl.command(ControlTarget(arm_q=ok), state)
    too_fast = ok.copy()
    too_fast[0] += max_step * 1.05
    with pytest.raises(VelocityLimitError, match="panda_joint1"):
        ctl.command(ControlTarget(arm_q=too_fast), state)


def test_velocity_is_checked_against_last_command_not_state(spec, ctl):
    """The measured state lags: a command near the last command passes even if far from it."""
    step = spec.arm_home.copy()
    step[1] += 0.08  # 1.6 rad/s
    ctl.command(ControlTarget(arm_q=step), make_state(spec))
    step2 = step.copy()
    step2[1] += 0.08
    lagging_state = make_state(spec)  # still at home: 0.16 rad behind
    cmd = ctl.command(ControlTarget(arm_q=step2), lagging_state)
    np.testing.assert_allclose(cmd.arm_q, step2)


@pytest.mark.parametrize("width", [-0.01, 0.1])
def test_gripper_width_limits(spec, ctl, width):
    with pytest.raises(JointLimitError, match="gripper"):
        ctl.command(ControlTarget(gripper_width=width), make_state(spec))


@pytest.mark.parametrize(
    ("twist", "match"),
    [
        ((0.8, 0.8, 0.0), "linear"),
        ((-1.2, 0.0, 0.0), "linear"),
        ((0.0, 0.0, 2.0), "angular"),
        ((0, 0, -1.6), "angular"),
    ],
)
def test_base_twist_limits(spec, ctl, twist, match):
    with pytest.raises(VelocityLimitError, match=match):
        ctl.command(ControlTarget(base_twist=np.array(twist, dtype=float)), make_state(spec))


def test_base_twist_at_limit_passes(spec, ctl):
    v = spec.base_max_linear / math.sqrt(2)
    cmd = ctl.command(ControlTarget(base_twist=np.array([v, v, spec.base_max_angular])), make_state(spec))
    assert cmd.base_twist[2] == spec.base_max_angular


def test_head_limits(spec):
    ctl = Controller(spec)
    near = (spec.head_upper[0] - 0.01, 0.5)
    ctl.reset(make_state(spec, head=near))
    with pytest.raises(JointLimitError, match="pan"):
        ctl.command(
            ControlTarget(head=np.array([spec.head_upper[0] + 0.02, 0.5])), make_state(spec, head=near)
        )
    low_tilt = (0.0, spec.head_lower[1] + 0.01)
    ctl.reset(make_state(spec, head=low_tilt))
    with pytest.raises(JointLimitError, match="tilt"):
        ctl.command(
            ControlTarget(head=np.array([0.0, spec.head_lower[1] - 0.02])), make_state(spec, head=low_tilt)
        )


def test_head_velocity(spec, ctl):
    step = spec.head_velocity * spec.control_dt
    with pytest.raises(VelocityLimitError, match="head pan"):
        ctl.command(ControlTarget(head=np.array([step * 1.1, 0.5])), make_state(spec))
    cmd = ctl.command(ControlTarget(head=np.array([step, 0.5])), make_state(spec))
    assert cmd.head[0] == pytest.approx(step)


@pytest.mark.parametrize("field", ["arm_q", "gripper_width", "base_twist", "head"])
def test_nan_raises_naming_the_field(spec, ctl, field):
    values = {
        "arm_q": np.where(np.arange(spec.n_arm) == 2, np.nan, spec.arm_home),
        "gripper_width": float("nan"),
        "base_twist": np.array([0.0, np.inf, 0.0]),
        "head": np.array([np.nan, 0.5]),
    }
    with pytest.raises(SafetyError, match=field):
        ctl.command(ControlTarget(**{field: values[field]}), make_state(spec))


def test_wrong_shape_raises(spec, ctl):
    with pytest.raises(SafetyError, match="arm_q"):
        ctl.command(ControlTarget(arm_q=spec.arm_home[:6]), make_state(spec))


def test_refused_command_is_not_remembered(spec, ctl):
    before = ctl.last_command
    with pytest.raises(VelocityLimitError):
        ctl.command(ControlTarget(arm_q=spec.arm_home + 0.5), make_state(spec))
    assert ctl.last_command is before
    cmd = ctl.command(ControlTarget(), make_state(spec))
    np.testing.assert_array_equal(cmd.arm_q, spec.arm_home)


def test_guard_requires_reset(spec):
    guard = SafetyGuard(spec)
    cmd = RobotCommand(spec.arm_home.copy(), 0.04, np.zeros(3), np.zeros(2))
    with pytest.raises(SafetyError, match="reset"):
        guard.check(cmd)
    guard.reset(make_state(spec, head=(0.0, 0.0)))
    guard.check(cmd)


def test_workspace_box(spec, ctl):
    state = make_state(spec)
    far = Pose(np.array([4.0, 0.0, 0.5]))
    with pytest.raises(WorkspaceLimitError, match="workspace"):
        ctl.command(ControlTarget(ee_pose=far), state)


def test_unreachable_inside_box(spec, ctl):
    state = make_state(spec)
    local = Pose(np.array([0.85, 0.85, 0.9]), np.array([0.0, 1.0, 0.0, 0.0]))  # in the box, out of reach
    target = ctl.arm_base_pose(state) @ local
    with pytest.raises(WorkspaceLimitError, match="unreachable"):
        ctl.command(ControlTarget(ee_pose=target), state)


# --- e-stop ----------------------------------------------------------------------------------------


def test_estop_blocks_command_allows_hold_and_release_restores(spec):
    estop = EStop()
    ctl = Controller(spec, estop=estop)
    state = make_state(spec)
    ctl.reset(state)
    ctl.command(ControlTarget(base_twist=np.array([0.3, 0.0, 0.0])), state)

    worker = threading.Thread(target=estop.engage, args=("bumper pressed",))
    worker.start()
    worker.join()
    assert estop.engaged and estop.reason == "bumper pressed"
    with pytest.raises(EStopError, match="bumper pressed"):
        ctl.command(ControlTarget(), state)
    held = ctl.hold(state)
    np.testing.assert_array_equal(held.base_twist, np.zeros(3))
    np.testing.assert_array_equal(held.arm_q, spec.arm_home)
    np.testing.assert_array_equal(held.head, [0.0, 0.5])

    estop.release()
    assert not estop.engaged and estop.reason == ""
    cmd = ctl.command(ControlTarget(base_twist=np.array([0.1, 0.0, 0.0])), state)
    assert cmd.base_twist[0] == pytest.approx(0.1)


def test_hold_before_reset_uses_state(spec):
    ctl = Controller(spec)
    ctl.estop.engage("test")
    q = spec.arm_home + 0.1
    held = ctl.hold(make_state(spec, arm_q=q))
    np.testing.assert_allclose(held.arm_q, q)


# --- frames and tracking ---------------------------------------------------------------------------


def test_ee_pose_frames(spec, ctl):
    state = make_state(spec, base=(2.0, 1.0, 1.2))
    ee = ctl.ee_pose(state)
    local = ctl.world_to_arm_base(state) @ ee
    fk = ctl.kinematics.fk(state.arm_q)
    np.testing.assert_allclose(local.position, fk.position, atol=1e-12)
    # the arm base sits at arm_mount on the base: its world height is the mount height
    assert ctl.arm_base_pose(state).position[2] == pytest.approx(spec.arm_mount.position[2])


def test_straight_line_ee_path_tracks(spec):
    """1 cm per tick forward and down, in front of a base that is turned in the world."""
    state = make_state(spec, base=(1.0, -0.5, 0.7))
    ctl = Controller(spec)
    ctl.reset(state)
    start = ctl.ee_pose(state)
    forward = state.base_pose3d().rotation @ np.array([1.0, 0.0, 0.0])
    direction = forward * 0.8 + np.array([0.0, 0.0, -0.6])  # unit length
    for k in range(1, 31):
        goal = Pose(start.position + 0.01 * k * direction, start.quaternion)
        cmd = ctl.command(ControlTarget(ee_pose=goal), state)
        state = dataclasses.replace(state, arm_q=cmd.arm_q, t=state.t + spec.control_dt)  # ideal tracking
        reached = ctl.ee_pose(state)
        assert np.linalg.norm(reached.position - goal.position) <= 1e-3
        assert np.linalg.norm(reached.rotation - goal.rotation) <= 2e-2
    assert np.linalg.norm(ctl.ee_pose(state).position - start.position) == pytest.approx(0.30, abs=1e-3)


# --- no assert in control code ---------------------------------------------------------------------


def test_no_assert_in_control_code():
    offenders = []
    for path in sorted(CONTROL_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [f"{path.name}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    assert not offenders, f"safety checks must raise, not assert: {offenders}"
