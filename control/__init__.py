"""Cerebellum (skills, action expert) and brainstem (IK, joint PD, gripper, base, limits, e-stop)."""
