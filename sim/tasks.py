"""Household task families: seeded generators of instructions, world events and success checks.

A task family is picked by id from :data:`TASK_FAMILIES` (``"place"``, ``"fetch"``, ``"memory"``,
...) and generated with :func:`make_task`, deterministically from a seed, in the world
:func:`layout_for` gives it (the house unless :data:`FAMILY_LAYOUT` says otherwise)::

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

Memory-dependent families in the workcell (:mod:`mnemobot.sim.workcell`), after MemoryBench: the
scene at the moment of the last decision does not show the answer, and the instruction is the
same for every seed, so only memory of the episode can beat chance.

* ``reopen_drawer``: one of three drawers starts open; close it, press the button, then open
  the drawer that was closed (chance 1/3: the drawers look alike once closed);
* ``put_block_back``: a block starts on one of four coloured patches; move it to the centre
  patch, press the button, then put it back on its patch (chance 1/4);
* ``rearrange``: two look-alike blocks, one on a coloured patch, one on the centre patch; move
  the centre one to the coloured patch beside the other, press the button, then move the other
  block to the centre (chance 1/2; see :func:`_make_rearrange`).

Their initial state is set by ``"start"`` world events, applied when the task is attached.

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

from mnemobot.sim.layout import DEFAULT_LAYOUT, HouseLayout
from mnemobot.sim.workcell import (
    CENTRE_PATCH,
    COLOUR_PATCHES,
    ONE_BLOCK_WORKCELL,
    TWO_BLOCK_WORKCELL,
    WORKCELL_LAYOUT,
)

if TYPE_CHECKING:
    from mnemobot.sim.backend import PyBulletBackend

__all__ = [
    "BESIDE",
    "DRAWER_CLOSED_TOL",
    "DRAWER_OPEN_MIN",
    "EVENT_ACTIONS",
    "FAMILY_LAYOUT",
    "MILESTONES",
    "TASK_FAMILIES",
    "TRIGGERS",
    "Milestone",
    "Task",
    "TaskProgress",
    "WorldEvent",
    "layout_for",
    "make_task",
]

DRAWER_CLOSED_TOL = 0.02
"""The drawer counts as closed below this opening (m)."""
DRAWER_OPEN_MIN = 0.15
"""The drawer counts as open beyond this opening (m; the ``open`` skill pulls it 0.30 m)."""
REST_SPEED = 0.05
"""An object counts as resting below this speed (m/s)."""
CHECK_HZ = 20.0
"""How often (per simulated second) the step hooks check events and milestones."""


@dataclass(frozen=True)
class WorldEvent:
    """A scripted change of the world, fired once when its trigger first holds.

    * ``trigger``: ``"time"`` (sim time >= ``at_s`` seconds), ``"robot_in_room"`` (the robot's
      base is in ``room``) or ``"start"`` (when the task is attached, before the first frame: the
      task's initial state); see :data:`TRIGGERS`;
    * ``action``: ``"move_object"`` (put ``object`` on a free spot of ``place``; skipped while the
      object is held), ``"put_object"`` (rest ``object`` at the centre of ``place``) or
      ``"set_drawer"`` (opening ``opening`` m of the drawer ``place``, default the first drawer);
      see :data:`EVENT_ACTIONS`;
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
        when = {"time": f"at t={self.at_s:g} s", "start": "at the start"}.get(
            self.trigger, f"when the robot enters the {self.room}")
        what = (f"the {self.object} moves to the {self.place}" if self.action in ("move_object", "put_object")
                else f"the {self.place or 'drawer'} opens to {self.opening:g} m")
        return f"{when}, {what}".replace("_", " ")


@dataclass(frozen=True)
class Milestone:
    """A condition that must hold at some moment, after the previous milestone, before success.

    ``kind``: ``"hidden_in_drawer"`` (``object`` in the drawer and the drawer closed),
    ``"visit_room"`` (the robot's base in ``room``), ``"placed_at"`` (``object`` resting on/in
    the place named by ``place``, or by ``room`` in tasks made before ``place`` existed),
    ``"drawer_closed"`` (the drawer ``place`` closed), ``"drawer_open"`` (the drawer ``place``
    open and every other drawer closed) or ``"button_pressed"`` (the button held down at a
    check); see :data:`MILESTONES`.
    """

    kind: str
    object: str = ""
    room: str = ""
    place: str = ""


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
        """Apply the ``"start"`` events (the initial state), then register this task's step hook
        (events, milestones) with the backend."""
        self.detach(backend)
        for index, event in enumerate(self.events):
            if event.trigger == "start" and index not in self.progress.fired:
                self.progress.fired.append(index)
                EVENT_ACTIONS[event.action](backend, event)
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
        """Ground truth: every milestone passed in order, then the object placed; a task without
        an object (``reopen_drawer``) instead needs its last milestone to still hold."""
        if self.progress.reached < len(self.milestones):
            return False
        if self.object:
            return self.placed(backend)
        return bool(self.milestones) and MILESTONES[self.milestones[-1].kind](backend, self.milestones[-1])


# -- triggers, actions and milestones (registries) ---------------------------------------------------
def _trigger_time(backend: PyBulletBackend, event: WorldEvent, t: float) -> bool:
    return t >= event.at_s


def _trigger_room(backend: PyBulletBackend, event: WorldEvent, t: float) -> bool:
    return backend.robot_room() == event.room


def _trigger_start(backend: PyBulletBackend, event: WorldEvent, t: float) -> bool:
    return True  # applied by Task.attach; a task never attached applies it at the first check


TRIGGERS: dict[str, Callable[[PyBulletBackend, WorldEvent, float], bool]] = {
    "time": _trigger_time,
    "robot_in_room": _trigger_room,
    "start": _trigger_start,
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


def _put_object(backend: PyBulletBackend, event: WorldEvent) -> None:
    if not backend.is_held(event.object):
        backend.put_object(event.object, event.place)


def _set_drawer(backend: PyBulletBackend, event: WorldEvent) -> None:
    if event.place:
        backend.set_drawer(event.opening, event.place)
    else:
        backend.set_drawer(event.opening)


EVENT_ACTIONS: dict[str, Callable[[PyBulletBackend, WorldEvent], None]] = {
    "move_object": _move_object,
    "put_object": _put_object,
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
    place = milestone.place or milestone.room
    return where is not None and where[0] == place and not backend.is_held(milestone.object)


def _drawer_closed(backend: PyBulletBackend, milestone: Milestone) -> bool:
    return backend.drawer_opening(milestone.place) < DRAWER_CLOSED_TOL


def _drawer_open(backend: PyBulletBackend, milestone: Milestone) -> bool:
    """This drawer open, every other one closed (opening them all is no answer)."""
    return backend.drawer_opening(milestone.place) > DRAWER_OPEN_MIN and all(
        backend.drawer_opening(d) < DRAWER_CLOSED_TOL for d in backend.drawer_places() if d != milestone.place)


def _button_pressed(backend: PyBulletBackend, milestone: Milestone) -> bool:
    return backend.button_pressed()


MILESTONES: dict[str, Callable[[PyBulletBackend, Milestone], bool]] = {
    "hidden_in_drawer": _hidden_in_drawer,
    "visit_room": _visit_room,
    "placed_at": _placed_at,
    "drawer_closed": _drawer_closed,
    "drawer_open": _drawer_open,
    "button_pressed": _button_pressed,
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


# -- memory-dependent workcell families ----------------------------------------------------------------
def _workcell_places(layout: HouseLayout, family: str, names: Sequence[str]) -> None:
    """Raise ValueError unless ``layout`` has the workcell places ``names``."""
    missing = [n for n in names if n not in layout.place_names]
    if missing:
        raise ValueError(f"task family {family!r} needs the workcell (mnemobot.sim.workcell); "
                         f"the layout lacks the places {missing}")


def _drawers(layout: HouseLayout) -> list[str]:
    return [spec.name for spec in layout.places
            if spec.relation == "in" and layout.furniture_by_name(spec.furniture).kind == "drawer_cabinet"]


def _button(layout: HouseLayout, family: str) -> str:
    for spec in layout.places:
        if layout.furniture_by_name(spec.furniture).kind == "button":
            return spec.name
    raise ValueError(f"task family {family!r} needs a layout with a button, such as the workcell")


def _make_reopen_drawer(rng: np.random.Generator, seed: int, layout: HouseLayout,
                        placements: dict[str, str]) -> Task:
    """Workcell: close the open drawer, press the button, then reopen the drawer that was open."""
    drawers = _drawers(layout)
    if len(drawers) < 2:
        raise ValueError("task family 'reopen_drawer' needs a layout with several drawers, such as the workcell")
    button = _button(layout, "reopen_drawer")
    target = _pick(rng, drawers)
    instruction = "close the open drawer, press the button, then open the drawer you closed"
    events = (WorldEvent("start", "set_drawer", place=target, opening=layout.drawer_open_distance),)
    milestones = (Milestone("drawer_closed", place=target), Milestone("button_pressed", place=button),
                  Milestone("drawer_open", place=target))
    return Task("reopen_drawer", seed, instruction, "", target, "in", events=events, milestones=milestones)


def _make_put_block_back(rng: np.random.Generator, seed: int, layout: HouseLayout,
                         placements: dict[str, str]) -> Task:
    """Workcell: move the block to the centre patch, press the button, then put it back on its patch."""
    _workcell_places(layout, "put_block_back", (CENTRE_PATCH, *COLOUR_PATCHES))
    button = _button(layout, "put_block_back")
    obj = _pick(rng, sorted(placements))
    origin = _pick(rng, COLOUR_PATCHES)
    name = _words(layout.object_spec(obj).detected_as)
    instruction = (f"move the {name} to the {_words(CENTRE_PATCH)}, press the button, "
                   f"then put the {name} back on the patch where it was")
    events = (WorldEvent("start", "put_object", object=obj, place=origin),)
    milestones = (Milestone("placed_at", object=obj, place=CENTRE_PATCH), Milestone("button_pressed", place=button))
    return Task("put_block_back", seed, instruction, obj, origin, "on", events=events, milestones=milestones)


BESIDE = {"red_patch": "green_patch", "green_patch": "red_patch", "blue_patch": "yellow_patch",
          "yellow_patch": "blue_patch"}
"""Each coloured patch's coloured neighbour (the two on the same side of the centre patch)."""


def _make_rearrange(rng: np.random.Generator, seed: int, layout: HouseLayout, placements: dict[str, str]) -> Task:
    """Workcell: move the centre block beside the other one, press the button, then the other block to the centre.

    The two blocks look alike (same shape, colour and detector class), one starts on a coloured
    patch and one on the centre patch. The centre one goes to the coloured patch beside the other
    (:data:`BESIDE`: red and green, blue and yellow are neighbours), so after the button the two
    blocks stand side by side on one pair, and either could have been the one moved: the scene and
    the instruction (the same words for every seed) no longer tell which is "the other block";
    only memory of the episode does (chance 1/2). A first version named the free patch by its
    colour, which told a reader of the instruction where the moved block stood.
    """
    _workcell_places(layout, "rearrange", (CENTRE_PATCH, *COLOUR_PATCHES))
    if len(placements) < 2:
        raise ValueError("task family 'rearrange' needs a layout with two blocks, such as TWO_BLOCK_WORKCELL")
    button = _button(layout, "rearrange")
    first, second = sorted(placements)[:2]
    start = _pick(rng, COLOUR_PATCHES)
    free = BESIDE[start]
    name = _words(layout.object_spec(second).detected_as)
    instruction = (f"move the {name} on the {_words(CENTRE_PATCH)} to the patch beside the other {name}, "
                   f"press the button, then move the other {name} to the {_words(CENTRE_PATCH)}")
    events = (WorldEvent("start", "put_object", object=first, place=start),
              WorldEvent("start", "put_object", object=second, place=CENTRE_PATCH))
    milestones = (Milestone("placed_at", object=second, place=free), Milestone("button_pressed", place=button))
    return Task("rearrange", seed, instruction, first, CENTRE_PATCH, "on", events=events, milestones=milestones)


TaskGenerator = Callable[[np.random.Generator, int, HouseLayout, dict[str, str]], Task]

TASK_FAMILIES: dict[str, TaskGenerator] = {
    "place": _make_place,
    "fetch": _make_fetch,
    "memory": _make_memory,
    "recall": _make_recall,
    "reopen_drawer": _make_reopen_drawer,
    "put_block_back": _make_put_block_back,
    "rearrange": _make_rearrange,
}
"""Task family id -> generator ``(rng, seed, layout, placements) -> Task``."""

FAMILY_LAYOUT: dict[str, HouseLayout] = {
    "reopen_drawer": WORKCELL_LAYOUT,
    "put_block_back": ONE_BLOCK_WORKCELL,
    "rearrange": TWO_BLOCK_WORKCELL,
}
"""The world of each family that does not live in the house (:data:`DEFAULT_LAYOUT`)."""


def layout_for(family: str) -> HouseLayout:
    """The layout task family ``family`` is generated in (the house unless :data:`FAMILY_LAYOUT` names one)."""
    if family not in TASK_FAMILIES:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(sorted(TASK_FAMILIES))}")
    return FAMILY_LAYOUT.get(family, DEFAULT_LAYOUT)


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
