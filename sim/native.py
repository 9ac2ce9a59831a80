"""Keeping pybullet's native console output off the user's terminal."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

__all__ = ["quiet_native_output"]

@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence what pybullet's C code prints on the process's stdout/stderr (build time, argv,
    URDF importer warnings), unless ``MNEMOBOT_SIM_VERBOSE=1``."""
    if os.environ.get("MNEMOBOT_SIM_VERBOSE") == "1":
        yield
        return
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
