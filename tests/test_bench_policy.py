"""The policy bench's evaluation workers end with it: SIGTERM, and even SIGKILL, of the bench
leaves no episode running on unattended (real spawned processes, real signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])  # the workers import it by name, as they import a script run as __main__
import bench_policy as bench
with bench.worker_pool(2) as pool:
    futures = [pool.submit(time.sleep, 120) for _ in range(4)]
    while len(pool._processes) < 2:
        time.sleep(0.05)
    time.sleep(1.0)  # both workers took a job
    print(" ".join(str(p) for p in pool._processes), flush=True)
    for f in futures:
        f.result()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _start() -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT / "bench")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip():
        proc.kill()
        pytest.fail(f"the bench child printed no workers: {proc.communicate(timeout=30)[1][-2000:]}")
    return proc, [int(p) for p in line.split()]


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_workers_end_with_the_bench(sig: signal.Signals) -> None:
    proc, workers = _start()
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    proc.send_signal(sig)
    rc = proc.wait(timeout=30)
    left = _wait_gone(workers, 20.0)
    for p in left:  # do not leave them behind if the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived the bench ({sig.name})"
    assert rc == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
