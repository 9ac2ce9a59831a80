"""The first orchestrator loop: plan once, run skills in order, re-plan on failure (bounded).

It routes between organs and keeps only routing state (the plan, the step index, counts); the
planner, executor, locator and body context own theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mnemobot.agent.planner import ORIGIN_REF, Plan, Planner, PlanningContext, SkillCall
from mnemobot.control.executor import SkillExecutor, StepBudgetExceeded
from mnemobot.control.skills import SKILLS
from mnemobot.control.types import SkillResult
from mnemobot.memory.memory import Memory

__all__ = ["Orchestrator", "RunOutcome"]


@dataclass
class RunOutcome:
    """What the loop did: every skill result, how many planner calls, and why it stopped."""

    results: list[SkillResult] = field(default_factory=list)
    planner_calls: int = 0
    completed: bool = False
    stop_reason: str = ""
    plan: Plan | None = None


class Orchestrator:
    """Plans with ``planner`` and executes the plan's skill calls with ``executor``."""

    def __init__(
        self,
        planner: Planner,
        executor: SkillExecutor,
        context: PlanningContext,
        progress: Callable[[str], None] | None = None,
        max_replans: int = 1,
        memory: Memory | None = None,
        on_event: Callable[[str, float, dict[str, object]], None] | None = None,
    ) -> None:
        self.planner, self.executor, self.context = planner, executor, context
        self.progress = progress or (lambda _msg: None)
        self.max_replans = max_replans
        self.memory = memory
        self.memory_questions = 0
        self.on_event = on_event
        """Receives ``("plan" | "skill", robot time, data)`` (a recorder, a logger)."""

    def _emit(self, kind: str, data: dict[str, object]) -> None:
        if self.on_event is not None:
            self.on_event(kind, float(self.executor.ctx.state.t), data)

    def _resolve(self, call: SkillCall) -> SkillCall | str:
        """Ask memory about the call's object and resolve memory references in its arguments.

        Returns the call to run, or the reason it cannot run (memory has no answer).
        """
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
                return f"memory has no record of where the {label.replace('_', ' ')} was"
            args[name] = origin
        if call.skill == "place" and not args.get("relation"):
            args["relation"] = self.context.site.place(args["receptacle"]).relation
        return SkillCall(call.skill, args)

    def run(self, instruction: str) -> RunOutcome:
        out = RunOutcome()
        plan = self._plan(out, lambda: self.planner.plan(instruction, self.context))
        replans, i = 0, 0
        while i < len(plan.steps):
            call = self._resolve(plan.steps[i])
            if isinstance(call, str):
                out.stop_reason = call
                self.progress(f"   cannot continue: {call}")
                return out
            self.progress(f"-> {call}")
            try:
                res = self.executor.run(SKILLS[call.skill], call.args)
            except StepBudgetExceeded as e:
                out.stop_reason = f"steps_limit: {e}"
                return out
            out.results.append(res)
            self.progress(_describe(res))
            self._emit("skill", res.to_dict())
            if res.success:
                i += 1
                continue
            if replans >= self.max_replans or not hasattr(self.planner, "replan"):
                out.stop_reason = f"{call.skill} failed: {res.reason}"
                return out
            replans += 1
            self.context.opened = set(self.executor.ctx.opened)
            self.context.held = self.executor.ctx.held
            plan = self._plan(out, lambda g=plan.goal_of[i], p=plan: self.planner.replan(p, g, self.context))
            i = 0
        out.completed = True
        return out

    def _plan(self, out: RunOutcome, make: Callable[[], Plan]) -> Plan:
        plan = make()
        out.planner_calls += 1
        out.plan = plan
        self.progress(f"plan ({len(plan.steps)} steps): " + ", ".join(str(s) for s in plan.steps))
        self._emit("plan", {"instruction": plan.instruction, "call": out.planner_calls,
                            "steps": [{"skill": s.skill, "args": dict(s.args)} for s in plan.steps]})
        return plan


def _describe(res: SkillResult) -> str:
    status = "ok" if res.success else f"FAILED ({res.reason}: {res.message})"
    return f"   {res.skill} {status} [{res.duration:.1f} s]"
