"""Errors the CLI reports as a one-line message (exit code 2) instead of a traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user: an unknown task, object or place, or an unusable option."""
