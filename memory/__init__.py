"""Hippocampus: scene-graph long-term memory, short-term object-state memory, episodic store.

Memory is built from perception only; it never reads simulator ground truth.
"""
