"""Record an episode as a rosbag2 bag with MCAP storage (readable by rosbags, mcap, Foxglove).

:class:`BagRecorder` turns what the robot senses, commands, plans and remembers into standard
ROS 2 messages (plus mnemobot's ``MemoryOpArray``) and writes them with ``rosbags``' writer,
which also writes ``metadata.yaml`` with each topic's offered QoS. Every topic is listed in the
README ("Recorded topics"). Message times are episode (sim) time.

The recorder never overwrites: the output directory must not exist. It is closed (metadata
written, MCAP footer and index complete) on every exit path of the episode, including errors.

Usage::

    with BagRecorder("runs/ep0", joint_names=names) as rec:
        rec.latched(site_map=site.to_dict(), static_labels=[...], instruction="put the mug ...")
        rec.frame(observation, body={"held": None, "opened": {}, "at_place": None})
        rec.state(proprio, camera_pose)                   # every control tick
        rec.command(t, command)
        rec.event("plan", t, {"steps": [...]})
        rec.memory_ops(t, ops)
        rec.scene_graph(t, graph)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnemobot.perception.types import Observation, Pose, Proprioception
from mnemobot.ros2.convert import (
    OPTICAL_IN_LINK,
    camera_info_msg,
    header,
    image_msg,
    s_to_stamp,
    transform_msg,
)
from mnemobot.ros2.topics import FRAMES, MNEMOBOT_TOPICS, TopicMap, qos
from mnemobot.ros2.types import typestore

__all__ = ["BagRecorder", "BagWriter", "RecordError"]

_OP_KIND = {"ADD": 0, "UPDATE": 1, "DELETE": 2, "NOOP": 3}


class RecordError(ValueError):
    """The recording cannot be started (the directory exists, or is not writable)."""


class BagWriter:
    """A rosbag2 bag with MCAP storage being written: one connection per topic (with its offered
    QoS), CDR messages at given times (seconds; the log time and, for stamped messages, the
    header stamp). Shared by :class:`BagRecorder` and the RGB-D data set importer
    (:mod:`mnemobot.ros2.rgbd_import`). Never overwrites: ``path`` must not exist."""

    def __init__(self, path: str | Path, *, distro: str = "jazzy", compress: bool = True) -> None:
        self.path = Path(path)
        self.compress = compress
        self.ts = typestore(distro)
        self._writer: Any = None
        self._conns: dict[str, Any] = {}
        self.messages = 0

    def _open_writer(self) -> None:
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

        if self.path.exists():
            raise RecordError(f"{self.path} already exists; record into a new directory (nothing was overwritten)")
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        if self.compress:  # zstd MCAP chunks: what ros2 bag's "storage" compression writes; Foxglove reads it
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()

    def _add(self, topic: str, msgtype: str, profile: str) -> None:
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.ts,
                                                         offered_qos_profiles=qos(profile))

    def close(self) -> None:
        """Write the MCAP footer and ``metadata.yaml`` (idempotent)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def _write(self, topic: str, t: float, msg: Any) -> None:
        conn = self._conns[topic]
        self._writer.write(conn, max(0, int(round(t * 1e9))), self.ts.serialize_cdr(msg, conn.msgtype))
        self.messages += 1

    def _string(self, topic: str, t: float, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        self._write(topic, t, self.ts.types["std_msgs/msg/String"](data=text))

    def _sensor(self, t: float, sensor: dict[str, Any]) -> None:
        """Latch the sensor rig the data came from (``SensorModel.to_dict()``) on
        ``/mnemobot/sensor_profile``, so replay can pick the declared noise model."""
        if not isinstance(sensor, dict):
            raise RecordError(f"the sensor profile must be a dict (SensorModel.to_dict()), got {type(sensor).__name__}")
        self._string(MNEMOBOT_TOPICS["sensor_profile"], t, sensor)


class BagRecorder(BagWriter):
    """Writes one episode. ``joint_names``: arm joints, then the two finger joints, then head
    pan and tilt (the order of :class:`Proprioception`'s fields)."""

    def __init__(self, path: str | Path, joint_names: Sequence[str], *, topics: TopicMap | None = None,
                 scene_graph_hz: float = 1.0, distro: str = "jazzy", compress: bool = True) -> None:
        super().__init__(path, distro=distro, compress=compress)
        self.joint_names = list(joint_names)
        self.topics = topics or TopicMap()
        self.scene_graph_hz = scene_graph_hz
        self._labels: dict[int, str] | None = None
        self._last_graph_t = -1e9

    # -- lifecycle ------------------------------------------------------------------------------------
    def open(self) -> BagRecorder:
        self._open_writer()
        T = self.topics
        add = self._add
        add(T.rgb, "sensor_msgs/msg/Image", "sensor")
        add(T.depth, "sensor_msgs/msg/Image", "sensor")
        add(T.camera_info, "sensor_msgs/msg/CameraInfo", "sensor")
        if T.instances:
            add(T.instances, "sensor_msgs/msg/Image", "sensor")
        if T.labels:
            add(T.labels, "std_msgs/msg/String", "latched")
        add(T.tf, "tf2_msgs/msg/TFMessage", "tf")
        if T.tf_static:
            add(T.tf_static, "tf2_msgs/msg/TFMessage", "latched")
        if T.joint_states:
            add(T.joint_states, "sensor_msgs/msg/JointState", "sensor")
        M = MNEMOBOT_TOPICS
        for role in ("instruction", "site_map", "memory_snapshot", "sensor_profile"):
            add(M[role], "std_msgs/msg/String", "latched")
        for role in ("plan", "skill", "body"):
            add(M[role], "std_msgs/msg/String", "default")
        add(M["memory_ops"], "mnemobot_interfaces/msg/MemoryOpArray", "default")
        add(M["scene_graph"], "visualization_msgs/msg/MarkerArray", "default")
        add(M["joint_command"], "sensor_msgs/msg/JointState", "default")
        add(M["base_command"], "geometry_msgs/msg/TwistStamped", "default")
        return self

    def __enter__(self) -> BagRecorder:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the episode reports ------------------------------------------------------------------------
    def latched(self, *, site_map: dict[str, Any] | None, static_labels: Sequence[str], instruction: str,
                t: float = 0.0, sensor: dict[str, Any] | None = None) -> None:
        """Once at the start: the map (places, rooms), furniture labels, the instruction, the camera mount
        and, when given, the sensor rig (``SensorModel.to_dict()``) on ``/mnemobot/sensor_profile``."""
        M = MNEMOBOT_TOPICS
        self._string(M["site_map"], t, {"site_map": site_map, "static_labels": sorted(static_labels)})
        self._string(M["instruction"], t, instruction)
        if sensor is not None:
            self._sensor(t, sensor)
        if self.topics.tf_static:
            static = transform_msg(OPTICAL_IN_LINK, FRAMES["camera_link"], FRAMES["camera_optical"], t, self.ts)
            self._write(self.topics.tf_static, t, self.ts.types["tf2_msgs/msg/TFMessage"](transforms=[static]))

    def state(self, proprio: Proprioception, camera_pose: Pose) -> None:
        """Body state at one control tick: ``/tf`` (map -> base_link -> camera_link) and joints."""
        t = float(proprio.t)
        base = proprio.base_pose3d()
        link = base.inverse() @ camera_pose @ OPTICAL_IN_LINK.inverse()
        tfs = [transform_msg(base, FRAMES["world"], FRAMES["base"], t, self.ts),
               transform_msg(link, FRAMES["base"], FRAMES["camera_link"], t, self.ts)]
        self._write(self.topics.tf, t, self.ts.types["tf2_msgs/msg/TFMessage"](transforms=tfs))
        if self.topics.joint_states:
            half = float(proprio.gripper_width) / 2.0
            pos = np.concatenate([proprio.arm_q, [half, half], proprio.head]).astype(float)
            vel = np.concatenate([proprio.arm_dq, [0.0, 0.0, 0.0, 0.0]]).astype(float)
            self._write(self.topics.joint_states, t, self.ts.types["sensor_msgs/msg/JointState"](
                header=header(t, "", self.ts), name=self.joint_names[: len(pos)], position=pos,
                velocity=vel[: len(pos)], effort=np.zeros(0)))

    def frame(self, obs: Observation, body: dict[str, Any] | None = None) -> None:
        """One camera frame: rgb8, 32FC1 depth, 16UC1 instances, camera_info, labels when they change."""
        t, cam, T = float(obs.timestamp), FRAMES["camera_optical"], self.topics
        self._write(T.rgb, t, image_msg(obs.rgb, "rgb8", t, cam, self.ts))
        self._write(T.depth, t, image_msg(np.nan_to_num(obs.depth, nan=0.0, posinf=0.0), "32FC1", t, cam, self.ts))
        self._write(T.camera_info, t, camera_info_msg(obs.intrinsics, t, cam, self.ts))
        if obs.instances is not None and T.instances:
            ids = obs.instances
            if ids.size and (int(ids.max()) > 0xFFFF or int(ids.min()) < 0):
                raise RecordError("instance ids must fit 16UC1 (0..65535)")
            self._write(T.instances, t, image_msg(ids.astype(np.uint16), "16UC1", t, cam, self.ts))
            labels = {int(k): str(v) for k, v in obs.labels.items()}
            if T.labels and (self._labels is None or any(self._labels.get(k) != v for k, v in labels.items())):
                self._labels = {**(self._labels or {}), **labels}
                self._string(T.labels, t, {str(k): v for k, v in sorted(self._labels.items())})
        if body is not None:
            self._string(MNEMOBOT_TOPICS["body"], t, body)

    def command(self, t: float, cmd: Any) -> None:
        """One brainstem command (``RobotCommand``): joint targets and base twist."""
        half = float(cmd.gripper_width) / 2.0
        pos = np.concatenate([np.asarray(cmd.arm_q, float), [half, half], np.asarray(cmd.head, float)])
        M, T = MNEMOBOT_TOPICS, self.ts.types
        self._write(M["joint_command"], t, T["sensor_msgs/msg/JointState"](
            header=header(t, "", self.ts), name=self.joint_names[: len(pos)], position=pos,
            velocity=np.zeros(0), effort=np.zeros(0)))
        vx, vy, wz = (float(v) for v in cmd.base_twist)
        V = T["geometry_msgs/msg/Vector3"]
        self._write(M["base_command"], t, T["geometry_msgs/msg/TwistStamped"](
            header=header(t, FRAMES["base"], self.ts),
            twist=T["geometry_msgs/msg/Twist"](linear=V(x=vx, y=vy, z=0.0), angular=V(x=0.0, y=0.0, z=wz))))

    def event(self, kind: str, t: float, data: dict[str, Any]) -> None:
        """A planner or skill event: ``plan`` (the skill calls) or ``skill`` (one result)."""
        self._string(MNEMOBOT_TOPICS["plan" if kind == "plan" else "skill"], t, dict(data, kind=kind))

    def memory_snapshot(self, t: float, seq: int, state: dict[str, Any]) -> None:
        """Memory as it was when recording started (``SceneGraph.to_state``); the recorded
        operations continue from ``seq``, so snapshot + operations rebuild the live graph."""
        self._string(MNEMOBOT_TOPICS["memory_snapshot"], t, {"seq": int(seq), "state": state})

    def memory_ops(self, t: float, ops: Sequence[Any]) -> None:
        """The memory operations produced at ``t`` (``MemoryOp``), as one ``MemoryOpArray``."""
        if not ops:
            return
        T = self.ts.types
        Op = T["mnemobot_interfaces/msg/MemoryOp"]
        msgs = [Op(seq=int(op.seq), stamp=s_to_stamp(float(op.time), self.ts), episode=int(op.episode),
                   kind=_OP_KIND[op.kind.value], target=op.target, key=op.key, cause=op.cause,
                   data_json=json.dumps(op.to_dict()["data"], separators=(",", ":")))
                for op in ops]
        self._write(MNEMOBOT_TOPICS["memory_ops"], t, T["mnemobot_interfaces/msg/MemoryOpArray"](
            header=header(t, FRAMES["world"], self.ts), ops=msgs))

    def scene_graph(self, t: float, graph: Any, force: bool = False) -> None:
        """Object nodes as boxes and text labels (``visualization_msgs/MarkerArray``), at most
        ``scene_graph_hz``. Missing objects are drawn grey and translucent; held ones are not drawn."""
        if not force and t - self._last_graph_t < 1.0 / max(self.scene_graph_hz, 1e-6):
            return
        self._last_graph_t = t
        T = self.ts.types
        Marker = T["visualization_msgs/msg/Marker"]
        Pt, Q, V = T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Quaternion"], T["geometry_msgs/msg/Vector3"]
        Color, PoseMsg = T["std_msgs/msg/ColorRGBA"], T["geometry_msgs/msg/Pose"]
        dur = T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0)
        hdr = header(t, FRAMES["world"], self.ts)
        markers = [Marker(header=hdr, ns="objects", id=0, type=0, action=3, pose=PoseMsg(
            position=Pt(x=0.0, y=0.0, z=0.0), orientation=Q(x=0.0, y=0.0, z=0.0, w=1.0)), scale=V(x=1.0, y=1.0, z=1.0),
            color=Color(r=0.0, g=0.0, b=0.0, a=0.0), lifetime=dur, frame_locked=False, points=[], colors=[],
            texture_resource="", texture=T["sensor_msgs/msg/CompressedImage"](
                header=hdr, format="", data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text="", mesh_resource="",
            mesh_file=T["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False)]  # DELETEALL, then the current objects
        template = markers[0]
        for i, key in enumerate(sorted(graph.by_layer("object"))):
            d = graph.node(key)
            if d.get("state") == "held":
                continue
            c = np.asarray(d.get("centroid", d.get("position")), float)
            ext = np.maximum(np.asarray(d.get("extent", [0.05, 0.05, 0.05]), float), 0.01)
            yaw = float(d.get("yaw", 0.0))
            rgb = np.clip(np.asarray(d.get("colour", [0.6, 0.6, 0.6]), float), 0, 1)
            if rgb.max() > 1.0:
                rgb = rgb / 255.0
            missing = d.get("state") == "missing"
            col = Color(r=0.5, g=0.5, b=0.5, a=0.3) if missing else Color(r=float(rgb[0]), g=float(rgb[1]),
                                                                            b=float(rgb[2]), a=0.8)
            q = Q(x=0.0, y=0.0, z=float(np.sin(yaw / 2)), w=float(np.cos(yaw / 2)))
            box = _replace(template, ns="objects", id=2 * i + 1, type=1, action=0,
                           pose=PoseMsg(position=Pt(x=float(c[0]), y=float(c[1]), z=float(c[2])), orientation=q),
                           scale=V(x=float(ext[0]), y=float(ext[1]), z=float(ext[2])), color=col)
            text = _replace(template, ns="labels", id=2 * i + 2, type=9, action=0,
                            pose=PoseMsg(position=Pt(x=float(c[0]), y=float(c[1]), z=float(c[2] + ext[2] / 2 + 0.06)),
                                         orientation=Q(x=0.0, y=0.0, z=0.0, w=1.0)),
                            scale=V(x=0.0, y=0.0, z=0.05), color=Color(r=1.0, g=1.0, b=1.0, a=1.0),
                            text=f"{d['label']}{' (missing)' if missing else ''}")
            markers += [box, text]
        self._write(MNEMOBOT_TOPICS["scene_graph"], t, T["visualization_msgs/msg/MarkerArray"](markers=markers))


def _replace(msg: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(msg, **changes)
