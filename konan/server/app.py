"""Control-plane composition root: `create_app(settings)` turns settings into a FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_fastapi_instrumentator import Instrumentator

from konan import __version__
from konan.backends.artifacts.factory import artifact_store_from_settings
from konan.core.settings import Settings, load_settings
from konan.db import migrate
from konan.db.engine import make_engine, make_session_factory
from konan.deployments.api import internal_router
from konan.deployments.api import router as deployments_router
from konan.governance.api import (
    approvals_router,
    audit_router,
    auth_router,
    keys_router,
    projects_router,
)
from konan.monitoring.alerts_api import router as alerts_router
from konan.monitoring.api import router as monitoring_router
from konan.monitoring.performance_api import router as performance_router
from konan.registry.api import router as registry_router
from konan.server import health
from konan.server.body_guard import BodyGuard
from konan.server.docs import install_docs
from konan.server.errors import ERROR_RESPONSES, install_error_handlers
from konan.server.metrics import install_metrics
from konan.server.request_id import RequestId
from konan.server.security_headers import SecurityHeaders
from konan.server.state import AppState

log = logging.getLogger("konan.server")

API_PREFIX = "/api/v1"
FRONTEND_DIST = Path(__file__).resolve().parents[2] / "frontend" / "dist"


def create_app(settings: Settings | None = None, *, check_schema: bool = True) -> FastAPI:
    settings = settings or load_settings()
    engine = make_engine(settings.database_url, settings)
    if check_schema:
        try:
            migrate.ensure_current(engine)  # refuse to serve an old schema; names the command
        except Exception:
            engine.dispose()
            raise
    state = AppState(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        jwt_secret=settings.jwt_secret(),
        artifacts=artifact_store_from_settings(settings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if "predict_proxy" in state.__dict__:
            await state.predict_proxy.close()

    app = FastAPI(
        lifespan=lifespan,
        title="Konan",
        version=__version__,
        description="Self-hosted MLOps: registry, deployments, monitoring, governance.",
        # Served below behind authentication: only /healthz and /readyz are public.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.konan = state
    install_error_handlers(app)

    app.include_router(health.router)
    app.include_router(auth_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(projects_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(keys_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(approvals_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(audit_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(registry_router, prefix=API_PREFIX)
    app.include_router(deployments_router, prefix=API_PREFIX)
    app.include_router(internal_router, prefix=API_PREFIX)
    app.include_router(monitoring_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(performance_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(alerts_router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    registry = settings.registry
    app.add_middleware(SecurityHeaders)
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-CSRF-Token", "Idempotency-Key"],
        )
    app.add_middleware(RequestId)
    app.add_middleware(
        BodyGuard,
        json_limit=settings.server.max_json_bytes,
        # one artifact and one reference file, plus the multipart framing and metadata
        upload_limit=registry.max_artifact_bytes + registry.max_dataset_bytes + 1024**2,
    )

    Instrumentator(excluded_handlers=["/metrics", "/healthz", "/readyz"]).instrument(app)
    install_metrics(app)
    install_docs(app)

    _mount_dashboard(app)
    return app


def _mount_dashboard(app: FastAPI) -> None:
    try:
        from konan.server.spa import mount_spa
    except ImportError:  # the dashboard module is optional for API-only deployments
        return
    mount_spa(app, FRONTEND_DIST)


def app_from_env() -> FastAPI:
    """uvicorn factory (`konan server`): settings from KONAN_* env vars."""
    return create_app(load_settings())
