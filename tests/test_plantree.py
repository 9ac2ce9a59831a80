"""Plan trees, the action model and validator, the symbolic planner, cost accounting and the
anomaly monitor's classification (no simulator needed)."""

from __future__ import annotations

import json

import pytest

from mnemobot.agent.anomaly import AnomalyMonitor
from mnemobot.agent.cost import CostLedger
from mnemobot.agent.planner import (
    InstructionError,
    PlanningContext,
    RulePlanner,
    SkillCall,
    object_vocabulary,
    parse_instruction,
)
from mnemobot.agent.plantree import (
    PLAN_SCHEMA,
    ActionTree,
    PlanError,
    SymState,
    goals_hold,
    precondition,
    steps_from_json,
    validate_steps,
)
from mnemobot.agent.symbolic import SymbolicPlanner
from mnemobot.control.types import SkillResult, SkillStatus
from mnemobot.sim.layout import DEFAULT_LAYOUT

SITE = DEFAULT_LAYOUT.site_map()
VOCAB = {o.label for o in DEFAULT_LAYOUT.objects}

TASKS = [
    "put the mug on the shelf",
    "bring the duck from the bedroom to the kitchen table",
    "put the mug in the drawer, then close the drawer",
    "put the mug on the shelf, then put the mug back where it was",
    "put the mug in the drawer and close the drawer, then go to the bedroom, then bring the mug to the bedroom table",
    "open the drawer, then put the duck in the drawer, then close the drawer, then go to the bedroom",
    "put the yellow ball on the living room table, then go to the drawer, then go to the living room",
]


def ctx(**kw) -> PlanningContext:
    return PlanningContext(SITE, set(VOCAB), **kw)


def C(skill: str, **args: str) -> SkillCall:
    return SkillCall(skill, args)


# -- the validator ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", TASKS)
def test_both_planners_produce_valid_plans(text):
    c = ctx()
    goals = parse_instruction(text, c)
    for planner in (RulePlanner(), SymbolicPlanner()):
        plan = planner.plan(text, c)
        assert validate_steps(plan.steps, c, goals) == [], (planner.name, [str(s) for s in plan.steps])


@pytest.mark.parametrize("steps,problem", [
    ([], "empty"),
    ([C("teleport", object="mug")], "unknown skill 'teleport'"),
    ([C("find", object="unicorn", room="")], "unknown object 'unicorn'"),
    ([C("pick", object="mug")], "pick(mug) before find(mug)"),
    ([C("find", object="mug", room=""), C("pick", object="mug"), C("place", object="mug", receptacle="shelf",
                                                                     relation="on")], "away from the shelf"),
    ([C("find", object="mug", room=""), C("pick", object="mug"), C("navigate_to", place="shelf"),
      C("place", object="mug", receptacle="shelf", relation="on")], "without look_at(shelf)"),
    ([C("find", object="mug", room=""), C("pick", object="mug"), C("navigate_to", place="drawer"),
      C("look_at", target="drawer"), C("place", object="mug", receptacle="drawer", relation="in")], "closed"),
    ([C("find", object="mug", room=""), C("pick", object="mug"), C("find", object="duck", room=""),
      C("pick", object="duck")], "hand is full"),
    ([C("navigate_to", place="moon")], "unknown place or room 'moon'"),
    ([C("open", container="shelf")], "cannot be opened"),
    ([C("find", object="mug", room="attic")], "unknown room 'attic'"),
    ([C("pick", object="mug", force="10")], "not force"),
    ([C("navigate_to", place="shelf")] * 3, "a loop"),
])
def test_wrong_plans_are_caught(steps, problem):
    problems = validate_steps(steps, ctx(), parse_instruction("put the mug on the shelf", ctx()))
    assert problems and any(problem in p for p in problems), problems


def test_a_valid_but_pointless_plan_misses_the_goal():
    steps = [C("find", object="mug", room=""), C("pick", object="mug"), C("navigate_to", place="tray"),
             C("look_at", target="tray"), C("place", object="mug", receptacle="tray", relation="on")]
    assert validate_steps(steps, ctx()) == []  # executable
    problems = validate_steps(steps, ctx(), parse_instruction("put the mug on the shelf", ctx()))
    assert problems == ["the plan does not achieve: mug on shelf"]


def test_visits_count_only_when_last():
    goals = parse_instruction("go to the bedroom, then go to the kitchen", ctx())
    assert [g.target for g in goals_hold(goals, SymState(at="bedroom"))] == ["kitchen"]
    assert goals_hold(goals, SymState(at="kitchen")) == []


def test_body_state_is_respected():
    c = ctx(held="mug", opened={"drawer"})
    start = SymState.from_context(c, at="drawer")
    steps = [C("look_at", target="drawer"), C("place", object="mug", receptacle="drawer", relation="in")]
    assert validate_steps(steps, c, start=start) == []
    assert "hand is full" in precondition(C("pick", object="duck"), start, c)


# -- answers from language models -------------------------------------------------------------------------
def test_steps_from_json_forms():
    text = 'Sure! {"plan": [{"skill": "Find", "args": {"object": "Yellow Ball", "room": null}}]} done'
    assert steps_from_json(text) == [SkillCall("find", {"object": "yellow_ball", "room": ""})]
    assert steps_from_json('[{"skill": "pick", "args": {"object": "mug"}}]') == [C("pick", object="mug")]
    for bad, match in [("no json here", "not JSON"), ('{"steps": []}', "no 'plan'"),
                       ('{"plan": [1]}', "step 1"), ('{"plan": [{"skill": "pick", "args": 3}]}', "args")]:
        with pytest.raises(PlanError, match=match):
            steps_from_json(bad)
    assert PLAN_SCHEMA["properties"]["plan"]["items"]["properties"]["skill"]["enum"][0] == "close"
    json.dumps(PLAN_SCHEMA)


# -- trees -------------------------------------------------------------------------------------------------
def test_candidates_merge_into_a_tree_with_backtracking():
    a = [C("find", object="mug", room=""), C("pick", object="mug")]
    b = [C("find", object="mug", room="kitchen"), C("pick", object="mug")]
    tree = ActionTree([a, a, b])
    assert tree.candidates == 3 and tree.size() == 4
    assert tree.best_path() == a
    first = tree.options()
    assert [n.support for n in first] == [2, 1]
    tree.fail(first[0])  # the best-supported branch failed: the sibling is next, no planner call
    assert tree.options()[0].call == b[0]
    tree.advance(tree.options()[0])
    assert [n.call for n in tree.options()] == [b[1]]
    tree.advance(tree.options()[0])
    assert tree.done


def test_tree_options_filter_by_preconditions():
    tree = ActionTree([[C("pick", object="mug")], [C("find", object="mug", room="")]])
    c = ctx()
    assert [n.call.skill for n in tree.options(SymState(), c)] == ["find"]


# -- the symbolic planner ----------------------------------------------------------------------------------
def test_symbolic_uses_memory_beliefs_and_body_state():
    c = ctx(beliefs={"duck": "shelf"})
    plan = SymbolicPlanner().plan("put the duck on the tray", c)
    assert plan.steps[0] == C("find", object="duck", room="bedroom")  # memory's room as the search hint
    held = SymbolicPlanner().plan("put the mug in the drawer", ctx(held="mug", opened={"drawer"}))
    assert [s.skill for s in held.steps] == ["navigate_to", "look_at", "place"]
    assert plan.tree is not None and plan.tree.best_path() == plan.steps


def test_vocabulary_is_what_the_task_names_and_perception_produced():
    c = PlanningContext(SITE, object_vocabulary(named=["mug"], perceived={"duck"}))
    assert SymbolicPlanner().plan("put the duck on the tray", c).steps[0].skill == "find"
    assert SymbolicPlanner().plan("put the mug on the tray", c).steps[0].skill == "find"
    with pytest.raises(InstructionError, match="unknown object 'teddy': the robot has not seen one"):
        SymbolicPlanner().plan("put the teddy on the tray", c)


def test_symbolic_search_is_small_and_reports_impossible_goals():
    p = SymbolicPlanner()
    p.plan(TASKS[4], ctx())
    assert p.expanded < 500
    with pytest.raises(InstructionError, match="no plan reaches"):
        SymbolicPlanner(max_depth=2).plan("put the mug in the drawer", ctx())


def test_replan_covers_the_remaining_goals():
    c = ctx()
    p = SymbolicPlanner()
    plan = p.plan(TASKS[2], c)
    rest = p.replan(plan, 1, ctx(at_place="drawer", opened={"drawer"}))
    assert rest.steps == [C("close", container="drawer")]


# -- cost accounting ---------------------------------------------------------------------------------------
def test_cost_ledger():
    ledger = CostLedger()
    with ledger.decision("plan", "symbolic"):
        pass
    with ledger.decision("replan", "openai:gemma") as d:
        d.record(prompt_tokens=300, completion_tokens=80, latency_s=1.0, valid=False, error="bad json")
        d.record(prompt_tokens=320, completion_tokens=60, latency_s=1.2)
        d.fallback = ""
    s = ledger.summary()
    assert s["decisions"] == 2 and s["planner_calls"] == 3
    assert (s["prompt_tokens"], s["completion_tokens"], s["invalid_answers"]) == (620, 140, 1)
    assert s["by_kind"] == {"plan": 1, "replan": 1}
    assert ledger.decisions[1].to_dict()["model_calls"] == 2


# -- anomaly classification ---------------------------------------------------------------------------------
def _fail(skill: str, reason: str, **args: str) -> SkillResult:
    return SkillResult(skill, args, SkillStatus.FAILURE, reason=reason, message=reason)


def test_anomaly_classification_and_local_handling():
    mon = AnomalyMonitor(SITE, memory=None, max_local=2)
    pick = C("pick", object="mug")
    an = mon.check(pick, _fail("pick", "grasp_failed", object="mug"), None, None, 1.0)
    assert an.kind == "grasp_failed"
    assert mon.recovery(an, pick) == [C("find", object="mug", room="")]
    nav = C("navigate_to", place="shelf")
    ok = SkillResult("navigate_to", {"place": "shelf"}, SkillStatus.SUCCESS)
    drop = mon.check(nav, ok, "mug", None, 2.0)
    assert drop.kind == "dropped" and drop.args == {"object": "mug"}
    assert mon.recovery(drop, nav)[-1] == nav
    estop = mon.check(nav, _fail("navigate_to", "safety:EStopError", place="shelf"), None, None, 3.0)
    assert estop.kind == "estop" and mon.recovery(estop, nav) is None
    find = C("find", object="duck", room="")
    nf = mon.check(find, _fail("find", "not_found", object="duck", room=""), None, None, 4.0)
    rec = mon.recovery(nf, find)
    assert nf.kind == "not_found" and [c.skill for c in rec] == ["navigate_to", "look_at"] * 3
    for _ in range(2):
        last = mon.check(pick, _fail("pick", "grasp_failed", object="mug"), None, None, 5.0)
    assert last.kind == "no_progress" and mon.recovery(last, pick) is None
    assert mon.summary()["by_kind"]["grasp_failed"] == 2


class _Graph:
    """The part of the scene graph the monitor reads: one object node per label."""

    def __init__(self, nodes: dict[str, dict]) -> None:
        self.nodes = nodes
        self.by_label: dict[str, set[str]] = {}
        for k, d in nodes.items():
            self.by_label.setdefault(d["label"], set()).add(k)

    def node(self, key: str) -> dict:
        return self.nodes[key]

    def by_layer(self, layer: str) -> list[str]:
        return list(self.nodes) if layer == "object" else []


def test_not_found_in_a_remembered_container_opens_it():
    duck = {"label": "duck", "place": "drawer", "confidence": 0.3, "last_seen": 5.0}
    memory = type("Memory", (), {"graph": _Graph({"obj:1": duck, "obj:2": {**duck, "confidence": 0.2}})})()
    mon = AnomalyMonitor(SITE, memory=memory)
    find = C("find", object="duck", room="")
    an = mon.check(find, _fail("find", "not_found", object="duck", room=""), None, None, 9.0)
    calls = mon.recovery(an, find)
    assert calls[:3] == [C("navigate_to", place="drawer"), C("open", container="drawer"),
                         C("look_at", target="drawer")]
    assert [c.skill for c in calls[3:]] == ["navigate_to", "look_at"] * 2  # surfaces: nothing to open
