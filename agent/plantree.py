"""Plans as trees of skill calls, one symbolic action model, and a validator.

**Action model.** Every skill has preconditions and effects over a small symbolic state
(:class:`SymState`: where the robot is, what it holds, which containers are open, which objects
it has found and where it put them). The symbolic planner searches this model, the validator
simulates a candidate plan through it, and the orchestrator checks a tree branch against it
before running it, so a plan that is valid JSON but wrong (an unknown object, ``place`` before
``pick``, a closed drawer, a loop) is caught before anything reaches a controller.

**Trees** (Tree-Planner style): candidate plans sampled once are merged into an
:class:`ActionTree` (a trie of skill calls; each node counts the candidates through it). The
orchestrator walks it top-down, taking the best-supported child whose preconditions hold in the
current state, and on a failed step backtracks to the next sibling without a new planner call.

**Schema.** :data:`PLAN_SCHEMA` is the JSON schema language models must answer with
(``{"plan": [{"skill": ..., "args": {...}}]}``); :func:`steps_from_json` parses such an answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mnemobot.agent.planner import ORIGIN_REF, Goal, PlanningContext, SkillCall
from mnemobot.control.skills import SKILLS

__all__ = [
    "PLAN_SCHEMA",
    "ActionTree",
    "PlanError",
    "SymState",
    "TreeNode",
    "apply_call",
    "goals_hold",
    "plan_schema",
    "precondition",
    "schema_problem",
    "steps_from_json",
    "validate_steps",
]

LOOP_REPEATS = 3
"""The same call this many times in a row is a loop."""


class PlanError(ValueError):
    """A planner answer that is not a usable plan (bad JSON, unknown skill or argument...)."""


@dataclass(frozen=True)
class SymState:
    """The symbolic state a plan is checked against.

    ``at``: the place (or room) the robot stands at, ``@<label>`` after finding an object, or
    ``None``; ``held``: the object in the gripper; ``opened``: open containers; ``found``: objects
    located since the robot last moved; ``looked``: the target last looked at; ``placed``: where
    the plan put objects (label -> place).
    """

    at: str | None = None
    held: str | None = None
    opened: frozenset[str] = frozenset()
    found: frozenset[str] = frozenset()
    looked: str | None = None
    placed: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_context(cls, ctx: PlanningContext, at: str | None = None) -> SymState:
        return cls(at=at, held=ctx.held, opened=frozenset(ctx.opened))

    def placed_at(self, label: str) -> str | None:
        return dict(self.placed).get(label)


def _is_place(name: str, ctx: PlanningContext) -> bool:
    return name.startswith(ORIGIN_REF) or name in ctx.site.places


def _articulated(name: str, ctx: PlanningContext) -> bool:
    return name in ctx.site.places and ctx.site.places[name].articulated


def schema_problem(call: SkillCall) -> str | None:
    """Why ``call`` breaks the skill schema (an unknown skill or argument name), or None."""
    spec = SKILLS.get(call.skill)
    if spec is None:
        return f"unknown skill {call.skill!r} (skills: {', '.join(sorted(SKILLS))})"
    extra = set(call.args) - set(spec.params)
    if extra:
        return f"{call.skill} takes ({', '.join(spec.params)}), not {', '.join(sorted(extra))}"
    return None


def precondition(call: SkillCall, s: SymState, ctx: PlanningContext) -> str | None:
    """Why ``call`` cannot run in state ``s`` (None when it can). Checks the skill schema too."""
    problem = schema_problem(call)
    if problem is not None:
        return problem
    spec = SKILLS[call.skill]
    a = call.args
    obj = a.get("object", "")
    if "object" in spec.params:
        if not obj:
            return f"{call.skill} needs an object"
        if obj not in ctx.vocabulary:
            return f"unknown object {obj!r}"
    if call.skill == "navigate_to":
        p = a.get("place", "")
        if not (_is_place(p, ctx) or p in ctx.site.rooms):
            return f"unknown place or room {p!r}"
        return None
    if call.skill == "look_at":
        t = a.get("target", "")
        if not (_is_place(t, ctx) or t in ctx.vocabulary):
            return f"unknown look_at target {t!r}"
        return None
    if call.skill == "find":
        room = a.get("room", "")
        if room and room not in ctx.site.rooms:
            return f"unknown room {room!r}"
        if s.held == obj:
            return f"already holding the {obj}"
        return None
    if call.skill == "pick":
        if s.held is not None:
            return f"hand is full (holding the {s.held})"
        if obj not in s.found:
            return f"pick({obj}) before find({obj})"
        return None
    if call.skill == "place":
        rec = a.get("receptacle", "")
        if not _is_place(rec, ctx):
            return f"unknown receptacle {rec!r}"
        if s.held != obj:
            return f"place({obj}) while {'holding the ' + s.held if s.held else 'holding nothing'}"
        if s.at != rec:
            return f"place({obj}, {rec}) away from the {rec} (at {s.at or 'the start'})"
        if s.looked != rec:
            return f"place({obj}, {rec}) without look_at({rec}) first"
        if _articulated(rec, ctx) and rec not in s.opened:
            return f"the {rec} is closed"
        rel = a.get("relation", "")
        if rel and rel not in ("on", "in"):
            return f"relation must be 'on' or 'in', got {rel!r}"
        return None
    if call.skill in ("open", "close"):
        c = a.get("container", "")
        if not _articulated(c, ctx):
            return f"{c!r} cannot be opened or closed"
        if s.at != c:
            return f"{call.skill}({c}) away from the {c}"
        if s.held is not None:
            return f"{call.skill}({c}) with the {s.held} in the hand"
        return None
    return None


def apply_call(call: SkillCall, s: SymState) -> SymState:
    """The state after ``call`` succeeds (no checks: see :func:`precondition`)."""
    a = call.args
    if call.skill == "navigate_to":
        return replace(s, at=a.get("place"), found=frozenset(), looked=None)
    if call.skill == "find":
        return replace(s, at=f"@{a['object']}", found=s.found | {a["object"]}, looked=None)
    if call.skill == "look_at":
        return replace(s, looked=a.get("target"))
    if call.skill == "pick":
        placed = tuple(p for p in s.placed if p[0] != a["object"])
        return replace(s, held=a["object"], placed=placed)
    if call.skill == "place":
        placed = tuple(p for p in s.placed if p[0] != a["object"]) + ((a["object"], a["receptacle"]),)
        return replace(s, held=None, placed=placed, found=s.found - {a["object"]})
    if call.skill == "open":
        return replace(s, opened=s.opened | {a["container"]})
    if call.skill == "close":
        return replace(s, opened=s.opened - {a["container"]})
    return s


def goal_holds(g: Goal, s: SymState) -> bool:
    if g.kind == "place":
        target = f"{ORIGIN_REF}{g.object}" if g.recall else g.target
        return s.held != g.object and s.placed_at(g.object) == target
    if g.kind == "open":
        return g.target in s.opened
    if g.kind == "close":
        return g.target not in s.opened
    if g.kind == "goto":
        return s.at == g.target
    return False


def goals_hold(goals: Sequence[Goal], s: SymState) -> list[Goal]:
    """The goals ``s`` does not satisfy at the end of a plan. A later goal about the same object
    supersedes an earlier one; a "go to" is a visit, which must still hold only when it is the
    instruction's last goal."""
    final: dict[str, Goal] = {}
    for i, g in enumerate(goals):
        if g.kind == "goto" and i < len(goals) - 1:
            continue
        final["\0robot" if g.kind == "goto" else (g.object or g.target)] = g
    return [g for g in final.values() if not goal_holds(g, s)]


def validate_steps(steps: Sequence[SkillCall], ctx: PlanningContext, goals: Sequence[Goal] = (),
                   start: SymState | None = None) -> list[str]:
    """Problems of a linear plan: schema, preconditions step by step, loops, unmet goals."""
    if not steps:
        return ["the plan is empty"]
    s = start or SymState.from_context(ctx)
    problems: list[str] = []
    run = 1
    for i, call in enumerate(steps):
        if i and call == steps[i - 1]:
            run += 1
            if run == LOOP_REPEATS:
                problems.append(f"step {i + 1}: {call} repeated {LOOP_REPEATS} times (a loop)")
        else:
            run = 1
        why = precondition(call, s, ctx)
        if why is not None:
            problems.append(f"step {i + 1} {call}: {why}")
            return problems  # later steps are checked against a state that no longer holds
        s = apply_call(call, s)
    if goals:
        for g in goals_hold(goals, s):
            problems.append(f"the plan does not achieve: {_describe_goal(g)}")
    return problems


def _describe_goal(g: Goal) -> str:
    if g.kind == "place":
        return f"{g.object} {g.relation or 'on'} {'where it was' if g.recall else g.target}"
    return f"{g.kind} {g.target}"


# -- trees ----------------------------------------------------------------------------------------------
@dataclass
class TreeNode:
    """A skill call in the tree; ``support``: how many candidate plans pass through it."""

    call: SkillCall | None
    support: int = 0
    children: list[TreeNode] = field(default_factory=list)
    failed: bool = False

    def child(self, call: SkillCall) -> TreeNode | None:
        return next((c for c in self.children if c.call == call), None)


class ActionTree:
    """Candidate plans merged by common prefix; walk it with :meth:`options` and :meth:`advance`."""

    def __init__(self, candidates: Iterable[Sequence[SkillCall]]) -> None:
        self.root = TreeNode(None)
        self.candidates = 0
        for steps in candidates:
            self.add(steps)
        self.node = self.root
        self.path: list[TreeNode] = []

    def add(self, steps: Sequence[SkillCall]) -> None:
        self.candidates += 1
        node = self.root
        node.support += 1
        for call in steps:
            nxt = node.child(call)
            if nxt is None:
                nxt = TreeNode(call)
                node.children.append(nxt)
            nxt.support += 1
            node = nxt

    @classmethod
    def linear(cls, steps: Sequence[SkillCall]) -> ActionTree:
        return cls([steps])

    def options(self, state: SymState | None = None, ctx: PlanningContext | None = None) -> list[TreeNode]:
        """Children of the current node not yet failed, best supported first; with ``state`` and
        ``ctx``, only those whose preconditions hold."""
        kids = [c for c in self.node.children if not c.failed]
        kids.sort(key=lambda c: -c.support)
        if state is not None and ctx is not None:
            kids = [c for c in kids if precondition(c.call, state, ctx) is None]
        return kids

    def advance(self, node: TreeNode) -> None:
        """The step at ``node`` succeeded: move down to it."""
        self.path.append(node)
        self.node = node

    def fail(self, node: TreeNode) -> None:
        """The step at ``node`` failed: its siblings remain as alternatives (backtracking)."""
        node.failed = True

    @property
    def done(self) -> bool:
        return not self.node.children

    def best_path(self) -> list[SkillCall]:
        """The most supported root-to-leaf path (the plan shown to the user)."""
        out, node = [], self.root
        while node.children:
            node = max(node.children, key=lambda c: c.support)
            out.append(node.call)
        return out

    def size(self) -> int:
        stack, n = [self.root], 0
        while stack:
            node = stack.pop()
            n += 1
            stack.extend(node.children)
        return n - 1


# -- the language-model answer format ---------------------------------------------------------------------
def plan_schema(ctx: PlanningContext | None = None) -> dict[str, Any]:
    """JSON schema of a plan answer; with ``ctx``, skill names and arguments are enumerated."""
    skills = sorted(SKILLS)
    step = {
        "type": "object",
        "properties": {
            "skill": {"type": "string", "enum": skills},
            "args": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["skill", "args"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"plan": {"type": "array", "items": step, "minItems": 1, "maxItems": 40}},
        "required": ["plan"],
        "additionalProperties": False,
    }


PLAN_SCHEMA = plan_schema()


def steps_from_json(text: str) -> list[SkillCall]:
    """Parse a model's answer (``{"plan": [...]}`` or a bare list) into skill calls; raises
    :class:`PlanError` naming the problem. Extra text around one JSON object is tolerated."""
    raw = _first_json(text)
    items = raw.get("plan") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise PlanError("the answer has no 'plan' list")
    steps: list[SkillCall] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("skill"), str):
            raise PlanError(f"step {i + 1} is not {{'skill': ..., 'args': {{...}}}}")
        args = item.get("args", {})
        if not isinstance(args, dict):
            raise PlanError(f"step {i + 1}: args must be an object")
        clean = {str(k): ("" if v is None else str(v)).strip().lower().replace(" ", "_")
                 for k, v in args.items()}
        steps.append(SkillCall(item["skill"].strip().lower(), clean))
    return steps


def _first_json(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return dec.raw_decode(text[i:])[0]
            except json.JSONDecodeError:
                continue
    raise PlanError("the answer is not JSON")
