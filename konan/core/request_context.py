"""Who is asking, for the length of one request: its id and the client's address.

Set by the server's middleware, read wherever a record of the request is written (the audit
log), so services don't pass them through every call.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    client_addr: str | None


_current: ContextVar[RequestContext | None] = ContextVar("konan_request", default=None)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def new_request_id(offered: str | None = None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    if offered and _SAFE_ID.match(offered):
        return offered
    return uuid.uuid4().hex


def current() -> RequestContext | None:
    return _current.get()


def set_current(context: RequestContext | None) -> object:
    return _current.set(context)


def reset(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
