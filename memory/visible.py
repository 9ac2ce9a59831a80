"""The no-memory baseline: only what the most recent frame shows is known."""

from __future__ import annotations

import numpy as np

from mnemobot.memory.types import ObjectEstimate
from mnemobot.perception.objects import ObjectObservation, objects_from_observation
from mnemobot.perception.types import Observation

__all__ = ["VisibleObjects", "estimate_from_observation"]


def estimate_from_observation(o: ObjectObservation, place: str | None,
                              box: tuple[np.ndarray, np.ndarray] | None = None) -> ObjectEstimate:
    """Grasp-oriented estimate: x, y from the top-face points, z from the box centre; ``box``:
    bounds to use instead of the view's (a robust box for noisy sensors)."""
    lo, hi = (o.aabb_min, o.aabb_max) if box is None else box
    top_z = float(hi[2])
    top = o.points[(o.points[:, 2] > top_z - 0.015) & (o.points[:, 2] <= top_z + 1e-9)]
    xy = top[:, :2].mean(axis=0) if len(top) >= 3 else o.centroid[:2]
    z = 0.5 * (float(lo[2]) + top_z)
    return ObjectEstimate(
        label=o.label,
        position=np.array([xy[0], xy[1], z]),
        top_z=top_z,
        extent=o.extent,
        yaw=o.yaw,
        place=place,
        time=o.timestamp,
        confidence=o.confidence,
    )


class VisibleObjects:
    """Locator without memory: an object is known only while it is in the current frame."""

    def __init__(self, skip_labels: frozenset[str] = frozenset()) -> None:
        self._skip = skip_labels
        self._now: dict[str, ObjectEstimate] = {}

    def update(self, obs: Observation, place: str | None = None) -> None:
        seen = objects_from_observation(obs, skip_labels=self._skip)
        self._now = {o.label: estimate_from_observation(o, place) for o in seen}

    def locate(self, label: str) -> ObjectEstimate | None:
        return self._now.get(label)

    def known_labels(self) -> set[str]:
        return set(self._now)
