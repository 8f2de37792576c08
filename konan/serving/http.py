"""HTTP/1.1 for the model server: an asyncio protocol on httptools, run inside uvicorn's server.

Why not uvicorn's own protocol: under it, every request becomes a scope dict, a task, a receive
and a send coroutine, and two socket writes; for a model that answers in microseconds that was
about half of the server's CPU per request. Here the predict path runs synchronously when the
body is complete, and the answer goes out in one write. uvicorn still owns the process: the
sockets, signals and graceful shutdown (it calls `shutdown()` on each connection and waits for
`server_state.connections` and `server_state.tasks` to empty).

The handler sees each request twice:
- `head(request)` once the headers are in: a `Response` answers at once (the body, if any, is
  read and dropped), anything else is a ticket for `finish`;
- `finish(ticket, body)` once the body is complete: a `Response`, or an awaitable of one (the
  model runs in a worker thread); reading pauses until it is written, so answers stay in order.

What it does for HTTP: keep-alive (HTTP/1.1 default, HTTP/1.0 on request), pipelining (answers
in request order), `Expect: 100-continue`, a limit on header size (431) and on body size (413,
then close), 400 and close on a malformed request, an idle timeout, and no reading while the
socket's write buffer is full (a client that does not read its answers stops being read).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast
from urllib.parse import unquote

import httptools
import orjson

log = logging.getLogger("konan.serving.http")

MAX_HEADER_BYTES = 64 * 1024
Headers = Sequence[tuple[bytes, bytes]]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: Headers = ()
    close: bool = False  # close the connection once it is written


@dataclass(slots=True)
class RequestHead:
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in arrival order
    local_port: int | None


class Handler(Protocol):
    max_body_bytes: int

    @property
    def closing(self) -> bool:
        """True while draining: every answer carries `Connection: close`."""
        ...

    def head(self, request: RequestHead) -> Any:
        """A `Response` to answer at once, or a ticket for `finish`."""
        ...

    def finish(self, ticket: Any, body: bytes) -> Response | Awaitable[Response]: ...


def json_response(
    status: int, document: Any, headers: Headers = (), close: bool = False
) -> Response:
    return Response(
        status, orjson.dumps(document), ((b"content-type", b"application/json"), *headers), close
    )


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))
        _STATUS_LINES[status] = line
    return line


@dataclass(slots=True, eq=False)
class _Request:
    """One request as it arrives: the handler's answer or ticket, and the body so far."""

    head: RequestHead
    keep_alive: bool
    answer: Response | None = None  # answered at head time: the body is dropped
    ticket: Any = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = False


class _StopReading(Exception):
    """Raised from a parser callback to stop parsing this connection's input for good."""


class HttpProtocol(asyncio.Protocol):
    """One connection. Built by uvicorn's server with its config (whose `app` is the Handler)."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any] | None = None,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.handler: Handler = config.app
        self.server_state = server_state
        self.idle_timeout: float = float(config.timeout_keep_alive)
        self.loop = _loop or asyncio.get_running_loop()  # built by the loop, in its thread
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.local_port: int | None = None
        self.pending: deque[_Request] = deque()  # complete requests waiting for their turn
        self.current: _Request | None = None  # the request being received
        self.busy = False  # an answer is being computed off the event loop
        self.closing = False  # close once the answers owed are written
        self.stopped = False  # input is no longer parsed (answered and closing, or unparsable)
        self.receiving = False  # between a request's first byte and its end
        self.last_activity = 0.0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._default_headers: Any = None
        self._default_block = b""

    # ---- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport has asyncio.Transport's methods without being a subclass.
        self.transport = cast("asyncio.Transport", transport)
        sockname = transport.get_extra_info("sockname")
        self.local_port = sockname[1] if isinstance(sockname, tuple) else None
        self.server_state.connections.add(self)
        self.last_activity = self.loop.time()
        self._arm_timer(self.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pending.clear()
        self.current = None

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return  # dropped; the idle timer closes a client that keeps sending
        self.last_activity = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _StopReading):
                log.error("error in the HTTP layer", exc_info=exc.__context__ or exc)
                self._fail(500, "internal error")
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported here")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.busy:
            self.transport.resume_reading()

    @property
    def idle(self) -> bool:
        """Nothing owed and nothing half-received: a request may still be on its way."""
        return not self.receiving and not self.pending and not self.busy

    def shutdown(self) -> None:
        """The server stops: close now if idle, else after the answers owed."""
        self.closing = True
        if self.idle and self.transport is not None:
            self.transport.close()

    # ---- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.receiving = True
        self._url = b""
        self._headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._fail(414, "the request URL is too long")
            raise _StopReading

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._fail(431, f"the request headers are larger than {MAX_HEADER_BYTES} bytes")
            raise _StopReading
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        url = self._url
        if url[:1] == b"/" and b"?" not in url and b"%" not in url:
            path, query = url.decode("latin-1"), b""  # the common case, without parse_url
        else:
            parsed = httptools.parse_url(url)
            raw_path = (parsed.path or b"").decode("latin-1")
            path = unquote(raw_path) if "%" in raw_path else raw_path
            query = parsed.query or b""
        head = RequestHead(
            self.parser.get_method().decode("ascii"), path, query, self._headers, self.local_port
        )
        request = _Request(head, self.parser.should_keep_alive())
        self.current = request
        try:
            result = self.handler.head(head)
        except Exception:
            log.exception("error answering %s %s", head.method, head.path[:200])
            result = json_response(
                500, {"detail": "internal error", "code": "internal"}, close=True
            )
        if isinstance(result, Response):
            request.answer = result
            if result.close or _expects_continue(self._headers):
                # Not reading what may be a large body (or one the client holds back until
                # it hears 100 Continue): answer and close.
                result.close = True
                self._stop()
                self._complete(request)
                raise _StopReading
        else:
            request.ticket = result
            if not self.busy and not self.pending and _expects_continue(self._headers):
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        request = self.current
        if request is None or request.answer is not None:
            return  # answered at head time: drop the body
        request.size += len(chunk)
        limit = self.handler.max_body_bytes
        if request.size > limit:
            request.chunks = []
            request.answer = json_response(
                413,
                {
                    "detail": f"the request body is larger than {limit} bytes",
                    "code": "payload_too_large",
                    "max_body_bytes": limit,
                },
                close=True,
            )
            self._stop()
            self._complete(request)
            raise _StopReading
        request.chunks.append(chunk)

    def on_message_complete(self) -> None:
        request = self.current
        if request is not None:
            self._complete(request)

    # ---- answering -----------------------------------------------------------------------------

    def _complete(self, request: _Request) -> None:
        self.current = None
        self.receiving = False
        request.complete = True
        if self.busy or self.pending:
            self.pending.append(request)
            return
        self._answer(request)

    def _answer(self, request: _Request) -> None:
        """Answer `request`, then any pipelined requests behind it, until one goes async."""
        while True:
            answer = request.answer
            if answer is None:
                body = request.chunks[0] if len(request.chunks) == 1 else b"".join(request.chunks)
                try:
                    result = self.handler.finish(request.ticket, body)
                except Exception:
                    log.exception("error answering %s %s", request.head.method, request.head.path)
                    result = json_response(
                        500, {"detail": "internal error", "code": "internal"}, close=True
                    )
                if not isinstance(result, Response):
                    self._answer_later(request, result)
                    return
                answer = result
            self._write(request, answer)
            if not self.pending or self.transport is None or self.transport.is_closing():
                return
            request = self.pending.popleft()

    def _answer_later(self, request: _Request, result: Awaitable[Response]) -> None:
        self.busy = True
        assert self.transport is not None
        self.transport.pause_reading()
        task = self.loop.create_task(self._await(request, result))
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _await(self, request: _Request, result: Awaitable[Response]) -> None:
        try:
            answer = await result
        except Exception:
            log.exception("error answering %s %s", request.head.method, request.head.path)
            answer = json_response(
                500, {"detail": "internal error", "code": "internal"}, close=True
            )
        self.busy = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._write(request, answer)
        if transport.is_closing():
            return
        if self.pending:
            self._answer(self.pending.popleft())
        if not (self.busy or transport.is_closing()):
            transport.resume_reading()

    def _write(self, request: _Request, answer: Response) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        close = answer.close or not request.keep_alive or self.closing or self.handler.closing
        lines = [_status_line(answer.status)]
        for name, value in answer.headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(self._defaults())
        lines.append(b"content-length: %d\r\n" % len(answer.body))
        if close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        if request.head.method != "HEAD":
            lines.append(answer.body)
        transport.write(b"".join(lines))
        self.server_state.total_requests += 1
        self.last_activity = self.loop.time()
        if close:
            self.pending.clear()
            if self.stopped and transport.can_write_eof():
                # The client may still be sending a body we will not read: closing now would
                # reset the connection and could lose this answer. Half-close instead; what
                # arrives is dropped until the client closes its side or the idle timer does.
                transport.write_eof()
            else:
                transport.close()
        elif self.closing and self.idle:
            transport.close()

    def _defaults(self) -> bytes:
        # uvicorn refreshes its default headers (the Date) once a second: re-encode on change.
        defaults = self.server_state.default_headers
        if defaults is not self._default_headers:
            self._default_headers = defaults
            self._default_block = b"".join(b"%s: %s\r\n" % (n, v) for n, v in defaults)
        return self._default_block

    def _fail(self, status: int, detail: str) -> None:
        """A request that cannot be parsed or is too big to read: answer in turn and close."""
        head = RequestHead("GET", "", b"", [], self.local_port)
        request = _Request(head, keep_alive=False)
        code = "internal" if status >= 500 else "bad_request"
        request.answer = json_response(status, {"detail": detail, "code": code}, close=True)
        self.current = None
        self.receiving = False
        self._stop()
        if self.busy or self.pending:
            self.pending.append(request)
        else:
            self._write(request, request.answer)

    def _stop(self) -> None:
        # Parse no more: what still arrives is read and dropped (data_received), so a client
        # blocked sending its body gets to read the answer.
        self.stopped = True

    # ---- idle connections ----------------------------------------------------------------------

    def _arm_timer(self, delay: float) -> None:
        self._timer = self.loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        # One timer per connection, re-armed for what is left: cheaper than a timer per request.
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        quiet = self.loop.time() - self.last_activity
        if quiet >= self.idle_timeout and not self.busy and not self.pending:
            transport.close()
            return
        self._arm_timer(max(0.05, self.idle_timeout - quiet))


def _expects_continue(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in headers)
