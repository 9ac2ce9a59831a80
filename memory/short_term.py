"""Short-term object-state memory: the latest change of each recently touched object, bounded.

Long-term memory (the scene graph and its op log) keeps everything; short-term memory answers
"what just happened to X?" from a small fixed-size table of :class:`StateChange` entries, one per
key (``"obj:7"``, ``"place:drawer"``). When the table is full a new key displaces an old one, and
which one goes is decided by an *eviction policy*. Policies are interchangeable behind the
:class:`EvictionPolicy` protocol and are looked up by name in :data:`POLICIES`:

* ``"fifo"``: first in, first out; accesses do not matter.
* ``"lru"``: least recently used (every read or write of a key refreshes it).
* ``"lfu"``: least frequently used among the held keys, ties broken by recency; O(1) per
  operation with frequency buckets (Shah, Mitra & Matani, "An O(1) algorithm for implementing
  the LFU cache eviction scheme", 2010).
* ``"w-tinylfu"``: Window TinyLFU, the admission scheme of Einziger, Friedman & Manes,
  "TinyLFU: A Highly Efficient Cache Admission Policy", ACM Transactions on Storage, 2017, in
  the form the Caffeine cache uses (see :class:`WTinyLFUPolicy`).
* ``"none"``: holds nothing; the no-short-term-memory baseline (every lookup misses).

Policies track keys only; :class:`ShortTermMemory` owns the entries and the hit/miss counters,
so a policy is a few dozen lines of bookkeeping. :func:`replay_trace` runs a recorded access
trace (:func:`load_trace` reads one from JSON lines) through a memory and reports its hit rate.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mnemobot.memory.ops import json_safe

__all__ = [
    "POLICIES",
    "CountMinSketch",
    "EvictionPolicy",
    "FIFOPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "NoMemoryPolicy",
    "ShortTermConfig",
    "ShortTermMemory",
    "ShortTermStats",
    "StateChange",
    "TraceResult",
    "WTinyLFUPolicy",
    "load_trace",
    "make_policy",
    "register_policy",
    "replay_trace",
]


# --------------------------------------------------------------------------------------------
# Entries and configuration


@dataclass(frozen=True)
class StateChange:
    """The latest known change of one object or place.

    * ``key``: node id (``"obj:7"``, ``"place:drawer"``), the memory's key;
    * ``label``: the object's label (``"red_cube"``);
    * ``change``: what happened (``"moved"``, ``"appeared"``, ``"missing"``, ``"grasped"``,
      ``"released"``, ``"opened"``, ``"closed"``, ...);
    * ``time``: memory clock (s) when it happened;
    * ``data``: JSON-able details, e.g. ``{"place": "tray", "position": [x, y, z]}``; numpy
      arrays and scalars are converted to plain lists and floats on construction.
    """

    key: str
    label: str
    change: str
    time: float
    data: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"StateChange.key must be a non-empty string, got {self.key!r}")
        time = float(self.time)
        if not math.isfinite(time):
            raise ValueError(f"StateChange.time must be finite, got {self.time!r}")
        if not isinstance(self.data, Mapping):
            raise TypeError(f"StateChange.data must be a mapping, got {type(self.data).__name__}")
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "data", json_safe(dict(self.data)))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``{"key", "label", "change", "time", "data"}``."""
        return {"key": self.key, "label": self.label, "change": self.change, "time": self.time,
                "data": json_safe(self.data)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StateChange:
        """Inverse of :meth:`to_dict`; ``data`` may be absent. Missing fields raise ValueError."""
        missing = [k for k in ("key", "label", "change", "time") if k not in d]
        if missing:
            raise ValueError(f"StateChange dict lacks {', '.join(missing)}: {dict(d)!r}")
        return cls(str(d["key"]), str(d["label"]), str(d["change"]), float(d["time"]),
                   dict(d.get("data") or {}))


@dataclass(frozen=True)
class ShortTermConfig:
    """How big short-term memory is and how it chooses what to forget.

    * ``capacity``: most entries held (>= 0; 0 holds nothing);
    * ``policy``: a name in :data:`POLICIES` (``"fifo"``, ``"lru"``, ``"lfu"``, ``"w-tinylfu"``,
      ``"none"``);
    * ``window_fraction``: W-TinyLFU's admission-window share of ``capacity``, in [0, 1]; the
      window always holds at least one entry;
    * ``sketch_width``: counters per row of W-TinyLFU's count-min sketch (``None``: the next
      power of two >= 4 x capacity, at least 16).
    """

    capacity: int = 32
    policy: str = "lru"
    window_fraction: float = 0.01
    sketch_width: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int):
            raise TypeError(f"capacity must be an int, got {self.capacity!r}")
        if self.capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {self.capacity}")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown short-term memory policy {self.policy!r}; "
                             f"known: {', '.join(sorted(POLICIES))}")
        if not 0.0 <= float(self.window_fraction) <= 1.0:
            raise ValueError(f"window_fraction must be in [0, 1], got {self.window_fraction}")
        if self.sketch_width is not None and (isinstance(self.sketch_width, bool)
                                              or not isinstance(self.sketch_width, int)
                                              or self.sketch_width < 1):
            raise ValueError(f"sketch_width must be a positive int or None, got {self.sketch_width!r}")


# --------------------------------------------------------------------------------------------
# Policy protocol and registry


@runtime_checkable
class EvictionPolicy(Protocol):
    """Decides which keys short-term memory keeps. Tracks keys only, never entries.

    The memory calls exactly one of these per operation:

    * :meth:`hit`: a held key was read or overwritten;
    * :meth:`miss`: a key that is not held was looked up (policies that learn from the whole
      access stream, like W-TinyLFU, count it; the others ignore it);
    * :meth:`insert`: a key that is not held is written. Returns the key that is no longer held
      because of it, or ``None``. That key may be the new key itself when the policy declines to
      keep it (capacity 0). At most one key leaves per insert.
    """

    capacity: int

    def hit(self, key: str) -> None: ...

    def miss(self, key: str) -> None: ...

    def insert(self, key: str) -> str | None: ...

    def remove(self, key: str) -> None:
        """Forget ``key`` (no-op when not held)."""
        ...

    def clear(self) -> None: ...

    def __len__(self) -> int: ...

    def __contains__(self, key: object) -> bool: ...


PolicyFactory = Callable[[ShortTermConfig], EvictionPolicy]

POLICIES: dict[str, PolicyFactory] = {}
"""Eviction policies by name; each value builds a policy from a :class:`ShortTermConfig`."""


def register_policy(name: str) -> Callable[[PolicyFactory], PolicyFactory]:
    """Class decorator: make a policy available to :class:`ShortTermConfig` as ``name``."""

    def deco(factory: PolicyFactory) -> PolicyFactory:
        if name in POLICIES:
            raise ValueError(f"short-term memory policy {name!r} is already registered")
        POLICIES[name] = factory
        return factory

    return deco


def make_policy(config: ShortTermConfig) -> EvictionPolicy:
    """The policy ``config.policy`` names, sized by ``config``."""
    try:
        factory = POLICIES[config.policy]
    except KeyError:
        raise ValueError(f"unknown short-term memory policy {config.policy!r}; "
                         f"known: {', '.join(sorted(POLICIES))}") from None
    return factory(config)


# --------------------------------------------------------------------------------------------
# Simple policies


@register_policy("none")
class NoMemoryPolicy:
    """Holds nothing: every insert is declined, every lookup misses. The no-memory baseline."""

    def __init__(self, config: ShortTermConfig) -> None:
        self.capacity = 0

    def hit(self, key: str) -> None:
        raise KeyError(key)  # nothing is ever held, so the memory never reports a hit

    def miss(self, key: str) -> None:
        pass

    def insert(self, key: str) -> str | None:
        return key

    def remove(self, key: str) -> None:
        pass

    def clear(self) -> None:
        pass

    def __len__(self) -> int:
        return 0

    def __contains__(self, key: object) -> bool:
        return False


class _OrderedPolicy:
    """Shared base of FIFO and LRU: keys in an ordered dict, the front one is evicted first."""

    _refresh_on_hit = False

    def __init__(self, config: ShortTermConfig) -> None:
        self.capacity = config.capacity
        self._order: OrderedDict[str, None] = OrderedDict()

    def hit(self, key: str) -> None:
        if self._refresh_on_hit:
            self._order.move_to_end(key)

    def miss(self, key: str) -> None:
        pass

    def insert(self, key: str) -> str | None:
        if self.capacity == 0:
            return key
        victim = None
        if len(self._order) >= self.capacity:
            victim, _ = self._order.popitem(last=False)
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


@register_policy("fifo")
class FIFOPolicy(_OrderedPolicy):
    """First in, first out: evicts the key inserted longest ago, however often it is used.

    Overwriting a held key keeps its place in the queue (it is an update, not an insertion).
    """

    _refresh_on_hit = False


@register_policy("lru")
class LRUPolicy(_OrderedPolicy):
    """Least recently used: every read or write moves a key to the back; the front one goes."""

    _refresh_on_hit = True


@register_policy("lfu")
class LFUPolicy:
    """Least frequently used among the held keys; ties go to the least recently used.

    O(1) per operation with frequency buckets: ``_buckets[f]`` is an ordered dict of the keys
    accessed exactly ``f`` times, in order of their last access (a key moves to the back of the
    next bucket on every access, so bucket order is recency order), and ``_min`` is the lowest
    non-empty frequency. The victim is the front key of ``_buckets[_min]``. Counts are kept only
    for held keys ("in-cache" LFU): an evicted key that returns starts again at 1.
    """

    def __init__(self, config: ShortTermConfig) -> None:
        self.capacity = config.capacity
        self._freq: dict[str, int] = {}
        self._buckets: dict[int, OrderedDict[str, None]] = {}
        self._min = 0

    def frequency(self, key: str) -> int:
        """Accesses of ``key`` since it was inserted (0 when not held)."""
        return self._freq.get(key, 0)

    def hit(self, key: str) -> None:
        f = self._freq[key]
        bucket = self._buckets[f]
        del bucket[key]
        if not bucket:
            del self._buckets[f]
            if self._min == f:
                self._min = f + 1
        self._freq[key] = f + 1
        self._buckets.setdefault(f + 1, OrderedDict())[key] = None

    def miss(self, key: str) -> None:
        pass

    def insert(self, key: str) -> str | None:
        if self.capacity == 0:
            return key
        victim = None
        if len(self._freq) >= self.capacity:
            bucket = self._buckets[self._min]
            victim, _ = bucket.popitem(last=False)
            if not bucket:
                del self._buckets[self._min]
            del self._freq[victim]
        self._freq[key] = 1
        self._buckets.setdefault(1, OrderedDict())[key] = None
        self._min = 1
        return victim

    def remove(self, key: str) -> None:
        f = self._freq.pop(key, None)
        if f is None:
            return
        bucket = self._buckets[f]
        del bucket[key]
        if not bucket:
            del self._buckets[f]
            if self._min == f:
                self._min = min(self._buckets, default=0)

    def clear(self) -> None:
        self._freq.clear()
        self._buckets.clear()
        self._min = 0

    def __len__(self) -> int:
        return len(self._freq)

    def __contains__(self, key: object) -> bool:
        return key in self._freq


# --------------------------------------------------------------------------------------------
# W-TinyLFU


_HALVE = bytes(i >> 1 for i in range(256))
_MASK64 = (1 << 64) - 1
# Odd 64-bit multipliers (from splitmix64 / Caffeine's sketch seeds): one independent-ish hash per row.
_ROW_SEEDS = (0x97CB3127C4F8B25B, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15)


class CountMinSketch:
    """Approximate access frequencies in a few bytes per tracked key (the "TinyLFU" part).

    A count-min sketch (Cormode & Muthukrishnan, 2005) with four rows of ``width`` counters: a
    key increments one counter per row, chosen by a per-row hash, and its estimate is the
    minimum of its four counters, which over-counts only through collisions. As in TinyLFU,

    * counters saturate at 15 (what 4-bit counters hold: the policy only needs to tell "hot"
      from "cold", not exact counts);
    * increments are *conservative* (only the counters equal to the current minimum grow),
      which reduces over-counting from collisions;
    * after ``sample_size`` increments every counter is halved ("reset" / aging), so the sketch
      describes the recent access distribution and a key that was hot long ago fades. Saturated
      increments do not count towards the sample.

    Hashes come from ``zlib.crc32`` of the key mixed with a per-row odd multiplier, so estimates
    are the same in every process (Python's ``hash`` of a string is salted per process).
    Counters live in ``bytearray`` rows; halving is one ``bytes.translate`` per row.
    """

    MAX_COUNT = 15
    DEPTH = 4

    def __init__(self, width: int, sample_size: int) -> None:
        if width < 1 or sample_size < 1:
            raise ValueError(f"bad sketch shape: width={width}, sample_size={sample_size} (both must be >= 1)")
        self.width = width
        self.sample_size = sample_size
        self.additions = 0
        self.resets = 0
        self._rows = [bytearray(width) for _ in range(self.DEPTH)]

    def _indexes(self, key: str) -> tuple[int, int, int, int]:
        # Multiply by an odd per-row constant, then map the 64-bit product onto [0, width) by its
        # high bits ("multiply-shift" hashing with Lemire's multiply-high range reduction).
        h = zlib.crc32(key.encode("utf-8")) + 1
        w = self.width
        s0, s1, s2, s3 = _ROW_SEEDS
        return ((((h * s0) & _MASK64) * w) >> 64, (((h * s1) & _MASK64) * w) >> 64,
                (((h * s2) & _MASK64) * w) >> 64, (((h * s3) & _MASK64) * w) >> 64)

    def frequency(self, key: str) -> int:
        """Estimated recent accesses of ``key`` (0..15)."""
        r0, r1, r2, r3 = self._rows
        i0, i1, i2, i3 = self._indexes(key)
        return min(r0[i0], r1[i1], r2[i2], r3[i3])

    def increment(self, key: str) -> None:
        """Count one access of ``key``; halves every counter after ``sample_size`` increments."""
        r0, r1, r2, r3 = self._rows
        i0, i1, i2, i3 = self._indexes(key)
        c0, c1, c2, c3 = r0[i0], r1[i1], r2[i2], r3[i3]
        low = min(c0, c1, c2, c3)
        if low >= self.MAX_COUNT:
            return
        up = low + 1
        if c0 == low:
            r0[i0] = up
        if c1 == low:
            r1[i1] = up
        if c2 == low:
            r2[i2] = up
        if c3 == low:
            r3[i3] = up
        self.additions += 1
        if self.additions >= self.sample_size:
            self.age()

    def age(self) -> None:
        """Halve every counter (and the addition count): the TinyLFU reset operation."""
        self._rows = [bytearray(row.translate(_HALVE)) for row in self._rows]
        self.additions //= 2
        self.resets += 1

    def clear(self) -> None:
        self._rows = [bytearray(self.width) for _ in range(self.DEPTH)]
        self.additions = 0


@register_policy("w-tinylfu")
class WTinyLFUPolicy:
    """Window TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission
    Policy", ACM ToS 2017), laid out as in the Caffeine cache.

    LRU adapts quickly but a single scan of one-off keys flushes everything it holds; LFU keeps
    hot keys but needs per-key counts and is slow to let go of formerly hot ones. W-TinyLFU
    combines a small recency region with a frequency-gated main region:

    * **window**: an LRU of ``max(1, round(window_fraction x capacity))`` keys. Every new key
      enters here, so bursts of fresh keys still get hits while they are fresh.
    * **main**: the remaining capacity as a segmented LRU (SLRU): a *probation* segment (20%)
      and a *protected* segment (80%). Keys admitted from the window enter probation; a hit in
      probation promotes a key to protected; when protected overflows, its LRU key is demoted
      back to probation. The main region's victim is the LRU key of probation (of protected,
      when probation is empty).
    * **admission**: when the window overflows, its LRU key is the *candidate*. If main has
      room the candidate moves in; otherwise it is admitted only if the sketch's estimated
      frequency of the candidate is strictly greater than that of main's victim, and whichever
      loses is evicted. One-off keys (a scan) thus pass through the window and die there,
      leaving the frequently used keys in main alone.
    * **frequency sketch**: a :class:`CountMinSketch` fed with *every* access, hits, misses and
      writes alike, so it knows about keys that are not (or no longer) held. It is aged (all
      counters halved) after ``10 x capacity`` increments, TinyLFU's sample size W.

    Differences from Caffeine, kept simple on purpose: no doorkeeper Bloom filter in front of
    the sketch (Caffeine omits it too), no adaptive hill-climbing of the window size, and no
    random admission of warm candidates against hash-flooding (admission here is deterministic).
    """

    PROTECTED_FRACTION = 0.8

    def __init__(self, config: ShortTermConfig) -> None:
        self.capacity = cap = config.capacity
        self.window_capacity = min(cap, max(1, round(config.window_fraction * cap))) if cap else 0
        self.main_capacity = cap - self.window_capacity
        self.protected_capacity = int(self.PROTECTED_FRACTION * self.main_capacity)
        width = config.sketch_width or max(16, 1 << max(0, 4 * cap - 1).bit_length())
        self.sketch = CountMinSketch(width, sample_size=max(1, 10 * cap))
        self._window: OrderedDict[str, None] = OrderedDict()
        self._probation: OrderedDict[str, None] = OrderedDict()
        self._protected: OrderedDict[str, None] = OrderedDict()

    def segment_of(self, key: str) -> str | None:
        """``"window"``, ``"probation"``, ``"protected"`` or ``None``: where ``key`` is held."""
        for name, seg in (("window", self._window), ("probation", self._probation),
                          ("protected", self._protected)):
            if key in seg:
                return name
        return None

    def hit(self, key: str) -> None:
        self.sketch.increment(key)
        if key in self._window:
            self._window.move_to_end(key)
        elif key in self._protected:
            self._protected.move_to_end(key)
        else:  # probation -> protected, demoting protected's LRU key when it overflows
            del self._probation[key]
            self._protected[key] = None
            if len(self._protected) > self.protected_capacity:
                demoted, _ = self._protected.popitem(last=False)
                self._probation[demoted] = None

    def miss(self, key: str) -> None:
        self.sketch.increment(key)

    def insert(self, key: str) -> str | None:
        self.sketch.increment(key)
        if self.capacity == 0:
            return key
        self._window[key] = None
        if len(self._window) <= self.window_capacity:
            return None
        candidate, _ = self._window.popitem(last=False)
        if len(self._probation) + len(self._protected) < self.main_capacity:
            self._probation[candidate] = None
            return None
        if self.main_capacity == 0:
            return candidate
        main = self._probation if self._probation else self._protected
        victim = next(iter(main))
        if self.sketch.frequency(candidate) > self.sketch.frequency(victim):
            del main[victim]
            self._probation[candidate] = None
            return victim
        return candidate

    def remove(self, key: str) -> None:
        for seg in (self._window, self._probation, self._protected):
            seg.pop(key, None)

    def clear(self) -> None:
        self._window.clear()
        self._probation.clear()
        self._protected.clear()
        self.sketch.clear()

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    def __contains__(self, key: object) -> bool:
        return key in self._window or key in self._probation or key in self._protected


# --------------------------------------------------------------------------------------------
# The memory


@dataclass(frozen=True)
class ShortTermStats:
    """Lookup counters since construction or :meth:`ShortTermMemory.clear`.

    ``evictions`` counts entries dropped for lack of room, including a new entry the policy
    declined to hold (every write under ``"none"``).
    """

    hits: int
    misses: int
    evictions: int

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Hits per lookup; 0.0 before any lookup."""
        return self.hits / self.lookups if self.lookups else 0.0


class ShortTermMemory:
    """A bounded table of the latest :class:`StateChange` per key, evicting by a pluggable policy.

    Writes (:meth:`record`) and lookups (:meth:`get`) both count as accesses for the policy;
    :meth:`peek` and :meth:`recent` read without touching recency, frequency or the counters.
    """

    def __init__(self, config: ShortTermConfig | None = None) -> None:
        self.config = config if config is not None else ShortTermConfig()
        self._policy = make_policy(self.config)
        self._entries: dict[str, StateChange] = {}
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self._hits = self._misses = self._evictions = 0

    @property
    def policy(self) -> EvictionPolicy:
        return self._policy

    @property
    def capacity(self) -> int:
        return self._policy.capacity

    def record(self, change: StateChange) -> StateChange | None:
        """Insert ``change`` or replace the entry for ``change.key``.

        Returns the entry evicted to make room (possibly ``change`` itself, when the policy holds
        nothing), or ``None``.
        """
        if not isinstance(change, StateChange):
            raise TypeError(f"record() takes a StateChange, got {type(change).__name__}")
        key = change.key
        self._seq[key] = self._next_seq
        self._next_seq += 1
        if key in self._entries:
            self._entries[key] = change
            self._policy.hit(key)
            return None
        victim = self._policy.insert(key)
        if victim == key:
            del self._seq[key]
            self._evictions += 1
            return change
        self._entries[key] = change
        if victim is None:
            return None
        self._evictions += 1
        self._seq.pop(victim, None)
        return self._entries.pop(victim)

    def get(self, key: str) -> StateChange | None:
        """Look ``key`` up: counts a hit or a miss and tells the policy."""
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            self._policy.miss(key)
        else:
            self._hits += 1
            self._policy.hit(key)
        return entry

    def peek(self, key: str) -> StateChange | None:
        """The entry for ``key`` without counting or touching anything."""
        return self._entries.get(key)

    def discard(self, key: str) -> StateChange | None:
        """Forget ``key`` (not an eviction); returns its entry, if it was held."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._seq.pop(key, None)
            self._policy.remove(key)
        return entry

    def recent(self, n: int | None = None, since: float | None = None) -> list[StateChange]:
        """Held entries newest first (by ``time``, then by write order).

        ``since``: only entries with ``time >= since``; ``n``: at most that many.
        """
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        items = [c for c in self._entries.values() if since is None or c.time >= since]
        items.sort(key=lambda c: (c.time, self._seq[c.key]), reverse=True)
        return items if n is None else items[:n]

    def keys(self) -> list[str]:
        """Held keys, in the order they were first written."""
        return list(self._entries)

    @property
    def stats(self) -> ShortTermStats:
        return ShortTermStats(self._hits, self._misses, self._evictions)

    def clear(self) -> None:
        """Drop every entry, reset the counters and the policy's state."""
        self._entries.clear()
        self._seq.clear()
        self._policy.clear()
        self._hits = self._misses = self._evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return (f"ShortTermMemory(policy={self.config.policy!r}, capacity={self.capacity}, "
                f"held={len(self)})")


# --------------------------------------------------------------------------------------------
# Traces


@dataclass(frozen=True)
class TraceResult:
    """Outcome of :func:`replay_trace`: lookup hits and misses, and entries evicted."""

    hits: int
    misses: int
    hit_rate: float
    evictions: int


_OPS = ("put", "get")


def _check_event(ev: Any) -> str | None:
    """Why ``ev`` is not a valid trace event, or ``None`` when it is."""
    if not isinstance(ev, Mapping):
        return f"expected a JSON object, got {type(ev).__name__}"
    for name in ("t", "op", "key"):
        if name not in ev:
            return f"missing field {name!r}"
    t = ev["t"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        return f"'t' must be a finite number, got {t!r}"
    if ev["op"] not in _OPS:
        return f"'op' must be one of {', '.join(_OPS)}, got {ev['op']!r}"
    if not isinstance(ev["key"], str) or not ev["key"]:
        return f"'key' must be a non-empty string, got {ev['key']!r}"
    for name in ("label", "change"):
        if name in ev and not isinstance(ev[name], str):
            return f"{name!r} must be a string, got {ev[name]!r}"
    if "data" in ev and not isinstance(ev["data"], Mapping):
        return f"'data' must be an object, got {ev['data']!r}"
    return None


def replay_trace(events: Iterable[Mapping[str, Any]], config: ShortTermConfig) -> TraceResult:
    """Run ``events`` through a fresh :class:`ShortTermMemory` built from ``config``.

    Each event is ``{"t": float, "op": "put" | "get", "key": str, "label"?: str,
    "change"?: str, "data"?: dict}``: a put records a :class:`StateChange` (label defaults to
    the key, change to ``"seen"``), a get looks the key up. Hit rate is over the gets.
    """
    mem = ShortTermMemory(config)
    record, get = mem.record, mem.get
    for i, ev in enumerate(events):
        problem = _check_event(ev)
        if problem is not None:
            raise ValueError(f"trace event {i}: {problem}")
        if ev["op"] == "get":
            get(ev["key"])
        else:
            key = ev["key"]
            record(StateChange(key, ev.get("label", key), ev.get("change", "seen"), ev["t"],
                               ev.get("data") or {}))
    s = mem.stats
    return TraceResult(s.hits, s.misses, s.hit_rate, s.evictions)


def load_trace(path: str | Path) -> list[dict[str, Any]]:
    """Read a trace from JSON lines (one event per line; blank lines are skipped).

    Raises ValueError naming the file and the line number of the first malformed line.
    """
    path = Path(path)
    events: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            problem = _check_event(ev)
            if problem is not None:
                raise ValueError(f"{path}:{lineno}: {problem}")
            events.append(ev)
    return events
