"""Queries of the deployments domain. Flush, never commit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from konan.deployments.orm import Deployment, DeploymentRevision


def by_name(session: Session, name: str) -> Deployment | None:
    return session.scalar(
        sa.select(Deployment).where(Deployment.name == name, Deployment.deleted_at.is_(None))
    )


def by_name_any(session: Session, name: str) -> Deployment | None:
    return session.scalar(sa.select(Deployment).where(Deployment.name == name))


def lock(session: Session, deployment_id: int) -> Deployment:
    """The row, locked until commit: revisions are numbered one change at a time."""
    row = session.scalar(
        sa.select(Deployment)
        .where(Deployment.id == deployment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


def revision(session: Session, deployment_id: int, number: int) -> DeploymentRevision | None:
    return session.scalar(
        sa.select(DeploymentRevision).where(
            DeploymentRevision.deployment_id == deployment_id,
            DeploymentRevision.revision == number,
        )
    )


def revisions(session: Session, deployment_id: int) -> list[DeploymentRevision]:
    return list(
        session.scalars(
            sa.select(DeploymentRevision)
            .where(DeploymentRevision.deployment_id == deployment_id)
            .order_by(DeploymentRevision.revision)
        )
    )


def latest_revision_number(session: Session, deployment_id: int) -> int:
    return (
        session.scalar(
            sa.select(sa.func.max(DeploymentRevision.revision)).where(
                DeploymentRevision.deployment_id == deployment_id
            )
        )
        or 0
    )


def list_active(session: Session, project_ids: list[int] | None) -> list[Deployment]:
    query = sa.select(Deployment).where(Deployment.deleted_at.is_(None)).order_by(Deployment.name)
    if project_ids is not None:
        query = query.where(Deployment.project_id.in_(project_ids))
    return list(session.scalars(query))


def all_ids(session: Session) -> list[int]:
    """Every deployment the reconciler must look at: live ones and ones being deleted."""
    return list(
        session.scalars(
            sa.select(Deployment.id).where(
                sa.or_(Deployment.deleted_at.is_(None), Deployment.status == "deleting")
            )
        )
    )
