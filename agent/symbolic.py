"""The embedded symbolic planner: breadth-first search over the skill action model.

The instruction is parsed into goals (:func:`~mnemobot.agent.planner.parse_instruction`); the
start state is the body's (what is held, which containers are open, where the robot stands) and
memory's (where each object was last seen, which gives ``find`` its room hint). For each goal in
order the planner searches the shortest sequence of grounded skill calls whose preconditions
hold (:func:`~mnemobot.agent.plantree.precondition`) and which achieves the goal, continuing from
the state the previous goals left. Actions are grounded over the goal's object, the held
object, the goal's place and the containers that matter, so the search stays small (tens of
states) while staying complete for the generated task families.

Usage::

    planner = SymbolicPlanner()
    plan = planner.plan("put the mug in the drawer, then close the drawer", context)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from mnemobot.agent.planner import (
    ORIGIN_REF,
    Goal,
    InstructionError,
    Plan,
    PlanningContext,
    SkillCall,
    parse_instruction,
)
from mnemobot.agent.plantree import ActionTree, SymState, apply_call, goal_holds, precondition

__all__ = ["SymbolicPlanner"]

MAX_DEPTH = 10


class SymbolicPlanner:
    """Search-based planner over the action model (default). One call per plan."""

    name = "symbolic"

    def __init__(self, max_depth: int = MAX_DEPTH) -> None:
        self.max_depth = max_depth
        self.expanded = 0

    def plan(self, instruction: str, context: PlanningContext) -> Plan:
        return self._plan(instruction, parse_instruction(instruction, context), context)

    def replan(self, plan: Plan, first_goal: int, context: PlanningContext) -> Plan:
        """A fresh plan for ``plan.goals[first_goal:]`` from the current body and memory state."""
        return self._plan(plan.instruction, plan.goals[first_goal:], context)

    def _plan(self, instruction: str, goals: list[Goal], ctx: PlanningContext) -> Plan:
        state = ctx.state if ctx.state is not None else SymState.from_context(ctx, at=ctx.at_place)
        steps: list[SkillCall] = []
        goal_of: list[int] = []
        for i, g in enumerate(goals):
            seq = self.search(g, state, ctx)
            for call in seq:
                state = apply_call(call, state)
            steps += seq
            goal_of += [i] * len(seq)
        plan = Plan(instruction, goals, steps, goal_of)
        plan.tree = ActionTree.linear(steps)
        return plan

    # -- search -----------------------------------------------------------------------------------------
    def search(self, goal: Goal, start: SymState, ctx: PlanningContext) -> list[SkillCall]:
        """Shortest call sequence from ``start`` achieving ``goal`` (breadth-first)."""
        if goal_holds(goal, start):
            return []
        actions = list(self._ground(goal, start, ctx))
        frontier: deque[tuple[SymState, list[SkillCall]]] = deque([(start, [])])
        seen = {start}
        while frontier:
            s, path = frontier.popleft()
            if len(path) >= self.max_depth:
                continue
            for call in actions:
                if precondition(call, s, ctx) is not None:
                    continue
                nxt = apply_call(call, s)
                if nxt in seen:
                    continue
                self.expanded += 1
                seen.add(nxt)
                if goal_holds(goal, nxt):
                    return [*path, call]
                frontier.append((nxt, [*path, call]))
        raise InstructionError(f"no plan reaches '{_words(goal)}' from here (searched {len(seen)} states)")

    def _ground(self, goal: Goal, s: SymState, ctx: PlanningContext) -> Iterator[SkillCall]:
        """The calls worth considering for ``goal``: its object, the held one, its place and the
        containers involved. ``find`` gets a room hint from the goal or from memory."""
        objects = {o for o in (goal.object, s.held) if o}
        places: set[str] = set()
        if goal.kind == "place":
            places.add(f"{ORIGIN_REF}{goal.object}" if goal.recall else goal.target)
        elif goal.target:
            places.add(goal.target)
        containers = {p for p in places if p in ctx.site.places and ctx.site.places[p].articulated}
        for c in containers:
            yield SkillCall("navigate_to", {"place": c})
            yield SkillCall("open", {"container": c})
            yield SkillCall("close", {"container": c})
        for o in sorted(objects):
            yield SkillCall("find", {"object": o, "room": self._room_hint(o, goal, ctx)})
            yield SkillCall("pick", {"object": o})
        for p in sorted(places - containers):
            yield SkillCall("navigate_to", {"place": p})
        for p in sorted(places):
            if goal.kind == "place":
                yield SkillCall("look_at", {"target": p})
                for o in sorted(objects):
                    rel = "" if p.startswith(ORIGIN_REF) else (goal.relation or ctx.site.places[p].relation)
                    yield SkillCall("place", {"object": o, "receptacle": p, "relation": rel})

    @staticmethod
    def _room_hint(label: str, goal: Goal, ctx: PlanningContext) -> str:
        if goal.object == label and goal.room_hint:
            return goal.room_hint
        believed = ctx.beliefs.get(label)
        if believed and believed in ctx.site.places:
            return ctx.site.places[believed].room
        return ""


def _words(g: Goal) -> str:
    if g.kind == "place":
        return f"{g.object} {g.relation or 'on'} {'where it was' if g.recall else g.target}".replace("_", " ")
    return f"{g.kind} {g.target}".replace("_", " ")
