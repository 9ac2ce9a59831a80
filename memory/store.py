"""The persistent episodic store: memory's op log, graph snapshots, episodes and events in SQLite.

Long-term memory changes only through :class:`~mnemobot.memory.ops.MemoryOp` (event sourcing),
so what must survive a restart is the **op log**; **snapshots** of the whole graph only shorten
the replay (reload = newest snapshot + the ops after it). Alongside live **episodes** (one per
task run) and **events** (instructions, plans, skill results, anomalies...) that the agent can
query later ("when did I last see the mug?", "what failed in episode 3?").

Schema (version :attr:`EpisodicStore.SCHEMA_VERSION`, kept in ``PRAGMA user_version``; the file
is marked with ``PRAGMA application_id`` = ``0x4D4E4D42`` ("MNMB"))::

    meta      (key TEXT PRIMARY KEY, value TEXT)            -- creation and migration stamps
    episodes  (id INTEGER PRIMARY KEY AUTOINCREMENT, meta TEXT, outcome TEXT,
               started REAL, ended REAL)                     -- JSON meta/outcome, wall-clock s
    ops       (seq INTEGER PRIMARY KEY, time REAL, episode INTEGER, kind TEXT, target TEXT,
               key TEXT, cause TEXT, data TEXT)              -- the append-only log, JSON data
    snapshots (seq INTEGER PRIMARY KEY, time REAL, created REAL, data BLOB)
                                                             -- zlib(JSON graph state) after op seq
    events    (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, episode INTEGER, kind TEXT,
               object TEXT, place TEXT, data TEXT, text TEXT)            -- v2
    events_fts                                               -- v2, FTS5 over events.text (if built in)
    indexes   ops(time), ops(key, seq), ops(episode, seq), events(time), events(object, time),
              events(place, time), events(episode, time), events(kind, time)          -- v2

Episode ``0`` means "before any episode", so ``ops.episode``/``events.episode`` carry no foreign
key. Schema changes are migrations ``v -> v+1`` (:data:`_MIGRATIONS`), each applied in its own
transaction; a store from an older version is first copied to ``<path>.v<N>.bak`` with the
SQLite backup API and then upgraded on open. A failed migration rolls back, so the file stays
at its old version with its data, and raises :class:`StoreError` naming the step.

**Crash safety.** The database runs in WAL mode and every write (:meth:`EpisodicStore.append`,
:meth:`~EpisodicStore.save_snapshot`, episode changes) is one ``BEGIN IMMEDIATE ... COMMIT``
transaction. A commit appends the transaction's pages to the ``-wal`` file, the last frame
marked as a commit frame, every frame checksummed and salted; on the next open, SQLite replays
only the frames up to the last complete commit frame. A process killed at any instant (even
inside a commit or a checkpoint, which copies committed frames into the main file and can be
redone) therefore leaves every earlier transaction complete and the interrupted one absent:
a batch of ops and its events are stored together or not at all, and the log never has a
hole. ``synchronous=NORMAL`` skips the fsync at each commit (the WAL is synced at checkpoints
only): the written frames live in the operating system's page cache, which outlives the
process, so a process kill loses nothing that was committed; only a power loss or an
operating-system crash can lose the last commits (never consistency). Pass ``durable=True`` for
``synchronous=FULL``, which fsyncs the WAL at every commit and survives power loss too, at the
price of one fsync per write. Snapshots are inserted and pruned (the newest two are kept) in one
transaction, so a complete snapshot always exists once one was written; if the newest cannot be
decoded, :meth:`~EpisodicStore.load` falls back to the older one, and the log (never pruned)
still holds every op.

**Opening is careful with the user's files.** Before SQLite touches a file for writing, its
header is checked in Python and then inspected through a read-only connection
(``immutable=1`` when no ``-wal`` exists, so inspecting creates nothing next to it; with a hot
rollback ``-journal``, on a rolled-back copy in a temporary folder):
``application_id``, ``user_version``, tables and ``PRAGMA quick_check``. Any problem (not
SQLite, corrupt or truncated, another program's database, a newer schema) raises
:class:`StoreError` and leaves the file byte-for-byte unchanged with no new files beside it.
``quick_check`` reads the whole file, so opening costs time proportional to the store's size.

**Concurrency.** One writer process at a time; any number of readers may open the same file with
``readonly=True`` while it writes (WAL readers never block the writer and see every committed
transaction). Use one :class:`EpisodicStore` per thread. A reader of a store that no writer
holds open leaves its ``-wal``/``-shm`` files in place (SQLite needs them to read a WAL
database); the next writer removes them when it closes.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import re
import shutil
import sqlite3
import stat
import tempfile
import time as _time
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import quote

from mnemobot import __version__
from mnemobot.memory.ops import MemoryOp, OpKind, json_safe

__all__ = ["APPLICATION_ID", "EpisodicStore", "Event", "SchemaTooNewError", "StoreError"]

_log = logging.getLogger(__name__)

APPLICATION_ID = 0x4D4E4D42
"""``PRAGMA application_id`` of a mnemobot memory store ("MNMB")."""

_SQLITE_MAGIC = b"SQLite format 3\x00"
_OP_COLUMNS = "seq, time, episode, kind, target, key, cause, data"
_EVENT_COLUMNS = "id, time, episode, kind, object, place, data"
_SNAPSHOTS_KEPT = 2


class StoreError(Exception):
    """A problem with the memory store; the message names the file and the problem."""


class SchemaTooNewError(StoreError):
    """The store was written by a newer mnemobot whose schema this version cannot read."""


@dataclass(frozen=True)
class Event:
    """Something that happened, worth remembering beside the op log.

    * ``time``: memory clock (s); ``episode``: episode id (0 before any);
    * ``kind``: ``"instruction"``, ``"plan"``, ``"skill"``, ``"anomaly"``...;
    * ``data``: JSON-able details; its strings (with kind, object and place) are searchable
      with ``events(text=...)``;
    * ``object``/``place``: the graph keys it is about, when any (indexed);
    * ``id``: assigned by the store (``None`` before it is stored).
    """

    time: float
    episode: int
    kind: str
    data: dict[str, Any]
    object: str | None = None
    place: str | None = None
    id: int | None = None


# -- schema and migrations ------------------------------------------------------------------------

# The v1 schema exactly as the first release created it (an older file has these tables).
_V1_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE episodes (id INTEGER PRIMARY KEY AUTOINCREMENT, meta TEXT NOT NULL, outcome TEXT,"
    " started REAL NOT NULL, ended REAL)",
    "CREATE TABLE ops (seq INTEGER PRIMARY KEY, time REAL NOT NULL, episode INTEGER NOT NULL,"
    " kind TEXT NOT NULL, target TEXT NOT NULL, key TEXT NOT NULL, cause TEXT NOT NULL,"
    " data TEXT NOT NULL)",
    "CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, time REAL NOT NULL, created REAL NOT NULL,"
    " data BLOB NOT NULL)",
)

_V2_SCHEMA = (
    "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,"
    " episode INTEGER NOT NULL, kind TEXT NOT NULL, object TEXT, place TEXT, data TEXT NOT NULL,"
    " text TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX ops_time ON ops(time)",
    "CREATE INDEX ops_key_seq ON ops(key, seq)",
    "CREATE INDEX ops_episode_seq ON ops(episode, seq)",
    "CREATE INDEX events_time ON events(time)",
    "CREATE INDEX events_object ON events(object, time)",
    "CREATE INDEX events_place ON events(place, time)",
    "CREATE INDEX events_episode ON events(episode, time)",
    "CREATE INDEX events_kind ON events(kind, time)",
)

# External-content FTS5 index over events.text, kept in step by triggers (events are append-only).
_V2_FTS = (
    "CREATE VIRTUAL TABLE events_fts USING fts5(text, content='events', content_rowid='id')",
    "CREATE TRIGGER events_fts_insert AFTER INSERT ON events BEGIN"
    " INSERT INTO events_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER events_fts_delete AFTER DELETE ON events BEGIN"
    " INSERT INTO events_fts(events_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
)

_TABLES = {1: {"meta", "episodes", "ops", "snapshots"}}
_TABLES[2] = _TABLES[1] | {"events"}


def _stamp(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                 (key, json.dumps({"time": _time.time(), "by": f"mnemobot {__version__}"})))


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    """Create the v1 schema in an empty database."""
    for sql in _V1_SCHEMA:
        conn.execute(sql)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    _stamp(conn, "created")


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Add events (with full-text search when FTS5 is built in) and the query indexes."""
    for sql in _V2_SCHEMA:
        conn.execute(sql)
    backwards = conn.execute("SELECT 1 FROM (SELECT time, lag(time) OVER (ORDER BY seq) AS prev FROM ops)"
                             " WHERE time < prev LIMIT 1").fetchone()
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('time_monotone', ?)",
                 ("false" if backwards else "true",))
    if _fts5_available(conn):
        for sql in _V2_FTS:
            conn.execute(sql)
    _stamp(conn, "migrated_v2")


_MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("create the v1 schema (meta, episodes, ops, snapshots)", _migrate_0_to_1),
    ("add events, full-text search and query indexes", _migrate_1_to_2),
]
"""``_MIGRATIONS[v]`` upgrades a store at schema ``v`` to ``v + 1``."""


def _fts5_available(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("CREATE VIRTUAL TABLE temp._mnemobot_fts5_probe USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    conn.execute("DROP TABLE temp._mnemobot_fts5_probe")
    return True


# -- helpers --------------------------------------------------------------------------------------

def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(os.path.abspath(path))}?{query}"


def _sidecars(path: Path) -> list[Path]:
    return [Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-journal")]


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            _log.debug("rollback failed", exc_info=True)


def _finite(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return x


def _integer(value: Any, what: str, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if minimum is not None and n < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {n}")
    return n


def _to_json(value: Any) -> str:
    return json.dumps(json_safe(value), separators=(",", ":"), allow_nan=False)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _event_text(kind: str, obj: str | None, place: str | None, data: Any) -> str:
    """What ``events(text=...)`` searches: kind, object, place and every string in data."""
    return " ".join(s for s in (kind, obj, place, *_strings(data)) if s)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _like_escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- the store ------------------------------------------------------------------------------------

class EpisodicStore:
    """Memory's persistent op log, snapshots, episodes and events in one SQLite file.

    ``create``: make a new store when ``path`` does not exist (or is an empty file);
    ``readonly``: open for queries only (concurrently with a writer); ``timeout_s``: how long
    to wait for another connection's lock; ``durable``: fsync every commit (``synchronous=FULL``)
    so that even a power loss keeps the last commits. Every problem raises :class:`StoreError`.
    """

    SCHEMA_VERSION: ClassVar[int] = len(_MIGRATIONS)

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False,
                 timeout_s: float = 5.0, durable: bool = False) -> None:
        self._path = Path(path)
        self._readonly = bool(readonly)
        self._conn: sqlite3.Connection | None = None
        self._backup_path: Path | None = None
        try:
            self._timeout_s = _finite(timeout_s, "timeout_s")
        except ValueError as exc:
            raise StoreError(f"{self._path}: {exc}") from None
        if self._timeout_s < 0:
            raise StoreError(f"{self._path}: timeout_s must be >= 0, got {timeout_s!r}")
        self._conn = self._open(create=create, durable=durable)
        self._fts = self._check_fts()

    # -- opening ----------------------------------------------------------------------------------
    def _open(self, *, create: bool, durable: bool) -> sqlite3.Connection:
        path = self._path
        try:
            st = path.stat()
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise StoreError(f"{path}: cannot access the memory store: {exc.strerror}") from None
        if st is None:
            if self._readonly:
                raise StoreError(f"{path}: no such memory store (a missing file cannot be opened read-only)")
            if not create:
                raise StoreError(f"{path}: no such memory store (and create=False)")
            if not path.parent.is_dir():
                raise StoreError(f"{path}: cannot create the memory store: directory {path.parent} does not exist")
            return self._connect(version=0, new_file=True, durable=durable)
        if stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{path}: is a directory, not a memory store file")
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{path}: is not a regular file, not a memory store")
        if not self._readonly and not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"{path}: no permission to read and write it (open with readonly=True to read)")
        version = self._inspect()
        if version == 0:
            if self._readonly:
                raise StoreError(f"{path}: is an empty database, not an initialised memory store")
            if not create:
                raise StoreError(f"{path}: is an empty database, not an initialised memory store "
                                 "(pass create=True to initialise it)")
        elif version < self.SCHEMA_VERSION and self._readonly:
            raise StoreError(f"{path}: schema v{version} must be upgraded to v{self.SCHEMA_VERSION} "
                             "before it can be read; open it once without readonly=True")
        return self._connect(version=version, new_file=False, durable=durable)

    @contextmanager
    def _inspection(self) -> Iterator[sqlite3.Connection]:
        """A read-only look at the file that changes nothing and leaves no new file beside it."""
        path = self._path
        journal = Path(f"{path}-journal")
        if journal.exists() and journal.stat().st_size > 0:
            # A hot rollback journal (a crash while switching a new file to WAL, or an old store in
            # rollback mode): reading needs the journal rolled back, a write. Do it on a copy in a
            # temporary folder, so an unusable file is still left exactly as it was.
            with tempfile.TemporaryDirectory(prefix="mnemobot-store-") as tmp:
                copy = Path(tmp) / path.name
                shutil.copyfile(path, copy)
                shutil.copyfile(journal, f"{copy}-journal")
                conn = sqlite3.connect(_uri(copy, mode="rw"), uri=True, isolation_level=None,
                                       timeout=self._timeout_s)
                try:
                    yield conn
                finally:
                    conn.close()
            return
        existed = {p for p in _sidecars(path) if p.exists()}
        # Without a -wal the main file is the whole database: read it as immutable, which creates
        # no -shm/-wal beside it. Otherwise read it normally so that the WAL is applied.
        has_wal = Path(f"{path}-wal") in existed
        uri = _uri(path, mode="ro") if has_wal else _uri(path, mode="ro", immutable="1")
        conn_: sqlite3.Connection | None = None
        try:
            conn_ = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=self._timeout_s)
            yield conn_
        except BaseException:
            if conn_ is not None:
                conn_.close()
                conn_ = None
            for p in _sidecars(path):
                if p not in existed:
                    p.unlink(missing_ok=True)
            raise
        finally:
            if conn_ is not None:
                conn_.close()

    def _inspect(self) -> int:
        """Schema version of an existing file (0: empty, to be initialised); raises if unusable."""
        path = self._path
        try:
            has_wal = Path(f"{path}-wal").stat().st_size > 0
        except OSError:
            has_wal = False
        try:
            with path.open("rb") as f:
                header = f.read(100)
        except OSError as exc:
            raise StoreError(f"{path}: cannot read the memory store: {exc.strerror}") from None
        try:
            hot_journal = Path(f"{path}-journal").stat().st_size > 0
        except OSError:
            hot_journal = False
        if not hot_journal:  # (a hot journal may hold the real page 1: SQLite must roll it back first)
            if not header and not has_wal:
                return 0
            if header and (len(header) < 100 or not header.startswith(_SQLITE_MAGIC)):
                raise StoreError(f"{path}: not an SQLite database (unrecognised file header), "
                                 "so not a mnemobot memory store")
        try:
            with self._inspection() as conn:
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if app_id != APPLICATION_ID:
                    if app_id == 0 and version == 0 and not tables:
                        return 0
                    detail = f"application_id {app_id:#x}" if app_id else "no application_id"
                    names = ", ".join(sorted(tables)[:5]) or "none"
                    raise StoreError(f"{path}: not a mnemobot memory store ({detail}; tables: {names})")
                if version > self.SCHEMA_VERSION:
                    raise SchemaTooNewError(f"{path}: written by a newer mnemobot (schema v{version}); "
                                            f"this version reads up to v{self.SCHEMA_VERSION}")
                problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise StoreError(f"{path}: the database is corrupt (quick_check: {'; '.join(problems)})")
                if version < 1:
                    raise StoreError(f"{path}: a memory store without a schema version is damaged")
                missing = _TABLES[version] - tables
                if missing:
                    raise StoreError(f"{path}: the memory store is damaged: missing table(s) "
                                     f"{', '.join(sorted(missing))} of schema v{version}")
                if version < self.SCHEMA_VERSION and not self._readonly:
                    self._backup(conn, version)
                return int(version)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: corrupt or truncated SQLite file ({exc}); not opened") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot inspect the memory store: {exc}") from None

    def _backup(self, conn: sqlite3.Connection, version: int) -> Path:
        """Copy the store (SQLite backup API) to ``<path>.v<version>.bak`` before migrating."""
        target = Path(f"{self._path}.v{version}.bak")
        tmp = Path(f"{target}.tmp")
        try:
            tmp.unlink(missing_ok=True)
            dst = sqlite3.connect(tmp)
            try:
                conn.backup(dst)
            finally:
                dst.close()
            os.replace(tmp, target)
            self._backup_path = target
        except (OSError, sqlite3.Error) as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self._path}: cannot back up schema v{version} to {target} before "
                             f"upgrading ({exc}); the store was not changed") from None
        return target

    def _connect(self, *, version: int, new_file: bool, durable: bool) -> sqlite3.Connection:
        path = self._path
        mode = "ro" if self._readonly else ("rwc" if new_file else "rw")
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(_uri(path, mode=mode), uri=True, isolation_level=None,
                                   timeout=self._timeout_s)
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout_s * 1000)}")
            if not self._readonly:
                journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(journal).lower() != "wal":
                    raise StoreError(f"{path}: cannot switch the store to WAL mode (journal_mode={journal})")
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._readonly:
                self._migrate(conn)
            return conn
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if new_file:
                for p in (path, *_sidecars(path)):
                    p.unlink(missing_ok=True)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{path}: cannot open the memory store: {exc}") from None
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply the pending migrations, each in its own transaction.

        A new store (version 0) is created by all steps in ONE transaction, so a crash while
        creating it leaves an empty file, which the next open initialises again.
        """
        while True:
            conn.execute("BEGIN IMMEDIATE")
            version = -1
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= self.SCHEMA_VERSION:
                    conn.execute("COMMIT")
                    return
                steps = range(self.SCHEMA_VERSION) if version == 0 else (version,)
                for step in steps:
                    version = step
                    _MIGRATIONS[step][1](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            except Exception as exc:
                _rollback(conn)
                name = _MIGRATIONS[version][0] if 0 <= version < len(_MIGRATIONS) else "?"
                backup = f"; a copy of the original is at {self._backup_path}" if self._backup_path else ""
                raise StoreError(f"{self._path}: schema migration v{version}->v{version + 1} ({name}) failed: "
                                 f"{exc}; rolled back, the store is still at schema v{version}{backup}") from exc
            except BaseException:
                _rollback(conn)
                raise

    def _check_fts(self) -> bool:
        conn = self._live()
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events_fts'").fetchone() is not None
        if has:
            try:
                conn.execute("SELECT rowid FROM events_fts LIMIT 0").fetchall()
            except sqlite3.OperationalError as exc:
                self.close()
                raise StoreError(f"{self._path}: the store uses full-text search (FTS5), which this "
                                 f"sqlite3 ({sqlite3.sqlite_version}) lacks: {exc}") from None
        return has

    # -- basics -----------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def full_text(self) -> bool:
        """Whether ``events(text=...)`` uses the FTS5 index (else a LIKE scan)."""
        return self._fts

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the file (idempotent). The last connection checkpoints and removes the -wal."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> EpisodicStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("read-only" if self._readonly else "open")
        return f"EpisodicStore({str(self._path)!r}, {state})"

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self._path}: the memory store is closed")
        return self._conn

    def _write(self, what: str, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``body`` in one ``BEGIN IMMEDIATE ... COMMIT`` transaction (all or nothing)."""
        conn = self._live()
        if self._readonly:
            raise StoreError(f"{self._path}: opened read-only; cannot {what}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            note = f" (another writer holds the store; waited {self._timeout_s:g} s)" if busy else ""
            raise StoreError(f"{self._path}: cannot {what}: {exc}{note}") from None
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except StoreError:
            _rollback(conn)
            raise
        except Exception as exc:
            _rollback(conn)
            raise StoreError(f"{self._path}: cannot {what}: {exc}") from exc
        except BaseException:
            _rollback(conn)
            raise
        return result

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._live()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: query failed: {exc}") from None

    # -- episodes ---------------------------------------------------------------------------------
    def begin_episode(self, meta: dict[str, Any]) -> int:
        """Record the start of an episode (``meta``: task, seed, ...); returns its id (from 1)."""
        if not isinstance(meta, dict):
            raise StoreError(f"{self._path}: episode meta must be a dict, got {type(meta).__name__}")
        try:
            meta_json = _to_json(meta)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self._path}: episode meta cannot be stored: {exc}") from None

        def body(conn: sqlite3.Connection) -> int:
            cur = conn.execute("INSERT INTO episodes(meta, started) VALUES (?, ?)", (meta_json, _time.time()))
            return int(cur.lastrowid or 0)

        return int(self._write("begin an episode", body))

    def end_episode(self, episode: int, outcome: dict[str, Any]) -> None:
        """Record how ``episode`` ended (``outcome``: success, reason, ...); once per episode."""
        if not isinstance(outcome, dict):
            raise StoreError(f"{self._path}: episode outcome must be a dict, got {type(outcome).__name__}")
        try:
            ep = _integer(episode, "episode", 1)
            outcome_json = _to_json(outcome)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self._path}: cannot end episode {episode!r}: {exc}") from None

        def body(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE episodes SET outcome = ?, ended = ? WHERE id = ? AND ended IS NULL",
                               (outcome_json, _time.time(), ep))
            if cur.rowcount == 0:
                known = conn.execute("SELECT 1 FROM episodes WHERE id = ?", (ep,)).fetchone()
                raise StoreError(f"{self._path}: episode {ep} " + ("has already ended" if known else "does not exist"))

        self._write(f"end episode {ep}", body)

    def episodes(self) -> list[dict[str, Any]]:
        """All episodes in order: ``id``, ``meta``, ``outcome`` (None while running), ``started``,
        ``ended`` (wall-clock seconds; ``ended`` None while running)."""
        rows = self._read("SELECT id, meta, outcome, started, ended FROM episodes ORDER BY id")
        return [{"id": int(i), "meta": json.loads(m), "outcome": json.loads(o) if o is not None else None,
                 "started": float(s), "ended": float(e) if e is not None else None}
                for i, m, o, s, e in rows]

    # -- appending --------------------------------------------------------------------------------
    def _op_rows(self, ops: Iterable[MemoryOp]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        prev: int | None = None
        for op in ops:
            if not isinstance(op, MemoryOp):
                raise StoreError(f"{self._path}: append() takes MemoryOp ops, got {type(op).__name__}")
            try:
                seq = _integer(op.seq, "op seq", 1)
                _finite(op.time, f"op {seq} time")
                _integer(op.episode, f"op {seq} episode", 0)
                if not isinstance(op.kind, OpKind):
                    raise ValueError(f"op {seq} kind must be an OpKind, got {op.kind!r}")
                row = op.to_row()
            except (TypeError, ValueError) as exc:
                raise StoreError(f"{self._path}: cannot store op {op.seq!r} ({op.key!r}): {exc}") from None
            if prev is not None and seq <= prev:
                raise StoreError(f"{self._path}: op seqs must increase within a batch: {seq} after {prev}")
            prev = seq
            rows.append(row)
        return rows

    def _event_rows(self, events: Iterable[Event]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for ev in events:
            if not isinstance(ev, Event):
                raise StoreError(f"{self._path}: append() takes Event events, got {type(ev).__name__}")
            try:
                t = _finite(ev.time, "event time")
                ep = _integer(ev.episode, "event episode", 0)
                if not isinstance(ev.kind, str) or not ev.kind:
                    raise ValueError(f"event kind must be a non-empty string, got {ev.kind!r}")
                if not isinstance(ev.data, dict):
                    raise ValueError(f"event data must be a dict, got {type(ev.data).__name__}")
                for name, value in (("object", ev.object), ("place", ev.place)):
                    if value is not None and not isinstance(value, str):
                        raise ValueError(f"event {name} must be a string or None, got {value!r}")
                data = json_safe(ev.data)
                data_json = json.dumps(data, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"{self._path}: cannot store {ev.kind!r} event: {exc}") from None
            rows.append((t, ep, ev.kind, ev.object, ev.place, data_json,
                         _event_text(ev.kind, ev.object, ev.place, data)))
        return rows

    def append(self, ops: Sequence[MemoryOp] = (), events: Sequence[Event] = ()) -> None:
        """Append ops (seqs increasing, after the log's last) and events in ONE transaction.

        Either everything is stored or, on any error (raised as :class:`StoreError`), nothing.
        Gaps in seq are allowed; repeats and going backwards are not.
        """
        op_rows = self._op_rows(ops)
        event_rows = self._event_rows(events)
        self._live()
        if not op_rows and not event_rows:
            return

        def body(conn: sqlite3.Connection) -> None:
            if op_rows:
                last, last_time = conn.execute("SELECT seq, time FROM ops ORDER BY seq DESC LIMIT 1").fetchone() \
                    or (0, -math.inf)
                if op_rows[0][0] <= last:
                    raise StoreError(f"{self._path}: op seq {op_rows[0][0]} does not follow the log's last "
                                     f"seq {last}; ops are appended once, in seq order")
                times = [last_time, *(row[1] for row in op_rows)]
                if any(times[i + 1] < times[i] for i in range(len(times) - 1)):
                    # The memory clock went backwards: time order no longer equals seq order.
                    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('time_monotone', 'false')")
                conn.executemany(f"INSERT INTO ops({_OP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", op_rows)
            if event_rows:
                conn.executemany("INSERT INTO events(time, episode, kind, object, place, data, text)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?)", event_rows)

        self._write("append", body)

    def append_many(self, batches: Iterable[tuple[Sequence[MemoryOp], Sequence[Event]]]) -> None:
        """Append many ``(ops, events)`` batches in one transaction (bulk loading, benchmarks)."""
        ops: list[MemoryOp] = []
        events: list[Event] = []
        for batch_ops, batch_events in batches:
            ops.extend(batch_ops)
            events.extend(batch_events)
        self.append(ops, events)

    # -- snapshots --------------------------------------------------------------------------------
    def save_snapshot(self, seq: int, time: float, state: dict[str, Any]) -> None:
        """Store the graph ``state`` after op ``seq`` (zlib-compressed JSON); keep the newest two.

        ``seq`` must not exceed the log's last seq (append the ops first), so that
        :meth:`load` = snapshot + the ops after it is always the full state.
        """
        if not isinstance(state, dict):
            raise StoreError(f"{self._path}: a snapshot state must be a dict, got {type(state).__name__}")
        try:
            n = _integer(seq, "snapshot seq", 0)
            t = _finite(time, "snapshot time")
            blob = zlib.compress(_to_json(state).encode("utf-8"), 6)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self._path}: cannot store the snapshot at seq {seq!r}: {exc}") from None

        def body(conn: sqlite3.Connection) -> None:
            last = conn.execute("SELECT max(seq) FROM ops").fetchone()[0] or 0
            if n > last:
                raise StoreError(f"{self._path}: snapshot at seq {n} is ahead of the log (last seq {last}); "
                                 "append its ops first")
            conn.execute("INSERT OR REPLACE INTO snapshots(seq, time, created, data) VALUES (?, ?, ?, ?)",
                         (n, t, _time.time(), blob))
            conn.execute("DELETE FROM snapshots WHERE seq NOT IN "
                         "(SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)", (_SNAPSHOTS_KEPT,))

        self._write(f"save the snapshot at seq {n}", body)

    def load(self) -> tuple[dict[str, Any] | None, list[MemoryOp]]:
        """The newest readable snapshot (None if none) and the ops after it, ascending."""
        conn = self._live()
        try:
            conn.execute("BEGIN")  # one read transaction: snapshot and tail from the same commit
            try:
                state: dict[str, Any] | None = None
                after = 0
                for seq, blob in conn.execute("SELECT seq, data FROM snapshots ORDER BY seq DESC").fetchall():
                    try:
                        decoded = json.loads(zlib.decompress(blob).decode("utf-8"))
                        if not isinstance(decoded, dict):
                            raise ValueError(f"state is a {type(decoded).__name__}, not a dict")
                    except (zlib.error, ValueError) as exc:
                        _log.warning("%s: snapshot at seq %d is unreadable (%s); using an older one",
                                     self._path, seq, exc)
                        continue
                    state, after = decoded, int(seq)
                    break
                rows = conn.execute(f"SELECT {_OP_COLUMNS} FROM ops WHERE seq > ? ORDER BY seq", (after,)).fetchall()
            finally:
                _rollback(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot load memory: {exc}") from None
        return state, [MemoryOp.from_row(r) for r in rows]

    # -- queries ----------------------------------------------------------------------------------
    def _ops_query(self, *, since: float | None = None, until: float | None = None, key: str | None = None,
                   episode: int | None = None, kinds: Collection[str] | None = None,
                   causes: Collection[str] | None = None, limit: int | None = None,
                   newest_first: bool = False) -> tuple[str, list[Any]] | None:
        """SQL and parameters of :meth:`ops` (None when the answer is empty by construction)."""
        where: list[str] = []
        params: list[Any] = []
        try:
            if key is not None:
                where.append("key = ?")
                params.append(str(key))
            if episode is not None:
                where.append("episode = ?")
                params.append(_integer(episode, "episode"))
            for column, bound, op in (("time", since, ">="), ("time", until, "<=")):
                if bound is not None:
                    if math.isnan(float(bound)):
                        raise ValueError("since/until must not be NaN")
                    where.append(f"{column} {op} ?")
                    params.append(float(bound))
            for column, values in (("kind", kinds), ("cause", causes)):
                if values is not None:
                    if isinstance(values, str):
                        values = [values]
                    vals = [OpKind(v).value for v in values] if column == "kind" else [str(v) for v in values]
                    if not vals:
                        return None
                    where.append(f"{column} IN ({', '.join('?' * len(vals))})")
                    params.extend(vals)
            n = None if limit is None else _integer(limit, "limit", 0)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self._path}: bad ops() query: {exc}") from None
        if n == 0:
            return None
        order = "seq"
        hint = ""
        if (since is not None or until is not None) and key is None and episode is None:
            # Walk the time index rather than the whole table. While the memory clock has never
            # gone backwards (tracked on append), (time, seq) order is seq order and a limited
            # query reads only `limit` rows; otherwise the window is read and sorted by seq.
            hint = " INDEXED BY ops_time"
            if self._time_monotone():
                order = "time, seq"
        sql = f"SELECT {_OP_COLUMNS} FROM ops{hint}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if newest_first:
            order = order.replace(",", " DESC,") + " DESC"
        sql += f" ORDER BY {order}"
        if n is not None:
            sql += " LIMIT ?"
            params.append(n)
        return sql, params

    def _time_monotone(self) -> bool:
        row = self._read("SELECT value FROM meta WHERE key = 'time_monotone'")
        return bool(row) and row[0][0] == "true"

    def ops(self, *, since: float | None = None, until: float | None = None, key: str | None = None,
            episode: int | None = None, kinds: Collection[str] | None = None,
            causes: Collection[str] | None = None, limit: int | None = None,
            newest_first: bool = False) -> list[MemoryOp]:
        """Logged ops in seq order (``newest_first``: descending), filtered by all given criteria.

        ``since``/``until``: memory time bounds, both inclusive; ``key``: a node id or edge key;
        ``episode``; ``kinds``: :class:`OpKind` values; ``causes``; ``limit``: at most this many
        (the first ones in the chosen order). Key, episode and time filters use indexes.
        """
        conn = self._live()
        conn.execute("BEGIN")  # the plan's clock-order check and the query see the same commit
        try:
            query = self._ops_query(since=since, until=until, key=key, episode=episode, kinds=kinds,
                                    causes=causes, limit=limit, newest_first=newest_first)
            rows = [] if query is None else self._read(*query)
        finally:
            _rollback(conn)
        return [MemoryOp.from_row(r) for r in rows]

    def _events_query(self, *, since: float | None = None, until: float | None = None, kind: str | None = None,
                      episode: int | None = None, object: str | None = None, place: str | None = None,
                      text: str | None = None, limit: int | None = None,
                      newest_first: bool = False) -> tuple[str, list[Any]] | None:
        """SQL and parameters of :meth:`events` (None when the answer is empty by construction)."""
        where: list[str] = []
        params: list[Any] = []
        try:
            for column, value in (("object", object), ("place", place), ("kind", kind)):
                if value is not None:
                    where.append(f"{column} = ?")
                    params.append(str(value))
            if episode is not None:
                where.append("episode = ?")
                params.append(_integer(episode, "episode"))
            for bound, op in ((since, ">="), (until, "<=")):
                if bound is not None:
                    if math.isnan(float(bound)):
                        raise ValueError("since/until must not be NaN")
                    where.append(f"time {op} ?")
                    params.append(float(bound))
            if text is not None:
                words = _words(str(text))
                if not words:
                    raise ValueError(f"text {text!r} has no words to search for")
                if self._fts:
                    where.append("id IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)")
                    params.append(" AND ".join(f'"{w}"*' for w in words))
                else:
                    for w in words:
                        where.append("text LIKE ? ESCAPE '\\'")
                        params.append(f"%{_like_escape(w)}%")
            n = None if limit is None else _integer(limit, "limit", 0)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{self._path}: bad events() query: {exc}") from None
        if n == 0:
            return None
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, id DESC" if newest_first else " ORDER BY time, id"
        if n is not None:
            sql += " LIMIT ?"
            params.append(n)
        return sql, params

    def events(self, *, since: float | None = None, until: float | None = None, kind: str | None = None,
               episode: int | None = None, object: str | None = None, place: str | None = None,
               text: str | None = None, limit: int | None = None, newest_first: bool = False) -> list[Event]:
        """Stored events in time order (``newest_first``: descending), filtered by all criteria.

        ``since``/``until`` inclusive; ``object``/``place``/``kind``/``episode`` exact (indexed);
        ``text``: every word must occur in the event's text (kind, object, place and the strings
        of its data), case-insensitively: with FTS5 as a word or word prefix, else as a substring.
        """
        query = self._events_query(since=since, until=until, kind=kind, episode=episode, object=object,
                                   place=place, text=text, limit=limit, newest_first=newest_first)
        if query is None:
            self._live()
            return []
        return [Event(time=float(t), episode=int(ep), kind=str(k), data=json.loads(d), object=o, place=p, id=int(i))
                for i, t, ep, k, o, p, d in self._read(*query)]

    def last_seq(self) -> int:
        """The last logged op's seq (0 when the log is empty)."""
        return int(self._read("SELECT max(seq) FROM ops")[0][0] or 0)

    def last_time(self) -> float:
        """The latest memory time of any op or event (0.0 when empty)."""
        row = self._read("SELECT (SELECT max(time) FROM ops), (SELECT max(time) FROM events)")[0]
        times = [float(t) for t in row if t is not None]
        return max(times) if times else 0.0

    def counts(self) -> dict[str, int]:
        """Number of ``ops``, ``events``, ``episodes`` and ``snapshots`` stored."""
        row = self._read("SELECT (SELECT count(*) FROM ops), (SELECT count(*) FROM events),"
                         " (SELECT count(*) FROM episodes), (SELECT count(*) FROM snapshots)")[0]
        return dict(zip(("ops", "events", "episodes", "snapshots"), (int(x) for x in row), strict=True))
