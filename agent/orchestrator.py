"""The first orchestrator loop: plan once, run skills in order, re-plan on failure (bounded).

It routes between organs and keeps only routing state (the plan, the step index, counts); the
planner, executor, locator and body context own theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mnemobot.agent.planner import Plan, Planner, PlanningContext
from mnemobot.control.executor import SkillExecutor, StepBudgetExceeded
from mnemobot.control.skills import SKILLS
from mnemobot.control.types import SkillResult

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
    ) -> None:
        self.planner, self.executor, self.context = planner, executor, context
        self.progress = progress or (lambda _msg: None)
        self.max_replans = max_replans

    def run(self, instruction: str) -> RunOutcome:
        out = RunOutcome()
        plan = self._plan(out, lambda: self.planner.plan(instruction, self.context))
        replans, i = 0, 0
        while i < len(plan.steps):
            call = plan.steps[i]
            self.progress(f"-> {call}")
            try:
                res = self.executor.run(SKILLS[call.skill], call.args)
            except StepBudgetExceeded as e:
                out.stop_reason = f"steps_limit: {e}"
                return out
            out.results.append(res)
            self.progress(_describe(res))
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
        return plan


def _describe(res: SkillResult) -> str:
    status = "ok" if res.success else f"FAILED ({res.reason}: {res.message})"
    return f"   {res.skill} {status} [{res.duration:.1f} s]"
