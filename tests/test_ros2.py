"""ROS 2 layer without a simulator: message types, image/transform conversions, the TF buffer."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rosbags")

from mnemobot.perception.types import CameraIntrinsics, Pose  # noqa: E402
from mnemobot.ros2.convert import (  # noqa: E402
    OPTICAL_IN_LINK,
    MessageError,
    camera_info_msg,
    depth_from_msg,
    image_from_msg,
    image_msg,
    instances_from_msg,
    intrinsics_from_msg,
    pose_from_transform,
    rgb_from_msg,
    transform_msg,
)
from mnemobot.ros2.tf import TFBuffer, TFError  # noqa: E402
from mnemobot.ros2.topics import TopicMap, TopicMapError  # noqa: E402
from mnemobot.ros2.types import CUSTOM_TYPES, msg_files, typestore  # noqa: E402


@pytest.fixture(scope="module")
def ts():
    return typestore("jazzy")


def _pose(rng: np.random.Generator) -> Pose:
    q = rng.normal(size=4)
    return Pose(rng.uniform(-2, 2, 3), q / np.linalg.norm(q))


def _close(a: Pose, b: Pose, tol: float = 1e-9) -> bool:
    return np.allclose(a.matrix(), b.matrix(), atol=tol)


# -- message types ------------------------------------------------------------------------------------------
def test_custom_types_come_from_the_interfaces_package(ts):
    files = msg_files()
    assert set(files) == set(CUSTOM_TYPES)
    op = ts.types["mnemobot_interfaces/msg/MemoryOp"]
    assert (op.ADD, op.UPDATE, op.DELETE, op.NOOP) == (0, 1, 2, 3)
    assert "data_json" in op.__dataclass_fields__
    feedback = ts.types["mnemobot_interfaces/action/ExecuteTask_Feedback"]
    assert {"skill", "progress", "anomalies"} <= set(feedback.__dataclass_fields__)
    request = ts.types["mnemobot_interfaces/srv/msg/QueryMemory_Request"]  # rosbags' name for a service part
    assert {"question", "argument", "since", "k"} <= set(request.__dataclass_fields__)


def test_interfaces_build_the_same_types_for_rclpy():
    """The rclpy types built at set-up (scripts/ros_interfaces.sh) come from the same files."""
    pytest.importorskip("rclpy")
    from mnemobot_interfaces.action import ExecuteTask
    from mnemobot_interfaces.msg import MemoryOp
    from mnemobot_interfaces.srv import QueryMemory

    for cls, name in ((ExecuteTask.Goal, "action/ExecuteTask_Goal"), (ExecuteTask.Feedback, "action/ExecuteTask_Feedback"),
                      (ExecuteTask.Result, "action/ExecuteTask_Result"), (QueryMemory.Request, "srv/QueryMemory_Request"),
                      (QueryMemory.Response, "srv/QueryMemory_Response"), (MemoryOp, "msg/MemoryOp")):
        fields = [line.split()[1] for line in msg_files()[f"mnemobot_interfaces/{name}"].splitlines()
                  if line.strip() and not line.lstrip().startswith("#") and "=" not in line.split("#")[0]]
        assert list(cls.get_fields_and_field_types()) == fields, name


def test_memory_op_array_round_trips_through_cdr(ts):
    from mnemobot.ros2.convert import header, s_to_stamp

    Op = ts.types["mnemobot_interfaces/msg/MemoryOp"]
    ops = [Op(seq=i, stamp=s_to_stamp(1.5 + i, ts), episode=2, kind=i % 4, target="node", key=f"obj:{i}",
              cause="moved", data_json=json.dumps({"position": [i, 0.5, 1.0]})) for i in range(3)]
    msg = ts.types["mnemobot_interfaces/msg/MemoryOpArray"](header=header(2.0, "map", ts), ops=ops)
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    assert [o.key for o in back.ops] == ["obj:0", "obj:1", "obj:2"]
    assert back.ops[2].kind == 2 and json.loads(back.ops[1].data_json)["position"] == [1, 0.5, 1.0]
    assert back.ops[1].stamp.sec == 2 and back.ops[1].stamp.nanosec == 500_000_000


def test_unknown_distro_is_refused():
    with pytest.raises(ValueError, match="unknown ROS 2 distribution"):
        typestore("rolling-ridley")


# -- images -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding,shape,dtype", [
    ("rgb8", (4, 5, 3), np.uint8), ("bgr8", (4, 5, 3), np.uint8), ("rgba8", (3, 2, 4), np.uint8),
    ("mono8", (4, 5), np.uint8), ("16UC1", (4, 5), np.uint16), ("32FC1", (6, 3), np.float32),
    ("32SC1", (2, 2), np.int32),
])
def test_images_round_trip(ts, encoding, shape, dtype):
    rng = np.random.default_rng(0)
    a = (rng.uniform(0, 200, shape)).astype(dtype)
    msg = image_msg(a, encoding, 1.25, "cam", ts)
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, "sensor_msgs/msg/Image"), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(image_from_msg(back), a)
    assert back.header.frame_id == "cam" and back.header.stamp.nanosec == 250_000_000


def test_colour_orders_are_converted_to_rgb(ts):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    np.testing.assert_array_equal(rgb_from_msg(image_msg(rgb[..., ::-1], "bgr8", 0, "c", ts)), rgb)
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(rgb_from_msg(image_msg(rgba, "rgba8", 0, "c", ts)), rgb)
    mono = rgb_from_msg(image_msg(np.full((2, 2), 7, np.uint8), "mono8", 0, "c", ts))
    assert mono.shape == (2, 2, 3) and (mono == 7).all()


def test_padded_rows_and_big_endian_are_read(ts):
    a = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    row = a.astype(">u2").tobytes()
    padded = b"".join(row[i * 8:(i + 1) * 8] + b"\xff\xff" for i in range(3))  # 2 bytes of padding per row
    msg = ts.types["sensor_msgs/msg/Image"](
        header=image_msg(a, "16UC1", 0, "c", ts).header, height=3, width=4, encoding="16UC1", is_bigendian=1,
        step=10, data=np.frombuffer(padded, np.uint8))
    np.testing.assert_array_equal(image_from_msg(msg), a)
    np.testing.assert_allclose(depth_from_msg(msg), a * 0.001, rtol=1e-6)


def test_depth_encodings(ts):
    mm = np.array([[0, 1000], [1500, 65535]], np.uint16)
    d = depth_from_msg(image_msg(mm, "16UC1", 0, "c", ts))
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, [[0.0, 1.0], [1.5, 65.535]], rtol=1e-6)
    metres = np.array([[np.nan, 0.5]], np.float32)
    np.testing.assert_array_equal(depth_from_msg(image_msg(metres, "32FC1", 0, "c", ts)), metres)
    with pytest.raises(MessageError, match="depth must be 32FC1"):
        depth_from_msg(image_msg(np.zeros((2, 2, 3), np.uint8), "rgb8", 0, "c", ts))
    with pytest.raises(MessageError, match="instance masks must be 16UC1"):
        instances_from_msg(image_msg(metres, "32FC1", 0, "c", ts))


def test_malformed_images_raise(ts):
    good = image_msg(np.zeros((4, 4), np.uint16), "16UC1", 0, "c", ts)
    from dataclasses import replace

    with pytest.raises(MessageError, match="unsupported image encoding"):
        image_from_msg(replace(good, encoding="yuv422_yuy2"))
    with pytest.raises(MessageError, match="bytes per row"):
        image_from_msg(replace(good, data=good.data[:10]))
    with pytest.raises(MessageError, match="no pixels"):
        image_from_msg(replace(good, width=0))
    with pytest.raises(MessageError, match="needs 3 channel"):
        image_msg(np.zeros((2, 2)), "rgb8", 0, "c", ts)


def test_camera_info_round_trip(ts):
    k = CameraIntrinsics.from_fov(320, 240, 58.0)
    msg = camera_info_msg(k, 0.5, "cam", ts)
    back = ts.deserialize_cdr(ts.serialize_cdr(msg, "sensor_msgs/msg/CameraInfo"), "sensor_msgs/msg/CameraInfo")
    assert intrinsics_from_msg(back) == k
    from dataclasses import replace

    with pytest.raises(MessageError, match="no usable K"):
        intrinsics_from_msg(replace(back, k=np.zeros(9)))


def test_transforms_round_trip(ts):
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = _pose(rng)
        msg = transform_msg(p, "map", "base_link", 3.0, ts)
        assert _close(pose_from_transform(msg.transform), p, 1e-12)
    bad = transform_msg(_pose(rng), "a", "b", 0, ts)
    bad.transform.rotation.x = bad.transform.rotation.y = bad.transform.rotation.z = bad.transform.rotation.w = 0.0
    with pytest.raises(MessageError, match="zero quaternion"):
        pose_from_transform(bad.transform)


def test_optical_frame_convention():
    # The optical z axis (viewing direction) is the link's x axis; optical x (image right) is link -y.
    R = OPTICAL_IN_LINK.rotation
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-12)


# -- TF buffer ----------------------------------------------------------------------------------------------
def test_tf_chain_of_static_and_dynamic_transforms():
    rng = np.random.default_rng(7)
    base_t0, base_t1, mount, optical = _pose(rng), _pose(rng), _pose(rng), OPTICAL_IN_LINK
    buf = TFBuffer()
    buf.add("odom", "base_footprint", 1.0, base_t0)
    buf.add("odom", "base_footprint", 2.0, base_t1)
    buf.add("base_footprint", "head", 0.0, mount, static=True)
    buf.add("head", "head_optical", 0.0, optical, static=True)
    assert _close(buf.lookup("odom", "head_optical", 1.0), base_t0 @ mount @ optical)
    assert _close(buf.lookup("odom", "head_optical", 2.0), base_t1 @ mount @ optical)
    # the inverse direction and a lookup between two leaves through the common ancestor
    assert _close(buf.lookup("head_optical", "odom", 1.0), (base_t0 @ mount @ optical).inverse())
    assert _close(buf.lookup("head", "base_footprint", 1.7), mount.inverse())


def test_tf_interpolates_between_samples():
    buf = TFBuffer()
    buf.add("map", "base", 0.0, Pose.from_xyz_yaw(0.0, 0.0, 0.0, 0.0))
    buf.add("map", "base", 1.0, Pose.from_xyz_yaw(1.0, 2.0, 0.0, np.pi / 2))
    mid = buf.lookup("map", "base", 0.25)
    np.testing.assert_allclose(mid.position, [0.25, 0.5, 0.0], atol=1e-12)
    assert mid.yaw == pytest.approx(np.pi / 8)
    # out of order insertion is kept sorted
    buf.add("map", "base", 0.5, Pose.from_xyz_yaw(9.0, 9.0, 0.0, 0.0))
    np.testing.assert_allclose(buf.lookup("map", "base", 0.5).position, [9.0, 9.0, 0.0])


def test_tf_errors_are_clear():
    buf = TFBuffer(max_gap=0.2)
    buf.add("map", "base", 1.0, Pose.from_xyz_yaw(0, 0, 0, 0))
    buf.add("map", "base", 2.0, Pose.from_xyz_yaw(1, 0, 0, 0))
    buf.add("odom", "other", 0.0, Pose.from_xyz_yaw(0, 0, 0, 0), static=True)
    np.testing.assert_allclose(buf.lookup("map", "base", 2.1).position, [1, 0, 0])  # held within max_gap
    with pytest.raises(TFError, match="the newest is at 2.000"):
        buf.lookup("map", "base", 3.0)
    with pytest.raises(TFError, match="the first is at 1.000"):
        buf.lookup("map", "base", 0.2)
    with pytest.raises(TFError, match="not connected"):
        buf.lookup("map", "other", 1.0)
    with pytest.raises(TFError, match="not in the TF tree"):
        buf.lookup("map", "camera", 1.0)
    with pytest.raises(TFError, match="loop"):
        buf.add("base", "map", 1.0, Pose.from_xyz_yaw(0, 0, 0, 0))


def test_tf_history_is_bounded():
    buf = TFBuffer(history_s=1.0)
    for i in range(100):
        buf.add("map", "base", i * 0.1, Pose.from_xyz_yaw(i, 0, 0, 0))
    edge = buf._edges["base"]
    assert edge.times[-1] - edge.times[0] <= 2.0 + 1e-9


# -- topic map -----------------------------------------------------------------------------------------------
def test_topic_map_from_yaml(tmp_path):
    p = tmp_path / "map.yaml"
    p.write_text("rgb: /head/rgb\ndepth: /head/depth\ninstances: null\nworld_frame: odom\n")
    m = TopicMap.from_yaml(p)
    assert (m.rgb, m.depth, m.instances, m.world_frame) == ("/head/rgb", "/head/depth", None, "odom")
    assert m.camera_info == TopicMap().camera_info  # defaults follow the camera drivers
    assert set(m.explicit) == {"rgb", "depth", "instances", "world_frame"}
    assert "instances" not in m.topics()


@pytest.mark.parametrize("text,match", [
    ("rgb: [1, 2]\n", "must be a topic"),
    ("colour: /x\n", "unknown key"),
    ("rgb: null\n", "rgb is required"),
    ("- just\n- a list\n", "must be a mapping"),
    ("rgb: /a\n  bad: indent\n", "not valid YAML"),
])
def test_bad_topic_maps(tmp_path, text, match):
    p = tmp_path / "map.yaml"
    p.write_text(text)
    with pytest.raises(TopicMapError, match=match):
        TopicMap.from_yaml(p)


def test_missing_topic_map_file(tmp_path):
    with pytest.raises(TopicMapError, match="cannot read topic map"):
        TopicMap.from_yaml(tmp_path / "nope.yaml")
