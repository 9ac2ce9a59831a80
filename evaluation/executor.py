"""Executors: where the episodes of an evaluation run.

Every episode runs in a process of its own (``python -m mnemobot.evaluation.worker``) under a
wall-clock limit: :func:`run_isolated` starts it, kills its whole process group past the limit
(row ``stop_reason="timeout"``) and starts it again when it dies without a result (a crash, a
SIGKILL) up to ``retries`` times, after which the row says ``"worker died"``.

* :class:`LocalExecutor`: ``workers`` such processes at a time on this machine.
* :class:`RayExecutor`: one Ray task per episode (``max_retries`` for lost Ray workers and
  nodes), each running :func:`run_isolated` where Ray placed it; a local Ray instance, or an
  existing cluster's ``address``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnemobot.agent.errors import UserError

__all__ = ["EXECUTORS", "Job", "LocalExecutor", "RayExecutor", "kill_running", "make_executor", "run_isolated"]

EXECUTORS = ("local", "ray")
TIMEOUT = "timeout"
DIED = "worker died"
ERROR = "error"
LOG_TAIL = 8000
"""Characters of an episode's output a Ray task sends back (its log lives on the remote node)."""

_live: dict[int, subprocess.Popen] = {}
_live_lock = threading.Lock()


@dataclass(frozen=True)
class Job:
    """One episode to run: its key and the keyword arguments of ``RunConfig``."""

    key: str
    kwargs: dict[str, Any]


def kill_running() -> None:
    """Kill the process group of every episode still running (Ctrl-C, an error in the parent)."""
    with _live_lock:
        procs = list(_live.values())
    for proc in procs:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _worker_env() -> dict[str, str]:
    """The episode process's environment: this one's, with one math-library thread per episode
    (``workers`` episodes share the machine's cores) unless the caller chose otherwise."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _one_attempt(job: Job, workdir: Path, log: Path, timeout_s: float) -> tuple[str, dict[str, Any], float]:
    """Run one process; returns (outcome, result, seconds): outcome ``ok``, ``error``, ``timeout`` or ``died``."""
    spec = workdir / f"{job.key}.spec.json"
    result = workdir / f"{job.key}.result.json"
    spec.write_text(json.dumps(job.kwargs))
    result.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {job.key}\n".encode())
        out.flush()
        proc = subprocess.Popen([sys.executable, "-m", "mnemobot.evaluation.worker", str(spec), str(result)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=_worker_env(), start_new_session=True)
        with _live_lock:
            _live[proc.pid] = proc
        try:
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
                spec.unlink(missing_ok=True)
                result.unlink(missing_ok=True)
                return "timeout", {}, time.perf_counter() - t0
            finally:
                _kill_group(proc)  # anything the episode started and left behind
        finally:
            with _live_lock:
                _live.pop(proc.pid, None)
    seconds = time.perf_counter() - t0
    try:
        data = json.loads(result.read_text())
    except (OSError, ValueError):
        data = None
    finally:
        result.unlink(missing_ok=True)
        spec.unlink(missing_ok=True)
    if data is None:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        return "died", {"error": f"the episode's process ended ({how}) without a result"}, seconds
    if "error" in data:
        return "error", data, seconds
    return "ok", data, seconds


def run_isolated(job: Job, workdir: str | Path, timeout_s: float, retries: int = 1,
                 log: str | Path | None = None, stop: threading.Event | None = None) -> dict[str, Any]:
    """Run ``job`` in its own process (retried when it dies); its row's measurements.

    Returns the fields of the results row that the episode decides: the measurements, or for an
    episode that did not finish ``success=False`` with ``stop_reason`` ``timeout``, ``worker
    died`` or ``error`` (and ``error`` saying why), plus ``attempts``, ``process_s`` and ``host``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log) if log is not None else workdir / f"{job.key}.log"
    attempts, total = 0, 0.0
    while True:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        attempts += 1
        outcome, data, seconds = _one_attempt(job, workdir, log_path, timeout_s)
        total += seconds
        if outcome == "died" and attempts <= retries and not (stop is not None and stop.is_set()):
            continue
        break
    row: dict[str, Any] = {"attempts": attempts, "process_s": round(total, 3), "host": socket.gethostname()}
    if outcome == "ok":
        row.update(data)
    elif outcome == "timeout":
        row.update(success=False, stop_reason=TIMEOUT, wall_s=round(seconds, 3),
                   error=f"killed after the episode time limit of {timeout_s:g} s")
    elif outcome == "died":
        row.update(success=False, stop_reason=DIED, wall_s=round(seconds, 3), error=data["error"])
    else:
        row.update(success=False, stop_reason=ERROR, wall_s=round(seconds, 3), error=str(data["error"])[:2000])
    return row


OnResult = Callable[[Job, dict[str, Any]], None]
OnTick = Callable[[int], None]
"""Called about once a second and after each result with the number of episodes running."""


class LocalExecutor:
    """``workers`` episode processes at a time on this machine."""

    name = "local"

    def __init__(self, workers: int = 1, timeout_s: float = 900.0, retries: int = 1,
                 workdir: str | Path = ".", logdir: str | Path | None = None) -> None:
        self.workers, self.timeout_s, self.retries = workers, timeout_s, retries
        self.workdir = Path(workdir)
        self.logdir = Path(logdir) if logdir is not None else self.workdir
        self._running = 0
        self._lock = threading.Lock()

    def check(self) -> None:
        """Nothing to check before the results folder is written."""

    def _run(self, job: Job, stop: threading.Event) -> dict[str, Any]:
        with self._lock:
            self._running += 1
        try:
            return run_isolated(job, self.workdir, self.timeout_s, self.retries,
                                log=self.logdir / f"{job.key}.log", stop=stop)
        finally:
            with self._lock:
                self._running -= 1

    def run(self, jobs: Sequence[Job], on_result: OnResult, on_tick: OnTick | None = None) -> None:
        """Run every job; ``on_result`` is called in this thread as each one finishes."""
        self.logdir.mkdir(parents=True, exist_ok=True)
        stop = threading.Event()
        pool = cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="episode")
        futures = {pool.submit(self._run, job, stop): job for job in jobs}
        pending = set(futures)
        try:
            while pending:
                done, pending = cf.wait(pending, timeout=1.0, return_when=cf.FIRST_COMPLETED)
                if on_tick is not None:
                    on_tick(self._running)
                for fut in done:
                    on_result(futures[fut], fut.result())
        except BaseException:
            stop.set()
            for fut in pending:
                fut.cancel()
            kill_running()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ray_episode(job: Job, timeout_s: float, retries: int) -> dict[str, Any]:
    """The body of a Ray task: the episode in its own process on the node Ray picked."""
    with tempfile.TemporaryDirectory(prefix="mnemobot-eval-") as tmp:
        log = Path(tmp) / "episode.log"
        row = run_isolated(job, tmp, timeout_s, retries, log=log)
        try:
            row["log"] = log.read_text(errors="replace")[-LOG_TAIL:]
        except OSError:
            row["log"] = ""
        return row


class _Deadline(BaseException):
    """Raised in the main thread by :func:`_deadline`'s alarm."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`_Deadline` in the block after ``seconds`` (main thread on POSIX; else no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(_signum: int, _frame: object) -> None:
        raise _Deadline

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _address_reachable(address: str, timeout_s: float) -> None:
    """Refuse an address whose host:port does not accept a connection (before Ray waits on it)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port_text = hostport.rpartition(":")
    if not sep or not port_text.isdigit():
        raise UserError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379) or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address}: {e.strerror or e} "
                        f"(start one with 'ray start --head', or leave out --address for a local one)") from None


class RayExecutor:
    """One Ray task per episode: a local Ray instance with ``workers`` CPUs, or the cluster at
    ``address``; ``retries`` is both the tasks' ``max_retries`` and the process retries inside."""

    name = "ray"

    def __init__(self, workers: int = 1, timeout_s: float = 900.0, retries: int = 1,
                 logdir: str | Path = ".", address: str | None = None, connect_timeout_s: float = 30.0) -> None:
        self.workers, self.timeout_s, self.retries = workers, timeout_s, retries
        self.logdir = Path(logdir)
        self.address, self.connect_timeout_s = address, connect_timeout_s

    def check(self) -> None:
        """Fail early (before the results folder is written): Ray missing, ``address`` unreachable."""
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--executor ray needs the 'ray' package (pip install 'mnemobot[distributed]')") from None
        if self.address is not None:
            _address_reachable(self.address, min(self.connect_timeout_s, 10.0))

    def _init(self):  # noqa: ANN202 - the ray module
        self.check()
        import ray
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "configure_logging": False}
        if self.address is not None:
            kwargs["address"] = self.address
        else:
            # on loopback: a local instance needs no reachable network interface
            kwargs.update(num_cpus=self.workers, include_dashboard=False, _node_ip_address="127.0.0.1")
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        # in this thread: Ray ties the processes it starts to the thread that started them
        with _deadline(self.connect_timeout_s):
            try:
                ray.init(**kwargs)
            except _Deadline:
                raise UserError(f"could not connect to {where} within {self.connect_timeout_s:g} s") from None
            except Exception as e:  # noqa: BLE001 - Ray raises several kinds
                msg = str(e).strip().splitlines()
                hint = (" (a cluster with token authentication, Ray's default, needs RAY_AUTH_MODE=token and its "
                        "token in ~/.ray/auth_token or RAY_AUTH_TOKEN)" if self.address is not None else "")
                raise UserError(f"could not start {where}: {msg[0] if msg else type(e).__name__}{hint}") from None
        return ray

    def run(self, jobs: Sequence[Job], on_result: OnResult, on_tick: OnTick | None = None) -> None:
        """Submit every job as a Ray task; ``on_result`` is called here as each one finishes."""
        self.logdir.mkdir(parents=True, exist_ok=True)
        ray = self._init()
        try:
            remote = ray.remote(num_cpus=1, max_retries=self.retries)(_ray_episode)
            refs = {remote.remote(job, self.timeout_s, self.retries): job for job in jobs}
            pending = list(refs)
            try:
                cpus = int(ray.cluster_resources().get("CPU", self.workers))
            except Exception:  # noqa: BLE001 - only for the progress line
                cpus = self.workers
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                if on_tick is not None:
                    on_tick(min(len(pending), cpus))
                for ref in done:
                    job = refs[ref]
                    try:
                        row = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - a task that failed after its retries
                        msg = str(e).strip().splitlines()
                        row = {"success": False, "stop_reason": DIED, "attempts": self.retries + 1,
                               "error": f"Ray task failed: {msg[0] if msg else type(e).__name__}"[:2000]}
                    log = row.pop("log", "")
                    if log:
                        (self.logdir / f"{job.key}.log").write_text(log)
                    on_result(job, row)
        except BaseException:
            for ref in refs:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001, S110 - best effort on the way out
                    pass
            raise
        finally:
            if self.address is None:
                ray.shutdown()


def make_executor(kind: str, workers: int, timeout_s: float, retries: int, out_dir: Path,
                  address: str | None = None) -> LocalExecutor | RayExecutor:
    """The executor ``kind`` (:data:`EXECUTORS`) writing logs under ``out_dir/logs``."""
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if kind == "local":
        if address is not None:
            raise UserError("--address is for --executor ray")
        return LocalExecutor(workers, timeout_s, retries, workdir=out_dir / ".work", logdir=out_dir / "logs")
    if kind == "ray":
        return RayExecutor(workers, timeout_s, retries, logdir=out_dir / "logs", address=address)
    raise UserError(f"unknown executor {kind!r}; use one of {', '.join(EXECUTORS)}")
