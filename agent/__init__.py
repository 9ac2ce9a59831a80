"""Cortex: planners, the orchestrator loop and the ``mnemobot`` command."""
