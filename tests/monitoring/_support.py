"""Helpers for the monitoring tests: waiting on conditions, records, a switchable TCP proxy."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from konan.monitoring.stream import PredictionRecord


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``condition`` until it is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def record(
    i: int,
    deployment_id: int,
    model_version_id: int | None = None,
    *,
    role: str = "champion",
    at: float = 1_700_000_000.0,
) -> PredictionRecord:
    return {
        "request_id": f"req-{i:06d}",
        "deployment_id": deployment_id,
        "model_version_id": model_version_id,
        "role": role,  # type: ignore[typeddict-item]
        "at": at + i,
        "inputs": [{"tenure": i, "plan": "pro"}],
        "outputs": {"predictions": [i % 2], "probabilities": [[0.25, 0.75]]},
        "latency_ms": 1.5,
        "status_code": 200,
        "error": None,
    }


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a real server. Until `start`, the port refuses connections,
    which is what a client sees when the server is down; `stop` cuts every connection."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = port or free_port()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._peers: dict[socket.socket, socket.socket] = {}

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None

    def _loop(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _ in sel.select(timeout=0.05):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if sock is self._listener:
                        self._accept(sel)
                    else:
                        self._forward(sel, sock)
        finally:
            for sock in list(self._peers):
                self._drop(sel, sock)
            sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        client, _ = self._listener.accept()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(True)
            sock.settimeout(5)
            sel.register(sock, selectors.EVENT_READ)
        self._peers[client] = upstream
        self._peers[upstream] = client

    def _forward(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        self._drop(sel, sock)

    def _drop(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._peers.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(s)
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
