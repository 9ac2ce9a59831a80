"""The site map a robot is given before it starts: rooms, doorways and named places.

This is static prior knowledge (the equivalent of a navigation map on a real robot): furniture
and where to stand to reach it. It holds no movable objects; those come from perception and
memory only.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mnemobot.perception.types import Pose

__all__ = ["Doorway", "Place", "Room", "SiteMap", "UnknownPlaceError"]


class UnknownPlaceError(KeyError):
    """A place, room or receptacle name that the site map does not know."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else "unknown place"


@dataclass(frozen=True)
class Room:
    """An axis-aligned room: centre ``(x, y)`` and size ``(sx, sy)`` in metres."""

    name: str
    center: tuple[float, float]
    size: tuple[float, float]

    def contains(self, xy: np.ndarray | tuple[float, float], margin: float = 0.0) -> bool:
        x, y = float(xy[0]), float(xy[1])
        return (
            abs(x - self.center[0]) <= self.size[0] / 2 - margin
            and abs(y - self.center[1]) <= self.size[1] / 2 - margin
        )


@dataclass(frozen=True)
class Doorway:
    """A gap in a wall between two rooms, at ``position`` ``(x, y)``."""

    rooms: tuple[str, str]
    position: tuple[float, float]


@dataclass(frozen=True)
class Place:
    """A piece of furniture or a receptacle the robot can go to and act on.

    * ``name``: unique id (``"kitchen_table"``); ``label``: its category (``"table"``);
    * ``stand``: base pose ``(x, y, yaw)`` from which the arm reaches the place;
    * ``surface``: pose of the centre of the top (or inner bottom) surface, z up, world frame;
      ``surface_size``: its extent ``(sx, sy)`` along the surface frame's x and y;
    * ``relation``: ``"on"`` for surfaces, ``"in"`` for containers;
    * containers with a drawer or door: ``handle`` is the handle's pose when closed (gripper
      approach along the handle frame's x axis), ``open_direction`` the unit world vector along
      which it opens and ``open_distance`` how far (m).
    """

    name: str
    label: str
    room: str
    stand: tuple[float, float, float]
    surface: Pose
    surface_size: tuple[float, float]
    relation: str = "on"
    handle: Pose | None = None
    open_direction: tuple[float, float, float] | None = None
    open_distance: float = 0.0
    aliases: tuple[str, ...] = ()

    @property
    def articulated(self) -> bool:
        return self.handle is not None

    @property
    def words(self) -> str:
        """Human name used in instructions: ``"kitchen table"``."""
        return self.name.replace("_", " ")


@dataclass
class SiteMap:
    """Rooms, doorways and places; answers name look-ups and room-to-room routes."""

    rooms: dict[str, Room]
    doorways: list[Doorway]
    places: dict[str, Place] = field(default_factory=dict)

    def place(self, name: str) -> Place:
        """Look a place up by name, human words or alias (``"kitchen table"``)."""
        key = name.strip().lower().replace(" ", "_")
        if key in self.places:
            return self.places[key]
        for p in self.places.values():
            if key in p.aliases:
                return p
        known = ", ".join(sorted(p.words for p in self.places.values()))
        raise UnknownPlaceError(f"unknown place {name!r}; known places: {known}")

    def room(self, name: str) -> Room:
        key = name.strip().lower().replace(" ", "_")
        if key not in self.rooms:
            raise UnknownPlaceError(f"unknown room {name!r}; known rooms: {', '.join(sorted(self.rooms))}")
        return self.rooms[key]

    def room_of(self, xy: np.ndarray | tuple[float, float]) -> str | None:
        for r in self.rooms.values():
            if r.contains(xy):
                return r.name
        return None

    def to_dict(self) -> dict[str, object]:
        """Plain JSON data (recorded with episodes so replay knows the places)."""

        def pose(p: Pose | None) -> list[float] | None:
            return None if p is None else [*map(float, p.position), *map(float, p.quaternion)]

        return {
            "rooms": [{"name": r.name, "center": list(r.center), "size": list(r.size)} for r in self.rooms.values()],
            "doorways": [{"rooms": list(d.rooms), "position": list(d.position)} for d in self.doorways],
            "places": [{
                "name": p.name, "label": p.label, "room": p.room, "stand": list(p.stand),
                "surface": pose(p.surface), "surface_size": list(p.surface_size), "relation": p.relation,
                "handle": pose(p.handle), "open_direction": None if p.open_direction is None else list(p.open_direction),
                "open_distance": p.open_distance, "aliases": list(p.aliases),
            } for p in self.places.values()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> SiteMap:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` (naming the field) on malformed data."""

        def pose(v: list[float] | None) -> Pose | None:
            return None if v is None else Pose(np.asarray(v[:3], float), np.asarray(v[3:7], float))

        try:
            rooms = {r["name"]: Room(r["name"], tuple(r["center"]), tuple(r["size"])) for r in d["rooms"]}
            doors = [Doorway(tuple(x["rooms"]), tuple(x["position"])) for x in d["doorways"]]
            places = {}
            for p in d["places"]:
                places[p["name"]] = Place(
                    name=p["name"], label=p["label"], room=p["room"], stand=tuple(p["stand"]),
                    surface=pose(p["surface"]), surface_size=tuple(p["surface_size"]), relation=p["relation"],
                    handle=pose(p["handle"]),
                    open_direction=None if p["open_direction"] is None else tuple(p["open_direction"]),
                    open_distance=float(p["open_distance"]), aliases=tuple(p["aliases"]))
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"malformed site map: {type(e).__name__} {e}") from None
        return cls(rooms, doors, places)

    def route(self, start_xy: tuple[float, float], goal_room: str) -> list[Doorway]:
        """Doorways to pass, in order, from ``start_xy`` to ``goal_room`` (breadth-first over rooms).

        Empty when already in the goal room. Raises :class:`UnknownPlaceError` if unreachable.
        """
        start = self.room_of(start_xy)
        if start is None:
            start = min(self.rooms.values(), key=lambda r: math.dist(r.center, start_xy)).name
        if start == goal_room:
            return []
        prev: dict[str, tuple[str, Doorway] | None] = {start: None}
        queue = deque([start])
        while queue:
            cur = queue.popleft()
            for d in self.doorways:
                if cur not in d.rooms:
                    continue
                nxt = d.rooms[1] if d.rooms[0] == cur else d.rooms[0]
                if nxt in prev:
                    continue
                prev[nxt] = (cur, d)
                queue.append(nxt)
        if goal_room not in prev:
            raise UnknownPlaceError(f"no route from room {start!r} to room {goal_room!r}")
        path: list[Doorway] = []
        node = goal_room
        while prev[node] is not None:
            parent, door = prev[node]  # type: ignore[misc]
            path.append(door)
            node = parent
        return list(reversed(path))
