"""Grouped bar charts as inline SVG text (no plotting library): bars with optional error bars.

Usage::

    svg = bar_chart(["place", "fetch"], ["memory=on", "memory=off"], values, errors, title="success")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["PALETTE", "bar_chart"]

PALETTE = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#332288")
"""Colour-blind-safe series colours (Tol's bright scheme), cycled."""


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 2.5, 5, 10):
        if step * mag >= v:
            return step * mag
    return 10 * mag


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def bar_chart(groups: Sequence[str], series: Sequence[str], values: Sequence[Sequence[float | None]],
              errors: Sequence[Sequence[tuple[float, float] | None]] | None = None, *, title: str = "",
              ylabel: str = "", ymax: float | None = None, percent: bool = False, width: int = 720,
              height: int = 320, note: Sequence[Sequence[str]] | None = None) -> str:
    """An SVG grouped bar chart: ``values[g][s]`` is series ``s`` in group ``g`` (None: no bar);
    ``errors[g][s]`` an interval ``(low, high)`` drawn as an error bar; ``note[g][s]`` the bar's
    tooltip. ``percent``: the y axis shows 0-100%."""
    left, right, top, bottom = 56, 12, 28, 58
    legend_h = 18 * ((len(series) + 2) // 3) if len(series) > 1 else 0
    h = height + legend_h
    plot_w, plot_h = width - left - right, height - top - bottom
    tops = [v for row in values for v in row if v is not None]
    if errors:
        tops += [e[1] for row in errors for e in row if e is not None]
    top_v = ymax if ymax is not None else _nice_max(max(tops, default=0.0) * 1.05)

    def y(v: float) -> float:
        return top + plot_h - plot_h * max(0.0, min(v, top_v)) / top_v

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" viewBox="0 0 {width} {h}" '
           f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">']
    out.append(f'<rect x="0" y="0" width="{width}" height="{h}" fill="#ffffff"/>')
    if title:
        out.append(f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="13" '
                   f'font-weight="bold">{escape(title)}</text>')
    for i in range(6):  # grid and y ticks
        v = top_v * i / 5
        yy = y(v)
        label = f"{100 * v:.0f}%" if percent else _fmt(v)
        out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{width - right}" y2="{yy:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#444">{label}</text>')
    if ylabel:
        out.append(f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
                   f'fill="#444">{escape(ylabel)}</text>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#888"/>')
    ng, ns = max(len(groups), 1), max(len(series), 1)
    group_w = plot_w / ng
    bar_w = min(48.0, group_w * 0.8 / ns)
    for g, group in enumerate(groups):
        gx = left + g * group_w
        start = gx + (group_w - bar_w * ns) / 2
        for s in range(len(series)):
            v = values[g][s] if g < len(values) and s < len(values[g]) else None
            if v is None:
                continue
            x = start + s * bar_w
            colour = PALETTE[s % len(PALETTE)]
            tip = note[g][s] if note is not None else f"{group} / {series[s]}: {_fmt(v)}"
            out.append(f'<rect x="{x + 1:.1f}" y="{y(v):.1f}" width="{bar_w - 2:.1f}" '
                       f'height="{top + plot_h - y(v):.1f}" fill="{colour}"><title>{escape(tip)}</title></rect>')
            err = errors[g][s] if errors is not None else None
            if err is not None:
                cx, lo, hi = x + bar_w / 2, y(err[0]), y(err[1])
                out.append(f'<path d="M{cx:.1f} {lo:.1f}V{hi:.1f}M{cx - 4:.1f} {lo:.1f}H{cx + 4:.1f}'
                           f'M{cx - 4:.1f} {hi:.1f}H{cx + 4:.1f}" stroke="#222" stroke-width="1.2" fill="none"/>')
        out.append(f'<text x="{gx + group_w / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                   f'fill="#222">{escape(group)}</text>')
    if len(series) > 1:
        col_w = (width - left) / 3
        for s, name in enumerate(series):
            lx = left + (s % 3) * col_w
            ly = height - 8 + 18 * (s // 3)
            out.append(f'<rect x="{lx:.1f}" y="{ly - 10}" width="12" height="12" fill="{PALETTE[s % len(PALETTE)]}"/>')
            out.append(f'<text x="{lx + 17:.1f}" y="{ly}" fill="#222">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
