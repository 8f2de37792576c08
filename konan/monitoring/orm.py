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
    # json, not jsonb, on PostgreSQL: the log is written far more than it is read, nothing
    # queries inside these columns, and json skips building jsonb's binary form on every row
    # (COPY of 50,000 rows: 4.8-5.3 µs per row against 8.6-8.7).
    inputs: Mapped[list[Any] | None] = mapped_column(sa.JSON())
    outputs: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())
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


# ---- rollups kept at ingest (see rollups.py) -------------------------------------------------

# Upper bounds (ms) of the latency histogram, Prometheus-style; a last bucket takes the rest.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0
)  # fmt: skip


class HealthMinute(Base):
    """Requests of one deployment, model version and role in one minute; counts only add up.

    ``model_version_id`` is 0 for a request no version answered (no foreign key: a rollup row
    is a sum, and 0 keeps the primary key usable for ON CONFLICT on both backends).
    The ``latency_le_*`` columns are per-bucket (not cumulative) counts over LATENCY_BOUNDS_MS.
    """

    __tablename__ = "monitoring_health_minutes"

    deployment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    model_version_id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(10), primary_key=True)
    bucket_start: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    requests: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    status_2xx: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    status_4xx: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    status_5xx: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_sum_ms: Mapped[float] = mapped_column(default=0.0)
    latency_le_1: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_2_5: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_5: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_10: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_25: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_50: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_100: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_250: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_500: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_1000: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_2500: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_5000: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_10000: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    latency_le_inf: Mapped[int] = mapped_column(sa.BigInteger, default=0)


LATENCY_COLUMNS: tuple[str, ...] = (
    "latency_le_1", "latency_le_2_5", "latency_le_5", "latency_le_10", "latency_le_25",
    "latency_le_50", "latency_le_100", "latency_le_250", "latency_le_500", "latency_le_1000",
    "latency_le_2500", "latency_le_5000", "latency_le_10000", "latency_le_inf",
)  # fmt: skip


class FeatureHistogram(Base):
    """Live values of one feature (or ``__prediction__``) of one model version in one hour,
    counted over the version's reference bins: one row per bin.

    ``bin`` is the reference bin index (numeric: right-closed bins over the edges; categorical:
    ``[*categories, other, unseen]``) and -1 for missing values (null, NaN, +/-inf, or a value
    of the wrong type).
    """

    __tablename__ = "monitoring_feature_histograms"

    deployment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    model_version_id: Mapped[int] = mapped_column(primary_key=True)
    bucket_start: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    feature: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    bin: Mapped[int] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
