"""A one-room workcell for memory-dependent manipulation tasks (MemoryBench-style).

Pure configuration (numpy only, no simulator), like :mod:`mnemobot.sim.layout`. The robot is
parked in front of a bench; everything it needs is within one short sideways drive::

    y=4 +------------------------------------------------------------------+
        |   [ bench: red  green  centre  blue  yellow  (button) ]  [L][M][R] drawers
        |                          ^                                  |
        |                        robot (start: facing the centre patch, +y)
        |                                                              |
    y=0 +------------------------------------------------------------------+
       x=0                                                          x=4.5

* **bench** (0.6 m deep, 1.5 m wide, 0.6 m high) against the north wall, with five patches in a
  row along its front half, 0.22 m apart: four coloured ones and a grey centre patch. A patch is
  a 4 mm thick 10 x 10 cm box, its own piece of furniture (own instance id and label in the masks)
  and its own place (relation ``on``), so ``place`` can put a block on it;
* **button** on the bench's east end: a 5 cm cap on a prismatic joint (``sim/assets/button.urdf``)
  held up by a weak joint motor (a spring); a place named ``button`` whose surface is the cap top;
* **three drawers** east of the bench, side by side against the north wall: three identical
  single-drawer cabinets (``drawer_cabinet.urdf``, the house's proven drawer) forming one chest.
  Each is its own furniture and its own place ``left_drawer`` / ``middle_drawer`` /
  ``right_drawer`` (relation ``in``), opened and closed by the ``open`` / ``close`` skills.

Blocks are pybullet_data's 5 cm ``cube_small.urdf``. The two blocks of the ``rearrange`` family
look alike: same colour and the same detector class (``ObjectSpec.category`` = ``"block"``), so
neither the image nor the instance labels tell them apart.
"""

from __future__ import annotations

import math
from dataclasses import replace

from mnemobot.sim.layout import (
    DRAWER_INNER_BOTTOM,
    DRAWER_INNER_SIZE,
    FurnitureSpec,
    HouseLayout,
    ObjectSpec,
    PlaceSpec,
)

__all__ = [
    "BUTTON_PRESS_DEPTH",
    "BUTTON_TOP",
    "BUTTON_TRAVEL",
    "CENTRE_PATCH",
    "COLOUR_PATCHES",
    "DRAWERS",
    "ONE_BLOCK_WORKCELL",
    "TWO_BLOCK_WORKCELL",
    "WORKCELL_LAYOUT",
]

# Geometry of sim/assets/button.urdf (button frame, z up). Keep in sync.
BUTTON_TOP = 0.05
"""Height of the released cap's top above the surface the button stands on (m)."""
BUTTON_TRAVEL = 0.015
"""How far the cap can be pushed down (m)."""
BUTTON_PRESS_DEPTH = 0.006
"""The button counts as pressed with its cap pushed down more than this (m)."""

_NORTH = -math.pi / 2
_BENCH_XY = (1.5, 3.6)
_BENCH_SIZE = (0.60, 1.50, 0.60)
_PATCH_U = 0.10  # patches' offset from the bench centre towards its front (m)
_PATCH_SIZE = 0.10
_PATCH_THICKNESS = 0.004
_PATCH_PITCH = 0.22
_BUTTON_V = 0.66  # along the bench's width, towards +x (m)

CENTRE_PATCH = "centre_patch"
"""Where blocks go in between (the middle of the patch row)."""
COLOUR_PATCHES = ("red_patch", "green_patch", "blue_patch", "yellow_patch")
"""The four coloured patches, west to east."""
DRAWERS = ("left_drawer", "middle_drawer", "right_drawer")
"""The three drawer places, west to east (left to right seen from the bench)."""

_PATCH_COLOURS = {
    "red_patch": (0.85, 0.12, 0.12, 1.0),
    "green_patch": (0.12, 0.65, 0.2, 1.0),
    CENTRE_PATCH: (0.55, 0.55, 0.58, 1.0),
    "blue_patch": (0.12, 0.3, 0.85, 1.0),
    "yellow_patch": (0.95, 0.85, 0.1, 1.0),
}
_ROW = ("red_patch", "green_patch", CENTRE_PATCH, "blue_patch", "yellow_patch")


def _on_bench(u: float, v: float) -> tuple[float, float]:
    """World ``(x, y)`` of the point ``(u, v)`` in the bench frame (x: its front, y: to the east)."""
    c, s = math.cos(_NORTH), math.sin(_NORTH)
    return (_BENCH_XY[0] + c * u - s * v, _BENCH_XY[1] + s * u + c * v)


def _patches() -> tuple[tuple[FurnitureSpec, ...], tuple[PlaceSpec, ...]]:
    furniture, places = [], []
    for i, name in enumerate(_ROW):
        xy = _on_bench(_PATCH_U, (i - 2) * _PATCH_PITCH)
        furniture.append(FurnitureSpec(name, "block", "workcell", xy, _NORTH,
                                       (_PATCH_SIZE, _PATCH_SIZE, _PATCH_THICKNESS),
                                       rgba=_PATCH_COLOURS[name], elevation=_BENCH_SIZE[2]))
        aliases = ("center_patch", "centre", "center") if name == CENTRE_PATCH else ()
        places.append(PlaceSpec(name, "patch", name, (0.0, 0.0, _PATCH_THICKNESS), (_PATCH_SIZE, _PATCH_SIZE),
                                spawn=False, aliases=aliases))
    return tuple(furniture), tuple(places)


def _drawers() -> tuple[tuple[FurnitureSpec, ...], tuple[PlaceSpec, ...]]:
    furniture, places = [], []
    for i, name in enumerate(DRAWERS):
        furniture.append(FurnitureSpec(name, "drawer_cabinet", "workcell", (2.80 + 0.52 * i, 3.715), _NORTH,
                                       (0.45, 0.50, 0.62), rgba=(0.55, 0.35, 0.2, 1.0)))
        places.append(PlaceSpec(name, "drawer", name, DRAWER_INNER_BOTTOM, DRAWER_INNER_SIZE, relation="in",
                                stand_distance=0.60, spawn=False))
    return tuple(furniture), tuple(places)


def _workcell() -> HouseLayout:
    patch_furniture, patch_places = _patches()
    drawer_furniture, drawer_places = _drawers()
    furniture = (
        FurnitureSpec("bench", "table", "workcell", _BENCH_XY, _NORTH, _BENCH_SIZE, rgba=(0.72, 0.6, 0.45, 1.0)),
        *patch_furniture,
        FurnitureSpec("button", "button", "workcell", _on_bench(_PATCH_U, _BUTTON_V), _NORTH, (0.08, 0.08, BUTTON_TOP),
                      rgba=(0.85, 0.1, 0.1, 1.0), elevation=_BENCH_SIZE[2]),
        *drawer_furniture,
    )
    places = (
        # blocks are spawned on the bench, then a task puts them on their patches
        PlaceSpec("bench", "table", "bench", (0.0, 0.0, _BENCH_SIZE[2]), _BENCH_SIZE[:2], aliases=("workbench",)),
        *patch_places,
        PlaceSpec("button", "button", "button", (0.0, 0.0, BUTTON_TOP), (0.05, 0.05), spawn=False),
        *drawer_places,
    )
    layout = HouseLayout(rooms=("workcell",), room_size=(4.5, 4.0), doorway_y=(),
                         floor_rgba=((0.7, 0.72, 0.74, 1.0),), furniture=furniture, places=places, objects=())
    return replace(layout, start_pose=layout.stand_pose(layout.place_spec(CENTRE_PATCH)))


WORKCELL_LAYOUT = _workcell()
"""The workcell without blocks: bench, five patches, the button and three drawers."""

_BLOCK_RGBA = (0.55, 0.3, 0.75, 1.0)  # purple: no patch has this colour

ONE_BLOCK_WORKCELL = replace(WORKCELL_LAYOUT, objects=(ObjectSpec("block", "cube_small.urdf", 1.0, _BLOCK_RGBA),))
"""The workcell with one 5 cm block."""

TWO_BLOCK_WORKCELL = replace(WORKCELL_LAYOUT, objects=(
    ObjectSpec("block_1", "cube_small.urdf", 1.0, _BLOCK_RGBA, category="block"),
    ObjectSpec("block_2", "cube_small.urdf", 1.0, _BLOCK_RGBA, category="block"),
))
"""The workcell with two blocks that look alike (same colour, same detector class ``block``)."""
