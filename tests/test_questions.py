"""Memory questions: the file format, answers from a real memory fed with rendered RGB-D frames,
short-term mode under eviction, scoring, the report and the answers file."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mnemobot.evaluation.questions import (
    QUESTION_TYPES,
    Question,
    QuestionError,
    Report,
    answer,
    empty_answer,
    f1,
    load_questions,
    score,
    write_answers,
)
from mnemobot.memory.memory import Memory, MemoryConfig
from mnemobot.memory.short_term import ShortTermConfig
from mnemobot.perception.types import CameraIntrinsics, Observation, Pose
from mnemobot.sim.layout import DEFAULT_LAYOUT

SITE = DEFAULT_LAYOUT.site_map()
K = CameraIntrinsics.from_fov(320, 240, 60.0)


# -- rendered frames: exact ray casting of boxes on the map's tables ---------------------------------------
@dataclass(frozen=True)
class Box:
    label: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    rgb: tuple[int, int, int]


def look_at(eye: Sequence[float], target: Sequence[float]) -> Pose:
    return Pose.look_at(eye, target)


def render(boxes: Sequence[Box], pose: Pose, t: float) -> Observation:
    """An observation at time ``t``: rgb, depth (optical z) and instance masks of axis-aligned
    boxes standing on the map's place surfaces above a floor."""
    v, u = np.mgrid[0 : K.height, 0 : K.width]
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones(u.shape)], axis=-1).reshape(-1, 3)
    d = rays @ pose.rotation.T  # optical z = 1, so the ray parameter is the depth
    o = pose.position
    best = np.full(len(d), np.inf)
    inst = np.zeros(len(d), np.int32)
    rgb = np.full((len(d), 3), 60, np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = -o[2] / d[:, 2]
    hit = t_floor > 0
    best[hit], rgb[hit] = t_floor[hit], (90, 90, 90)
    for place in SITE.places.values():
        s = place.surface
        with np.errstate(divide="ignore", invalid="ignore"):
            tp = (s.position[2] - o[2]) / d[:, 2]
        local = s.inverse().apply(o + np.where(np.isfinite(tp), tp, 0.0)[:, None] * d)
        hx, hy = place.surface_size[0] / 2, place.surface_size[1] / 2
        hit = (tp > 0) & (tp < best) & (np.abs(local[:, 0]) <= hx) & (np.abs(local[:, 1]) <= hy)
        best[hit], rgb[hit] = tp[hit], (150, 110, 70)
    labels = {}
    for i, b in enumerate(boxes, start=1):
        h = np.asarray(b.size) / 2
        ol = o - np.asarray(b.center)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-h - ol) / d, (h - ol) / d
        near, far = np.nanmax(np.minimum(t1, t2), axis=1), np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (far >= near) & (near > 0) & (near < best)
        best[hit], inst[hit], rgb[hit] = near[hit], i, b.rgb
        labels[i] = b.label
    depth = np.where(np.isfinite(best), best, 0.0).astype(np.float32)
    return Observation(t, rgb.reshape(K.height, K.width, 3), depth.reshape(K.height, K.width), K, pose,
                       inst.reshape(K.height, K.width), labels)


def on(place: str, x: float, y: float, size: Sequence[float]) -> tuple[float, float, float]:
    """Centre of a box of ``size`` resting on ``place`` at world (x, y)."""
    return (x, y, float(SITE.place(place).surface.position[2]) + size[2] / 2)


MUG, BOOK, DUCK = (0.08, 0.08, 0.10), (0.20, 0.14, 0.04), (0.07, 0.07, 0.07)
WHITE, BLUE, YELLOW, RED = (230, 230, 230), (30, 50, 220), (240, 215, 25), (215, 25, 25)
KITCHEN_VIEW = look_at((3.0, 3.5, 1.5), (3.0, 4.55, 0.6))
LIVING_VIEW = look_at((6.2, 3.5, 1.4), (6.2, 4.55, 0.5))

MUG_1 = on("kitchen_table", 2.75, 4.55, MUG)
BOOK_1 = on("kitchen_table", 3.25, 4.55, BOOK)
MUG_5 = on("living_room_table", 6.2, 4.55, MUG)
DUCK_5 = on("living_room_table", 6.45, 4.6, DUCK)
BOOK_8 = on("kitchen_table", 2.75, 4.45, BOOK)
RED_MUG_8 = on("kitchen_table", 3.2, 4.75, MUG)

# The scenario (bag time): a mug and a book on the kitchen table (t=1, 2); the drawer is opened
# (t=3); the mug is on the living-room table next to a duck (t=5); the drawer is closed (t=6);
# the book has moved and a red mug stands on the kitchen table (t=8, 9). The red mug comes
# before the book in the frame, so the book's move is the newest short-term change.
EVENTS: list[tuple[float, Callable[[Memory], None]]] = [
    (1.0, lambda m: m.update(render([Box("mug", MUG_1, MUG, WHITE), Box("book", BOOK_1, BOOK, BLUE)],
                                    KITCHEN_VIEW, 1.0))),
    (2.0, lambda m: m.update(render([Box("mug", MUG_1, MUG, WHITE), Box("book", BOOK_1, BOOK, BLUE)],
                                    KITCHEN_VIEW, 2.0))),
    (3.0, lambda m: m.set_body(None, {"drawer": 0.3}, None, t=3.0)),
    (5.0, lambda m: m.update(render([Box("mug", MUG_5, MUG, WHITE), Box("duck", DUCK_5, DUCK, YELLOW)],
                                    LIVING_VIEW, 5.0))),
    (6.0, lambda m: m.set_body(None, {}, None, t=6.0)),
    (8.0, lambda m: m.update(render([Box("mug", RED_MUG_8, MUG, RED), Box("book", BOOK_8, BOOK, BLUE)],
                                    KITCHEN_VIEW, 8.0))),
    (9.0, lambda m: m.update(render([Box("mug", RED_MUG_8, MUG, RED), Box("book", BOOK_8, BOOK, BLUE)],
                                    KITCHEN_VIEW, 9.0))),
]


def new_memory(capacity: int = 32) -> Memory:
    return Memory(MemoryConfig(embedder="lexical", short_term=ShortTermConfig(capacity=capacity)), site=SITE)


def run(until: float = math.inf, capacity: int = 32, memory: Memory | None = None) -> Memory:
    m = memory or new_memory(capacity)
    for t, act in EVENTS:
        if t <= until:
            act(m)
    return m


def replay(questions: Sequence[Question], capacity: int = 32, changes_from: str = "graph"
           ) -> dict[str | int, dict]:
    """Answer each question when the replay reaches its time (as the bag replay does)."""
    m = new_memory(capacity)
    out: dict[str | int, dict] = {}
    events = list(EVENTS)
    for q in sorted(questions, key=lambda q: q.t):
        while events and events[0][0] <= q.t:
            events.pop(0)[1](m)
        out[q.id] = answer(q, m, changes_from)
    return out


def Q(qid: str | int, t: float, qtype: str, gold: dict | None = None, **fields: object) -> Question:
    d = {"id": qid, "t": t, "type": qtype, "text": f"{qtype} question", **fields}
    if gold is not None:
        d["answer"] = gold
    return Question.from_dict(d)


def centre(c: Sequence[float]) -> list[float]:
    return [float(v) for v in c]


# -- answers from memory -----------------------------------------------------------------------------------
def test_scene_is_remembered_as_staged() -> None:
    m = run()
    assert m.query.count("mug") == 2 and m.query.count("book") == 1 and m.query.count("duck") == 1
    (white,) = [k for k in m.graph.by_label["mug"] if m.graph.node(k)["first_seen"] == 1.0]
    assert [h[4] for h in m.graph.node(white)["history"]] == ["kitchen_table", "living_room_table"]
    assert m.graph.node("place:drawer")["state"] == "closed"


def test_every_type_answers_from_memory_and_scores_correct() -> None:
    qs = [
        Q("loc-mug-early", 2.0, "locate", {"position": centre(MUG_1), "receptacle": "kitchen_table"}, object="mug"),
        Q("loc-mug", 6.0, "locate", {"position": centre(MUG_5), "receptacle": "living_room_table"}, object="mug"),
        Q("loc-book", 9.0, "locate", {"position": centre(BOOK_8), "receptacle": "kitchen_table"}, object="book"),
        Q("drawer-open", 4.0, "state", {"state": "open"}, object="drawer"),
        Q("drawer-closed", 9.0, "state", {"state": "closed"}, object="kitchen drawer"),
        Q("mug-state", 9.0, "state", {"state": "present"}, object="mug"),
        Q("ch-none", 9.0, "changed", {"objects": []}, window=[1.5, 4.0]),
        Q("ch-mug", 9.0, "changed", {"objects": ["mug"]}, window=[1.5, 6.0]),
        Q("ch-both", 9.0, "changed", {"objects": ["book", "mug"]}, window=[1.5, 9.0]),
        Q("ch-book", 9.0, "changed", {"objects": ["book"]}, window=[6.0, 9.0]),
        Q("ch-early", 9.0, "changed", {"objects": []}, window=[0.0, 9.0]),  # nothing remembered at 0 s
        Q("seen-duck", 9.0, "last_seen", {"time": 5.0}, object="duck"),
        Q("seen-mug", 9.0, "last_seen", {"time": 9.0}, object="mug"),  # the red mug, seen at 9 s
        Q("seen-mug-early", 6.0, "last_seen", {"time": 5.0}, object="mug"),
        Q("n-mug", 9.0, "count", {"count": 2}, label="mug"),
        # at 6 s a white mug was seen in the living room, but the kitchen table not since: two
        # white mugs, until it is seen without one (8 s)
        Q("n-mug-early", 6.0, "count", {"count": 2}, label="mug"),
        Q("n-book", 9.0, "count", {"count": 1}, label="book"),
        Q("first-seen", 9.0, "order", {"first": "book"}, objects=["duck", "book"], event="seen"),
        Q("first-moved", 9.0, "order", {"first": "mug"}, objects=["book", "mug"], event="moved"),
        Q("only-one-moved", 9.0, "order", {"first": "book"}, objects=["duck", "book"], event="moved"),
        Q("tie", 9.0, "order", {"first": None}, objects=["mug", "book"], event="seen"),  # both at 1 s
    ]
    got = replay(qs)
    wrong = {q.id: got[q.id] for q in qs if score(q, got[q.id]) != 1.0}
    assert wrong == {}
    # the position is the centre of the remembered box, close to the true centre
    assert math.dist(got["loc-mug"]["position"], MUG_5) < 0.02
    assert math.dist(got["loc-book"]["position"], BOOK_8) < 0.02
    assert got["ch-both"] == {"objects": ["book", "mug"]}
    assert got["seen-duck"] == {"time": 5.0} and got["n-mug"] == {"count": 2}
    json.dumps(got, allow_nan=False)  # JSON-safe
    for a in got.values():
        for v in a.values():
            assert not isinstance(v, np.generic | np.ndarray)


def test_unknown_objects_are_answered_with_nulls() -> None:
    qs = [Q("a", 9.0, "locate", object="teddy"), Q("b", 9.0, "state", object="teddy"),
          Q("c", 9.0, "last_seen", object="teddy"), Q("d", 9.0, "count", label="teddy"),
          Q("e", 9.0, "order", objects=["teddy", "giraffe"], event="seen"),
          Q("f", 9.0, "order", objects=["teddy", "giraffe"], event="moved"),
          Q("g", 9.0, "order", objects=["teddy", "duck"], event="seen")]
    got = replay(qs)
    assert got == {"a": {"position": None, "receptacle": None}, "b": {"state": None}, "c": {"time": None},
                   "d": {"count": 0}, "e": {"first": None}, "f": {"first": None}, "g": {"first": "duck"}}
    assert got["a"] == empty_answer("locate")


def test_bag_time_is_converted_to_memory_time() -> None:
    m = new_memory()
    run(memory=m)  # an earlier episode: memory's clock now runs ahead of the next bag
    m.begin_episode()
    assert m.offset > 9.0
    m.update(render([Box("mug", MUG_1, MUG, WHITE)], KITCHEN_VIEW, 1.0))  # a white mug is back
    assert answer(Q("a", 1.0, "last_seen", object="mug"), m) == {"time": 1.0}
    # memory last saw the white mug on the living-room table, before a gap nobody watched: the
    # one in the kitchen is that one, moved back (not a second white mug)
    assert answer(Q("b", 1.0, "changed", window=[0.0, 1.0]), m) == {"objects": ["mug"]}
    for t in (1.5, 1.7):  # the living-room table without it agrees, and changes nothing more
        m.update(render([Box("duck", DUCK_5, DUCK, YELLOW)], LIVING_VIEW, t))
    assert answer(Q("b", 2.0, "changed", window=[0.0, 2.0]), m) == {"objects": ["mug"]}
    assert answer(Q("f", 2.0, "changed", window=[1.2, 2.0]), m) == {"objects": []}
    assert answer(Q("c", 2.0, "changed", window=[0.0, 2.0]), m, "short-term") == {"objects": ["mug"]}
    assert answer(Q("d", 2.0, "locate", object="mug"), m)["receptacle"] == "kitchen_table"
    assert answer(Q("e", 2.0, "count", label="mug"), m) == {"count": 2}  # the white one and the red one


def test_released_object_is_located_where_it_was_put_not_at_its_old_box() -> None:
    m = run(until=2.0)
    m.set_body("mug", {}, None, t=3.0)
    held = answer(Q("a", 3.0, "locate", object="mug"), m)
    assert held["receptacle"] is None  # in the gripper
    assert answer(Q("b", 3.0, "state", object="mug"), m) == {"state": "held"}
    m.set_body(None, {}, "tray", t=4.0)
    got = answer(Q("c", 4.0, "locate", object="mug"), m)
    assert got["receptacle"] == "tray"
    tray = SITE.place("tray").surface.position
    assert math.dist(got["position"][:2], tray[:2]) < 0.01  # the box of the last sighting is stale
    # carried from the kitchen table to the tray: a move, for the graph and for the short-term table
    moved = Q("d", 4.0, "changed", window=[2.5, 4.0])
    assert answer(moved, m) == answer(moved, m, "short-term") == {"objects": ["mug"]}
    assert m.short_term.peek(m.graph.best("mug")).data["moved_m"] > 1.0



def test_object_on_another_object_names_it_as_receptacle() -> None:
    m = new_memory()
    base = (3.0, 4.0, BOOK[2] / 2)  # a book on the kitchen floor, no map place under it
    top = (3.0, 4.0, BOOK[2] + MUG[2] / 2)
    floor_view = look_at((3.0, 3.0, 1.2), (3.0, 4.0, 0.0))
    m.update(render([Box("book", base, BOOK, BLUE), Box("mug", top, MUG, WHITE)], floor_view, 1.0))
    assert answer(Q("a", 1.0, "locate", object="mug"), m)["receptacle"] == "book"
    assert answer(Q("b", 1.0, "locate", object="book"), m)["receptacle"] is None


# -- short-term mode ---------------------------------------------------------------------------------------
def test_short_term_mode_agrees_with_the_graph_when_nothing_is_evicted() -> None:
    qs = [Q("ch", 9.0, "changed", window=[1.5, 9.0]), Q("ch2", 6.0, "changed", window=[1.5, 6.0]),
          Q("drawer", 9.0, "state", object="drawer"), Q("drawer-open", 4.0, "state", object="drawer"),
          Q("mug", 9.0, "state", object="mug"),
          Q("order", 9.0, "order", objects=["book", "mug"], event="moved"),
          Q("loc", 9.0, "locate", object="book")]
    graph, stm = replay(qs), replay(qs, changes_from="short-term")
    assert stm == graph
    assert stm["ch"] == {"objects": ["book", "mug"]} and stm["drawer"] == {"state": "closed"}
    assert stm["order"] == {"first": "mug"}


def test_capacity_one_forgets_the_older_change() -> None:
    qs = [Q("ch", 9.0, "changed", window=[1.5, 9.0]), Q("drawer", 9.0, "state", object="drawer"),
          Q("order", 9.0, "order", objects=["book", "mug"], event="moved"),
          Q("drawer-early", 4.0, "state", object="drawer"),  # the drawer is still the newest change
          Q("loc", 9.0, "locate", object="mug"), Q("n", 9.0, "count", label="mug")]
    big = replay(qs, capacity=32, changes_from="short-term")
    one = replay(qs, capacity=1, changes_from="short-term")
    assert big["ch"] == {"objects": ["book", "mug"]} and one["ch"] == {"objects": ["book"]}
    assert big["drawer"] == {"state": "closed"} and one["drawer"] == {"state": None}
    assert big["order"] == {"first": "mug"} and one["order"] == {"first": "book"}
    assert one["drawer-early"] == big["drawer-early"] == {"state": "open"}
    # the other types come from the graph whatever short-term memory holds
    assert one["loc"] == big["loc"] and one["n"] == big["n"] == {"count": 2}
    # ...and in graph mode capacity does not matter
    assert replay(qs, capacity=1) == replay(qs, capacity=32)


def test_each_question_counts_as_planner_lookups() -> None:
    m = run()
    stm = m.short_term
    before = stm.stats
    order = [c.key for c in stm.recent()]
    answer(Q("a", 9.0, "locate", object="book"), m)  # in the table: a hit
    answer(Q("b", 9.0, "locate", object="teddy"), m)  # label:teddy, a miss
    answer(Q("c", 9.0, "state", object="drawer"), m, "short-term")  # place:drawer, a hit
    answer(Q("d", 9.0, "order", objects=["book", "teddy"], event="seen"), m)  # one hit, one miss
    answer(Q("e", 9.0, "changed", window=[1.5, 9.0]), m, "short-term")  # book, mug: two hits
    after = stm.stats
    assert (after.hits - before.hits, after.misses - before.misses) == (5, 2)
    assert [c.key for c in stm.recent()] == order  # reading the table leaves it as it was


def test_changes_from_is_checked() -> None:
    with pytest.raises(QuestionError, match="changes_from"):
        answer(Q("a", 1.0, "count", label="mug"), new_memory(), "long-term")


# -- scoring -----------------------------------------------------------------------------------------------
def test_locate_scoring_uses_the_tolerance_and_the_receptacle() -> None:
    q = Q("a", 1.0, "locate", {"position": [1.0, 2.0, 0.5], "receptacle": "tray"}, object="mug")
    assert score(q, {"position": [1.1, 2.0, 0.5], "receptacle": "tray"}) == 1.0
    assert score(q, {"position": [1.2, 2.0, 0.5], "receptacle": "tray"}) == 0.0
    assert score(q, {"position": [1.2, 2.0, 0.5], "receptacle": "tray"}, tol_m=0.25) == 1.0
    assert score(q, {"position": [1.0, 2.0, 0.5], "receptacle": "shelf"}) == 0.0
    assert score(q, {"position": [1.0, 2.0, 0.5], "receptacle": None}) == 0.0
    assert score(q, {"position": None, "receptacle": "tray"}) == 0.0
    assert score(q, None) == 0.0
    free = Q("b", 1.0, "locate", {"position": [1.0, 2.0, 0.5], "receptacle": None}, object="mug")
    assert score(free, {"position": [1.0, 2.05, 0.5], "receptacle": "anything"}) == 1.0
    gone = Q("c", 1.0, "locate", {"position": None, "receptacle": None}, object="teddy")
    assert score(gone, empty_answer("locate")) == 1.0 and score(gone, {"position": [0, 0, 0]}) == 0.0


def test_other_scores() -> None:
    ch = Q("a", 5.0, "changed", {"objects": ["mug", "book"]}, window=[0.0, 5.0])
    assert score(ch, {"objects": ["book", "mug"]}) == 1.0
    assert score(ch, {"objects": ["mug"]}) == pytest.approx(2 / 3)
    assert score(ch, {"objects": ["mug", "duck"]}) == pytest.approx(0.5)
    assert score(ch, {"objects": []}) == 0.0
    assert f1([], []) == 1.0 and f1(["a"], []) == 0.0
    last = Q("b", 5.0, "last_seen", {"time": 3.0}, object="mug")
    assert score(last, {"time": 3.9}) == 1.0 and score(last, {"time": 4.1}) == 0.0
    assert score(last, {"time": 4.1}, tol_s=2.0) == 1.0 and score(last, {"time": None}) == 0.0
    assert score(Q("c", 1, "count", {"count": 2}, label="mug"), {"count": 2}) == 1.0
    assert score(Q("d", 1, "count", {"count": 2}, label="mug"), {"count": 3}) == 0.0
    assert score(Q("e", 1, "state", {"state": "open"}, object="drawer"), {"state": "open"}) == 1.0
    assert score(Q("f", 1, "order", {"first": "red cube"}, objects=["red_cube", "mug"], event="seen"),
                 {"first": "red_cube"}) == 1.0
    with pytest.raises(QuestionError, match="no gold"):
        score(Q("g", 1, "count", label="mug"), {"count": 1})


def test_report_numbers_and_render() -> None:
    r = Report(short_term={"hits": 3, "misses": 1})
    r.add(Q(1, 1, "count", {"count": 2}, label="mug"), {"count": 2}, 1.0)
    r.add(Q(2, 1, "count", {"count": 2}, label="mug"), {"count": 1}, 2.0)
    r.add(Q(3, 1, "changed", {"objects": ["a", "b"]}, window=[0, 1]), {"objects": ["a"]}, 3.0)
    r.add(Q(4, 1, "changed", {"objects": []}, window=[0, 1]), {"objects": []}, 4.0)
    assert r.add(Q(5, 1, "count", label="mug"), {"count": 1}, 10.0) is None  # no gold: unscored
    d = r.to_dict()
    assert d["overall"] == {"accuracy": 0.5, "n": 4}
    assert d["by_type"] == {"count": {"accuracy": 0.5, "n": 2},
                            "changed": {"accuracy": 0.5, "n": 2, "mean_f1": round((2 / 3 + 1) / 2, 4)}}
    assert d["latency_ms"] == {"p50": 3.0, "p95": 8.8, "max": 10.0, "mean": 4.0}
    assert d["unscored"] == 1 and d["short_term"] == {"hits": 3, "misses": 1, "hit_rate": 0.75}
    json.dumps(d, allow_nan=False)
    text = r.render()
    lines = text.splitlines()
    assert lines[0].split() == ["type", "n", "accuracy"]
    assert any(line.split() == ["count", "2", "50.0%"] for line in lines)
    assert any(line.split() == ["overall", "4", "50.0%"] for line in lines)
    assert "p50 3.000" in text and "p95 8.800" in text and "hit rate 75.0%" in text
    empty = Report().to_dict()
    assert empty["overall"] == {"accuracy": None, "n": 0} and "short_term" not in empty
    assert "latency ms: -" in Report().render()


def test_report_takes_short_term_stats_from_memory() -> None:
    m = run(until=2.0)
    r = Report(short_term=None)
    for q in [Q("a", 2.0, "locate", object="mug"), Q("b", 2.0, "locate", object="teddy")]:
        r.add(q, answer(q, m), 0.1)
    r.short_term = m.short_term.stats
    assert r.to_dict()["short_term"] == {"hits": 1, "misses": 1, "hit_rate": 0.5}


# -- files -------------------------------------------------------------------------------------------------
def test_load_questions_reports_bad_lines_and_keeps_good_ones(tmp_path: Path) -> None:
    good = [
        {"id": "late", "t": 9.0, "type": "count", "text": "How many mugs?", "label": "mug", "answer": {"count": 2}},
        {"id": 2, "t": 1.5, "type": "changed", "text": "What moved?", "window": [1.0, 1.5]},
        {"id": "early", "t": 1.5, "type": "order", "text": "?", "objects": ["a", "b"], "event": "moved",
         "answer": {"first": None}},
    ]
    lines = [
        "# memory questions",                                                   # 1
        json.dumps(good[0]),                                                    # 2
        "",                                                                     # 3
        '{"id": "x", "t": 1.0, "type": "locate"',                               # 4 bad JSON
        json.dumps({"id": "y", "t": 1.0, "type": "where", "text": "?"}),        # 5 unknown type
        json.dumps({"id": "z", "t": 1.0, "type": "locate", "text": "?"}),       # 6 missing object
        json.dumps(good[1]),                                                    # 7
        json.dumps({**good[0], "t": 2.0}),                                      # 8 duplicate id
        json.dumps({"id": "w", "t": 1.0, "type": "changed", "text": "?", "window": [5, 1]}),  # 9 bad window
        json.dumps({"id": "n", "t": -1.0, "type": "count", "text": "?", "label": "mug"}),   # 10 negative t
        "[1, 2]",                                                               # 11 not an object
        json.dumps({"id": "c", "t": 1.0, "type": "count", "text": "?", "label": "mug",
                    "answer": {"count": "two"}}),                               # 12 ill-typed gold
        json.dumps({"id": "e", "t": 1.0, "type": "order", "text": "?", "objects": ["a", "b"],
                    "event": "grasped"}),                                       # 13 bad event
        '{"id": "i", "t": NaN, "type": "count", "text": "?", "label": "mug"}',  # 14 non-finite t
        json.dumps(good[2]),                                                    # 15
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    questions, problems = load_questions(path)
    assert [q.id for q in questions] == [2, "early", "late"]  # by t, stable
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in (4, 5, 6, 8, 9, 10, 11, 12, 13, 14)]
    by_line = {int(p.split(":")[0].split()[1]): p for p in problems}
    assert "bad JSON" in by_line[4] and "unknown question type 'where'" in by_line[5]
    assert "'object'" in by_line[6] and "duplicate id 'late'" in by_line[8] and "line 2" in by_line[8]
    assert "t1 <= t2" in by_line[9] and ">= 0" in by_line[10] and "JSON object" in by_line[11]
    assert "answer.count" in by_line[12] and "event" in by_line[13] and "finite" in by_line[14]
    assert questions[2].gold == {"count": 2} and questions[0].gold is None
    for q, d in zip(questions, [good[1], good[2], good[0]], strict=True):
        assert q.to_dict() == d and Question.from_dict(q.to_dict()) == q


def test_missing_or_unreadable_file_raises(tmp_path: Path) -> None:
    with pytest.raises(QuestionError, match="nope.jsonl"):
        load_questions(tmp_path / "nope.jsonl")
    with pytest.raises(QuestionError, match="cannot read"):
        load_questions(tmp_path)


def test_from_dict_messages() -> None:
    with pytest.raises(QuestionError, match="missing field 'text'"):
        Question.from_dict({"id": 1, "t": 0, "type": "count", "label": "mug"})
    with pytest.raises(QuestionError, match="'id'"):
        Question.from_dict({"id": True, "t": 0, "type": "count", "text": "", "label": "mug"})
    with pytest.raises(QuestionError, match="two different"):
        Question.from_dict({"id": 1, "t": 0, "type": "order", "text": "", "objects": ["mug", "Mug"],
                            "event": "seen"})
    with pytest.raises(QuestionError, match="position"):
        Question.from_dict({"id": 1, "t": 0, "type": "locate", "text": "", "object": "mug",
                            "answer": {"position": [1, 2]}})
    assert set(QUESTION_TYPES) == {"locate", "state", "changed", "last_seen", "count", "order"}


def test_write_answers_writes_a_line_for_every_question(tmp_path: Path) -> None:
    qs = [Q("a", 1.0, "locate", object="teddy"), Q(7, 2.0, "count", label="mug"), Q("c", 3.0, "state", object="x")]
    m = run(until=2.0)
    rows = [(qs[0], answer(qs[0], m)), (qs[1], answer(qs[1], m)), (qs[2], None)]
    path = tmp_path / "answers.jsonl"
    assert write_answers(path, rows) == 3
    got = [json.loads(line) for line in path.read_text().splitlines()]
    assert got == [{"id": "a", "answer": {"position": None, "receptacle": None}},
                   {"id": 7, "answer": {"count": 1}}, {"id": "c", "answer": {"state": None}}]
