"""RGB-D frame -> 3D object observations in the world frame.

**Back-projection.** A pixel ``(u, v)`` (column, row) with depth ``z`` (metres along the optical
axis) is the point ``((u - cx) z / fx, (v - cy) z / fy, z)`` in the camera's optical frame
(x right, y down, z forward; see :mod:`mnemobot.perception.types`), which ``camera_pose`` maps
to the world. Pixels whose depth is 0, NaN or +inf have no return and are skipped.

**With an instance mask** (simulator, or a detector via
:func:`mnemobot.perception.detectors.apply_detections`): every labelled instance with enough
valid pixels becomes one :class:`ObjectObservation`. Its points are back-projected (a regular
subsample of at most ``max_points`` pixels), optionally averaged on a voxel grid and cleaned of
statistical outliers (:mod:`mnemobot.perception.cloud`); from them come the centroid, the
axis-aligned box and the gravity-aligned box (yaw-only: objects rest on horizontal surfaces,
z up). The colour descriptor uses all of the instance's pixels with depth: the mean RGB and an
8-bin hue histogram (:func:`colour_descriptor`).

**Without a mask** the model-free segmenter (:mod:`mnemobot.perception.segment`) finds the
objects standing on horizontal surfaces and reports them as ``"unknown"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from mnemobot.perception.cloud import Backend, grouped_gravity_obb, grouped_voxel_down, remove_outliers
from mnemobot.perception.types import CameraIntrinsics, Observation, Pose

if TYPE_CHECKING:
    from mnemobot.perception.segment import SegmenterConfig

__all__ = [
    "HIST_BINS",
    "ObjectExtractorConfig",
    "ObjectObservation",
    "backproject",
    "backproject_pixels",
    "colour_descriptor",
    "colour_descriptors",
    "describe_object",
    "depth_gate",
    "describe_objects",
    "group_pixels",
    "objects_from_observation",
    "subsample_groups",
    "touches_border",
]

HIST_BINS = 8
"""Length of :attr:`ObjectObservation.colour_hist`: six hue sectors (red, yellow, green, cyan,
blue, magenta, 60 degrees each, centred on those hues), then "dark" and "achromatic"."""

_DARK_VALUE = 0.2  # HSV value below which a pixel is "dark" (hue meaningless)
_GREY_SATURATION = 0.25  # HSV saturation below which a pixel is "achromatic" (white/grey)
_MIN_SHAPE_POINTS = 3  # outlier removal never shrinks a cloud below this; it keeps the points instead


@dataclass(frozen=True)
class ObjectObservation:
    """One object seen in one frame, in the world frame.

    * ``points``: ``(N, 3)`` world points (metres), possibly subsampled / voxel-averaged;
    * ``centroid``: mean of the points; ``aabb_min``/``aabb_max``: axis-aligned box;
    * ``yaw``: heading (rad, ``[-pi/2, pi/2)``) of the major horizontal axis of the
      gravity-aligned box; ``extent``: its size along (major, minor, z) (m); ``obb_center``:
      its centre (``None`` when not computed);
    * ``colour``: mean RGB in [0, 1]; ``colour_hist``: normalised :data:`HIST_BINS`-bin hue
      histogram (``None`` when not computed); ``confidence``: in [0, 1] (pixel support);
    * ``instance_id``: the mask id when the frame has one, else ``None``; ``pixel_count``: mask
      (or cluster) size in pixels;
    * ``truncated``: the object's pixels reach the image border (a partial view: its centroid
      and box are those of the visible part only).
    """

    label: str
    instance_id: int | None
    points: np.ndarray
    centroid: np.ndarray
    aabb_min: np.ndarray
    aabb_max: np.ndarray
    yaw: float
    extent: np.ndarray
    colour: np.ndarray
    confidence: float
    timestamp: float
    pixel_count: int
    embedding: np.ndarray | None = None
    obb_center: np.ndarray | None = None
    colour_hist: np.ndarray | None = None
    truncated: bool = False


BORDER_PX = 2
"""Pixels this close to the image edge make an object ``truncated``."""


def touches_border(pixels: np.ndarray, starts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per group of flat pixel indices (``starts`` as in :func:`group_pixels`): whether any
    pixel lies within :data:`BORDER_PX` of the image border."""
    if len(pixels) == 0:
        return np.zeros(len(starts), dtype=bool)
    v, u = np.divmod(np.asarray(pixels, dtype=np.intp), shape[1])
    edge = (u < BORDER_PX) | (u >= shape[1] - BORDER_PX) | (v < BORDER_PX) | (v >= shape[0] - BORDER_PX)
    return np.add.reduceat(edge.astype(np.intp), starts) > 0


@dataclass(frozen=True)
class ObjectExtractorConfig:
    """How instance pixels become an :class:`ObjectObservation`.

    * ``min_pixels``: instances with fewer mask pixels, or fewer pixels with valid depth, are
      skipped; ``max_points``: at most this many pixels per instance are back-projected (a
      regular subsample);
    * ``voxel_size`` (m): voxel-grid averaging of the points, 0 = off (all objects of a frame
      in one vectorised pass; same grid as :func:`~mnemobot.perception.cloud.voxel_down`);
    * ``outlier_neighbors`` / ``outlier_std_ratio``: statistical outlier removal
      (:func:`~mnemobot.perception.cloud.remove_outliers`, one call per object),
      ``outlier_neighbors = 0`` = off;
    * ``support_pixels``: valid pixels at which ``confidence`` reaches 1;
    * ``backend``: point-cloud backend of the outlier removal (``"auto"``: open3d when
      importable, else numpy).

    The defaults keep a 320x240 frame with about 20 visible objects near 2.5 ms. Outlier removal
    is off by default: it costs about 0.1 ms per object with open3d (2-3 ms for 20 objects) and
    simulated depth has no flying pixels; turn it on for real sensors.
    """

    min_pixels: int = 20
    max_points: int = 2000
    voxel_size: float = 0.004
    outlier_neighbors: int = 0
    outlier_std_ratio: float = 2.0
    support_pixels: float = 400.0
    backend: Backend = "auto"
    depth_gate: float = 0.0
    """Drop an instance's pixels whose depth is more than ``max(depth_gate, q90 - q10)`` (m) beyond
    its 10th-90th percentile depths (0 = off): stray mask pixels on a nearer or farther surface
    (misregistration, dilated masks, flying pixels) would stretch its box."""

    def __post_init__(self) -> None:
        if self.min_pixels < 1 or self.max_points < 1:
            raise ValueError(f"min_pixels and max_points must be >= 1, got {self.min_pixels}, {self.max_points}")
        if self.voxel_size < 0:
            raise ValueError(f"voxel_size must be >= 0 (0 = off), got {self.voxel_size}")
        if self.outlier_neighbors < 0 or not self.outlier_std_ratio > 0:
            raise ValueError(
                f"outlier_neighbors must be >= 0 and outlier_std_ratio > 0, got "
                f"{self.outlier_neighbors}, {self.outlier_std_ratio}"
            )
        if not self.support_pixels > 0:
            raise ValueError(f"support_pixels must be > 0, got {self.support_pixels}")
        if self.backend not in ("auto", "open3d", "numpy"):
            raise ValueError(f"unknown point-cloud backend {self.backend!r}; use 'auto', 'open3d' or 'numpy'")


# -- geometry -----------------------------------------------------------------------------------------
def backproject_pixels(
    flat_index: np.ndarray, depth: np.ndarray, intrinsics: CameraIntrinsics, camera_pose: Pose
) -> np.ndarray:
    """World points ``(N, 3)`` of the pixels with flat row-major indices ``v * W + u``.

    Their depth must be valid (finite, > 0); the caller selects them.
    """
    v, u = np.divmod(np.asarray(flat_index, dtype=np.intp), depth.shape[1])
    z = depth.ravel()[flat_index].astype(np.float64)
    x = (u - intrinsics.cx) * (z / intrinsics.fx)
    y = (v - intrinsics.cy) * (z / intrinsics.fy)
    # p_world = R p_optical + t, one column at a time (a BLAS matmul with 3 columns is slower)
    rot, origin = camera_pose.rotation, camera_pose.position
    out = np.empty((len(z), 3))
    for i in range(3):
        out[:, i] = rot[i, 0] * x + rot[i, 1] * y + rot[i, 2] * z + origin[i]
    return out


def backproject(
    depth: np.ndarray, intrinsics: CameraIntrinsics, camera_pose: Pose, mask: np.ndarray | None = None
) -> np.ndarray:
    """World-frame points ``(N, 3)`` of the valid depth pixels (finite and > 0) under ``mask``.

    Points come in row-major pixel order.
    """
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask
    return backproject_pixels(np.flatnonzero(valid), depth, intrinsics, camera_pose)


def _valid_depth(depth: np.ndarray) -> np.ndarray:
    """Flat boolean array: the pixel has a depth return (finite and > 0)."""
    flat = depth.ravel()
    with np.errstate(invalid="ignore"):
        return np.isfinite(flat) & (flat > 0)


# -- colour -------------------------------------------------------------------------------------------
def _hue_bins(rgb: np.ndarray) -> np.ndarray:
    """Histogram bin (0..7, see :data:`HIST_BINS`) of every ``(M, 3)`` uint8 RGB pixel."""
    c = rgb.astype(np.float32) * (1.0 / 255.0)
    r, g, b = c[:, 0], c[:, 1], c[:, 2]
    mx, mn = c.max(axis=1), c.min(axis=1)
    chroma = mx - mn
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(mx == r, np.mod((g - b) / safe, 6.0), np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    sector = np.floor(np.mod(hue + 0.5, 6.0)).astype(np.intp) % 6  # sectors centred on 0, 60, ... degrees
    saturation = np.where(mx > 0, chroma / np.where(mx > 0, mx, 1.0), 0.0)
    bins = np.where(saturation < _GREY_SATURATION, 7, sector)
    return np.where(mx < _DARK_VALUE, 6, bins)


def colour_descriptors(rgb: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group :func:`colour_descriptor` of ``(M, 3)`` uint8 pixels with group ids ``groups`` in
    ``[0, n_groups)``: mean RGB in [0, 1] ``(G, 3)`` and hue histograms ``(G, HIST_BINS)``."""
    counts = np.maximum(np.bincount(groups, minlength=n_groups), 1).astype(np.float64)
    means = np.stack(
        [np.bincount(groups, weights=rgb[:, i].astype(np.float64), minlength=n_groups) for i in range(3)], axis=1
    ) / (255.0 * counts[:, None])
    hist = np.bincount(groups * HIST_BINS + _hue_bins(rgb), minlength=n_groups * HIST_BINS)
    return means, hist.reshape(n_groups, HIST_BINS) / counts[:, None]


def colour_descriptor(rgb_pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour of a set of ``(M, 3)`` uint8 pixels: ``(mean RGB in [0, 1], hue histogram)``.

    The histogram (:data:`HIST_BINS` bins, summing to 1) puts each pixel in one of six 60-degree
    HSV hue sectors centred on red, yellow, green, cyan, blue and magenta; pixels with HSV value
    below 0.2 go to the "dark" bin and the remaining ones with saturation below 0.25 to the
    "achromatic" bin (white, grey), where hue is meaningless.
    """
    pixels = np.asarray(rgb_pixels, dtype=np.uint8).reshape(-1, 3)
    if len(pixels) == 0:
        return np.zeros(3), np.zeros(HIST_BINS)
    means, hist = colour_descriptors(pixels, np.zeros(len(pixels), dtype=np.intp), 1)
    return means[0], hist[0]


# -- objects from grouped points ----------------------------------------------------------------------
def _filter_outliers(points: np.ndarray, starts: np.ndarray, config: ObjectExtractorConfig
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Statistical outlier removal per group; a group it would empty keeps its points."""
    bounds = np.r_[starts, len(points)]
    parts = []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        part = points[s:e]
        if len(part) > config.outlier_neighbors:
            kept, _ = remove_outliers(part, config.outlier_neighbors, config.outlier_std_ratio, backend=config.backend)
            if len(kept) >= _MIN_SHAPE_POINTS:
                part = kept
        parts.append(part)
    sizes = np.array([len(q) for q in parts], dtype=np.intp)
    return np.concatenate(parts, axis=0), np.r_[0, np.cumsum(sizes)[:-1]].astype(np.intp)


def describe_objects(
    points: np.ndarray,
    starts: np.ndarray,
    colours: np.ndarray,
    hists: np.ndarray,
    labels: Sequence[str],
    instance_ids: Sequence[int | None],
    pixel_counts: Sequence[int],
    valid_pixels: Sequence[int],
    timestamp: float,
    config: ObjectExtractorConfig | None = None,
    truncated: Sequence[bool] | None = None,
) -> list[ObjectObservation]:
    """One :class:`ObjectObservation` per group of world points, all groups processed together.

    ``points[starts[i]:starts[i + 1]]`` are object ``i``'s points (each group non-empty, already
    subsampled); ``colours``/``hists`` its colour descriptor (:func:`colour_descriptors`);
    ``pixel_counts`` its mask size and ``valid_pixels`` how many of those pixels have depth
    (the confidence's support). The clouds are voxel-averaged (numpy grid, same anchors as
    :func:`~mnemobot.perception.cloud.voxel_down`) and outlier-filtered per ``config``, then
    described by their mean, axis-aligned box and gravity-aligned box.
    """
    cfg = config or ObjectExtractorConfig()
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    st = np.asarray(starts, dtype=np.intp)
    if len(st) == 0:
        return []
    if cfg.voxel_size > 0:
        pts, st = grouped_voxel_down(pts, cfg.voxel_size, st)
    if cfg.outlier_neighbors > 0:
        pts, st = _filter_outliers(pts, st, cfg)
    counts = np.diff(np.r_[st, len(pts)])
    centroids = np.stack([np.add.reduceat(pts[:, i], st) for i in range(3)], axis=1) / counts[:, None]
    lows, highs = np.minimum.reduceat(pts, st, axis=0), np.maximum.reduceat(pts, st, axis=0)
    centers, extents, yaws = grouped_gravity_obb(pts, st)
    bounds = np.r_[st, len(pts)].tolist()
    return [
        ObjectObservation(
            label=labels[k],
            instance_id=instance_ids[k],
            points=pts[bounds[k] : bounds[k + 1]],
            centroid=centroids[k],
            aabb_min=lows[k],
            aabb_max=highs[k],
            yaw=float(yaws[k]),
            extent=extents[k],
            colour=colours[k],
            confidence=min(1.0, float(valid_pixels[k]) / cfg.support_pixels),
            timestamp=timestamp,
            pixel_count=int(pixel_counts[k]),
            obb_center=centers[k],
            colour_hist=hists[k],
            truncated=bool(truncated[k]) if truncated is not None else False,
        )
        for k in range(len(st))
    ]


def describe_object(
    label: str, instance_id: int | None, points: np.ndarray, rgb_pixels: np.ndarray, *,
    pixel_count: int | None = None, timestamp: float = 0.0, config: ObjectExtractorConfig | None = None,
) -> ObjectObservation:
    """An :class:`ObjectObservation` from one object's world points and its pixels' colours.

    ``points`` ``(N, 3)``, ``N >= 1``, are used as given (subsample them beforehand) and then
    shaped per ``config``; ``pixel_count`` defaults to the number of ``rgb_pixels``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0:
        raise ValueError(f"object {label!r} has no points")
    pixels = np.asarray(rgb_pixels, dtype=np.uint8).reshape(-1, 3)
    colour, hist = colour_descriptor(pixels)
    n_pixels = len(pixels) if pixel_count is None else pixel_count
    return describe_objects(pts, np.zeros(1, dtype=np.intp), colour[None], hist[None], [label], [instance_id],
                            [n_pixels], [len(pts)], timestamp, config)[0]


# -- a whole frame ------------------------------------------------------------------------------------
def _dense_ids(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, dense)``: the distinct ids and each pixel's index into them.

    Small non-negative ids (the usual case) index themselves, without a sort.
    """
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < (1 << 20):
        return np.arange(hi + 1), flat.astype(np.intp, copy=False)
    ids, dense = np.unique(flat, return_inverse=True)
    return ids, dense.ravel()


def group_pixels(pixels: np.ndarray, group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort pixel indices by group, keeping row-major order within each group.

    Returns ``(pixels, group, starts)`` reordered, with ``starts`` the first position of each
    non-empty group. Uses numpy's radix sort (stable, linear) for up to 65536 groups.
    """
    key = group.astype(np.uint16) if n_groups <= 1 << 16 else group
    order = np.argsort(key, kind="stable")
    pixels, group = pixels[order], group[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(group) else np.zeros(0, dtype=np.intp)
    return pixels, group, starts


def subsample_groups(starts: np.ndarray, total: int, max_per_group: int) -> np.ndarray:
    """Boolean selection keeping every k-th member of each group so that at most ``max_per_group`` remain."""
    sizes = np.diff(np.r_[starts, total])
    stride = np.maximum(1, -(-sizes // max_per_group))  # ceil division
    rank = np.arange(total) - np.repeat(starts, sizes)
    return rank % np.repeat(stride, sizes) == 0


def depth_gate(z: np.ndarray, run: np.ndarray, starts: np.ndarray, sizes: np.ndarray, floor: float) -> np.ndarray:
    """Keep-mask of pixels within their group's 10th-90th percentile depths, widened by
    ``max(floor, q90 - q10)``; ``run`` is each pixel's group (ascending), ``starts``/``sizes``
    the groups' positions (see :attr:`ObjectExtractorConfig.depth_gate`)."""
    zs = z[np.lexsort((z, run))]
    q10 = zs[starts + ((sizes - 1) * 0.1).astype(np.intp)]
    q90 = zs[starts + ((sizes - 1) * 0.9).astype(np.intp)]
    pad = np.maximum(floor, q90 - q10)
    return (z >= np.repeat(q10 - pad, sizes)) & (z <= np.repeat(q90 + pad, sizes))


def _masked_objects(
    obs: Observation, instances: np.ndarray, config: ObjectExtractorConfig, skip_labels: frozenset[str]
) -> list[ObjectObservation]:
    ids, dense = _dense_ids(instances.ravel())
    counts = np.bincount(dense, minlength=len(ids))
    wanted = counts >= config.min_pixels
    for j in np.flatnonzero(wanted).tolist():
        iid = int(ids[j])
        wanted[j] = iid != 0 and obs.labels.get(iid, "unknown") not in skip_labels
    pix = np.flatnonzero(wanted[dense] & _valid_depth(obs.depth))
    pix, group, starts = group_pixels(pix, dense[pix], len(ids))
    n_valid = np.diff(np.r_[starts, len(pix)])
    enough = n_valid >= config.min_pixels
    if not enough.all():  # drop instances with too few pixels with depth
        keep = np.repeat(enough, n_valid)
        pix, group = pix[keep], group[keep]
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if len(group) else starts[:0]
        n_valid = n_valid[enough]
    if len(pix) == 0:
        return []
    run = np.repeat(np.arange(len(starts)), n_valid)
    if config.depth_gate > 0:
        keep = depth_gate(obs.depth.ravel()[pix], run, starts, n_valid, config.depth_gate)
        if not keep.all():
            pix, group, run = pix[keep], group[keep], run[keep]
            n_valid = np.bincount(run, minlength=len(starts))
            starts = np.r_[0, np.cumsum(n_valid)[:-1]].astype(np.intp)
    colours, hists = colour_descriptors(obs.rgb.reshape(-1, 3)[pix], run, len(starts))
    sample = subsample_groups(starts, len(pix), config.max_points)
    pts = backproject_pixels(pix[sample], obs.depth, obs.intrinsics, obs.camera_pose)
    sample_starts = np.flatnonzero(np.r_[True, np.diff(run[sample]) != 0])
    members = group[starts]
    iids = [int(i) for i in ids[members].tolist()]
    objects = describe_objects(
        pts, sample_starts, colours, hists, [obs.labels.get(i, "unknown") for i in iids], iids,
        counts[members].tolist(), n_valid.tolist(), obs.timestamp, config,
        truncated=touches_border(pix, starts, obs.depth.shape),
    )
    if obs.scores:  # a detector's confidence scales the pixel support's
        objects = [replace(o, confidence=o.confidence * obs.scores.get(int(o.instance_id), 1.0)) for o in objects]
    return objects


def objects_from_observation(
    obs: Observation,
    min_pixels: int = 20,
    max_points: int = 2000,
    skip_labels: frozenset[str] = frozenset(),
    *,
    config: ObjectExtractorConfig | None = None,
    model_free: bool = True,
    segmenter: SegmenterConfig | None = None,
) -> list[ObjectObservation]:
    """The objects in one frame, after :meth:`Observation.validate` (raises ``ObservationError``).

    With an instance mask: one :class:`ObjectObservation` per labelled instance (ids >= 1) that
    has at least ``min_pixels`` mask pixels and as many with valid depth, unless its label is in
    ``skip_labels``. Without one: the model-free segmenter's ``"unknown"`` objects
    (:func:`mnemobot.perception.segment.segment_objects`, configured by ``segmenter``), or ``[]``
    when ``model_free`` is False or ``"unknown"`` is in ``skip_labels``.

    ``min_pixels`` and ``max_points`` are shorthands for the same fields of ``config``; pass
    either them or a ``config``, not both.
    """
    obs.validate()
    if config is None:
        config = ObjectExtractorConfig(min_pixels=min_pixels, max_points=max_points)
    elif (min_pixels, max_points) != (20, 2000):
        raise ValueError("pass min_pixels/max_points either as arguments or in config, not both")
    if obs.instances is not None:
        return _masked_objects(obs, obs.instances, config, skip_labels)
    if not model_free or "unknown" in skip_labels:
        return []
    from mnemobot.perception.segment import segment_objects  # segment builds on this module

    return segment_objects(obs, segmenter, objects=config)
