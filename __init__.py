"""mnemobot: an embodied robot agent stack built around memory.

Subpackages (organs): :mod:`mnemobot.agent` (cortex: planner, orchestrator, CLI),
:mod:`mnemobot.perception` (senses), :mod:`mnemobot.memory` (hippocampus),
:mod:`mnemobot.control` (cerebellum skills and brainstem controllers),
:mod:`mnemobot.sim` (pybullet household world), :mod:`mnemobot.launch` (ROS 2 launch files).
"""

__version__ = "0.1.0"
