"""Read a rosbag2 bag (MCAP or SQLite storage) as a stream of synchronised camera frames.

:class:`BagSource` opens any ROS 2 bag ``rosbags`` can read, checks that the topics replay
needs are there with the right types, and yields :class:`ReplayFrame` items: an
:class:`~mnemobot.perception.types.Observation` (rgb, metric depth, optional instance mask and
labels, intrinsics, the camera pose from the TF tree at the image's time, proprioception)
plus the robot's own body facts when the bag has mnemobot's ``/mnemobot/body`` topic.

Times are seconds since the bag's first message. Images are paired by header stamp (within
``sync_tol``); a frame is emitted once the bag has run ``tf_wait`` seconds past it, so
transforms published just after the image are used (interpolated), as a TF listener would.

A bag is a rosbag2 directory (with ``metadata.yaml``) or a bare ``.mcap`` file with no
``metadata.yaml`` (written by another tool, or the MCAP file of a bag without its metadata):
rosbags reads the MCAP summary (channels, schemas, message counts) directly.

Missing optional topics degrade and are reported in :attr:`BagInfo.notes`: no instance masks
-> model-free segmentation (``unknown`` labels); no labels -> ``unknown``; no joint states ->
no arm state (memory does not need it); no ``/mnemobot/sensor_profile`` -> the sensor is not
declared (:attr:`BagInfo.sensor` is None). Unreadable, empty or truncated bags, missing required
topics and wrong message types raise :class:`BagError` with a clear message. Bad messages in a
readable bag (camera_info with a zero or NaN focal length, transforms with NaN values or a
quaternion far from unit length, depth frames with no valid pixel) are skipped, counted in
:attr:`BagSource.stats` and logged with their time and problem; replay goes on. The bag is only
ever opened for reading.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnemobot.perception.types import CameraIntrinsics, Observation, Pose, Proprioception
from mnemobot.ros2.convert import (
    MessageError,
    depth_from_msg,
    instances_from_msg,
    intrinsics_from_msg,
    pose_from_transform,
    rgb_from_msg,
    stamp_to_s,
)
from mnemobot.ros2.tf import TFBuffer, TFError
from mnemobot.ros2.topics import MNEMOBOT_TOPICS, REQUIRED, TopicMap
from mnemobot.ros2.types import typestore

__all__ = ["BagError", "BagInfo", "BagSource", "FrameAssembler", "ReplayFrame", "load_labels", "new_stats"]

log = logging.getLogger(__name__)

_TYPES = {
    "rgb": "sensor_msgs/msg/Image", "depth": "sensor_msgs/msg/Image", "instances": "sensor_msgs/msg/Image",
    "camera_info": "sensor_msgs/msg/CameraInfo", "labels": "std_msgs/msg/String",
    "tf": "tf2_msgs/msg/TFMessage", "tf_static": "tf2_msgs/msg/TFMessage", "joint_states": "sensor_msgs/msg/JointState",
}
_EXTRA = {"body": "std_msgs/msg/String", "site_map": "std_msgs/msg/String", "instruction": "std_msgs/msg/String",
          "sensor_profile": "std_msgs/msg/String"}
_QUAT_TOL = 0.01
"""A TF quaternion whose squared norm is within this of 1 is normalised; farther, it is rejected (as tf2 does)."""
_WARN_EACH = 3
"""Problems of one kind logged in full; the rest are only counted."""


class BagError(ValueError):
    """A bag replay cannot use: missing, unreadable, empty, truncated, or without the needed topics."""


def load_labels(path: str | Path) -> dict[int, str]:
    """A labels file: JSON object mapping instance id (as a string) -> label."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise BagError(f"cannot read labels file {p}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise BagError(f"labels file {p} is not valid JSON: {e}") from None
    return _labels_from(raw, f"labels file {p}")


def _labels_from(raw: Any, source: str) -> dict[int, str]:
    if not isinstance(raw, dict):
        raise BagError(f"{source} must be a JSON object {{\"instance id\": \"label\"}}")
    out: dict[int, str] = {}
    for k, v in raw.items():
        try:
            i = int(k)
        except (TypeError, ValueError):
            raise BagError(f"{source}: instance id {k!r} is not a whole number") from None
        if i <= 0 or not isinstance(v, str) or not v.strip():
            raise BagError(f"{source}: entry {k!r}: {v!r} needs an id > 0 (0 is background) and a label")
        out[i] = v.strip().lower().replace(" ", "_")
    return out


@dataclass
class ReplayFrame:
    """One synchronised frame; ``body``: the robot's own facts at ``t`` (held object, opened
    containers, place), or None when the bag does not carry them."""

    t: float
    obs: Observation
    body: dict[str, Any] | None = None


@dataclass
class BagInfo:
    path: Path
    storage: str
    duration_s: float
    messages: int
    topics: dict[str, tuple[str, int]]
    roles: dict[str, str]
    site_map: dict[str, Any] | None = None
    static_labels: list[str] = field(default_factory=list)
    instruction: str | None = None
    sensor: dict[str, Any] | None = None
    """The sensor rig the bag declares on ``/mnemobot/sensor_profile`` (``SensorModel.to_dict()``), or None."""
    notes: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    t: float
    frame_id: str
    rgb: np.ndarray | None = None
    depth: np.ndarray | None = None
    instances: np.ndarray | None = None
    ids: set[int] | None = None


class BagSource:
    """Frames of one bag. Use as a context manager; :meth:`frames` iterates once."""

    def __init__(self, path: str | Path, topics: TopicMap | None = None, labels: dict[int, str] | None = None,
                 sync_tol: float = 0.03, tf_wait: float = 0.25, max_wait: float = 1.0) -> None:
        self.path = Path(path)
        self.map = topics or TopicMap()
        self.file_labels = labels
        self.sync_tol, self.tf_wait, self.max_wait = sync_tol, tf_wait, max_wait
        self.info: BagInfo | None = None
        self.stats = new_stats()
        self._reader: Any = None
        self._t0 = 0

    # -- opening and checks -------------------------------------------------------------------------------
    def __enter__(self) -> BagSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - closing a reader that failed mid-read must not mask its error
                log.debug("closing %s failed", self.path, exc_info=True)

    def open(self) -> BagInfo:
        from rosbags.highlevel import AnyReader

        p = self.path
        if not p.exists():
            raise BagError(f"no such bag: {p}")
        if p.is_file():
            if p.suffix in (".mcap", ".db3") and (p.parent / "metadata.yaml").exists():
                p = self.path = p.parent
            elif p.suffix != ".mcap":
                raise BagError(f"{p} is a file; give the rosbag2 directory (with metadata.yaml and the "
                               ".mcap or .db3 file) or a bare .mcap file")
        elif not (p / "metadata.yaml").exists():
            raise BagError(f"{p} is not a rosbag2 bag: it has no metadata.yaml")
        try:  # a bare .mcap file: rosbags reads its summary (channels, schemas, counts); nothing is written
            reader = AnyReader([p], default_typestore=typestore("jazzy"))
            reader.open()
        except Exception as e:  # noqa: BLE001 - rosbags raises several types for unreadable bags
            hint = ""
            if self._storage() == "mcap" and "magic" in str(e).lower():
                hint = (" - the MCAP file is truncated or damaged (a recording cut short?); "
                        "'mcap recover' can salvage the messages written before the cut")
            raise BagError(f"cannot read bag {p}: {_reason(e)}{hint}") from None
        self._reader = reader
        try:
            self.info = self._check(reader)
        except BaseException:
            self.close()
            raise
        return self.info

    def _storage(self) -> str:
        p = self.path
        if p.is_file():
            return "mcap" if p.suffix == ".mcap" else "sqlite3"
        return "mcap" if any(f.suffix == ".mcap" for f in p.iterdir()) else "sqlite3"

    def _check(self, reader: Any) -> BagInfo:
        topics: dict[str, tuple[str, int]] = {}
        for c in reader.connections:
            msgtype, n = topics.get(c.topic, (c.msgtype, 0))
            topics[c.topic] = (msgtype, n + int(c.msgcount or 0))
        total = sum(n for _t, n in topics.values())
        storage = self._storage()
        if total == 0:
            raise BagError(f"bag {self.path} is empty (no messages)")
        roles = self.map.topics()
        notes: list[str] = []
        listing = "; ".join(f"{t} ({ty})" for t, (ty, _n) in sorted(topics.items()))
        missing = [f"{r} ({roles[r]})" for r in REQUIRED if roles.get(r) not in topics]
        if missing:
            raise BagError(f"bag {self.path} has no {', '.join(missing)}. Topics in the bag: {listing}. "
                           "Name the right topics with --topics MAP.yaml")
        for role in list(roles):
            if roles[role] in topics:
                continue
            if role in self.map.explicit:
                raise BagError(f"topic map names {role}: {roles[role]}, which is not in the bag. Topics: {listing}")
            del roles[role]
        for role, topic in roles.items():
            if topics[topic][0] != _TYPES[role]:
                raise BagError(f"topic {topic} ({role}) has type {topics[topic][0]}; replay needs {_TYPES[role]}")
        if "instances" not in roles:
            notes.append("no instance masks: objects come from model-free segmentation, labelled 'unknown'")
        elif "labels" not in roles and self.file_labels is None:
            notes.append("instance masks but no labels topic and no --labels file: objects are labelled 'unknown'")
        if "joint_states" not in roles:
            notes.append("no joint states: the arm state is unknown (memory does not need it)")
        if "tf_static" not in roles:
            notes.append("no /tf_static: every transform must come from /tf")
        if MNEMOBOT_TOPICS["body"] not in topics:
            notes.append("no body facts (held object, opened containers): memory learns from vision alone")
        self._t0 = int(reader.start_time)
        info = BagInfo(path=self.path, storage=storage, duration_s=(reader.end_time - reader.start_time) * 1e-9,
                       messages=total, topics=topics, roles=roles, notes=notes)
        self._read_latched(reader, topics, info)
        if info.site_map is None:
            notes.append("no site map: objects are not related to named places")
        return info

    def _read_latched(self, reader: Any, topics: dict[str, tuple[str, int]], info: BagInfo) -> None:
        """The map, furniture labels, instruction and sensor profile of a mnemobot recording (first
        message each)."""
        for role in ("site_map", "instruction", "sensor_profile"):
            topic = MNEMOBOT_TOPICS[role]
            if topics.get(topic, ("", 0))[0] != _EXTRA[role]:
                continue
            conns = [c for c in reader.connections if c.topic == topic]
            try:
                for c, _ts, raw in reader.messages(connections=conns):
                    text = reader.deserialize(raw, c.msgtype).data
                    if role == "instruction":
                        info.instruction = text
                    elif role == "sensor_profile":
                        info.sensor = _sensor_dict(text, topic, info.notes)
                    else:
                        d = json.loads(text)
                        info.site_map = d.get("site_map")
                        info.static_labels = list(d.get("static_labels", []))
                    break
            except Exception as e:  # noqa: BLE001
                raise BagError(f"bag {self.path}: cannot read {topic}: {_reason(e)}") from None

    # -- frames --------------------------------------------------------------------------------------------
    def frames(self) -> Iterator[ReplayFrame]:
        """Synchronised frames in time order. Raises :class:`BagError` if the bag is cut short."""
        if self.info is None or self._reader is None:
            self.open()
        info, reader = self.info, self._reader
        roles = info.roles
        by_topic = {topic: role for role, topic in roles.items()}
        body_topic = MNEMOBOT_TOPICS["body"] if MNEMOBOT_TOPICS["body"] in info.topics else None
        if body_topic:
            by_topic[body_topic] = "body"
        conns = [c for c in reader.connections if c.topic in by_topic]
        asm = FrameAssembler(self.map, roles, self.file_labels, sync_tol=self.sync_tol, tf_wait=self.tf_wait,
                             max_wait=self.max_wait, t0_ns=self._t0, stats=self.stats)
        now = 0.0
        try:
            for conn, log_ns, raw in reader.messages(connections=conns):
                role = by_topic[conn.topic]
                now = (log_ns - self._t0) * 1e-9
                try:
                    asm.take(role, reader.deserialize(raw, conn.msgtype), log_ns)
                except (MessageError, ValueError, KeyError) as e:
                    self.stats["dropped_bad"] += 1
                    log.warning("skipping a %s message at %.3f s: %s", role, now, e)
                yield from asm.emit(now)
        except BagError:
            raise
        except Exception as e:  # noqa: BLE001 - a cut or corrupt file surfaces here
            raise BagError(f"bag {self.path} is truncated or corrupt after {now:.2f} s: {_reason(e)}") from None
        yield from asm.emit(math.inf)


def new_stats() -> dict[str, int]:
    """The counters of :class:`FrameAssembler` (frames emitted, and frames/messages skipped by cause)."""
    return {"frames": 0, "dropped_unpaired": 0, "dropped_no_tf": 0, "dropped_bad": 0,
            "dropped_bad_camera_info": 0, "dropped_empty_depth": 0, "bad_transforms": 0, "unknown_ids": 0,
            "dropped_behind": 0}


class FrameAssembler:
    """Messages in, synchronised :class:`ReplayFrame` items out: the per-message logic of
    :class:`BagSource`, shared with the live memory node.

    Feed every message with :meth:`take` (``role`` as in :class:`TopicMap`, plus ``body``), then
    call :meth:`emit` with the current time (seconds since ``t0_ns``, the receive/log clock).
    Times are header stamps relative to ``t0_ns`` (a zero stamp falls back to the receive time).
    Images are paired by stamp within ``sync_tol``; the TF tree is looked up at the image stamp.
    A frame waits ``tf_wait`` s for late transforms; ``live=True`` emits it as soon as every
    moving transform on the camera's chain has a sample at or after its stamp, and only the
    newest ready frame (older pending ones are counted in ``dropped_behind``), so a consumer
    never lags more than one frame. Skipped messages and frames are counted in :attr:`stats`
    and reported through ``warn(key, text)`` (default: the first few of each kind are logged).
    ``t0_ns`` None: set from the first message that is not a static transform.
    """

    def __init__(self, topics: TopicMap, roles: Any, labels: dict[int, str] | None = None, *,
                 sync_tol: float = 0.03, tf_wait: float = 0.25, max_wait: float = 1.0, t0_ns: int | None = None,
                 live: bool = False, stats: dict[str, int] | None = None,
                 warn: Callable[[str, str], None] | None = None) -> None:
        self.map = topics
        self.has_instances = "instances" in roles
        self.sync_tol, self.tf_wait, self.max_wait, self.live = sync_tol, tf_wait, max_wait, live
        self.t0_ns = t0_ns
        self.stats = stats if stats is not None else new_stats()
        for k, v in new_stats().items():
            self.stats.setdefault(k, v)
        self.warn = warn or self._log_first
        self.tf = TFBuffer(max_gap=0.5, history_s=30.0)
        self.labels = dict(labels or {})
        self.labels_from_topic = "labels" in roles and labels is None
        self.intr: CameraIntrinsics | None = None
        self.joints: tuple[float, Any] | None = None
        self.bodies: deque[tuple[float, dict[str, Any]]] = deque(maxlen=64)
        self.pending: deque[_Pending] = deque()

    def rel(self, stamp: Any, log_ns: int) -> float:
        """Seconds since ``t0_ns`` of a header stamp (the receive time ``log_ns`` when it is zero)."""
        if self.t0_ns is None:
            s = stamp_to_s(stamp)
            self.t0_ns = int(round(s * 1e9)) if s > 0 else int(log_ns)
        s = stamp_to_s(stamp)
        return s - self.t0_ns * 1e-9 if s > 0 else (log_ns - self.t0_ns) * 1e-9

    def take(self, role: str, msg: Any, log_ns: int) -> None:
        """One message; raises :class:`MessageError`, ``ValueError`` or ``KeyError`` for a bad one."""
        if role in ("rgb", "depth", "instances"):
            t = self.rel(msg.header.stamp, log_ns)
            if role == "rgb":
                arr = rgb_from_msg(msg)
            elif role == "depth":
                arr = depth_from_msg(msg)
            else:
                arr = instances_from_msg(msg)
            pending = self.pending
            slot = next((p for p in pending if abs(p.t - t) <= self.sync_tol and getattr(p, role) is None), None)
            if slot is None:
                slot = _Pending(t, msg.header.frame_id)
                pending.append(slot)
                if len(pending) > 1 and pending[-2].t > t:
                    self.pending = deque(sorted(pending, key=lambda p: p.t))
            setattr(slot, role, arr)
            if role == "rgb":
                slot.frame_id = msg.header.frame_id or slot.frame_id
        elif role == "camera_info":
            try:
                self.intr = intrinsics_from_msg(msg)
            except MessageError as e:
                self._problem("dropped_bad_camera_info", f"camera_info at {self.rel(msg.header.stamp, log_ns):.3f} s "
                              f"skipped: {e}" + ("; the last good one is used" if self.intr else ""))
        elif role in ("tf", "tf_static"):
            static = role == "tf_static"
            for tr in msg.transforms:
                t = 0.0 if static and self.t0_ns is None else self.rel(tr.header.stamp, log_ns)
                try:
                    self.tf.add(tr.header.frame_id, tr.child_frame_id, t, _checked_pose(tr.transform), static=static)
                except (MessageError, TFError) as e:
                    self._problem("bad_transforms", f"transform {tr.header.frame_id} -> {tr.child_frame_id} at "
                                  f"{t:.3f} s skipped: {e}")
        elif role == "labels":
            if self.labels_from_topic:
                self.labels.update(_labels_from(json.loads(msg.data), "labels topic"))
        elif role == "joint_states":
            self.joints = (self.rel(msg.header.stamp, log_ns), msg)
        elif role == "body":
            self.bodies.append(((log_ns - (self.t0_ns or log_ns)) * 1e-9, json.loads(msg.data)))

    def _complete(self, p: _Pending) -> bool:
        return p.rgb is not None and p.depth is not None and (p.instances is not None or not self.has_instances)

    def _tf_ready(self, p: _Pending) -> bool:
        """Live: camera_info is known, TF has moved past the frame's stamp and (with a labels topic)
        every instance id in its mask has a label."""
        if self.intr is None or not self.tf.ready(self.map.world_frame, self.map.camera_frame or p.frame_id, p.t):
            return False
        if self.labels_from_topic and p.instances is not None:
            if p.ids is None:
                p.ids = set(np.unique(p.instances).tolist()) - {0}
            return p.ids <= self.labels.keys()
        return True

    def emit(self, now: float) -> Iterator[ReplayFrame]:
        """The frames ready at ``now`` (seconds since ``t0_ns``); see the class doc."""
        pending = self.pending
        if self.live:
            ready = [i for i, p in enumerate(pending) if self._complete(p) and self._tf_ready(p)]
            if ready:
                for _ in range(ready[-1]):
                    pending.popleft()
                    self.stats["dropped_behind"] += 1
        while pending:
            p = pending[0]
            if not self._complete(p):
                if now - p.t > self.max_wait:
                    pending.popleft()
                    self.stats["dropped_unpaired"] += 1
                    continue
                return
            if now - p.t < self.tf_wait and not (self.live and self._tf_ready(p)):
                return
            pending.popleft()
            frame = self._frame(p)
            if frame is not None:
                self.stats["frames"] += 1
                yield frame

    def _log_first(self, key: str, text: str) -> None:
        if self.stats[key] <= _WARN_EACH:
            log.warning("%s", text)
        elif self.stats[key] == _WARN_EACH + 1:
            log.warning("further %s are only counted", key.replace("_", " "))

    def _problem(self, key: str, text: str) -> None:
        """Count a skipped message or frame under ``stats[key]`` and report it."""
        self.stats[key] += 1
        self.warn(key, text)

    def _frame(self, p: _Pending) -> ReplayFrame | None:
        if self.intr is None:
            self._problem("dropped_bad_camera_info", f"frame at {p.t:.3f} s skipped: no valid camera_info yet")
            return None
        if not np.any(np.isfinite(p.depth) & (p.depth > 0)):
            self._problem("dropped_empty_depth", f"frame at {p.t:.3f} s skipped: its depth image has no valid "
                                                 "pixel (all 0, NaN or inf)")
            return None
        intr = self.intr
        if p.rgb.shape[:2] != (intr.height, intr.width) or p.depth.shape != (intr.height, intr.width):
            self._problem("dropped_bad", f"frame at {p.t:.3f} s: image sizes {p.rgb.shape}/{p.depth.shape} "
                                         f"disagree with camera_info {intr.width}x{intr.height}")
            return None
        cam_frame = self.map.camera_frame or p.frame_id
        try:
            cam = self.tf.lookup(self.map.world_frame, cam_frame, p.t)
        except TFError as e:
            self._problem("dropped_no_tf", f"frame at {p.t:.3f} s skipped: {e}")
            return None
        instances, labels = p.instances, {}
        if instances is not None:
            for i in np.unique(instances).tolist():
                if i == 0:
                    continue
                lb = self.labels.get(i)
                if lb is None:
                    self.stats["unknown_ids"] += 1
                    lb = "unknown"
                labels[i] = lb
        obs = Observation(timestamp=p.t, rgb=p.rgb, depth=p.depth, intrinsics=intr, camera_pose=cam,
                          instances=instances, labels=labels, proprio=self._proprio(p.t))
        body = None
        for bt, b in self.bodies:
            if bt <= p.t + 1e-6:
                body = b
        return ReplayFrame(p.t, obs, body)

    def _proprio(self, t: float) -> Proprioception | None:
        base_frame, tf = self.map.base_frame, self.tf
        if not base_frame or base_frame not in tf.frames:
            return None
        try:
            base: Pose = tf.lookup(self.map.world_frame, base_frame, t)
        except TFError:
            return None
        q = np.zeros(0)
        width = 0.0
        if self.joints is not None:
            js = self.joints[1]
            names, pos = list(js.name), np.asarray(js.position, dtype=float)
            if len(names) == len(pos):
                fingers = [p for n, p in zip(names, pos, strict=True) if "finger" in n]
                width = float(sum(fingers))
                q = np.array([p for n, p in zip(names, pos, strict=True) if "finger" not in n and "head" not in n])
        return Proprioception(t=t, arm_q=q, arm_dq=np.zeros_like(q), gripper_width=width,
                              base_pose=np.array([base.position[0], base.position[1], base.yaw]))


def _checked_pose(transform: Any) -> Pose:
    """A TF transform as a :class:`Pose`; :class:`MessageError` when it has NaN/inf values or its
    quaternion's squared norm is more than :data:`_QUAT_TOL` from 1 (tf2's rule)."""
    r = transform.rotation
    n2 = r.x * r.x + r.y * r.y + r.z * r.z + r.w * r.w
    if math.isfinite(n2) and abs(n2 - 1.0) > _QUAT_TOL:
        raise MessageError(f"quaternion ({r.x:g}, {r.y:g}, {r.z:g}, {r.w:g}) is not unit length "
                           f"(norm {math.sqrt(n2):.4f})")
    return pose_from_transform(transform)


def _sensor_dict(text: str, topic: str, notes: list[str]) -> dict[str, Any] | None:
    """The declared sensor profile, or None (with a note) when it is not a JSON object."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        notes.append(f"{topic} is not valid JSON ({e}): ignored")
        return None
    if not isinstance(d, dict):
        notes.append(f"{topic} holds a JSON {type(d).__name__}, not a SensorModel mapping: ignored")
        return None
    return d


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
