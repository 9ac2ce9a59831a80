"""The household the simulated robot lives in: rooms, walls, furniture, places and objects.

Pure configuration and geometry (numpy only, no simulator): the pybullet backend builds the
scene from a :class:`HouseLayout`, and :meth:`HouseLayout.site_map` exports the static prior
knowledge a robot is given (:class:`~mnemobot.control.site.SiteMap`).

Frames and units: world frame z up, metres, radians. Rooms sit in a row along +x. Every piece of
furniture has a local frame whose origin is the centre of its footprint on the floor (or on the
furniture it stands on) and whose **+x axis is its front**, the side the robot works from; a
piece against the north wall therefore has ``yaw = -pi/2``.

Default house (``DEFAULT_LAYOUT``), 13.5 m x 5 m::

    y=5 +-----------------------+-----------------------+-----------------------+
        | [drawer] [kitchen_tbl]| [living_tbl] [tray]   | [shelf] [bedroom_tbl] |
        |                       |                       |                       |
        |        kitchen        |      living_room      |        bedroom        |
        |                       |                       |                       |
        |                      door                    door                     |
    y=0 +-----------------------+-----------------------+-----------------------+
       x=0                    x=4.5                   x=9                    x=13.5

All furniture stands against the north wall and the doorways are near the south wall, so what
lies on a surface in one room is not in the line of sight of a camera in another room.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnemobot.control.robots import ARM_MOUNT
from mnemobot.control.site import Doorway, Place, Room, SiteMap
from mnemobot.perception.types import Pose, yaw_quat

__all__ = [
    "ASSET_DIR",
    "DEFAULT_LAYOUT",
    "Box",
    "FurnitureSpec",
    "HouseLayout",
    "ObjectSpec",
    "PlaceSpec",
    "Rect",
    "furniture_boxes",
]

ASSET_DIR = Path(__file__).resolve().parent / "assets"
"""Folder of the URDF files shipped with :mod:`mnemobot.sim`."""

RGBA = tuple[float, float, float, float]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box primitive in a furniture frame: ``center`` and ``half_extents`` (m)."""

    center: tuple[float, float, float]
    half_extents: tuple[float, float, float]


@dataclass(frozen=True)
class Rect:
    """An oriented rectangle on the floor: ``center`` ``(x, y)``, ``size`` ``(sx, sy)``, ``yaw``."""

    center: tuple[float, float]
    size: tuple[float, float]
    yaw: float = 0.0

    def corners(self) -> np.ndarray:
        """The four corners, shape ``(4, 2)``, world frame."""
        hx, hy = self.size[0] / 2, self.size[1] / 2
        local = np.array([[hx, hy], [-hx, hy], [-hx, -hy], [hx, -hy]])
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return local @ np.array([[c, s], [-s, c]]) + np.asarray(self.center)

    def axes(self) -> np.ndarray:
        """Unit vectors of the rectangle's x and y axes, shape ``(2, 2)``."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, s], [-s, c]])

    def overlaps(self, other: Rect) -> bool:
        """Separating-axis test between two oriented rectangles (touching counts as overlap)."""
        a, b = self.corners(), other.corners()
        for axis in np.vstack([self.axes(), other.axes()]):
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
        return True


@dataclass(frozen=True)
class FurnitureSpec:
    """One piece of furniture.

    * ``kind`` selects the builder (:data:`FURNITURE_BUILDERS`), or ``"drawer_cabinet"`` /
      ``"tray"`` / ``"button"`` for the URDF-backed pieces;
    * ``position``: footprint centre ``(x, y)`` in the world; ``elevation``: height of the floor
      it stands on (0 on the floor, a table height for a tray); ``yaw``: front direction;
    * ``size``: ``(depth along local x, width along local y, height)`` in metres.
    """

    name: str
    kind: str
    room: str
    position: tuple[float, float]
    yaw: float
    size: tuple[float, float, float]
    rgba: RGBA = (0.6, 0.45, 0.3, 1.0)
    elevation: float = 0.0

    def pose(self) -> Pose:
        """The furniture frame in the world."""
        return Pose.from_xyz_yaw(self.position[0], self.position[1], self.elevation, self.yaw)

    def footprint(self) -> Rect:
        return Rect(self.position, (self.size[0], self.size[1]), self.yaw)


@dataclass(frozen=True)
class PlaceSpec:
    """A named place on or in a piece of furniture.

    ``surface_offset`` is the centre of the usable surface in the furniture frame (m);
    ``surface_size`` its extent along the furniture's x and y; ``stand_distance`` the horizontal
    distance (m) from the arm base to the surface centre at the stand pose; ``spawn`` whether
    objects may be spawned there at reset.
    """

    name: str
    label: str
    furniture: str
    surface_offset: tuple[float, float, float]
    surface_size: tuple[float, float]
    relation: str = "on"
    stand_distance: float = 0.55
    spawn: bool = True
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable object from ``pybullet_data``.

    ``urdf`` is relative to ``pybullet_data``; ``scale`` is pybullet's ``globalScaling``;
    ``rgba`` recolours every visual shape (``None`` keeps the file's colour); ``mass`` in kg;
    ``friction`` the lateral friction coefficient; ``category`` the class a detector reports
    for it in the instance labels (default: ``label``). Objects that look alike share one
    category, so the camera cannot tell them apart while their ``label`` stays unique (the
    simulator's and the task's name for each).
    """

    label: str
    urdf: str
    scale: float = 1.0
    rgba: RGBA | None = None
    mass: float = 0.1
    friction: float = 1.0
    category: str = ""

    @property
    def detected_as(self) -> str:
        """The label the renderer reports for this object: its category, else its label."""
        return self.category or self.label

    @property
    def words(self) -> str:
        """Human name used in instructions: ``"red cube"``."""
        return self.label.replace("_", " ")


def _table_boxes(size: tuple[float, float, float]) -> list[Box]:
    """A table top (4 cm thick) on four 5 cm square legs."""
    dx, dy, h = size[0] / 2, size[1] / 2, size[2]
    top = Box((0.0, 0.0, h - 0.02), (dx, dy, 0.02))
    leg_h = (h - 0.04) / 2
    legs = [
        Box((sx * (dx - 0.04), sy * (dy - 0.04), leg_h), (0.025, 0.025, leg_h))
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    return [top, *legs]


def _block_boxes(size: tuple[float, float, float]) -> list[Box]:
    """A solid block (a side table or cupboard)."""
    return [Box((0.0, 0.0, size[2] / 2), (size[0] / 2, size[1] / 2, size[2] / 2))]


def _shelf_boxes(size: tuple[float, float, float]) -> list[Box]:
    """An open shelf with two levels (a middle board and the top board), sides and a back panel."""
    dx, dy, h = size[0] / 2, size[1] / 2, size[2]
    t = 0.015
    return [
        Box((0.0, 0.0, 0.04), (dx, dy, 0.04)),  # plinth
        Box((0.0, 0.0, h * 0.5), (dx, dy - 2 * t, t)),  # lower level
        Box((0.0, 0.0, h - t), (dx, dy, t)),  # top level: the usable place
        Box((0.0, dy - t, h / 2), (dx, t, h / 2)),  # side
        Box((0.0, -dy + t, h / 2), (dx, t, h / 2)),  # side
        Box((-dx + t, 0.0, h / 2), (t, dy - 2 * t, h / 2)),  # back
    ]


FURNITURE_BUILDERS: dict[str, Callable[[tuple[float, float, float]], list[Box]]] = {
    "table": _table_boxes,
    "block": _block_boxes,
    "shelf": _shelf_boxes,
}
"""Primitive furniture kinds -> function of ``size`` returning boxes in the furniture frame."""


def furniture_boxes(spec: FurnitureSpec) -> list[Box]:
    """The primitive boxes of a piece of furniture built from primitives."""
    if spec.kind not in FURNITURE_BUILDERS:
        raise ValueError(f"furniture {spec.name!r} of kind {spec.kind!r} is not built from primitives")
    return FURNITURE_BUILDERS[spec.kind](spec.size)


# Geometry of sim/assets/drawer_cabinet.urdf (cabinet frame, front along +x). Keep in sync.
DRAWER_INNER_BOTTOM = (0.06, 0.0, 0.45)  # inner bottom centre of the closed drawer
DRAWER_INNER_SIZE = (0.29, 0.40)
DRAWER_HANDLE = (0.26, 0.0, 0.515)  # centre of the handle bar, drawer closed
DRAWER_TRAVEL = 0.32  # joint upper limit
# Tray (pybullet_data tray/traybox.urdf) floor top at scale 1, in metres.
TRAY_FLOOR = 0.015
TRAY_SIZE = 0.6


@dataclass(frozen=True)
class HouseLayout:
    """A row of rooms with walls, doorways, furniture, places and graspable objects.

    Rooms are ``room_size`` (x, y) each, placed along +x from the origin in ``rooms`` order;
    ``doorway_y[i]`` is the y of the doorway centre in the wall between rooms ``i`` and
    ``i + 1``. ``start_pose`` is the robot's base pose ``(x, y, yaw)`` at reset.
    Spawning: objects are placed on the near half of spawnable surfaces, at a horizontal distance
    in ``spawn_reach`` (m) from the arm base at the place's stand pose, ``spawn_margin`` from the
    surface edge and at least ``spawn_gap`` apart; the two objects of each pair in ``apart`` spawn
    in different rooms.
    """

    rooms: tuple[str, ...] = ("kitchen", "living_room", "bedroom")
    room_size: tuple[float, float] = (4.5, 5.0)
    wall_thickness: float = 0.1
    wall_height: float = 2.0
    doorway_width: float = 1.2
    doorway_y: tuple[float, ...] = (1.1, 1.1)
    floor_rgba: tuple[RGBA, ...] = (
        (0.78, 0.76, 0.70, 1.0),
        (0.62, 0.50, 0.38, 1.0),
        (0.55, 0.60, 0.68, 1.0),
    )
    wall_rgba: RGBA = (0.88, 0.88, 0.85, 1.0)
    furniture: tuple[FurnitureSpec, ...] = ()
    places: tuple[PlaceSpec, ...] = ()
    objects: tuple[ObjectSpec, ...] = ()
    start_pose: tuple[float, float, float] = (6.75, 2.2, math.pi / 2)
    drawer_open_distance: float = 0.30
    spawn_reach: tuple[float, float] = (0.32, 0.62)
    apart: tuple[tuple[str, str], ...] = ()
    spawn_margin: float = 0.06
    spawn_gap: float = 0.13

    # -- look-ups -------------------------------------------------------------------------------
    def furniture_by_name(self, name: str) -> FurnitureSpec:
        for f in self.furniture:
            if f.name == name:
                return f
        raise KeyError(f"unknown furniture {name!r}")

    def place_spec(self, name: str) -> PlaceSpec:
        for p in self.places:
            if p.name == name:
                return p
        raise KeyError(f"unknown place {name!r}")

    def object_spec(self, label: str) -> ObjectSpec:
        for o in self.objects:
            if o.label == label:
                return o
        raise KeyError(f"unknown object {label!r}")

    def with_twin(self, label: str, suffix: str = "_twin") -> HouseLayout:
        """This layout with a second object exactly like ``label`` (mesh, colour, mass, detector
        class) named ``label + suffix``, spawning in another room than the first."""
        spec = self.object_spec(label)
        twin = dataclasses.replace(spec, label=label + suffix, category=spec.detected_as)
        return dataclasses.replace(self, objects=self.objects + (twin,),
                                   apart=self.apart + ((label, twin.label),))

    @property
    def object_labels(self) -> tuple[str, ...]:
        return tuple(o.label for o in self.objects)

    @property
    def place_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.places)

    def room_of_place(self, name: str) -> str:
        return self.furniture_by_name(self.place_spec(name).furniture).room

    # -- rooms and walls ------------------------------------------------------------------------
    def room_rects(self) -> dict[str, Room]:
        sx, sy = self.room_size
        return {
            name: Room(name, ((i + 0.5) * sx, sy / 2), (sx, sy)) for i, name in enumerate(self.rooms)
        }

    def doorways(self) -> list[Doorway]:
        sx = self.room_size[0]
        return [
            Doorway((self.rooms[i], self.rooms[i + 1]), ((i + 1) * sx, self.doorway_y[i]))
            for i in range(len(self.rooms) - 1)
        ]

    def walls(self) -> list[Rect]:
        """Wall rectangles (axis-aligned), outer walls and the inner walls with their doorways."""
        sx, sy = self.room_size
        t = self.wall_thickness
        length = sx * len(self.rooms)
        walls = [
            Rect((length / 2, 0.0), (length + t, t)),
            Rect((length / 2, sy), (length + t, t)),
            Rect((0.0, sy / 2), (t, sy + t)),
            Rect((length, sy / 2), (t, sy + t)),
        ]
        for i in range(1, len(self.rooms)):
            lo = self.doorway_y[i - 1] - self.doorway_width / 2
            hi = self.doorway_y[i - 1] + self.doorway_width / 2
            walls.append(Rect((i * sx, lo / 2), (t, lo)))
            walls.append(Rect((i * sx, (hi + sy) / 2), (t, sy - hi)))
        return walls

    def obstacles(self) -> list[Rect]:
        """Floor footprints the mobile base must not enter: walls and furniture on the floor."""
        return self.walls() + [f.footprint() for f in self.furniture if f.elevation == 0.0]

    # -- places ---------------------------------------------------------------------------------
    def surface_pose(self, place: PlaceSpec) -> Pose:
        """Centre of the usable surface in the world, z up, x along the furniture's front.

        For the drawer this is the inner bottom centre with the drawer **closed**; opened by ``d``
        metres it lies ``d`` further along the open direction (see :meth:`work_point`).
        """
        furn = self.furniture_by_name(place.furniture)
        return furn.pose() @ Pose(np.asarray(place.surface_offset, dtype=float))

    def open_direction(self, place: PlaceSpec) -> np.ndarray | None:
        """Unit world vector along which the place's drawer opens, or None without a drawer."""
        furn = self.furniture_by_name(place.furniture)
        if furn.kind != "drawer_cabinet":
            return None
        return np.array([math.cos(furn.yaw), math.sin(furn.yaw), 0.0])

    def work_point(self, place: PlaceSpec) -> np.ndarray:
        """Where the arm works on the place (world, m): the surface centre, or for the drawer the
        inner bottom centre with the drawer open by ``drawer_open_distance``."""
        direction = self.open_direction(place)
        centre = self.surface_pose(place).position
        return centre if direction is None else centre + direction * self.drawer_open_distance

    def stand_pose(self, place: PlaceSpec) -> tuple[float, float, float]:
        """Base pose ``(x, y, yaw)`` facing the place, arm base ``stand_distance`` from its work point."""
        furn = self.furniture_by_name(place.furniture)
        work = self.work_point(place)
        front = np.array([math.cos(furn.yaw), math.sin(furn.yaw)])
        xy = work[:2] + front * (place.stand_distance + float(ARM_MOUNT.position[0]))
        yaw = math.atan2(-front[1], -front[0])
        return (float(xy[0]), float(xy[1]), yaw)

    def handle_pose(self, place: PlaceSpec) -> Pose | None:
        """Closed-drawer handle pose, x axis from the handle into the cabinet; None if no handle."""
        furn = self.furniture_by_name(place.furniture)
        if furn.kind != "drawer_cabinet":
            return None
        return furn.pose() @ Pose(np.asarray(DRAWER_HANDLE), yaw_quat(math.pi))

    def site_map(self) -> SiteMap:
        """The static map a robot is given: rooms, doorways and places (no movable objects)."""
        places: dict[str, Place] = {}
        for spec in self.places:
            furn = self.furniture_by_name(spec.furniture)
            handle = self.handle_pose(spec)
            opens = self.open_direction(spec)
            direction = None if opens is None else (float(opens[0]), float(opens[1]), 0.0)
            places[spec.name] = Place(
                name=spec.name,
                label=spec.label,
                room=furn.room,
                stand=self.stand_pose(spec),
                surface=self.surface_pose(spec),
                surface_size=spec.surface_size,
                relation=spec.relation,
                handle=handle,
                open_direction=direction,
                open_distance=self.drawer_open_distance if handle is not None else 0.0,
                aliases=spec.aliases,
            )
        return SiteMap(rooms=self.room_rects(), doorways=self.doorways(), places=places)


_NORTH = -math.pi / 2  # yaw of furniture whose front faces -y (standing against the north wall)

_FURNITURE = (
    FurnitureSpec("drawer", "drawer_cabinet", "kitchen", (1.0, 4.715), _NORTH, (0.45, 0.50, 0.62),
                  rgba=(0.55, 0.35, 0.2, 1.0)),
    FurnitureSpec("kitchen_table", "table", "kitchen", (3.0, 4.55), _NORTH, (0.60, 1.00, 0.60),
                  rgba=(0.72, 0.55, 0.35, 1.0)),
    FurnitureSpec("living_room_table", "table", "living_room", (6.2, 4.55), _NORTH, (0.60, 0.90, 0.50),
                  rgba=(0.35, 0.25, 0.2, 1.0)),
    FurnitureSpec("side_table", "block", "living_room", (8.2, 4.6), _NORTH, (0.45, 0.45, 0.45),
                  rgba=(0.85, 0.85, 0.8, 1.0)),
    FurnitureSpec("tray", "tray", "living_room", (8.2, 4.6), _NORTH, (0.35, 0.35, 0.08),
                  rgba=(0.75, 0.78, 0.85, 1.0), elevation=0.45),
    FurnitureSpec("shelf", "shelf", "bedroom", (10.3, 4.75), _NORTH, (0.35, 0.80, 0.58),
                  rgba=(0.9, 0.9, 0.92, 1.0)),
    FurnitureSpec("bedroom_table", "table", "bedroom", (12.3, 4.6), _NORTH, (0.50, 0.80, 0.55),
                  rgba=(0.6, 0.4, 0.55, 1.0)),
)

_PLACES = (
    PlaceSpec("kitchen_table", "table", "kitchen_table", (0.0, 0.0, 0.60), (0.60, 1.00)),
    PlaceSpec("drawer", "drawer", "drawer", DRAWER_INNER_BOTTOM, DRAWER_INNER_SIZE, relation="in",
              stand_distance=0.60, spawn=False, aliases=("kitchen_drawer",)),
    PlaceSpec("living_room_table", "table", "living_room_table", (0.0, 0.0, 0.50), (0.60, 0.90),
              aliases=("coffee_table",)),
    PlaceSpec("tray", "tray", "tray", (0.0, 0.0, TRAY_FLOOR * 0.35 / TRAY_SIZE), (0.26, 0.26)),
    PlaceSpec("shelf", "shelf", "shelf", (0.0, 0.0, 0.58), (0.35, 0.80), aliases=("bookshelf",)),
    PlaceSpec("bedroom_table", "table", "bedroom_table", (0.0, 0.0, 0.55), (0.50, 0.80),
              aliases=("desk",)),
)

_OBJECTS = (
    ObjectSpec("red_cube", "cube_small.urdf", 1.0, (0.85, 0.1, 0.1, 1.0)),
    ObjectSpec("green_cube", "cube_small.urdf", 1.0, (0.1, 0.7, 0.15, 1.0)),
    ObjectSpec("blue_cube", "cube_small.urdf", 1.0, (0.1, 0.25, 0.85, 1.0)),
    ObjectSpec("yellow_ball", "sphere_small.urdf", 0.9, (0.95, 0.85, 0.1, 1.0), mass=0.08),
    ObjectSpec("duck", "duck_vhacd.urdf", 0.56, (1.0, 0.95, 0.45, 1.0)),
    ObjectSpec("lego", "lego/lego.urdf", 1.5, (1.0, 0.5, 0.0, 1.0), mass=0.05),
    ObjectSpec("jenga", "jenga/jenga.urdf", 0.8, (0.8, 0.65, 0.45, 1.0), mass=0.05),
    ObjectSpec("teddy", "teddy_vhacd.urdf", 0.52, (0.55, 0.33, 0.18, 1.0)),
    ObjectSpec("mug", "objects/mug.urdf", 0.52, (0.95, 0.95, 0.95, 1.0), mass=0.15),
    ObjectSpec("pink_bar", "random_urdfs/023/023.urdf", 1.0, (0.9, 0.4, 0.8, 1.0)),
    ObjectSpec("olive_bar", "random_urdfs/014/014.urdf", 1.0, (0.5, 0.5, 0.1, 1.0)),
    ObjectSpec("purple_capsule", "random_urdfs/033/033.urdf", 1.0, (0.45, 0.2, 0.7, 1.0)),
)

DEFAULT_LAYOUT = HouseLayout(furniture=_FURNITURE, places=_PLACES, objects=_OBJECTS)
"""Three rooms (kitchen, living room, bedroom), six places, twelve graspable objects."""
