"""``mnemobot serve-model``: serve a local GGUF model on an OpenAI-compatible endpoint.

One command gives ``mnemobot run --planner openai`` (or any other client) a local chat endpoint,
with no network::

    mnemobot serve-model gemma3-270m --port 8080
    mnemobot run --task-id place --planner openai --base-url http://127.0.0.1:8080/v1 \\
        --planner-option system_role=false

``MODEL`` is a GGUF file or the name of a model that ships as a Python package
(``gemma3-270m``, ``smollm2-135m``). The server is llama-cpp-python's; the chat format comes
from the file (see :func:`~mnemobot.agent.llm.llama_chat_format`). It runs in the foreground
until Ctrl-C or SIGTERM, and the process is always stopped on the way out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mnemobot.agent.errors import UserError

__all__ = ["add_serve_parser", "cmd_serve", "resolve_model"]

POLL_S = 0.5


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve-model",
        help="serve a local GGUF model on an OpenAI-compatible endpoint (llama.cpp)",
        description="Serve a local GGUF chat model with llama-cpp-python's OpenAI-compatible server, in the "
                    "foreground until Ctrl-C, for 'mnemobot run --planner openai --base-url URL'.",
    )
    p.add_argument("model", help="a .gguf file, or a packaged model: gemma3-270m, smollm2-135m")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)")
    p.add_argument("--ctx", type=int, default=2048, help="context length in tokens (default: 2048)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)")
    p.add_argument("--chat-format", default="auto",
                   help="llama-cpp-python chat format; 'auto' (default) uses the file's template, or one "
                        "for its architecture when it has none")
    p.add_argument("--startup-timeout", type=float, default=120.0,
                   help="seconds to wait for the server to answer (default: 120)")
    p.add_argument("--log", type=Path, default=None, metavar="FILE",
                   help="write the server's output here (default: a temporary file, kept only on failure)")


def resolve_model(name: str) -> Path:
    """A GGUF path from a file name or a packaged model's name; :class:`UserError` otherwise."""
    from mnemobot.agent.llm import local_model_paths

    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists():
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        return path
    try:
        packaged = local_model_paths()
    except Exception as e:  # noqa: BLE001 - assembling a packaged model failed (disk full, bad part)
        raise UserError(str(e)) from None
    if name not in packaged:
        raise UserError(f"unknown model {name!r}: give a .gguf file or one of {', '.join(sorted(packaged))}")
    if packaged[name] is None:
        raise UserError(f"{name} is not installed: install mnemobot[llm]")
    return Path(packaged[name])


def cmd_serve(args: argparse.Namespace) -> int:
    from mnemobot.agent.llm import LLMError, start_llama_server

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535, got {args.port}")
    if args.ctx <= 0:
        raise UserError(f"--ctx must be > 0, got {args.ctx}")
    path = resolve_model(args.model)
    chat_format = None if args.chat_format in ("", "none") else args.chat_format
    try:
        with start_llama_server(path, port=args.port or None, ctx=args.ctx, timeout_s=args.startup_timeout,
                                threads=args.threads, log_path=args.log, chat_format=chat_format,
                                host=args.host) as url:
            fmt = url.chat_format or "the model file's template"
            print(f"serving {path.name} at {url} (chat format: {fmt}); Ctrl-C stops it", flush=True)
            hint = "" if url.system_role else " --planner-option system_role=false"
            print(f"plan with it: mnemobot run --planner openai --base-url {url}{hint}", flush=True)
            while (code := url.process.poll()) is None:
                time.sleep(POLL_S)
            raise UserError(f"the server stopped with exit code {code}"
                            + (f" (log {args.log})" if args.log else ""))
    except LLMError as e:
        raise UserError(str(e)) from None
