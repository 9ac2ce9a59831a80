"""Simulation and control-loop benchmark.

Prints, for this machine:

* physics steps per second in the household scene (robot idle);
* head-camera render time per frame at 320x240 (default) and 640x480, with the light robot
  visuals mnemobot renders and, as the baseline measured in the same run, pybullet_data's stock
  Panda visual meshes;
* full episodes (perception-driven agent, camera at 5 Hz): wall time split into physics,
  rendering and the rest (controller, skills, perception, orchestrator), the overhead per control
  tick, and the ratio of episode wall time to the physics + render time inside it.

Targets on a 2-core machine: overhead <= 10% of episode wall time; default render <= 40 ms.

    python bench/bench_sim.py [--seeds 0 1] [--families place fetch memory]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pybullet_data

from mnemobot.agent.episode import RunConfig, run_episode
from mnemobot.perception.types import CameraIntrinsics
from mnemobot.sim.env import EnvConfig, HouseholdEnv


@dataclass
class Stopwatch:
    """Accumulates the wall time spent inside one wrapped callable."""

    seconds: float = 0.0
    calls: int = 0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        return timed


def physics_rate(env: HouseholdEnv, steps: int = 2400) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        env.backend.step()
    return steps / (time.perf_counter() - t0)


def render_ms(env: HouseholdEnv, width: int, height: int, frames: int = 20) -> float:
    k = CameraIntrinsics.from_fov(width, height, env.backend.config.fov_deg)
    pose = env.robot.camera_pose()
    env.backend.render(pose, k)  # warm-up
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        env.backend.render(pose, k)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def stock_panda_render_ms(env: HouseholdEnv, width: int, height: int) -> float:
    """Baseline: the same view with pybullet_data's stock Panda (full visual meshes) added."""
    pb = env.backend.client
    base = env.robot.base_pose3d() @ env.robot.spec.arm_mount
    hidden = env.robot.arm_uid
    stock = pb.loadURDF(
        pybullet_data.getDataPath() + "/franka_panda/panda.urdf", base.position.tolist(),
        base.quaternion.tolist(), useFixedBase=True,
    )
    pb.resetBasePositionAndOrientation(hidden, [0, 0, -10], [0, 0, 0, 1])
    for j, q in enumerate(env.robot.read().arm_q):
        pb.resetJointState(stock, j, float(q))
    try:
        return render_ms(env, width, height)
    finally:
        pb.removeBody(stock)
        env.robot.reset()


def episode_split(env: HouseholdEnv, family: str, seed: int) -> dict[str, float]:
    """Run one episode with stopwatches around physics, rendering, the simulated robot's
    bookkeeping, perception + memory (frame -> objects -> scene graph -> store; the body facts
    fed to memory) and the brainstem; the rest is skills + routing."""
    from mnemobot.control.controllers import Controller
    from mnemobot.memory.memory import Memory

    watches = {k: Stopwatch() for k in ("physics", "render", "robot", "perception", "controller")}
    patches = [
        (env.backend, "step", "physics"),
        (env.backend, "render", "render"),
        (env.robot, "step", "robot"),
        (Memory, "update", "perception"),
        (Memory, "set_body", "perception"),
        (Controller, "command", "controller"),
    ]
    originals = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, key in patches:
        setattr(obj, name, watches[key].wrap(getattr(obj, name)))
    try:
        s = run_episode(RunConfig(task_id=family, seed=seed), env=env)
    finally:
        for obj, name, fn in originals:
            setattr(obj, name, fn)
    w = {k: v.seconds for k, v in watches.items()}
    robot_only = w["robot"] - w["physics"]  # SimRobot.step includes the physics steps
    perception = w["perception"]
    overhead = s.wall_s - w["physics"] - w["render"] - robot_only - perception  # controller + skills + routing
    return {
        "success": float(s.success),
        "ticks": s.steps,
        "sim_s": s.sim_s,
        "wall_s": s.wall_s,
        "physics_s": w["physics"],
        "render_s": w["render"],
        "frames": watches["render"].calls,
        "robot_s": robot_only,
        "perception_s": perception,
        "controller_s": w["controller"],
        "overhead_s": overhead,
        "overhead_ms_per_tick": 1000 * overhead / max(1, s.steps),
        "overhead_frac": overhead / s.wall_s,
        "wall_over_physics_render": s.wall_s / (w["physics"] + w["render"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--families", nargs="+", default=["place", "fetch", "memory", "recall"])
    args = ap.parse_args()

    env = HouseholdEnv(EnvConfig(task="place"))
    env.reset(seed=0)
    print(f"physics: {physics_rate(env):,.0f} steps/s (240 Hz physics: {physics_rate(env) / 240:.1f}x real time)")
    env.reset(seed=0)
    for w, h in ((320, 240), (640, 480)):
        light, stock = render_ms(env, w, h), stock_panda_render_ms(env, w, h)
        print(f"render {w}x{h}: {light:.1f} ms/frame (baseline, stock Panda meshes: {stock:.1f} ms; ratio {light / stock:.2f})")
    env.close()

    rows = []
    print("\nepisodes (planner agent, camera 5 Hz):")
    print(f"{'family':8s} {'seed':>4s} {'ok':>3s} {'ticks':>6s} {'sim s':>6s} {'wall s':>7s} {'phys s':>7s} "
          f"{'rend s':>7s} {'robot s':>7s} {'perc s':>7s} {'ctrl s':>7s} {'ovh s':>7s} {'ms/tick':>7s} {'ovh %':>6s} "
          f"{'wall/(p+r)':>10s}")
    for family in args.families:
        env = HouseholdEnv(EnvConfig(task=family))
        for seed in args.seeds:
            r = episode_split(env, family, seed)
            rows.append(r)
            print(f"{family:8s} {seed:4d} {int(r['success']):3d} {r['ticks']:6d} {r['sim_s']:6.1f} {r['wall_s']:7.2f} "
                  f"{r['physics_s']:7.2f} {r['render_s']:7.2f} {r['robot_s']:7.2f} {r['perception_s']:7.2f} "
                  f"{r['controller_s']:7.2f} {r['overhead_s']:7.2f} {r['overhead_ms_per_tick']:7.2f} "
                  f"{100 * r['overhead_frac']:5.1f}% {r['wall_over_physics_render']:10.3f}")
        env.close()
    def total(key: str) -> float:
        return sum(r[key] for r in rows)

    wall, other, ticks = total("wall_s"), total("overhead_s"), total("ticks")
    print(f"\ntotal over {len(rows)} episodes ({int(total('success'))} succeeded):")
    print(f"  controller + skills + orchestrator: {100 * other / wall:.1f}% of wall (target <= 10%), "
          f"{1000 * other / ticks:.2f} ms per control tick (brainstem alone {1000 * total('controller_s') / ticks:.2f} ms)")
    print(f"  perception + memory (frame -> objects -> scene graph): {100 * total('perception_s') / wall:.1f}% of wall; "
          f"simulated robot bookkeeping: {100 * total('robot_s') / wall:.1f}%")
    print(f"  wall / (physics + render) = {wall / (total('physics_s') + total('render_s')):.3f}")
    print(f"render median over episodes: {1000 * np.median([r['render_s'] / max(1, r['frames']) for r in rows]):.1f} ms/frame")


if __name__ == "__main__":
    main()
