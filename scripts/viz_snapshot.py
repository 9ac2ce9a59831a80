"""Draw a top-down picture of a rerun recording written by ``mnemobot run --viz`` or ``mnemobot viz``,
without the rerun viewer: the world points the camera saw (coloured by the image), the map's rooms
and places, memory's objects coloured by state with their labels, and the robot's path.

Everything drawn is read back from the ``.rrd`` file with rerun's own reader
(:func:`mnemobot.evaluation.viz.read_rrd`), so the picture shows what the recording holds.

Usage::

    python scripts/viz_snapshot.py place-0.rrd -o docs/viz.png            # a panel while carrying, one at the end
    python scripts/viz_snapshot.py place-0.rrd -o end.png --time 39.9     # one panel per --time
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnemobot.evaluation.viz import STATES, read_rrd

BACKGROUND = (250, 250, 252)
ROOM = (110, 110, 130)
PLACE = (185, 185, 200)
PATH = (235, 60, 60)
INK = (30, 30, 40)
STATE_OF = {cid: (state, rgba) for state, (cid, rgba) in STATES.items()}


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _latest(rows: list[tuple[float | None, dict[str, Any]]], t: float) -> dict[str, Any]:
    """The last row at or before ``t`` (static rows count as before everything)."""
    best: dict[str, Any] = {}
    for when, row in rows:
        if when is None or when <= t + 1e-9:
            best = row
    return best


def _rgb(colours: np.ndarray) -> np.ndarray:
    """``(N,)`` uint32 0xRRGGBBAA -> ``(N, 3)`` uint8."""
    c = np.asarray(colours, dtype=np.uint32)
    return np.stack([(c >> 24) & 255, (c >> 16) & 255, (c >> 8) & 255], axis=1).astype(np.uint8)


class Panel:
    """World (x, y) in metres -> pixels of one panel."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, width: int, top: int) -> None:
        self.lo, self.hi = lo, hi
        self.scale = (width - 20) / float(hi[0] - lo[0])
        self.height = int(math.ceil((hi[1] - lo[1]) * self.scale)) + 20
        self.top = top

    def px(self, xy: np.ndarray) -> np.ndarray:
        xy = np.atleast_2d(np.asarray(xy, dtype=float))[:, :2]
        u = 10 + (xy[:, 0] - self.lo[0]) * self.scale
        v = self.top + 10 + (self.hi[1] - xy[:, 1]) * self.scale
        return np.stack([u, v], axis=1)


def _bounds(rec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    pts: list[np.ndarray] = []
    for strip in _latest(rec.get("/world/map/rooms", []), 0.0).get("LineStrips3D:strips", []):
        pts.append(np.asarray(strip, dtype=float)[:, :2])
    if not pts:
        for _t, row in rec.get("/world/points", []):
            pts.append(np.asarray(row.get("Points3D:positions", np.zeros((0, 3))))[:, :2])
    allp = np.concatenate(pts) if pts else np.array([[0.0, 0.0], [1.0, 1.0]])
    return allp.min(axis=0) - 0.2, allp.max(axis=0) + 0.2


def _draw_points(img: np.ndarray, panel: Panel, rec: dict[str, Any], t: float) -> int:
    pos, col = [], []
    for when, row in rec.get("/world/points", []):
        if when is not None and when > t + 1e-9:
            break
        if "Points3D:positions" in row and "Points3D:colors" in row:
            pos.append(np.asarray(row["Points3D:positions"], dtype=float))
            col.append(_rgb(row["Points3D:colors"]))
    if not pos:
        return 0
    p, c = np.concatenate(pos), np.concatenate(col)
    order = np.argsort(p[:, 2], kind="stable")  # higher surfaces drawn over the floor
    p, c = p[order], c[order]
    uv = np.round(panel.px(p)).astype(int)
    h, w = img.shape[:2]
    for du in (0, 1):
        for dv in (0, 1):
            u, v = uv[:, 0] + du, uv[:, 1] + dv
            ok = (u >= 0) & (u < w) & (v >= panel.top) & (v < min(h, panel.top + panel.height))
            img[v[ok], u[ok]] = (0.55 * c[ok] + 0.45 * 255).astype(np.uint8)  # lightened: the boxes stay legible
    return len(p)


def _rect(d: ImageDraw.ImageDraw, panel: Panel, centre: np.ndarray, half: np.ndarray, quat: np.ndarray | None,
          outline: tuple[int, ...], fill: tuple[int, ...] | None, width: int) -> None:
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * np.asarray(half[:2], dtype=float)
    if quat is not None:
        x, y, z, w = (float(v) for v in quat)
        yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        rot = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
        corners = corners @ rot.T
    uv = panel.px(corners + np.asarray(centre[:2], dtype=float))
    d.polygon([tuple(p) for p in uv.tolist()], outline=outline, fill=fill, width=width)


def _label(d: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Any, colour: tuple[int, ...]) -> None:
    w = d.textbbox((0, 0), text, font=font)[2]
    xy = (min(max(4.0, xy[0]), d.im.size[0] - w - 6.0), xy[1])  # inside the picture
    box = d.textbbox(xy, text, font=font)
    d.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(255, 255, 255, 215))
    d.text(xy, text, font=font, fill=colour)


def draw(rec: dict[str, Any], times: list[float], width: int = 900) -> tuple[Image.Image, dict[str, Any]]:
    """The picture (one panel per time) and what it shows (counts, labels, states)."""
    lo, hi = _bounds(rec)
    title_h = 30
    panels: list[Panel] = []
    top = title_h
    for _ in times:
        panels.append(Panel(lo, hi, width, top + 18))
        top += panels[-1].height + 18
    legend_h = 30
    base = np.full((top + legend_h, width, 3), BACKGROUND, dtype=np.uint8)
    shown: dict[str, Any] = {"points": [], "objects": []}
    for panel, t in zip(panels, times, strict=True):
        shown["points"].append(_draw_points(base, panel, rec, t))
    img = Image.fromarray(base).convert("RGBA")
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(overlay)
    small, font, big = _font(11), _font(13), _font(15)
    task = _latest(rec.get("/task", []), 0.0).get("TextDocument:text", [""])
    d.text((10, 8), f"task: {task[0]}" if task and task[0] else "mnemobot recording", font=big, fill=INK)
    rooms = _latest(rec.get("/world/map/rooms", []), 0.0)
    places = _latest(rec.get("/world/map/places", []), 0.0)
    for panel, t in zip(panels, times, strict=True):
        d.text((10, panel.top - 16), f"sim_time {t:.1f} s", font=font, fill=INK)
        for strip, name in zip(rooms.get("LineStrips3D:strips", []), rooms.get("LineStrips3D:labels", []),
                               strict=False):
            uv = panel.px(np.asarray(strip, dtype=float))
            d.line([tuple(p) for p in uv.tolist()], fill=ROOM + (255,), width=2)
            d.text((float(uv[:, 0].min()) + 6, float(uv[:, 1].min()) + 4), name.replace("_", " "), font=font, fill=ROOM)
        quats = places.get("Boxes3D:quaternions")
        for i, (c, h) in enumerate(zip(places.get("Boxes3D:centers", []), places.get("Boxes3D:half_sizes", []),
                                       strict=False)):
            _rect(d, panel, c, h, None if quats is None else quats[i], PLACE + (255,), PLACE + (70,), 1)
            name = places.get("Boxes3D:labels", [""] * (i + 1))[i]
            u, v = panel.px(np.asarray(c))[0]
            d.text((u - 4 * len(name) / 1.3, v + h[1] * panel.scale + 2), name, font=small, fill=(120, 120, 135))
        path = _latest(rec.get("/world/robot/path", []), t).get("LineStrips3D:strips", [])
        if path and len(path[0]) > 1:
            uv = panel.px(np.asarray(path[0], dtype=float))
            d.line([tuple(p) for p in uv.tolist()], fill=PATH + (255,), width=3, joint="curve")
            u0, v0 = uv[0]
            d.ellipse((u0 - 4, v0 - 4, u0 + 4, v0 + 4), outline=PATH + (255,), width=2)
        base_row = _latest(rec.get("/world/robot/base", []), t)
        if "Arrows3D:origins" in base_row:
            o, vec = np.asarray(base_row["Arrows3D:origins"])[0], np.asarray(base_row["Arrows3D:vectors"])[0]
            (u0, v0), (u1, v1) = panel.px(np.stack([o, o + vec]))
            d.ellipse((u0 - 7, v0 - 7, u0 + 7, v0 + 7), fill=PATH + (255,))
            d.line((u0, v0, u1, v1), fill=PATH + (255,), width=3)
        objs = _latest(rec.get("/world/objects", []), t)
        labels = objs.get("Boxes3D:labels", [])
        placed: list[tuple[float, float]] = []
        for c, h, cid, text in zip(objs.get("Boxes3D:centers", []), objs.get("Boxes3D:half_sizes", []),
                                   objs.get("Boxes3D:class_ids", []), labels, strict=False):
            state, rgba = STATE_OF.get(int(cid), ("present", STATES["present"][1]))
            grow = np.maximum(np.asarray(h, dtype=float), 0.04)  # small objects stay visible
            _rect(d, panel, c, grow, None, rgba[:3] + (255,), rgba[:3] + (90,), 3)
            u, v = panel.px(np.asarray(c))[0]
            above, below = v - grow[1] * panel.scale - 16, v + grow[1] * panel.scale + 3
            tries = [y for k in range(12) for y in (above - 14 * k, below + 14 * k)]
            inside = [y for y in tries if panel.top + 2 <= y <= panel.top + panel.height - 14] or [above]
            ty = next((y for y in inside if not any(abs(y - py) < 14 and abs(u - px) < 150 for px, py in placed)),
                      inside[0])
            placed.append((u, ty))
            _label(d, (u - 30, ty), f"{text}: {state}", small, tuple(int(x) for x in rgba[:3]))
            shown["objects"].append((round(t, 2), text, state))
    y = top + 8
    x = 10
    for state, (_cid, rgba) in STATES.items():
        d.rectangle((x, y, x + 14, y + 14), outline=rgba[:3] + (255,), fill=rgba[:3] + (90,), width=3)
        d.text((x + 20, y), state, font=font, fill=INK)
        x += 100
    d.line((x, y + 7, x + 24, y + 7), fill=PATH + (255,), width=3)
    d.text((x + 30, y), "robot path", font=font, fill=INK)
    d.text((x + 130, y), "points: depth seen by the camera, coloured by the image", font=font, fill=(100, 100, 110))
    out = Image.alpha_composite(img, overlay).convert("RGB")
    return out, shown


def default_times(rec: dict[str, Any]) -> list[float]:
    """A moment the robot holds an object (when it does) and the end of the recording."""
    rows = rec.get("/world/objects", [])
    end = max((t for t, _ in rows if t is not None), default=0.0)
    for key in ("/world/points", "/world/robot/base"):
        end = max([end] + [t for t, _ in rec.get(key, []) if t is not None])
    held = [t for t, row in rows if t is not None and STATES["held"][0] in list(row.get("Boxes3D:class_ids", []))]
    if held:
        mid = held[len(held) // 2]
        if mid < end - 1.0:
            return [mid, end]
    return [end]


def save_small(img: Image.Image, out: Path, limit: int = 200_000) -> int:
    """Write a PNG, reduced to a 256-colour palette when the full-colour one is over ``limit`` bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    if out.stat().st_size > limit:
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Top-down picture of a mnemobot rerun recording (.rrd).")
    ap.add_argument("rrd", type=Path, help="recording written by 'mnemobot run --viz' or 'mnemobot viz'")
    ap.add_argument("-o", "--out", type=Path, default=Path("docs/viz.png"), help="PNG to write (default docs/viz.png)")
    ap.add_argument("--time", type=float, action="append", default=None, metavar="S",
                    help="sim_time of a panel, repeatable (default: while carrying, and the end)")
    ap.add_argument("--width", type=int, default=900, help="picture width in pixels (default 900)")
    args = ap.parse_args(argv)
    if not args.rrd.is_file():
        print(f"viz_snapshot: no such recording: {args.rrd}", file=sys.stderr)
        return 2
    rec = read_rrd(args.rrd)
    times = args.time or default_times(rec)
    img, shown = draw(rec, times, args.width)
    size = save_small(img, args.out)
    print(f"{args.out}: {img.width}x{img.height}, {size / 1e3:.0f} KB; panels at {', '.join(f'{t:.1f}' for t in times)} s;"
          f" points drawn {shown['points']}")
    for t, text, state in shown["objects"]:
        print(f"  t={t:5.1f} s  {text}: {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
