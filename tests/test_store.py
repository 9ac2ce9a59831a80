"""The episodic store: round trips, queries and their indexes, migrations, bad files left
untouched, concurrent readers, and a real crash test (a writer process killed with SIGKILL)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from mnemobot.memory import store as store_module
from mnemobot.memory.ops import MemoryOp, OpKind
from mnemobot.memory.store import APPLICATION_ID, EpisodicStore, Event, SchemaTooNewError, StoreError

WRITER = Path(__file__).with_name("store_crash_writer.py")


def op(seq: int, time: float | None = None, key: str = "obj:1", kind: OpKind = OpKind.UPDATE,
       cause: str = "observed", episode: int = 0, data: dict[str, Any] | None = None) -> MemoryOp:
    return MemoryOp(seq, float(seq) if time is None else time, episode, kind, "node", key, cause,
                    {"seq": seq} if data is None else data)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its hash (to prove nothing was created or changed)."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EpisodicStore]:
    with EpisodicStore(tmp_path / "memory.db") as s:
        yield s


# -- creation, pragmas, round trips ---------------------------------------------------------------

def test_new_store_is_marked_versioned_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with EpisodicStore(path) as s:
        conn = s._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert s.counts() == {"ops": 0, "events": 0, "episodes": 0, "snapshots": 0}
        assert s.last_seq() == 0 and s.last_time() == 0.0
        assert s.load() == (None, [])
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID == 0x4D4E4D42
    assert raw.execute("PRAGMA user_version").fetchone()[0] == EpisodicStore.SCHEMA_VERSION == 2
    raw.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.db"]  # closing removed -wal/-shm
    with EpisodicStore(path, durable=True, timeout_s=0.25) as s:
        assert s._conn is not None
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 250


def test_round_trip_of_ops_events_snapshots_and_episodes(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    ops = [MemoryOp(1, 0.5, 1, OpKind.ADD, "node", "obj:1", "observed",
                    {"label": "mug", "position": np.array([1.0, 2.0, 0.75]), "n_obs": np.int64(3),
                     "nested": {"h": [[0.5, 1, "table"]], "ok": True, "none": None}}),
           MemoryOp(2, 0.5, 1, OpKind.ADD, "edge", "obj:1|on|place:table", "relation", {}),
           MemoryOp(3, 1.25, 1, OpKind.NOOP, "node", "obj:1", "confirmed", {"last_seen": 1.25}),
           MemoryOp(4, 2.0, 1, OpKind.DELETE, "edge", "obj:1|on|place:table", "moved", {})]
    events = [Event(0.0, 1, "instruction", {"text": "bring the red mug to the kitchen"}),
              Event(2.0, 1, "skill", {"skill": "pick", "success": False, "reason": "grasp slipped"},
                    object="obj:1", place="place:table")]
    with EpisodicStore(path) as s:
        ep = s.begin_episode({"task": "fetch", "seed": 3})
        assert ep == 1
        s.append(ops, events)
        s.save_snapshot(4, 2.0, {"nodes": {"obj:1": {"label": "mug"}}, "seq": 4})
        s.end_episode(ep, {"success": True, "steps": 12})
        ep2 = s.begin_episode({"task": "place"})
    with EpisodicStore(path) as s:
        got = s.ops()
        assert [o.to_dict() for o in got] == [o.to_dict() for o in ops]
        assert got[0].data["position"] == [1.0, 2.0, 0.75] and got[0].data["n_obs"] == 3
        assert got[1].data == {} and got[1].kind is OpKind.ADD
        stored = s.events()
        assert [e.id for e in stored] == [1, 2]
        assert [(e.time, e.episode, e.kind, e.data, e.object, e.place) for e in stored] == \
            [(e.time, e.episode, e.kind, e.data, e.object, e.place) for e in events]
        assert s.load() == ({"nodes": {"obj:1": {"label": "mug"}}, "seq": 4}, [])
        episodes = s.episodes()
        assert [e["id"] for e in episodes] == [ep, ep2]
        assert episodes[0]["meta"] == {"task": "fetch", "seed": 3}
        assert episodes[0]["outcome"] == {"success": True, "steps": 12}
        assert episodes[0]["ended"] >= episodes[0]["started"] > 0
        assert episodes[1]["outcome"] is None and episodes[1]["ended"] is None
        assert s.counts() == {"ops": 4, "events": 2, "episodes": 2, "snapshots": 1}
        assert s.last_seq() == 4 and s.last_time() == 2.0
        with pytest.raises(StoreError, match="episode 1 has already ended"):
            s.end_episode(ep, {})
        with pytest.raises(StoreError, match="episode 99 does not exist"):
            s.end_episode(99, {})


def test_load_is_newest_snapshot_plus_tail_and_keeps_two_snapshots(store: EpisodicStore) -> None:
    store.append([op(i) for i in range(1, 11)])
    assert store.load() == (None, [op(i) for i in range(1, 11)])
    store.save_snapshot(5, 5.0, {"at": 5})
    store.save_snapshot(8, 8.0, {"at": 8})
    store.append([op(11), op(12)])
    state, tail = store.load()
    assert state == {"at": 8} and [o.seq for o in tail] == [9, 10, 11, 12]
    store.save_snapshot(12, 12.0, {"at": 12})
    assert store.counts()["snapshots"] == 2
    assert store.load() == ({"at": 12}, [])
    with pytest.raises(StoreError, match="ahead of the log"):
        store.save_snapshot(13, 13.0, {"at": 13})
    with pytest.raises(StoreError, match="snapshot"):
        store.save_snapshot(12, 12.0, {"bad": math.nan})
    # A damaged newest snapshot: load() falls back to the older one and replays more of the log.
    conn = store._conn
    assert conn is not None
    conn.execute("UPDATE snapshots SET data = ? WHERE seq = 12", (b"not zlib",))
    state, tail = store.load()
    assert state == {"at": 8} and [o.seq for o in tail] == [9, 10, 11, 12]
    stored = conn.execute("SELECT data FROM snapshots WHERE seq = 8").fetchone()[0]
    assert json.loads(zlib.decompress(stored)) == {"at": 8}


def test_append_is_all_or_nothing_and_validates(store: EpisodicStore) -> None:
    store.append([op(1), op(2)], [Event(1.0, 0, "note", {"a": 1})])
    before = store.counts()
    bad_batches: list[tuple[list[MemoryOp], list[Event], str]] = [
        ([op(3), op(4, data={"x": math.nan})], [], "non-finite"),
        ([op(3), op(4, data={"x": [1.0, math.inf]})], [], "non-finite"),
        ([op(3, time=math.nan)], [], "finite"),
        ([op(2), op(3)], [], "does not follow the log's last seq 2"),
        ([op(4), op(3)], [], "must increase within a batch"),
        ([op(3)], [Event(3.0, 0, "note", {"x": {1, 2}})], "cannot store 'note' event"),
        ([op(3)], [Event(math.inf, 0, "note", {})], "finite"),
        ([op(3)], [Event(3.0, 0, "", {})], "non-empty"),
        ([MemoryOp(3, 3.0, 0, "ADD", "node", "k", "c", {})], [], "OpKind"),  # type: ignore[arg-type]
    ]
    for ops, events, message in bad_batches:
        with pytest.raises(StoreError, match=message):
            store.append(ops, events)
        assert store.counts() == before
    # A failure inside the transaction (after the ops went in) also leaves nothing behind.
    conn = store._conn
    assert conn is not None
    conn.execute("CREATE TRIGGER no_boom BEFORE INSERT ON events WHEN new.kind = 'boom'"
                 " BEGIN SELECT RAISE(ABORT, 'boom refused'); END")
    with pytest.raises(StoreError, match="boom refused"):
        store.append([op(3), op(4)], [Event(4.0, 0, "boom", {})])
    assert store.counts() == before and store.last_seq() == 2
    store.append([op(5)])  # gaps are allowed, order is not negotiable
    store.append_many([([op(6), op(7)], [Event(7.0, 0, "note", {})]), ([op(9)], [])])
    assert [o.seq for o in store.ops()] == [1, 2, 5, 6, 7, 9]
    store.append()  # nothing to do
    with pytest.raises(StoreError, match="MemoryOp"):
        store.append([{"seq": 10}])  # type: ignore[list-item]


def test_close_is_idempotent_and_a_closed_store_refuses_work(tmp_path: Path) -> None:
    s = EpisodicStore(tmp_path / "memory.db")
    s.append([op(1)])
    s.close()
    s.close()
    assert s.closed
    for call in (lambda: s.append([op(2)]), lambda: s.append(), s.ops, s.events, s.load, s.last_seq,
                 s.counts, lambda: s.ops(limit=0), lambda: s.begin_episode({}),
                 lambda: s.save_snapshot(1, 1.0, {})):
        with pytest.raises(StoreError, match="closed"):
            call()
    with EpisodicStore(tmp_path / "memory.db") as s2:
        assert s2.last_seq() == 1
    assert s2.closed


def test_a_second_writer_times_out_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with EpisodicStore(path, timeout_s=0.05) as s:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        t0 = time.perf_counter()
        with pytest.raises(StoreError, match="another writer"):
            s.append([op(1)])
        assert time.perf_counter() - t0 < 2.0
        other.execute("ROLLBACK")
        other.close()
        s.append([op(1)])
        assert s.last_seq() == 1


# -- queries --------------------------------------------------------------------------------------

def _log(monotone: bool) -> list[MemoryOp]:
    rng = random.Random(7)
    ops = []
    t = 0.0
    for seq in range(1, 401):
        t += rng.choice((0.0, 0.5, 1.0))
        if not monotone and seq % 97 == 0:
            t -= 30.0  # the memory clock jumps back
        ops.append(op(seq, time=t, key=f"obj:{rng.randrange(12)}", kind=rng.choice(list(OpKind)),
                      cause=rng.choice(("observed", "moved", "not_seen")), episode=seq // 100))
    return ops


@pytest.mark.parametrize("monotone", [True, False], ids=["clock-monotone", "clock-jumps-back"])
def test_ops_queries_match_a_plain_filter(tmp_path: Path, monotone: bool) -> None:
    ops = _log(monotone)
    with EpisodicStore(tmp_path / "memory.db") as s:
        s.append(ops[:200])
        s.append(ops[200:])
        assert s._time_monotone() is monotone

        def expect(pred: Callable[[MemoryOp], bool], limit: int | None = None,
                   newest_first: bool = False) -> list[int]:
            seqs = [o.seq for o in ops if pred(o)]
            seqs = seqs[::-1] if newest_first else seqs
            return seqs if limit is None else seqs[:limit]

        cases: list[tuple[dict[str, Any], Callable[[MemoryOp], bool]]] = [
            ({}, lambda o: True),
            ({"since": 50.0}, lambda o: o.time >= 50.0),
            ({"until": 40.0}, lambda o: o.time <= 40.0),
            ({"since": 20.0, "until": 60.5}, lambda o: 20.0 <= o.time <= 60.5),
            ({"key": "obj:3"}, lambda o: o.key == "obj:3"),
            ({"key": "obj:3", "since": 70.0}, lambda o: o.key == "obj:3" and o.time >= 70.0),
            ({"episode": 2}, lambda o: o.episode == 2),
            ({"kinds": ["ADD", OpKind.DELETE]}, lambda o: o.kind in (OpKind.ADD, OpKind.DELETE)),
            ({"causes": {"moved"}}, lambda o: o.cause == "moved"),
            ({"causes": {"moved"}, "since": 10.0, "kinds": ["UPDATE"]},
             lambda o: o.cause == "moved" and o.time >= 10.0 and o.kind is OpKind.UPDATE),
            ({"key": "nope"}, lambda o: False),
            ({"kinds": []}, lambda o: False),
        ]
        for kwargs, pred in cases:
            for limit in (None, 1, 7):
                for newest_first in (False, True):
                    got = [o.seq for o in s.ops(**kwargs, limit=limit, newest_first=newest_first)]
                    assert got == expect(pred, limit, newest_first), (kwargs, limit, newest_first)
        assert s.ops(limit=0) == []
        assert s.ops(key="obj:3", limit=2)[0] == next(o for o in ops if o.key == "obj:3")
        for bad in ({"limit": -1}, {"since": math.nan}, {"kinds": ["FROB"]}, {"episode": "x"}):
            with pytest.raises(StoreError, match="bad ops"):
                s.ops(**bad)


@pytest.mark.parametrize("fts", [True, False], ids=["fts5", "like-fallback"])
def test_events_queries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fts: bool) -> None:
    if not fts:
        monkeypatch.setattr(store_module, "_fts5_available", lambda conn: False)
    events = [
        Event(0.0, 1, "instruction", {"text": "Bring the red mug to the kitchen"}),
        Event(1.0, 1, "plan", {"steps": ["goto place:table", "pick obj:7", "place kitchen_counter"]}),
        Event(2.0, 1, "skill", {"skill": "pick", "success": False, "reason": "grasp slipped"},
              object="obj:7", place="place:table"),
        Event(3.0, 1, "skill", {"skill": "pick", "success": True}, object="obj:7", place="place:table"),
        Event(4.0, 2, "anomaly", {"what": "mug missing from drawer 50%_full"}, object="obj:7",
              place="place:drawer"),
        Event(4.0, 2, "skill", {"skill": "open"}, place="place:drawer"),
    ]
    with EpisodicStore(tmp_path / "memory.db") as s:
        assert s.full_text is fts
        s.append(events=events[:3])
        s.append(events=events[3:])

        def ids(**kwargs: Any) -> list[int]:
            return [e.id for e in s.events(**kwargs)]  # type: ignore[misc]

        assert ids() == [1, 2, 3, 4, 5, 6]
        assert ids(newest_first=True) == [6, 5, 4, 3, 2, 1]
        assert ids(object="obj:7") == [3, 4, 5]
        assert ids(object="obj:7", newest_first=True, limit=2) == [5, 4]
        assert ids(place="place:drawer") == [5, 6]
        assert ids(kind="skill", episode=1) == [3, 4]
        assert ids(since=2.0, until=3.0) == [3, 4]
        assert ids(since=3.5, limit=1) == [5]
        assert ids(text="red MUG") == [1]
        assert ids(text="mug") == [1, 5]
        assert ids(text="grasp slip") == [3]  # prefix (FTS5) or substring (LIKE)
        assert ids(text="pick", kind="skill") == [3, 4]
        assert ids(text="kitchen_counter") == [2]
        assert ids(text="50%_full") == [5]
        assert ids(text="obj:7", place="place:drawer") == [5]
        assert ids(text="teleport") == []
        assert ids(limit=0) == []
        with pytest.raises(StoreError, match="no words"):
            s.events(text=" ?! ")
        assert s.events(object="obj:7")[0] == Event(2.0, 1, "skill", {"skill": "pick", "success": False,
                                                                         "reason": "grasp slipped"},
                                                    object="obj:7", place="place:table", id=3)


_SCAN = re.compile(r"^SCAN (ops|events)\b")


@pytest.mark.parametrize("monotone", [True, False], ids=["clock-monotone", "clock-jumps-back"])
def test_queries_use_indexes_not_full_scans(tmp_path: Path, monotone: bool) -> None:
    with EpisodicStore(tmp_path / "memory.db") as s:
        s.append(_log(monotone), [Event(float(i), 0, "skill", {"n": i}, object=f"obj:{i % 9}",
                                        place=f"place:{i % 4}") for i in range(300)])
        conn = s._conn
        assert conn is not None
        conn.execute("ANALYZE")  # the plans must hold with statistics too

        def plan(query: tuple[str, list[Any]] | None) -> list[str]:
            assert query is not None
            return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query[0], query[1])]

        ops_queries = [{"key": "obj:3"}, {"since": 150.0, "limit": 20}, {"since": 0.0, "limit": 20},
                       {"until": 20.0, "limit": 5, "newest_first": True}, {"key": "obj:3", "since": 50.0},
                       {"episode": 2, "limit": 10}]
        for kwargs in ops_queries:
            details = plan(s._ops_query(**kwargs))
            assert not any(_SCAN.match(d) for d in details), (kwargs, details)
            assert any(d.startswith("SEARCH ops USING") for d in details), (kwargs, details)
        # with an unbroken clock, a limited time window reads only `limit` rows: no sort at all
        details = plan(s._ops_query(since=0.0, limit=20))
        assert any("TEMP B-TREE" in d for d in details) is not monotone
        events_queries = [{"object": "obj:3"}, {"place": "place:1", "limit": 5}, {"since": 100.0, "limit": 5},
                          {"kind": "skill", "newest_first": True, "limit": 3}, {"episode": 0, "limit": 3},
                          {"text": "skill"}]
        for kwargs in events_queries:
            details = plan(s._events_query(**kwargs))
            assert not any(_SCAN.match(d) for d in details), (kwargs, details)


def test_many_frame_batches_append_and_query(tmp_path: Path) -> None:
    """Frame-sized batches (20 ops + 1 event) as memory writes them; speed is measured by
    bench/bench_memory.py, not here."""
    with EpisodicStore(tmp_path / "memory.db") as s:
        seq = 0
        for b in range(300):
            ops = [op(seq + i + 1, time=b * 0.1, key=f"obj:{(seq + i) % 50}",
                      data={"position": [1.0, 2.0, 0.5], "n_obs": seq + i, "label": "mug"}) for i in range(20)]
            seq += 20
            s.append(ops, [Event(b * 0.1, 0, "skill", {"skill": "pick", "success": True}, object="obj:1")])
        assert s.last_seq() == 6000 and s.counts()["events"] == 300
        assert len(s.ops(key="obj:7", limit=20)) == 20
        assert len(s.ops(since=15.0, limit=20)) == 20
        assert len(s.events(object="obj:1", limit=20)) == 20


# -- migrations -----------------------------------------------------------------------------------

# The v1 schema exactly as the first release wrote it.
V1_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE episodes (id INTEGER PRIMARY KEY AUTOINCREMENT, meta TEXT NOT NULL, outcome TEXT,
                       started REAL NOT NULL, ended REAL);
CREATE TABLE ops (seq INTEGER PRIMARY KEY, time REAL NOT NULL, episode INTEGER NOT NULL, kind TEXT NOT NULL,
                  target TEXT NOT NULL, key TEXT NOT NULL, cause TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE snapshots (seq INTEGER PRIMARY KEY, time REAL NOT NULL, created REAL NOT NULL, data BLOB NOT NULL);
"""


def make_v1_store(path: Path, n_ops: int = 30, wal: bool = True) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    fill_v1(conn, n_ops)
    conn.close()


def fill_v1(conn: sqlite3.Connection, n_ops: int = 30) -> None:
    conn.executescript(V1_DDL)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO meta VALUES ('created', '{}')")
    conn.execute("INSERT INTO episodes(meta, outcome, started, ended) VALUES ('{\"task\": \"fetch\"}', "
                 "'{\"success\": true}', 100.0, 200.0)")
    conn.executemany("INSERT INTO ops VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [op(i, episode=1, key=f"obj:{i % 3}").to_row() for i in range(1, n_ops + 1)])
    conn.execute("INSERT INTO snapshots VALUES (20, 20.0, 300.0, ?)", (zlib.compress(b'{"at": 20}'),))


def test_a_v1_store_is_backed_up_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_v1_store(path, wal=False)  # an old file in rollback-journal mode
    original = digest(path)
    with EpisodicStore(path) as s:
        assert s.load() == ({"at": 20}, [op(i, episode=1, key=f"obj:{i % 3}") for i in range(21, 31)])
        assert s.episodes()[0]["meta"] == {"task": "fetch"}
        assert [o.seq for o in s.ops(key="obj:1")] == list(range(1, 31, 3))
        assert s.events() == []
        s.append([op(31)], [Event(31.0, 2, "note", {"text": "after the upgrade"}, object="obj:1")])
        assert s.events(text="upgrade")[0].object == "obj:1"
        assert s.counts() == {"ops": 31, "events": 1, "episodes": 1, "snapshots": 1}
    backup = tmp_path / "old.db.v1.bak"
    assert digest(path) != original
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ops_time", "ops_key_seq", "events_time", "events_object", "events_place"} <= indexes
    raw.close()
    old = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    assert old.execute("SELECT count(*), max(seq) FROM ops").fetchone() == (30, 30)
    assert old.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    old.close()
    with EpisodicStore(path) as s:  # already current: opens without another backup or change
        assert s.last_seq() == 31
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db", "old.db.v1.bak"]


def test_a_failed_migration_rolls_back_and_keeps_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    make_v1_store(path)
    original = digest(path)

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM ops WHERE seq > 10")
        raise RuntimeError("disk on fire")

    migrations = list(store_module._MIGRATIONS)
    migrations[1] = ("add events", broken)
    monkeypatch.setattr(store_module, "_MIGRATIONS", migrations)
    with pytest.raises(StoreError, match=r"migration v1->v2 \(add events\) failed: disk on fire.*still at schema v1"):
        EpisodicStore(path)
    assert digest(path) == original  # the transaction was rolled back; the WAL was checkpointed away
    raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
    assert raw.execute("SELECT count(*) FROM ops").fetchone()[0] == 30
    assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = 'events'").fetchone()[0] == 0
    raw.close()
    assert (tmp_path / "old.db.v1.bak").exists()
    monkeypatch.undo()
    with EpisodicStore(path) as s:  # the real migration then succeeds
        assert s.last_seq() == 30 and s.events() == []


def test_a_v1_store_cannot_be_opened_read_only(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_v1_store(path)
    before = tree(tmp_path)
    with pytest.raises(StoreError, match="schema v1 must be upgraded to v2.*without readonly"):
        EpisodicStore(path, readonly=True)
    assert tree(tmp_path) == before


# -- bad input: a clear error, the file untouched, nothing created beside it ----------------------

def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(1).randbytes(8192))


def _text_file(path: Path) -> None:
    path.write_text("shopping list:\n- mugs\n- a robot\n" * 50)


def _valid_store(path: Path) -> None:
    with EpisodicStore(path) as s:
        for b in range(20):
            s.append([op(b * 50 + i + 1, data={"pad": "x" * 200}) for i in range(50)],
                     [Event(float(b), 0, "note", {"text": "y" * 100})])


def _truncated(path: Path) -> None:
    _valid_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _garbled_page(path: Path) -> None:
    _valid_store(path)
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 3: page * 5] = random.Random(2).randbytes(page * 2)
    path.write_bytes(bytes(data))


def _truncated_after_a_crash(path: Path) -> None:
    """A store as a killed writer left it (main file + -wal, no -shm), then cut short."""
    work = path.with_name("work.db")
    with EpisodicStore(work) as s:
        s.append([op(i + 1, data={"pad": "x" * 200}) for i in range(300)])
        assert s._conn is not None
        s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the ops are now in the main file only
        s.save_snapshot(300, 300.0, {"at": 300})
        data = work.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        Path(f"{path}-wal").write_bytes(Path(f"{work}-wal").read_bytes())
    for p in work.parent.glob("work.db*"):
        p.unlink()


def _hot_journal(path: Path, committed: Callable[[sqlite3.Connection], None] | None = None) -> None:
    """``path`` as a crash left it in rollback-journal mode: a transaction's pages already in the
    main file and the original ones in a hot ``-journal`` (what a kill while a new store switches
    to WAL, or while an old rollback-mode store writes, leaves behind)."""
    work = path.with_name(f"work-{path.name}")
    conn = sqlite3.connect(work, isolation_level=None)
    if committed is not None:
        committed(conn)
    conn.execute("PRAGMA cache_size = 1")  # spill the open transaction's pages into the main file
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE filler (x BLOB)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(b"z" * 1000,) for _ in range(100)])
    path.write_bytes(work.read_bytes())
    Path(f"{path}-journal").write_bytes(Path(f"{work}-journal").read_bytes())
    conn.execute("ROLLBACK")
    conn.close()
    work.unlink()
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # the journal is hot indeed
        reader.execute("SELECT count(*) FROM sqlite_master").fetchall()
    reader.close()


def _short_header(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00")


def _foreign(path: Path, wal: bool = False, app_id: int = 0) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    if app_id:
        conn.execute(f"PRAGMA application_id = {app_id}")
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers(name) VALUES ('ada')")
    conn.close()


def _foreign_crashed_wal(path: Path) -> None:
    """Another program's WAL database as a crash left it: main file + -wal, no -shm."""
    work = path.with_name("work.sqlite")
    conn = sqlite3.connect(work, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers(name) VALUES ('ada')")
    path.write_bytes(work.read_bytes())
    Path(f"{path}-wal").write_bytes(Path(f"{work}-wal").read_bytes())
    conn.close()
    work.unlink()


def _newer(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_DDL)
    conn.execute("CREATE TABLE hologram (id INTEGER PRIMARY KEY)")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 9")
    conn.close()


BAD_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "random-bytes": (_random_bytes, "not an SQLite database"),
    "text-file": (_text_file, "not an SQLite database"),
    "short-header": (_short_header, "not an SQLite database"),
    "truncated": (_truncated, "corrupt"),
    "garbled-page": (_garbled_page, "corrupt"),
    "truncated-after-a-crash": (_truncated_after_a_crash, "corrupt"),
    "foreign": (_foreign, r"not a mnemobot memory store \(no application_id; tables: customers\)"),
    "foreign-wal": (lambda p: _foreign(p, wal=True), "not a mnemobot memory store"),
    "foreign-crashed-wal": (_foreign_crashed_wal, "not a mnemobot memory store"),
    "foreign-hot-journal": (lambda p: _hot_journal(p, lambda c: c.execute("CREATE TABLE customers (id)")),
                            r"not a mnemobot memory store \(no application_id; tables: customers\)"),
    "other-app-id": (lambda p: _foreign(p, app_id=0x12345678), r"not a mnemobot memory store \(application_id 0x12345678"),
    "newer-schema": (_newer, r"written by a newer mnemobot \(schema v9\); this version reads up to v2"),
}


@pytest.mark.parametrize("readonly", [False, True], ids=["read-write", "read-only"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_refused_and_left_untouched(tmp_path: Path, case: str, readonly: bool) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "memory.db"
    make, message = BAD_FILES[case]
    make(path)
    before = tree(folder)
    error = SchemaTooNewError if case == "newer-schema" else StoreError
    with pytest.raises(error, match=message) as info:
        EpisodicStore(path, readonly=readonly)
    assert str(path) in str(info.value)
    assert tree(folder) == before


def test_bad_paths_are_refused_without_creating_anything(tmp_path: Path) -> None:
    before = tree(tmp_path)
    with pytest.raises(StoreError, match="is a directory"):
        EpisodicStore(tmp_path)
    with pytest.raises(StoreError, match=r"no such memory store \(and create=False\)"):
        EpisodicStore(tmp_path / "missing.db", create=False)
    with pytest.raises(StoreError, match="cannot be opened read-only"):
        EpisodicStore(tmp_path / "missing.db", readonly=True)
    with pytest.raises(StoreError, match="does not exist"):
        EpisodicStore(tmp_path / "no" / "such" / "dir.db")
    with pytest.raises(StoreError, match="timeout_s"):
        EpisodicStore(tmp_path / "x.db", timeout_s=math.nan)
    assert tree(tmp_path) == before == {}


def test_an_empty_file_is_initialised_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    path.touch()
    for kwargs in ({"create": False}, {"readonly": True}):
        with pytest.raises(StoreError, match="not an initialised memory store"):
            EpisodicStore(path, **kwargs)
        assert path.read_bytes() == b"" and [p.name for p in tmp_path.iterdir()] == ["memory.db"]
    with EpisodicStore(path) as s:
        s.append([op(1)])
    with EpisodicStore(path, create=False) as s:
        assert s.last_seq() == 1


def test_a_hot_rollback_journal_is_recovered_only_for_a_store(tmp_path: Path) -> None:
    # a new store killed while switching to WAL: an empty database once rolled back
    path = tmp_path / "new.db"
    _hot_journal(path)
    before = tree(tmp_path)
    for kwargs in ({"readonly": True}, {"create": False}):
        with pytest.raises(StoreError, match="empty database, not an initialised memory store"):
            EpisodicStore(path, **kwargs)
        assert tree(tmp_path) == before
    with EpisodicStore(path) as s:
        s.append([op(1)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db"]
    # an old rollback-mode v1 store killed while writing: rolled back, backed up, migrated
    old = tmp_path / "old.db"
    _hot_journal(old, fill_v1)
    with EpisodicStore(old) as s:
        assert s.last_seq() == 30 and s.counts()["snapshots"] == 1
    backup = sqlite3.connect(f"file:{old}.v1.bak?mode=ro", uri=True)
    assert backup.execute("SELECT count(*) FROM ops").fetchone()[0] == 30
    assert backup.execute("SELECT count(*) FROM sqlite_master WHERE name = 'filler'").fetchone()[0] == 0
    backup.close()


# -- concurrency ----------------------------------------------------------------------------------

def test_readers_see_commits_while_the_writer_holds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with EpisodicStore(path) as writer:
        writer.append([op(1), op(2)], [Event(2.0, 0, "note", {"text": "hello"})])
        with EpisodicStore(path, readonly=True) as reader:
            assert reader.readonly and reader.last_seq() == 2
            writer.append([op(3)])
            writer.save_snapshot(3, 3.0, {"at": 3})
            assert reader.last_seq() == 3 and reader.load() == ({"at": 3}, [])
            assert reader.events(text="hello")[0].data == {"text": "hello"}
            for write in (lambda: reader.append([op(4)]), lambda: reader.begin_episode({}),
                          lambda: reader.save_snapshot(3, 3.0, {})):
                with pytest.raises(StoreError, match="read-only"):
                    write()
        # another process reads while this one keeps the file open for writing
        code = ("import sys\nfrom mnemobot.memory.store import EpisodicStore\n"
                "with EpisodicStore(sys.argv[1], readonly=True) as s:\n"
                "    print(s.last_seq(), s.counts()['events'])\n")
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                             timeout=30, check=True)
        assert out.stdout.split() == ["3", "1"]
        writer.append([op(4)])
        assert writer.last_seq() == 4


# -- crash safety: a writer process killed with SIGKILL --------------------------------------------

def _writer_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("store_crash_writer", WRITER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_and_kill(db: Path, delay: float, seed: int, stderr_path: Path) -> list[int]:
    """Start the writer, SIGKILL it after ``delay`` s; the last seqs it reported as committed."""
    with stderr_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, str(WRITER), str(db), str(seed)], stdout=subprocess.PIPE,
                                stderr=err, text=True)
        lines: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout
        pump = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
        pump.start()
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=30)
        pump.join(timeout=30)
        stdout.close()
    problems = stderr_path.read_text()
    assert proc.returncode == -signal.SIGKILL, f"the writer stopped by itself:\n{problems}"
    assert problems == "", problems
    return [int(line) for line in lines if line.endswith("\n")]


def _check_after_crash(db: Path, reported: list[int], writer: ModuleType, readonly: bool) -> int:
    """Everything the crash test demands of the file; returns its last seq."""
    if readonly and not reported:
        readonly = False  # the writer may have died before creating the store
    with EpisodicStore(db, readonly=readonly) as s:
        raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            raw.close()
        ops = s.ops()
        last = s.last_seq()
        assert [o.seq for o in ops] == list(range(1, last + 1)), "the log has a hole"
        assert last >= max(reported, default=0), "a committed batch was lost"
        batches: dict[int, list[MemoryOp]] = defaultdict(list)
        for o in ops:
            batches[o.data["batch"]].append(o)
        for first, group in batches.items():
            n = group[0].data["n"]
            assert [o.seq for o in group] == list(range(first, first + n)), f"torn batch at {first}"
            assert [o.data["i"] for o in group] == list(range(n))
            crc = writer.batch_checksum(first, [o.data["v"] for o in group])
            assert all(o.data["crc"] == crc for o in group), f"checksum mismatch in batch {first}"
        logged = {(e.data["first"], e.data["last"], e.data["crc"]) for e in s.events(kind="batch")}
        assert logged == {(f, f + len(g) - 1, g[0].data["crc"]) for f, g in batches.items()}, \
            "ops and their event were not committed together"
        state, tail = s.load()
        assert s.counts()["snapshots"] <= 2
        if state is not None:
            at = state["last_seq"]
            assert at <= last and [o.seq for o in tail] == list(range(at + 1, last + 1))
            keys: dict[str, int] = {}
            for o in ops[:at]:
                keys[o.key] = o.seq
            assert state["keys"] == keys, "the snapshot does not match the log"
        else:
            assert [o.seq for o in tail] == list(range(1, last + 1))
        return last


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_writer_killed_mid_write_loses_at_most_the_batch_in_flight(tmp_path: Path) -> None:
    writer = _writer_module()
    db = tmp_path / "crash.db"
    rng = random.Random(20240611)
    rounds = 10
    delays = [0.01] + [rng.uniform(0.05, 0.5) for _ in range(rounds - 1)]  # the first dies starting up
    progressed = 0
    last = 0
    for r, delay in enumerate(delays):
        reported = _run_and_kill(db, delay, seed=r, stderr_path=tmp_path / f"writer{r}.err")
        if reported:
            assert reported[0] == last, "the writer did not resume from the last committed seq"
        progressed += max(reported, default=last) > last
        # alternate: reopen read-write (checkpoints), or read-only (the next writer recovers the WAL)
        last = _check_after_crash(db, reported, writer, readonly=r % 2 == 1)
    assert progressed >= rounds // 2, "too few rounds got to write: the test did not exercise much"
    assert last > 1000


def _first_line_after(db: Path) -> float:
    """Seconds from spawning the writer on a new store to its first output line (startup time)."""
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db), "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    t0 = time.perf_counter()
    proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    return elapsed


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_writer_killed_while_starting_up(tmp_path: Path) -> None:
    """Kills spread over the writer's startup (interpreter, creating or opening the store, load)."""
    writer = _writer_module()
    startup = _first_line_after(tmp_path / "calibration.db")
    rng = random.Random(5)
    outcomes = []
    for r in range(12):
        db = tmp_path / f"startup{r % 6}.db"  # six new stores, each killed twice while starting
        delay = startup * (0.5 + 0.6 * (r % 6) / 5) * rng.uniform(0.9, 1.1)
        reported = _run_and_kill(db, delay, seed=100 + r, stderr_path=tmp_path / f"writer{r}.err")
        outcomes.append(len(reported))
        if db.exists():
            _check_after_crash(db, reported, writer, readonly=False)
        else:
            assert reported == []
    assert 0 in outcomes, "no kill landed before the writer's first commit"
    leftovers = [p.name for p in tmp_path.glob("startup*") if not p.name.endswith(".db")]
    assert leftovers == [], "creating a store is one transaction (no backup), and closing it removes -wal/-shm"



# The store's counts after each step of the writer's fixed script (ops, events, episodes,
# snapshots, ended episodes), added to what the file held before.
_AFTER_STEP = {"open": (0, 0, 0, 0, 0), "append1": (3, 1, 0, 0, 0), "episode": (3, 1, 1, 0, 0),
               "append2": (5, 1, 1, 0, 0), "snapshot": (5, 1, 1, 1, 0), "end": (5, 1, 1, 1, 1)}


def _state(s: EpisodicStore) -> tuple[int, ...]:
    c = s.counts()
    ended = sum(e["ended"] is not None for e in s.episodes())
    return c["ops"], c["events"], c["episodes"], c["snapshots"], ended


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("start", ["new", "v1"], ids=["new-store", "v1-store-migrating"])
def test_writer_killed_just_before_or_after_each_commit(tmp_path: Path, start: str) -> None:
    base = (30, 0, 1, 1, 1) if start == "v1" else (0, 0, 0, 0, 0)
    for when in ("before", "after"):
        finished = False
        for at in range(1, 20):
            db = tmp_path / f"{when}{at}.db"
            if start == "v1":
                make_v1_store(db)
            run = subprocess.run([sys.executable, str(WRITER), str(db), "--kill", when, str(at)],
                                 capture_output=True, text=True, timeout=60)
            if run.returncode == 0:  # the script has fewer commits: every point was tried
                assert run.stdout.endswith("finished\n") and at > 7
                finished = True
                break
            assert run.returncode == -signal.SIGKILL, run.stderr
            committed = [line.split()[2] for line in run.stdout.splitlines() if line.startswith("committed")]
            assert len(committed) == (at - 1 if when == "before" else at)
            raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True) if db.exists() else None
            if raw is not None:
                assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                version = raw.execute("PRAGMA user_version").fetchone()[0]
                raw.close()
            if not committed:  # killed inside store creation or the v1 -> v2 migration
                if start == "v1":
                    assert version == 1 and (tmp_path / f"{db.name}.v1.bak").exists()
                else:
                    assert raw is None or version == 0
                    with pytest.raises(StoreError, match="no such memory store|not an initialised"):
                        EpisodicStore(db, create=False)
                with EpisodicStore(db) as s:  # the next open creates / migrates it
                    assert _state(s) == base
                continue
            with EpisodicStore(db, create=False) as s:
                expected = tuple(b + d for b, d in zip(base, _AFTER_STEP[committed[-1]], strict=True))
                assert _state(s) == expected, (when, at, committed)
                assert [o.seq for o in s.ops()] == list(range(1, s.last_seq() + 1))
        assert finished, "the fixed script never finished"
