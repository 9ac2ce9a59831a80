"""How far each drawer of the map stands open, seen in a depth frame.

The body reports the drawers its own skills opened (:meth:`~mnemobot.memory.memory.Memory.set_body`);
a drawer found open, or moved by anything else (a learned policy's keyframes, a person), is known
only by looking. A drawer slides along its ``open_direction`` by up to ``open_distance``; opened by
``s`` metres, its front panel and handle stand ``s`` in front of where the closed handle is. So:

* the **swept box** of a place: in front of the closed handle (from the handle plus the sensor's
  noise margin) to ``open_distance`` beyond it, the drawer's width (surface size across the
  opening direction) less a side margin, from below its inner bottom to above its handle;
* the points of a frame inside that box, from furniture pixels only (the instance mask's static
  labels: the robot, the floor and the objects are not the drawer), give the opening: the 95th
  percentile of how far they stand in front of the closed handle (the panel and the handle are the
  farthest surfaces of an open drawer; the percentile keeps a few noisy pixels from deciding);
* with too few points there, the box is **seen empty** when most of a row of sample points along
  its middle project into the frame with depth returns beyond them (the camera looks through the
  place an open drawer would fill): the drawer is closed. Otherwise (out of view, occluded) the
  frame says nothing about it.

Thresholds come from the sensor model: the margin is the graph's (3 sigma of the sensor's point
error at that range, at least 2 cm); the least number of points is what a 5 cm square of drawer
panel covers at that range, with the frame's focal length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnemobot.perception.objects import backproject_pixels
from mnemobot.perception.types import Observation

__all__ = ["DrawerView", "perceive_openings"]

PANEL_PATCH_M = 0.05
"""The least panel an open drawer shows to be seen: a 5 cm square (in pixels at the box's range)."""
SIDE_MARGIN = 0.8
"""The box spans this fraction of the drawer's width (the cabinet's sides stay out)."""
EMPTY_FRACTION = 0.8
"""A box is seen empty when this fraction of its in-frame sample points are seen through."""


@dataclass(frozen=True)
class DrawerView:
    """What one frame says about one drawer: ``opening`` (m) and the points it rests on (0 when
    the box was seen empty)."""

    opening: float
    points: int


def _box(place: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, tuple[float, float]] | None:
    """``(closed handle, opening direction u, lateral v, half width, depth D, (z lo, z hi))``."""
    handle = getattr(place, "handle", None)
    direction = getattr(place, "open_direction", None)
    if handle is None or direction is None:
        return None
    u = np.asarray(direction, dtype=float).copy()
    u[2] = 0.0
    n = float(np.linalg.norm(u))
    if n < 1e-6:
        return None
    u /= n
    v = np.array([-u[1], u[0], 0.0])
    rot = place.surface.rotation
    sx, sy = (float(s) for s in place.surface_size)
    half = 0.5 * (abs(float(v @ rot[:, 0])) * sx + abs(float(v @ rot[:, 1])) * sy)
    h0 = np.asarray(handle.position, dtype=float)
    z_lo = min(float(place.surface.position[2]), float(h0[2])) - 0.05
    z_hi = float(h0[2]) + 0.08
    return h0, u, v, SIDE_MARGIN * half, float(place.open_distance), (z_lo, z_hi)


def perceive_openings(obs: Observation, places: Iterable[Any], static_labels: Iterable[str],
                      margin: Callable[[float, float], float]) -> dict[str, DrawerView]:
    """``{place name: DrawerView}`` for the articulated places (with ``handle`` and
    ``open_direction``) this frame shows; see the module docstring. ``margin(z, fx)``: the
    memory's noise margin at range ``z``. Frames without an instance mask say nothing (the robot's
    own arm could not be told from a drawer)."""
    if obs.instances is None:
        return {}
    boxes = {p.name: b for p in places if (b := _box(p)) is not None}
    if not boxes:
        return {}
    static = set(static_labels)
    ids = [i for i, lab in obs.labels.items() if lab in static] if static else [i for i in obs.labels]
    depth = obs.depth
    flat_ids = np.asarray(obs.instances).ravel()
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth.ravel()) & (depth.ravel() > 0)
    furniture = np.flatnonzero(valid & np.isin(flat_ids, np.asarray(ids, dtype=flat_ids.dtype)))
    pts = backproject_pixels(furniture, depth, obs.intrinsics, obs.camera_pose) if len(furniture) else np.zeros((0, 3))
    k = obs.intrinsics
    cam_inv = obs.camera_pose.inverse()
    out: dict[str, DrawerView] = {}
    for name, (h0, u, v, half, dist, (z_lo, z_hi)) in boxes.items():
        z_range = float(np.linalg.norm(h0 - obs.camera_pose.position))
        m = float(margin(z_range, float(k.fx)))
        rel = pts - h0
        s, lat = rel @ u, rel @ v
        inside = (s > m) & (s < dist + 2 * m) & (np.abs(lat) < half) & (pts[:, 2] > z_lo) & (pts[:, 2] < z_hi)
        need = max(4, int((k.fx * PANEL_PATCH_M / max(z_range, 1e-3)) ** 2))
        n_in = int(np.count_nonzero(inside))
        if n_in >= need:
            out[name] = DrawerView(float(min(dist, np.percentile(s[inside], 95))), n_in)
            continue
        # few points: is the box seen empty? sample its middle row, at the handle's height
        samples = h0 + np.outer(np.linspace(max(2 * m, 0.05), dist, 8), u)
        local = cam_inv.apply(samples)
        zc = local[:, 2]
        front = zc > 0.05
        if not front.any():
            continue
        uu = np.round(k.fx * local[:, 0] / np.where(front, zc, 1.0) + k.cx).astype(int)
        vv = np.round(k.fy * local[:, 1] / np.where(front, zc, 1.0) + k.cy).astype(int)
        seen = front & (uu >= 0) & (uu < k.width) & (vv >= 0) & (vv < k.height)
        if np.count_nonzero(seen) < 4:
            continue
        d = depth[vv[seen], uu[seen]]
        with np.errstate(invalid="ignore"):
            through = np.isfinite(d) & (d > zc[seen] + m)
        if np.count_nonzero(through) >= EMPTY_FRACTION * np.count_nonzero(seen):
            out[name] = DrawerView(0.0, 0)
    return out
