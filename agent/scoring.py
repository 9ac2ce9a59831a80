"""Scoring free-text instructions on simulator ground truth (scoring only, never memory)."""

from __future__ import annotations

import numpy as np

from mnemobot.agent.planner import Goal
from mnemobot.control.site import SiteMap
from mnemobot.control.types import RobotState

__all__ = ["goals_satisfied"]


def goals_satisfied(goals: list[Goal], backend, site: SiteMap, state: RobotState,
                    initial: dict[str, str] | None = None) -> bool:
    """Whether the world now satisfies every goal of a parsed instruction.

    A later goal about the same object or container supersedes an earlier one (``put the duck
    in the drawer, then bring the duck to the tray`` is scored on the tray); the robot is in one
    place, so only the last "go to" goal must still hold. ``initial`` maps each object to the
    place it started on, for "put it back" goals.
    """
    final: dict[str, Goal] = {}
    for g in goals:
        final["\0robot" if g.kind == "goto" else (g.object or g.target)] = g
    return all(_goal_holds(g, backend, site, state, initial or {}) for g in final.values())


def _goal_holds(g: Goal, backend, site: SiteMap, state: RobotState, initial: dict[str, str]) -> bool:
    if g.kind == "place" and g.recall:
        origin = initial.get(g.object)
        return (origin is not None and not backend.is_held(g.object)
                and backend.place_of(g.object) == (origin, site.place(origin).relation))
    if g.kind == "place":
        return not backend.is_held(g.object) and backend.place_of(g.object) == (g.target, g.relation)
    if g.kind == "open":
        return backend.drawer_opening() > 0.8 * site.place(g.target).open_distance
    if g.kind == "close":
        return backend.drawer_opening() < 0.02
    if g.kind == "goto":
        if g.target in site.rooms:
            return site.room_of(state.base_pose[:2]) == g.target
        stand = np.asarray(site.place(g.target).stand[:2])
        return float(np.linalg.norm(stand - state.base_pose[:2])) < 0.1
    return False
