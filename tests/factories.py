"""Rows for tests, made through the ORM. Each returns the objects it created."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from konan.core.types import ProjectRole, utcnow
from konan.deployments.orm import Deployment, DeploymentRevision
from konan.governance.orm import ApprovalRequest, Project, ProjectMember, User
from konan.governance.security import hash_password
from konan.registry.orm import Model, ModelVersion


@dataclass
class Seeded:
    project: Project
    user: User
    model: Model
    version: ModelVersion
    deployment: Deployment


def seed_deployment(session: Session, name: str = "churn-live") -> Seeded:
    project = Project(name=f"p-{name}")
    user = User(username=f"u-{name}", password_hash=hash_password("pw-" + name))
    session.add_all([project, user])
    session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=user.id, role=ProjectRole.owner))
    model = Model(project_id=project.id, name="churn", task="classification", created_by_id=user.id)
    session.add(model)
    session.flush()
    version = ModelVersion(
        model_id=model.id,
        version=1,
        flavor="sklearn",
        artifact_sha256=hashlib.sha256(name.encode()).hexdigest(),
        artifact_size=10,
        created_by_id=user.id,
    )
    session.add(version)
    session.flush()
    deployment = Deployment(
        name=name, project_id=project.id, model_id=model.id, runtime="local", created_by_id=user.id
    )
    session.add(deployment)
    session.flush()
    session.add(
        DeploymentRevision(deployment_id=deployment.id, revision=1, champion_version_id=version.id)
    )
    session.flush()
    return Seeded(project, user, model, version, deployment)


def approval_request(session: Session, seeded: Seeded, *, expires_in: timedelta) -> ApprovalRequest:
    request = ApprovalRequest(
        deployment_id=seeded.deployment.id,
        model_version_id=seeded.version.id,
        action="promote",
        requested_by_id=seeded.user.id,
        expires_at=utcnow() + expires_in,
    )
    session.add(request)
    session.flush()
    return request
