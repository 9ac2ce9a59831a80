"""The household gymnasium environment: a pybullet world, a simulated robot and a task family.

Usage::

    import gymnasium as gym
    import mnemobot.sim  # registers the environments

    env = gym.make("mnemobot/HouseholdFetch-v0")
    obs, info = env.reset(seed=0)
    print(info["instruction"])
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mnemobot.control.types import JointLimitError, RobotCommand, SafetyError, VelocityLimitError
from mnemobot.perception.sensor import SensorModel, sensor_model
from mnemobot.perception.types import Observation
from mnemobot.sim.backend import BackendConfig, make_backend
from mnemobot.sim.layout import HouseLayout
from mnemobot.sim.robot import SimRobot
from mnemobot.sim.tasks import TASK_FAMILIES, Task, layout_for, make_task

__all__ = ["MAX_INSTANCE_ID", "EnvConfig", "HouseholdEnv"]

MAX_INSTANCE_ID = 65535
"""Upper bound of instance ids in the ``instances`` image."""


@dataclass(frozen=True)
class EnvConfig:
    """Environment settings.

    ``task``: task family id (see :data:`~mnemobot.sim.tasks.TASK_FAMILIES`); ``width``/``height``:
    camera image size (pixels); ``camera_hz``: camera refresh rate (frames per simulated second);
    ``max_episode_s``: simulated seconds before truncation; ``sensor_profile``: what the robot
    perceives, a profile name (``ideal``: the exact render, ``kinect``, ``realsense``, ``heavy``),
    a YAML file or a :class:`~mnemobot.perception.sensor.SensorModel` (see :mod:`mnemobot.sim.sensors`);
    ``layout``: the world, default (None) the task family's (:func:`~mnemobot.sim.tasks.layout_for`:
    the house, or the workcell for the memory-dependent manipulation families).
    """

    task: str = "place"
    width: int = 320
    height: int = 240
    camera_hz: float = 5.0
    gui: bool = False
    max_episode_s: float = 600.0
    physics_hz: float = 240.0
    layout: HouseLayout | None = None
    sensor_profile: str | SensorModel = "ideal"

    def backend_config(self) -> BackendConfig:
        return BackendConfig(gui=self.gui, physics_hz=self.physics_hz, width=self.width, height=self.height)


class HouseholdEnv(gym.Env):
    """A mobile Panda in a three-room house (or the one-room workcell), doing one task family's tasks.

    **Action** (``Box``, float32, length 13): the flat :class:`~mnemobot.control.types.RobotCommand`
    (``RobotCommand.to_array`` order), held for one control period (``spec.control_dt`` = 0.05 s):

    * ``[0:7]`` arm joint position targets (rad), within the spec's joint limits;
    * ``[7]`` gripper opening target (m), 0 .. 0.08;
    * ``[8:11]`` base twist ``vx, vy`` (m/s) and ``wz`` (rad/s) in the base frame;
    * ``[11:13]`` head ``pan, tilt`` targets (rad; tilt > 0 looks down).

    A non-finite or out-of-range action raises :class:`~mnemobot.control.types.JointLimitError`
    (positions) or :class:`~mnemobot.control.types.VelocityLimitError` (base twist).

    **Observation** (``Dict``). The camera part is refreshed at ``camera_hz``; between refreshes
    the last frame is returned again with its own ``camera_time`` and ``camera_pose``.

    * ``rgb`` (H, W, 3) uint8; ``depth`` (H, W) float32, metres along the optical axis, 0 = no
      return; ``instances`` (H, W) int32, 0 = background (objects 1..N, furniture 100+, false
      detections 60000+; id -> label in ``info["labels"]``; all 0 with detector mode ``none``);
    * ``camera_pose`` (7,) float32: optical frame (z forward, x right, y down) in the world,
      ``x, y, z`` (m) + quaternion ``qx, qy, qz, qw``; ``intrinsics`` (4,): ``fx, fy, cx, cy`` (px);
      ``camera_time`` (1,): simulated time of the frame (s);
    * ``arm_q`` (7,) rad; ``gripper_width`` (1,) m; ``base_pose`` (3,): ``x, y`` (m), ``yaw``
      (rad, in [-pi, pi]) in the world, as the robot believes it (odometry under a noisy sensor
      profile); ``head`` (2,) ``pan, tilt`` rad; ``time`` (1,) s.

    **Reward** 1.0 and ``terminated`` when the task's success predicate holds (ground truth);
    ``truncated`` once simulated time reaches ``max_episode_s``. ``info``: ``labels``,
    ``instruction``, ``success``, ``sim_time``, ``task`` (family), ``object``, ``receptacle``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None, **overrides: Any) -> None:
        config = replace(config or EnvConfig(), **_known_overrides(overrides))
        if config.task not in TASK_FAMILIES:
            raise ValueError(f"unknown task family {config.task!r}; known: {', '.join(sorted(TASK_FAMILIES))}")
        if config.layout is None:
            config = replace(config, layout=layout_for(config.task))
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.config = config
        self.render_mode = render_mode
        self.sensor_model = sensor_model(config.sensor_profile)
        self.backend = make_backend(config.layout, config.backend_config())
        self.robot = SimRobot(self.backend, sensor=self.sensor_model)
        self.site_map = config.layout.site_map()
        self.task: Task | None = None
        self._frame: Observation | None = None
        self.action_space = self._action_space()
        self.observation_space = self._observation_space()

    # -- spaces ------------------------------------------------------------------------------------
    def _action_space(self) -> spaces.Box:
        s = self.robot.spec
        low = RobotCommand(s.arm_lower, s.gripper_min, -np.array([s.base_max_linear, s.base_max_linear,
                                                                  s.base_max_angular]), s.head_lower)
        high = RobotCommand(s.arm_upper, s.gripper_max, np.array([s.base_max_linear, s.base_max_linear,
                                                                  s.base_max_angular]), s.head_upper)
        return spaces.Box(low.to_array(), high.to_array(), dtype=np.float32)

    def _observation_space(self) -> spaces.Dict:
        h, w = self.config.height, self.config.width
        s = self.robot.spec
        inf = np.inf

        def box(low: Any, high: Any, shape: tuple[int, ...], dtype: type = np.float32) -> spaces.Box:
            return spaces.Box(low, high, shape=shape, dtype=dtype)

        return spaces.Dict({
            "rgb": box(0, 255, (h, w, 3), np.uint8),
            "depth": box(0.0, inf, (h, w)),
            "instances": box(0, MAX_INSTANCE_ID, (h, w), np.int32),
            "camera_pose": box(-inf, inf, (7,)),
            "intrinsics": box(0.0, inf, (4,)),
            "camera_time": box(0.0, inf, (1,)),
            "arm_q": box(-inf, inf, (s.n_arm,)),
            "gripper_width": box(-inf, inf, (1,)),
            "base_pose": spaces.Box(np.array([-inf, -inf, -math.pi], np.float32),
                                    np.array([inf, inf, math.pi], np.float32), dtype=np.float32),
            "head": spaces.Box(s.head_lower.astype(np.float32), s.head_upper.astype(np.float32), dtype=np.float32),
            "time": box(0.0, inf, (1,)),
        })

    # -- gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Restore the scene, re-spawn objects and generate the task, all from the episode seed.

        ``seed`` None draws the episode seed from the environment's generator.
        """
        super().reset(seed=seed)
        episode_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        if self.task is not None:
            self.task.detach(self.backend)
        self.backend.clear_step_hooks()
        self.robot.release()
        self.backend.restore_initial()
        self.robot.reset(sensor_seed=episode_seed)
        placements = self.backend.spawn_objects(np.random.default_rng(episode_seed))
        self.task = make_task(self.config.task, episode_seed, self.config.layout, placements)
        self.task.attach(self.backend)
        self._frame = self.robot.observe()
        return self._obs(), self._info(success=False)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        cmd = RobotCommand.from_array(self._checked(action), self.robot.spec.n_arm)
        self.robot.step(cmd)
        if self._frame is None or self.backend.time - self._frame.timestamp >= 1.0 / self.config.camera_hz - 1e-9:
            self._frame = self.robot.observe()
        success = self.task.success(self.backend)
        truncated = (not success) and self.backend.time >= self.config.max_episode_s - 1e-9
        return self._obs(), float(success), success, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        """The latest camera frame (``rgb_array``), or None without a render mode."""
        if self.render_mode != "rgb_array" or self._frame is None:
            return None
        return self._frame.rgb.copy()

    def close(self) -> None:
        self.backend.close()

    # -- helpers -----------------------------------------------------------------------------------
    def observation(self) -> Observation:
        """The current camera frame as an :class:`~mnemobot.perception.types.Observation` with labels."""
        if self._frame is None:
            raise RuntimeError("call reset() first")
        return self._frame

    def _checked(self, action: np.ndarray) -> np.ndarray:
        """The action as float64, or a SafetyError naming the offending entries."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        tol = 1e-5
        bad = ~np.isfinite(a) | (a < self.action_space.low - tol) | (a > self.action_space.high + tol)
        if np.any(bad):
            raise _action_error(np.flatnonzero(bad), a, self.action_space, self.robot.spec.n_arm)
        return np.clip(a, self.action_space.low, self.action_space.high)

    def _obs(self) -> dict[str, np.ndarray]:
        frame = self.observation()
        state = self.robot.read()
        k = frame.intrinsics
        pose = frame.camera_pose
        f32 = np.float32
        return {
            "rgb": frame.rgb.copy(),
            "depth": frame.depth.astype(f32, copy=True),
            "instances": (np.zeros(frame.depth.shape, np.int32) if frame.instances is None
                          else np.asarray(frame.instances, dtype=np.int32).copy()),
            "camera_pose": np.concatenate([pose.position, pose.quaternion]).astype(f32),
            "intrinsics": np.array([k.fx, k.fy, k.cx, k.cy], dtype=f32),
            "camera_time": np.array([frame.timestamp], dtype=f32),
            "arm_q": state.arm_q.astype(f32),
            "gripper_width": np.array([state.gripper_width], dtype=f32),
            "base_pose": self.robot.believed_base_pose().astype(f32),
            "head": state.head.astype(f32),
            "time": np.array([state.t], dtype=f32),
        }

    def _info(self, success: bool) -> dict[str, Any]:
        task = self.task
        if task is None:
            raise RuntimeError("call reset() first")
        return {
            "labels": dict(self.observation().labels),
            "instruction": task.instruction,
            "success": bool(success),
            "sim_time": float(self.backend.time),
            "task": task.family,
            "object": task.object,
            "receptacle": task.receptacle,
        }


_ACTION_NAMES = ("arm joint {i}", "gripper width", "base vx", "base vy", "base wz", "head pan", "head tilt")


def _action_name(index: int, n_arm: int) -> str:
    if index < n_arm:
        return f"arm joint {index + 1}"
    return _ACTION_NAMES[index - n_arm + 1]


def _action_error(indices: np.ndarray, a: np.ndarray, space: spaces.Box, n_arm: int) -> SafetyError:
    """The SafetyError for bad entries: base twist -> VelocityLimitError, positions -> JointLimitError."""
    parts = [
        f"{_action_name(int(i), n_arm)} = {a[i]!r} (allowed [{space.low[i]:.4g}, {space.high[i]:.4g}])"
        for i in indices
    ]
    is_twist = any(n_arm + 1 <= int(i) <= n_arm + 3 for i in indices)
    cls = VelocityLimitError if is_twist else JointLimitError
    return cls("action refused: " + "; ".join(parts))


def _known_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(EnvConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown HouseholdEnv option(s) {unknown}; known: {sorted(names)}")
    return overrides
