"""How an episode wires the organs before the first skill: the no-memory locator, the planner's
object vocabulary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("pybullet")

from mnemobot.agent.episode import RunConfig, _locator, _static_labels  # noqa: E402
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
