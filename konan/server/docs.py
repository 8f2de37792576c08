"""The OpenAPI document, the interactive docs and /metrics: behind authentication like every
route except /healthz and /readyz."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from konan.core.errors import PermissionDenied
from konan.server.deps import PrincipalDep, SessionDep, StateDep, get_principal


def install_docs(app: FastAPI) -> None:
    @app.get("/openapi.json", include_in_schema=False)
    def openapi(principal: PrincipalDep) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(principal: PrincipalDep) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Konan API")


def metrics_access(request: Request, state: StateDep, session: SessionDep) -> None:
    """A scrape token (KONAN_SERVER__METRICS_TOKEN) or a signed-in admin."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = state.settings.server.metrics_token
    if (
        expected is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip(), expected.get_secret_value())
    ):
        return
    if not get_principal(request, state, session).is_admin:
        raise PermissionDenied("metrics are for admins or the scrape token")
