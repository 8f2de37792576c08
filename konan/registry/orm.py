"""Models, immutable versions, datasets and their versions, aliases with history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from konan.db.base import Base, TimestampMixin


class Model(TimestampMixin, Base):
    __tablename__ = "models"
    __table_args__ = (sa.UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(100))
    task: Mapped[str] = mapped_column(sa.String(30))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", order_by="ModelVersion.version"
    )


class ModelVersion(TimestampMixin, Base):
    """Immutable once written: artifact, digest, creator and lineage never change."""

    __tablename__ = "model_versions"
    __table_args__ = (
        sa.UniqueConstraint("model_id", "version"),
        sa.UniqueConstraint("model_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="RESTRICT"))
    version: Mapped[int]
    flavor: Mapped[str] = mapped_column(sa.String(30))
    artifact_sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    artifact_size: Mapped[int] = mapped_column(sa.BigInteger)
    signature: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(sa.String(20), default="ready")
    trusted: Mapped[bool] = mapped_column(default=False)
    # skops types an admin vouched for at upload: model servers load with the same list.
    trusted_types: Mapped[list[Any]] = mapped_column(default=list)
    training_dataset_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("dataset_versions.id")
    )
    reference_dataset_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("dataset_versions.id")
    )
    parent_version_id: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.id"))
    source_commit: Mapped[str | None] = mapped_column(sa.String(64))
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(128))
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    # Bins of the model's own predictions on its reference data, taken at registration: the
    # reference for prediction drift (None: no reference data, or the model could not run).
    prediction_profile: Mapped[dict[str, Any] | None]
    # A faster equivalent compiled at registration (ONNX from scikit-learn) when its outputs
    # matched the original's on the reference sample; model servers prefer it.
    compiled_flavor: Mapped[str | None] = mapped_column(sa.String(30))
    compiled_sha256: Mapped[str | None] = mapped_column(sa.String(64))

    model: Mapped[Model] = relationship(back_populates="versions")


class Dataset(TimestampMixin, Base):
    __tablename__ = "datasets"
    __table_args__ = (sa.UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.version"
    )


class DatasetVersion(TimestampMixin, Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (sa.UniqueConstraint("dataset_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(sa.ForeignKey("datasets.id", ondelete="RESTRICT"))
    version: Mapped[int]
    sha256: Mapped[str] = mapped_column(sa.String(64), index=True)
    format: Mapped[str] = mapped_column(sa.String(20))  # csv | parquet
    size: Mapped[int] = mapped_column(sa.BigInteger)
    row_count: Mapped[int] = mapped_column(sa.BigInteger)
    schema: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Bin edges / category frequencies per column: what monitoring compares live traffic to.
    reference_bins: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class ModelAlias(Base):
    __tablename__ = "model_aliases"
    __table_args__ = (sa.UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(100))
    model_version_id: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.id"))
    updated_at: Mapped[datetime]
    updated_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))


class AliasEvent(Base):
    """Every move of an alias: who, when, from which version to which, and why."""

    __tablename__ = "alias_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    alias_id: Mapped[int] = mapped_column(
        sa.ForeignKey("model_aliases.id", ondelete="CASCADE"), index=True
    )
    from_version_id: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.id"))
    to_version_id: Mapped[int | None] = mapped_column(sa.ForeignKey("model_versions.id"))
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    at: Mapped[datetime]
