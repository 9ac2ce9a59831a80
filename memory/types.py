"""What the action expert and planner read from memory: object estimates behind a locator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from mnemobot.perception.types import Observation, Pose

__all__ = ["MapLike", "ObjectEstimate", "ObjectLocator", "PlaceLike", "RoomLike"]


@dataclass(frozen=True)
class ObjectEstimate:
    """Where an object is believed to be, in the world frame.

    * ``position``: grasp-relevant centre (top-face centre in x, y; box centre in z), metres;
    * ``top_z``: height of the object's top (m); ``extent``: size along (major, minor, z);
    * ``yaw``: heading of the major horizontal axis (rad);
    * ``place``: name of the site-map place it rests on/in, when known;
    * ``time``: when it was last observed (s); ``confidence`` in [0, 1].
    """

    label: str
    position: np.ndarray
    top_z: float
    extent: np.ndarray
    yaw: float
    place: str | None
    time: float
    confidence: float = 1.0


@runtime_checkable
class ObjectLocator(Protocol):
    """Answers "where is X?" for skills and planners; fed with observations."""

    def update(self, obs: Observation, place: str | None = None) -> None:
        """Integrate one frame; ``place`` names where the robot is standing, if at one."""
        ...

    def locate(self, label: str) -> ObjectEstimate | None: ...

    def known_labels(self) -> set[str]: ...


@runtime_checkable
class RoomLike(Protocol):
    """A room of the robot's map (the site map's rooms satisfy this)."""

    name: str
    center: tuple[float, float]
    size: tuple[float, float]


@runtime_checkable
class PlaceLike(Protocol):
    """A place of the robot's map: furniture or a receptacle (the site map's places satisfy this).

    Memory reads only these fields, so it does not depend on the controller package.
    """

    name: str
    label: str
    room: str
    surface: Pose
    surface_size: tuple[float, float]
    relation: str
    open_direction: tuple[float, float, float] | None
    open_distance: float
    aliases: tuple[str, ...]


@runtime_checkable
class MapLike(Protocol):
    """Prior map given to memory: rooms and places (static layers of the scene graph)."""

    rooms: dict[str, RoomLike]
    places: dict[str, PlaceLike]
