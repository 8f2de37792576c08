"""API keys as a model server sees them: hashes fetched from the control plane, checked locally.

A background thread POSTs the spec's key URL every `refresh_seconds` with the serving token and
the prefixes used since the last call, and replaces the cached set in one assignment. The
predict path hashes the presented key and looks the digest up in a dict: no I/O, no lock. When
the control plane is unreachable the last set stays in force and serving goes on; a revoked key
disappears from the next answer, so it stops working within one refresh interval.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from konan.serving.key_limits import KeyRate
from konan.serving.metrics import ServingMetrics
from konan.serving.spec import SERVING_TOKEN_ENV, KeySource
from konan.serving.validation import Rejected

log = logging.getLogger("konan.serving.keys")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_KEY_BYTES = 512
_CHALLENGE = ((b"www-authenticate", b'Bearer realm="konan"'),)


@dataclass(frozen=True, slots=True)
class CachedKey:
    id: int
    prefix: str
    expires_at: float | None
    rate: KeyRate | None = None


def _unauthenticated(detail: str) -> Rejected:
    return Rejected(401, "unauthenticated", detail, code="unauthenticated", headers=_CHALLENGE)


class KeyCache:
    """The key set in force. Written by the refresh thread, read by the event loop."""

    def __init__(self) -> None:
        self._by_digest: dict[str, CachedKey] = {}
        self._used: dict[str, float] = {}
        self.fetched_once = False
        self.last_success: float | None = None  # epoch seconds
        self.error: str | None = None

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, authorization: bytes | None, now: float) -> CachedKey:
        if authorization is None:
            raise _unauthenticated(
                "an API key is required: send it as 'Authorization: Bearer <key>'"
            )
        if authorization[:7].lower() != b"bearer ":
            raise _unauthenticated("the Authorization header must be 'Bearer <key>'")
        token = authorization[7:].strip()
        if not token or len(token) > _MAX_KEY_BYTES:
            raise _unauthenticated("the API key is invalid, expired or revoked")
        found = self._by_digest.get(hashlib.sha256(token).hexdigest())
        if found is None or (found.expires_at is not None and now >= found.expires_at):
            raise _unauthenticated("the API key is invalid, expired or revoked")
        self._used[found.prefix] = now
        return found

    def replace(self, keys: dict[str, CachedKey]) -> None:
        self._by_digest = keys  # one assignment: requests see the old set or the new one
        self.fetched_once = True
        self.last_success = time.time()
        self.error = None

    def take_used(self) -> dict[str, float]:
        used, self._used = self._used, {}
        return used

    def give_back(self, used: dict[str, float]) -> None:
        """Prefixes whose report failed go out with the next call."""
        current = self._used
        for prefix, at in used.items():
            if current.get(prefix, 0.0) < at:
                current[prefix] = at


def parse_keys(payload: bytes) -> dict[str, CachedKey]:
    """The key endpoint's answer as digest -> key; ValueError when it is not the agreed shape.

    A single malformed entry is skipped (and logged) rather than failing the whole refresh.
    """
    doc = orjson.loads(payload)
    if type(doc) is not dict or type(doc.get("keys")) is not list:
        raise ValueError('the key endpoint must answer {"keys": [...]}')
    keys: dict[str, CachedKey] = {}
    skipped = 0
    for item in doc["keys"]:
        try:
            digest = item["sha256"]
            expires = item.get("expires_at")
            if type(digest) is not str or _SHA256.fullmatch(digest) is None:
                raise ValueError("sha256")
            if expires is not None and type(expires) not in (int, float):
                raise ValueError("expires_at")
            keys[digest] = CachedKey(
                id=int(item["id"]),
                prefix=str(item.get("prefix") or ""),
                expires_at=None if expires is None else float(expires),
                rate=_rate(item.get("rate")),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            skipped += 1
    if skipped:
        log.warning("skipped %d malformed entries in the key list", skipped)
    return keys


def _rate(value: Any) -> KeyRate | None:
    if value is None:
        return None
    amount, seconds = value["amount"], value["seconds"]
    if type(amount) is not int or type(seconds) not in (int, float) or amount < 1 or seconds <= 0:
        raise ValueError("rate")
    return KeyRate(amount=amount, seconds=float(seconds))


class KeyRefresher:
    """The thread that keeps a KeyCache current. `source()` names the URL and interval (from
    the newest spec the server read); the serving token comes from the environment."""

    def __init__(
        self,
        cache: KeyCache,
        source: Callable[[], KeySource],
        metrics: ServingMetrics,
        *,
        token: str | None = None,
        timeout: float = 3.0,
        first_retry: float = 0.25,
    ) -> None:
        self.cache = cache
        self._source = source
        self._metrics = metrics
        self._token = token if token is not None else os.environ.get(SERVING_TOKEN_ENV)
        self._timeout = timeout
        self._first_retry = first_retry
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="konan-keys", daemon=True)
        if not self._token:
            log.warning("%s is not set; the key endpoint will likely refuse us", SERVING_TOKEN_ENV)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        import httpx2  # the refresh thread's only dependency; nothing on the predict path

        with httpx2.Client(timeout=self._timeout, follow_redirects=False) as client:
            while not self._stop.is_set():
                source = self._source()
                ok = self.refresh_once(client, source)
                if ok or self.cache.fetched_once:
                    wait = source.refresh_seconds
                else:  # not ready until the first list arrives: retry soon
                    wait = min(source.refresh_seconds, self._first_retry)
                    self._first_retry = min(self._first_retry * 2, 2.0)
                self._stop.wait(wait)

    def refresh_once(self, client: Any, source: KeySource) -> bool:
        used = self.cache.take_used()
        headers = {"content-type": "application/json"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        body = orjson.dumps({"used": {prefix: int(at) for prefix, at in used.items()}})
        try:
            response = client.post(source.url, content=body, headers=headers)
            if response.status_code != 200:
                raise ValueError(f"the key endpoint answered HTTP {response.status_code}")
            keys = parse_keys(response.content)
        except Exception as exc:  # network errors, bad JSON, bad shape: keep the last set
            self.cache.give_back(used)
            self._metrics.key_refresh_failures += 1
            message = f"{type(exc).__name__}: {exc}"[:300]
            self.cache.error = message
            if not self._failing:
                log.warning("key refresh failed, keeping the last key set: %s", message)
                self._failing = True
            return False
        self.cache.replace(keys)
        if self._failing:
            log.info("key refresh works again (%d keys)", len(keys))
            self._failing = False
        return True
