"""Realistic sensing in simulation: what the robot perceives of a perfect render.

:class:`SensorSimulator` applies a :class:`~mnemobot.perception.sensor.SensorModel` (a named
profile or a YAML file) to the simulator's exact frame: depth noise, holes, range limits and edge
artefacts; a detector in place of the perfect instance masks; camera pose jitter and a base pose
integrated from noisy odometry. Everything is vectorised numpy and deterministic for a seed.

Frames and units: depth images hold metres along the optical axis (0 = no return); poses follow
:mod:`mnemobot.perception.types` (world frame z up; camera optical frame z forward, x right, y
down; planar base pose ``(x, y, yaw)`` in metres and radians). Pixel amounts (``edge_px``,
``hole_blob_px``, ...) are pixels of the profile's camera (``reference_fx``); each frame applies
them at the render's focal length (:meth:`~mnemobot.perception.sensor.SensorModel.at_focal`), so
a Kinect profile is as noisy, in angle, at 320x240 as at 640x480.

What is simulated, per frame (see :class:`~mnemobot.perception.sensor.DepthNoise`,
:class:`~mnemobot.perception.sensor.DetectorNoise`, :class:`~mnemobot.perception.sensor.PoseNoise`):

* depth: returns outside ``[min_range, max_range]`` are lost; axial Gaussian noise
  ``sigma0 + k2 (z - z0)^2``; disparity quantisation (steps of ``quant_k2 z^2``); the far side of
  every depth discontinuity loses its returns over a band of ``edge_px`` pixels (the projector's
  or the second camera's shadow), jittered per pixel by ``lateral_px``; ``flying_rate`` of that
  band and of the near side's boundary pixels fly between the two surfaces (mixed pixels); holes
  in blobs of about ``hole_blob_px`` pixels cover ``hole_rate`` of the image;
* colour and masks are shifted against depth by the rig's misregistration (a fixed offset per
  episode of ``misregistration_px``, in a random direction);
* detector: each instance (furniture included) with at least ``min_pixels`` pixels is missed
  with ``miss_rate``; a detection takes another label of its ``confusions`` group with
  ``confusion_rate``; masks grow or shrink by up to ``dilate_px`` / ``erode_px``; false
  positives (Poisson, ``false_positive_rate`` per frame) are object-sized blobs on a surface,
  labelled with a label the detector knows; each detection has a confidence score;
  ``mode: none`` gives no masks at all;
* poses: the base pose is dead-reckoned from odometry whose errors grow as a random walk with the
  distance driven and the angle turned, reset to the truth every ``relocalise_every_m`` metres
  driven; the camera pose is built from that belief plus per-frame jitter.

Ground truth (task scoring, the suites' gold answers) keeps reading the simulator, never this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from mnemobot.perception.sensor import DepthNoise, DetectorNoise, PoseNoise, SensorModel
from mnemobot.perception.types import Observation, Pose, quat_from_matrix

__all__ = [
    "FALSE_POSITIVE_ID_BASE",
    "FURNITURE_ID_BASE",
    "DepthSimulator",
    "DetectorSimulator",
    "OdometrySimulator",
    "SensorSimulator",
    "blob_mask",
    "jitter_pose",
    "morph_masks",
]

FALSE_POSITIVE_ID_BASE = 60000
"""Instance ids of false detections start here (objects are 1..99, furniture 100+)."""
FURNITURE_ID_BASE = 100
"""Instance ids from this one on are furniture in the simulated household."""
EDGE_JUMP_M = 0.05
"""A depth step larger than this (m), or than ``EDGE_JUMP_FRAC`` of the range, is a discontinuity."""
EDGE_JUMP_FRAC = 0.03
FALSE_POSITIVE_HALF_SIZE_M = (0.02, 0.05)
"""Half-size range (m) of a false detection's blob: the size of a household object."""
FALSE_POSITIVE_SURFACE_M = 0.08
"""A false detection's blob keeps the pixels within this depth (m) of its centre: one surface."""
LOW_SCORE_FACTOR = 0.6
"""False positives and confused labels score this fraction of a true detection."""

_STREAMS = {"depth": 1, "detector": 2, "pose": 3, "registration": 4}


# -------------------------------------------------------------------------------------------------
# image helpers


def _shift(img: np.ndarray, dy: int, dx: int, fill: float | int | None = None) -> np.ndarray:
    """``img`` moved by ``(dy, dx)`` pixels (rows down, columns right); uncovered pixels repeat the
    nearest edge, or take ``fill`` when given."""
    if dy == 0 and dx == 0:
        return img
    h, w = img.shape[:2]
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"shift ({dy}, {dx}) px is larger than the image ({h} x {w})")
    out = np.empty_like(img)
    rows_dst, rows_src = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    cols_dst, cols_src = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[rows_dst, cols_dst] = img[rows_src, cols_src]
    if dy > 0:
        out[:dy, cols_dst] = out[dy, cols_dst] if fill is None else fill
    elif dy < 0:
        out[dy:, cols_dst] = out[dy - 1, cols_dst] if fill is None else fill
    if dx > 0:
        out[:, :dx] = out[:, dx : dx + 1] if fill is None else fill
    elif dx < 0:
        out[:, dx:] = out[:, dx - 1 : dx] if fill is None else fill
    return out


def _filter3x3(a: np.ndarray, op: np.ufunc) -> np.ndarray:
    """3x3 minimum or maximum filter (``op``: ``np.minimum`` / ``np.maximum``; edges repeated),
    separable: rows then columns."""
    p = np.pad(a, 1, mode="edge")
    r = op(op(p[:-2], p[1:-1]), p[2:])
    return op(op(r[:, :-2], r[:, 1:-1]), r[:, 2:])


def blob_mask(shape: tuple[int, int], rate: float, blob_px: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean ``(H, W)`` mask covering ``rate`` of the pixels in blobs about ``blob_px`` wide:
    a coarse Gaussian field (one value per ``blob_px`` cell, randomly offset), bilinearly upsampled
    and thresholded at its ``1 - rate`` quantile."""
    h, w = shape
    if rate <= 0:
        return np.zeros(shape, dtype=bool)
    cell = max(1, int(round(blob_px)))
    gh, gw = h // cell + 3, w // cell + 3
    field = rng.standard_normal((gh, gw)).astype(np.float32)
    oy, ox = rng.random(2) * cell
    fy = (np.arange(h, dtype=np.float32) + oy) / cell
    fx = (np.arange(w, dtype=np.float32) + ox) / cell
    y0, x0 = fy.astype(np.intp), fx.astype(np.intp)
    wy, wx = (fy - y0)[:, None], (fx - x0)[None, :]
    cols = field[:, x0] * (1 - wx) + field[:, x0 + 1] * wx  # bilinear is separable: columns, then rows
    up = cols[y0] * (1 - wy) + cols[y0 + 1] * wy
    k = int(round(rate * h * w))
    if k >= h * w:
        return np.ones(shape, dtype=bool)
    threshold = np.partition(up.ravel(), h * w - k - 1)[h * w - k - 1] if k > 0 else np.inf
    return up > threshold


# -------------------------------------------------------------------------------------------------
# depth


class DepthSimulator:
    """Depth errors of one :class:`DepthNoise` (see the module docstring)."""

    def __init__(self, noise: DepthNoise) -> None:
        self.noise = noise

    def axial_sigma(self, z: np.ndarray) -> np.ndarray:
        """Axial 1-sigma noise (m) before quantisation, at range ``z`` (m)."""
        n = self.noise
        return (n.sigma0 + n.k2 * (z - n.z0) ** 2).astype(np.float32)

    def quantise(self, z: np.ndarray) -> np.ndarray:
        """Depth rounded to the disparity grid: ``1/z`` in steps of ``quant_k2`` (1/m), i.e. depth
        steps of ``quant_k2 z^2`` (m). Non-positive depths are returned unchanged."""
        q = self.noise.quant_k2
        if q <= 0:
            return z
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = np.rint(1.0 / (z * q))
            out = np.where((z > 0) & (steps > 0), 1.0 / (steps * q), z)
        return out.astype(np.float32)

    def edge_bands(self, z: np.ndarray, valid: np.ndarray, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pixels near depth discontinuities, from the true depth ``z`` (m; ``valid``: has a return).

        Returns ``(shadow, near_edge, z_near, z_far)``: ``shadow`` the flat indices of the far
        side's band, pixels at most ``edge_px`` (jittered per pixel by ``lateral_px``, 1 sigma)
        from a nearer surface; ``near_edge`` the flat indices of the near side's boundary pixels;
        ``z_near`` / ``z_far`` the nearest and farthest depth (m) around each pixel, the two
        surfaces a flying pixel lies between.
        """
        n = self.noise
        zz = np.where(valid, z, np.float32(1e9)).astype(np.float32)
        jump = np.maximum(np.float32(EDGE_JUMP_M), np.float32(EDGE_JUMP_FRAC) * zz)
        reach = max(1, int(math.ceil(n.edge_px + 3 * n.lateral_px)))
        dist = np.zeros(z.shape, dtype=np.int16)  # px to the nearest nearer surface (0: beyond reach)
        behind = zz - jump
        z_near = zz
        for r in range(1, reach + 1):
            z_near = _filter3x3(z_near, np.minimum)
            hit = z_near < behind
            hit &= dist == 0
            dist[hit] = r
        candidates = np.flatnonzero((dist > 0) & valid)
        width = np.full(len(candidates), float(n.edge_px))
        if n.lateral_px > 0:
            width += rng.standard_normal(len(candidates)) * n.lateral_px
        shadow = candidates[dist.ravel()[candidates] <= width]
        z_far = _filter3x3(np.where(valid, z, 0).astype(np.float32), np.maximum)
        near_edge = np.flatnonzero(valid & (z_far > zz + jump))
        return shadow, near_edge, np.minimum(z_near, zz), z_far

    def apply(self, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The measured depth image (float32 metres, 0 = no return) for a true one."""
        n = self.noise
        z = np.asarray(depth, dtype=np.float32)
        valid = np.isfinite(z) & (z > 0) & (z >= n.min_range) & (z <= n.max_range)
        z = np.where(valid, z, 0).astype(np.float32)
        noisy = z + rng.standard_normal(z.shape, dtype=np.float32) * self.axial_sigma(z)
        noisy = self.quantise(noisy)
        keep = valid & ~blob_mask(z.shape, n.hole_rate, n.hole_blob_px, rng)
        if n.edge_px > 0 or n.flying_rate > 0:
            self._edges(z, valid, noisy.ravel(), keep.ravel(), rng)
        return np.where(keep & (noisy > 0), noisy, 0).astype(np.float32)

    def _edges(self, z: np.ndarray, valid: np.ndarray, noisy: np.ndarray, keep: np.ndarray,
               rng: np.random.Generator) -> None:
        """Edge artefacts, in place on the flat ``noisy`` depth and ``keep`` mask: ``flying_rate``
        of the shadow band and of the near boundary fly between the surfaces, the rest of the
        band is lost."""
        shadow, near_edge, z_near, z_far = self.edge_bands(z, valid, rng)
        rate = self.noise.flying_rate
        zf, near, far = z.ravel(), z_near.ravel(), z_far.ravel()
        flies = rng.random(len(shadow)) < rate
        behind, lost = shadow[flies], shadow[~flies]
        noisy[behind] = near[behind] + rng.random(len(behind)).astype(np.float32) * (zf[behind] - near[behind])
        keep[lost] = False
        front = near_edge[rng.random(len(near_edge)) < rate]
        noisy[front] = zf[front] + rng.random(len(front)).astype(np.float32) * (far[front] - zf[front])


# -------------------------------------------------------------------------------------------------
# detector


def _grow_amounts(erode: float, dilate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-mask growth in whole pixels, from ``-erode`` to ``dilate``: uniform over the integers
    when both are whole, otherwise a uniform amount rounded up or down at random (so a 0.4 px
    erosion erodes one pixel 40% of the time at most)."""
    if n == 0:
        return np.zeros(0, np.int64)
    if float(erode).is_integer() and float(dilate).is_integer():
        return rng.integers(-int(erode), int(dilate) + 1, size=n)
    a = rng.uniform(-erode, dilate, size=n)
    return np.floor(a + rng.random(n)).astype(np.int64)


class DetectorSimulator:
    """An object detector's output in place of the perfect masks (see the module docstring).

    ``known_labels``: the labels false detections draw from (the detector's vocabulary).
    """

    def __init__(self, noise: DetectorNoise, known_labels: Sequence[str] = ()) -> None:
        self.noise = noise
        self.known_labels = tuple(sorted(set(known_labels)))

    def _score(self, rng: np.random.Generator, n: int, factor: float = 1.0) -> np.ndarray:
        t = self.noise
        raw = factor * t.score_mean + t.score_spread * rng.standard_normal(n)
        return np.clip(raw, 0.05, 1.0)

    def confuse(self, label: str, rng_u: float, rng_pick: float) -> str:
        """The label a detection reports: with ``confusion_rate`` (``rng_u`` below it) another
        label of ``label``'s confusion group (chosen by ``rng_pick`` in [0, 1))."""
        if rng_u >= self.noise.confusion_rate:
            return label
        for group in self.noise.confusions:
            if label in group:
                others = [g for g in group if g != label]
                if others:
                    return others[min(int(rng_pick * len(others)), len(others) - 1)]
        return label

    def apply(self, instances: np.ndarray, labels: dict[int, str], depth: np.ndarray, fx: float,
              rng: np.random.Generator) -> tuple[np.ndarray | None, dict[int, str], dict[int, float]]:
        """``(instances, labels, scores)`` as the detector reports them for the true mask and
        labels; ``depth`` (m, measured) places false positives on surfaces; ``fx`` (px) sizes them."""
        t = self.noise
        if t.mode == "none":
            return None, {}, {}
        ids = np.asarray(instances)
        counts = np.bincount(ids.ravel().astype(np.intp), minlength=1)
        present = [i for i in sorted(labels) if 0 < i < len(counts) and counts[i] > 0]
        n = len(present)
        u_miss, u_conf, u_pick = rng.random(n), rng.random(n), rng.random(n)
        scores_raw = self._score(rng, n)
        amounts = _grow_amounts(t.erode_px, t.dilate_px, n, rng)
        lut = np.zeros(max(len(counts), FALSE_POSITIVE_ID_BASE), dtype=np.int32)
        grow = np.zeros(len(lut), dtype=np.int32)
        out_labels: dict[int, str] = {}
        scores: dict[int, float] = {}
        for k, iid in enumerate(present):
            if counts[iid] < t.min_pixels or u_miss[k] < t.miss_rate:
                continue
            label = self.confuse(labels[iid], float(u_conf[k]), float(u_pick[k]))
            lut[iid], grow[iid] = iid, int(amounts[k])
            out_labels[iid] = label
            scores[iid] = float(scores_raw[k] * (LOW_SCORE_FACTOR if label != labels[iid] else 1.0))
        out = lut[np.clip(ids, 0, len(lut) - 1)]
        out = morph_masks(out, grow)
        self._add_false_positives(out, ids, out_labels, scores, depth, fx, rng)
        return out.astype(np.int32), out_labels, scores

    def _add_false_positives(self, out: np.ndarray, true_ids: np.ndarray, labels: dict[int, str],
                             scores: dict[int, float], depth: np.ndarray, fx: float,
                             rng: np.random.Generator) -> None:
        """Paint ``Poisson(false_positive_rate)`` blobs into ``out`` (in place) on surfaces that
        are not objects (background or furniture with a depth return)."""
        t = self.noise
        k = int(rng.poisson(t.false_positive_rate)) if t.false_positive_rate > 0 else 0
        if k == 0 or not self.known_labels:
            return
        surface = (depth > 0) & ((true_ids == 0) | (true_ids >= FURNITURE_ID_BASE))
        candidates = np.flatnonzero(surface)
        if len(candidates) == 0:
            return
        h, w = out.shape
        picks = candidates[rng.integers(len(candidates), size=k)]
        sizes = rng.uniform(*FALSE_POSITIVE_HALF_SIZE_M, size=k)
        names = rng.integers(len(self.known_labels), size=k)
        fp_scores = self._score(rng, k, LOW_SCORE_FACTOR)
        for j in range(k):
            cy, cx = divmod(int(picks[j]), w)
            zc = float(depth[cy, cx])
            r = max(1, int(round(fx * sizes[j] / zc)))
            y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, h), max(cx - r, 0), min(cx + r + 1, w)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            win = depth[y0:y1, x0:x1]
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (np.abs(win - zc) < FALSE_POSITIVE_SURFACE_M)
            fid = FALSE_POSITIVE_ID_BASE + j
            out[y0:y1, x0:x1][blob] = fid
            labels[fid] = self.known_labels[int(names[j])]
            scores[fid] = float(fp_scores[j])


def _border(ids: np.ndarray) -> np.ndarray:
    """Flat indices of the pixels with a 4-neighbour of another id."""
    b = np.zeros(ids.shape, dtype=bool)
    v = ids[1:] != ids[:-1]
    b[1:] |= v
    b[:-1] |= v
    hz = ids[:, 1:] != ids[:, :-1]
    b[:, 1:] |= hz
    b[:, :-1] |= hz
    return np.flatnonzero(b)


def morph_masks(ids: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Instance mask with each instance eroded (``amount[id] < 0``) or dilated (``> 0``) by that
    many pixels (4-neighbourhood steps). Eroded pixels become background; a dilating instance
    grows into background and into instances that do not dilate as far (ties: the larger id).
    Each step touches only the pixels on a boundary between ids."""
    out = np.array(ids, copy=True)
    steps = int(np.abs(amount).max()) if amount.size else 0
    h, w = out.shape
    flat = out.ravel()
    for s in range(1, steps + 1):
        border = _border(out)
        if len(border) == 0:
            break
        r, c = np.divmod(border, w)
        neighbours = np.stack([flat[np.where(r > 0, border - w, border)], flat[np.where(r < h - 1, border + w, border)],
                               flat[np.where(c > 0, border - 1, border)], flat[np.where(c < w - 1, border + 1, border)]])
        cur = flat[border]
        new = np.where(amount[cur] <= -s, 0, cur)
        grower = np.where(amount[neighbours] >= s, neighbours, 0).max(axis=0)
        take = (grower > 0) & (amount[cur] < s)
        new[take] = grower[take]
        flat[border] = new
    return out


# -------------------------------------------------------------------------------------------------
# poses


def _compose(pose: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Planar pose ``(x, y, yaw)`` moved by ``delta`` expressed in its own frame."""
    x, y, th = pose
    c, s = math.cos(th), math.sin(th)
    yaw = th + delta[2]
    return np.array([x + c * delta[0] - s * delta[1], y + s * delta[0] + c * delta[1],
                     math.atan2(math.sin(yaw), math.cos(yaw))])


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Planar pose ``b`` in the frame of ``a`` (both ``(x, y, yaw)`` in the world)."""
    c, s = math.cos(a[2]), math.sin(a[2])
    dx, dy = b[0] - a[0], b[1] - a[1]
    dth = b[2] - a[2]
    return np.array([c * dx + s * dy, -s * dx + c * dy, math.atan2(math.sin(dth), math.cos(dth))])


class OdometrySimulator:
    """Dead reckoning with noisy odometry: the base pose the robot believes.

    Each update takes the true pose and the odometer (cumulative metres driven, radians turned).
    The true motion since the last update, in the base frame, gets Gaussian errors whose variance
    grows with the distance ``d`` (m) and the angle ``a`` (rad) of that motion: translation
    ``odom_trans_frac^2 d`` m^2 per axis, heading ``odom_yaw_frac^2 a + odom_yaw_per_m^2 d`` rad^2
    (a random walk: after 1 m straight, 1 sigma is ``odom_trans_frac`` m). Every
    ``relocalise_every_m`` metres driven, the belief is reset to the truth.
    """

    def __init__(self, noise: PoseNoise) -> None:
        self.noise = noise
        self.believed = np.zeros(3)
        self._true = np.zeros(3)
        self._odometer = np.zeros(2)
        self._since_fix = 0.0
        self.relocalisations = 0

    def reset(self, true_pose: np.ndarray) -> None:
        """Start of an episode: the belief is the truth; the odometer reads zero."""
        self.believed = np.array(true_pose, dtype=float)
        self._true = self.believed.copy()
        self._odometer = np.zeros(2)
        self._since_fix = 0.0
        self.relocalisations = 0

    def update(self, true_pose: np.ndarray, odometer: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The believed ``(x, y, yaw)`` after moving to ``true_pose`` with ``odometer`` reading
        ``(metres driven, radians turned)`` since the reset."""
        odo = np.asarray(odometer, dtype=float)
        driven, turned = (float(v) for v in odo - self._odometer)
        if driven <= 0 and turned <= 0:
            return self.believed.copy()
        n = self.noise
        delta = _relative(self._true, np.asarray(true_pose, dtype=float))
        sig_xy = n.odom_trans_frac * math.sqrt(driven)
        sig_th = math.sqrt(n.odom_yaw_frac**2 * turned + n.odom_yaw_per_m**2 * driven)
        err = rng.standard_normal(3) * np.array([sig_xy, sig_xy, sig_th])
        self.believed = _compose(self.believed, delta + err)
        self._true, self._odometer = np.array(true_pose, dtype=float), odo.copy()
        self._since_fix += driven
        if n.relocalise_every_m > 0 and self._since_fix >= n.relocalise_every_m:
            self.believed, self._since_fix = self._true.copy(), 0.0
            self.relocalisations += 1
        return self.believed.copy()


def jitter_pose(pose: Pose, noise: PoseNoise, rng: np.random.Generator) -> Pose:
    """``pose`` (optical frame in the world) with per-frame errors: ``position_sigma`` m per world
    axis and a rotation of ``rotation_sigma_deg`` (1 sigma per axis of the camera frame)."""
    if noise.position_sigma <= 0 and noise.rotation_sigma_deg <= 0:
        return pose
    dp = rng.standard_normal(3) * noise.position_sigma
    rv = rng.standard_normal(3) * math.radians(noise.rotation_sigma_deg)
    angle = float(np.linalg.norm(rv))
    if angle < 1e-12:
        rot = np.eye(3)
    else:
        k = rv / angle
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        rot = np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx
    return Pose(pose.position + dp, quat_from_matrix(pose.rotation @ rot))


# -------------------------------------------------------------------------------------------------
# the rig


class SensorSimulator:
    """A sensor rig in simulation: perfect frames in, perceived frames out.

    ``model``: the rig (:func:`~mnemobot.perception.sensor.sensor_model`); ``known_labels``: the
    detector's vocabulary (false detections draw their label from it); ``seed``: random stream
    (:meth:`reset` starts an episode with its own seed). Depth, detector, pose and registration
    draw from separate streams, so changing one part of a profile leaves the others' draws alone.
    """

    def __init__(self, model: SensorModel, known_labels: Sequence[str] = (), seed: int = 0) -> None:
        model.check(f"sensor profile {model.name!r}")
        self.model = model
        self.known_labels = tuple(known_labels)
        self.depth = DepthSimulator(model.depth)
        self.detector = DetectorSimulator(model.detector, known_labels)
        self.odometry = OdometrySimulator(model.pose)
        self.offset = (0, 0)
        self._fx: float | None = None
        self._direction = (0.0, 0.0, 0.0, 0.0)
        self.reset(seed, np.zeros(3))

    def _at_focal(self, fx: float) -> None:
        """Depth and detector simulators (and the misregistration offset) in pixels of an image
        with focal length ``fx``; rebuilt only when the focal length changes."""
        if self._fx == fx:
            return
        scaled = self.model.at_focal(fx)
        self.depth = DepthSimulator(scaled.depth)
        self.detector = DetectorSimulator(scaled.detector, self.known_labels)
        self._fx = fx
        self.offset = self._offset(scaled.depth.misregistration_px)

    def reset(self, seed: int, true_pose: np.ndarray) -> None:
        """A new episode: random streams from ``seed``, the odometry at ``true_pose``
        ``(x, y, yaw)``, a new colour/depth misregistration offset (pixels)."""
        self._rng = {name: np.random.default_rng([int(seed), k]) for name, k in _STREAMS.items()}
        self.odometry.reset(true_pose)
        rng = self._rng["registration"]
        theta = float(rng.uniform(0, 2 * math.pi))
        u = rng.random(2)
        self._direction = (math.sin(theta), math.cos(theta), float(u[0]), float(u[1]))
        self.offset = self._offset(self.depth.noise.misregistration_px)

    def _offset(self, m: float) -> tuple[int, int]:
        """Colour/mask offset ``(rows, columns)`` against depth for the episode: ``m`` pixels in
        the episode's random direction, each component rounded up or down at random so that its
        mean is the fractional offset (0.5 px shifts by one pixel half of the time)."""
        sy, sx, uy, ux = self._direction
        return int(math.floor(m * sy + uy)), int(math.floor(m * sx + ux))

    def base_pose(self, true_pose: np.ndarray, odometer: np.ndarray) -> np.ndarray:
        """The believed base pose ``(x, y, yaw)`` for the true one and the odometer reading
        ``(metres driven, radians turned)`` since the episode's reset."""
        return self.odometry.update(true_pose, odometer, self._rng["pose"])

    def camera_pose(self, believed_base: np.ndarray, camera_in_base: Pose, jitter: bool = True) -> Pose:
        """Optical frame in the world as the robot believes it: the believed base pose composed
        with the camera's pose in the base frame, plus per-frame jitter when ``jitter``."""
        x, y, yaw = (float(v) for v in believed_base)
        pose = Pose.from_xyz_yaw(x, y, 0.0, yaw) @ camera_in_base
        return jitter_pose(pose, self.model.pose, self._rng["pose"]) if jitter else pose

    def perceive(self, truth: Observation, camera_in_base: Pose, odometer: np.ndarray) -> Observation:
        """The frame the robot perceives for the simulator's exact frame ``truth`` (whose
        ``proprio.base_pose`` is the true base pose); ``camera_in_base``: the optical frame in
        the base frame (head angles applied); ``odometer``: ``(m driven, rad turned)``."""
        if self.model.is_ideal:
            return truth
        if truth.proprio is None:
            raise ValueError("perceive needs the true frame's proprioception (its base pose)")
        believed = self.base_pose(truth.proprio.base_pose, odometer)
        self._at_focal(float(truth.intrinsics.fx))
        depth = self.depth.apply(truth.depth, self._rng["depth"])
        dy, dx = self.offset
        rgb = _shift(truth.rgb, dy, dx)
        instances, labels, scores = truth.instances, dict(truth.labels), {}
        if instances is not None:
            shifted = _shift(instances, dy, dx)
            instances, labels, scores = self.detector.apply(shifted, labels, depth, truth.intrinsics.fx,
                                                            self._rng["detector"])
        return replace(
            truth, rgb=rgb, depth=depth, instances=instances, labels=labels, scores=scores,
            camera_pose=self.camera_pose(believed, camera_in_base),
            proprio=replace(truth.proprio, base_pose=believed),
        )
