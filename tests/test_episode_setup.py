"""How an episode wires the organs before the first skill: the no-memory locator, the planner's
object vocabulary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("pybullet")

from mnemobot.agent.episode import RunConfig, _locator, _static_labels, run_episode  # noqa: E402
from mnemobot.agent.planner import InstructionError  # noqa: E402
from mnemobot.sim.env import EnvConfig, HouseholdEnv  # noqa: E402


@pytest.fixture(scope="module")
def env() -> Iterator[HouseholdEnv]:
    e = HouseholdEnv(EnvConfig(task="place"))
    e.reset(seed=0)
    yield e
    e.close()


def test_no_memory_locator_ignores_furniture(env: HouseholdEnv) -> None:
    obs = env.robot.observe()
    static = _static_labels(env)
    assert static & set(obs.labels.values()), "the first frame shows furniture"
    visible = _locator(RunConfig(memory=False), env)
    visible.update(obs)
    assert visible.known_labels(), "the first frame shows objects"
    assert not visible.known_labels() & static


def test_an_object_never_seen_nor_named_by_the_task_is_unknown(env: HouseholdEnv) -> None:
    other = next(lb for lb in sorted(env.backend.object_labels()) if lb != env.task.object)  # in the sim, unseen
    text = f"put the {other.replace('_', ' ')} on the tray"
    with pytest.raises(InstructionError, match=f"unknown object '{other.replace('_', ' ')}': the robot has not seen"):
        run_episode(RunConfig(task_id="place", task_text=text, seed=0, steps_limit=1), env=env)


def test_the_object_the_task_names_plans(env: HouseholdEnv) -> None:
    summary = run_episode(RunConfig(task_id="place", seed=0, steps_limit=1), env=env)
    assert summary.planner_calls == 1 and summary.stop_reason.startswith("steps_limit")
