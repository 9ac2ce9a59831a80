"""Rerun recordings: ``mnemobot viz BAG -o FILE.rrd`` and ``mnemobot run --viz FILE.rrd``.

One short real episode is recorded as a bag with a small camera (module fixture); ``mnemobot viz``
turns it into a ``.rrd`` file, which is read back with rerun's own reader (``rerun.chunk.RrdReader``:
its schema and its chunks) to check what the recording holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("rosbags")
rr = pytest.importorskip("rerun")

from rerun.chunk import RrdReader  # noqa: E402

from mnemobot.evaluation.viz import STATES, read_rrd  # noqa: E402

ENTITIES = ("/world/camera", "/world/camera/image", "/world/points", "/world/objects", "/world/robot/path",
            "/world/map/places", "/memory/ops", "/events/plan", "/events/skill", "/task")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnemobot.agent.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    """A recorded place episode (160x120 camera) and the objects its camera saw (ground truth)."""
    from mnemobot.agent.episode import RunConfig, run_episode
    from mnemobot.sim.env import EnvConfig, HouseholdEnv

    out = tmp_path_factory.mktemp("viz")
    env = HouseholdEnv(EnvConfig(task="place", width=160, height=120))
    seen: set[str] = set()
    backend = env.unwrapped.backend

    def hook(obs, _ctx):
        ids, counts = np.unique(obs.instances, return_counts=True)
        seen.update(obs.labels.get(i) for i, n in zip(ids.tolist(), counts.tolist(), strict=True)
                    if n >= 20 and obs.labels.get(i) in backend.object_labels())

    try:
        summary = run_episode(RunConfig(task_id="place", seed=0, width=160, height=120, record=str(out / "bag")),
                              env=env, frame_hook=hook)
    finally:
        env.close()
    assert summary.success
    return {"bag": out / "bag", "dir": out, "seen": seen, "summary": summary}


@pytest.fixture(scope="module")
def recording(episode):
    """``mnemobot viz`` of the episode's bag."""
    out = episode["dir"] / "ep.rrd"
    r = _cli("viz", str(episode["bag"]), "-o", str(out))
    assert r.returncode == 0, r.stderr
    return {"path": out, "stdout": r.stdout}


def test_viz_writes_every_entity(recording):
    path = recording["path"]
    assert path.stat().st_size > 50_000
    assert not list(path.parent.glob(f".{path.name}.*"))  # the temporary file was renamed
    schema = RrdReader(str(path)).store().schema()
    text = str(schema)
    assert "sim_time" in text and "log_time" not in text
    for entity in ENTITIES:
        assert f"Entity path: {entity}\n" in text, entity
    for column in ("/world/points:Points3D:positions", "/world/points:Points3D:colors", "/world/objects:Boxes3D:labels",
                   "/world/objects:Boxes3D:class_ids", "/world/robot/path:LineStrips3D:strips",
                   "/world/camera/image:Pinhole:image_from_camera", "/world/camera:Transform3D:translation",
                   "/memory/ops:TextLog:text", "/events/skill:TextLog:text"):
        assert f"Column name: {column}\n" in text, column
    assert "/world/camera/image:EncodedImage:blob" in text or "/world/camera/image:Image:buffer" in text
    assert "frames" in recording["stdout"] and "MB" in recording["stdout"]


def test_recording_shows_what_the_episode_saw(episode, recording):
    rec = read_rrd(recording["path"])
    t_end = episode["summary"].sim_s
    # camera: one image, pose and cloud per frame, all on the episode's clock
    frames = rec["/world/points"]
    assert len(frames) > 50 and len(rec["/world/camera"]) == len(frames)
    assert all(t is not None and 0.0 <= t <= t_end + 1.0 for t, _ in frames)
    pts = np.concatenate([row["Points3D:positions"] for _t, row in frames])
    assert pts.shape[1] == 3 and np.all(np.isfinite(pts))
    assert len(frames[-1][1]["Points3D:positions"]) <= (160 // 4) * (120 // 4)  # every 4th pixel at most
    assert 0.0 <= np.percentile(pts[:, 2], 5) < 0.3  # the floor, in the world frame (z up)
    # objects: labelled "label (obj:N)", states by class id; the task's object ends present on its receptacle
    labels = {lb.split(" (")[0] for _t, row in rec["/world/objects"] for lb in row.get("Boxes3D:labels", [])}
    assert episode["seen"] and episode["seen"] <= labels
    last = rec["/world/objects"][-1][1]
    assert all(lb.endswith(")") and "(obj:" in lb for lb in last["Boxes3D:labels"])
    states = {int(c) for _t, row in rec["/world/objects"] for c in row.get("Boxes3D:class_ids", [])}
    assert {STATES["present"][0], STATES["held"][0]} <= states  # the picked object was held on the way
    task_object = episode["summary"].skills[0]["args"]["object"]
    i = [lb.split(" (")[0] for lb in last["Boxes3D:labels"]].index(task_object)
    assert int(last["Boxes3D:class_ids"][i]) == STATES["present"][0]
    # path, events, memory operations
    path = rec["/world/robot/path"][-1][1]["LineStrips3D:strips"][0]
    assert len(path) > 10 and np.ptp(np.asarray(path)[:, :2], axis=0).max() > 1.0
    plan = rec["/events/plan"][0][1]["TextLog:text"][0]
    assert plan.startswith("plan (") and task_object in plan
    assert any("done in" in row["TextLog:text"][0] for _t, row in rec["/events/skill"])
    ops = [row["TextLog:text"][0] for _t, row in rec["/memory/ops"]]
    assert any(o.startswith("ADD obj:") and "observed" in o for o in ops)
    assert any(" grasped" in o for o in ops) and any(" released" in o for o in ops)
    places = rec["/world/map/places"][0]
    assert places[0] is None and "bedroom_table" in places[1]["Boxes3D:labels"]
    assert rec["/task"][0][1]["TextDocument:text"][0] == episode["summary"].task


def test_snapshot_script_draws_from_the_recording(recording, tmp_path):
    out = tmp_path / "viz.png"
    script = Path(__file__).resolve().parents[1] / "scripts" / "viz_snapshot.py"
    r = subprocess.run([sys.executable, str(script), str(recording["path"]), "-o", str(out)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size < 200_000 and "held" in r.stdout and "present" in r.stdout
    from PIL import Image

    with Image.open(out) as img:
        assert img.width == 900 and img.height > 300


def test_existing_output_needs_force(episode, recording):
    path = recording["path"]
    before = path.stat().st_mtime_ns
    r = _cli("viz", str(episode["bag"]), "-o", str(path), "-q")
    assert r.returncode == 2 and r.stderr.startswith("mnemobot: error:") and "--force" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout and path.stat().st_mtime_ns == before
    r = _cli("viz", str(episode["bag"]), "-o", str(path), "-q", "--force", "--stride", "8", "--jpeg-quality", "0")
    assert r.returncode == 0, r.stderr
    assert "Column name: /world/camera/image:Image:buffer" in str(RrdReader(str(path)).store().schema())


@pytest.mark.parametrize("make", ["missing", "not-a-bag", "folder-out"])
def test_bad_input_is_one_line(episode, tmp_path, make):
    bag, out = episode["bag"], tmp_path / "x.rrd"
    if make == "missing":
        bag = tmp_path / "none"
    elif make == "not-a-bag":
        bag = tmp_path / "empty"
        bag.mkdir()
    else:
        out = tmp_path
    r = _cli("viz", str(bag), "-o", str(out))
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("mnemobot: error:") and "Traceback" not in r.stderr + r.stdout
    assert not list(tmp_path.glob("*.rrd")) and not list(tmp_path.glob(".*tmp"))


@pytest.mark.slow
def test_run_viz_records_the_live_episode(tmp_path):
    out = tmp_path / "live.rrd"
    r = _cli("run", "--task-id", "place", "--seed", "0", "--width", "160", "--height", "120", "-q", "--viz", str(out))
    assert r.returncode == 0, r.stderr
    assert f"viz         : {out}" in r.stdout
    rec = read_rrd(out)
    for entity in ENTITIES:
        assert entity in rec, entity
    labels = {lb.split(" (")[0] for _t, row in rec["/world/objects"] for lb in row.get("Boxes3D:labels", [])}
    assert "olive_bar" in labels
    assert any(row["TextLog:text"][0].startswith("start ") for _t, row in rec["/events/skill_start"])
    # an existing file is refused before the episode runs
    r = _cli("run", "--task-id", "place", "-q", "--viz", str(out), timeout=60)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr


def test_run_viz_bad_task_leaves_no_file(tmp_path):
    out = tmp_path / "bad.rrd"
    r = _cli("run", "--task-id", "nonsense", "-q", "--viz", str(out), timeout=60)
    assert r.returncode == 2 and "unknown task id" in r.stderr
    assert not os.listdir(tmp_path)
