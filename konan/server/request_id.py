"""Gives every request an id (the caller's X-Request-ID if sane), echoes it in the answer and
makes it and the client address available to the audit log."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from konan.core import request_context


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                offered = value.decode("latin-1")
                break
        rid = request_context.new_request_id(offered)
        client = scope.get("client")
        token = request_context.set_current(
            request_context.RequestContext(rid, client[0] if client else None)
        )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_context.reset(token)
