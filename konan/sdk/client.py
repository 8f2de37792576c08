"""The Python client over Konan's REST API. What users import: `konan.Client(url, token)`.

It imports nothing server-side (no SQLAlchemy, Celery or FastAPI): a data scientist's notebook
only needs httpx2 and pydantic. Error payloads come back as the same exception classes the
server raised (`konan.core.errors`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx2

from konan.core.errors import KonanError, error_for_code

DEFAULT_TIMEOUT = httpx2.Timeout(30.0, connect=5.0)


class Client:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout: httpx2.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx2.Client(base_url=self.url, timeout=timeout, transport=transport)
        self.token = token

    # ---- plumbing --------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value
        if value:
            self._http.headers["Authorization"] = f"Bearer {value}"
        else:
            self._http.headers.pop("Authorization", None)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error_from(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- auth and health -------------------------------------------------------------------

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in and use the returned access token for the following calls."""
        tokens: dict[str, Any] = self.request(
            "POST", "/api/v1/auth/login", json={"username": username, "password": password}
        )
        self.token = tokens["access_token"]
        return tokens

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/v1/auth/me")
        return result

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/healthz")
        return result

    def readiness(self) -> dict[str, Any]:
        """The readiness report, whether ready (200) or not (503)."""
        response = self._http.get("/readyz")
        body: dict[str, Any] = response.json()
        return body


def _error_from(response: httpx2.Response) -> KonanError:
    try:
        payload = response.json()
    except ValueError:
        payload = {"detail": response.text or response.reason_phrase}
    if not isinstance(payload, dict):
        payload = {"detail": str(payload)}
    detail = payload.get("detail")
    code = payload.get("code")
    cls = error_for_code(code if isinstance(code, str) else None, response.status_code)
    extra = {k: v for k, v in payload.items() if k not in ("detail", "code")}
    err = cls(detail if isinstance(detail, str) else str(detail), extra=extra)
    err.status_code = response.status_code  # type: ignore[attr-defined]
    return err
