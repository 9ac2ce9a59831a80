"""World: the simulated household (pybullet), its task families and gymnasium environments.

Importing this package registers the environments; pybullet is imported only when one is made
(``gymnasium.make``), so this package imports without the ``sim`` extra. Without pybullet,
making an environment raises ImportError naming the extra: ``pip install 'mnemobot[sim]'``.

Environments (``gymnasium.make(id, **EnvConfig fields)``):

* ``mnemobot/Household-v0``: task family chosen by the ``task`` keyword (default ``"place"``);
* ``mnemobot/HouseholdPlace-v0``, ``mnemobot/HouseholdFetch-v0``, ``mnemobot/HouseholdMemory-v0``, ``mnemobot/HouseholdRecall-v0``;
* in the one-room workcell (memory-dependent manipulation, MemoryBench-style):
  ``mnemobot/WorkcellReopenDrawer-v0``, ``mnemobot/WorkcellPutBlockBack-v0``, ``mnemobot/WorkcellRearrange-v0``.
"""

from __future__ import annotations

import importlib.util

import gymnasium

__all__ = ["ENV_IDS", "PYBULLET_AVAILABLE", "register_envs"]



def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


PYBULLET_AVAILABLE = _available("pybullet")
"""Whether the ``sim`` extra (pybullet) is installed."""

_ENTRY_POINT = "mnemobot.sim.env:HouseholdEnv"

ENV_IDS: dict[str, dict[str, str]] = {
    "mnemobot/Household-v0": {},
    "mnemobot/HouseholdPlace-v0": {"task": "place"},
    "mnemobot/HouseholdFetch-v0": {"task": "fetch"},
    "mnemobot/HouseholdMemory-v0": {"task": "memory"},
    "mnemobot/HouseholdRecall-v0": {"task": "recall"},
    "mnemobot/WorkcellReopenDrawer-v0": {"task": "reopen_drawer"},
    "mnemobot/WorkcellPutBlockBack-v0": {"task": "put_block_back"},
    "mnemobot/WorkcellRearrange-v0": {"task": "rearrange"},
}
"""Registered environment ids and their fixed keyword arguments."""


def register_envs() -> None:
    """Register the household environments with gymnasium (idempotent)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(env_id, entry_point=_ENTRY_POINT, kwargs=dict(kwargs))


register_envs()
