"""Point-cloud primitives: down-sampling, outlier removal and bounding boxes.

Every function takes an ``(N, 3)`` array of points (metres; world frame z up for the
gravity-aligned box) and returns numpy arrays. Where a function has a ``backend`` argument it
runs on open3d when that package is importable (``"auto"``, the default) and on plain numpy
otherwise; ``"open3d"`` or ``"numpy"`` force one. Both backends compute the same thing:

* :func:`voxel_down` -- one point per occupied voxel, the mean of the points inside it. The grid
  is anchored like open3d's: voxel ``k`` along an axis covers
  ``[min - voxel/2 + k voxel, min + voxel/2 + k voxel)`` where ``min`` is the cloud's minimum.
* :func:`remove_outliers` -- open3d's statistical filter: for every point the mean distance to
  its ``nb_neighbors`` nearest points (the point itself included, at distance 0); a point is kept
  when that mean is positive and below ``mean + std_ratio * std`` of all those means (sample
  standard deviation).
* :func:`oriented_box` -- a general 3D oriented box from principal axes (open3d: of the convex
  hull's vertices; numpy: of all points), in a canonical form: extents in decreasing order, the
  rotation's columns the matching axes, right-handed.

:func:`aabb` and :func:`gravity_obb` are numpy only (open3d has no yaw-only box, and its
axis-aligned box is the same min/max). :func:`gravity_obb` is the box used for objects resting
on horizontal surfaces: its z axis is the world's, so only the yaw is free, and the footprint is
the minimum-area rectangle enclosing the points' ``(x, y)`` (rotating calipers on a convex
polygon of extreme points), which fits box-like objects exactly even when only part of them is
visible -- unlike principal axes, which are undefined for a square footprint.

open3d is imported lazily, on the first call that can use it, and is never required.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import Literal

import numpy as np

__all__ = [
    "Backend",
    "aabb",
    "extreme_polygon",
    "gravity_obb",
    "grouped_gravity_obb",
    "grouped_min_area_rect",
    "grouped_voxel_down",
    "min_area_rect",
    "open3d_available",
    "oriented_box",
    "remove_outliers",
    "voxel_down",
]

Backend = Literal["auto", "open3d", "numpy"]
"""Which implementation runs a cloud operation; ``"auto"`` prefers open3d when importable."""

_KNN_CHUNK = 1024  # rows per block of the numpy k-nearest-neighbour search
_SAME_POINT_SQ = 1e-14  # squared distances below this (0.1 micrometre) count as coincident points


@functools.cache
def _open3d_module() -> ModuleType | None:
    try:
        import open3d
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return open3d


def open3d_available() -> bool:
    """Whether open3d can be imported (the result is cached)."""
    return _open3d_module() is not None


def _use_open3d(backend: Backend) -> ModuleType | None:
    """The open3d module when ``backend`` selects it, else None; raise if it is forced but missing."""
    if backend == "numpy":
        return None
    if backend not in ("auto", "open3d"):
        raise ValueError(f"unknown point-cloud backend {backend!r}; use 'auto', 'open3d' or 'numpy'")
    o3d = _open3d_module()
    if o3d is None and backend == "open3d":
        raise ImportError("the 'open3d' point-cloud backend needs open3d: pip install 'mnemobot[perception]'")
    return o3d


def _as_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {pts.shape}")
    return pts


def _o3d_cloud(o3d: ModuleType, pts: np.ndarray):  # noqa: ANN202 - open3d type is optional
    return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))


# -- down-sampling and outliers --------------------------------------------------------------------
def _group_starts(starts: np.ndarray | None, n: int) -> np.ndarray:
    """Validated start offsets of contiguous, non-empty groups of ``n`` rows."""
    if starts is None:
        return np.zeros(1 if n else 0, dtype=np.intp)
    st = np.asarray(starts, dtype=np.intp).reshape(-1)
    if len(st) and (st[0] != 0 or np.any(np.diff(st) <= 0) or st[-1] >= n):
        raise ValueError("group starts must begin at 0 and increase strictly, each group non-empty")
    if len(st) == 0 and n:
        raise ValueError("points given without any group start")
    return st


def grouped_voxel_down(points: np.ndarray, voxel: float, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`voxel_down` of every group ``points[starts[i]:starts[i + 1]]`` at once (numpy).

    Each group keeps its own grid anchor (its own minimum), so the result equals down-sampling
    the groups one by one. Returns ``(points, starts)`` of the down-sampled groups.
    """
    pts = _as_points(points)
    st = _group_starts(starts, len(pts))
    if voxel <= 0 or len(pts) == 0:
        return pts.copy(), st.copy()
    group = np.repeat(np.arange(len(st)), np.diff(np.r_[st, len(pts)]))
    origin = np.minimum.reduceat(pts, st, axis=0) - 0.5 * voxel
    cells = np.floor((pts - origin[group]) / voxel).astype(np.int64)
    span = cells.max(axis=0) + 1
    keys = ((group * span[0] + cells[:, 0]) * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, weights=pts[:, i], minlength=len(counts)) for i in range(3)], axis=1)
    voxel_group = uniq // (span[0] * span[1] * span[2])
    new_starts = np.flatnonzero(np.r_[True, voxel_group[1:] != voxel_group[:-1]])
    return sums / counts[:, None], new_starts


def voxel_down(points: np.ndarray, voxel: float, *, backend: Backend = "auto") -> np.ndarray:
    """Average the points in each occupied cube of side ``voxel`` (m); ``voxel <= 0`` is a no-op.

    Returns ``(M, 3)``, ``M <= N``. The numpy backend returns the voxels in lexicographic order
    of their grid index; open3d's order is unspecified.
    """
    pts = _as_points(points)
    if voxel <= 0 or len(pts) == 0:
        return pts.copy()
    o3d = _use_open3d(backend)
    if o3d is not None:
        return np.asarray(_o3d_cloud(o3d, pts).voxel_down_sample(float(voxel)).points)
    return grouped_voxel_down(pts, voxel, np.zeros(1, dtype=np.intp))[0]


def _knn_mean_distance(pts: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance of every point to its ``k`` nearest points (itself included)."""
    centred = pts - pts.mean(axis=0)
    sq = np.einsum("ij,ij->i", centred, centred)
    out = np.empty(len(pts))
    for start in range(0, len(pts), _KNN_CHUNK):
        block = centred[start : start + _KNN_CHUNK]
        d2 = sq[start : start + _KNN_CHUNK, None] + sq[None, :] - 2.0 * block @ centred.T
        d2[d2 < _SAME_POINT_SQ] = 0.0  # rounding of the expansion; duplicates are exactly 0
        np.put_along_axis(d2, np.arange(len(block))[:, None] + start, 0.0, axis=1)  # exact self-distance
        nearest = np.partition(d2, k - 1, axis=1)[:, :k] if k < len(pts) else d2
        out[start : start + len(block)] = np.sqrt(nearest).mean(axis=1)
    return out


def remove_outliers(
    points: np.ndarray, nb_neighbors: int = 20, std_ratio: float = 2.0, *, backend: Backend = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Statistical outlier removal: ``(kept points, their indices into points)``.

    A point is an outlier when its mean distance to its ``nb_neighbors`` nearest points is at
    least ``std_ratio`` standard deviations above the cloud's average of that quantity. Clouds of
    fewer than two points are returned unchanged. The numpy backend is exact but quadratic in N
    (blocked brute-force neighbour search); use it on object-sized clouds.
    """
    pts = _as_points(points)
    if nb_neighbors < 1 or not std_ratio > 0:
        raise ValueError(f"remove_outliers needs nb_neighbors >= 1 and std_ratio > 0, got {nb_neighbors}, {std_ratio}")
    if len(pts) < 2:
        return pts.copy(), np.arange(len(pts))
    o3d = _use_open3d(backend)
    if o3d is not None:
        _, kept = _o3d_cloud(o3d, pts).remove_statistical_outlier(int(nb_neighbors), float(std_ratio))
        index = np.asarray(kept, dtype=np.intp)
        return pts[index], index
    mean_d = _knn_mean_distance(pts, min(int(nb_neighbors), len(pts)))
    valid = mean_d > 0
    n_valid = int(np.count_nonzero(valid))
    if n_valid < 2:  # no spread to measure: open3d keeps nothing either
        index = np.zeros(0, dtype=np.intp)
        return pts[index], index
    mu = float(mean_d[valid].mean())
    sigma = math.sqrt(float(((mean_d[valid] - mu) ** 2).sum()) / (n_valid - 1))
    index = np.flatnonzero(valid & (mean_d < mu + std_ratio * sigma))
    return pts[index], index


# -- boxes --------------------------------------------------------------------------------------------
def aabb(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box ``(min xyz, max xyz)`` of a non-empty cloud."""
    pts = _as_points(points)
    if len(pts) == 0:
        raise ValueError("aabb of an empty point cloud")
    return pts.min(axis=0), pts.max(axis=0)


def _directions(n: int) -> np.ndarray:
    """``(2, n)`` unit vectors at angles ``2 pi k / n``, counter-clockwise from +x."""
    angles = np.arange(n) * (2.0 * math.pi / n)
    return np.stack([np.cos(angles), np.sin(angles)])


_DIRECTIONS_32 = _directions(32)
_FINE_STEPS = np.radians(np.linspace(-1.5, 1.5, 13))
_QUARTER = 0.5 * math.pi


def extreme_polygon(xy: np.ndarray, directions: int = 32) -> np.ndarray:
    """Convex polygon ``(K, 2)`` (counter-clockwise) through the points extreme in ``directions`` directions.

    For each of ``directions`` evenly spaced unit vectors the point with the largest projection
    is a vertex of the convex hull; sweeping the direction counter-clockwise visits those vertices
    in hull order. The polygon is therefore inscribed in the exact hull and equals it for
    polygonal footprints (a rectangle's corners are extreme in some sampled direction). Cost
    ``O(N * directions)``, vectorised.
    """
    pts = np.asarray(xy, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros((0, 2))
    dirs = _DIRECTIONS_32 if directions == 32 else _directions(directions)
    idx = np.argmax(pts @ dirs, axis=0)
    keep = np.empty(len(idx), dtype=bool)
    keep[0] = idx[0] != idx[-1]
    np.not_equal(idx[1:], idx[:-1], out=keep[1:])
    if not keep.any():
        return pts[idx[:1]]
    return pts[idx[keep]]


def _best_angles(poly: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Per group, the candidate angle whose enclosing rectangle of the polygon is smallest.

    ``poly`` ``(G, P, 2)`` polygon vertices, ``angles`` ``(G, K)`` candidates; returns ``(G,)``.
    """
    c, s = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    x, y = poly[:, :, :1], poly[:, :, 1:]
    u = x * c + y * s  # (G, P, K)
    v = y * c - x * s
    area = (u.max(axis=1) - u.min(axis=1)) * (v.max(axis=1) - v.min(axis=1))
    return np.take_along_axis(angles, np.argmin(area, axis=1)[:, None], axis=1)[:, 0]


def grouped_min_area_rect(xy: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`min_area_rect` of every group ``xy[starts[i]:starts[i + 1]]`` at once.

    Returns ``(centers (G, 2), sizes (G, 2) as (major, minor), yaws (G,))``. Fully vectorised:
    the cost is a few dozen array operations whatever the number of groups.
    """
    pts = np.asarray(xy, dtype=np.float64)
    st = _group_starts(starts, len(pts))
    n_groups = len(st)
    if n_groups == 0:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
    counts = np.diff(np.r_[st, len(pts)])
    group = np.repeat(np.arange(n_groups), counts)
    offset = np.stack([np.add.reduceat(pts[:, i], st) for i in range(2)], axis=1) / counts[:, None]
    local = pts - offset[group]
    # extreme polygon of each group: first point reaching the group's maximum in each direction
    proj = local @ _DIRECTIONS_32
    at_max = proj == np.maximum.reduceat(proj, st, axis=0)[group]
    rows = np.where(at_max, np.arange(len(pts))[:, None], len(pts))
    poly = local[np.minimum.reduceat(rows, st, axis=0)]  # (G, 32, 2); repeated vertices are harmless
    edges = np.roll(poly, -1, axis=1) - poly
    cand = np.mod(np.arctan2(edges[:, :, 1], edges[:, :, 0]), _QUARTER)  # zero-length edges give 0
    best = _best_angles(poly, cand)
    best = _best_angles(poly, best[:, None] + _FINE_STEPS[None, :])
    c, s = np.cos(best), np.sin(best)
    u = local[:, 0] * c[group] + local[:, 1] * s[group]
    v = local[:, 1] * c[group] - local[:, 0] * s[group]
    u0, u1 = np.minimum.reduceat(u, st), np.maximum.reduceat(u, st)
    v0, v1 = np.minimum.reduceat(v, st), np.maximum.reduceat(v, st)
    mid_u, mid_v = 0.5 * (u0 + u1), 0.5 * (v0 + v1)
    centers = offset + np.stack([mid_u * c - mid_v * s, mid_u * s + mid_v * c], axis=1)
    size_u, size_v = u1 - u0, v1 - v0
    swap = size_v > size_u
    sizes = np.stack([np.where(swap, size_v, size_u), np.where(swap, size_u, size_v)], axis=1)
    yaws = np.mod(best + np.where(swap, _QUARTER, 0.0) + _QUARTER, math.pi) - _QUARTER
    return centers, sizes, yaws


def min_area_rect(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Minimum-area enclosing rectangle of 2D points: ``(center (2,), size (major, minor), yaw)``.

    The optimal rectangle has a side along an edge of the convex hull (rotating calipers), so
    the candidate orientations are the edge directions of :func:`extreme_polygon` (modulo 90
    degrees), refined by a +-1.5 degree search. ``yaw`` (rad, in ``[-pi/2, pi/2)``) is the
    direction of the longer side; sizes come from all points, so the box always encloses them.
    """
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        raise ValueError("min_area_rect of an empty point set")
    centers, sizes, yaws = grouped_min_area_rect(pts, np.zeros(1, dtype=np.intp))
    return centers[0], sizes[0], float(yaws[0])


def grouped_gravity_obb(points: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`gravity_obb` of every group ``points[starts[i]:starts[i + 1]]`` at once.

    Returns ``(centers (G, 3), extents (G, 3), yaws (G,))``.
    """
    pts = _as_points(points)
    st = _group_starts(starts, len(pts))
    centers_xy, sizes, yaws = grouped_min_area_rect(pts[:, :2], st)
    if len(st) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3)), yaws
    z0, z1 = np.minimum.reduceat(pts[:, 2], st), np.maximum.reduceat(pts[:, 2], st)
    centers = np.concatenate([centers_xy, (0.5 * (z0 + z1))[:, None]], axis=1)
    return centers, np.concatenate([sizes, (z1 - z0)[:, None]], axis=1), yaws


def gravity_obb(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Yaw-only oriented box of a cloud in a z-up frame: ``(center, extent, yaw)``.

    The footprint is :func:`min_area_rect` of the points' ``(x, y)``; the vertical side spans
    their z range. ``extent`` is ``(major, minor, z)`` (m), ``yaw`` the heading of the major
    axis (rad, in ``[-pi/2, pi/2)``), ``center`` the box centre (not the points' mean).
    """
    pts = _as_points(points)
    if len(pts) == 0:
        raise ValueError("gravity_obb of an empty point cloud")
    centers, extents, yaws = grouped_gravity_obb(pts, np.zeros(1, dtype=np.intp))
    return centers[0], extents[0], float(yaws[0])


def _canonical_box(center: np.ndarray, rot: np.ndarray, extent: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort the axes by decreasing extent, point each of the first two axes along its largest
    component's positive direction and make the frame right-handed."""
    order = np.argsort(-extent, kind="stable")
    r = np.array(rot[:, order], dtype=np.float64)
    ext = np.array(extent[order], dtype=np.float64)
    for j in range(2):
        if r[int(np.argmax(np.abs(r[:, j]))), j] < 0:
            r[:, j] = -r[:, j]
    r[:, 2] = np.cross(r[:, 0], r[:, 1])
    return np.asarray(center, dtype=np.float64), r, ext


def _pca_box(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = pts.mean(axis=0)
    centred = pts - mean
    _, evecs = np.linalg.eigh(centred.T @ centred)
    local = centred @ evecs
    lo, hi = local.min(axis=0), local.max(axis=0)
    return mean + evecs @ (0.5 * (lo + hi)), evecs, hi - lo


def oriented_box(points: np.ndarray, *, backend: Backend = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """General 3D oriented bounding box ``(center, R, extent)`` from principal axes.

    ``R``'s columns are the box axes in the points' frame, sorted so that ``extent`` decreases;
    a point ``p`` is inside when ``|R.T (p - center)| <= extent / 2``. open3d computes the axes
    from the convex hull's vertices (``get_oriented_bounding_box``); numpy from all points --
    the two agree for box-like clouds and may differ slightly for irregular ones. Clouds that
    open3d rejects (fewer than 4 points, all coplanar) use the numpy path.
    """
    pts = _as_points(points)
    if len(pts) == 0:
        raise ValueError("oriented_box of an empty point cloud")
    o3d = _use_open3d(backend)
    if o3d is not None and len(pts) >= 4:
        try:
            box = _o3d_cloud(o3d, pts).get_oriented_bounding_box()
        except RuntimeError:
            box = None
        if box is not None:
            return _canonical_box(np.asarray(box.center), np.asarray(box.R), np.asarray(box.extent))
    return _canonical_box(*_pca_box(pts))
