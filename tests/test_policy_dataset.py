"""Demonstrations in the LeRobot v3.0 layout (``mnemobot.policy.dataset``): files, schema, stats,
episode boundaries, appending, and bad folders named clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("PIL")

from mnemobot.policy.dataset import (  # noqa: E402
    DEFAULT_FEATURES,
    Dataset,
    DatasetError,
    DatasetWriter,
    Feature,
    decode_image,
)

FEATURES = {
    "observation.images.head": Feature("image", (24, 32, 3)),
    "observation.state": Feature("float32", (3,), ("x", "y", "gripper")),
    "action": Feature("float32", (2,)),
    "observation.memory_ids": Feature("int64", (4,)),
}


def _frame(rng: np.random.Generator, i: int, ep: int) -> dict:
    return {"observation.images.head": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
            "observation.state": [i * 0.1, ep, 0.04], "action": np.array([i, -ep], np.float32),
            "observation.memory_ids": [ep, i, 0, 7]}


def _write(root: Path, lengths=(5, 7, 3), seed: int = 0, **kw) -> tuple[list[list[dict]], list[str]]:
    rng = np.random.default_rng(seed)
    frames, tasks = [], []
    with DatasetWriter(root, fps=10, features=FEATURES, robot_type="mobile_panda", **kw) as w:
        first = len(w.episodes)
        for ep, n in enumerate(lengths):
            ep_frames = [_frame(rng, i, ep) for i in range(n)]
            for f in ep_frames:
                w.add_frame(f)
            task = ["reopen the drawer", "put the block back"][ep % 2]
            assert w.save_episode(task) == first + ep
            frames.append(ep_frames)
            tasks.append(task)
    return frames, tasks


def test_layout_schema_stats_and_episode_boundaries(tmp_path: Path) -> None:
    root = tmp_path / "demos"
    frames, tasks = _write(root)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["robot_type"] == "mobile_panda"
    assert info["total_episodes"] == 3 and info["total_frames"] == 15 and info["total_tasks"] == 2
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["features"]["observation.images.head"] == {"dtype": "image", "shape": [24, 32, 3],
                                                           "names": ["height", "width", "channels"]}
    assert info["features"]["observation.state"]["names"] == ["x", "y", "gripper"]
    assert set(info["features"]) == set(FEATURES) | set(DEFAULT_FEATURES)

    # the data files (one per episode): one row per frame, images as {bytes, path} PNG structs,
    # vectors as fixed lists
    files = sorted((root / "data" / "chunk-000").glob("file-*.parquet"))
    assert [f.name for f in files] == ["file-000.parquet", "file-001.parquet", "file-002.parquet"]
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.num_rows == 15
    assert table.schema.field("observation.images.head").type == pa.struct([("bytes", pa.binary()),
                                                                            ("path", pa.string())])
    assert table.schema.field("action").type == pa.list_(pa.float32(), 2)
    assert b"huggingface" in table.schema.metadata
    assert table.column("index").to_pylist() == list(range(15))
    assert table.column("episode_index").to_pylist() == [0] * 5 + [1] * 7 + [2] * 3
    assert table.column("frame_index").to_pylist()[5:12] == list(range(7))
    assert np.allclose(table.column("timestamp").to_pylist()[5:12], np.arange(7) / 10)
    img = decode_image(table.column("observation.images.head")[6].as_py()["bytes"])
    assert np.array_equal(img, frames[1][1]["observation.images.head"])

    # tasks: text as the pandas index "task", with task_index
    t = pq.read_table(root / "meta" / "tasks.parquet")
    assert dict(zip(t.column("task").to_pylist(), t.column("task_index").to_pylist(), strict=True)) == {
        "reopen the drawer": 0, "put the block back": 1}
    assert json.loads(t.schema.metadata[b"pandas"])["index_columns"] == ["task"]

    # episodes: ranges, data file and per-episode stats
    eps = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [(e["dataset_from_index"], e["dataset_to_index"], e["length"]) for e in eps] == [(0, 5, 5), (5, 12, 7),
                                                                                          (12, 15, 3)]
    assert eps[1]["tasks"] == ["put the block back"] and eps[1]["data/file_index"] == 1
    assert eps[1]["stats/action/max"] == [6.0, -1.0] and eps[1]["stats/action/count"] == [7]

    # global stats agree with the frames; images per channel in [0, 1] as (3, 1, 1)
    stats = json.loads((root / "meta" / "stats.json").read_text())
    actions = np.array([f["action"] for ep in frames for f in ep], dtype=np.float64)
    assert np.allclose(stats["action"]["mean"], actions.mean(0)) and np.allclose(stats["action"]["std"], actions.std(0))
    assert stats["action"]["count"] == [15] and stats["action"]["min"] == [0.0, -2.0]
    pixels = np.concatenate([f["observation.images.head"].reshape(-1, 3) for ep in frames for f in ep]) / 255.0
    assert np.array(stats["observation.images.head"]["mean"]).shape == (3, 1, 1)
    assert np.allclose(np.ravel(stats["observation.images.head"]["mean"]), pixels.mean(0))
    assert np.allclose(np.ravel(stats["observation.images.head"]["std"]), pixels.std(0))

    # read back
    d = Dataset(root)
    assert len(d) == 15 and d.num_episodes == 3 and d.tasks == ["reopen the drawer", "put the block back"]
    ep = d.episode(1)
    assert ep["observation.images.head"].shape == (7, 24, 32, 3) and ep["action"].shape == (7, 2)
    assert np.array_equal(ep["observation.images.head"][3], frames[1][3]["observation.images.head"])
    assert ep["observation.memory_ids"].dtype == np.int64 and ep["observation.memory_ids"][2].tolist() == [1, 2, 0, 7]
    assert d.task_of(1) == "put the block back"


def test_bad_frames_are_refused_and_lose_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with DatasetWriter(tmp_path / "d", fps=5, features=FEATURES) as w:
        good = _frame(rng, 0, 0)
        w.add_frame(good)
        with pytest.raises(DatasetError, match="NaN"):
            w.add_frame({**good, "action": [np.nan, 0]})
        with pytest.raises(DatasetError, match="missing"):
            w.add_frame({k: v for k, v in good.items() if k != "action"})
        with pytest.raises(DatasetError, match="unknown"):
            w.add_frame({**good, "reward": 1.0})
        with pytest.raises(DatasetError, match="shape"):
            w.add_frame({**good, "observation.images.head": np.zeros((10, 10, 3), np.uint8)})
        with pytest.raises(DatasetError, match="2 value"):
            w.add_frame({**good, "action": [1, 2, 3]})
        w.save_episode("t")
        with pytest.raises(DatasetError, match="no frames"):
            w.save_episode("t")
        w.add_frame(good)  # an unsaved episode is dropped on close
    d = Dataset(tmp_path / "d")
    assert len(d) == 1 and d.num_episodes == 1
    with pytest.raises(DatasetError, match="filled by the writer"):
        DatasetWriter(tmp_path / "e", fps=5, features={"index": Feature("int64")})
    with pytest.raises(DatasetError, match="dtype"):
        Feature("float16")


def test_never_overwrites_and_appends_into_a_new_file(tmp_path: Path) -> None:
    root = tmp_path / "demos"
    _write(root, lengths=(4, 4))
    before = (root / "data" / "chunk-000" / "file-000.parquet").read_bytes()
    with pytest.raises(DatasetError, match="already holds a dataset"):
        DatasetWriter(root, fps=10, features=FEATURES)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        DatasetWriter(tmp_path / "other", fps=10, features=FEATURES)
    with pytest.raises(DatasetError, match="fps"):
        DatasetWriter(root, fps=20, features=FEATURES, append=True)
    with pytest.raises(DatasetError, match="features differ"):
        DatasetWriter(root, fps=10, features={"action": Feature("float32", (2,))}, append=True)
    _write(root, lengths=(3,), seed=5, append=True)
    assert (root / "data" / "chunk-000" / "file-000.parquet").read_bytes() == before
    d = Dataset(root)
    assert d.num_episodes == 3 and len(d) == 11
    assert d.episodes[2]["data/file_index"] == 2 and d.episodes[2]["dataset_from_index"] == 8
    assert d.episode(2)["index"].tolist() == [8, 9, 10] and d.episode(2)["episode_index"].tolist() == [2, 2, 2]
    stats = json.loads((root / "meta" / "stats.json").read_text())
    allact = np.concatenate([d.episode(i)["action"] for i in range(3)]).astype(np.float64)
    assert stats["action"]["count"] == [11] and np.allclose(stats["action"]["mean"], allact.mean(0))
    assert np.allclose(stats["action"]["std"], allact.std(0))


def test_a_killed_recording_keeps_its_saved_episodes(tmp_path: Path) -> None:
    """Each episode is complete on disk when save_episode returns: a process killed with an
    episode half-recorded (no close, no exit handlers) leaves a readable dataset of the others,
    and appending later skips a data file whose metadata was never written."""
    import subprocess
    import sys

    root = tmp_path / "d"
    script = (
        "import os, numpy as np\n"
        "from mnemobot.policy.dataset import DatasetWriter, Feature\n"
        f"w = DatasetWriter({str(root)!r}, fps=10, features={{'action': Feature('float32', (2,))}})\n"
        "for ep in range(2):\n"
        "    for i in range(4): w.add_frame({'action': [i, ep]})\n"
        "    w.save_episode('t')\n"
        "w.add_frame({'action': [9, 9]})\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    d = Dataset(root)
    assert d.num_episodes == 2 and len(d) == 8 and d.episode(1)["action"][:, 1].tolist() == [1, 1, 1, 1]
    # a data file with no metadata (killed between the two) is left alone, never overwritten
    orphan = root / "data" / "chunk-000" / "file-002.parquet"
    orphan.write_bytes(b"not mine to overwrite")
    with DatasetWriter(root, fps=10, features={"action": Feature("float32", (2,))}, append=True) as w:
        w.add_frame({"action": [0, 3]})
        w.save_episode("t")
    assert orphan.read_bytes() == b"not mine to overwrite"
    d = Dataset(root)
    assert d.num_episodes == 3 and d.episodes[2]["data/file_index"] == 3


def test_damaged_folders_are_named(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write(good, lengths=(3, 3))

    def broken(name: str) -> Path:
        p = tmp_path / name
        shutil.copytree(good, p)
        return p

    with pytest.raises(DatasetError, match="not found"):
        Dataset(tmp_path / "nothing")
    p = broken("no_info")
    (p / "meta" / "info.json").unlink()
    with pytest.raises(DatasetError, match=r"meta/info.json is missing"):
        Dataset(p)
    p = broken("v21")
    info = json.loads((p / "meta" / "info.json").read_text())
    (p / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match="v2.1"):
        Dataset(p)
    p = broken("frames")
    (p / "meta" / "info.json").write_text(json.dumps({**info, "total_frames": 7}))
    with pytest.raises(DatasetError, match="7 frames"):
        Dataset(p)
    p = broken("no_data")
    (p / "data" / "chunk-000" / "file-000.parquet").unlink()
    with pytest.raises(DatasetError, match="data file .* is missing"):
        Dataset(p)
    p = broken("truncated")
    f = p / "data" / "chunk-000" / "file-000.parquet"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DatasetError, match="cannot be read"):
        Dataset(p)
    p = broken("columns")
    (p / "meta" / "info.json").write_text(json.dumps(
        {**info, "features": {**info["features"], "observation.wrist": {"dtype": "float32", "shape": [1]}}}))
    with pytest.raises(DatasetError, match="columns"):
        Dataset(p)
    p = broken("no_tasks")
    (p / "meta" / "tasks.parquet").unlink()
    with pytest.raises(DatasetError, match="tasks table"):
        Dataset(p)
    p = broken("nan")
    f = p / "data" / "chunk-000" / "file-001.parquet"
    t = pq.read_table(f)
    act = t.column("action").to_pylist()
    act[1] = [float("nan"), 0.0]
    t = t.set_column(t.schema.get_field_index("action"), "action", pa.array(act, pa.list_(pa.float32(), 2)))
    pq.write_table(t, f)
    d = Dataset(p)
    d.episode(0)
    with pytest.raises(DatasetError, match="episode 1, action: NaN"):
        d.episode(1)
