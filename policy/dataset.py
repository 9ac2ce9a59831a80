"""Demonstrations in the LeRobot v3.0 dataset layout, written and read with pyarrow alone.

lerobot itself cannot be a dependency here (its releases pin Python or torch versions this stack
does not use), so this module writes the files its ``LeRobotDataset`` reads, and reads them back::

    root/
      meta/info.json                              codebase_version "v3.0", fps, features, totals,
                                                  path templates
      meta/stats.json                             per feature: min, max, mean, std, count
                                                  (images: per channel, in [0, 1], shape (3, 1, 1))
      meta/tasks.parquet                          task text (the pandas index ``task``) -> task_index
      meta/episodes/chunk-000/file-000.parquet    one row per episode: episode_index, tasks,
                                                  length, dataset_from_index/to_index, its data
                                                  file, and the episode's own stats
      data/chunk-000/file-000.parquet             one row per frame; one file per episode

Images are embedded in the data files as PNG (feature ``dtype: image``, an arrow struct
``{bytes, path}`` as Hugging Face ``datasets`` stores images); there is no video. Every frame
carries ``timestamp`` (s from the episode start), ``frame_index``, ``episode_index``, ``index``
(row in the whole dataset) and ``task_index``.

Writing never overwrites: :class:`DatasetWriter` refuses a folder that holds anything but a
dataset it may append to (``append=True``, same features and fps), and appending adds files,
leaving the finished ones as they are. Each saved episode is a complete file, moved into place
when written, and the metadata is rewritten after it: a recording interrupted in any way, a
killed process included, keeps every episode saved before the interruption. (The layout allows
several episodes per file; one per episode is what makes that guarantee cheap: nothing is ever
rewritten.)

Reading (:class:`Dataset`) checks what a trainer relies on and names the problem when it does
not hold: missing files, a data file whose columns differ from ``info.json``, episodes whose
rows do not match their declared range, NaN in numeric features.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CODEBASE_VERSION",
    "DEFAULT_FEATURES",
    "Dataset",
    "DatasetError",
    "DatasetWriter",
    "Feature",
    "decode_image",
    "encode_image",
]

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
DTYPES = ("float32", "float64", "int64", "bool", "image", "string")
STAT_NAMES = ("min", "max", "mean", "std", "count")


class DatasetError(ValueError):
    """A dataset folder that cannot be read or written as asked (the message names the problem)."""


def _require_arrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - the learn extra brings it
        raise DatasetError("datasets need pyarrow: pip install 'mnemobot[learn]'") from None
    return pa, pq


@dataclass(frozen=True)
class Feature:
    """One column: ``dtype`` (one of :data:`DTYPES`), ``shape`` (``(1,)`` for a scalar; ``(H, W,
    3)`` for an image) and optional ``names`` (of a vector's elements, or of an image's axes)."""

    dtype: str
    shape: tuple[int, ...] = (1,)
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise DatasetError(f"feature dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not self.shape or any(int(s) < 1 for s in self.shape):
            raise DatasetError(f"feature shape must be positive sizes, got {self.shape!r}")
        if self.dtype == "image" and (len(self.shape) != 3 or self.shape[2] != 3):
            raise DatasetError(f"an image feature's shape is (height, width, 3), got {self.shape!r}")
        if self.dtype != "image" and len(self.shape) != 1:
            raise DatasetError(f"a {self.dtype} feature is a scalar or a vector, got shape {self.shape!r}")

    @property
    def scalar(self) -> bool:
        return self.dtype != "image" and self.shape == (1,)

    def to_info(self) -> dict[str, Any]:
        names: Any = list(self.names) if self.names is not None else None
        if self.dtype == "image" and names is None:
            names = ["height", "width", "channels"]
        return {"dtype": self.dtype, "shape": list(self.shape), "names": names}

    @classmethod
    def from_info(cls, key: str, raw: Any) -> Feature:
        if not isinstance(raw, dict) or "dtype" not in raw or "shape" not in raw:
            raise DatasetError(f"info.json: feature {key!r} needs dtype and shape")
        if raw["dtype"] == "video":
            raise DatasetError(f"info.json: feature {key!r} is stored as video, which this reader does not decode "
                               "(write images embedded)")
        names = raw.get("names")
        if isinstance(names, dict):  # older lerobot: {"motors": [...]}
            names = next(iter(names.values()), None)
        try:
            return cls(str(raw["dtype"]), tuple(int(s) for s in raw["shape"]),
                       tuple(str(n) for n in names) if isinstance(names, list) and raw["dtype"] != "image" else None)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"info.json: feature {key!r}: {e}") from None


DEFAULT_FEATURES: dict[str, Feature] = {
    "timestamp": Feature("float32"),
    "frame_index": Feature("int64"),
    "episode_index": Feature("int64"),
    "index": Feature("int64"),
    "task_index": Feature("int64"),
}
"""Columns every frame has; :meth:`DatasetWriter.save_episode` fills them."""


def encode_image(img: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 image (fast compression: recording is the hot path)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 image of PNG (or JPEG) bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _arrow_type(pa: Any, f: Feature) -> Any:
    if f.dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    base = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_(),
            "string": pa.string()}[f.dtype]
    return base if f.scalar else pa.list_(base, f.shape[0])


def _hf_feature(f: Feature) -> dict[str, Any]:
    """The Hugging Face ``datasets`` description of a column (kept in the parquet schema metadata)."""
    if f.dtype == "image":
        return {"_type": "Image"}
    value = {"dtype": f.dtype, "_type": "Value"}
    return value if f.scalar else {"feature": value, "length": f.shape[0], "_type": "List"}


# -- statistics ----------------------------------------------------------------------------------------
class _Stats:
    """Running min, max, mean and std of one feature (per element; images per channel in [0, 1])."""

    def __init__(self, size: int) -> None:
        self.n = 0
        self.sum = np.zeros(size)
        self.sumsq = np.zeros(size)
        self.min = np.full(size, np.inf)
        self.max = np.full(size, -np.inf)

    def add(self, values: np.ndarray) -> None:
        """``values``: ``(n, size)`` rows, each one sample per element."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return
        self.n += v.shape[0]
        self.sum += v.sum(axis=0)
        self.sumsq += (v * v).sum(axis=0)
        self.min = np.minimum(self.min, v.min(axis=0))
        self.max = np.maximum(self.max, v.max(axis=0))

    def absorb(self, other: _Stats) -> None:
        """Fold in another running record of the same feature."""
        if other.n == 0:
            return
        self.n += other.n
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)

    def merge(self, other: dict[str, Any]) -> None:
        """Fold in stats stored as :meth:`to_dict` (an earlier run of the same dataset)."""
        n = int(np.asarray(other["count"]).ravel()[0])
        if n == 0:
            return
        mean = np.asarray(other["mean"], dtype=np.float64).ravel()
        std = np.asarray(other["std"], dtype=np.float64).ravel()
        self.n += n
        self.sum += mean * n
        self.sumsq += (std**2 + mean**2) * n
        self.min = np.minimum(self.min, np.asarray(other["min"], dtype=np.float64).ravel())
        self.max = np.maximum(self.max, np.asarray(other["max"], dtype=np.float64).ravel())

    def to_dict(self, image: bool) -> dict[str, Any]:
        n = max(self.n, 1)
        mean = self.sum / n
        std = np.sqrt(np.maximum(self.sumsq / n - mean**2, 0.0))

        def shape(a: np.ndarray) -> list[Any]:
            return a.reshape(-1, 1, 1).tolist() if image else a.tolist()

        return {"min": shape(self.min), "max": shape(self.max), "mean": shape(mean), "std": shape(std),
                "count": [int(self.n)]}


def _stat_rows(f: Feature, value: Any) -> np.ndarray:
    """One frame's value of a feature as ``(n, size)`` float rows for :class:`_Stats` (an image:
    one row per pixel, channels in [0, 1])."""
    if f.dtype == "image":
        return np.asarray(value, dtype=np.float64).reshape(-1, 3) / 255.0
    return np.asarray(value, dtype=np.float64).reshape(1, -1)


# -- writing -----------------------------------------------------------------------------------------
class DatasetWriter:
    """Write episodes frame by frame into a new LeRobot v3.0 dataset folder (see the module doc).

    ``features``: the columns besides :data:`DEFAULT_FEATURES`; ``fps``: frames per second of the
    recording; ``append``: add episodes to a dataset this writer's format made before (same
    features, fps).

    Use as a context manager, or call :meth:`close`. An unsaved episode is dropped on close.
    """

    def __init__(self, root: str | Path, fps: float, features: Mapping[str, Feature], robot_type: str = "mnemobot",
                 chunks_size: int = 1000, append: bool = False) -> None:
        self.pa, self.pq = _require_arrow()
        if not fps > 0 or not math.isfinite(fps):
            raise DatasetError(f"fps must be a positive number, got {fps!r}")
        clash = sorted(set(features) & set(DEFAULT_FEATURES))
        if clash:
            raise DatasetError(f"features {clash} are filled by the writer; leave them out")
        self.root = Path(root)
        self.fps = float(fps)
        self.features = {**{k: features[k] for k in features}, **DEFAULT_FEATURES}
        self.robot_type = robot_type
        self.chunks_size = int(chunks_size)
        self.episodes: list[dict[str, Any]] = []
        self.tasks: dict[str, int] = {}
        self.stats = {k: _Stats(self._stat_size(f)) for k, f in self.features.items() if f.dtype != "string"}
        self._frames: list[dict[str, Any]] = []
        self._ep_stats: dict[str, _Stats] = {}
        self._file = (0, -1)  # (chunk, file) of the open data file
        self._closed = False
        self.schema = self._schema()
        self._open_root(append)

    @staticmethod
    def _stat_size(f: Feature) -> int:
        return 3 if f.dtype == "image" else f.shape[0]

    def _schema(self) -> Any:
        pa = self.pa
        hf = {"info": {"features": {k: _hf_feature(f) for k, f in self.features.items()}}}
        return pa.schema([(k, _arrow_type(pa, f)) for k, f in self.features.items()],
                         metadata={b"huggingface": json.dumps(hf).encode()})

    def _open_root(self, append: bool) -> None:
        info_path = self.root / "meta" / "info.json"
        if self.root.exists() and not self.root.is_dir():
            raise DatasetError(f"{self.root} is a file, not a dataset folder")
        if info_path.is_file():
            if not append:
                raise DatasetError(f"{self.root} already holds a dataset; choose a new folder "
                                   "(or append to it) - nothing is overwritten")
            self._resume(Dataset(self.root))
        elif self.root.exists() and any(self.root.iterdir()):
            raise DatasetError(f"{self.root} exists and is not empty; choose a new folder - nothing is overwritten")
        self.root.mkdir(parents=True, exist_ok=True)

    def _resume(self, old: Dataset) -> None:
        if abs(old.fps - self.fps) > 1e-9:
            raise DatasetError(f"{self.root}: recorded at {old.fps:g} fps, not {self.fps:g}")
        if old.features != self.features:
            raise DatasetError(f"{self.root}: its features differ from these "
                               f"({sorted(old.features)} vs {sorted(self.features)})")
        self.episodes = [dict(e) for e in old.episodes]
        self.tasks = {t: i for i, t in enumerate(old.tasks)}
        for k, st in self.stats.items():
            if k in old.stats:
                st.merge(old.stats[k])
        last = max(((e["data/chunk_index"], e["data/file_index"]) for e in self.episodes), default=(0, -1))
        self._file = last  # the next episode starts a new file after the last one

    @property
    def total_frames(self) -> int:
        return sum(int(e["length"]) for e in self.episodes)

    # -- frames --------------------------------------------------------------------------------------
    def add_frame(self, frame: Mapping[str, Any]) -> None:
        """Add one frame of the current episode: a value for every feature given at construction
        (``timestamp`` optional: ``frame_index / fps`` by default). Raises :class:`DatasetError`
        for a missing or unknown key, a wrong shape, or a NaN/inf number."""
        if self._closed:
            raise DatasetError("the writer is closed")
        given = set(frame) - {"timestamp"}
        wanted = set(self.features) - set(DEFAULT_FEATURES)
        if given != wanted:
            missing, unknown = sorted(wanted - given), sorted(given - wanted)
            raise DatasetError(f"frame {len(self._frames)}: " + "; ".join(
                p for p in (f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "") if p))
        row: dict[str, Any] = {}
        samples: dict[str, np.ndarray] = {}
        for k in wanted:
            f = self.features[k]
            row[k], sample = self._convert(k, f, frame[k])
            if f.dtype != "string":
                samples[k] = _stat_rows(f, sample)
        t = frame.get("timestamp")
        row["timestamp"] = float(len(self._frames) / self.fps if t is None else t)
        if not math.isfinite(row["timestamp"]):
            raise DatasetError(f"frame {len(self._frames)}: timestamp is not finite")
        samples["timestamp"] = np.array([[row["timestamp"]]])
        for k, rows in samples.items():  # only once the whole frame is valid
            if k not in self._ep_stats:
                self._ep_stats[k] = _Stats(self._stat_size(self.features[k]))
            self._ep_stats[k].add(rows)
        self._frames.append(row)

    def _convert(self, key: str, f: Feature, value: Any) -> tuple[Any, Any]:
        """``(stored value, numeric sample for the stats)`` of one frame's value of ``key``."""
        where = f"frame {len(self._frames)}, {key}"
        if f.dtype == "image":
            if isinstance(value, (bytes, bytearray)):
                img = decode_image(bytes(value))
                data = bytes(value)
            else:
                img = np.asarray(value)
                data = None
            if img.shape != f.shape or img.dtype != np.uint8:
                raise DatasetError(f"{where}: expected a uint8 image of shape {f.shape}, got {img.dtype} {img.shape}")
            return {"bytes": data if data is not None else encode_image(img), "path": None}, img
        if f.dtype == "string":
            if not isinstance(value, str):
                raise DatasetError(f"{where}: expected text, got {type(value).__name__}")
            return value, None
        arr = np.asarray(value)
        if arr.size != f.shape[0]:
            raise DatasetError(f"{where}: expected {f.shape[0]} value(s), got shape {arr.shape}")
        if f.dtype.startswith("float"):
            arr = arr.astype(np.float64).ravel()
            if not np.all(np.isfinite(arr)):
                raise DatasetError(f"{where}: NaN or inf in {arr.tolist()}")
        elif f.dtype == "int64":
            arr = arr.astype(np.int64).ravel()
        else:
            arr = arr.astype(bool).ravel()
        return (arr[0].item() if f.scalar else arr.tolist()), arr

    def clear_episode(self) -> None:
        """Drop the frames added since the last saved episode (a failed demonstration)."""
        self._frames = []
        self._ep_stats = {}

    def save_episode(self, task: str) -> int:
        """Write the frames added since the last call as one episode of ``task`` (its text);
        returns the episode index. Metadata on disk is updated before returning."""
        if not self._frames:
            raise DatasetError("save_episode: the episode has no frames")
        if not task or not isinstance(task, str):
            raise DatasetError("save_episode: the task text must be a non-empty string")
        index = len(self.episodes)
        task_index = self.tasks.setdefault(task, len(self.tasks))
        start = self.total_frames
        frames = self._frames
        for i, row in enumerate(frames):
            row.update(frame_index=i, episode_index=index, index=start + i, task_index=task_index)
        columns = {k: [row[k] for row in frames] for k in self.features}
        chunk, file = self._next_file()
        path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_parquet(self.pq, self.pa.table(columns, schema=self.schema), path)
        self._file = (chunk, file)
        episode: dict[str, Any] = {
            "episode_index": index, "tasks": [task], "length": len(frames),
            "dataset_from_index": start, "dataset_to_index": start + len(frames),
            "data/chunk_index": chunk, "data/file_index": file,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
        }
        for k in ("frame_index", "episode_index", "index", "task_index"):
            self._ep_stats[k] = _Stats(1)
            self._ep_stats[k].add(np.asarray(columns[k], dtype=np.float64).reshape(-1, 1))
        for k, f in self.features.items():
            if f.dtype == "string":
                continue
            ep = self._ep_stats[k]
            self.stats[k].absorb(ep)
            for name, value in ep.to_dict(f.dtype == "image").items():
                episode[f"stats/{k}/{name}"] = np.asarray(value).ravel().tolist()
        self.episodes.append(episode)
        self._frames = []
        self._ep_stats = {}
        self._write_meta()
        return index

    def _next_file(self) -> tuple[int, int]:
        """``(chunk, file)`` index of the next episode's data file. An existing file is never
        overwritten: one left by a process killed between its data and its metadata is skipped."""
        chunk, file = self._file
        while True:
            file += 1
            if file >= self.chunks_size:
                chunk, file = chunk + 1, 0
            if not (self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)).exists():
                return chunk, file

    # -- metadata ------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        n_ep = len(self.episodes)
        return {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": n_ep,
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 0,
            "fps": self.fps,
            "splits": {"train": f"0:{n_ep}"},
            "data_path": DATA_PATH,
            "video_path": None,
            "features": {k: f.to_info() for k, f in self.features.items()},
        }

    def _write_meta(self) -> None:
        """info.json, stats.json, tasks and episodes (each written to a temporary file and moved
        into place, so a crash leaves the previous version readable)."""
        pa, pq = self.pa, self.pq
        meta = self.root / "meta"
        (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        stats = {k: st.to_dict(self.features[k].dtype == "image") for k, st in self.stats.items()}
        _atomic_text(meta / "stats.json", json.dumps(stats, indent=1))
        names = sorted(self.tasks, key=self.tasks.get)
        pandas_meta = {"index_columns": ["task"], "column_indexes": [],
                       "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                    "numpy_type": "int64", "metadata": None},
                                   {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                    "numpy_type": "object", "metadata": None}],
                       "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
        tasks = pa.table({"task_index": pa.array([self.tasks[t] for t in names], pa.int64()),
                          "task": pa.array(names, pa.string())},
                         metadata={b"pandas": json.dumps(pandas_meta).encode()})
        _atomic_parquet(pq, tasks, meta / "tasks.parquet")
        if self.episodes:
            keys = list(self.episodes[0])
            cols = {}
            for k in keys:
                values = [e[k] for e in self.episodes]
                if k == "tasks":
                    cols[k] = pa.array(values, pa.list_(pa.string()))
                elif k.startswith("stats/"):
                    cols[k] = pa.array(values, pa.list_(pa.int64() if k.endswith("/count") else pa.float64()))
                else:
                    cols[k] = pa.array(values, pa.int64())
            _atomic_parquet(pq, pa.table(cols), self.root / EPISODES_PATH.format(chunk_index=0, file_index=0))
        _atomic_text(meta / "info.json", json.dumps(self.info(), indent=2))

    def close(self) -> None:
        """Stop writing (an unsaved episode is dropped; everything saved is on disk already)."""
        self._closed = True
        self._frames = []
        self._ep_stats = {}

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _atomic_parquet(pq: Any, table: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, str(tmp))
    os.replace(tmp, path)


# -- reading -----------------------------------------------------------------------------------------
class Dataset:
    """A LeRobot v3.0 dataset folder, checked on opening (see the module doc).

    ``features``, ``fps``, ``tasks`` (text by task index), ``episodes`` (rows of the episodes
    table, without the per-episode stats) and ``stats`` (of ``meta/stats.json``).
    """

    def __init__(self, root: str | Path) -> None:
        self.pa, self.pq = _require_arrow()
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} not found")
        self.info = self._json("meta/info.json")
        version = self.info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(f"{self.root}: dataset version {version!r}; this reader reads {CODEBASE_VERSION}")
        raw = self.info.get("features")
        if not isinstance(raw, dict) or not raw:
            raise DatasetError(f"{self.root}: meta/info.json has no features")
        self.features = {k: Feature.from_info(k, v) for k, v in raw.items()}
        missing = sorted(set(DEFAULT_FEATURES) - set(self.features))
        if missing:
            raise DatasetError(f"{self.root}: meta/info.json lacks the standard features {missing}")
        try:
            self.fps = float(self.info["fps"])
            self.data_path = str(self.info.get("data_path") or DATA_PATH)
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{self.root}: meta/info.json has no valid fps") from None
        self.stats = self._json("meta/stats.json")
        self.tasks = self._tasks()
        self.episodes = self._episodes()
        self._tables: dict[tuple[int, int], Any] = {}
        self._check()

    def _json(self, rel: str) -> dict[str, Any]:
        path = self.root / rel
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"{self.root}: {rel} is missing (not a LeRobot v3.0 dataset?)") from None
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.root}: {rel} cannot be read: {e}") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{self.root}: {rel} is not a JSON object")
        return data

    def _read(self, path: Path, what: str, columns: Sequence[str] | None = None) -> Any:
        if not path.is_file():
            raise DatasetError(f"{self.root}: {what} {path.relative_to(self.root)} is missing")
        try:
            return self.pq.read_table(str(path), columns=list(columns) if columns else None)
        except Exception as e:  # noqa: BLE001 - arrow raises several types for a damaged file
            raise DatasetError(f"{self.root}: {what} {path.relative_to(self.root)} cannot be read: {e}") from None

    def _tasks(self) -> list[str]:
        t = self._read(self.root / "meta" / "tasks.parquet", "tasks table")
        if "task_index" not in t.column_names:
            raise DatasetError(f"{self.root}: meta/tasks.parquet has no task_index column")
        name_col = "task" if "task" in t.column_names else "__index_level_0__"
        if name_col not in t.column_names:
            raise DatasetError(f"{self.root}: meta/tasks.parquet has no task text column")
        pairs = sorted(zip(t.column("task_index").to_pylist(), t.column(name_col).to_pylist(), strict=True))
        if [i for i, _ in pairs] != list(range(len(pairs))):
            raise DatasetError(f"{self.root}: meta/tasks.parquet task indices are not 0..{len(pairs) - 1}")
        return [str(name) for _, name in pairs]

    def _episodes(self) -> list[dict[str, Any]]:
        folder = self.root / "meta" / "episodes"
        files = sorted(folder.glob("chunk-*/file-*.parquet")) if folder.is_dir() else []
        if not files:
            raise DatasetError(f"{self.root}: meta/episodes/ holds no episodes table")
        rows: list[dict[str, Any]] = []
        for f in files:
            t = self._read(f, "episodes table")
            keep = [c for c in t.column_names if not c.startswith("stats/")]
            rows += t.select(keep).to_pylist()
        rows.sort(key=lambda r: r.get("episode_index", -1))
        return rows

    def _check(self) -> None:
        need = ("episode_index", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index",
                "data/file_index")
        at = 0
        for i, e in enumerate(self.episodes):
            lacking = [k for k in need if e.get(k) is None]
            if lacking:
                raise DatasetError(f"{self.root}: episode row {i} lacks {lacking}")
            if e["episode_index"] != i:
                raise DatasetError(f"{self.root}: episode indices are not 0..{len(self.episodes) - 1} "
                                   f"(row {i} is episode {e['episode_index']})")
            if e["dataset_from_index"] != at or e["dataset_to_index"] - e["dataset_from_index"] != e["length"]:
                raise DatasetError(f"{self.root}: episode {i} covers rows {e['dataset_from_index']}.."
                                   f"{e['dataset_to_index']} with length {e['length']}; expected to start at {at}")
            at = e["dataset_to_index"]
        total = self.info.get("total_frames")
        if total != at:
            raise DatasetError(f"{self.root}: info.json says {total} frames, the episodes cover {at}")
        if self.info.get("total_episodes") != len(self.episodes):
            raise DatasetError(f"{self.root}: info.json says {self.info.get('total_episodes')} episodes, "
                               f"the episodes table has {len(self.episodes)}")
        for key in {(e["data/chunk_index"], e["data/file_index"]) for e in self.episodes}:
            path = self._data_file(*key)
            if not path.is_file():
                raise DatasetError(f"{self.root}: data file {path.relative_to(self.root)} is missing")
            try:
                schema = self.pq.read_schema(str(path))
            except Exception as e:  # noqa: BLE001
                raise DatasetError(f"{self.root}: data file {path.relative_to(self.root)} cannot be read: {e}") from None
            have, want = set(schema.names), set(self.features)
            if have != want:
                raise DatasetError(f"{self.root}: data file {path.relative_to(self.root)} has columns "
                                   f"{sorted(have)}, info.json declares {sorted(want)}")

    def _data_file(self, chunk: int, file: int) -> Path:
        return self.root / self.data_path.format(chunk_index=chunk, file_index=file)

    def _table(self, chunk: int, file: int) -> Any:
        key = (chunk, file)
        if key not in self._tables:
            self._tables = {key: self._read(self._data_file(chunk, file), "data file")}
        return self._tables[key]

    # -- access --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.info["total_frames"])

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def episode(self, index: int, keys: Sequence[str] | None = None, images: bool = True) -> dict[str, Any]:
        """Columns of episode ``index``: numbers as numpy arrays (``(length, size)``; scalars
        ``(length,)``), images decoded to ``(length, H, W, 3)`` uint8 (``images=False``: PNG
        bytes), text as lists. Raises :class:`DatasetError` when its rows do not match the
        episodes table or a number is NaN."""
        if not 0 <= index < len(self.episodes):
            raise DatasetError(f"episode {index} does not exist (the dataset has {len(self.episodes)})")
        e = self.episodes[index]
        table = self._table(int(e["data/chunk_index"]), int(e["data/file_index"]))
        ep_col = np.asarray(table.column("episode_index").to_numpy())
        rows = np.flatnonzero(ep_col == index)
        if len(rows) != e["length"] or (len(rows) and rows[-1] - rows[0] + 1 != len(rows)):
            raise DatasetError(f"{self.root}: episode {index} has {len(rows)} rows in its data file, "
                               f"the episodes table says {e['length']}")
        part = table.slice(int(rows[0]), len(rows)) if len(rows) else table.slice(0, 0)
        out: dict[str, Any] = {}
        for k in keys or list(self.features):
            if k not in self.features:
                raise DatasetError(f"unknown feature {k!r}; the dataset has {sorted(self.features)}")
            f = self.features[k]
            col = part.column(k)
            if f.dtype == "image":
                raw = [c["bytes"] for c in col.to_pylist()]
                out[k] = np.stack([decode_image(b) for b in raw]) if images and raw else raw
            elif f.dtype == "string":
                out[k] = col.to_pylist()
            else:
                arr = np.asarray(col.to_pylist(), dtype=np.float32 if f.dtype == "float32" else None)
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    raise DatasetError(f"{self.root}: episode {index}, {k}: NaN or inf")
                out[k] = arr
        return out

    def iter_episodes(self, keys: Sequence[str] | None = None, images: bool = True) -> Iterator[dict[str, Any]]:
        for i in range(len(self.episodes)):
            yield self.episode(i, keys, images)

    def task_of(self, episode: int) -> str:
        """The task text of an episode (its first task)."""
        tasks = self.episodes[episode].get("tasks") or []
        return str(tasks[0]) if tasks else ""
