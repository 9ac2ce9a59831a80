"""Symbolic memory tokens: what the scene graph holds, as fixed-size vectors for the policy.

One token per object and per place of the map (a drawer, a patch, the button), ``TOKEN_DIM``
floats::

    0      label hash (crc32 of the label, ``vocab_buckets``)      - an integer, embedded
    1      id hash (crc32 of the scene-graph node id, ``id_buckets``) - the planner's ids
    2-3    kind: object, articulated place (one that opens: a drawer)
    4-6    position now, in the robot's base frame (m); an articulated place's handle now
    7-9    position when first seen, base frame (m); an articulated place's handle at the
           largest opening seen
    10-12  size (m): an object's extent, a fixed place's surface (x, y; 0 for articulated places)
    13-14  cos, sin of the yaw relative to the base
    15-18  state: present, missing, held, open
    19     opening now (m; places)
    20     largest opening seen (m; places)
    21     seconds since last seen / last changed (places), divided by 60
    22     seconds since first seen, divided by 60
    23     confidence
    24     kind: fixed place (a patch, the button, a table: where the map says it is)

Tokens are ordered by relevance: objects and places the task text names first, then the most
recently seen objects and most recently changed articulated places, then the fixed places in the
map's order; at most ``max_tokens``. An articulated place with a handle in the map (a drawer)
stands at its handle: the closed handle's position moved along the opening direction by the
opening memory holds now, and by the largest opening seen; that is where the hand grasps and
releases it, so a keyframe policy anchors a grasp on a drawer like one on a block. Fixed places give a keyframe policy a point to anchor a
contact that involves no object (a press, a put-down on an empty patch) the way a grasp is
anchored on its object (:func:`mnemobot.policy.model.anchor_points`). The same function builds tokens when recording
demonstrations and when the policy runs, from the memory the agent keeps (never the simulator).
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Any

import numpy as np

__all__ = ["TOKEN_DIM", "TOKEN_FIELDS", "TOKEN_LAYOUT", "memory_tokens", "token_names"]

TOKEN_DIM = 25
TOKEN_FIELDS = ("label_hash", "id_hash", "is_object", "is_articulated", "x", "y", "z", "x_first", "y_first", "z_first",
                "size_x", "size_y", "size_z", "cos_yaw", "sin_yaw", "present", "missing", "held", "open", "opening",
                "max_opening", "minutes_since_seen", "minutes_since_first_seen", "confidence", "is_fixed_place")
"""The name of each of a token's ``TOKEN_DIM`` features (see the module docstring)."""
TOKEN_LAYOUT = 3
"""The version of what the features mean: 2 added the fixed places, 3 put an articulated place at
its handle. A recorded dataset names its memory columns with it (:func:`token_names`), so a
trainer can refuse tokens that mean something else at run time."""


def token_names(max_tokens: int) -> tuple[str, ...]:
    """The element names of a recorded ``observation.memory`` vector (``max_tokens`` tokens):
    ``"v3:0.label_hash"``, ... (layout version, token index, feature)."""
    return tuple(f"v{TOKEN_LAYOUT}:{k}.{f}" for k in range(max_tokens) for f in TOKEN_FIELDS)


def _hash(text: str, buckets: int) -> float:
    return float(1 + zlib.crc32(text.encode()) % (buckets - 1))


def _handle(node: dict[str, Any], opening: float) -> list[float]:
    """Where an articulated place's handle is at ``opening`` (m): the closed handle moved along
    the opening direction; the place's centre where the map gives no handle."""
    handle, direction = node.get("handle"), node.get("open_direction")
    if handle is None or direction is None:
        return [float(v) for v in node.get("center", [0.0, 0.0, 0.0])]
    return [float(h) + float(u) * opening for h, u in zip(handle, direction, strict=True)]


def memory_tokens(graph: Any, base_pose: np.ndarray, t: float, task: str = "", max_tokens: int = 16,
                  vocab_buckets: int = 4096, id_buckets: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens (max_tokens, TOKEN_DIM) float32, mask (max_tokens,) bool)`` of the scene graph
    ``graph`` (:class:`~mnemobot.memory.graph.SceneGraph`) seen from the base pose ``(x, y, yaw)``
    at time ``t`` (s); see the module docstring."""
    x, y, yaw = (float(v) for v in base_pose)
    c, s = math.cos(yaw), math.sin(yaw)

    def to_base(p: Any) -> list[float]:
        px, py, pz = (float(v) for v in p)
        dx, dy = px - x, py - y
        return [c * dx + s * dy, -s * dx + c * dy, pz]

    words = set(re.findall(r"[a-z0-9]+", task.lower()))
    rows: list[tuple[tuple[float, ...], list[float]]] = []
    g = graph.g
    for key in graph.by_layer("object"):
        d = g.nodes[key]
        label = str(d.get("label", ""))
        hist = d.get("history") or []
        first = hist[0][1:4] if hist else d["position"]
        ext = list(d.get("extent", [0.0, 0.0, 0.0]))[:3]
        state = d.get("state", "present")
        rel_yaw = float(d.get("yaw", 0.0)) - yaw
        tok = [_hash(label, vocab_buckets), _hash(str(key), id_buckets), 1.0, 0.0, *to_base(d["position"]),
               *to_base(first), *ext, math.cos(rel_yaw), math.sin(rel_yaw),
               float(state == "present"), float(state == "missing"), float(state == "held"), 0.0, 0.0, 0.0,
               (t - float(d.get("last_seen", t))) / 60.0, (t - float(d.get("first_seen", t))) / 60.0,
               float(d.get("confidence", 1.0)), 0.0]
        named = bool(set(label.split("_")) & words)
        rows.append(((0.0 if named else 1.0, -float(d.get("last_seen", 0.0)), len(rows)), tok))
    for key in graph.by_layer("place"):
        d = g.nodes[key]
        name = str(d.get("name", key))
        centre = d.get("center", [0.0, 0.0, 0.0])
        named = bool(set(name.split("_")) & words)
        if "opening" in d:  # articulated: its state and when it last changed
            opening = float(d.get("opening", 0.0))
            widest = float(d.get("max_opening", opening))
            now, wide = _handle(d, opening), _handle(d, widest)
            tok = [_hash(name, vocab_buckets), _hash(str(key), id_buckets), 0.0, 1.0, *to_base(now),
                   *to_base(wide), 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, float(d.get("state") == "open"), opening,
                   widest, (t - float(d.get("last_changed", t))) / 60.0, 0.0, 1.0, 0.0]
            rows.append(((0.0 if named else 1.0, -float(d.get("last_changed", 0.0)), len(rows)), tok))
            continue
        sx, sy = (float(v) for v in (list(d.get("surface") or [0.0, 0.0]) + [0.0, 0.0])[:2])
        tok = [_hash(name, vocab_buckets), _hash(str(key), id_buckets), 0.0, 0.0, *to_base(centre), *to_base(centre),
               sx, sy, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
        rows.append(((0.0 if named else 2.0, 0.0, len(rows)), tok))
    rows.sort(key=lambda r: r[0])
    out = np.zeros((max_tokens, TOKEN_DIM), dtype=np.float32)
    mask = np.zeros(max_tokens, dtype=bool)
    for i, (_, tok) in enumerate(rows[:max_tokens]):
        out[i] = np.asarray(tok, dtype=np.float32)
        mask[i] = True
    if not np.all(np.isfinite(out)):
        raise ValueError("memory tokens hold NaN or inf (a corrupt scene graph?)")
    return out, mask
