"""Short-term object-state memory: eviction order of each policy, stats, traces, invariants."""

from __future__ import annotations

import importlib.util
import json
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from mnemobot.memory.short_term import (
    POLICIES,
    CountMinSketch,
    EvictionPolicy,
    ShortTermConfig,
    ShortTermMemory,
    StateChange,
    TraceResult,
    WTinyLFUPolicy,
    load_trace,
    make_policy,
    register_policy,
    replay_trace,
)

ALL_POLICIES = ("fifo", "lru", "lfu", "w-tinylfu", "none")


def sc(key: str, t: float = 0.0, change: str = "moved", **data: object) -> StateChange:
    return StateChange(key, key.split(":")[-1], change, t, dict(data))


def mem(policy: str, capacity: int, **kw: object) -> ShortTermMemory:
    return ShortTermMemory(ShortTermConfig(capacity=capacity, policy=policy, **kw))


def evicted_key(m: ShortTermMemory, key: str, t: float = 0.0) -> str | None:
    out = m.record(sc(key, t))
    return None if out is None else out.key


# --------------------------------------------------------------------------------------------
# StateChange and config


def test_state_change_round_trips_and_converts_numpy() -> None:
    c = StateChange("obj:7", "red_cube", "moved", 3, {"place": "tray", "position": np.array([1.0, 2.0, 0.5])})
    assert c.time == 3.0 and c.data["position"] == [1.0, 2.0, 0.5]
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert StateChange.from_dict(d) == c
    assert hash(c) == hash(StateChange.from_dict(d))


def test_state_change_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="lacks time"):
        StateChange.from_dict({"key": "obj:1", "label": "mug", "change": "moved"})
    with pytest.raises(ValueError, match="finite"):
        StateChange("obj:1", "mug", "moved", float("nan"))
    with pytest.raises(ValueError, match="non-empty"):
        StateChange("", "mug", "moved", 0.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"capacity": -1}, ValueError, "capacity must be >= 0"),
        ({"policy": "mru"}, ValueError, "fifo, lfu, lru, none, w-tinylfu"),
        ({"window_fraction": 1.5}, ValueError, "window_fraction"),
        ({"sketch_width": 0}, ValueError, "sketch_width"),
        ({"capacity": 2.5}, TypeError, "capacity must be an int"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ShortTermConfig(**kwargs)


def test_every_policy_is_registered_and_satisfies_the_protocol() -> None:
    assert set(ALL_POLICIES) == set(POLICIES)
    for name in ALL_POLICIES:
        assert isinstance(make_policy(ShortTermConfig(capacity=4, policy=name)), EvictionPolicy)


def test_a_new_policy_plugs_in_through_the_registry() -> None:
    @register_policy("test-mru")
    class MRUPolicy:
        """Most recently used goes first."""

        def __init__(self, config: ShortTermConfig) -> None:
            self.capacity = config.capacity
            self._order: OrderedDict[str, None] = OrderedDict()

        def hit(self, key: str) -> None:
            self._order.move_to_end(key)

        def miss(self, key: str) -> None:
            pass

        def insert(self, key: str) -> str | None:
            victim = self._order.popitem()[0] if len(self._order) >= self.capacity else None
            self._order[key] = None
            return victim

        def remove(self, key: str) -> None:
            self._order.pop(key, None)

        def clear(self) -> None:
            self._order.clear()

        def __len__(self) -> int:
            return len(self._order)

        def __contains__(self, key: object) -> bool:
            return key in self._order

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_policy("test-mru")(MRUPolicy)
        m = mem("test-mru", 2)
        m.record(sc("a"))
        m.record(sc("b"))
        m.get("a")
        assert evicted_key(m, "c") == "a"
    finally:
        del POLICIES["test-mru"]


# --------------------------------------------------------------------------------------------
# Eviction order, policy by policy


def test_fifo_evicts_first_inserted_even_if_accessed() -> None:
    m = mem("fifo", 3)
    assert [evicted_key(m, k) for k in "abc"] == [None, None, None]
    assert m.get("a") is not None
    m.record(sc("a", 1.0))  # an overwrite keeps a's place in the queue
    assert evicted_key(m, "d") == "a"
    assert evicted_key(m, "e") == "b"
    assert m.keys() == ["c", "d", "e"]


def test_lru_evicts_least_recently_accessed() -> None:
    m = mem("lru", 3)
    for k in "abc":
        m.record(sc(k))
    m.get("a")  # order now b, c, a
    assert evicted_key(m, "d") == "b"
    m.get("c")  # a, d, c
    assert evicted_key(m, "e") == "a"
    m.record(sc("d", 2.0))  # a write is an access too: c, e, d
    assert evicted_key(m, "f") == "c"
    assert sorted(m.keys()) == ["d", "e", "f"]


def test_lfu_keeps_the_hot_key_and_breaks_ties_by_recency() -> None:
    m = mem("lfu", 3)
    m.record(sc("a"))
    m.get("a")
    m.get("a")  # a: 3
    m.record(sc("b"))
    m.get("b")  # b: 2
    m.record(sc("c"))  # c: 1
    assert evicted_key(m, "d") == "c"  # the only key seen once
    m.get("d")  # d: 2, tie with b; b was used longer ago
    assert evicted_key(m, "e") == "b"
    assert evicted_key(m, "f") == "e"  # e: 1
    for i in range(20):  # a stream of one-off keys never displaces the hot key
        m.record(sc(f"x{i}"))
    assert "a" in m and "d" in m
    assert m.policy.frequency("a") == 3  # type: ignore[attr-defined]


def test_w_tinylfu_admission_and_segments() -> None:
    # capacity 4: window 1, main 3 (protected 2, probation the rest).
    m = mem("w-tinylfu", 4, window_fraction=0.25)
    pol = m.policy
    assert isinstance(pol, WTinyLFUPolicy)
    assert (pol.window_capacity, pol.main_capacity, pol.protected_capacity) == (1, 3, 2)
    # Each new key pushes the previous window key into probation while main has room.
    assert [evicted_key(m, k) for k in "abcd"] == [None] * 4
    assert [pol.segment_of(k) for k in "abcd"] == ["probation"] * 3 + ["window"]
    for _ in range(3):
        m.get("a")
    assert pol.segment_of("a") == "protected"  # a probation hit promotes
    # e enters the window; candidate d (seen once) does not beat main's victim b (seen once): d goes.
    assert evicted_key(m, "e") == "d"
    m.get("e")
    # f enters; candidate e (seen twice) beats victim b (once): e is admitted to probation, b goes.
    assert evicted_key(m, "f") == "b"
    assert {k: pol.segment_of(k) for k in m.keys()} == {
        "a": "protected", "c": "probation", "e": "probation", "f": "window"}
    # Two promotions overflow protected (2): its least recent key (a) is demoted to probation.
    m.get("c")
    m.get("e")
    assert {k: pol.segment_of(k) for k in "ace"} == {"a": "probation", "c": "protected", "e": "protected"}


def scan_workload(m: ShortTermMemory) -> bool:
    """A key read often, then a one-off scan longer than the memory; is the key still held?"""
    m.record(sc("obj:hot"))
    for i in range(8):
        m.record(sc(f"obj:warm{i}"))
    for _ in range(5):
        m.get("obj:hot")
    for i in range(30):
        if m.get(f"obj:scan{i}") is None:
            m.record(sc(f"obj:scan{i}"))
    return m.get("obj:hot") is not None


def test_w_tinylfu_survives_a_scan_that_flushes_lru() -> None:
    assert not scan_workload(mem("lru", 10))
    assert not scan_workload(mem("fifo", 10))
    assert scan_workload(mem("w-tinylfu", 10))
    assert scan_workload(mem("lfu", 10))


def test_w_tinylfu_with_tiny_capacities() -> None:
    one = mem("w-tinylfu", 1)
    assert evicted_key(one, "a") is None and evicted_key(one, "b") == "a" and one.keys() == ["b"]
    zero = mem("w-tinylfu", 0)
    assert evicted_key(zero, "a") == "a" and len(zero) == 0


def test_count_min_sketch_saturates_and_ages() -> None:
    s = CountMinSketch(width=64, sample_size=1000)
    for _ in range(40):
        s.increment("obj:1")
    assert s.frequency("obj:1") == CountMinSketch.MAX_COUNT
    assert s.frequency("obj:2") == 0
    s.age()
    assert s.frequency("obj:1") == 7 and s.resets == 1
    aging = CountMinSketch(width=64, sample_size=10)
    for _ in range(9):
        aging.increment("k")
    assert aging.frequency("k") == 9
    aging.increment("k")  # the 10th increment triggers the reset
    assert aging.frequency("k") == 5 and aging.resets == 1
    # Stable hashing: a fresh sketch gives the same estimates.
    again = CountMinSketch(width=64, sample_size=10)
    for _ in range(10):
        again.increment("k")
    assert again._rows == aging._rows


def test_w_tinylfu_sketch_is_aged_after_ten_times_capacity() -> None:
    m = mem("w-tinylfu", 4)
    assert m.policy.sketch.sample_size == 40  # type: ignore[attr-defined]
    for i in range(100):
        m.get(f"k{i % 7}")
    assert m.policy.sketch.resets >= 2  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# The memory's interface


def test_none_policy_holds_nothing() -> None:
    m = mem("none", 8)
    c = sc("obj:1")
    assert m.record(c) is c
    assert len(m) == 0 and "obj:1" not in m and m.capacity == 0
    assert m.get("obj:1") is None and m.peek("obj:1") is None and m.recent() == []
    assert m.stats.hits == 0 and m.stats.misses == 1 and m.stats.evictions == 1 and m.stats.hit_rate == 0.0


@pytest.mark.parametrize("policy", ["fifo", "lru", "lfu", "w-tinylfu"])
def test_capacity_zero_holds_nothing(policy: str) -> None:
    m = mem(policy, 0)
    assert evicted_key(m, "a") == "a"
    assert len(m) == 0 and m.get("a") is None


def test_stats_peek_recent_and_clear() -> None:
    m = mem("lru", 2)
    assert m.stats.hit_rate == 0.0
    m.record(sc("obj:1", 1.0))
    m.record(sc("obj:2", 3.0))
    assert m.get("obj:1") is not None and m.get("obj:9") is None
    assert m.peek("obj:2") is not None and m.peek("obj:9") is None  # not counted, no touch
    m.record(sc("obj:3", 2.0))  # obj:2 is least recently used (peek did not touch it)
    assert "obj:2" not in m
    s = m.stats
    assert (s.hits, s.misses, s.evictions, s.hit_rate) == (1, 1, 1, 0.5)
    assert [c.key for c in m.recent()] == ["obj:3", "obj:1"]
    assert [c.key for c in m.recent(n=1)] == ["obj:3"]
    assert [c.key for c in m.recent(since=2.5)] == []
    assert [c.key for c in m.recent(since=2.0)] == ["obj:3"]
    m.record(sc("obj:1", 2.0, change="grasped"))  # same time as obj:3 but written later
    assert [(c.key, c.change) for c in m.recent()] == [("obj:1", "grasped"), ("obj:3", "moved")]
    with pytest.raises(ValueError, match="n must be"):
        m.recent(n=-1)
    assert m.discard("obj:1") is not None and "obj:1" not in m and m.discard("obj:1") is None
    m.clear()
    assert len(m) == 0 and m.stats == type(m.stats)(0, 0, 0)
    with pytest.raises(TypeError, match="StateChange"):
        m.record({"key": "obj:1"})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Randomised invariants and reference models


class ReferenceCache:
    """Brute-force FIFO / LRU / LFU: linear scans over (key, inserted, last used, count)."""

    def __init__(self, policy: str, capacity: int) -> None:
        self.policy, self.capacity = policy, capacity
        self.meta: dict[str, list[int]] = {}  # key -> [inserted_at, last_used_at, count]
        self.clock = 0

    def access(self, key: str, write: bool) -> tuple[bool, str | None]:
        self.clock += 1
        if key in self.meta:
            m = self.meta[key]
            m[1], m[2] = self.clock, m[2] + 1
            return True, None
        if not write:
            return False, None
        victim = None
        if len(self.meta) >= self.capacity:
            rank = {"fifo": lambda k: self.meta[k][0], "lru": lambda k: self.meta[k][1],
                    "lfu": lambda k: (self.meta[k][2], self.meta[k][1])}[self.policy]
            victim = min(self.meta, key=rank)
            del self.meta[victim]
        self.meta[key] = [self.clock, self.clock, 1]
        return False, victim


@pytest.mark.parametrize("policy", ["fifo", "lru", "lfu"])
@pytest.mark.parametrize("seed", range(5))
def test_simple_policies_match_a_brute_force_reference(policy: str, seed: int) -> None:
    rng = random.Random(seed)
    capacity = rng.randint(1, 6)
    m, ref = mem(policy, capacity), ReferenceCache(policy, capacity)
    for _ in range(400):
        key = f"k{min(rng.randrange(12), rng.randrange(12))}"  # skewed towards small ids
        if rng.random() < 0.5:
            hit, _ = ref.access(key, write=False)
            assert (m.get(key) is not None) == hit
        else:
            _, victim = ref.access(key, write=True)
            assert evicted_key(m, key) == victim
        assert set(m.keys()) == set(ref.meta)


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("seed", range(6))
def test_randomised_invariants(policy: str, seed: int) -> None:
    """Never over capacity; the held set is exactly what the returned evictions imply; a get
    right after a record hits unless the record itself was declined; the policy agrees."""
    rng = random.Random(1000 + seed)
    capacity = rng.randint(0, 7)
    m = mem(policy, capacity, window_fraction=rng.choice([0.0, 0.01, 0.3, 1.0]))
    limit = 0 if policy == "none" else capacity
    held: set[str] = set()
    for step in range(500):
        key = f"obj:{int(rng.paretovariate(1.2)) % 15}"
        r = rng.random()
        if r < 0.45:
            assert (m.get(key) is not None) == (key in held)
        elif r < 0.95:
            change = sc(key, float(step))
            out = m.record(change)
            if out is change:
                assert limit == 0
            else:
                held.add(key)
                if out is not None:
                    assert out.key != key and out.key in held
                    held.discard(out.key)
                hit = m.get(key)
                assert hit is not None and hit.time == float(step)
                assert m.stats.hits >= 1
        else:
            m.discard(key)
            held.discard(key)
        assert len(m) <= limit
        assert set(m.keys()) == held
        assert len(m.policy) == len(m) and all(k in m.policy for k in held)


# --------------------------------------------------------------------------------------------
# Traces


def test_replay_trace_counts_gets_only() -> None:
    events = [
        {"t": 0.0, "op": "put", "key": "obj:1", "label": "mug", "change": "appeared"},
        {"t": 0.1, "op": "get", "key": "obj:1"},
        {"t": 0.2, "op": "put", "key": "obj:2"},
        {"t": 0.3, "op": "put", "key": "obj:3"},
        {"t": 0.4, "op": "get", "key": "obj:1"},
        {"t": 0.5, "op": "get", "key": "obj:2"},
    ]
    lru = replay_trace(events, ShortTermConfig(capacity=2, policy="lru"))
    assert lru == TraceResult(hits=2, misses=1, hit_rate=2 / 3, evictions=1)
    fifo = replay_trace(events, ShortTermConfig(capacity=2, policy="fifo"))
    assert (fifo.hits, fifo.misses, fifo.evictions) == (2, 1, 1)  # obj:1 evicted, obj:2 kept
    none = replay_trace(events, ShortTermConfig(policy="none"))
    assert (none.hits, none.misses, none.hit_rate) == (0, 3, 0.0)
    assert replay_trace([], ShortTermConfig()).hit_rate == 0.0
    with pytest.raises(ValueError, match="trace event 1: 'op' must be"):
        replay_trace([events[0], {"t": 1, "op": "del", "key": "obj:1"}], ShortTermConfig())


def test_load_trace_reads_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text('{"t": 0, "op": "put", "key": "obj:1", "label": "mug"}\n\n'
                    '{"t": 1.5, "op": "get", "key": "obj:1"}\n', encoding="utf-8")
    events = load_trace(path)
    assert [e["op"] for e in events] == ["put", "get"]
    assert replay_trace(events, ShortTermConfig(capacity=1)).hits == 1


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ('{"t": 1, "op": "get", "key": ', "not valid JSON"),
        ('[1, 2, 3]', "expected a JSON object"),
        ('{"t": 1, "op": "get"}', "missing field 'key'"),
        ('{"t": "soon", "op": "get", "key": "obj:1"}', "'t' must be a finite number"),
        ('{"t": 1, "op": "evict", "key": "obj:1"}', "'op' must be one of put, get"),
        ('{"t": 1, "op": "put", "key": "obj:1", "label": 7}', "'label' must be a string"),
    ],
)
def test_load_trace_names_file_and_line_of_a_malformed_line(tmp_path: Path, bad_line: str, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t": 0, "op": "put", "key": "obj:1"}\n\n' + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=match) as info:
        load_trace(path)
    assert f"{path}:3:" in str(info.value)


def test_benchmark_script_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_short_term", Path(__file__).resolve().parents[1] / "bench" / "bench_short_term.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.zipf_trace(200) == bench.zipf_trace(200)  # deterministic
    (tmp_path / "tiny.jsonl").write_text('{"t": 0, "op": "put", "key": "a"}\n{"t": 1, "op": "get", "key": "a"}\n')
    (tmp_path / "broken.jsonl").write_text("not json\n")
    bench.main(["--traces", str(tmp_path), "--capacities", "2"])
    out = capsys.readouterr().out
    assert "skipping broken.jsonl" in out and "broken.jsonl:1:" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("tiny", "synthetic"))]
    assert [r[0] for r in rows] == ["tiny", "synthetic-zipf", "synthetic-scan"]
    assert rows[0][3:8] == ["100.0*"] * 4 + ["0.0"]
