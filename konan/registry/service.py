"""Use cases of the registry. Services decide and raise domain errors; they never commit.

Registering a version is the one long path: every check runs before anything is stored
(metadata, permissions, flavor from the bytes, reference data profile, validation in a sandbox
process, signature), then rows are flushed and artifacts stored; the caller commits, and on a
failed commit deletes the objects this call created (`RegisteredVersion.new_objects`).

The sandbox also compiles scikit-learn models to ONNX (kept only when it answers like the
original on the reference sample; stored content-addressed like the original, recorded in
`compiled_flavor`/`compiled_sha256`, or the reason it was not in the `konan.compile` tag) and
the original's predictions on that sample become the version's `prediction_profile`.
`KONAN_REGISTRY__COMPILE_ONNX=false` skips the compile step (the tag says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from konan.backends.artifacts.base import ArtifactStore
from konan.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from konan.core.settings import Settings
from konan.core.types import utcnow
from konan.governance import audit
from konan.governance import repository as governance_repo
from konan.governance.orm import Project, User
from konan.governance.permissions import (
    Action,
    authorize_object,
    project_scope,
    visible_project,
)
from konan.registry import repository
from konan.registry.binning import categorical_bins, numeric_bins
from konan.registry.datasets import DatasetProfile, profile_dataset
from konan.registry.flavors import check_declared, detect_flavor
from konan.registry.orm import (
    AliasEvent,
    Dataset,
    DatasetVersion,
    Model,
    ModelAlias,
    ModelVersion,
)
from konan.registry.sample import write_sample
from konan.registry.sandbox import SandboxLimits, ValidationReport, validate_model
from konan.registry.sandbox_worker import COMPILE_FLAVORS
from konan.registry.schemas import (
    IMMUTABLE_VERSION_FIELDS,
    AliasSet,
    DatasetMetadata,
    ModelCreate,
    ModelVersionUpdate,
    VersionMetadata,
)
from konan.registry.signature import Signature, inputs_from_columns
from konan.registry.uploads import Received, WorkDir

PICKLE_FLAVORS = frozenset({"pickle", "joblib"})
COMPILE_TAG = "konan.compile"  # why a version has no compiled artifact (set at registration)
COMPILE_DISABLED = (
    "disabled by setting (KONAN_REGISTRY__COMPILE_ONNX=false): the original artifact is served"
)
PREDICTION = "__prediction__"


def actor(user: User) -> audit.Actor:
    return audit.Actor(user.id, user.username)


# ---- models ---------------------------------------------------------------------------------


def create_model(session: Session, user: User, body: ModelCreate) -> Model:
    project = visible_project(session, user, body.project, Action.register)
    if repository.model_by_name(session, project.id, body.name) is not None:
        raise Conflict(f"model {body.name!r} already exists in project {project.name!r}")
    model = Model(
        project_id=project.id,
        name=body.name,
        task=body.task,
        description=body.description,
        created_by_id=user.id,
    )
    session.add(model)
    session.flush()
    audit.record(
        session,
        actor=actor(user),
        action="model.create",
        object_type="model",
        object_id=model.id,
        project_id=project.id,
        after={"name": model.name, "task": model.task},
    )
    return model


def get_model(
    session: Session, user: User, project_name: str, name: str, action: Action = Action.read
) -> Model:
    project = governance_repo.project_by_name(session, project_name)
    model = repository.model_by_name(session, project.id, name) if project else None
    missing = f"model {name!r} not found in project {project_name!r}"
    authorize_object(session, user, project if model else None, action, missing)
    assert model is not None
    return model


def list_models(session: Session, user: User, project_name: str | None) -> list[Model]:
    return repository.list_models(session, project_scope(session, user, project_name))


def get_version(session: Session, model: Model, number: int) -> ModelVersion:
    found = repository.version(session, model.id, number)
    if found is None:
        raise NotFound(f"model {model.name!r} has no version {number}")
    return found


# ---- registering a version ------------------------------------------------------------------


@dataclass
class RegisteredVersion:
    version: ModelVersion
    created: bool
    new_objects: list[str] = field(default_factory=list)


def _check_privileges(user: User, metadata: VersionMetadata) -> None:
    if metadata.trusted and not user.is_admin:
        raise PermissionDenied("only an admin can mark a version trusted (pickle/joblib run code)")
    if metadata.trusted_types and not user.is_admin:
        raise PermissionDenied(
            "only an admin can vouch for extra skops types; ask one, or have the types added to "
            "KONAN_REGISTRY__SKOPS_TRUSTED_TYPES"
        )


def _flavor(artifact: Received, metadata: VersionMetadata) -> str:
    detected = detect_flavor(artifact.path)
    check_declared(metadata.flavor, detected)
    if detected in PICKLE_FLAVORS and not metadata.trusted:
        from konan.registry.flavors import pickle_globals

        names = ", ".join(pickle_globals(artifact.path)[:20]) or "unknown"
        raise InvalidInput(
            f"the artifact is a {detected} file, which runs code when loaded (it imports: "
            f"{names}); save the model with skops or ONNX, or have an admin register it "
            "as trusted"
        )
    return detected


def _feature_columns(metadata: VersionMetadata, profile: DatasetProfile | None) -> list[str] | None:
    if metadata.signature is not None:
        return metadata.signature.feature_names
    if profile is None:
        return None
    names = [c.name for c in profile.columns]
    if metadata.target is not None:
        if metadata.target not in names:
            raise InvalidInput(
                f"target column {metadata.target!r} is not in the reference data "
                f"(columns: {', '.join(names[:50])})"
            )
        names.remove(metadata.target)
    return names


def _signature(
    metadata: VersionMetadata,
    report: ValidationReport,
    profile: DatasetProfile | None,
    columns: list[str] | None,
) -> Signature:
    declared = list(report.feature_names) if report.feature_names else None
    if metadata.signature is not None:
        signature = metadata.signature
        if declared is not None and sorted(declared) != sorted(signature.feature_names):
            missing = [n for n in declared if n not in signature.feature_names]
            extra = [n for n in signature.feature_names if n not in declared]
            raise InvalidInput(
                "the signature does not match the model's features"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unknown to the model: {', '.join(extra)}" if extra else "")
            )
        return signature
    if profile is None or columns is None:
        raise InvalidInput(
            "send reference_data (CSV or Parquet) or an explicit signature in the metadata: "
            "Konan needs one of them to know the model's inputs"
        )
    by_name = {c.name: c for c in profile.columns}
    if declared is not None:
        missing = [n for n in declared if n not in by_name]
        if missing:
            raise InvalidInput(
                "the reference data lacks columns the model needs: " + ", ".join(missing)
            )
        columns = declared
    inputs = inputs_from_columns([by_name[n] for n in columns], profile.category_values)
    return Signature(inputs=inputs, outputs=report.to_output_spec())


def _store(store: ArtifactStore, received: Received, new_objects: list[str]) -> None:
    existed = store.exists(received.sha256)
    with received.path.open("rb") as fh:
        stored = store.put(fh)
    if stored.sha256 != received.sha256:  # the bytes changed under us: never record them
        raise InvalidInput("the upload changed while it was being stored; send it again")
    if not existed:
        new_objects.append(received.sha256)


def _dataset_version_row(
    session: Session,
    user: User,
    dataset: Dataset,
    received: Received,
    profile: DatasetProfile,
) -> DatasetVersion:
    locked = repository.lock_dataset(session, dataset.id)
    number = (repository.latest_dataset_version_number(session, locked.id) or 0) + 1
    row = DatasetVersion(
        dataset_id=locked.id,
        version=number,
        sha256=received.sha256,
        format=profile.format,
        size=received.size,
        row_count=profile.row_count,
        schema={"columns": [c.model_dump() for c in profile.columns]},
        stats=profile.stats,
        reference_bins=profile.reference_bins,
        created_by_id=user.id,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor(user),
        action="dataset_version.create",
        object_type="dataset_version",
        object_id=row.id,
        project_id=dataset.project_id,
        after={"dataset": dataset.name, "version": number, "sha256": received.sha256},
    )
    return row


def _get_or_create_dataset(
    session: Session, user: User, project: Project, name: str, description: str = ""
) -> Dataset:
    dataset = repository.dataset_by_name(session, project.id, name)
    if dataset is None:
        dataset = Dataset(
            project_id=project.id, name=name, description=description, created_by_id=user.id
        )
        session.add(dataset)
        session.flush()
    return dataset


def sandbox_limits(settings: Settings) -> SandboxLimits:
    """Limits for validation; the model never sees Konan's data dir or a local artifact root."""
    hidden = [settings.data_dir.resolve()]
    if "://" not in settings.artifacts_uri or settings.artifacts_uri.startswith("file://"):
        hidden.append(Path(settings.artifacts_uri.removeprefix("file://")).resolve())
    registry = settings.registry
    return SandboxLimits(
        timeout_seconds=registry.sandbox_timeout_seconds,
        memory_mb=registry.sandbox_memory_mb,
        cpu_seconds=int(registry.sandbox_timeout_seconds),
        max_sample_rows=registry.sample_rows,
        hide_paths=tuple(dict.fromkeys(hidden)),
    )


@dataclass(frozen=True)
class UploadContext:
    """What the reads before validation found (ids only: they outlive the read transaction)."""

    project_id: int
    project_name: str
    model_id: int
    parent_id: int | None
    training_id: int | None


@dataclass(frozen=True)
class Validated:
    flavor: str
    profile: DatasetProfile | None
    signature: Signature
    compiled: Received | None = None
    compiled_flavor: str | None = None
    compile_skipped: str | None = None
    prediction_profile: dict[str, Any] | None = None


def prediction_profile(report: ValidationReport, signature: Signature) -> dict[str, Any] | None:
    """The original model's predictions on the reference sample, binned like a column:
    categorical bins of the labels for classifiers, quantile bins of the values otherwise."""
    values = report.sample_predictions
    if not values or report.sample_rows == 0:
        return None
    if signature.outputs.kind == "value":
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return None
        bins: Any = numeric_bins([float(v) for v in values])
    else:
        labels = [_label(v) for v in values]
        if any(v is None for v in labels):
            return None
        bins = categorical_bins(labels)
    return {"bins": {PREDICTION: bins.to_json()}, "rows": len(values), "source": "reference_sample"}


def _label(value: Any) -> str | bool | int | None:
    """A class label as a bin category (an integral float label counts as the integer:
    1.0 == 1 for the live counts too)."""
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def check_upload(
    session: Session,
    *,
    user: User,
    model: Model,
    metadata: VersionMetadata,
    artifact: Received,
    idempotency_key: str | None,
) -> UploadContext | RegisteredVersion:
    """Reads before the slow part: privileges, an idempotent replay, lineage references."""
    _check_privileges(user, metadata)
    project = governance_repo.project_by_id(session, model.project_id)
    assert project is not None
    if idempotency_key is not None:
        replay = _replay(session, model.id, idempotency_key, artifact.sha256)
        if replay is not None:
            return replay
    parent = None
    if metadata.parent_version is not None:
        parent = repository.version(session, model.id, metadata.parent_version)
        if parent is None:
            raise InvalidInput(f"parent_version {metadata.parent_version} does not exist")
    training = None
    if metadata.training_dataset is not None:
        ref = metadata.training_dataset
        dataset = repository.dataset_by_name(session, project.id, ref.name)
        training = repository.dataset_version(session, dataset.id, ref.version) if dataset else None
        if training is None:
            raise InvalidInput(
                f"training_dataset {ref.name} version {ref.version} does not exist in "
                f"project {project.name!r}"
            )
    return UploadContext(
        project_id=project.id,
        project_name=project.name,
        model_id=model.id,
        parent_id=parent.id if parent else None,
        training_id=training.id if training else None,
    )


def _replay(
    session: Session, model_id: int, idempotency_key: str, sha256: str
) -> RegisteredVersion | None:
    earlier = repository.version_by_idempotency_key(session, model_id, idempotency_key)
    if earlier is None:
        return None
    if earlier.artifact_sha256 != sha256:
        raise InvalidInput(
            "this Idempotency-Key was already used for an upload with different bytes"
        )
    return RegisteredVersion(version=earlier, created=False)


def validate_upload(
    *,
    metadata: VersionMetadata,
    artifact: Received,
    reference: Received | None,
    settings: Settings,
    workdir: WorkDir,
) -> Validated:
    """The slow part, with no database transaction open: flavor, profile, sandbox, signature."""
    flavor = _flavor(artifact, metadata)
    profile = profile_dataset(reference.path) if reference is not None else None
    columns = _feature_columns(metadata, profile)
    sample = None
    if reference is not None and profile is not None and columns is not None:
        sample = write_sample(
            reference.path,
            profile.format,
            columns=[c for c in columns if c in {col.name for col in profile.columns}],
            rows=settings.registry.sample_rows,
            dest=workdir.path / "sample.parquet",
        )
    report = validate_model(
        artifact.path,
        flavor=flavor,
        sample=sample,
        feature_names=columns,
        trusted_types=[*settings.registry.skops_trusted_types, *metadata.trusted_types],
        allow_pickle=metadata.trusted,
        limits=sandbox_limits(settings),
        compiled_dest=workdir.path / "compiled.onnx" if settings.registry.compile_onnx else None,
    )
    signature = _signature(metadata, report, profile, columns)
    compiled = None
    if report.compiled is not None:
        compiled = Received(
            path=report.compiled.path,
            sha256=report.compiled.sha256,
            size=report.compiled.size,
            filename="compiled.onnx",
        )
    return Validated(
        flavor,
        profile,
        signature,
        compiled=compiled,
        compiled_flavor=report.compiled.flavor if report.compiled is not None else None,
        compile_skipped=report.compile_skipped or _compile_disabled(flavor, settings),
        prediction_profile=prediction_profile(report, signature) if sample is not None else None,
    )


def _compile_disabled(flavor: str, settings: Settings) -> str | None:
    """Why a version of a flavor Konan compiles was not compiled, when the operator said not to."""
    if settings.registry.compile_onnx or flavor not in COMPILE_FLAVORS:
        return None
    return COMPILE_DISABLED


def record_version(
    session: Session,
    *,
    user: User,
    context: UploadContext,
    metadata: VersionMetadata,
    validated: Validated,
    artifact: Received,
    reference: Received | None,
    idempotency_key: str | None,
    store: ArtifactStore,
) -> RegisteredVersion:
    """Write the rows, then the bytes. The caller commits (and cleans up if that fails)."""
    locked = repository.lock_model(session, context.model_id)
    if idempotency_key is not None:  # again, now that we hold the lock
        replay = _replay(session, locked.id, idempotency_key, artifact.sha256)
        if replay is not None:
            return replay
    project = governance_repo.project_by_id(session, context.project_id)
    assert project is not None
    new_objects: list[str] = []
    reference_row = None
    if reference is not None and validated.profile is not None:
        dataset = _get_or_create_dataset(
            session, user, project, f"{locked.name}-reference", f"Reference data of {locked.name}"
        )
        reference_row = _dataset_version_row(session, user, dataset, reference, validated.profile)
    number = (repository.latest_version_number(session, locked.id) or 0) + 1
    tags = dict(metadata.tags)
    tags.pop(COMPILE_TAG, None)
    if validated.compile_skipped is not None:
        tags[COMPILE_TAG] = f"skipped: {validated.compile_skipped}"[:5000]
    row = ModelVersion(
        model_id=locked.id,
        version=number,
        flavor=validated.flavor,
        artifact_sha256=artifact.sha256,
        artifact_size=artifact.size,
        signature=validated.signature.to_json(),
        metrics=metadata.metrics,
        params=metadata.params,
        tags=tags,
        status="ready",
        trusted=metadata.trusted,
        trusted_types=list(metadata.trusted_types),
        training_dataset_version_id=context.training_id,
        reference_dataset_version_id=reference_row.id if reference_row else None,
        parent_version_id=context.parent_id,
        source_commit=metadata.source_commit,
        idempotency_key=idempotency_key,
        created_by_id=user.id,
        compiled_flavor=validated.compiled_flavor if validated.compiled else None,
        compiled_sha256=validated.compiled.sha256 if validated.compiled else None,
        prediction_profile=validated.prediction_profile,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor(user),
        action="model_version.create",
        object_type="model_version",
        object_id=row.id,
        project_id=project.id,
        after={
            "model": locked.name,
            "version": number,
            "flavor": validated.flavor,
            "sha256": artifact.sha256,
            "trusted": metadata.trusted,
            "compiled_sha256": row.compiled_sha256,
        },
    )
    _store(store, artifact, new_objects)
    if reference is not None:
        _store(store, reference, new_objects)
    if validated.compiled is not None:
        _store(store, validated.compiled, new_objects)
    return RegisteredVersion(version=row, created=True, new_objects=new_objects)


def update_version(
    session: Session, user: User, model: Model, number: int, body: dict[str, object]
) -> ModelVersion:
    immutable = sorted(k for k in body if k in IMMUTABLE_VERSION_FIELDS)
    if immutable:
        raise InvalidInput(
            f"model versions are immutable; these fields cannot change: {', '.join(immutable)}"
        )
    update = ModelVersionUpdate.model_validate(body)
    row = get_version(session, model, number)
    before = dict(row.tags)
    tags = dict(update.tags)
    tags.pop(COMPILE_TAG, None)  # set at registration only: why there is no compiled artifact
    if COMPILE_TAG in before:
        tags[COMPILE_TAG] = before[COMPILE_TAG]
    row.tags = tags
    audit.record(
        session,
        actor=actor(user),
        action="model_version.update",
        object_type="model_version",
        object_id=row.id,
        project_id=model.project_id,
        before={"tags": before},
        after={"tags": row.tags},
    )
    return row


# ---- aliases --------------------------------------------------------------------------------


def set_alias(session: Session, user: User, model: Model, name: str, body: AliasSet) -> ModelAlias:
    target = get_version(session, model, body.version)
    existing = repository.alias(session, model.id, name)
    now = utcnow()
    if existing is None:
        existing = ModelAlias(
            model_id=model.id,
            name=name,
            model_version_id=target.id,
            updated_at=now,
            updated_by_id=user.id,
        )
        session.add(existing)
        session.flush()
        previous = None
    else:
        previous = existing.model_version_id
        existing.model_version_id = target.id
        existing.updated_at = now
        existing.updated_by_id = user.id
    session.add(
        AliasEvent(
            alias_id=existing.id,
            from_version_id=previous,
            to_version_id=target.id,
            actor_id=user.id,
            reason=body.reason,
            at=now,
        )
    )
    session.flush()
    audit.record(
        session,
        actor=actor(user),
        action="model_alias.set",
        object_type="model_alias",
        object_id=existing.id,
        project_id=model.project_id,
        before={"version_id": previous},
        after={"alias": name, "version": target.version, "reason": body.reason},
    )
    return existing


# ---- datasets -------------------------------------------------------------------------------


def create_dataset_version(
    session: Session,
    *,
    user: User,
    metadata: DatasetMetadata,
    received: Received,
    store: ArtifactStore,
) -> tuple[DatasetVersion, list[str]]:
    project = visible_project(session, user, metadata.project, Action.register)
    profile = profile_dataset(received.path, declared_format=metadata.format)
    dataset = _get_or_create_dataset(session, user, project, metadata.name, metadata.description)
    row = _dataset_version_row(session, user, dataset, received, profile)
    new_objects: list[str] = []
    _store(store, received, new_objects)
    return row, new_objects


def get_dataset(session: Session, user: User, project_name: str, name: str) -> Dataset:
    project = governance_repo.project_by_name(session, project_name)
    dataset = repository.dataset_by_name(session, project.id, name) if project else None
    missing = f"dataset {name!r} not found in project {project_name!r}"
    authorize_object(session, user, project if dataset else None, Action.read, missing)
    assert dataset is not None
    return dataset


def list_datasets(session: Session, user: User, project_name: str | None) -> list[Dataset]:
    return repository.list_datasets(session, project_scope(session, user, project_name))


def get_dataset_version(session: Session, dataset: Dataset, number: int) -> DatasetVersion:
    found = repository.dataset_version(session, dataset.id, number)
    if found is None:
        raise NotFound(f"dataset {dataset.name!r} has no version {number}")
    return found
