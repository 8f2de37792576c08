"""Four-eyes approval of production changes.

A request is decided once, by a user other than the requester who holds the approver role (or
owner, or admin) in the deployment's project. Approving executes the change in the same
transaction, exactly once; a request asked against an older revision than the deployment's
current one is refused (409), so of two conflicting requests only the first approved applies.
The artifact digest the approver saw must still be the version's digest.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from konan.core.errors import Conflict, NotFound, PermissionDenied
from konan.core.types import ApprovalStatus, utcnow
from konan.deployments import repository as deployments_repo
from konan.deployments import service as deployments
from konan.deployments.orm import Deployment
from konan.deployments.schemas import TrafficUpdate
from konan.governance import audit
from konan.governance import repository as governance_repo
from konan.governance.orm import ApprovalRequest, User
from konan.governance.permissions import Action, authorize, visible_project_ids
from konan.registry.orm import ModelVersion


def _locked_request(session: Session, user: User, approval_id: int) -> ApprovalRequest:
    row = session.get(ApprovalRequest, approval_id, with_for_update=True, populate_existing=True)
    deployment = session.get(Deployment, row.deployment_id) if row else None
    project = governance_repo.project_by_id(session, deployment.project_id) if deployment else None
    if row is None or project is None:
        raise NotFound(f"approval request {approval_id} not found")
    try:
        authorize(session, user, project, Action.read)
    except NotFound:
        raise NotFound(f"approval request {approval_id} not found") from None
    return row


def list_requests(
    session: Session, user: User, status: str | None, deployment: str | None
) -> list[ApprovalRequest]:
    import sqlalchemy as sa

    query = sa.select(ApprovalRequest).order_by(ApprovalRequest.id.desc())
    ids = visible_project_ids(session, user)
    if ids is not None:
        query = query.join(Deployment, Deployment.id == ApprovalRequest.deployment_id).where(
            Deployment.project_id.in_(ids)
        )
    if status:
        query = query.where(ApprovalRequest.status == status)
    if deployment:
        found = deployments_repo.by_name(session, deployment)
        if found is None:
            return []
        query = query.where(ApprovalRequest.deployment_id == found.id)
    return list(session.scalars(query.limit(500)))


def _decide_checks(session: Session, user: User, request: ApprovalRequest) -> Deployment:
    deployment = session.get(Deployment, request.deployment_id)
    assert deployment is not None
    project = governance_repo.project_by_id(session, deployment.project_id)
    assert project is not None
    authorize(session, user, project, Action.approve)
    if request.requested_by_id == user.id:
        raise PermissionDenied("four eyes: you cannot decide your own request")
    if request.status != ApprovalStatus.pending:
        raise Conflict(f"approval request {request.id} is already {request.status}")
    if request.expires_at <= utcnow():
        raise Conflict(f"approval request {request.id} has expired; request the change again")
    return deployment


def approve(session: Session, user: User, approval_id: int, comment: str) -> Deployment:
    request = _locked_request(session, user, approval_id)
    deployment = _decide_checks(session, user, request)
    locked = deployments_repo.lock(session, deployment.id)
    base = request.payload.get("base_revision")
    if base is not None and locked.current_revision != base:
        raise Conflict(
            f"deployment {locked.name!r} changed since this request (revision {base} → "
            f"{locked.current_revision}); request the change again"
        )
    if request.model_version_id is not None:
        version = session.get(ModelVersion, request.model_version_id)
        if version is None or version.artifact_sha256 != request.artifact_sha256:
            raise Conflict("the version's artifact is not the one that was approved for review")
    requester = session.get(User, request.requested_by_id)
    assert requester is not None
    reason = f"approved by {user.username}: {comment}".strip(": ")
    if request.action == "promote":
        version = session.get(ModelVersion, request.model_version_id)
        assert version is not None
        deployments.apply_promotion(session, requester, locked, version, reason)
    elif request.action == "rollback":
        target = deployments_repo.revision(session, locked.id, int(request.payload["revision"]))
        if target is None:
            raise Conflict("the revision to roll back to no longer exists")
        deployments.apply_rollback(session, requester, locked, target, reason)
    elif request.action == "traffic":
        body = TrafficUpdate.model_validate(
            {k: v for k, v in request.payload.items() if k != "base_revision"}
        )
        locked.production_gated = False  # apply as asked, without asking again
        try:
            deployments.set_traffic(session, requester, locked, body)
        finally:
            locked.production_gated = True
    request.status = ApprovalStatus.executed
    request.decided_by_id = user.id
    request.decided_at = utcnow()
    request.comment = comment
    audit.record(
        session,
        actor=audit.Actor(user.id, user.username),
        action="approval.approve",
        object_type="approval_request",
        object_id=request.id,
        project_id=locked.project_id,
        before={"status": ApprovalStatus.pending.value},
        after={"status": ApprovalStatus.executed.value, "comment": comment},
    )
    return locked


def reject(session: Session, user: User, approval_id: int, comment: str) -> None:
    request = _locked_request(session, user, approval_id)
    deployment = _decide_checks(session, user, request)
    request.status = ApprovalStatus.rejected
    request.decided_by_id = user.id
    request.decided_at = utcnow()
    request.comment = comment
    audit.record(
        session,
        actor=audit.Actor(user.id, user.username),
        action="approval.reject",
        object_type="approval_request",
        object_id=request.id,
        project_id=deployment.project_id,
        before={"status": ApprovalStatus.pending.value},
        after={"status": ApprovalStatus.rejected.value, "comment": comment},
    )
