"""transformers backends: :class:`HFChatModel` (a local causal LM, a folder or a GGUF file) and
:class:`HFVisionChatModel` (a local image-text-to-text model). torch and transformers are imported
only when a model loads or generates."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnemobot.agent.llm.base import (
    ChatReply,
    LLMError,
    _check_images,
    _check_messages,
    _one_line,
    _with_schema,
    json_end,
)


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
