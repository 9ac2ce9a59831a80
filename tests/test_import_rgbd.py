"""import-rgbd on real Kinect frames: TUM RGB-D and 7-Scenes layouts -> MCAP bag -> replay.

The five real frames of ``/work/shared/data/real_rgbd/kinect_room_5`` (colour PNG, 16-bit
millimetre depth, camera-to-world poses in a y-down SLAM world) are laid out as a TUM RGB-D
sequence and as a 7-Scenes sequence, imported, and read back with :class:`BagSource` and with
``mcap`` + ``mcap-ros2-support``: pixels, depth, poses (after the up rotation) and intrinsics must be
the source's. Broken layouts must give one clear line and exit 2 (fatal) or a skip count (per
frame), and never leave anything at OUT. Replay's robustness to bad camera_info, transforms and
empty depth frames, and to bare ``.mcap`` files, is checked on bags made from the same frames.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
Image = pytest.importorskip("PIL.Image")

from mnemobot.agent.cli import main  # noqa: E402
from mnemobot.perception.sensor import PROFILES  # noqa: E402
from mnemobot.perception.types import CameraIntrinsics, Pose  # noqa: E402
from mnemobot.ros2.bag import BagSource  # noqa: E402
from mnemobot.ros2.convert import camera_info_msg, image_msg, transform_msg  # noqa: E402
from mnemobot.ros2.record import BagRecorder  # noqa: E402
from mnemobot.ros2.rgbd_import import TUM_INTRINSICS, RgbdImportError, import_rgbd, tum_intrinsics  # noqa: E402,E501
from mnemobot.ros2.topics import FRAMES, MNEMOBOT_TOPICS, TopicMap  # noqa: E402
from mnemobot.ros2.types import typestore  # noqa: E402

DATA = Path(os.environ.get("MNEMOBOT_REAL_RGBD", "/work/shared/data/real_rgbd")) / "kinect_room_5"
if not DATA.is_dir():  # pragma: no cover - the shared data set is part of the checkout's environment
    pytest.skip(f"real RGB-D frames not found at {DATA}", allow_module_level=True)

REAL_K = (518.0, 519.0, 325.5, 253.5)
T0 = 1305031102.0
DT = 1 / 30
Y_DOWN_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""The rotation that takes the data set world's up (-y) to +z."""


@pytest.fixture(scope="module")
def real():
    """The real frames: colour (H, W, 3) uint8, depth (H, W) uint16 mm, camera-to-world poses."""
    rgb = [np.asarray(Image.open(DATA / "color" / f"{i}.png").convert("RGB")) for i in range(1, 6)]
    depth = [np.asarray(Image.open(DATA / "depth" / f"{i}.pgm")).astype(np.uint16) for i in range(1, 6)]
    rows = [[float(x) for x in line.split()] for line in (DATA / "pose.txt").read_text().splitlines() if line.strip()]
    poses = [Pose(np.array(r[:3]), np.array(r[3:7])) for r in rows]
    assert len(rgb) == len(depth) == len(poses) == 5 and depth[0].max() > 1000
    return {"rgb": rgb, "depth": depth, "poses": poses}


# -- layouts -------------------------------------------------------------------------------------------
def _save16(path: Path, a: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(a, dtype=np.uint16)).save(path)


def _tum(root: Path, real: dict, gt_rows: list[str] | None = None) -> Path:
    """A TUM RGB-D sequence: rgb at T0 + i/30, depth 5 ms later (x5: 5000 units/m), ground truth
    at 10 ms before and after each rgb time holding that frame's pose (so every pose is interpolated)."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb, dep, gt = ["# color images", "# timestamp filename"], ["# depth maps"], ["# timestamp tx ty tz qx qy qz qw"]
    for i in range(5):
        t = T0 + i * DT
        Image.fromarray(real["rgb"][i]).save(root / "rgb" / f"{t:.6f}.png")
        _save16(root / "depth" / f"{t + 0.005:.6f}.png", real["depth"][i].astype(np.uint32) * 5)
        rgb.append(f"{t:.6f} rgb/{t:.6f}.png")
        dep.append(f"{t + 0.005:.6f} depth/{t + 0.005:.6f}.png")
        p = real["poses"][i]
        for dt in (-0.01, 0.01):
            gt.append(f"{t + dt:.6f} " + " ".join(f"{v:.9f}" for v in (*p.position, *p.quaternion)))
    (root / "rgb.txt").write_text("\n".join(rgb) + "\n")
    (root / "depth.txt").write_text("\n".join(dep) + "\n")
    (root / "groundtruth.txt").write_text("\n".join(gt_rows if gt_rows is not None else gt) + "\n")
    return root


def _seven(root: Path, real: dict) -> Path:
    """A 7-Scenes sequence: frame-00000i.{color.png, depth.png (mm, 65535 invalid), pose.txt (4x4)}."""
    root.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(real["rgb"][i]).save(root / f"frame-{i:06d}.color.png")
        d = real["depth"][i].copy()
        d[d == 0] = 65535
        _save16(root / f"frame-{i:06d}.depth.png", d)
        np.savetxt(root / f"frame-{i:06d}.pose.txt", real["poses"][i].matrix(), fmt="%.9e")
    return root


def _frames(bag: Path) -> tuple[BagSource, list]:
    with BagSource(bag) as src:
        return src, list(src.frames())


def _check_frames(got: list, real: dict, k: tuple[float, ...], dt: float, t0: float) -> None:
    assert len(got) == 5
    for i, rf in enumerate(got):
        o = rf.obs
        assert rf.t == pytest.approx(t0 + i * dt, abs=1e-6)
        assert np.array_equal(o.rgb, real["rgb"][i])
        src_m = real["depth"][i].astype(np.float64) / 1000.0
        assert np.all((o.depth == 0) == (real["depth"][i] == 0))
        assert float(np.abs(o.depth - src_m).max()) <= 0.001
        want = Pose(Y_DOWN_TO_Z_UP @ real["poses"][i].position, real["poses"][i].quaternion)
        want_r = Y_DOWN_TO_Z_UP @ real["poses"][i].rotation
        assert np.allclose(o.camera_pose.position, want.position, atol=1e-6)
        assert np.allclose(o.camera_pose.rotation, want_r, atol=1e-6)
        up = -o.camera_pose.rotation[:, 1]
        assert up[2] > math.cos(math.radians(30)), f"camera {i} up {up} is not near +z"
        assert (o.intrinsics.fx, o.intrinsics.fy, o.intrinsics.cx, o.intrinsics.cy) == pytest.approx(k)
        assert (o.intrinsics.width, o.intrinsics.height) == (640, 480)


# -- imports of real frames ----------------------------------------------------------------------------
def test_tum_import_equals_the_source(real, tmp_path, capsys):
    src = _tum(tmp_path / "rgbd_dataset_freiburg1_room", real)
    out = tmp_path / "bag"
    assert main(["import-rgbd", str(src), str(out), "--format", "tum"]) == 0
    text = capsys.readouterr().out
    assert "freiburg1" in text and "up: world -y (auto" in text and "5 frames written" in text
    assert sorted(p.name for p in out.iterdir()) == ["bag.mcap", "metadata.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "rgbd_dataset_freiburg1_room"]
    src_bag, got = _frames(out)
    _check_frames(got, real, (517.3, 516.5, 318.6, 255.3), DT, 0.0)
    assert src_bag.info.sensor == PROFILES["kinect"].to_dict()
    assert not any("sensor profile" in n for n in src_bag.info.notes)


def test_seven_scenes_import_equals_the_source(real, tmp_path):
    src = _seven(tmp_path / "chess-seq-01", real)
    out = tmp_path / "out" / "chess"
    res = import_rgbd(src, out, "7scenes", intrinsics=REAL_K, fps=15.0, sensor="realsense")
    assert res.written == 5 and not res.skipped and res.up.startswith("world -y")
    assert np.allclose(res.up_rotation, Y_DOWN_TO_Z_UP)
    src_bag, got = _frames(out)
    _check_frames(got, real, REAL_K, 1 / 15, 0.0)
    assert src_bag.info.sensor["name"] == "realsense"


def test_default_and_given_up(real, tmp_path):
    src = _seven(tmp_path / "seq", real)
    default = import_rgbd(src, tmp_path / "a", "7scenes")
    assert default.intrinsics == CameraIntrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
    given = import_rgbd(src, tmp_path / "b", "7scenes", up="z")
    assert np.allclose(given.up_rotation, np.eye(3)) and given.up == "world z (given)"
    with BagSource(tmp_path / "b") as s:
        first = next(iter(s.frames()))
    assert np.allclose(first.obs.camera_pose.position, real["poses"][0].position, atol=1e-6)
    flipped = import_rgbd(src, tmp_path / "c", "7scenes", up="-z")
    assert np.allclose(flipped.up_rotation @ [0, 0, -1], [0, 0, 1])


@pytest.mark.parametrize(("folder", "camera"), [("rgbd_dataset_freiburg3_long_office_household", "freiburg3"),
                                               ("fr2_desk", "freiburg2"), ("FR1-xyz", "freiburg1"),
                                               ("living_room", "default"), ("fr12", "default")])
def test_tum_camera_from_the_folder_name(tmp_path, folder, camera):
    (tmp_path / folder).mkdir()
    assert tum_intrinsics(tmp_path / folder) == (TUM_INTRINSICS[camera], camera)


def test_cli_options_intrinsics_and_depth_scale(real, tmp_path, capsys):
    src = _tum(tmp_path / "seq", real)
    for p in (src / "depth").iterdir():  # millimetre depth: 1000 units per metre
        _save16(p, np.asarray(Image.open(p)).astype(np.uint32) // 5)
    out = tmp_path / "bag"
    assert main(["import-rgbd", str(src), str(out), "--format", "tum", "--intrinsics", "518,519,325.5,253.5",
                 "--depth-scale", "1000", "--up=-y", "--sensor-profile", "heavy", "-q"]) == 0
    assert capsys.readouterr().out.strip().startswith("5 frames written")
    src_bag, got = _frames(out)
    _check_frames(got, real, REAL_K, DT, 0.0)
    assert src_bag.info.sensor["name"] == "heavy"
    with pytest.raises(SystemExit):
        main(["import-rgbd", str(src), str(tmp_path / "b2"), "--format", "tum", "--intrinsics", "518,519"])
    assert "expected four numbers fx,fy,cx,cy" in capsys.readouterr().err


def test_foreign_reader_decodes_the_bag(real, tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = tmp_path / "bag"
    import_rgbd(_tum(tmp_path / "fr2_desk", real), out, "tum")
    T = TopicMap()
    seen: dict[str, int] = {}
    with open(out / "bag.mcap", "rb") as f:
        for _schema, channel, _message, msg in make_reader(f, decoder_factories=[DecoderFactory()]) \
                .iter_decoded_messages(log_time_order=True):
            i = seen.get(channel.topic, 0)
            seen[channel.topic] = i + 1
            if channel.topic == T.rgb:
                assert (msg.encoding, msg.width, msg.height) == ("rgb8", 640, 480)
                assert bytes(msg.data) == real["rgb"][i].tobytes()
            elif channel.topic == T.depth:
                assert msg.encoding == "16UC1" and msg.header.frame_id == FRAMES["camera_optical"]
                assert np.array_equal(np.frombuffer(bytes(msg.data), "<u2").reshape(480, 640), real["depth"][i])
            elif channel.topic == T.camera_info:
                assert list(msg.k) == pytest.approx([520.9, 0, 325.1, 0, 521.0, 249.7, 0, 0, 1])
            elif channel.topic == T.tf:
                tr = msg.transforms[0]
                assert (tr.header.frame_id, tr.child_frame_id) == (FRAMES["world"], FRAMES["camera_optical"])
            elif channel.topic == MNEMOBOT_TOPICS["sensor_profile"]:
                assert json.loads(msg.data)["name"] == "kinect"
    assert seen == {T.rgb: 5, T.depth: 5, T.camera_info: 5, T.tf: 5, MNEMOBOT_TOPICS["sensor_profile"]: 1}


def test_cli_replay_of_an_imported_bag(real, tmp_path):
    out = tmp_path / "bag"
    import_rgbd(_seven(tmp_path / "seq", real), out, "7scenes", intrinsics=REAL_K)
    r = subprocess.run([sys.executable, "-m", "mnemobot.agent.cli", "replay", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "frames     : 5 in" in r.stdout and "sensor profile kinect (declared by the bag)" in r.stdout


def test_bare_mcap_from_another_writer_replays(real, tmp_path):
    """The imported bag's messages re-written by the ``mcap`` library alone (no metadata.yaml)."""
    from mcap.reader import make_reader
    from mcap.writer import Writer

    out = tmp_path / "bag"
    import_rgbd(_tum(tmp_path / "fr3", real), out, "tum")
    bare_dir = tmp_path / "elsewhere"
    bare_dir.mkdir()
    bare = bare_dir / "session.mcap"
    with open(out / "bag.mcap", "rb") as f, open(bare, "wb") as g:
        reader = make_reader(f)
        w = Writer(g)
        w.start(profile="ros2", library="another-recorder")
        summary = reader.get_summary()
        ids: dict[int, int] = {}
        schema_ids: dict[int, int] = {}
        for _schema, channel, message in reader.iter_messages(log_time_order=True):
            if channel.schema_id not in schema_ids:
                s = summary.schemas[channel.schema_id]
                schema_ids[channel.schema_id] = w.register_schema(s.name, s.encoding, s.data)
            if channel.id not in ids:
                ids[channel.id] = w.register_channel(channel.topic, channel.message_encoding,
                                                     schema_ids[channel.schema_id])
            w.add_message(ids[channel.id], message.log_time, message.data, message.publish_time)
        w.finish()
    before = sorted(p.name for p in bare_dir.iterdir())
    src_bag, got = _frames(bare)
    assert len(got) == 5 and src_bag.info.storage == "mcap" and src_bag.info.sensor["name"] == "kinect"
    assert np.array_equal(got[2].obs.rgb, real["rgb"][2])
    assert sorted(p.name for p in bare_dir.iterdir()) == before == ["session.mcap"]
    assert main(["replay", str(bare), "-q"]) == 0


# -- bad input -----------------------------------------------------------------------------------------
def _fails(args: list[str], capsys, needle: str) -> None:
    assert main(["import-rgbd", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mnemobot: error:") and needle in err[0], err


def test_fatal_problems_are_one_line_and_leave_nothing(real, tmp_path, capsys):
    out = tmp_path / "out"
    _fails([str(tmp_path / "nope"), str(out), "--format", "tum"], capsys, "no such data set folder")
    src = _tum(tmp_path / "seq", real)
    (src / "groundtruth.txt").rename(src / "gt.bak")
    _fails([str(src), str(out), "--format", "tum"], capsys, "missing index file")
    (src / "gt.bak").rename(src / "groundtruth.txt")
    (src / "rgb.txt").write_text("1305031102.0 rgb/a.png\nnot-a-time rgb/b.png\n")
    _fails([str(src), str(out), "--format", "tum"], capsys, "rgb.txt:2")
    _fails([str(tmp_path / "seq"), str(out), "--format", "7scenes"], capsys, "no frames in the 7scenes layout")
    seven = _seven(tmp_path / "seven", real)
    _fails([str(seven), str(out), "--format", "7scenes", "--sensor-profile", "webcam"], capsys,
           "unknown sensor profile")
    _fails([str(seven), str(out), "--format", "7scenes", "--depth-scale", "-1"], capsys, "--depth-scale")
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails([str(seven), str(out), "--format", "7scenes"], capsys, "already exists")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    out.joinpath("keep.txt").unlink()
    out.rmdir()
    for i in range(5):  # every depth image 8-bit: nothing can be written
        Image.fromarray((real["depth"][i] // 256).astype(np.uint8)).save(seven / f"frame-{i:06d}.depth.png")
    assert main(["import-rgbd", str(seven), str(out), "--format", "7scenes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([e for e in err if e.startswith("mnemobot: error:")]) == 1 and "none of the frames" in err[-1]
    assert sum("is an 8-bit grey image; depth must be 16-bit" in e for e in err) == 5
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq", "seven"]


def test_tum_bad_frames_are_skipped_and_counted(real, tmp_path, capsys):
    src = _tum(tmp_path / "fr1_xyz", real)
    gt = (src / "groundtruth.txt").read_text().splitlines()
    rows = [gt[0]] + [r.split() for r in gt[1:]]

    def quat_scale(k: int, s: float) -> None:  # ground-truth rows 2k, 2k+1 hold frame k's pose
        for r in rows[1 + 2 * k: 3 + 2 * k]:
            r[4:8] = [f"{float(v) * s:.9f}" for v in r[4:8]]

    quat_scale(0, 1.0004)  # within 1e-3 of unit length: normalised, frame kept
    quat_scale(3, 1.5)  # rejected
    t5 = [r for r in rows[1:]][9]
    extra = [[f"{T0 + 20:.6f}", *t5[1:]], [f"{T0 + 21:.6f}", *t5[1:]]]  # a 19 s gap after the last frame
    (src / "groundtruth.txt").write_text("\n".join([rows[0]] + [" ".join(r) for r in rows[1:] + extra]) + "\n")
    t1, t2 = T0 + DT, T0 + 2 * DT
    (src / f"rgb/{t1:.6f}.png").unlink()  # missing image
    Image.fromarray((real["depth"][2] // 256).astype(np.uint8)).save(src / f"depth/{t2 + 0.005:.6f}.png")
    with (src / "rgb.txt").open("a") as f:
        f.write(f"{T0 + 0.5:.6f} rgb/{T0:.6f}.png\n")  # no depth within 0.02 s: unpaired
        f.write(f"{T0 + 10:.6f} rgb/{T0:.6f}.png\n{T0 - 5:.6f} rgb/{T0:.6f}.png\n")
    with (src / "depth.txt").open("a") as f:
        f.write(f"{T0 + 10:.6f} depth/{T0 + 0.005:.6f}.png\n{T0 - 5:.6f} depth/{T0 + 0.005:.6f}.png\n")
    out = tmp_path / "bag"
    assert main(["import-rgbd", str(src), str(out), "--format", "tum"]) == 0
    cap = capsys.readouterr()
    assert "2 frames written" in cap.out
    for reason in ("1 ground-truth gap", "1 missing image", "1 non-unit quaternion", "1 outside ground truth",
                   "1 unpaired", "1 wrong bit depth"):
        assert reason in cap.out, (reason, cap.out)
    err = cap.err.strip().splitlines()
    assert len(err) == 6 and all(" skipped: " in e for e in err)
    assert any(f"rgb/{t2:.6f}.png" in e and "depth must be 16-bit" in e for e in err)
    assert any("has norm 1.5" in e and "groundtruth.txt line" in e for e in err)
    _s, got = _frames(out)
    assert [round(f.t / DT) for f in got] == [0, 4]
    assert np.allclose(got[0].obs.camera_pose.rotation, Y_DOWN_TO_Z_UP @ real["poses"][0].rotation, atol=1e-6)


def test_seven_scenes_bad_frames_are_skipped_and_counted(real, tmp_path, capsys):
    src = _seven(tmp_path / "seq", real)
    m = real["poses"][1].matrix()
    m[0, 3] = np.nan
    np.savetxt(src / "frame-000001.pose.txt", m)
    np.savetxt(src / "frame-000002.pose.txt", real["poses"][2].matrix() @ np.diag([1.1, 1.0, 1.0, 1.0]))
    (src / "frame-000003.color.png").write_bytes(b"\x89PNG\r\n\x1a\n but cut short")
    (src / "frame-000004.depth.png").unlink()
    (src / "frame-000007.depth.png").write_bytes((src / "frame-000000.depth.png").read_bytes())
    out = tmp_path / "bag"
    assert main(["import-rgbd", str(src), str(out), "--format", "7scenes", "--up=-y"]) == 0
    cap = capsys.readouterr()
    assert "1 frames written" in cap.out and "5 skipped" in cap.out
    for reason in ("1 NaN pose", "1 non-rigid pose", "1 unreadable image", "2 unpaired"):
        assert reason in cap.out, (reason, cap.out)
    err = cap.err.strip().splitlines()
    assert any(e.startswith("mnemobot: frame-000002 skipped: ") and "not a rigid transform" in e for e in err)
    assert any("frame-000004" in e and "no depth" in e for e in err)
    assert any("frame-000007" in e and "no color and no pose" in e for e in err)
    assert len(_frames(out)[1]) == 1


def test_interrupted_import_leaves_nothing(real, tmp_path):
    src = _seven(tmp_path / "seq", real)
    Image.fromarray(np.zeros((480, 640), np.uint8)).save(src / "frame-000003.depth.png")  # found while writing
    out = tmp_path / "bag"

    def interrupt(_msg: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_rgbd(src, out, "7scenes", warn=interrupt)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["seq"]
    with pytest.raises(RgbdImportError, match="must be one of"):
        import_rgbd(src, out, "7scenes", up="up")


# -- replay robustness ---------------------------------------------------------------------------------
def _write_bag(path: Path, real: dict, edit) -> None:  # noqa: ANN001
    """Six frames (the real five, then the first again) with ``edit(i, tf, info, depth)`` -> (tf, info, depth)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore("jazzy")
    T = TopicMap()
    cam = FRAMES["camera_optical"]
    k = CameraIntrinsics(640, 480, *REAL_K)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {t: w.add_connection(t, ty, typestore=ts) for t, ty in (
            (T.rgb, "sensor_msgs/msg/Image"), (T.depth, "sensor_msgs/msg/Image"),
            (T.camera_info, "sensor_msgs/msg/CameraInfo"), (T.tf, "tf2_msgs/msg/TFMessage"))}
        for i in range(6):
            t = 1.0 + i * 0.2
            tf = transform_msg(real["poses"][i % 5], FRAMES["world"], cam, t, ts)
            tf, info, depth = edit(i, tf, camera_info_msg(k, t, cam, ts), real["depth"][i % 5])
            for topic, msg in ((T.tf, ts.types["tf2_msgs/msg/TFMessage"](transforms=[tf])), (T.camera_info, info),
                               (T.rgb, image_msg(real["rgb"][i % 5], "rgb8", t, cam, ts)),
                               (T.depth, image_msg(depth, "16UC1", t, cam, ts))):
                w.write(conns[topic], int(t * 1e9), ts.serialize_cdr(msg, conns[topic].msgtype))


def test_replay_skips_bad_camera_info_transforms_and_empty_depth(real, tmp_path, caplog):
    def edit(i, tf, info, depth):  # noqa: ANN001, ANN202
        rot = tf.transform.rotation
        if i == 0:
            info = dataclasses.replace(info, k=np.array([np.nan, 0, 320, 0, np.nan, 240, 0, 0, 1.0]))
        if i == 2:
            tf = dataclasses.replace(tf, transform=dataclasses.replace(
                tf.transform, translation=dataclasses.replace(tf.transform.translation, x=float("nan"))))
        if i == 3:
            tf = dataclasses.replace(tf, transform=dataclasses.replace(tf.transform, rotation=dataclasses.replace(
                rot, x=rot.x * 1.5, y=rot.y * 1.5, z=rot.z * 1.5, w=rot.w * 1.5)))
        if i == 4:
            depth = np.zeros_like(depth)
        if i == 5:
            info = dataclasses.replace(info, k=np.array([0.0, 0, 320, 0, 0.0, 240, 0, 0, 1.0]))
        return tf, info, depth

    bag = tmp_path / "bag"
    _write_bag(bag, real, edit)
    with caplog.at_level(logging.WARNING, logger="mnemobot.ros2.bag"):
        src, got = _frames(bag)
    # frame 0 is emitted once frame 1's good camera_info has arrived (frames wait tf_wait for transforms)
    assert [round(f.t, 3) for f in got] == [0.0, 0.2, 0.4, 0.6, 1.0]
    st = src.stats
    assert (st["dropped_bad_camera_info"], st["bad_transforms"], st["dropped_empty_depth"]) == (2, 2, 1)
    text = caplog.text
    assert "camera_info at 0.000 s skipped: camera_info has no usable K matrix" in text
    assert "at 0.400 s skipped: transform is not finite" in text
    assert "at 0.600 s skipped: quaternion" in text and "not unit length" in text
    assert "frame at 0.800 s skipped: its depth image has no valid pixel" in text
    assert "at 1.000 s skipped" in text and "the last good one is used" in text
    assert np.allclose(got[-1].obs.intrinsics.fx, REAL_K[0])  # the frame after a bad camera_info keeps the last good
    # frames 2 and 3 lost their own transform: their pose is interpolated between frames 1 and 4's
    p1, p4 = real["poses"][1].position, real["poses"][4].position
    assert np.allclose(got[2].obs.camera_pose.position, p1 + (p4 - p1) / 3, atol=1e-6)
    assert src.info.sensor is None

    def no_focal(_i, tf, info, depth):  # noqa: ANN001, ANN202
        return tf, dataclasses.replace(info, k=np.array([0.0, 0, 320, 0, 0.0, 240, 0, 0, 1.0])), depth

    _write_bag(tmp_path / "bag2", real, no_focal)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mnemobot.ros2.bag"):
        src, got = _frames(tmp_path / "bag2")
    assert got == [] and src.stats["dropped_bad_camera_info"] == 12
    assert "frame at 0.000 s skipped: no valid camera_info yet" in caplog.text
    assert "further dropped bad camera info are only counted" in caplog.text


def test_recorder_latches_the_sensor(tmp_path):
    rec = BagRecorder(tmp_path / "rec", joint_names=["j1"]).open()
    try:
        rec.latched(site_map=None, static_labels=[], instruction="look", sensor=PROFILES["kinect"].to_dict())
    finally:
        rec.close()
    with BagSource(tmp_path / "rec") as src:
        assert src.info.sensor == PROFILES["kinect"].to_dict()
