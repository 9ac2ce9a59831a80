"""The learned policy as a skill the orchestrator calls, executed through the brainstem.

``learned_skill(policy, ...)`` builds a :class:`~mnemobot.control.skills.SkillSpec` named
``act`` (one argument, ``task``: the sub-task text). Each call of the policy sees the head
camera, the proprioception and the scene-graph tokens of the agent's memory (when the agent has
one), and returns a chunk; its first ``n_action_steps`` actions are executed, each over the
control ticks of one recorded frame: the hand's target interpolated from the last commanded pose
(linear in position, spherical in rotation) and rate-limited, solved by the brainstem's IK in
the arm-base frame (as recorded: the target rides with the base) from the previous tick's joints,
with each joint's step clipped to its speed limit (a jump near a wrist singularity is spread over
ticks instead of refused); the base twist held and clipped to the base's limits; the head's
target interpolated and rate-limited. Every tick's command then goes through the controller's
joint, speed and e-stop checks: a command the brainstem refuses ends the skill with that safety
failure, and a hand target outside the workspace ends it as ``unreachable``; nothing outside the
limits is executed.

A policy trained on keyframes (``action_mode="keyframes"``, :mod:`mnemobot.policy.keyframes`)
gives whole-body poses instead, and is told how many keyframes it has executed. Each hand pose is
solved by the brainstem's IK (workspace box included) from the joints held now (a pose the arm
misses by less than :data:`REACH_SLACK_M` is clipped to the nearest one it reaches; a farther one
ends the skill as ``out_of_reach``); the joints, the base (by feedback on its believed pose along
the line) and the head move together along straight lines to it, eased in and out at
:data:`KEYFRAME_PACE` of their limits; then the base and joints settle, then the fingers move to
the keyframe's opening. It ends when a chunk's keyframes all stay where the robot is, or where
the last keyframe sent it, or when it has executed as many keyframes as the longest demonstration
(``max_keyframes`` of the policy's config).

A per-frame policy's skill ends when it has come to rest (two chunks in a row moving the hand less
than ``rest_m`` and leaving the fingers alone) after ``min_s``. Either fails after ``max_s`` robot
seconds.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnemobot.control.motion import gripper_move, wrap_angle
from mnemobot.control.skills import SKILLS, SkillContext, SkillSpec, _fail, _ok
from mnemobot.control.types import ActionChunk, ControlTarget, SkillResult, WorkspaceLimitError
from mnemobot.perception.types import Pose, quat_from_matrix
from mnemobot.policy.features import IMAGE_SIZE, body_action, from_rot6d, image_features, state_features
from mnemobot.policy.keyframes import same_place, trace_keep
from mnemobot.policy.tokens import memory_tokens

__all__ = ["learned_skill", "registered"]


def _slerp_matrix(r0: np.ndarray, r1: np.ndarray, s: float) -> np.ndarray:
    """Rotation ``s`` of the way from ``r0`` to ``r1`` (about their relative axis)."""
    rel = r0.T @ r1
    angle = math.acos(max(-1.0, min(1.0, (np.trace(rel) - 1) / 2)))
    if angle < 1e-6:
        return r1
    axis = np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])
    n = np.linalg.norm(axis)
    if n < 1e-9:  # a half turn: any interpolation is as good; jump at the end
        return r0 if s < 1.0 else r1
    k = axis / n
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = s * angle
    return r0 @ (np.eye(3) + math.sin(a) * kx + (1 - math.cos(a)) * kx @ kx)


def _batch(ctx: SkillContext, policy: Any, task: str, t: float) -> dict[str, Any]:
    import torch

    cfg = policy.config
    obs = ctx.robot.observe()
    img = image_features(obs.rgb, tuple(cfg.image_size) if cfg.image_size else IMAGE_SIZE)
    state = state_features(ctx.state, ctx.controller.kinematics)
    batch: dict[str, Any] = {
        "observation.images.head": torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255.0,
        "observation.state": torch.from_numpy(state)[None],
        "task": [task],
        "time": float(t),
    }
    graph = getattr(ctx.locator, "graph", None)
    if graph is not None:
        tokens, mask = memory_tokens(graph, np.asarray(ctx.state.base_pose, dtype=float), float(ctx.state.t), task,
                                     max_tokens=cfg.max_memory_tokens, vocab_buckets=cfg.vocab_buckets,
                                     id_buckets=cfg.id_buckets)
    else:  # no memory (the ablation): no tokens
        tokens = np.zeros((cfg.max_memory_tokens, cfg.token_dim), np.float32)
        mask = np.zeros(cfg.max_memory_tokens, bool)
    batch["observation.memory"] = torch.from_numpy(tokens)[None]
    batch["observation.memory_mask"] = torch.from_numpy(mask)[None]
    return batch


def _trace_batch(states: list[np.ndarray], actions: list[np.ndarray], length: int, cfg: Any) -> dict[str, Any]:
    """The hand's trace as the policy reads it (``trace.*``): of the keyframes executed, those
    :func:`~mnemobot.policy.keyframes.trace_keep` keeps (as training does), the last ``length``,
    oldest first."""
    import torch

    st = np.zeros((1, length, cfg.state_dim), np.float32)
    ac = np.zeros((1, length, cfg.action_dim), np.float32)
    mk = np.zeros((1, length), bool)
    if actions:
        keep = trace_keep(np.stack(actions))[-length:]
        n = len(keep)
        st[0, :n] = np.stack(states)[keep]
        ac[0, :n] = np.stack(actions)[keep]
        mk[0, :n] = True
    return {"trace.state": torch.from_numpy(st), "trace.action": torch.from_numpy(ac), "trace_mask": torch.from_numpy(mk)}


def _step_towards(pos: np.ndarray, rot: np.ndarray, goal_pos: np.ndarray, goal_rot: np.ndarray,
                  max_m: float, max_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, rot)`` moved towards the goal by at most ``max_m`` and ``max_rad``."""
    d = goal_pos - pos
    n = float(np.linalg.norm(d))
    new_pos = goal_pos if n <= max_m else pos + d * (max_m / n)
    rel = rot.T @ goal_rot
    angle = math.acos(max(-1.0, min(1.0, (np.trace(rel) - 1) / 2)))
    new_rot = goal_rot if angle <= max_rad else _slerp_matrix(rot, goal_rot, max_rad / angle)
    return new_pos, new_rot


@dataclass(frozen=True)
class _Keyframe:
    hand: Pose  # arm-base frame
    gripper: float
    base: np.ndarray  # believed (x, y, yaw), map frame
    head: np.ndarray


def _keyframe(a: np.ndarray) -> _Keyframe:
    """A keyframe action vector as the skill takes it; ``ValueError`` for NaN or a degenerate rotation."""
    v = np.asarray(a, dtype=float)
    if v.shape != (15,) or not np.all(np.isfinite(v)):
        raise ValueError(f"a keyframe is 15 finite numbers, got {np.round(v, 3).tolist()}")
    return _Keyframe(Pose(v[:3], quat_from_matrix(from_rot6d(v[3:9]))), float(v[9]), v[10:13].copy(), v[13:15].copy())


def _same_place(a: _Keyframe, b: _Keyframe, rest_m: float) -> bool:
    """Whether keyframe ``a`` asks for no move from ``b`` (:func:`~mnemobot.policy.keyframes.same_place`)."""
    def vec(k: _Keyframe) -> np.ndarray:
        return np.concatenate([k.hand.position, np.zeros(6), [k.gripper], k.base[:3], k.head[:2]])

    return same_place(vec(a), vec(b), rest_m)


KEYFRAME_PACE = 0.6
"""Fraction of each joint's, the base's and the head's speed limit a move between keyframes
peaks at (the scripted skills' joint moves use the same)."""
REACH_SLACK_M, REACH_SLACK_RAD = 0.15, 0.5
"""A keyframe the arm cannot reach exactly is clipped to the nearest pose it reaches (the IK's
best, within the joint limits) when that is less than 15 cm and 29 degrees away: a learned pose a
little past the reach, or a blend of two postures in a swing, is moved into reach rather than
ending the task; a farther one ends the skill as ``out_of_reach``. A clipped pose at a contact
misses its target, which the task's score shows."""
FINE_MOVE = (0.15, 0.08)
"""A hand move shorter than 15 cm between keyframes (a descent onto a block, a push on the
button, a lift) goes at no more than 8 cm/s on average, as the scripted skills' contact moves do."""


def _to_keyframe(ctx: SkillContext, kf: _Keyframe, task: str, settle_s: float = 1.5
                 ) -> Generator[ActionChunk, None, SkillResult | None]:
    """Move the whole body to keyframe ``kf`` (see :func:`learned_skill`); the failed result, or
    None once there."""
    spec = ctx.spec
    dt = spec.control_dt
    q0 = ctx.commanded_q().copy()
    # the hand pose in the arm-base frame (the workspace box checked), solved from the joints held
    # now, or from the ready posture when the arm is folded (as the scripted skills seed it: the
    # solution then lies in front of the robot); the other seed if the first finds none
    folded = min(np.max(np.abs(q0 - spec.stow)), np.max(np.abs(q0 - spec.look))) < 0.05
    seeds = (spec.arm_home, q0) if folded else (q0, spec.arm_home)
    p = kf.hand.position
    try:
        ctx.controller.check_workspace(p)
    except WorkspaceLimitError as e:
        return _fail("act", {"task": task}, "out_of_reach", str(e))
    q1, err, best = None, math.inf, None
    for seed_q in seeds:  # restarts as the scripted skills' IK: a keyframe is a long reach, not a tick's step
        res = ctx.controller.kinematics.ik(kf.hand, np.asarray(seed_q, dtype=float), spec.arm_lower, spec.arm_upper,
                                           restarts=4)
        if res.success:
            q1 = res.q
            break
        if res.pos_err < err:
            err, best = res.pos_err, res
    if q1 is None and best is not None and err < REACH_SLACK_M and best.rot_err < REACH_SLACK_RAD:
        q1 = best.q  # clipped to the nearest pose the arm reaches (within its joint limits)
    if q1 is None:
        return _fail("act", {"task": task}, "out_of_reach",
                     f"unreachable: end-effector target {np.round(p, 3).tolist()} m in the arm-base frame; "
                     f"IK stopped {err * 1000:.1f} mm away")
    head0 = ctx.commanded_head().copy()
    head1 = np.clip(kf.head, spec.head_lower, spec.head_upper)
    b0 = np.asarray(ctx.state.base_pose, dtype=float)[:3].copy()
    b1 = np.array([kf.base[0], kf.base[1], b0[2] + wrap_angle(float(kf.base[2]) - b0[2])])
    # smoothstep timing peaks at 1.5x the mean speed: size the move so the peak stays at the pace
    pace = KEYFRAME_PACE
    kin = ctx.controller.kinematics
    reach = float(np.linalg.norm(kin.fk(q1).position - kin.fk(q0).position))
    fine = reach / FINE_MOVE[1] / dt if reach < FINE_MOVE[0] else 0.0
    ticks = max(float(np.max(np.abs(q1 - q0) / np.asarray(spec.arm_velocity, dtype=float))),
                float(np.linalg.norm(b1[:2] - b0[:2])) / spec.base_max_linear, abs(b1[2] - b0[2]) / spec.base_max_angular,
                float(np.max(np.abs(head1 - head0))) / spec.head_velocity) * 1.5 / (pace * dt)
    n = max(2, math.ceil(ticks), math.ceil(fine))

    def ease(k: float) -> float:
        t = min(1.0, k / n)
        return t * t * (3 - 2 * t)

    def twist(k: float) -> np.ndarray:
        """Base-frame twist tracking the eased line from ``b0`` to ``b1`` at tick ``k``."""
        x, y, yaw = (float(v) for v in ctx.state.base_pose)
        want, ahead = b0 + ease(k) * (b1 - b0), b0 + ease(k + 1) * (b1 - b0)
        ff = (ahead - want) / dt
        v_world = ff[:2] + 2.0 * (want[:2] - np.array([x, y]))
        sp = float(np.linalg.norm(v_world))
        if sp > 0.95 * spec.base_max_linear:
            v_world = v_world * (0.95 * spec.base_max_linear / sp)
        wz = float(np.clip(ff[2] + 2.0 * wrap_angle(float(want[2]) - yaw), -0.95 * spec.base_max_angular,
                           0.95 * spec.base_max_angular))
        c, si = math.cos(yaw), math.sin(yaw)
        return np.array([c * v_world[0] + si * v_world[1], -si * v_world[0] + c * v_world[1], wz])

    k = 0
    while k < n:
        tw = twist(k + 2)  # base feedback once per 4-tick block, on the measured (believed) pose
        targets = []
        for _ in range(min(4, n - k)):
            k += 1
            s = ease(k)
            targets.append(ControlTarget(arm_q=q0 + s * (q1 - q0), base_twist=tw, head=head0 + s * (head1 - head0)))
        yield ActionChunk(targets)
    # settle: the base closes on the keyframe's pose and the joints on their targets
    t_end = ctx.state.t + settle_s
    while ctx.state.t < t_end:
        st = ctx.state
        if (float(np.linalg.norm(b1[:2] - st.base_pose[:2])) < 0.01 and abs(wrap_angle(float(b1[2] - st.base_pose[2]))) < 0.01
                and float(np.max(np.abs(st.arm_q - q1))) < 0.005):
            break
        yield ActionChunk([ControlTarget(arm_q=q1, base_twist=twist(n), head=head1) for _ in range(4)])
    grip = float(np.clip(kf.gripper, spec.gripper_min, spec.gripper_max))
    if abs(grip - ctx.commanded_gripper()) > 2e-3:
        yield gripper_move(spec, ctx.commanded_gripper(), grip, settle_ticks=6)
    return None


def learned_skill(policy: Any, fps: float, max_s: float = 90.0, min_s: float = 2.0, rest_m: float = 0.004,
                  seed: int = 0, name: str = "act", max_speed: float = 1.0, max_turn: float = 3.0,
                  temperature: float = 1.0, replan: int | None = None) -> SkillSpec:
    """The policy as a skill (see the module docstring); ``fps``: the rate its actions were
    recorded at (one action per recorded frame). The hand's target moves at most ``max_speed``
    m/s and turns at most ``max_turn`` rad/s: a jump in the policy's output is spread over ticks
    (the brainstem would refuse the joint speed it needs) instead of ending the skill.
    ``replan``: keyframe policies execute this many keyframes of each chunk before the next call
    (default: the config's ``n_action_steps``; fewer closes the loop more often: a keyframe
    policy is trained to be called at every keyframe)."""
    import torch

    def act_keyframes(ctx: SkillContext, task: str) -> Iterator[ActionChunk]:
        n_steps = min(policy.config.chunk_size, replan or policy.config.n_action_steps)
        limit = int(getattr(policy.config, "max_keyframes", 0))
        policy.reset()
        gen = torch.Generator().manual_seed(seed)
        t0 = ctx.state.t
        done = 0  # keyframes executed: the policy's step count
        last: _Keyframe | None = None  # the last keyframe executed
        length = int(getattr(policy.config, "trace_length", 0))
        trace_s: list[np.ndarray] = []  # proprioception once at each executed keyframe (the hand's trace)
        trace_a: list[np.ndarray] = []  # and the keyframe it was sent to
        while ctx.state.t - t0 < max_s:
            batch = {**_batch(ctx, policy, task, ctx.state.t - t0), "step": float(done), "temperature": temperature}
            if length:
                batch.update(_trace_batch(trace_s, trace_a, length, policy.config))
            chunk = policy.predict_action_chunk(batch, generator=gen)
            rows = chunk[0].cpu().numpy().astype(float)
            try:
                whole = [_keyframe(a) for a in rows]
            except ValueError as e:
                return _fail("act", {"task": task}, "bad_action", f"the policy gave an unusable keyframe: {e}")
            frames = whole[:n_steps]
            here = _Keyframe(Pose(ctx.controller.kinematics.fk(ctx.commanded_q()).position), ctx.commanded_gripper(),
                             np.asarray(ctx.state.base_pose, dtype=float)[:3], ctx.commanded_head())
            # at rest: every keyframe of the chunk (the whole horizon, not only those executed
            # before the next call: a policy called at every keyframe may pause for one) is where
            # the robot is, or where the last keyframe sent it (a pose clipped into reach stays
            # apart from what the policy keeps asking for)
            if ctx.state.t - t0 >= min_s and any(
                    ref is not None and all(_same_place(f, ref, rest_m) for f in whole) for ref in (here, last)):
                return _ok("act", {"task": task}, f"the policy came to rest after {ctx.state.t - t0:.1f} s")
            for f, row in zip(frames, rows, strict=False):
                failed = yield from _to_keyframe(ctx, f, task)
                if failed is not None:
                    return failed
                done, last = done + 1, f
                if length:
                    trace_s.append(state_features(ctx.state, ctx.controller.kinematics))
                    trace_a.append(row.astype(np.float32))
                if limit and done >= limit:
                    return _ok("act", {"task": task}, f"the policy executed {done} keyframes, as many as the longest "
                                                      "demonstration")
                if ctx.state.t - t0 >= max_s:
                    break
        return _fail("act", {"task": task}, "timeout", f"the policy did not come to rest within {max_s:.0f} s")

    def act(ctx: SkillContext, task: str) -> Iterator[ActionChunk]:
        spec = ctx.spec
        ticks = max(1, round(1.0 / (fps * spec.control_dt)))
        n_steps = policy.config.n_action_steps
        policy.reset()
        gen = torch.Generator().manual_seed(seed)
        t0 = ctx.state.t
        still = 0
        while ctx.state.t - t0 < max_s:
            chunk = policy.predict_action_chunk({**_batch(ctx, policy, task, ctx.state.t - t0),
                                                 "temperature": temperature}, generator=gen)
            actions = chunk[0, :n_steps].cpu().numpy().astype(float)
            last = ctx.controller.kinematics.fk(ctx.commanded_q())
            grip0 = ctx.commanded_gripper()
            head0 = ctx.commanded_head()
            targets: list[ControlTarget] = []
            prev_pos, prev_rot, prev_head = last.position, last.rotation, head0
            cur_pos, cur_rot = last.position, last.rotation
            step_m, step_rad = max_speed * spec.control_dt, max_turn * spec.control_dt
            head_step = 0.99 * spec.head_velocity * spec.control_dt
            q_step = 0.95 * np.asarray(spec.arm_velocity, dtype=float) * spec.control_dt
            cur_q = ctx.commanded_q().copy()
            ik_q = cur_q.copy()  # the last IK solution seeds the next (the joints may lag behind it)
            cur_head = head0
            moved, driven = 0.0, 0.0
            grip = grip0
            for a in actions:
                try:
                    act = body_action(a)
                except ValueError as e:
                    return _fail("act", {"task": task}, "bad_action", f"the policy gave an unusable action: {e}")
                grip = float(np.clip(act.gripper, spec.gripper_min, spec.gripper_max))
                twist = act.base_twist.copy()
                speed = float(np.hypot(twist[0], twist[1]))
                if speed > spec.base_max_linear:
                    twist[:2] *= spec.base_max_linear / speed
                twist[2] = float(np.clip(twist[2], -spec.base_max_angular, spec.base_max_angular))
                head = np.clip(act.head, spec.head_lower, spec.head_upper)
                for k in range(1, ticks + 1):
                    s = k / ticks
                    want_pos = prev_pos + s * (act.hand.position - prev_pos)
                    want_rot = _slerp_matrix(prev_rot, act.hand.rotation, s)
                    cur_pos, cur_rot = _step_towards(cur_pos, cur_rot, want_pos, want_rot, step_m, step_rad)
                    want_head = prev_head + s * (head - prev_head)
                    cur_head = cur_head + np.clip(want_head - cur_head, -head_step, head_step)
                    # IK in the arm-base frame, as recorded (the hand target rides with the base),
                    # from the joints of the previous tick; a step the joints cannot make in one
                    # tick is spread over the next ones
                    try:
                        local = Pose(cur_pos, quat_from_matrix(cur_rot))
                        ik_q = ctx.controller.solve_ee(ctx.controller.arm_base_pose(ctx.state) @ local, ctx.state, ik_q)
                    except WorkspaceLimitError as e:
                        if targets:
                            yield ActionChunk(targets)
                        return _fail("act", {"task": task}, "out_of_reach", str(e))
                    cur_q = cur_q + np.clip(ik_q - cur_q, -q_step, q_step)
                    targets.append(ControlTarget(arm_q=cur_q.copy(), gripper_width=grip, base_twist=twist,
                                                 head=cur_head.copy()))
                moved = max(moved, float(np.linalg.norm(act.hand.position - last.position)))
                driven = max(driven, float(np.abs(twist).max()))
                prev_pos, prev_rot, prev_head = act.hand.position, act.hand.rotation, head
            yield ActionChunk(targets)
            still = still + 1 if moved < rest_m and driven < 0.02 and abs(grip - grip0) < 1e-3 else 0
            if still >= 2 and ctx.state.t - t0 >= min_s:
                return _ok("act", {"task": task}, f"the policy came to rest after {ctx.state.t - t0:.1f} s")
        return _fail("act", {"task": task}, "timeout", f"the policy did not come to rest within {max_s:.0f} s")

    run = act_keyframes if getattr(policy.config, "action_mode", "frames") == "keyframes" else act
    return SkillSpec(name, ("task",), run, max_s + 5.0, "run the learned policy on a sub-task until it comes to rest")


@contextmanager
def registered(spec: SkillSpec) -> Iterator[SkillSpec]:
    """Make ``spec`` callable by name (``SKILLS``) for the duration of a run."""
    before = SKILLS.get(spec.name)
    SKILLS[spec.name] = spec
    try:
        yield spec
    finally:
        if before is None:
            SKILLS.pop(spec.name, None)
        else:
            SKILLS[spec.name] = before
