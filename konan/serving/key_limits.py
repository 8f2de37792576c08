"""Per-key request budgets on a model server (ADVERSARIAL E01).

A key may carry a rate ("100/second"); the key endpoint sends it as `amount` per `seconds`.
Each model server process enforces it with GCRA (the generic cell rate algorithm, a token
bucket kept as one timestamp per key): up to `amount` requests at once, then one every
`seconds / amount`. Over budget the request gets 429 with Retry-After before its body is read:
the model is not called and nothing is logged.

Why not the `limits` library the control plane uses: this check runs on every prediction, and a
dict lookup plus two float operations costs well under a microsecond, with no lock (the event
loop is the only caller) and no timer thread. The budget is per process — N replicas of a
deployment admit up to N times the key's rate in total; a shared counter (Redis) would put a
network round trip on the predict path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from konan.serving.validation import Rejected


@dataclass(frozen=True, slots=True)
class KeyRate:
    amount: int
    seconds: float

    @property
    def interval(self) -> float:
        return self.seconds / self.amount


class KeyRateLimiter:
    """Theoretical arrival time per key id; `admit` raises Rejected(429) over budget."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._tat: dict[int, float] = {}
        self._max_entries = max_entries
        self.limited = 0

    def admit(self, key_id: int, rate: KeyRate, now: float) -> None:
        interval = rate.interval
        tolerance = rate.seconds - interval  # lets a burst of `amount` through at once
        tat = self._tat.get(key_id, now)
        if tat < now:
            tat = now
        if tat - now > tolerance + 1e-9:  # float slack: a slot due "now" is free
            self.limited += 1
            wait = max(1, math.ceil(tat - tolerance - now))
            raise Rejected(
                429,
                "rate_limited",
                f"this API key is over its rate of {rate.amount} requests per "
                f"{rate.seconds:g} s; retry in {wait} s",
                code="rate_limited",
                headers=((b"retry-after", str(wait).encode()),),
            )
        if len(self._tat) >= self._max_entries:
            self._forget_idle(now)
        self._tat[key_id] = tat + interval

    def _forget_idle(self, now: float) -> None:
        """Keys whose bucket is full again need no entry (their next request starts afresh)."""
        self._tat = {key: tat for key, tat in self._tat.items() if tat > now}
