"""Record -> read -> replay: real episodes written as rosbag2/MCAP bags and replayed with no simulator.

One real episode is recorded (module fixture). The tests read it back with rosbags and with
``mcap`` + ``mcap-ros2-support`` and compare every message; replay it and check the frames equal
what the camera produced; re-write its frames as a *foreign* bag with a plain rosbags writer
(other topic names, bgr8, 16UC1 millimetre depth, a TF chain with a static camera mount, labels
from a file, epoch timestamps) and check that it replays and scores like the original; and feed
broken bags, maps, labels and questions to the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("rosbags")

from mnemobot.agent.errors import UserError  # noqa: E402
from mnemobot.evaluation.questions import load_questions  # noqa: E402
from mnemobot.evaluation.replay import ReplayConfig, replay  # noqa: E402
from mnemobot.perception.types import Pose  # noqa: E402
from mnemobot.ros2.bag import BagError, BagSource  # noqa: E402
from mnemobot.ros2.convert import OPTICAL_IN_LINK, camera_info_msg, image_msg, transform_msg  # noqa: E402
from mnemobot.ros2.topics import MNEMOBOT_TOPICS, TopicMap  # noqa: E402
from mnemobot.ros2.types import typestore  # noqa: E402

MIN_PIXELS = 20


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    """A recorded place episode, the frames the camera produced, and what it saw (ground truth)."""
    from mnemobot.agent.episode import RunConfig, run_episode
    from mnemobot.sim.env import EnvConfig, HouseholdEnv

    out = tmp_path_factory.mktemp("rec")
    env = HouseholdEnv(EnvConfig(task="place"))
    frames, seen = [], {}
    backend = env.unwrapped.backend

    def hook(obs, _ctx):
        frames.append(obs)
        ids, counts = np.unique(obs.instances, return_counts=True)
        for i, n in zip(ids.tolist(), counts.tolist(), strict=True):
            label = obs.labels.get(i)
            if n >= MIN_PIXELS and label in backend.object_labels() and not backend.is_held(label):
                lo, hi = backend.object_aabb(label)
                seen[label] = (float(obs.timestamp), ((lo + hi) / 2).tolist())

    try:
        summary = run_episode(RunConfig(task_id="place", seed=0, record=str(out / "bag")), env=env, frame_hook=hook)
        final = {lb: ((lambda b: (b[0] + b[1]) / 2)(backend.object_aabb(lb))) for lb in seen}
    finally:
        env.close()
    assert summary.success and summary.recorded_messages > 1000
    # gold for "where is X" at the end: where the camera last saw it, if it is still there
    still = {lb: s for lb, s in seen.items() if np.linalg.norm(final[lb] - np.asarray(s[1])) < 0.05}
    return {"bag": out / "bag", "frames": frames, "seen": still, "summary": summary, "dir": out}


def _locate_questions(path: Path, seen: dict, t: float) -> Path:
    with path.open("w") as f:
        for i, (label, (_ts, centre)) in enumerate(sorted(seen.items())):
            f.write(json.dumps({"id": f"loc-{i}", "t": t, "type": "locate", "text": f"Where is the {label}?",
                                "object": label, "answer": {"position": centre, "receptacle": None}}) + "\n")
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# -- the recording ---------------------------------------------------------------------------------------
def test_metadata_and_qos(episode):
    import yaml

    meta = yaml.safe_load((episode["bag"] / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap"
    topics = {t["topic_metadata"]["name"]: t["topic_metadata"] for t in meta["topics_with_message_count"]}
    m = TopicMap()
    for topic in (m.rgb, m.depth, m.camera_info, m.instances, m.labels, m.tf, m.tf_static, m.joint_states,
                  *MNEMOBOT_TOPICS.values()):
        assert topic in topics, topic
    qos = {name: t["offered_qos_profiles"][0] for name, t in topics.items()}
    assert qos[m.rgb]["reliability"] == "best_effort" and qos[m.rgb]["depth"] == 5
    assert qos[m.tf_static]["durability"] == "transient_local"
    assert qos[MNEMOBOT_TOPICS["memory_ops"]]["reliability"] == "reliable"
    assert topics[MNEMOBOT_TOPICS["memory_ops"]]["type"] == "mnemobot_interfaces/msg/MemoryOpArray"


def test_rosbags_and_mcap_agree_on_every_message(episode):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.highlevel import AnyReader

    mcap_file = next(episode["bag"].glob("*.mcap"))
    n = 0
    with open(mcap_file, "rb") as f, AnyReader([episode["bag"]], default_typestore=typestore("jazzy")) as reader:
        other = make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(log_time_order=True)
        for conn, ts, raw in reader.messages():
            a = reader.deserialize(raw, conn.msgtype)
            _schema, channel, message, decoded = next(other)
            assert (channel.topic, message.log_time) == (conn.topic, ts)
            _same(a, decoded, conn.topic)
            n += 1
        assert next(other, None) is None
    assert n == episode["summary"].recorded_messages


def _same(a, b, where):
    """Field-by-field equality of a rosbags message and an mcap_ros2 message."""
    if hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            if name.isupper() or name == "__msgtype__":
                continue
            _same(getattr(a, name), getattr(b, name), f"{where}.{name}")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, np.frombuffer(b, a.dtype) if isinstance(b, bytes) else np.asarray(b),
                                      err_msg=where)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_memory_ops_in_the_bag_rebuild_the_live_graph(episode):
    """The recorded operations are the live memory's log: replaying them gives its final objects."""
    from rosbags.highlevel import AnyReader

    from mnemobot.memory.graph import SceneGraph
    from mnemobot.memory.ops import MemoryOp, OpKind

    g = SceneGraph()
    kinds = ["ADD", "UPDATE", "DELETE", "NOOP"]
    seqs = []
    with AnyReader([episode["bag"]], default_typestore=typestore("jazzy")) as reader:
        snap = [c for c in reader.connections if c.topic == MNEMOBOT_TOPICS["memory_snapshot"]]
        (conn, _ts, raw), = list(reader.messages(connections=snap))
        first = json.loads(reader.deserialize(raw, conn.msgtype).data)
        g.load_state(first["state"])
        assert g.seq == first["seq"]
        conns = [c for c in reader.connections if c.topic == MNEMOBOT_TOPICS["memory_ops"]]
        for conn, _ts, raw in reader.messages(connections=conns):
            for o in reader.deserialize(raw, conn.msgtype).ops:
                seqs.append(o.seq)
                g.apply(MemoryOp(o.seq, o.stamp.sec + o.stamp.nanosec * 1e-9, o.episode, OpKind(kinds[o.kind]),
                                 o.target, o.key, o.cause, json.loads(o.data_json)))
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == first["seq"] + 1
    assert len(g.by_layer("object")) == episode["summary"].memory_stats["objects"]


def test_replayed_frames_equal_the_camera(episode):
    frames = episode["frames"]
    with BagSource(episode["bag"]) as src:
        assert src.info.notes == [] and src.info.sensor["name"] == "ideal"
        got = list(src.frames())
    assert len(got) == len(frames)
    for live, rf in zip(frames, got, strict=True):
        o = rf.obs
        assert o.timestamp == pytest.approx(live.timestamp, abs=1e-9)
        np.testing.assert_array_equal(o.rgb, live.rgb)
        np.testing.assert_array_equal(o.depth, np.nan_to_num(live.depth, nan=0.0, posinf=0.0))
        np.testing.assert_array_equal(o.instances, live.instances)
        assert o.labels == {k: v for k, v in live.labels.items() if k in set(np.unique(live.instances).tolist())}
        np.testing.assert_allclose(o.camera_pose.matrix(), live.camera_pose.matrix(), atol=1e-9)
        assert o.intrinsics == live.intrinsics
        np.testing.assert_allclose(o.proprio.base_pose, live.proprio.base_pose, atol=1e-9)
        assert rf.body is not None and set(rf.body) == {"held", "opened", "at_place", "hand"}
        assert len(rf.body["hand"]) == 3 and all(np.isfinite(rf.body["hand"]))


def test_replay_locates_what_the_camera_saw(episode, tmp_path):
    end = episode["summary"].sim_s + 1.0
    q = _locate_questions(tmp_path / "q.jsonl", episode["seen"], end)
    res = replay(ReplayConfig(bag=episode["bag"], questions=q, answers=tmp_path / "a.jsonl",
                              report=tmp_path / "r.json"))
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["by_type"]["locate"]["n"] == len(episode["seen"]) >= 6
    assert rep["overall"]["accuracy"] >= 0.95, res.render()
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == len(episode["seen"])
    assert rep["replay"]["frames"] == len(episode["frames"])


# -- a bag mnemobot did not write -----------------------------------------------------------------------
EPOCH = 1_761_000_000.0
FOREIGN_MAP = {"rgb": "/head_camera/rgb/image_raw", "depth": "/head_camera/depth/image_raw",
               "camera_info": "/head_camera/rgb/camera_info", "instances": "/head_camera/segmentation",
               "labels": None, "joint_states": None, "world_frame": "odom", "base_frame": "base_footprint"}


def _write_foreign(path: Path, frames, storage: str = "mcap") -> dict[str, str]:
    """Frames of a real episode, re-written the way another robot's driver would publish them."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore("humble")
    mount = Pose(np.array([0.02, 0.0, 0.05]), np.array([0.0, 0.0, 0.0, 1.0]))  # head_link -> camera mount
    labels: dict[str, str] = {}
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        c = {k: w.add_connection(FOREIGN_MAP[k], "sensor_msgs/msg/Image", typestore=ts)
             for k in ("rgb", "depth", "instances")}
        c["info"] = w.add_connection(FOREIGN_MAP["camera_info"], "sensor_msgs/msg/CameraInfo", typestore=ts)
        c["tf"] = w.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=ts)
        c["tf_static"] = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
        c["odom"] = w.add_connection("/odom_unused", "std_msgs/msg/String", typestore=ts)

        def put(conn, t, msg):
            w.write(conn, int(round(t * 1e9)), ts.serialize_cdr(msg, conn.msgtype))

        TF = ts.types["tf2_msgs/msg/TFMessage"]
        put(c["tf_static"], EPOCH, TF(transforms=[
            transform_msg(mount, "head_link", "head_camera_mount", EPOCH, ts),
            transform_msg(OPTICAL_IN_LINK, "head_camera_mount", "head_camera_rgb_optical_frame", EPOCH, ts)]))
        for obs in frames:
            t = EPOCH + float(obs.timestamp)
            cam = "head_camera_rgb_optical_frame"
            depth_mm = np.nan_to_num(obs.depth, nan=0.0, posinf=0.0) * 1000.0
            ids = np.where(obs.instances > 0, obs.instances + 1000, 0).astype(np.uint16)
            for i in np.unique(obs.instances).tolist():
                if i:
                    labels[str(i + 1000)] = obs.labels[i]
            put(c["rgb"], t, image_msg(obs.rgb[..., ::-1], "bgr8", t, cam, ts))
            put(c["depth"], t + 0.002, image_msg(np.round(depth_mm).clip(0, 65535).astype(np.uint16), "16UC1",
                                                 t, cam, ts))
            put(c["instances"], t + 0.004, image_msg(ids, "16UC1", t, cam, ts))
            put(c["info"], t + 0.004, camera_info_msg(obs.intrinsics, t, cam, ts))
            base = obs.proprio.base_pose3d()
            head = base.inverse() @ obs.camera_pose @ OPTICAL_IN_LINK.inverse() @ mount.inverse()
            # TF arrives after the images, as it does from a robot
            put(c["tf"], t + 0.03, TF(transforms=[transform_msg(base, "odom", "base_footprint", t, ts),
                                                  transform_msg(head, "base_footprint", "head_link", t, ts)]))
    return labels


@pytest.fixture(scope="module")
def foreign(episode):
    path = episode["dir"] / "foreign"
    labels = _write_foreign(path, episode["frames"])
    (episode["dir"] / "labels.json").write_text(json.dumps(labels))
    import yaml

    (episode["dir"] / "topics.yaml").write_text(yaml.safe_dump(FOREIGN_MAP))
    return {"bag": path, "labels": episode["dir"] / "labels.json", "topics": episode["dir"] / "topics.yaml"}


def test_foreign_bag_replays_and_scores(episode, foreign, tmp_path):
    end = episode["summary"].sim_s + 1.0
    q = _locate_questions(tmp_path / "q.jsonl", episode["seen"], end)
    before = _digest(foreign["bag"])
    res = replay(ReplayConfig(bag=foreign["bag"], questions=q, topics=foreign["topics"], labels=foreign["labels"],
                              sensor_profile="ideal"))  # the simulator's exact frames
    assert _digest(foreign["bag"]) == before  # never modified
    assert res.frames == len(episode["frames"])
    assert any("joint states" in n for n in res.notes) and any("body facts" in n for n in res.notes)
    rep = res.report.to_dict()
    assert rep["by_type"]["locate"]["n"] == len(episode["seen"])
    assert rep["overall"]["accuracy"] >= 0.95, res.render()
    # same answers as the original recording within a few millimetres (depth was quantised to 1 mm)
    own = replay(ReplayConfig(bag=episode["bag"], questions=q))
    for (qa, a), (qb, b) in zip(own.answers, res.answers, strict=True):
        assert qa.id == qb.id
        if a["position"] is not None:
            assert np.linalg.norm(np.subtract(a["position"], b["position"])) < 0.03, qa.id


def test_foreign_bag_relates_objects_to_the_furniture_in_its_masks(episode, foreign, tmp_path):
    """No site map: furniture comes from the masks as objects, stays still while the camera sees
    different parts of it, and is what the objects are said to stand on."""
    from mnemobot.memory.graph import SceneGraph
    from mnemobot.sim.layout import DEFAULT_LAYOUT

    site = SceneGraph(site=DEFAULT_LAYOUT.site_map())
    furniture = {f.name for f in DEFAULT_LAYOUT.furniture}
    end = episode["summary"].sim_s + 1.0
    q = tmp_path / "q.jsonl"
    with q.open("w") as f:
        for i, (label, (_ts, centre)) in enumerate(sorted(episode["seen"].items())):
            place, _rel = site.place_at(centre)
            f.write(json.dumps({"id": f"r-{i}", "t": end, "type": "locate", "text": f"Where is the {label}?",
                                "object": label, "answer": {"position": centre, "receptacle": place}}) + "\n")
    res = replay(ReplayConfig(bag=foreign["bag"], questions=q, topics=foreign["topics"], labels=foreign["labels"],
                              sensor_profile="ideal"))
    assert any("no site map" in n for n in res.notes)
    from mnemobot.evaluation.questions import score

    wrong = [(qq.id, qq.fields["object"], qq.gold, a) for qq, a in res.answers if score(qq, a) < 1.0]
    assert not wrong, wrong
    # the furniture never moved and never went missing
    from mnemobot.ros2.bag import BagSource, load_labels

    with BagSource(foreign["bag"], TopicMap.from_yaml(foreign["topics"]), load_labels(foreign["labels"])) as src:
        from mnemobot.memory.memory import Memory, MemoryConfig
        from mnemobot.perception.sensor import sensor_model

        mem = Memory(MemoryConfig(embedder="none", sensor=sensor_model("ideal")))
        causes: dict[str, set[str]] = {}

        def note(ops) -> None:
            for op in ops:
                if op.target == "node" and op.key in mem.graph.g and mem.graph.node(op.key)["label"] in furniture:
                    causes.setdefault(mem.graph.node(op.key)["label"], set()).add(op.cause)

        mem.op_sinks.append(note)
        mem.begin_episode()
        for frame in src.frames():
            mem.update(frame.obs)
    assert causes, "the masks' furniture should be remembered"
    for label, seen_causes in causes.items():
        assert not seen_causes & {"moved", "not_seen"}, (label, seen_causes)


def test_noisy_foreign_bag_keeps_its_furniture_and_receptacles(episode, tmp_path):
    """The same episode through a Kinect-like rig (depth noise and holes, detector misses, false
    detections and confusions, pose jitter) written as another robot's bag: furniture in the
    masks, 16UC1 depth, labels from a file, no site map, no declared sensor."""
    from mnemobot.evaluation.questions import score
    from mnemobot.memory.graph import SceneGraph
    from mnemobot.perception.sensor import PROFILES
    from mnemobot.sim.layout import DEFAULT_LAYOUT
    from mnemobot.sim.sensors import SensorSimulator

    frames = episode["frames"]
    rig = SensorSimulator(PROFILES["kinect"], known_labels=sorted(episode["seen"]), seed=3)
    rig.reset(3, frames[0].proprio.base_pose)
    noisy, odometer, last = [], np.zeros(2), frames[0].proprio.base_pose
    for o in frames:  # the odometer counts what the base drove and turned between frames
        now = o.proprio.base_pose
        odometer = odometer + [np.hypot(*(now[:2] - last[:2])), abs(np.angle(np.exp(1j * (now[2] - last[2]))))]
        last = now
        noisy.append(rig.perceive(o, o.proprio.base_pose3d().inverse() @ o.camera_pose, odometer))
    labels = _write_foreign(tmp_path / "noisy", noisy)
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    import yaml

    (tmp_path / "topics.yaml").write_text(yaml.safe_dump(FOREIGN_MAP))
    site = SceneGraph(site=DEFAULT_LAYOUT.site_map())
    end = episode["summary"].sim_s + 1.0
    # gold only for what the detector found in two frames or more (it misses objects under its
    # size limit, and memory does not believe a single detection of a detector that hallucinates)
    found: dict[str, int] = {}
    for o in noisy:
        ids, counts = np.unique(o.instances, return_counts=True)
        for i, n in zip(ids.tolist(), counts.tolist(), strict=True):
            if i and n >= 2 * PROFILES["kinect"].detector.min_pixels:
                found[o.labels[i]] = found.get(o.labels[i], 0) + 1
    asked = {lb: s for lb, s in episode["seen"].items() if found.get(lb, 0) >= 2}
    assert len(asked) >= 5
    q = tmp_path / "q.jsonl"
    with q.open("w") as f:
        for i, (label, (_ts, centre)) in enumerate(sorted(asked.items())):
            f.write(json.dumps({"id": f"r-{i}", "t": end, "type": "locate", "text": f"Where is the {label}?",
                                "object": label,
                                "answer": {"position": centre, "receptacle": site.place_at(centre)[0]}}) + "\n")
    res = replay(ReplayConfig(bag=tmp_path / "noisy", questions=q, topics=tmp_path / "topics.yaml",
                              labels=tmp_path / "labels.json"))
    assert any("sensor profile kinect" in n for n in res.notes)
    wrong = [(qq.fields["object"], qq.gold, a) for qq, a in res.answers if score(qq, a) < 1.0]
    assert not wrong, wrong
    furniture = {f.name for f in DEFAULT_LAYOUT.furniture}
    from mnemobot.memory.memory import Memory, MemoryConfig
    from mnemobot.ros2.bag import load_labels

    mem = Memory(MemoryConfig(embedder="none", sensor=PROFILES["kinect"]))
    seen_furniture, false_changes = set(), []

    def note(ops) -> None:
        for op in ops:
            if op.target == "node" and op.key in mem.graph.g and mem.graph.node(op.key)["label"] in furniture:
                seen_furniture.add(mem.graph.node(op.key)["label"])
                if op.cause in ("moved", "not_seen"):
                    false_changes.append((op.time, mem.graph.node(op.key)["label"], op.cause))

    mem.op_sinks.append(note)
    mem.begin_episode()
    with BagSource(tmp_path / "noisy", TopicMap.from_yaml(tmp_path / "topics.yaml"),
                   load_labels(tmp_path / "labels.json")) as src:
        for frame in src.frames():
            mem.update(frame.obs)
    assert len(seen_furniture) >= 3 and false_changes == []


def test_foreign_bag_camera_poses_come_from_the_tf_chain(episode, foreign):
    with BagSource(foreign["bag"], TopicMap.from_yaml(foreign["topics"]),
                   labels={int(k): v for k, v in json.loads(foreign["labels"].read_text()).items()}) as src:
        got = list(src.frames())
    for live, rf in zip(episode["frames"], got, strict=True):
        assert rf.t == pytest.approx(live.timestamp, abs=1e-6)  # seconds since the bag's first message
        np.testing.assert_allclose(rf.obs.camera_pose.matrix(), live.camera_pose.matrix(), atol=1e-6)
        np.testing.assert_allclose(rf.obs.depth, np.nan_to_num(live.depth, nan=0.0, posinf=0.0), atol=6e-4)
        np.testing.assert_array_equal(rf.obs.rgb, live.rgb)
        assert rf.body is None


def test_sqlite3_storage_replays_too(episode, tmp_path):
    labels = _write_foreign(tmp_path / "db3", episode["frames"][:40], storage="sqlite3")
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    import yaml

    (tmp_path / "topics.yaml").write_text(yaml.safe_dump(FOREIGN_MAP))
    res = replay(ReplayConfig(bag=tmp_path / "db3", topics=tmp_path / "topics.yaml", labels=tmp_path / "labels.json"))
    assert res.storage == "sqlite3" and res.frames == 40 and res.memory["objects"] >= 3


def test_without_masks_replay_segments_model_free(episode, tmp_path):
    _write_foreign(tmp_path / "nomask", episode["frames"][:25])
    import yaml

    (tmp_path / "t.yaml").write_text(yaml.safe_dump({k: v for k, v in FOREIGN_MAP.items() if k != "instances"}
                                                    | {"instances": None}))
    res = replay(ReplayConfig(bag=tmp_path / "nomask", topics=tmp_path / "t.yaml"))
    assert any("model-free segmentation" in n for n in res.notes)
    assert res.frames == 25 and res.memory["objects"] >= 1


def test_masks_without_labels_are_unknown_objects(episode, tmp_path):
    _write_foreign(tmp_path / "nolabels", episode["frames"][:10])
    import yaml

    (tmp_path / "t.yaml").write_text(yaml.safe_dump(FOREIGN_MAP))
    res = replay(ReplayConfig(bag=tmp_path / "nolabels", topics=tmp_path / "t.yaml"))
    assert any("labelled 'unknown'" in n for n in res.notes)
    assert res.stats["unknown_ids"] > 0


# -- bad input ---------------------------------------------------------------------------------------------
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_truncated_bag(episode, tmp_path):
    bag = _copy(episode["bag"], tmp_path / "cut")
    f = next(bag.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    before = _digest(bag)
    with pytest.raises(UserError, match="truncated or damaged"):
        replay(ReplayConfig(bag=bag))
    assert _digest(bag) == before


def test_corrupted_bag(episode, tmp_path):
    bag = _copy(episode["bag"], tmp_path / "bad")
    f = next(bag.glob("*.mcap"))
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = os.urandom(4096)
    f.write_bytes(bytes(data))
    before = _digest(bag)
    with pytest.raises(UserError, match="truncated or corrupt|cannot read bag"):
        replay(ReplayConfig(bag=bag))
    assert _digest(bag) == before


def test_empty_bag(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore("humble")
    with Writer(tmp_path / "empty", version=8, storage_plugin=StoragePlugin.MCAP) as w:
        w.add_connection("/camera/color/image_raw", "sensor_msgs/msg/Image", typestore=ts)
    with pytest.raises(UserError, match="is empty"):
        replay(ReplayConfig(bag=tmp_path / "empty"))


def test_not_a_bag(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "data.mcap").write_bytes(b"\x89MCAP0\r\n" + os.urandom(100))
    with pytest.raises(UserError, match="no metadata.yaml"):
        replay(ReplayConfig(bag=tmp_path / "dir"))
    (tmp_path / "ros1.bag").write_bytes(b"#ROSBAG V2.0\n" + os.urandom(200))
    with pytest.raises(UserError, match="is a file"):
        replay(ReplayConfig(bag=tmp_path / "ros1.bag"))
    with pytest.raises(UserError, match="no such bag"):
        replay(ReplayConfig(bag=tmp_path / "missing"))
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 99}\n")
    with pytest.raises(UserError, match="cannot read bag"):
        replay(ReplayConfig(bag=tmp_path / "yaml"))


def test_missing_required_topics_are_named(episode, tmp_path):
    # the mnemobot bag read with the foreign map: none of those topics exist
    import yaml

    (tmp_path / "t.yaml").write_text(yaml.safe_dump(FOREIGN_MAP))
    with pytest.raises(UserError, match=r"has no rgb \(/head_camera/rgb/image_raw\).*Topics in the bag: .*/tf"):
        replay(ReplayConfig(bag=episode["bag"], topics=tmp_path / "t.yaml"))


def test_unknown_topic_in_the_map(episode, tmp_path):
    (tmp_path / "t.yaml").write_text("joint_states: /not/there\n")
    with pytest.raises(UserError, match="names joint_states: /not/there, which is not in the bag"):
        replay(ReplayConfig(bag=episode["bag"], topics=tmp_path / "t.yaml"))
    (tmp_path / "w.yaml").write_text("labels: /camera/color/image_raw\n")
    with pytest.raises(UserError, match="has type sensor_msgs/msg/Image; replay needs std_msgs/msg/String"):
        replay(ReplayConfig(bag=episode["bag"], topics=tmp_path / "w.yaml"))


@pytest.mark.parametrize("text,match", [
    ("not json", "not valid JSON"), ('["a"]', "must be a JSON object"), ('{"x": "mug"}', "not a whole number"),
    ('{"0": "mug"}', "id > 0"),
])
def test_bad_labels_file(episode, tmp_path, text, match):
    (tmp_path / "l.json").write_text(text)
    with pytest.raises(UserError, match=match):
        replay(ReplayConfig(bag=episode["bag"], labels=tmp_path / "l.json"))


def test_frames_past_a_cut_are_not_invented(episode):
    """A bag that ends mid-way: the frames before the end are read, nothing more."""
    n = 0
    with BagSource(episode["bag"]) as src:
        for _f in src.frames():
            n += 1
    assert n == len(episode["frames"])
    with pytest.raises(BagError, match="no such bag"):
        BagSource(episode["bag"] / "nope").open()


# -- CLI ----------------------------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnemobot.agent.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_replay_prints_a_score_table(episode, tmp_path):
    q = _locate_questions(tmp_path / "q.jsonl", episode["seen"], episode["summary"].sim_s + 1.0)
    with q.open("a") as f:
        f.write("{broken json\n")
        f.write(json.dumps({"id": "x", "t": 1.0, "type": "teleport", "text": "?"}) + "\n")
    r = _cli("replay", str(episode["bag"]), "--questions", str(q), "--report", str(tmp_path / "r.json"),
             "--memory-policy", "w-tinylfu")
    assert r.returncode == 0, r.stderr
    n = len(episode["seen"])
    assert f"line {n + 1}:" in r.stdout and f"line {n + 2}:" in r.stdout and "teleport" in r.stdout
    assert "locate" in r.stdout and "overall" in r.stdout and "frames/s" in r.stdout
    assert json.loads((tmp_path / "r.json").read_text())["by_type"]["locate"]["n"] == n
    assert load_questions(q)[1]  # the problems are really in the file


@pytest.mark.parametrize("make", ["truncated", "missing", "policy"])
def test_cli_bad_input_is_one_line(episode, tmp_path, make):
    bag = episode["bag"]
    extra: list[str] = []
    if make == "truncated":
        bag = _copy(episode["bag"], tmp_path / "cut")
        f = next(bag.glob("*.mcap"))
        f.write_bytes(f.read_bytes()[:100_000])
    elif make == "missing":
        bag = tmp_path / "none"
    else:
        extra = ["--memory-policy", "random"]
    r = _cli("replay", str(bag), *extra)
    assert r.returncode == 2
    assert r.stderr.startswith("mnemobot: error:") and "Traceback" not in r.stderr + r.stdout


def test_record_never_overwrites(episode, tmp_path):
    before = _digest(episode["bag"])
    r = _cli("run", "--task-id", "place", "--record", str(episode["bag"]), "-q", "--steps-limit", "5")
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert _digest(episode["bag"]) == before


def test_stopped_recording_is_a_complete_bag(tmp_path):
    """SIGTERM during a recorded episode (a supervisor stopping it): the bag is closed properly
    and replays up to the stop."""
    import signal
    import time

    bag = tmp_path / "stopped"
    p = subprocess.Popen([sys.executable, "-m", "mnemobot.agent.cli", "run", "--task-id", "place", "--record",
                          str(bag), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (bag.exists() and any(bag.glob("*.mcap"))):
            time.sleep(0.2)
        time.sleep(4.0)  # let it record a few seconds of the episode
        assert p.poll() is None, "the episode ended before it could be stopped"
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert (bag / "metadata.yaml").exists()
    with BagSource(bag) as src:
        assert src.info.instruction is not None
        n = sum(1 for _ in src.frames())
    assert n >= 3
