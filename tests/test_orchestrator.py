"""The orchestrator in full simulated episodes: plan trees against the per-step baseline, local
handling of injected anomalies, escalation, the e-stop, and cost accounting in the summary."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

pytest.importorskip("pybullet")

from mnemobot.agent.episode import RunConfig, run_episode  # noqa: E402
from mnemobot.sim.env import EnvConfig, HouseholdEnv  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def place_env() -> Iterator[HouseholdEnv]:
    env = HouseholdEnv(EnvConfig(task="place"))
    yield env
    env.close()


def test_tree_plans_once_per_step_plans_every_skill(place_env):
    tree = run_episode(RunConfig(task_id="place", seed=1, agent="expert"), env=place_env)
    step = run_episode(RunConfig(task_id="place", seed=1, agent="expert", mode="per-step"), env=place_env)
    assert tree.success and step.success
    assert tree.planner_calls == 1 and tree.cost["by_kind"] == {"plan": 1}
    # per-step asks before every skill after the first: one call per skill
    assert step.planner_calls == step.skills_executed >= 5
    assert step.cost["by_kind"]["step"] == step.skills_executed - 1
    assert [s["skill"] for s in tree.skills] == [s["skill"] for s in step.skills]


def test_failed_grasp_is_handled_locally(place_env):
    s = run_episode(RunConfig(task_id="place", seed=0, inject="grasp"), env=place_env)
    assert s.injected and s.injected[0]["kind"] == "grasp"
    assert s.success, s.render()
    grasp = [a for a in s.anomalies if a["kind"] == "grasp_failed"]
    assert grasp and grasp[0]["outcome"] == "recovered" and grasp[0]["handling"].startswith("re-perceive")
    assert s.planner_calls == 1  # no re-plan: the monitor handled it
    failed = [k for k in s.skills if not k["success"]]
    assert [k["reason"] for k in failed] == ["grasp_failed"]


def test_object_slipping_from_the_grasp_is_picked_again_once(place_env):
    hooks: list[int] = []
    slipped: list[float] = []

    def arm_the_slip(obs, ctx):  # noqa: ARG001 - once, after the episode's reset
        if hooks:
            return
        backend, obj = place_env.backend, place_env.task.object
        start = backend.object_pose(obj)

        def slip(t: float) -> None:  # the first time the object is lifted, it falls back where it was
            lifted = backend.object_pose(obj).position[2] > start.position[2] + 0.10
            if not slipped and lifted and place_env.robot.grasp is not None:
                place_env.robot.release()  # the grasp lets go ...
                backend.teleport_object(obj, start)  # ... and the object lands where it was
                backend.client.performCollisionDetection()  # no stale finger contacts to re-grasp from
                slipped.append(t)

        hooks.append(backend.add_step_hook(slip))

    try:
        s = run_episode(RunConfig(task_id="place", seed=0), env=place_env, frame_hook=arm_the_slip)
    finally:
        for h in hooks:
            place_env.backend.remove_step_hook(h)
    assert slipped and s.success, s.render()
    (an,) = s.anomalies
    assert (an["kind"], an["outcome"]) == ("dropped", "recovered") and an["handling"].startswith("find it again")
    failed = [(k["skill"], k["reason"]) for k in s.skills if not k["success"]]
    assert failed == [("pick", "dropped")]  # picked up again by the recovery, never a second time
    assert [k["skill"] for k in s.skills].count("pick") == 2
    assert s.planner_calls == 1


def test_object_moved_behind_the_robots_back_is_found_and_logged(tmp_path):
    env = HouseholdEnv(EnvConfig(task="recall"))
    try:
        s = run_episode(RunConfig(task_id="recall", seed=0, inject="move"), env=env)
    finally:
        env.close()
    (moved,) = s.injected
    assert moved["kind"] == "move" and moved["recoverable"] is True
    assert s.success, s.render()
    # memory held the place the robot had put it (the release reached memory when the place skill
    # ended, not at the next frame); the search found it where the injector had moved it
    (an,) = [a for a in s.anomalies if a["kind"] == "not_where_remembered"]
    assert an["outcome"] == "logged"
    assert an["message"] == (f"memory had the {moved['object']} at the {moved['detail']['from']}; "
                             f"found at the {moved['detail']['to']}")
    assert s.planner_calls == 1


def test_unrecoverable_removal_escalates_and_stops(tmp_path):
    env = HouseholdEnv(EnvConfig(task="recall"))
    try:
        s = run_episode(RunConfig(task_id="recall", seed=1, inject="remove", max_replans=1), env=env)
    finally:
        env.close()
    assert s.injected and s.injected[0]["recoverable"] is False
    assert not s.success
    kinds = [a["kind"] for a in s.anomalies]
    assert "not_found" in kinds
    assert any(a["outcome"] == "escalated" for a in s.anomalies)
    assert s.cost["by_kind"].get("replan", 0) <= 1 and s.stop_reason


def test_estop_aborts_without_retrying(place_env, tmp_path):
    def press(obs, ctx):  # the operator presses the e-stop 3 s into the episode
        if obs.timestamp > 3.0 and not ctx.controller.estop.engaged:
            ctx.controller.estop.engage("operator")

    out = tmp_path / "summary.json"
    s = run_episode(RunConfig(task_id="place", seed=0), env=place_env, frame_hook=press)
    out.write_text(json.dumps(s.to_dict()))
    assert not s.success
    assert [a["kind"] for a in s.anomalies] == ["estop"] and s.anomalies[0]["outcome"] == "aborted"
    assert s.planner_calls == 1 and "safety:EStopError" in s.stop_reason
    saved = json.loads(out.read_text())  # cost and anomalies are saved with the episode
    assert saved["cost"]["planner_calls"] == 1 and saved["anomalies"][0]["kind"] == "estop"
