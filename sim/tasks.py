"""Household task families: seeded generators of instructions, world events and success checks.

A task family is picked by id from :data:`TASK_FAMILIES` (``"place"``, ``"fetch"``, ``"memory"``)
and generated with :func:`make_task`, deterministically from a seed::

    task = make_task("fetch", seed=3, layout=DEFAULT_LAYOUT, placements={"duck": "shelf", ...})
    task.instruction  # "bring the duck from the bedroom to the kitchen table"
    task.attach(backend)           # registers world events and progress tracking (step hooks)
    task.success(backend)          # scored on simulator ground truth

Families:

* ``place``: put an object on/in another place, in the same room or another;
* ``fetch``: bring an object from its room to a place in a different room;
* ``memory``: hide an object in the drawer and close it, go to another room (where the world
  changes behind the robot's back), then bring the hidden object to a place in another room.
* ``recall``: move an object to another place, then put it back where it was. The instruction
  never names the original place: only memory of what the camera saw can answer it.

Scoring reads simulator ground truth through the backend; it never feeds memory or perception.
This module needs no simulator: ``success`` and the hooks take any object with the backend's
ground-truth methods.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mnemobot.sim.layout import HouseLayout

if TYPE_CHECKING:
    from mnemobot.sim.backend import PyBulletBackend

__all__ = [
    "DRAWER_CLOSED_TOL",
    "EVENT_ACTIONS",
    "MILESTONES",
    "TASK_FAMILIES",
    "TRIGGERS",
    "Milestone",
    "Task",
    "TaskProgress",
    "WorldEvent",
    "make_task",
]

DRAWER_CLOSED_TOL = 0.02
"""The drawer counts as closed below this opening (m)."""
REST_SPEED = 0.05
"""An object counts as resting below this speed (m/s)."""
CHECK_HZ = 20.0
"""How often (per simulated second) the step hooks check events and milestones."""


@dataclass(frozen=True)
class WorldEvent:
    """A scripted change of the world, fired once when its trigger first holds.

    * ``trigger``: ``"time"`` (sim time >= ``at_s`` seconds) or ``"robot_in_room"`` (the robot's
      base is in ``room``); see :data:`TRIGGERS`;
    * ``action``: ``"move_object"`` (put ``object`` on a free spot of ``place``; skipped while the
      object is held) or ``"set_drawer"`` (drawer opening ``opening`` m); see :data:`EVENT_ACTIONS`;
    * ``after``: how many of the task's milestones must have been reached before it can fire.
    """

    trigger: str
    action: str
    after: int = 0
    at_s: float = 0.0
    room: str = ""
    object: str = ""
    place: str = ""
    opening: float = 0.0
    seed: int = 0

    def describe(self) -> str:
        when = f"at t={self.at_s:g} s" if self.trigger == "time" else f"when the robot enters the {self.room}"
        what = (f"the {self.object} moves to the {self.place}" if self.action == "move_object"
                else f"the drawer opens to {self.opening:g} m")
        return f"{when}, {what}".replace("_", " ")


@dataclass(frozen=True)
class Milestone:
    """A condition that must hold at some moment, after the previous milestone, before success.

    ``kind``: ``"hidden_in_drawer"`` (``object`` in the drawer and the drawer closed),
    ``"visit_room"`` (the robot's base in ``room``) or ``"placed_at"`` (``object`` resting on/in
    the place named by ``room``); see :data:`MILESTONES`.
    """

    kind: str
    object: str = ""
    room: str = ""


@dataclass
class TaskProgress:
    """Mutable per-episode record kept by the task's step hook."""

    reached: int = 0
    reached_at: list[float] = field(default_factory=list)
    fired: list[int] = field(default_factory=list)
    hook: int | None = None
    last_check: float = -1.0


@dataclass(frozen=True)
class Task:
    """One generated task. ``object`` goes ``relation`` (``"on"``/``"in"``) the ``receptacle`` place.

    ``events`` are scripted world events; ``milestones`` conditions to pass in order before the
    final placement counts (the memory family). ``progress`` is the only mutable part.
    """

    family: str
    seed: int
    instruction: str
    object: str
    receptacle: str
    relation: str
    events: tuple[WorldEvent, ...] = ()
    milestones: tuple[Milestone, ...] = ()
    progress: TaskProgress = field(default_factory=TaskProgress, compare=False, repr=False)

    # -- episode hooks -----------------------------------------------------------------------------
    def attach(self, backend: PyBulletBackend) -> None:
        """Register this task's step hook (events, milestones) with the backend."""
        self.detach(backend)
        self.progress.hook = backend.add_step_hook(lambda t: self._on_step(backend, t))

    def detach(self, backend: PyBulletBackend) -> None:
        if self.progress.hook is not None:
            backend.remove_step_hook(self.progress.hook)
            self.progress.hook = None

    def _on_step(self, backend: PyBulletBackend, t: float) -> None:
        if t - self.progress.last_check < 1.0 / CHECK_HZ - 1e-9:
            return
        self.progress.last_check = t
        for index, event in enumerate(self.events):
            if index in self.progress.fired or self.progress.reached < event.after:
                continue
            if TRIGGERS[event.trigger](backend, event, t):
                self.progress.fired.append(index)
                EVENT_ACTIONS[event.action](backend, event)
        self._advance_milestones(backend, t)

    def _advance_milestones(self, backend: PyBulletBackend, t: float) -> None:
        while self.progress.reached < len(self.milestones):
            milestone = self.milestones[self.progress.reached]
            if not MILESTONES[milestone.kind](backend, milestone):
                return
            self.progress.reached += 1
            self.progress.reached_at.append(t)

    # -- scoring -----------------------------------------------------------------------------------
    def placed(self, backend: PyBulletBackend) -> bool:
        """Ground truth: the object rests on/in the receptacle and is not held."""
        return (
            backend.place_of(self.object) == (self.receptacle, self.relation)
            and not backend.is_held(self.object)
            and backend.object_speed(self.object) < REST_SPEED
        )

    def success(self, backend: PyBulletBackend) -> bool:
        """Ground truth: every milestone passed in order, then the object placed."""
        return self.progress.reached >= len(self.milestones) and self.placed(backend)


# -- triggers, actions and milestones (registries) ---------------------------------------------------
def _trigger_time(backend: PyBulletBackend, event: WorldEvent, t: float) -> bool:
    return t >= event.at_s


def _trigger_room(backend: PyBulletBackend, event: WorldEvent, t: float) -> bool:
    return backend.robot_room() == event.room


TRIGGERS: dict[str, Callable[[PyBulletBackend, WorldEvent, float], bool]] = {
    "time": _trigger_time,
    "robot_in_room": _trigger_room,
}


def _move_object(backend: PyBulletBackend, event: WorldEvent) -> None:
    if backend.is_held(event.object):
        return
    rng = np.random.default_rng(event.seed)
    xy = backend.free_spot(event.place, rng)
    if xy is None:
        xy = backend.free_spot(event.place, rng, near_only=False)
    if xy is not None:
        backend.put_object(event.object, event.place, xy_offset=xy)


def _set_drawer(backend: PyBulletBackend, event: WorldEvent) -> None:
    backend.set_drawer(event.opening)


EVENT_ACTIONS: dict[str, Callable[[PyBulletBackend, WorldEvent], None]] = {
    "move_object": _move_object,
    "set_drawer": _set_drawer,
}


def _hidden_in_drawer(backend: PyBulletBackend, milestone: Milestone) -> bool:
    drawer = backend.drawer_place()
    return (
        drawer is not None
        and backend.drawer_opening() < DRAWER_CLOSED_TOL
        and backend.place_of(milestone.object) == (drawer, "in")
        and not backend.is_held(milestone.object)
    )


def _visit_room(backend: PyBulletBackend, milestone: Milestone) -> bool:
    return backend.robot_room() == milestone.room


def _placed_at(backend: PyBulletBackend, milestone: Milestone) -> bool:
    where = backend.place_of(milestone.object)
    return where is not None and where[0] == milestone.room and not backend.is_held(milestone.object)


MILESTONES: dict[str, Callable[[PyBulletBackend, Milestone], bool]] = {
    "hidden_in_drawer": _hidden_in_drawer,
    "visit_room": _visit_room,
    "placed_at": _placed_at,
}


# -- generators --------------------------------------------------------------------------------------
def _words(name: str) -> str:
    return name.replace("_", " ")


def _put_phrase(layout: HouseLayout, place: str) -> str:
    """``"on the tray"`` / ``"in the drawer"``."""
    return f"{layout.place_spec(place).relation} the {_words(place)}"


def _bring_phrase(place: str) -> str:
    """``"to the kitchen table"``, ``"to the drawer"`` (the place says whether it goes on or in)."""
    return f"to the {_words(place)}"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    if not options:
        raise ValueError("no candidate to pick from: the layout is too small for this task family")
    return options[int(rng.integers(len(options)))]


def _drawer_place(layout: HouseLayout) -> str:
    for spec in layout.places:
        if spec.relation == "in" and layout.furniture_by_name(spec.furniture).kind == "drawer_cabinet":
            return spec.name
    raise ValueError("the layout has no drawer place")


def _make_place(rng: np.random.Generator, seed: int, layout: HouseLayout, placements: dict[str, str]) -> Task:
    """Put an object on or in another receptacle (any room)."""
    obj = _pick(rng, sorted(placements))
    receptacle = _pick(rng, [p for p in layout.place_names if p != placements[obj]])
    instruction = f"put the {_words(obj)} {_put_phrase(layout, receptacle)}"
    return Task("place", seed, instruction, obj, receptacle, layout.place_spec(receptacle).relation)


def _make_fetch(rng: np.random.Generator, seed: int, layout: HouseLayout, placements: dict[str, str]) -> Task:
    """Bring an object from its room to a receptacle in another room."""
    obj = _pick(rng, sorted(placements))
    room = layout.room_of_place(placements[obj])
    receptacle = _pick(rng, [p for p in layout.place_names if layout.room_of_place(p) != room])
    instruction = f"bring the {_words(obj)} from the {_words(room)} {_bring_phrase(receptacle)}"
    return Task("fetch", seed, instruction, obj, receptacle, layout.place_spec(receptacle).relation)


def _make_memory(rng: np.random.Generator, seed: int, layout: HouseLayout, placements: dict[str, str]) -> Task:
    """Hide an object in the drawer, leave the room, then fetch it from where it now is."""
    drawer = _drawer_place(layout)
    drawer_room = layout.room_of_place(drawer)
    obj = _pick(rng, sorted(placements))
    away = _pick(rng, [r for r in layout.rooms if r != drawer_room])
    receptacle = _pick(rng, [p for p in layout.place_names
                             if p not in (drawer, placements[obj]) and layout.room_of_place(p) != drawer_room])
    instruction = (
        f"put the {_words(obj)} in the {_words(drawer)} and close the {_words(drawer)}, "
        f"then go to the {_words(away)}, then bring the {_words(obj)} {_bring_phrase(receptacle)}"
    )
    milestones = (Milestone("hidden_in_drawer", object=obj), Milestone("visit_room", room=away))
    events = _distractor_event(rng, layout, placements, exclude=(obj,), away_from=away)
    return Task("memory", seed, instruction, obj, receptacle, layout.place_spec(receptacle).relation,
                events=events, milestones=milestones)


def _make_recall(rng: np.random.Generator, seed: int, layout: HouseLayout, placements: dict[str, str]) -> Task:
    """Move an object to another surface, then put it back where it was (memory-dependent)."""
    drawer = _drawer_place(layout)
    obj = _pick(rng, sorted(placements))
    origin = placements[obj]
    away = _pick(rng, [p for p in layout.place_names if p not in (drawer, origin)
                       and min(layout.place_spec(p).surface_size) >= 0.3])
    instruction = f"put the {_words(obj)} {_put_phrase(layout, away)}, then put the {_words(obj)} back where it was"
    return Task("recall", seed, instruction, obj, origin, layout.place_spec(origin).relation,
                milestones=(Milestone("placed_at", object=obj, room=away),))


def _distractor_event(rng: np.random.Generator, layout: HouseLayout, placements: dict[str, str],
                      exclude: tuple[str, ...], away_from: str) -> tuple[WorldEvent, ...]:
    """Once the first milestone is reached and the robot is in ``away_from``, another object moves
    between places outside that room (the world changes out of the robot's sight)."""
    others = [p for p in layout.place_names
              if layout.place_spec(p).spawn and layout.room_of_place(p) != away_from]
    movable = sorted(o for o in placements if o not in exclude and placements[o] in others)
    if not movable:
        return ()
    obj = _pick(rng, movable)
    roomy = [p for p in others if p != placements[obj] and min(layout.place_spec(p).surface_size) >= 0.3]
    target = _pick(rng, roomy)
    return (WorldEvent("robot_in_room", "move_object", after=1, room=away_from, object=obj, place=target,
                       seed=int(rng.integers(2**31))),)


TaskGenerator = Callable[[np.random.Generator, int, HouseLayout, dict[str, str]], Task]

TASK_FAMILIES: dict[str, TaskGenerator] = {
    "place": _make_place,
    "fetch": _make_fetch,
    "memory": _make_memory,
    "recall": _make_recall,
}
"""Task family id -> generator ``(rng, seed, layout, placements) -> Task``."""


def make_task(family: str, seed: int, layout: HouseLayout, placements: dict[str, str]) -> Task:
    """Generate a task of ``family`` deterministically from ``seed``.

    ``placements`` maps each object label to the place it starts on (as returned by
    :meth:`~mnemobot.sim.backend.PyBulletBackend.spawn_objects`).
    """
    if family not in TASK_FAMILIES:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(sorted(TASK_FAMILIES))}")
    unknown = sorted(set(placements) - set(layout.object_labels))
    if unknown:
        raise ValueError(f"placements name objects the layout lacks: {unknown}")
    rng = np.random.default_rng([int(seed), zlib.crc32(family.encode())])
    return TASK_FAMILIES[family](rng, int(seed), layout, dict(placements))
