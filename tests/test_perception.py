"""Perception: frame validation, back-projection, point-cloud primitives, masked and model-free
object extraction, and the detector plugins.

Simulator ground truth (``object_pose``, ``object_extent``, ``place_of``) is read here only to
score perception's output.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from mnemobot.perception import cloud
from mnemobot.perception.detectors import (
    DETECTORS,
    Detection,
    DetectionMaskConfig,
    Detector,
    apply_detections,
    make_detector,
    non_max_suppression,
    register_detector,
)
from mnemobot.perception.objects import (
    HIST_BINS,
    ObjectExtractorConfig,
    ObjectObservation,
    backproject,
    backproject_pixels,
    colour_descriptor,
    describe_object,
    objects_from_observation,
)
from mnemobot.perception.segment import (
    SegmenterConfig,
    connected_components,
    segment_clusters,
    segment_objects,
)
from mnemobot.perception.types import CameraIntrinsics, Observation, ObservationError, Pose, quat_from_matrix

K = CameraIntrinsics.from_fov(320, 240, 60.0)


def look_at(eye: Sequence[float], target: Sequence[float]) -> Pose:
    return Pose.look_at(eye, target)


def wrap_half_pi(a: float) -> float:
    """Angle difference modulo pi (a box axis has no direction), in [-pi/2, pi/2)."""
    return (a + math.pi / 2) % math.pi - math.pi / 2


# -- synthetic scenes: exact ray casting of boxes on a table ---------------------------------------------
@dataclass(frozen=True)
class SynthBox:
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    rgb: tuple[int, int, int]


def raycast(boxes: Sequence[SynthBox], pose: Pose, k: CameraIntrinsics = K, table_z: float = 0.6,
            table_half: tuple[float, float] = (0.6, 0.4)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rgb, depth (optical z) and instance ids of yawed boxes on a table above a floor."""
    v, u = np.mgrid[0 : k.height, 0 : k.width]
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones(u.shape)], axis=-1).reshape(-1, 3)
    d = rays @ pose.rotation.T  # optical z = 1, so the ray parameter is the depth
    o = pose.position
    best = np.full(len(d), np.inf)
    inst = np.zeros(len(d), np.int32)
    rgb = np.full((len(d), 3), 60, np.uint8)
    for z0, half, colour in ((0.0, (50.0, 50.0), (90, 90, 90)), (table_z, table_half, (150, 110, 70))):
        with np.errstate(divide="ignore"):
            t = (z0 - o[2]) / d[:, 2]
        p = o + t[:, None] * d
        hit = (t > 0) & (t < best) & (np.abs(p[:, 0]) <= half[0]) & (np.abs(p[:, 1]) <= half[1])
        best[hit], rgb[hit] = t[hit], colour
    for i, b in enumerate(boxes, start=1):
        c, s = math.cos(b.yaw), math.sin(b.yaw)
        to_box = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
        ol, dl = to_box @ (o - np.asarray(b.center)), d @ to_box.T
        h = np.asarray(b.size) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-h - ol) / dl, (h - ol) / dl
        near, far = np.nanmax(np.minimum(t1, t2), axis=1), np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (far >= near) & (near > 0) & (near < best)
        best[hit], inst[hit], rgb[hit] = near[hit], i, b.rgb
    depth = np.where(np.isfinite(best), best, 0.0).astype(np.float32)
    return rgb.reshape(k.height, k.width, 3), depth.reshape(k.height, k.width), inst.reshape(k.height, k.width)


def twenty_boxes(seed: int = 0) -> list[SynthBox]:
    rng = np.random.default_rng(seed)
    out = []
    for y in np.linspace(-0.3, 0.3, 4):
        for x in np.linspace(-0.45, 0.45, 5):
            size = rng.uniform([0.04, 0.03, 0.03], [0.09, 0.06, 0.10])
            out.append(SynthBox((x + rng.uniform(-0.03, 0.03), y + rng.uniform(-0.03, 0.03), 0.6 + size[2] / 2),
                                tuple(size), float(rng.uniform(-math.pi / 2, math.pi / 2)),
                                tuple(int(c) for c in rng.integers(0, 256, 3))))
    return out


def synth_frame(boxes: Sequence[SynthBox], masks: bool = True, eye: Sequence[float] = (0.0, -1.0, 1.4)) -> Observation:
    pose = look_at(eye, (0.0, 0.0, 0.6))
    rgb, depth, inst = raycast(boxes, pose)
    labels = {i: f"box{i}" for i in np.unique(inst).tolist() if i} if masks else {}
    return Observation(0.0, rgb, depth, K, pose, inst if masks else None, labels)


@pytest.fixture(scope="module")
def twenty() -> tuple[list[SynthBox], Observation]:
    boxes = twenty_boxes()
    return boxes, synth_frame(boxes)


# -- validation -----------------------------------------------------------------------------------------
def good_frame(**changes: object) -> Observation:
    depth = np.full((K.height, K.width), 1.5, np.float32)
    inst = np.zeros((K.height, K.width), np.int32)
    inst[100:120, 100:130] = 7
    obs = Observation(0.0, np.zeros((K.height, K.width, 3), np.uint8), depth, K, Pose(), inst, {7: "mug"})
    return replace(obs, **changes)


def with_depth(**pixels: float) -> np.ndarray:
    depth = np.full((K.height, K.width), 1.5, np.float32)
    for i, value in enumerate(pixels.values()):
        depth[0, i] = value
    return depth


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rgb": np.zeros((10, 10, 3), np.uint8)}, r"rgb must be \(240, 320, 3\) uint8"),
        ({"depth": np.ones((240, 321), np.float32)}, r"depth must be \(240, 320\)"),
        ({"instances": np.zeros((240, 10), np.int32)}, r"instance mask must be \(240, 320\)"),
        ({"depth": np.ones((240, 320), np.uint16)}, "depth must be floating point metres, got dtype uint16"),
        ({"depth": with_depth(a=-0.5, b=-np.inf, c=-1e-3, d=np.nan)}, "depth has 3 pixels with negative values or -inf"),
        ({"depth": np.full((240, 320), np.nan, np.float32)}, "depth has no valid pixels"),
        ({"depth": np.full((240, 320), np.inf, np.float32)}, "depth has no valid pixels"),
        ({"depth": np.zeros((240, 320), np.float32)}, "depth has no valid pixels"),
        ({"instances": np.zeros((240, 320), np.float32)}, "instance mask must have an integer dtype, got float32"),
    ],
)
def test_validate_names_the_problem(changes: dict[str, object], message: str) -> None:
    obs = good_frame(**changes)
    with pytest.raises(ObservationError, match=message):
        obs.validate()
    with pytest.raises(ValueError, match=message):  # ObservationError is a ValueError
        objects_from_observation(obs)


def test_validate_lists_mask_ids_missing_from_the_label_map() -> None:
    inst = np.zeros((K.height, K.width), np.int32)
    inst[0, :4] = [7, 9, 3, 9]
    obs = good_frame(instances=inst, labels={3: "cube"})
    with pytest.raises(ObservationError, match=r"instance ids \[7, 9\] are not in the label map"):
        obs.validate()
    with pytest.raises(ObservationError, match=r"instance ids \[7, 9\]"):
        objects_from_observation(obs)


def test_no_return_pixels_are_skipped_not_errors() -> None:
    depth = np.full((K.height, K.width), 1.5, np.float32)
    depth[100:105, 100:130] = np.nan
    depth[105:110, 100:130] = np.inf
    depth[110:115, 100:130] = 0.0
    obs = good_frame(depth=depth)
    obs.validate()
    (mug,) = objects_from_observation(obs, min_pixels=5)
    assert mug.pixel_count == 600
    assert mug.confidence == pytest.approx(150 / 400)  # only the 150 pixels with depth support it
    assert np.all(np.isfinite(mug.points))


# -- back-projection ----------------------------------------------------------------------------------
def test_backprojection_of_a_fronto_parallel_plane_is_exact() -> None:
    k = CameraIntrinsics(width=8, height=6, fx=100.0, fy=80.0, cx=3.2, cy=2.7)
    pose = Pose(np.array([1.0, -2.0, 0.5]), quat_from_matrix(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]])))
    depth = np.full((6, 8), 2.0)
    depth[0, 0], depth[5, 7] = 0.0, np.nan
    pts = backproject(depth, k, pose)
    assert pts.shape == (46, 3)
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    # optical (x right, y down, z forward) -> world: forward = +x, right = -y, down = -z
    expected = np.stack([1.0 + 2.0 * np.ones(len(u)), -2.0 - (u - 3.2) * 2.0 / 100.0,
                         0.5 - (v - 2.7) * 2.0 / 80.0], axis=1)
    np.testing.assert_allclose(pts, expected, atol=1e-12)
    np.testing.assert_allclose(backproject_pixels(v * 8 + u, depth, k, pose), expected, atol=1e-12)
    mask = np.zeros((6, 8), bool)
    mask[2, 3] = True
    np.testing.assert_allclose(backproject(depth, k, pose, mask), expected[(v == 2) & (u == 3)], atol=1e-12)


def test_backprojection_of_a_tilted_world_plane_lands_on_it() -> None:
    pose = look_at((0.3, -1.2, 1.5), (0.0, 0.0, 0.4))
    n, c = np.array([0.1, -0.2, 1.0]) / np.linalg.norm([0.1, -0.2, 1.0]), 0.35  # plane n . p = c
    v, u = np.mgrid[0 : K.height, 0 : K.width]
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones(u.shape)], axis=-1)
    depth = (c - n @ pose.position) / (rays @ pose.rotation.T @ n)  # optical z of the intersection
    pts = backproject(depth, K, pose)
    np.testing.assert_allclose(pts @ n, c, atol=1e-9)


# -- point-cloud primitives ----------------------------------------------------------------------------
def box_surface(size: Sequence[float], yaw: float, center: Sequence[float], n: int = 4000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.5, 0.5, size=(n, 3))
    face = rng.integers(0, 3, n)
    p[np.arange(n), face] = np.sign(p[np.arange(n), face]) * 0.5
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return (p * np.asarray(size)) @ rot.T + np.asarray(center)


def test_gravity_obb_recovers_a_yawed_box_exactly() -> None:
    pts = box_surface((0.12, 0.04, 0.03), 0.7, (2.0, 3.0, 0.615))
    center, extent, yaw = cloud.gravity_obb(pts)
    np.testing.assert_allclose(center, (2.0, 3.0, 0.615), atol=2e-3)
    np.testing.assert_allclose(extent, (0.12, 0.04, 0.03), atol=2e-3)
    assert abs(wrap_half_pi(yaw - 0.7)) < math.radians(1.0)
    lo, hi = cloud.aabb(pts)
    np.testing.assert_allclose(lo, pts.min(axis=0))
    np.testing.assert_allclose(hi, pts.max(axis=0))
    # a square footprint, which principal axes cannot orient, still gets its faces' heading
    _, extent, yaw = cloud.gravity_obb(box_surface((0.05, 0.05, 0.05), 0.3, (0.0, 0.0, 0.0)))
    np.testing.assert_allclose(extent, 0.05, atol=1.5e-3)
    assert abs(((yaw - 0.3 + math.pi / 4) % (math.pi / 2)) - math.pi / 4) < math.radians(1.0)


def test_open3d_and_numpy_backends_agree() -> None:
    pytest.importorskip("open3d")
    rng = np.random.default_rng(1)
    pts = np.vstack([rng.normal(size=(600, 3)) * 0.02 + [3.0, 4.0, 0.6], rng.uniform(-0.3, 0.3, (12, 3)) + [3, 4, 0.6]])
    for voxel in (0.004, 0.01, 0.03):
        a = cloud.voxel_down(pts, voxel, backend="open3d")
        b = cloud.voxel_down(pts, voxel, backend="numpy")
        np.testing.assert_allclose(a[np.lexsort(a.T[::-1])], b[np.lexsort(b.T[::-1])], atol=1e-9)
    for nb, ratio in ((8, 2.0), (20, 1.0)):
        _, ia = cloud.remove_outliers(pts, nb, ratio, backend="open3d")
        _, ib = cloud.remove_outliers(pts, nb, ratio, backend="numpy")
        np.testing.assert_array_equal(np.sort(ia), ib)
        assert not np.isin(np.arange(600, 612), ib).all()  # the scattered points go
    # a box surface sampled on a symmetric grid, turned by a general 3D rotation
    g = np.linspace(-0.5, 0.5, 11)
    a1, a2 = (m.ravel() for m in np.meshgrid(g, g))
    faces = [np.stack(np.roll([np.full_like(a1, side), a1, a2], k, axis=0), axis=1) for k in range(3) for side in (-0.5, 0.5)]
    turn = Pose(np.zeros(3), np.array([0.3, -0.2, 0.4, 0.8])).rotation
    tilted = (np.vstack(faces) * [0.3, 0.2, 0.1]) @ turn.T + [1.0, 2.0, 3.0]
    ca, ra, ea = cloud.oriented_box(tilted, backend="open3d")
    cb, rb, eb = cloud.oriented_box(tilted, backend="numpy")
    for center, rot, extent in ((ca, ra, ea), (cb, rb, eb)):
        np.testing.assert_allclose(center, (1.0, 2.0, 3.0), atol=1e-6)
        np.testing.assert_allclose(extent, (0.3, 0.2, 0.1), atol=1e-6)
        np.testing.assert_allclose(np.abs(rot.T @ turn), np.eye(3), atol=1e-6)
        assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(ra, rb, atol=1e-6)  # same canonical axes


def test_backend_option_is_checked_and_open3d_import_is_lazy() -> None:
    with pytest.raises(ValueError, match="unknown point-cloud backend 'gpu'"):
        cloud.voxel_down(np.zeros((5, 3)), 0.01, backend="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        cloud.aabb(np.zeros((4, 2)))
    code = ("import sys, numpy as np; import mnemobot.perception.objects, mnemobot.perception.segment, "
            "mnemobot.perception.detectors as d; from mnemobot.perception import cloud; "
            "cloud.voxel_down(np.random.rand(50, 3), 0.1, backend='numpy'); "
            "print(sorted(m for m in ('open3d', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_open3d_the_numpy_backend_takes_over(monkeypatch: pytest.MonkeyPatch,
                                                     twenty: tuple[list[SynthBox], Observation]) -> None:
    _, obs = twenty
    cfg = ObjectExtractorConfig(outlier_neighbors=8)
    expected = objects_from_observation(obs, config=replace(cfg, backend="numpy"))
    monkeypatch.setattr(cloud, "_open3d_module", lambda: None)
    assert not cloud.open3d_available()
    got = objects_from_observation(obs, config=cfg)
    for x, y in zip(got, expected, strict=True):
        np.testing.assert_allclose(x.points, y.points)
    with pytest.raises(ImportError, match="needs open3d"):
        cloud.voxel_down(np.zeros((5, 3)), 0.01, backend="open3d")


def test_connected_components_of_grid_cells() -> None:
    cells = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [5, 5, 5], [5, 6, 5], [9, 0, 0]])
    labels = connected_components(cells)
    assert labels[0] == labels[1] == labels[2] and labels[3] == labels[4]
    assert len({labels[0], labels[3], labels[5]}) == 3


def test_colour_descriptor_bins_hues_and_greys() -> None:
    pixels = np.array([[220, 20, 20], [20, 200, 30], [20, 40, 220], [240, 220, 20], [250, 250, 250], [5, 5, 5]])
    mean, hist = colour_descriptor(pixels)
    np.testing.assert_allclose(mean, pixels.mean(axis=0) / 255.0)
    assert hist.shape == (HIST_BINS,) and hist.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(hist, [1, 1, 1, 0, 1, 0, 1, 1] / np.float64(6))


# -- objects from masks ---------------------------------------------------------------------------------
def test_twenty_synthetic_boxes_are_measured_exactly(twenty: tuple[list[SynthBox], Observation]) -> None:
    boxes, obs = twenty
    seen = objects_from_observation(obs)
    assert sorted(o.instance_id for o in seen) == list(range(1, 21))
    for o in seen:
        b = boxes[o.instance_id - 1]
        major, minor = max(b.size[:2]), min(b.size[:2])
        # within about one pixel's footprint (6 mm at 1.6 m), partly hidden boxes included
        np.testing.assert_allclose(o.extent, (major, minor, b.size[2]), atol=6e-3)
        np.testing.assert_allclose(o.obb_center[:2], b.center[:2], atol=6e-3)
        assert o.aabb_max[2] == pytest.approx(b.center[2] + b.size[2] / 2, abs=2e-3)
        if major > 1.2 * minor:
            heading = b.yaw if b.size[0] >= b.size[1] else b.yaw + math.pi / 2
            assert abs(wrap_half_pi(o.yaw - heading)) < math.radians(3.0), o.label
        np.testing.assert_allclose(o.colour, np.asarray(b.rgb) / 255.0, atol=1e-6)
        assert o.colour_hist is not None and o.colour_hist.sum() == pytest.approx(1.0)
        assert o.label == f"box{o.instance_id}" and 0 < o.confidence <= 1


def test_twenty_objects_per_frame_are_deterministic(twenty: tuple[list[SynthBox], Observation]) -> None:
    """Speed is measured by bench/bench_memory.py; here: repeated calls give the same objects."""
    _, obs = twenty
    first = objects_from_observation(obs)
    again = objects_from_observation(obs)
    assert len(first) == len(again) == 20
    for a, b in zip(first, again, strict=True):
        assert a.label == b.label
        np.testing.assert_array_equal(a.centroid, b.centroid)


def test_extractor_options_and_old_call_style(twenty: tuple[list[SynthBox], Observation]) -> None:
    _, obs = twenty
    plain = objects_from_observation(obs, 20, 2000, frozenset({"box3"}))
    assert "box3" not in {o.label for o in plain} and len(plain) == 19
    few = objects_from_observation(obs, max_points=30)
    assert all(len(o.points) <= 30 for o in few)
    raw = objects_from_observation(obs, config=ObjectExtractorConfig(voxel_size=0.0))
    assert all(len(o.points) == o.pixel_count for o in raw)
    coarse = objects_from_observation(obs, config=ObjectExtractorConfig(voxel_size=0.01, outlier_neighbors=6))
    assert all(len(c.points) < len(r.points) for c, r in zip(coarse, raw, strict=True))
    with pytest.raises(ValueError, match="not both"):
        objects_from_observation(obs, min_pixels=5, config=ObjectExtractorConfig())
    with pytest.raises(ValueError, match="voxel_size"):
        ObjectExtractorConfig(voxel_size=-1.0)
    # existing constructors keep working: the new fields have defaults
    o = ObjectObservation("x", 1, np.zeros((1, 3)), np.zeros(3), np.zeros(3), np.zeros(3), 0.0, np.zeros(3),
                          np.zeros(3), 1.0, 0.0, 1)
    assert o.obb_center is None and o.colour_hist is None
    single = describe_object("thing", None, np.random.default_rng(0).normal(size=(50, 3)), np.zeros((50, 3), np.uint8))
    assert single.pixel_count == 50 and single.colour_hist is not None


def test_backends_give_the_same_objects(twenty: tuple[list[SynthBox], Observation]) -> None:
    pytest.importorskip("open3d")
    _, obs = twenty
    cfg = ObjectExtractorConfig(outlier_neighbors=8)
    a = objects_from_observation(obs, config=replace(cfg, backend="open3d"))
    b = objects_from_observation(obs, config=replace(cfg, backend="numpy"))
    for x, y in zip(a, b, strict=True):
        assert x.instance_id == y.instance_id
        np.testing.assert_allclose(x.centroid, y.centroid, atol=1e-9)
        np.testing.assert_allclose(x.extent, y.extent, atol=1e-9)


# -- the simulated household ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim() -> Iterator[object]:
    pytest.importorskip("pybullet")
    from mnemobot.sim.env import EnvConfig, HouseholdEnv

    env = HouseholdEnv(EnvConfig(task="place"))
    yield env.unwrapped
    env.close()


def table_frame(env: object, place: str, seed: int) -> Observation:
    """A rendered frame looking at ``place`` from above its stand pose (with masks and labels)."""
    env.reset(seed=seed)
    spot = env.site_map.place(place)
    pose = look_at((spot.stand[0], spot.stand[1] + 0.1, 1.3), spot.surface.position)
    rgb, depth, inst, labels = env.backend.render(pose)
    return Observation(env.backend.time, rgb, depth, env.backend.intrinsics, pose, inst, labels)


BOXY = {"red_cube", "green_cube", "blue_cube", "jenga"}
ELONGATED = {"jenga", "pink_bar", "olive_bar", "purple_capsule"}


@pytest.mark.parametrize(("place", "seed"), [("kitchen_table", 0), ("bedroom_table", 0), ("living_room_table", 1)])
def test_masked_objects_match_the_true_size_and_position(sim: object, place: str, seed: int) -> None:
    obs = table_frame(sim, place, seed)
    world = sim.backend
    seen = [o for o in objects_from_observation(obs) if o.label in world.object_labels()]
    assert len(seen) >= 2
    for o in seen:
        pose, size = world.object_pose(o.label), world.object_extent(o.label)
        assert np.linalg.norm(o.obb_center[:2] - pose.position[:2]) < 0.02, o.label
        upright = abs(pose.rotation[2, 2]) > 0.99
        if upright and o.label in BOXY:  # body origin at the box centre
            assert o.aabb_max[2] == pytest.approx(pose.position[2] + size[2] / 2, abs=0.005), o.label
            true = (max(size[:2]), min(size[:2]), size[2])
            np.testing.assert_allclose(o.extent, true, atol=0.006, err_msg=o.label)
        if upright and o.label in ELONGATED:
            axis = int(np.argmax(size[:2]))
            heading = math.atan2(pose.rotation[1, axis], pose.rotation[0, axis])
            assert abs(wrap_half_pi(o.yaw - heading)) < math.radians(3.0), o.label
        hue = int(np.argmax(o.colour_hist))
        expected_bin = {"red_cube": 0, "green_cube": 2, "blue_cube": 4, "yellow_ball": 1, "mug": 7}.get(o.label)
        assert expected_bin is None or hue == expected_bin, o.label


def test_robot_camera_frame_passes_validation_and_gives_objects(sim: object) -> None:
    sim.reset(seed=0)
    obs = sim.observation()
    obs.validate()
    seen = objects_from_observation(obs)
    assert {o.instance_id for o in seen} <= set(obs.labels)
    assert all(o.obb_center is not None and o.colour_hist is not None for o in seen)


@pytest.mark.parametrize(("place", "seed"), [("kitchen_table", 0), ("bedroom_table", 0), ("living_room_table", 1)])
def test_model_free_segmentation_finds_the_objects_on_a_table(sim: object, place: str, seed: int) -> None:
    masked = table_frame(sim, place, seed)
    world = sim.backend
    ids, counts = np.unique(masked.instances, return_counts=True)
    on_table = [masked.labels[i] for i, n in zip(ids.tolist(), counts.tolist(), strict=True)
                if 0 < i < 100 and n >= 50 and world.place_of(masked.labels[i]) == (place, "on")]
    obs = replace(masked, instances=None, labels={})
    found = objects_from_observation(obs)  # no mask: the model-free path
    assert abs(len(found) - len(on_table)) <= 1, (len(found), on_table)
    truth = np.array([world.object_pose(label).position for label in world.object_labels()])
    for o in found:
        assert o.label == "unknown" and o.instance_id is None
        assert np.min(np.linalg.norm(truth - o.centroid, axis=1)) < 0.05
        assert o.obb_center is not None and 0.01 < o.extent[0] < 0.2 and o.colour_hist is not None
    assert objects_from_observation(obs, model_free=False) == []
    assert objects_from_observation(obs, skip_labels=frozenset({"unknown"})) == []
    clusters = segment_clusters(obs)
    assert all(c.support.height == pytest.approx(world.place_surface(place).position[2], abs=0.01) for c in clusters)


def test_model_free_segmentation_with_pixel_stride(sim: object) -> None:
    obs = replace(table_frame(sim, "kitchen_table", 0), instances=None, labels={})
    full = segment_objects(obs)
    assert len(segment_objects(obs, SegmenterConfig(pixel_stride=2))) == len(full) == 3


def test_model_free_segmentation_of_synthetic_boxes() -> None:
    boxes = [SynthBox((x, y, 0.6 + 0.03), (0.06, 0.04, 0.06), 0.3, (200, 30, 30))
             for x, y in ((-0.3, -0.1), (0.0, 0.1), (0.3, -0.15), (0.2, 0.2))]
    found = segment_objects(synth_frame(boxes, masks=False))
    assert len(found) == 4
    for o in found:
        i = int(np.argmin([np.linalg.norm(np.asarray(b.center[:2]) - o.obb_center[:2]) for b in boxes]))
        np.testing.assert_allclose(o.obb_center[:2], boxes[i].center[:2], atol=0.005)
        np.testing.assert_allclose(o.extent[:2], (0.06, 0.04), atol=0.008)
        assert o.aabb_max[2] == pytest.approx(0.66, abs=0.004)


# -- detectors -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OracleConfig:
    boxes: dict[str, tuple[float, float, float, float]]
    score: float = 0.9


class OracleDetector:
    """Test plugin: returns the boxes it was configured with for the queried labels."""

    config_type: ClassVar[type] = OracleConfig

    def __init__(self, config: OracleConfig) -> None:
        self.config = config

    def detect(self, rgb: np.ndarray, queries: Sequence[str]) -> list[Detection]:
        return [Detection(q, self.config.score, np.asarray(self.config.boxes[q])) for q in queries
                if q in self.config.boxes]


@pytest.fixture
def oracle() -> Iterator[str]:
    register_detector("test-oracle")(OracleDetector)
    yield "test-oracle"
    DETECTORS.pop("test-oracle", None)


def mask_box(mask: np.ndarray, pad: int = 2) -> tuple[float, float, float, float]:
    v, u = np.nonzero(mask)
    return float(u.min() - pad), float(v.min() - pad), float(u.max() + 1 + pad), float(v.max() + 1 + pad)


def test_detector_plugin_masks_objects_not_their_background(sim: object, oracle: str) -> None:
    truth = table_frame(sim, "bedroom_table", 0)
    wanted = [label for label in ("jenga", "pink_bar", "duck") if label in truth.labels.values()]
    ids = {label: i for i, label in truth.labels.items()}
    boxes = {label: mask_box(truth.instances == ids[label]) for label in wanted}
    detector = make_detector(oracle, boxes=boxes)
    assert isinstance(detector, Detector)
    detections = detector.detect(truth.rgb, wanted + ["spoon"])
    labelled = apply_detections(replace(truth, instances=None, labels={}), detections, min_score=0.5)
    assert labelled.instances.dtype == np.int32 and set(labelled.labels.values()) == set(wanted)
    for iid, label in labelled.labels.items():
        got, gt = labelled.instances == iid, truth.instances == ids[label]
        assert (got & gt).sum() / (got | gt).sum() > 0.8, label  # the table around it is cut away
    for o in objects_from_observation(labelled):
        assert np.linalg.norm(o.obb_center[:2] - sim.backend.object_pose(o.label).position[:2]) < 0.02
    assert apply_detections(truth, detections, min_score=0.95).labels == {}


def test_apply_detections_priorities_masks_and_errors() -> None:
    pair = [SynthBox((x, 0.0, 0.64), (0.08, 0.08, 0.08), 0.0, (255, 0, 0)) for x in (-0.06, 0.06)]
    obs = synth_frame(pair, masks=False)
    _, _, inst = raycast(pair, obs.camera_pose)
    a, b = inst == 1, inst == 2
    both, left = mask_box(a | b, pad=12), mask_box(a, pad=4)
    dets = [Detection("both", 0.4, np.array(both)), Detection("left", 0.8, np.array(left)),
            Detection("faint", 0.1, np.array(both))]
    out = apply_detections(obs, dets, min_score=0.3)
    assert out.labels == {1: "left", 2: "both"}  # decreasing score; below min_score is dropped
    for got, want in ((out.instances == 1, a), (out.instances == 2, b)):  # higher score claims first
        assert (got & want).sum() / (got | want).sum() > 0.85  # and the table around is cut away
    only_left = np.zeros(inst.shape, bool)
    only_left[:, : int(np.mean(np.nonzero(a)[1]))] = True
    masked = apply_detections(obs, [Detection("half", 0.9, np.array(left), only_left)])
    assert np.all(only_left[masked.instances == 1]) and np.any(masked.instances == 1)
    with pytest.raises(ObservationError, match="mask must be"):
        apply_detections(obs, [Detection("bad", 0.9, np.array(left), np.ones((5, 5), bool))])
    with pytest.raises(ValueError, match="box_xyxy"):
        Detection("bad", 0.5, np.array([5.0, 5.0, 1.0, 9.0]))
    np.testing.assert_array_equal(
        non_max_suppression(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.0]]), np.array([0.5, 0.9, 0.1]), 0.5),
        [1, 2],
    )


def test_depth_gating_keeps_the_object_and_drops_the_far_background() -> None:
    cube = SynthBox((0.0, 0.0, 1.2), (0.1, 0.1, 0.1), 0.0, (0, 200, 0))  # in front of a far wall
    wall = SynthBox((0.0, 3.0, 1.0), (6.0, 0.1, 3.0), 0.0, (200, 200, 200))
    pose = look_at((0.0, -1.0, 1.2), (0.0, 0.0, 1.2))
    rgb, depth, inst = raycast([cube, wall], pose)
    obs = Observation(0.0, rgb, depth, K, pose)
    out = apply_detections(obs, [Detection("cube", 0.9, np.array(mask_box(inst == 1, pad=10)))],
                           config=DetectionMaskConfig(drop_support=False))
    np.testing.assert_array_equal(out.instances == 1, inst == 1)


def test_detector_registry_errors(oracle: str) -> None:
    with pytest.raises(ValueError, match="unknown detector 'nope'; registered: .*owlvit"):
        make_detector("nope")
    with pytest.raises(ValueError, match="has no setting.*colour"):
        make_detector(oracle, boxes={}, colour="red")
    with pytest.raises(ValueError, match="missing"):
        make_detector(oracle)
    with pytest.raises(ValueError, match="already registered"):
        register_detector(oracle)(type("Other", (OracleDetector,), {}))
    with pytest.raises(TypeError, match="config_type"):
        register_detector("broken")(type("Broken", (), {"detect": lambda self, rgb, q: []}))
    with pytest.raises(ValueError, match="nms_iou"):
        make_detector("owlvit", model_path="/nowhere", nms_iou=0.0)
    with pytest.raises(ValueError, match="cluster_voxel=0"):
        SegmenterConfig(cluster_voxel=0.0)


# -- OWL-ViT from a local folder ---------------------------------------------------------------------------
def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-level alphabet: one printable character per byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


@pytest.fixture(scope="module")
def tiny_owlvit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised, tiny OWL-ViT with a locally built CLIP tokenizer, saved to disk."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("owlvit")
    chars = _bytes_to_unicode()
    merges = ["r e", "re d</w>", "c u", "cu b", "cub e</w>", "m u", "mu g</w>"]
    vocab = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    bos, eos = len(vocab) - 2, len(vocab) - 1
    config = transformers.OwlViTConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": bos,
                     "eos_token_id": eos, "pad_token_id": eos},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16},
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = transformers.OwlViTForObjectDetection(config).eval()
    with torch.no_grad():  # boxes = the patch cells (the box bias alone), so they are well-formed
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    images = transformers.OwlViTImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64})
    transformers.OwlViTProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def test_owlvit_detector_runs_from_a_local_folder(tiny_owlvit: Path) -> None:
    queries = ["red cube", "mug"]
    rgb = np.random.default_rng(0).integers(0, 256, (K.height, K.width, 3), dtype=np.uint8)
    detector = make_detector("owlvit", model_path=str(tiny_owlvit), score_threshold=0.0, query_template="{}")
    everything = detector.detect(rgb, queries)
    assert len(everything) == 16  # one box per 16 x 16 patch of the 64 x 64 model input
    scores = [d.score for d in everything]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert {d.label for d in everything} <= set(queries)
    for d in everything:
        x0, y0, x1, y1 = d.box_xyxy
        assert 0 <= x0 < x1 <= K.width and 0 <= y0 < y1 <= K.height and d.mask is None
        assert x1 - x0 <= K.width / 4 + 1 and y1 - y0 <= K.height / 4 + 1  # a patch cell (edge ones clipped)
    cut = float(np.median(scores))
    strict = make_detector("owlvit", model_path=str(tiny_owlvit), score_threshold=cut, query_template="{}")
    kept = strict.detect(rgb, queries)
    assert 0 < len(kept) < len(everything) and all(d.score > cut for d in kept)

    obs = synth_frame(twenty_boxes()[:6], masks=False)
    found = detector.detect(obs.rgb, queries)
    labelled = apply_detections(obs, found, min_score=cut)
    assert labelled.instances is not None and labelled.instances.dtype == np.int32
    assert set(labelled.labels.values()) <= set(queries)
    assert sorted(labelled.labels) == list(range(1, len(labelled.labels) + 1))
    assert set(np.unique(labelled.instances).tolist()) <= {0, *labelled.labels}
    assert len(labelled.labels) == sum(d.score >= cut for d in found) > 0  # patch cells do not overlap
    labelled.validate()


def test_owlvit_refuses_missing_or_non_model_folders(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        make_detector("owlvit", model_path=str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*not a model folder"):
        make_detector("owlvit", model_path=str(empty))
    (empty / "config.json").write_text("{}")
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="could not load an OWL-ViT model"):
        make_detector("owlvit", model_path=str(empty))


def test_depth_gate_drops_stray_pixels_but_keeps_deep_furniture() -> None:
    from mnemobot.perception.objects import depth_gate

    rng = np.random.default_rng(0)
    # a small object at 1 m with two stray pixels of the gripper at 0.4 m; a table seen from 1 to 4 m
    z = np.r_[1.0 + rng.normal(0, 0.01, 50), [0.38, 0.4], np.linspace(1.0, 4.0, 100)]
    run = np.r_[np.zeros(52, int), np.ones(100, int)]
    keep = depth_gate(z, run, np.array([0, 52]), np.array([52, 100]), 0.1)
    assert keep[:50].all() and not keep[50:52].any() and keep[52:].all()
