"""Task families: seeded generation, instructions, world events, milestones and ground-truth success."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnemobot.sim.layout import DEFAULT_LAYOUT
from mnemobot.sim.tasks import TASK_FAMILIES, Milestone, Task, WorldEvent, layout_for, make_task

LAYOUT = DEFAULT_LAYOUT
HOUSE_FAMILIES = sorted(f for f in TASK_FAMILIES if layout_for(f) is DEFAULT_LAYOUT)
"""The families generated in the house (the workcell's are tested in test_memory_tasks.py)."""


def placements_for(seed: int) -> dict[str, str]:
    """Object -> starting place, as a spawn would give (no simulator needed)."""
    rng = np.random.default_rng(seed)
    spawnable = [p.name for p in LAYOUT.places if p.spawn]
    return {label: spawnable[int(rng.integers(len(spawnable)))] for label in LAYOUT.object_labels}


# -- generation (no simulator) ------------------------------------------------------------------------
@pytest.mark.parametrize("family", HOUSE_FAMILIES)
def test_generation_is_deterministic_per_seed(family: str) -> None:
    tasks = [make_task(family, seed, LAYOUT, placements_for(seed)) for seed in range(12)]
    again = [make_task(family, seed, LAYOUT, placements_for(seed)) for seed in range(12)]
    assert tasks == again
    assert len({t.instruction for t in tasks}) > 3


@pytest.mark.parametrize("family", HOUSE_FAMILIES)
@pytest.mark.parametrize("seed", range(25))
def test_instructions_name_existing_objects_and_places(family: str, seed: int) -> None:
    placements = placements_for(seed)
    task = make_task(family, seed, LAYOUT, placements)
    site = LAYOUT.site_map()
    place = site.place(task.receptacle)
    assert task.family == family and task.seed == seed
    assert task.object in LAYOUT.object_labels
    assert LAYOUT.object_spec(task.object).words in task.instruction
    if family == "recall":  # back to where it started, a place the instruction never names
        assert task.receptacle == placements[task.object] and task.relation == place.relation
        assert place.words not in task.instruction
        assert task.instruction.endswith("back where it was")
        (milestone,) = task.milestones
        assert milestone.kind == "placed_at" and milestone.room != task.receptacle
        assert site.place(milestone.room).words in task.instruction
        return
    assert place.words in task.instruction
    assert task.relation == place.relation
    assert f"{task.relation} the {place.words}" in task.instruction or f"to the {place.words}" in task.instruction
    assert task.receptacle != placements[task.object]
    start_room = site.place(placements[task.object]).room
    if family == "fetch":
        assert place.room != start_room
        assert f"from the {start_room.replace('_', ' ')}" in task.instruction
    if family == "memory":
        assert task.instruction.startswith(f"put the {task.object.replace('_', ' ')} in the drawer and close")
        assert [m.kind for m in task.milestones] == ["hidden_in_drawer", "visit_room"]
        away = task.milestones[1].room
        assert f"go to the {away.replace('_', ' ')}" in task.instruction
        assert away != site.place("drawer").room and place.room != site.place("drawer").room
        for event in task.events:
            assert event.object != task.object and event.object in LAYOUT.object_labels
            assert site.place(event.place).room != away


def test_place_family_covers_same_and_other_room_and_the_drawer() -> None:
    site = LAYOUT.site_map()
    kinds = set()
    for seed in range(200):
        placements = placements_for(seed)
        task = make_task("place", seed, LAYOUT, placements)
        same = site.place(task.receptacle).room == site.place(placements[task.object]).room
        kinds.add("same" if same else "other")
        kinds.add(task.relation)
    assert kinds == {"same", "other", "on", "in"}


def test_unknown_family_and_unknown_objects_raise() -> None:
    with pytest.raises(ValueError, match="unknown task family"):
        make_task("juggle", 0, LAYOUT, placements_for(0))
    with pytest.raises(ValueError, match="lacks"):
        make_task("place", 0, LAYOUT, {"unicorn": "shelf"})


def test_event_description_is_readable() -> None:
    event = WorldEvent("robot_in_room", "move_object", room="living_room", object="red_cube", place="shelf")
    assert event.describe() == "when the robot enters the living room, the red cube moves to the shelf"


# -- scoring on the simulator -------------------------------------------------------------------------
pytest.importorskip("pybullet")


@pytest.fixture(scope="module")
def env():
    import gymnasium as gym

    import mnemobot.sim  # noqa: F401  (registers the environments)

    e = gym.make("mnemobot/HouseholdMemory-v0").unwrapped
    yield e
    e.close()


def idle(env, seconds: float) -> None:
    for _ in range(int(round(seconds / env.robot.spec.control_dt))):
        env.robot.hold()


def test_env_reset_regenerates_the_same_task_from_the_seed(env) -> None:
    _, info_a = env.reset(seed=11)
    task_a = env.task
    env.reset(seed=12)
    _, info_b = env.reset(seed=11)
    assert env.task == task_a
    assert info_a["instruction"] == info_b["instruction"] == task_a.instruction
    assert info_b["success"] is False


def test_place_success_needs_the_object_resting_on_the_receptacle_and_not_held(env) -> None:
    env.reset(seed=0)
    world = env.backend
    placements = {label: world.place_of(label)[0] for label in world.object_labels()}
    task = make_task("place", 0, env.config.layout, placements)
    assert not task.success(world)
    world.set_drawer(0.3)
    world.put_object(task.object, task.receptacle, xy_offset=(0.0, 0.0) if task.receptacle == "drawer" else
                     world.free_spot(task.receptacle, np.random.default_rng(0)))
    world.settle(0.5)
    assert world.place_of(task.object) == (task.receptacle, task.relation)
    assert task.success(world)


def test_memory_task_requires_hiding_then_visiting_then_bringing(env) -> None:
    env.reset(seed=3)
    world, robot, task = env.backend, env.robot, env.task
    assert task.family == "memory"
    receptacle_spot = world.free_spot(task.receptacle, np.random.default_rng(1))
    # bringing it straight away does not count
    world.put_object(task.object, task.receptacle, xy_offset=receptacle_spot)
    idle(env, 0.3)
    assert task.placed(world) and not task.success(world)
    # hide it in the drawer and close the drawer
    world.set_drawer(0.3)
    world.put_object(task.object, "drawer")
    world.settle(0.3)
    world.set_drawer(0.0)
    idle(env, 0.2)
    assert task.progress.reached == 1
    # the distractor event fires once the robot is in the away room
    away = task.milestones[1].room
    event = task.events[0]
    before = world.place_of(event.object)
    centre = env.site_map.room(away).center
    robot.reset((centre[0], centre[1], math.pi / 2))
    idle(env, 0.2)
    assert task.progress.reached == 2 and task.progress.fired == [0]
    assert world.place_of(event.object) == (event.place, "on") != before
    # bring it to the receptacle
    world.set_drawer(0.3)
    world.put_object(task.object, task.receptacle, xy_offset=world.free_spot(task.receptacle, np.random.default_rng(2)))
    idle(env, 0.3)
    assert task.success(world)


def test_time_triggered_event_fires_once(env) -> None:
    env.reset(seed=0)
    world = env.backend
    label = world.object_labels()[0]
    target = next(p for p in env.site_map.places if p != world.place_of(label)[0] and p != "drawer")
    task = Task("place", 0, "wait", label, target, "on",
                events=(WorldEvent("time", "move_object", at_s=0.3, object=label, place=target, seed=4),
                        WorldEvent("time", "set_drawer", at_s=0.5, opening=0.2)),
                milestones=(Milestone("visit_room", room="living_room"),))
    task.attach(world)
    idle(env, 0.2)
    assert task.progress.fired == [] and task.progress.reached == 1
    idle(env, 0.5)
    task.detach(world)
    assert task.progress.fired == [0, 1]
    assert world.drawer_opening() == pytest.approx(0.2, abs=1e-3)
    assert task.success(world)
