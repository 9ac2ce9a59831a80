"""Anomaly monitor: detect what went wrong, handle it locally, escalate only what it cannot.

Detected (from each skill result and the body state after it):

================  ==================================================  =====================================
anomaly           detected when                                       handled locally by
================  ==================================================  =====================================
grasp_failed      ``pick`` closed on nothing                          re-perceive (``find``), pick again
dropped           the held object is gone after a skill, or ``pick``   find it again, pick again
                  reports it slipped
not_found         ``find`` searched and did not see the object        search other places in order of
                                                                      memory confidence (opening containers),
                                                                      then ``find``
not_where_        ``find`` succeeded somewhere other than where       nothing to do (memory is updated);
remembered        memory said                                         logged
container_closed  ``place`` into a closed container                   ``open`` it, place again
safety_limit      a controller limit refused a command                re-perceive, retry once
estop             the e-stop is engaged                               none: abort
timeout           a skill ran past its time budget                    retry once
no_progress       the same call failed ``max_local`` times            escalate (re-plan)
skill_failed      any other failure                                   retry once
================  ==================================================  =====================================

Local handling is a short list of skill calls (:meth:`AnomalyMonitor.recovery`) that the
orchestrator runs before retrying the failed call; only when it fails, or there is none, does
the orchestrator backtrack in the plan tree or ask the planner again. Every anomaly and its
handling is logged (:attr:`AnomalyMonitor.log`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from mnemobot.agent.planner import ORIGIN_REF, SkillCall
from mnemobot.control.site import SiteMap
from mnemobot.control.types import SkillResult

__all__ = ["Anomaly", "AnomalyMonitor"]


@dataclass
class Anomaly:
    t: float
    kind: str
    skill: str
    args: dict[str, str]
    reason: str = ""
    message: str = ""
    handling: str = ""
    calls: list[str] = field(default_factory=list)
    outcome: str = "pending"
    """``recovered`` | ``escalated`` | ``aborted`` | ``logged``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AnomalyMonitor:
    """Classifies skill outcomes and proposes local recoveries. ``memory``: a
    :class:`~mnemobot.memory.memory.Memory` (or None for the no-memory ablation)."""

    def __init__(self, site: SiteMap, memory: Any | None = None, max_local: int = 2) -> None:
        self.site = site
        self.memory = memory
        self.max_local = max_local
        self.log: list[Anomaly] = []
        self._failures: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    # -- detection ----------------------------------------------------------------------------------------
    def check(self, call: SkillCall, result: SkillResult, held_before: str | None, held_now: str | None,
              t: float, believed: str | None = None) -> Anomaly | None:
        """The anomaly in ``result`` (None when all is well). ``believed``: the place memory gave
        for the call's object before ``find`` ran."""
        a = call.args
        if result.success:
            if held_before is not None and held_now is None and call.skill not in ("place",):
                return self._new(t, "dropped", call, "", f"the {held_before} is no longer in the gripper",
                                 args={"object": held_before})
            if call.skill == "find" and believed:
                at = result.data.get("place") if isinstance(result.data, dict) else None
                if at and at != believed:
                    an = self._new(t, "not_where_remembered", call, "",
                                   f"memory had the {a['object']} at the {believed}; found at the {at}")
                    an.outcome, an.handling = "logged", "memory updated by the sighting"
                    return an
            return None
        r = result.reason or "failed"
        key = (call.skill, tuple(sorted(a.items())))
        self._failures[key] += 1
        if r.startswith("safety:"):
            kind = "estop" if "EStop" in r else "safety_limit"
        elif r == "timeout":
            kind = "timeout"
        elif call.skill == "pick" and r == "grasp_failed":
            kind = "grasp_failed"
        elif r == "dropped" or (call.skill == "place" and r == "not_holding"):
            kind = "dropped"
        elif call.skill == "find" and r == "not_found":
            kind = "not_found"
        elif r == "container_closed":
            kind = "container_closed"
        else:
            kind = "skill_failed"
        if kind != "estop" and self._failures[key] > self.max_local:
            kind = "no_progress"
        return self._new(t, kind, call, r, result.message)

    def _new(self, t: float, kind: str, call: SkillCall, reason: str, message: str,
             args: dict[str, str] | None = None) -> Anomaly:
        an = Anomaly(t, kind, call.skill, dict(args or call.args), reason, message)
        self.log.append(an)
        return an

    # -- local handling --------------------------------------------------------------------------------------
    def recovery(self, an: Anomaly, call: SkillCall) -> list[SkillCall] | None:
        """Skill calls to run before retrying ``call`` (an empty list: just retry); None: the
        anomaly cannot be handled locally (escalate or abort)."""
        obj = an.args.get("object", "")
        if an.kind in ("estop", "no_progress"):
            an.handling = "abort" if an.kind == "estop" else "escalate to the planner"
            return None
        if an.kind in ("grasp_failed",):
            an.handling = "re-perceive and pick again"
            return [SkillCall("find", {"object": obj, "room": ""})]
        if an.kind == "dropped":
            an.handling = "find it again and pick it up"
            calls = [SkillCall("find", {"object": obj, "room": ""}), SkillCall("pick", {"object": obj})]
            if call.skill == "navigate_to":
                calls.append(call)
            elif call.skill in ("place", "look_at"):
                rec = call.args.get("receptacle") or call.args.get("target", "")
                if rec:
                    calls += [SkillCall("navigate_to", {"place": rec}), SkillCall("look_at", {"target": rec})]
            return calls
        if an.kind == "not_found":
            places = self.ranked_places(obj)
            if not places:
                an.handling = "nowhere else to look: escalate"
                return None
            an.handling = "search other places in order of memory confidence: " + ", ".join(places)
            return [c for p in places for c in self._look_into(p)]
        if an.kind == "container_closed":
            rec = call.args.get("receptacle", "")
            an.handling = f"open the {rec}"
            return [SkillCall("navigate_to", {"place": rec}), SkillCall("open", {"container": rec}),
                    SkillCall("look_at", {"target": rec})]
        if an.kind == "safety_limit":
            an.handling = "re-perceive and retry"
            target = call.args.get("object") or call.args.get("receptacle") or call.args.get("container") or ""
            return [SkillCall("look_at", {"target": target})] if target and not target.startswith(ORIGIN_REF) else []
        an.handling = "retry"
        return []

    def _look_into(self, place: str) -> list[SkillCall]:
        """Calls that show the camera what rests on or in ``place``: a container is opened first
        (its closed front hides what it holds)."""
        calls = [SkillCall("navigate_to", {"place": place})]
        if self.site.places[place].articulated:
            calls.append(SkillCall("open", {"container": place}))
        return [*calls, SkillCall("look_at", {"target": place})]

    def ranked_places(self, label: str, limit: int = 3) -> list[str]:
        """Surfaces to look at for ``label``, most likely first: places where memory holds
        same-label sightings (by confidence), then the places memory has looked at least
        recently (where things are most likely to have changed unseen)."""
        out: list[str] = []
        surfaces = [p for p in self.site.places.values() if not p.articulated]
        if self.memory is not None:
            g = self.memory.graph
            hits = sorted((g.node(k) for k in g.by_label.get(label, ())), key=lambda d: -float(d.get("confidence", 0.0)))
            for d in hits:  # several sightings may share a place: each place once
                if d.get("place") in self.site.places and d["place"] not in out:
                    out.append(d["place"])
            seen_at: dict[str, float] = {}
            for k in g.by_layer("object"):
                d = g.node(k)
                if d.get("place"):
                    seen_at[d["place"]] = max(seen_at.get(d["place"], 0.0), float(d.get("last_seen", 0.0)))
            surfaces.sort(key=lambda p: seen_at.get(p.name, -1.0))
        for p in surfaces:
            if p.name not in out:
                out.append(p.name)
        return out[:limit]

    def summary(self) -> dict[str, Any]:
        return {"anomalies": len(self.log),
                "by_kind": dict(Counter(a.kind for a in self.log)),
                "recovered": sum(1 for a in self.log if a.outcome == "recovered"),
                "escalated": sum(1 for a in self.log if a.outcome == "escalated"),
                "aborted": sum(1 for a in self.log if a.outcome == "aborted")}
