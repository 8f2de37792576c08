"""Routes for alert rules, alerts and the raw prediction export.

POST   /api/v1/deployments/{name}/alert-rules          Action.deploy → 201 AlertRuleRead
GET    /api/v1/deployments/{name}/alert-rules          Action.read
DELETE /api/v1/deployments/{name}/alert-rules/{id}     Action.deploy → 204
GET    /api/v1/deployments/{name}/alerts?state=        Action.read (firing | resolved)
GET    /api/v1/deployments/{name}/monitoring/export?start&end&format=csv|parquet   Action.read
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from konan.deployments import service as deployments
from konan.governance.permissions import Action
from konan.monitoring import alerts, export
from konan.monitoring.alerts import AlertRead, AlertRuleCreate, AlertRuleRead
from konan.server.deps import PrincipalDep, SessionDep, StateDep
from konan.server.errors import ERROR_RESPONSES

router = APIRouter(tags=["monitoring"], responses=ERROR_RESPONSES)


@router.post(
    "/deployments/{name}/alert-rules",
    response_model=AlertRuleRead,
    status_code=201,
    summary="Add an alert rule (drift, performance, error_rate, latency) to a deployment",
)
def create_alert_rule(
    name: str, body: AlertRuleCreate, session: SessionDep, principal: PrincipalDep
) -> AlertRuleRead:
    deployment = deployments.get_deployment(session, principal.user, name, Action.deploy)
    # Webhooks to loopback, link-local or private addresses are never allowed from the API.
    rule = alerts.create_rule(
        session, principal.user, deployment, body, allow_private_webhooks=False
    )
    return alerts.rule_read(rule, deployment)


@router.get("/deployments/{name}/alert-rules", response_model=list[AlertRuleRead])
def list_alert_rules(
    name: str, session: SessionDep, principal: PrincipalDep
) -> list[AlertRuleRead]:
    deployment = deployments.get_deployment(session, principal.user, name, Action.read)
    return [alerts.rule_read(r, deployment) for r in alerts.list_rules(session, deployment)]


@router.delete("/deployments/{name}/alert-rules/{rule_id}", status_code=204)
def delete_alert_rule(
    name: str, rule_id: int, session: SessionDep, principal: PrincipalDep
) -> Response:
    deployment = deployments.get_deployment(session, principal.user, name, Action.deploy)
    alerts.delete_rule(session, principal.user, deployment, rule_id)
    return Response(status_code=204)


@router.get("/deployments/{name}/alerts", response_model=list[AlertRead])
def list_alerts(
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    state: Annotated[Literal["firing", "resolved"] | None, Query()] = None,
) -> list[AlertRead]:
    deployment = deployments.get_deployment(session, principal.user, name, Action.read)
    return [
        alerts.alert_read(a, deployment) for a in alerts.list_alerts(session, deployment, state)
    ]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@router.get(
    "/deployments/{name}/monitoring/export",
    summary="Raw prediction logs, one row per input row, as CSV (streamed) or Parquet",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}}},
)
def export_predictions(
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    state: StateDep,
    start: Annotated[datetime | None, Query(description="ISO time; default end - 24 h")] = None,
    end: Annotated[datetime | None, Query(description="ISO time; default now")] = None,
    format: Annotated[Literal["csv", "parquet"], Query()] = "csv",
) -> Response:
    deployment = deployments.get_deployment(session, principal.user, name, Action.read)
    plan = export.plan_export(session, deployment, start=start, end=end, fmt=format)
    filename = _UNSAFE.sub("_", deployment.name) + f"-predictions.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if format == "parquet":
        data = export.parquet_bytes(state.session_factory, plan)
        return Response(data, media_type="application/vnd.apache.parquet", headers=headers)
    return StreamingResponse(
        export.stream_csv(state.session_factory, plan),
        media_type="text/csv; charset=utf-8",
        headers=headers,
    )
