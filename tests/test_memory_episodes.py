"""Memory in full simulated episodes: memory-dependent tasks succeed with memory and fail
without it; memory carried across episodes (a real SQLite file) cuts the steps spent searching."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pybullet")

from mnemobot.agent.episode import RunConfig, run_episode  # noqa: E402
from mnemobot.sim.env import EnvConfig, HouseholdEnv  # noqa: E402

pytestmark = pytest.mark.slow
RECALL_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def recall_env() -> Iterator[HouseholdEnv]:
    env = HouseholdEnv(EnvConfig(task="recall"))
    yield env
    env.close()


@pytest.mark.parametrize("seed", RECALL_SEEDS)
def test_recall_succeeds_with_memory(recall_env: HouseholdEnv, seed: int) -> None:
    summary = run_episode(RunConfig(task_id="recall", seed=seed), env=recall_env)
    assert summary.success, summary.render()
    assert summary.memory == "on" and summary.planner_calls == 1
    assert summary.memory_questions >= 2


@pytest.mark.parametrize("seed", RECALL_SEEDS)
def test_recall_fails_without_memory(recall_env: HouseholdEnv, seed: int) -> None:
    summary = run_episode(RunConfig(task_id="recall", seed=seed, memory=False), env=recall_env)
    assert not summary.success
    assert summary.memory == "off"


def test_memory_carried_across_episodes_cuts_search(tmp_path: Path) -> None:
    """Episode 1 fetches one object; episode 2 (a new process would do the same: the memory is
    re-opened from the file) asks for an object episode 1 only saw on the way."""
    db = tmp_path / "house.db"
    env = HouseholdEnv(EnvConfig(task="fetch"))
    try:
        first = run_episode(RunConfig(task_id="fetch", seed=0, memory_db=str(db)), env=env)
        assert first.success, first.render()
        task = "bring the duck to the kitchen table"
        carried = run_episode(RunConfig(task_id="fetch", task_text=task, seed=0, memory_db=str(db)), env=env)
        # with an empty memory the duck is known only when the task names it
        fresh = run_episode(RunConfig(task_id="fetch", task_text=task, task_objects=("duck",), seed=0), env=env)
    finally:
        env.close()
    assert carried.success and fresh.success, (carried.render(), fresh.render())
    assert carried.memory_stats["objects"] >= first.memory_stats["objects"]
    assert carried.search_ticks < 0.5 * fresh.search_ticks, (carried.search_ticks, fresh.search_ticks)
    assert carried.steps < fresh.steps


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mnemobot", *args], capture_output=True, text=True, timeout=300)


def test_cli_memory_db_round_trip_and_bad_files(tmp_path: Path) -> None:
    db = tmp_path / "house.db"
    out = _cli("run", "--task-id", "place", "--seed", "0", "-q", "--memory-db", str(db))
    assert out.returncode == 0, out.stderr
    assert "memory      : on" in out.stdout
    summary = _cli("memory", str(db))
    assert summary.returncode == 0 and "1 episode(s)" in summary.stdout, summary.stderr
    objects = json.loads(_cli("memory", str(db), "objects", "--json").stdout)
    assert objects and all(o["state"] in ("present", "missing", "held") for o in objects)
    label = objects[0]["label"]
    where = _cli("memory", str(db), "where", label)
    assert where.returncode == 0 and label.replace("_", " ") in where.stdout
    # bad files: clear error, exit 2, file untouched, no traceback
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 512)
    digest = hashlib.sha256(junk.read_bytes()).hexdigest()
    for argv in (("memory", str(junk)), ("run", "--task-id", "place", "--memory-db", str(junk), "-q"),
                 ("memory", str(tmp_path / "missing.db")), ("memory", str(db), "where")):
        res = _cli(*argv)
        assert res.returncode == 2, (argv, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr and res.stderr.startswith("mnemobot: error:")
    assert hashlib.sha256(junk.read_bytes()).hexdigest() == digest
    bad_policy = _cli("run", "--task-id", "place", "--memory-policy", "random", "-q")
    assert bad_policy.returncode == 2 and "policy" in bad_policy.stderr


def _untimed(value: object) -> object:
    """A summary without what the wall clock measures (wall time, planner latency)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if "wall" not in k and "latency" not in k}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def test_episode_is_reproducible_across_processes(tmp_path: Path) -> None:
    """The same seed gives the same episode and the same memory in another process: string
    hashing is salted per process, so nothing that decides (association ties, which of two
    objects answers) may follow a hash order."""
    results = []
    for salt in ("1", "2"):
        db, js = tmp_path / f"m{salt}.db", tmp_path / f"s{salt}.json"
        env = {**os.environ, "PYTHONHASHSEED": salt}
        out = subprocess.run([sys.executable, "-m", "mnemobot", "run", "--task-id", "place", "--seed", "0", "-q",
                              "--memory-db", str(db), "--summary-json", str(js)],
                             capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr
        summary = _untimed(json.loads(js.read_text()))
        objects = subprocess.run([sys.executable, "-m", "mnemobot", "memory", str(db), "objects", "--json"],
                                 capture_output=True, text=True, timeout=120, env=env)
        assert objects.returncode == 0, objects.stderr
        results.append((summary, json.loads(objects.stdout)))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1] and results[0][1]
