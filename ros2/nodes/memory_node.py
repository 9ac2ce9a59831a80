"""The ``memory`` node: a robot's RGB-D camera and TF in, a persistent scene graph out.

Usage::

    python -m mnemobot.ros2.nodes.memory_node --ros-args -p memory_db:=/data/house.db \\
        -p rgb_topic:=/head_camera/rgb/image_raw -p depth_topic:=/head_camera/depth/image_raw \\
        -p camera_info_topic:=/head_camera/rgb/camera_info -p world_frame:=odom

It is a lifecycle node (``autostart`` true: it configures and activates itself; false: a
lifecycle manager drives it). **configure** opens the SQLite memory (``memory_db``; reloaded
with everything remembered before, also after a crash) and creates the subscriptions,
publishers and the query service; **activate** starts integrating frames; **deactivate** stops
integrating (queries are still answered); **cleanup** ends the episode and closes the database.
SIGINT/SIGTERM shut it down cleanly (database closed, exit status 0).

Frames are assembled exactly as ``mnemobot replay`` assembles a bag's
(:class:`~mnemobot.ros2.bag.FrameAssembler`): RGB, depth and instance masks paired by header
stamp, the camera pose looked up in TF at the image stamp (interpolated; a frame waits up to
``tf_wait`` s for late transforms), labels from the labels topic. Without masks
(``instances_topic`` empty, or no mask within ``topic_timeout_s``) objects come from the
model-free segmenter, as in replay. Only the newest complete frame is integrated: the sensor
subscriptions keep the last message only and older pending frames are dropped, so the node
never lags more than one frame behind the camera.

Topics (every name a parameter; QoS explicit):

=====================  ==============================  ==============  =====================================
parameter              type                            frame           QoS
=====================  ==============================  ==============  =====================================
rgb_topic (in)         sensor_msgs/Image (rgb8, bgr8,  camera optical  keep last ``sensor_queue`` (5), ``reliability``
                       rgba8, bgra8, mono8)                            (reliable | best_effort), volatile
depth_topic (in)       sensor_msgs/Image (32FC1 m,     camera optical  as rgb
                       16UC1 mm)
camera_info_topic (in) sensor_msgs/CameraInfo          camera optical  as rgb
instances_topic (in)   sensor_msgs/Image (16UC1 ids,   camera optical  as rgb; optional ('' = none)
                       0 = background)
labels_topic (in)      std_msgs/String (JSON           -               keep last 1, reliable, transient local
                       {"id": "label"})                                (latched); optional
tf_topic (in)          tf2_msgs/TFMessage              -               keep last 100, reliable, volatile
tf_static_topic (in)   tf2_msgs/TFMessage              -               keep last 100, reliable, transient local
sensor_profile_topic   std_msgs/String (JSON           -               keep last 1, reliable, transient local
(in)                   SensorModel)
scene_graph_topic      visualization_msgs/MarkerArray  world_frame     keep last 1, reliable, transient local
(out)                  (a cube per object, coloured                    (a late RViz/Foxglove gets it)
                       by state, and a text label)
memory_ops_topic (out) mnemobot_interfaces/            world_frame     keep last 10, reliable, volatile
                       MemoryOpArray (the ops of one
                       frame; header stamp = image)
query_service          mnemobot_interfaces/srv/        -               services default
                       QueryMemory
body_topic (in)        std_msgs/String (JSON body      -               keep last 1, reliable, transient local
                       facts: held, opened, at_place)
sync_topic (out)       std_msgs/String (JSON: graph    -               keep last 1, reliable, transient local
                       seq, last frame stamp, clock)
=====================  ==============================  ==============  =====================================

Other parameters: ``memory_db`` (SQLite file; '' keeps memory in this process only),
``world_frame`` (default ``map``), ``camera_frame`` ('' = the image's frame_id), ``base_frame``,
``reliability``, ``sensor_queue`` (keep-last depth of the sensor topics, default 5: with Fast DDS and
reliable QoS a depth of 1 loses large fragmented images, a fifth of them at 640x480 and 15 Hz on a
busy machine; the node drains the queues before each frame, so depth adds no lag), ``topic_timeout_s`` (a required topic silent this long is named in a warning),
``sensor_profile`` (``ideal`` | ``kinect`` | ``realsense`` | ``heavy`` | FILE.yaml; '' = what
``sensor_profile_topic`` declares, else ``kinect``), ``embedder`` (for ``search``), ``sync_tol``,
``tf_wait``, ``autostart``.

QueryMemory answers the questions of ``mnemobot memory DB QUESTION --json`` with the same JSON
(``summary``, ``episodes``, ``objects``, ``where``, ``contents``, ``last_seen``/``last-seen``,
``changed`` (``argument`` or ``since``, memory time in s), ``search``), plus ``stats`` (this
node's frame counters) and ``state`` (the whole graph and its clock, from which a mirror follows
the ops topic; see :mod:`mnemobot.ros2.memory_mirror`). An unknown question or a bad argument gives ``success`` false and a
message. Memory time: each start of the node is an episode; its frames are timed from its first
message, after one second past everything remembered (see :class:`~mnemobot.memory.memory.Memory`).

Bad input never stops the node: frames without TF at their stamp, with no valid depth, or whose
image sizes disagree with camera_info are skipped, counted (``stats``) and warned about
(throttled); memory is unchanged by them.
"""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MemoryNode", "NodeParams", "main"]  # noqa: F822 - MemoryNode is built lazily

NODE_NAME = "memory"
_WARN_EVERY_S = 5.0
"""A warning of one kind is repeated (with its count) at most this often."""

_STATE_COLOURS = {"present": (0.2, 0.8, 0.2, 0.8), "held": (0.2, 0.4, 1.0, 0.8), "missing": (0.5, 0.5, 0.5, 0.3)}
_OP_KIND = {"ADD": 0, "UPDATE": 1, "DELETE": 2, "NOOP": 3}


@dataclass(frozen=True)
class _Param:
    name: str
    default: Any
    description: str


PARAMS = (
    _Param("memory_db", "", "SQLite file of the persistent memory (reloaded on start); '' = in this process only"),
    _Param("rgb_topic", "/camera/color/image_raw", "colour image (sensor_msgs/Image)"),
    _Param("depth_topic", "/camera/aligned_depth_to_color/image_raw",
           "depth image registered to the colour camera (sensor_msgs/Image, 32FC1 m or 16UC1 mm)"),
    _Param("camera_info_topic", "/camera/color/camera_info", "colour camera intrinsics (sensor_msgs/CameraInfo)"),
    _Param("instances_topic", "/camera/instances/image_raw",
           "instance masks (sensor_msgs/Image 16UC1, 0 = background); '' = none: model-free segmentation"),
    _Param("labels_topic", "/camera/instances/labels",
           "instance labels (std_msgs/String JSON {\"id\": \"label\"}, latched); '' = none"),
    _Param("tf_topic", "/tf", "transforms (tf2_msgs/TFMessage)"),
    _Param("tf_static_topic", "/tf_static", "static transforms (tf2_msgs/TFMessage, transient local)"),
    _Param("sensor_profile_topic", "/mnemobot/sensor_profile",
           "the camera rig's declared noise model (std_msgs/String JSON, latched); used when sensor_profile is ''"),
    _Param("site_map_topic", "/mnemobot/site_map",
           "the robot's map of rooms and places, and the labels of furniture (std_msgs/String JSON "
           "{site_map, static_labels}, latched); objects are then related to named places; '' = none"),
    _Param("latched_wait_s", 3.0, "seconds the first frame waits for the latched sensor profile and site map "
           "(discovery may deliver them after the first images)"),
    _Param("scene_graph_topic", "/mnemobot/scene_graph",
           "scene graph out (visualization_msgs/MarkerArray, transient local)"),
    _Param("memory_ops_topic", "/mnemobot/memory_ops", "memory operations out (mnemobot_interfaces/MemoryOpArray)"),
    _Param("query_service", "/mnemobot/query_memory", "QueryMemory service name"),
    _Param("body_topic", "/mnemobot/body",
           "the body's facts from the orchestrator (std_msgs/String JSON {seq, held, opened, at_place, stamp}, "
           "latched): the object in the gripper is not integrated as seen, its grasp and release are "
           "remembered, containers opened; '' = none"),
    _Param("sync_topic", "/mnemobot/memory_sync",
           "what memory has integrated (std_msgs/String JSON {session, seq, frame, body_seq, offset, t0}, "
           "latched), sent after each frame and each body update: lets a mirror of the graph "
           "(the orchestrator's) wait until it is as new as a frame; '' = none"),
    _Param("world_frame", "map", "the fixed frame memory lives in"),
    _Param("camera_frame", "", "camera optical frame in TF; '' = the image header's frame_id"),
    _Param("base_frame", "base_link", "the robot base frame in TF (its pose is remembered); '' = none"),
    _Param("reliability", "reliable", "QoS reliability of the sensor subscriptions: reliable | best_effort"),
    _Param("sensor_queue", 5, "history depth of the sensor subscriptions (keep last N); the queues are drained "
           "before each frame is integrated and only the newest complete frame is, so N adds no lag"),
    _Param("topic_timeout_s", 10.0, "seconds after which a required topic that has not arrived is reported by name"),
    _Param("sensor_profile", "", "ideal | kinect | realsense | heavy | FILE.yaml; '' = the declared one, else kinect"),
    _Param("embedder", "auto", "embedder for 'search' questions: auto | minilm | lexical | none"),
    _Param("sync_tol", 0.03, "seconds within which rgb, depth and masks stamps are one frame"),
    _Param("tf_wait", 0.25, "seconds a frame waits for transforms at its stamp before it is skipped"),
    _Param("autostart", True, "configure and activate at start (false: wait for a lifecycle manager)"),
)


@dataclass(frozen=True)
class NodeParams:
    """The node's parameters (see :data:`PARAMS` for each one's meaning)."""

    memory_db: str
    rgb_topic: str
    depth_topic: str
    camera_info_topic: str
    instances_topic: str
    labels_topic: str
    tf_topic: str
    tf_static_topic: str
    sensor_profile_topic: str
    site_map_topic: str
    latched_wait_s: float
    scene_graph_topic: str
    memory_ops_topic: str
    query_service: str
    body_topic: str
    sync_topic: str
    world_frame: str
    camera_frame: str
    base_frame: str
    reliability: str
    sensor_queue: int
    topic_timeout_s: float
    sensor_profile: str
    embedder: str
    sync_tol: float
    tf_wait: float
    autostart: bool

    def check(self) -> None:
        """Raise ``ValueError`` naming a bad value."""
        if self.reliability not in ("reliable", "best_effort"):
            raise ValueError(f"reliability must be 'reliable' or 'best_effort', got {self.reliability!r}")
        for name in ("rgb_topic", "depth_topic", "camera_info_topic", "tf_topic", "world_frame"):
            if not getattr(self, name):
                raise ValueError(f"{name} cannot be empty")
        if self.sensor_queue < 1:
            raise ValueError(f"sensor_queue must be >= 1, got {self.sensor_queue}")
        if not self.topic_timeout_s > 0 or not self.tf_wait >= 0 or not self.sync_tol > 0:
            raise ValueError("topic_timeout_s and sync_tol must be > 0 and tf_wait >= 0")


class _Throttle:
    """Warn about each kind of problem at once, then at most every ``every_s`` with its count."""

    def __init__(self, say: Callable[[str], None], every_s: float = _WARN_EVERY_S) -> None:
        self.say, self.every_s = say, every_s
        self.last: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def __call__(self, key: str, text: str) -> None:
        now = time.monotonic()
        self.count[key] = self.count.get(key, 0) + 1
        if now - self.last.get(key, -math.inf) >= self.every_s:
            n = self.count[key]
            self.say(text + (f" ({n} {key.replace('_', ' ')} so far)" if n > 1 else ""))
            self.last[key] = now


def _qos(depth: int, reliable: bool, latched: bool) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def _stamp_msg(t_ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000))


def scene_graph_markers(graph: Any, frame: str, stamp: Any) -> Any:
    """``visualization_msgs/MarkerArray``: DELETEALL, then per object a cube (its extent, coloured by
    state: present green, held blue, missing grey and translucent) and a text label above it."""
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    clear = Marker(ns="objects", id=0, action=Marker.DELETEALL)
    clear.header.frame_id, clear.header.stamp = frame, stamp
    markers = [clear]
    for i, key in enumerate(sorted(graph.by_layer("object"), key=lambda n: int(n.split(":")[1]))):
        d = graph.node(key)
        state = str(d.get("state", "present"))
        c = [float(v) for v in d.get("centroid", d.get("position", (0.0, 0.0, 0.0)))]
        ext = [max(float(v), 0.01) for v in d.get("extent", (0.05, 0.05, 0.05))]
        yaw = float(d.get("yaw", 0.0))
        r, g, b, a = _STATE_COLOURS.get(state, (0.9, 0.6, 0.1, 0.8))
        box = Marker(ns="objects", id=2 * i + 1, type=Marker.CUBE, action=Marker.ADD,
                     pose=Pose(position=Point(x=c[0], y=c[1], z=c[2]),
                               orientation=Quaternion(z=math.sin(yaw / 2), w=math.cos(yaw / 2))),
                     scale=Vector3(x=ext[0], y=ext[1], z=ext[2]), color=ColorRGBA(r=r, g=g, b=b, a=a))
        text = Marker(ns="labels", id=2 * i + 2, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                      pose=Pose(position=Point(x=c[0], y=c[1], z=c[2] + ext[2] / 2 + 0.06)),
                      scale=Vector3(z=0.05), color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                      text=f"{d['label']} ({state})" if state != "present" else str(d["label"]))
        for m in (box, text):
            m.header.frame_id, m.header.stamp = frame, stamp
        markers += [box, text]
    return MarkerArray(markers=markers)


def memory_ops_msg(ops: list[Any], frame: str, stamp: Any) -> Any:
    """``mnemobot_interfaces/MemoryOpArray`` of ``ops`` (:class:`~mnemobot.memory.ops.MemoryOp`)."""
    from mnemobot_interfaces.msg import MemoryOp, MemoryOpArray

    out = MemoryOpArray()
    out.header.frame_id, out.header.stamp = frame, stamp
    for op in ops:
        ns = int(round(float(op.time) * 1e9))
        out.ops.append(MemoryOp(seq=int(op.seq), stamp=_stamp_msg(ns), episode=int(op.episode),
                                kind=_OP_KIND[op.kind.value], target=op.target, key=op.key, cause=op.cause,
                                data_json=json.dumps(op.to_dict()["data"], separators=(",", ":"))))
    return out


def _make_node_class() -> type:
    """The node class (built on first use so that importing this module does not need rclpy)."""
    from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn

    class MemoryNode(LifecycleNode):
        """See the module doc."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(NODE_NAME, **kwargs)
            from rcl_interfaces.msg import ParameterDescriptor

            for p in PARAMS:  # seconds may be given as whole numbers (-p topic_timeout_s:=5)
                self.declare_parameter(p.name, p.default, ParameterDescriptor(
                    description=p.description, dynamic_typing=isinstance(p.default, float)))
            self.memory: Any = None
            self.asm: Any = None
            self.active = False
            self.counts = {"integrated": 0, "bad_frames": 0, "bad_messages": 0}
            self.warn = _Throttle(lambda text: self.get_logger().warning(text))
            self._entities: list[Any] = []
            self._subs: dict[str, Any] = {}
            self._received: dict[str, int] = {}
            self._latest: tuple[float, float] | None = None  # (message time, monotonic wall) of the newest
            self._started = time.monotonic()
            self._profile_declared: dict[str, Any] | None = None
            self._site: tuple[Any, frozenset[str]] | None = None
            self._integrated_this_session = 0
            self.sync_pub: Any = None
            self._body_seq = 0
            self._last_body: Any = None
            self._frame_stamp: float | None = None
            self.session = ""

        # -- parameters ---------------------------------------------------------------------------
        def params(self) -> NodeParams:
            values = {p.name: self.get_parameter(p.name).value for p in PARAMS}
            for p in PARAMS:
                if isinstance(p.default, float):
                    try:
                        values[p.name] = float(values[p.name])
                    except (TypeError, ValueError):
                        raise ValueError(f"{p.name} must be a number of seconds, got {values[p.name]!r}") from None
            return NodeParams(**values)

        # -- lifecycle ----------------------------------------------------------------------------
        def on_configure(self, state: State) -> TransitionCallbackReturn:
            try:
                self.p = p = self.params()
                p.check()
                self._open_memory(self._sensor())
            except Exception as e:  # noqa: BLE001 - any failure is reported as a failed transition
                self.get_logger().error(f"cannot configure: {e}")
                return TransitionCallbackReturn.FAILURE
            self._make_assembler()
            self._received, self._latest, self._integrated_this_session = {}, None, 0
            sensor = _qos(p.sensor_queue, p.reliability == "reliable", False)
            roles = {"rgb": p.rgb_topic, "depth": p.depth_topic, "camera_info": p.camera_info_topic,
                     "instances": p.instances_topic}
            from sensor_msgs.msg import CameraInfo, Image
            from std_msgs.msg import String
            from tf2_msgs.msg import TFMessage

            for role, topic in roles.items():
                if topic:
                    kind = CameraInfo if role == "camera_info" else Image
                    self._sub(kind, topic, role, sensor)
            if p.labels_topic:
                self._sub(String, p.labels_topic, "labels", _qos(1, True, True))
            self._sub(TFMessage, p.tf_topic, "tf", _qos(100, True, False))
            if p.tf_static_topic:
                self._sub(TFMessage, p.tf_static_topic, "tf_static", _qos(100, True, True))
            if p.sensor_profile_topic and not p.sensor_profile:
                self._sub(String, p.sensor_profile_topic, "sensor_profile", _qos(1, True, True))
            if p.site_map_topic:
                self._sub(String, p.site_map_topic, "site_map", _qos(1, True, True))
            if p.body_topic:
                self._sub(String, p.body_topic, "body", _qos(1, True, True))
            from mnemobot_interfaces.msg import MemoryOpArray
            from mnemobot_interfaces.srv import QueryMemory
            from visualization_msgs.msg import MarkerArray

            self.graph_pub = self.create_lifecycle_publisher(MarkerArray, p.scene_graph_topic, _qos(1, True, True))
            self.ops_pub = self.create_lifecycle_publisher(MemoryOpArray, p.memory_ops_topic, _qos(10, True, False))
            self.sync_pub = self.create_lifecycle_publisher(String, p.sync_topic, _qos(1, True, True)) \
                if p.sync_topic else None
            self._entities += [self.graph_pub, self.ops_pub, *([self.sync_pub] if self.sync_pub else []),
                               self.create_service(QueryMemory, p.query_service, self._on_query),
                               self.create_timer(0.1, self._on_timer)]
            self._started = time.monotonic()
            self.get_logger().info(
                f"configured: memory {p.memory_db or '(in this process)'} with "
                f"{len(self.memory.graph.by_layer('object'))} objects; rgb {p.rgb_topic}, depth {p.depth_topic}, "
                f"camera_info {p.camera_info_topic}, masks {p.instances_topic or 'none'}, "
                f"reliability {p.reliability}")
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state: State) -> TransitionCallbackReturn:
            self.active = True
            ret = super().on_activate(state)
            self._publish_graph(self.get_clock().now().to_msg())  # the reloaded graph, for late viewers
            self._publish_sync()
            return ret

        def on_deactivate(self, state: State) -> TransitionCallbackReturn:
            self.active = False
            return super().on_deactivate(state)

        def on_cleanup(self, state: State) -> TransitionCallbackReturn:
            self._release()
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: State) -> TransitionCallbackReturn:
            self._release()
            return TransitionCallbackReturn.SUCCESS

        def _release(self) -> None:
            self.active = False
            for e in self._entities:
                self._destroy(e)
            self._entities, self._subs = [], {}
            self.close_memory()

        def _destroy(self, e: Any) -> None:
            from rclpy.lifecycle import LifecyclePublisher
            from rclpy.service import Service
            from rclpy.subscription import Subscription
            from rclpy.timer import Timer

            if isinstance(e, LifecyclePublisher | Subscription):
                (self.destroy_lifecycle_publisher if isinstance(e, LifecyclePublisher) else
                 self.destroy_subscription)(e)
            elif isinstance(e, Service):
                self.destroy_service(e)
            elif isinstance(e, Timer):
                self.destroy_timer(e)

        def close_memory(self, say: Callable[[str], None] | None = None) -> None:
            """End the episode and close the database (idempotent); ``say``: where to report it
            (default the node's logger; after ROS shutdown its /rosout publisher is gone)."""
            if self.memory is not None:
                memory, self.memory = self.memory, None
                try:
                    memory.end_episode({"frames": self.counts["integrated"]})
                finally:
                    memory.close()
                (say or self.get_logger().info)(f"memory closed ({self.counts['integrated']} frames integrated)")

        # -- memory -------------------------------------------------------------------------------
        def _sensor(self) -> Any:
            from mnemobot.perception.sensor import SensorModel, sensor_model

            if self.p.sensor_profile:
                return sensor_model(self.p.sensor_profile)
            if self._profile_declared is not None:
                return SensorModel.from_dict(self._profile_declared, f"{self.p.sensor_profile_topic}")
            return sensor_model("kinect")

        def _open_memory(self, sensor: Any) -> None:
            from mnemobot.memory.graph import SceneGraphConfig
            from mnemobot.memory.memory import Memory, MemoryConfig

            site, static = self._site if self._site is not None else (None, frozenset())
            memory = Memory(MemoryConfig(db_path=self.p.memory_db or None, embedder=self.p.embedder, sensor=sensor,
                                         graph=SceneGraphConfig(static_labels=static)), site=site)
            memory.begin_episode({"node": NODE_NAME, "sensor": sensor.name})
            memory.op_sinks.append(self._on_ops)
            self.memory, self.sensor_name = memory, sensor.name
            self._ops: list[Any] = []
            self.session = uuid.uuid4().hex[:12]  # a mirror that saw another session reloads the graph
            self._frame_stamp = None
            self._body_seq = 0
            if self._last_body is not None:  # memory reopened (a site map came): the body is as it was
                self._on_body(self._last_body)
            self._publish_sync()

        def _make_assembler(self) -> None:
            from mnemobot.ros2.bag import FrameAssembler
            from mnemobot.ros2.topics import TopicMap

            p = self.p
            topics = TopicMap(world_frame=p.world_frame, camera_frame=p.camera_frame or None,
                              base_frame=p.base_frame or None)
            roles = {"instances"} if p.instances_topic else set()
            roles |= {"labels"} if p.labels_topic else set()
            self.asm = FrameAssembler(topics, roles, None, sync_tol=p.sync_tol, tf_wait=p.tf_wait, live=True,
                                      warn=self.warn)

        def _on_ops(self, ops: list[Any]) -> None:
            self._ops.extend(ops)

        # -- input --------------------------------------------------------------------------------
        def _sub(self, kind: Any, topic: str, role: str, qos: Any) -> None:
            sub = self.create_subscription(kind, topic, lambda m, r=role: self._on_msg(r, m), qos)
            self._entities.append(sub)
            self._subs[role] = sub

        def _drain(self) -> None:
            """Take every message already queued on the camera and TF subscriptions (the executor
            hands over one a callback), so that the frame integrated next is the newest there is:
            a deep sensor queue then loses no fragmented image in DDS and adds no lag."""
            for role in ("tf", "camera_info", "labels", "rgb", "depth", "instances"):
                sub = self._subs.get(role)
                if sub is None:
                    continue
                for _ in range(1000):
                    try:
                        with sub.handle:
                            taken = sub.handle.take_message(sub.msg_type, sub.raw)
                    except Exception:  # noqa: BLE001 - rclpy internals moved: the executor delivers them later
                        return
                    if taken is None:
                        break
                    self._on_msg(role, taken[0], drain=False)

        def _on_msg(self, role: str, msg: Any, drain: bool = True) -> None:
            from mnemobot.ros2.convert import MessageError

            self._received[role] = self._received.get(role, 0) + 1
            if role == "sensor_profile":
                self._on_profile(msg)
                return
            if role == "site_map":
                self._on_site_map(msg)
                return
            if role == "body":
                self._on_body(msg)
                return
            recv_ns = self.get_clock().now().nanoseconds
            try:
                self.asm.take(role, msg, recv_ns)
            except (MessageError, ValueError, KeyError) as e:
                self.counts["bad_messages"] += 1
                self.warn(f"bad_{role}", f"skipping a {role} message: {e}")
                return
            if role in ("rgb", "depth", "instances"):
                t = self.asm.rel(msg.header.stamp, recv_ns)
                if self._latest is None or t >= self._latest[0]:
                    self._latest = (t, time.monotonic())
            if not self.active:
                while len(self.asm.pending) > 2:  # not integrating: keep only the newest frames
                    self.asm.pending.popleft()
            elif drain and self.asm.pending and role != "labels":
                self._drain()
                self._integrate(self._now())

        def _on_profile(self, msg: Any) -> None:
            try:
                declared = json.loads(msg.data)
                if not isinstance(declared, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                self.warn("bad_sensor_profile", f"{self.p.sensor_profile_topic} ignored: {e}")
                return
            if declared == self._profile_declared:
                return
            self._profile_declared = declared
            if self._integrated_this_session:
                self.warn("late_sensor_profile", "a sensor profile was declared after frames were integrated: "
                          "ignored until the node restarts")
                return
            try:
                sensor = self._sensor()
            except ValueError as e:
                self.warn("bad_sensor_profile", f"{self.p.sensor_profile_topic} ignored: {e}")
                return
            if sensor.name != self.sensor_name:
                self.close_memory()
                self._open_memory(sensor)
                self.get_logger().info(f"sensor profile {sensor.name} (declared on {self.p.sensor_profile_topic})")

        def _on_site_map(self, msg: Any) -> None:
            """The robot's map (as a mnemobot recording latches it): memory reopens with named places
            and the furniture labels, if no frame was integrated yet."""
            from mnemobot.control.site import SiteMap

            try:
                data = json.loads(msg.data)
                site = SiteMap.from_dict(data["site_map"])
                static = frozenset(str(x) for x in data.get("static_labels", ()))
            except (ValueError, KeyError, TypeError) as e:
                self.warn("bad_site_map", f"{self.p.site_map_topic} ignored: {e}")
                return
            if self._site is not None and self._site[0].to_dict() == site.to_dict():
                return
            if self._integrated_this_session:
                self.warn("late_site_map", "a site map was declared after frames were integrated: "
                          "ignored until the node restarts")
                return
            self._site = (site, static)
            self.close_memory()
            self._open_memory(self._sensor())
            self.get_logger().info(f"site map: {len(site.places)} places (from {self.p.site_map_topic})")

        def _on_body(self, msg: Any) -> None:
            """The orchestrator's body facts: memory remembers a grasp, a release, an opened
            container (as ``mnemobot run`` tells its memory), then says so on the sync topic."""
            try:
                data = json.loads(msg.data)
                seq = int(data["seq"])
                held = data.get("held") or None
                opened = {str(k): float(v) for k, v in (data.get("opened") or {}).items()}
                at_place = data.get("at_place") or None
                stamp = data.get("stamp")
                hand = data.get("hand")
                if held is not None and not isinstance(held, str):
                    raise TypeError("held must be a label or null")
                if hand is not None:
                    hand = [float(v) for v in hand]
                    if len(hand) != 3 or not all(math.isfinite(v) for v in hand):
                        raise ValueError("hand must be three finite numbers or null")
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                self.warn("bad_body", f"{self.p.body_topic} ignored: {e}")
                return
            self._last_body = msg
            if self.memory is None or seq <= self._body_seq:  # a repeat (latched, re-delivered)
                return
            t = None
            if stamp is not None and self.asm is not None and self.asm.t0_ns is not None:
                t = max(0.0, float(stamp) - self.asm.t0_ns / 1e9)
            self._ops = []
            self.memory.set_body(held, opened, at_place, t=t, hand=hand)
            self._body_seq = seq
            if self._ops:
                now = self.get_clock().now().to_msg()
                self.ops_pub.publish(memory_ops_msg(self._ops, self.p.world_frame, now))
                self._publish_graph(now)
            self._publish_sync()

        def _publish_sync(self) -> None:
            if self.sync_pub is None or self.memory is None:
                return
            from std_msgs.msg import String

            t0 = self.asm.t0_ns / 1e9 if self.asm is not None and self.asm.t0_ns is not None else None
            self.sync_pub.publish(String(data=json.dumps({
                "session": self.session, "seq": self.memory.graph.seq, "frame": self._frame_stamp,
                "body_seq": self._body_seq, "offset": self.memory.offset, "t0": t0,
                "episode": self.memory.episode})))

        def _waiting_for_latched(self) -> bool:
            """Before the first frame: the latched declarations (sensor profile, site map) have not
            come yet and the wait for them is not over."""
            if self._integrated_this_session or time.monotonic() - self._started > self.p.latched_wait_s:
                return False
            return (bool(self.p.sensor_profile_topic) and not self.p.sensor_profile
                    and self._profile_declared is None) or (bool(self.p.site_map_topic) and self._site is None)

        def _now(self) -> float:
            """Now on the message clock: the newest image time plus the wall time since it came."""
            if self._latest is None:
                return -math.inf
            return self._latest[0] + (time.monotonic() - self._latest[1])

        def _on_timer(self) -> None:
            self._check_topics()
            if self.active and self.asm is not None:
                self._integrate(self._now())

        def _check_topics(self) -> None:
            p = self.p
            waited = time.monotonic() - self._started
            if waited < p.topic_timeout_s:
                return
            for role, topic in (("rgb", p.rgb_topic), ("depth", p.depth_topic), ("camera_info", p.camera_info_topic)):
                if not self._received.get(role):
                    self.warn(f"no_{role}", f"no message on {topic} ({role}, parameter {role}_topic) after "
                              f"{waited:.0f} s: check the topic name and QoS (reliability={p.reliability}; "
                              "a reliable subscriber does not match a best-effort publisher)")
            if (p.instances_topic and self.asm.has_instances and not self._received.get("instances")
                    and self._received.get("rgb")):
                self.asm.has_instances = False
                self.get_logger().warning(f"no instance masks on {p.instances_topic} after {waited:.0f} s: objects "
                                          "come from model-free segmentation (set instances_topic:='' to say so)")

        # -- integration --------------------------------------------------------------------------
        def _integrate(self, now: float) -> None:
            from mnemobot.perception.types import ObservationError

            if self._waiting_for_latched():
                while len(self.asm.pending) > 2:  # keep only the newest frames meanwhile
                    self.asm.pending.popleft()
                return
            for frame in self.asm.emit(now):
                if self.memory is None:
                    return
                self._ops = []
                try:
                    self.memory.update(frame.obs, place=self.memory.at_place)
                except (ObservationError, ValueError) as e:
                    self.counts["bad_frames"] += 1
                    self.warn("bad_frames", f"frame at {frame.t:.3f} s skipped: {e}")
                    continue
                self.counts["integrated"] += 1
                self._integrated_this_session += 1
                stamp = _stamp_msg(int(self.asm.t0_ns + round(frame.t * 1e9)))
                if self._ops:
                    self.ops_pub.publish(memory_ops_msg(self._ops, self.p.world_frame, stamp))
                self._publish_graph(stamp)
                self._frame_stamp = (self.asm.t0_ns + round(frame.t * 1e9)) / 1e9
                self._publish_sync()

        def _publish_graph(self, stamp: Any) -> None:
            if self.memory is not None:
                self.graph_pub.publish(scene_graph_markers(self.memory.graph, self.p.world_frame, stamp))

        def stats(self) -> dict[str, Any]:
            """Frame counters (integrated, skipped by cause), messages received by role, memory stats."""
            out: dict[str, Any] = dict(self.asm.stats if self.asm is not None else {})
            out.update(self.counts)
            out["received"] = dict(self._received)
            out["active"] = self.active
            out["sensor"] = getattr(self, "sensor_name", None)
            if self.memory is not None:
                out["memory"] = self.memory.stats()
            return out

        # -- questions ----------------------------------------------------------------------------
        def _on_query(self, request: Any, response: Any) -> Any:
            from mnemobot.agent.errors import UserError
            from mnemobot.agent.memory_cli import answer_question

            q, arg = request.question.strip(), request.argument.strip()
            try:
                if self.memory is None:
                    raise UserError("memory is not open (the node is not configured)")
                if q == "stats":
                    answer: Any = self.stats()
                elif q == "state":  # the whole graph, for a mirror (memory_mirror) to follow the ops from
                    t0 = self.asm.t0_ns / 1e9 if self.asm is not None and self.asm.t0_ns is not None else None
                    answer = {"session": self.session, "offset": self.memory.offset, "t0": t0,
                              "episode": self.memory.episode, "frame": self._frame_stamp,
                              "body_seq": self._body_seq, "graph": self.memory.graph.to_state()}
                else:
                    if q == "changed" and not arg:
                        arg = repr(float(request.since))
                    episodes = self.memory.store.episodes() if self.memory.store is not None else []
                    k = int(request.k) or 5
                    answer, _text = answer_question(self.memory.query, episodes, q, arg or None, k,
                                                    label=self.p.memory_db or "memory")
                response.success, response.message = True, ""
                response.answer_json = json.dumps(answer, indent=2)
            except UserError as e:
                response.success, response.message, response.answer_json = False, str(e), ""
            except Exception as e:  # noqa: BLE001 - a question must never take the node down
                self.get_logger().error(f"question {q!r} failed: {type(e).__name__}: {e}")
                response.success, response.message, response.answer_json = False, f"internal error: {e}", ""
            return response

    return MemoryNode


def __getattr__(name: str) -> Any:
    if name == "MemoryNode":
        cls = _make_node_class()
        globals()["MemoryNode"] = cls
        return cls
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; returns the exit status (0 on a clean shutdown)."""
    try:
        import rclpy
        from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
        from rclpy.lifecycle import TransitionCallbackReturn
        from rclpy.signals import SignalHandlerOptions
    except ImportError as e:
        print(f"memory node: ROS 2 Python (rclpy) is not available: {e}", file=sys.stderr)
        return 2
    try:
        rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.ALL)
    except Exception as e:  # noqa: BLE001 - bad --ros-args: one line, not a traceback
        print(f"memory node: cannot start ROS 2 (check the --ros-args; an empty string is -p name:=''): "
              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    node = None
    status = 0
    try:
        node = __getattr__("MemoryNode")()
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return 1
            node.trigger_activate()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # noqa: BLE001 - one line, not a traceback
        print(f"memory node: {type(e).__name__}: {e}", file=sys.stderr)
        status = 1
    finally:
        if node is not None:
            try:
                node.close_memory(say=lambda text: print(f"memory node: {text}", file=sys.stderr))
            except Exception as e:  # noqa: BLE001
                print(f"memory node: closing memory failed: {e}", file=sys.stderr)
                status = 1
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
