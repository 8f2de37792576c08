"""Routes for ground-truth feedback and performance over time (realised and estimated).

POST /api/v1/deployments/{name}/feedback
    {"request_id": "…", "labels": [1, 0]}  or  {"items": [{"request_id", "labels"}, …]}
    (at most 10,000 items) → 200 {"accepted": n, "duplicates": n, "unmatched": ["…"]}
    Caller: an API key (`Authorization: Bearer kn_…`) with the "feedback" scope for the
    deployment (or its project), or a signed-in user with Action.deploy on the project.
    409 when a request id already has different labels; 422 when the label count differs
    from the rows the request predicted.

GET /api/v1/deployments/{name}/monitoring/performance
    ?start&end (ISO 8601; default the last 7 days) &bucket (15m, 1h, 1d …; default 1d)
    &version (one model version) &estimated (default true)
    → {"deployment", "task", "start", "end", "bucket", "bucket_seconds",
       "buckets": [{"start", "end", "versions": [{"version", "labelled_requests",
                    "metrics": {…} | null, "estimated": {…} | null}]}],
       "overall": [{"version", "roles", "labelled_requests", "metrics"}],
       "comparisons": [{"baseline_version", "version", "metric", "test", "statistic",
                        "p_value", "difference", …}],
       "skipped_requests", "estimation": {"method", "calibration", "reference",
                                          "assumptions": […]}}
    Estimated figures (CBPE) sit in the same response, per bucket and version, in an
    `estimated` block beside the realised `metrics`; see estimation.py.
    Caller: Action.read on the deployment's project. Refused (422) when the window holds
    more than `max_rows` rows (settings.monitoring.performance_max_rows when that setting
    exists, else 1,000,000).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from konan.core.errors import NotFound, PermissionDenied, Unauthenticated
from konan.deployments import repository as deployments_repo
from konan.deployments import service as deployments
from konan.deployments.orm import Deployment
from konan.governance import api_keys
from konan.governance.orm import ApiKey
from konan.governance.permissions import Action
from konan.monitoring import feedback as feedback_service
from konan.monitoring import performance as performance_service
from konan.monitoring.feedback import FeedbackBody, FeedbackRead
from konan.server.deps import PrincipalDep, SessionDep, StateDep, get_principal
from konan.server.errors import ERROR_RESPONSES
from konan.server.state import AppState

router = APIRouter(tags=["monitoring"], responses=ERROR_RESPONSES)

# Rows for konan/governance/route_permissions.py ROUTE_RULES, added when app.py includes this
# router (a rule without its route fails tests/governance/test_permission_table.py):
#   ("POST", "/api/v1/deployments/{name}/feedback"): Action.deploy,
#       (users; an API key with the "feedback" scope for the deployment is also accepted)
#   ("GET", "/api/v1/deployments/{name}/monitoring/performance"): Action.read,
ROUTE_RULES_TO_ADD = {
    ("POST", "/api/v1/deployments/{name}/feedback"): Action.deploy,
    ("GET", "/api/v1/deployments/{name}/monitoring/performance"): Action.read,
}


def _key_deployment(session: Session, name: str, token: str) -> Deployment:
    row = session.scalar(sa.select(ApiKey).where(ApiKey.key_hash == api_keys.hash_key(token)))
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("the API key is invalid or revoked")
    deployment = deployments_repo.by_name(session, name)
    if deployment is None:
        raise NotFound(f"deployment {name!r} not found")
    allowed = api_keys.keys_for_deployment(session, deployment, "feedback")
    if all(key.id != row.id for key in allowed):
        raise PermissionDenied(
            f"this API key may not send feedback to {name!r} (it needs the 'feedback' scope "
            "for this deployment, and must not be expired)"
        )
    return deployment


def feedback_target(
    name: str, request: Request, state: StateDep, session: SessionDep
) -> Deployment:
    """The deployment, if the caller may send it feedback: an API key with the feedback scope,
    or a user with Action.deploy on its project."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = value.strip()
    if scheme.lower() == "bearer" and token.startswith("kn_"):
        return _key_deployment(session, name, token)
    principal = get_principal(request, state, session)
    return deployments.get_deployment(session, principal.user, name, Action.deploy)


@router.post(
    "/deployments/{name}/feedback",
    response_model=FeedbackRead,
    summary="Send ground truth for logged predictions, by request id",
)
def post_feedback(
    name: str,
    body: FeedbackBody,
    deployment: Annotated[Deployment, Depends(feedback_target)],
    session: SessionDep,
) -> FeedbackRead:
    result = feedback_service.record_feedback(session, deployment, body.all_items())
    return FeedbackRead(
        accepted=result.accepted, duplicates=result.duplicates, unmatched=result.unmatched
    )


def _max_rows(state: AppState) -> int:
    configured = getattr(state.settings.monitoring, "performance_max_rows", None)
    return int(configured) if configured else performance_service.DEFAULT_MAX_ROWS


@router.get(
    "/deployments/{name}/monitoring/performance",
    summary="Realised performance from ground truth, estimated performance (CBPE) before it",
)
def get_performance(
    name: str,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    start: Annotated[datetime | None, Query(description="ISO 8601; default end - 7 days")] = None,
    end: Annotated[datetime | None, Query(description="ISO 8601; default now")] = None,
    bucket: Annotated[str | None, Query(description="15m, 1h, 1d, 1w …; default 1d")] = None,
    version: Annotated[int | None, Query(ge=1, description="only this model version")] = None,
    estimated: Annotated[bool, Query(description="include CBPE estimates")] = True,
) -> dict[str, Any]:
    deployment = deployments.get_deployment(session, principal.user, name, Action.read)
    window = performance_service.parse_window(start, end, bucket, version)
    return performance_service.performance(
        session, deployment, window, max_rows=_max_rows(state), estimated=estimated
    )
