"""Retrieval over the scene graph: where is X, what is in/on Y, what changed, when last seen,
objects matching a description, and a token-budgeted memory context for planner prompts.

All answers come from the in-process graph and its indices (a label index, a time-ordered
change index, a spatial hash and an embedding matrix), so a query does not scan memory: the
cost is that of the answer, not of the number of stored objects or logged events.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mnemobot.memory.embedding import describe
from mnemobot.memory.graph import HELD, MISSING, PRESENT, SceneGraph

__all__ = ["Change", "Hit", "MemoryQuery", "approx_tokens", "build_context"]

_STATE_RANK = {PRESENT: 0, HELD: 0, MISSING: 1}


@dataclass(frozen=True)
class Hit:
    """One object answer with its score (1.0 for exact matches, cosine similarity for searches)."""

    key: str
    label: str
    score: float
    position: list[float]
    place: str | None
    relation: str | None
    room: str | None
    state: str
    last_seen: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        where = {HELD: "in the gripper", MISSING: "missing"}.get(self.state)
        if where is None:
            where = f"{self.relation or 'on'} the {_words(self.place)}" if self.place else \
                f"at ({self.position[0]:.2f}, {self.position[1]:.2f}, {self.position[2]:.2f})"
            if self.room:
                where += f" ({_words(self.room)})"
        elif self.state == MISSING and self.place:
            where = f"missing (last seen {self.relation or 'on'} the {_words(self.place)})"
        return f"{_words(self.label)}: {where}, seen t={self.last_seen:.1f}s"


@dataclass(frozen=True)
class Change:
    """A logged change of an object: the newest cause after the query time."""

    key: str
    label: str
    cause: str
    time: float
    place: str | None
    state: str


def _words(name: str | None) -> str:
    return (name or "").replace("_", " ")


def _key_of(text: str) -> str:
    return text.strip().lower().replace(" ", "_")


class _EmbeddingIndex:
    """Rows of object-description embeddings, re-encoded only when a description changes."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.keys: list[str] = []
        self.row: dict[str, int] = {}
        self.text: dict[str, str] = {}
        self.matrix = np.zeros((0, 1), dtype=np.float32)

    def sync(self, items: dict[str, str | None]) -> None:
        """Re-encode the keys whose description changed; ``None`` removes a key."""
        for k in [k for k, text in items.items() if text is None and k in self.row]:
            i, last = self.row.pop(k), len(self.keys) - 1
            if i != last:  # swap-remove
                moved = self.keys[last]
                self.keys[i], self.row[moved] = moved, i
                self.matrix[i] = self.matrix[last]
            self.keys.pop()
            self.text.pop(k, None)
        stale = [k for k, text in items.items() if text is not None and self.text.get(k) != text]
        if not stale:
            return
        vecs = np.asarray(self.embedder.encode([items[k] for k in stale]), dtype=np.float32)
        if self.matrix.shape[1] != vecs.shape[1]:
            self.matrix = np.zeros((len(self.matrix), vecs.shape[1]), dtype=np.float32)
        need = len(self.keys) + sum(1 for k in stale if k not in self.row)
        if need > len(self.matrix):
            grown = np.zeros((max(need, 2 * len(self.matrix), 64), vecs.shape[1]), dtype=np.float32)
            grown[: len(self.keys)] = self.matrix[: len(self.keys)]
            self.matrix = grown
        for k, v in zip(stale, vecs, strict=True):
            if k not in self.row:
                self.row[k] = len(self.keys)
                self.keys.append(k)
            self.matrix[self.row[k]] = v
            self.text[k] = items[k]

    def top_k(self, query: str, k: int) -> list[tuple[str, float]]:
        n = len(self.keys)
        if n == 0:
            return []
        q = np.asarray(self.embedder.encode([query]), dtype=np.float32)[0]
        scores = self.matrix[:n] @ q
        k = min(k, n)
        idx = np.argpartition(-scores, k - 1)[:k]
        idx = idx[np.lexsort((idx, -scores[idx]))]
        return [(self.keys[i], float(scores[i])) for i in idx]


class MemoryQuery:
    """Questions to memory. ``embedder``: any object with ``encode(texts) -> (n, d)`` normalised
    rows (see :mod:`mnemobot.memory.embedding`); without one, :meth:`search` matches words."""

    def __init__(self, graph: SceneGraph, embedder: Any | None = None,
                 describe: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.graph = graph
        self.embedder = embedder
        self._describe = describe or _describe_node
        self._index = _EmbeddingIndex(embedder) if embedder is not None else None
        self._synced = 0

    # -- helpers ------------------------------------------------------------------------------------
    def hit(self, key: str, score: float = 1.0) -> Hit:
        d = self.graph.node(key)
        return Hit(key, d["label"], float(score), [float(v) for v in d["position"]], d.get("place"),
                   d.get("relation"), d.get("room"), d.get("state", PRESENT), float(d.get("last_seen", 0.0)),
                   float(d.get("confidence", 0.0)))

    def _keys(self, label: str) -> list[str]:
        """Objects of ``label`` memory believes in (a single sighting of a detector that makes
        false detections is not yet an object)."""
        return [k for k in self.graph.by_label.get(_key_of(label), ()) if self.graph.confirmed(k)]

    def place_key(self, name: str) -> str | None:
        """Node id of a place by name or alias (None if the map has no such place)."""
        key = _key_of(name)
        if f"place:{key}" in self.graph.g:
            return f"place:{key}"
        for n in self.graph.by_layer("place"):
            if key in self.graph.node(n).get("aliases", ()):
                return n
        return None

    # -- questions ------------------------------------------------------------------------------------
    def where(self, label: str, k: int = 5) -> list[Hit]:
        """Objects with this label: present/held first, then missing; most recently seen first."""
        keys = self._keys(label)
        keys.sort(key=lambda n: (_STATE_RANK.get(self.graph.node(n).get("state"), 2),
                                 -float(self.graph.node(n).get("last_seen", 0.0))))
        return [self.hit(n) for n in keys[:k]]

    def contents(self, container: str) -> list[Hit]:
        """Objects on/in a place (name or alias) or on another object (label)."""
        target = self.place_key(container)
        targets = [target] if target else [n for n in self._keys(container)]
        out: list[Hit] = []
        for t in targets:
            for u, _v, rel in self.graph.g.in_edges(t, keys=True):
                if rel in ("on", "in") and self.graph.node(u).get("layer") == "object":
                    out.append(self.hit(u))
        out.sort(key=lambda h: -h.last_seen)
        return out

    def state(self, name: str) -> str | None:
        """``open``/``closed`` for containers; an object's ``present``/``missing``/``held``."""
        key = self.place_key(name)
        if key is not None:
            return self.graph.node(key).get("state")
        hits = self.where(name, k=1)
        return hits[0].state if hits else None

    def changed_since(self, t: float, until: float | None = None, limit: int | None = None) -> list[Change]:
        """Objects whose memory changed after ``t`` (and, with ``until``, whose newest change is
        not after it), oldest first; ``limit`` keeps the newest ``limit``."""
        out: list[Change] = []
        g = self.graph.g
        for key in reversed(self.graph.changed_since(t)):  # newest first, stop at the limit
            if limit is not None and len(out) >= limit:
                break
            if key not in g:
                continue
            d = g.nodes[key]
            when = float(d.get("last_changed", d.get("last_seen", 0.0)))
            if until is not None and when > until:
                continue
            out.append(Change(key, d["label"], str(d.get("last_cause", "changed")), when, d.get("place"),
                              d.get("state", PRESENT)))
        out.reverse()
        return out

    def position_at(self, key: str, t: float) -> list[float] | None:
        """Remembered position of an object at time ``t`` (from its pose history)."""
        hist = self.graph.node(key).get("history", [])
        best = None
        for entry in hist:
            if entry[0] <= t:
                best = entry
            else:
                break
        return None if best is None else [float(v) for v in best[1:4]]

    def moved_between(self, t1: float, t2: float, min_distance: float = 0.15) -> list[str]:
        """Labels whose remembered position at ``t2`` differs from that at ``t1`` by more than
        ``min_distance`` (objects first seen after ``t1`` are not moves)."""
        out: list[str] = []
        for key in self.graph.changed_since(t1):
            if key not in self.graph.g:
                continue
            a, b = self.position_at(key, t1), self.position_at(key, t2)
            if a is not None and b is not None and math.dist(a, b) > min_distance:
                out.append(self.graph.node(key)["label"])
        return sorted(set(out))

    def last_seen(self, label: str) -> float | None:
        times = [float(self.graph.node(n).get("last_seen", 0.0)) for n in self._keys(label)]
        return max(times) if times else None

    def first_seen(self, label: str) -> float | None:
        times = [float(self.graph.node(n).get("first_seen", 0.0)) for n in self._keys(label)]
        return min(times) if times else None

    def last_moved(self, label: str) -> float | None:
        times = [float(h[0]) for n in self._keys(label) for h in self.graph.node(n).get("history", [])[1:]]
        return max(times) if times else None

    def origin(self, label: str, since: float | None = None) -> str | None:
        """The first place memory holds for this object (after ``since``): "where it was".

        The object in the hand speaks first (it is the one being put back); otherwise the
        earliest place any object of this label was seen at, whatever order memory keeps them in.
        """
        best: tuple[int, float, str] | None = None
        for n in self._keys(label):
            d = self.graph.node(n)
            rank = 0 if d.get("state") == HELD else 1
            for entry in d.get("history", []):
                if entry[4] and (since is None or entry[0] >= since):
                    cand = (rank, float(entry[0]), str(entry[4]))
                    if best is None or cand < best:
                        best = cand
                    break
        return None if best is None else best[2]

    def count(self, label: str) -> int:
        return len(self._keys(label))

    def _sync(self) -> None:
        """Bring the embedding index up to date with the objects changed since the last sync."""
        if 0 < self._synced <= self.graph.change_count:
            changed = set(self.graph.changes_from(self._synced))
        else:
            changed = set(self.graph.by_layer("object")) | set(self._index.row)
        self._synced = self.graph.change_count
        g = self.graph.g
        self._index.sync({k: (self._describe(g.nodes[k]) if k in g else None) for k in changed})

    def search(self, description: str, k: int = 5) -> list[Hit]:
        """Objects matching a free-text description, best first, with similarity scores."""
        text = description.strip()
        if not text:
            return []
        if self._index is None:
            items = {n: self._describe(self.graph.node(n)) for n in self.graph.by_layer("object")}
            words = set(re.findall(r"[a-z]+", text.lower()))
            scored = []
            for n, desc in items.items():
                dw = set(re.findall(r"[a-z]+", desc.lower()))
                if words & dw:
                    scored.append((n, len(words & dw) / math.sqrt(len(words) * len(dw))))
            scored.sort(key=lambda x: (-x[1], x[0]))
            return [self.hit(n, s) for n, s in scored[:k]]
        self._sync()
        return [self.hit(n, s) for n, s in self._index.top_k(text, k)]


def _describe_node(d: dict[str, Any]) -> str:
    return describe(d["label"], d.get("colour"), d.get("place"), relation=d.get("relation") or "on")


def _recent_lines(query: MemoryQuery, skip: set[str], cap: int) -> Iterator[str]:
    """Other objects, most recently changed first (newest end of the change index), described
    only as they are read: the context builder touches only the objects it prints."""
    graph = query.graph
    done: set[str] = set()
    for key in graph.changes_newest_first():
        if len(done) >= cap:
            return
        if key in done or key not in graph.g or graph.node(key)["label"] in skip:
            continue
        done.add(key)
        yield query.hit(key).describe()


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: about 4/3 tokens per word for English with names."""
    return math.ceil(len(text.split()) * 4 / 3)


def build_context(query: MemoryQuery, instruction: str, budget_tokens: int = 400,
                  recent: Sequence[Any] = (), count_tokens: Callable[[str], int] = approx_tokens,
                  now: float | None = None) -> str:
    """Render the memory relevant to ``instruction`` for a planner prompt, within a token budget.

    Priority: objects the instruction names (where, state, last seen), containers it names
    (state and contents), recent short-term changes (``recent``: newest-first
    :class:`~mnemobot.memory.short_term.StateChange`-like records), then other remembered objects,
    most recently seen first. Lines are added while they fit; the result never exceeds
    ``budget_tokens`` by ``count_tokens``.
    """
    graph = query.graph
    text = " " + re.sub(r"[^a-z0-9 ]", " ", instruction.lower()) + " "
    labels = sorted(graph.by_label)
    named = [lb for lb in labels if f" {lb.replace('_', ' ')} " in text]
    places = [n for n in graph.by_layer("place") if f" {graph.node(n)['name'].replace('_', ' ')} " in text]
    sections: list[tuple[str, Iterable[str]]] = []
    sections.append(("objects named in the task:",
                     [h.describe() for lb in named for h in query.where(lb, k=2)] or
                     [f"{_words(lb)}: not in memory" for lb in named]))
    lines = []
    for p in places:
        d = graph.node(p)
        state = f" ({d['state']})" if d.get("state") else ""
        inside = ", ".join(_words(h.label) for h in query.contents(d["name"])) or "nothing remembered"
        lines.append(f"{_words(d['name'])}{state}: {inside}")
    sections.append(("places named in the task:", lines))
    sections.append(("recent changes:", [
        f"t={c.time:.1f}s {_words(c.label)} {c.change}" + (f" ({_words(c.data.get('place'))})" if c.data.get("place") else "")
        for c in recent]))
    sections.append(("other remembered objects:", _recent_lines(query, set(named), budget_tokens // 6 + 1)))
    header = "memory" + (f" (now t={now:.1f}s)" if now is not None else "") + ":"
    out = [header]
    used = count_tokens(header)
    for title, body in sections:
        lines = iter(body)
        first = next(lines, None)
        cost = count_tokens(title)
        if first is None or used + cost + count_tokens(first) > budget_tokens:
            continue
        out.append(title)
        used += cost
        for line in itertools.chain([first], lines):
            c = count_tokens("- " + line)
            if used + c > budget_tokens:
                break
            out.append("- " + line)
            used += c
    return "\n".join(out)
