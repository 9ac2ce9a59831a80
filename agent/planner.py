"""Planners (cortex): instruction + context -> a plan of skill calls.

The default :class:`RulePlanner` is embedded and needs no model: it parses instructions made of
clauses ("put the X on/in the Y", "bring the X [from the ROOM] to the Y", "open/close the Y",
"go to the Z"), joined by "then", "and" or commas, into goals, and expands each goal into
skill calls while tracking which containers the plan has opened. Object positions are never
part of the plan: ``find`` resolves them at run time from perception or memory.

Usage::

    planner = make_planner(PlannerConfig(type="rule"))
    plan = planner.plan("put the red cube on the tray", PlanningContext(site, {"red_cube"}))
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mnemobot.agent.errors import UserError
from mnemobot.control.site import Place, SiteMap, UnknownPlaceError
from mnemobot.control.skills import SKILLS

__all__ = [
    "ORIGIN_REF",
    "Goal",
    "InstructionError",
    "Plan",
    "Planner",
    "PlannerConfig",
    "PlanningContext",
    "RulePlanner",
    "ScriptedPlanner",
    "SkillCall",
    "make_planner",
    "object_vocabulary",
    "parse_instruction",
]


class InstructionError(UserError, ValueError):
    """The instruction is empty, unparseable, or names an unknown object or place."""


@dataclass(frozen=True)
class SkillCall:
    """One call of a registered skill with string arguments."""

    skill: str
    args: dict[str, str]

    def __str__(self) -> str:
        return f"{self.skill}({', '.join(v for v in self.args.values() if v)})"


@dataclass(frozen=True)
class Goal:
    """A parsed clause. ``kind``: ``place`` | ``open`` | ``close`` | ``goto``."""

    kind: str
    object: str = ""
    target: str = ""
    relation: str = ""
    room_hint: str = ""
    recall: str = ""
    """``"origin"``: the target is where memory first saw the object ("put it back")."""


@dataclass
class Plan:
    """Goals parsed from the instruction and the skill calls that achieve them, in order;
    ``goal_of[i]`` is the index of the goal that step ``i`` serves."""

    instruction: str
    goals: list[Goal]
    steps: list[SkillCall]
    goal_of: list[int] = field(default_factory=list)
    tree: Any = None
    """The :class:`~mnemobot.agent.plantree.ActionTree` the orchestrator walks (None: ``steps``)."""


@dataclass
class PlanningContext:
    """What a planner may use: the site map and the object vocabulary (:func:`object_vocabulary`).
    Later planners also receive a rendered memory context."""

    site: SiteMap
    vocabulary: set[str]
    opened: set[str] = field(default_factory=set)
    held: str | None = None
    at_place: str | None = None
    beliefs: dict[str, str] = field(default_factory=dict)
    """Where memory last saw each object (label -> place name), for planners that search."""
    memory_context: str = ""
    """Memory rendered for a language-model prompt (:meth:`~mnemobot.memory.memory.Memory.context`)."""
    image: Any = None
    """The latest camera image (H x W x 3 uint8) for vision-language planners."""
    state: Any = None
    """The orchestrator's tracked :class:`~mnemobot.agent.plantree.SymState` (what has been
    found, looked at, put where), so a re-plan continues from it instead of from scratch."""


def object_vocabulary(named: Iterable[str], perceived: Iterable[str]) -> set[str]:
    """The objects a plan may name: those the task names and those the robot's perception has
    produced (the labels memory knows). Never a simulator's catalogue: an object the robot has
    not seen and was not told about is unknown to the planner."""
    return set(named) | set(perceived)


class Planner(Protocol):
    name: str

    def plan(self, instruction: str, context: PlanningContext) -> Plan: ...


@dataclass
class PlannerConfig:
    """``type`` picks the implementation from :data:`PLANNERS`."""

    type: str = "rule"


_CLAUSE_SPLIT = re.compile(r"\s*(?:,\s*then\s+|\bthen\b|,\s*and\s+|\band\b|;|,)\s*", re.IGNORECASE)
_ARTICLE = r"(?:the\s+|a\s+|an\s+|my\s+)?"
ORIGIN_REF = "$origin:"
"""Argument prefix of a place that memory resolves at run time (``$origin:duck``)."""

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("return", re.compile(rf"^(?:put|place|bring|take|return)\s+{_ARTICLE}(?P<obj>.+?)\s+back(?:\s+(?:where|to where)\s+(?:it|they)\s+(?:was|were|belongs?))?$")),
    ("return", re.compile(rf"^return\s+{_ARTICLE}(?P<obj>.+?)\s+to\s+where\s+(?:it|they)\s+(?:was|were)$")),
    ("place", re.compile(rf"^(?:put|place|move|set)\s+{_ARTICLE}(?P<obj>.+?)\s+(?P<rel>on|onto|in|into|inside)\s+{_ARTICLE}(?P<rec>.+)$")),
    ("bring", re.compile(rf"^(?:bring|fetch|take|carry)\s+{_ARTICLE}(?P<obj>.+?)(?:\s+from\s+{_ARTICLE}(?P<room>.+?))?\s+to\s+{_ARTICLE}(?P<rec>.+)$")),
    ("open", re.compile(rf"^open\s+{_ARTICLE}(?P<rec>.+)$")),
    ("close", re.compile(rf"^(?:close|shut)\s+{_ARTICLE}(?P<rec>.+)$")),
    ("goto", re.compile(rf"^(?:go|move|drive|navigate)\s+(?:to|into)\s+{_ARTICLE}(?P<rec>.+)$")),
]


def _label(words: str, vocabulary: set[str]) -> str:
    key = words.strip().lower().replace(" ", "_")
    if key in vocabulary:
        return key
    known = ", ".join(sorted(vocabulary)) or "none yet"
    raise InstructionError(f"unknown object {words.strip()!r}: the robot has not seen one and the task does not "
                           f"name it; known objects: {known}")


def _place(words: str, site: SiteMap) -> Place:
    try:
        return site.place(words)
    except UnknownPlaceError as e:
        raise InstructionError(str(e)) from None


def _clause_goal(clause: str, ctx: PlanningContext, last_object: str) -> Goal:
    text = clause.strip().rstrip(".!").lower()
    for kind, pattern in _PATTERNS:
        m = pattern.match(text)
        if not m:
            continue
        g = m.groupdict()
        if kind == "return":
            obj = last_object if g["obj"] in ("it", "that") and last_object else _label(g["obj"], ctx.vocabulary)
            return Goal("place", obj, recall="origin")
        if kind == "place":  # the map's places first: they do not depend on what the robot has seen
            rec = _place(g["rec"], ctx.site)
            obj = last_object if g["obj"] in ("it", "that") and last_object else _label(g["obj"], ctx.vocabulary)
            rel = "in" if g["rel"] in ("in", "into", "inside") else "on"
            return Goal("place", obj, rec.name, rel)
        if kind == "bring":
            rec = _place(g["rec"], ctx.site)
            room = ctx.site.room(g["room"]).name if g.get("room") else ""
            return Goal("place", _label(g["obj"], ctx.vocabulary), rec.name, rec.relation, room)
        if kind == "goto":
            try:
                return Goal("goto", target=ctx.site.place(g["rec"]).name)
            except UnknownPlaceError:
                try:
                    return Goal("goto", target=ctx.site.room(g["rec"]).name)
                except UnknownPlaceError as e:
                    raise InstructionError(str(e)) from None
        return Goal(kind, target=_place(g["rec"], ctx.site).name)
    raise InstructionError(
        f"cannot understand {clause.strip()!r}: use clauses like 'put the X on the Y', "
        "'bring the X to the Y', 'put the X back where it was', 'open the drawer', 'go to the kitchen', "
        "joined by 'then'"
    )


def parse_instruction(instruction: str, ctx: PlanningContext) -> list[Goal]:
    """Split an instruction into clauses and parse each into a :class:`Goal`."""
    if not instruction or not instruction.strip():
        raise InstructionError("the instruction is empty")
    goals: list[Goal] = []
    for clause in _CLAUSE_SPLIT.split(instruction.strip()):
        if clause:
            goals.append(_clause_goal(clause, ctx, goals[-1].object if goals else ""))
    return goals


def _expand(goal: Goal, site: SiteMap, opened: set[str], held: str | None = None) -> list[SkillCall]:
    """Skill calls for one goal; ``opened`` is updated as the plan opens/closes containers."""
    if goal.kind == "goto":
        return [SkillCall("navigate_to", {"place": goal.target})]
    if goal.kind in ("open", "close"):
        calls = [SkillCall("navigate_to", {"place": goal.target}), SkillCall(goal.kind, {"container": goal.target})]
        (opened.add if goal.kind == "open" else opened.discard)(goal.target)
        return calls
    if goal.recall:
        ref = f"{ORIGIN_REF}{goal.object}"
        calls = [] if goal.object == held else [
            SkillCall("find", {"object": goal.object, "room": goal.room_hint}),
            SkillCall("pick", {"object": goal.object}),
        ]
        return calls + [
            SkillCall("navigate_to", {"place": ref}),
            SkillCall("look_at", {"target": ref}),
            SkillCall("place", {"object": goal.object, "receptacle": ref, "relation": ""}),
        ]
    rec = site.place(goal.target)
    calls: list[SkillCall] = []
    if rec.articulated and rec.name not in opened:
        calls += [SkillCall("navigate_to", {"place": rec.name}), SkillCall("open", {"container": rec.name})]
        opened.add(rec.name)
    if goal.object != held:
        calls += [
            SkillCall("find", {"object": goal.object, "room": goal.room_hint}),
            SkillCall("pick", {"object": goal.object}),
        ]
    calls += [
        SkillCall("navigate_to", {"place": rec.name}),
        SkillCall("look_at", {"target": rec.name}),
        SkillCall("place", {"object": goal.object, "receptacle": rec.name, "relation": goal.relation}),
    ]
    return calls


class RulePlanner:
    """Embedded default planner: instruction grammar + goal expansion. One call per plan."""

    name = "rule"

    def plan(self, instruction: str, context: PlanningContext) -> Plan:
        return _compile(instruction, parse_instruction(instruction, context), context)

    def replan(self, plan: Plan, first_goal: int, context: PlanningContext) -> Plan:
        """A fresh plan for ``plan.goals[first_goal:]`` from the current body state."""
        return _compile(plan.instruction, plan.goals[first_goal:], context)


def _compile(instruction: str, goals: list[Goal], context: PlanningContext) -> Plan:
    opened = set(context.opened)
    steps: list[SkillCall] = []
    goal_of: list[int] = []
    held = context.held
    for i, g in enumerate(goals):
        calls = _expand(g, context.site, opened, held)
        held = None
        steps += calls
        goal_of += [i] * len(calls)
    for c in steps:
        if c.skill not in SKILLS:
            raise InstructionError(f"plan names unknown skill {c.skill!r}")
    return Plan(instruction, goals, steps, goal_of)


class ScriptedPlanner:
    """Plays a fixed list of skill calls: the plan of a scripted expert (``mnemobot run --agent
    expert`` on a family that has one, :data:`~mnemobot.sim.expert.EXPERT_SCRIPTS`).

    The plan has no parsed goals: it is done when its last step has run, and the task's own
    ground-truth check scores it. Steps are checked against the skill schema; a step that fails
    is not re-planned (run it with ``max_replans=0``).
    """

    name = "scripted"

    def __init__(self, steps: Iterable[SkillCall]) -> None:
        self.steps = list(steps)
        if not self.steps:
            raise InstructionError("the scripted plan is empty")
        for call in self.steps:
            spec = SKILLS.get(call.skill)
            if spec is None:
                raise InstructionError(f"scripted plan names unknown skill {call.skill!r}")
            extra = set(call.args) - set(spec.params)
            if extra:
                raise InstructionError(f"scripted {call.skill} takes ({', '.join(spec.params)}), not "
                                       f"{', '.join(sorted(extra))}")

    def plan(self, instruction: str, context: PlanningContext) -> Plan:
        return Plan(instruction, [], list(self.steps), [0] * len(self.steps))


PLANNERS: dict[str, type] = {"rule": RulePlanner}


def make_planner(config: PlannerConfig) -> Planner:
    if config.type == "symbolic":
        from mnemobot.agent.symbolic import SymbolicPlanner

        return SymbolicPlanner()
    if config.type not in PLANNERS:
        raise InstructionError(f"unknown planner type {config.type!r}; available: symbolic, {', '.join(sorted(PLANNERS))}")
    return PLANNERS[config.type]()
