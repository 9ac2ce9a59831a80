"""Chat-model backends for the cortex planners.

Every backend answers ``chat(messages, ...) -> ChatReply`` with token counts and latency, so the
orchestrator can account for the cost of each decision:

- :class:`HFChatModel`: a local causal LM through transformers (a folder, or a GGUF file that
  transformers dequantises), using the tokenizer's chat template.
- :class:`HFVisionChatModel`: a local image-text-to-text model; camera images reach the prompt.
- :class:`OpenAIChatModel`: any OpenAI-compatible ``/chat/completions`` endpoint (a llama.cpp
  server, vLLM, ...), with JSON-schema constrained output where the server supports it.

Helpers: :func:`start_llama_server` runs a llama-cpp-python server on a loopback port,
:func:`gguf_metadata` and :func:`llama_chat_format` read a GGUF header, and
:func:`local_model_paths` finds the small GGUF models that ship as Python packages.

Modules: :mod:`~mnemobot.agent.llm.base` (the contract: :class:`ChatReply`, :class:`ChatModel`,
the errors, message checks, the JSON-schema instruction, :func:`json_end`),
:mod:`~mnemobot.agent.llm.hf` (transformers), :mod:`~mnemobot.agent.llm.endpoint` (HTTP
endpoint), :mod:`~mnemobot.agent.llm.images` (PNG encoding), :mod:`~mnemobot.agent.llm.gguf`
(GGUF headers), :mod:`~mnemobot.agent.llm.llama_server` (the server process) and
:mod:`~mnemobot.agent.llm.models` (packaged models).

Nothing here downloads: models load from local paths only (``local_files_only=True``).
torch and transformers are imported only by the backends that need them.
"""

from __future__ import annotations

from mnemobot.agent.llm.base import (
    ROLES,
    ChatModel,
    ChatReply,
    EndpointError,
    LLMError,
    json_end,
    schema_instruction,
)
from mnemobot.agent.llm.endpoint import OpenAIChatModel
from mnemobot.agent.llm.gguf import NO_SYSTEM_ROLE, gguf_metadata, llama_chat_format
from mnemobot.agent.llm.hf import HFChatModel, HFVisionChatModel
from mnemobot.agent.llm.llama_server import LlamaServer, start_llama_server
from mnemobot.agent.llm.models import SMOLLM2_FILE, default_model_cache, local_model_paths

__all__ = [
    "NO_SYSTEM_ROLE",
    "ROLES",
    "SMOLLM2_FILE",
    "ChatModel",
    "ChatReply",
    "EndpointError",
    "HFChatModel",
    "HFVisionChatModel",
    "LLMError",
    "LlamaServer",
    "OpenAIChatModel",
    "default_model_cache",
    "gguf_metadata",
    "json_end",
    "llama_chat_format",
    "local_model_paths",
    "schema_instruction",
    "start_llama_server",
]
