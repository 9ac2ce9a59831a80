"""``MemoryMirror``: the memory node's scene graph, followed in another process (the orchestrator's).

The ``memory`` node owns perception and memory; the orchestrator needs to read memory at the rate
skills ask (every ``locate`` of a skill, the planner's context, anomaly search) and to tell memory
the body's facts (a grasp, a release, a drawer opened). Asking a service for every read would put a
round trip in every control decision, and a second memory integrating the same camera would drift
from the first. The mirror follows the node's operation log instead, which already is the one
source of truth for a replay or a restart (every change of the graph is one op):

1. on start, and whenever the node's ``session`` changes (it restarted), it loads the whole graph
   with the ``state`` question of ``QueryMemory``;
2. it applies the ``MemoryOpArray`` messages of the ops topic in ``seq`` order; a gap in ``seq``
   (a lost message) reloads the graph;
3. :meth:`update` (the skills' ``perceive``) sends the body's facts when they changed and waits for
   the sync topic to say that memory integrated a frame at most ``frame_age_s`` older than the
   robot's time and took the body facts, then applies the ops up to the sync's ``seq``.

The graph is touched only by the calling thread (the ROS callbacks queue messages), so a reader
never sees it half-updated. Every wait is bounded by ``timeout_s`` and raises
:class:`MemoryUnavailable` naming what did not come.

Times: memory time is the node's (its clock ``offset`` plus seconds since its first message ``t0``);
the mirror's episode time (:meth:`local`) is the robot's clock (message stamps), as skills compare
it with ``ctx.state.t``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

from mnemobot.memory.graph import SceneGraphConfig
from mnemobot.memory.memory import Memory, MemoryConfig
from mnemobot.memory.ops import MemoryOp, OpKind
from mnemobot.perception.sensor import SensorModel

__all__ = ["MemoryMirror", "MemoryUnavailable", "op_from_msg"]

_KINDS = {0: OpKind.ADD, 1: OpKind.UPDATE, 2: OpKind.DELETE, 3: OpKind.NOOP}


class MemoryUnavailable(RuntimeError):
    """The memory node did not answer (no sync, no ops, no state) within the timeout."""


def op_from_msg(m: Any) -> MemoryOp:
    """A :class:`MemoryOp` of a ``mnemobot_interfaces/MemoryOp`` message."""
    t = float(m.stamp.sec) + float(m.stamp.nanosec) * 1e-9
    return MemoryOp(int(m.seq), t, int(m.episode), _KINDS[int(m.kind)], str(m.target), str(m.key), str(m.cause),
                    json.loads(m.data_json) if m.data_json else {})


class MemoryMirror(Memory):
    """A read-only copy of the memory node's graph with the :class:`Memory` interface (``locate``,
    ``known_labels``, ``ask``, ``recall_origin``, ``context``, ``set_body``, ``update``).

    ``node``: an rclpy node spun by some executor (the orchestrator's robot node); ``site``: the
    site map (places) the node's memory uses; ``static_labels``: furniture labels.
    """

    def __init__(self, node: Any, site: Any = None, static_labels: frozenset[str] = frozenset(),
                 sensor: SensorModel | None = None, *, ops_topic: str = "/mnemobot/memory_ops",
                 sync_topic: str = "/mnemobot/memory_sync", body_topic: str = "/mnemobot/body",
                 query_service: str = "/mnemobot/query_memory", timeout_s: float = 10.0,
                 frame_age_s: float = 0.3) -> None:
        super().__init__(MemoryConfig(db_path=None, embedder="lexical", sensor=sensor or SensorModel(),
                                      graph=SceneGraphConfig(static_labels=frozenset(static_labels))), site=None)
        if site is not None:  # the places, without emitting the map's ops: those come from the node
            self.graph.site = site
            self.graph._places = dict(site.places)
        from mnemobot_interfaces.msg import MemoryOpArray
        from mnemobot_interfaces.srv import QueryMemory
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        self.node = node
        self.timeout_s, self.frame_age_s = float(timeout_s), float(frame_age_s)
        self.query_service = query_service
        self._cond = threading.Condition()
        self._ops: deque[MemoryOp] = deque()
        self._sync: dict[str, Any] | None = None
        self.session = ""
        self.node_offset = 0.0
        self.t0: float | None = None
        self.reloads = 0
        self.waits = {"frames": 0, "wait_s": 0.0}
        self._body_seq = 0
        self._body: tuple[Any, ...] | None = None

        def qos(depth: int, latched: bool) -> QoSProfile:
            return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

        self._String = String
        self._QueryMemory = QueryMemory
        self._entities = [
            node.create_subscription(MemoryOpArray, ops_topic, self._on_ops, qos(100, False)),
            node.create_subscription(String, sync_topic, self._on_sync, qos(1, True)),
        ]
        self._body_pub = node.create_publisher(String, body_topic, qos(1, True))
        self._client = node.create_client(QueryMemory, query_service)

    def close(self) -> None:
        for s in self._entities:
            self.node.destroy_subscription(s)
        self._entities = []
        self.node.destroy_publisher(self._body_pub)
        self.node.destroy_client(self._client)
        super().close()

    # -- ROS callbacks (executor thread): queue only ------------------------------------------------------
    def _on_ops(self, msg: Any) -> None:
        ops = []
        for m in msg.ops:
            try:
                ops.append(op_from_msg(m))
            except (KeyError, ValueError) as e:
                self.node.get_logger().warning(f"memory mirror: bad op {m.seq} ignored ({e}); reloading")
                ops = []
                with self._cond:
                    self._ops.clear()
                    self._sync = dict(self._sync or {}, session="")  # forces a reload
                break
        with self._cond:
            self._ops.extend(ops)
            self._cond.notify_all()

    def _on_sync(self, msg: Any) -> None:
        try:
            sync = json.loads(msg.data)
            if not isinstance(sync, dict) or "seq" not in sync:
                raise ValueError("not a sync record")
        except ValueError as e:
            self.node.get_logger().warning(f"memory mirror: bad sync message ignored: {e}")
            return
        with self._cond:
            self._sync = sync
            self._cond.notify_all()

    # -- following the node (calling thread) ----------------------------------------------------------
    def _wait(self, ready: Any, what: str, timeout_s: float | None = None) -> None:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if not self._cond.wait_for(ready, timeout=timeout):
            raise MemoryUnavailable(f"the memory node sent no {what} within {timeout:g} s (is it running, on this "
                                    "ROS_DOMAIN_ID?)")

    def _reload(self) -> None:
        """Load the node's whole graph (``state`` question) and its clock."""
        deadline = time.monotonic() + self.timeout_s
        if not self._client.wait_for_service(timeout_sec=self.timeout_s):
            raise MemoryUnavailable(f"no {self.query_service} service within {self.timeout_s:g} s (is the memory "
                                    "node running?)")
        req = self._QueryMemory.Request(question="state")
        done = threading.Event()
        future = self._client.call_async(req)
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(max(0.0, deadline - time.monotonic())):
            self._client.remove_pending_request(future)
            raise MemoryUnavailable(f"{self.query_service} did not answer 'state' within {self.timeout_s:g} s")
        res = future.result()
        if res is None or not res.success:
            raise MemoryUnavailable(f"{self.query_service} refused 'state': {getattr(res, 'message', '')}")
        state = json.loads(res.answer_json)
        with self._cond:
            self.graph.load_state(state["graph"])
            self.graph.episode = int(state.get("episode", 0))
            self.session = str(state["session"])
            self._set_clock(state)
            while self._ops and self._ops[0].seq <= self.graph.seq:
                self._ops.popleft()
            self.reloads += 1

    def _set_clock(self, sync: dict[str, Any]) -> None:
        self.node_offset = float(sync.get("offset") or 0.0)
        t0 = sync.get("t0")
        if t0 is not None:
            self.t0 = float(t0)
        # local(memory time) = stamp: memory time m = node_offset + (stamp - t0)
        self.offset = self.node_offset - (self.t0 or 0.0)

    def _apply_queued(self, upto: int) -> bool:
        """Apply queued ops up to ``upto``; False on a gap (an op lost)."""
        while self.graph.seq < upto:
            if not self._ops:
                return True
            op = self._ops[0]
            if op.seq <= self.graph.seq:
                self._ops.popleft()
                continue
            if op.seq != self.graph.seq + 1:
                return False
            self._ops.popleft()
            try:
                self.graph.apply(op)
            except (KeyError, ValueError) as e:
                self.node.get_logger().warning(f"memory mirror: op {op.seq} does not apply ({e}); reloading")
                return False
        return True

    def sync(self, stamp: float | None = None, timeout_s: float | None = None) -> None:
        """Bring the mirror up to the node: a frame stamped at least ``stamp - frame_age_s`` integrated
        (``None``: any), the latest body facts taken, and every op up to then applied."""
        t_start = time.monotonic()
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = t_start + timeout
        want_body = self._body_seq
        for _attempt in range(3):
            with self._cond:
                def ready() -> bool:
                    s = self._sync
                    if s is None:
                        return False
                    if s.get("session") != self.session:
                        return True  # reload below
                    if int(s.get("body_seq", 0)) < want_body:  # noqa: B023 - read at each wait, as meant
                        return False
                    return stamp is None or (s.get("frame") is not None
                                             and float(s["frame"]) >= stamp - self.frame_age_s)
                what = "sync" if self._sync is None else (
                    f"frame newer than {stamp - self.frame_age_s:.2f} s" if stamp is not None else "sync")
                self._wait(ready, f"{what} on its sync topic", max(0.0, deadline - time.monotonic()))
                s = dict(self._sync or {})
            if s.get("session") != self.session:
                self._reload()
                with self._cond:
                    if self._body is not None and self._sync is not None \
                            and int(self._sync.get("body_seq", 0)) < self._body_seq:
                        self._send_body()  # a restarted node missed the latched body facts' sequence
                        want_body = self._body_seq
                continue
            with self._cond:
                self._set_clock(s)
                upto = int(s["seq"])
                ok = self._cond.wait_for(lambda u=upto: self._has_ops(u), timeout=max(0.0, deadline - time.monotonic()))
                if ok and self._apply_queued(upto):
                    self.waits["frames"] += 1
                    self.waits["wait_s"] += time.monotonic() - t_start
                    return
            self._reload()  # lost or unappliable ops
        raise MemoryUnavailable("the memory mirror could not follow the memory node's ops (reloaded 3 times)")

    def follow(self) -> None:
        """Apply what has arrived, without waiting (a reload only when the node restarted): the
        control loop's periodic look, which must not pause the robot while memory integrates."""
        with self._cond:
            s = dict(self._sync or {})
        if not s or s.get("session") != self.session:
            self.sync(None)
            return
        with self._cond:
            self._set_clock(s)
            ok = self._apply_queued(int(s["seq"]))
        if not ok:  # an op lost or not applicable
            self._reload()

    def _has_ops(self, upto: int) -> bool:
        """Whether the queue holds every op up to ``upto``, or shows a gap (then waiting is pointless)."""
        expected = self.graph.seq + 1
        for op in self._ops:
            if op.seq < expected:
                continue
            if op.seq != expected:
                return True  # a gap: _apply_queued reports it
            expected += 1
        return expected > upto

    # -- Memory interface --------------------------------------------------------------------------------
    def _send_body(self) -> None:
        held, opened, at_place, t, hand = self._body  # type: ignore[misc]
        self._body_pub.publish(self._String(data=json.dumps(
            {"seq": self._body_seq, "held": held, "opened": opened, "at_place": at_place, "stamp": t, "hand": hand})))

    def set_body(self, held: str | None, opened: dict[str, float], at_place: str | None = None,
                 t: float | None = None, hand: Any = None) -> None:
        """Send the body's facts to the node when they changed (the hand's position rides along,
        it does not count as a change); they count from the next :meth:`sync`."""
        facts = (held, {k: round(float(v), 3) for k, v in opened.items()}, at_place)
        if self._body is not None and self._body[:3] == facts:
            return
        self._body_seq += 1
        self._body = (*facts, t, None if hand is None else [float(v) for v in hand])
        self._held, self._opened, self._at_place = held, dict(opened), at_place
        self._send_body()

    def update(self, obs: Any = None, place: str | None = None) -> dict[str, str]:
        """The skills' perceive: wait until memory integrated a frame as new as ``obs`` (or as the
        latest robot time given to :meth:`sync`); memory integrates, the mirror only follows."""
        self.sync(float(obs.timestamp) if obs is not None else None)
        return {}

    def recall_origin(self, label: str) -> str | None:
        self.ask(label)
        return self.query.origin(label, since=self.node_offset)

    def begin_episode(self, meta: dict[str, Any] | None = None) -> int:
        return self.episode

    def end_episode(self, outcome: dict[str, Any] | None = None) -> None:
        return None

    def log_event(self, kind: str, data: dict[str, Any], object: str | None = None,  # noqa: A002
                  place: str | None = None, t: float | None = None) -> None:
        return None
