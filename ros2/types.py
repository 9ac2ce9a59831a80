"""The rosbags typestore with mnemobot's own message types registered from their ``.msg`` files.

Usage::

    from mnemobot.ros2.types import typestore
    ts = typestore()                                   # ROS 2 Humble types + mnemobot_interfaces
    Image = ts.types["sensor_msgs/msg/Image"]
    data = ts.serialize_cdr(msg, "mnemobot_interfaces/msg/MemoryOpArray")
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["CUSTOM_TYPES", "DISTROS", "INTERFACES_PACKAGE", "msg_files", "typestore"]

INTERFACES_PACKAGE = "mnemobot_interfaces"
DISTROS = ("humble", "jazzy")
CUSTOM_TYPES = (
    f"{INTERFACES_PACKAGE}/msg/MemoryOp", f"{INTERFACES_PACKAGE}/msg/MemoryOpArray",
    f"{INTERFACES_PACKAGE}/srv/QueryMemory_Request", f"{INTERFACES_PACKAGE}/srv/QueryMemory_Response",
    f"{INTERFACES_PACKAGE}/action/ExecuteTask_Goal", f"{INTERFACES_PACKAGE}/action/ExecuteTask_Result",
    f"{INTERFACES_PACKAGE}/action/ExecuteTask_Feedback",
)


_PARTS = {"srv": ("Request", "Response"), "action": ("Goal", "Result", "Feedback")}


def msg_files() -> dict[str, str]:
    """``{type name: message text}`` of the interfaces package shipped with mnemobot.

    A ``.srv`` file gives ``pkg/srv/Name_Request`` and ``_Response``, an ``.action`` file
    ``pkg/action/Name_Goal``, ``_Result`` and ``_Feedback`` (the parts between ``---``), as
    rosidl names them, so bags that carry them (a recorded service or action introspection)
    decode with the same definitions the nodes are built from. (rosbags files service parts
    under ``pkg/srv/msg/Name_Request``: it knows only ``msg`` and ``action`` folders.)
    """
    base = resources.files("mnemobot.ros2") / "interfaces" / INTERFACES_PACKAGE
    out = {}
    for kind in ("msg", "srv", "action"):
        root = base / kind
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            name, dot, ext = entry.name.rpartition(".")
            if not dot or ext != kind:
                continue
            text = entry.read_text(encoding="utf-8")
            if kind == "msg":
                out[f"{INTERFACES_PACKAGE}/msg/{name}"] = text
                continue
            parts = re.split(r"^---[ \t]*$", text, flags=re.M)
            if len(parts) != len(_PARTS[kind]):
                raise ValueError(f"{entry.name}: expected {len(_PARTS[kind])} parts separated by '---'")
            for suffix, part in zip(_PARTS[kind], parts, strict=True):
                out[f"{INTERFACES_PACKAGE}/{kind}/{name}_{suffix}"] = part
    return out


@cache
def typestore(distro: str = "humble") -> Any:
    """A rosbags ``Typestore`` for ``distro`` (``humble`` or ``jazzy``) with mnemobot's types."""
    if distro not in DISTROS:
        raise ValueError(f"unknown ROS 2 distribution {distro!r}; use one of {', '.join(DISTROS)}")
    try:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    except ImportError:
        raise ImportError("recording and replay need the 'ros' extra: pip install 'mnemobot[ros]'") from None
    ts = get_typestore(Stores.ROS2_HUMBLE if distro == "humble" else Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    for name, text in msg_files().items():
        types.update(get_types_from_msg(text, name))
    ts.register(types)
    return ts
