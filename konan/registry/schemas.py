"""Wire models of the registry: models, versions, datasets, aliases."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from konan.core.names import Name
from konan.core.types import TaskType
from konan.registry.signature import Signature

Description = Annotated[str, StringConstraints(max_length=10_000)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Scalar = str | int | float | bool | None

FLAVORS = ("sklearn", "skops", "onnx", "python", "pickle", "joblib")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelCreate(Strict):
    name: Name
    task: TaskType
    project: Name = "default"
    description: Description = ""


class ModelRead(BaseModel):
    id: int
    name: str
    project: str
    task: str
    description: str
    created_at: datetime
    created_by: str | None
    latest_version: int | None
    aliases: dict[str, int]


class DatasetRef(Strict):
    name: Name
    version: int = Field(ge=1)


class VersionMetadata(Strict):
    """The `metadata` part of a version upload."""

    flavor: str | None = Field(default=None, description=f"one of {', '.join(FLAVORS)}")
    metrics: dict[TagKey, float] = Field(default_factory=dict)
    params: dict[TagKey, Scalar] = Field(default_factory=dict)
    tags: dict[TagKey, Annotated[str, StringConstraints(max_length=5000)]] = Field(
        default_factory=dict
    )
    signature: Signature | None = Field(
        default=None, description="explicit signature; inferred from reference data otherwise"
    )
    target: str | None = Field(
        default=None, max_length=200, description="label column of the reference data, if any"
    )
    source_commit: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{7,64}$")] | None = None
    parent_version: int | None = Field(default=None, ge=1)
    training_dataset: DatasetRef | None = None
    trusted_types: list[Annotated[str, StringConstraints(max_length=300)]] = Field(
        default_factory=list,
        description="skops types to trust for this upload (admins only)",
        max_length=200,
    )
    trusted: bool = Field(
        default=False, description="allow pickle/joblib (admins only: it runs code on load)"
    )


class LineageRead(BaseModel):
    training_dataset: DatasetRef | None
    reference_dataset: DatasetRef | None
    parent_version: int | None
    source_commit: str | None


class CompiledRead(BaseModel):
    """The faster artifact compiled at registration, or why there is none."""

    flavor: str | None = Field(default=None, description="the compiled artifact's flavor (onnx)")
    sha256: str | None = None
    skipped: str | None = Field(default=None, description="why the version was not compiled")


class ModelVersionRead(BaseModel):
    model: str
    project: str
    version: int
    flavor: str
    sha256: str
    size: int
    signature: dict[str, Any]
    metrics: dict[str, Any]
    params: dict[str, Any]
    tags: dict[str, Any]
    status: str
    trusted: bool
    lineage: LineageRead
    compiled: CompiledRead | None = Field(
        default=None, description="null when the flavor is not compiled (ONNX, custom Python)"
    )
    prediction_profile: dict[str, Any] | None = Field(
        default=None,
        description='{"bins": {"__prediction__": bins}, "rows", "source"}: the predictions on '
        "the reference sample",
    )
    created_by: str | None
    created_at: datetime


IMMUTABLE_VERSION_FIELDS = frozenset(
    {
        "artifact",
        "sha256",
        "artifact_sha256",
        "digest",
        "size",
        "flavor",
        "signature",
        "status",
        "stage",
        "created_by",
        "created_at",
        "version",
        "trusted",
        "lineage",
        "metrics",
        "params",
        "source_commit",
        "parent_version",
        "compiled",
        "compiled_flavor",
        "compiled_sha256",
        "prediction_profile",
    }
)


class ModelVersionUpdate(Strict):
    """What may change on a version: its tags. Everything else is immutable."""

    tags: dict[TagKey, Annotated[str, StringConstraints(max_length=5000)]]


class AliasSet(Strict):
    version: int = Field(ge=1)
    reason: Description = ""


class AliasRead(BaseModel):
    name: str
    version: int
    updated_at: datetime
    updated_by: str | None


class AliasEventRead(BaseModel):
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str | None
    reason: str
    at: datetime


class DatasetMetadata(Strict):
    name: Name
    project: Name = "default"
    description: Description = ""
    format: str | None = Field(default=None, description="csv or parquet; detected when omitted")


class DatasetVersionRead(BaseModel):
    dataset: str
    project: str
    version: int
    sha256: str
    format: str
    size: int
    row_count: int
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    stats: dict[str, Any]
    reference_bins: dict[str, Any]
    created_by: str | None
    created_at: datetime

    model_config = ConfigDict(populate_by_name=True)


class DatasetRead(BaseModel):
    name: str
    project: str
    description: str
    latest_version: int | None
    created_at: datetime
