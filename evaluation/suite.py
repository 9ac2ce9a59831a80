"""Memory task suites at increasing horizon: recorded episodes with gold memory questions.

For each horizon ``h`` and seed, :func:`generate_suite` builds one seeded episode in the simulated
household and records it as a bag (``mnemobot run --record``):

* ``h`` interactions, each moving a different object to another place ("put the mug on the
  tray"); from ``h >= 2`` one of them hides an object in the drawer and closes it;
* after each interaction a distractor: a visit to a place in another room ("go to the shelf"),
  which also shows the camera other objects;
* a delay before the final questions that grows with ``h``: ``h`` walks to the next room.

The steps are one instruction joined by ", then", run by one agent (the scripted expert by
default) in one episode. While it runs, a :class:`~mnemobot.sim.sightings.SightingLog` records
what the camera saw; the questions (the format of :mod:`mnemobot.evaluation.questions`) are asked
after each interaction, after each distractor and at the end, and their gold answers come only
from what the camera saw. A question whose answer the camera could not have established, or whose
camera-based answer could differ from the truth (the world changed out of sight, an object was
only glimpsed at the edge of a frame), is not asked.

Layout of the output folder::

    OUT/suite.json                    # every episode of the folder: dir, horizon, seed, success
    OUT/h<h>-s<seed>/bag/             # the recorded episode (rosbag2, MCAP)
    OUT/h<h>-s<seed>/questions.jsonl  # questions with gold answers
    OUT/h<h>-s<seed>/manifest.json    # instruction, steps, success, durations, question counts
    OUT/h<h>-s<seed>/truth.json       # sightings and ground truth per frame (for checking)

Usage::

    rows = generate_suite(SuiteConfig("suites/demo", horizons=(1, 2), seeds=(0, 1)), progress=print)
    # then: mnemobot replay suites/demo/h1-s0/bag --questions suites/demo/h1-s0/questions.jsonl

The output folder may exist; an episode folder must not (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnemobot.agent.errors import UserError
from mnemobot.evaluation.questions import QUESTION_TYPES, Question

if TYPE_CHECKING:
    from mnemobot.sim.layout import HouseLayout
    from mnemobot.sim.sightings import SightingLog

__all__ = [
    "MAX_HORIZON",
    "TASK_FAMILY",
    "TWIN_OF",
    "VARIANTS",
    "HiddenMove",
    "EpisodeStep",
    "SuiteConfig",
    "add_suite_parser",
    "add_twin_visits",
    "cmd_suite",
    "episode_name",
    "generate_suite",
    "make_questions",
    "plan_episode",
    "plan_hidden_move",
    "question_times",
    "step_end_times",
]

MAX_HORIZON = 6
"""Longest horizon: each interaction moves a different object."""
TASK_FAMILY = "place"
"""Task family the episodes run in (no scripted world events: only the robot changes the world)."""
MOVE_M = 0.15
"""Distance (m) beyond which a ``changed`` question counts an object as moved."""
MARGIN_M = 0.05
"""A ``changed`` window is asked only when every object's displacement is this far from
:data:`MOVE_M`; a ``locate`` only when the object is within this of where it was last seen."""
ORDER_GAP_S = 1.0
"""``order`` questions need events at least this far apart (s)."""
LAST_SEEN_SLACK_S = 0.8
"""A ``last_seen`` question is asked only when no view of the object (a glimpse, or the object in
the hand) follows its last sighting by more than this (s): memory may count such a view as seen."""
VARIANTS = ("behind", "clutter", "twins")
"""Harder suite variants (see :class:`SuiteConfig`)."""
CLUTTER_GAP_M = 0.085
"""Spawn gap (m, centre to centre) of the ``clutter`` variant, against the household's 0.13: the
objects (4-8 cm across) stand nearly touching, so one often hides part of another."""
TWIN_OF = "mug"
"""The object the ``twins`` variant doubles: same mesh, colour and detector class, another room."""
PLACE_AREA_PER_OBJECT = 0.03
"""Surface area (m^2) each object needs: a place takes at most area / this objects."""


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class SuiteConfig:
    """What to generate: episodes for every ``horizons`` x ``seeds`` into ``out_dir``.

    ``per_type``: at most this many questions of each type at each question time; ``agent``:
    ``expert`` (scripted, ground-truth locator) or ``planner`` (perception and memory); ``width``
    and ``height``: camera image size (pixels); ``sensor_profile``: what the camera records
    (:mod:`mnemobot.sim.sensors`; gold answers always come from the exact render).
    """

    out_dir: str | Path
    horizons: tuple[int, ...] = (1, 2, 3)
    seeds: tuple[int, ...] = (0,)
    per_type: int = 3
    width: int = 320
    height: int = 240
    agent: str = "expert"
    sensor_profile: str = "ideal"
    variants: tuple[str, ...] = ()
    """Harder episodes: ``behind`` (an object is moved while the robot is in another room, then the
    robot looks at both places), ``clutter`` (objects spawn closer together: partial occlusion),
    ``twins`` (a second object that looks exactly like :data:`TWIN_OF` stands in another room; the
    robot sees one, then the other, then the first again: two must stay two, neither "moved")."""

    def check(self) -> None:
        """Raise :class:`UserError` naming the first bad setting."""
        hs = tuple(self.horizons)
        if not hs:
            raise UserError("no horizons given")
        for h in hs:
            if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= MAX_HORIZON:
                raise UserError(f"a horizon must be a whole number from 1 to {MAX_HORIZON}, got {h!r}")
        if len(set(hs)) != len(hs):
            raise UserError(f"horizons repeat: {list(hs)}")
        seeds = tuple(self.seeds)
        if not seeds:
            raise UserError("no seeds given")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise UserError(f"a seed must be a whole number >= 0, got {s!r}")
        if len(set(seeds)) != len(seeds):
            raise UserError(f"seeds repeat: {list(seeds)}")
        if isinstance(self.per_type, bool) or not isinstance(self.per_type, int) or self.per_type < 1:
            raise UserError(f"per_type must be a whole number >= 1, got {self.per_type!r}")
        if self.agent not in ("expert", "planner"):
            raise UserError(f"unknown agent {self.agent!r}; use 'expert' or 'planner'")
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 16:
                raise UserError(f"{name} must be a whole number of pixels >= 16, got {v!r}")
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise UserError(f"unknown suite variant(s) {', '.join(unknown)}; use {', '.join(VARIANTS)}")
        from mnemobot.agent.episode import resolve_sensor

        resolve_sensor(self.sensor_profile)


def episode_name(horizon: int, seed: int) -> str:
    """Folder name of an episode: ``h<h>-s<seed>``."""
    return f"h{horizon}-s{seed}"


# --------------------------------------------------------------------------------------------
# Episodes


@dataclass(frozen=True)
class EpisodeStep:
    """One clause of a suite instruction.

    ``kind``: ``move`` (put ``object`` on/in ``target``), ``close`` (close the ``target``
    drawer), ``visit`` (a distractor: go to the place ``target``) or ``delay`` (go to the room
    ``target``). ``source``: where a moved object started.
    """

    kind: str
    clause: str
    object: str = ""
    target: str = ""
    source: str = ""

    def terminal(self) -> tuple[str, str, str]:
        """The skill that ends this step: ``(skill, argument name, argument value)``."""
        if self.kind == "move":
            return ("place", "object", self.object)
        if self.kind == "close":
            return ("close", "container", self.target)
        return ("navigate_to", "place", self.target)

    def to_dict(self) -> dict[str, str]:
        d = {"kind": self.kind, "clause": self.clause}
        d.update({k: v for k, v in (("object", self.object), ("target", self.target), ("source", self.source)) if v})
        return d


def _words(name: str) -> str:
    return name.replace("_", " ")


def _drawer_of(layout: HouseLayout) -> str | None:
    for spec in layout.places:
        if spec.relation == "in" and layout.furniture_by_name(spec.furniture).kind == "drawer_cabinet":
            return spec.name
    return None


def _start_room(layout: HouseLayout) -> str:
    xy = np.asarray(layout.start_pose[:2], dtype=float)
    for name, room in layout.room_rects().items():
        if room.contains(xy):
            return name
    return layout.rooms[0]


def plan_episode(horizon: int, rng: np.random.Generator, layout: HouseLayout,
                 placements: dict[str, str | None], keep: Iterable[str] = ()) -> list[EpisodeStep]:
    """The steps of a horizon-``horizon`` episode (see the module docstring), from the objects'
    starting places ``placements`` (label -> place, None when on none); objects in ``keep`` are
    never moved."""
    if not 1 <= horizon <= MAX_HORIZON:
        raise UserError(f"a horizon must be from 1 to {MAX_HORIZON}, got {horizon}")
    rooms = list(layout.rooms)
    ridx = {r: i for i, r in enumerate(rooms)}
    room_of = layout.room_of_place
    drawer = _drawer_of(layout)
    spawn = [p.name for p in layout.places if p.spawn]
    capacity = {p.name: max(1, int(p.surface_size[0] * p.surface_size[1] / PLACE_AREA_PER_OBJECT))
                for p in layout.places}
    where = dict(placements)
    load = {p: sum(1 for v in where.values() if v == p) for p in layout.place_names}
    drawer_step = int(rng.integers(horizon)) if horizon >= 2 and drawer is not None else None
    used: set[str] = set(keep)
    visited: set[str] = set()
    cur = _start_room(layout)
    steps: list[EpisodeStep] = []

    def dist(a: str, b: str) -> int:
        return abs(ridx[a] - ridx[b])

    for i in range(horizon):
        targets = [drawer] if i == drawer_step else [p for p in spawn if load[p] < capacity[p]]
        options = [(obj, tgt) for obj in sorted(where) if obj not in used and where[obj] in spawn
                   for tgt in targets if tgt != where[obj]]
        if not options:
            raise UserError(f"horizon {horizon} is too long for this household: no object left to move")
        costs = [dist(cur, room_of(where[o])) + dist(room_of(where[o]), room_of(t)) for o, t in options]
        slack = 0 if i == 0 else 1  # the first move stays short; later ones may cross the house
        pool = [opt for opt, c in zip(options, costs, strict=True) if c <= min(costs) + slack]
        obj, tgt = pool[int(rng.integers(len(pool)))]
        source = where[obj] or ""
        relation = layout.place_spec(tgt).relation
        steps.append(EpisodeStep("move", f"put the {_words(obj)} {relation} the {_words(tgt)}", obj, tgt, source))
        load[source] -= 1
        load[tgt] += 1
        where[obj] = tgt
        used.add(obj)
        cur = room_of(tgt)
        visited.add(tgt)
        if tgt == drawer:
            steps.append(EpisodeStep("close", f"close the {_words(drawer)}", target=drawer))
        # distractor: a place in another room; without a drawer move, the drawer once (so that the
        # camera sees it), else a surface with objects the episode has not looked at yet
        if drawer is not None and drawer_step is None and i == 0:
            place = drawer
        else:
            away = [p for p in spawn if room_of(p) != cur]
            fresh = [p for p in away if p not in visited and any(v == p for v in where.values())]
            choices = fresh or away
            place = choices[int(rng.integers(len(choices)))]
        steps.append(EpisodeStep("visit", f"go to the {_words(place)}", target=place))
        visited.add(place)
        cur = room_of(place)
    # the delay: `horizon` walks to the next room, away from the nearer end of the house first
    step = 1 if ridx[cur] < (len(rooms) - 1) / 2 else -1
    for _ in range(horizon):
        if len(rooms) < 2:
            break
        if not 0 <= ridx[cur] + step < len(rooms):
            step = -step
        cur = rooms[ridx[cur] + step]
        steps.append(EpisodeStep("delay", f"go to the {_words(cur)}", target=cur))
    return steps


@dataclass(frozen=True)
class HiddenMove:
    """An object moved by the world, not the robot: from place ``source`` to ``target`` while the
    robot stands at ``away`` (a place in another room), just before the steps that look again."""

    object: str
    source: str
    target: str
    away: str

    def to_dict(self) -> dict[str, str]:
        return {"object": self.object, "source": self.source, "target": self.target, "away": self.away}


def plan_hidden_move(steps: list[EpisodeStep], rng: np.random.Generator, layout: HouseLayout,
                     placements: dict[str, str | None], keep: Iterable[str] = ()) -> HiddenMove | None:
    """Choose an object the robot did not move, a place to move it to behind the robot's back and a
    place in a third room to stand at meanwhile; insert the visits (away, then the new place, then
    the old one) before the delay steps of ``steps`` (in place). None when the household allows none."""
    room_of = layout.room_of_place
    spawn = [p.name for p in layout.places if p.spawn]
    where = dict(placements)
    moved = {st.object for st in steps if st.kind == "move"} | set(keep)
    for st in steps:
        if st.kind == "move":
            where[st.object] = st.target
    capacity = {p.name: max(1, int(p.surface_size[0] * p.surface_size[1] / PLACE_AREA_PER_OBJECT))
                for p in layout.places}
    load = {p: sum(1 for v in where.values() if v == p) for p in layout.place_names}
    seen_places = {st.target for st in steps if st.kind in ("move", "visit")} | {st.source for st in steps if st.source}
    last_move = max((i for i, st in enumerate(steps) if st.kind == "move"), default=-1)
    after = {st.target for st in steps[last_move + 1:] if st.kind == "visit"}
    options = []
    for obj in sorted(where):
        a = where[obj]
        if obj in moved or a not in spawn:
            continue
        for b in spawn:
            if b == a or load[b] >= capacity[b]:
                continue
            for c in spawn:
                if room_of(c) in (room_of(a), room_of(b)) or c in after:
                    continue
                # the object's place was seen before (memory knew it there), the new place in the same
                # room (one visit shows the absence and the presence) ranks first
                options.append((a not in seen_places, room_of(a) != room_of(b), obj, a, b, c))
    if not options:
        return None
    best = min(o[:2] for o in options)
    pool = [o for o in options if o[:2] == best]
    _, _, obj, a, b, c = pool[int(rng.integers(len(pool)))]
    at = next((i for i, st in enumerate(steps) if st.kind == "delay"), len(steps))
    steps[at:at] = [EpisodeStep("visit", f"go to the {_words(p)}", target=p) for p in (c, b, a)]
    return HiddenMove(obj, a, b, c)


def add_twin_visits(steps: list[EpisodeStep], placements: dict[str, str | None], twins: Sequence[str]) -> None:
    """Insert visits to the places of two look-alike objects ``twins`` (the first's, the second's,
    the first's again) before the delay steps of ``steps`` (in place): the camera sees one, then
    the other in another room, then the first where it was, so two objects, not one that moved."""
    a, b = (placements.get(x) for x in twins[:2])
    if a is None or b is None:
        raise UserError(f"the look-alike objects {' and '.join(twins)} do not both rest on a place")
    at = next((i for i, st in enumerate(steps) if st.kind == "delay"), len(steps))
    steps[at:at] = [EpisodeStep("visit", f"go to the {_words(p)}", target=p) for p in (a, b, a)]


class _HiddenMover:
    """Carries out a :class:`HiddenMove` when the robot has arrived at ``away`` once every move of
    the episode rests at its target (the world's script: ground truth is allowed here)."""

    def __init__(self, env: Any, move: HiddenMove, steps: Sequence[EpisodeStep], rng: np.random.Generator) -> None:
        self.env, self.move, self.steps, self.rng = env, move, steps, rng
        self.done: dict[str, Any] | None = None

    def __call__(self, kind: str, t: float, data: dict[str, Any]) -> None:
        if self.done is not None or kind != "skill" or data.get("skill") != "navigate_to" or not data.get("success"):
            return
        if (data.get("args") or {}).get("place") != self.move.away:
            return
        backend = self.env.backend
        if backend.is_held(self.move.object) or not _placed(backend, self.steps):
            return
        spot = backend.free_spot(self.move.target, self.rng)
        if spot is None:
            self.done = {"skipped": "no free spot", **self.move.to_dict()}
            return
        yaw = float(self.rng.uniform(-math.pi, math.pi))
        backend.put_object(self.move.object, self.move.target, xy_offset=spot, yaw=yaw)
        self.done = dict(self.move.to_dict(), t=round(float(t), 3))


def step_end_times(steps: Sequence[EpisodeStep], skills: Iterable[dict[str, Any]], start: float = 0.0
                   ) -> list[float | None]:
    """Sim time at which each step's last skill ended (None: never), from the executed skills
    (``EpisodeSummary.skills``: run back to back from ``start``)."""
    ends: list[float | None] = [None] * len(steps)
    t, k = start, 0
    for sk in skills:
        t += float(sk.get("duration_s", 0.0))
        if k >= len(steps):
            continue
        name, arg, value = steps[k].terminal()
        if sk.get("success") and sk.get("skill") == name and dict(sk.get("args", {})).get(arg) == value:
            ends[k] = t
            k += 1
    return ends


def question_times(log: SightingLog, steps: Sequence[EpisodeStep], ends: Sequence[float | None],
                   settle_s: float = 0.5) -> list[float]:
    """When to ask: ``settle_s`` after each interaction and distractor ended, and just after the
    last frame. Each time lies halfway between two camera frames, so that no frame's timestamp
    ties with a question; times closer than 1 s to the previous one are dropped."""
    if not log.frames:
        return []
    raw = [end + settle_s for s, end in zip(steps, ends, strict=True) if end is not None and s.kind in ("move", "visit")]
    out: list[float] = []
    for t in raw:
        i = bisect.bisect_right([f.t for f in log.frames], t) - 1
        if 0 <= i < len(log.frames) - 1:
            out.append(round((log.frames[i].t + log.frames[i + 1].t) / 2, 3))
    out.append(round(log.end + 0.05, 3))
    times: list[float] = []
    for t in sorted(set(out)):
        if not times or t - times[-1] >= 1.0:
            times.append(t)
    return times


# --------------------------------------------------------------------------------------------
# Gold questions


def _plural(words: str) -> str:
    if words.endswith(("s", "x", "ch", "sh")):
        return words + "es"
    if words.endswith("y") and words[-2:-1] not in "aeiou":
        return words[:-1] + "ies"
    return words + "s"


def _r(v: float) -> float:
    return round(float(v), 4)


def _gt_first_move(log: SightingLog, label: str) -> float | None:
    """First frame where the object was in the hand or truly away from its first position."""
    if not log.frames:
        return None
    origin = log.frames[0].centres.get(label)
    for f in log.frames:
        if label in f.held or (origin is not None and math.dist(f.centres[label], origin) > MOVE_M):
            return f.t
    return None


def _pick(rng: np.random.Generator, candidates: Sequence[Any], n: int,
          preferred: Callable[[Any], bool] | None = None) -> list[Any]:
    """Up to ``n`` candidates at random; about half from the ``preferred`` ones when there are."""
    items = list(candidates)
    order = [items[i] for i in rng.permutation(len(items))]
    if preferred is None:
        return order[:n]
    first = [c for c in order if preferred(c)][: (n + 1) // 2]
    rest = [c for c in order if c not in first]
    return first + rest[: n - len(first)]


def _locate(log: SightingLog, label: str, t: float) -> dict[str, Any] | None:
    last = log.last_sighting(label, t)
    gt = log.gt_centre(label, t)
    if last is None or gt is None or label in log.held_at(t) or math.dist(gt, last[1]) > MARGIN_M:
        return None
    return {"position": [_r(v) for v in last[1]], "receptacle": last[2]}


def _changed(log: SightingLog, t1: float, t2: float) -> list[str] | None:
    """Gold of a ``changed`` window, or None when the camera's answer could differ from the truth
    or from what memory may know (a near-threshold move, a move out of sight, a held object)."""
    if t2 - t1 < 1.0 or log.held_at(t1) or log.held_at(t2):
        return None
    moved: list[str] = []
    for label in log.labels:
        g1, g2 = log.gt_centre(label, t1), log.gt_centre(label, t2)
        if g1 is None or g2 is None:
            return None
        gd = math.dist(g1, g2)
        if abs(gd - MOVE_M) < MARGIN_M:
            return None
        s1 = log.position_seen(label, t1)
        if s1 is None:
            glimpsed = log.first_glimpse(label)
            if glimpsed is not None and glimpsed <= t1 and gd > MOVE_M:
                return None  # memory may have known it before t1
            if gd > MOVE_M and any(label in f.held for f in log.frames_between(t1, t2)):
                return None  # the robot carried it from a spot the camera never showed: memory knows from the body
            continue
        s2 = log.position_seen(label, t2) or s1
        sd = math.dist(s1, s2)
        if abs(sd - MOVE_M) < MARGIN_M or (sd > MOVE_M) != (gd > MOVE_M):
            return None
        if sd > MOVE_M:
            # seen elsewhere: the camera tells a move from a second object that looks the same only
            # when the robot carried it, or once it showed the old spot empty
            last_there = log.last_sighting(label, t1)
            since = last_there[0] if last_there is not None else t1
            carried = any(label in f.held for f in log.frames_between(since, t2))
            if not carried and not log.vacated_between(label, s1, since, t2):
                return None
            moved.append(label)
    return sorted(moved)


def _last_seen(log: SightingLog, label: str, t: float) -> float | None:
    last = log.last_sighting(label, t)
    if last is None:
        return None
    later = log.glimpses(label, last[0], t)
    if later and later[-1] - last[0] > LAST_SEEN_SLACK_S:
        return None
    return last[0]


def _unresolved_move(log: SightingLog, label: str, t: float) -> bool:
    """Whether by ``t`` the camera saw ``label`` somewhere new without having seen it carried
    there or its former spot empty: until then a second object that looks the same is as likely
    as a move (two red cubes must stay two), so questions that hinge on it have no gold."""
    seen = [s for s in log.sightings.get(label, []) if s.t <= t]
    for a, b in zip(seen, seen[1:], strict=False):
        if math.dist(a.centre, b.centre) <= MOVE_M or (a.place is not None and a.place == b.place == log.drawer):
            continue  # in the same drawer, which slides
        carried = any(label in f.held for f in log.frames_between(a.t, b.t))
        if not carried and not log.vacated_between(label, a.centre, a.t, t):
            return True
    return False


def _count(log: SightingLog, label: str, t: float) -> int | None:
    first = log.first_seen(label)
    if first is not None and first <= t:
        return None if _unresolved_move(log, label, t) else 1
    glimpsed = log.first_glimpse(label)
    return None if glimpsed is not None and glimpsed <= t else 0


def _count_category(log: SightingLog, category: str, t: float) -> int | None:
    """Gold of "how many <category>s have you seen" by ``t``. Look-alike objects count once the
    camera established that they are several: each was seen, and each seen before the last one
    first appeared was seen again, where it stood, after that (otherwise one object that moved is
    as likely); a look-alike only glimpsed, or one whose own move is unresolved, leaves no gold."""
    names = [lb for lb in log.labels if log.category(lb) == category]
    if len(names) == 1:
        return _count(log, names[0], t)
    firsts: list[tuple[float, str]] = []
    for lb in names:
        n = _count(log, lb, t)
        if n is None:
            return None
        if n:
            firsts.append((float(log.first_seen(lb)), lb))  # type: ignore[arg-type]
    if len(firsts) <= 1:
        return len(firsts)
    last = max(f for f, _ in firsts)
    for first, lb in firsts:
        if first < last and not any(last < s.t <= t for s in log.sightings.get(lb, [])):
            return None
    return len(firsts)


def _order(log: SightingLog, a: str, b: str, event: str, t: float) -> str | None:
    """The label that came first (seen first, or moved first) by ``t``, when unambiguous."""
    if event == "seen":
        ta, tb = log.first_seen(a), log.first_seen(b)
        ga, gb = log.first_glimpse(a), log.first_glimpse(b)
    else:
        ta, tb = log.first_move(a), log.first_move(b)
        ga, gb = _gt_first_move(log, a), _gt_first_move(log, b)

    def by(x: float | None) -> float | None:
        return x if x is not None and x <= t else None

    ta, tb, ga, gb = by(ta), by(tb), by(ga), by(gb)
    if (ta is None) != (ga is None) or (tb is None) != (gb is None) or (ta is None and tb is None):
        return None  # seen (moved) by one account, not by the other; or by neither
    if ta is None or tb is None or ga is None or gb is None:
        return a if ta is not None else b
    lo_a, hi_a, lo_b, hi_b = min(ta, ga), max(ta, ga), min(tb, gb), max(tb, gb)
    if hi_a + ORDER_GAP_S <= lo_b:
        return a
    if hi_b + ORDER_GAP_S <= lo_a:
        return b
    return None


def make_questions(log: SightingLog, rng: np.random.Generator, times: Sequence[float], per_type: int = 3,
                   drawer: str | None = None) -> list[dict[str, Any]]:
    """Questions with gold answers from what the camera saw (see :func:`generate_suite`), at most
    ``per_type`` of each type at each of ``times``; dicts in the format of
    :mod:`mnemobot.evaluation.questions`, sorted by time, each checked with :class:`Question`.

    ``drawer``: the container of ``state`` questions (default: the log's drawer).
    """
    drawer = drawer or log.drawer
    moved_ever = {lb for lb in log.labels if log.first_move(lb) is not None}
    # a question naming one of several look-alike objects has no single answer: those get `count`
    unique = [lb for lb in log.labels if len(log.look_alikes(lb)) == 1]
    categories = list(dict.fromkeys(log.category(lb) for lb in log.labels))
    out: list[dict[str, Any]] = []
    for k, t in enumerate(sorted(float(x) for x in times)):
        qs: list[dict[str, Any]] = []
        seen = [lb for lb in log.seen_objects(t) if lb in unique]
        # locate
        cands = [(lb, g) for lb in seen if (g := _locate(log, lb, t)) is not None]
        for lb, g in _pick(rng, cands, per_type, lambda c: c[0] in moved_ever):
            qs.append({"type": "locate", "text": f"Where is the {_words(lb)}?", "object": lb, "answer": g})
        # state (the drawer, once the camera saw it or the robot moved it)
        if drawer is not None and log.container_known(drawer, t):
            state = log.container_state(drawer, t)
            qs.append({"type": "state", "text": f"Is the {_words(drawer)} open or closed?", "object": drawer,
                       "answer": {"state": state}})
        # changed: windows ending now, with and without moves
        grid = np.arange(log.start + 0.1, t - 1.0, 5.0)
        starts = sorted({round(float(x), 3) for x in grid} | {x for x in times if x < t - 1.0})
        windows = [(t1, g) for t1 in starts if (g := _changed(log, t1, t)) is not None]
        for t1, g in _pick(rng, windows, per_type, lambda w: bool(w[1])):
            qs.append({"type": "changed", "text": f"Which objects moved between {t1:.1f} s and {t:.1f} s?",
                       "window": [t1, t], "answer": {"objects": g}})
        # last_seen
        cands = [(lb, ts) for lb in seen if (ts := _last_seen(log, lb, t)) is not None]
        for lb, ts in _pick(rng, cands, per_type, lambda c, now=t: now - c[1] > 10.0):
            qs.append({"type": "last_seen", "text": f"When did you last see the {_words(lb)}?", "object": lb,
                       "answer": {"time": _r(ts)}})
        # count: seen labels (1 or, for look-alikes, more) and labels of the world not seen yet (0)
        cands = [(lb, n) for lb in categories if (n := _count_category(log, lb, t)) is not None]
        for lb, n in _pick(rng, cands, per_type, lambda c: c[1] != 1):
            qs.append({"type": "count", "text": f"How many {_plural(_words(lb))} have you seen?", "label": lb,
                       "answer": {"count": n}})
        # order: which was seen / moved first (per_type 1: the two events take turns)
        labels = unique
        pairs = [(labels[i], labels[j]) for i in range(len(labels)) for j in range(i + 1, len(labels))]
        n_seen = (per_type + 1) // 2 if per_type > 1 else 1 - k % 2
        for event, n in (("seen", n_seen), ("moved", per_type - n_seen)):
            cands = []
            for a, b in pairs:
                first = _order(log, a, b, event, t)
                if first is not None:
                    cands.append(((a, b) if rng.random() < 0.5 else (b, a), first))
            both_moved = (lambda c: all(log.first_move(x) is not None for x in c[0])) if event == "moved" else None
            for (a, b), first in _pick(rng, cands, n, both_moved):
                text = (f"Which did you see first, the {_words(a)} or the {_words(b)}?" if event == "seen"
                        else f"Which was moved first, the {_words(a)} or the {_words(b)}?")
                qs.append({"type": "order", "text": text, "objects": [a, b], "event": event,
                           "answer": {"first": first}})
        for q in qs:
            q["t"] = round(t, 3)
        out += qs
    out.sort(key=lambda q: q["t"])
    rows: list[dict[str, Any]] = []
    for i, q in enumerate(out, start=1):
        d = {"id": f"q{i:03d}", "t": q.pop("t"), "type": q.pop("type"), "text": q.pop("text"), **q}
        rows.append(Question.from_dict(d).to_dict())  # checked against the format
    return rows


# --------------------------------------------------------------------------------------------
# Generation


def _placements(backend: Any) -> dict[str, str | None]:
    """Where each object rests now (ground truth, to plan the episode's moves)."""
    out: dict[str, str | None] = {}
    for label in backend.object_labels():
        where = backend.place_of(label)
        out[label] = where[0] if where else None
    return out


def _placed(backend: Any, steps: Sequence[EpisodeStep]) -> bool:
    """Ground truth: every moved object rests where its step put it."""
    layout = backend.layout
    for s in steps:
        if s.kind == "move":
            want = (s.target, layout.place_spec(s.target).relation)
            if backend.is_held(s.object) or backend.place_of(s.object) != want:
                return False
    return True


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _episode(cfg: SuiteConfig, horizon: int, seed: int, folder: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """One episode, written into a hidden ``.partial`` folder that becomes ``folder`` only when
    complete: an interrupted run leaves no half-written episode behind under the real name."""
    import shutil

    final = folder
    folder = final.with_name(f".{final.name}.partial")
    if folder.exists():  # left by an interrupted run of this generator
        shutil.rmtree(folder)
    try:
        manifest = _write_episode(cfg, horizon, seed, folder, say)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    folder.rename(final)
    return manifest


def _write_episode(cfg: SuiteConfig, horizon: int, seed: int, folder: Path,
                   say: Callable[[str], None]) -> dict[str, Any]:
    from mnemobot.agent.episode import RunConfig, resolve_sensor, run_episode
    from mnemobot.sim.env import EnvConfig, HouseholdEnv
    from mnemobot.sim.sightings import SightingLog

    wall0 = time.perf_counter()
    from dataclasses import replace

    from mnemobot.sim.layout import DEFAULT_LAYOUT

    layout = replace(DEFAULT_LAYOUT, spawn_gap=CLUTTER_GAP_M) if "clutter" in cfg.variants else DEFAULT_LAYOUT
    twins = (TWIN_OF, TWIN_OF + "_twin") if "twins" in cfg.variants else ()
    if twins:
        layout = layout.with_twin(TWIN_OF)
    env = HouseholdEnv(EnvConfig(task=TASK_FAMILY, width=cfg.width, height=cfg.height, layout=layout,
                                 sensor_profile=resolve_sensor(cfg.sensor_profile)))
    try:
        env.reset(seed=seed)
        rng = np.random.default_rng([seed, horizon, zlib.crc32(b"mnemobot-suite")])
        placements = _placements(env.backend)
        steps = plan_episode(horizon, rng, env.config.layout, placements, keep=twins)
        if twins:
            add_twin_visits(steps, placements, twins)
        hidden = (plan_hidden_move(steps, rng, env.config.layout, placements, keep=twins)
                  if "behind" in cfg.variants else None)
        instruction = ", then ".join(s.clause for s in steps)
        say(f"{folder.name[1:-len('.partial')]}: {instruction}"
            + (f" (behind the robot's back: the {_words(hidden.object)} from the {_words(hidden.source)} to the "
               f"{_words(hidden.target)})" if hidden is not None else ""))
        log = SightingLog(env.backend)
        mover = _HiddenMover(env, hidden, steps, np.random.default_rng([seed, horizon, 7])) if hidden else None
        folder.mkdir(parents=True)
        summary = run_episode(
            RunConfig(task_id=TASK_FAMILY, task_text=instruction, seed=seed, agent=cfg.agent,
                      task_objects=tuple(s.object for s in steps if s.object),
                      record=str(folder / "bag"), width=cfg.width, height=cfg.height,
                      sensor_profile=cfg.sensor_profile),
            progress=None, env=env, frame_hook=log, event_hook=mover,
        )
        failed = [s for s in summary.skills if not s["success"]]
        # the episode's own verdict also wants every visit's place at the end, which a later visit
        # undoes; here: every skill succeeded and every moved object rests where it was put
        stop = "" if summary.stop_reason == "goal not reached" else summary.stop_reason
        success = not failed and not stop and _placed(env.backend, steps)
    finally:
        env.close()
    ends = step_end_times(steps, summary.skills)
    times = question_times(log, steps, ends)
    questions = make_questions(log, rng, times, cfg.per_type)
    by_type = {k: sum(1 for q in questions if q["type"] == k) for k in QUESTION_TYPES}
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    _write_json(folder / "truth.json", log.to_dict())
    manifest: dict[str, Any] = {
        "horizon": horizon,
        "seed": seed,
        "agent": cfg.agent,
        "sensor_profile": env.sensor_model.name,
        "variants": list(cfg.variants),
        "hidden_moves": [mover.done] if mover is not None and mover.done is not None else [],
        "task_family": TASK_FAMILY,
        "instruction": instruction,
        "steps": [dict(s.to_dict(), end_s=None if e is None else round(e, 3)) for s, e in zip(steps, ends, strict=True)],
        "success": bool(success),
        "skills_failed": len(failed),
        "stop_reason": stop,
        "sim_s": round(summary.sim_s, 3),
        "wall_s": round(time.perf_counter() - wall0, 3),
        "frames": len(log.frames),
        "width": cfg.width,
        "height": cfg.height,
        "min_pixels": log.min_pixels,
        "question_times": times,
        "questions": len(questions),
        "questions_by_type": by_type,
        "bag": "bag",
        "questions_file": "questions.jsonl",
        "truth_file": "truth.json",
    }
    _write_json(folder / "manifest.json", manifest)
    return manifest


def _update_index(out: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Add the episodes to ``OUT/suite.json`` (keeping those generated before)."""
    index = out / "suite.json"
    episodes: dict[str, dict[str, Any]] = {}
    if index.is_file():
        try:
            old = json.loads(index.read_text(encoding="utf-8"))
            episodes = {str(e["dir"]): e for e in old.get("episodes", []) if isinstance(e, dict) and "dir" in e}
        except (OSError, ValueError, TypeError, AttributeError):
            episodes = {}
    keys = ("dir", "horizon", "seed", "agent", "instruction", "success", "sim_s", "frames", "questions",
            "questions_by_type")
    for r in rows:
        episodes[r["dir"]] = {k: r[k] for k in keys}
    ordered = sorted(episodes.values(), key=lambda e: (e.get("horizon", 0), e.get("seed", 0), e["dir"]))
    _write_json(index, {"format": "mnemobot-suite/1", "episodes": ordered})


def _config_dict(cfg: SuiteConfig) -> dict[str, Any]:
    """``cfg`` as JSON (for an episode's process)."""
    d = asdict(cfg)
    d["out_dir"] = str(cfg.out_dir)
    return d


def suite_episode_job(cfg: dict[str, Any], horizon: int, seed: int, folder: str) -> dict[str, Any]:
    """One suite episode in an executor's process (``cfg``: :class:`SuiteConfig` as a dict); its manifest."""
    c = SuiteConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    return _episode(c, horizon, seed, Path(folder), lambda msg: print(msg, flush=True))


def _say_done(say: Callable[[str], None], name: str, manifest: dict[str, Any]) -> None:
    say(f"{name}: {'success' if manifest['success'] else 'FAILURE'}, {manifest['sim_s']:.1f} s simulated, "
        f"{manifest['frames']} frames, {manifest['questions']} questions")


def generate_suite(cfg: SuiteConfig, progress: Callable[[str], None] | None = None,
                   executor: Any = None, on_tick: Callable[[int], None] | None = None,
                   resume: bool = False) -> list[dict[str, Any]]:
    """Generate every episode of ``cfg`` (horizons x seeds); returns their manifests, each with its
    folder's name under ``dir``. Bad settings or an existing episode folder raise
    :class:`UserError` before anything runs.

    With an ``executor`` (:func:`mnemobot.evaluation.executor.make_executor`) each episode runs in
    a process of its own, as many at a time as it runs, under its time limit; an episode that timed
    out, died or raised leaves no folder and is returned as ``{"dir", "success": False,
    "stop_reason", "error"}`` (a Ray cluster's nodes must see ``out_dir``: a shared file system).
    Without one they run here, one after another. ``resume``: episodes whose folders exist (with
    their manifest) are kept and not run again, instead of refusing to start.
    """
    say = progress or (lambda _m: None)
    cfg.check()
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    plan = [(h, s) for h in cfg.horizons for s in cfg.seeds]
    taken = [episode_name(h, s) for h, s in plan if (out / episode_name(h, s)).exists()]
    done: list[dict[str, Any]] = []
    if taken and resume:
        for name in taken:
            try:
                done.append({"dir": name, **json.loads((out / name / "manifest.json").read_text(encoding="utf-8"))})
            except (OSError, ValueError) as e:
                raise UserError(f"{out / name} exists but its manifest cannot be read ({e}); remove it to "
                                "record that episode again") from None
        plan = [(h, s) for h, s in plan if episode_name(h, s) not in taken]
        say(f"resuming {out}: {len(taken)} episode(s) already recorded")
    elif taken:
        raise UserError(f"episode folder(s) already exist in {out}: {', '.join(taken)} "
                        "(nothing was overwritten; choose another output folder, remove them, or --resume)")
    if executor is not None:
        executor.check()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = list(done)
    if executor is None:
        for h, s in plan:
            name = episode_name(h, s)
            manifest = _episode(cfg, h, s, out / name, say)
            rows.append({"dir": name, **manifest})
            _update_index(out, rows)
            _say_done(say, name, manifest)
        return rows

    import shutil

    from mnemobot.evaluation.executor import Job

    settings = _config_dict(cfg)
    jobs = [Job(episode_name(h, s), {"call": f"{__name__}:suite_episode_job",
                                     "args": {"cfg": settings, "horizon": h, "seed": s,
                                              "folder": str((out / episode_name(h, s)).resolve())}})
            for h, s in plan]
    failed: list[dict[str, Any]] = []

    def on_result(job: Job, row: dict[str, Any]) -> None:
        manifest_path = out / job.key / "manifest.json"
        if "questions_file" in row and manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            rows.append({"dir": job.key, **manifest})
            _update_index(out, [r for r in rows if "questions_file" in r])
            say(f"{job.key}: {manifest['instruction']}")
            _say_done(say, job.key, manifest)
            return
        shutil.rmtree(out / f".{job.key}.partial", ignore_errors=True)  # a process killed mid-episode
        why = row.get("error") or row.get("stop_reason") or "no result"
        failed.append({"dir": job.key, "success": False, "stop_reason": row.get("stop_reason", "error"),
                       "error": why})
        say(f"{job.key}: NOT RECORDED ({row.get('stop_reason', 'error')}: {why})")

    try:
        executor.run(jobs, on_result, on_tick=on_tick)
    finally:
        work = out / ".work"
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
    order = {episode_name(h, s): i for i, (h, s) in enumerate((h, s) for h in cfg.horizons for s in cfg.seeds)}
    return sorted(rows + failed, key=lambda r: order[r["dir"]])


# --------------------------------------------------------------------------------------------
# Command line


def _int_list(text: str, what: str) -> tuple[int, ...]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(f"{what} must be comma-separated whole numbers, e.g. 1,2,3; got {text!r}") from None
    return values


def add_suite_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``suite OUT [--horizons 1,2,3] [--seeds 0] [--per-type N] [--agent A] [-q]``."""
    p = sub.add_parser(
        "suite",
        help="generate memory question suites: recorded episodes with gold questions",
        description="Record one episode per horizon and seed (moves, distractor visits, a delay growing "
                    "with the horizon) with memory questions whose gold answers come from what the "
                    "camera saw. Writes OUT/h<h>-s<seed>/{bag,questions.jsonl,manifest.json} and "
                    "OUT/suite.json; existing episode folders are never overwritten.",
    )
    p.add_argument("out", type=Path, help="output folder (may exist; its episode folders must not)")
    p.add_argument("--horizons", default="1,2,3", help=f"comma-separated horizons, 1 to {MAX_HORIZON} (default: 1,2,3)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--per-type", type=int, default=3,
                   help="at most this many questions of each type at each question time (default: 3)")
    p.add_argument("--agent", choices=("expert", "planner"), default="expert",
                   help="who acts: 'expert' (scripted, default) or 'planner' (perception and memory)")
    p.add_argument("--variant", default="", metavar="V,...",
                   help="harder episodes: 'behind' (an object moved while the robot is in another room, then "
                        "looked at again), 'clutter' (objects spawned nearly touching), 'twins' (a look-alike "
                        "object in another room, both seen); comma list")
    p.add_argument("--width", type=int, default=320, help="camera width in pixels (default: 320)")
    p.add_argument("--height", type=int, default=240, help="camera height in pixels (default: 240)")
    from mnemobot.agent.cli import add_sensor_profile_option

    add_sensor_profile_option(p)
    from mnemobot.evaluation.cli import add_executor_options

    add_executor_options(p)
    p.add_argument("--resume", action="store_true",
                   help="keep the episodes OUT already holds and record only the others")
    p.add_argument("--in-process", action="store_true",
                   help="run the episodes here, one after another, instead of on the executor")
    p.add_argument("-q", "--quiet", action="store_true", help="print only one line per episode")
    return p


def cmd_suite(args: argparse.Namespace) -> int:
    """Run ``mnemobot suite``; 0 when every episode succeeded, 1 otherwise."""
    cfg = SuiteConfig(
        out_dir=args.out,
        horizons=_int_list(args.horizons, "--horizons"),
        seeds=_int_list(args.seeds, "--seeds"),
        per_type=args.per_type,
        width=getattr(args, "width", 320),
        height=getattr(args, "height", 240),
        agent=args.agent,
        sensor_profile=getattr(args, "sensor_profile", "ideal"),
        variants=tuple(v.strip() for v in getattr(args, "variant", "").split(",") if v.strip()),
    )
    progress = None if args.quiet else (lambda msg: print(msg, flush=True))
    executor = None
    if not getattr(args, "in_process", False):
        from mnemobot.evaluation.executor import make_executor

        out = Path(cfg.out_dir)
        executor = make_executor(args.executor, args.workers, args.episode_timeout, args.retries, out,
                                 getattr(args, "address", None))
    rows = generate_suite(cfg, progress, executor=executor, resume=getattr(args, "resume", False))
    for r in rows:
        if "questions_file" in r:
            print(f"{Path(cfg.out_dir) / r['dir']}  success={'yes' if r['success'] else 'no'}  "
                  f"frames={r['frames']}  questions={r['questions']}", flush=True)
        else:
            print(f"{Path(cfg.out_dir) / r['dir']}  not recorded: {r['stop_reason']}", flush=True)
    return 0 if all(r["success"] for r in rows) else 1

