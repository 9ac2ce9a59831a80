"""The ``mnemobot`` command as a user runs it: exit codes, messages, summary file, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pybullet")


def mnemobot(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mnemobot", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_help_lists_the_verbs() -> None:
    out = mnemobot("--help")
    assert out.returncode == 0
    assert "run" in out.stdout and "tasks" in out.stdout


def test_tasks_lists_families_places_and_objects() -> None:
    out = mnemobot("tasks")
    assert out.returncode == 0
    for word in ("place", "fetch", "memory", "drawer", "kitchen table", "red cube"):
        assert word in out.stdout


def test_successful_run_exits_zero_and_writes_the_summary(tmp_path: Path) -> None:
    summary = tmp_path / "out" / "summary.json"
    out = mnemobot("run", "--task-id", "place", "--seed", "2", "--agent", "expert", "--summary-json", str(summary))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and "-> " in out.stdout  # progress lines, then the summary
    data = json.loads(summary.read_text())
    for key in ("success", "steps", "planner_calls", "sim_s", "wall_s", "task", "seed", "skills"):
        assert key in data
    assert data["success"] is True and data["seed"] == 2 and data["planner_calls"] == 1
    assert data["steps"] > 0 and data["sim_s"] > 0 and data["wall_s"] > 0


def test_failed_task_exits_one() -> None:
    out = mnemobot("run", "--task-id", "fetch", "--seed", "0", "--agent", "expert", "--steps-limit", "40", "-q")
    assert out.returncode == 1
    assert "FAILURE" in out.stdout and "steps_limit" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--task-id", "juggle"], "unknown task id 'juggle'"),
        (["run", "--seed", "abc"], "the seed must be a whole number"),
        (["run", "--seed", "-3"], "the seed must be >= 0"),
        (["run", "--steps-limit", "0"], "expected a number > 0"),
        (["run", "--task", "put the banana on the tray"], "unknown object 'banana'"),
        (["run", "--task", "put the duck on the moon"], "unknown place 'moon'"),
        (["run", "--task", ""], "the instruction is empty"),
        (["launch-rockets"], "invalid choice"),
        (["run", "--planner-option", "candidates"], "expected KEY=VALUE"),
        (["run", "--planner-option", "candidates=2"], "planner options (candidates) are for the hf, vlm and openai"),
        (["run", "--planner", "openai", "--base-url", "http://127.0.0.1:9/v1", "--planner-option", "warp=9"],
         "unknown planner option(s): warp"),
        (["run", "--planner", "openai", "--base-url", "http://127.0.0.1:9/v1", "--planner-option", "candidates=0"],
         "candidates must be >= 1"),
    ],
)
def test_bad_input_exits_two_with_a_clear_message_and_no_traceback(args: list[str], message: str) -> None:
    out = mnemobot(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_unreachable_model_endpoint_warns_once_and_the_symbolic_plan_runs(silent_url: str) -> None:
    # a server that accepts and never answers: every wait is bounded by the planner's timeout
    out = mnemobot("run", "--task-id", "place", "--seed", "0", "--planner", "openai", "--base-url", silent_url,
                   "--planner-option", "candidates=1", "--planner-option", "retries=0",
                   "--planner-option", "timeout_s=1.5", "--steps-limit", "40", timeout=120)
    assert out.returncode == 1, out.stderr  # the steps limit stops it after the plan
    text = out.stdout + out.stderr
    assert text.count("falls back to the symbolic planner") == 1  # printed once, not also logged
    assert "   warning: planner openai:local falls back" in out.stdout and "no answer within 1.5 s" in out.stdout
    assert "plan (5 steps): find(" in out.stdout
    assert "Traceback" not in text
