"""Use cases of deployments: desired serving state and its revisions. Never commits.

Every change (create, traffic, promote, rollback, scale) writes a new revision with who, when
and why; the reconciler then makes the runtime match the newest revision. On a production-gated
deployment, promote, canary-weight and rollback changes become approval requests instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from konan.core.errors import Conflict, InvalidInput, NotFound
from konan.core.settings import Settings
from konan.core.types import ApprovalStatus, DeploymentStatus, utcnow
from konan.deployments import repository
from konan.deployments.orm import Deployment, DeploymentRevision
from konan.deployments.schemas import (
    DeploymentCreate,
    PromoteRequest,
    RollbackRequest,
    ScaleRequest,
    TrafficUpdate,
)
from konan.governance import audit
from konan.governance import repository as governance_repo
from konan.governance.orm import ApprovalRequest, User
from konan.governance.permissions import (
    Action,
    authorize,
    authorize_object,
    project_scope,
    visible_project,
)
from konan.registry import repository as registry_repo
from konan.registry.orm import Model, ModelVersion

APPROVAL_TTL = timedelta(days=7)


def _actor(user: User) -> audit.Actor:
    return audit.Actor(user.id, user.username)


def get_deployment(
    session: Session, user: User, name: str, action: Action = Action.read
) -> Deployment:
    deployment = repository.by_name(session, name)
    project = governance_repo.project_by_id(session, deployment.project_id) if deployment else None
    authorize_object(session, user, project, action, f"deployment {name!r} not found")
    assert deployment is not None
    return deployment


def list_deployments(session: Session, user: User, project: str | None) -> list[Deployment]:
    return repository.list_active(session, project_scope(session, user, project))


def current_revision(session: Session, deployment: Deployment) -> DeploymentRevision:
    row = repository.revision(session, deployment.id, deployment.current_revision)
    assert row is not None, "a deployment always has its current revision"
    return row


def _version(session: Session, model: Model, number: int) -> ModelVersion:
    row = registry_repo.version(session, model.id, number)
    if row is None:
        raise InvalidInput(f"model {model.name!r} has no version {number}")
    if row.status != "ready":
        raise Conflict(f"version {number} of {model.name!r} is {row.status}, not ready to serve")
    return row


def _number(session: Session, version_id: int | None) -> int | None:
    if version_id is None:
        return None
    row = session.get(ModelVersion, version_id)
    return row.version if row else None


def traffic_of(session: Session, revision: DeploymentRevision) -> dict[str, Any]:
    return {
        "champion": _number(session, revision.champion_version_id),
        "canary": _number(session, revision.canary_version_id),
        "canary_weight": revision.canary_weight,
        "shadow": _number(session, revision.shadow_version_id),
    }


def _new_revision(
    session: Session,
    user: User,
    deployment: Deployment,
    *,
    champion: ModelVersion,
    canary: ModelVersion | None,
    canary_weight: float,
    shadow: ModelVersion | None,
    replicas: tuple[int, int],
    reason: str,
    action: str,
) -> DeploymentRevision:
    if canary is not None and canary.id == champion.id:
        raise InvalidInput("the canary must be a different version from the champion")
    if shadow is not None and shadow.id == champion.id:
        raise InvalidInput("the shadow must be a different version from the champion")
    if canary is None and canary_weight > 0:
        raise InvalidInput("canary_weight needs a canary version")
    locked = repository.lock(session, deployment.id)
    before = None
    if locked.current_revision and repository.revision(session, locked.id, locked.current_revision):
        before = traffic_of(session, current_revision(session, locked))
    number = repository.latest_revision_number(session, locked.id) + 1
    row = DeploymentRevision(
        deployment_id=locked.id,
        revision=number,
        champion_version_id=champion.id,
        canary_version_id=canary.id if canary else None,
        canary_weight=canary_weight if canary else 0.0,
        shadow_version_id=shadow.id if shadow else None,
        replicas_min=replicas[0],
        replicas_max=replicas[1],
        reason=reason,
        created_by_id=user.id,
    )
    session.add(row)
    session.flush()
    locked.current_revision = number
    locked.updated_at = utcnow()
    if locked.status in (DeploymentStatus.ready, DeploymentStatus.failed):
        locked.status = DeploymentStatus.starting
    audit.record(
        session,
        actor=_actor(user),
        action=f"deployment.{action}",
        object_type="deployment",
        object_id=locked.id,
        project_id=locked.project_id,
        before={"revision": number - 1, "traffic": before} if before else None,
        after={
            "revision": number,
            "traffic": traffic_of(session, row),
            "replicas": {"min": replicas[0], "max": replicas[1]},
            "reason": reason,
        },
    )
    return row


def create(session: Session, user: User, body: DeploymentCreate, settings: Settings) -> Deployment:
    project = visible_project(session, user, body.project, Action.deploy)
    model = registry_repo.model_by_name(session, project.id, body.model)
    if model is None:
        raise InvalidInput(f"model {body.model!r} not found in project {project.name!r}")
    version = _version(session, model, body.version)
    if repository.by_name_any(session, body.name) is not None:
        raise Conflict(f"a deployment named {body.name!r} already exists")
    deployment = Deployment(
        name=body.name,
        project_id=project.id,
        model_id=model.id,
        runtime=body.runtime or settings.runtime.kind,
        production_gated=body.production_gated,
        status=DeploymentStatus.pending,
        current_revision=0,
        created_by_id=user.id,
    )
    session.add(deployment)
    session.flush()
    _new_revision(
        session,
        user,
        deployment,
        champion=version,
        canary=None,
        canary_weight=0.0,
        shadow=None,
        replicas=(body.replicas.min, body.replicas.max),
        reason=body.reason or "created",
        action="create",
    )
    return deployment


# ---- changes that may need an approval ------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A change either applied (a new revision) or waiting for approval (a request)."""

    revision: DeploymentRevision | None = None
    approval: ApprovalRequest | None = None


def _request_approval(
    session: Session,
    user: User,
    deployment: Deployment,
    *,
    action: str,
    payload: dict[str, Any],
    target: ModelVersion | None,
    reason: str,
) -> ApprovalRequest:
    project = governance_repo.project_by_id(session, deployment.project_id)
    assert project is not None
    authorize(session, user, project, Action.request_promotion)
    current = current_revision(session, deployment)
    champion = session.get(ModelVersion, current.champion_version_id)
    evidence: dict[str, Any] = {"current": traffic_of(session, current)}
    if target is not None and champion is not None:
        evidence["metrics"] = {"champion": champion.metrics, "candidate": target.metrics}
        evidence["signature_changed"] = target.signature != champion.signature
    request = ApprovalRequest(
        deployment_id=deployment.id,
        model_version_id=target.id if target else None,
        action=action,
        # The revision this change was asked against: approving it later, after another change
        # landed, would silently undo that change, so it is refused instead (409).
        payload={**payload, "base_revision": deployment.current_revision},
        evidence=evidence,
        artifact_sha256=target.artifact_sha256 if target else None,
        status=ApprovalStatus.pending,
        reason=reason,
        requested_by_id=user.id,
        expires_at=utcnow() + APPROVAL_TTL,
    )
    session.add(request)
    session.flush()
    audit.record(
        session,
        actor=_actor(user),
        action="approval.request",
        object_type="approval_request",
        object_id=request.id,
        project_id=deployment.project_id,
        after={"deployment": deployment.name, "action": action, "payload": payload},
    )
    return request


def set_traffic(
    session: Session, user: User, deployment: Deployment, body: TrafficUpdate
) -> Outcome:
    model = session.get(Model, deployment.model_id)
    assert model is not None
    current = current_revision(session, deployment)
    champion = (
        _version(session, model, body.champion)
        if body.champion is not None
        else session.get(ModelVersion, current.champion_version_id)
    )
    assert champion is not None
    canary = _version(session, model, body.canary) if body.canary is not None else None
    shadow = _version(session, model, body.shadow) if body.shadow is not None else None
    if deployment.production_gated and (
        body.champion is not None or canary is not None or current.canary_version_id is not None
    ):
        payload = body.model_dump(mode="json")
        return Outcome(
            approval=_request_approval(
                session,
                user,
                deployment,
                action="traffic",
                payload=payload,
                target=canary or champion,
                reason=body.reason,
            )
        )
    return Outcome(
        revision=_new_revision(
            session,
            user,
            deployment,
            champion=champion,
            canary=canary,
            canary_weight=body.canary_weight,
            shadow=shadow,
            replicas=(current.replicas_min, current.replicas_max),
            reason=body.reason,
            action="traffic",
        )
    )


def promote(session: Session, user: User, deployment: Deployment, body: PromoteRequest) -> Outcome:
    model = session.get(Model, deployment.model_id)
    assert model is not None
    current = current_revision(session, deployment)
    if body.version is not None:
        target = _version(session, model, body.version)
    elif current.canary_version_id is not None:
        target = session.get(ModelVersion, current.canary_version_id)  # type: ignore[assignment]
    else:
        raise InvalidInput("there is no canary to promote; name the version to promote")
    assert target is not None
    if target.id == current.champion_version_id:
        raise Conflict(f"version {target.version} is already the champion")
    if deployment.production_gated:
        return Outcome(
            approval=_request_approval(
                session,
                user,
                deployment,
                action="promote",
                payload={"version": target.version},
                target=target,
                reason=body.reason,
            )
        )
    return Outcome(revision=apply_promotion(session, user, deployment, target, body.reason))


def apply_promotion(
    session: Session, user: User, deployment: Deployment, target: ModelVersion, reason: str
) -> DeploymentRevision:
    current = current_revision(session, deployment)
    shadow = (
        session.get(ModelVersion, current.shadow_version_id)
        if current.shadow_version_id not in (None, target.id)
        else None
    )
    return _new_revision(
        session,
        user,
        deployment,
        champion=target,
        canary=None,
        canary_weight=0.0,
        shadow=shadow,
        replicas=(current.replicas_min, current.replicas_max),
        reason=reason or f"promoted version {target.version}",
        action="promote",
    )


def rollback(
    session: Session, user: User, deployment: Deployment, body: RollbackRequest
) -> Outcome:
    current = current_revision(session, deployment)
    number = body.revision if body.revision is not None else current.revision - 1
    if number < 1 or number == current.revision:
        raise Conflict("there is no earlier revision to roll back to")
    target = repository.revision(session, deployment.id, number)
    if target is None:
        raise NotFound(f"deployment {deployment.name!r} has no revision {number}")
    if deployment.production_gated:
        champion = session.get(ModelVersion, target.champion_version_id)
        return Outcome(
            approval=_request_approval(
                session,
                user,
                deployment,
                action="rollback",
                payload={"revision": number},
                target=champion,
                reason=body.reason,
            )
        )
    return Outcome(revision=apply_rollback(session, user, deployment, target, body.reason))


def apply_rollback(
    session: Session, user: User, deployment: Deployment, target: DeploymentRevision, reason: str
) -> DeploymentRevision:
    def version(version_id: int | None) -> ModelVersion | None:
        return session.get(ModelVersion, version_id) if version_id else None

    champion = version(target.champion_version_id)
    assert champion is not None
    return _new_revision(
        session,
        user,
        deployment,
        champion=champion,
        canary=version(target.canary_version_id),
        canary_weight=target.canary_weight,
        shadow=version(target.shadow_version_id),
        replicas=(target.replicas_min, target.replicas_max),
        reason=reason or f"rolled back to revision {target.revision}",
        action="rollback",
    )


def scale(session: Session, user: User, deployment: Deployment, body: ScaleRequest) -> Outcome:
    current = current_revision(session, deployment)

    def version(version_id: int | None) -> ModelVersion | None:
        return session.get(ModelVersion, version_id) if version_id else None

    champion = version(current.champion_version_id)
    assert champion is not None
    return Outcome(
        revision=_new_revision(
            session,
            user,
            deployment,
            champion=champion,
            canary=version(current.canary_version_id),
            canary_weight=current.canary_weight,
            shadow=version(current.shadow_version_id),
            replicas=(body.replicas.min, body.replicas.max),
            reason=body.reason or "scaled",
            action="scale",
        )
    )


def delete(session: Session, user: User, deployment: Deployment) -> None:
    locked = repository.lock(session, deployment.id)
    locked.status = DeploymentStatus.deleting
    locked.deleted_at = utcnow()
    audit.record(
        session,
        actor=_actor(user),
        action="deployment.delete",
        object_type="deployment",
        object_id=locked.id,
        project_id=locked.project_id,
        before={"name": locked.name, "revision": locked.current_revision},
    )
