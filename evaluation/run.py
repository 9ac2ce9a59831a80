"""``mnemobot eval``: run a matrix of episodes, resumably, into an evaluation folder.

Usage::

    cfg = EvalConfig(Matrix.build({"families": "place", "seeds": "0-3"}), out="runs/eval-place", workers=2)
    summary = run_eval(cfg)

Re-running with the same ``out`` resumes: the episodes its journal holds are skipped. A folder
holding another matrix's results, or results of another schema version, is refused.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mnemobot.agent.errors import UserError
from mnemobot.evaluation.executor import DIED, ERROR, TIMEOUT, Job, make_executor
from mnemobot.evaluation.matrix import EpisodeSpec, Matrix
from mnemobot.evaluation.results import SCHEMA_VERSION, Journal, check_schema, write_tables

__all__ = ["EvalConfig", "EvalSummary", "Progress", "default_out", "run_eval"]

TABLE_EVERY_S = 5.0
"""The Parquet/CSV tables are rebuilt at most this often while episodes finish (and at the end);
the journal gets every row at once."""


def default_out() -> Path:
    """``runs/eval-<timestamp>``."""
    return Path("runs") / time.strftime("eval-%Y%m%d-%H%M%S")


@dataclass
class EvalConfig:
    """An evaluation: the matrix, where its results go and how its episodes run."""

    matrix: Matrix
    out: str | Path
    executor: str = "local"
    workers: int = 1
    episode_timeout_s: float = 900.0
    retries: int = 1
    address: str | None = None
    rerun_unfinished: bool = False
    """Run again the episodes whose rows say they timed out, died or raised (their new rows
    replace the old ones)."""
    command: Sequence[str] = field(default_factory=list)
    """The command line, recorded in ``eval.json``."""

    def validate(self) -> None:
        if self.workers < 1:
            raise UserError(f"--workers must be >= 1, got {self.workers}")
        if not self.episode_timeout_s > 0:
            raise UserError(f"--episode-timeout must be > 0 s, got {self.episode_timeout_s}")
        if self.retries < 0:
            raise UserError(f"--retries must be >= 0, got {self.retries}")


@dataclass
class EvalSummary:
    """What a run of :func:`run_eval` did."""

    out: Path
    total: int
    skipped: int
    ran: int
    succeeded: int
    unfinished: int
    """Episodes of this run that timed out, died or raised."""
    wall_s: float
    episode_wall_s: float
    """Sum of the ``wall_s`` of the episodes this run finished."""

    @property
    def overhead_s_per_episode(self) -> float:
        """Wall time of the run beyond the episodes' own, per episode run."""
        return (self.wall_s - self.episode_wall_s) / self.ran if self.ran else 0.0

    def render(self) -> str:
        rate = f"{self.succeeded}/{self.ran} succeeded" if self.ran else "nothing to run"
        per_hour = f", {3600.0 * self.ran / self.wall_s:.0f} episodes/h" if self.ran and self.wall_s > 0 else ""
        return (f"eval: {self.total} episodes, {self.skipped} already done, {self.ran} run ({rate}"
                + (f", {self.unfinished} timed out/died/raised" if self.unfinished else "") + ")"
                + f" in {self.wall_s:.1f} s{per_hour}\nresults: {self.out / 'results.parquet'}, "
                f"{self.out / 'results.csv'}")


class Progress:
    """The progress line on stderr: done / running / failed and the running success rate.

    On a terminal one line is redrawn in place; otherwise a line is printed per change.
    """

    def __init__(self, total: int, skipped: int, stream: TextIO | None = None, enabled: bool = True,
                 name: str = "eval") -> None:
        self.total, self.done, self.running, self.name = total, skipped, 0, name
        self.succeeded = self.failed = self.unfinished = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""

    def result(self, row: dict[str, Any]) -> None:
        self.done += 1
        if row.get("success"):
            self.succeeded += 1
        else:
            self.failed += 1
        if row.get("stop_reason") in (TIMEOUT, DIED, ERROR):
            self.unfinished += 1

    def line(self) -> str:
        ran = self.succeeded + self.failed
        rate = f"{100.0 * self.succeeded / ran:.0f}% ({self.succeeded}/{ran})" if ran else "-"
        extra = f" ({self.unfinished} timeout/died/error)" if self.unfinished else ""
        return (f"{self.name}: {self.done}/{self.total} done, {self.running} running, {self.failed} failed{extra}, "
                f"success {rate}")

    def show(self, running: int | None = None) -> None:
        if running is not None:
            self.running = running
        if not self.enabled:
            return
        text = self.line()
        if text == self._last:
            return
        self._last = text
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()


def _prepare_out(out: Path, matrix: Matrix, command: Sequence[str]) -> dict[str, Any]:
    """Create ``out`` or check that it holds this matrix's results; write ``eval.json``."""
    meta_path = out / "eval.json"
    if meta_path.exists():
        meta = check_schema(out)
        if meta.get("matrix_id") != matrix.identity():
            raise UserError(f"{out} holds the results of another evaluation (a different matrix); "
                            "refusing to mix or overwrite them: choose another --out")
        meta["command"] = list(command)
        meta.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S"))
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out} exists and is not an evaluation folder (no eval.json); refusing to write "
                            "into it: choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        meta = {"schema_version": SCHEMA_VERSION, "matrix_id": matrix.identity(), "matrix": matrix.to_dict(),
                "episodes": len(matrix), "command": list(command),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = out / ".eval.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, meta_path)
    return meta


def run_eval(cfg: EvalConfig, progress: Progress | None = None,
             say: Callable[[str], None] | None = None) -> EvalSummary:
    """Run every episode of ``cfg.matrix`` not yet in ``cfg.out``'s journal; bad input raises
    :class:`UserError` before anything runs."""
    cfg.validate()
    out = Path(cfg.out)
    executor = make_executor(cfg.executor, cfg.workers, cfg.episode_timeout_s, cfg.retries, out, cfg.address)
    executor.check()
    specs: list[EpisodeSpec] = cfg.matrix.episodes()
    _prepare_out(out, cfg.matrix, cfg.command)
    journal = Journal(out / "rows.jsonl")
    unfinished = {k for k, r in journal.rows.items() if r.get("stop_reason") in (TIMEOUT, DIED, ERROR)}
    todo = [s for s in specs if s.key not in journal or (cfg.rerun_unfinished and s.key in unfinished)]
    skipped = len(specs) - len(todo)
    if say is not None and skipped:
        say(f"eval: resuming {out}: {skipped} of {len(specs)} episodes already done")
    if say is not None and unfinished and not cfg.rerun_unfinished:
        say(f"eval: {len(unfinished)} of them timed out, died or raised; --rerun-unfinished runs them again")
    prog = progress if progress is not None else Progress(len(specs), skipped, enabled=False)
    prog.total, prog.done = len(specs), skipped
    by_key = {s.key: s for s in todo}
    stats = {"ran": 0, "ok": 0, "unfinished": 0, "episode_wall": 0.0}
    last_table = [time.monotonic()]

    def on_result(job: Job, measured: dict[str, Any]) -> None:
        spec = by_key[job.key]
        row = {"key": spec.key, **spec.conditions(), **measured,
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        journal.append(row)
        stats["ran"] += 1
        stats["ok"] += bool(row.get("success"))
        stats["unfinished"] += row.get("stop_reason") in (TIMEOUT, DIED, ERROR)
        stats["episode_wall"] += float(row.get("wall_s") or 0.0)
        prog.result(row)
        prog.show()
        if time.monotonic() - last_table[0] >= TABLE_EVERY_S:
            write_tables(out, journal.rows.values())
            last_table[0] = time.monotonic()

    t0 = time.perf_counter()
    prog.show(0)
    try:
        if todo:
            executor.run([Job(s.key, s.run_config_kwargs()) for s in todo], on_result, on_tick=prog.show)
    finally:
        prog.close()
        write_tables(out, journal.rows.values())
        work = out / ".work"
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
    return EvalSummary(out=out, total=len(specs), skipped=skipped, ran=stats["ran"], succeeded=stats["ok"],
                       unfinished=stats["unfinished"], wall_s=time.perf_counter() - t0,
                       episode_wall_s=stats["episode_wall"])
