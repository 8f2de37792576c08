"""Raw prediction logs, late ground truth, alert rules and alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from konan.core.types import AlertState
from konan.db.base import Base, BigIntId, TimestampMixin


class PredictionLog(Base):
    """One row per request and serving role; idempotent by (request_id, role)."""

    __tablename__ = "prediction_logs"
    __table_args__ = (
        sa.UniqueConstraint("request_id", "role"),
        sa.Index("ix_prediction_logs_deployment_bucket", "deployment_id", "bucket_start"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.String(64))
    deployment_id: Mapped[int] = mapped_column(sa.ForeignKey("deployments.id", ondelete="CASCADE"))
    model_version_id: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.id"))
    role: Mapped[str] = mapped_column(sa.String(10), default="champion")  # champion|canary|shadow
    at: Mapped[datetime]
    # Epoch seconds floored to the minute: same GROUP BY on SQLite and PostgreSQL.
    bucket_start: Mapped[int] = mapped_column(sa.BigInteger)
    inputs: Mapped[list[Any] | None]
    outputs: Mapped[dict[str, Any] | None]
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    status_code: Mapped[int] = mapped_column(default=200)
    error: Mapped[str | None] = mapped_column(sa.Text)


class GroundTruth(Base):
    __tablename__ = "ground_truth"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    deployment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    labels: Mapped[list[Any]]
    received_at: Mapped[datetime]


class AlertRule(TimestampMixin, Base):
    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(sa.String(30))  # drift | performance | error_rate | latency
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cooldown_seconds: Mapped[int] = mapped_column(default=3600)
    webhook_url: Mapped[str | None] = mapped_column(sa.String(1000))
    enabled: Mapped[bool] = mapped_column(default=True)


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("alert_rules.id", ondelete="SET NULL")
    )
    deployment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(sa.String(30))
    state: Mapped[str] = mapped_column(sa.String(20), default=AlertState.firing)
    message: Mapped[str] = mapped_column(sa.Text, default="")
    value: Mapped[float | None]
    started_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
