"""Open-vocabulary detector plugins: text queries -> 2D detections -> an instance mask.

A **detector** turns an RGB image and text queries ("red cube", "mug") into :class:`Detection` s:
a label (one of the queries), a score in [0, 1], a box in pixels and optionally a mask. Box
coordinates are continuous image coordinates ``(x0, y0, x1, y1)``: x along columns (right),
y along rows (down), pixel ``(u, v)`` covering ``[u, u + 1) x [v, v + 1)``; a pixel belongs to
a box when its centre ``(u + 0.5, v + 0.5)`` does.

Implementations register under a name with :func:`register_detector`, each with its own
configuration dataclass (``config_type``), and are built by :func:`make_detector`::

    detector = make_detector("owlvit", model_path="/models/owlvit-base-patch32")
    detections = detector.detect(obs.rgb, ["red cube", "mug"])
    labelled = apply_detections(obs, detections, min_score=0.2)
    objects = objects_from_observation(labelled)

Models are only ever loaded from a local folder (``local_files_only``): nothing is downloaded.

:func:`apply_detections` turns detections into the ``instances``/``labels`` of an
:class:`~mnemobot.perception.types.Observation`, so the rest of perception treats detector
output like simulator masks. A box contains the object and some background; the depth image
separates them. Inside each box (and the detection's mask, if any) a pixel is kept when its depth
is within ``depth_margin`` of the box's *near-surface depth*, a low quantile of the depths in the
box's central window (where the object is): background farther behind, or occluders in front,
fall outside. Then, if the box's border ring is dominated by one horizontal surface below the
object (a table around a mug), pixels at or below that surface's height are dropped too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from mnemobot.perception.types import Observation, ObservationError

__all__ = [
    "DETECTORS",
    "Detection",
    "DetectionMaskConfig",
    "Detector",
    "OwlViTDetector",
    "OwlViTDetectorConfig",
    "apply_detections",
    "make_detector",
    "non_max_suppression",
    "register_detector",
]


@dataclass(frozen=True)
class Detection:
    """One detected object: ``label`` (a query), ``score`` in [0, 1], ``box_xyxy`` ``(4,)`` pixels
    ``(x0, y0, x1, y1)`` and an optional ``(H, W)`` boolean ``mask``."""

    label: str
    score: float
    box_xyxy: np.ndarray
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        box = np.asarray(self.box_xyxy, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"detection {self.label!r}: box_xyxy must be finite (x0, y0, x1, y1) with "
                             f"x1 >= x0 and y1 >= y0, got {self.box_xyxy}")
        if not math.isfinite(self.score):
            raise ValueError(f"detection {self.label!r}: score must be finite, got {self.score}")
        object.__setattr__(self, "box_xyxy", box)
        object.__setattr__(self, "score", float(self.score))
        if self.mask is not None:
            object.__setattr__(self, "mask", np.asarray(self.mask, dtype=bool))


@runtime_checkable
class Detector(Protocol):
    """Anything that finds the queried objects in an ``(H, W, 3)`` uint8 RGB image."""

    def detect(self, rgb: np.ndarray, queries: Sequence[str]) -> list[Detection]:
        """Detections (labels taken from ``queries``), highest score first."""
        ...


class _DetectorClass(Protocol):
    config_type: ClassVar[type]

    def __call__(self, config: Any) -> Detector: ...


DETECTORS: dict[str, _DetectorClass] = {}
"""Registered detector implementations by name (see :func:`register_detector`)."""

_D = TypeVar("_D")


def register_detector(name: str) -> Callable[[_D], _D]:
    """Class decorator registering a detector implementation under ``name``.

    The class must define ``config_type``, a dataclass of its settings, and be constructible as
    ``cls(config)``; its instances must satisfy :class:`Detector`. Names are unique.
    """

    def decorator(cls: _D) -> _D:
        config_type = getattr(cls, "config_type", None)
        if not (isinstance(config_type, type) and is_dataclass(config_type)):
            raise TypeError(f"detector {name!r}: {getattr(cls, '__name__', cls)} needs a dataclass config_type")
        if not callable(getattr(cls, "detect", None)):
            raise TypeError(f"detector {name!r}: {getattr(cls, '__name__', cls)} has no detect() method")
        if name in DETECTORS and DETECTORS[name] is not cls:
            raise ValueError(f"a detector named {name!r} is already registered ({DETECTORS[name].__name__})")
        DETECTORS[name] = cls  # type: ignore[assignment]
        return cls

    return decorator


def make_detector(name: str, **config: Any) -> Detector:
    """Build the detector registered as ``name`` from its config fields given as keywords."""
    if name not in DETECTORS:
        known = ", ".join(sorted(DETECTORS)) or "none"
        raise ValueError(f"unknown detector {name!r}; registered: {known}")
    cls = DETECTORS[name]
    names = {f.name for f in fields(cls.config_type)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ValueError(f"detector {name!r} has no setting(s) {', '.join(unknown)}; "
                         f"its {cls.config_type.__name__} fields are: {', '.join(sorted(names))}")
    try:
        settings = cls.config_type(**config)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"detector {name!r}: {exc}") from exc
    return cls(settings)


# -- post-processing --------------------------------------------------------------------------------
def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes ``(N, 4)`` kept by greedy non-maximum suppression, best first.

    A box is dropped when its intersection-over-union with an already kept, higher-scoring box
    exceeds ``iou_threshold`` (1 keeps everything).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        h = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    return arr


def _check_queries(queries: Sequence[str]) -> list[str]:
    if isinstance(queries, str):
        raise TypeError("queries must be a sequence of strings, not a single string")
    out = list(queries)
    if not out or not all(isinstance(q, str) and q.strip() for q in out):
        raise ValueError(f"queries must be a non-empty list of non-empty strings, got {queries!r}")
    return out


# -- OWL-ViT ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OwlViTDetectorConfig:
    """Settings of :class:`OwlViTDetector`.

    * ``model_path``: local folder holding an OWL-ViT model and its processor, as written by
      ``save_pretrained`` (``config.json``, weights, tokenizer and preprocessor files);
    * ``score_threshold``: detections scoring below it are dropped;
    * ``nms_iou``: per-label non-maximum suppression threshold (1 = off);
    * ``max_detections``: at most this many detections, best first;
    * ``query_template``: text actually encoded for a query (``{}`` = the query);
    * ``device``: torch device.
    """

    model_path: str
    score_threshold: float = 0.1
    nms_iou: float = 0.3
    max_detections: int = 50
    query_template: str = "a photo of a {}"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0 or not 0.0 < self.nms_iou <= 1.0 or self.max_detections < 1:
            raise ValueError(
                "OwlViTDetectorConfig needs 0 <= score_threshold <= 1, 0 < nms_iou <= 1 and max_detections >= 1, "
                f"got {self.score_threshold}, {self.nms_iou}, {self.max_detections}"
            )
        if "{}" not in self.query_template:
            raise ValueError(f"query_template must contain '{{}}' for the query, got {self.query_template!r}")


def _model_folder(path_like: str) -> Path:
    """The model folder, or ``FileNotFoundError``/``ValueError`` naming the path."""
    path = Path(path_like).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model folder {str(path)!r} does not exist (models are never downloaded)")
    if not path.is_dir():
        raise ValueError(f"model path {str(path)!r} is a file, not a model folder")
    if not (path / "config.json").is_file():
        raise ValueError(f"{str(path)!r} is not a model folder: it has no config.json")
    return path


@register_detector("owlvit")
class OwlViTDetector:
    """OWL-ViT (``transformers`` ``OwlViTForObjectDetection``), loaded from a local folder.

    OWL-ViT predicts one box per image patch with a similarity score to every text query; the
    best query names the box. Boxes are rescaled to the image, clipped to it, thresholded and
    suppressed per label.
    """

    config_type: ClassVar[type] = OwlViTDetectorConfig

    def __init__(self, config: OwlViTDetectorConfig) -> None:
        self.config = config
        path = _model_folder(config.model_path)
        try:
            import torch
            from transformers import OwlViTForObjectDetection, OwlViTProcessor
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the OWL-ViT detector needs torch and transformers: pip install 'mnemobot[vlm]'") from exc
        self._torch = torch
        try:
            self._processor = OwlViTProcessor.from_pretrained(path, local_files_only=True)
            model = OwlViTForObjectDetection.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"could not load an OWL-ViT model and processor from {str(path)!r}: {exc}") from exc
        self._model = model.to(config.device).eval()

    def detect(self, rgb: np.ndarray, queries: Sequence[str]) -> list[Detection]:
        """Detections of ``queries`` in ``rgb``, labelled with the query text, highest score first."""
        image = _check_rgb(rgb)
        labels = _check_queries(queries)
        h, w = image.shape[:2]
        texts = [self.config.query_template.format(q) for q in labels]
        inputs = self._processor(text=[texts], images=image, return_tensors="pt", truncation=True)
        inputs = {k: v.to(self.config.device) for k, v in inputs.items()}
        with self._torch.inference_mode():
            outputs = self._model(**inputs)
        result = self._processor.image_processor.post_process_object_detection(
            outputs, threshold=self.config.score_threshold, target_sizes=[(h, w)]
        )[0]
        boxes = result["boxes"].detach().cpu().numpy().astype(np.float64).reshape(-1, 4)
        scores = result["scores"].detach().cpu().numpy().astype(np.float64).reshape(-1)
        which = result["labels"].detach().cpu().numpy().astype(np.intp).reshape(-1)
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0.0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0.0, h)
        boxes[:, 2] = np.maximum(boxes[:, 2], boxes[:, 0])
        boxes[:, 3] = np.maximum(boxes[:, 3], boxes[:, 1])
        kept: list[int] = []
        for q in np.unique(which).tolist():
            idx = np.flatnonzero(which == q)
            kept.extend(idx[non_max_suppression(boxes[idx], scores[idx], self.config.nms_iou)].tolist())
        kept.sort(key=lambda i: -scores[i])
        return [Detection(labels[which[i]], float(scores[i]), boxes[i]) for i in kept[: self.config.max_detections]]


# -- detections -> instance mask ----------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionMaskConfig:
    """How :func:`apply_detections` cuts an object out of its box (metres, fractions).

    * ``depth_margin``: keep pixels within this depth of the box's near-surface depth;
    * ``near_quantile``: the near-surface depth is this quantile of the valid depths in the
      box's central window, which spans ``center_fraction`` of the box's width and height;
    * ``support_tolerance``: drop pixels at most this far above a horizontal surface that
      dominates the box's border ring (``border_fraction`` of its size; ``support_share`` of the
      ring's pixels within the tolerance of one height); ``drop_support=False`` disables it.
    """

    depth_margin: float = 0.10
    near_quantile: float = 0.25
    center_fraction: float = 0.5
    drop_support: bool = True
    support_tolerance: float = 0.01
    border_fraction: float = 0.15
    support_share: float = 0.5

    def __post_init__(self) -> None:
        fractions = {"near_quantile": self.near_quantile, "center_fraction": self.center_fraction,
                     "border_fraction": self.border_fraction, "support_share": self.support_share}
        bad = [f"{k}={v}" for k, v in fractions.items() if not 0.0 <= v <= 1.0]
        if bad or not self.depth_margin > 0 or not self.support_tolerance > 0:
            raise ValueError(
                "DetectionMaskConfig needs fractions in [0, 1] and positive depth_margin and support_tolerance; "
                f"got {', '.join(bad) or 'fractions ok'}, depth_margin={self.depth_margin}, "
                f"support_tolerance={self.support_tolerance}"
            )


def _box_pixels(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Column and row ranges ``[u0, u1) x [v0, v1)`` of the pixels whose centres lie in ``box``."""
    x0, y0, x1, y1 = (float(c) for c in box)
    u0, v0 = max(0, math.ceil(x0 - 0.5)), max(0, math.ceil(y0 - 0.5))
    u1, v1 = min(width, math.floor(x1 - 0.5) + 1), min(height, math.floor(y1 - 0.5) + 1)
    return u0, max(u0, u1), v0, max(v0, v1)


def _world_z(obs: Observation, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """World height of pixels ``(u, v)`` with optical depth ``z``."""
    k, rot = obs.intrinsics, obs.camera_pose.rotation
    x = (u - k.cx) * z / k.fx
    y = (v - k.cy) * z / k.fy
    return rot[2, 0] * x + rot[2, 1] * y + rot[2, 2] * z + obs.camera_pose.position[2]


def _object_pixels(obs: Observation, det: Detection, cfg: DetectionMaskConfig) -> np.ndarray | None:
    """Full-frame boolean mask of the object inside the detection's box, or None if it has no pixel."""
    height, width = obs.depth.shape
    u0, u1, v0, v1 = _box_pixels(det.box_xyxy, width, height)
    if u1 <= u0 or v1 <= v0:
        return None
    depth = obs.depth[v0:v1, u0:u1].astype(np.float64)
    with np.errstate(invalid="ignore"):
        region = np.isfinite(depth) & (depth > 0)
    if det.mask is not None:
        region &= det.mask[v0:v1, u0:u1]
    if not region.any():
        return None
    bh, bw = region.shape
    ch, cw = max(1, round(bh * cfg.center_fraction)), max(1, round(bw * cfg.center_fraction))
    r0, c0 = (bh - ch) // 2, (bw - cw) // 2
    centre = region[r0 : r0 + ch, c0 : c0 + cw]
    ref_values = depth[r0 : r0 + ch, c0 : c0 + cw][centre] if centre.any() else depth[region]
    near = float(np.quantile(ref_values, cfg.near_quantile))
    keep = region & (np.abs(np.where(region, depth, near) - near) <= cfg.depth_margin)
    if cfg.drop_support and keep.any():
        rows, cols = np.nonzero(keep)
        z_world = _world_z(obs, cols + u0, rows + v0, depth[rows, cols])
        ring = max(1, round(cfg.border_fraction * min(bh, bw)))
        on_border = (rows < ring) | (rows >= bh - ring) | (cols < ring) | (cols >= bw - ring)
        if np.count_nonzero(on_border) >= 10:
            ground = float(np.median(z_world[on_border]))
            share = np.mean(np.abs(z_world[on_border] - ground) <= cfg.support_tolerance)
            inner = ~on_border
            # the object must rise above that surface (else the ring may be the object's own top)
            rise = float(np.quantile(z_world[inner], 0.9)) if inner.any() else ground
            if share >= cfg.support_share and rise > ground + 2 * cfg.support_tolerance:
                low = z_world <= ground + cfg.support_tolerance
                keep[rows[low], cols[low]] = False
    full = np.zeros(obs.depth.shape, dtype=bool)
    full[v0:v1, u0:u1] = keep
    return full


def apply_detections(
    obs: Observation, detections: Sequence[Detection], min_score: float = 0.3,
    config: DetectionMaskConfig | None = None,
) -> Observation:
    """A copy of ``obs`` whose ``instances``/``labels`` come from ``detections``.

    Detections scoring at least ``min_score`` get instance ids ``1, 2, ...`` in decreasing score
    order (label: the detection's label); each claims the pixels of its box (and mask) that pass
    the depth tests of the module docstring and that no higher-scoring detection claimed.
    Detections left with no pixel get no id. The result is an int32 mask (0 = background).
    """
    cfg = config or DetectionMaskConfig()
    obs.validate()
    h, w = obs.depth.shape
    instances = np.zeros((h, w), dtype=np.int32)
    labels: dict[int, str] = {}
    ranked = sorted((d for d in detections if d.score >= min_score), key=lambda d: -d.score)
    for det in ranked:
        if det.mask is not None and det.mask.shape != (h, w):
            raise ObservationError(f"detection {det.label!r}: mask must be ({h}, {w}), got {det.mask.shape}")
        mask = _object_pixels(obs, det, cfg)
        if mask is None:
            continue
        mask &= instances == 0
        if not mask.any():
            continue
        iid = len(labels) + 1
        instances[mask] = iid
        labels[iid] = det.label
    return replace(obs, instances=instances, labels=labels)
