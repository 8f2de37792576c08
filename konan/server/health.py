"""Liveness and readiness. Both are public: orchestrators call them without credentials."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from konan import __version__
from konan.backends.queue.celery_app import broker_reachable
from konan.db import heartbeats
from konan.server.deps import StateDep

router = APIRouter(tags=["health"])

HEARTBEAT_WINDOW = timedelta(seconds=30)


class Health(BaseModel):
    status: str
    version: str


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, Check]


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up and answering. No dependency is touched."""
    return Health(status="ok", version=__version__)


def _database(state: Any) -> Check:
    try:
        with state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return Check(ok=False, detail=f"unreachable ({type(exc).__name__})")
    return Check(ok=True, detail=state.engine.dialect.name)


def _heartbeat(state: Any, component: str) -> Check:
    try:
        with state.session_factory() as session:
            ok = heartbeats.alive(session, component, HEARTBEAT_WINDOW)
    except Exception as exc:
        return Check(ok=False, detail=f"unknown: database unreachable ({type(exc).__name__})")
    if ok:
        return Check(ok=True, detail=f"a {component} reported within 30 s")
    return Check(ok=False, detail=f"no {component} has reported in the last 30 s")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is not ready"}},
)
def readyz(state: StateDep) -> Any:
    """Ready when the database and broker answer and a worker and a monitor are alive."""
    ok, detail = broker_reachable(state.settings)
    checks = {
        "database": _database(state),
        "broker": Check(ok=ok, detail=detail),
        "worker": _heartbeat(state, "worker"),
        "monitor": _heartbeat(state, "monitor"),
    }
    ready = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
