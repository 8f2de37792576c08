"""Request bodies are checked before any route reads them.

* Size: a declared Content-Length over the limit is answered 413 without reading the body; a
  chunked body that grows past it is cut off mid-stream and answered 413 (the route's parser
  sees the stream end, and whatever it answers is replaced).
* Media type: JSON routes accept only application/json and upload routes only
  multipart/form-data; anything else is 415. A form or text/plain body can never reach a JSON
  route, which also closes the classic cross-site form-POST path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Routes that take multipart uploads (the only ones that may be large).
UPLOAD_ROUTES = [
    re.compile(r"^/api/v1/models/[^/]+/versions/?$"),
    re.compile(r"^/api/v1/datasets/?$"),
]


def is_upload(path: str) -> bool:
    return any(p.match(path) for p in UPLOAD_ROUTES)


def _error(status: int, detail: str, code: str) -> tuple[Message, Message]:
    body = orjson.dumps({"detail": detail, "code": code})
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        json_limit: int,
        upload_limit: Callable[[], int] | int,
        guarded_prefix: str = "/api/",
    ) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit
        self.guarded_prefix = guarded_prefix

    async def _reject(self, send: Send, status: int, detail: str, code: str) -> None:
        start, body = _error(status, detail, code)
        await send(start)
        await send(body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith(self.guarded_prefix):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        upload = is_upload(path)
        limit = self.upload_limit() if callable(self.upload_limit) else self.upload_limit
        if not upload:
            limit = self.json_limit

        declared = headers.get("content-length")
        has_body = (declared not in (None, "0")) or "transfer-encoding" in headers
        if has_body:
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            wanted = "multipart/form-data" if upload else "application/json"
            if media != wanted and not (not upload and media.endswith("+json")):
                await self._reject(
                    send,
                    415,
                    f"this route takes {wanted} bodies, not {media or 'an untyped body'}",
                    "unsupported_media_type",
                )
                return
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._reject(send, 400, "invalid Content-Length header", "bad_request")
                return
            if size > limit:
                await self._reject(
                    send,
                    413,
                    f"the request body is {size} bytes; the limit here is {limit} bytes",
                    "payload_too_large",
                )
                return

        state: dict[str, Any] = {"received": 0, "too_large": False, "started": False}

        async def limited_receive() -> Message:
            if state["too_large"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["too_large"] = True
                    # End the stream here: the parser stops, nothing more is read or stored.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["too_large"]:
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await self._reject(
                        send,
                        413,
                        f"the request body grew past the limit of {limit} bytes",
                        "payload_too_large",
                    )
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["too_large"]:
                raise
        if state["too_large"] and not state["started"]:
            await self._reject(
                send,
                413,
                f"the request body grew past the limit of {limit} bytes",
                "payload_too_large",
            )
