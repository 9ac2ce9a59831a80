"""Memory questions: a file format, answers from memory, scoring against gold, and a report.

A recorded episode (a ROS 2 bag) is replayed through perception and memory; when the replay
reaches a question's time the question is answered from what memory holds at that moment and,
when the file carries the gold answer, scored.

**Format.** JSON lines, one question per line; blank lines and lines starting with ``#`` are
skipped. Common fields:

* ``id``: string or integer, unique in the file;
* ``t``: float >= 0, when the question is asked, in seconds since the bag's first message
  ("bag time"); every time in questions and answers is bag time;
* ``type``: one of the types below; ``text``: the question in words (string);
* ``answer``: the gold answer (optional: a file without gold is answered, not scored).

Types, their fields and the form of their ``answer``:

==============  ===================================  =============================================
``type``        fields                               ``answer``
==============  ===================================  =============================================
``locate``      ``object``: label                    ``{"position": [x, y, z], "receptacle": name}``
``state``       ``object``: place or object          ``{"state": "open" | "closed" | "present" |
                                                     "missing" | "held"}``
``changed``     ``window``: ``[t1, t2]``             ``{"objects": [labels]}``
``last_seen``   ``object``: label                    ``{"time": seconds}``
``count``       ``label``: label                     ``{"count": n}``
``order``       ``objects``: ``[a, b]``,             ``{"first": label}``
                ``event``: ``"seen"`` | ``"moved"``
==============  ===================================  =============================================

* ``locate``: the object's centre in the world frame (metres; the centre of its remembered
  axis-aligned box) and what it rests on or in (a place name, or the label of the object under
  it; ``null`` when unknown or held). With several objects of the label, the most recently seen
  present or held one. Correct when the
  position is within ``tol_m`` (0.15 m) and, unless the gold receptacle is ``null``, the
  receptacle is the same.
* ``state``: ``open``/``closed`` for a container, ``present``/``missing``/``held`` for an object.
* ``changed``: the objects whose remembered position at ``t2`` is more than 0.15 m from that at
  ``t1`` (objects first seen after ``t1`` have not moved). Scored by the F1 of the label sets (1.0
  when both are empty); correct only when F1 is 1.0.
* ``last_seen``: when the object (any object with that label) was last seen; correct within
  ``tol_s`` (1.0 s).
* ``count``: how many distinct objects with that label memory has seen so far.
* ``order``: which of the two objects was seen first (``seen``) or moved first (``moved``).
  When only one of them was ever seen (moved), that one; when neither, or both at the same
  instant, ``null``.

Unknown objects are answered with ``null`` values (``{"position": null, "receptacle": null}``,
``{"state": null}``, ``{"time": null}``, ``{"first": null}``), and counted as 0. Labels are
compared after lower-casing and replacing spaces by underscores. An answers file holds
``{"id": ..., "answer": {...}}`` per line, one line for every question.

Example::

    {"id": "q1", "t": 12.5, "type": "locate", "text": "Where is the mug?", "object": "mug",
     "answer": {"position": [6.2, 4.55, 0.55], "receptacle": "living_room_table"}}
    {"id": "q2", "t": 30.0, "type": "changed", "text": "What moved since 10 s?",
     "window": [10.0, 30.0], "answer": {"objects": ["book", "mug"]}}
    {"id": "q3", "t": 30.0, "type": "order", "text": "Which moved first?", "objects": ["book", "mug"],
     "event": "moved", "answer": {"first": "mug"}}

**Short-term mode.** ``answer(..., changes_from="short-term")`` answers the change questions
(``changed``, ``state``, ``order`` with ``event: moved``) from the short-term memory table alone,
as a planner whose prompt carries only that table would: ``changed`` lists the entries whose
change is a move (``moved``, or ``released`` more than 0.15 m from where the object was picked
up) with a time in ``(t1, t2]``; ``state`` reads the ``place:<name>`` entry of a
container (``opened``/``closed``) or the newest entry of an object (``grasped`` -> held,
``missing``, else present); ``order`` compares the times of those move entries. The table keeps
only the latest change of each key and forgets keys its eviction policy drops, so these answers
degrade with the policy and capacity. The other types use the scene graph in both modes.

**Lookups.** Every question counts as planner lookups in short-term memory, in both modes, so
that its hit statistics reflect the questions: the key of the object or place a question names
(the most recently seen object with the label, ``place:<name>``, or ``label:<x>`` when memory does
not know it); both objects of an ``order`` question; each object a ``changed`` answer reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnemobot.memory.graph import HELD, MISSING, PRESENT
from mnemobot.memory.memory import Memory

__all__ = [
    "CHANGES_FROM",
    "QUESTION_TYPES",
    "Question",
    "QuestionError",
    "Report",
    "answer",
    "empty_answer",
    "f1",
    "load_questions",
    "score",
    "write_answers",
]

QUESTION_TYPES: dict[str, tuple[str, ...]] = {
    "locate": ("object",),
    "state": ("object",),
    "changed": ("window",),
    "last_seen": ("object",),
    "count": ("label",),
    "order": ("objects", "event"),
}
"""Question types and the type-specific fields each one requires."""

CHANGES_FROM = ("graph", "short-term")
"""Where :func:`answer` takes the change questions from."""

MOVE_M = 0.15
"""A ``changed`` object moved by more than this (metres)."""

ORDER_EVENTS = ("seen", "moved")

_COMMON = ("id", "t", "type", "text", "answer")
_STM_STATE = {"opened": "open", "closed": "closed", "grasped": HELD, "missing": MISSING}


class QuestionError(ValueError):
    """A malformed question, question file or gold answer."""


# --------------------------------------------------------------------------------------------
# Questions


@dataclass
class Question:
    """One question: common fields, the type-specific ``fields`` and the ``gold`` answer (or None)."""

    id: str | int
    t: float
    type: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)
    gold: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON line form (``answer`` only when there is gold)."""
        out: dict[str, Any] = {"id": self.id, "t": self.t, "type": self.type, "text": self.text}
        out.update(self.fields)
        if self.gold is not None:
            out["answer"] = self.gold
        return out

    @classmethod
    def from_dict(cls, d: Any) -> Question:
        """Parse and check one question (see the module docstring); raises :class:`QuestionError`."""
        if not isinstance(d, Mapping):
            raise QuestionError(f"a question must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("id", "t", "type", "text") if k not in d]
        if missing:
            raise QuestionError(f"missing field {', '.join(repr(k) for k in missing)}")
        qid = d["id"]
        if isinstance(qid, bool) or not isinstance(qid, (str, int)) or qid == "":
            raise QuestionError(f"'id' must be a non-empty string or an integer, got {qid!r}")
        t = _number(d["t"], "t")
        if t < 0:
            raise QuestionError(f"'t' must be >= 0 (bag time, seconds), got {t}")
        qtype = d["type"]
        if qtype not in QUESTION_TYPES:
            raise QuestionError(f"unknown question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")
        if not isinstance(d["text"], str):
            raise QuestionError(f"'text' must be a string, got {type(d['text']).__name__}")
        need = [k for k in QUESTION_TYPES[qtype] if k not in d]
        if need:
            raise QuestionError(f"missing field {', '.join(repr(k) for k in need)} for type {qtype!r}")
        fields = {k: v for k, v in d.items() if k not in _COMMON}
        _check_fields(qtype, fields)
        gold = d.get("answer")
        if gold is not None:
            _check_gold(qtype, gold)
            gold = dict(gold)
        return cls(qid, t, qtype, d["text"], fields, gold)


def _number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise QuestionError(f"'{name}' must be a finite number, got {v!r}")
    return float(v)


def _label_field(v: Any, name: str) -> None:
    if not isinstance(v, str) or not v.strip():
        raise QuestionError(f"'{name}' must be a non-empty string, got {v!r}")


def _check_fields(qtype: str, f: dict[str, Any]) -> None:
    if qtype in ("locate", "state", "last_seen"):
        _label_field(f["object"], "object")
    elif qtype == "count":
        _label_field(f["label"], "label")
    elif qtype == "changed":
        w = f["window"]
        if not isinstance(w, list) or len(w) != 2:
            raise QuestionError(f"'window' must be [t1, t2], got {w!r}")
        t1, t2 = _number(w[0], "window[0]"), _number(w[1], "window[1]")
        if t1 > t2:
            raise QuestionError(f"'window' must have t1 <= t2, got [{t1}, {t2}]")
        f["window"] = [t1, t2]
    elif qtype == "order":
        objs = f["objects"]
        if not isinstance(objs, list) or len(objs) != 2:
            raise QuestionError(f"'objects' must be a list of two labels, got {objs!r}")
        for o in objs:
            _label_field(o, "objects[]")
        if _norm(objs[0]) == _norm(objs[1]):
            raise QuestionError(f"'objects' must name two different labels, got {objs!r}")
        if f["event"] not in ORDER_EVENTS:
            raise QuestionError(f"'event' must be one of {', '.join(ORDER_EVENTS)}, got {f['event']!r}")


def _check_gold(qtype: str, g: Any) -> None:
    if not isinstance(g, Mapping):
        raise QuestionError(f"'answer' must be a JSON object, got {type(g).__name__}")

    def need(key: str) -> Any:
        if key not in g:
            raise QuestionError(f"'answer' of a {qtype!r} question lacks {key!r}")
        return g[key]

    def str_or_null(key: str, v: Any) -> None:
        if v is not None and not isinstance(v, str):
            raise QuestionError(f"'answer.{key}' must be a string or null, got {v!r}")

    if qtype == "locate":
        pos = need("position")
        if pos is not None:
            if not isinstance(pos, list) or len(pos) != 3:
                raise QuestionError(f"'answer.position' must be [x, y, z] or null, got {pos!r}")
            for v in pos:
                _number(v, "answer.position[]")
        str_or_null("receptacle", g.get("receptacle"))
    elif qtype == "state":
        str_or_null("state", need("state"))
    elif qtype == "changed":
        objs = need("objects")
        if not isinstance(objs, list) or not all(isinstance(o, str) for o in objs):
            raise QuestionError(f"'answer.objects' must be a list of labels, got {objs!r}")
    elif qtype == "last_seen":
        v = need("time")
        if v is not None:
            _number(v, "answer.time")
    elif qtype == "count":
        v = need("count")
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise QuestionError(f"'answer.count' must be an integer >= 0, got {v!r}")
    elif qtype == "order":
        str_or_null("first", need("first"))


def load_questions(path: str | Path) -> tuple[list[Question], list[str]]:
    """Questions of a JSON-lines file, sorted by ``t`` (stable), and ``"line N: reason"`` for each
    malformed line (skipped). A missing or unreadable file raises :class:`QuestionError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise QuestionError(f"cannot read question file {p}: {e}") from e
    questions: list[Question] = []
    problems: list[str] = []
    ids: dict[Any, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            problems.append(f"line {n}: bad JSON ({e.msg} at column {e.colno})")
            continue
        try:
            q = Question.from_dict(d)
        except QuestionError as e:
            problems.append(f"line {n}: {e}")
            continue
        id_key = (type(q.id).__name__, q.id)
        if id_key in ids:
            problems.append(f"line {n}: duplicate id {q.id!r} (first on line {ids[id_key]})")
            continue
        ids[id_key] = n
        questions.append(q)
    questions.sort(key=lambda q: q.t)
    return questions, problems


# --------------------------------------------------------------------------------------------
# Answers from memory


def _norm(label: str) -> str:
    return label.strip().lower().replace(" ", "_")


def _r(v: float) -> float:
    return round(float(v), 4)


def empty_answer(qtype: str) -> dict[str, Any]:
    """The answer of a question memory knows nothing about."""
    return {"locate": {"position": None, "receptacle": None}, "state": {"state": None},
            "changed": {"objects": []}, "last_seen": {"time": None}, "count": {"count": 0},
            "order": {"first": None}}[qtype]


def _object_key(memory: Memory, label: str) -> str | None:
    """The object memory means by ``label``: the most recently seen present or held one, else the
    most recently seen in any state."""
    g = memory.graph
    key = g.best(label, (PRESENT, HELD))
    if key is None:
        keys = g.by_label.get(label, ())
        key = max(keys, key=lambda k: float(g.node(k).get("last_seen", 0.0)), default=None)
    return key


def _lookup(memory: Memory, key: str | None, label: str) -> None:
    """One planner lookup in short-term memory (counted)."""
    memory.short_term.get(key if key is not None else f"label:{label}")


def _centre(d: Mapping[str, Any]) -> list[float]:
    """Centre of the object's axis-aligned box; its centroid when the box is stale (a release
    moves ``position``/``centroid`` but keeps the box of the last sighting) or absent."""
    lo, hi, c = d.get("aabb_min"), d.get("aabb_max"), d.get("centroid", d.get("position"))
    if lo is not None and hi is not None:
        inside = c is None or all(a - 0.01 <= v <= b + 0.01 for a, v, b in zip(lo, c, hi, strict=True))
        if inside:
            return [(float(a) + float(b)) / 2 for a, b in zip(lo, hi, strict=True)]
    return [float(v) for v in c]


def _receptacle(memory: Memory, key: str) -> str | None:
    d = memory.graph.node(key)
    if d.get("state") == HELD:
        return None
    if d.get("place"):
        return str(d["place"])
    g = memory.graph.g
    for _u, v, rel in g.out_edges(key, keys=True):
        if rel in ("on", "in") and g.nodes[v].get("layer") == "object":
            return str(g.nodes[v]["label"])
    return None


def _first_moved(memory: Memory, label: str) -> float | None:
    """Memory time of the first move of any object with ``label`` (second pose-history entry)."""
    g = memory.graph
    times = [float(h[1][0]) for k in g.by_label.get(label, ()) if len(h := g.node(k).get("history", [])) > 1]
    return min(times) if times else None


def _earlier(a: str, b: str, ta: float | None, tb: float | None) -> str | None:
    if ta is None and tb is None:
        return None
    if tb is None or (ta is not None and ta < tb):
        return a
    if ta is None or tb < ta:
        return b
    return None  # the same instant: memory cannot tell


def answer(question: Question, memory: Memory, changes_from: str = "graph") -> dict[str, Any]:
    """Answer ``question`` from ``memory`` as it is now (see the module docstring); JSON-safe."""
    if changes_from not in CHANGES_FROM:
        raise QuestionError(f"changes_from must be one of {', '.join(CHANGES_FROM)}, got {changes_from!r}")
    stm = changes_from == "short-term"
    f, q = question.fields, memory.query
    kind = question.type
    if kind == "locate":
        label = _norm(f["object"])
        key = _object_key(memory, label)
        _lookup(memory, key, label)
        if key is None:
            return empty_answer(kind)
        return {"position": [_r(v) for v in _centre(memory.graph.node(key))],
                "receptacle": _receptacle(memory, key)}
    if kind == "state":
        return {"state": _state(memory, f["object"], stm)}
    if kind == "changed":
        t1, t2 = (memory.now(float(t)) for t in f["window"])
        if stm:
            entries = [c for c in memory.short_term.recent() if _is_move(c) and t1 < c.time <= t2]
            keys = sorted({c.key for c in entries})
            labels = sorted({c.label for c in entries})
            for k in keys:
                memory.short_term.get(k)
        else:
            labels = q.moved_between(t1, t2, MOVE_M)
            for lb in labels:
                _lookup(memory, _object_key(memory, lb), lb)
        return {"objects": list(labels)}
    if kind == "last_seen":
        label = _norm(f["object"])
        _lookup(memory, _object_key(memory, label), label)
        t = q.last_seen(label)
        return {"time": None if t is None else _r(memory.local(t))}
    if kind == "count":
        label = _norm(f["label"])
        _lookup(memory, _object_key(memory, label), label)
        return {"count": int(q.count(label))}
    if kind == "order":
        a, b = (_norm(o) for o in f["objects"])
        for lb in (a, b):
            _lookup(memory, _object_key(memory, lb), lb)
        if f["event"] == "seen":
            ta, tb = q.first_seen(a), q.first_seen(b)
        elif stm:
            moved = [c for c in memory.short_term.recent() if _is_move(c)]
            ta = min((c.time for c in moved if c.label == a), default=None)
            tb = min((c.time for c in moved if c.label == b), default=None)
        else:
            ta, tb = _first_moved(memory, a), _first_moved(memory, b)
        return {"first": _earlier(a, b, ta, tb)}
    raise QuestionError(f"unknown question type {kind!r}")


def _is_move(change: Any) -> bool:
    """A short-term entry that records a move: seen elsewhere, or put down away from where it was."""
    if change.change == "moved":
        return True
    return change.change == "released" and float(change.data.get("moved_m", 0.0)) > MOVE_M


def _state(memory: Memory, name: str, stm: bool) -> str | None:
    place = memory.query.place_key(name)
    label = _norm(name)
    key = place if place is not None else _object_key(memory, label)
    _lookup(memory, key, label)
    if not stm:
        return memory.query.state(name)
    if place is not None:
        entry = memory.short_term.peek(place)
        return None if entry is None else _STM_STATE.get(entry.change)
    entry = next((c for c in memory.short_term.recent() if c.label == label), None)
    if entry is None:
        return None
    return _STM_STATE.get(entry.change, PRESENT)


# --------------------------------------------------------------------------------------------
# Scoring


def _labels(v: Any) -> set[str]:
    return {_norm(x) for x in v if isinstance(x, str)} if isinstance(v, list) else set()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return _norm(a) == _norm(b)
    return a == b


def f1(predicted: Iterable[str], gold: Iterable[str]) -> float:
    """F1 of two label sets (1.0 when both are empty)."""
    p, g = set(predicted), set(gold)
    if not p and not g:
        return 1.0
    tp = len(p & g)
    return 0.0 if tp == 0 else 2 * tp / (len(p) + len(g))


def score(question: Question, answer: Mapping[str, Any] | None, tol_m: float = 0.15, tol_s: float = 1.0) -> float:
    """Score of ``answer`` against the question's gold, in [0, 1]: 1.0 or 0.0, except the F1 of a
    ``changed`` question. Raises :class:`QuestionError` when the question has no gold."""
    gold = question.gold
    if gold is None:
        raise QuestionError(f"question {question.id!r} has no gold answer")
    a: Mapping[str, Any] = answer if isinstance(answer, Mapping) else {}
    kind = question.type
    if kind == "locate":
        gp, ap = gold.get("position"), a.get("position")
        if gp is None or ap is None:
            return 1.0 if gp is None and ap is None else 0.0
        try:
            dist = math.dist([float(v) for v in ap], [float(v) for v in gp])
        except (TypeError, ValueError):
            return 0.0
        if not dist <= tol_m:
            return 0.0
        gr = gold.get("receptacle")
        return 1.0 if gr is None or _same(a.get("receptacle"), gr) else 0.0
    if kind == "state":
        return 1.0 if _same(a.get("state"), gold.get("state")) else 0.0
    if kind == "changed":
        return f1(_labels(a.get("objects")), _labels(gold.get("objects")))
    if kind == "last_seen":
        gt, at = gold.get("time"), a.get("time")
        if gt is None or at is None:
            return 1.0 if gt is None and at is None else 0.0
        try:
            return 1.0 if abs(float(at) - float(gt)) <= tol_s else 0.0
        except (TypeError, ValueError):
            return 0.0
    if kind == "count":
        ac = a.get("count")
        return 1.0 if not isinstance(ac, bool) and isinstance(ac, (int, float)) and ac == gold["count"] else 0.0
    if kind == "order":
        return 1.0 if _same(a.get("first"), gold.get("first")) else 0.0
    raise QuestionError(f"unknown question type {kind!r}")


# --------------------------------------------------------------------------------------------
# Report


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolation percentile of sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    x = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(x)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (x - lo)


class Report:
    """Accuracy per question type and overall, answer latency, short-term hit statistics.

    ``short_term``: the short-term memory's statistics (anything with ``hits`` and ``misses``,
    e.g. :class:`~mnemobot.memory.short_term.ShortTermStats`, or such a dict); may be set later.
    """

    def __init__(self, tol_m: float = 0.15, tol_s: float = 1.0, short_term: Any | None = None) -> None:
        self.tol_m, self.tol_s = tol_m, tol_s
        self.short_term = short_term
        self.scores: dict[str, list[float]] = {}
        self.latencies: list[float] = []
        self.unscored = 0

    def add(self, question: Question, answer: Mapping[str, Any] | None, latency_ms: float) -> float | None:
        """Record one answered question; returns its score (None when it has no gold)."""
        self.latencies.append(float(latency_ms))
        if question.gold is None:
            self.unscored += 1
            return None
        s = score(question, answer, self.tol_m, self.tol_s)
        self.scores.setdefault(question.type, []).append(s)
        return s

    def to_dict(self) -> dict[str, Any]:
        def acc(values: list[float]) -> float | None:
            return _r(sum(1 for v in values if v >= 1.0) / len(values)) if values else None

        by_type: dict[str, dict[str, Any]] = {}
        for kind in QUESTION_TYPES:
            values = self.scores.get(kind)
            if not values:
                continue
            by_type[kind] = {"accuracy": acc(values), "n": len(values)}
            if kind == "changed":
                by_type[kind]["mean_f1"] = _r(sum(values) / len(values))
        everything = [v for values in self.scores.values() for v in values]
        lat = sorted(self.latencies)
        latency = {"p50": _r(_percentile(lat, 50)), "p95": _r(_percentile(lat, 95)), "max": _r(lat[-1]),
                   "mean": _r(sum(lat) / len(lat))} if lat else {"p50": None, "p95": None, "max": None,
                                                                 "mean": None}
        out: dict[str, Any] = {"overall": {"accuracy": acc(everything), "n": len(everything)}, "by_type": by_type,
                               "latency_ms": latency, "unscored": self.unscored}
        if self.short_term is not None:
            st = self.short_term
            hits = int(st["hits"] if isinstance(st, Mapping) else st.hits)
            misses = int(st["misses"] if isinstance(st, Mapping) else st.misses)
            out["short_term"] = {"hits": hits, "misses": misses,
                                 "hit_rate": _r(hits / (hits + misses)) if hits + misses else 0.0}
        return out

    def render(self) -> str:
        """A fixed-width table: one row per question type and overall, then latency."""
        d = self.to_dict()

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f}%"

        rows = [f"{'type':<10} {'n':>5} {'accuracy':>9}", "-" * 26]
        for kind, r in d["by_type"].items():
            rows.append(f"{kind:<10} {r['n']:>5} {pct(r['accuracy']):>9}")
        rows.append("-" * 26)
        rows.append(f"{'overall':<10} {d['overall']['n']:>5} {pct(d['overall']['accuracy']):>9}")
        if "changed" in d["by_type"]:
            rows.append(f"changed mean F1: {d['by_type']['changed']['mean_f1']:.3f}")
        lat = d["latency_ms"]
        if lat["p50"] is None:
            rows.append("latency ms: -")
        else:
            rows.append(f"latency ms: p50 {lat['p50']:.3f}  p95 {lat['p95']:.3f}  max {lat['max']:.3f}  "
                        f"mean {lat['mean']:.3f}")
        if d["unscored"]:
            rows.append(f"unscored: {d['unscored']}")
        if "short_term" in d:
            st = d["short_term"]
            rows.append(f"short-term: {st['hits']} hits, {st['misses']} misses, hit rate {pct(st['hit_rate'])}")
        return "\n".join(rows)


def write_answers(path: str | Path, rows: Iterable[tuple[Question, Mapping[str, Any] | None]]) -> int:
    """Write ``{"id": ..., "answer": {...}}`` per line for ``(question, answer)`` rows; a missing
    answer (None) is written as the null answer of the question's type. Returns the line count."""
    lines = []
    for question, ans in rows:
        body = dict(ans) if ans is not None else empty_answer(question.type)
        lines.append(json.dumps({"id": question.id, "answer": body}, allow_nan=False))
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
