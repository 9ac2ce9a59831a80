"""Memory-dependent workcell families (reopen_drawer, put_block_back, rearrange): the workcell's
geometry, seeded generation, milestone scoring, the scripted expert's plans, and full episodes.

The fast tests need no simulator (a small fake world stands in for the backend's ground-truth
methods); the slow ones run real pybullet episodes with the scripted expert.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from mnemobot.agent.errors import UserError
from mnemobot.agent.planner import InstructionError, PlanningContext, ScriptedPlanner, SkillCall
from mnemobot.agent.plantree import validate_steps
from mnemobot.control.skills import SKILLS
from mnemobot.sim import ENV_IDS
from mnemobot.sim.layout import DEFAULT_LAYOUT, HouseLayout, Rect
from mnemobot.sim.tasks import FAMILY_LAYOUT, TASK_FAMILIES, Task, layout_for, make_task
from mnemobot.sim.workcell import (
    BUTTON_TOP,
    CENTRE_PATCH,
    COLOUR_PATCHES,
    DRAWERS,
    ONE_BLOCK_WORKCELL,
    TWO_BLOCK_WORKCELL,
    WORKCELL_LAYOUT,
)

FAMILIES = ("reopen_drawer", "put_block_back", "rearrange")
BASE_SIZE = (0.6, 0.5)  # SimRobotConfig.base_size


def placements_of(layout: HouseLayout) -> dict[str, str]:
    """Every object on the bench, as a spawn in the workcell gives (the task then moves them)."""
    return {label: "bench" for label in layout.object_labels}


def task_of(family: str, seed: int) -> Task:
    layout = layout_for(family)
    return make_task(family, seed, layout, placements_of(layout))


class FakeWorkcell:
    """The backend's ground-truth methods over a dictionary world (no simulator)."""

    def __init__(self, layout: HouseLayout) -> None:
        self.layout = layout
        self.openings = dict.fromkeys(DRAWERS, 0.0)
        self.pressed = False
        self.where: dict[str, tuple[str, str] | None] = {label: ("bench", "on") for label in layout.object_labels}
        self.held: set[str] = set()
        self.hooks: dict[int, Callable[[float], None]] = {}
        self.t = 0.0

    # what tasks and the expert read and change
    def drawer_places(self) -> tuple[str, ...]:
        return DRAWERS

    def drawer_opening(self, name: str | None = None) -> float:
        return self.openings[name or DRAWERS[0]]

    def set_drawer(self, opening: float, name: str | None = None) -> None:
        self.openings[name or DRAWERS[0]] = opening

    def button_pressed(self) -> bool:
        return self.pressed

    def object_labels(self) -> tuple[str, ...]:
        return self.layout.object_labels

    def place_of(self, label: str) -> tuple[str, str] | None:
        return self.where[label]

    def put_object(self, label: str, place: str) -> None:
        self.where[label] = (place, "on")

    def is_held(self, label: str) -> bool:
        return label in self.held

    def object_speed(self, label: str) -> float:
        return 0.0

    def add_step_hook(self, fn: Callable[[float], None]) -> int:
        self.hooks[len(self.hooks)] = fn
        return len(self.hooks) - 1

    def remove_step_hook(self, handle: int) -> None:
        self.hooks.pop(handle, None)

    # driving the fake
    def tick(self) -> None:
        """Advance a milestone check period and run the hooks."""
        self.t += 0.1
        for hook in list(self.hooks.values()):
            hook(self.t)

    def press(self) -> None:
        self.pressed = True
        self.tick()
        self.pressed = False
        self.tick()

    def move(self, label: str, place: str) -> None:
        self.where[label] = (place, "on")
        self.tick()

    def drawer(self, name: str, opening: float) -> None:
        self.openings[name] = opening
        self.tick()


def attached(family: str, seed: int) -> tuple[Task, FakeWorkcell]:
    task = task_of(family, seed)
    world = FakeWorkcell(layout_for(family))
    task.attach(world)
    return task, world


# -- the workcell ----------------------------------------------------------------------------------------
def test_workcell_has_one_room_a_bench_with_patches_a_button_and_three_drawers() -> None:
    lay = WORKCELL_LAYOUT
    site = lay.site_map()
    assert lay.rooms == ("workcell",) and not lay.doorways()
    assert set(lay.place_names) == {"bench", CENTRE_PATCH, *COLOUR_PATCHES, "button", *DRAWERS}
    for name in DRAWERS:
        place = site.place(name)
        assert place.relation == "in" and place.articulated and place.open_distance == pytest.approx(0.30)
    for name in (CENTRE_PATCH, *COLOUR_PATCHES):
        place = site.place(name)
        assert place.relation == "on" and place.label == "patch"
        assert place.surface.position[2] == pytest.approx(0.604)  # on the bench top, 4 mm thick
        assert lay.furniture_by_name(name).kind == "block"  # its own body: its own instance id and label
    assert site.place("centre").name == CENTRE_PATCH  # alias
    button = site.place("button")
    assert button.label == "button" and button.surface.position[2] == pytest.approx(0.60 + BUTTON_TOP)
    colours = {lay.furniture_by_name(p).rgba for p in (CENTRE_PATCH, *COLOUR_PATCHES)}
    assert len(colours) == 5


def test_patches_and_button_lie_on_the_bench_far_enough_apart_for_the_hand() -> None:
    lay = WORKCELL_LAYOUT
    bench = lay.furniture_by_name("bench").footprint()
    centres = []
    for name in (*COLOUR_PATCHES, CENTRE_PATCH, "button"):
        furn = lay.furniture_by_name(name)
        assert furn.elevation == pytest.approx(0.60)
        assert all(bench.overlaps(Rect(tuple(c), (1e-3, 1e-3))) for c in furn.footprint().corners())
        centres.append(np.asarray(furn.position))
    gaps = [np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]]
    assert min(gaps) >= 0.2  # the open hand is about 0.2 m across


def test_every_stand_pose_is_free_and_the_start_faces_the_centre_patch() -> None:
    lay = WORKCELL_LAYOUT
    obstacles = lay.obstacles()
    room = lay.room_rects()["workcell"]
    for spec in lay.places:
        x, y, yaw = lay.stand_pose(spec)
        footprint = Rect((x, y), BASE_SIZE, yaw)
        assert not any(footprint.overlaps(o) for o in obstacles), spec.name
        assert room.contains((x, y), margin=0.4)
        # the closing drive backs the base up by the opening: that must be free too
        if spec.name in DRAWERS:
            back = Rect((x, y - lay.drawer_open_distance), BASE_SIZE, yaw)
            assert not any(back.overlaps(o) for o in obstacles)
    assert lay.start_pose == lay.stand_pose(lay.place_spec(CENTRE_PATCH))
    floor = [f.footprint() for f in lay.furniture if f.elevation == 0.0]
    assert not any(a.overlaps(b) for i, a in enumerate(floor) for b in floor[i + 1:])


def test_look_alike_blocks_share_a_category_but_keep_unique_labels() -> None:
    assert ONE_BLOCK_WORKCELL.object_labels == ("block",) and WORKCELL_LAYOUT.objects == ()
    a, b = TWO_BLOCK_WORKCELL.objects
    assert (a.label, b.label) == ("block_1", "block_2")
    assert a.detected_as == b.detected_as == "block" and a.rgba == b.rgba and a.urdf == b.urdf
    assert all(o.detected_as == o.label for o in DEFAULT_LAYOUT.objects)  # the house is unchanged


# -- registration ----------------------------------------------------------------------------------------
def test_families_are_registered_with_their_layouts_and_gym_ids() -> None:
    for family in FAMILIES:
        assert family in TASK_FAMILIES and family in FAMILY_LAYOUT
        assert any(kw.get("task") == family for kw in ENV_IDS.values())
    assert layout_for("reopen_drawer") is WORKCELL_LAYOUT
    assert layout_for("put_block_back") is ONE_BLOCK_WORKCELL
    assert layout_for("rearrange") is TWO_BLOCK_WORKCELL
    assert all(layout_for(f) is DEFAULT_LAYOUT for f in ("place", "fetch", "memory", "recall"))
    with pytest.raises(ValueError, match="unknown task family"):
        layout_for("juggle")
    assert SKILLS["press"].params == ("button",)


@pytest.mark.parametrize("family", FAMILIES)
def test_workcell_families_refuse_the_house_with_a_clear_error(family: str) -> None:
    placements = {label: "kitchen_table" for label in DEFAULT_LAYOUT.object_labels}
    with pytest.raises(ValueError, match="workcell"):
        make_task(family, 0, DEFAULT_LAYOUT, placements)


# -- generation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_generation_is_deterministic_and_the_instruction_never_gives_the_answer(family: str) -> None:
    tasks = [task_of(family, seed) for seed in range(40)]
    assert tasks == [task_of(family, seed) for seed in range(40)]
    assert len({t.instruction for t in tasks}) == 1  # the same words for every answer
    if family == "rearrange":  # the answer is the other block's start: no colour is named
        assert {t.receptacle for t in tasks} == {CENTRE_PATCH}
        for t in tasks:
            assert not any(c.replace("_", " ") in t.instruction for c in COLOUR_PATCHES)
            assert t.instruction.endswith("then move the other block to the centre patch")
            assert "block 1" not in t.instruction and "block 2" not in t.instruction
        return
    for t in tasks:
        assert t.receptacle.replace("_", " ") not in t.instruction


def test_reopen_drawer_opens_one_of_three_drawers_uniformly() -> None:
    tasks = [task_of("reopen_drawer", seed) for seed in range(300)]
    counts = Counter(t.receptacle for t in tasks)
    assert set(counts) == set(DRAWERS) and min(counts.values()) > 70  # chance level 1/3
    t = tasks[0]
    assert t.object == "" and t.relation == "in"
    assert [m.kind for m in t.milestones] == ["drawer_closed", "button_pressed", "drawer_open"]
    (event,) = t.events
    assert (event.trigger, event.action, event.place) == ("start", "set_drawer", t.receptacle)
    assert event.opening == pytest.approx(WORKCELL_LAYOUT.drawer_open_distance)
    assert t.instruction == "close the open drawer, press the button, then open the drawer you closed"


def test_put_block_back_starts_on_one_of_four_patches_uniformly() -> None:
    tasks = [task_of("put_block_back", seed) for seed in range(400)]
    counts = Counter(t.receptacle for t in tasks)
    assert set(counts) == set(COLOUR_PATCHES) and min(counts.values()) > 70  # chance level 1/4
    t = tasks[0]
    assert t.object == "block" and t.relation == "on"
    assert [(m.kind, m.place) for m in t.milestones] == [("placed_at", CENTRE_PATCH), ("button_pressed", "button")]
    (event,) = t.events
    assert (event.trigger, event.action, event.object, event.place) == ("start", "put_object", "block", t.receptacle)


def test_rearrange_puts_the_two_blocks_on_a_coloured_patch_and_the_centre() -> None:
    for seed in range(50):
        t = task_of("rearrange", seed)
        starts = {e.object: e.place for e in t.events}
        assert starts["block_2"] == CENTRE_PATCH and starts["block_1"] in COLOUR_PATCHES
        free = t.milestones[0]
        assert (free.kind, free.object) == ("placed_at", "block_2")
        assert free.place in COLOUR_PATCHES and free.place != starts["block_1"]
        assert t.object == "block_1" and t.receptacle == CENTRE_PATCH
        # the pair the two blocks end on is one of two, each reached from either start: the scene
        # at decision time does not tell which block was moved
        pair = frozenset((starts["block_1"], free.place))
        assert pair in ({"red_patch", "green_patch"}, {"blue_patch", "yellow_patch"})
    starts = Counter(next(e.place for e in task_of("rearrange", s).events if e.object == "block_1") for s in range(400))
    assert set(starts) == set(COLOUR_PATCHES) and min(starts.values()) > 70


# -- scoring on (fake) ground truth -----------------------------------------------------------------------
def test_reopen_drawer_scores_the_same_drawer_after_the_button_only() -> None:
    task, world = attached("reopen_drawer", 0)
    target = task.receptacle
    other = next(d for d in DRAWERS if d != target)
    assert world.openings[target] == pytest.approx(0.30)  # the start event opened it
    world.drawer(target, 0.0)
    world.drawer(target, 0.30)  # reopened before pressing: not the task
    assert not task.success(world)
    world.drawer(target, 0.0)
    world.press()
    world.drawer(other, 0.30)  # the wrong drawer
    assert task.progress.reached == 2 and not task.success(world)
    world.drawer(target, 0.30)  # both open: no answer either
    assert not task.success(world)
    world.drawer(other, 0.0)
    assert task.success(world)


def test_reopen_drawer_button_before_closing_does_not_count() -> None:
    task, world = attached("reopen_drawer", 1)
    world.press()
    world.drawer(task.receptacle, 0.0)
    world.drawer(task.receptacle, 0.30)
    assert task.progress.reached == 1 and not task.success(world)


def test_put_block_back_fails_on_another_patch_and_succeeds_on_its_own() -> None:
    task, world = attached("put_block_back", 0)
    origin = task.receptacle
    assert world.place_of("block") == (origin, "on")
    world.move("block", CENTRE_PATCH)
    world.press()
    wrong = next(p for p in COLOUR_PATCHES if p != origin)
    world.move("block", wrong)
    assert task.progress.reached == 2 and not task.success(world)
    world.move("block", origin)
    assert task.success(world)
    world.held.add("block")
    assert not task.success(world)


def test_put_block_back_needs_the_centre_first() -> None:
    task, world = attached("put_block_back", 2)
    world.press()
    world.move("block", task.receptacle)
    assert task.progress.reached == 0 and not task.success(world)


def test_rearrange_fails_when_the_moved_block_goes_back_to_the_centre() -> None:
    task, world = attached("rearrange", 0)
    free = task.milestones[0].place
    start = world.place_of("block_1")[0]
    assert world.place_of("block_2") == (CENTRE_PATCH, "on")
    world.move("block_2", free)
    world.press()
    world.move("block_2", CENTRE_PATCH)  # the wrong look-alike block
    assert task.progress.reached == 2 and not task.success(world)
    world.move("block_2", free)
    world.move("block_1", CENTRE_PATCH)
    assert task.success(world) and start != free


# -- the scripted expert's plans --------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", range(6))
def test_expert_scripts_are_valid_plans_that_remember_the_start(family: str, seed: int) -> None:
    pytest.importorskip("pybullet")
    from mnemobot.sim.expert import expert_script

    task, world = attached(family, seed)
    steps = [SkillCall(skill, args) for skill, args in expert_script(family, world, task)]
    layout = layout_for(family)
    ctx = PlanningContext(layout.site_map(), vocabulary=set(layout.object_labels))
    assert validate_steps(steps, ctx) == []
    assert [s.skill for s in steps].count("press") == 1
    press = steps.index(SkillCall("press", {"button": "button"}))
    after = steps[press + 1:]
    if family == "reopen_drawer":
        assert after[-1] == SkillCall("open", {"container": task.receptacle})
    elif family == "put_block_back":
        assert after[-1] == SkillCall("place", {"object": "block", "receptacle": task.receptacle, "relation": "on"})
    else:
        assert after[-1] == SkillCall("place", {"object": "block_1", "receptacle": CENTRE_PATCH, "relation": "on"})


def test_scripted_planner_plays_its_steps_and_refuses_bad_ones() -> None:
    steps = [SkillCall("navigate_to", {"place": "button"}), SkillCall("press", {"button": "button"})]
    ctx = PlanningContext(WORKCELL_LAYOUT.site_map(), vocabulary=set())
    plan = ScriptedPlanner(steps).plan("press the button", ctx)
    assert plan.steps == steps and plan.goals == []
    with pytest.raises(InstructionError, match="unknown skill"):
        ScriptedPlanner([SkillCall("juggle", {})])
    with pytest.raises(InstructionError, match="press takes"):
        ScriptedPlanner([SkillCall("press", {"object": "block"})])
    with pytest.raises(InstructionError, match="empty"):
        ScriptedPlanner([])


# -- the real world (pybullet) ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cell():
    pytest.importorskip("pybullet")
    from mnemobot.sim.env import EnvConfig, HouseholdEnv

    env = HouseholdEnv(EnvConfig(task="rearrange", width=160, height=120))
    yield env
    env.close()


def test_env_builds_the_family_layout_and_applies_the_start_state(cell) -> None:
    _, info = cell.reset(seed=3)
    b = cell.backend
    assert cell.config.layout is TWO_BLOCK_WORKCELL
    assert b.place_of("block_2") == (CENTRE_PATCH, "on")
    assert b.place_of("block_1")[0] in COLOUR_PATCHES
    assert info["instruction"] == cell.task.instruction and info["receptacle"] == CENTRE_PATCH
    labels = b.instance_labels()
    assert labels[b.instance_id("block_1")] == labels[b.instance_id("block_2")] == "block"
    assert b.label_of_body(b.object_body("block_1")) == "block_1"
    assert {labels[b.instance_id(p)] for p in (CENTRE_PATCH, *COLOUR_PATCHES)} == {CENTRE_PATCH, *COLOUR_PATCHES}


def test_drawers_move_independently_and_their_insides_follow(cell) -> None:
    cell.reset(seed=0)
    b = cell.backend
    assert b.drawer_places() == DRAWERS and b.drawer_place() == DRAWERS[0]
    b.set_drawer(0.25, "right_drawer")
    assert [round(b.drawer_opening(d), 3) for d in DRAWERS] == [0.0, 0.0, 0.25]
    assert b.drawer_opening() == 0.0  # the one-drawer API reads the first drawer
    closed = cell.config.layout.surface_pose(cell.config.layout.place_spec("right_drawer")).position
    assert np.linalg.norm(b.place_surface("right_drawer").position - closed) == pytest.approx(0.25, abs=1e-6)
    assert np.allclose(b.place_surface("middle_drawer").position,
                       cell.config.layout.surface_pose(cell.config.layout.place_spec("middle_drawer")).position)
    with pytest.raises(KeyError, match="not a drawer"):
        b.drawer_opening("bench")


def test_button_springs_back_and_counts_presses(cell) -> None:
    cell.reset(seed=0)
    b = cell.backend
    pb = b.client
    button = b._furniture["button"]  # the test pushes the cap directly
    assert b.button_depth() == 0.0 and not b.button_pressed() and b.button_presses() == 0
    pb.resetJointState(button, 0, -0.012, 0.0)
    b.step()
    assert b.button_pressed() and b.button_presses() == 1
    for _ in range(120):  # 0.5 s: the spring brings the cap back up
        b.step()
    assert b.button_depth() < 0.002 and not b.button_pressed() and b.button_presses() == 1
    b.restore_initial()
    assert b.button_presses() == 0


# -- full episodes with the scripted expert (slow) -------------------------------------------------------------
EXPERT_SEEDS = {"reopen_drawer": (0, 1), "put_block_back": (0, 2), "rearrange": (0, 2)}
"""Two seeds each, chosen so that the two answers differ."""


@pytest.mark.slow
@pytest.mark.parametrize(("family", "seed"), [(f, s) for f, seeds in EXPERT_SEEDS.items() for s in seeds])
def test_scripted_expert_solves_each_family(family: str, seed: int) -> None:
    pytest.importorskip("pybullet")
    from mnemobot.agent.episode import RunConfig, run_episode

    summary = run_episode(RunConfig(task_id=family, seed=seed, agent="expert", width=160, height=120))
    assert summary.success, summary.skills
    assert summary.planner == "scripted" and all(s["success"] for s in summary.skills)
    assert any(s["skill"] == "press" for s in summary.skills)


Script = list[tuple[str, dict[str, str]]]


def _wrong_reopen(script: Script, task: Task) -> Script:
    """Close the open drawer and press, then open a different drawer (a wrong memory)."""
    wrong = next(d for d in DRAWERS if d != task.receptacle)
    return [*script[:-2], ("navigate_to", {"place": wrong}), ("open", {"container": wrong})]


def _wrong_patch(script: Script, task: Task) -> Script:
    """Move the block to the centre and press, then put it on another coloured patch."""
    wrong = next(p for p in COLOUR_PATCHES if p != task.receptacle)
    tail = [(skill, {k: (wrong if v == task.receptacle else v) for k, v in args.items()})
            for skill, args in script[-3:]]
    return [*script[:-3], *tail]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "wrong"), [("reopen_drawer", _wrong_reopen), ("put_block_back", _wrong_patch)])
def test_a_wrong_answer_is_scored_as_failure(family: str, wrong, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pybullet")
    from mnemobot.agent.episode import RunConfig, run_episode
    from mnemobot.sim import expert

    right = expert.EXPERT_SCRIPTS[family]
    monkeypatch.setitem(expert.EXPERT_SCRIPTS, family, lambda backend, task: wrong(right(backend, task), task))
    summary = run_episode(RunConfig(task_id=family, seed=0, agent="expert", width=160, height=120))
    assert all(s["success"] for s in summary.skills), summary.skills  # every skill did what it was told
    assert not summary.success


def test_the_planner_agent_names_the_expert_for_these_families() -> None:
    pytest.importorskip("pybullet")
    from mnemobot.agent.episode import RunConfig, run_episode

    with pytest.raises(UserError, match="--agent expert"):
        run_episode(RunConfig(task_id="put_block_back", seed=0, agent="planner", memory=False,
                              width=64, height=48))
