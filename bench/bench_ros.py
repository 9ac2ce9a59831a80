"""Memory over ROS 2 against replay: the memory node fed by a live 640x480 RGB-D stream, one run.

Usage::

    python bench/bench_ros.py                         # 150 frames, 15 Hz (about 1 min on 2 cores)
    python bench/bench_ros.py --frames 300 --hz 30 --sensor-profile kinect

The frames are the real Kinect frames of ``../shared/data/real_rgbd`` (640x480, no masks: model-free
segmentation), played forward and back and imported as a bag (as ``bench_noise.py`` does). Then:

1. **replay** (baseline): ``mnemobot replay`` of the bag in this process: frames per second.
2. **ROS, 15 Hz**: a plain rclpy publisher (camera driver participant: rgb8 + 16UC1 depth +
   camera_info; TF participant: map -> camera transform stamped at each image) streams the frames
   at ``--hz`` with wall-clock stamps into the memory node (a separate process, reliable QoS).
   Frames integrated per second, latency from the image stamp to the MarkerArray carrying that
   stamp (received here: p50/p95/max), and how many frames the node skipped to stay current.
3. **ROS, flooded**: the same at twice replay's rate (at most 60 Hz): the node's throughput when
   the camera is faster than it; the ratio to replay is the headline (target >= 0.8).
"""

from __future__ import annotations

import argparse
import array
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("MNEMOBOT_REAL_RGBD", ROOT.parent / "shared" / "data" / "real_rgbd")) / "kinect_room_5"
TOPICS = {"rgb": "/bench/cam/rgb", "depth": "/bench/cam/depth", "camera_info": "/bench/cam/info",
          "tf": "/bench/tf", "tf_static": "/bench/tf_static"}


# -- the frames ---------------------------------------------------------------------------------------------
def real_bag(out: Path, frames: int) -> Path:
    """The shared real frames as a TUM folder, forward and back until ``frames`` frames, imported."""
    from PIL import Image

    from mnemobot.ros2.rgbd_import import import_rgbd

    if not REAL.is_dir():
        sys.exit(f"bench_ros: no real frames at {REAL}")
    seq, bag = out / "tum", out / "bag"
    (seq / "rgb").mkdir(parents=True, exist_ok=True)
    (seq / "depth").mkdir(exist_ok=True)
    poses = [line for line in (REAL / "pose.txt").read_text().split("\n") if line.strip()]
    cycle = [1, 2, 3, 4, 5, 4, 3, 2]
    rgb, depth, gt = [], [], []
    for n in range(frames):
        i, t = cycle[n % len(cycle)], 100.0 + 0.2 * n
        rgb.append(f"{t:.6f} rgb/{i}.png")
        depth.append(f"{t + 0.005:.6f} depth/{i}.png")
        gt.append(f"{t:.6f} {poses[i - 1]}")
    for i in range(1, 6):
        Image.open(REAL / "color" / f"{i}.png").save(seq / "rgb" / f"{i}.png")
        mm = np.asarray(Image.open(REAL / "depth" / f"{i}.pgm")).astype(np.uint32) * 5
        Image.fromarray(mm.astype(np.uint16)).save(seq / "depth" / f"{i}.png")
    for name, lines in (("rgb.txt", rgb), ("depth.txt", depth), ("groundtruth.txt", gt)):
        (seq / name).write_text("\n".join(lines) + "\n")
    import_rgbd(seq, bag, "tum", intrinsics=(518.0, 519.0, 325.5, 253.5))
    return bag


def bag_frames(bag: Path) -> list[dict[str, Any]]:
    """Per camera frame of the bag: rosbags messages by role and the camera pose in the world frame
    (the bag's whole TF chain, resolved here so that the stream carries one transform a frame)."""
    from rosbags.highlevel import AnyReader

    from mnemobot.ros2.bag import BagSource
    from mnemobot.ros2.types import typestore

    poses = {}
    with BagSource(bag) as src:
        for f in src.frames():
            poses[round(f.t, 3)] = f.obs.camera_pose
        t0 = src._t0 * 1e-9
    frames: dict[float, dict[str, Any]] = {}
    with AnyReader([bag], default_typestore=typestore("jazzy")) as reader:
        wanted = {"/camera/color/image_raw": "rgb", "/camera/aligned_depth_to_color/image_raw": "depth",
                  "/camera/color/camera_info": "camera_info"}
        conns = [c for c in reader.connections if c.topic in wanted]
        for c, _ns, raw in reader.messages(connections=conns):
            m = reader.deserialize(raw, c.msgtype)
            t = round(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 - t0, 3)
            frames.setdefault(t, {})[wanted[c.topic]] = m
    out = []
    for t in sorted(frames):
        pose = poses.get(t)
        if pose is not None and len(frames[t]) == 3:
            out.append(dict(frames[t], pose=pose))
    return out


# -- plain rclpy messages ---------------------------------------------------------------------------------
def _stamp(t: float) -> Any:
    from builtin_interfaces.msg import Time

    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class Stream:
    """rclpy messages of each distinct frame, built once; restamped and published per frame."""

    def __init__(self, frames: list[dict[str, Any]]) -> None:
        from sensor_msgs.msg import CameraInfo, Image

        self.cache: dict[str, Any] = {}
        self.items = []
        for f in frames:
            msgs = {}
            for role in ("rgb", "depth"):
                m = f[role]
                key = hashlib.sha1(np.asarray(m.data).tobytes()).hexdigest()
                if key not in self.cache:
                    img = Image(height=m.height, width=m.width, encoding=m.encoding, is_bigendian=m.is_bigendian,
                                step=m.step, data=array.array("B", np.asarray(m.data).tobytes()))
                    img.header.frame_id = "camera"
                    self.cache[key] = img
                msgs[role] = self.cache[key]
            ci = f["camera_info"]
            info = CameraInfo(height=ci.height, width=ci.width, distortion_model=ci.distortion_model,
                              d=[float(v) for v in ci.d], k=np.asarray(ci.k, float), r=np.asarray(ci.r, float),
                              p=np.asarray(ci.p, float))
            info.header.frame_id = "camera"
            msgs["camera_info"] = info
            self.items.append((msgs, f["pose"]))

    @staticmethod
    def transform(pose: Any, t: float) -> Any:
        from geometry_msgs.msg import TransformStamped
        from tf2_msgs.msg import TFMessage

        tr = TransformStamped()
        tr.header.stamp, tr.header.frame_id, tr.child_frame_id = _stamp(t), "map", "camera"
        p, q = pose.position, pose.quaternion
        tr.transform.translation.x, tr.transform.translation.y, tr.transform.translation.z = (float(v) for v in p)
        (tr.transform.rotation.x, tr.transform.rotation.y, tr.transform.rotation.z,
         tr.transform.rotation.w) = (float(v) for v in q)
        return TFMessage(transforms=[tr])


def _qos(depth: int) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


class Bench:
    """Publishers (camera participant + TF participant), a scene-graph listener, a stats client."""

    def __init__(self, domain: int) -> None:
        import rclpy
        from mnemobot_interfaces.srv import QueryMemory
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        self.ctx, self.cam_ctx = rclpy.Context(), rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        rclpy.init(context=self.cam_ctx, domain_id=domain)
        self.node = rclpy.create_node("bench_robot", context=self.ctx)
        self.cam = rclpy.create_node("bench_camera", context=self.cam_ctx)
        self.pubs = {"rgb": self.cam.create_publisher(Image, TOPICS["rgb"], _qos(10)),
                     "depth": self.cam.create_publisher(Image, TOPICS["depth"], _qos(10)),
                     "camera_info": self.node.create_publisher(CameraInfo, TOPICS["camera_info"], _qos(10)),
                     "tf": self.node.create_publisher(TFMessage, TOPICS["tf"], _qos(100))}
        latched = _qos(1)
        latched.durability = DurabilityPolicy.TRANSIENT_LOCAL
        self.latency: list[float] = []
        self.last_graph = 0.0
        self.seen_stamps: set[float] = set()
        self.node.create_subscription(MarkerArray, "/mnemobot/scene_graph", self._on_graph, latched)
        self.client = self.node.create_client(QueryMemory, "/mnemobot/query_memory")
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.thread = threading.Thread(target=self.ex.spin, daemon=True)
        self.thread.start()

    def _on_graph(self, msg: Any) -> None:
        now = time.time()
        if msg.markers:
            st = msg.markers[0].header.stamp
            t = st.sec + st.nanosec * 1e-9
            if t not in self.seen_stamps and now - t < 60:
                self.seen_stamps.add(t)
                self.latency.append(now - t)
                self.last_graph = time.monotonic()

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        import json

        from mnemobot_interfaces.srv import QueryMemory

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.client.wait_for_service(timeout_sec=1.0):
                continue
            fut = self.client.call_async(QueryMemory.Request(question="stats"))
            until = time.monotonic() + 2.0
            while not fut.done() and time.monotonic() < until:
                time.sleep(0.01)
            if fut.done() and fut.result().success:
                return json.loads(fut.result().answer_json)
            self.client.remove_pending_request(fut)
        raise TimeoutError("the memory node does not answer 'stats'")

    def wait_matched(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(p.get_subscription_count() for p in self.pubs.values()):
                with_stats = self.stats()
                if with_stats is not None:
                    return
            time.sleep(0.1)
        raise TimeoutError("the memory node did not subscribe")

    def stream(self, s: Stream, hz: float, n: int) -> float:
        """Publish ``n`` frames at ``hz`` (wall-clock stamps); returns the wall time it took."""
        period = 1.0 / hz
        t_start = time.monotonic()
        for k in range(n):
            msgs, pose = s.items[k % len(s.items)]
            due = t_start + k * period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.time()
            self.pubs["tf"].publish(s.transform(pose, t))
            msgs["camera_info"].header.stamp = _stamp(t)
            self.pubs["camera_info"].publish(msgs["camera_info"])
            for role in ("rgb", "depth"):
                msgs[role].header.stamp = _stamp(t)
                self.pubs[role].publish(msgs[role])
        return time.monotonic() - t_start

    def close(self) -> None:
        import rclpy

        self.ex.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.cam.destroy_node()
        rclpy.shutdown(context=self.ctx)
        rclpy.shutdown(context=self.cam_ctx)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (None: this one)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ros_phase(bench: Bench, s: Stream, hz: float, n: int, pid: int) -> dict[str, Any]:
    before = bench.stats()
    cpu0, own0 = _cpu_s(pid), _cpu_s()
    bench.latency.clear()
    t0 = time.monotonic()
    bench.stream(s, hz, n)
    end = time.monotonic() + 5.0
    while time.monotonic() < end:  # the last frame
        after = bench.stats()
        if after["integrated"] - before["integrated"] + after["dropped_behind"] - before["dropped_behind"] >= n - 2:
            break
        time.sleep(0.2)
    node_cpu, own_cpu = _cpu_s(pid) - cpu0, _cpu_s() - own0
    done = after["integrated"] - before["integrated"]
    wall = bench.last_graph - t0  # from the first frame sent to the last frame integrated
    lat = bench.latency
    return {"hz": hz, "sent": n, "integrated": done, "wall_s": wall, "fps": done / wall,
            "skipped_behind": after["dropped_behind"] - before["dropped_behind"],
            "no_tf": after["dropped_no_tf"] - before["dropped_no_tf"],
            "unpaired": after["dropped_unpaired"] - before["dropped_unpaired"],
            "node_cpu_ms_per_frame": 1e3 * node_cpu / max(done, 1), "publisher_cpu_s": own_cpu,
            "node_cpu_s": node_cpu, "p50_ms": 1e3 * _pct(lat, 50), "p95_ms": 1e3 * _pct(lat, 95), "max_ms": 1e3 * max(lat, default=np.nan)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=150, help="frames per phase")
    ap.add_argument("--hz", type=float, default=15.0, help="camera rate of the live phase")
    ap.add_argument("--sensor-profile", default="kinect")
    ap.add_argument("--reliability", default="reliable", choices=("reliable", "best_effort"))
    ap.add_argument("--sensor-queue", type=int, default=5, help="the node's sensor_queue parameter")
    args = ap.parse_args()
    from mnemobot.evaluation.replay import ReplayConfig, replay

    with tempfile.TemporaryDirectory(prefix="bench_ros_") as tmp:
        out = Path(tmp)
        print(f"frames: {REAL} (640x480, no masks), {args.frames} a phase; node sensor_queue "
              f"{args.sensor_queue}, {args.reliability}", flush=True)
        bag = real_bag(out, args.frames)
        res = replay(ReplayConfig(bag=bag, sensor_profile=args.sensor_profile, embedder="lexical"))
        print(f"replay   : {res.frames} frames in {res.wall_s:.2f} s = {res.fps:.1f} frames/s "
              f"(update p50 {np.median(res.update_ms):.1f} ms)", flush=True)
        stream = Stream(bag_frames(bag))
        domain = random.randint(30, 200)
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   PYTHONUNBUFFERED="1")
        os.environ.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        params = {f"{r}_topic": t for r, t in TOPICS.items()} | {
            "memory_db": str(out / "bench.db"), "instances_topic": "''", "labels_topic": "''",
            "sensor_profile": args.sensor_profile, "embedder": "lexical", "reliability": args.reliability,
            "base_frame": "''", "sensor_queue": args.sensor_queue}
        cmd = [sys.executable, "-m", "mnemobot.ros2.nodes.memory_node", "--ros-args"]
        for k, v in params.items():
            cmd += ["-p", f"{k}:={v}"]
        log = (out / "node.log").open("w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        bench = None
        try:
            bench = Bench(domain)
            bench.wait_matched()
            bench.stream(stream, 5.0, 5)  # warm-up (discovery of the last endpoints, first imports)
            time.sleep(1.0)
            live = ros_phase(bench, stream, args.hz, args.frames, proc.pid)
            flood_hz = min(60.0, max(2.0 * res.fps, args.hz))
            flood = ros_phase(bench, stream, flood_hz, args.frames, proc.pid)
        finally:
            if bench is not None:
                bench.close()
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            log.close()
        period_ms = 1e3 / args.hz
        print(f"\n{'phase':14s} {'Hz':>5s} {'sent':>5s} {'integr.':>7s} {'frames/s':>8s} {'skipped':>7s} "
              f"{'p50 ms':>7s} {'p95 ms':>7s} {'max ms':>7s}")
        for name, r in (("ROS live", live), ("ROS flooded", flood)):
            print(f"{name:14s} {r['hz']:5.1f} {r['sent']:5d} {r['integrated']:7d} {r['fps']:8.1f} "
                  f"{r['skipped_behind']:7d} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f} {r['max_ms']:7.1f}")
        print(f"{'replay':14s} {'-':>5s} {res.frames:5d} {res.frames:7d} {res.fps:8.1f}")
        for name, r in (("ROS live", live), ("ROS flooded", flood)):
            print(f"{name}: node CPU {r['node_cpu_s']:.1f} s ({r['node_cpu_ms_per_frame']:.0f} ms a frame integrated, "
                  f"skipped ones included), publisher CPU {r['publisher_cpu_s']:.1f} s over {r['wall_s']:.1f} s wall "
                  f"on {os.cpu_count()} cores")
        print(f"replay: {1e3 * res.wall_s / max(res.frames, 1):.0f} ms a frame wall (decode, perception, memory)")
        print(f"\nthroughput ROS/replay: {flood['fps'] / res.fps:.2f}x flooded "
              f"(target >= 0.8); live {live['fps']:.1f} of {args.hz:g} Hz sent "
              f"({live['fps'] / min(args.hz, res.fps):.2f}x of what replay could take at that rate)")
        print(f"lag at {args.hz:g} Hz: p95 {live['p95_ms'] / period_ms:.2f} frames, max "
              f"{live['max_ms'] / period_ms:.2f} frames behind the camera; frames skipped to stay current: "
              f"{live['skipped_behind']}; without TF: {live['no_tf'] + flood['no_tf']}; node exit status {code}")


if __name__ == "__main__":
    main()
