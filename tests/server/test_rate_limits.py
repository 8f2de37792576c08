"""The control plane's limiter: one count shared through Redis, and open when Redis is away."""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
from limits import parse

from konan.core.errors import RateLimited
from konan.core.settings import Settings
from konan.server.rate_limits import RateLimiter


def _with_broker(settings: Settings, url: str) -> Settings:
    return settings.model_copy(
        update={"queue": settings.queue.model_copy(update={"broker_url": url})}
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


def test_two_api_processes_share_one_count_on_redis(settings: Settings) -> None:
    shared = _with_broker(settings, "redis://127.0.0.1:6379/0")
    first, second = RateLimiter(shared), RateLimiter(shared)
    item, who = parse("3/minute"), uuid.uuid4().hex
    first.check(item, "test", who, what="requests")
    second.check(item, "test", who, what="requests")
    first.check(item, "test", who, what="requests")
    with pytest.raises(RateLimited) as refused:
        second.check(item, "test", who, what="requests")
    assert 1 <= refused.value.extra["retry_after"] <= 60


def test_an_unreachable_redis_lets_requests_through_and_says_so_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(_with_broker(settings, f"redis://127.0.0.1:{_closed_port()}/0"))
    item = parse("1/minute")
    with caplog.at_level(logging.WARNING, logger="konan.server.rate_limits"):
        for _ in range(3):
            limiter.check(item, "test", "someone", what="requests")  # no 429, no 500
    warnings = [r for r in caplog.records if "rate limits not enforced" in r.getMessage()]
    assert len(warnings) == 1
