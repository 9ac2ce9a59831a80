"""The results of an evaluation: one row per episode, journalled durably, tabled atomically.

Layout of an evaluation folder::

    OUT/eval.json        # the matrix, the results schema version, the command line
    OUT/rows.jsonl       # the journal: one JSON row per finished episode (flushed and fsync'ed)
    OUT/results.parquet  # the table, rebuilt from the journal (temp file + os.replace)
    OUT/results.csv      # the same table as CSV
    OUT/logs/<key>.log   # output of each episode's process (kept for reading failures)

The journal is the source of truth: a crash loses at most the row being written, and a re-run
of the same command skips every episode it holds.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mnemobot.agent.errors import UserError

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "Journal",
    "read_results",
    "write_tables",
]

SCHEMA_VERSION = 1
"""Version of the row schema (:data:`COLUMNS`); an evaluation folder of another version is refused."""

COLUMNS: tuple[tuple[str, str], ...] = (
    ("key", "str"),
    ("family", "str"),
    ("seed", "int"),
    ("memory", "str"),
    ("planner", "str"),
    ("mode", "str"),
    ("inject", "str"),
    ("sensor_profile", "str"),
    ("policy", "str"),
    ("success", "bool"),
    ("steps", "int"),
    ("planner_calls", "int"),
    ("prompt_tokens", "int"),
    ("completion_tokens", "int"),
    ("sim_s", "float"),
    ("wall_s", "float"),
    ("stop_reason", "str"),
    ("anomalies", "int"),
    ("attempts", "int"),
    ("process_s", "float"),
    ("task", "str"),
    ("error", "str"),
    ("host", "str"),
    ("finished_at", "str"),
)
"""Columns and their types. ``wall_s``: the episode's own wall time (from its first plan to its
score); ``process_s``: the wall time of its process (start-up, world building, episode, exit);
``attempts``: processes started for it (a worker that died is retried)."""
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
_DEFAULTS = {"str": "", "int": 0, "float": 0.0, "bool": False}


def normalise(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with every column, in order, with its type (missing values take the type's default)."""
    out: dict[str, Any] = {}
    for name, kind in COLUMNS:
        value = row.get(name)
        if value is None or value == "":
            value = _DEFAULTS[kind]
        if kind == "int":
            value = int(float(value))
        elif kind == "float":
            value = float(value)
        elif kind == "bool":
            value = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")
        else:
            value = str(value)
        out[name] = value
    return out


class Journal:
    """``rows.jsonl``: rows appended one line at a time, each flushed and fsync'ed.

    Opening it drops a torn last line (a crash in the middle of a write) and any line that is not
    a row, so appending continues on a clean line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        dirty = bool(raw) and not raw.endswith(b"\n")
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                dirty = True
                continue
            if not isinstance(row, dict) or "key" not in row:
                dirty = True
                continue
            if row["key"] in self.rows:  # a duplicate (never written by us): the last one counts
                dirty = True
            self.rows[str(row["key"])] = normalise(row)
        if dirty:
            text = b"".join(json.dumps(r).encode() + b"\n" for r in self.rows.values())
            _atomic_write_bytes(self.path, text)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Write one row durably (a row for a key already present replaces it in the table)."""
        norm = normalise(row)
        line = json.dumps(norm) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.rows[norm["key"]] = norm
        return norm


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _arrow_table(rows: Sequence[Mapping[str, Any]]):  # noqa: ANN202 - pyarrow.Table
    import pyarrow as pa

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS],
                       metadata={b"mnemobot.results_schema": str(SCHEMA_VERSION).encode()})
    return pa.table({name: [r[name] for r in rows] for name in COLUMN_NAMES}, schema=schema)


def write_tables(out_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Rewrite ``results.parquet`` and ``results.csv`` from ``rows`` (each file replaced atomically)."""
    out = Path(out_dir)
    table_rows = sorted((normalise(r) for r in rows), key=lambda r: r["key"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMN_NAMES, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table_rows)
    _atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    try:
        import pyarrow.parquet as pq
    except ImportError:  # the CSV alone (pyarrow is in the 'learn' extra)
        return
    tmp = out / f".results.parquet.tmp{os.getpid()}"
    pq.write_table(_arrow_table(table_rows), tmp)
    os.replace(tmp, out / "results.parquet")


def read_results(path: str | Path) -> tuple[list[dict[str, Any]], Path]:
    """The rows of an evaluation folder, its ``results.parquet`` or its ``results.csv`` (or any
    CSV/Parquet file with the same columns), and the folder they came from.

    A folder's journal is read when it holds rows the tables lack (an evaluation still running).
    """
    p = Path(path)
    if p.is_dir():
        meta = p / "eval.json"
        if meta.exists():
            check_schema(p)
        journal = p / "rows.jsonl"
        if journal.exists():
            return list(Journal(journal).rows.values()), p
        for name in ("results.parquet", "results.csv"):
            if (p / name).exists():
                return read_results(p / name)[0], p
        raise UserError(f"{p} holds no evaluation results (no rows.jsonl, results.parquet or results.csv)")
    if not p.exists():
        raise UserError(f"no such results file or folder: {p}")
    if p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError("reading Parquet needs pyarrow; give the results.csv instead") from None
        try:
            table = pq.read_table(p)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
            raise UserError(f"cannot read {p} as Parquet: {e}") from None
        version = (table.schema.metadata or {}).get(b"mnemobot.results_schema")
        if version is not None and int(version) != SCHEMA_VERSION:
            raise UserError(f"{p} has results schema version {int(version)}; this mnemobot reads version "
                            f"{SCHEMA_VERSION}")
        raw = table.to_pylist()
    elif p.suffix == ".csv":
        with open(p, newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f))
    else:
        raise UserError(f"{p}: expected an evaluation folder, a .parquet or a .csv file")
    missing = [c for c in ("family", "success") if raw and c not in raw[0]]
    if missing:
        raise UserError(f"{p} lacks the column(s) {', '.join(missing)}: not an evaluation results table")
    rows = []
    for i, r in enumerate(raw):
        r = dict(r)
        r.setdefault("key", f"row{i}")
        rows.append(normalise(r))
    return rows, p.parent


def check_schema(out_dir: str | Path) -> dict[str, Any]:
    """``eval.json`` of a folder, refused when unreadable or of another results schema version."""
    meta_path = Path(out_dir) / "eval.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{meta_path} is unreadable ({e}); not an evaluation folder this mnemobot can use") from None
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if version != SCHEMA_VERSION:
        raise UserError(f"{out_dir} holds results of schema version {version}; this mnemobot writes and reads "
                        f"version {SCHEMA_VERSION} (use another --out, or an older mnemobot to read it)")
    return meta
