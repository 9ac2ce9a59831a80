"""The evaluation matrix: task families x seeds x conditions, parsed, validated and expanded.

Usage::

    matrix = Matrix.build(load_matrix_file("m.yaml"), {"seeds": "0-9", "memory": "on,off"})
    for spec in matrix.episodes():
        print(spec.key, spec.run_config())

Every value is checked before anything runs: an unknown family, planner, mode, injection, sensor
profile or policy, or a bad seed range, raises :class:`~mnemobot.agent.errors.UserError`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mnemobot.agent.errors import UserError

__all__ = [
    "CONDITION_COLUMNS",
    "MATRIX_KEYS",
    "PLANNERS",
    "POLICIES",
    "EpisodeSpec",
    "Matrix",
    "load_matrix_file",
    "parse_list",
    "parse_seeds",
]

PLANNERS = ("symbolic", "rule", "hf", "vlm", "openai")
"""Planner kinds ``RunConfig.planner`` accepts."""
POLICIES = ("skills", "learned")
"""Action experts ``RunConfig.policy`` accepts."""
MEMORY = ("on", "off")
CONDITION_COLUMNS = ("memory", "planner", "mode", "inject", "sensor_profile", "policy")
"""The condition axes of the matrix (besides family and seed), in table order."""
LIST_KEYS = ("families", "seeds", *CONDITION_COLUMNS)
SCALAR_KEYS = ("checkpoint", "model", "base_url", "width", "height", "steps_limit")
MATRIX_KEYS = LIST_KEYS + SCALAR_KEYS
"""Keys of a matrix file (``--matrix FILE.yaml``); ``sensor-profile`` and ``steps-limit`` are
accepted as spellings of ``sensor_profile`` and ``steps_limit``."""
MAX_EPISODES = 1_000_000


def parse_list(value: object, what: str) -> tuple[str, ...]:
    """A comma list (``"on,off"``) or a YAML list as a tuple of distinct non-empty strings, in order."""
    items: Iterable[object]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, (bool, int, float)):
        items = [value]
    else:
        raise UserError(f"{what}: expected a comma list, got {value!r}")
    out: list[str] = []
    for item in items:
        text = ("on" if item else "off") if isinstance(item, bool) else str(item).strip()
        if not text:
            continue
        if text not in out:
            out.append(text)
    if not out:
        raise UserError(f"{what}: the list is empty")
    return tuple(out)


def parse_seeds(value: object) -> tuple[int, ...]:
    """Seeds from ``"0-9"``, ``"0-4,7"``, ``3``, or a YAML list of numbers and ranges; sorted, distinct."""
    if isinstance(value, bool):
        raise UserError(f"--seeds: expected seeds like 0-9 or 0-4,7, got {value!r}")
    if isinstance(value, int):
        parts: list[str] = [str(value)]
    elif isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        raise UserError(f"--seeds: expected seeds like 0-9 or 0-4,7, got {value!r}")
    seeds: set[int] = set()
    for raw in parts:
        part = raw.strip()
        if not part:
            continue
        lo_text, sep, hi_text = part.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
        except ValueError:
            raise UserError(f"--seeds: {part!r} is not a seed or a range like 0-9") from None
        if not lo_text.strip() or lo < 0 or hi < 0:
            raise UserError(f"--seeds: seeds must be whole numbers >= 0, got {part!r}")
        if hi < lo:
            raise UserError(f"--seeds: the range {part!r} runs backwards")
        if hi - lo >= MAX_EPISODES:
            raise UserError(f"--seeds: the range {part!r} is too long")
        seeds.update(range(lo, hi + 1))
    if not seeds:
        raise UserError("--seeds: no seeds given")
    return tuple(sorted(seeds))


def load_matrix_file(path: str | Path) -> dict[str, Any]:
    """The keys of a matrix YAML file (:data:`MATRIX_KEYS`); an unreadable file or unknown key is a
    :class:`UserError`."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise UserError(f"cannot read the matrix file {p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UserError(f"the matrix file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"the matrix file {p} must be a mapping of keys ({', '.join(MATRIX_KEYS)})")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in MATRIX_KEYS:
            raise UserError(f"the matrix file {p}: unknown key {key!r}; known: {', '.join(MATRIX_KEYS)}")
        out[name] = value
    return out


def _profile_tag(profile: str) -> str:
    """A profile's name, or ``<stem>-<crc>`` of a FILE.yaml (a key must not hold a path)."""
    if profile.endswith((".yaml", ".yml")):
        return f"{Path(profile).stem}-{zlib.crc32(profile.encode()) & 0xFFFF:04x}"
    return profile


@dataclass(frozen=True)
class EpisodeSpec:
    """One cell of the matrix: a family, a seed and one value of every condition."""

    family: str
    seed: int
    memory: str
    planner: str
    mode: str
    inject: str
    sensor_profile: str
    policy: str
    checkpoint: str | None = None
    model: str | None = None
    base_url: str | None = None
    width: int = 320
    height: int = 240
    steps_limit: int | None = None

    @property
    def key(self) -> str:
        """Unique, file-name-safe id of the episode within its matrix."""
        return ".".join([self.family, f"s{self.seed}", f"mem-{self.memory}", self.planner, self.mode,
                         self.inject, _profile_tag(self.sensor_profile), self.policy])

    def conditions(self) -> dict[str, object]:
        """The condition columns of the episode's row."""
        return {"family": self.family, "seed": self.seed, **{c: getattr(self, c) for c in CONDITION_COLUMNS}}

    def run_config_kwargs(self) -> dict[str, object]:
        """Keyword arguments of :class:`~mnemobot.agent.episode.RunConfig` (JSON-safe)."""
        return {"task_id": self.family, "seed": self.seed, "memory": self.memory == "on", "planner": self.planner,
                "mode": self.mode, "inject": self.inject, "sensor_profile": self.sensor_profile,
                "policy": self.policy, "checkpoint": self.checkpoint, "model": self.model,
                "base_url": self.base_url, "width": self.width, "height": self.height,
                "steps_limit": self.steps_limit, "agent": "planner"}

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Matrix:
    """Families x seeds x conditions; build with :meth:`build`, which validates every value."""

    families: tuple[str, ...] = ("place",)
    seeds: tuple[int, ...] = (0,)
    memory: tuple[str, ...] = ("on",)
    planner: tuple[str, ...] = ("symbolic",)
    mode: tuple[str, ...] = ("tree",)
    inject: tuple[str, ...] = ("none",)
    sensor_profile: tuple[str, ...] = ("ideal",)
    policy: tuple[str, ...] = ("skills",)
    checkpoint: str | None = None
    model: str | None = None
    base_url: str | None = None
    width: int = 320
    height: int = 240
    steps_limit: int | None = None
    extra: dict[str, object] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, *layers: Mapping[str, Any]) -> Matrix:
        """The matrix of the given key layers (a matrix file, then the command line's flags: later
        layers override earlier ones; a None value is "not given"), validated."""
        merged: dict[str, Any] = {}
        for layer in layers:
            for key, value in layer.items():
                if value is not None:
                    merged[key.replace("-", "_")] = value
        unknown = sorted(set(merged) - set(MATRIX_KEYS))
        if unknown:
            raise UserError(f"unknown matrix key(s): {', '.join(unknown)}; known: {', '.join(MATRIX_KEYS)}")
        m = cls()
        if "families" in merged:
            m.families = parse_list(merged["families"], "--families")
        if "seeds" in merged:
            m.seeds = parse_seeds(merged["seeds"])
        flags = {"memory": "--memory", "planner": "--planner", "mode": "--mode", "inject": "--inject",
                 "sensor_profile": "--sensor-profile", "policy": "--policy"}
        for key, flag in flags.items():
            if key in merged:
                setattr(m, key, parse_list(merged[key], flag))
        for key in ("checkpoint", "model", "base_url"):
            if key in merged:
                setattr(m, key, str(merged[key]))
        for key in ("width", "height", "steps_limit"):
            if key in merged:
                setattr(m, key, _positive(merged[key], "--" + key.replace("_", "-")))
        m.validate()
        return m

    def validate(self) -> None:
        """Check every value against what the episode code accepts; raise :class:`UserError`."""
        from mnemobot.agent.orchestrator import MODES
        from mnemobot.perception.sensor import PROFILES
        from mnemobot.sim.inject import INJECTIONS
        from mnemobot.sim.tasks import TASK_FAMILIES

        def check(values: Iterable[str], known: Iterable[str], what: str) -> None:
            known = tuple(known)
            bad = [v for v in values if v not in known]
            if bad:
                raise UserError(f"unknown {what} {', '.join(map(repr, bad))}; known: {', '.join(known)}")

        check(self.families, sorted(TASK_FAMILIES), "task family")
        check(self.memory, MEMORY, "--memory value")
        check(self.planner, PLANNERS, "planner")
        check(self.mode, MODES, "mode")
        check(self.inject, INJECTIONS, "injection")
        check(self.policy, POLICIES, "policy")
        from mnemobot.agent.episode import resolve_sensor

        for profile in self.sensor_profile:
            if profile not in PROFILES and not profile.endswith((".yaml", ".yml")):
                raise UserError(f"unknown sensor profile {profile!r}; known: {', '.join(PROFILES)} or a FILE.yaml")
            resolve_sensor(profile)  # a bad FILE.yaml is named now, not in every episode
        if "learned" in self.policy:
            if self.checkpoint is None:
                raise UserError("--policy learned needs --checkpoint CKPT (written by 'mnemobot train')")
            if not Path(self.checkpoint).is_dir():
                raise UserError(f"--checkpoint {self.checkpoint}: no such checkpoint folder")
        elif self.checkpoint is not None:
            raise UserError("--checkpoint is for --policy learned")
        if "openai" in self.planner and not self.base_url:
            raise UserError("--planner openai needs --base-url URL (an OpenAI-compatible endpoint)")
        if len(self) > MAX_EPISODES:
            raise UserError(f"the matrix has {len(self)} episodes; at most {MAX_EPISODES}")

    def __len__(self) -> int:
        n = len(self.families) * len(self.seeds)
        for c in CONDITION_COLUMNS:
            n *= len(getattr(self, c))
        return n

    def episodes(self) -> list[EpisodeSpec]:
        """Every episode, conditions varying fastest, then seeds, then families."""
        axes = [getattr(self, c) for c in CONDITION_COLUMNS]
        return [EpisodeSpec(family, seed, *combo, checkpoint=self.checkpoint, model=self.model,
                            base_url=self.base_url, width=self.width, height=self.height,
                            steps_limit=self.steps_limit)
                for family in self.families for seed in self.seeds for combo in itertools.product(*axes)]

    def to_dict(self) -> dict[str, object]:
        """The matrix as written to ``eval.json`` (seeds as a list of numbers)."""
        d: dict[str, object] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        del d["extra"]
        return d

    def identity(self) -> str:
        """A digest of what the results depend on (order of list values does not matter)."""
        d = self.to_dict()
        canon = {k: sorted(map(str, v)) if isinstance(v, list) else v for k, v in d.items()}
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Matrix:
        """A matrix read back from ``eval.json`` (not validated again)."""
        m = cls()
        for key in MATRIX_KEYS:
            if key in d:
                value = d[key]
                setattr(m, key, tuple(value) if isinstance(value, list) else value)
        return m


def _positive(value: object, what: str) -> int:
    try:
        n = int(str(value))
    except ValueError:
        raise UserError(f"{what}: expected a whole number, got {value!r}") from None
    if n <= 0:
        raise UserError(f"{what}: expected a number > 0, got {n}")
    return n
