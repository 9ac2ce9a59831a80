"""Memory operations: the one way the scene graph changes, and the append-only log's record.

Every change to long-term memory is a :class:`MemoryOp`: ``ADD`` a node or edge, ``UPDATE``
some of its attributes, ``DELETE`` it, or ``NOOP`` (an observation that confirms memory; it
moves ``last_seen`` and the observation count, nothing else). Each op carries its cause
(``"observed"``, ``"moved"``, ``"not_seen"``, ``"grasped"``, ...) and its time, so the graph at
any moment is the replay of its log, and "what changed since t" is a log query.

Ops are plain data (JSON-serialisable ``data``), so the episodic store can persist them and a
graph can be rebuilt from a snapshot plus the ops after it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["MemoryOp", "OpKind", "edge_key", "json_safe"]


class OpKind(str, Enum):
    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"


def edge_key(src: str, rel: str, dst: str) -> str:
    """Log key of an edge: ``"src|rel|dst"`` (node ids never contain ``|``)."""
    return f"{src}|{rel}|{dst}"


def json_safe(value: Any) -> Any:
    """Plain JSON types (numpy arrays and scalars to lists and floats); non-finite floats raise."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite value {value!r} cannot be stored in memory")
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class MemoryOp:
    """One change of long-term memory.

    * ``seq``: position in the log (strictly increasing, assigned by the graph);
    * ``time``: memory clock (s) when it happened; ``episode``: episode id (0 before any);
    * ``kind``: :class:`OpKind`; ``target``: ``"node"`` or ``"edge"``;
    * ``key``: node id (``"obj:7"``, ``"place:drawer"``, ``"room:kitchen"``, ``"agent"``,
      ``"building"``) or :func:`edge_key` for edges;
    * ``cause``: why (``"observed"``, ``"moved"``, ``"not_seen"``, ``"grasped"``, ``"released"``,
      ``"opened"``, ``"closed"``, ``"relation"``, ``"confirmed"``, ``"map"``, ``"merged"``...);
    * ``data``: for ADD the full attributes, for UPDATE the changed ones (new values), for
      DELETE and NOOP what the reader needs (may be empty).
    """

    seq: int
    time: float
    episode: int
    kind: OpKind
    target: str
    key: str
    cause: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> tuple[int, float, int, str, str, str, str, str]:
        """``(seq, time, episode, kind, target, key, cause, data_json)`` for storage."""
        return (self.seq, self.time, self.episode, self.kind.value, self.target, self.key, self.cause,
                json.dumps(json_safe(self.data), separators=(",", ":")))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> MemoryOp:
        seq, time, episode, kind, target, key, cause, data = row
        return cls(int(seq), float(time), int(episode), OpKind(kind), str(target), str(key), str(cause),
                   json.loads(data) if data else {})

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "episode": self.episode, "kind": self.kind.value,
                "target": self.target, "key": self.key, "cause": self.cause, "data": json_safe(self.data)}
