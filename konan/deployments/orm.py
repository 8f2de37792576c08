"""Deployments (desired serving state) and their revisions (every change is a new one)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from konan.core.types import DeploymentStatus
from konan.db.base import Base, TimestampMixin


class Deployment(TimestampMixin, Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Names are global: they appear in the endpoint path /api/v1/deployments/{name}/predict.
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    project_id: Mapped[int] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="RESTRICT"), index=True
    )
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="RESTRICT"))
    runtime: Mapped[str] = mapped_column(sa.String(20))
    production_gated: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(20), default=DeploymentStatus.pending)
    status_reason: Mapped[str | None] = mapped_column(sa.String(50))
    status_message: Mapped[str] = mapped_column(sa.Text, default="")
    current_revision: Mapped[int] = mapped_column(default=1)
    endpoint_url: Mapped[str | None] = mapped_column(sa.String(500))
    # Drift thresholds and the like, chosen per deployment (konan.monitoring); not a serving
    # setting, so changing it is not a revision.
    monitoring_settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    updated_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]

    revisions: Mapped[list[DeploymentRevision]] = relationship(
        back_populates="deployment", order_by="DeploymentRevision.revision"
    )


class DeploymentRevision(TimestampMixin, Base):
    __tablename__ = "deployment_revisions"
    __table_args__ = (
        sa.UniqueConstraint("deployment_id", "revision"),
        sa.CheckConstraint("canary_weight >= 0 AND canary_weight <= 1", name="canary_weight"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id", ondelete="CASCADE"))
    revision: Mapped[int]
    champion_version_id: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.id"))
    canary_version_id: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.id"))
    canary_weight: Mapped[float] = mapped_column(default=0.0)
    shadow_version_id: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.id"))
    replicas_min: Mapped[int] = mapped_column(default=1)
    replicas_max: Mapped[int] = mapped_column(default=1)
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    deployment: Mapped[Deployment] = relationship(back_populates="revisions")
