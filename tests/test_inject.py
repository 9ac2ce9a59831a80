"""Anomaly injection in the real pybullet household: when each kind fires and what it does."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("pybullet")

from mnemobot.control.controllers import Controller  # noqa: E402
from mnemobot.control.executor import ExecutorConfig, SkillExecutor  # noqa: E402
from mnemobot.control.skills import SKILLS, SkillContext  # noqa: E402
from mnemobot.memory.types import ObjectEstimate  # noqa: E402
from mnemobot.sim.env import EnvConfig, HouseholdEnv  # noqa: E402
from mnemobot.sim.expert import GroundTruthLocator  # noqa: E402
from mnemobot.sim.inject import INJECTIONS, AnomalyInjector, InjectionConfig  # noqa: E402

FIELDS = {"t", "kind", "object", "skill", "detail", "recoverable"}


@pytest.fixture(scope="module")
def env() -> Iterator[HouseholdEnv]:
    e = HouseholdEnv(EnvConfig(task="fetch"))
    yield e
    e.close()


def _injector(env: HouseholdEnv, kind: str, seed: int = 0, avoid: tuple[str, ...] = ()) -> AnomalyInjector:
    env.reset(seed=seed)
    return AnomalyInjector(env.backend, env.robot, InjectionConfig(kind=kind, seed=seed), avoid=avoid)


def _poses(env: HouseholdEnv) -> dict[str, np.ndarray]:
    b = env.backend
    return {o: np.concatenate([b.object_pose(o).position, b.object_pose(o).quaternion]) for o in b.object_labels()}


def _fetch_plan(obj: str, receptacle: str) -> list[tuple[str, dict[str, str]]]:
    return [
        ("find", {"object": obj, "room": ""}),
        ("pick", {"object": obj}),
        ("navigate_to", {"place": receptacle}),
        ("look_at", {"target": receptacle}),
        ("place", {"object": obj, "receptacle": receptacle, "relation": "on"}),
    ]


def _visible(env: HouseholdEnv) -> set[str]:
    _, _, _, labels = env.backend.render(env.robot.camera_pose())
    return set(labels.values())


def _pixels(env: HouseholdEnv, obj: str) -> int:
    _, _, instances, _ = env.backend.render(env.robot.camera_pose())
    return int(np.count_nonzero(instances == env.backend.instance_id(obj)))


def _check_record(rec: dict, kind: str, obj: str, skill: str, t: float) -> None:
    assert set(rec) == FIELDS
    assert rec["kind"] == kind and rec["object"] == obj and rec["skill"] == skill and rec["t"] == t
    assert isinstance(rec["recoverable"], bool) and isinstance(rec["detail"], dict)


def test_config_names_the_known_kinds() -> None:
    assert INJECTIONS == ("move", "remove", "grasp", "none")
    assert InjectionConfig().kind == "none"
    with pytest.raises(ValueError, match="move"):
        InjectionConfig(kind="teleport")


def test_none_never_injects(env: HouseholdEnv) -> None:
    inj = _injector(env, "none")
    obj, rec = env.task.object, env.task.receptacle
    before = _poses(env)
    for i, (skill, args) in enumerate(_fetch_plan(obj, rec) * 2):
        assert inj.before_skill(skill, args, float(i)) is None
    assert inj.injected == [] and not inj.done
    after = _poses(env)
    assert all(np.allclose(before[o], after[o]) for o in before)


def test_move_fires_at_the_second_find_and_hides_the_object_on_another_surface(env: HouseholdEnv) -> None:
    inj = _injector(env, "move", avoid=(env.task.receptacle,))
    b = env.backend
    obj, receptacle = env.task.object, env.task.receptacle
    start = b.place_of(obj)[0]
    before = _poses(env)
    for i, (skill, args) in enumerate(_fetch_plan(obj, receptacle)):  # one find per object: nothing
        assert inj.before_skill(skill, args, float(i)) is None
    assert _poses(env)[obj].tolist() == before[obj].tolist()
    rec = inj.before_skill("find", {"object": obj, "room": ""}, 9.5)
    assert rec is not None
    _check_record(rec, "move", obj, "find", 9.5)
    where = b.place_of(obj)
    assert where is not None and where[1] == "on"
    assert where[0] not in (start, "drawer", receptacle)
    assert rec["recoverable"] is True and rec["detail"]["from"] == start and rec["detail"]["to"] == where[0]
    assert obj not in _visible(env)
    assert b.layout.room_of_place(where[0]) != b.robot_room()
    moved_to = _poses(env)[obj]
    after = _poses(env)
    assert all(np.allclose(before[o][:3], after[o][:3], atol=5e-3) for o in before if o != obj)  # left alone
    # once per episode
    assert inj.before_skill("find", {"object": obj, "room": ""}, 10.0) is None
    assert np.allclose(_poses(env)[obj], moved_to) and inj.injected == [rec]


def test_move_takes_a_hidden_object_out_of_the_drawer(env: HouseholdEnv) -> None:
    inj = _injector(env, "move", seed=3)
    b = env.backend
    obj = env.task.object
    assert inj.before_skill("find", {"object": obj, "room": ""}, 0.0) is None
    b.put_object(obj, "drawer")  # the memory family hides it in the drawer before looking again
    b.settle(0.2)
    assert b.place_of(obj) == ("drawer", "in")
    rec = inj.before_skill("find", {"object": obj, "room": ""}, 30.0)
    assert rec is not None and rec["detail"]["from"] == "drawer"
    where = b.place_of(obj)
    assert where is not None and where[1] == "on" and where[0] != "drawer"


def test_move_and_remove_leave_a_held_object_alone(env: HouseholdEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in ("move", "remove", "grasp"):
        inj = _injector(env, kind)
        obj = env.task.object
        before = _poses(env)[obj]
        monkeypatch.setattr(env.backend, "is_held", lambda label, o=obj: label == o)
        for skill in ("find", "pick", "find", "pick"):
            assert inj.before_skill(skill, {"object": obj}, 1.0) is None
        monkeypatch.undo()
        assert np.allclose(_poses(env)[obj], before) and not inj.injected
        skill = "pick" if kind == "grasp" else "find"
        assert inj.before_skill(skill, {"object": obj}, 2.0) is not None


def test_remove_makes_the_object_unreachable(env: HouseholdEnv) -> None:
    inj = _injector(env, "remove")
    b = env.backend
    obj = env.task.object
    start = b.place_of(obj)[0]
    assert inj.before_skill("find", {"object": obj, "room": ""}, 0.0) is None
    assert inj.before_skill("pick", {"object": obj}, 5.0) is None
    rec = inj.before_skill("find", {"object": obj, "room": ""}, 8.0)
    assert rec is not None
    _check_record(rec, "remove", obj, "find", 8.0)
    assert rec["recoverable"] is False and rec["detail"]["from"] == start
    b.settle(1.0)
    assert b.place_of(obj) is None
    pos = b.object_pose(obj).position
    assert pos[2] < -1.0 and env.site_map.room_of(pos[:2]) is None
    assert obj not in _visible(env)
    assert inj.before_skill("find", {"object": obj, "room": ""}, 9.0) is None


class _Snapshot:
    """A locator frozen at one moment: the robot's belief before the object slid away."""

    def __init__(self, inner: GroundTruthLocator, labels: list[str]) -> None:
        self.frozen: dict[str, ObjectEstimate | None] = {lb: inner.locate(lb) for lb in labels}

    def update(self, obs, place=None) -> None:  # noqa: ANN001
        pass

    def locate(self, label: str) -> ObjectEstimate | None:
        return self.frozen.get(label)

    def known_labels(self) -> set[str]:
        return set(self.frozen)


@pytest.mark.parametrize("obj", ["green_cube", "jenga"])
def test_grasp_shift_makes_the_planned_pick_close_on_air_and_a_fresh_retry_succeeds(
    env: HouseholdEnv, obj: str
) -> None:
    inj = _injector(env, "grasp")
    b = env.backend
    place = b.place_of(obj)[0]
    env.robot.reset(base_pose=env.site_map.place(place).stand)  # where find leaves the robot
    truth = GroundTruthLocator(b, env.site_map)
    ctx = SkillContext(env.robot, Controller(env.robot.spec), env.site_map, _Snapshot(truth, [obj]),
                       perceive=lambda: None, at_place=place)
    ex = SkillExecutor(ctx, ExecutorConfig(perceive_hz=0.0))
    ex.start()
    assert ex.run(SKILLS["navigate_to"], {"place": place}).success  # arm stowed, as after find
    assert ex.run(SKILLS["look_at"], {"target": place}).success
    lo, hi = b.object_aabb(obj)
    centre, yaw = (lo + hi) / 2, b.object_pose(obj).yaw
    shown = _pixels(env, obj)

    assert inj.before_skill("find", {"object": obj, "room": ""}, 0.0) is None
    rec = inj.before_skill("pick", {"object": obj}, ctx.state.t)
    assert rec is not None
    _check_record(rec, "grasp", obj, "pick", ctx.state.t)
    assert rec["recoverable"] is True and rec["detail"]["place"] == place
    lo, hi = b.object_aabb(obj)
    shift = float(np.linalg.norm((lo + hi)[:2] / 2 - centre[:2]))
    assert 0.06 <= shift <= 0.15 and abs(rec["detail"]["shift_m"] - shift) < 0.01
    assert shown < 20 or _pixels(env, obj) >= min(shown, 40)  # still in view: a second look finds it
    assert b.place_of(obj) == (place, "on")
    up = b.object_pose(obj).rotation[:, 2]
    assert up[2] > math.cos(math.radians(10))
    assert abs(math.remainder(b.object_pose(obj).yaw - yaw, 2 * math.pi)) < 0.1

    res = ex.run(SKILLS["pick"], {"object": obj})
    assert not res.success and res.reason == "grasp_failed", res.message
    assert not b.is_held(obj) and b.place_of(obj) == (place, "on")

    ctx.locator = truth  # looking again: the belief is fresh
    res = ex.run(SKILLS["pick"], {"object": obj})
    assert res.success, res.message
    assert b.is_held(obj)
    assert inj.before_skill("pick", {"object": obj}, ctx.state.t) is None and len(inj.injected) == 1
