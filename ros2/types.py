"""The rosbags typestore with mnemobot's own message types registered from their ``.msg`` files.

Usage::

    from mnemobot.ros2.types import typestore
    ts = typestore()                                   # ROS 2 Humble types + mnemobot_interfaces
    Image = ts.types["sensor_msgs/msg/Image"]
    data = ts.serialize_cdr(msg, "mnemobot_interfaces/msg/MemoryOpArray")
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

__all__ = ["CUSTOM_TYPES", "DISTROS", "INTERFACES_PACKAGE", "msg_files", "typestore"]

INTERFACES_PACKAGE = "mnemobot_interfaces"
DISTROS = ("humble", "jazzy")
CUSTOM_TYPES = (f"{INTERFACES_PACKAGE}/msg/MemoryOp", f"{INTERFACES_PACKAGE}/msg/MemoryOpArray")


def msg_files() -> dict[str, str]:
    """``{type name: .msg text}`` of the interfaces package shipped with mnemobot."""
    root = resources.files("mnemobot.ros2") / "interfaces" / INTERFACES_PACKAGE / "msg"
    out = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".msg"):
            out[f"{INTERFACES_PACKAGE}/msg/{entry.name[:-4]}"] = entry.read_text(encoding="utf-8")
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
