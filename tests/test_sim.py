"""The simulated household world: environments, rendering, robot body, walls and the drawer.

Real pybullet throughout (no mocks). One environment is shared per module; each test resets it.
"""

from __future__ import annotations

import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("pybullet")

import mnemobot.sim  # noqa: E402  (registers the environments)
from mnemobot.control.robot import RobotInterface  # noqa: E402
from mnemobot.control.types import JointLimitError, RobotCommand, SafetyError, VelocityLimitError  # noqa: E402
from mnemobot.perception.types import Observation, Pose, quat_from_matrix  # noqa: E402
from mnemobot.sim.env import HouseholdEnv  # noqa: E402
from mnemobot.sim.layout import DEFAULT_LAYOUT  # noqa: E402


@pytest.fixture(scope="module")
def env() -> HouseholdEnv:
    e = gym.make("mnemobot/Household-v0").unwrapped
    yield e
    e.close()


def command(env: HouseholdEnv, arm_q: np.ndarray | None = None, gripper: float = 0.08,
            twist: tuple[float, float, float] = (0.0, 0.0, 0.0), head: np.ndarray | None = None) -> RobotCommand:
    robot = env.robot
    return RobotCommand(
        robot.spec.arm_home if arm_q is None else np.asarray(arm_q, float), gripper,
        np.asarray(twist, float), robot.head if head is None else np.asarray(head, float),
    )


def run(env: HouseholdEnv, cmd: RobotCommand, ticks: int) -> None:
    for _ in range(ticks):
        env.robot.step(cmd)


def look_at(env: HouseholdEnv, point: np.ndarray, ticks: int = 12) -> Observation:
    """Turn the head to ``point`` (arm held at home) and return a fresh frame."""
    run(env, command(env, head=env.robot.head_angles_towards(point)), ticks)
    return env.robot.observe()


def top_down(position: np.ndarray, yaw: float) -> Pose:
    """End-effector pose pointing down, fingers closing across ``yaw + pi/2``."""
    c, s = math.cos(yaw), math.sin(yaw)
    return Pose(np.asarray(position, float), quat_from_matrix(np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])))


# -- registration and gymnasium API -------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*WARN")  # the checker's advice on unbounded / unnormalised boxes
@pytest.mark.parametrize("env_id", sorted(mnemobot.sim.ENV_IDS))
def test_check_env_passes_for_every_registered_env(env_id: str) -> None:
    from gymnasium.utils.env_checker import check_env

    e = gym.make(env_id, render_mode="rgb_array")
    try:
        check_env(e.unwrapped)
        frame = e.unwrapped.render()
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    finally:
        e.close()


def test_episode_truncates_after_max_episode_s() -> None:
    e = gym.make("mnemobot/HouseholdFetch-v0", max_episode_s=0.1, width=64, height=48).unwrapped
    try:
        obs, info = e.reset(seed=0)
        assert obs["rgb"].shape == (48, 64, 3)
        hold = command(e).to_array()
        assert e.step(hold)[3] is False
        _, reward, terminated, truncated, info = e.step(hold)
        assert (reward, terminated, truncated) == (0.0, False, True)
        assert info["sim_time"] == pytest.approx(0.1)
    finally:
        e.close()


def test_sim_package_imports_without_pybullet_and_make_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['pybullet'] = None\n"
        "import gymnasium, mnemobot.sim, mnemobot.sim.layout, mnemobot.sim.tasks\n"
        "assert not mnemobot.sim.PYBULLET_AVAILABLE\n"
        "try:\n    gymnasium.make('mnemobot/HouseholdPlace-v0')\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'mnemobot[sim]'" in out.stdout


def test_robot_implements_the_robot_interface(env: HouseholdEnv) -> None:
    assert isinstance(env.robot, RobotInterface)
    env.reset(seed=0)
    state = env.robot.read()
    np.testing.assert_allclose(state.arm_q, env.robot.spec.arm_home, atol=1e-3)
    assert state.gripper_width == pytest.approx(0.08, abs=1e-3)
    assert env.robot.hold().t == pytest.approx(env.robot.spec.control_dt)


def test_same_seed_and_actions_give_identical_observations(env: HouseholdEnv) -> None:
    rng = np.random.default_rng(42)
    low, high = env.action_space.low, env.action_space.high
    home = command(env).to_array()
    actions = [np.clip(home + rng.normal(0, 0.2, home.shape).astype(np.float32), low, high) for _ in range(25)]

    def rollout(seed: int) -> list[dict[str, np.ndarray]]:
        obs, _ = env.reset(seed=seed)
        return [obs] + [env.step(a)[0] for a in actions]

    first, other, again = rollout(3), rollout(4), rollout(3)
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(first[0]["rgb"], other[0]["rgb"])


def test_different_seeds_spawn_objects_differently(env: HouseholdEnv) -> None:
    def positions(seed: int) -> np.ndarray:
        env.reset(seed=seed)
        return np.array([env.backend.object_pose(label).position for label in env.backend.object_labels()])

    p0, p1, p0_again = positions(0), positions(1), positions(0)
    np.testing.assert_array_equal(p0, p0_again)
    assert np.abs(p0 - p1).max() > 0.05


def test_reset_places_every_object_on_a_reachable_surface(env: HouseholdEnv) -> None:
    env.reset(seed=5)
    lay = env.config.layout
    for label in env.backend.object_labels():
        where = env.backend.place_of(label)
        assert where is not None and where[1] == "on", label
        spec = lay.place_spec(where[0])
        assert spec.spawn
        x, y, yaw = lay.stand_pose(spec)
        arm = np.array([x + 0.1 * math.cos(yaw), y + 0.1 * math.sin(yaw)])
        centre = env.backend.object_pose(label).position[:2]
        assert np.linalg.norm(centre - arm) < lay.spawn_reach[1] + 0.04, label


@pytest.mark.parametrize(
    ("index", "value", "error"),
    [(0, float("nan"), JointLimitError), (3, 0.5, JointLimitError), (7, 0.2, JointLimitError),
     (8, 3.0, VelocityLimitError), (10, float("inf"), VelocityLimitError), (12, -1.0, JointLimitError)],
)
def test_bad_actions_raise_safety_errors(env: HouseholdEnv, index: int, value: float, error: type) -> None:
    env.reset(seed=0)
    action = command(env).to_array()
    action[index] = value
    with pytest.raises(error) as info:
        env.step(action)
    assert issubclass(error, SafetyError)
    assert "refused" in str(info.value)


def test_wrong_action_shape_raises(env: HouseholdEnv) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(np.zeros(5, dtype=np.float32))


def test_observation_matches_its_space_and_camera_refreshes_at_camera_hz(env: HouseholdEnv) -> None:
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space
    assert set(info) >= {"labels", "instruction", "success", "sim_time"}
    frame_times = []
    for _ in range(8):
        obs, *_ = env.step(command(env).to_array())
        frame_times.append(float(obs["camera_time"][0]))
    # 20 Hz control, 5 Hz camera: a new frame every fourth step
    assert frame_times == pytest.approx([0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.4], abs=1e-6)
    assert float(obs["time"][0]) == pytest.approx(0.4)
    frame = env.observation()
    assert frame.timestamp == pytest.approx(0.4)
    frame.validate()
    assert frame.labels == info["labels"]


# -- layout ---------------------------------------------------------------------------------------
def test_layout_has_rooms_places_and_graspable_objects(env: HouseholdEnv) -> None:
    site, lay, world = env.site_map, env.config.layout, env.backend
    assert list(site.rooms) == ["kitchen", "living_room", "bedroom"]
    assert len(site.doorways) == 2 and len(site.places) >= 6 and len(lay.objects) >= 10
    assert len({o.rgba for o in lay.objects}) == len(lay.objects)
    for place in site.places.values():
        assert site.room_of(place.stand[:2]) == place.room
        assert 0.45 <= place.surface.position[2] <= 0.75, place.name
        x, y, yaw = place.stand
        arm = np.array([x + 0.1 * math.cos(yaw), y + 0.1 * math.sin(yaw)])
        work = place.surface.position.copy()
        if place.articulated:  # the drawer is worked on open
            work += np.asarray(place.open_direction) * place.open_distance
        offset = work[:2] - arm
        assert 0.45 <= np.linalg.norm(offset) <= 0.6 + 1e-9, place.name
        assert math.cos(math.atan2(offset[1], offset[0]) - yaw) > 0.99, place.name  # facing it
        assert not env.robot.collides(np.array(place.stand)), place.name
    drawer = site.place("drawer")
    assert drawer.relation == "in" and drawer.articulated and drawer.open_distance >= 0.25
    np.testing.assert_allclose(drawer.handle.rotation[:, 0], -np.asarray(drawer.open_direction), atol=1e-9)
    env.reset(seed=0)
    for label in world.object_labels():
        world.teleport_object(label, Pose(np.array([0.5, 0.5, 1.5])))
        lo, hi = world.object_aabb(label)
        np.testing.assert_allclose(hi - lo, world.object_extent(label), atol=1e-6)
        assert min(hi[:2] - lo[:2]) <= 0.07, label
        assert lay.object_spec(label).mass <= 0.2


# -- rendering -------------------------------------------------------------------------------------
def test_camera_sees_object_with_label_and_metric_depth(env: HouseholdEnv) -> None:
    env.reset(seed=0)
    world, robot = env.backend, env.robot
    place = env.site_map.place("kitchen_table")
    robot.reset(place.stand)
    world.put_object("duck", "kitchen_table", xy_offset=(0.05, 0.3))
    obs = look_at(env, world.object_pose("duck").position)
    iid = world.instance_id("duck")
    assert obs.labels[iid] == "duck"
    mask = obs.instances == iid
    assert mask.sum() > 50
    v, u = np.nonzero(mask)
    z = obs.depth[v, u].astype(float)
    k = obs.intrinsics
    pts_cam = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=1)
    pts = obs.camera_pose.apply(pts_cam)
    lo, hi = world.object_aabb("duck")
    inside = np.all((pts >= lo - 0.02) & (pts <= hi + 0.02), axis=1)
    assert inside.mean() > 0.98
    assert np.linalg.norm(np.median(pts, axis=0) - (lo + hi) / 2) < 0.04


def test_objects_in_other_rooms_are_not_visible_from_stand_poses(env: HouseholdEnv) -> None:
    env.reset(seed=2)
    world, robot, site = env.backend, env.robot, env.site_map
    room_of_label = {f.name: f.room for f in DEFAULT_LAYOUT.furniture}
    for label in world.object_labels():
        room_of_label[label] = site.place(world.place_of(label)[0]).room
    for place in site.places.values():
        robot.reset(place.stand)
        obs = look_at(env, place.surface.position)
        seen_rooms = {room_of_label[label] for label in obs.labels.values()}
        assert seen_rooms <= {place.room}, (place.name, obs.labels)


def test_instance_ids_are_deterministic(env: HouseholdEnv) -> None:
    ids = env.backend.instance_labels()
    for i, label in enumerate(DEFAULT_LAYOUT.object_labels, start=1):
        assert ids[i] == label
    for j, furn in enumerate(DEFAULT_LAYOUT.furniture):
        assert ids[100 + j] == furn.name


# -- robot body --------------------------------------------------------------------------------------
def test_walls_stop_the_base_and_doorways_let_it_through(env: HouseholdEnv) -> None:
    env.reset(seed=0)
    robot = env.robot
    robot.reset((2.25, 0.8, -math.pi / 2))  # kitchen, facing the south wall
    run(env, command(env, twist=(0.8, 0.0, 0.0)), 40)
    assert 0.33 < robot.base_pose[1] < 0.40
    assert not robot.collides(robot.base_pose)
    robot.reset((3.0, 3.0, 0.0))  # facing the kitchen/living-room wall, away from the doorway
    run(env, command(env, twist=(0.8, 0.0, 0.0)), 40)
    assert 4.0 < robot.base_pose[0] < 4.2
    robot.reset((3.6, 1.1, 0.0))  # facing the doorway
    run(env, command(env, twist=(0.8, 0.0, 0.0)), 60)
    assert robot.base_pose[0] > 5.0
    assert env.backend.robot_room() == "living_room"


def test_base_twist_is_in_the_base_frame(env: HouseholdEnv) -> None:
    env.reset(seed=0)
    robot = env.robot
    robot.reset((6.75, 2.5, math.pi / 2))
    state = robot.step(command(env, twist=(0.0, 0.5, 0.0)))  # sideways = world -x when facing +y
    np.testing.assert_allclose(state.base_pose, [6.75 - 0.025, 2.5, math.pi / 2], atol=1e-9)
    np.testing.assert_allclose(state.base_twist, [0.0, 0.5, 0.0], atol=1e-9)


def test_grasp_assist_picks_and_releases_a_cube(env: HouseholdEnv) -> None:
    placements = {}
    for seed in range(20):
        env.reset(seed=seed)
        placements = {label: env.backend.place_of(label)[0] for label in env.backend.object_labels()}
        if placements["red_cube"] != "tray":
            break
    world, robot = env.backend, env.robot
    robot.reset(env.site_map.place(placements["red_cube"]).stand)
    lo, hi = world.object_aabb("red_cube")
    centre, yaw = (lo + hi) / 2, world.object_pose("red_cube").yaw
    run(env, command(env, robot.ik(top_down(centre + [0, 0, 0.12], yaw))), 40)
    grasp_q = robot.ik(top_down(centre, yaw))
    run(env, command(env, grasp_q), 30)
    run(env, command(env, grasp_q, gripper=0.0), 20)
    assert robot.held_label == "red_cube" and world.is_held("red_cube")
    assert robot.read().gripper_width == pytest.approx(0.05, abs=0.005)
    run(env, command(env, robot.ik(top_down(centre + [0, 0, 0.2], yaw)), gripper=0.0), 30)
    assert world.object_aabb("red_cube")[0][2] > lo[2] + 0.15
    run(env, command(env, robot.read().arm_q, gripper=0.08), 30)
    assert robot.held_label is None and not world.is_held("red_cube")


# -- the drawer --------------------------------------------------------------------------------------
def test_drawer_hides_its_content_when_closed_and_slides_along_its_joint(env: HouseholdEnv) -> None:
    env.reset(seed=0)
    world, robot = env.backend, env.robot
    drawer = env.site_map.place("drawer")
    assert drawer.open_distance >= 0.25
    world.set_drawer(drawer.open_distance)
    shift = np.asarray(drawer.open_direction) * drawer.open_distance
    open_centre = world.place_surface("drawer").position
    np.testing.assert_allclose(open_centre, drawer.surface.position + shift, atol=1e-6)
    world.put_object("blue_cube", "drawer", xy_offset=(0.0, 0.12))  # beside the arm, which hides the centre
    world.settle(0.3)
    assert world.place_of("blue_cube") == ("drawer", "in")
    robot.reset(drawer.stand)
    iid = world.instance_id("blue_cube")
    assert iid in look_at(env, open_centre).labels
    world.set_drawer(0.0)
    world.settle(0.2)
    assert world.drawer_opening() == pytest.approx(0.0, abs=1e-3)
    assert world.place_of("blue_cube") == ("drawer", "in")
    np.testing.assert_allclose(world.place_surface("drawer").position, drawer.surface.position, atol=1e-6)
    for head_target in (open_centre, drawer.surface.position):
        obs = look_at(env, head_target)
        assert iid not in obs.labels
        assert world.instance_id("drawer") in obs.labels


def test_robot_opens_the_drawer_by_its_handle(env: HouseholdEnv) -> None:
    env.reset(seed=0)
    world, robot = env.backend, env.robot
    drawer = env.site_map.place("drawer")
    robot.reset(drawer.stand)
    handle = drawer.handle
    approach = handle.rotation[:, 0]
    rot = np.stack([np.cross([0.0, 0.0, 1.0], approach), [0.0, 0.0, 1.0], approach], axis=1)
    direction = np.asarray(drawer.open_direction)

    def at(offset: float) -> Pose:
        return Pose(handle.position + direction * offset, quat_from_matrix(rot))

    run(env, command(env, robot.ik(at(0.1))), 40)
    run(env, command(env, robot.ik(at(0.0))), 30)
    run(env, command(env, robot.read().arm_q, gripper=0.0), 15)
    assert robot.held_label == "drawer"
    for offset in np.linspace(0.02, 0.28, 14):
        run(env, command(env, robot.ik(at(offset)), gripper=0.0), 6)
    assert world.drawer_opening() > 0.25
    run(env, command(env, robot.read().arm_q, gripper=0.08), 10)
    assert robot.held_label is None
