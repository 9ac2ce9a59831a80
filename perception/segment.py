"""Model-free object segmentation: objects standing on horizontal surfaces, without masks.

For frames with depth but no instance mask (a real camera without a detector), objects are
found from geometry alone, in the world frame (z up):

1. **Back-projection** of the pixels with a depth up to ``max_depth`` (optionally every
   ``pixel_stride``-th row and column) to world points
   (:func:`mnemobot.perception.objects.backproject_pixels`).
2. **Support planes** by RANSAC under the gravity prior: a support is horizontal up to a small
   tilt, so one sampled point ``p`` fixes a hypothesis ``z = p_z``; hypotheses are scored by the
   points within ``plane_distance`` (on a random subsample), and the best is refined by least
   squares (the inliers' direction of least spread, accepted up to ``max_tilt_deg`` from +z),
   twice, so that a slightly tilted surface is caught whole. Its inliers are removed and the
   search repeats, up to ``max_planes`` planes.
3. **Support surfaces**: each plane's inliers are split into connected regions of a 2D grid
   (``support_cell``), so two tables at one height are two surfaces. A region counts if it has
   ``min_plane_points`` pixels, is mostly *interior* (cells whose four neighbours are occupied:
   ``min_support_fill``) -- the thin bands where walls and cabinet sides cross a plane's height
   are not -- and is ``min_support_width`` wide. Its footprint is the convex polygon of its
   interior cells.
4. **Candidates** of a surface, highest surface first: points on no surface whose height above
   the plane is in ``(min_height, max_height]`` (plus two voxels, to see what continues upwards)
   and whose ``(x, y)`` lies over the footprint (within ``support_margin``).
5. **Clusters**: connected components of the candidates' occupied voxels (side
   ``cluster_voxel``, 26-neighbourhood), a linear-time alternative to DBSCAN. A cluster is an
   object if it has ``min_cluster_points`` pixels; its top is between ``min_object_height``
   (lower: plane residue) and ``max_height`` (higher: part of furniture or a wall) above the
   surface; its footprint is at most ``max_object_size`` long and at least ``min_object_depth``
   deep (thinner: a sliver of a vertical face seen at a grazing angle); and it is not under a
   higher surface (the legs of a table or the front of a cabinet, seen from the floor's plane).
6. Each cluster becomes an :class:`~mnemobot.perception.objects.ObjectObservation` labelled
   ``"unknown"`` with ``instance_id=None``, described exactly like masked instances (centroid,
   boxes, colour).

Limits: objects under a higher surface are ignored, objects that look thinner than
``min_object_depth`` are dropped, and objects closer to each other than about one voxel merge.
All steps are vectorised numpy; a 320x240 frame takes about 20 ms on one CPU core.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mnemobot.perception.cloud import extreme_polygon, grouped_min_area_rect, min_area_rect
from mnemobot.perception.objects import (
    ObjectExtractorConfig,
    ObjectObservation,
    backproject_pixels,
    colour_descriptors,
    describe_objects,
    subsample_groups,
    touches_border,
)
from mnemobot.perception.types import Observation

__all__ = [
    "Cluster",
    "SegmenterConfig",
    "SupportSurface",
    "connected_components",
    "find_support_surfaces",
    "segment_clusters",
    "segment_objects",
    "voxel_clusters",
]

UNKNOWN = "unknown"
_DENSE_CELLS = 1 << 18  # grids up to this many cells are indexed by a table instead of a sort


@dataclass(frozen=True)
class SegmenterConfig:
    """Parameters of the model-free segmenter (metres, pixels, degrees); see the module docstring."""

    pixel_stride: int = 1
    """Use every n-th pixel row and column (1 = all)."""
    max_depth: float = 4.0
    """Ignore pixels farther than this along the optical axis (objects there cover a few pixels)."""
    ransac_points: int = 2500
    """Hypotheses are scored on a random subsample of this many points."""
    ransac_iterations: int = 96
    """Plane hypotheses per plane search."""
    plane_distance: float = 0.01
    """Inlier band around a plane."""
    max_tilt_deg: float = 10.0
    """Largest angle between a support plane's normal and world +z."""
    max_planes: int = 4
    """At most this many planes are searched."""
    min_plane_points: int = 400
    """Smallest support surface, in (full-resolution) pixels."""
    support_cell: float = 0.03
    """Grid cell splitting a plane's inliers into connected surfaces."""
    min_support_width: float = 0.15
    """Narrowest footprint (minor side) of a support surface."""
    min_support_fill: float = 0.3
    """Smallest fraction of a support's grid cells whose four neighbours are occupied too
    (rejects the thin bands where walls and other vertical faces cross a plane)."""
    support_margin: float = 0.02
    """Objects may overhang a support's footprint by this much."""
    min_height: float = 0.005
    """Lowest point height above the support that can belong to an object."""
    max_height: float = 0.40
    """Tallest object; clusters reaching higher are rejected."""
    min_object_height: float = 0.015
    """An object's top must rise at least this far above its support (flatter clusters are plane
    residue, e.g. where a fitted plane drifts from a slightly tilted surface)."""
    cluster_voxel: float = 0.015
    """Voxel side of the connected-components clustering (gaps up to about twice this join)."""
    min_cluster_points: int = 25
    """Smallest object, in (full-resolution) pixels."""
    max_object_size: float = 0.5
    """Largest horizontal size (major side of the footprint) of an object."""
    min_object_depth: float = 0.01
    """Smallest minor side of an object's footprint: thinner clusters are slivers of vertical
    faces (a wall or a cabinet side seen at a grazing angle breaks into horizontal strips)."""
    seed: int = 0
    """Seed of the RANSAC sampler (the segmentation is deterministic)."""

    def __post_init__(self) -> None:
        positive = {
            "pixel_stride": self.pixel_stride, "max_depth": self.max_depth, "ransac_points": self.ransac_points,
            "ransac_iterations": self.ransac_iterations, "plane_distance": self.plane_distance,
            "max_planes": self.max_planes, "min_plane_points": self.min_plane_points,
            "support_cell": self.support_cell, "max_height": self.max_height,
            "cluster_voxel": self.cluster_voxel, "min_cluster_points": self.min_cluster_points,
            "max_object_size": self.max_object_size,
        }
        bad = [f"{k}={v}" for k, v in positive.items() if not v > 0]
        if bad:
            raise ValueError(f"SegmenterConfig fields must be positive: {', '.join(bad)}")
        if not 0 <= self.max_tilt_deg < 90:
            raise ValueError(f"max_tilt_deg must be in [0, 90), got {self.max_tilt_deg}")
        if not 0 <= self.min_height < self.max_height:
            raise ValueError(f"need 0 <= min_height < max_height, got {self.min_height}, {self.max_height}")


@dataclass(frozen=True)
class SupportSurface:
    """A horizontal surface objects can stand on.

    The plane is ``normal . p + offset = 0`` (``normal`` a unit vector with positive z), so
    :meth:`height_of` is the signed distance above it; ``height`` is the mean z of its inliers,
    ``polygon`` ``(K, 2)`` its convex footprint in the world ``(x, y)`` (counter-clockwise) and
    ``n_points`` its inlier count (sampled pixels).
    """

    normal: np.ndarray
    offset: float
    height: float
    polygon: np.ndarray
    n_points: int

    def height_of(self, points: np.ndarray) -> np.ndarray:
        """Signed distance (m) of ``(N, 3)`` points above the plane."""
        return _heights(np.asarray(points, dtype=np.float64).reshape(-1, 3), self.normal, self.offset)

    def covers(self, xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether each ``(N, 2)`` point lies over the footprint, allowing ``margin`` (m) outside."""
        poly = self.polygon
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        out = np.zeros(len(pts), dtype=bool)
        if len(poly) < 3:
            return out
        lo, hi = poly.min(axis=0) - margin, poly.max(axis=0) + margin
        near = np.flatnonzero(np.all((pts >= lo) & (pts <= hi), axis=1))  # cheap bounding-box pass
        edge = np.roll(poly, -1, axis=0) - poly
        length = np.maximum(np.linalg.norm(edge, axis=1), 1e-12)
        # signed distance to the left of each counter-clockwise edge: >= 0 inside
        rel_x = pts[near, None, 0] - poly[None, :, 0]
        rel_y = pts[near, None, 1] - poly[None, :, 1]
        inside = (edge[None, :, 0] * rel_y - edge[None, :, 1] * rel_x) / length[None, :]
        out[near] = np.all(inside >= -margin, axis=1)
        return out


@dataclass(frozen=True)
class Cluster:
    """One model-free object: its sampled pixels (flat row-major indices), world points and support."""

    pixels: np.ndarray
    points: np.ndarray
    support: SupportSurface


# -- connected components ------------------------------------------------------------------------------
@functools.cache
def _half_neighbourhood(dim: int) -> np.ndarray:
    """Offsets in ``{-1, 0, 1}^dim`` whose first non-zero entry is +1: each neighbour pair once."""
    grid = np.stack(np.meshgrid(*([np.array([-1, 0, 1])] * dim), indexing="ij"), axis=-1).reshape(-1, dim)
    first = np.array([row[np.flatnonzero(row)[0]] if row.any() else 0 for row in grid])
    return grid[first > 0]


def connected_components(cells: np.ndarray) -> np.ndarray:
    """Component label (0..C-1) of each distinct integer cell ``(N, D)``, full (3^D - 1) adjacency.

    Neighbour pairs are found by binary search among the cells' packed keys; components by
    parallel union-find (every edge hooks the larger root under the smaller, then pointers are
    compressed to the roots) until no edge joins two roots. Cells must be distinct.
    """
    c = np.asarray(cells, dtype=np.int64)
    n = len(c)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    c = c - c.min(axis=0) + 1  # keep a free layer at 0 so neighbour keys never alias
    span = c.max(axis=0) + 2
    mult = np.cumprod(np.r_[1, span[:-1]]).astype(np.int64)
    keys = c @ mult
    order = np.argsort(keys)
    sorted_keys = keys[order]
    neighbour = keys[:, None] + (_half_neighbourhood(c.shape[1]) @ mult)[None, :]
    pos = np.minimum(np.searchsorted(sorted_keys, neighbour), n - 1)
    hit = sorted_keys[pos] == neighbour
    src = np.nonzero(hit)[0]
    dst = order[pos[hit]]
    parent = np.arange(n)
    while len(src):
        ps, pd = parent[src], parent[dst]
        differ = ps != pd
        if not differ.any():
            break
        src, dst, ps, pd = src[differ], dst[differ], ps[differ], pd[differ]
        np.minimum.at(parent, np.maximum(ps, pd), np.minimum(ps, pd))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    _, labels = np.unique(parent, return_inverse=True)
    return labels.ravel()


def _cell_origin(points: np.ndarray, size: float) -> np.ndarray:
    """Corner of cell ``(0, ...)`` of the grid :func:`_cells` lays over ``points``."""
    return np.floor(points.min(axis=0) / size) * size


def _cells(points: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct grid cells of side ``size`` occupied by ``(N, D)`` points and each point's cell index.

    Cells are counted from :func:`_cell_origin`; cell ``c`` covers ``origin + [c, c + 1) * size``.
    """
    idx = np.floor(points / size).astype(np.int64)
    idx -= idx.min(axis=0)
    span = idx.max(axis=0) + 1
    mult = np.cumprod(np.r_[1, span[:-1]]).astype(np.int64)
    packed = idx[:, 0] * mult[0]
    for d in range(1, idx.shape[1]):
        packed += idx[:, d] * mult[d]
    total = int(np.prod(span))
    if total <= max(_DENSE_CELLS, 4 * len(packed)):  # occupancy table: linear time, no sort
        occupied = np.flatnonzero(np.bincount(packed, minlength=total))
        lookup = np.empty(total, dtype=np.intp)
        lookup[occupied] = np.arange(len(occupied))
        keys, inverse = occupied, lookup[packed]
    else:
        keys, inverse = np.unique(packed, return_inverse=True)
    cells = (keys[:, None] // mult[None, :]) % span[None, :]
    return cells, inverse.ravel()


def _interior(cells: np.ndarray) -> np.ndarray:
    """Which distinct 2D cells have all four edge neighbours occupied too (one erosion step)."""
    c = np.asarray(cells, dtype=np.int64) + 1
    width = int(c[:, 1].max()) + 2
    keys = c[:, 0] * width + c[:, 1]
    ordered = np.sort(keys)
    around = keys[:, None] + np.array([-width, width, -1, 1])[None, :]
    pos = np.minimum(np.searchsorted(ordered, around), len(ordered) - 1)
    return np.all(ordered[pos] == around, axis=1)


def voxel_clusters(points: np.ndarray, voxel: float) -> np.ndarray:
    """Cluster label (0..C-1) of every ``(N, D)`` point: connected components of occupied voxels.

    Two points share a cluster when a chain of occupied voxels (26-adjacency) joins theirs, so
    gaps narrower than about one voxel are bridged and wider ones separate clusters.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2:
        raise ValueError(f"points must have shape (N, D), got {pts.shape}")
    if len(pts) == 0:
        return np.zeros(0, dtype=np.intp)
    cells, inverse = _cells(pts, voxel)
    return connected_components(cells)[inverse]


# -- support planes ------------------------------------------------------------------------------------
def _heights(points: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """Signed distances ``normal . p + offset`` of ``(N, 3)`` points (column-wise, no BLAS call)."""
    return points[:, 0] * normal[0] + points[:, 1] * normal[1] + points[:, 2] * normal[2] + offset


def _level_fit(points: np.ndarray, cos_tilt: float) -> tuple[np.ndarray, float] | None:
    """Least-squares plane ``(normal, offset)`` of ``points`` (normal with z > 0), or None if it
    is tilted more than the limit: the normal is the centred points' direction of least spread."""
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    normal = vt[2] if vt[2][2] >= 0 else -vt[2]
    if normal[2] < cos_tilt:
        return None
    return normal, float(-normal @ centre)


def _ransac_horizontal(points: np.ndarray, candidates: np.ndarray, config: SegmenterConfig,
                       rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The best near-horizontal plane ``(normal, offset)`` through ``points[candidates]``.

    RANSAC under the gravity prior: a support plane is horizontal up to a small tilt, so one
    point fixes a hypothesis (the plane ``z = z_i``). Hypotheses from ``ransac_iterations``
    random points are scored on a random subsample (points within ``plane_distance``); the best
    is refined by least squares on its inliers (which may tilt it by up to ``max_tilt_deg``) and
    once more on the inliers of the refined plane, so a slightly tilted surface is caught whole.
    """
    cos_tilt = math.cos(math.radians(config.max_tilt_deg))
    pick = candidates[rng.integers(0, len(candidates), size=min(config.ransac_points, len(candidates)))]
    sample_z = np.sort(points[pick, 2])
    guesses = sample_z[rng.integers(0, len(pick), size=config.ransac_iterations)]
    # inliers of z = g among the sorted sample heights: two binary searches per hypothesis
    score = np.searchsorted(sample_z, guesses + config.plane_distance) - np.searchsorted(
        sample_z, guesses - config.plane_distance, side="right")
    z0 = float(guesses[int(np.argmax(score))])
    normal, offset = np.array([0.0, 0.0, 1.0]), -z0
    sample = points[pick]
    for _ in range(2):
        inliers = sample[np.abs(_heights(sample, normal, offset)) < config.plane_distance]
        if len(inliers) < 3:
            break
        fit = _level_fit(inliers, cos_tilt)
        if fit is None:
            break
        normal, offset = fit
    return normal, offset


def find_support_surfaces(points: np.ndarray, config: SegmenterConfig | None = None, *,
                          point_weight: float = 1.0) -> tuple[list[SupportSurface], np.ndarray]:
    """Horizontal support surfaces among world ``points`` ``(N, 3)``, highest first.

    Returns the surfaces and a boolean mask of the points lying on one of them.
    ``point_weight`` is how many image pixels each point stands for (``pixel_stride ** 2``),
    so that pixel thresholds hold at any stride.
    """
    cfg = config or SegmenterConfig()
    pts = np.asarray(points, dtype=np.float64)
    rng = np.random.default_rng(cfg.seed)
    free = np.ones(len(pts), dtype=bool)
    on_support = np.zeros(len(pts), dtype=bool)
    surfaces: list[SupportSurface] = []
    min_points = cfg.min_plane_points / point_weight
    for _ in range(cfg.max_planes):
        remaining = np.flatnonzero(free)
        if len(remaining) < max(min_points, 3):
            break
        normal, offset = _ransac_horizontal(pts, remaining, cfg, rng)
        inlier = np.flatnonzero(free & (np.abs(_heights(pts, normal, offset)) < cfg.plane_distance))
        if len(inlier) < min_points:
            break
        free[inlier] = False
        cells, inverse = _cells(pts[inlier, :2], cfg.support_cell)
        region = connected_components(cells)
        cell_points = np.bincount(inverse, minlength=len(cells))
        region_points = np.bincount(region, weights=cell_points)
        origin = _cell_origin(pts[inlier, :2], cfg.support_cell)
        for r in np.flatnonzero(region_points >= min_points).tolist():
            # footprint from the occupied cells' centres (cheap: a few hundred cells per surface)
            own = cells[region == r]
            interior = _interior(own)
            if np.count_nonzero(interior) < max(3, cfg.min_support_fill * len(own)):
                continue  # a thin band: where a vertical surface (wall, cabinet side) crosses the plane
            # footprint: the interior cells' centres (thin bands of walls touching the edge drop out)
            centres = (own[interior] + 0.5) * cfg.support_cell + origin
            if min_area_rect(centres)[1][1] + 3 * cfg.support_cell < cfg.min_support_width:
                continue
            members = inlier[region[inverse] == r]
            on_support[members] = True
            surfaces.append(SupportSurface(
                normal=normal, offset=offset, height=float(pts[members, 2].mean()),
                polygon=extreme_polygon(centres, 64), n_points=len(members),
            ))
    surfaces.sort(key=lambda s: -s.height)
    return surfaces, on_support


# -- segmentation --------------------------------------------------------------------------------------
def _sampled_pixels(obs: Observation, stride: int, max_depth: float) -> np.ndarray:
    """Flat indices of the pixels on the ``stride`` grid with a depth in ``(0, max_depth]``."""
    w = obs.depth.shape[1]
    depth = obs.depth[::stride, ::stride]
    with np.errstate(invalid="ignore"):
        v, u = np.nonzero((depth > 0) & (depth <= max_depth))  # NaN and +inf compare False
    return (v * stride) * w + u * stride


def segment_clusters(obs: Observation, config: SegmenterConfig | None = None) -> list[Cluster]:
    """The object clusters of a frame (ignores its instance mask), largest first.

    Validates the frame; see the module docstring for the method.
    """
    cfg = config or SegmenterConfig()
    obs.validate()
    pixels = _sampled_pixels(obs, cfg.pixel_stride, cfg.max_depth)
    pts = backproject_pixels(pixels, obs.depth, obs.intrinsics, obs.camera_pose)
    weight = float(cfg.pixel_stride**2)
    surfaces, on_support = find_support_surfaces(pts, cfg, point_weight=weight)
    free = ~on_support
    top = cfg.max_height + 2.0 * cfg.cluster_voxel  # look a little higher to see what continues up
    min_points = cfg.min_cluster_points / weight
    margin = cfg.support_margin + 1.5 * cfg.support_cell  # footprints run through the interior cells' centres
    clusters: list[Cluster] = []
    for surface in surfaces:
        height = surface.height_of(pts)
        cand = np.flatnonzero(free & (height > cfg.min_height) & (height <= top))
        height = height[cand]
        over = surface.covers(pts[cand, :2], margin)
        cand, height = cand[over], height[over]
        if len(cand) < min_points:
            continue
        label = voxel_clusters(pts[cand], cfg.cluster_voxel)
        members = np.argsort(label, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(label[members]) != 0])
        sizes = np.diff(np.r_[starts, len(members)])
        tallest = np.maximum.reduceat(height[members], starts)
        ok = np.flatnonzero((sizes >= min_points) & (tallest <= cfg.max_height) & (tallest >= cfg.min_object_height))
        if len(ok) == 0:
            continue
        # the surviving clusters' points, grouped, for the footprint and position tests at once
        chosen = np.concatenate([members[starts[k] : starts[k] + sizes[k]] for k in ok.tolist()])
        chosen_starts = np.r_[0, np.cumsum(sizes[ok])[:-1]]
        xy = pts[cand[chosen], :2]
        _, footprint, _ = grouped_min_area_rect(xy, chosen_starts)
        centres = np.stack([np.add.reduceat(xy[:, i], chosen_starts) for i in range(2)], axis=1) / sizes[ok, None]
        keep = (footprint[:, 0] <= cfg.max_object_size) & (footprint[:, 1] >= cfg.min_object_depth)
        for higher in (s for s in surfaces if s.height > surface.height):
            keep &= ~higher.covers(centres, margin)  # under a higher surface: table legs, a cabinet front
        bounds = np.r_[chosen_starts, len(chosen)]
        for j in np.flatnonzero(keep).tolist():
            idx = cand[chosen[bounds[j] : bounds[j + 1]]]
            free[idx] = False
            clusters.append(Cluster(pixels=pixels[idx], points=pts[idx], support=surface))
    clusters.sort(key=lambda c: -len(c.pixels))
    return clusters


def segment_objects(
    obs: Observation, config: SegmenterConfig | None = None, *, objects: ObjectExtractorConfig | None = None
) -> list[ObjectObservation]:
    """Model-free :class:`ObjectObservation` s (label ``"unknown"``, no instance id), largest first.

    ``objects`` sets how the clusters are described (voxel size, outlier filter, ``max_points``
    subsample); ``pixel_count`` is the cluster's size in full-resolution pixels.
    """
    cfg = config or SegmenterConfig()
    ocfg = objects or ObjectExtractorConfig()
    clusters = segment_clusters(obs, cfg)
    if not clusters:
        return []
    sizes = np.array([len(c.pixels) for c in clusters])
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    pixels = np.concatenate([c.pixels for c in clusters])  # row-major within each cluster
    group = np.repeat(np.arange(len(clusters)), sizes)
    points = np.concatenate([c.points for c in clusters])
    colours, hists = colour_descriptors(obs.rgb.reshape(-1, 3)[pixels], group, len(clusters))
    sample = subsample_groups(starts, len(pixels), ocfg.max_points)
    sample_starts = np.flatnonzero(np.r_[True, np.diff(group[sample]) != 0])
    weight = cfg.pixel_stride**2
    counts = [len(c.pixels) * weight for c in clusters]
    return describe_objects(
        points[sample], sample_starts, colours, hists, [UNKNOWN] * len(clusters), [None] * len(clusters),
        counts, counts, obs.timestamp, ocfg,
        truncated=touches_border(pixels, starts, obs.depth.shape),
    )
