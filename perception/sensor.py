"""Sensor models: how noisy an RGB-D camera, its pose and its detector are.

One :class:`SensorModel` describes a sensor rig in numbers taken from published noise models.
It serves two sides that must agree:

* the simulator applies it to perfect renders (``mnemobot.sim.sensors``), so an episode sees
  what a real camera would see;
* memory derives every threshold from it (how far a sighting may be from a remembered pose
  before it counts as a move, how much nearer a depth reading must be before it hides an
  object, how likely a visible object is to be detected), so the same memory code is strict on
  perfect data and tolerant on a Kinect, without constants tuned to one recording.

Profiles (:data:`PROFILES`): ``ideal`` (the simulator as it is: exact depth, masks and poses),
``kinect`` (Kinect v1 structured light), ``realsense`` (RealSense D435 active stereo) and
``heavy`` (a worn sensor with a poor detector). ``FILE.yaml`` gives a custom one (see
:func:`load_sensor_model`).

Depth noise (axial, 1 sigma, metres) is ``sigma(z) = sigma0 + k2 * (z - z0)**2``:

* Kinect v1: Nguyen, Izadi and Lovell, "Modeling Kinect Sensor Noise for Improved 3D
  Reconstruction and Tracking" (3DIMPVT 2012): ``0.0012 + 0.0019 (z - 0.4)^2`` for surfaces
  facing the camera; lateral noise about 0.8 px. Disparity quantisation 1/8 px with
  ``f = 580 px``, baseline 7.5 cm gives depth steps ``z^2 / (8 f b) = 0.00287 z^2``
  (Khoshelham and Elberink, Sensors 2012). Range 0.5-4.5 m.
* RealSense D435: RMS error ``z^2 * subpixel / (f * b)`` with subpixel 0.08, ``f = 385 px`` at
  640x480, ``b = 0.05 m``: ``0.0042 z^2`` (Intel, "Tuning depth cameras for best performance").
  Range 0.3-6 m.

Pixel amounts (lateral noise, edge bands, hole blobs, misregistration, mask erosion, the
detector's smallest mask) are measured on a camera: ``reference_fx`` is its focal length in
pixels (Kinect v1 580 px and D435 385 px at 640x480). On an image with another focal length
they scale with it (:meth:`SensorModel.at_focal`; areas with its square), so the noise is the
same angle whether the simulator renders 320x240 or 640x480. ``reference_fx = 0`` means the
amounts are pixels of whatever image they are applied to.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PROFILES",
    "DepthNoise",
    "DetectorNoise",
    "PoseNoise",
    "SensorError",
    "SensorModel",
    "load_sensor_model",
    "sensor_model",
]


class SensorError(ValueError):
    """An unknown profile name, or a profile file that cannot be read or is out of range."""


@dataclass(frozen=True)
class DepthNoise:
    """Depth sensor errors (metres, pixels, fractions of pixels).

    * ``sigma0``, ``k2``, ``z0``: axial 1-sigma noise ``sigma0 + k2 (z - z0)^2`` (m);
    * ``quant_k2``: depth quantisation step ``quant_k2 * z^2`` (m; 0 = none);
    * ``lateral_px``: lateral (image-plane) 1-sigma noise of edges, pixels;
    * ``min_range``, ``max_range``: no return outside (m);
    * ``hole_rate``: fraction of pixels with no return, in blobs of ``hole_blob_px``;
    * ``edge_px``: band (px) at depth discontinuities where returns are lost or fly between
      the two surfaces (``flying_rate`` of the band flies, the rest is lost);
    * ``misregistration_px``: colour/depth misalignment (pixels, applied as a shift of the mask
      and colour against depth).
    """

    sigma0: float = 0.0
    k2: float = 0.0
    z0: float = 0.0
    quant_k2: float = 0.0
    lateral_px: float = 0.0
    min_range: float = 0.0
    max_range: float = math.inf
    hole_rate: float = 0.0
    hole_blob_px: float = 6.0
    edge_px: float = 0.0
    flying_rate: float = 0.0
    misregistration_px: float = 0.0

    def sigma(self, z: Any) -> Any:
        """Axial 1-sigma noise at range ``z`` (m), quantisation included (uniform step / sqrt(12))."""
        zz = np.asarray(z, dtype=float)
        s = self.sigma0 + self.k2 * (zz - self.z0) ** 2
        q = self.quant_k2 * zz**2 / math.sqrt(12.0)
        out = np.sqrt(s**2 + q**2)
        return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class PoseNoise:
    """Camera pose and base odometry errors.

    * ``position_sigma`` (m), ``rotation_sigma_deg``: per-frame noise of the camera pose (the
      localisation's jitter, calibration error);
    * ``odom_trans_frac``: odometry translation error, 1 sigma per metre driven (fraction);
    * ``odom_yaw_frac``: odometry heading error, 1 sigma per radian turned (fraction);
    * ``odom_yaw_per_m``: heading drift, rad (1 sigma) per metre driven.

    Odometry errors accumulate (a random walk) until the robot's localisation corrects them;
    ``relocalise_every_m`` says after how many metres of driving it does (0 = never: the map
    frame is the odometry frame).
    """

    position_sigma: float = 0.0
    rotation_sigma_deg: float = 0.0
    odom_trans_frac: float = 0.0
    odom_yaw_frac: float = 0.0
    odom_yaw_per_m: float = 0.0
    relocalise_every_m: float = 0.0

    def drift_sigma(self, z: Any) -> Any:
        """1-sigma error (m) that odometry drift adds to a point at range ``z`` between two
        sightings: the random walk over the distance driven between corrections
        (``relocalise_every_m``; 10 m when never corrected), in translation and in heading."""
        horizon = self.relocalise_every_m if self.relocalise_every_m > 0 else 10.0
        zz = np.asarray(z, dtype=float)
        return math.sqrt(horizon) * np.hypot(self.odom_trans_frac, self.odom_yaw_per_m * zz)


@dataclass(frozen=True)
class DetectorNoise:
    """The object detector in place of perfect instance masks.

    * ``mode``: ``masks`` (per-instance masks with the errors below) or ``none`` (no masks:
      model-free segmentation, objects labelled ``unknown``);
    * ``miss_rate``: probability that a visible object is not detected in a frame;
    * ``false_positive_rate``: expected false detections per frame;
    * ``confusion_rate``: probability that a detection carries the label of a similar class;
    * ``confusions``: groups of labels that are confused with each other;
    * ``erode_px`` / ``dilate_px``: mask boundary errors (pixels; the sign is drawn per mask);
    * ``min_pixels``: smallest mask the detector finds (pixels at the profile's resolution);
    * ``score_mean``, ``score_spread``: confidence scores of true detections (false positives
      and confusions score lower).
    """

    mode: str = "masks"
    miss_rate: float = 0.0
    false_positive_rate: float = 0.0
    confusion_rate: float = 0.0
    confusions: tuple[tuple[str, ...], ...] = ()
    erode_px: float = 0.0
    dilate_px: float = 0.0
    min_pixels: int = 20
    score_mean: float = 1.0
    score_spread: float = 0.0

    def confusable(self, a: str, b: str) -> bool:
        """Whether the detector may give label ``b`` to an object of class ``a`` (or back)."""
        return a == b or any(a in g and b in g for g in self.confusions)


@dataclass(frozen=True)
class SensorModel:
    """A camera rig: depth, pose and detector errors. See the module docstring."""

    name: str = "ideal"
    depth: DepthNoise = field(default_factory=DepthNoise)
    pose: PoseNoise = field(default_factory=PoseNoise)
    detector: DetectorNoise = field(default_factory=DetectorNoise)
    reference_fx: float = 0.0
    """Focal length (px) of the camera the pixel amounts were measured on (0: any image's own)."""

    @property
    def is_ideal(self) -> bool:
        return self.depth == DepthNoise() and self.pose == PoseNoise() and self.detector == DetectorNoise()

    def pixel_scale(self, fx: float) -> float:
        """How many pixels of an image with focal length ``fx`` one pixel of the profile is."""
        if self.reference_fx <= 0 or not fx > 0:
            return 1.0
        return float(fx) / self.reference_fx

    def at_focal(self, fx: float) -> SensorModel:
        """This model with its pixel amounts in pixels of an image with focal length ``fx`` (px):
        lengths scale with ``fx / reference_fx``, the detector's smallest mask (an area) with its
        square. Ideal models and models without a reference are returned as they are."""
        s = self.pixel_scale(fx)
        if abs(s - 1.0) < 1e-9:
            return self
        d, t = self.depth, self.detector
        return replace(
            self,
            depth=replace(d, lateral_px=d.lateral_px * s, edge_px=d.edge_px * s, hole_blob_px=d.hole_blob_px * s,
                          misregistration_px=d.misregistration_px * s),
            detector=replace(t, erode_px=t.erode_px * s, dilate_px=t.dilate_px * s,
                             min_pixels=max(1, int(round(t.min_pixels * s * s)))),
            reference_fx=float(fx),
        )

    def lateral_sigma(self, z: Any, fx: float) -> Any:
        """1-sigma lateral (image-plane) depth noise in metres at range ``z`` on an image with
        focal length ``fx`` (px): ``lateral_px`` is an angle, ``lateral_px / reference_fx``."""
        f = self.reference_fx if self.reference_fx > 0 else float(fx)
        return self.depth.lateral_px * np.asarray(z, dtype=float) / max(f, 1e-6)

    def point_sigma(self, z: Any, fx: float) -> Any:
        """1-sigma 3D error (m) of one back-projected point at range ``z``: axial and lateral
        depth noise, the camera pose's error (translation, and rotation times range) and the
        odometry drift between sightings (:meth:`PoseNoise.drift_sigma`)."""
        zz = np.asarray(z, dtype=float)
        lateral = self.lateral_sigma(zz, fx)
        rot = math.radians(self.pose.rotation_sigma_deg) * zz
        drift = self.pose.drift_sigma(zz)
        out = np.sqrt(self.depth.sigma(zz) ** 2 + lateral**2 + self.pose.position_sigma**2 + rot**2 + drift**2)
        return float(out) if np.ndim(out) == 0 else out

    def surface_margin(self, z: Any, fx: float) -> Any:
        """How far (m) a depth reading may be from a remembered surface at range ``z`` and still
        agree with it (3 sigma of :meth:`point_sigma`)."""
        return 3.0 * self.point_sigma(z, fx)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["detector"]["confusions"] = [list(g) for g in self.detector.confusions]
        if math.isinf(self.depth.max_range):  # strict JSON has no infinity: no limit is null
            d["depth"]["max_range"] = None
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "sensor profile") -> SensorModel:
        """Build from plain data (a YAML file's content); unknown keys and bad values raise."""
        if not isinstance(raw, dict):
            raise SensorError(f"{source}: expected a mapping with name, depth, pose, detector")
        unknown = set(raw) - {"name", "base", "depth", "pose", "detector", "reference_fx"}
        if unknown:
            raise SensorError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; "
                              "known: name, base, reference_fx, depth, pose, detector")
        base = sensor_model(str(raw["base"])) if raw.get("base") is not None else cls()
        parts = {}
        for key, part_cls in (("depth", DepthNoise), ("pose", PoseNoise), ("detector", DetectorNoise)):
            part = raw.get(key) or {}
            if not isinstance(part, dict):
                raise SensorError(f"{source}: '{key}' must be a mapping")
            known = {f.name for f in fields(part_cls)}
            bad = set(part) - known
            if bad:
                raise SensorError(f"{source}: unknown {key} key(s) {', '.join(sorted(bad))}; "
                                  f"known: {', '.join(sorted(known))}")
            values = dict(part)
            if key == "depth" and "max_range" in values and values["max_range"] is None:
                values["max_range"] = math.inf
            if "confusions" in values:
                values["confusions"] = tuple(tuple(str(x) for x in g) for g in values["confusions"] or ())
            try:
                parts[key] = replace(getattr(base, key), **values)
            except TypeError as e:
                raise SensorError(f"{source}: {key}: {e}") from None
        ref = raw.get("reference_fx", base.reference_fx)
        try:
            ref = float(ref if ref is not None else 0.0)
        except (TypeError, ValueError):
            raise SensorError(f"{source}: reference_fx must be a number, got {ref!r}") from None
        model = cls(name=str(raw.get("name", base.name if raw.get("base") else "custom")), reference_fx=ref, **parts)
        model.check(source)
        return model

    def check(self, source: str = "sensor profile") -> None:
        """Raise :class:`SensorError` for values out of range."""
        d, p, t = self.depth, self.pose, self.detector
        numbers = {**{f"depth.{f.name}": getattr(d, f.name) for f in fields(d)},
                   **{f"pose.{f.name}": getattr(p, f.name) for f in fields(p)}, "reference_fx": self.reference_fx}
        for f in ("miss_rate", "false_positive_rate", "confusion_rate", "erode_px", "dilate_px", "min_pixels",
                  "score_mean", "score_spread"):
            numbers[f"detector.{f}"] = getattr(t, f)
        for name, value in numbers.items():
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise SensorError(f"{source}: {name} must be a number, got {value!r}") from None
            if math.isnan(v) or v < 0 or (math.isinf(v) and name != "depth.max_range"):
                raise SensorError(f"{source}: {name} must be a finite number >= 0, got {value!r}")
        for name in ("miss_rate", "confusion_rate", "score_mean"):
            if getattr(t, name) > 1:
                raise SensorError(f"{source}: detector.{name} must be in [0, 1], got {getattr(t, name)!r}")
        if d.hole_rate > 1 or d.flying_rate > 1:
            raise SensorError(f"{source}: depth.hole_rate and depth.flying_rate must be in [0, 1]")
        if d.max_range <= d.min_range:
            raise SensorError(f"{source}: depth.max_range must exceed depth.min_range")
        if t.mode not in ("masks", "none"):
            raise SensorError(f"{source}: detector.mode must be 'masks' or 'none', got {t.mode!r}")


_KINECT_CONFUSIONS = (("mug", "cup", "bowl"), ("book", "box", "jenga"), ("ball", "orange", "apple"))
_ROBOT_POSE = PoseNoise(position_sigma=0.01, rotation_sigma_deg=0.3, odom_trans_frac=0.01, odom_yaw_frac=0.01,
                        odom_yaw_per_m=0.005, relocalise_every_m=5.0)
"""A wheeled base with a localiser that corrects its odometry every 5 m, and a calibrated head."""
_DETECTOR = DetectorNoise(mode="masks", miss_rate=0.05, false_positive_rate=0.02, confusion_rate=0.05,
                          confusions=_KINECT_CONFUSIONS, erode_px=1, dilate_px=1, min_pixels=30,
                          score_mean=0.85, score_spread=0.1)
"""An instance detector missing 5%, adding 0.02 false detections a frame, confusing 5% of labels."""

PROFILES: dict[str, SensorModel] = {
    "ideal": SensorModel(),
    "kinect": SensorModel(
        name="kinect",
        reference_fx=580.0,
        depth=DepthNoise(sigma0=0.0012, k2=0.0019, z0=0.4, quant_k2=0.00287, lateral_px=0.8, min_range=0.5,
                         max_range=4.5, hole_rate=0.02, hole_blob_px=6, edge_px=2, flying_rate=0.3,
                         misregistration_px=1.0),
        pose=_ROBOT_POSE,
        detector=_DETECTOR,
    ),
    "realsense": SensorModel(
        name="realsense",
        reference_fx=385.0,
        depth=DepthNoise(sigma0=0.001, k2=0.0042, z0=0.0, quant_k2=0.0, lateral_px=0.6, min_range=0.3,
                         max_range=6.0, hole_rate=0.03, hole_blob_px=8, edge_px=2, flying_rate=0.5,
                         misregistration_px=0.5),
        pose=_ROBOT_POSE,
        detector=_DETECTOR,
    ),
    "heavy": SensorModel(
        name="heavy",
        reference_fx=580.0,
        depth=DepthNoise(sigma0=0.003, k2=0.005, z0=0.0, quant_k2=0.004, lateral_px=1.5, min_range=0.5,
                         max_range=4.0, hole_rate=0.08, hole_blob_px=10, edge_px=3, flying_rate=0.5,
                         misregistration_px=2.0),
        pose=PoseNoise(position_sigma=0.02, rotation_sigma_deg=0.6, odom_trans_frac=0.03, odom_yaw_frac=0.03,
                       odom_yaw_per_m=0.01, relocalise_every_m=5.0),
        detector=DetectorNoise(mode="masks", miss_rate=0.15, false_positive_rate=0.1, confusion_rate=0.1,
                               confusions=_KINECT_CONFUSIONS, erode_px=2, dilate_px=2, min_pixels=40,
                               score_mean=0.7, score_spread=0.15),
    ),
}
"""Named profiles (``--sensor-profile NAME``)."""


def sensor_model(name_or_path: str | Path | SensorModel | None) -> SensorModel:
    """A profile by name (:data:`PROFILES`), a YAML file, or a model given as is (None: ideal)."""
    if name_or_path is None:
        return PROFILES["ideal"]
    if isinstance(name_or_path, SensorModel):
        return name_or_path
    text = str(name_or_path)
    if text in PROFILES:
        return PROFILES[text]
    if text.endswith((".yaml", ".yml")) or Path(text).exists():
        return load_sensor_model(text)
    raise SensorError(f"unknown sensor profile {text!r}; use one of {', '.join(PROFILES)} or a FILE.yaml")


def load_sensor_model(path: str | Path) -> SensorModel:
    """A custom profile from YAML: ``name``, optional ``base`` (a named profile to start from),
    and ``depth`` / ``pose`` / ``detector`` mappings with the fields of :class:`DepthNoise`,
    :class:`PoseNoise` and :class:`DetectorNoise`. Example::

        name: my_d435
        base: realsense
        depth: {hole_rate: 0.05}
        detector: {miss_rate: 0.1, confusions: [[mug, cup]]}
    """
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise SensorError(f"cannot read sensor profile {p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise SensorError(f"sensor profile {p} is not valid YAML: {_yaml_problem(e)}") from None
    return SensorModel.from_dict(raw, f"sensor profile {p}")


def _yaml_problem(e: Exception) -> str:
    """One line for a YAML error: the problem and where (line, column; 1-based)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)
