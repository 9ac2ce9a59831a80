"""Shared test fixtures."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class _Scripted(BaseHTTPRequestHandler):
    """Answers POSTs from a script of (status, body) pairs (the last entry repeats); records the
    JSON requests."""

    script: list[tuple[int, bytes]]
    seen: list[dict]

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length", 0))
        self.seen.append(json.loads(self.rfile.read(length)))
        status, body = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def scripted() -> Iterator:
    """A real loopback HTTP server per call: ``url, seen = scripted((200, body), ...)``."""
    servers = []

    def start(*script: tuple[int, bytes]) -> tuple[str, list[dict]]:
        seen: list[dict] = []
        handler = type("H", (_Scripted,), {"script": list(script), "seen": seen})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1", seen

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture()
def silent_url() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_hold() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(timeout=5)
        for s in held:
            s.close()
        listener.close()


@pytest.fixture(scope="session")
def build_tiny_vlm() -> Callable[..., Path]:
    """``tests/tiny_models.py``'s builder of a tiny vision-language model (random weights, offline)."""
    spec = importlib.util.spec_from_file_location("tiny_models", Path(__file__).with_name("tiny_models.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_vlm
