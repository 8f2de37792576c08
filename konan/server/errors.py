"""Where exceptions become HTTP answers: `{"detail": …, "code": …}`, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from konan.core.errors import DependencyUnavailable, KonanError

log = logging.getLogger("konan.server")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}


class ErrorRead(BaseModel):
    """Every error answer: a message a person can act on and a stable code."""

    detail: str
    code: str


class ValidationErrorRead(ErrorRead):
    errors: list[dict[str, Any]] = []


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorRead, "description": "no or invalid credential"},
    403: {"model": ErrorRead, "description": "authenticated but not allowed"},
    404: {"model": ErrorRead, "description": "not found (or not visible to the caller)"},
    409: {"model": ErrorRead, "description": "state conflict"},
    413: {"model": ErrorRead, "description": "body too large"},
    415: {"model": ErrorRead, "description": "unsupported media type"},
    422: {"model": ValidationErrorRead, "description": "invalid input"},
}


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body",)) or "body"


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    parts = []
    for err in exc.errors():
        where = _loc(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid"))
        errors.append({"loc": where, "msg": msg, "type": err.get("type")})
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) or "invalid request", errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KonanError)
    async def _konan(request: Request, exc: KonanError) -> JSONResponse:
        headers = None
        if exc.status in (429, 503):
            headers = {"Retry-After": str(exc.extra.get("retry_after", 5))}
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(exc.to_payload(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_detail(exc)
        return JSONResponse(
            {"detail": detail, "code": "invalid_input", "errors": errors}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(
            {"detail": detail, "code": _HTTP_CODES.get(exc.status_code, "http_error")},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _db_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        err = DependencyUnavailable("the database is unavailable; retry shortly")
        return JSONResponse(err.to_payload(), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(DBAPIError)
    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal server error", "code": "internal_error"}, status_code=500
        )
