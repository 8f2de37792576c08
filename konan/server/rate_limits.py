"""Rate limits on the control plane (moving windows from the `limits` library).

In-memory in the embedded default; on Redis in scale-out, so every API process shares one
count. Switch off with KONAN_SERVER__RATE_LIMIT_ENABLED=false (benchmarks measure the model,
not the limiter).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse, storage, strategies

from konan.core.errors import RateLimited
from konan.core.settings import Settings


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.server.rate_limit_enabled
        broker = settings.queue.broker_url or ""
        uri = broker if broker.startswith(("redis://", "rediss://")) else "memory://"
        self._strategy = strategies.MovingWindowRateLimiter(storage.storage_from_string(uri))
        self.login = parse(settings.server.login_rate_limit)
        self.user = parse(settings.server.user_rate_limit)

    def check(self, item: RateLimitItem, *keys: str, what: str) -> None:
        """Count one hit; past the limit, raise 429 with the seconds until a slot frees."""
        if not self.enabled:
            return
        if self._strategy.hit(item, "konan", *keys):
            return
        stats = self._strategy.get_window_stats(item, "konan", *keys)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(f"too many {what}; try again in {wait} s", extra={"retry_after": wait})
