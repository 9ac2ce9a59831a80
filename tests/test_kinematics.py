"""Arm kinematics from the URDF: FK against pybullet, Jacobian against finite differences, IK."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from mnemobot.control.kinematics import ArmKinematics, from_spec, rotation_error
from mnemobot.control.robots import PANDA_ARM_JOINTS, mobile_panda_spec
from mnemobot.perception.types import Pose


@pytest.fixture(scope="module")
def spec():
    pytest.importorskip("pybullet_data", reason="the Panda URDF ships with pybullet_data")
    return mobile_panda_spec()


@pytest.fixture(scope="module")
def kin(spec):
    return from_spec(spec)


@pytest.fixture(scope="module")
def bullet_panda(spec):
    """The Panda URDF in a pybullet DIRECT client, fixed base at the origin."""
    pb = pytest.importorskip("pybullet")
    client = pb.connect(pb.DIRECT)
    body = pb.loadURDF(str(spec.arm_urdf), useFixedBase=True, physicsClientId=client)
    infos = [
        pb.getJointInfo(body, i, physicsClientId=client)
        for i in range(pb.getNumJoints(body, physicsClientId=client))
    ]
    joints = {info[1].decode(): info[0] for info in infos}
    links = {info[12].decode(): info[0] for info in infos}
    yield pb, client, body, joints, links
    pb.disconnect(client)


def _random_q(spec, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(spec.arm_lower, spec.arm_upper)


def test_chain_matches_spec(kin):
    assert kin.n == 7
    assert kin.joint_names == PANDA_ARM_JOINTS
    assert np.all(kin.lower < kin.upper)


def test_fk_matches_pybullet(spec, kin, bullet_panda):
    pb, client, body, joints, links = bullet_panda
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = _random_q(spec, rng)
        for name, value in zip(kin.joint_names, q, strict=True):
            pb.resetJointState(body, joints[name], float(value), physicsClientId=client)
        state = pb.getLinkState(
            body, links[spec.ee_link], computeForwardKinematics=True, physicsClientId=client
        )
        # indices 4/5: the URDF link frame (0/1 would be the inertial frame)
        expected = Pose(np.array(state[4]), np.array(state[5]))
        got = kin.fk(q)
        assert np.linalg.norm(got.position - expected.position) < 1e-6
        assert np.linalg.norm(rotation_error(expected.rotation, got.rotation)) < 1e-6


def test_fk_home_is_above_base_pointing_down(spec, kin):
    tip = kin.fk(spec.arm_home)
    assert 0.2 < tip.position[0] < 0.7 and tip.position[2] > 0.2
    assert tip.rotation[:, 2] @ np.array([0.0, 0.0, -1.0]) > 0.9


def test_jacobian_matches_finite_differences(spec, kin):
    rng = np.random.default_rng(1)
    h = 1e-6
    for _ in range(20):
        q = _random_q(spec, rng)
        jac = kin.jacobian(q)
        assert jac.shape == (6, kin.n)
        m0 = kin.fk_matrix(q)
        for i in range(kin.n):
            dq = np.zeros(kin.n)
            dq[i] = h
            m1 = kin.fk_matrix(q + dq)
            lin = (m1[:3, 3] - m0[:3, 3]) / h
            ang = rotation_error(m1[:3, :3], m0[:3, :3]) / h
            np.testing.assert_allclose(jac[:3, i], lin, atol=1e-5)
            np.testing.assert_allclose(jac[3:, i], ang, atol=1e-5)


def test_ik_from_nearby_seed(spec, kin):
    rng = np.random.default_rng(2)
    trials, successes = 200, 0
    for _ in range(trials):
        q_true = _random_q(spec, rng)
        seed = np.clip(q_true + rng.normal(0.0, 0.1, kin.n), spec.arm_lower, spec.arm_upper)
        res = kin.ik(kin.fk(q_true), seed, spec.arm_lower, spec.arm_upper)
        assert np.all(res.q >= spec.arm_lower) and np.all(res.q <= spec.arm_upper)
        if res.success:
            successes += 1
            assert res.pos_err <= 1e-3 and res.rot_err <= 1e-2
            reached = kin.fk(res.q)
            assert np.linalg.norm(reached.position - kin.fk(q_true).position) <= 1e-3 + 1e-9
    assert successes / trials >= 0.95


def test_ik_position_only(spec, kin):
    target = Pose(np.array([0.5, 0.1, 0.4]))  # orientation ignored
    res = kin.ik(target, spec.arm_home, spec.arm_lower, spec.arm_upper, position_only=True)
    assert res.success and res.pos_err <= 1e-3 and res.rot_err == 0.0


def test_ik_unreachable_fails_fast(spec, kin):
    target = Pose(np.array([2.0, 0.0, 0.5]))
    start = time.perf_counter()
    res = kin.ik(target, spec.arm_home, spec.arm_lower, spec.arm_upper)
    elapsed = time.perf_counter() - start
    assert not res.success
    assert res.pos_err > 0.5
    assert res.iters <= 4 * 100
    assert elapsed < 2.0


def test_fk_and_ik_are_fast(spec, kin):
    """FK runs every control tick; a tracking IK solve from a nearby seed must stay well under 1 ms
    (generous bounds here so a loaded CI machine does not flake)."""
    q = spec.arm_home
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        kin.fk(q)
    fk_s = (time.perf_counter() - start) / n
    target = kin.fk(q + 0.02)
    start = time.perf_counter()
    for _ in range(200):
        res = kin.ik(target, q, spec.arm_lower, spec.arm_upper)
    ik_s = (time.perf_counter() - start) / 200
    assert res.success
    assert fk_s < 1e-3
    assert ik_s < 5e-3


def test_wrong_joint_names_raise(spec):
    with pytest.raises(ValueError, match="do not match"):
        ArmKinematics.from_urdf(spec.arm_urdf, "panda_link0", "panda_grasptarget", PANDA_ARM_JOINTS[:6])


def test_unknown_links_raise(spec):
    with pytest.raises(ValueError, match="not the child"):
        ArmKinematics.from_urdf(spec.arm_urdf, "panda_link0", "no_such_link")
    with pytest.raises(ValueError, match="not an ancestor"):
        ArmKinematics.from_urdf(spec.arm_urdf, "panda_leftfinger", "panda_grasptarget")


def test_prismatic_and_continuous_joints(tmp_path: Path):
    """A small hand-written chain: FK by hand and the Jacobian by finite differences."""
    urdf = tmp_path / "toy.urdf"
    urdf.write_text(
        """<robot name="toy">
  <link name="base"/><link name="a"/><link name="b"/><link name="tool"/>
  <joint name="slide" type="prismatic">
    <parent link="base"/><child link="a"/><origin xyz="0 0 0.1"/><axis xyz="0 0 1"/>
    <limit lower="0" upper="0.5" velocity="1" effort="1"/>
  </joint>
  <joint name="spin" type="continuous">
    <parent link="a"/><child link="b"/><origin xyz="0.2 0 0" rpy="0 0 0"/><axis xyz="0 0 1"/>
  </joint>
  <joint name="flange" type="fixed">
    <parent link="b"/><child link="tool"/><origin xyz="0.3 0 0" rpy="0 1.5707963267948966 0"/>
  </joint>
</robot>"""
    )
    kin = ArmKinematics.from_urdf(urdf, "base", "tool")
    assert kin.joint_names == ("slide", "spin")
    assert np.isinf(kin.upper[1])
    q = np.array([0.25, np.pi / 2])
    tip = kin.fk(q)
    np.testing.assert_allclose(tip.position, [0.2, 0.3, 0.35], atol=1e-12)
    jac = kin.jacobian(q)
    np.testing.assert_allclose(jac[:, 0], [0, 0, 1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(jac[:, 1], [-0.3, 0, 0, 0, 0, 1], atol=1e-12)
    res = kin.ik(Pose(np.array([0.2, -0.3, 0.3])), np.zeros(2), position_only=True)
    assert res.success and 0.0 <= res.q[0] <= 0.5
