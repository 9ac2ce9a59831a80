"""One simulated episode end to end: build the world, plan, act, score, summarise.

Usage::

    summary = run_episode(RunConfig(task_id="fetch", seed=3), progress=print)
    print(summary.render())
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mnemobot.agent.errors import UserError
from mnemobot.agent.orchestrator import Orchestrator, RunOutcome
from mnemobot.agent.planner import (
    Goal,
    InstructionError,
    PlanningContext,
    ScriptedPlanner,
    SkillCall,
    object_vocabulary,
    parse_instruction,
)
from mnemobot.agent.scoring import goals_satisfied
from mnemobot.control.controllers import Controller
from mnemobot.control.executor import ExecutorConfig, SkillExecutor
from mnemobot.control.skills import SkillContext
from mnemobot.memory.memory import Memory, MemoryConfig
from mnemobot.memory.types import ObjectLocator
from mnemobot.memory.visible import VisibleObjects
from mnemobot.perception.sensor import SensorError, SensorModel, sensor_model
from mnemobot.perception.types import Observation

__all__ = ["EpisodeSummary", "RunConfig", "describe_world", "make_memory", "resolve_sensor", "run_episode"]


@dataclass
class RunConfig:
    """One episode. ``agent``: ``planner`` (perception-driven) or ``expert`` (ground truth)."""

    task_id: str = "fetch"
    task_text: str | None = None
    task_objects: tuple[str, ...] = ()
    """The objects a generated ``task_text`` names (its generator knows them). The family's own task
    names its object; beyond those, an instruction may name only objects memory has seen."""
    seed: int = 0
    gui: bool = False
    steps_limit: int | None = None
    agent: str = "planner"
    width: int = 320
    height: int = 240
    perceive_hz: float = 5.0
    max_replans: int = 1
    memory: bool = True
    """``False``: the no-memory ablation (only the current frame is known)."""
    memory_db: str | None = None
    """SQLite file that carries memory across episodes and restarts (None: this episode only)."""
    memory_policy: str = "lru"
    short_term_capacity: int = 32
    record_trace: bool = False
    record: str | None = None
    """Directory to write the episode to as a rosbag2 (MCAP) bag; it must not exist."""
    planner: str = "symbolic"
    """``symbolic`` (default, embedded), ``rule``, ``hf`` (local model) or ``openai`` (endpoint)."""
    mode: str = "tree"
    """``tree``: plan once, walk the plan tree; ``per-step``: the planner before every skill."""
    inject: str = "none"
    """Anomaly injection for evaluation: ``none``, ``move``, ``remove`` or ``grasp``."""
    model: str | None = None
    base_url: str | None = None
    planner_options: dict[str, object] = field(default_factory=dict)
    sensor_profile: str | SensorModel = "ideal"
    """What the robot perceives: ``ideal`` (exact render), ``kinect``, ``realsense``, ``heavy`` or a
    FILE.yaml (:mod:`mnemobot.perception.sensor`); memory derives its thresholds from it."""
    policy: str = "skills"
    """Action expert: ``skills`` (the planner's skills) or ``learned`` (the policy of ``checkpoint``
    does the whole task as one sub-task, conditioned on this run's memory)."""
    checkpoint: str | None = None
    policy_temperature: float = 1.0
    """Scale of the noise the learned policy's flow starts from (1: its trained distribution;
    0: from the noise's mean, one chunk per observation)."""
    policy_replan: int | None = None
    """Keyframe policies: keyframes executed per call (default: the checkpoint's n_action_steps)."""


@dataclass
class EpisodeSummary:
    """The run summary printed by ``mnemobot run`` and written by ``--summary-json``."""

    task: str
    task_id: str
    seed: int
    agent: str
    success: bool
    steps: int
    planner_calls: int
    sim_s: float
    wall_s: float
    skills_executed: int
    stop_reason: str
    skills: list[dict[str, object]] = field(default_factory=list)
    planner: str = "symbolic"
    mode: str = "tree"
    cost: dict[str, object] = field(default_factory=dict)
    decisions: list[dict[str, object]] = field(default_factory=list)
    anomalies: list[dict[str, object]] = field(default_factory=list)
    injected: list[dict[str, object]] = field(default_factory=list)
    record: str | None = None
    recorded_messages: int = 0
    memory: str = "off"
    memory_questions: int = 0
    search_ticks: int = 0
    memory_stats: dict[str, object] = field(default_factory=dict)
    sensor: str = "ideal"
    milestones: list[str] = field(default_factory=list)
    """The task's milestones (``kind place``) in order, and how many the episode passed:
    ``milestones_reached``; a failed memory-dependent episode says how far it got."""
    milestones_reached: int = 0
    trace: list[dict[str, object]] = field(default_factory=list, repr=False)
    """Short-term memory puts and planner questions, when ``RunConfig.record_trace`` is set."""

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        if not d["trace"]:
            del d["trace"]
        d["sim_s"], d["wall_s"] = round(self.sim_s, 3), round(self.wall_s, 3)
        return d

    def render(self) -> str:
        failed = [s for s in self.skills if not s["success"]]
        lines = [
            "",
            f"task        : {self.task}",
            f"task id     : {self.task_id} (seed {self.seed}, agent {self.agent})",
            f"result      : {'SUCCESS' if self.success else 'FAILURE'}"
            + ("" if self.success or not self.stop_reason else f" ({self.stop_reason})"),
            f"skills      : {self.skills_executed} executed, {len(failed)} failed",
            *([f"milestones  : {self.milestones_reached} of {len(self.milestones)} passed "
               f"({', '.join(self.milestones)})"] if self.milestones else []),
            f"steps       : {self.steps} control ticks",
            f"planner     : {self.planner} ({self.mode}), {self.planner_calls} call(s)"
            + (f", {self.cost.get('prompt_tokens', 0)}+{self.cost.get('completion_tokens', 0)} tokens"
               if self.cost.get("prompt_tokens") else ""),
            f"memory      : {self.memory}" + (
                f" ({self.memory_stats.get('objects', 0)} objects, {self.memory_questions} questions, "
                f"{self.search_ticks} ticks searching)" if self.memory != "off" else ""),
            f"sensor      : {self.sensor}",
            f"time        : {self.sim_s:.1f} s simulated, {self.wall_s:.1f} s wall",
        ]
        if self.anomalies:
            rec = sum(1 for a in self.anomalies if a.get("outcome") == "recovered")
            lines.append(f"anomalies   : {len(self.anomalies)} ({rec} recovered locally): "
                         + ", ".join(str(a.get("kind")) for a in self.anomalies))
        if self.record:
            lines.append(f"recorded    : {self.record} ({self.recorded_messages} messages)")
        return "\n".join(lines)


def _make_env(cfg: RunConfig):  # noqa: ANN202 - HouseholdEnv, imported lazily (sim extra)
    from mnemobot.sim.env import EnvConfig, HouseholdEnv
    from mnemobot.sim.tasks import TASK_FAMILIES

    if cfg.task_id not in TASK_FAMILIES:
        raise UserError(f"unknown task id {cfg.task_id!r}; available: {', '.join(sorted(TASK_FAMILIES))}")
    return HouseholdEnv(EnvConfig(task=cfg.task_id, width=cfg.width, height=cfg.height, gui=cfg.gui,
                                  sensor_profile=resolve_sensor(cfg.sensor_profile)))


def resolve_sensor(profile: str | SensorModel) -> SensorModel:
    """The sensor model of a profile name or FILE.yaml; an unknown name or a bad file raises
    :class:`UserError` naming the problem."""
    try:
        return sensor_model(profile)
    except SensorError as e:
        raise UserError(str(e)) from None


def _static_labels(env) -> frozenset[str]:  # noqa: ANN001
    """Furniture and place names of the map: not objects for memory."""
    layout = env.config.layout
    return frozenset({f.name for f in layout.furniture} | set(layout.place_names))


def make_memory(cfg: RunConfig, env) -> Memory:  # noqa: ANN001
    """The agent's memory for this episode (persistent when ``cfg.memory_db`` is set)."""
    from mnemobot.memory.graph import SceneGraphConfig
    from mnemobot.memory.short_term import ShortTermConfig

    try:
        return Memory(
            MemoryConfig(
                db_path=cfg.memory_db,
                graph=SceneGraphConfig(static_labels=_static_labels(env)),
                short_term=ShortTermConfig(capacity=cfg.short_term_capacity, policy=cfg.memory_policy),
                record_trace=cfg.record_trace,
                sensor=env.sensor_model,
            ),
            site=env.site_map,
        )
    except ValueError as e:  # unknown policy, bad capacity
        raise UserError(str(e)) from None
    except Exception as e:
        from mnemobot.memory.store import StoreError

        if isinstance(e, StoreError):  # corrupt, foreign or newer database: named, left intact
            raise UserError(str(e)) from None
        raise


def _locator(cfg: RunConfig, env) -> ObjectLocator:  # noqa: ANN001
    if cfg.agent == "expert":
        from mnemobot.sim.expert import GroundTruthLocator

        return GroundTruthLocator(env.backend, env.site_map)
    if cfg.agent == "planner":
        return make_memory(cfg, env) if cfg.memory else VisibleObjects(skip_labels=_static_labels(env))
    raise UserError(f"unknown agent {cfg.agent!r}; use 'planner' or 'expert'")


def _build_context(env, locator: ObjectLocator,  # noqa: ANN001
                   on_frame: Callable[[Observation, SkillContext], None] | None = None) -> SkillContext:
    robot = env.robot
    ctx = SkillContext(
        robot=robot,
        controller=Controller(robot.spec),
        site=env.site_map,
        locator=locator,
        perceive=lambda: None,
    )

    body = getattr(locator, "set_body", None)

    def perceive() -> Observation:
        obs = robot.observe()
        if body is not None:
            body(ctx.held_in_hand(), ctx.opened, ctx.at_place, t=obs.timestamp, hand=ctx.hand_position())
        if on_frame is not None:
            on_frame(obs, ctx)
        locator.update(obs, place=ctx.at_place)
        return obs

    ctx.perceive = perceive
    return ctx


def _open_recorder(cfg: RunConfig, env, instruction: str):  # noqa: ANN001, ANN202 - BagRecorder
    """Start the bag (``--record DIR``): latched map, labels of furniture, the instruction."""
    from mnemobot.ros2.record import BagRecorder, RecordError

    spec = env.robot.spec
    names = [*spec.arm_joints, "panda_finger_joint1", "panda_finger_joint2", "head_pan_joint", "head_tilt_joint"]
    try:
        rec = BagRecorder(cfg.record, joint_names=names).open()
    except RecordError as e:
        raise UserError(str(e)) from None
    rec.latched(site_map=env.site_map.to_dict(), static_labels=sorted(_static_labels(env)), instruction=instruction,
                sensor=env.sensor_model.to_dict())
    return rec


def _wire_recorder(rec, executor: SkillExecutor, memory: Memory | None, robot) -> Callable[..., None]:  # noqa: ANN001
    """Connect the recorder to the organs; returns the orchestrator's event sink."""
    ctx = executor.ctx

    def on_tick(cmd, state) -> None:  # noqa: ANN001
        rec.state(*robot.perceived_state(state))  # the robot's belief, as on a real robot's /tf
        rec.command(float(state.t), cmd)

    executor.on_tick.append(on_tick)
    if memory is not None:
        from mnemobot.memory.ops import json_safe

        rec.memory_snapshot(0.0, memory.graph.seq, json_safe(memory.graph.to_state()))
        memory.op_sinks.append(lambda ops: rec.memory_ops(float(ctx.state.t), ops))
    return lambda kind, t, data: rec.event(kind, t, data)


RUN_PLANNER_OPTIONS = ("candidates", "retries", "temperature", "max_tokens", "seed", "images", "system_role",
                       "timeout_s")
"""Model planner options a run may set (``RunConfig.planner_options``, ``--planner-option``)."""


def _make_planner(cfg: RunConfig, ctx: PlanningContext, say: Callable[[str], None] | None):  # noqa: ANN202
    """The configured planner; a model planner's fall-back warning goes to ``say`` (the progress
    output), or to the log when there is none (quiet runs), never to both."""
    from mnemobot.agent.orchestrator import MODES
    from mnemobot.agent.planner import PlannerConfig, make_planner

    if cfg.mode not in MODES:
        raise UserError(f"unknown mode {cfg.mode!r}; use one of {', '.join(MODES)}")
    if cfg.planner in ("hf", "vlm", "openai"):
        from mnemobot.agent.llm_planner import make_model_planner

        unknown = sorted(set(cfg.planner_options) - set(RUN_PLANNER_OPTIONS))
        if unknown:
            raise UserError(f"unknown planner option(s): {', '.join(unknown)}; known: {', '.join(RUN_PLANNER_OPTIONS)}")
        options: dict[str, object] = dict(cfg.planner_options)
        if say is not None:
            options["warn"] = lambda msg: say(f"   warning: {msg}")
        return make_model_planner(cfg.planner, model=cfg.model, base_url=cfg.base_url, **options)
    if cfg.planner_options:
        raise UserError(f"planner options ({', '.join(sorted(cfg.planner_options))}) are for the hf, vlm and "
                        f"openai planners, not {cfg.planner!r}")
    return make_planner(PlannerConfig(type=cfg.planner))


def _injector(cfg: RunConfig, env):  # noqa: ANN001, ANN202 - AnomalyInjector | None
    if cfg.inject in ("none", "", None):
        return None
    from mnemobot.sim.inject import INJECTIONS, AnomalyInjector, InjectionConfig

    if cfg.inject not in INJECTIONS:
        raise UserError(f"unknown injection {cfg.inject!r}; use one of {', '.join(INJECTIONS)}")
    # a moved object must not land where the task wants it (that would complete the task by itself)
    avoid = (env.task.receptacle,) if cfg.task_text is None else ()
    return AnomalyInjector(env.backend, env.robot, InjectionConfig(kind=cfg.inject, seed=cfg.seed), avoid=avoid)


def _expert_script(cfg: RunConfig, env) -> list[SkillCall] | None:  # noqa: ANN001
    """The scripted expert's plan for a generated task of a family that has one (the workcell's
    memory-dependent families), written from ground truth right after the reset; else None."""
    if cfg.agent != "expert" or cfg.task_text is not None:
        return None
    from mnemobot.sim.expert import expert_script

    script = expert_script(cfg.task_id, env.backend, env.task)
    return None if script is None else [SkillCall(skill, args) for skill, args in script]


def _learned_skill(cfg: RunConfig):  # noqa: ANN202 - SkillSpec
    """The learned policy of ``cfg.checkpoint`` as the skill ``act`` (``--policy learned``)."""
    if cfg.policy != "learned":
        if cfg.checkpoint is not None:
            raise UserError("--checkpoint is for --policy learned")
        return None
    if cfg.agent != "planner":
        raise UserError("--policy learned runs with the planner agent, not the expert")
    if cfg.checkpoint is None:
        raise UserError("--policy learned needs --checkpoint CKPT (written by 'mnemobot train')")
    if cfg.task_text is not None:
        raise UserError("--policy learned runs a task family (--task-id), not free text")
    if not 0.0 <= cfg.policy_temperature <= 2.0:
        raise UserError(f"--policy-temperature must be in 0..2, got {cfg.policy_temperature}")
    if cfg.policy_replan is not None and cfg.policy_replan < 1:
        raise UserError(f"--policy-replan must be >= 1, got {cfg.policy_replan}")
    from mnemobot.policy.skill import learned_skill
    from mnemobot.policy.train import CheckpointError, load_policy

    try:
        policy, meta = load_policy(cfg.checkpoint, task=cfg.task_id)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    data = meta.get("dataset", {})
    fps = float(data.get("fps", 10.0))
    mean_s = float(data.get("frames", 0)) / max(int(data.get("episodes", 1)), 1) / fps
    # one action of a chunk per `action_stride` recorded frames; keyframes are reached at the
    # skill's own pace, which may be slower than the expert's
    slack = 2.0 if policy.config.action_mode == "keyframes" else 1.5
    return learned_skill(policy, fps=fps / policy.config.action_stride, max_s=max(30.0, slack * mean_s), seed=cfg.seed,
                         temperature=cfg.policy_temperature, replan=cfg.policy_replan)


def _parse(cfg: RunConfig, instruction: str, pctx: PlanningContext) -> list[Goal]:
    """Parse the instruction; a generated task the planner cannot read says which agent can run it."""
    try:
        return parse_instruction(instruction, pctx)
    except InstructionError as e:
        from mnemobot.sim.expert import EXPERT_SCRIPTS

        if cfg.task_text is None and cfg.task_id in EXPERT_SCRIPTS:
            raise InstructionError(f"{e} (the {cfg.task_id!r} family runs with the scripted expert, --agent expert, "
                                   "or a learned policy, --policy learned --checkpoint CKPT)") from None
        raise


def _score(env, instruction: str, goals: list[Goal], custom: bool, initial: dict[str, str]) -> bool:  # noqa: ANN001
    """Task success on simulator ground truth (scoring only)."""
    if not custom:
        return bool(env.task.success(env.backend))
    return goals_satisfied(goals, env.backend, env.site_map, env.robot.read(), initial)


def run_episode(cfg: RunConfig, progress: Callable[[str], None] | None = None, env=None,  # noqa: ANN001
                frame_hook: Callable[[Observation, SkillContext], None] | None = None,
                event_hook: Callable[[str, float, dict[str, object]], None] | None = None,
                tick_hook: Callable[[Any, Any, SkillContext], None] | None = None) -> EpisodeSummary:
    """Run one episode; bad input raises :class:`UserError`.

    ``event_hook(kind, robot time, data)`` receives the orchestrator's events (plan, skill_start,
    skill, anomaly, decision) as they happen (a suite generator changes the world behind the
    robot's back on one).

    ``frame_hook(observation, skill context)`` sees every camera frame before memory does (task
    suite generators use it to log what the camera saw); with it, the expert perceives too.

    ``tick_hook(command, state, skill context)`` sees every control tick's command and the state
    read back (demonstration recording).

    ``env``: a :class:`~mnemobot.sim.env.HouseholdEnv` to reuse (its task family must be
    ``cfg.task_id``); it is reset with ``cfg.seed`` and left open. Otherwise one is built and
    closed.
    """
    say = progress or (lambda _m: None)
    learned = _learned_skill(cfg)  # bad checkpoints are refused before the world is built
    owned = env is None
    env = (_make_env(cfg) if owned else env).unwrapped
    stack = contextlib.ExitStack()
    if learned is not None:
        from mnemobot.policy.skill import registered

        stack.enter_context(registered(learned))
    try:
        env.reset(seed=cfg.seed)
        instruction = cfg.task_text if cfg.task_text is not None else env.task.instruction
        initial = {lb: (env.backend.place_of(lb) or ("",))[0] for lb in env.backend.object_labels()}  # scoring
        locator = _locator(cfg, env)
        memory = locator if isinstance(locator, Memory) else None
        try:
            named = tuple(o for o in (env.task.object,) if o) if cfg.task_text is None else cfg.task_objects
            pctx = PlanningContext(env.site_map, vocabulary=object_vocabulary(named, locator.known_labels()))
            script = _expert_script(cfg, env)
            if learned is not None:  # the policy does the task as one sub-task
                script = [SkillCall(learned.name, {"task": instruction})]
            if script is None:
                goals = _parse(cfg, instruction, pctx)  # fail fast on bad text, before moving
                planner = _make_planner(cfg, pctx, progress)
            else:  # scored by the task's milestones, not by parsed goals
                goals, planner = [], ScriptedPlanner(script)
            recorder = _open_recorder(cfg, env, instruction) if cfg.record else None
        except BaseException:
            if memory is not None:
                memory.close()
            raise

        def on_frame(obs: Observation, c: SkillContext) -> None:
            if recorder is not None:
                recorder.frame(obs, body={"held": c.held_in_hand(), "opened": dict(c.opened), "at_place": c.at_place,
                                          "hand": c.hand_position()})
                if memory is not None:
                    recorder.scene_graph(float(obs.timestamp), memory.graph)
            if frame_hook is not None:
                frame_hook(obs, c)

        ctx = _build_context(env, locator, on_frame)
        watched = recorder is not None or frame_hook is not None
        perceive_hz = cfg.perceive_hz if cfg.agent != "expert" or watched else 0.0
        executor = SkillExecutor(ctx, ExecutorConfig(perceive_hz=perceive_hz, step_budget=cfg.steps_limit))
        sinks = [_wire_recorder(recorder, executor, memory, env.robot)] if recorder is not None else []
        if tick_hook is not None:
            executor.on_tick.append(lambda cmd, state: tick_hook(cmd, state, ctx))
        injector = _injector(cfg, env)
        if injector is not None:
            def inject(kind: str, t: float, data: dict[str, object]) -> None:
                if kind == "skill_start":
                    rec = injector.before_skill(str(data["skill"]), dict(data["args"]), t)  # type: ignore[arg-type]
                    if rec is not None:
                        say(f"   [injected] {rec['kind']}: {rec['detail']}")
            sinks.append(inject)
        if memory is not None:
            def remember(kind: str, t: float, data: dict[str, object]) -> None:
                if kind in ("anomaly", "decision"):
                    memory.log_event(kind, data, object=(data.get("args") or {}).get("object"), t=t)  # type: ignore[union-attr]
            sinks.append(remember)
        if event_hook is not None:
            sinks.append(event_hook)

        def on_event(kind: str, t: float, data: dict[str, object]) -> None:
            for sink in sinks:
                sink(kind, t, data)

        say(f"task: {instruction}")
        if memory is not None:
            memory.begin_episode({"task": instruction, "task_id": cfg.task_id, "seed": cfg.seed})
            memory.log_event("instruction", {"text": instruction}, t=0.0)
            if memory.graph.by_layer("object"):
                say(f"memory: {len(memory.graph.by_layer('object'))} objects remembered from earlier episodes")
        wall0 = time.perf_counter()
        max_replans = cfg.max_replans if script is None else 0  # a script is not re-planned
        orchestrator = Orchestrator(planner, executor, pctx, say, max_replans, memory=memory,
                                    on_event=on_event, mode=cfg.mode if script is None else "tree")
        try:
            executor.start()
            sim0 = ctx.state.t
            outcome: RunOutcome = orchestrator.run(instruction)
            if memory is not None or watched:
                ctx.perceive()  # a last look: memory records what the final skill changed (a release)
            if recorder is not None and memory is not None:
                recorder.scene_graph(float(ctx.state.t), memory.graph, force=True)
        except BaseException:
            if memory is not None:
                memory.close()
            raise
        finally:
            if recorder is not None:
                recorder.close()  # metadata and MCAP index are written on every exit path
        wall = time.perf_counter() - wall0
        success = _score(env, instruction, goals, cfg.task_text is not None, initial)
        task = getattr(env, "task", None) if cfg.task_text is None else None
        if memory is not None:
            for r in outcome.results:
                memory.log_event("skill", r.to_dict(), object=r.args.get("object"),
                                 place=r.args.get("place") or r.args.get("receptacle") or r.args.get("container"))
            memory.end_episode({"success": success, "steps": executor.ticks})
            memory.close()
        return EpisodeSummary(
            task=instruction,
            task_id=cfg.task_id if cfg.task_text is None else "custom",
            seed=cfg.seed,
            agent=cfg.agent,
            success=success,
            steps=executor.ticks,
            planner_calls=outcome.planner_calls,
            sim_s=ctx.state.t - sim0,
            wall_s=wall,
            skills_executed=len(outcome.results),
            stop_reason=outcome.stop_reason or ("" if success else "goal not reached"),
            skills=[r.to_dict() for r in outcome.results],
            planner=getattr(planner, "name", cfg.planner),
            mode=cfg.mode,
            cost=outcome.cost,
            decisions=[d.to_dict() for d in orchestrator.ledger.decisions],
            anomalies=[a.to_dict() for a in outcome.anomalies],
            injected=list(injector.injected) if injector is not None else [],
            memory="on" if memory is not None else "off",
            memory_questions=orchestrator.memory_questions,
            search_ticks=sum(r.ticks for r in outcome.results if r.skill == "find"),
            memory_stats=memory.stats() if memory is not None else {},
            sensor=env.sensor_model.name,
            milestones=[f"{m.kind} {m.place or m.room or m.object}".strip() for m in getattr(task, "milestones", ())],
            milestones_reached=int(getattr(getattr(task, "progress", None), "reached", 0)),
            trace=memory.trace if memory is not None else [],
            record=cfg.record,
            recorded_messages=recorder.messages if recorder is not None else 0,
        )
    finally:
        stack.close()
        if owned:
            env.close()


def describe_world() -> str:
    """Task families, places and objects of the default household, and the workcell's places."""
    from mnemobot.sim.layout import DEFAULT_LAYOUT
    from mnemobot.sim.tasks import FAMILY_LAYOUT, TASK_FAMILIES
    from mnemobot.sim.workcell import WORKCELL_LAYOUT

    site = DEFAULT_LAYOUT.site_map()
    lines = ["task families (--task-id):"]
    lines += [f"  {name:14s} {(fam.__doc__ or '').strip().splitlines()[0]}" for name, fam in sorted(TASK_FAMILIES.items())]
    lines.append("rooms: " + ", ".join(sorted(site.rooms)))
    lines.append("places:")
    lines += [f"  {p.words:20s} ({p.label}, {p.room}, {p.relation})" for p in site.places.values()]
    lines.append("objects: " + ", ".join(o.label.replace("_", " ") for o in DEFAULT_LAYOUT.objects))
    lines.append(f"workcell ({', '.join(sorted(FAMILY_LAYOUT))}; --agent expert, or --policy learned "
                 "--checkpoint CKPT):")
    lines.append("  places: " + ", ".join(p.words for p in WORKCELL_LAYOUT.site_map().places.values()))
    return "\n".join(lines)
