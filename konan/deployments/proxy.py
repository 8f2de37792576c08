"""The control plane's predict route forwards to the deployment's model servers unchanged.

The model servers check the API key, validate, predict and log; this hop only finds where the
deployment runs (cached for a moment, so the database is not read per request) and relays
bytes. The fast path is the model servers' own address (`endpoint_url`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from konan.core.errors import DependencyUnavailable, NotFound, Unauthenticated

FORWARDED_REQUEST_HEADERS = ("content-type", "authorization", "x-request-id", "x-konan-route-key")
FORWARDED_RESPONSE_HEADERS = ("content-type", "x-konan-model-version", "retry-after")
CACHE_SECONDS = 2.0


class EndpointCache:
    def __init__(self, lookup: Callable[[str], str | None], ttl: float = CACHE_SECONDS) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._entries: dict[str, tuple[float, str | None]] = {}

    async def get(self, name: str) -> str | None:
        now = time.monotonic()
        hit = self._entries.get(name)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        endpoint = await run_in_threadpool(self._lookup, name)
        self._entries[name] = (now, endpoint)
        return endpoint


class PredictProxy:
    def __init__(self, cache: EndpointCache) -> None:
        self.cache = cache
        self._client: httpx2.AsyncClient | None = None

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(
                timeout=httpx2.Timeout(60.0, connect=2.0),
                limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
            )
        return self._client

    async def forward(self, name: str, body: bytes, headers: dict[str, str], path: str) -> Response:
        if not headers.get("authorization"):
            raise Unauthenticated("an API key is required: send 'Authorization: Bearer <key>'")
        endpoint = await self.cache.get(name)
        if endpoint is None:
            raise NotFound(f"deployment {name!r} not found or not serving")
        outgoing = {k: v for k, v in headers.items() if k in FORWARDED_REQUEST_HEADERS}
        try:
            upstream = await self._http().post(
                f"{endpoint.rstrip('/')}{path}", content=body, headers=outgoing
            )
        except httpx2.TransportError:
            raise DependencyUnavailable(
                f"deployment {name!r} is not answering yet; retry shortly"
            ) from None
        relay = {
            k: v for k, v in upstream.headers.items() if k.lower() in FORWARDED_RESPONSE_HEADERS
        }
        return Response(upstream.content, status_code=upstream.status_code, headers=relay)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
