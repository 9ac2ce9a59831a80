"""Memory on real sensor data: a real Kinect (v1) recording of a static room.

The frames (``../shared/data/real_rgbd/kinect_room_5``, five 640x480 RGB-D frames with camera
poses from SLAM; see its README) are played forward and back, so the camera revisits every
view several times. Nothing in the room moves: every ``moved`` or ``missing`` memory operation
is a false change. Memory runs with the ``kinect`` sensor profile, model-free segmentation (the
recording has no masks), and poses rotated to a z-up world (the SLAM map's y points down).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mnemobot.memory.graph import MISSING
from mnemobot.memory.memory import Memory, MemoryConfig
from mnemobot.perception.sensor import sensor_model
from mnemobot.perception.types import CameraIntrinsics, Observation, Pose, quat_to_matrix

PIL = pytest.importorskip("PIL.Image")

DATA = Path(os.environ.get("MNEMOBOT_REAL_RGBD",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_rgbd"))
ROOM = DATA / "kinect_room_5"
K = CameraIntrinsics(640, 480, 518.0, 519.0, 325.5, 253.5)

pytestmark = pytest.mark.skipif(not ROOM.is_dir(), reason=f"real RGB-D frames not found at {ROOM} "
                                                          "(set MNEMOBOT_REAL_RGBD)")


def z_up(mats: list[np.ndarray]) -> np.ndarray:
    """World rotation taking the cameras' mean up direction (-y of the optical frame) to +z."""
    up = np.mean([-m[:3, 1] for m in mats], axis=0)
    up /= np.linalg.norm(up)
    v, c = np.cross(up, [0.0, 0.0, 1.0]), float(up[2])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    out = np.eye(4)
    out[:3, :3] = np.eye(3) + vx + vx @ vx / (1.0 + c)
    return out


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, np.ndarray, Pose]]:
    mats = []
    for line in (ROOM / "pose.txt").read_text().split("\n"):
        if line.strip():
            p = [float(v) for v in line.split()]
            m = np.eye(4)
            m[:3, :3], m[:3, 3] = quat_to_matrix(np.array(p[3:])), p[:3]
            mats.append(m)
    world = z_up(mats)
    out = []
    for i, m in enumerate(mats, start=1):
        rgb = np.asarray(PIL.open(ROOM / "color" / f"{i}.png").convert("RGB"))
        depth = np.asarray(PIL.open(ROOM / "depth" / f"{i}.pgm")).astype(np.float32) / 1000.0
        out.append((rgb, depth, Pose.from_matrix(world @ m)))
    return out


def play(frames, profile: str, laps: int = 3) -> tuple[Memory, Counter]:
    """Frames 1..5..1, ``laps`` times, at 5 Hz; returns memory and the count of its ops by cause."""
    order = [0, 1, 2, 3, 4, 3, 2, 1] * laps + [0]
    mem = Memory(MemoryConfig(embedder="none", sensor=sensor_model(profile)))
    causes: Counter = Counter()
    mem.op_sinks.append(lambda ops: causes.update(op.cause for op in ops))
    mem.begin_episode()
    for n, i in enumerate(order):
        rgb, depth, pose = frames[i]
        mem.update(Observation(0.2 * n, rgb, depth, K, pose))
    assert causes["observed"] >= 3  # the sink saw the operations
    return mem, causes


def test_static_real_room_has_no_false_changes(frames) -> None:
    mem, causes = play(frames, "kinect")
    objects = mem.graph.by_layer("object")
    assert len(objects) >= 3  # the segmenter finds things on the room's surfaces
    assert causes["moved"] == 0 and causes["not_seen"] == 0, dict(causes)
    assert not [k for k in objects if mem.graph.node(k)["state"] == MISSING]
    # revisits confirm what was seen: most objects are seen more than once
    assert sum(mem.graph.node(k)["n_obs"] > 1 for k in objects) >= len(objects) // 2


def test_world_is_rotated_to_z_up(frames) -> None:
    # the cameras look roughly level: their optical y axis points down in the rotated world
    for _rgb, _depth, pose in frames:
        assert pose.rotation[2, 1] < -0.8


def test_replay_of_the_imported_recording_has_no_false_changes(tmp_path) -> None:
    """The shared frames as a TUM RGB-D folder (played forward and back, so the camera comes back
    to every view), imported to a bag and replayed with the command's own code path."""
    from mnemobot.evaluation.replay import ReplayConfig, replay
    from mnemobot.ros2.rgbd_import import import_rgbd

    seq = tmp_path / "rgbd_dataset_room5"
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    poses = (ROOM / "pose.txt").read_text().split("\n")
    rgb_lines, depth_lines, gt_lines = [], [], []
    order = [1, 2, 3, 4, 5, 4, 3, 2] * 3 + [1]
    for n, i in enumerate(order):
        t = 100.0 + 0.2 * n
        rgb_lines.append(f"{t:.6f} rgb/{n}.png")
        depth_lines.append(f"{t + 0.005:.6f} depth/{n}.png")
        gt_lines.append(f"{t:.6f} {poses[i - 1].strip()}")
        PIL.open(ROOM / "color" / f"{i}.png").save(seq / "rgb" / f"{n}.png")
        mm = np.asarray(PIL.open(ROOM / "depth" / f"{i}.pgm")).astype(np.uint32) * 5  # TUM: 5000 per metre
        PIL.fromarray(mm.astype(np.uint16)).save(seq / "depth" / f"{n}.png")
    (seq / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (seq / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (seq / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    import_rgbd(seq, tmp_path / "bag", "tum", intrinsics=(K.fx, K.fy, K.cx, K.cy))
    res = replay(ReplayConfig(bag=tmp_path / "bag"))
    assert res.frames == len(order)
    assert any("sensor profile kinect" in n for n in res.notes)
    changes = res.memory["changes"]
    assert res.memory["objects"] >= 3 and changes.get("appeared", 0) >= 3
    assert changes.get("moved", 0) == 0 and changes.get("missing", 0) == 0, changes
