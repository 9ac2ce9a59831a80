"""Each scripted skill in isolation, in the real pybullet household, through the real brainstem."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("pybullet")

from mnemobot.control.controllers import Controller  # noqa: E402
from mnemobot.control.executor import ExecutorConfig, SkillExecutor, StepBudgetExceeded  # noqa: E402
from mnemobot.control.skills import SKILLS, SkillContext  # noqa: E402
from mnemobot.memory.types import ObjectEstimate  # noqa: E402
from mnemobot.memory.visible import VisibleObjects  # noqa: E402
from mnemobot.sim.env import EnvConfig, HouseholdEnv  # noqa: E402
from mnemobot.sim.expert import GroundTruthLocator  # noqa: E402


@pytest.fixture(scope="module")
def env() -> Iterator[HouseholdEnv]:
    e = HouseholdEnv(EnvConfig(task="place"))
    yield e
    e.close()


def _executor(env: HouseholdEnv, locator=None, seed: int = 0) -> SkillExecutor:  # noqa: ANN001
    env.reset(seed=seed)
    loc = locator or GroundTruthLocator(env.backend, env.site_map)
    ctx = SkillContext(env.robot, Controller(env.robot.spec), env.site_map, loc, perceive=lambda: None)

    def perceive():  # noqa: ANN202
        obs = env.robot.observe()
        loc.update(obs, place=ctx.at_place)
        return obs

    ctx.perceive = perceive
    ex = SkillExecutor(ctx, ExecutorConfig(perceive_hz=0.0))
    ex.start()
    return ex


def _run(ex: SkillExecutor, name: str, **args: str):  # noqa: ANN202
    return ex.run(SKILLS[name], args)


def _an_object_on(env: HouseholdEnv, place: str) -> str | None:
    return next((o for o in sorted(env.backend.object_labels()) if env.backend.place_of(o) == (place, "on")), None)


def test_navigate_to_reaches_the_stand_pose_and_rooms(env: HouseholdEnv) -> None:
    ex = _executor(env)
    res = _run(ex, "navigate_to", place="bedroom_table")
    assert res.success, res.message
    stand = np.asarray(env.site_map.place("bedroom_table").stand)
    pose = env.robot.read().base_pose
    assert np.linalg.norm(pose[:2] - stand[:2]) < 0.03
    assert abs(pose[2] - stand[2]) < 0.03
    assert ex.ctx.at_place == "bedroom_table"
    res = _run(ex, "navigate_to", place="kitchen")
    assert res.success and env.site_map.room_of(env.robot.read().base_pose[:2]) == "kitchen"
    assert res.duration > 1.0 and res.ticks > 20


def test_navigate_to_an_unknown_place_fails_with_its_reason(env: HouseholdEnv) -> None:
    res = _run(_executor(env), "navigate_to", place="garage")
    assert not res.success and res.reason == "unknown_place" and "garage" in res.message


def test_look_at_perceives_the_objects_on_a_surface_from_the_camera(env: HouseholdEnv) -> None:
    seen = VisibleObjects()
    ex = _executor(env, locator=seen)
    place = "kitchen_table"
    expected = {o for o in env.backend.object_labels() if env.backend.place_of(o) == (place, "on")}
    assert expected, "seed 0 puts objects on the kitchen table"
    assert _run(ex, "navigate_to", place=place).success
    res = _run(ex, "look_at", target=place)
    assert res.success
    seen_here = expected & seen.known_labels()
    assert len(seen_here) >= max(1, len(expected) - 1), (expected, seen.known_labels())  # one may hide another
    for label in seen_here:  # perceived position agrees with the true one (scoring-side check)
        est, truth = seen.locate(label), env.backend.object_pose(label).position
        assert np.linalg.norm(est.position[:2] - truth[:2]) < 0.03


def test_pick_then_place_moves_the_object_and_reports_success(env: HouseholdEnv) -> None:
    ex = _executor(env)
    obj = _an_object_on(env, "kitchen_table")
    assert _run(ex, "navigate_to", place="kitchen_table").success
    res = _run(ex, "pick", object=obj)
    assert res.success, res.message
    assert env.backend.is_held(obj) and ex.ctx.held == obj
    found = _run(ex, "find", object=obj)  # in the hand is found: no search, no ticks
    assert found.success and found.data == {"place": "kitchen_table", "searched": 0, "held": True}
    assert found.ticks == 0 and ex.ctx.held == obj
    assert _run(ex, "navigate_to", place="living_room_table").success
    res = _run(ex, "place", object=obj, receptacle="living_room_table", relation="on")
    assert res.success, res.message
    for _ in range(10):
        env.robot.step(ex.ctx.controller.hold(env.robot.read()))
    assert not env.backend.is_held(obj)
    assert env.backend.place_of(obj) == ("living_room_table", "on")


def test_open_and_close_the_drawer(env: HouseholdEnv) -> None:
    ex = _executor(env)
    assert _run(ex, "navigate_to", place="drawer").success
    res = _run(ex, "open", container="drawer")
    assert res.success, res.message
    assert env.backend.drawer_opening() > 0.25
    assert abs(ex.ctx.opened["drawer"] - env.backend.drawer_opening()) < 0.03
    again = _run(ex, "open", container="drawer")  # a recovery may ask again: nothing to do
    assert again.success and again.ticks == 0, again.message
    res = _run(ex, "close", container="drawer")
    assert res.success, res.message
    assert env.backend.drawer_opening() < 0.03 and "drawer" not in ex.ctx.opened


class _WrongBelief:
    """A locator whose belief is 20 cm off: the grasp must be detected as failed."""

    def __init__(self, inner: GroundTruthLocator) -> None:
        self.inner = inner

    def update(self, obs, place=None) -> None:  # noqa: ANN001
        pass

    def locate(self, label: str) -> ObjectEstimate | None:
        est = self.inner.locate(label)
        if est is None:
            return None
        return ObjectEstimate(label, est.position + [0.0, -0.2, 0.0], est.top_z, est.extent, est.yaw, est.place, 0.0)

    def known_labels(self) -> set[str]:
        return self.inner.known_labels()


def test_pick_where_nothing_is_reports_grasp_failed(env: HouseholdEnv) -> None:
    ex = _executor(env)
    ex.ctx.locator = _WrongBelief(GroundTruthLocator(env.backend, env.site_map))
    obj = _an_object_on(env, "kitchen_table")
    assert _run(ex, "navigate_to", place="kitchen_table").success
    res = _run(ex, "pick", object=obj)
    assert not res.success and res.reason == "grasp_failed"
    assert ex.ctx.held is None and not env.backend.is_held(obj)


def test_skill_preconditions_fail_with_reasons(env: HouseholdEnv) -> None:
    ex = _executor(env, locator=VisibleObjects())
    assert _run(ex, "pick", object="duck").reason == "not_found"
    assert _run(ex, "place", object="duck", receptacle="tray", relation="on").reason == "not_holding"
    assert _run(ex, "open", container="tray").reason == "not_articulated"


def test_out_of_reach_target_fails_before_moving(env: HouseholdEnv) -> None:
    ex = _executor(env)
    obj = _an_object_on(env, "bedroom_table") or _an_object_on(env, "shelf")
    before = env.robot.read()
    res = _run(ex, "pick", object=obj)  # the robot is still at its start pose, far away
    assert not res.success and res.reason == "unreachable"
    assert np.allclose(env.robot.read().base_pose, before.base_pose, atol=1e-3)


def test_estop_turns_a_running_skill_into_a_safety_failure(env: HouseholdEnv) -> None:
    ex = _executor(env)
    ex.ctx.controller.estop.engage("test")
    res = _run(ex, "navigate_to", place="tray")
    assert not res.success and res.reason == "safety:EStopError"
    ex.ctx.controller.estop.release()
    assert _run(ex, "navigate_to", place="tray").success


class _Assumed:
    """A locator holding an estimate stamped at ``t`` (as memory stamps the spot where a released
    object is assumed to lie) and a camera that never shows the object."""

    def __init__(self, est: ObjectEstimate) -> None:
        self.est = est

    def update(self, obs, place=None) -> None:  # noqa: ANN001
        pass

    def locate(self, label: str) -> ObjectEstimate | None:
        return self.est if label == self.est.label else None

    def known_labels(self) -> set[str]:
        return {self.est.label}


def test_find_needs_a_sighting_newer_than_its_start(env: HouseholdEnv) -> None:
    ex = _executor(env)
    obj = _an_object_on(env, "kitchen_table")
    assert _run(ex, "navigate_to", place="kitchen_table").success
    truth = GroundTruthLocator(env.backend, env.site_map).locate(obj)
    ex.ctx.locator = _Assumed(ObjectEstimate(obj, truth.position, truth.top_z, truth.extent, truth.yaw,
                                             "kitchen_table", float(ex.ctx.state.t), 0.3))
    ex.config.step_budget = ex.ticks + 200  # the search goes on elsewhere: stop it there
    with pytest.raises(StepBudgetExceeded):
        _run(ex, "find", object=obj, room="")
