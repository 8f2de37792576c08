"""Deployment routes: create, inspect, traffic, promote, rollback, scale, delete, logs, predict;
and the internal key endpoint model servers poll."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from konan.core.errors import NotFound, Unauthenticated
from konan.core.names import NAME_PATTERN
from konan.deployments import repository, service
from konan.deployments.orm import Deployment, DeploymentRevision
from konan.deployments.schemas import (
    DeploymentCreate,
    DeploymentRead,
    PendingApproval,
    PromoteRequest,
    Replicas,
    RevisionRead,
    RollbackRequest,
    ScaleRequest,
    TrafficRead,
    TrafficUpdate,
)
from konan.deployments.service import Outcome
from konan.governance import api_keys
from konan.governance import repository as governance_repo
from konan.governance.orm import User
from konan.governance.permissions import Action
from konan.governance.security import decode_token
from konan.registry.orm import Model
from konan.server.deps import PrincipalDep, SessionDep, StateDep
from konan.server.errors import ERROR_RESPONSES

log = logging.getLogger("konan.deployments")

router = APIRouter(tags=["deployments"], responses=ERROR_RESPONSES)
internal_router = APIRouter(tags=["internal"], include_in_schema=False)

GATED: dict[int | str, dict[str, Any]] = {
    202: {"model": PendingApproval, "description": "an approval request was created"}
}


def _username(session: Session, user_id: int | None) -> str | None:
    user = session.get(User, user_id) if user_id else None
    return user.username if user else None


def deployment_read(session: Session, deployment: Deployment, base_url: str) -> DeploymentRead:
    revision = service.current_revision(session, deployment)
    traffic = service.traffic_of(session, revision)
    project = governance_repo.project_by_id(session, deployment.project_id)
    model = session.get(Model, deployment.model_id)
    return DeploymentRead(
        name=deployment.name,
        project=project.name if project else "",
        model=model.name if model else "",
        runtime=deployment.runtime,
        status=deployment.status,
        status_reason=deployment.status_reason,
        status_message=deployment.status_message,
        production_gated=deployment.production_gated,
        revision=revision.revision,
        traffic=TrafficRead(**traffic),
        replicas=Replicas(min=revision.replicas_min, max=revision.replicas_max),
        predict_url=f"{base_url}/api/v1/deployments/{deployment.name}/predict",
        endpoint_url=deployment.endpoint_url,
        created_by=_username(session, deployment.created_by_id),
        created_at=deployment.created_at,
    )


def revision_read(session: Session, revision: DeploymentRevision) -> RevisionRead:
    return RevisionRead(
        revision=revision.revision,
        traffic=TrafficRead(**service.traffic_of(session, revision)),
        replicas=Replicas(min=revision.replicas_min, max=revision.replicas_max),
        reason=revision.reason,
        created_by=_username(session, revision.created_by_id),
        created_at=revision.created_at,
    )


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def enqueue_reconcile(state: StateDep, deployment_id: int) -> None:
    """After commit: ask a worker to converge. If the broker is down, the periodic
    reconcile_all converges it anyway within seconds."""
    try:
        state.celery.send_task("konan.deployments.reconcile", args=[deployment_id])
    except Exception as exc:
        log.warning("could not enqueue reconcile of deployment %s: %s", deployment_id, exc)


def _answer(
    outcome: Outcome,
    deployment: Deployment,
    session: Session,
    request: Request,
    background: BackgroundTasks,
    state: StateDep,
) -> Any:
    if outcome.approval is not None:
        session.commit()
        body = PendingApproval(
            approval_id=outcome.approval.id,
            status=outcome.approval.status,
            detail=f"deployment {deployment.name!r} is production-gated: an approver must "
            "approve this change",
        )
        return JSONResponse(body.model_dump(), status_code=202)
    background.add_task(enqueue_reconcile, state, deployment.id)
    return deployment_read(session, deployment, _base_url(request))


# ---- lifecycle ------------------------------------------------------------------------------


@router.post("/deployments", response_model=DeploymentRead, status_code=201)
def create_deployment(
    body: DeploymentCreate,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    request: Request,
    background: BackgroundTasks,
) -> DeploymentRead:
    """One step from a registered version to a prediction API."""
    deployment = service.create(session, principal.user, body, state.settings)
    background.add_task(enqueue_reconcile, state, deployment.id)
    return deployment_read(session, deployment, _base_url(request))


@router.get("/deployments", response_model=list[DeploymentRead])
def list_deployments(
    principal: PrincipalDep,
    session: SessionDep,
    request: Request,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> list[DeploymentRead]:
    return [
        deployment_read(session, d, _base_url(request))
        for d in service.list_deployments(session, principal.user, project)
    ]


@router.get("/deployments/{name}", response_model=DeploymentRead)
def get_deployment(
    name: str, principal: PrincipalDep, session: SessionDep, request: Request
) -> DeploymentRead:
    deployment = service.get_deployment(session, principal.user, name)
    return deployment_read(session, deployment, _base_url(request))


@router.get("/deployments/{name}/revisions", response_model=list[RevisionRead])
def list_revisions(name: str, principal: PrincipalDep, session: SessionDep) -> list[RevisionRead]:
    deployment = service.get_deployment(session, principal.user, name)
    return [revision_read(session, r) for r in repository.revisions(session, deployment.id)]


@router.put("/deployments/{name}/traffic", response_model=DeploymentRead, responses=GATED)
def set_traffic(
    name: str,
    body: TrafficUpdate,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    request: Request,
    background: BackgroundTasks,
) -> Any:
    """Champion, canary (+ weight) and shadow versions."""
    deployment = service.get_deployment(session, principal.user, name, Action.deploy)
    outcome = service.set_traffic(session, principal.user, deployment, body)
    return _answer(outcome, deployment, session, request, background, state)


@router.post("/deployments/{name}/promote", response_model=DeploymentRead, responses=GATED)
def promote(
    name: str,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    request: Request,
    background: BackgroundTasks,
    body: Annotated[PromoteRequest, Body()] = PromoteRequest(),
) -> Any:
    """Make the canary (or a named version) the champion."""
    deployment = service.get_deployment(session, principal.user, name, Action.request_promotion)
    outcome = service.promote(session, principal.user, deployment, body)
    return _answer(outcome, deployment, session, request, background, state)


@router.post("/deployments/{name}/rollback", response_model=DeploymentRead, responses=GATED)
def rollback(
    name: str,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    request: Request,
    background: BackgroundTasks,
    body: Annotated[RollbackRequest, Body()] = RollbackRequest(),
) -> Any:
    """Return to the previous revision's traffic, or to a named revision's."""
    deployment = service.get_deployment(session, principal.user, name, Action.deploy)
    outcome = service.rollback(session, principal.user, deployment, body)
    return _answer(outcome, deployment, session, request, background, state)


@router.post("/deployments/{name}/scale", response_model=DeploymentRead)
def scale(
    name: str,
    body: ScaleRequest,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    request: Request,
    background: BackgroundTasks,
) -> Any:
    deployment = service.get_deployment(session, principal.user, name, Action.deploy)
    outcome = service.scale(session, principal.user, deployment, body)
    return _answer(outcome, deployment, session, request, background, state)


@router.delete("/deployments/{name}", status_code=202)
def delete_deployment(
    name: str,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    background: BackgroundTasks,
) -> dict[str, str]:
    deployment = service.get_deployment(session, principal.user, name, Action.deploy)
    service.delete(session, principal.user, deployment)
    background.add_task(enqueue_reconcile, state, deployment.id)
    return {"detail": f"deployment {name!r} is being torn down"}


class LogsRead(BaseModel):
    lines: list[str]


@router.get("/deployments/{name}/logs", response_model=LogsRead)
def deployment_logs(
    name: str,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    tail: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> LogsRead:
    deployment = service.get_deployment(session, principal.user, name)
    return LogsRead(lines=state.runtime.logs(deployment.name, tail))


# ---- predict (API key; forwarded to the model servers) --------------------------------------


class PredictBody(BaseModel):
    inputs: list[dict[str, Any]] = Field(description="one object per row: {feature: value}")


class PredictRead(BaseModel):
    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    request_id: str
    model_version: int


@router.post(
    "/deployments/{name}/predict",
    response_model=PredictRead,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictBody.model_json_schema()}},
        }
    },
)
async def predict(name: str, request: Request, state: StateDep) -> Response:
    """Predict with an API key (`Authorization: Bearer kn_…`). The same code as the model
    servers' own `POST /predict`, reached through the control plane."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    return await state.predict_proxy.forward(name, body, headers, "/predict")


# ---- internal: model servers learn their keys -----------------------------------------------


class KeyRateEntry(BaseModel):
    amount: int
    seconds: int


class KeyEntry(BaseModel):
    id: int
    prefix: str
    sha256: str
    expires_at: float | None
    rate: KeyRateEntry | None = Field(
        default=None, description="the key's budget, absent when unlimited or limits are off"
    )


class KeyList(BaseModel):
    keys: list[KeyEntry]


class KeyUsage(BaseModel):
    used: dict[str, float] = Field(default_factory=dict)


@internal_router.post("/internal/deployments/{name}/keys", response_model=KeyList)
def serving_keys(
    name: str, request: Request, session: SessionDep, state: StateDep, usage: KeyUsage
) -> KeyList:
    """Hashes of the live keys that may call deployment `name` (for its model servers only)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("a serving token is required")
    claims = decode_token(token.strip(), secret=state.jwt_secret, kind="serving")
    deployment = repository.by_name(session, name)
    if deployment is None or deployment.id != claims.user_id:
        raise NotFound(f"deployment {name!r} not found")
    if usage.used:
        api_keys.record_use(session, usage.used)
    rows = api_keys.keys_for_deployment(session, deployment, "predict")
    limits_on = state.settings.server.rate_limit_enabled
    return KeyList(
        keys=[
            KeyEntry(
                id=row.id,
                prefix=row.prefix,
                sha256=row.key_hash,
                expires_at=row.expires_at.timestamp() if row.expires_at else None,
                rate=_key_rate(row.rate_limit) if limits_on else None,
            )
            for row in rows
        ]
    )


def _key_rate(text: str | None) -> KeyRateEntry | None:
    if not text:
        return None
    rate = api_keys.parse_rate_limit(text)
    return KeyRateEntry(amount=rate.amount, seconds=rate.seconds)
