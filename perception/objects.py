"""RGB-D frame -> 3D object observations, for frames that carry instance masks.

Back-projection uses the pinhole model of :class:`CameraIntrinsics` and the optical-frame
camera pose: a pixel ``(u, v)`` with depth ``z`` is ``((u - cx) z / fx, (v - cy) z / fy, z)``
in the optical frame, then mapped to the world by ``camera_pose``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mnemobot.perception.types import CameraIntrinsics, Observation, Pose

__all__ = ["ObjectObservation", "backproject", "objects_from_observation"]


@dataclass(frozen=True)
class ObjectObservation:
    """One object seen in one frame, in the world frame.

    * ``points``: ``(N, 3)`` world points (metres), possibly subsampled;
    * ``centroid``: mean of the points; ``aabb_min``/``aabb_max``: axis-aligned box;
    * ``yaw``: heading (rad) of the major horizontal axis of the points; ``extent``: size along
      (major, minor, z) axes (m);
    * ``colour``: mean RGB in [0, 1]; ``confidence``: in [0, 1] (visible pixel support);
    * ``instance_id``: the mask id when the frame has one, else ``None``.
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


def backproject(
    depth: np.ndarray, intrinsics: CameraIntrinsics, camera_pose: Pose, mask: np.ndarray | None = None
) -> np.ndarray:
    """World-frame points ``(N, 3)`` of the valid depth pixels (finite and > 0) under ``mask``."""
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask
    v, u = np.nonzero(valid)
    z = depth[v, u].astype(float)
    x = (u - intrinsics.cx) * z / intrinsics.fx
    y = (v - intrinsics.cy) * z / intrinsics.fy
    return camera_pose.apply(np.stack([x, y, z], axis=1))


def _principal_yaw(points: np.ndarray) -> tuple[float, np.ndarray]:
    """Yaw of the major horizontal axis and the extent along (major, minor, z)."""
    xy = points[:, :2] - points[:, :2].mean(axis=0)
    if len(points) < 3:
        return 0.0, np.zeros(3)
    cov = xy.T @ xy / len(xy)
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, int(np.argmax(evals))]
    yaw = math.atan2(major[1], major[0])
    minor = np.array([-major[1], major[0]])
    ext = np.array(
        [np.ptp(xy @ major), np.ptp(xy @ minor), np.ptp(points[:, 2])]
    )
    return yaw, ext


def objects_from_observation(
    obs: Observation, min_pixels: int = 20, max_points: int = 2000, skip_labels: frozenset[str] = frozenset()
) -> list[ObjectObservation]:
    """One :class:`ObjectObservation` per labelled instance in the frame's mask.

    Instances with fewer than ``min_pixels`` valid depth pixels are skipped; ids missing from
    ``obs.labels`` are reported as ``"unknown"``.
    """
    if obs.instances is None:
        return []
    obs.validate()
    ids, counts = np.unique(obs.instances, return_counts=True)
    out: list[ObjectObservation] = []
    for iid, count in zip(ids.tolist(), counts.tolist(), strict=True):
        label = obs.labels.get(iid, "unknown")
        if iid == 0 or count < min_pixels or label in skip_labels:
            continue
        mask = obs.instances == iid
        pts = backproject(obs.depth, obs.intrinsics, obs.camera_pose, mask)
        if len(pts) < min_pixels:
            continue
        if len(pts) > max_points:
            pts = pts[:: int(math.ceil(len(pts) / max_points))]
        yaw, ext = _principal_yaw(pts)
        colour = obs.rgb[mask].reshape(-1, 3).mean(axis=0) / 255.0
        out.append(
            ObjectObservation(
                label=label,
                instance_id=int(iid),
                points=pts,
                centroid=pts.mean(axis=0),
                aabb_min=pts.min(axis=0),
                aabb_max=pts.max(axis=0),
                yaw=yaw,
                extent=ext,
                colour=colour,
                confidence=min(1.0, count / 400.0),
                timestamp=obs.timestamp,
                pixel_count=int(count),
            )
        )
    return out
