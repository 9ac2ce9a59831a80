"""Conversions between ROS 2 messages (rosbags dataclasses) and mnemobot's plain types.

Images follow ``sensor_msgs/Image`` conventions as camera drivers publish them:

* colour: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8`` -> ``(H, W, 3)`` uint8 RGB;
* depth: ``32FC1`` (metres; NaN/inf/0 = no return) or ``16UC1`` / ``mono16`` (millimetres,
  0 = no return) -> ``(H, W)`` float32 metres;
* instance masks: ``16UC1`` / ``mono16`` / ``32SC1`` (0 = background) -> ``(H, W)`` int32.

Rows may be padded (``step`` > width * bytes per pixel) and big-endian; both are handled.
Malformed messages raise :class:`MessageError` naming the problem.

Camera frames: the optical frame is x right, y down, z forward (REP 103); the camera *link*
frame is x forward, y left, z up. :data:`OPTICAL_IN_LINK` is the fixed rotation between them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mnemobot.perception.types import CameraIntrinsics, Pose

__all__ = [
    "OPTICAL_IN_LINK",
    "MessageError",
    "camera_info_msg",
    "depth_from_msg",
    "header",
    "image_from_msg",
    "image_msg",
    "instances_from_msg",
    "intrinsics_from_msg",
    "pose_from_transform",
    "rgb_from_msg",
    "stamp_to_s",
    "s_to_stamp",
    "transform_msg",
]

OPTICAL_IN_LINK = Pose(np.zeros(3), np.array([-0.5, 0.5, -0.5, 0.5]))
"""Pose of a camera's optical frame in its link frame (x right/y down/z forward in x fwd/z up)."""

_DTYPES = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3),
    "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1), "32SC1": (np.int32, 1),
    "64FC1": (np.float64, 1),
}


class MessageError(ValueError):
    """A message that cannot be converted (unknown encoding, wrong size, bad values)."""


def stamp_to_s(stamp: Any) -> float:
    """``builtin_interfaces/Time`` -> seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def s_to_stamp(t: float, ts: Any) -> Any:
    """Seconds -> ``builtin_interfaces/Time`` of typestore ``ts`` (rounded to the nanosecond)."""
    ns = int(round(t * 1e9))
    return ts.types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def header(t: float, frame_id: str, ts: Any) -> Any:
    return ts.types["std_msgs/msg/Header"](stamp=s_to_stamp(t, ts), frame_id=frame_id)


# -- images ---------------------------------------------------------------------------------------------
def image_layout(array: np.ndarray, encoding: str) -> tuple[np.ndarray, int, int, int]:
    """``(pixels, height, width, step)`` of ``array`` as a ``sensor_msgs/Image`` in ``encoding``
    stores it (little-endian, unpadded rows); :class:`MessageError` for a wrong shape or encoding.
    Shared by the bag writer and the rclpy nodes."""
    if encoding not in _DTYPES:
        raise MessageError(f"unsupported image encoding {encoding!r}")
    dtype, channels = _DTYPES[encoding]
    a = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    if a.ndim not in (2, 3) or (a.shape[2] if a.ndim == 3 else 1) != channels:
        raise MessageError(f"an {encoding} image needs {channels} channel(s), got shape {array.shape}")
    h, w = a.shape[:2]
    return a, h, w, w * channels * a.itemsize


def image_msg(array: np.ndarray, encoding: str, t: float, frame_id: str, ts: Any) -> Any:
    """A ``sensor_msgs/Image`` holding ``array`` (little-endian, unpadded rows)."""
    a, h, w, step = image_layout(array, encoding)
    return ts.types["sensor_msgs/msg/Image"](
        header=header(t, frame_id, ts), height=h, width=w, encoding=encoding, is_bigendian=0,
        step=step, data=a.reshape(-1).view(np.uint8))


def image_from_msg(msg: Any) -> np.ndarray:
    """The pixel array of a ``sensor_msgs/Image``: ``(H, W)`` or ``(H, W, C)`` in its own dtype."""
    enc = str(msg.encoding)
    if enc not in _DTYPES:
        raise MessageError(f"unsupported image encoding {enc!r} (supported: {', '.join(sorted(_DTYPES))})")
    dtype, channels = _DTYPES[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    row = w * channels * itemsize
    data = np.asarray(msg.data, dtype=np.uint8)
    if h <= 0 or w <= 0:
        raise MessageError(f"image has no pixels ({w}x{h})")
    if step < row or data.size < step * (h - 1) + row:
        raise MessageError(f"{enc} image {w}x{h} needs {row} bytes per row and {step * h} in all; "
                           f"got step {step} and {data.size} bytes")
    rows = np.lib.stride_tricks.as_strided(data, shape=(h, row), strides=(step, 1))
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    px = np.ascontiguousarray(rows).view(dt).astype(np.dtype(dtype), copy=False)
    return px.reshape(h, w) if channels == 1 else px.reshape(h, w, channels)


def rgb_from_msg(msg: Any) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from any colour or mono encoding."""
    px = image_from_msg(msg)
    enc = str(msg.encoding)
    if enc in ("rgb8", "8UC3"):
        return px
    if enc == "bgr8":
        return np.ascontiguousarray(px[:, :, ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(px[:, :, :3])
    if enc == "bgra8":
        return np.ascontiguousarray(px[:, :, 2::-1])
    if enc in ("mono8", "8UC1"):
        return np.repeat(px[:, :, None], 3, axis=2)
    raise MessageError(f"an image with encoding {enc!r} cannot be used as colour")


def depth_from_msg(msg: Any) -> np.ndarray:
    """``(H, W)`` float32 metres: ``32FC1``/``64FC1`` are metres, ``16UC1``/``mono16`` millimetres.
    Zero, NaN and inf pixels are "no return" (returned as 0 for 16-bit input, unchanged otherwise)."""
    px = image_from_msg(msg)
    enc = str(msg.encoding)
    if enc in ("16UC1", "mono16"):
        return px.astype(np.float32) * np.float32(0.001)
    if enc in ("32FC1", "64FC1"):
        return px.astype(np.float32, copy=False)
    raise MessageError(f"depth must be 32FC1 (metres) or 16UC1 (millimetres), got {enc!r}")


def instances_from_msg(msg: Any) -> np.ndarray:
    """``(H, W)`` int32 instance ids (0 = background) from a 16UC1/mono16/32SC1/mono8 mask."""
    enc = str(msg.encoding)
    if enc not in ("16UC1", "mono16", "32SC1", "mono8", "8UC1"):
        raise MessageError(f"instance masks must be 16UC1 (0 = background), got {enc!r}")
    return image_from_msg(msg).astype(np.int32)


# -- camera info ---------------------------------------------------------------------------------------
def camera_info_msg(k: CameraIntrinsics, t: float, frame_id: str, ts: Any) -> Any:
    """``sensor_msgs/CameraInfo`` of an undistorted pinhole camera."""
    K = np.array([k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0])
    P = np.array([k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return ts.types["sensor_msgs/msg/CameraInfo"](
        header=header(t, frame_id, ts), height=k.height, width=k.width, distortion_model="plumb_bob",
        d=np.zeros(5), k=K, r=np.eye(3).reshape(-1), p=P, binning_x=0, binning_y=0, roi=roi)


def intrinsics_from_msg(msg: Any) -> CameraIntrinsics:
    """Pinhole intrinsics from ``sensor_msgs/CameraInfo`` (K; distortion is not applied)."""
    K = np.asarray(msg.k, dtype=float).reshape(-1)
    if K.size != 9 or not np.all(np.isfinite(K)) or K[0] <= 0 or K[4] <= 0:
        raise MessageError(f"camera_info has no usable K matrix: {K.tolist()}")
    if int(msg.width) <= 0 or int(msg.height) <= 0:
        raise MessageError(f"camera_info has no image size ({msg.width}x{msg.height})")
    return CameraIntrinsics(int(msg.width), int(msg.height), float(K[0]), float(K[4]), float(K[2]), float(K[5]))


# -- transforms ----------------------------------------------------------------------------------------
def transform_msg(pose: Pose, parent: str, child: str, t: float, ts: Any) -> Any:
    """``geometry_msgs/TransformStamped``: ``child`` in ``parent`` at ``pose``."""
    T = ts.types
    p, q = pose.position, pose.quaternion
    return T["geometry_msgs/msg/TransformStamped"](
        header=header(t, parent, ts), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=float(p[0]), y=float(p[1]), z=float(p[2])),
            rotation=T["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))))


def pose_from_transform(tf: Any) -> Pose:
    """``geometry_msgs/Transform`` -> :class:`Pose` (the quaternion is normalised)."""
    tr, r = tf.translation, tf.rotation
    p = np.array([tr.x, tr.y, tr.z], dtype=float)
    q = np.array([r.x, r.y, r.z, r.w], dtype=float)
    n = float(np.linalg.norm(q))
    if not (np.all(np.isfinite(p)) and math.isfinite(n)) or n < 1e-6:
        raise MessageError(f"transform is not finite or has a zero quaternion: {p.tolist()} {q.tolist()}")
    return Pose(p, q / n)
