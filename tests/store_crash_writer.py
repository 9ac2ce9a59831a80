"""Crash-test writer for the episodic store: ``python tests/store_crash_writer.py DB [SEED]``.

Opens (or creates) the store at ``DB``, rebuilds its toy state from ``load()`` (snapshot + tail),
then appends forever: each transaction is a batch of 1..50 ops with contiguous seqs, every op
carrying the batch's first seq, size and checksum (so a torn batch is detectable), plus one
``"batch"`` event describing the batch; every 20 batches it saves a snapshot of the state (the
last seq that touched each key, which the checker recomputes from the log). After each commit it
prints the committed last seq and flushes. ``tests/test_store.py`` kills it with SIGKILL at random
moments and checks the file. Not a test module itself (no ``test_`` prefix).

``python tests/store_crash_writer.py DB --kill before|after N`` instead runs a short fixed script
(open, append, begin an episode, append, snapshot, end the episode, close), printing
``begin STEP`` before each step and ``committed K STEP`` after each COMMIT, and SIGKILLs itself
just before or just after the N-th COMMIT of any of its store connections: a crash at a precise
point of the commit sequence (including store creation and schema migration).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import sys
import zlib
from typing import Any

from mnemobot.memory.ops import MemoryOp, OpKind
from mnemobot.memory.store import EpisodicStore, Event

SNAPSHOT_EVERY = 20
KINDS = (OpKind.ADD, OpKind.UPDATE, OpKind.NOOP, OpKind.DELETE)


def batch_checksum(first: int, values: list[int]) -> int:
    """CRC32 of a batch's first seq and per-op values; each op of the batch carries it."""
    return zlib.crc32(json.dumps([first, values]).encode())


def make_batch(rng: random.Random, first: int, time: float, episode: int) -> tuple[list[MemoryOp], Event]:
    n = rng.randint(1, 50)
    values = [rng.randrange(1 << 30) for _ in range(n)]
    crc = batch_checksum(first, values)
    ops = [MemoryOp(first + i, time, episode, rng.choice(KINDS), "node", f"obj:{rng.randrange(64)}", "observed",
                    {"batch": first, "n": n, "i": i, "v": v, "crc": crc, "pad": "x" * rng.randrange(64)})
           for i, v in enumerate(values)]
    event = Event(time, episode, "batch", {"first": first, "last": first + n - 1, "crc": crc},
                  object=ops[0].key, place=f"place:{first % 7}")
    return ops, event


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


STEPS = ("open", "append1", "episode", "append2", "snapshot", "end", "close")


def scripted(path: str, when: str, at: int) -> int:
    """Run the fixed script, killing this process just ``when`` ("before"/"after") COMMIT ``at``."""
    step = "start"
    commits = 0

    class KillingConnection(sqlite3.Connection):
        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            nonlocal commits
            if sql != "COMMIT":
                return super().execute(sql, parameters)
            if when == "before" and commits + 1 == at:
                _die()
            cursor = super().execute(sql, parameters)
            commits += 1
            _say(f"committed {commits} {step}")
            if when == "after" and commits == at:
                _die()
            return cursor

    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", KillingConnection)
        return real_connect(*args, **kwargs)

    sqlite3.connect = connect  # type: ignore[assignment]

    def begin(name: str) -> None:
        nonlocal step
        step = name
        _say(f"begin {name}")

    begin("open")
    store = EpisodicStore(path)
    first = store.last_seq() + 1
    begin("append1")
    store.append([MemoryOp(first + i, 100.0, 0, OpKind.ADD, "node", f"obj:{i}", "observed", {"i": i})
                  for i in range(3)], [Event(100.0, 0, "note", {"text": "three objects"})])
    begin("episode")
    episode = store.begin_episode({"task": "crash"})
    begin("append2")
    store.append([MemoryOp(first + 3 + i, 101.0, episode, OpKind.UPDATE, "node", f"obj:{i}", "moved", {})
                  for i in range(2)])
    begin("snapshot")
    store.save_snapshot(first + 4, 101.0, {"last_seq": first + 4})
    begin("end")
    store.end_episode(episode, {"success": True})
    begin("close")
    store.close()
    _say("finished")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[2] == "--kill":
        return scripted(argv[1], argv[3], int(argv[4]))
    path = argv[1]
    seed = int(argv[2]) if len(argv) > 2 else os.getpid()
    rng = random.Random(seed)
    store = EpisodicStore(path)
    state, tail = store.load()
    keys: dict[str, int] = dict(state["keys"]) if state else {}
    for op in tail:
        keys[op.key] = op.seq
    last = store.last_seq()
    clock = store.last_time()
    episode = store.begin_episode({"writer": os.getpid(), "seed": seed})
    out = sys.stdout
    out.write(f"{last}\n")
    out.flush()
    batches = 0
    while True:
        clock += 0.01
        ops, event = make_batch(rng, last + 1, clock, episode)
        store.append(ops, [event])
        last = ops[-1].seq
        for op in ops:
            keys[op.key] = op.seq
        out.write(f"{last}\n")
        out.flush()
        batches += 1
        if batches % SNAPSHOT_EVERY == 0:
            store.save_snapshot(last, clock, {"last_seq": last, "keys": keys})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
