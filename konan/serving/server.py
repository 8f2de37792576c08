"""The model server: one process per deployment replica, our HTTP/1.1 protocol inside uvicorn.

`Replica` holds what the process serves (the routing table, the key set, the log producer, the
shadow runner) and the threads that keep it current. `ServingApp` answers requests for
`konan.serving.http.HttpProtocol`: the predict path is written out by hand — header scan, key
check, body, validation, model call, one enqueue, one response in one write — because it is what
the benchmarks measure. `serve()` creates the sockets (SO_REUSEPORT on request, so replicas can
share a port) and runs uvicorn's server on them with uvloop and that protocol. With an admin
port, the public socket is only bound at start and starts listening once the replica is ready:
the kernel spreads a shared port's connections over every listener, so a replica still loading
must not be one (F02). On SIGTERM it turns /readyz to 503, closes the listeners (queued
connections move to the other replicas when net.ipv4.tcp_migrate_req is on), gives connections
it accepted but has no request from yet a short grace to send one, lets in-flight requests
finish and flushes the prediction log before exiting 0 (F01).

This module is the data plane's composition root. It must not import the database, Celery,
FastAPI or any control-plane module (a test checks that in a fresh interpreter).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl

import uvicorn

from konan.backends.artifacts import artifact_store_from_settings
from konan.core.settings import ServingSettings, Settings, load_settings
from konan.monitoring.stream import (
    LogProducer,
    PredictionRecord,
    RedisStreamLogStream,
    SpoolLogStream,
    make_producer,
    redis_url,
)
from konan.serving.http import HttpProtocol, RequestHead, Response, json_response
from konan.serving.key_limits import KeyRateLimiter
from konan.serving.keys import KeyCache, KeyRefresher
from konan.serving.metrics import ServingMetrics
from konan.serving.outputs import dumps, jsonable
from konan.serving.routing import Role, RoutingTable
from konan.serving.shadow import ShadowJob, ShadowRunner
from konan.serving.spec import SERVING_TOKEN_ENV, ServingSpec
from konan.serving.validation import Checked, Rejected, parse_body
from konan.serving.versions import LoadedVersion, ModelLoader, Reloader

log = logging.getLogger("konan.serving")

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_QUERY_CREDENTIALS = frozenset(
    ("key", "api_key", "apikey", "api-key", "token", "access_token", "authorization")
)
_DEPLOYMENT_PREFIX = "/api/v1/deployments/"
_JSON = (b"content-type", b"application/json")
_RETRY_AFTER = ((b"retry-after", b"1"),)
_ALLOW_POST = ((b"allow", b"POST"),)
_ALLOW_GET = ((b"allow", b"GET, HEAD"),)
BACKLOG = 2048


@dataclass(frozen=True)
class Options:
    spec: Path
    host: str = "127.0.0.1"
    port: int = 8080
    reuse_port: bool = False
    admin_host: str | None = None
    admin_port: int | None = None
    drain_delay: float = 0.0
    graceful_timeout: float = 20.0
    shadow_queue: int = 64
    log_queue: int | None = None
    model_threads: int = 4
    log_level: str = "info"
    # After SIGTERM, how long a connection accepted before the listeners closed may take to
    # send its request (or its next one, for an idle keep-alive connection).
    accept_grace: float = 1.0


class RequestIds:
    """uuid4-shaped hex ids from a per-process PRNG seeded by the OS: uuid.uuid4() reads
    os.urandom on every call, which costs tens of microseconds on some VMs. Request ids must be
    unique, not unpredictable; the generator is reseeded in a forked child."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._random.seed(os.urandom(32))

    def new(self) -> str:
        value = self._random.getrandbits(128)
        value = (value & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
        value = (value & ~(0xF000 << 64)) | (4 << 76)  # version 4
        return f"{value:032x}"


def _producer(settings: Settings, queue_size: int | None) -> LogProducer:
    if queue_size is None:
        return make_producer(settings)
    # The same wiring as make_producer, with a smaller in-memory queue (tests, tight memory).
    url = redis_url(settings)
    target = RedisStreamLogStream(url) if url is not None else None
    return LogProducer(SpoolLogStream(settings.spool_dir), target, queue_size=queue_size)


class Replica:
    """Everything one serving process holds, and the background threads that keep it fresh."""

    def __init__(self, spec_path: Path, spec: ServingSpec, settings: Settings, options: Options):
        self.metrics = ServingMetrics()
        data_dir = settings.data_dir.resolve()
        self.loader = ModelLoader(
            artifact_store_from_settings(settings),
            cache_dir=data_dir / "cache" / "serving",
            workdir=settings.tmp_dir / "serving",
            metrics=self.metrics,
        )
        self.reloader = Reloader(spec_path, self.loader, spec)
        self.keys = KeyCache()
        self.key_limiter = KeyRateLimiter()
        self.refresher = KeyRefresher(
            self.keys, lambda: self.reloader.latest_spec.keys, self.metrics
        )
        self.producer = _producer(settings, options.log_queue)
        self.shadow = ShadowRunner(self.producer, self.metrics, queue_size=options.shadow_queue)
        self.model_pool = ThreadPoolExecutor(
            max_workers=options.model_threads, thread_name_prefix="konan-model"
        )
        self.draining = False
        # False while the public socket is bound but not listening (serve() opens it once the
        # replica can serve); readiness waits for it so "ready" means connections get answers.
        self.public_listening = True
        self.in_flight = 0
        self.requests_total = 0
        # Seconds spent answering predictions that reached a model, summed over requests: its
        # rate is the average number of requests in flight (Little's law), the load signal an
        # autoscaler wants even when fast models run inline and `in_flight` is rarely above 1.
        self.busy_seconds = 0.0
        self._busy_marks: deque[tuple[float, float]] = deque()
        self.started_at = time.time()
        self._model_errors_logged: set[tuple[int, str]] = set()
        gauges = self.metrics.gauges
        gauges["konan_serving_in_flight"] = ("Predict requests being answered.", self._in_flight)
        gauges["konan_serving_ready"] = ("1 when this replica is ready.", self._ready_value)
        gauges["konan_serving_revision"] = ("The spec revision served.", self._revision_value)
        gauges["konan_serving_keys"] = ("API keys in the cached set.", lambda: len(self.keys))
        self.metrics.counters["konan_serving_busy_seconds"] = (
            "Seconds spent answering predictions; its rate is the average concurrency.",
            lambda: self.busy_seconds,
        )

    def _in_flight(self) -> int:
        return self.in_flight

    def _ready_value(self) -> int:
        return 1 if self.readiness()[0] else 0

    def _revision_value(self) -> int:
        table = self.reloader.table
        return table.revision if table is not None else 0

    def start(self) -> None:
        self.reloader.start()
        self.refresher.start()

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            log.info("draining: /readyz answers 503, in-flight requests finish")

    def can_serve(self) -> bool:
        """Models loaded and warmed up, keys fetched, not draining: the public socket may
        listen."""
        return not self.draining and self.reloader.table is not None and self.keys.fetched_once

    def readiness(self) -> tuple[bool, str | None]:
        if self.draining:
            return False, "draining"
        table = self.reloader.table
        if table is None:
            failure = self.reloader.error
            return False, failure.reason if failure is not None else "loading"
        if not self.keys.fetched_once:
            return False, "keys_unavailable"
        if not self.public_listening:
            return False, "loading"  # for the few milliseconds until the public socket listens
        return True, None

    def model_error(self, version: LoadedVersion, exc: BaseException) -> None:
        key = (version.version, type(exc).__name__)
        if key not in self._model_errors_logged and len(self._model_errors_logged) < 100:
            self._model_errors_logged.add(key)
            log.warning(
                "version %d failed on a request (%s); further %s errors are only counted",
                version.version,
                type(exc).__name__,
                type(exc).__name__,
            )

    def concurrency(self, window: float = 10.0) -> float:
        """Average requests in flight over about the last `window` seconds."""
        now = time.monotonic()
        marks = self._busy_marks
        if not marks or now - marks[-1][0] >= 0.5:
            marks.append((now, self.busy_seconds))
        while len(marks) > 2 and now - marks[1][0] >= window:
            marks.popleft()
        since, busy_then = marks[0]
        if now - since < 0.5:
            return float(self.in_flight)
        return round((self.busy_seconds - busy_then) / (now - since), 3)

    def stats(self) -> dict[str, Any]:
        table = self.reloader.table
        ready, reason = self.readiness()
        failure = self.reloader.error
        versions: list[dict[str, Any]] = []
        traffic: dict[str, Any] | None = None
        if table is not None:
            roles = table.roles()
            for number, loaded in sorted(table.versions.items()):
                versions.append(
                    {
                        "version": number,
                        "model_version_id": loaded.model_version_id,
                        "role": roles.get(number),
                        "flavor": loaded.served.flavor,
                        "sha256": loaded.served.sha256,
                        "artifact": loaded.artifact,  # "compiled" or "original"
                        "compiled_fallback": loaded.fallback,
                        "mean_latency_ms": round(loaded.ewma * 1000.0, 3),
                        "offloaded": loaded.offload,
                    }
                )
            t = table.spec.traffic
            traffic = {
                "champion": t.champion,
                "canary": t.canary,
                "canary_weight": t.canary_weight,
                "shadow": t.shadow,
            }
        keys_age = (
            round(time.time() - self.keys.last_success, 3)
            if self.keys.last_success is not None
            else None
        )
        return {
            "deployment": table.deployment if table is not None else None,
            "revision": table.revision if table is not None else None,
            "pending_revision": self.reloader.pending_revision,
            "ready": ready,
            "reason": reason,
            "draining": self.draining,
            "in_flight": self.in_flight,
            "concurrency": self.concurrency(),
            "requests_total": self.requests_total,
            "error": failure.reason if failure is not None else None,
            "versions": versions,
            "traffic": traffic,
            "keys": {
                "count": len(self.keys),
                "fetched": self.keys.fetched_once,
                "age_seconds": keys_age,
                "error": self.keys.error,
            },
            "shadow": {
                "queued": self.shadow.queued,
                "dropped": self.metrics.shadow_dropped,
                "done": self.shadow.done,
            },
            "log": {"shed": self.metrics.log_shed},
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started_at, 3),
        }

    def close(self) -> None:
        """After the server stopped: stop the threads, then flush and close the log."""
        self.reloader.stop()
        self.refresher.stop()
        self.shadow.close()
        self.model_pool.shutdown(wait=False, cancel_futures=True)
        self.producer.close()


def _query_has_credentials(query: bytes) -> bool:
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return False
    return any(name.strip().lower() in _QUERY_CREDENTIALS for name, _ in pairs)


def _is_json(content_type: bytes) -> bool:
    if content_type == b"application/json":
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json"


@dataclass(slots=True, eq=False)
class _Predict:
    """A predict request admitted at head time (key, deployment, media type, declared size):
    what `finish` needs once the body is in, then what it found (version, rows) for the answer
    and the log record."""

    started: float
    table: RoutingTable
    request_id: str
    sticky: bytes | None
    version: LoadedVersion = field(init=False)
    role: Role = field(init=False)
    rows: list[Any] = field(init=False)
    checked: Checked = field(init=False)
    at: float = field(init=False)


class ServingApp:
    """The request handler behind `konan.serving.http.HttpProtocol`. Public socket: predict,
    /healthz, /readyz; /metrics and /stats need the serving token. Admin socket (the
    supervisor's, one per replica): all of them, open.

    A predict request is checked in `head` (query credentials, readiness, key, deployment,
    rate limit, media type, declared size), so a refused one costs no body parsing; `finish`
    parses, validates, calls the model (inline, or in a worker thread for a slow model),
    enqueues one log record and answers."""

    def __init__(
        self,
        replica: Replica,
        *,
        admin_port: int | None = None,
        token: str | None = None,
        max_body_bytes: int = 16 * 1024**2,
    ) -> None:
        self.replica = replica
        self.metrics = replica.metrics
        self.admin_port = admin_port
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self._ids = RequestIds()

    @property
    def closing(self) -> bool:
        # Draining: answer what arrives with `Connection: close`, so the client's next request
        # goes to a replica that stays.
        return self.replica.draining

    def head(self, request: RequestHead) -> Response | _Predict:
        path = request.path
        method = request.method
        if path == "/predict" or (
            path.startswith(_DEPLOYMENT_PREFIX) and path.endswith("/predict")
        ):
            if method != "POST":
                return json_response(
                    405, {"detail": "use POST", "code": "method_not_allowed"}, _ALLOW_POST
                )
            name = path[len(_DEPLOYMENT_PREFIX) : -len("/predict")] if path != "/predict" else None
            return self._admit(request, name)
        if method not in ("GET", "HEAD"):
            if path in ("/healthz", "/readyz", "/metrics", "/stats"):
                return json_response(
                    405, {"detail": "use GET", "code": "method_not_allowed"}, _ALLOW_GET
                )
            return _not_found()
        admin = self.admin_port is not None and request.local_port == self.admin_port
        if path == "/healthz":
            return json_response(200, {"status": "ok"})
        if path == "/readyz":
            return self._readyz(admin)
        if path in ("/metrics", "/stats"):
            if not admin and not self._operator(request.headers):
                return json_response(
                    401,
                    {
                        "detail": "use the admin port, or send the serving token "
                        "as 'Authorization: Bearer <token>'",
                        "code": "unauthenticated",
                    },
                    ((b"www-authenticate", b'Bearer realm="konan"'),),
                )
            if path == "/metrics":
                return Response(
                    200,
                    self.metrics.render(),
                    ((b"content-type", b"text/plain; version=0.0.4"),),
                )
            return json_response(200, self.replica.stats())
        return _not_found()

    def _operator(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self._token is None:
            return False
        for name, value in headers:
            if name == b"authorization":
                return hmac.compare_digest(value, b"Bearer " + self._token)
        return False

    def _readyz(self, admin: bool) -> Response:
        replica = self.replica
        ready, reason = replica.readiness()
        table = replica.reloader.table
        failure = replica.reloader.error
        error = failure.reason if failure is not None else None
        if not admin:  # the public port says what, the private one also says why
            reason = reason.split(":", 1)[0] if reason else None
            error = failure.code if failure is not None else None
        doc: dict[str, Any] = {
            "ready": ready,
            "revision": table.revision if table is not None else None,
            "error": error,
        }
        if not ready:
            doc["reason"] = reason
        return json_response(200 if ready else 503, doc)

    def _admit(self, request: RequestHead, name: str | None) -> Response | _Predict:
        started = time.perf_counter()
        replica = self.replica
        replica.requests_total += 1
        table: RoutingTable | None = replica.reloader.table
        sticky_name = table.sticky_header if table is not None else None
        authorization = content_type = content_length = request_id_header = sticky = None
        for header, value in request.headers:
            if header == b"authorization":
                authorization = value
            elif header == b"content-type":
                content_type = value
            elif header == b"content-length":
                content_length = value
            elif header == b"x-request-id":
                request_id_header = value
            elif header == sticky_name:
                sticky = value
        if request_id_header is not None and _SANE_REQUEST_ID.fullmatch(request_id_header):
            request_id = request_id_header.decode()
        else:
            request_id = self._ids.new()
        try:
            if request.query and _query_has_credentials(request.query):
                raise Rejected(
                    401,
                    "key_in_query",
                    "API keys must be sent in the Authorization header "
                    "('Authorization: Bearer <key>'), never in the URL; treat a key that was "
                    "put in a URL as leaked and rotate it",
                    code="unauthenticated",
                )
            if table is None or not replica.keys.fetched_once:
                raise Rejected(
                    503,
                    "not_ready",
                    "this model server is not ready yet; retry shortly",
                    code="dependency_unavailable",
                    headers=_RETRY_AFTER,
                )
            now = time.time()
            key = replica.keys.authenticate(authorization, now)
            if name is not None and name != table.deployment:
                raise Rejected(
                    404,
                    "unknown_deployment",
                    f"no deployment named {name[:100]!r} is served here",
                    code="not_found",
                )
            if key.rate is not None:
                replica.key_limiter.admit(key.id, key.rate, now)
            if content_type is None or not _is_json(content_type):
                raise Rejected(
                    415,
                    "media_type",
                    "send the body as JSON with 'Content-Type: application/json'",
                    code="unsupported_media_type",
                )
            if content_length is not None:
                self._check_length(content_length)
        except Rejected as exc:
            return self._rejected(exc, request_id)
        return _Predict(started, table, request_id, sticky)

    def _check_length(self, content_length: bytes) -> None:
        try:
            declared = int(content_length)
        except ValueError:
            raise Rejected(
                400, "bad_request", "invalid Content-Length", code="bad_request"
            ) from None
        if declared > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)

    def _rejected(self, exc: Rejected, request_id: str) -> Response:
        metrics = self.metrics
        metrics.rejections[exc.reason] += 1
        metrics.requests[(None, "", exc.status)] += 1
        payload = exc.payload()
        payload["request_id"] = request_id
        # A body too large to read is not read: the connection closes after the answer.
        return json_response(
            exc.status,
            payload,
            (*exc.headers, (b"x-request-id", request_id.encode())),
            close=exc.status == 413,
        )

    def finish(self, ticket: _Predict, body: bytes) -> Response | Awaitable[Response]:
        table = ticket.table
        try:
            ticket.rows = parse_body(body, table.max_batch_rows)
            version, role = table.choose(ticket.sticky)
            ticket.version, ticket.role = version, role
            ticket.checked = version.checker.validate(ticket.rows)
        except Rejected as exc:
            return self._rejected(exc, ticket.request_id)
        ticket.at = time.time()
        if version.offload:
            return self._offloaded(ticket)
        try:
            labels, proba = version.predict(ticket.checked)
        except Exception as exc:
            return self._model_failed(ticket, exc)
        return self._answer(ticket, labels, proba)

    async def _offloaded(self, ticket: _Predict) -> Response:
        replica = self.replica
        replica.in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            labels, proba = await loop.run_in_executor(
                replica.model_pool, ticket.version.predict, ticket.checked
            )
        except Exception as exc:
            return self._model_failed(ticket, exc)
        finally:
            replica.in_flight -= 1
        return self._answer(ticket, labels, proba)

    def _answer(self, ticket: _Predict, labels: Any, proba: Any) -> Response:
        replica = self.replica
        metrics = self.metrics
        table = ticket.table
        request_id = ticket.request_id
        version, role, rows, at = ticket.version, ticket.role, ticket.rows, ticket.at
        predictions = jsonable(labels)
        outputs: dict[str, Any] = {"predictions": predictions}
        response: dict[str, Any] = {"predictions": predictions}
        if proba is not None:
            outputs["probabilities"] = response["probabilities"] = jsonable(proba)
        if ticket.checked.unseen:
            outputs["flags"] = {"unseen_categories": ticket.checked.unseen}
        response["request_id"] = request_id
        response["model_version"] = version.version
        latency = time.perf_counter() - ticket.started
        record: PredictionRecord = {
            "request_id": request_id,
            "deployment_id": table.deployment_id,
            "model_version_id": version.model_version_id,
            "role": role,
            "at": at,
            "inputs": rows,
            "outputs": outputs,
            "latency_ms": latency * 1000.0,
            "status_code": 200,
            "error": None,
        }
        if not replica.producer.submit(record):
            # Never a 200 whose record was dropped: the client retries, the log stays complete.
            metrics.log_shed += 1
            metrics.requests[(version.version, role, 503)] += 1
            replica.busy_seconds += latency
            return json_response(
                503,
                {
                    "detail": "the prediction log cannot take records right now; retry shortly",
                    "code": "log_unavailable",
                    "request_id": request_id,
                },
                (*_RETRY_AFTER, (b"x-request-id", request_id.encode())),
            )
        try:
            body = dumps(response)
        except TypeError:  # an output orjson does not know: fall back to plain values
            body = dumps({k: jsonable(v) for k, v in response.items()})
        metrics.requests[(version.version, role, 200)] += 1
        version.histogram.observe(latency)
        replica.busy_seconds += latency
        if table.shadow is not None:
            replica.shadow.offer(ShadowJob(table.shadow, rows, request_id, table.deployment_id, at))
        return Response(
            200,
            body,
            (
                _JSON,
                (b"x-konan-model-version", version.header),
                (b"x-request-id", request_id.encode()),
            ),
        )

    def _model_failed(self, ticket: _Predict, exc: Exception) -> Response:
        version, role = ticket.version, ticket.role
        replica = self.replica
        replica.model_error(version, exc)
        latency = time.perf_counter() - ticket.started
        record: PredictionRecord = {
            "request_id": ticket.request_id,
            "deployment_id": ticket.table.deployment_id,
            "model_version_id": version.model_version_id,
            "role": "canary" if role == "canary" else "champion",
            "at": ticket.at,
            "inputs": ticket.rows,
            "outputs": {},
            "latency_ms": latency * 1000.0,
            "status_code": 500,
            "error": f"model_error: {type(exc).__name__}: {exc}"[:1000],
        }
        if not replica.producer.submit(record):
            self.metrics.log_shed += 1
        self.metrics.requests[(version.version, role, 500)] += 1
        version.histogram.observe(latency)
        replica.busy_seconds += latency
        return json_response(
            500,
            {
                "detail": "the model failed on this input",
                "code": "model_error",
                "request_id": ticket.request_id,
            },
            (
                (b"x-konan-model-version", version.header),
                (b"x-request-id", ticket.request_id.encode()),
            ),
        )


def _too_large(limit: int) -> Rejected:
    return Rejected(
        413,
        "body_too_large",
        f"the request body is larger than {limit} bytes",
        code="payload_too_large",
        extra={"max_body_bytes": limit},
    )


def _not_found() -> Response:
    return json_response(404, {"detail": "not found", "code": "not_found"})


# ---- the process ---------------------------------------------------------------------------------


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket that does not listen yet: connections to its port go to other
    listeners of a SO_REUSEPORT group (or are refused) until `listen()` is called on it. With
    reuse_port several replicas can bind the same port and the kernel spreads connections over
    those that listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket (see `bind`)."""
    sock = bind(host, port, reuse_port=reuse_port)
    try:
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _waiting_for_request(connection: Any) -> bool:
    """A connection with no request in progress: it sent none yet, or is an idle keep-alive
    connection (`HttpProtocol.idle`). Shutdown closes these at once."""
    return bool(getattr(connection, "idle", True))


class _Server(uvicorn.Server):
    """uvicorn, with the public socket opened once the replica is ready (when it was deferred)
    and SIGTERM meaning: readiness off first, listeners closed, accepted connections served,
    in-flight requests finished, exit 0."""

    def __init__(
        self,
        config: uvicorn.Config,
        replica: Replica,
        *,
        public: socket.socket,
        drain_delay: float,
        accept_grace: float,
    ) -> None:
        super().__init__(config)
        self.replica = replica
        self.public = public
        self.drain_delay = drain_delay
        self.accept_grace = accept_grace
        self.failed = False
        self._opening: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.replica.public_listening:
            self._opening = asyncio.create_task(self._listen_when_ready())

    def _protocol(self) -> asyncio.Protocol:
        config = self.config
        protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol

    async def _listen_when_ready(self) -> None:
        replica = self.replica
        while not replica.can_serve():
            if replica.draining or self.should_exit:
                return
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        try:
            # create_server calls listen() on the bound socket.
            server = await loop.create_server(
                self._protocol, sock=self.public, backlog=self.config.backlog
            )
        except OSError as exc:
            log.error("cannot listen on the public socket: %s", exc)
            self.failed = True
            self.should_exit = True
            return
        self.servers.append(server)
        replica.public_listening = True
        log.info("ready: the public port accepts connections")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._opening is not None:
            self._opening.cancel()
        # Stop accepting first. Connections still queued on a closed SO_REUSEPORT listener move
        # to the group's other listeners when net.ipv4.tcp_migrate_req is 1 (F01).
        for server in self.servers:
            server.close()
        if not self.replica.public_listening:
            self.public.close()  # bound, never listened: uvicorn does not own it
        await self._let_accepted_connections_send()
        # uvicorn's own: closes the connections still idle, waits for in-flight requests.
        await super().shutdown(sockets=sockets)

    async def _let_accepted_connections_send(self) -> None:
        """uvicorn closes connections that have no request in progress at once, including
        those accepted a moment ago whose request is still on its way: their client sees a
        broken pipe. Give them `accept_grace` to send it; what arrives is answered with
        `Connection: close` (the app adds it while draining)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.accept_grace
        connections = self.server_state.connections
        while not self.force_exit and loop.time() < deadline:
            if not any(_waiting_for_request(c) for c in connections):
                return
            await asyncio.sleep(0.01)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        # uvicorn re-raises the captured signal here; we stopped on purpose and exit 0.

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.replica.draining:
            if sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self.replica.begin_drain()
        if self.drain_delay > 0:
            timer = threading.Timer(self.drain_delay, self._stop_accepting)
            timer.daemon = True
            timer.start()
        else:
            self.should_exit = True

    def _stop_accepting(self) -> None:
        self.should_exit = True


def serve(options: Options) -> int:
    logging.basicConfig(
        level=options.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per key refresh otherwise
    try:
        settings = load_settings(ServingSettings)
        spec = ServingSpec.read(options.spec)
    except Exception as exc:
        log.error("cannot start: %s", exc)
        return 2
    # With an admin port (where a supervisor watches the replica load), the public socket is
    # bound now, so the port is held and known, and listens only once the replica is ready: a
    # listener in a SO_REUSEPORT group gets its share of new connections at once (F02). Without
    # one, the public port is the only window on the replica, so it listens from the start.
    defer_public = options.admin_port is not None
    try:
        public = bind(options.host, options.port, reuse_port=options.reuse_port)
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 2
    try:
        admin = (
            listen(options.admin_host or options.host, options.admin_port)
            if options.admin_port is not None
            else None
        )
        if not defer_public:
            public.listen(BACKLOG)
    except OSError as exc:
        public.close()
        log.error("cannot listen: %s", exc)
        return 2
    replica = Replica(options.spec, spec, settings, options)
    admin_port = admin.getsockname()[1] if admin is not None else None
    app = ServingApp(
        replica,
        admin_port=admin_port,
        token=os.environ.get(SERVING_TOKEN_ENV),
        max_body_bytes=settings.server.max_json_bytes,
    )
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]  # not ASGI: HttpProtocol calls its head() and finish()
        loop="uvloop",
        http=HttpProtocol,
        ws="none",
        lifespan="off",
        interface="asgi3",  # skips uvicorn's inspection of the app
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(options.graceful_timeout),
        log_level=options.log_level,
        backlog=BACKLOG,
    )
    server = _Server(
        config,
        replica,
        public=public,
        drain_delay=options.drain_delay,
        accept_grace=options.accept_grace,
    )
    # uvicorn serves these at once; a deferred public socket joins when the replica is ready.
    sockets = [admin] if admin is not None else [public]
    replica.public_listening = not defer_public
    replica.start()
    public_host, public_port = public.getsockname()[:2]
    announcement = {
        "event": "listening",
        "deployment": spec.deployment,
        "public": f"{public_host}:{public_port}",
        "admin": f"{admin.getsockname()[0]}:{admin_port}" if admin is not None else None,
        "pid": os.getpid(),
    }
    print(json.dumps(announcement), flush=True)  # one line a supervisor or test can read
    try:
        server.run(sockets=sockets)
    finally:
        replica.close()
        log.info("stopped")
    return 1 if server.failed else 0
