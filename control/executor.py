"""Runs skills: action chunks -> brainstem commands -> robot steps, with budgets and timeouts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mnemobot.control.site import UnknownPlaceError
from mnemobot.control.skills import SkillContext, SkillSpec
from mnemobot.control.types import (
    ControlTarget,
    RobotCommand,
    RobotState,
    SafetyError,
    SkillResult,
    SkillStatus,
)

__all__ = ["ExecutorConfig", "SkillExecutor", "StepBudgetExceeded"]


class StepBudgetExceeded(RuntimeError):
    """The episode used up its control-tick budget (``--steps-limit``)."""


class _SkillTimeout(Exception):
    pass


@dataclass
class ExecutorConfig:
    """``perceive_hz``: how often (robot time) frames are fed to the locator/memory while skills
    run (0 = only when a skill looks); ``step_budget``: control ticks allowed in the episode."""

    perceive_hz: float = 5.0
    step_budget: int | None = None


class SkillExecutor:
    """Executes one skill call at a time on ``ctx.robot`` through ``ctx.controller``."""

    def __init__(self, ctx: SkillContext, config: ExecutorConfig | None = None) -> None:
        self.ctx = ctx
        self.config = config or ExecutorConfig()
        self.ticks = 0
        self._next_perceive = 0.0
        self.on_tick: list[Callable[[RobotCommand, RobotState], None]] = []
        """Called after every control tick with the command sent and the state read back."""

    def start(self) -> None:
        """Read the robot, align the brainstem with it and take a first frame."""
        ctx = self.ctx
        ctx.state = ctx.robot.read()
        ctx.controller.reset(ctx.state)
        self._next_perceive = ctx.state.t
        self._maybe_perceive()

    def _maybe_perceive(self) -> None:
        hz = self.config.perceive_hz
        if hz > 0 and self.ctx.state.t + 1e-9 >= self._next_perceive:
            self.ctx.perceive()
            self._next_perceive = self.ctx.state.t + 1.0 / hz

    def _tick(self, target: ControlTarget) -> None:
        budget = self.config.step_budget
        if budget is not None and self.ticks >= budget:
            raise StepBudgetExceeded(f"steps limit of {budget} control ticks reached")
        cmd = self.ctx.controller.command(target, self.ctx.state)
        self.ctx.state = self.ctx.robot.step(cmd)
        self.ticks += 1
        for hook in self.on_tick:
            hook(cmd, self.ctx.state)
        self._maybe_perceive()

    def _hold(self) -> None:
        cmd = self.ctx.controller.hold(self.ctx.state)
        self.ctx.state = self.ctx.robot.step(cmd)
        self.ticks += 1
        for hook in self.on_tick:
            hook(cmd, self.ctx.state)

    def run(self, spec: SkillSpec, args: dict[str, str]) -> SkillResult:
        """Run ``spec`` with ``args`` to completion, failure, safety stop or timeout."""
        ctx = self.ctx
        t0, ticks0 = ctx.state.t, self.ticks
        gen = spec.fn(ctx, **args)
        try:
            chunk = next(gen)
            while True:
                for target in chunk.targets:
                    self._tick(target)
                    if ctx.state.t - t0 > spec.timeout_s:
                        raise _SkillTimeout
                chunk = next(gen)
        except StopIteration as stop:
            result = stop.value or SkillResult(spec.name, args, SkillStatus.FAILURE, "no_result", "no result")
        except SafetyError as e:
            self._hold()
            result = SkillResult(spec.name, args, SkillStatus.FAILURE, f"safety:{type(e).__name__}", str(e))
        except _SkillTimeout:
            self._hold()
            result = SkillResult(
                spec.name, args, SkillStatus.FAILURE, "timeout", f"{spec.name} took longer than {spec.timeout_s:.0f} s"
            )
        except UnknownPlaceError as e:
            result = SkillResult(spec.name, args, SkillStatus.FAILURE, "unknown_place", str(e))
        finally:
            gen.close()
        result.skill, result.args = spec.name, dict(args)
        result.duration = ctx.state.t - t0
        result.ticks = self.ticks - ticks0
        return result
