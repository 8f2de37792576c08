"""Queries of the registry. Flush, never commit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from konan.registry.orm import (
    AliasEvent,
    Dataset,
    DatasetVersion,
    Model,
    ModelAlias,
    ModelVersion,
)


def model_by_name(session: Session, project_id: int, name: str) -> Model | None:
    return session.scalar(
        sa.select(Model).where(Model.project_id == project_id, Model.name == name)
    )


def lock_model(session: Session, model_id: int) -> Model:
    """The model row, locked until commit: version numbers are handed out one at a time."""
    model = session.scalar(
        sa.select(Model)
        .where(Model.id == model_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert model is not None
    return model


def list_models(session: Session, project_ids: list[int] | None) -> list[Model]:
    query = sa.select(Model).order_by(Model.name)
    if project_ids is not None:
        query = query.where(Model.project_id.in_(project_ids))
    return list(session.scalars(query))


def latest_version_number(session: Session, model_id: int) -> int | None:
    return session.scalar(
        sa.select(sa.func.max(ModelVersion.version)).where(ModelVersion.model_id == model_id)
    )


def version(session: Session, model_id: int, number: int) -> ModelVersion | None:
    return session.scalar(
        sa.select(ModelVersion).where(
            ModelVersion.model_id == model_id, ModelVersion.version == number
        )
    )


def version_by_idempotency_key(session: Session, model_id: int, key: str) -> ModelVersion | None:
    return session.scalar(
        sa.select(ModelVersion).where(
            ModelVersion.model_id == model_id, ModelVersion.idempotency_key == key
        )
    )


def list_versions(session: Session, model_id: int) -> list[ModelVersion]:
    return list(
        session.scalars(
            sa.select(ModelVersion)
            .where(ModelVersion.model_id == model_id)
            .order_by(ModelVersion.version)
        )
    )


def aliases_of(session: Session, model_id: int) -> list[ModelAlias]:
    return list(
        session.scalars(
            sa.select(ModelAlias).where(ModelAlias.model_id == model_id).order_by(ModelAlias.name)
        )
    )


def alias(session: Session, model_id: int, name: str) -> ModelAlias | None:
    return session.scalar(
        sa.select(ModelAlias).where(ModelAlias.model_id == model_id, ModelAlias.name == name)
    )


def alias_history(
    session: Session, model_id: int, name: str | None = None
) -> list[tuple[AliasEvent, str]]:
    query = (
        sa.select(AliasEvent, ModelAlias.name)
        .join(ModelAlias, ModelAlias.id == AliasEvent.alias_id)
        .where(ModelAlias.model_id == model_id)
        .order_by(AliasEvent.id)
    )
    if name is not None:
        query = query.where(ModelAlias.name == name)
    return [(event, alias_name) for event, alias_name in session.execute(query).all()]


def dataset_by_name(session: Session, project_id: int, name: str) -> Dataset | None:
    return session.scalar(
        sa.select(Dataset).where(Dataset.project_id == project_id, Dataset.name == name)
    )


def lock_dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = session.scalar(
        sa.select(Dataset)
        .where(Dataset.id == dataset_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert dataset is not None
    return dataset


def list_datasets(session: Session, project_ids: list[int] | None) -> list[Dataset]:
    query = sa.select(Dataset).order_by(Dataset.name)
    if project_ids is not None:
        query = query.where(Dataset.project_id.in_(project_ids))
    return list(session.scalars(query))


def latest_dataset_version_number(session: Session, dataset_id: int) -> int | None:
    return session.scalar(
        sa.select(sa.func.max(DatasetVersion.version)).where(
            DatasetVersion.dataset_id == dataset_id
        )
    )


def dataset_version(session: Session, dataset_id: int, number: int) -> DatasetVersion | None:
    return session.scalar(
        sa.select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.version == number
        )
    )


def list_dataset_versions(session: Session, dataset_id: int) -> list[DatasetVersion]:
    return list(
        session.scalars(
            sa.select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset_id)
            .order_by(DatasetVersion.version)
        )
    )


def sha_in_use(session: Session, sha256: str) -> bool:
    """Whether any row still points at these bytes (content-addressed: shared by design)."""
    in_models = session.scalar(
        sa.select(sa.func.count())
        .select_from(ModelVersion)
        .where(
            sa.or_(ModelVersion.artifact_sha256 == sha256, ModelVersion.compiled_sha256 == sha256)
        )
    )
    in_datasets = session.scalar(
        sa.select(sa.func.count())
        .select_from(DatasetVersion)
        .where(DatasetVersion.sha256 == sha256)
    )
    return bool(in_models or in_datasets)
