"""Shared helpers of mnemobot's rclpy nodes: QoS profiles, parameters, message builders, a ``main()``.

QoS (every profile explicit, keep-last, never "system default"):

============  ============  =====  ===============  ==================================================
profile       reliability   depth  durability       used for
============  ============  =====  ===============  ==================================================
sensor        reliable *    5      volatile         images, camera_info, joint_states (``best_effort``
                                                    on request; see below)
command       reliable      10     volatile         commands to the robot, odometry, ``/clock``
tf            reliable      100    volatile         ``/tf``
latched       reliable      1      transient local  ``/tf_static``, site map, labels, e-stop, status
============  ============  =====  ===============  ==================================================

\\* Sensors are *reliable* by default: over Fast DDS on loopback, best-effort large images lose
most frames in fragments (28/40 rgb and 1/40 depth frames at 5 Hz in our measurement), reliable
ones none. :func:`sensor_qos` takes ``best_effort=True`` for a driver that publishes best effort
(a best-effort subscriber matches both kinds of publisher; a reliable one only reliable ones).

Usage in a node module::

    class MyNode(Node):
        def __init__(self) -> None:
            super().__init__("my_node")
            self.topic = declare(self, "topic", "/my/topic", "std_msgs/String, latched: what it carries")
            self.pub = self.create_publisher(String, self.topic, latched_qos())

    def main(argv: list[str] | None = None) -> int:
        return run_node(MyNode, argv)          # python -m ... --ros-args -p topic:=/other

    if __name__ == "__main__":
        raise SystemExit(main())
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState, RegionOfInterest
from std_msgs.msg import Header

from mnemobot.perception.types import CameraIntrinsics, Pose
from mnemobot.ros2.convert import MessageError, image_layout

__all__ = [
    "NodeConfigError",
    "camera_info_msg",
    "command_qos",
    "declare",
    "header",
    "image_msg",
    "joint_state_msg",
    "latched_qos",
    "run_node",
    "sensor_qos",
    "stamp",
    "stamp_s",
    "tf_qos",
    "transform_msg",
]


class NodeConfigError(ValueError):
    """A node cannot start with its parameters (bad value, unknown task...); printed without a traceback."""


# -- QoS ----------------------------------------------------------------------------------------------
def sensor_qos(best_effort: bool = False, depth: int = 5) -> QoSProfile:
    """Sensor streams: keep-last ``depth``, volatile; reliable unless ``best_effort``."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def command_qos(depth: int = 10) -> QoSProfile:
    """Commands (and odometry, clock): reliable, keep-last ``depth`` (1..10), volatile."""
    if not 1 <= depth <= 10:
        raise ValueError(f"command QoS depth must be 1..10, got {depth}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def tf_qos() -> QoSProfile:
    """``/tf``: reliable, keep-last 100, volatile (what tf2's broadcaster offers)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos(depth: int = 1) -> QoSProfile:
    """Latched state (``/tf_static``, maps, labels, e-stop): reliable, transient local, keep-last ``depth``:
    a subscriber that joins late still gets the last message."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


# -- parameters ----------------------------------------------------------------------------------------
def declare(node: Node, name: str, default: Any, description: str, *, read_only: bool = False) -> Any:
    """Declare parameter ``name`` with ``default`` and a description; return its (possibly overridden) value.

    The value must have the default's type (``-p seed:=3`` is an int); an int is accepted for a float
    parameter (``-p watchdog_s:=1``). Another type raises :class:`NodeConfigError` naming the parameter.
    """
    descriptor = ParameterDescriptor(name=name, description=description, read_only=read_only,
                                     dynamic_typing=True)  # checked here, with a readable error
    value = node.declare_parameter(name, default, descriptor).value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        raise NodeConfigError(f"{node.get_name()}: parameter {name} must be {type(default).__name__} "
                              f"(like {default!r}), got {value!r}")
    return value


# -- message builders ------------------------------------------------------------------------------------
def stamp(t: float) -> Time:
    """Seconds -> ``builtin_interfaces/Time`` (rounded to the nanosecond; negative clamps to 0)."""
    ns = max(0, int(round(float(t) * 1e9)))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_s(s: Any) -> float:
    """``builtin_interfaces/Time`` -> seconds."""
    return float(s.sec) + float(s.nanosec) * 1e-9


def header(t: float, frame_id: str = "") -> Header:
    return Header(stamp=stamp(t), frame_id=frame_id)


def image_msg(array: np.ndarray, encoding: str, t: float, frame_id: str) -> Image:
    """``sensor_msgs/Image`` (little-endian, unpadded rows) of ``array`` in ``encoding``
    (``rgb8``, ``32FC1`` metres, ``16UC1``...)."""
    a, h, w, step = image_layout(array, encoding)
    msg = Image(header=header(t, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0, step=step)
    msg.data = a.tobytes()  # bytes: one copy; assigning a numpy array is ~50x slower
    return msg


def camera_info_msg(k: CameraIntrinsics, t: float, frame_id: str) -> CameraInfo:
    """``sensor_msgs/CameraInfo`` of an undistorted pinhole camera (plumb_bob, zero distortion)."""
    msg = CameraInfo(header=header(t, frame_id), height=int(k.height), width=int(k.width),
                     distortion_model="plumb_bob", roi=RegionOfInterest())
    msg.d = [0.0] * 5
    msg.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def transform_msg(pose: Pose, parent: str, child: str, t: float) -> TransformStamped:
    """``geometry_msgs/TransformStamped``: frame ``child`` at ``pose`` in frame ``parent``."""
    p, q = pose.position, pose.quaternion
    return TransformStamped(
        header=header(t, parent), child_frame_id=child,
        transform=Transform(translation=Vector3(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                            rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))))


def joint_state_msg(names: Sequence[str], position: Sequence[float], velocity: Sequence[float] | None,
                    t: float, frame_id: str = "") -> JointState:
    """``sensor_msgs/JointState`` (no efforts)."""
    if len(position) != len(names) or (velocity is not None and len(velocity) != len(names)):
        raise MessageError(f"joint_state: {len(names)} names but {len(position)} positions")
    return JointState(header=header(t, frame_id), name=list(names), position=[float(v) for v in position],
                      velocity=[] if velocity is None else [float(v) for v in velocity], effort=[])


# -- running a node ------------------------------------------------------------------------------------
def run_node(node_factory: Callable[[], Node], args: Sequence[str] | None = None,
             spin: Callable[[Node], None] | None = None) -> int:
    """Init rclpy with ``args`` (``--ros-args ...``; default ``sys.argv``), build the node, spin it until
    SIGINT/SIGTERM, then destroy it and shut down. Returns the exit status: 0 after a signal, 2 when the
    node refuses its parameters (:class:`NodeConfigError`, printed as one line, no traceback).

    ``spin(node)`` replaces the default executor spin (a node with its own loop, like the simulator);
    it returns when ``rclpy.ok()`` turns false or raises ``KeyboardInterrupt``/``ExternalShutdownException``.
    """
    argv = list(sys.argv if args is None else args)
    # rclpy's own handlers turn SIGINT and SIGTERM into a context shutdown: spin() then raises
    # ExternalShutdownException (caught below) instead of a KeyboardInterrupt in arbitrary code.
    rclpy.init(args=argv)
    node: Node | None = None
    try:
        node = node_factory()
        if spin is not None:
            spin(node)
        else:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except NodeConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception:
        if rclpy.ok():
            raise
        return 0  # a publish or wait cut short by the signal's shutdown, not a failure
    finally:
        # A second signal during the teardown must not print a traceback either.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            try:
                node.destroy_node()
            except Exception:  # the context may already be gone; nothing left to release
                pass
        rclpy.try_shutdown()


def trajectory_positions(msg: Any, names: Sequence[str], current: np.ndarray, what: str,
                         error: type[Exception] = ValueError) -> np.ndarray:
    """The first point of a ``trajectory_msgs/JointTrajectory`` as targets for joints ``names``
    (joints it omits keep ``current``). Raises ``error`` naming the problem: no point, names and
    positions that disagree or repeat, unknown joints, values that are not finite. Range and
    speed checks are the caller's (a driver's hardware range, the bridge's limits)."""
    if not msg.points:
        raise error(f"{what} trajectory has no points")
    given = list(msg.joint_names) or list(names)
    pos = np.asarray(msg.points[0].positions, dtype=float)
    if len(pos) != len(given) or len(set(given)) != len(given):
        raise error(f"{what} trajectory: {len(given)} joint names but {len(pos)} positions (or repeats)")
    unknown = [n for n in given if n not in names]
    if unknown:
        raise error(f"{what} trajectory names unknown joints {unknown} (known: {list(names)})")
    if not np.all(np.isfinite(pos)):
        raise error(f"{what} targets are not finite: {pos.tolist()}")
    q = np.array(current, dtype=float)
    index = {n: i for i, n in enumerate(names)}
    for n, v in zip(given, pos, strict=True):
        q[index[n]] = v
    return q
