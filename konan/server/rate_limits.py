"""Rate limits on the control plane (moving windows from the `limits` library).

In-memory in the embedded default; on Redis in scale-out, so every API process shares one
count. Switch off with KONAN_SERVER__RATE_LIMIT_ENABLED=false (benchmarks measure the model,
not the limiter).

When the limiter's store (Redis) cannot be reached, requests go through (fail open) and a
warning is logged at most once a minute: an outage of the counter must not turn every signed-in
call into a 500. Model servers keep their own per-key budgets in memory (konan.serving.key_limits).
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse, storage, strategies

from konan.core.errors import RateLimited
from konan.core.settings import Settings

log = logging.getLogger("konan.server.rate_limits")
WARN_EVERY_SECONDS = 60.0


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.server.rate_limit_enabled
        broker = settings.queue.broker_url or ""
        uri = broker if broker.startswith(("redis://", "rediss://")) else "memory://"
        self._strategy = strategies.MovingWindowRateLimiter(storage.storage_from_string(uri))
        self.login = parse(settings.server.login_rate_limit)
        self.user = parse(settings.server.user_rate_limit)
        self._warned_at = -WARN_EVERY_SECONDS

    def check(self, item: RateLimitItem, *keys: str, what: str) -> None:
        """Count one hit; past the limit, raise 429 with the seconds until a slot frees."""
        if not self.enabled:
            return
        try:
            if self._strategy.hit(item, "konan", *keys):
                return
            stats = self._strategy.get_window_stats(item, "konan", *keys)
        except Exception as exc:  # redis-py's errors share no base with the memory store's
            self._store_failed(exc)
            return
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(f"too many {what}; try again in {wait} s", extra={"retry_after": wait})

    def _store_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(
                "rate limits not enforced: the limiter's store is unreachable (%s: %s)",
                type(exc).__name__,
                str(exc)[:200],
            )
