"""Sensor simulation (``mnemobot.sim.sensors``) on real pybullet renders: depth noise statistics,
holes, range limits, edges, the detector's rates, poses and odometry, determinism, the gym
environment and the command line."""

from __future__ import annotations

import math
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("pybullet")

import mnemobot.sim  # noqa: E402,F401  (registers the environments)
from mnemobot.agent.cli import main  # noqa: E402
from mnemobot.perception.sensor import PROFILES, DepthNoise, DetectorNoise, PoseNoise, SensorModel  # noqa: E402
from mnemobot.perception.types import Pose  # noqa: E402
from mnemobot.sim.backend import BackendConfig, make_backend  # noqa: E402
from mnemobot.sim.env import EnvConfig, HouseholdEnv  # noqa: E402
from mnemobot.sim.sensors import (  # noqa: E402
    FALSE_POSITIVE_ID_BASE,
    DepthSimulator,
    DetectorSimulator,
    OdometrySimulator,
    SensorSimulator,
)

WALL_X = 100.0  # a flat wall far from the house, facing -x
WALL_Z = 10.0


@pytest.fixture(scope="module")
def wall_backend():  # noqa: ANN201
    """A pybullet world with a large flat box face at x = WALL_X (nothing else in view)."""
    backend = make_backend(config=BackendConfig(width=320, height=240))
    pb = backend.client
    half = [0.05, 8.0, 8.0]
    col = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=half)
    vis = pb.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=[0.7, 0.7, 0.7, 1])
    pb.createMultiBody(0.0, col, vis, basePosition=[WALL_X + half[0], 0.0, WALL_Z])
    yield backend
    backend.close()


def wall_depth(backend, distance: float) -> np.ndarray:  # noqa: ANN001
    """The exact depth image of the wall seen head-on from ``distance`` metres."""
    eye = [WALL_X - distance, 0.0, WALL_Z]
    _, depth, _, _ = backend.render(Pose.look_at(eye, [WALL_X, 0.0, WALL_Z]))
    return depth


@pytest.fixture(scope="module")
def house_frame():  # noqa: ANN201
    """An exact frame of the household (objects and furniture in view) and its robot."""
    env = HouseholdEnv(EnvConfig(task="fetch"))
    env.reset(seed=0)
    yield env.robot.true_observation(), env
    env.close()


# -- depth ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["kinect", "realsense"])
@pytest.mark.parametrize("distance", [1.0, 3.0])
def test_depth_noise_std_matches_the_model_on_a_flat_wall(wall_backend, profile: str, distance: float) -> None:  # noqa: ANN001
    truth = wall_depth(wall_backend, distance)
    assert np.allclose(truth, distance, atol=2e-3)  # the wall fills the image, head-on
    noise = PROFILES[profile].depth
    measured = DepthSimulator(noise).apply(truth, np.random.default_rng(0))
    ok = measured > 0
    residual = (measured - truth)[ok]
    expected = noise.sigma(distance)
    assert abs(residual.std() - expected) < 0.15 * expected, (residual.std(), expected)
    assert abs(residual.mean()) < 0.3 * expected


def test_holes_cover_the_hole_rate_in_blobs(wall_backend) -> None:  # noqa: ANN001
    truth = wall_depth(wall_backend, 1.5)
    noise = DepthNoise(hole_rate=0.05, hole_blob_px=8)
    rates, neighbours = [], []
    rng = np.random.default_rng(1)
    for _ in range(10):
        holes = DepthSimulator(noise).apply(truth, rng) == 0
        rates.append(holes.mean())
        inner = holes[1:-1, 1:-1]
        with_hole_neighbour = holes[:-2, 1:-1] | holes[2:, 1:-1] | holes[1:-1, :-2] | holes[1:-1, 2:]
        neighbours.append((inner & with_hole_neighbour).sum() / max(inner.sum(), 1))
    assert abs(np.mean(rates) - 0.05) < 0.005
    assert np.mean(neighbours) > 0.8  # blobs, not salt-and-pepper


def test_no_return_outside_the_range_limits(wall_backend) -> None:  # noqa: ANN001
    sim = DepthSimulator(DepthNoise(min_range=1.5, max_range=2.5))
    rng = np.random.default_rng(2)
    assert not np.any(sim.apply(wall_depth(wall_backend, 1.0), rng))
    assert not np.any(sim.apply(wall_depth(wall_backend, 3.0), rng))
    inside = sim.apply(wall_depth(wall_backend, 2.0), rng)
    assert np.all(inside > 0)
    kinect = DepthSimulator(PROFILES["kinect"].depth).apply(wall_depth(wall_backend, 5.0), rng)
    assert not np.any(kinect)  # beyond the Kinect's 4.5 m


def test_edge_band_loses_or_flies_returns_on_the_far_side(house_frame) -> None:  # noqa: ANN001
    truth, _ = house_frame
    z = truth.depth
    lost = DepthSimulator(DepthNoise(edge_px=2)).apply(z, np.random.default_rng(3))
    gone = (lost == 0) & (z > 0)
    assert gone.sum() > 20  # the furniture's silhouettes shadow the wall behind them
    near = z.copy()
    for _ in range(2):  # nearest depth within 2 px
        p = np.pad(near, 1, mode="edge")
        near = np.min([p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:], p[1:-1, 1:-1],
                       p[:-2, :-2], p[:-2, 2:], p[2:, :-2], p[2:, 2:]], axis=0)
    assert np.all(near[gone] < z[gone] - 0.04)  # every lost pixel lies behind a nearer surface
    flying = DepthSimulator(DepthNoise(edge_px=2, flying_rate=1.0)).apply(z, np.random.default_rng(3))
    assert not np.any((flying == 0) & (z > 0))
    moved = np.abs(flying - z) > 1e-6
    assert moved.sum() >= gone.sum()
    lo, hi = near[moved] - 1e-4, z[moved] + 5.0
    assert np.all((flying[moved] >= lo) & (flying[moved] <= hi))


# -- detector ---------------------------------------------------------------------------------------
def test_detector_rates_within_binomial_tolerance(house_frame) -> None:  # noqa: ANN001
    truth, env = house_frame
    group = ("living_room_table", "side_table", "tray")
    noise = replace(PROFILES["kinect"].detector, miss_rate=0.2, confusion_rate=0.3, confusions=(group,),
                    false_positive_rate=0.5, erode_px=0, dilate_px=0, min_pixels=30)
    known = env.backend.object_labels()
    det = DetectorSimulator(noise, known)
    counts = np.bincount(truth.instances.ravel())
    eligible = [i for i in truth.labels if counts[i] >= 30]
    assert len(eligible) >= 3
    rng = np.random.default_rng(4)
    frames, detected, confused, in_group, fps = 400, 0, 0, 0, 0
    objects = (truth.instances > 0) & (truth.instances < 100)
    for _ in range(frames):
        ids, labels, scores = det.apply(truth.instances, dict(truth.labels), truth.depth, truth.intrinsics.fx, rng)
        assert set(labels) == set(scores) and all(0 < s <= 1 for s in scores.values())
        for i in eligible:
            if i in labels:
                detected += 1
                if truth.labels[i] in group:
                    in_group += 1
                    confused += labels[i] != truth.labels[i]
                    assert labels[i] in group
                else:
                    assert labels[i] == truth.labels[i]
        for fid in (k for k in labels if k >= FALSE_POSITIVE_ID_BASE):
            fps += 1
            assert labels[fid] in known
            assert not np.any((ids == fid) & objects)  # on a surface, not on an object
    trials = frames * len(eligible)
    miss = 1 - detected / trials
    assert abs(miss - 0.2) < 4 * math.sqrt(0.2 * 0.8 / trials)
    assert abs(confused / in_group - 0.3) < 4 * math.sqrt(0.3 * 0.7 / in_group)
    assert abs(fps / frames - 0.5) < 4 * math.sqrt(0.5 / frames)
    small = [i for i in truth.labels if counts[i] < 30]
    ids, labels, _ = det.apply(truth.instances, dict(truth.labels), truth.depth, truth.intrinsics.fx, rng)
    assert not any(i in labels for i in small)  # below the detector's smallest mask


def test_masks_are_eroded_or_dilated_within_bounds(house_frame) -> None:  # noqa: ANN001
    truth, _ = house_frame
    noise = replace(PROFILES["kinect"].detector, miss_rate=0.0, false_positive_rate=0.0, confusion_rate=0.0,
                    erode_px=1, dilate_px=1)
    det = DetectorSimulator(noise)
    rng = np.random.default_rng(5)
    table = max(truth.labels, key=lambda i: np.count_nonzero(truth.instances == i))
    sizes = set()
    for _ in range(30):
        ids, _, _ = det.apply(truth.instances, dict(truth.labels), truth.depth, truth.intrinsics.fx, rng)
        sizes.add(int(np.count_nonzero(ids == table)))
    n = int(np.count_nonzero(truth.instances == table))
    assert min(sizes) < n < max(sizes)  # both ways
    assert all(0.5 * n < s < 1.5 * n for s in sizes)


def test_mode_none_gives_no_masks(house_frame) -> None:  # noqa: ANN001
    truth, env = house_frame
    model = replace(PROFILES["kinect"], detector=replace(PROFILES["kinect"].detector, mode="none"))
    sim = SensorSimulator(model, seed=0)
    sim.reset(0, truth.proprio.base_pose)
    obs = sim.perceive(truth, env.robot.camera_in_base(), np.zeros(2))
    assert obs.instances is None and obs.labels == {} and obs.scores == {}
    obs.validate()


def test_scores_scale_the_objects_confidence(house_frame) -> None:  # noqa: ANN001
    from mnemobot.perception.objects import objects_from_observation

    truth, _ = house_frame
    plain = {o.instance_id: o.confidence for o in objects_from_observation(truth)}
    assert plain
    scored = replace(truth, scores={i: 0.5 for i in plain})
    for o in objects_from_observation(scored):
        assert o.confidence == pytest.approx(0.5 * plain[o.instance_id])


# -- the ideal profile and determinism ----------------------------------------------------------------
def test_ideal_leaves_the_render_untouched() -> None:
    env = HouseholdEnv(EnvConfig(task="fetch", sensor_profile="ideal"))
    try:
        obs, _ = env.reset(seed=1)
        frame = env.observation()
        assert env.robot.sensor is None and frame is env.robot.true_observation()
        rgb, depth, instances, labels = env.backend.render(env.robot.camera_pose())
        assert np.array_equal(frame.rgb, rgb) and np.array_equal(frame.depth, depth)
        assert np.array_equal(frame.instances, instances) and frame.labels == labels and frame.scores == {}
        assert np.array_equal(frame.camera_pose.matrix(), env.robot.camera_pose().matrix())
        assert np.array_equal(frame.proprio.base_pose, env.robot.base_pose)
        assert np.array_equal(obs["base_pose"], env.robot.base_pose.astype(np.float32))
        sim = SensorSimulator(SensorModel(), seed=0)
        assert sim.perceive(frame, env.robot.camera_in_base(), np.zeros(2)) is frame
    finally:
        env.close()


def _same(a, b) -> bool:  # noqa: ANN001
    return (np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)
            and np.array_equal(a.instances, b.instances) and a.labels == b.labels and a.scores == b.scores
            and np.array_equal(a.camera_pose.matrix(), b.camera_pose.matrix()))


def test_same_seed_same_output(house_frame) -> None:  # noqa: ANN001
    truth, env = house_frame
    cam = env.robot.camera_in_base()
    sim = SensorSimulator(PROFILES["heavy"], known_labels=env.backend.object_labels())

    def frames(seed: int) -> list:
        sim.reset(seed, truth.proprio.base_pose)
        return [sim.perceive(truth, cam, np.array([0.1 * k, 0.0])) for k in range(3)]

    a, b, c = frames(7), frames(7), frames(8)
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))
    assert not _same(a[0], c[0])
    assert not _same(a[0], a[1])  # fresh noise every frame


def test_env_reset_with_the_same_seed_is_deterministic_under_noise() -> None:
    env = HouseholdEnv(EnvConfig(task="fetch", sensor_profile="kinect"))
    try:
        a, _ = env.reset(seed=2)
        b, _ = env.reset(seed=2)
        for key in ("rgb", "depth", "instances", "camera_pose", "base_pose"):
            assert np.array_equal(a[key], b[key]), key
        truth = env.robot.true_observation()
        assert not np.array_equal(a["depth"], truth.depth)
    finally:
        env.close()


# -- poses and odometry -------------------------------------------------------------------------------
def _drive(noise: PoseNoise, metres: float, seeds: int, step: float = 0.05) -> np.ndarray:
    """Position error (m) after each step of a straight drive along +x, per seed: (seeds, steps)."""
    n = int(round(metres / step))
    errors = np.zeros((seeds, n))
    for s in range(seeds):
        odo, rng = OdometrySimulator(noise), np.random.default_rng(s)
        odo.reset(np.zeros(3))
        for k in range(1, n + 1):
            believed = odo.update(np.array([k * step, 0.0, 0.0]), np.array([k * step, 0.0]), rng)
            errors[s, k - 1] = math.hypot(believed[0] - k * step, believed[1])
    return errors


def test_odometry_drift_grows_with_distance_and_relocalisation_bounds_it() -> None:
    free = PoseNoise(odom_trans_frac=0.02)
    err = _drive(free, 8.0, seeds=150)
    rms = np.sqrt((err**2).mean(axis=0))
    at = {d: rms[int(round(d / 0.05)) - 1] for d in (1.0, 2.0, 8.0)}
    assert at[1.0] < at[2.0] < at[8.0]
    # a random walk: 1 sigma per axis after d metres is frac * sqrt(d), so the 2D rms is that * sqrt(2)
    assert at[8.0] == pytest.approx(0.02 * math.sqrt(8.0) * math.sqrt(2), rel=0.2)
    fixed = _drive(replace(free, relocalise_every_m=2.0), 8.0, seeds=150)
    assert np.sqrt((fixed**2).mean(axis=0)).max() < at[2.0] * 1.3
    assert np.sqrt((fixed**2).mean(axis=0))[-1] < 0.5 * at[8.0]


def test_robot_believes_its_odometry_and_acts_on_that_belief() -> None:
    model = replace(PROFILES["kinect"], pose=replace(PROFILES["kinect"].pose, odom_yaw_frac=0.1))
    env = HouseholdEnv(EnvConfig(task="fetch", sensor_profile=model))
    try:
        env.reset(seed=0)
        robot = env.robot
        from mnemobot.control.types import RobotCommand

        turn = RobotCommand(robot.spec.arm_home, 0.08, np.array([0.0, 0.0, 0.5]), robot.head)
        for _ in range(40):  # 2 s at 0.5 rad/s
            robot.step(turn)
        true_pose = robot.base_pose.copy()
        obs = robot.observe()
        believed = obs.proprio.base_pose
        assert np.array_equal(robot.read().base_pose, believed)  # control works in the belief too
        assert not np.array_equal(believed, true_pose)
        assert np.array_equal(robot.true_observation().proprio.base_pose, true_pose)
        yaw_err = math.atan2(math.sin(believed[2] - true_pose[2]), math.cos(believed[2] - true_pose[2]))
        assert 0 < abs(yaw_err) < 0.5 and np.linalg.norm(believed[:2] - true_pose[:2]) < 0.05
        nominal = Pose.from_xyz_yaw(*believed[:2], 0.0, believed[2]) @ robot.camera_in_base()
        assert np.linalg.norm(obs.camera_pose.position - nominal.position) < 0.06  # believed + jitter
        assert np.array_equal(env._obs()["base_pose"], believed.astype(np.float32))
        state, cam = robot.perceived_state(robot.read())
        assert np.array_equal(state.base_pose, believed) and np.allclose(cam.matrix(), nominal.matrix())
    finally:
        env.close()


# -- gymnasium and the command line -------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*WARN")
def test_check_env_passes_with_a_noisy_profile() -> None:
    from gymnasium.utils.env_checker import check_env

    e = gym.make("mnemobot/HouseholdFetch-v0", sensor_profile="kinect")
    try:
        check_env(e.unwrapped)
        assert e.unwrapped.sensor_model.name == "kinect"
    finally:
        e.close()


def test_cli_bad_sensor_profile_exits_2_with_one_line(tmp_path, capsys) -> None:  # noqa: ANN001
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("depth: [1, 2\n")
    unknown_key = tmp_path / "typo.yaml"
    unknown_key.write_text("base: kinect\ndepth: {sigma_0: 0.01}\n")
    cases = [["run", "--sensor-profile", "nosuch"], ["run", "--sensor-profile", str(bad_yaml)],
             ["run", "--sensor-profile", str(unknown_key)],
             ["suite", str(tmp_path / "out"), "--sensor-profile", "nosuch"]]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("mnemobot: error:") and "sensor profile" in err, err
    assert not (tmp_path / "out").exists()


def test_yaml_profile_loads_and_runs(tmp_path, house_frame) -> None:  # noqa: ANN001
    from mnemobot.agent.episode import resolve_sensor

    path = tmp_path / "mine.yaml"
    path.write_text("name: my_d435\nbase: realsense\ndepth: {hole_rate: 0.1}\ndetector: {miss_rate: 0.0}\n")
    model = resolve_sensor(str(path))
    assert model.name == "my_d435" and model.depth.hole_rate == 0.1 and model.depth.k2 == PROFILES["realsense"].depth.k2
    truth, env = house_frame
    sim = SensorSimulator(model, seed=0)
    sim.reset(0, truth.proprio.base_pose)
    obs = sim.perceive(truth, env.robot.camera_in_base(), np.zeros(2))
    obs.validate()
    assert 0.05 < float(np.mean((obs.depth == 0) & (truth.depth > 0))) < 0.3


def test_colour_and_masks_are_shifted_against_depth(house_frame) -> None:  # noqa: ANN001
    truth, env = house_frame
    model = SensorModel(name="misregistered", depth=DepthNoise(misregistration_px=2.0),
                        detector=DetectorNoise(min_pixels=1))
    sim = SensorSimulator(model, known_labels=env.backend.object_labels())
    offsets = set()
    for seed in range(6):
        sim.reset(seed, truth.proprio.base_pose)
        dy, dx = sim.offset
        offsets.add((dy, dx))
        assert 1.0 <= math.hypot(dy, dx) <= 3.0
        obs = sim.perceive(truth, env.robot.camera_in_base(), np.zeros(2))
        h, w = truth.depth.shape
        inner = (slice(3, h - 3), slice(3, w - 3))
        src = (slice(3 - dy, h - 3 - dy), slice(3 - dx, w - 3 - dx))
        assert np.array_equal(obs.rgb[inner], truth.rgb[src]) and np.array_equal(obs.depth, truth.depth)
        assert np.array_equal(obs.instances[inner], truth.instances[src])
    assert len(offsets) > 1


def test_gold_sightings_read_the_exact_render_under_noise() -> None:
    from mnemobot.sim.sightings import SightingLog

    env = HouseholdEnv(EnvConfig(task="fetch", sensor_profile="heavy"))
    try:
        env.reset(seed=0)
        perceived, truth = env.observation(), env.robot.true_observation()
        assert not np.array_equal(perceived.instances, truth.instances)
        log = SightingLog(env.backend, min_pixels=1)
        log(perceived)
        counts = np.bincount(truth.instances.ravel())
        movable = set(env.backend.object_labels())
        expected = {lb: int(counts[i]) for i, lb in truth.labels.items() if lb in movable}
        assert log.frames[-1].pixels == expected
    finally:
        env.close()


# -- pixel amounts at another resolution -------------------------------------------------------------
def test_pixel_amounts_scale_with_the_focal_length() -> None:
    kinect = PROFILES["kinect"]
    assert kinect.reference_fx == 580.0 and kinect.at_focal(580.0) is kinect
    half = kinect.at_focal(290.0)  # a 320x240 Kinect image
    assert half.depth.lateral_px == pytest.approx(kinect.depth.lateral_px / 2)
    assert half.depth.edge_px == pytest.approx(kinect.depth.edge_px / 2)
    assert half.depth.misregistration_px == pytest.approx(kinect.depth.misregistration_px / 2)
    assert half.detector.erode_px == pytest.approx(0.5) and half.detector.min_pixels == round(30 / 4)
    assert half.depth.sigma0 == kinect.depth.sigma0 and half.detector.miss_rate == kinect.detector.miss_rate
    # lateral noise is an angle: the same metres at a range whatever the image's focal length
    assert kinect.lateral_sigma(2.0, 290.0) == pytest.approx(kinect.lateral_sigma(2.0, 580.0))
    assert kinect.point_sigma(2.0, 290.0) == pytest.approx(half.point_sigma(2.0, 290.0))
    # no reference: amounts are pixels of whatever image
    plain = SensorModel(depth=DepthNoise(lateral_px=1.0))
    assert plain.at_focal(290.0) is plain and plain.lateral_sigma(2.0, 200.0) == pytest.approx(0.01)
    # a bag declares its rig with the reference; a profile file may set one
    assert SensorModel.from_dict(kinect.to_dict()) == kinect
    with pytest.raises(ValueError, match="reference_fx"):
        SensorModel.from_dict({"base": "kinect", "reference_fx": "wide"})
    with pytest.raises(ValueError, match="reference_fx"):
        SensorModel.from_dict({"base": "kinect", "reference_fx": -5})


def test_the_simulator_applies_the_profile_at_the_render_focal_length(house_frame) -> None:  # noqa: ANN001
    truth, env = house_frame
    fx = truth.intrinsics.fx
    model = replace(PROFILES["kinect"], depth=replace(PROFILES["kinect"].depth, misregistration_px=6.0))
    sim = SensorSimulator(model, known_labels=env.backend.object_labels())
    sim.reset(0, truth.proprio.base_pose)
    sim.perceive(truth, env.robot.camera_in_base(), np.zeros(2))
    s = fx / 580.0
    assert sim.depth.noise.edge_px == pytest.approx(2 * s) and sim.detector.noise.min_pixels == round(30 * s * s)
    assert math.hypot(*sim.offset) <= 6.0 * s + 1.5  # misregistration in pixels of this image
    # the same rig measured on this very camera keeps its amounts
    native = replace(model, reference_fx=fx)
    sim2 = SensorSimulator(native, known_labels=env.backend.object_labels())
    sim2.reset(0, truth.proprio.base_pose)
    sim2.perceive(truth, env.robot.camera_in_base(), np.zeros(2))
    assert sim2.depth.noise.edge_px == 2 and sim2.detector.noise.min_pixels == 30
    assert math.hypot(*sim2.offset) >= 6.0 - 1.5
