"""Registry routes: models, versions (multipart upload), aliases, datasets."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, Header, Query, Response, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from konan.core.errors import InvalidInput
from konan.core.names import NAME_PATTERN
from konan.governance import repository as governance_repo
from konan.governance.orm import User
from konan.governance.permissions import Action
from konan.registry import repository, service
from konan.registry.orm import Dataset, DatasetVersion, Model, ModelAlias, ModelVersion
from konan.registry.schemas import (
    AliasEventRead,
    AliasRead,
    AliasSet,
    CompiledRead,
    DatasetMetadata,
    DatasetRead,
    DatasetRef,
    DatasetVersionRead,
    LineageRead,
    ModelCreate,
    ModelRead,
    ModelVersionRead,
    VersionMetadata,
)
from konan.registry.uploads import WorkDir, receive
from konan.server.deps import ArtifactsDep, PrincipalDep, SessionDep, StateDep
from konan.server.errors import ERROR_RESPONSES

router = APIRouter(tags=["registry"], responses=ERROR_RESPONSES)

ProjectQuery = Annotated[str, Query(pattern=NAME_PATTERN, description="project name")]
ModelName = Annotated[str, "model name"]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=128, description="retry-safe upload key"),
]


# ---- presentation ---------------------------------------------------------------------------


def _username(session: Session, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    user = session.get(User, user_id)
    return user.username if user else None


def _project_name(session: Session, project_id: int) -> str:
    project = governance_repo.project_by_id(session, project_id)
    return project.name if project else ""


def model_read(session: Session, model: Model) -> ModelRead:
    aliases = {}
    for alias in repository.aliases_of(session, model.id):
        version = session.get(ModelVersion, alias.model_version_id)
        if version is not None:
            aliases[alias.name] = version.version
    return ModelRead(
        id=model.id,
        name=model.name,
        project=_project_name(session, model.project_id),
        task=model.task,
        description=model.description,
        created_at=model.created_at,
        created_by=_username(session, model.created_by_id),
        latest_version=repository.latest_version_number(session, model.id),
        aliases=aliases,
    )


def _dataset_ref(session: Session, version_id: int | None) -> DatasetRef | None:
    if version_id is None:
        return None
    row = session.get(DatasetVersion, version_id)
    if row is None:
        return None
    dataset = session.get(Dataset, row.dataset_id)
    return DatasetRef(name=dataset.name, version=row.version) if dataset else None


def version_read(session: Session, model: Model, row: ModelVersion) -> ModelVersionRead:
    parent = session.get(ModelVersion, row.parent_version_id) if row.parent_version_id else None
    return ModelVersionRead(
        model=model.name,
        project=_project_name(session, model.project_id),
        version=row.version,
        flavor=row.flavor,
        sha256=row.artifact_sha256,
        size=row.artifact_size,
        signature=row.signature,
        metrics=row.metrics,
        params=row.params,
        tags=row.tags,
        status=row.status,
        trusted=row.trusted,
        lineage=LineageRead(
            training_dataset=_dataset_ref(session, row.training_dataset_version_id),
            reference_dataset=_dataset_ref(session, row.reference_dataset_version_id),
            parent_version=parent.version if parent else None,
            source_commit=row.source_commit,
        ),
        compiled=_compiled_read(row),
        prediction_profile=row.prediction_profile,
        created_by=_username(session, row.created_by_id),
        created_at=row.created_at,
    )


def _compiled_read(row: ModelVersion) -> CompiledRead | None:
    if row.compiled_sha256 is not None:
        return CompiledRead(flavor=row.compiled_flavor, sha256=row.compiled_sha256)
    reason = row.tags.get(service.COMPILE_TAG)
    if isinstance(reason, str):
        return CompiledRead(skipped=reason.removeprefix("skipped: "))
    return None


def alias_read(session: Session, alias: ModelAlias) -> AliasRead:
    version = session.get(ModelVersion, alias.model_version_id)
    return AliasRead(
        name=alias.name,
        version=version.version if version else 0,
        updated_at=alias.updated_at,
        updated_by=_username(session, alias.updated_by_id),
    )


def dataset_version_read(
    session: Session, dataset: Dataset, row: DatasetVersion
) -> DatasetVersionRead:
    return DatasetVersionRead(
        dataset=dataset.name,
        project=_project_name(session, dataset.project_id),
        version=row.version,
        sha256=row.sha256,
        format=row.format,
        size=row.size,
        row_count=row.row_count,
        schema_=row.schema,
        stats=row.stats,
        reference_bins=row.reference_bins,
        created_by=_username(session, row.created_by_id),
        created_at=row.created_at,
    )


def _parse_json_part(raw: str, name: str) -> Any:
    try:
        return json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{name} is not valid JSON: {exc.msg} at position {exc.pos}") from None


def _validation_message(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{prefix}{'.' + where if where else ''}: {err['msg']}")
    return "; ".join(parts)


def _safe_filename(name: str | None) -> str:
    # Only for display and Content-Disposition: never a path on our side.
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", (name or "").rsplit("/", 1)[-1])[:100]
    return cleaned or "artifact"


def _cleanup_new_objects(state: StateDep, objects: list[str]) -> None:
    """Remove objects this request stored if no committed row uses them (content-addressed)."""
    if not objects:
        return
    with state.session_factory() as fresh:
        for sha in objects:
            if not repository.sha_in_use(fresh, sha):
                state.artifacts.delete(sha)


# ---- models ---------------------------------------------------------------------------------


@router.post("/models", response_model=ModelRead, status_code=201)
def create_model(body: ModelCreate, principal: PrincipalDep, session: SessionDep) -> ModelRead:
    model = service.create_model(session, principal.user, body)
    return model_read(session, model)


@router.get("/models", response_model=list[ModelRead])
def list_models(
    principal: PrincipalDep,
    session: SessionDep,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> list[ModelRead]:
    return [model_read(session, m) for m in service.list_models(session, principal.user, project)]


@router.get("/models/{name}", response_model=ModelRead)
def get_model(
    name: ModelName, principal: PrincipalDep, session: SessionDep, project: ProjectQuery = "default"
) -> ModelRead:
    return model_read(session, service.get_model(session, principal.user, project, name))


# ---- versions -------------------------------------------------------------------------------


@router.post(
    "/models/{name}/versions",
    response_model=ModelVersionRead,
    status_code=201,
    responses={200: {"model": ModelVersionRead, "description": "idempotent replay"}},
)
def upload_version(
    name: ModelName,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    artifacts: ArtifactsDep,
    response: Response,
    artifact: Annotated[UploadFile, File(description="the model file")],
    metadata: Annotated[str, Form(description="JSON: flavor, metrics, params, tags, …")] = "{}",
    reference_data: Annotated[
        UploadFile | None, File(description="CSV or Parquet reference/training sample")
    ] = None,
    project: ProjectQuery = "default",
    idempotency_key: IdempotencyKey = None,
) -> ModelVersionRead:
    """Register a new immutable version: the artifact is checked, validated in a sandbox
    process, given a signature and stored content-addressed."""
    try:
        meta = VersionMetadata.model_validate(_parse_json_part(metadata, "metadata"))
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc, "metadata")) from None
    model = service.get_model(session, principal.user, project, name, Action.register)
    limits = state.settings.registry
    with WorkDir(state.settings.tmp_dir) as workdir:
        received = receive(
            artifact.file,
            workdir,
            "artifact",
            max_bytes=limits.max_artifact_bytes,
            filename=_safe_filename(artifact.filename),
        )
        reference = None
        if reference_data is not None and (reference_data.filename or reference_data.size):
            reference = receive(
                reference_data.file,
                workdir,
                "reference_data",
                max_bytes=limits.max_dataset_bytes,
                filename=_safe_filename(reference_data.filename),
            )
        checked = service.check_upload(
            session,
            user=principal.user,
            model=model,
            metadata=meta,
            artifact=received,
            idempotency_key=idempotency_key,
        )
        if isinstance(checked, service.RegisteredVersion):
            response.status_code = 200
            return version_read(session, model, checked.version)
        # End the read transaction: validation takes seconds and must not hold a lock.
        session.commit()
        validated = service.validate_upload(
            metadata=meta,
            artifact=received,
            reference=reference,
            settings=state.settings,
            workdir=workdir,
        )
        result = service.record_version(
            session,
            user=principal.user,
            context=checked,
            metadata=meta,
            validated=validated,
            artifact=received,
            reference=reference,
            idempotency_key=idempotency_key,
            store=artifacts,
        )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            _cleanup_new_objects(state, result.new_objects)
            if idempotency_key is not None:
                # A concurrent upload with the same key won: answer with its version.
                earlier = repository.version_by_idempotency_key(session, model.id, idempotency_key)
                if earlier is not None and earlier.artifact_sha256 == received.sha256:
                    response.status_code = 200
                    return version_read(session, model, earlier)
            raise InvalidInput(
                "another version was registered at the same moment; send the upload again"
            ) from None
        except BaseException:
            session.rollback()
            _cleanup_new_objects(state, result.new_objects)
            raise
    if not result.created:
        response.status_code = 200
    return version_read(session, model, result.version)


@router.get("/models/{name}/versions", response_model=list[ModelVersionRead])
def list_versions(
    name: ModelName, principal: PrincipalDep, session: SessionDep, project: ProjectQuery = "default"
) -> list[ModelVersionRead]:
    model = service.get_model(session, principal.user, project, name)
    return [version_read(session, model, v) for v in repository.list_versions(session, model.id)]


@router.get("/models/{name}/versions/{version}", response_model=ModelVersionRead)
def get_version(
    name: ModelName,
    version: int,
    principal: PrincipalDep,
    session: SessionDep,
    project: ProjectQuery = "default",
) -> ModelVersionRead:
    model = service.get_model(session, principal.user, project, name)
    return version_read(session, model, service.get_version(session, model, version))


@router.patch("/models/{name}/versions/{version}", response_model=ModelVersionRead)
def update_version(
    name: ModelName,
    version: int,
    principal: PrincipalDep,
    session: SessionDep,
    body: Annotated[dict[str, Any], Body(description="{'tags': {...}}; all else is immutable")],
    project: ProjectQuery = "default",
) -> ModelVersionRead:
    model = service.get_model(session, principal.user, project, name, Action.register)
    try:
        row = service.update_version(session, principal.user, model, version, body)
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc, "body")) from None
    return version_read(session, model, row)


@router.get("/models/{name}/versions/{version}/artifact", response_class=StreamingResponse)
def download_artifact(
    name: ModelName,
    version: int,
    principal: PrincipalDep,
    session: SessionDep,
    artifacts: ArtifactsDep,
    project: ProjectQuery = "default",
) -> StreamingResponse:
    model = service.get_model(session, principal.user, project, name)
    row = service.get_version(session, model, version)
    stream = artifacts.open(row.artifact_sha256)

    def chunks() -> Any:
        with stream:
            while chunk := stream.read(1024 * 1024):
                yield chunk

    filename = f"{model.name}-v{row.version}.{row.flavor}"
    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{_safe_filename(filename)}"',
            "Content-Length": str(row.artifact_size),
            "X-Konan-Sha256": row.artifact_sha256,
        },
    )


# ---- aliases --------------------------------------------------------------------------------


@router.put("/models/{name}/aliases/{alias}", response_model=AliasRead)
def set_alias(
    name: ModelName,
    alias: Annotated[str, "alias name"],
    body: AliasSet,
    principal: PrincipalDep,
    session: SessionDep,
    project: ProjectQuery = "default",
) -> AliasRead:
    if not re.match(NAME_PATTERN, alias):
        raise InvalidInput(f"alias names match {NAME_PATTERN}")
    model = service.get_model(session, principal.user, project, name, Action.register)
    return alias_read(session, service.set_alias(session, principal.user, model, alias, body))


@router.get("/models/{name}/aliases", response_model=list[AliasRead])
def list_aliases(
    name: ModelName, principal: PrincipalDep, session: SessionDep, project: ProjectQuery = "default"
) -> list[AliasRead]:
    model = service.get_model(session, principal.user, project, name)
    return [alias_read(session, a) for a in repository.aliases_of(session, model.id)]


@router.get("/models/{name}/aliases/history", response_model=list[AliasEventRead])
def alias_history(
    name: ModelName,
    principal: PrincipalDep,
    session: SessionDep,
    project: ProjectQuery = "default",
    alias: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> list[AliasEventRead]:
    model = service.get_model(session, principal.user, project, name)

    def number(version_id: int | None) -> int | None:
        row = session.get(ModelVersion, version_id) if version_id else None
        return row.version if row else None

    return [
        AliasEventRead(
            alias=alias_name,
            from_version=number(event.from_version_id),
            to_version=number(event.to_version_id),
            actor=_username(session, event.actor_id),
            reason=event.reason,
            at=event.at,
        )
        for event, alias_name in repository.alias_history(session, model.id, alias)
    ]


# ---- datasets -------------------------------------------------------------------------------


@router.post("/datasets", response_model=DatasetVersionRead, status_code=201)
def upload_dataset(
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    artifacts: ArtifactsDep,
    file: Annotated[UploadFile, File(description="CSV or Parquet")],
    metadata: Annotated[str, Form(description='JSON: {"name", "project", "description"}')],
) -> DatasetVersionRead:
    try:
        meta = DatasetMetadata.model_validate(_parse_json_part(metadata, "metadata"))
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc, "metadata")) from None
    with WorkDir(state.settings.tmp_dir) as workdir:
        received = receive(
            file.file,
            workdir,
            "dataset",
            max_bytes=state.settings.registry.max_dataset_bytes,
            filename=_safe_filename(file.filename),
        )
        row, new_objects = service.create_dataset_version(
            session, user=principal.user, metadata=meta, received=received, store=artifacts
        )
        try:
            session.commit()
        except BaseException:
            session.rollback()
            _cleanup_new_objects(state, new_objects)
            raise
    dataset = session.get(Dataset, row.dataset_id)
    assert dataset is not None
    return dataset_version_read(session, dataset, row)


@router.get("/datasets", response_model=list[DatasetRead])
def list_datasets(
    principal: PrincipalDep,
    session: SessionDep,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> list[DatasetRead]:
    return [
        DatasetRead(
            name=d.name,
            project=_project_name(session, d.project_id),
            description=d.description,
            latest_version=repository.latest_dataset_version_number(session, d.id),
            created_at=d.created_at,
        )
        for d in service.list_datasets(session, principal.user, project)
    ]


@router.get("/datasets/{name}/versions", response_model=list[DatasetVersionRead])
def list_dataset_versions(
    name: str, principal: PrincipalDep, session: SessionDep, project: ProjectQuery = "default"
) -> list[DatasetVersionRead]:
    dataset = service.get_dataset(session, principal.user, project, name)
    return [
        dataset_version_read(session, dataset, v)
        for v in repository.list_dataset_versions(session, dataset.id)
    ]


@router.get("/datasets/{name}/versions/{version}", response_model=DatasetVersionRead)
def get_dataset_version(
    name: str,
    version: int,
    principal: PrincipalDep,
    session: SessionDep,
    project: ProjectQuery = "default",
) -> DatasetVersionRead:
    dataset = service.get_dataset(session, principal.user, project, name)
    return dataset_version_read(
        session, dataset, service.get_dataset_version(session, dataset, version)
    )
