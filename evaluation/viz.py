"""Rerun recordings of episodes and bags: what the robot saw, remembered, planned and did, over time.

Usage::

    with RerunViz("ep.rrd") as viz:                        # written to a temporary name, renamed on close
        summary = run_episode(cfg, **viz.hooks())          # frames, events, memory as they happen
    result = viz_bag(VizBagConfig(bag="runs/ep0", out="ep0.rrd"))   # a recorded bag, replayed

The ``.rrd`` file opens in the rerun viewer (``rerun ep.rrd``); everything is on the ``sim_time``
timeline (seconds of episode time). Entities:

* ``world/camera`` (``Transform3D``: the optical frame in the world) and ``world/camera/image``
  (``Pinhole`` + the colour image, JPEG-compressed unless ``jpeg_quality`` is None);
* ``world/points``: the depth image back-projected into the world frame, every ``stride``-th pixel
  row and column, coloured by the image; pixels without a depth return (0, NaN, inf) dropped;
* ``world/objects``: memory's objects as labelled boxes ``label (obj:N)``, re-logged whenever a
  memory operation changes the graph; the state is both the colour and the class id (see
  :data:`STATES`): present, inside a container (relation ``in``), held, missing. Memory keeps no
  pose for an object while it is carried: a held object is drawn over the robot's base;
* ``world/map/rooms`` and ``world/map/places`` (static): the site map's rooms and place surfaces;
* ``world/robot/path`` (the base's path so far, growing) and ``world/robot/base`` (its heading);
* ``events/<kind>``: plan, skill start and result, anomaly and decision events as text;
* ``memory/ops``: memory's operation log (one line per change; a frame's confirmations in one line);
* ``task``: the instruction.

Memory is only observed: :class:`RerunViz` reads the scene graph through its public queries and
listens on ``Memory.op_sinks``; it never changes what memory does.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnemobot.agent.errors import UserError

__all__ = ["STATES", "RerunViz", "VizBagConfig", "VizConfig", "VizResult", "bag_events", "check_output", "read_rrd",
           "viz_bag"]

STATES: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "present": (1, (60, 200, 90, 255)),
    "inside": (2, (245, 150, 40, 255)),
    "held": (3, (70, 140, 255, 255)),
    "missing": (4, (150, 150, 150, 140)),
}
"""Object state -> (class id in ``world/objects``, RGBA colour). ``inside``: present, in a container."""

_PLACE_RGBA = (200, 200, 210, 110)
_ROOM_RGBA = (120, 120, 140, 255)
_PATH_RGBA = (235, 60, 60, 255)
_HELD_Z = 0.9
"""Height (m) a held object's box is drawn at, over the robot's base."""


@dataclass
class VizConfig:
    """What goes into the recording. ``stride``: every N-th pixel row and column of the depth
    image becomes a point; ``cloud_every``/``image_every``: log the cloud/image on every N-th frame;
    ``jpeg_quality``: compress images (None: raw RGB, about ten times larger); ``max_depth_m``:
    farther returns are dropped; ``path_step_m``: the base path grows by a point once the base has
    moved this far."""

    stride: int = 4
    cloud_every: int = 1
    image_every: int = 1
    jpeg_quality: int | None = 85
    max_depth_m: float = 10.0
    path_step_m: float = 0.02

    def check(self) -> None:
        """Raise :class:`UserError` on a value that cannot work."""
        for name in ("stride", "cloud_every", "image_every"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.jpeg_quality is not None and not 1 <= int(self.jpeg_quality) <= 100:
            raise UserError(f"the JPEG quality must be 1..100, got {self.jpeg_quality}")
        if not self.max_depth_m > 0:
            raise UserError(f"the maximum depth must be > 0 m, got {self.max_depth_m}")


def check_output(path: str | Path, force: bool = False) -> Path:
    """The recording's path, refused (:class:`UserError`) when it is a folder, or an existing file
    and not ``force``."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{out} is a folder; give a file name such as {out / 'episode.rrd'}")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; remove it, choose another name, or give --force to replace it")
    return out


class RerunViz:
    """One ``.rrd`` recording being written (see the module doc). It is written under a temporary
    name next to ``path`` and renamed to ``path`` by :meth:`close` (``commit=False``: deleted), so
    an interrupted run never leaves a partial file under the final name."""

    def __init__(self, path: str | Path, config: VizConfig | None = None, *,
                 application_id: str = "mnemobot", recording_id: str | None = None) -> None:
        self.path = Path(path)
        self.config = config or VizConfig()
        self.config.check()
        self.application_id = application_id
        self.recording_id = recording_id
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.counts: dict[str, int] = {"frames": 0, "points": 0, "images": 0, "object_updates": 0, "ops": 0,
                                       "events": 0}
        self.t_max = 0.0
        self._rec: Any = None
        self._memory: Any = None
        self._graph_seq = -1
        self._site_done = False
        self._task_done = False
        self._intrinsics: tuple[float, ...] | None = None
        self._path: list[list[float]] = []
        self._base_xy: tuple[float, float] | None = None
        self._holding = False

    # -- lifecycle ----------------------------------------------------------------------------------------
    def open(self) -> RerunViz:
        import rerun as rr

        self.path.parent.mkdir(parents=True, exist_ok=True)
        rec = rr.RecordingStream(self.application_id, recording_id=self.recording_id)
        rec.set_log_time_enabled(False)  # the only timeline is the episode's own clock
        rec.set_log_tick_enabled(False)
        rec.save(self.tmp)
        self._rec = rec
        rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        rec.log("world/objects", rr.AnnotationContext([
            rr.ClassDescription(info=rr.AnnotationInfo(id=cid, label=state, color=rgba))
            for state, (cid, rgba) in STATES.items()]), static=True)
        return self

    def __enter__(self) -> RerunViz:
        return self.open() if self._rec is None else self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(commit=exc_type is None)

    def close(self, commit: bool = True) -> str:
        """Finish the file; ``commit``: rename it to :attr:`path` (else delete it). Returns a one-line
        summary (empty when nothing was written)."""
        if self._rec is None:
            return ""
        try:
            if self._memory is not None and commit:
                self._log_objects()
        except BaseException:
            commit = False
            raise
        finally:
            rec, self._rec = self._rec, None
            rec.flush()
            rec.disconnect()
            if self._memory is not None and self._sink in self._memory.op_sinks:
                self._memory.op_sinks.remove(self._sink)
            self._memory = None
            if not commit:
                self.tmp.unlink(missing_ok=True)
        if not commit:
            return ""
        os.replace(self.tmp, self.path)
        c = self.counts
        return (f"{self.path} ({self.path.stat().st_size / 1e6:.1f} MB): {c['frames']} frames, {c['points']} points, "
                f"{c['object_updates']} object updates, {c['ops']} memory operations, {c['events']} events, "
                f"{self.t_max:.1f} s")

    @property
    def rec(self) -> Any:
        if self._rec is None:
            raise RuntimeError("the recording is not open (call open() or use it as a context manager)")
        return self._rec

    def _at(self, t: float) -> None:
        self.rec.set_time("sim_time", duration=float(t))
        self.t_max = max(self.t_max, float(t))

    # -- what an episode reports ---------------------------------------------------------------------------
    def hooks(self) -> dict[str, Callable[..., None]]:
        """``frame_hook`` and ``event_hook`` for :func:`~mnemobot.agent.episode.run_episode`: every
        frame is logged, the site map and the episode's memory (the skill context's locator, when it
        is a :class:`~mnemobot.memory.memory.Memory`) are picked up on the first frame."""

        def frame_hook(obs: Any, ctx: Any) -> None:
            if not self._site_done and getattr(ctx, "site", None) is not None:
                self.site(ctx.site)
            locator = getattr(ctx, "locator", None)
            if self._memory is None and hasattr(locator, "op_sinks") and hasattr(locator, "graph"):
                self.watch(locator, t=float(obs.timestamp))
            self.frame(obs)

        return {"frame_hook": frame_hook, "event_hook": self.event}

    def task(self, text: str | None) -> None:
        """The instruction (static ``task``; only the first one given is kept)."""
        import rerun as rr

        if text and not self._task_done:
            self._task_done = True
            self.rec.log("task", rr.TextDocument(str(text)), static=True)

    def site(self, site: Any) -> None:
        """The map (``MapLike``: rooms and places) as static outlines and labelled place surfaces."""
        import rerun as rr

        if site is None or self._site_done:
            return
        self._site_done = True
        rooms = list(getattr(site, "rooms", {}).values())
        if rooms:
            strips, labels = [], []
            for r in rooms:
                (cx, cy), (sx, sy) = r.center, r.size
                x0, x1, y0, y1 = cx - sx / 2, cx + sx / 2, cy - sy / 2, cy + sy / 2
                strips.append([[x0, y0, 0.0], [x1, y0, 0.0], [x1, y1, 0.0], [x0, y1, 0.0], [x0, y0, 0.0]])
                labels.append(r.name)
            self.rec.log("world/map/rooms", rr.LineStrips3D(strips, labels=labels, colors=[_ROOM_RGBA], radii=0.01,
                                                             show_labels=True), static=True)
        places = list(getattr(site, "places", {}).values())
        if places:
            self.rec.log("world/map/places", rr.Boxes3D(
                centers=[p.surface.position for p in places],
                half_sizes=[[p.surface_size[0] / 2, p.surface_size[1] / 2, 0.01] for p in places],
                quaternions=[rr.Quaternion(xyzw=p.surface.quaternion) for p in places],
                labels=[p.name for p in places], colors=[_PLACE_RGBA], fill_mode="solid"), static=True)

    def watch(self, memory: Any, t: float = 0.0) -> None:
        """Follow ``memory`` (a :class:`~mnemobot.memory.memory.Memory`): its operations are logged
        as they are flushed, and its objects re-drawn after each batch that changes the graph."""
        if self._memory is not None:
            return
        self._memory = memory
        self.site(getattr(memory.graph, "site", None))
        memory.op_sinks.append(self._sink)
        self._at(t)
        self._log_objects(force=True)

    def _sink(self, ops: list[Any]) -> None:
        if self._rec is None or not ops:
            return
        import rerun as rr

        mem = self._memory
        local = mem.local if hasattr(mem, "local") else (lambda x: x)
        confirmed: list[str] = []
        changed = False
        for op in ops:
            self.counts["ops"] += 1
            if op.kind.value == "NOOP":
                confirmed.append(op.key)
                continue
            changed = True
            self._at(local(op.time))
            self.rec.log("memory/ops", rr.TextLog(_op_text(op), level="INFO"))
        t = local(max(op.time for op in ops))
        self._at(t)
        if confirmed:
            keys = sorted(set(confirmed), key=_key_order)
            self.rec.log("memory/ops", rr.TextLog(f"NOOP confirmed {', '.join(keys)}", level="DEBUG"))
        if changed:
            self._log_objects()

    def _log_objects(self, force: bool = False) -> None:
        import rerun as rr

        graph = self._memory.graph
        if not force and graph.seq == self._graph_seq:
            return
        self._graph_seq = graph.seq
        centers, halves, labels, cids, colours = [], [], [], [], []
        self._holding = False
        for key in graph.by_layer("object"):
            d = graph.node(key)
            box = _box(d)
            if box is None:
                continue
            state = _state(d)
            if state == "held" and self._base_xy is not None:  # memory keeps no pose while it is carried
                self._holding = True
                box = ([self._base_xy[0], self._base_xy[1], _HELD_Z], box[1])
            cid, rgba = STATES[state]
            centers.append(box[0])
            halves.append(box[1])
            labels.append(f"{d.get('label', '?')} ({key})")
            cids.append(cid)
            colours.append(rgba)
        self.counts["object_updates"] += 1
        if not centers:
            self.rec.log("world/objects", rr.Boxes3D(centers=np.zeros((0, 3)), half_sizes=np.zeros((0, 3))))
            return
        self.rec.log("world/objects", rr.Boxes3D(centers=centers, half_sizes=halves, labels=labels, class_ids=cids,
                                                 colors=colours, show_labels=True))

    def frame(self, obs: Any) -> None:
        """One camera frame (an :class:`~mnemobot.perception.types.Observation`): camera pose,
        pinhole, image, the depth as world points, the base pose and path."""
        import rerun as rr

        cfg = self.config
        n = self.counts["frames"]
        self.counts["frames"] += 1
        t = float(obs.timestamp)
        self._at(t)
        pose, intr = obs.camera_pose, obs.intrinsics
        self.rec.log("world/camera", rr.Transform3D(translation=pose.position,
                                                    quaternion=rr.Quaternion(xyzw=pose.quaternion)))
        k = (float(intr.fx), float(intr.fy), float(intr.cx), float(intr.cy), float(intr.width), float(intr.height))
        if k != self._intrinsics:
            self._intrinsics = k
            self.rec.log("world/camera/image", rr.Pinhole(image_from_camera=intr.matrix(),
                                                          resolution=[intr.width, intr.height],
                                                          camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=0.4))
        if n % cfg.image_every == 0:
            image = rr.Image(np.ascontiguousarray(obs.rgb[..., :3]), color_model="RGB")
            self.rec.log("world/camera/image", image.compress(int(cfg.jpeg_quality))
                         if cfg.jpeg_quality is not None else image)
            self.counts["images"] += 1
        if n % cfg.cloud_every == 0:
            points, colours = depth_points(obs, cfg.stride, cfg.max_depth_m)
            self.rec.log("world/points", rr.Points3D(points, colors=colours, radii=0.01))
            self.counts["points"] += len(points)
        self._base(obs)

    def _base(self, obs: Any) -> None:
        import rerun as rr

        proprio = getattr(obs, "proprio", None)
        if proprio is not None:
            x, y, yaw = (float(v) for v in np.asarray(proprio.base_pose)[:3])
        else:  # a bag without the base in its TF tree: the camera's footprint
            x, y = (float(v) for v in obs.camera_pose.position[:2])
            yaw = float(obs.camera_pose.yaw)
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(yaw)):
            return
        self._base_xy = (x, y)
        if self._holding and self._memory is not None:
            self._log_objects(force=True)
        if not self._path or math.dist(self._path[-1][:2], (x, y)) >= self.config.path_step_m:
            self._path.append([x, y, 0.02])
            self.rec.log("world/robot/path", rr.LineStrips3D([self._path], colors=[_PATH_RGBA], radii=0.015))
        self.rec.log("world/robot/base", rr.Arrows3D(origins=[[x, y, 0.05]],
                                                     vectors=[[0.35 * math.cos(yaw), 0.35 * math.sin(yaw), 0.0]],
                                                     colors=[_PATH_RGBA], labels=["robot"]))

    def event(self, kind: str, t: float, data: dict[str, Any]) -> None:
        """An orchestrator event (``plan``, ``skill_start``, ``skill``, ``anomaly``, ``decision``)
        as a line of ``events/<kind>``."""
        import rerun as rr

        if kind == "plan":
            self.task(str(data.get("instruction") or ""))
        text, level = _event_text(kind, data)
        self._at(t)
        self.rec.log(f"events/{rr.escape_entity_path_part(kind)}", rr.TextLog(text, level=level))
        self.counts["events"] += 1


# -- geometry and text -------------------------------------------------------------------------------------
def depth_points(obs: Any, stride: int = 4, max_depth_m: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """World points ``(N, 3)`` (float32) and their ``(N, 3)`` uint8 colours: every ``stride``-th
    pixel row and column of the depth image with a return (finite, > 0, below ``max_depth_m``)."""
    from mnemobot.perception.objects import backproject_pixels

    depth = np.asarray(obs.depth)
    h, w = depth.shape[:2]
    vv, uu = np.meshgrid(np.arange(0, h, stride), np.arange(0, w, stride), indexing="ij")
    flat = (vv * w + uu).ravel()
    with np.errstate(invalid="ignore"):
        z = depth.ravel()[flat]
        keep = np.isfinite(z) & (z > 0) & (z < max_depth_m)
    flat = flat[keep]
    if not len(flat):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    points = backproject_pixels(flat, depth, obs.intrinsics, obs.camera_pose).astype(np.float32)
    colours = np.asarray(obs.rgb)[..., :3].reshape(-1, 3)[flat].astype(np.uint8)
    return points, colours


def _box(d: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """Centre and half sizes of an object node's axis-aligned box. The box is the node's
    ``aabb_min``/``aabb_max`` while its centroid lies in it; once memory has moved the object
    without a new sighting (a release puts it where it was put down), the box's size around the
    new centroid."""
    centre = d.get("centroid", d.get("position"))
    lo, hi = d.get("aabb_min"), d.get("aabb_max")
    if lo is not None and hi is not None:
        lo_a, hi_a = np.asarray(lo, float), np.asarray(hi, float)
        half = (hi_a - lo_a) / 2
        mid = (lo_a + hi_a) / 2
        if centre is not None and np.asarray(centre, float).shape == (3,):
            c = np.asarray(centre, float)
            if np.any(np.abs(c - mid) > half + 0.02):
                mid = c
    elif centre is not None:
        mid = np.asarray(centre, float)
        half = np.maximum(np.asarray(d.get("extent") or [0.05, 0.05, 0.05], float), 0.01) / 2
    else:
        return None
    if mid.shape != (3,) or half.shape != (3,) or not (np.all(np.isfinite(mid)) and np.all(np.isfinite(half))):
        return None
    return mid.tolist(), np.maximum(half, 0.005).tolist()


def _state(d: dict[str, Any]) -> str:
    state = str(d.get("state") or "present")
    if state == "present" and d.get("relation") == "in":
        return "inside"
    return state if state in STATES else "present"


def _key_order(key: str) -> tuple[str, int]:
    head, _, tail = key.partition(":")
    return head, int(tail) if tail.isdigit() else 0


def _call(skill: Any, args: Any) -> str:
    parts = [f"{k}={v}" for k, v in dict(args or {}).items() if v not in ("", None)]
    return f"{skill}({', '.join(parts)})"


def _event_text(kind: str, data: dict[str, Any]) -> tuple[str, str]:
    """A line and a level for one event."""
    if kind == "plan":
        steps = list(data.get("steps") or [])
        return f"plan ({len(steps)} steps): " + ", ".join(_call(s.get("skill"), s.get("args")) for s in steps), "INFO"
    if kind == "skill_start":
        return f"start {_call(data.get('skill'), data.get('args'))}", "INFO"
    if kind == "skill":
        call = _call(data.get("skill"), data.get("args"))
        if data.get("success"):
            return f"{call}: done in {float(data.get('duration_s', 0.0)):.2f} s", "INFO"
        why = "; ".join(str(v) for v in (data.get("reason"), data.get("message")) if v)
        return f"{call}: FAILED" + (f" ({why})" if why else ""), "WARN"
    if kind == "anomaly":
        detail = ", ".join(f"{k}={v}" for k, v in data.items() if k != "kind" and v not in ("", None, [], {}))
        return f"anomaly {data.get('kind', '')}: {detail}", "WARN"
    if kind == "decision":
        return (f"planner {data.get('planner', '')}: {data.get('model_calls', 0)} call(s), "
                f"{float(data.get('latency_s', 0.0)) * 1e3:.1f} ms"
                + (f", fell back: {data['fallback']}" if data.get("fallback") else "")), "DEBUG"
    detail = ", ".join(f"{k}={v}" for k, v in data.items() if k != "kind")
    return f"{kind}: {detail}", "INFO"


def _op_text(op: Any) -> str:
    """One memory operation as a line: ``ADD obj:3 observed: olive_bar on kitchen_table``."""
    d = op.data or {}
    head = f"{op.kind.value} {op.key} {op.cause}"
    if op.target == "edge":
        return head
    bits = []
    if d.get("label") is not None and op.kind.value == "ADD":
        bits.append(str(d["label"]))
    if "state" in d:
        bits.append(f"state={d['state']}")
    if d.get("place"):
        bits.append(f"{d.get('relation') or 'at'} {d['place']}")
    if "position" in d and d["position"] is not None:
        bits.append("at (" + ", ".join(f"{float(v):.2f}" for v in d["position"]) + ")")
    if "into" in d:
        bits.append(f"into {d['into']}")
    return head + (": " + " ".join(bits) if bits else "")


# -- reading a recording back -------------------------------------------------------------------------------
def read_rrd(path: str | Path, prefix: str = "/") -> dict[str, list[tuple[float | None, dict[str, Any]]]]:
    """The rows of a ``.rrd`` file, read with rerun's own reader (``rerun.chunk.RrdReader``):
    ``{entity path: [(sim_time in s, or None for static rows, {component: value})]}`` in time
    order, for entities under ``prefix``. Vector components (positions, centres, sizes) come as
    ``(N, k)`` float arrays, colours as ``(N,)`` uint32 ``0xRRGGBBAA``, others as Python lists."""
    import pyarrow as pa
    from rerun.chunk import RrdReader

    out: dict[str, list[tuple[float | None, dict[str, Any]]]] = {}
    for chunk in RrdReader(str(path)).store().stream():
        entity = chunk.entity_path
        if not entity.startswith(prefix):
            continue
        batch = chunk.to_record_batch()
        names = batch.schema.names
        n = batch.num_rows
        times: list[float | None] = [None] * n
        if "sim_time" in names:
            times = [None if v is None else v * 1e-9 for v in batch.column("sim_time").cast(pa.int64()).to_pylist()]
        cols = {name: _rows(batch.column(name)) for name in names if ":" in name and not name.startswith("rerun.")}
        rows = out.setdefault(entity, [])
        for i in range(n):
            rows.append((times[i], {k: v[i] for k, v in cols.items() if v[i] is not None}))
    for rows in out.values():
        rows.sort(key=lambda r: -1.0 if r[0] is None else r[0])
    return out


def _rows(arr: Any) -> list[Any]:
    """One value per row of an Arrow list column (None where the row has none)."""
    import pyarrow as pa

    t = arr.type
    if not pa.types.is_list(t):
        return arr.to_pylist()
    inner = t.value_type
    nulls = arr.is_null().to_numpy(zero_copy_only=False)
    offs = arr.offsets.to_numpy()
    if pa.types.is_fixed_size_list(inner) and pa.types.is_floating(inner.value_type):
        flat = arr.values.flatten().to_numpy(zero_copy_only=False).reshape(-1, inner.list_size)
    elif pa.types.is_integer(inner) or pa.types.is_floating(inner):
        flat = arr.values.to_numpy(zero_copy_only=False)
    else:
        return arr.to_pylist()
    return [None if nulls[i] else flat[offs[i]:offs[i + 1]] for i in range(len(arr))]


# -- bags ----------------------------------------------------------------------------------------------------
def bag_events(path: str | Path) -> list[tuple[float, str, dict[str, Any]]]:
    """The plan and skill events of a mnemobot recording (``/mnemobot/plan``, ``/mnemobot/skill``)
    as ``(t, kind, data)``, ``t`` in seconds since the bag's first message (the clock of
    :class:`~mnemobot.ros2.bag.BagSource`); empty for bags without them."""
    import json

    from rosbags.highlevel import AnyReader

    from mnemobot.ros2.topics import MNEMOBOT_TOPICS
    from mnemobot.ros2.types import typestore

    wanted = {MNEMOBOT_TOPICS["plan"], MNEMOBOT_TOPICS["skill"]}
    out: list[tuple[float, str, dict[str, Any]]] = []
    with AnyReader([Path(path)], default_typestore=typestore("jazzy")) as reader:
        conns = [c for c in reader.connections if c.topic in wanted and c.msgtype == "std_msgs/msg/String"]
        t0 = int(reader.start_time)
        for conn, log_ns, raw in reader.messages(connections=conns):
            try:
                data = json.loads(reader.deserialize(raw, conn.msgtype).data)
            except (ValueError, TypeError):
                continue
            if isinstance(data, dict):
                kind = str(data.pop("kind", "plan" if conn.topic == MNEMOBOT_TOPICS["plan"] else "skill"))
                out.append(((log_ns - t0) * 1e-9, kind, data))
    return out


@dataclass
class VizBagConfig:
    """``mnemobot viz``: the bag, the ``.rrd`` to write and how memory reads the bag (as
    :class:`~mnemobot.evaluation.replay.ReplayConfig`)."""

    bag: str | Path
    out: str | Path
    force: bool = False
    topics: str | Path | None = None
    labels: str | Path | None = None
    sensor_profile: str | None = None
    memory_policy: str = "lru"
    short_term_capacity: int = 32
    viz: VizConfig = field(default_factory=VizConfig)


@dataclass
class VizResult:
    bag: str
    out: str
    frames: int
    duration_s: float
    wall_s: float
    bytes: int
    counts: dict[str, int]
    memory: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        c = self.counts
        return "\n".join([
            f"bag        : {self.bag} ({self.duration_s:.1f} s)",
            f"recording  : {self.out} ({self.bytes / 1e6:.2f} MB)",
            f"frames     : {self.frames} in {self.wall_s:.1f} s ({c.get('points', 0)} points, "
            f"{c.get('images', 0)} images)",
            f"memory     : {self.memory.get('objects', 0)} objects, {c.get('ops', 0)} operations, "
            f"{c.get('object_updates', 0)} object updates",
            f"events     : {c.get('events', 0)}",
        ])


def viz_bag(cfg: VizBagConfig, progress: Callable[[str], None] | None = None) -> VizResult:
    """Replay ``cfg.bag`` frame by frame into memory (as ``mnemobot replay`` does, body facts
    included) and write what it shows to ``cfg.out``; bad input raises :class:`UserError`."""
    from mnemobot.evaluation.replay import ReplayConfig, _memory, apply_body, bag_inputs, prefetch
    from mnemobot.perception.types import ObservationError
    from mnemobot.ros2.bag import BagError, BagSource

    say = progress or (lambda _m: None)
    cfg.viz.check()
    out = check_output(cfg.out, cfg.force)
    topics, labels = bag_inputs(cfg.topics, cfg.labels)
    rcfg = ReplayConfig(bag=cfg.bag, topics=cfg.topics, labels=cfg.labels, memory_policy=cfg.memory_policy,
                        short_term_capacity=cfg.short_term_capacity, sensor_profile=cfg.sensor_profile)
    bad = 0
    try:
        with BagSource(cfg.bag, topics, labels) as src:
            info = src.info
            memory = _memory(rcfg, info)
            for n in info.notes:
                say(f"note: {n}")
            viz = RerunViz(out, cfg.viz, recording_id=f"viz-{Path(info.path).name}").open()
            ok = False
            try:
                viz.task(info.instruction)
                viz.watch(memory)
                for t, kind, data in bag_events(info.path):
                    viz.event(kind, t, data)
                wall0 = time.perf_counter()
                for frame in prefetch(src.frames()):
                    viz.frame(frame.obs)
                    apply_body(memory, frame.body, frame.t)
                    try:
                        memory.update(frame.obs, place=(frame.body or {}).get("at_place"))
                    except ObservationError as e:
                        bad += 1
                        if bad <= 3:
                            say(f"frame at {frame.t:.2f} s: memory skipped it: {e}")
                    if viz.counts["frames"] % 50 == 0:
                        say(f"{viz.counts['frames']} frames, {frame.t:.1f} s")
                wall = time.perf_counter() - wall0
                stats = memory.stats()
                ok = True
            finally:
                memory.close()
                viz.close(commit=ok)
    except BagError as e:
        raise UserError(str(e)) from None
    return VizResult(bag=str(info.path), out=str(out), frames=viz.counts["frames"], duration_s=info.duration_s,
                     wall_s=wall, bytes=out.stat().st_size, counts=dict(viz.counts), memory=stats,
                     notes=list(info.notes))
