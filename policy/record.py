"""Record scripted-expert demonstrations as a LeRobot v3.0 dataset (``mnemobot record-demos``).

Each episode is a ``mnemobot run --agent expert`` of a task family and seed. While it runs, every
``1 / fps`` seconds of robot time one frame is written: the head camera resized to the policy's
image size, the proprioception and the command the brainstem sent (:mod:`mnemobot.policy.features`),
and the tokens of a scene-graph memory that watched the same camera frames the whole episode
(:mod:`mnemobot.policy.tokens`; the expert itself acts on ground truth, the recorded memory never
does). Only successful episodes are kept; a failed one is reported and dropped.

Regenerating a dataset: the same command with the same family, seeds and settings writes the
same frames (the simulator and the expert are deterministic for a seed), into a new folder::

    mnemobot record-demos --task put_block_back --episodes 25 --seed 0 --out data/put_block_back
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnemobot.policy.dataset import DatasetWriter, Feature
from mnemobot.policy.features import (
    ACTION_NAMES,
    IMAGE_SIZE,
    STATE_NAMES,
    action_features,
    image_features,
    state_features,
)
from mnemobot.policy.tokens import TOKEN_DIM, memory_tokens, token_names

__all__ = ["RecordConfig", "record_demos"]


@dataclass(frozen=True)
class RecordConfig:
    """``episodes`` successful demonstrations of ``task`` from seed ``seed`` on (failed seeds are
    skipped, up to ``max_tries`` seeds in all); frames at ``fps`` (robot time)."""

    task: str
    out: Path
    episodes: int = 25
    seed: int = 0
    fps: float = 10.0
    image_size: tuple[int, int] = IMAGE_SIZE
    memory_tokens: int = 16
    sensor_profile: str = "ideal"
    max_tries: int | None = None
    append: bool = False


def features(cfg: RecordConfig) -> dict[str, Feature]:
    h, w = cfg.image_size
    return {
        "observation.images.head": Feature("image", (h, w, 3)),
        "observation.state": Feature("float32", (len(STATE_NAMES),), tuple(STATE_NAMES)),
        "observation.memory": Feature("float32", (cfg.memory_tokens * TOKEN_DIM,), token_names(cfg.memory_tokens)),
        "observation.memory_mask": Feature("bool", (cfg.memory_tokens,)),
        "action": Feature("float32", (len(ACTION_NAMES),), tuple(ACTION_NAMES)),
    }


def record_demos(cfg: RecordConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Record (see the module docstring); returns a summary (kept and dropped seeds, frames)."""
    from mnemobot.agent.episode import RunConfig, make_memory, run_episode
    from mnemobot.sim.env import EnvConfig, HouseholdEnv

    say = progress or (lambda _m: None)
    if cfg.episodes < 1 or cfg.fps <= 0:
        raise ValueError("episodes must be >= 1 and fps > 0")
    tries = cfg.max_tries if cfg.max_tries is not None else 2 * cfg.episodes + 5
    kept: list[int] = []
    dropped: list[tuple[int, str]] = []
    env = HouseholdEnv(EnvConfig(task=cfg.task, sensor_profile=cfg.sensor_profile))
    try:
        with DatasetWriter(cfg.out, fps=cfg.fps, features=features(cfg), robot_type="mnemobot_mobile_panda",
                           append=cfg.append) as writer:
            seed = cfg.seed
            while len(kept) < cfg.episodes and seed < cfg.seed + tries:
                run = RunConfig(task_id=cfg.task, seed=seed, agent="expert", sensor_profile=cfg.sensor_profile)
                state: dict[str, Any] = {"memory": None, "next": 0.0, "task": "", "frames": 0}

                def on_frame(obs: Any, ctx: Any, state: dict[str, Any] = state, run: Any = run) -> None:
                    mem = state["memory"]
                    if mem is None:
                        mem = state["memory"] = make_memory(run, env.unwrapped)
                    mem.set_body(ctx.held_in_hand(), dict(ctx.opened), ctx.at_place, t=obs.timestamp,
                                 hand=ctx.hand_position())
                    mem.update(obs, place=ctx.at_place)

                def on_tick(cmd: Any, robot_state: Any, ctx: Any, state: dict[str, Any] = state) -> None:
                    t = float(robot_state.t)
                    if t + 1e-9 < state["next"]:
                        return
                    state["next"] = t + 1.0 / cfg.fps
                    obs = ctx.robot.observe()
                    mem = state["memory"]
                    if mem is not None:
                        tokens, mask = memory_tokens(mem.graph, np.asarray(robot_state.base_pose, dtype=float), t,
                                                     env.unwrapped.task.instruction, max_tokens=cfg.memory_tokens)
                    else:
                        tokens = np.zeros((cfg.memory_tokens, TOKEN_DIM), np.float32)
                        mask = np.zeros(cfg.memory_tokens, bool)
                    kin = ctx.controller.kinematics
                    writer.add_frame({
                        "observation.images.head": image_features(obs.rgb, cfg.image_size),
                        "observation.state": state_features(robot_state, kin),
                        "observation.memory": tokens.ravel(),
                        "observation.memory_mask": mask,
                        "action": action_features(cmd, kin),
                    })
                    state["frames"] += 1

                try:
                    summary = run_episode(run, env=env, frame_hook=on_frame, tick_hook=on_tick)
                finally:
                    if state["memory"] is not None:
                        state["memory"].close()
                if summary.success:
                    index = writer.save_episode(summary.task)
                    kept.append(seed)
                    say(f"episode {index}: {cfg.task} seed {seed}: {state['frames']} frames, "
                        f"{summary.sim_s:.0f} s robot time")
                else:
                    writer.clear_episode()
                    dropped.append((seed, summary.stop_reason or "failed"))
                    say(f"seed {seed}: the expert failed ({summary.stop_reason or 'goal not reached'}); dropped")
                seed += 1
            frames = writer.total_frames
    finally:
        env.close()
    return {"task": cfg.task, "out": str(cfg.out), "kept": kept, "dropped": dropped, "frames": frames}
