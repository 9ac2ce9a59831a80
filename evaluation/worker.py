"""One evaluation episode in its own process.

Usage::

    python -m mnemobot.evaluation.worker SPEC.json RESULT.json

``SPEC.json`` holds the keyword arguments of :class:`~mnemobot.agent.episode.RunConfig`;
the episode's measurements are written to ``RESULT.json`` (temp file + rename, so a reader never
sees half a file). Exit 0 when the episode ran (whether or not the task succeeded), 1 when it
raised (the message is in ``RESULT.json`` under ``error``). The process exits on its own when its
parent disappears, so a killed evaluation leaves no episodes running.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["main", "run_spec"]


def run_spec(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run the episode of ``kwargs`` (RunConfig fields) and return its row measurements; or, for
    ``{"call": "mnemobot.MODULE:FUNCTION", "args": {...}}``, that function's JSON result (a suite
    episode, say)."""
    if "call" in kwargs:
        module, _, name = str(kwargs["call"]).partition(":")
        if not module.startswith("mnemobot.") or not name:
            raise ValueError(f"a job calls a function of mnemobot's own, not {kwargs['call']!r}")
        return getattr(importlib.import_module(module), name)(**kwargs.get("args", {}))
    from mnemobot.agent.episode import RunConfig, run_episode

    summary = run_episode(RunConfig(**kwargs))
    cost = summary.cost or {}
    return {
        "success": bool(summary.success),
        "steps": int(summary.steps),
        "planner_calls": int(summary.planner_calls),
        "prompt_tokens": int(cost.get("prompt_tokens", 0) or 0),  # type: ignore[call-overload]
        "completion_tokens": int(cost.get("completion_tokens", 0) or 0),  # type: ignore[call-overload]
        "sim_s": round(float(summary.sim_s), 3),
        "wall_s": round(float(summary.wall_s), 3),
        "stop_reason": summary.stop_reason,
        "anomalies": len(summary.anomalies),
        "task": summary.task,
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _exit_with_parent(interval_s: float = 0.5) -> None:
    """Leave at once when the process that started us is gone (its pid is re-parented): with
    whatever the episode started (a model server), when this process leads its own group."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                if os.getpgrp() == os.getpid():
                    os.killpg(os.getpid(), signal.SIGKILL)
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m mnemobot.evaluation.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    _exit_with_parent()
    spec_path, result_path = Path(args[0]), Path(args[1])
    kwargs = json.loads(spec_path.read_text())
    what = kwargs.get("call") or f"episode {kwargs.get('task_id')} seed {kwargs.get('seed')}"
    print(f"{what} (pid {os.getpid()})", flush=True)
    try:
        result = run_spec(kwargs)
    except Exception as e:  # noqa: BLE001 - every failure becomes the episode's row
        traceback.print_exc()
        _write(result_path, {"error": f"{type(e).__name__}: {e}"})
        return 1
    _write(result_path, result)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
