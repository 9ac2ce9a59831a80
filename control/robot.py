"""The robot interface that controllers drive: a simulated robot and a ROS 2 robot implement it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mnemobot.control.types import RobotCommand, RobotSpec, RobotState
from mnemobot.perception.types import Observation

__all__ = ["RobotInterface"]


@runtime_checkable
class RobotInterface(Protocol):
    """A mobile manipulator with one RGB-D head camera.

    ``step`` holds ``cmd`` for one control period (``spec.control_dt`` seconds of robot time)
    and returns the new state; ``observe`` returns the latest camera frame with proprioception.
    Implementations never check limits themselves beyond what the hardware does: the
    controllers in :mod:`mnemobot.control.controllers` refuse unsafe commands first.
    """

    spec: RobotSpec

    def read(self) -> RobotState: ...

    def step(self, cmd: RobotCommand) -> RobotState: ...

    def observe(self) -> Observation: ...

    def hold(self) -> RobotState:
        """Stop the base and hold the arm where it is for one control period."""
        ...
