"""The ``orchestrator`` node: the ``ExecuteTask`` action server (planner, skills, brainstem).

Run::

    python -m mnemobot.ros2.nodes.orchestrator_node --ros-args -p planner:=symbolic
    ros2 action send_goal /mnemobot/execute_task mnemobot_interfaces/action/ExecuteTask \\
        "{instruction: 'bring the jenga to the kitchen table'}" --feedback
    mnemobot ros task "bring the jenga to the kitchen table"      # the same, without ros2 CLI

It runs the same organs as ``mnemobot run`` (:class:`~mnemobot.agent.orchestrator.Orchestrator`,
the scripted skills through :class:`~mnemobot.control.executor.SkillExecutor` and the brainstem's
:class:`~mnemobot.control.controllers.Controller`), with the robot reached over ROS 2
(:class:`~mnemobot.ros2.ros_robot.RosRobot`, through ``robot_bridge``) and memory read from the
``memory`` node (:class:`~mnemobot.ros2.memory_mirror.MemoryMirror`: the node's scene graph,
followed op by op; the body's facts go back to it). Nothing in the organs knows it runs under ROS.

Goals. A goal is **rejected** (with the reason on ``rejections_topic``, latched JSON
``{"goal_id", "instruction", "reason"}``, since a ROS 2 goal response carries none) when another
task is running, when no site map came, or when the instruction cannot be parsed or names an object
or place the robot cannot know (objects: ``object_classes``, the site map's ``object_classes`` (a
detector's class list) and what memory holds). An accepted goal sends one **feedback** message per
skill started and finished and per re-plan (skill, event, progress, anomalies so far). **Cancel**
stops at the next control tick: the base is stopped and the arm held where it is measured, then the
goal ends ``canceled``. Any other end (skill failure, robot or memory silent past its timeout)
holds the robot and aborts the goal with the reason in ``stop_reason``; the node stays up for the
next goal. If this process dies mid-motion, ``robot_bridge``'s watchdog stops the base and holds
the arm after ``watchdog_s``.

The result's ``success`` is the task scored on simulator truth when ``task_id`` is given and the
simulator's ``score_service`` answers (scoring only), else whether the plan's goals hold.
``summary_json`` is ``mnemobot run``'s summary (skills, planner calls, tokens, ticks, times,
anomalies) plus how memory was followed.

Parameters: ``planner`` (symbolic | rule | hf | openai), ``model`` (a local path for hf, a model
name for openai), ``base_url`` (openai-compatible endpoint), ``mode`` (tree | per-step),
``max_replans``, ``perceive_hz`` (frames memory must have integrated per second of robot time while
skills run), ``steps_limit`` (control ticks per task, 0 = none), ``robot_timeout_s``,
``ready_timeout_s``, ``memory_timeout_s``, ``frame_age_s``, ``object_classes`` (comma list),
``score_service`` ('' = none), ``site_map_topic``, ``site_map_file``, ``action_name``,
``rejections_topic``, the robot's ``joint_states_topic``, ``odom_topic``, ``world_frame`` (the command
topics are ``robot_bridge``'s), and the memory node's ``memory_ops_topic``, ``sync_topic``,
``body_topic``, ``query_service``.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from typing import Any

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import String

from mnemobot.ros2.nodes.common import NodeConfigError, declare, latched_qos

__all__ = ["OrchestratorNode", "main"]

ACTION_NAME = "/mnemobot/execute_task"
REJECTIONS_TOPIC = "/mnemobot/execute_task/rejected"
_GOAL_ID: contextvars.ContextVar[str] = contextvars.ContextVar("goal_id", default="")


class _Cancelled(Exception):
    """Raised from a control tick when the goal's cancel was requested (or the node shuts down)."""


class _ReasonedActionServer(ActionServer):
    """An action server whose goal callback can name the goal id (to publish why it refused it)."""

    async def _execute_goal_request(self, request_header_and_message: Any) -> None:  # rclpy internal hook
        token = _GOAL_ID.set(bytes(request_header_and_message[1].goal_id.uuid).hex())
        try:
            await super()._execute_goal_request(request_header_and_message)
        finally:
            _GOAL_ID.reset(token)


class OrchestratorNode(Node):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__("orchestrator")
        d = declare
        self.p = p = {
            "planner": d(self, "planner", "symbolic", "symbolic | rule | hf | openai"),
            "model": d(self, "model", "", "local model path (hf) or model name (openai)"),
            "base_url": d(self, "base_url", "", "OpenAI-compatible endpoint (openai planner)"),
            "mode": d(self, "mode", "tree", "tree (plan once) | per-step (planner before every skill)"),
            "max_replans": d(self, "max_replans", 1, "re-plans allowed per task"),
            "perceive_hz": d(self, "perceive_hz", 5.0, "memory frames per second of robot time while skills run"),
            "steps_limit": d(self, "steps_limit", 0, "control ticks per task (0 = no limit)"),
            "robot_timeout_s": d(self, "robot_timeout_s", 5.0, "wall seconds to wait for the robot's next state"),
            "ready_timeout_s": d(self, "ready_timeout_s", 30.0, "wall seconds a task waits for robot and memory"),
            "memory_timeout_s": d(self, "memory_timeout_s", 10.0,
                                  "wall seconds to wait for the memory node (a restart included)"),
            "frame_age_s": d(self, "frame_age_s", 0.3,
                             "a skill's perceive needs a frame at most this much older than the robot's time"),
            "object_classes": d(self, "object_classes", "",
                                "comma list of the object labels the detector can name (with the site map's)"),
            "score_service": d(self, "score_service", "/mnemobot/sim/score",
                               "std_srvs/Trigger scoring the task on simulator truth ('' = none)"),
            "site_map_topic": d(self, "site_map_topic", "/mnemobot/site_map", "latched site map (std_msgs/String)"),
            "site_map_file": d(self, "site_map_file", "",
                               "a site map file (JSON or YAML: mnemobot's site map format, or {site_map, "
                               "static_labels, object_classes}); published latched on site_map_topic ('' = "
                               "take the one the robot or simulator publishes)"),
            "action_name": d(self, "action_name", ACTION_NAME, "ExecuteTask action name"),
            "rejections_topic": d(self, "rejections_topic", REJECTIONS_TOPIC, "why goals were rejected (latched)"),
            "memory_ops_topic": d(self, "memory_ops_topic", "/mnemobot/memory_ops", "memory node's ops"),
            "sync_topic": d(self, "sync_topic", "/mnemobot/memory_sync", "memory node's sync"),
            "body_topic": d(self, "body_topic", "/mnemobot/body", "body facts to the memory node"),
            "query_service": d(self, "query_service", "/mnemobot/query_memory", "memory node's QueryMemory"),
            "joint_states_topic": d(self, "joint_states_topic", "/joint_states", "the robot's joint states"),
            "odom_topic": d(self, "odom_topic", "/odom", "the robot's odometry (nav_msgs/Odometry)"),
            "world_frame": d(self, "world_frame", "map", "the fixed frame (TF world -> odom puts odometry in it)"),
        }
        from mnemobot.agent.orchestrator import MODES
        from mnemobot.agent.planner import PLANNERS

        if p["mode"] not in MODES:
            raise NodeConfigError(f"orchestrator: mode must be one of {', '.join(MODES)}, got {p['mode']!r}")
        if p["planner"] not in ("symbolic", *PLANNERS, "hf", "vlm", "openai"):
            raise NodeConfigError(f"orchestrator: unknown planner {p['planner']!r}; use symbolic, rule, hf or openai")
        if p["max_replans"] < 0 or p["perceive_hz"] <= 0 or p["steps_limit"] < 0 or min(
                p["robot_timeout_s"], p["ready_timeout_s"], p["memory_timeout_s"], p["frame_age_s"]) <= 0:
            raise NodeConfigError("orchestrator: max_replans >= 0, steps_limit >= 0, perceive_hz > 0 and positive "
                                  "timeouts are required")

        from mnemobot.ros2.ros_robot import RosRobot, RosRobotTopics

        # The robot's and memory's traffic (a state per control tick) has a node and a single-threaded
        # executor of its own: through the action server's multi-threaded executor every tick paid
        # that executor's bookkeeping (measured: most of this process's CPU time). Command-line
        # remaps are not applied to it (its topics are this node's parameters), so the
        # ``__node:=orchestrator`` remap of a launcher leaves its name alone.
        self.io = rclpy.create_node(f"{self.get_name()}_io", namespace=self.get_namespace(), context=self.context,
                                    use_global_arguments=False, start_parameter_services=False)
        topics = RosRobotTopics(joint_states=p["joint_states_topic"], odom=p["odom_topic"], world_frame=p["world_frame"])
        self.robot = RosRobot(self.io, topics=topics, timeout_s=p["robot_timeout_s"], spin=True,
                              camera=False)
        self.mirror: Any = None
        self.site: Any = None
        self.static_labels: frozenset[str] = frozenset()
        self.classes = {c.strip() for c in p["object_classes"].split(",") if c.strip()}
        self.site_classes: set[str] = set()
        self.ctx: Any = None  # the body's facts (held, opened, place) live across tasks
        self._busy = threading.Lock()
        self._running: str | None = None
        self._stopping = False
        site_msg = _site_map_file(p["site_map_file"]) if p["site_map_file"] else None
        if site_msg is not None:  # ours is the map: memory and viewers get it on the usual topic
            self._site_pub = self.create_publisher(String, p["site_map_topic"], latched_qos())
            self._site_pub.publish(site_msg)
            self._on_site_map(site_msg)
        else:
            self.create_subscription(String, p["site_map_topic"], self._on_site_map, latched_qos())
        self._rejections = self.create_publisher(String, p["rejections_topic"], latched_qos(depth=10))
        from mnemobot_interfaces.action import ExecuteTask
        from std_srvs.srv import Trigger

        self.ExecuteTask = ExecuteTask
        self._score = self.create_client(Trigger, p["score_service"]) if p["score_service"] else None
        group = ReentrantCallbackGroup()
        self.server = _ReasonedActionServer(self, ExecuteTask, p["action_name"], execute_callback=self._execute,
                                            goal_callback=self._on_goal, cancel_callback=self._on_cancel,
                                            callback_group=group)
        self.get_logger().info(f"orchestrator ready: {p['action_name']} (planner {p['planner']}, mode {p['mode']})")

    def _on_cancel(self, _goal: Any) -> Any:
        """Accept every cancel request; the running task stops at its next control tick."""
        self.get_logger().info(f"cancel requested: {self._running!r} stops at its next control tick")
        return CancelResponse.ACCEPT

    # -- inputs ---------------------------------------------------------------------------------------
    def _on_site_map(self, msg: String) -> None:
        from mnemobot.control.site import SiteMap

        try:
            data = json.loads(msg.data)
            site = SiteMap.from_dict(data["site_map"])
            static = frozenset(str(x) for x in data.get("static_labels", ()))
            classes = {str(x) for x in data.get("object_classes", ())}
        except (ValueError, KeyError, TypeError) as e:
            self.get_logger().warning(f"{self.p['site_map_topic']} ignored: {e}")
            return
        if self._running is not None:
            self.get_logger().warning("a new site map came during a task: used from the next task on")
        self._pending_site = (site, static, classes)
        if self._running is None:
            self._take_site()

    def _take_site(self) -> None:
        pending = getattr(self, "_pending_site", None)
        if pending is None:
            return
        self._pending_site = None
        self.site, self.static_labels, self.site_classes = pending
        if self.mirror is not None:
            self.mirror.close()
        from mnemobot.ros2.memory_mirror import MemoryMirror

        p = self.p
        self.mirror = MemoryMirror(self.io, self.site, self.static_labels, ops_topic=p["memory_ops_topic"],
                                   sync_topic=p["sync_topic"], body_topic=p["body_topic"],
                                   query_service=p["query_service"], timeout_s=p["memory_timeout_s"],
                                   frame_age_s=p["frame_age_s"])
        self.ctx = None
        self.get_logger().info(f"site map: {len(self.site.places)} places, {len(self.site_classes)} object classes")

    def _reject(self, instruction: str, reason: str) -> GoalResponse:
        self.get_logger().warning(f"goal rejected: {reason} (instruction {instruction!r})")
        self._rejections.publish(String(data=json.dumps({"goal_id": _GOAL_ID.get(), "instruction": instruction,
                                                         "reason": reason})))
        return GoalResponse.REJECT

    def _vocabulary(self) -> set[str]:
        from mnemobot.agent.planner import object_vocabulary

        known = self.mirror.known_labels() if self.mirror is not None else set()
        return object_vocabulary(self.classes | self.site_classes, known)

    # -- goals -----------------------------------------------------------------------------------------
    def _on_goal(self, goal: Any) -> GoalResponse:
        from mnemobot.agent.planner import InstructionError, PlanningContext, parse_instruction

        instruction = goal.instruction.strip()
        if self._running is not None:
            return self._reject(instruction, f"busy: executing {self._running!r}; cancel it first")
        if self.site is None:
            return self._reject(instruction, f"no site map yet on {self.p['site_map_topic']} (is the robot or "
                                             "simulator publishing it?)")
        try:
            self.mirror.sync(None, timeout_s=min(2.0, self.p["memory_timeout_s"]))
        except Exception as e:  # noqa: BLE001 - memory down: the goal could not be grounded
            return self._reject(instruction, f"memory is not available: {e}")
        try:
            parse_instruction(instruction, PlanningContext(self.site, vocabulary=self._vocabulary()))
        except InstructionError as e:
            return self._reject(instruction, str(e))
        return GoalResponse.ACCEPT

    def _execute(self, goal_handle: Any) -> Any:
        ExecuteTask = self.ExecuteTask
        instruction = goal_handle.request.instruction.strip()
        if not self._busy.acquire(blocking=False):  # accepted while another started: should not happen
            goal_handle.abort()
            return ExecuteTask.Result(success=False, stop_reason="busy", summary_json="{}")
        self._running = instruction
        try:
            summary, cancelled = self._run_task(goal_handle, instruction)
        finally:
            self._running = None
            self._busy.release()
            self._take_site()
        result = ExecuteTask.Result(success=bool(summary["success"]), stop_reason=str(summary["stop_reason"]),
                                    summary_json=json.dumps(summary))
        if cancelled:
            goal_handle.canceled()
        elif result.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        self.get_logger().info(f"task {'succeeded' if result.success else 'ended'}: {instruction!r}"
                               + (f" ({result.stop_reason})" if result.stop_reason else ""))
        return result

    def _run_task(self, goal_handle: Any, instruction: str) -> tuple[dict[str, Any], bool]:
        from mnemobot.agent.episode import RunConfig, _make_planner
        from mnemobot.agent.errors import UserError
        from mnemobot.agent.orchestrator import Orchestrator
        from mnemobot.agent.planner import PlanningContext, parse_instruction
        from mnemobot.control.controllers import Controller
        from mnemobot.control.executor import ExecutorConfig, SkillExecutor
        from mnemobot.control.skills import SkillContext

        p = self.p
        feedback = _Feedback(self, goal_handle)
        wall0 = time.perf_counter()
        summary: dict[str, Any] = {"task": instruction, "task_id": goal_handle.request.task_id, "success": False,
                                   "stop_reason": "", "planner": p["planner"], "mode": p["mode"], "steps": 0,
                                   "planner_calls": 0, "skills_executed": 0, "skills": [], "anomalies": []}
        executor = None
        mirror = self.mirror
        steps0, waited0 = self.robot.steps, self.robot.step_wait_s
        try:
            self.robot.wait_ready(timeout_s=p["ready_timeout_s"])
            mirror.sync(None, timeout_s=p["ready_timeout_s"])
            pctx = PlanningContext(self.site, vocabulary=self._vocabulary())
            parse_instruction(instruction, pctx)
            cfg = RunConfig(planner=p["planner"], model=p["model"] or None, base_url=p["base_url"] or None,
                            mode=p["mode"], max_replans=p["max_replans"])
            planner = _make_planner(cfg, pctx, lambda m: self.get_logger().warning(m))
            if self.ctx is None:
                self.ctx = SkillContext(robot=self.robot, controller=Controller(self.robot.spec), site=self.site,
                                        locator=mirror, perceive=lambda: None)
            ctx = self.ctx

            def perceive() -> None:  # a skill's look (look_at, the end): a frame as new as now
                mirror.set_body(ctx.held_in_hand(), ctx.opened, ctx.at_place, t=ctx.state.t if ctx.state else None,
                                hand=ctx.hand_position())
                mirror.sync(float(ctx.state.t) if ctx.state is not None else None)

            ctx.perceive = perceive
            # While skills move, memory integrates frames in its own process: the control loop sends
            # the body's facts and applies the ops that came, at perceive_hz, without waiting (a
            # wait there would pause the arm mid-motion, and a paused lift can shake an object loose).
            executor = SkillExecutor(ctx, ExecutorConfig(perceive_hz=0.0, step_budget=p["steps_limit"] or None))
            period = 1.0 / p["perceive_hz"]
            next_look = [-1.0]

            def on_tick(_cmd: Any, state: Any) -> None:
                if goal_handle.is_cancel_requested or self._stopping or not rclpy.ok(context=self.context):
                    raise _Cancelled
                if state.t + 1e-9 >= next_look[0]:
                    next_look[0] = state.t + period
                    mirror.set_body(ctx.held_in_hand(), ctx.opened, ctx.at_place, t=state.t, hand=ctx.hand_position())
                    mirror.follow()

            executor.on_tick.append(on_tick)
            orch = Orchestrator(planner, executor, pctx, lambda m: self.get_logger().info(m), p["max_replans"],
                                memory=mirror, on_event=feedback.on_event, mode=p["mode"])
            executor.start()
            ctx.perceive()  # a first frame, as the executor takes one in a single process
            sim0 = ctx.state.t
            outcome = orch.run(instruction)
            ctx.perceive()  # a last look: memory records what the final skill changed (a release)
            summary.update(steps=executor.ticks, planner_calls=outcome.planner_calls, sim_s=round(ctx.state.t - sim0, 3),
                           skills_executed=len(outcome.results), skills=[r.to_dict() for r in outcome.results],
                           cost=outcome.cost, decisions=[dd.to_dict() for dd in orch.ledger.decisions],
                           anomalies=[a.to_dict() for a in outcome.anomalies], memory_questions=orch.memory_questions,
                           planner=getattr(planner, "name", p["planner"]))
            success, scored = self._scored(goal_handle.request.task_id, outcome.completed)
            if getattr(self, "sim_info", None):
                summary["simulator"] = self.sim_info
            summary.update(success=success, scored=scored,
                           stop_reason=outcome.stop_reason or ("" if success else "goal not reached"))
            cancelled = False
        except _Cancelled:
            self._hold()
            summary.update(stop_reason="cancelled", success=False)
            cancelled = True
        except UserError as e:
            self._hold()
            summary.update(stop_reason=str(e))
            cancelled = False
        except Exception as e:  # noqa: BLE001 - robot or memory silent, a bad message: the goal ends, the node stays
            from mnemobot.ros2.memory_mirror import MemoryUnavailable
            from mnemobot.ros2.ros_robot import RosRobotError

            if not isinstance(e, MemoryUnavailable | RosRobotError):
                self.get_logger().error(f"task failed with {type(e).__name__}: {e}")
            self._hold()
            summary.update(stop_reason=f"{type(e).__name__}: {e}")
            cancelled = False
        if executor is not None:
            summary["steps"] = executor.ticks
        summary["wall_s"] = round(time.perf_counter() - wall0, 3)
        steps, waited = self.robot.steps - steps0, self.robot.step_wait_s - waited0
        summary["robot"] = {"commands": steps, "round_trip_ms": round(1000 * waited / steps, 2) if steps else None,
                            "round_trip_s": round(waited, 3)}
        summary["memory"] = {"objects": len(mirror.graph.by_layer("object")), "reloads": mirror.reloads,
                             "frames_waited": mirror.waits["frames"], "wait_s": round(mirror.waits["wait_s"], 3)}
        return summary, cancelled

    def _hold(self) -> None:
        """Stop the base and hold the arm where it is (best effort: the bridge's watchdog does it too)."""
        try:
            self.robot.hold()
        except Exception as e:  # noqa: BLE001 - the robot is silent: its bridge's watchdog holds it
            self.get_logger().warning(f"could not command a hold ({e}); robot_bridge's watchdog stops the robot")

    def _scored(self, task_id: str, completed: bool) -> tuple[bool, str]:
        """Success on simulator truth for a task family's own task, else whether the plan's goals hold."""
        if not task_id or self._score is None or not self._score.wait_for_service(timeout_sec=1.0):
            return completed, "plan"
        from std_srvs.srv import Trigger

        done = threading.Event()
        future = self._score.call_async(Trigger.Request())
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(5.0) or future.result() is None:
            self._score.remove_pending_request(future)
            return completed, "plan"
        res = future.result()
        try:
            info = json.loads(res.message)
            task = info.get("task")
            self.sim_info = {k: info[k] for k in ("ticks", "idle_steps", "partial_steps") if k in info}
        except (ValueError, AttributeError):
            task = None
        if task != task_id:
            self.get_logger().warning(f"the simulator runs task {task!r}, not {task_id!r}: scored on the plan")
            return completed, "plan"
        return bool(res.success), "simulator"

    def destroy_node(self) -> None:
        self._stopping = True
        self.server.destroy()
        if self.mirror is not None:
            self.mirror.close()
        self.robot.close()
        self.io.destroy_node()
        super().destroy_node()


def _site_map_file(path: str) -> String:
    """The ``site_map_topic`` message of a site map file; a bad file raises :class:`NodeConfigError`."""
    from pathlib import Path

    import yaml

    from mnemobot.control.site import SiteMap

    try:
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("not a mapping")
        if "site_map" not in data:
            data = {"site_map": data}
        SiteMap.from_dict(data["site_map"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        raise NodeConfigError(f"orchestrator: site_map_file {path}: {e}") from None
    return String(data=json.dumps(data, separators=(",", ":")))


class _Feedback:
    """ExecuteTask feedback from the orchestrator's events."""

    def __init__(self, node: OrchestratorNode, goal_handle: Any) -> None:
        self.node, self.goal_handle = node, goal_handle
        self.done = 0
        self.planned = 0
        self.anomalies: list[str] = []
        self._seen: set[tuple[Any, ...]] = set()
        self.current = ""

    def on_event(self, kind: str, _t: float, data: dict[str, Any]) -> None:
        if kind == "plan":
            self.planned = len(data.get("steps", ()))  # type: ignore[arg-type]
            if data.get("decision") == "replan":
                self._send("replanned", f"new plan of {self.planned} steps")
        elif kind == "skill_start":
            self.current = _call(data)
            self._send("started", "")
        elif kind == "skill":
            self.done += 1
            ok = bool(data.get("success"))
            self._send("succeeded" if ok else "failed",
                       "" if ok else f"{data.get('reason', '')}: {data.get('message', '')}".strip(": "))
        elif kind == "anomaly" and data.get("kind"):  # each anomaly once (it is re-sent as its outcome changes)
            key = (data.get("t"), data.get("kind"), data.get("skill"))
            if key not in self._seen:
                self._seen.add(key)
                self.anomalies.append(str(data["kind"]))

    def _send(self, event: str, message: str) -> None:
        fb = self.node.ExecuteTask.Feedback()
        fb.skill, fb.event, fb.message = self.current, event, message
        fb.skills_done, fb.skills_planned = self.done, max(self.planned, self.done)
        left = max(self.planned - self.done, 0)
        fb.progress = float(self.done / (self.done + left)) if self.done + left else 0.0
        fb.anomalies = list(self.anomalies)
        self.goal_handle.publish_feedback(fb)


def _call(data: dict[str, Any]) -> str:
    args = data.get("args") or {}
    return f"{data.get('skill')}({', '.join(str(v) for v in args.values() if v)})"  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    """``python -m mnemobot.ros2.nodes.orchestrator_node --ros-args -p name:=value ...``"""
    import signal
    import sys

    argv = list(sys.argv if argv is None else argv)
    rclpy.init(args=argv)
    node: OrchestratorNode | None = None
    try:
        node = OrchestratorNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except NodeConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            node._stopping = True
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001 - the context may already be gone
                pass
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
