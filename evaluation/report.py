"""``mnemobot report``: an evaluation's results as Markdown and self-contained HTML.

Usage::

    paths = write_report("runs/eval-place", out="runs/eval-place/report", against="runs/eval-baseline")

Writes ``OUT.md`` and ``OUT.html`` (inline CSS and SVG, no external assets, no JavaScript) and the
plots as ``OUT-<name>.svg`` (which the Markdown links). A *condition* is the combination of the
condition columns (memory, planner, mode, inject, sensor_profile, policy) that vary in the
results; success rates come with 95% Wilson intervals. With ``against``, each (family,
condition) is compared with the other results by Fisher's exact test (and the two-proportion z
test); a lower success rate at p < 0.05 is flagged as a regression.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from mnemobot.agent.errors import UserError
from mnemobot.evaluation.executor import DIED, ERROR, TIMEOUT
from mnemobot.evaluation.horizon import ALL as ALL_TYPES
from mnemobot.evaluation.horizon import HorizonScores
from mnemobot.evaluation.matrix import CONDITION_COLUMNS
from mnemobot.evaluation.results import read_results
from mnemobot.evaluation.stats import fisher_exact, two_proportion_z, wilson
from mnemobot.evaluation.svg import bar_chart

__all__ = ["ALPHA", "Cell", "Comparison", "Report", "build_report", "write_report"]

ALPHA = 0.05
"""Significance level of a flagged regression."""
ALL = "all"
"""The condition label when no condition column varies."""


@dataclass
class Cell:
    """The episodes of one (family, condition)."""

    family: str
    condition: str
    n: int = 0
    successes: int = 0
    planner_calls: float = 0.0
    wall_s: float = 0.0
    wall_max: float = 0.0
    wall_min: float = float("inf")
    calls_min: float = float("inf")
    calls_max: float = 0.0
    steps: float = 0.0
    unfinished: int = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self.n += 1
        self.successes += bool(row["success"])
        calls, wall = float(row["planner_calls"]), float(row["wall_s"])
        self.planner_calls += calls
        self.wall_s += wall
        self.steps += float(row["steps"])
        self.wall_min, self.wall_max = min(self.wall_min, wall), max(self.wall_max, wall)
        self.calls_min, self.calls_max = min(self.calls_min, calls), max(self.calls_max, calls)
        self.unfinished += row["stop_reason"] in (TIMEOUT, DIED, ERROR)

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else 0.0

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.successes, self.n)

    def mean(self, total: float) -> float:
        return total / self.n if self.n else 0.0


@dataclass
class Comparison:
    """One (family, condition) against the other results."""

    family: str
    condition: str
    this: Cell
    other: Cell
    p_fisher: float
    p_z: float

    @property
    def diff(self) -> float:
        return self.this.rate - self.other.rate

    @property
    def verdict(self) -> str:
        if self.p_fisher < ALPHA and self.diff < 0:
            return "regression"
        if self.p_fisher < ALPHA and self.diff > 0:
            return "improvement"
        return "no significant change"


@dataclass
class Report:
    """Everything the Markdown and HTML show."""

    source: str
    rows: int
    varying: tuple[str, ...]
    families: list[str]
    conditions: list[str]
    cells: dict[tuple[str, str], Cell]
    by_condition: dict[str, Cell]
    unfinished: list[dict[str, Any]]
    against: str | None = None
    comparisons: list[Comparison] | None = None
    only_this: int = 0
    only_other: int = 0
    horizon: HorizonScores | None = None
    """Memory accuracy against horizon per short-term policy (``--suite``)."""


def empty_report() -> Report:
    """A report with no evaluation rows (only a suite's scores)."""
    return Report("", 0, (), [], [], {}, {}, [])


def _label(row: Mapping[str, Any], varying: Sequence[str]) -> str:
    return ", ".join(f"{c}={row[c]}" for c in varying) if varying else ALL


def _cells(rows: Iterable[Mapping[str, Any]], varying: Sequence[str]) -> dict[tuple[str, str], Cell]:
    cells: dict[tuple[str, str], Cell] = {}
    for r in rows:
        key = (str(r["family"]), _label(r, varying))
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell(*key)
        cell.add(r)
    return cells


def build_report(rows: Sequence[Mapping[str, Any]], source: str = "",
                 other: Sequence[Mapping[str, Any]] | None = None, other_source: str = "") -> Report:
    """The report's numbers from result rows (and the rows to compare with)."""
    if not rows:
        raise UserError(f"{source or 'the results'} hold no episodes")
    both = list(rows) + list(other or [])
    varying = tuple(c for c in CONDITION_COLUMNS if len({str(r[c]) for r in both}) > 1)
    families = list(dict.fromkeys(str(r["family"]) for r in rows))
    cells = _cells(rows, varying)
    conditions = sorted({c for _, c in cells})
    by_condition: dict[str, Cell] = {}
    for r in rows:
        label = _label(r, varying)
        by_condition.setdefault(label, Cell(ALL, label)).add(r)
    unfinished = [dict(r) for r in rows if r["stop_reason"] in (TIMEOUT, DIED, ERROR)]
    rep = Report(source, len(rows), varying, families, conditions, cells, by_condition, unfinished)
    if other is not None:
        theirs = _cells(other, varying)
        rep.against = other_source
        rep.comparisons = []
        for key in sorted(set(cells) & set(theirs), key=lambda k: (families.index(k[0]), k[1])):
            a, b = cells[key], theirs[key]
            p_f = fisher_exact(a.successes, a.n, b.successes, b.n)
            _z, p_z = two_proportion_z(a.successes, a.n, b.successes, b.n)
            rep.comparisons.append(Comparison(key[0], key[1], a, b, p_f, p_z))
        rep.only_this = len(set(cells) - set(theirs))
        rep.only_other = len(set(theirs) - set(cells))
    return rep


# --------------------------------------------------------------------------------------------
# Rendering


def _rate(c: Cell) -> str:
    return f"{c.rate:.3f}"


def _ci(c: Cell) -> str:
    lo, hi = c.ci
    return f"[{lo:.3f}, {hi:.3f}]"


def _p(p: float) -> str:
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def _horizon_table(hs: HorizonScores) -> tuple[str, list[str], list[list[str]], list[bool]]:
    head = ["memory", *[f"h{h}: accuracy [95% CI] (n)" for h in hs.horizons]]
    body = []
    for m in hs.memories:
        row = [m]
        for h in hs.horizons:
            t = hs.tally(m, h)
            if t.n:
                lo, hi = wilson(t.correct, t.n)
                row.append(f"{t.correct / t.n:.3f} [{lo:.3f}, {hi:.3f}] ({t.n})")
            else:
                row.append("-")
        body.append(row)
    return (f"Memory accuracy against horizon ({hs.episodes} replayed episodes of {hs.suite}; short-term "
            f"capacity {hs.capacity})", head, body, [False] * len(body))


def _tables(rep: Report) -> list[tuple[str, list[str], list[list[str]], list[bool]]]:
    """(title, header, rows, flagged per row) of every table, shared by Markdown and HTML."""
    out = []
    if rep.horizon is not None:
        out.append(_horizon_table(rep.horizon))
    if not rep.rows:
        return out
    head = ["family", "condition", "episodes", "successes", "success rate", "95% CI (Wilson)",
            "planner calls / ep", "wall s / ep", "steps / ep", "timeout/died/error"]
    body = []
    for f in rep.families:
        for cond in rep.conditions:
            c = rep.cells.get((f, cond))
            if c is None:
                continue
            body.append([f, cond, str(c.n), str(c.successes), _rate(c), _ci(c), f"{c.mean(c.planner_calls):.2f}",
                         f"{c.mean(c.wall_s):.1f}", f"{c.mean(c.steps):.0f}", str(c.unfinished)])
    out.append(("Success by family and condition", head, body, [False] * len(body)))
    if len(rep.families) > 1:
        body = []
        for cond in rep.conditions:
            c = rep.by_condition[cond]
            body.append([ALL, cond, str(c.n), str(c.successes), _rate(c), _ci(c), f"{c.mean(c.planner_calls):.2f}",
                         f"{c.mean(c.wall_s):.1f}", f"{c.mean(c.steps):.0f}", str(c.unfinished)])
        out.append(("Success by condition (all families)", head, body, [False] * len(body)))
    if rep.comparisons is not None:
        head = ["family", "condition", "this", "other", "difference", "p (Fisher exact)", "p (z test)", "verdict"]
        body, flags = [], []
        for cmp in rep.comparisons:
            a, b = cmp.this, cmp.other
            body.append([cmp.family, cmp.condition, f"{a.successes}/{a.n} = {_rate(a)}",
                         f"{b.successes}/{b.n} = {_rate(b)}", f"{cmp.diff:+.3f}", _p(cmp.p_fisher), _p(cmp.p_z),
                         cmp.verdict])
            flags.append(cmp.verdict == "regression")
        out.append((f"Against {rep.against}", head, body, flags))
    if rep.unfinished:
        head = ["episode", "stop reason", "attempts", "error"]
        body = [[str(r["key"]), str(r["stop_reason"]), str(r["attempts"]), str(r["error"])[:200]]
                for r in rep.unfinished[:100]]
        title = "Episodes that did not finish" + (f" (first 100 of {len(rep.unfinished)})"
                                                  if len(rep.unfinished) > 100 else "")
        out.append((title, head, body, [False] * len(body)))
    return out


def _horizon_plot(hs: HorizonScores) -> str:
    def tally(m: str, h: int):  # noqa: ANN202
        t = hs.tally(m, h)
        return t if t.n else None

    values = [[(t.accuracy if (t := tally(m, h)) else None) for m in hs.memories] for h in hs.horizons]
    errors = [[(wilson(t.correct, t.n) if (t := tally(m, h)) else None) for m in hs.memories] for h in hs.horizons]
    notes = [[(f"h{h} / {m}: {t.correct}/{t.n}" if (t := tally(m, h)) else "") for m in hs.memories]
             for h in hs.horizons]
    return bar_chart([f"horizon {h}" for h in hs.horizons], hs.memories, values, errors,
                     title="Memory accuracy against horizon (95% Wilson CI)", ylabel="questions answered right",
                     ymax=1.0, percent=True, note=notes)


def _plots(rep: Report) -> list[tuple[str, str, str]]:
    """(file suffix, title, SVG) of every plot."""
    extra = ([("horizon", "Memory accuracy against horizon", _horizon_plot(rep.horizon))]
             if rep.horizon is not None else [])
    if not rep.rows:
        return extra
    fams, conds = rep.families, rep.conditions

    def grid(fn):  # noqa: ANN001, ANN202
        return [[fn(rep.cells[(f, c)]) if (f, c) in rep.cells else None for c in conds] for f in fams]

    success = bar_chart(
        fams, conds, grid(lambda c: c.rate), grid(lambda c: c.ci), title="Success rate (95% Wilson CI)",
        ylabel="success rate", ymax=1.0, percent=True,
        note=grid(lambda c: f"{c.family} / {c.condition}: {c.successes}/{c.n} = {_rate(c)} {_ci(c)}"))
    calls = bar_chart(
        fams, conds, grid(lambda c: c.mean(c.planner_calls)), grid(lambda c: (c.calls_min, c.calls_max)),
        title="Planner calls per episode (mean, min-max)", ylabel="planner calls",
        note=grid(lambda c: f"{c.family} / {c.condition}: mean {c.mean(c.planner_calls):.2f}, "
                            f"min {c.calls_min:g}, max {c.calls_max:g}"))
    wall = bar_chart(
        fams, conds, grid(lambda c: c.mean(c.wall_s)), grid(lambda c: (c.wall_min, c.wall_max)),
        title="Wall time per episode (mean, min-max)", ylabel="seconds",
        note=grid(lambda c: f"{c.family} / {c.condition}: mean {c.mean(c.wall_s):.1f} s, "
                            f"min {c.wall_min:.1f} s, max {c.wall_max:.1f} s"))
    return [("success", "Success rate", success), ("planner-calls", "Planner calls per episode", calls),
            ("wall", "Wall time per episode", wall), *extra]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _intro(rep: Report) -> list[str]:
    suite = []
    if rep.horizon is not None:
        hs = rep.horizon
        types = sorted({k for c in hs.cells.values() for k in c if k != ALL_TYPES})
        suite = [f"Suite: {hs.suite}: {hs.episodes} episodes at horizons {', '.join(map(str, hs.horizons))}, "
                 f"each replayed under {len(hs.memories)} memory configurations ({', '.join(hs.memories)}); "
                 f"question types: {', '.join(types)}"]
    if not rep.rows:
        return suite
    total = sum(c.n for c in rep.cells.values())
    ok = sum(c.successes for c in rep.cells.values())
    lo, hi = wilson(ok, total)
    varying = ", ".join(rep.varying) if rep.varying else "none (one condition)"
    return [f"Results: {rep.source}", f"Episodes: {total}, successes: {ok} ({ok / total:.3f}, 95% CI "
            f"[{lo:.3f}, {hi:.3f}]); did not finish: {len(rep.unfinished)}",
            f"Families: {', '.join(rep.families)}; conditions vary in: {varying}", *suite]


def render_markdown(rep: Report, plot_files: Sequence[tuple[str, str]] = ()) -> str:
    """The report as Markdown (regressions in bold); ``plot_files``: (title, relative path) to link."""
    lines = ["# Evaluation report", ""]
    lines += [f"- {line}" for line in _intro(rep)]
    if rep.comparisons is not None:
        n_reg = sum(c.verdict == "regression" for c in rep.comparisons)
        lines.append(f"- Compared with {rep.against}: {len(rep.comparisons)} (family, condition) pairs, "
                     f"**{n_reg} regression(s)** (lower success, Fisher exact p < {ALPHA})")
    lines.append("")
    for title, head, body, flags in _tables(rep):
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row, flag in zip(body, flags, strict=True):
            cells = [_md_cell(v) for v in row]
            if flag:
                cells = [f"**{v}**" for v in cells]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if plot_files:
        lines += ["## Plots", ""]
        lines += [f"![{title}]({path})" for title, path in plot_files]
        lines.append("")
    return "\n".join(lines)


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; }
td:nth-child(1), td:nth-child(2) { text-align: left; }
tr.regression td { color: #c00; font-weight: bold; background: #fff0f0; }
figure { margin: 1em 0; }
"""


def render_html(rep: Report, svgs: Sequence[tuple[str, str]]) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG, no scripts, no external files."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>Evaluation report</title>",
           f"<style>{CSS}</style></head><body>", "<h1>Evaluation report</h1>", "<ul>"]
    out += [f"<li>{escape(line)}</li>" for line in _intro(rep)]
    if rep.comparisons is not None:
        n_reg = sum(c.verdict == "regression" for c in rep.comparisons)
        out.append(f"<li>Compared with {escape(str(rep.against))}: {len(rep.comparisons)} (family, condition) "
                   f"pairs, <strong>{n_reg} regression(s)</strong> (lower success, Fisher exact p &lt; {ALPHA})</li>")
    out.append("</ul>")
    for title, svg in svgs:
        out.append(f"<figure>{svg}<figcaption>{escape(title)}</figcaption></figure>")
    for title, head, body, flags in _tables(rep):
        out += [f"<h2>{escape(title)}</h2>", "<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
        for row, flag in zip(body, flags, strict=True):
            attr = ' class="regression"' if flag else ""
            out.append(f"<tr{attr}>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def _out_base(results: Path, folder: Path, out: str | Path | None) -> Path:
    if out is None:
        return folder / "report"
    p = Path(out)
    return p.with_suffix("") if p.suffix in (".md", ".html") else p


def write_report(results: str | Path | None, out: str | Path | None = None,
                 against: str | Path | None = None, suite: str | Path | None = None, capacity: int = 16,
                 policies: Sequence[str] | None = None, progress: Callable[[str], None] | None = None
                 ) -> list[Path]:
    """Write ``OUT.md``, ``OUT.html`` and ``OUT-*.svg`` for the results at ``results`` (default
    ``OUT``: ``<results folder>/report``); with ``suite``, also memory accuracy against horizon
    per short-term policy (:func:`mnemobot.evaluation.horizon.score_suite`), and ``results`` may
    be None (default ``OUT``: ``<suite>/report``). Returns the paths written."""
    if results is None and suite is None:
        raise UserError("nothing to report: give evaluation results, a suite (--suite), or both")
    if results is not None:
        rows, folder = read_results(results)
        other = read_results(against)[0] if against is not None else None
        rep = build_report(rows, str(results), other, str(against) if against is not None else "")
    else:
        if against is not None:
            raise UserError("--against compares evaluation results: give the results too")
        rep, folder = empty_report(), Path(suite)  # type: ignore[arg-type]
    if suite is not None:
        from mnemobot.evaluation.horizon import score_suite

        rep.horizon = score_suite(suite, capacity=capacity, policies=policies, progress=progress)
    base = _out_base(Path(results) if results is not None else folder, folder, out)
    base.parent.mkdir(parents=True, exist_ok=True)
    plots = _plots(rep)
    written: list[Path] = []
    links = []
    for suffix, title, svg in plots:
        path = base.with_name(f"{base.name}-{suffix}.svg")
        path.write_text(svg + "\n")
        written.append(path)
        links.append((title, path.name))
    md, html = base.with_name(base.name + ".md"), base.with_name(base.name + ".html")
    md.write_text(render_markdown(rep, links))
    html.write_text(render_html(rep, [(t, s) for _, t, s in plots]))
    return [md, html, *written]
