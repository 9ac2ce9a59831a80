"""``mnemobot eval`` and ``mnemobot report``: the matrix, real episodes in their own processes
(rows, resume, refusals, time limits, a worker killed mid-episode), the report's numbers and
significance tests."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnemobot.agent.cli import main
from mnemobot.agent.errors import UserError
from mnemobot.evaluation.matrix import Matrix, parse_seeds
from mnemobot.evaluation.report import build_report, write_report
from mnemobot.evaluation.results import COLUMN_NAMES, Journal, read_results, write_tables
from mnemobot.evaluation.stats import fisher_exact, two_proportion_z, wilson

SMALL = ["--families", "place", "--width", "160", "--height", "120"]
"""The cheap real episode: the place family with a small camera."""


def mnemobot(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mnemobot", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def journal_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines() if line.strip()]


def worker_pids(parent: int) -> list[int]:
    """Episode processes (``mnemobot.evaluation.worker``) whose parent is ``parent``, from /proc."""
    return [pid for pid, (ppid, cmd) in _processes().items() if ppid == parent and "mnemobot.evaluation.worker" in cmd]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, from /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            out[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    return out


def complete_rows(out: Path, n: int) -> list[dict]:
    """The journal's rows, checked: ``n`` episodes, no duplicates, all in the results table."""
    rows = journal_lines(out)
    assert len(rows) == n and len({r["key"] for r in rows}) == n, rows  # complete, no duplicates
    assert len(read_results(out)[0]) == n
    return rows


# --------------------------------------------------------------------------------------------
# The matrix and its validation


def test_seed_ranges() -> None:
    assert parse_seeds("0-4,7") == (0, 1, 2, 3, 4, 7)
    assert parse_seeds("3") == (3,)
    assert parse_seeds([0, "2-3"]) == (0, 2, 3)
    assert parse_seeds("1-2,2-3") == (1, 2, 3)
    for bad in ("3-1", "x", "-1", "1-", "", "0-a", "1.5"):
        with pytest.raises(UserError):
            parse_seeds(bad)


def test_matrix_file_and_flags(tmp_path: Path) -> None:
    from mnemobot.evaluation.matrix import load_matrix_file

    f = tmp_path / "m.yaml"
    f.write_text("families: [place, fetch]\nseeds: 0-2\nmemory: [on, off]\nsensor-profile: ideal,kinect\n")
    m = Matrix.build(load_matrix_file(f), {"seeds": "5", "mode": None})
    assert m.families == ("place", "fetch") and m.seeds == (5,) and m.memory == ("on", "off")
    assert m.sensor_profile == ("ideal", "kinect") and m.mode == ("tree",)
    eps = m.episodes()
    assert len(eps) == len(m) == 2 * 1 * 2 * 2
    assert len({e.key for e in eps}) == len(eps)
    kw = eps[0].run_config_kwargs()
    from mnemobot.agent.episode import RunConfig

    assert RunConfig(**kw).task_id == "place"  # every key is a RunConfig field
    # the same matrix written another way has the same identity; another one does not
    assert Matrix.build({"seeds": "0,1", "memory": "off,on"}).identity() == \
        Matrix.build({"seeds": "0-1", "memory": "on,off"}).identity()
    assert Matrix.build({"seeds": "0-1"}).identity() != Matrix.build({"seeds": "0-2"}).identity()
    f.write_text("families: place\ncolour: red\n")
    with pytest.raises(UserError, match="unknown key 'colour'"):
        load_matrix_file(f)


@pytest.mark.parametrize(("args", "message"), [
    (["--families", "place,nope"], "unknown task family 'nope'"),
    (["--seeds", "5-2"], "runs backwards"),
    (["--seeds", "0-x"], "not a seed"),
    (["--planner", "gpt"], "unknown planner 'gpt'"),
    (["--mode", "sideways"], "unknown mode 'sideways'"),
    (["--sensor-profile", "ideal,fuzzy"], "unknown sensor profile 'fuzzy'"),
    (["--policy", "magic"], "unknown policy 'magic'"),
    (["--policy", "learned"], "needs --checkpoint"),
    (["--inject", "meteor"], "unknown injection 'meteor'"),
    (["--memory", "maybe"], "unknown --memory value"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                      message: str) -> None:
    out = tmp_path / "ev"
    assert main(["eval", *args, "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing written


def test_unreachable_ray_address_is_refused_quickly(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    r = mnemobot("eval", "--executor", "ray", "--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "ev"),
                 timeout=120)
    assert r.returncode == 2, r.stderr
    assert "cannot reach the Ray cluster" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "ev").exists()


def test_journal_drops_a_torn_line(tmp_path: Path) -> None:
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({"key": "a", "family": "place", "success": True}) + "\n" + '{"key": "b", "fam')
    j = Journal(p)
    assert list(j.rows) == ["a"]
    j.append({"key": "c", "family": "place", "success": False})
    assert [r["key"] for r in journal_lines(tmp_path)] == ["a", "c"]


# --------------------------------------------------------------------------------------------
# Real episodes


@pytest.mark.slow
def test_eval_rows_resume_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pybullet")
    out = tmp_path / "ev"
    argv = ["eval", *SMALL, "--seeds", "0-1", "--workers", "2", "--out", str(out)]
    assert main(argv) == 0
    cap = capsys.readouterr()
    assert "2 run (2/2 succeeded)" in cap.out
    assert "eval: 2/2 done" in cap.err  # the progress line
    rows, _ = read_results(out / "results.parquet")
    assert sorted(r["seed"] for r in rows) == [0, 1]
    for r in rows:
        assert set(COLUMN_NAMES) <= set(r)
        assert r["family"] == "place" and r["memory"] == "on" and r["planner"] == "symbolic"
        assert r["mode"] == "tree" and r["inject"] == "none" and r["sensor_profile"] == "ideal"
        assert r["policy"] == "skills" and r["attempts"] == 1
        assert r["success"] is True and r["stop_reason"] == ""
        assert r["steps"] > 100 and r["planner_calls"] >= 1 and r["sim_s"] > 5
        assert 0 < r["wall_s"] < r["process_s"]
        assert r["task"].startswith("put the ")
    csv_rows, _ = read_results(out / "results.csv")
    assert csv_rows == sorted(rows, key=lambda r: r["key"])
    meta = json.loads((out / "eval.json").read_text())
    assert meta["schema_version"] == 1 and meta["matrix"]["seeds"] == [0, 1] and meta["command"][:2] == ["mnemobot", "eval"]

    # the same command again: everything is skipped, nothing is added
    before = (out / "rows.jsonl").read_text()
    assert main(argv + ["-q"]) == 0
    assert "2 already done, 0 run" in capsys.readouterr().out
    assert (out / "rows.jsonl").read_text() == before

    # drop one row from the journal: only that episode runs again
    lines = before.splitlines(keepends=True)
    dropped = json.loads(lines[0])["key"]
    (out / "rows.jsonl").write_text("".join(lines[1:]))
    assert main(argv + ["-q"]) == 0
    assert "1 already done, 1 run (1/1 succeeded)" in capsys.readouterr().out
    after = journal_lines(out)
    assert len(after) == 2 and after[-1]["key"] == dropped and after[0] == json.loads(lines[1])
    assert len(read_results(out / "results.parquet")[0]) == 2

    # another matrix into the same folder is refused, and nothing changes
    snapshot = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["eval", *SMALL, "--seeds", "0-2", "--out", str(out), "-q"]) == 2
    assert "another evaluation" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == snapshot

    # a results folder of another schema version is refused
    meta["schema_version"] = 99
    (out / "eval.json").write_text(json.dumps(meta))
    assert main(argv + ["-q"]) == 2
    err = capsys.readouterr().err
    assert "schema version 99" in err and "Traceback" not in err

    # a folder that is not an evaluation's is not written into
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    assert main(["eval", *SMALL, "--out", str(other), "-q"]) == 2
    assert "not an evaluation folder" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["todo.txt"]


def test_episode_past_its_time_limit_is_killed(tmp_path: Path) -> None:
    pytest.importorskip("pybullet")
    out = tmp_path / "ev"
    t0 = time.monotonic()
    r = mnemobot("eval", *SMALL, "--seeds", "0-1", "--workers", "2", "--episode-timeout", "1.5", "--out", str(out),
                 "-q", timeout=120)
    assert time.monotonic() - t0 < 60
    assert r.returncode == 1, r.stderr  # episodes did not finish
    rows = journal_lines(out)
    assert len(rows) == 2
    for row in rows:
        assert row["stop_reason"] == "timeout" and row["success"] is False and row["attempts"] == 1
        assert 1.4 < row["process_s"] < 15
    assert "2 timed out/died/raised" in r.stdout

    # resuming skips them (and says how to run them again); --rerun-unfinished replaces their rows
    r = mnemobot("eval", *SMALL, "--seeds", "0-1", "--out", str(out), timeout=120)
    assert r.returncode == 0 and "2 already done, 0 run" in r.stdout and "--rerun-unfinished" in r.stderr
    r = mnemobot("eval", *SMALL, "--seeds", "0-1", "--workers", "2", "--rerun-unfinished", "--out", str(out), "-q",
                 timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 already done, 2 run (2/2 succeeded)" in r.stdout
    assert all(row["success"] and row["stop_reason"] == "" for row in read_results(out)[0])
    assert len(read_results(out)[0]) == 2


def kill_one_worker(proc: subprocess.Popen, out: Path, after_s: float) -> int:
    """SIGKILL one episode process of the eval ``proc`` ``after_s`` seconds into its episode."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        logs = list((out / "logs").glob("*.log")) if (out / "logs").exists() else []
        if worker_pids(proc.pid) and any("episode place seed" in p.read_text() for p in logs):
            time.sleep(after_s)
            pids = worker_pids(proc.pid)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                return pids[0]
        time.sleep(0.1)
    raise AssertionError("no episode process to kill")


def start_eval(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnemobot", "eval", *SMALL, *args, "--out", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_worker_killed_mid_episode_is_retried(tmp_path: Path) -> None:
    pytest.importorskip("pybullet")
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the episode processes")
    out = tmp_path / "ev"
    proc = start_eval(out, "--seeds", "0-1", "--workers", "2", "--retries", "1")
    try:
        kill_one_worker(proc, out, after_s=3.0)  # well into the episode (world built, robot moving)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    rows = complete_rows(out, 2)
    assert sorted(r["attempts"] for r in rows) == [1, 2]
    assert all(r["success"] and r["stop_reason"] == "" for r in rows)
    assert worker_pids(proc.pid) == []


def test_worker_killed_with_no_retries_left_gives_a_worker_died_row(tmp_path: Path) -> None:
    pytest.importorskip("pybullet")
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the episode processes")
    out = tmp_path / "ev"
    proc = start_eval(out, "--seeds", "0", "--retries", "0")
    try:
        kill_one_worker(proc, out, after_s=0.5)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stdout + stderr
    (row,) = journal_lines(out)
    assert row["stop_reason"] == "worker died" and row["success"] is False and row["attempts"] == 1
    assert "signal 9" in row["error"]
    assert "1 timed out/died/raised" in stdout


@pytest.mark.slow
def test_ray_executor(tmp_path: Path) -> None:
    pytest.importorskip("pybullet")
    pytest.importorskip("ray")
    out = tmp_path / "ev"
    r = mnemobot("eval", *SMALL, "--seeds", "0", "--executor", "ray", "--workers", "1", "--out", str(out), "-q",
                 timeout=400)
    if r.returncode == 2 and "could not start a local Ray instance" in r.stderr:
        pytest.skip(f"Ray does not start here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = journal_lines(out)
    assert len(rows) == 1 and rows[0]["success"] is True and rows[0]["attempts"] == 1
    assert (out / "logs" / f"{rows[0]['key']}.log").read_text().strip()


def episode_pids_under(root: int) -> dict[int, int]:
    """Episode processes descending from ``root``: pid -> parent pid."""
    procs = _processes()
    below, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _c) in procs.items() if ppid in below} - below
        below |= more
        grew = bool(more)
    return {pid: ppid for pid, (ppid, cmd) in procs.items() if pid in below and "mnemobot.evaluation.worker" in cmd}


@pytest.mark.slow
def test_ray_worker_killed_mid_episode_is_retried(tmp_path: Path) -> None:
    """SIGKILL the Ray worker running an episode: Ray runs the task again, the orphaned episode
    process leaves on its own, and the table is complete with no duplicates."""
    pytest.importorskip("pybullet")
    pytest.importorskip("ray")
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the episode processes")
    out = tmp_path / "ev"
    proc = start_eval(out, "--seeds", "0-1", "--executor", "ray", "--workers", "2", "--retries", "1")
    try:
        victim = orphan = None
        deadline = time.monotonic() + 240
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            if episode_pids_under(proc.pid):
                time.sleep(4.0)  # well into the episode
                running = episode_pids_under(proc.pid)
                if running:
                    orphan, victim = next(iter(running.items()))
                    os.kill(victim, signal.SIGKILL)
            time.sleep(0.2)
        if victim is None:
            stdout, stderr = proc.communicate(timeout=60)
            if "could not start a local Ray instance" in stderr:
                pytest.skip(f"Ray does not start here: {stderr.strip()}")
            raise AssertionError(f"no episode under a Ray worker to kill:\n{stdout}\n{stderr}")
        t0 = time.monotonic()
        while Path(f"/proc/{orphan}").exists() and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert not Path(f"/proc/{orphan}/cmdline").exists() or not Path(f"/proc/{orphan}/cmdline").read_bytes(), \
            "the episode of a killed Ray worker kept running"
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    rows = complete_rows(out, 2)
    assert all(r["success"] and r["stop_reason"] == "" for r in rows), rows  # the killed one ran again


# --------------------------------------------------------------------------------------------
# Statistics and the report


def test_wilson_fisher_and_z() -> None:
    lo, hi = wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(0.4857142857)  # the lady tasting tea
    assert fisher_exact(5, 5, 5, 5) == pytest.approx(1.0)

    def brute(a: int, n1: int, b: int, n2: int) -> float:  # enumerate every table with these margins
        k, n = a + b, n1 + n2
        probs = {x: math.comb(n1, x) * math.comb(n2, k - x) / math.comb(n, k)
                 for x in range(max(0, k - n2), min(k, n1) + 1)}
        return sum(p for p in probs.values() if p <= probs[a] * (1 + 1e-7))

    for case in ((9, 10, 2, 10), (1, 12, 7, 9), (20, 30, 28, 30)):
        assert fisher_exact(*case) == pytest.approx(brute(*case))
    z, p = two_proportion_z(45, 50, 30, 50)
    pooled = 75 / 100
    assert z == pytest.approx((0.9 - 0.6) / math.sqrt(pooled * (1 - pooled) * (2 / 50)))
    assert p == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))


def synthetic_rows(rates: dict[tuple[str, str], tuple[int, int]], wall: float = 10.0) -> list[dict]:
    """Rows with ``successes`` of ``n`` per (family, memory)."""
    rows = []
    for (family, memory), (successes, n) in rates.items():
        for i in range(n):
            rows.append({"key": f"{family}.s{i}.{memory}", "family": family, "seed": i, "memory": memory,
                         "planner": "symbolic", "mode": "tree", "inject": "none", "sensor_profile": "ideal",
                         "policy": "skills", "success": i < successes, "steps": 500 + i,
                         "planner_calls": 1 + (i % 3), "sim_s": 30.0, "wall_s": wall + i % 5,
                         "stop_reason": "" if i < successes else "goal not reached", "attempts": 1})
    return rows


def test_report_tables_plots_and_intervals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = synthetic_rows({("place", "on"): (8, 10), ("place", "off"): (3, 10), ("fetch", "on"): (6, 8),
                           ("fetch", "off"): (2, 8)})
    rows[-1].update(success=False, stop_reason="timeout", error="killed after the episode time limit of 5 s")
    folder = tmp_path / "ev"
    folder.mkdir()
    write_tables(folder, rows)
    assert main(["report", str(folder / "results.csv"), "-o", str(tmp_path / "r")]) == 0
    assert "report:" in capsys.readouterr().out
    md = (tmp_path / "r.md").read_text()
    html = (tmp_path / "r.html").read_text()
    lo, hi = wilson(8, 10)
    assert f"| place | memory=on | 10 | 8 | 0.800 | [{lo:.3f}, {hi:.3f}] |" in md
    lo3, hi3 = wilson(3, 10)
    assert f"| place | memory=off | 10 | 3 | 0.300 | [{lo3:.3f}, {hi3:.3f}] |" in md
    assert "Success by condition (all families)" in md
    assert "| all | memory=on | 18 | 14 | 0.778 |" in md
    assert "timeout" in md and "fetch.s7.off" in md  # the unfinished episode is listed
    assert "(r-success.svg)" in md and (tmp_path / "r-success.svg").read_text().startswith("<svg")
    # HTML: self-contained, inline SVG plots, the interval numbers
    assert html.count("<svg") == 3 and "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert f"[{lo:.3f}, {hi:.3f}]" in html and f"[{lo3:.3f}, {hi3:.3f}]" in html
    assert "Planner calls per episode" in html and "Wall time per episode" in html
    import xml.etree.ElementTree as ET

    for svg in tmp_path.glob("r-*.svg"):  # well-formed SVG
        assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    # the parquet table and the folder read the same
    assert build_report(read_results(folder)[0]).cells[("place", "memory=on")].successes == 8


def test_report_against_flags_only_significant_regressions(tmp_path: Path) -> None:
    base = synthetic_rows({("place", "on"): (28, 30), ("fetch", "on"): (7, 10)})
    new = synthetic_rows({("place", "on"): (12, 30), ("fetch", "on"): (5, 10)})  # both lower
    for name, rows in (("base", base), ("new", new)):
        (tmp_path / name).mkdir()
        write_tables(tmp_path / name, rows)
    rep = build_report(read_results(tmp_path / "new")[0], other=read_results(tmp_path / "base")[0])
    verdicts = {c.family: c for c in rep.comparisons or []}
    assert verdicts["place"].verdict == "regression" and verdicts["place"].p_fisher < 0.05
    assert verdicts["fetch"].verdict == "no significant change" and verdicts["fetch"].p_fisher > 0.05
    assert verdicts["place"].p_fisher == pytest.approx(fisher_exact(12, 30, 28, 30))
    paths = write_report(tmp_path / "new", out=tmp_path / "cmp.md", against=tmp_path / "base")
    md, html = paths[0].read_text(), paths[1].read_text()
    assert paths[0].name == "cmp.md"
    place = next(line for line in md.splitlines() if line.startswith("| **place**"))
    assert "**regression**" in place and "**-0.533**" in place
    fetch = next(line for line in md.splitlines() if line.startswith("| fetch | all | 5/10"))
    assert "no significant change" in fetch and "**" not in fetch
    assert html.count('<tr class="regression">') == 1
    assert "**1 regression(s)**" in md
