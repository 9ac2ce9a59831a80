"""A llama-cpp-python server process on a loopback port: :func:`start_llama_server`."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mnemobot.agent.llm.base import EndpointError, LLMError, _one_line
from mnemobot.agent.llm.endpoint import OpenAIChatModel
from mnemobot.agent.llm.gguf import NO_SYSTEM_ROLE, llama_chat_format


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
