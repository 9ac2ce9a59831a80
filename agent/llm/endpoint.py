"""The client of an OpenAI-compatible ``/chat/completions`` endpoint (standard library HTTP only)."""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import numpy as np

from mnemobot.agent.llm.base import (
    ChatReply,
    EndpointError,
    LLMError,
    _check_images,
    _check_messages,
    _one_line,
    _word_count,
)
from mnemobot.agent.llm.images import _png_bytes


class _Retryable(Exception):
    """A failure before the request reached the server (safe to send again)."""


class OpenAIChatModel:
    """Client of an OpenAI-compatible ``/chat/completions`` endpoint (standard library HTTP only).

    Every wait is bounded: ``connect_timeout_s`` to connect, ``timeout_s`` for the answer (a total
    deadline, also across a slowly trickling body). Connection failures and HTTP 502/503/504 are
    retried ``retries`` times; a timed-out answer is not. Failures raise :class:`EndpointError`.

    With ``schema`` the request asks for JSON-schema constrained output in OpenAI's form; when the
    server rejects that form it is retried once in llama.cpp's form (``{"type": "json_object",
    "schema": ...}``) and the form that works is remembered.
    """

    vision = True  # images go out as data URLs; whether the served model sees them is the server's matter

    def __init__(self, base_url: str, model: str = "local", api_key: str | None = None, timeout_s: float = 30.0,
                 connect_timeout_s: float = 3.0, retries: int = 1, retry_backoff_s: float = 0.25) -> None:
        parts = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LLMError(f"endpoint URL must be http(s)://host[:port][/path]: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._parts = parts
        self.name = model
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.retries = max(0, int(retries))
        self.retry_backoff_s = float(retry_backoff_s)
        self.schema_mode = "json_schema"  # becomes "json_object" once a server rejects the OpenAI form

    # -- HTTP ------------------------------------------------------------------------------------
    def _request_once(self, method: str, path: str, body: bytes | None) -> tuple[int, str, bytes]:
        url = self.base_url + path
        p = self._parts
        conn_cls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(p.hostname, p.port, timeout=self.connect_timeout_s)
        headers = {"Accept": "application/json", "Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            try:
                conn.connect()
            except TimeoutError as e:
                raise _Retryable(f"{url}: connect timed out after {self.connect_timeout_s:g} s") from e
            except ConnectionRefusedError as e:
                raise _Retryable(f"{url}: connection refused") from e
            except OSError as e:
                raise _Retryable(f"{url}: cannot connect ({_one_line(str(e) or type(e).__name__)})") from e
            deadline = time.monotonic() + self.timeout_s
            target = (p.path or "") + path
            sock = conn.sock  # http.client drops conn.sock once the answer is read; the socket stays open
            try:
                sock.settimeout(self.timeout_s)
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                chunks = []
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    sock.settimeout(left)
                    block = resp.read1(65536)
                    if not block:
                        break
                    chunks.append(block)
                return resp.status, resp.reason, b"".join(chunks)
            except TimeoutError as e:
                raise EndpointError(f"{url}: no answer within {self.timeout_s:g} s (timeout)", url=url) from e
            except ConnectionResetError as e:
                raise _Retryable(f"{url}: connection reset by the server") from e
            except (http.client.HTTPException, OSError) as e:
                reason = _one_line(str(e) or type(e).__name__)
                raise EndpointError(f"{url}: request failed ({type(e).__name__}: {reason})", url=url) from e
        finally:
            conn.close()

    def _request(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
        url = self.base_url + path
        body = None if payload is None else json.dumps(payload).encode()
        for attempt in range(self.retries + 1):
            try:
                status, reason, data = self._request_once(method, path, body)
            except _Retryable as e:
                if attempt < self.retries:
                    time.sleep(self.retry_backoff_s * (attempt + 1))
                    continue
                raise EndpointError(str(e), url=url) from e
            if status in (502, 503, 504) and attempt < self.retries:
                time.sleep(self.retry_backoff_s * (attempt + 1))
                continue
            text = data.decode("utf-8", errors="replace")
            if status >= 400:
                raise EndpointError(f"{url}: HTTP {status} {reason}: {_one_line(text)}", url=url, status=status)
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                raise EndpointError(f"{url}: HTTP {status} answer is not a JSON object: {_one_line(text) or '(empty)'}",
                                    url=url, status=status)
            return status, obj
        raise AssertionError("unreachable")  # pragma: no cover

    # -- API -------------------------------------------------------------------------------------
    def list_models(self) -> list[str]:
        """Ids the server reports at ``GET /models``."""
        _, obj = self._request("GET", "/models")
        return [str(m.get("id")) for m in obj.get("data", []) if isinstance(m, dict)]

    def _response_format(self, schema: dict) -> dict:
        if self.schema_mode == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "plan", "schema": schema, "strict": True}}

    @staticmethod
    def _messages(messages: list[dict], images: list[np.ndarray]) -> list[dict]:
        if not images:
            return messages
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None:
            raise ValueError("images need a user message to attach to")
        out = list(messages)
        parts: list[dict] = [
            {"type": "image_url",
             "image_url": {"url": "data:image/png;base64," + base64.b64encode(_png_bytes(a)).decode("ascii")}}
            for a in images
        ]
        parts.append({"type": "text", "text": messages[last_user]["content"]})
        out[last_user] = {"role": "user", "content": parts}
        return out

    def chat(self, messages: list[dict], *, schema: dict | None = None, max_tokens: int = 256,
             temperature: float = 0.0, seed: int | None = None, images: Sequence[np.ndarray] = ()) -> ChatReply:
        msgs = _check_messages(messages)
        payload: dict[str, Any] = {
            "model": self.name,
            "messages": self._messages(msgs, _check_images(images)),
            "max_tokens": int(max_tokens),
            "temperature": float(temperature),
        }
        if seed is not None:
            payload["seed"] = int(seed)
        t0 = time.perf_counter()
        if schema is None:
            _, obj = self._request("POST", "/chat/completions", payload)
        else:
            payload["response_format"] = self._response_format(schema)
            try:
                _, obj = self._request("POST", "/chat/completions", payload)
            except EndpointError as e:
                msg = str(e).lower()
                rejected = e.status is not None and 400 <= e.status < 600 and (
                    "response_format" in msg or "json_schema" in msg)
                if not rejected or self.schema_mode == "json_object":
                    raise
                self.schema_mode = "json_object"
                payload["response_format"] = self._response_format(schema)
                _, obj = self._request("POST", "/chat/completions", payload)
        latency = time.perf_counter() - t0
        url = self.base_url + "/chat/completions"
        try:
            choice = obj["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise EndpointError(f"{url}: malformed chat completion ({_one_line(json.dumps(obj))})", url=url) from e
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        n_prompt = usage.get("prompt_tokens")
        n_done = usage.get("completion_tokens")
        if not isinstance(n_prompt, int):
            n_prompt = sum(_word_count(m["content"]) for m in msgs)
        if not isinstance(n_done, int):
            n_done = _word_count(text)
        model = obj.get("model") if isinstance(obj.get("model"), str) else self.name
        return ChatReply(text, n_prompt, n_done, latency, model, choice.get("finish_reason"))
