"""Scripted skills: the default action expert (cerebellum).

Each skill is a generator that yields :class:`ActionChunk`s and returns a :class:`SkillResult`.
The :class:`~mnemobot.control.executor.SkillExecutor` runs the chunks through the brainstem
(:class:`~mnemobot.control.controllers.Controller`) and updates ``ctx.state`` after every tick,
so a skill reads fresh proprioception after each ``yield``. Composite skills (``find``) call
other skills with ``yield from``.

Object positions come only from ``ctx.locator`` (perception or memory, or ground truth for the
scripted expert); furniture comes from the site map.

Usage::

    spec = SKILLS["pick"]
    result = executor.run(spec, {"object": "red_cube"})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from mnemobot.control.controllers import Controller
from mnemobot.control.motion import (
    cartesian_line,
    gripper_move,
    head_angles_towards,
    head_move,
    hold,
    joint_move,
    top_down_orientation,
    wrap_angle,
)
from mnemobot.control.robot import RobotInterface
from mnemobot.control.site import Place, SiteMap, UnknownPlaceError
from mnemobot.control.types import ActionChunk, ControlTarget, RobotState, SkillResult, SkillStatus
from mnemobot.memory.types import ObjectEstimate, ObjectLocator
from mnemobot.perception.types import Observation, Pose, quat_from_matrix

__all__ = ["SKILLS", "SkillContext", "SkillGen", "SkillSpec", "skill"]

SkillGen = Generator[ActionChunk, None, SkillResult]

GRASPED_MIN_WIDTH = 0.004  # m: fingers closed further than this hold nothing
UNNAMED_HELD = "object in hand"
"""What the body tells memory it holds when the fingers are closed on something no skill named
(a learned policy's grasp): memory takes the object nearest the hand."""
PRE_GRASP_HEIGHT = 0.12  # m above the object's top
LIFT_HEIGHT = 0.15  # m
HANDLE_STANDOFF = 0.12  # m before the handle along the approach axis
SLIDE_TOLERANCE = 0.04  # m: a drawer that stops this close to its goal opening got there
HEAD_DEFAULT = np.array([0.0, 0.55])  # pan, tilt (rad): looking ahead and down while driving
PRESS_ABOVE = 0.08  # m above a button's top where the closed hand lines up before pushing
PRESS_REACH = 0.0  # m: grasp target height above the button's top at the bottom of the push; the
# closed fingertips reach about 1.2 cm below the grasp target, so the cap goes down about 1.2 cm
PRESS_HOLD_TICKS = 6  # control ticks the button is held down


@dataclass
class SkillContext:
    """What skills act through and the body-level facts they keep between calls.

    ``perceive`` renders a frame, feeds the locator (and memory) and returns it.
    ``held`` / ``held_offset`` describe the object in the hand (``held_offset``: height of the
    grasp point above the object's bottom, m); ``opened`` maps each container this robot opened to its opening (m), measured by the
    hand's travel while it pulled.
    """

    robot: RobotInterface
    controller: Controller
    site: SiteMap
    locator: ObjectLocator
    perceive: Callable[[], Observation | None]
    state: RobotState | None = None
    at_place: str | None = None
    held: str | None = None
    held_offset: float = 0.0
    opened: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self):  # noqa: ANN201 - RobotSpec
        return self.robot.spec

    def commanded_q(self) -> np.ndarray:
        last = self.controller.last_command
        return np.asarray(last.arm_q if last is not None else self.state.arm_q, dtype=float)

    def held_in_hand(self) -> str | None:
        """The held object as the body tells memory: the one a skill picked, else
        :data:`UNNAMED_HELD` while the fingers are commanded shut but stopped open on something
        (wider than :data:`GRASPED_MIN_WIDTH` by more than 5 mm), else None."""
        if self.held is not None:
            return self.held
        if self.state is None:
            return None
        width = float(self.state.gripper_width)
        closing = self.commanded_gripper() <= GRASPED_MIN_WIDTH
        return UNNAMED_HELD if closing and width > GRASPED_MIN_WIDTH + 0.005 else None

    def commanded_gripper(self) -> float:
        last = self.controller.last_command
        return float(last.gripper_width if last is not None else self.state.gripper_width)

    def commanded_head(self) -> np.ndarray:
        last = self.controller.last_command
        return np.asarray(last.head if last is not None else self.state.head, dtype=float)

    def hand_position(self) -> list[float] | None:
        """The measured grasp point (end effector) in the world, from the arm's joints and the base
        pose (None before the first state): where a released object is until the camera sees it."""
        if self.state is None:
            return None
        return [round(float(v), 4) for v in self.controller.ee_pose(self.state).position]

    def commanded_ee(self) -> Pose:
        """End-effector pose (world) of the last commanded joint targets."""
        base = self.controller.world_to_arm_base(self.state).inverse()
        return base @ self.controller.kinematics.fk(self.commanded_q())


@dataclass(frozen=True)
class SkillSpec:
    """A registered skill: its name, argument names, generator and time budget (robot s)."""

    name: str
    params: tuple[str, ...]
    fn: Callable[..., SkillGen]
    timeout_s: float
    description: str


SKILLS: dict[str, SkillSpec] = {}


def skill(name: str, params: tuple[str, ...], timeout_s: float, description: str):
    """Register a skill generator under ``name`` in :data:`SKILLS`."""

    def deco(fn: Callable[..., SkillGen]) -> Callable[..., SkillGen]:
        SKILLS[name] = SkillSpec(name, params, fn, timeout_s, description)
        return fn

    return deco


def _ok(name: str, args: dict[str, str], message: str = "", **data: object) -> SkillResult:
    return SkillResult(name, args, SkillStatus.SUCCESS, message=message, data=dict(data))


def _fail(name: str, args: dict[str, str], reason: str, message: str) -> SkillResult:
    return SkillResult(name, args, SkillStatus.FAILURE, reason=reason, message=message)


# ---------------------------------------------------------------------------- arm motions


def _ik_world(ctx: SkillContext, pose: Pose) -> np.ndarray | None:
    """Joint solution for a world-frame end-effector pose.

    Seeded at the commanded joints, or at the ready posture when the arm is folded (stowed or
    looking: the solution then lies in front of the robot, where manipulation happens).
    """
    spec = ctx.spec
    local = ctx.controller.world_to_arm_base(ctx.state) @ pose
    seed = ctx.commanded_q()
    if min(np.max(np.abs(seed - spec.stow)), np.max(np.abs(seed - spec.look))) < 0.05:
        seed = spec.arm_home
    res = ctx.controller.kinematics.ik(local, seed, spec.arm_lower, spec.arm_upper, restarts=4)
    return res.q if res.success else None


def _move_joints_to_pose(ctx: SkillContext, pose: Pose) -> SkillGen:
    q = _ik_world(ctx, pose)
    if q is None:
        return _fail("move", {}, "unreachable", f"no arm configuration reaches {np.round(pose.position, 3)}")
    yield joint_move(ctx.spec, ctx.commanded_q(), q)
    return _ok("move", {})


def _line(ctx: SkillContext, pose: Pose, speed: float = 0.2) -> SkillGen:
    """Straight end-effector line to ``pose``, planned in joint space before moving.

    Every waypoint is solved by IK seeded with the previous one; the line is refused (nothing
    moves) if a waypoint is unreachable or two waypoints need a joint jump beyond 90% of the
    joint's speed limit (a wrist flip), so the brainstem never sees such a command.
    """
    spec = ctx.spec
    poses = cartesian_line(ctx.commanded_ee(), pose, spec.control_dt, speed=speed)
    to_arm = ctx.controller.world_to_arm_base(ctx.state)
    q = ctx.commanded_q()
    max_step = 0.9 * spec.arm_velocity * spec.control_dt
    targets = []
    for t in poses.targets:
        res = ctx.controller.kinematics.ik(to_arm @ t.ee_pose, q, spec.arm_lower, spec.arm_upper, restarts=0)
        if not res.success:
            return _fail("move", {}, "unreachable", f"no arm configuration reaches {np.round(t.ee_pose.position, 3)}")
        if np.any(np.abs(res.q - q) > max_step):
            return _fail("move", {}, "unreachable", "the straight path needs a joint flip")
        q = res.q
        targets.append(ControlTarget(arm_q=q))
    yield ActionChunk(targets)
    return _ok("move", {})


def _descend(ctx: SkillContext, name: str, args: dict[str, str], above: Pose, target: Pose,
             speed: float) -> Generator[ActionChunk, None, SkillResult | None]:
    """Move (in joint space) to ``above``, then straight down to ``target``; the failed skill's
    result when either move fails (after stowing, once the arm has started down), else None."""
    moved = yield from _move_joints_to_pose(ctx, above)
    if not moved.success:
        return _fail(name, args, moved.reason, moved.message)
    moved = yield from _line(ctx, target, speed=speed)
    if not moved.success:
        yield _stow(ctx)
        return _fail(name, args, moved.reason, moved.message)
    return None


def _stow(ctx: SkillContext) -> ActionChunk:
    """Fold the arm into the carry posture (out of the camera's view)."""
    return joint_move(ctx.spec, ctx.commanded_q(), ctx.spec.stow)


def _grasp_yaw(est: ObjectEstimate, base_yaw: float) -> float:
    """Hand heading that closes the fingers across the object's narrow side, nearest the base's."""
    step = math.pi / 2 if abs(est.extent[0] - est.extent[1]) < 0.01 else math.pi
    k = round(wrap_angle(base_yaw - est.yaw) / step)
    return wrap_angle(est.yaw + k * step)


def _grasp_data(est: ObjectEstimate, grasp: Pose, quat: np.ndarray) -> dict[str, object]:
    """What a grasp was planned from (for diagnosing a failed one)."""
    return {"estimate": {"position": [round(float(v), 4) for v in est.position], "top_z": round(float(est.top_z), 4),
                         "extent": [round(float(v), 4) for v in est.extent], "yaw": round(float(est.yaw), 4)},
            "grasp": [round(float(v), 4) for v in grasp.position],
            "grasp_yaw": round(float(2 * math.atan2(float(quat[2]), float(quat[3]))), 4) if len(quat) == 4 else None}


def _surface_z(ctx: SkillContext, place_name: str | None, default: float) -> float:
    if place_name is None:
        return default
    try:
        return float(ctx.site.place(place_name).surface.position[2])
    except UnknownPlaceError:
        return default


# ---------------------------------------------------------------------------- skills


@skill("pick", ("object",), 40.0, "Grasp an object top-down and lift it into the carry posture.")
def pick(ctx: SkillContext, object: str) -> SkillGen:  # noqa: A002 - the skill schema's name
    args = {"object": object}
    if ctx.held is not None:
        return _fail("pick", args, "hand_full", f"already holding the {ctx.held}")
    est = ctx.locator.locate(object)
    if est is None:
        return _fail("pick", args, "not_found", f"the {object} is not where I can see it")
    bottom = _surface_z(ctx, est.place, est.top_z - est.extent[2])
    height = max(0.01, est.top_z - bottom)
    grasp_z = max(est.top_z - min(0.025, height / 2), bottom + 0.012)
    quat = top_down_orientation(_grasp_yaw(est, float(ctx.state.base_pose[2])))
    above = Pose(np.array([est.position[0], est.position[1], est.top_z + PRE_GRASP_HEIGHT]), quat)
    grasp = Pose(np.array([est.position[0], est.position[1], grasp_z]), quat)
    yield gripper_move(ctx.spec, ctx.commanded_gripper(), ctx.spec.gripper_max, settle_ticks=0)
    failed = yield from _descend(ctx, "pick", args, above, grasp, speed=0.15)
    if failed is not None:
        return failed
    yield gripper_move(ctx.spec, ctx.commanded_gripper(), 0.0, settle_ticks=8)
    if ctx.state.gripper_width < GRASPED_MIN_WIDTH:
        yield gripper_move(ctx.spec, ctx.commanded_gripper(), ctx.spec.gripper_max, settle_ticks=0)
        yield from _line(ctx, above)
        yield _stow(ctx)
        return _fail("pick", args, "grasp_failed", f"the fingers closed on nothing at the {object}")
    # In the hand from the moment the fingers close on it: memory must not take the object it
    # sees rising with the arm for a second one while the arm lifts and stows it.
    ctx.held, ctx.held_offset = object, grasp_z - bottom
    yield from _line(ctx, Pose(grasp.position + [0, 0, LIFT_HEIGHT], quat))
    yield _stow(ctx)
    if ctx.state.gripper_width < GRASPED_MIN_WIDTH:
        ctx.held = None
        res = _fail("pick", args, "dropped", f"the {object} slipped out of the hand")
        res.data = _grasp_data(est, grasp, quat)
        return res
    return _ok("pick", args, width=round(float(ctx.state.gripper_width), 4), **_grasp_data(est, grasp, quat))


def _spots(ctx: SkillContext, place: Place, centre: np.ndarray, size: np.ndarray) -> list[np.ndarray]:
    """Release points on a surface, best first: a 5x3 grid over its inner part, ordered by
    distance from the objects known to rest there (farthest first), then nearest the robot."""
    others = [
        e.position[:2]
        for lbl in ctx.locator.known_labels()
        if lbl != ctx.held and (e := ctx.locator.locate(lbl)) is not None and e.place == place.name
    ]
    rot = place.surface.rotation[:2, :2]
    grid = [centre[:2] + rot @ (np.array([i, j]) * size * 0.18) for i in (0, -1, 1) for j in (0, -1, 1, -2, 2)]
    base = ctx.state.base_pose[:2]

    def key(p: np.ndarray) -> tuple[float, float]:
        clearance = min((float(np.linalg.norm(p - o)) for o in others), default=1.0)
        return (-min(clearance, 0.15), float(np.linalg.norm(p - base)))

    return sorted(grid, key=key)


def _drop_points(ctx: SkillContext, place: Place) -> list[np.ndarray] | SkillResult:
    """Candidate release points ``(x, y, surface z)`` on/in ``place``, best first."""
    centre = place.surface.position.copy()
    size = np.asarray(place.surface_size, dtype=float)
    if place.articulated:
        if place.name not in ctx.opened:
            return _fail("place", {}, "container_closed", f"the {place.words} is closed")
        # The drawer box spans [-depth/2, depth/2] along d when closed; opened by `opening` the
        # part outside the cabinet is [depth/2, depth/2 + opening]. Drop behind the drawer
        # front, as far from the cabinet as it goes, so the hand (about 0.2 m across) clears
        # the cabinet top when it comes back for the object: 7 cm for a tall object, up to
        # 12 cm for a flat one, which the head camera (looking down at about 45 degrees from
        # the stand pose) would not see over the drawer's 12 cm front wall at 7 cm.
        d = np.asarray(place.open_direction, dtype=float)
        along_x = abs(float(place.surface.rotation[:, 0] @ d)) > 0.7
        depth = float(size[0] if along_x else size[1])
        height = ctx.held_offset + 0.025  # the grasp is up to 2.5 cm below the object's top
        behind = float(np.clip(0.16 - height, 0.07, 0.12))
        return [centre + d * (depth / 2 + ctx.opened[place.name] - behind)]
    return [np.array([p[0], p[1], centre[2]]) for p in _spots(ctx, place, centre, size)]


@skill("place", ("object", "receptacle", "relation"), 40.0, "Put the held object on or in a receptacle.")
def place(ctx: SkillContext, object: str, receptacle: str, relation: str = "on") -> SkillGen:  # noqa: A002
    args = {"object": object, "receptacle": receptacle, "relation": relation}
    if ctx.held != object:
        held = f"the {ctx.held}" if ctx.held else "nothing"
        return _fail("place", args, "not_holding", f"cannot place the {object}: holding {held}")
    target = ctx.site.place(receptacle)
    if relation not in ("on", "in"):
        return _fail("place", args, "bad_relation", f"relation must be 'on' or 'in', not {relation!r}")
    drops = _drop_points(ctx, target)
    if isinstance(drops, SkillResult):
        drops.args = args
        return drops
    quat = top_down_orientation(float(ctx.state.base_pose[2]))
    for spot in drops:
        release = Pose(np.array([spot[0], spot[1], spot[2] + ctx.held_offset + 0.015]), quat)
        above = Pose(release.position + [0, 0, LIFT_HEIGHT], quat)
        if _ik_world(ctx, above) is not None and _ik_world(ctx, release) is not None:
            break
    moved = yield from _move_joints_to_pose(ctx, above)
    if not moved.success:
        return _fail("place", args, moved.reason, moved.message)
    moved = yield from _line(ctx, release, speed=0.15)
    if not moved.success:
        yield _stow(ctx)
        return _fail("place", args, moved.reason, moved.message)
    yield gripper_move(ctx.spec, ctx.commanded_gripper(), ctx.spec.gripper_max, settle_ticks=6)
    ctx.held = None  # released: from here the camera sees it standing where it was put
    yield from _line(ctx, above)
    yield _stow(ctx)
    return _ok("place", args)


def _handle_poses(place: Place, opening: float) -> list[Pose]:
    """Gripper poses at the handle: approach along the handle's x, fingers closing vertically.

    Two mirror-image grips (fingers' y axis up or down); the caller keeps the one the arm reaches.
    """
    approach = place.handle.rotation[:, 0]
    pos = place.handle.position + np.asarray(place.open_direction) * opening
    poses = []
    for up in (1.0, -1.0):
        y = np.array([0.0, 0.0, up])
        x = np.cross(y, approach)
        poses.append(Pose(pos, quat_from_matrix(np.stack([x / np.linalg.norm(x), y, approach], axis=1))))
    return poses


def _choose_grip(ctx: SkillContext, place: Place, start: float, end: float) -> tuple[Pose, Pose] | None:
    """The (grip, goal) handle poses whose IK solutions are nearest the current joints."""
    best, best_cost = None, math.inf
    for grip, goal in zip(_handle_poses(place, start), _handle_poses(place, end), strict=True):
        q_grip, q_goal = _ik_world(ctx, grip), _ik_world(ctx, goal)
        if q_grip is None or q_goal is None:
            continue
        cost = float(np.sum(np.abs(q_grip - ctx.commanded_q())))
        if cost < best_cost:
            best, best_cost = (grip, goal), cost
    return best


def _retreat_from_handle(ctx: SkillContext, approach: np.ndarray) -> SkillGen:
    """Slide the open fingers off the handle bar, back the base away with the arm held still,
    stow the arm clear of the drawer, and drive back to where the base stood."""
    ee = ctx.commanded_ee()
    yield from _line(ctx, Pose(ee.position - approach * 0.04, ee.quaternion), speed=0.1)
    x, y, yaw = (float(v) for v in ctx.state.base_pose)
    back = np.array([x, y]) - approach[:2] * 0.25
    res = yield from _drive(ctx, back, yaw, tol=0.02, yaw_tol=0.02, speed=0.25)
    yield _stow(ctx)
    yield from _drive(ctx, np.array([x, y]), yaw, tol=0.01, yaw_tol=0.01, speed=0.5)
    return res


def _slide_drawer(ctx: SkillContext, name: str, place: Place, start: float, end: float) -> SkillGen:
    """Grasp the handle at opening ``start`` and move it to opening ``end`` (metres).

    Opening pulls with the arm. Closing first backs the base up by the opening, so the handle
    sits where the arm reaches it, grips it, then drives the base back to the stand pose with
    the arm held still, pushing the drawer shut.
    """
    closing = end < start
    stand = np.asarray(place.stand[:2], dtype=float)
    direction = np.asarray(place.open_direction, dtype=float)
    if closing:
        res = yield from _drive(ctx, stand + direction[:2] * start, float(place.stand[2]), tol=0.01, yaw_tol=0.01)
        if not res.success:
            return _fail(name, {}, res.reason, res.message)
    poses = _choose_grip(ctx, place, start, start if closing else end)
    if poses is None:
        return _fail(name, {}, "unreachable", f"the arm cannot reach the {place.words} handle from here")
    grip, goal = poses[0], _handle_poses(place, end)[0]
    approach = place.handle.rotation[:, 0]
    # Straight in along the approach axis, or, when the handle is too close to the arm base for
    # that (an open drawer), down from above just in front of it.
    near = Pose(grip.position - approach * 0.05, grip.quaternion)
    routes = [  # (first waypoint, reached by a joint move; then straight lines)
        [Pose(grip.position - approach * HANDLE_STANDOFF, grip.quaternion), grip],
        [Pose(near.position + [0.0, 0.0, HANDLE_STANDOFF], grip.quaternion), near, grip],
    ]
    route = next((r for r in routes if _ik_world(ctx, r[0]) is not None), routes[0])
    yield gripper_move(ctx.spec, ctx.commanded_gripper(), ctx.spec.gripper_max, settle_ticks=0)
    moved = yield from _move_joints_to_pose(ctx, route[0])
    for waypoint in route[1:]:
        if moved.success:
            moved = yield from _line(ctx, waypoint, speed=0.1)
    if not moved.success:
        yield _stow(ctx)
        return _fail(name, {}, moved.reason, moved.message)
    yield gripper_move(ctx.spec, ctx.commanded_gripper(), 0.0, settle_ticks=6)
    if ctx.state.gripper_width < GRASPED_MIN_WIDTH:
        yield gripper_move(ctx.spec, ctx.commanded_gripper(), ctx.spec.gripper_max, settle_ticks=0)
        yield from _retreat_from_handle(ctx, approach)
        return _fail(name, {}, "grasp_failed", f"could not grasp the {place.words} handle")
    grip_at = ctx.controller.ee_pose(ctx.state).position
    if closing:
        approach = place.handle.rotation[:, 0]
        past = stand + approach[:2] * 0.02  # push a little past the stand pose to seat the drawer
        moved = yield from _drive(ctx, past, float(place.stand[2]), tol=0.01, yaw_tol=0.01, speed=0.1)
    else:
        moved = yield from _line(ctx, poses[1], speed=0.1)
    yield hold(4)
    hand = ctx.controller.ee_pose(ctx.state).position
    reached = float(np.linalg.norm(hand - goal.position))
    ctx.opened[place.name] = max(0.0, start + float((hand - grip_at) @ direction))
    yield gripper_move(ctx.spec, ctx.commanded_gripper(), ctx.spec.gripper_max, settle_ticks=2)
    yield from _retreat_from_handle(ctx, approach)
    if not moved.success:
        return _fail(name, {}, moved.reason, moved.message)
    if reached > SLIDE_TOLERANCE:
        return _fail(name, {}, "stuck", f"the {place.words} did not move with the hand ({reached:.2f} m off)")
    return _ok(name, {})


def _articulated(ctx: SkillContext, name: str, container: str) -> Place | SkillResult:
    target = ctx.site.place(container)
    if not target.articulated:
        return _fail(name, {"container": container}, "not_articulated", f"the {target.words} cannot be opened")
    if ctx.held is not None:
        return _fail(name, {"container": container}, "hand_full", f"holding the {ctx.held}")
    return target


@skill("open", ("container",), 40.0, "Pull a drawer or door open by its handle.")
def open_(ctx: SkillContext, container: str) -> SkillGen:
    target = _articulated(ctx, "open", container)
    if isinstance(target, SkillResult):
        return target
    if ctx.opened.get(target.name, 0.0) >= target.open_distance - SLIDE_TOLERANCE:
        return _ok("open", {"container": container}, message=f"the {target.words} is already open")
    result = yield from _slide_drawer(ctx, "open", target, ctx.opened.get(target.name, 0.0), target.open_distance)
    result.args = {"container": container}
    if not result.success and ctx.opened.get(target.name, 0.0) < 0.5 * target.open_distance:
        ctx.opened.pop(target.name, None)
    return result


@skill("close", ("container",), 40.0, "Push a drawer or door closed by its handle.")
def close(ctx: SkillContext, container: str) -> SkillGen:
    target = _articulated(ctx, "close", container)
    if isinstance(target, SkillResult):
        return target
    start = ctx.opened.get(target.name, target.open_distance)
    result = yield from _slide_drawer(ctx, "close", target, start, 0.0)
    result.args = {"container": container}
    if result.success or ctx.opened.get(target.name, 0.0) < 0.03:
        ctx.opened.pop(target.name, None)
    return result


@skill("press", ("button",), 30.0, "Push a button down with the closed gripper and let it spring back.")
def press(ctx: SkillContext, button: str) -> SkillGen:
    """Close the hand, line it up above the button's top, push straight down, hold, lift, stow.

    The button is a place of the site map whose label is ``"button"`` (its surface is the cap's
    top); the robot must stand where the arm reaches it (``navigate_to(button)``).
    """
    args = {"button": button}
    target = ctx.site.place(button)
    if target.label != "button":
        return _fail("press", args, "not_pressable", f"the {target.words} is not a button")
    if ctx.held is not None:
        return _fail("press", args, "hand_full", f"holding the {ctx.held}")
    top = target.surface.position
    quat = top_down_orientation(float(ctx.state.base_pose[2]))
    above = Pose(top + [0.0, 0.0, PRESS_ABOVE], quat)
    down = Pose(top + [0.0, 0.0, PRESS_REACH], quat)
    yield gripper_move(ctx.spec, ctx.commanded_gripper(), ctx.spec.gripper_min, settle_ticks=2)
    failed = yield from _descend(ctx, "press", args, above, down, speed=0.05)
    if failed is not None:
        return failed
    yield hold(PRESS_HOLD_TICKS)
    yield from _line(ctx, above, speed=0.1)
    yield _stow(ctx)
    yield gripper_move(ctx.spec, ctx.commanded_gripper(), ctx.spec.gripper_max, settle_ticks=0)
    return _ok("press", args)


# ---------------------------------------------------------------------------- base and head


def _twist_towards(state: RobotState, goal: np.ndarray, yaw_goal: float, vmax: float, wmax: float) -> np.ndarray:
    """Base-frame twist driving towards ``goal`` (world x, y) and heading ``yaw_goal``."""
    x, y, yaw = (float(v) for v in state.base_pose)
    err = goal - np.array([x, y])
    dist = float(np.linalg.norm(err))
    v_world = err / dist * min(vmax, 1.5 * dist) if dist > 1e-6 else np.zeros(2)
    c, s = math.cos(yaw), math.sin(yaw)
    vx, vy = c * v_world[0] + s * v_world[1], -s * v_world[0] + c * v_world[1]
    wz = float(np.clip(2.0 * wrap_angle(yaw_goal - yaw), -wmax, wmax))
    return np.array([vx, vy, wz])


def _drive(
    ctx: SkillContext, goal: np.ndarray, yaw_goal: float, tol: float, yaw_tol: float, speed: float | None = None
) -> SkillGen:
    """Feedback-drive the base to a waypoint in 4-tick chunks; fails when it stops progressing.

    ``speed``: top speed (m/s), default 80% of the base's limit.
    """
    spec = ctx.spec
    vmax, wmax = speed or 0.8 * spec.base_max_linear, 0.8 * spec.base_max_angular
    best, stalled = math.inf, 0
    while True:
        st = ctx.state
        dist = float(np.linalg.norm(goal - st.base_pose[:2]))
        yaw_err = abs(wrap_angle(yaw_goal - float(st.base_pose[2])))
        if dist < tol and yaw_err < yaw_tol:
            return _ok("drive", {})
        stalled = 0 if dist < best - 0.005 or yaw_err > yaw_tol else stalled + 1
        best = min(best, dist)
        if stalled > 10:
            return _fail("drive", {}, "blocked", f"the base stopped {dist:.2f} m short of its waypoint")
        tw = _twist_towards(st, goal, yaw_goal, vmax, wmax)
        yield ActionChunk([ControlTarget(base_twist=tw) for _ in range(4)])


def _door_waypoints(ctx: SkillContext, start: tuple[float, float], room: str) -> list[np.ndarray]:
    """Points 0.7 m either side of each doorway on the route, so the base passes straight through."""
    pts: list[np.ndarray] = []
    cur_room = ctx.site.room_of(start)
    for door in ctx.site.route(start, room):
        a, b = door.rooms if door.rooms[0] == cur_room else (door.rooms[1], door.rooms[0])
        axis = np.subtract(ctx.site.rooms[b].center, ctx.site.rooms[a].center)
        axis = np.eye(2)[int(np.argmax(np.abs(axis)))] * np.sign(axis[int(np.argmax(np.abs(axis)))])
        pts += [np.asarray(door.position) - 0.7 * axis, np.asarray(door.position) + 0.7 * axis]
        cur_room = b
    return pts


@skill("navigate_to", ("place",), 90.0, "Drive the base to a place's stand pose or a room's centre.")
def navigate_to(ctx: SkillContext, place: str) -> SkillGen:
    args = {"place": place}
    try:
        target = ctx.site.place(place)
        goal, yaw_goal, room = np.array(target.stand[:2]), float(target.stand[2]), target.room
    except UnknownPlaceError:
        r = ctx.site.room(place)  # raises UnknownPlaceError naming places and rooms
        target, goal, room = None, np.array(r.center), r.name
        yaw_goal = float(ctx.state.base_pose[2])
    if np.max(np.abs(ctx.commanded_q() - ctx.spec.stow)) > 1e-3:
        yield _stow(ctx)
    yield head_move(ctx.spec, ctx.commanded_head(), HEAD_DEFAULT, settle_ticks=0)
    start = (float(ctx.state.base_pose[0]), float(ctx.state.base_pose[1]))
    ctx.at_place = None
    for wp in _door_waypoints(ctx, start, room):
        heading = math.atan2(wp[1] - ctx.state.base_pose[1], wp[0] - ctx.state.base_pose[0])
        res = yield from _drive(ctx, wp, heading, tol=0.12, yaw_tol=math.pi)
        if not res.success:
            res.args, res.skill = args, "navigate_to"
            return res
    res = yield from _drive(ctx, goal, yaw_goal, tol=0.02, yaw_tol=0.02)
    res.args, res.skill = args, "navigate_to"
    if res.success:
        yield hold(2)
        ctx.at_place = target.name if target is not None else None
    return res


def _look_target(ctx: SkillContext, target: str) -> np.ndarray | None:
    try:
        place = ctx.site.place(target)
    except UnknownPlaceError:
        place = None
    if place is not None:
        point = place.surface.position
        opening = ctx.opened.get(place.name, 0.0)
        if place.articulated and place.open_direction is not None and opening > 0.0:
            # an open drawer's bottom is out by its opening: look into it, not at its front
            point = point + np.asarray(place.open_direction, dtype=float) * opening
        return point
    est = ctx.locator.locate(target)
    return None if est is None else est.position


@skill("look_at", ("target",), 10.0, "Point the head camera at a place or a known object and perceive.")
def look_at(ctx: SkillContext, target: str) -> SkillGen:
    args = {"target": target}
    point = _look_target(ctx, target)
    if point is None:
        return _fail("look_at", args, "not_found", f"no place or known object called {target!r}")
    pan, tilt = head_angles_towards(ctx.spec, ctx.state.base_pose3d(), point)
    if not ctx.spec.head_lower[0] <= pan <= ctx.spec.head_upper[0]:
        return _fail("look_at", args, "out_of_view", f"the {target} is behind the robot")
    if ctx.held is None and np.max(np.abs(ctx.commanded_q() - ctx.spec.look)) > 1e-3:
        yield joint_move(ctx.spec, ctx.commanded_q(), ctx.spec.look)  # arm out of the view
    yield head_move(ctx.spec, ctx.commanded_head(), np.array([pan, tilt]))
    ctx.perceive()
    return _ok("look_at", args, visible=sorted(ctx.locator.known_labels()))


def _search_order(ctx: SkillContext, room_hint: str | None) -> list[Place]:
    """Surfaces first (hinted room first, then nearest), containers last."""
    pos = ctx.state.base_pose[:2]

    def key(p: Place) -> tuple[int, int, float]:
        return (int(p.articulated), int(room_hint is not None and p.room != room_hint),
                float(np.linalg.norm(np.asarray(p.stand[:2]) - pos)))

    return sorted(ctx.site.places.values(), key=key)


def _over_place(place: Place, position: np.ndarray, margin: float = 0.15) -> bool:
    """Whether ``position`` lies over the place's surface (horizontally, within ``margin`` m)."""
    d = np.asarray(position, dtype=float)[:2] - place.surface.position[:2]
    return float(np.hypot(*d)) <= 0.5 * float(np.hypot(*place.surface_size)) + margin


@skill("find", ("object", "room"), 400.0, "Search places (then containers) until the object is seen.")
def find(ctx: SkillContext, object: str, room: str = "") -> SkillGen:  # noqa: A002
    """Find an object and stop at the place it rests on, with a fresh sighting of it.

    The place the locator (memory) believes it is on is visited first, then the others in
    search order; a container is opened before it is looked into. A remembered
    estimate counts only once a frame taken after this visit began shows the object there (an
    estimate stamped as the previous skill ended, such as the spot a released object is assumed
    at, is no sighting), so stale memory cannot end the search at the wrong place; an object
    spotted on another place while driving is visited next.
    """
    args = {"object": object, "room": room}
    if ctx.held is not None and ctx.held == object:  # in the hand: found (the camera may not see it there)
        return _ok("find", args, place=ctx.at_place, searched=0, held=True)
    t_start = ctx.state.t

    def fresh(t0: float) -> ObjectEstimate | None:
        """The locator's estimate if a frame taken after ``t0`` showed the object, else None."""
        est = ctx.locator.locate(object)
        return est if est is not None and est.time > t0 else None

    first = ctx.locator.locate(object)
    queue = list(_search_order(ctx, room or None))
    if first is not None and first.place in ctx.site.places:
        queue.insert(0, ctx.site.place(first.place))
    tried: set[str] = set()
    searched = 0
    while queue:
        spotted = fresh(t_start)
        if spotted is not None and spotted.place in ctx.site.places and spotted.place not in tried:
            p = ctx.site.place(spotted.place)
        else:
            p = queue.pop(0)
            if p.name in tried:
                continue
        tried.add(p.name)
        t_visit = ctx.state.t
        if ctx.at_place != p.name:
            res = yield from navigate_to(ctx, p.name)
            if not res.success:
                continue
        opened_here = False
        if p.articulated and p.name not in ctx.opened:
            res = yield from open_(ctx, p.name)
            opened_here = res.success
            if not res.success:
                continue
        yield from look_at(ctx, p.name)
        searched += 1
        est = fresh(t_visit)
        if est is not None and (est.place == p.name or (est.place is None and _over_place(p, est.position))):
            # no place: a locator that does not relate objects to places; it must still be seen there
            return _ok("find", args, place=p.name, searched=searched)
        if opened_here:
            yield from close(ctx, p.name)
    return _fail("find", args, "not_found", f"searched {searched} places and did not see the {object}")
