"""The rule planner: instruction grammar, goal expansion, validation of names."""

from __future__ import annotations

import numpy as np
import pytest

from mnemobot.agent.errors import UserError
from mnemobot.agent.planner import InstructionError, PlanningContext, RulePlanner, parse_instruction
from mnemobot.control.site import Doorway, Place, Room, SiteMap
from mnemobot.perception.types import Pose


def _site() -> SiteMap:
    rooms = {"kitchen": Room("kitchen", (0.0, 0.0), (4.0, 4.0)), "bedroom": Room("bedroom", (4.0, 0.0), (4.0, 4.0))}
    surf = Pose(np.array([1.0, 0.0, 0.6]))
    places = {
        "kitchen_table": Place("kitchen_table", "table", "kitchen", (0.3, 0.0, 0.0), surf, (0.8, 0.6)),
        "tray": Place("tray", "tray", "bedroom", (3.5, 0.0, 0.0), surf, (0.3, 0.3)),
        "drawer": Place(
            "drawer", "drawer", "kitchen", (0.0, 1.0, 0.0), surf, (0.3, 0.4), relation="in",
            handle=Pose(np.array([0.5, 1.0, 0.4])), open_direction=(-1.0, 0.0, 0.0), open_distance=0.25,
        ),
    }
    return SiteMap(rooms, [Doorway(("kitchen", "bedroom"), (2.0, 0.0))], places)


@pytest.fixture()
def ctx() -> PlanningContext:
    return PlanningContext(_site(), vocabulary={"red_cube", "duck", "teddy"})


def test_place_on_surface_expands_to_find_pick_navigate_look_place(ctx: PlanningContext) -> None:
    plan = RulePlanner().plan("put the red cube on the tray", ctx)
    assert [c.skill for c in plan.steps] == ["find", "pick", "navigate_to", "look_at", "place"]
    assert plan.steps[-1].args == {"object": "red_cube", "receptacle": "tray", "relation": "on"}
    assert plan.goal_of == [0] * 5


def test_place_in_closed_container_opens_it_first_and_only_once(ctx: PlanningContext) -> None:
    plan = RulePlanner().plan("put the duck in the drawer, then put the teddy in the drawer, then close the drawer", ctx)
    skills = [c.skill for c in plan.steps]
    assert skills[:2] == ["navigate_to", "open"]
    assert skills.count("open") == 1
    assert skills[-2:] == ["navigate_to", "close"]
    assert plan.goal_of[-1] == 2


def test_bring_with_room_hint_and_goto(ctx: PlanningContext) -> None:
    goals = parse_instruction("go to the bedroom and bring the duck from the kitchen to the tray", ctx)
    assert goals[0].kind == "goto" and goals[0].target == "bedroom"
    assert goals[1].kind == "place" and goals[1].room_hint == "kitchen" and goals[1].relation == "on"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("put the banana on the tray", "unknown object 'banana'"),
        ("put the duck on the moon", "unknown place 'moon'"),
        ("dance a little", "cannot understand"),
        ("go to the garage", "unknown room"),
    ],
)
def test_bad_instructions_raise_a_user_error_naming_the_problem(ctx: PlanningContext, text: str, fragment: str) -> None:
    with pytest.raises(InstructionError) as err:
        RulePlanner().plan(text, ctx)
    assert fragment in str(err.value)
    assert isinstance(err.value, UserError)


def test_replan_restarts_from_the_failed_goal_with_current_container_state(ctx: PlanningContext) -> None:
    planner = RulePlanner()
    plan = planner.plan("put the duck in the drawer, then bring the red cube to the tray", ctx)
    ctx.opened = {"drawer"}
    again = planner.replan(plan, 1, ctx)
    assert [g.object for g in again.goals] == ["red_cube"]
    assert "open" not in [c.skill for c in again.steps]
