"""TEST DOUBLE of the model server's *process interface* — not a model server.

It stands in for ``python -m konan.serving`` in the runtime tests while that module is not
there (and for behaviour the real one should not grow, like holding requests open). It
implements only what the agent relies on:

    model_server_double.py --spec PATH --host H --port P [--reuse-port] --admin-port A

* the admin port answers at once: /healthz, /readyz (200 once "loaded", else 503
  {"status", "reason"}), /stats ({"revision", "ready", "in_flight", "requests_total",
  "error"}), /metrics;
* the public port is bound (SO_REUSEPORT) only once the first revision is loaded, and serves
  the same endpoints plus ``POST /predict``;
* the spec file is polled; a new revision "loads" (sleeps) and is swapped in when ready;
* SIGTERM: unready, stop accepting, finish in-flight requests, exit 0.

Knobs, read from the environment (the runtime passes them through env.json):

* ``KONAN_TEST_DOUBLE_LOAD_SECONDS`` — time to "load" a revision (default 0.2);
* ``KONAN_TEST_DOUBLE_FAIL`` — ``load_error`` / ``artifact_missing``: never becomes ready;
* ``KONAN_TEST_DOUBLE_EXIT_CODE`` — exit at once with this code (a crash loop);
* ``KONAN_TEST_DOUBLE_IGNORE_TERM`` — ignore SIGTERM (the agent must SIGKILL it);
* ``KONAN_TEST_DOUBLE_HANG_AFTER`` — after this many seconds stop answering on the admin port
  while the process lives on (a hung server);
* a ``X-Test-Sleep: <seconds>`` header on /predict holds the request open (in-flight load).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.revision: int | None = None
        self.champion: int | None = None
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self.requests_total = 0
        self.error: str | None = None


STATE = State()


def log(message: str) -> None:
    print(f"model-server-double[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "model-server-double"

    def log_message(self, format: str, *args: Any) -> None:  # quiet access log
        return

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        with STATE.lock:
            ready = STATE.ready and not STATE.draining
            stats = {
                "revision": STATE.revision,
                "ready": ready,
                "in_flight": STATE.in_flight,
                "requests_total": STATE.requests_total,
                "error": STATE.error,
            }
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path == "/readyz":
            if ready:
                self._send(200, {"status": "ready", "revision": stats["revision"]})
            else:
                reason = "draining" if STATE.draining else (STATE.error or "loading")
                self._send(503, {"status": "unready", "reason": reason})
        elif self.path == "/stats":
            self._send(200, stats)
        elif self.path == "/metrics":
            raw = f"konan_double_in_flight {stats['in_flight']}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        else:
            self._send(404, {"detail": "not found"})

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._send(404, {"detail": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with STATE.lock:
            STATE.in_flight += 1
            STATE.requests_total += 1
        try:
            time.sleep(float(self.headers.get("X-Test-Sleep") or 0))
            with STATE.lock:
                revision, champion = STATE.revision, STATE.champion
            rows = body.get("inputs") or []
            self._send(
                200,
                {
                    "predictions": [0 for _ in rows],
                    "model_version": champion,
                    "revision": revision,
                    "pid": os.getpid(),
                },
            )
        finally:
            with STATE.lock:
                STATE.in_flight -= 1


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for in-flight requests
    reuse_port = False

    def __init__(self, host: str, port: int, reuse_port: bool) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.reuse_port = reuse_port
        super().__init__((host, port), Handler)

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def read_spec(path: Path) -> tuple[int, int]:
    data = json.loads(path.read_bytes())
    return int(data["revision"]), int(data["traffic"]["champion"])


def watch_spec(path: Path, loaded: threading.Event, stop: threading.Event) -> None:
    load_seconds = float(os.environ.get("KONAN_TEST_DOUBLE_LOAD_SECONDS", "0.2"))
    failure = os.environ.get("KONAN_TEST_DOUBLE_FAIL")
    seen: tuple[int, int, int] | None = None
    while not stop.is_set():
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key != seen:
                seen = key
                revision, champion = read_spec(path)
                if failure:
                    with STATE.lock:
                        STATE.error = failure
                    log(f"cannot load revision {revision}: {failure}")
                else:
                    time.sleep(load_seconds)
                    with STATE.lock:
                        STATE.revision, STATE.champion, STATE.ready = revision, champion, True
                        STATE.error = None
                    log(f"serving revision {revision}")
                    loaded.set()
        except (OSError, ValueError, KeyError) as exc:
            with STATE.lock:
                STATE.error = f"load_error: {exc}"
        stop.wait(0.1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--admin-port", type=int, required=True)
    args = parser.parse_args()

    exit_code = os.environ.get("KONAN_TEST_DOUBLE_EXIT_CODE")
    if exit_code:
        log(f"crashing on purpose with exit code {exit_code}")
        return int(exit_code)

    terminated = threading.Event()
    if os.environ.get("KONAN_TEST_DOUBLE_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    hang_after = os.environ.get("KONAN_TEST_DOUBLE_HANG_AFTER")

    admin = Server(args.host, args.admin_port, reuse_port=False)
    threading.Thread(target=admin.serve_forever, kwargs={"poll_interval": 0.05}).start()
    log(f"admin on {args.host}:{args.admin_port}")

    loaded = threading.Event()
    stop_watch = threading.Event()
    watcher = threading.Thread(target=watch_spec, args=(args.spec, loaded, stop_watch))
    watcher.start()

    public: Server | None = None
    started = time.monotonic()
    while not terminated.is_set():
        if hang_after and time.monotonic() - started > float(hang_after):
            log("hanging: the admin port stops answering")
            admin.shutdown()
            admin.server_close()
            while True:
                time.sleep(3600)
        if public is None and loaded.is_set():
            # Bind the shared port only when ready: SO_REUSEPORT routes to any listener.
            public = Server(args.host, args.port, reuse_port=args.reuse_port)
            threading.Thread(target=public.serve_forever, kwargs={"poll_interval": 0.05}).start()
            log(f"listening on {args.host}:{args.port}")
        terminated.wait(0.05)

    log("SIGTERM: draining")
    with STATE.lock:
        STATE.draining = True
    if public is not None:
        public.shutdown()
        public.server_close()  # closes the listener, then waits for in-flight requests
    stop_watch.set()
    watcher.join()
    admin.shutdown()
    admin.server_close()
    log("exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
