"""The chat-model contract shared by every backend: :class:`ChatReply`, the :class:`ChatModel`
protocol, the errors, the checks of messages and images, the JSON-schema instruction for backends
that cannot constrain decoding, and :func:`json_end`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

ROLES = ("system", "user", "assistant")


# ----------------------------------------------------------------------------------------------
# Contract
# ----------------------------------------------------------------------------------------------
@dataclass
class ChatReply:
    """One answer of a chat model and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str
    finish_reason: str | None  # "stop" (end of turn), "length" (max_tokens reached) or the server's word


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: OpenAI-style messages in, one reply out."""

    name: str

    def chat(
        self,
        messages: list[dict],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        images: Sequence[np.ndarray] = (),
    ) -> ChatReply: ...


class LLMError(RuntimeError):
    """A chat backend cannot answer: model missing, bad path, unusable model, server failure."""


class EndpointError(LLMError):
    """An HTTP chat endpoint failed: unreachable, timed out, HTTP error or malformed response."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------
def _check_messages(messages: Sequence[dict]) -> list[dict]:
    if not messages:
        raise ValueError("messages is empty")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be {{'role': one of {ROLES}, 'content': str}}, got {m!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, img in enumerate(images):
        a = np.asarray(img)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"image {i} must be an HxWx3 uint8 array, got shape {a.shape} dtype {a.dtype}")
        out.append(np.ascontiguousarray(a))
    return out


def schema_instruction(schema: dict) -> str:
    """The instruction appended to the system prompt of backends that cannot constrain decoding."""
    return (
        "Answer with one JSON object that matches this JSON schema, and nothing else "
        "(no prose, no code fences):\n" + json.dumps(schema, separators=(",", ":"), sort_keys=True)
    )


def _with_schema(messages: list[dict], schema: dict | None) -> list[dict]:
    """Append the JSON instruction to the system prompt (adding one if there is none)."""
    if schema is None:
        return messages
    note = schema_instruction(schema)
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0])
        first["content"] = (first["content"].rstrip() + "\n\n" + note) if first["content"].strip() else note
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def _one_line(text: str, limit: int = 200) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _word_count(text: str) -> int:
    return len(text.split())


def json_end(text: str) -> int | None:
    """Index just past the first complete top-level JSON object or array in ``text`` (braces and
    brackets balanced outside strings), or None while it is still open or has not begun."""
    depth, in_str, esc, started = 0, False, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = started
        elif ch in "{[":
            depth, started = depth + 1, True
        elif ch in "}]" and started:
            depth -= 1
            if depth == 0:
                return i + 1
    return None
