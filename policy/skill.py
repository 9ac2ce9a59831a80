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

The skill ends when the policy has come to rest (two chunks in a row moving the hand less than
``rest_m`` and leaving the fingers alone) after ``min_s``, or fails after ``max_s`` robot seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mnemobot.control.skills import SKILLS, SkillContext, SkillSpec, _fail, _ok
from mnemobot.control.types import ActionChunk, ControlTarget, WorkspaceLimitError
from mnemobot.perception.types import Pose, quat_from_matrix
from mnemobot.policy.features import IMAGE_SIZE, body_action, image_features, state_features
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


def learned_skill(policy: Any, fps: float, max_s: float = 90.0, min_s: float = 2.0, rest_m: float = 0.004,
                  seed: int = 0, name: str = "act", max_speed: float = 1.0, max_turn: float = 3.0) -> SkillSpec:
    """The policy as a skill (see the module docstring); ``fps``: the rate its actions were
    recorded at (one action per recorded frame). The hand's target moves at most ``max_speed``
    m/s and turns at most ``max_turn`` rad/s: a jump in the policy's output is spread over ticks
    (the brainstem would refuse the joint speed it needs) instead of ending the skill."""
    import torch

    def act(ctx: SkillContext, task: str) -> Iterator[ActionChunk]:
        spec = ctx.spec
        ticks = max(1, round(1.0 / (fps * spec.control_dt)))
        n_steps = policy.config.n_action_steps
        policy.reset()
        gen = torch.Generator().manual_seed(seed)
        t0 = ctx.state.t
        still = 0
        while ctx.state.t - t0 < max_s:
            chunk = policy.predict_action_chunk(_batch(ctx, policy, task, ctx.state.t - t0), generator=gen)
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

    return SkillSpec(name, ("task",), act, max_s + 5.0, "run the learned policy on a sub-task until it comes to rest")


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
