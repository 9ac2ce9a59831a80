"""Topic names, frames and QoS of mnemobot's recordings, and the topic map replay reads.

The camera topics follow common RGB-D drivers (``/camera/color/image_raw``,
``/camera/aligned_depth_to_color/image_raw``, ``/camera/color/camera_info``), so a bag
recorded from such a driver replays with no topic map at all. A topic map YAML file renames
any of them::

    rgb: /head_cam/rgb
    depth: /head_cam/depth          # 32FC1 metres or 16UC1 millimetres
    camera_info: /head_cam/info
    instances: /head_cam/instances  # optional: 16UC1 instance ids, 0 = background
    labels: null                    # optional: std_msgs/String JSON {"id": "label"}
    tf: /tf
    tf_static: /tf_static
    joint_states: /joint_states     # optional
    world_frame: odom               # the fixed frame memory lives in
    camera_frame: head_optical      # optional: overrides the image's header.frame_id
    base_frame: base_footprint      # optional: the robot's base frame in TF (default base_link)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "FRAMES",
    "MNEMOBOT_TOPICS",
    "REQUIRED",
    "TopicMap",
    "TopicMapError",
    "qos",
]


class TopicMapError(ValueError):
    """A topic map file that cannot be read or has unknown keys or bad values."""


@dataclass(frozen=True)
class TopicMap:
    """Where replay finds each input; ``None`` means the bag does not have it."""

    rgb: str = "/camera/color/image_raw"
    depth: str = "/camera/aligned_depth_to_color/image_raw"
    camera_info: str = "/camera/color/camera_info"
    instances: str | None = "/camera/instances/image_raw"
    labels: str | None = "/camera/instances/labels"
    tf: str = "/tf"
    tf_static: str | None = "/tf_static"
    joint_states: str | None = "/joint_states"
    world_frame: str = "map"
    camera_frame: str | None = None
    base_frame: str | None = "base_link"
    explicit: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """Keys the user's map set (a topic named there must exist in the bag)."""

    @classmethod
    def from_yaml(cls, path: str | Path) -> TopicMap:
        import yaml

        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise TopicMapError(f"cannot read topic map {p}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise TopicMapError(f"topic map {p} is not valid YAML: {e}") from None
        return cls.from_dict(raw if raw is not None else {}, source=str(p))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "topic map") -> TopicMap:
        if not isinstance(raw, dict):
            raise TopicMapError(f"{source} must be a mapping of keys to topic names, got {type(raw).__name__}")
        names = {f.name for f in fields(cls)} - {"explicit"}
        unknown = sorted(set(map(str, raw)) - names)
        if unknown:
            raise TopicMapError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if value is None or value == "":
                if key in REQUIRED or key == "world_frame":  # noqa: SIM114
                    raise TopicMapError(f"{source}: {key} is required and cannot be empty")
                values[key] = None
            elif not isinstance(value, str):
                raise TopicMapError(f"{source}: {key} must be a topic/frame name, got {value!r}")
            else:
                values[key] = value
        return cls(**values, explicit=tuple(sorted(values)))

    def topics(self) -> dict[str, str]:
        """``{role: topic}`` of the topics this map names (frames excluded)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in _NOT_TOPICS and getattr(self, f.name)}


_NOT_TOPICS = ("world_frame", "camera_frame", "base_frame", "explicit")

REQUIRED = ("rgb", "depth", "camera_info", "tf")
"""Roles replay cannot work without."""

FRAMES = {
    "world": "map",
    "base": "base_link",
    "camera_link": "camera_link",
    "camera_optical": "camera_color_optical_frame",
}

MNEMOBOT_TOPICS = {
    "instruction": "/mnemobot/instruction",
    "plan": "/mnemobot/plan",
    "skill": "/mnemobot/skill",
    "body": "/mnemobot/body",
    "site_map": "/mnemobot/site_map",
    "memory_ops": "/mnemobot/memory_ops",
    "memory_snapshot": "/mnemobot/memory_snapshot",
    "sensor_profile": "/mnemobot/sensor_profile",
    "scene_graph": "/mnemobot/scene_graph",
    "joint_command": "/mnemobot/command/joints",
    "base_command": "/mnemobot/command/base",
}


def qos(profile: str) -> list[Any]:
    """Offered QoS of one recorded topic: ``sensor`` | ``default`` | ``latched`` | ``tf``."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    depth, reliability, durability = {
        "sensor": (5, QosReliability.BEST_EFFORT, QosDurability.VOLATILE),
        "default": (10, QosReliability.RELIABLE, QosDurability.VOLATILE),
        "tf": (100, QosReliability.RELIABLE, QosDurability.VOLATILE),
        "latched": (1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL),
    }[profile]
    never = QosTime(0, 0)  # "not set": the rmw default (infinite)
    return [Qos(QosHistory.KEEP_LAST, depth, reliability, durability, never, never, QosLiveliness.AUTOMATIC,
                never, False)]
