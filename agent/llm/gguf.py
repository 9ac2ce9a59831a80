"""GGUF headers: :func:`gguf_metadata` reads a file's key/value metadata and
:func:`llama_chat_format` picks the chat format a llama.cpp server needs for it."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnemobot.agent.llm.base import LLMError

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_metadata(path: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (arrays are skipped: their value is ``None``).

    Reads only the header, seeking past arrays such as the tokenizer's vocabulary, so it takes
    milliseconds where loading the model takes seconds. ``keys``: stop once these are read.
    Raises :class:`LLMError` for a file that is not GGUF or is truncated.
    """
    path = Path(path).expanduser()
    want = set(keys) if keys is not None else None
    out: dict[str, Any] = {}
    try:
        with open(path, "rb") as f:
            def read(fmt: str) -> Any:
                size = struct.calcsize(fmt)
                raw = f.read(size)
                if len(raw) != size:
                    raise LLMError(f"{path}: truncated GGUF header")
                return struct.unpack(fmt, raw)[0]

            def string() -> str:
                n = read("<Q")
                if n > 1 << 28:
                    raise LLMError(f"{path}: corrupt GGUF header (a {n}-byte string)")
                raw = f.read(n)
                if len(raw) != n:
                    raise LLMError(f"{path}: truncated GGUF header")
                return raw.decode("utf-8", errors="replace")

            def skip_array() -> None:
                kind, n = read("<I"), read("<Q")
                if kind in _GGUF_SCALARS:
                    f.seek(struct.calcsize(_GGUF_SCALARS[kind]) * n, os.SEEK_CUR)
                elif kind == _GGUF_STRING:
                    for _ in range(n):
                        f.seek(read("<Q"), os.SEEK_CUR)
                elif kind == _GGUF_ARRAY:
                    for _ in range(n):
                        skip_array()
                else:
                    raise LLMError(f"{path}: corrupt GGUF header (array of type {kind})")

            if f.read(4) != b"GGUF":
                raise LLMError(f"{path} is not a GGUF file")
            version = read("<I")
            if version < 2:
                raise LLMError(f"{path}: GGUF version {version} is not supported (2 or newer)")
            read("<Q")  # tensor count
            for _ in range(read("<Q")):
                key, kind = string(), read("<I")
                if kind in _GGUF_SCALARS:
                    value: Any = read(_GGUF_SCALARS[kind])
                elif kind == _GGUF_STRING:
                    value = string()
                elif kind == _GGUF_ARRAY:
                    skip_array()
                    value = None
                else:
                    raise LLMError(f"{path}: corrupt GGUF header (value of type {kind})")
                out[key] = value
                if want is not None and want <= out.keys():
                    break
    except OSError as e:
        raise LLMError(f"cannot read {path}: {e.strerror or e}") from None
    return out


# llama-cpp-python chat formats for GGUF files without a chat template, by architecture prefix
_CHAT_FORMATS = (("gemma", "gemma"), ("qwen", "qwen"), ("mistral", "mistral-instruct"), ("llama", "llama-2"))


def llama_chat_format(path: str | os.PathLike) -> str | None:
    """The ``--chat_format`` a llama-cpp-python server needs for a GGUF: None when the file carries
    its own chat template (the server applies it), else a format by architecture (``gemma`` for
    Gemma, whose format has no system role), else ``chatml``."""
    meta = gguf_metadata(path)
    if isinstance(meta.get("tokenizer.chat_template"), str) and meta["tokenizer.chat_template"].strip():
        return None
    arch = str(meta.get("general.architecture") or "").lower()
    return next((fmt for prefix, fmt in _CHAT_FORMATS if arch.startswith(prefix)), "chatml")


# chat formats whose prompt has no system turn: the planner puts its system text in the first user turn
NO_SYSTEM_ROLE = frozenset({"gemma", "mistral-instruct"})
