"""Learned action experts (the cerebellum's trained half): demonstrations and policies.

* :mod:`mnemobot.policy.dataset`: demonstrations in the LeRobot v3.0 dataset layout (written and
  read with pyarrow alone, so ``lerobot``'s ``LeRobotDataset`` opens them where it is installed).

Needs the ``learn`` extra (pyarrow, pillow; torch for the policies).
"""
