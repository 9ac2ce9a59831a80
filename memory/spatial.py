"""A uniform-grid spatial hash over 3D points: sub-linear neighbourhood queries.

Objects in a house are sparse in space, so a hash of fixed-size cells answers "which stored
objects lie within r of p" by visiting only the ``ceil(2r / cell)^3`` cells around ``p``; the
cost depends on local density, not on how many objects memory holds. Moving an object is a
delete + insert (O(1)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, MutableSet

import numpy as np

__all__ = ["GridIndex", "KeySet"]


class KeySet(MutableSet[str]):
    """A set of keys that iterates in insertion order.

    Python's ``set`` of strings iterates in an order that changes from one process to the next
    (string hashing is salted per process), and memory decides ties by iteration order
    (association, which of two same-looking objects answers first). With this set, the same
    observations always build the same graph: an episode is reproducible from its seed.
    """

    __slots__ = ("_d",)

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._d: dict[str, None] = dict.fromkeys(keys)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def add(self, key: str) -> None:
        self._d[key] = None

    def discard(self, key: str) -> None:
        self._d.pop(key, None)

    def clear(self) -> None:
        self._d.clear()

    def __repr__(self) -> str:
        return f"KeySet({list(self._d)!r})"


class GridIndex:
    """Keys (strings) at 3D points, bucketed in cubic cells of ``cell`` metres."""

    def __init__(self, cell: float = 0.5) -> None:
        if not cell > 0:
            raise ValueError(f"cell size must be positive, got {cell}")
        self.cell = float(cell)
        self._cells: dict[tuple[int, int, int], KeySet] = {}
        self._where: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {}

    def _cell_of(self, p: tuple[float, float, float]) -> tuple[int, int, int]:
        c = self.cell
        return (math.floor(p[0] / c), math.floor(p[1] / c), math.floor(p[2] / c))

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def insert(self, key: str, point: np.ndarray) -> None:
        """Insert or move ``key`` to ``point``."""
        p = (float(point[0]), float(point[1]), float(point[2]))
        cell = self._cell_of(p)
        old = self._where.get(key)
        if old is not None and old[0] != cell:
            self._discard(key, old[0])
        self._cells.setdefault(cell, KeySet()).add(key)
        self._where[key] = (cell, p)

    def remove(self, key: str) -> None:
        old = self._where.pop(key, None)
        if old is not None:
            self._discard(key, old[0])

    def _discard(self, key: str, cell: tuple[int, int, int]) -> None:
        bucket = self._cells.get(cell)
        if bucket is not None:
            bucket.discard(key)
            if not bucket:
                del self._cells[cell]

    def point(self, key: str) -> np.ndarray | None:
        hit = self._where.get(key)
        return None if hit is None else np.array(hit[1])

    def query(self, center: np.ndarray, radius: float) -> Iterator[tuple[str, float]]:
        """``(key, distance)`` for every key within ``radius`` of ``center`` (unordered)."""
        cx, cy, cz = float(center[0]), float(center[1]), float(center[2])
        lo = self._cell_of((cx - radius, cy - radius, cz - radius))
        hi = self._cell_of((cx + radius, cy + radius, cz + radius))
        r2 = radius * radius
        span = (hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1) * (hi[2] - lo[2] + 1)
        if span > len(self._cells):  # fewer occupied cells than cells in the box: walk those
            cells = [(cell, bucket) for cell, bucket in self._cells.items()
                     if lo[0] <= cell[0] <= hi[0] and lo[1] <= cell[1] <= hi[1] and lo[2] <= cell[2] <= hi[2]]
        else:
            cells = []
            for i in range(lo[0], hi[0] + 1):
                for j in range(lo[1], hi[1] + 1):
                    for k in range(lo[2], hi[2] + 1):
                        bucket = self._cells.get((i, j, k))
                        if bucket:
                            cells.append(((i, j, k), bucket))
        where = self._where
        for _cell, bucket in cells:
            for key in bucket:
                p = where[key][1]
                d2 = (p[0] - cx) ** 2 + (p[1] - cy) ** 2 + (p[2] - cz) ** 2
                if d2 <= r2:
                    yield key, math.sqrt(d2)
