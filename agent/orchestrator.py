"""The orchestrator: event-driven routing between the organs.

It keeps only routing state (the plan tree and where it is in it, the tracked symbolic state,
counters); the organs own theirs: perception feeds memory every frame from the executor's
perception hook, skills run at their rate inside the executor, controllers at control rate in
the brainstem. The planner (cortex) is consulted only when a plan is needed:

* a new instruction -> ``plan``;
* the plan tree is exhausted before the goals hold, or an anomaly could not be handled locally
  and the tree has no alternative branch -> ``replan`` (bounded by ``max_replans``);
* in the ``per-step`` baseline (ReAct style), before every skill -> ``step``.

Each skill result goes through the :class:`~mnemobot.agent.anomaly.AnomalyMonitor`; its local
recovery runs before the failed call is retried. Every decision's cost goes into the
:class:`~mnemobot.agent.cost.CostLedger`, every event to ``on_event`` (a recorder, a logger).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mnemobot.agent.anomaly import Anomaly, AnomalyMonitor
from mnemobot.agent.cost import CostLedger
from mnemobot.agent.planner import ORIGIN_REF, Plan, Planner, PlanningContext, SkillCall, object_vocabulary
from mnemobot.agent.plantree import ActionTree, SymState, apply_call, goal_holds, goals_hold, precondition
from mnemobot.control.executor import SkillExecutor, StepBudgetExceeded
from mnemobot.control.skills import SKILLS
from mnemobot.control.types import SkillResult, SkillStatus
from mnemobot.memory.memory import Memory

__all__ = ["MODES", "Orchestrator", "RunOutcome"]

MODES = ("tree", "per-step")


@dataclass
class RunOutcome:
    """What the loop did: every skill result, planner use, anomalies, and why it stopped."""

    results: list[SkillResult] = field(default_factory=list)
    planner_calls: int = 0
    completed: bool = False
    stop_reason: str = ""
    plan: Plan | None = None
    anomalies: list[Anomaly] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Orchestrator:
    """Plans with ``planner`` and executes the plan tree with ``executor``."""

    def __init__(
        self,
        planner: Planner,
        executor: SkillExecutor,
        context: PlanningContext,
        progress: Callable[[str], None] | None = None,
        max_replans: int = 1,
        memory: Memory | None = None,
        on_event: Callable[[str, float, dict[str, object]], None] | None = None,
        monitor: AnomalyMonitor | None = None,
        ledger: CostLedger | None = None,
        mode: str = "tree",
        max_recoveries: int = 3,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown orchestration mode {mode!r}; use one of {', '.join(MODES)}")
        self.planner, self.executor, self.context = planner, executor, context
        self.progress = progress or (lambda _msg: None)
        self.max_replans = max_replans
        self.memory = memory
        self.memory_questions = 0
        self.on_event = on_event
        """Receives ``(kind, robot time, data)``: plan, skill_start, skill, anomaly, decision."""
        self.monitor = monitor or AnomalyMonitor(context.site, memory)
        self.ledger = ledger or CostLedger()
        self.mode = mode
        self.max_recoveries = max_recoveries
        self._sym = SymState()
        self._out = RunOutcome()

    @property
    def t(self) -> float:
        return float(self.executor.ctx.state.t)

    def _emit(self, kind: str, data: dict[str, object]) -> None:
        if self.on_event is not None:
            self.on_event(kind, self.t, data)

    # -- the cortex -------------------------------------------------------------------------------------
    def _refresh_context(self, instruction: str) -> None:
        """Body and memory facts the planner may use."""
        ctx, body = self.context, self.executor.ctx
        ctx.opened, ctx.held, ctx.at_place = set(body.opened), body.held, body.at_place
        ctx.state = self._sym
        if self.memory is not None:
            ctx.vocabulary = object_vocabulary(ctx.vocabulary, self.memory.known_labels())
            ctx.beliefs = {}
            for label in self.memory.known_labels():
                est = self.memory.locate(label)
                if est is not None and est.place:
                    ctx.beliefs[label] = est.place
            ctx.memory_context = self.memory.context(instruction)
        if getattr(self.planner, "wants_image", False):  # a vision-language planner sees the camera
            ctx.image = body.robot.observe().rgb

    def _consult(self, kind: str, instruction: str, make: Callable[[], Plan]) -> Plan:
        self._refresh_context(instruction)
        name = getattr(self.planner, "name", type(self.planner).__name__)
        with self.ledger.decision(kind, name, self.t) as d:
            plan = make()
            if getattr(plan, "decision", None) is not None:  # a model planner reports its own calls
                d.calls, d.fallback = plan.decision.calls, plan.decision.fallback
                d.candidates, d.valid_candidates = plan.decision.candidates, plan.decision.valid_candidates
        self._out.planner_calls = self.ledger.planner_calls
        self._out.plan = plan
        if plan.tree is None:
            plan.tree = ActionTree.linear(plan.steps)
        if kind != "step":
            self.progress(f"plan ({len(plan.steps)} steps): " + ", ".join(str(s) for s in plan.steps))
        self._emit("plan", {"instruction": plan.instruction, "decision": kind, "call": self._out.planner_calls,
                            "steps": [{"skill": s.skill, "args": dict(s.args)} for s in plan.steps],
                            "tree_nodes": plan.tree.size()})
        self._emit("decision", self.ledger.decisions[-1].to_dict())
        return plan

    # -- skills -------------------------------------------------------------------------------------------
    def _resolve(self, call: SkillCall) -> SkillCall:
        """Ask memory about the call's object and resolve memory references in its arguments."""
        if self.memory is not None and call.args.get("object"):
            self.memory.ask(call.args["object"])
            self.memory_questions += 1
        refs = {k: v for k, v in call.args.items() if v.startswith(ORIGIN_REF)}
        if not refs:
            return call
        args = dict(call.args)
        for name, ref in refs.items():
            label = ref[len(ORIGIN_REF):]
            origin = self.memory.recall_origin(label) if self.memory is not None else None
            self.memory_questions += 1
            if origin is None:
                raise _Stop(f"memory has no record of where the {label.replace('_', ' ')} was")
            args[name] = origin
        if call.skill == "place" and not args.get("relation"):
            args["relation"] = self.context.site.place(args["receptacle"]).relation
        return SkillCall(call.skill, args)

    def _run(self, call: SkillCall) -> SkillResult:
        """Run one call (memory references resolved), check it, handle anomalies locally."""
        real = self._resolve(call)
        believed = None
        if real.skill == "find" and self.memory is not None:
            est = self.memory.locate(real.args["object"])
            believed = est.place if est is not None else None
        body = self.executor.ctx
        held_before = body.held
        self.progress(f"-> {real}")
        self._emit("skill_start", {"skill": real.skill, "args": dict(real.args)})
        try:
            res = self.executor.run(SKILLS[real.skill], real.args)
        except StepBudgetExceeded as e:
            raise _Stop(f"steps_limit: {e}") from None
        self._out.results.append(res)
        self._body_to_memory()
        self.progress(_describe(res))
        self._emit("skill", res.to_dict())
        an = self.monitor.check(real, res, held_before, body.held, self.t, believed)
        if an is None or an.outcome == "logged":
            if an is not None:
                self._emit("anomaly", an.to_dict())
            self._sync(call if res.success else None)
            return res
        self._emit("anomaly", an.to_dict())
        if res.success:
            self._sync(call)
        self.progress(f"   anomaly: {an.kind} ({an.message or an.reason})")
        return self._handle(an, real, res)

    def _already_done(self, call: SkillCall) -> bool:
        """Whether the call's effects (the action model's) already hold in the tracked state, which
        follows the body's facts, so running it again is pointless."""
        return apply_call(call, self._sym) == self._sym

    def _body_to_memory(self) -> None:
        """Tell memory the body's facts as the skill ended (a release, a grasp, a container opened)
        instead of at the next camera frame, so the next question it answers is current."""
        sync = getattr(self.memory, "set_body", None)
        if sync is not None:
            body = self.executor.ctx
            sync(body.held_in_hand(), dict(body.opened), body.at_place, t=self.t, hand=body.hand_position())

    def _handle(self, an: Anomaly, call: SkillCall, res: SkillResult) -> SkillResult:
        for _attempt in range(self.max_recoveries):
            calls = self.monitor.recovery(an, call)
            if calls is None:
                an.outcome = "aborted" if an.kind == "estop" else "escalated"
                self._emit("anomaly", an.to_dict())
                if an.kind == "estop":
                    raise _Stop(f"{call.skill} failed: {res.reason}")
                return res
            an.calls = [str(c) for c in calls]
            self.progress(f"   handling: {an.handling}")
            ok = True
            for c in calls:
                if not self._run(c).success:
                    ok = False
                    break
            if not ok and an.kind != "not_found":
                continue
            if res.success:  # a silent anomaly (a drop after a successful skill): recovery was the fix
                an.outcome = "recovered"
                self._emit("anomaly", an.to_dict())
                return res
            if self._already_done(call):  # the recovery did it (a dropped object found and picked up)
                an.outcome = "recovered"
                self._emit("anomaly", an.to_dict())
                return SkillResult(call.skill, dict(call.args), SkillStatus.SUCCESS, message="done while recovering")
            retry = self._run(call)
            if retry.success:
                an.outcome = "recovered"
                self._emit("anomaly", an.to_dict())
                return retry
            res = retry
            if an.kind == "not_found":
                break
        an.outcome = "escalated"
        self._emit("anomaly", an.to_dict())
        return res

    def _sync(self, call: SkillCall | None = None) -> None:
        """Track the symbolic state: the model's effects, corrected by the body's own facts."""
        if call is not None:
            self._sym = apply_call(call, self._sym)
        body = self.executor.ctx
        found = self._sym.found
        if body.held is not None:
            found = found - {body.held}
        at = self._sym.at
        if body.at_place is not None and not (at or "").startswith("@") and not (at or "").startswith(ORIGIN_REF):
            at = body.at_place
        self._sym = SymState(at=at, held=body.held, opened=frozenset(body.opened), found=found,
                             looked=self._sym.looked, placed=self._sym.placed)

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self, instruction: str) -> RunOutcome:
        self._out = out = RunOutcome()
        self._sym = SymState(at=self.executor.ctx.at_place, held=self.executor.ctx.held,
                             opened=frozenset(self.executor.ctx.opened))
        try:
            if self.mode == "per-step":
                self._run_per_step(instruction)
            else:
                self._run_tree(instruction)
            out.completed = True
        except _Stop as stop:
            out.stop_reason = stop.reason
            self.progress(f"   cannot continue: {stop.reason}")
        out.anomalies = list(self.monitor.log)
        out.cost = self.ledger.summary()
        out.planner_calls = self.ledger.planner_calls
        return out

    def _unmet(self, plan: Plan) -> int | None:
        """Index of the first goal the tracked state does not satisfy, among those that still
        count (a later goal about the same object, or a later "go to", supersedes an earlier one)."""
        unmet = goals_hold(plan.goals, self._sym)
        if not unmet:
            return None
        return min(i for i, g in enumerate(plan.goals) if any(g is u for u in unmet))

    def _run_tree(self, instruction: str) -> None:
        plan = self._consult("plan", instruction, lambda: self.planner.plan(instruction, self.context))
        replans = 0
        while True:
            tree: ActionTree = plan.tree
            options = tree.options(self._sym, self.context)
            if not options:
                if tree.done and self._unmet(plan) is None:
                    return
                reason = "the plan ended before its goals held" if tree.done else \
                    "no branch of the plan can run from here"
                plan, replans = self._replan(plan, replans, reason)
                continue
            node = options[0]
            res = self._run(node.call)
            if res.success:
                tree.advance(node)
                continue
            tree.fail(node)
            if tree.options(self._sym, self.context):
                self.progress(f"   backtracking: {len(tree.options(self._sym, self.context))} other branch(es)")
                continue
            plan, replans = self._replan(plan, replans, f"{res.skill} failed: {res.reason}")

    def _replan(self, plan: Plan, replans: int, reason: str) -> tuple[Plan, int]:
        if replans >= self.max_replans:
            raise _Stop(reason)
        first = self._unmet(plan)
        if first is None:
            first = 0
        self._sync()
        self.context.at_place = self._sym.at
        unmet = goals_hold(plan.goals, self._sym)
        rest = [g for g in plan.goals[first:] if any(g is u for u in unmet)]
        todo = Plan(plan.instruction, rest or plan.goals[first:], [])
        if hasattr(self.planner, "replan"):
            new = self._consult("replan", plan.instruction, lambda: self.planner.replan(todo, 0, self.context))
        else:
            new = self._consult("replan", plan.instruction, lambda: self.planner.plan(plan.instruction, self.context))
        new.goals = todo.goals if hasattr(self.planner, "replan") else new.goals
        return new, replans + 1

    def _run_per_step(self, instruction: str) -> None:
        """ReAct-style baseline: ask the planner for the whole remaining plan before every skill
        and run only its first step."""
        plan = self._consult("plan", instruction, lambda: self.planner.plan(instruction, self.context))
        goals = list(plan.goals)
        first = 0
        failures = 0
        budget = 4 * max(len(plan.steps), 1) + 10  # skills; a planner that never converges is stopped
        while True:
            budget -= 1
            if budget < 0:
                raise _Stop("no progress: the per-step planner kept choosing steps without reaching the goals")
            while first < len(goals) and goal_holds(goals[first], self._sym):
                first += 1
            if first >= len(goals):
                return
            step = plan.steps[0] if plan.steps else None
            if step is None or precondition(step, self._sym, self.context) is not None:
                raise _Stop("the planner's next step cannot run from here")
            res = self._run(step)
            if not res.success:
                failures += 1
                if failures > self.max_replans:
                    raise _Stop(f"{res.skill} failed: {res.reason}")
            while first < len(goals) and goal_holds(goals[first], self._sym):
                first += 1
            if first >= len(goals):
                return
            rest = Plan(plan.instruction, goals, plan.steps)
            if hasattr(self.planner, "replan"):
                plan = self._consult("step", instruction, lambda r=rest, f=first: self.planner.replan(r, f, self.context))
            else:
                plan = self._consult("step", instruction, lambda: self.planner.plan(instruction, self.context))


def _describe(res: SkillResult) -> str:
    status = "ok" if res.success else f"FAILED ({res.reason}: {res.message})"
    return f"   {res.skill} {status} [{res.duration:.1f} s]"
