"""The reconciler: make the runtime match a deployment's newest revision, then record what runs.

`reconcile` compares desired state (the current revision) with what the runtime reports and
converges; it is safe to run any number of times, concurrently with itself, and after a crash:
runtimes name workloads deterministically and `apply` is idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from konan.backends.runtimes.base import DesiredDeployment, Phase, Runtime, RuntimeStatus
from konan.core.settings import Settings
from konan.core.types import DeploymentStatus, utcnow
from konan.db.engine import unit_of_work
from konan.deployments import repository
from konan.deployments.orm import Deployment
from konan.deployments.service import current_revision
from konan.governance.security import issue_token
from konan.registry.orm import ModelVersion
from konan.serving.spec import (
    SERVING_TOKEN_ENV,
    CompiledArtifact,
    KeySource,
    ServedVersion,
    ServingSpec,
    Traffic,
)

log = logging.getLogger("konan.deployments")

SERVING_TOKEN_TTL = 10 * 365 * 24 * 3600
# Settings a model server needs; everything else (database, auth, admin password) stays out
# of its environment.
_SERVING_ENV_PREFIXES = (
    "KONAN_MODE",
    "KONAN_DATA_DIR",
    "KONAN_ARTIFACTS__",
    "KONAN_QUEUE__",
    "KONAN_MONITORING__",
)

_PHASE_TO_STATUS = {
    Phase.pending: DeploymentStatus.pending,
    Phase.absent: DeploymentStatus.pending,
    Phase.starting: DeploymentStatus.starting,
    Phase.ready: DeploymentStatus.ready,
    Phase.degraded: DeploymentStatus.degraded,
    Phase.failed: DeploymentStatus.failed,
}


def control_plane_url(settings: Settings) -> str:
    if settings.runtime.control_plane_url:
        return settings.runtime.control_plane_url.rstrip("/")
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/")
    host = settings.server.host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - reaching a wildcard bind, not binding one
        host = "127.0.0.1"
    return f"http://{host}:{settings.server.port}"


def serving_env(settings: Settings, deployment: Deployment, secret: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in settings.child_env().items()
        if key.startswith(_SERVING_ENV_PREFIXES)
    }
    env[SERVING_TOKEN_ENV] = issue_token(
        secret=secret,
        user_id=deployment.id,
        token_version=0,
        kind="serving",
        ttl_seconds=SERVING_TOKEN_TTL,
        issued_at=deployment.created_at.replace(microsecond=0),
        token_id=f"serving-{deployment.id}",
    )
    return env


def desired_state(
    session: Session, deployment: Deployment, settings: Settings, secret: str
) -> DesiredDeployment:
    revision = current_revision(session, deployment)
    ids = [
        revision.champion_version_id,
        revision.canary_version_id,
        revision.shadow_version_id,
    ]
    rows = [session.get(ModelVersion, i) for i in dict.fromkeys(i for i in ids if i is not None)]
    versions = [row for row in rows if row is not None]

    def number(version_id: int | None) -> int | None:
        for row in versions:
            if row.id == version_id:
                return row.version
        return None

    champion = number(revision.champion_version_id)
    assert champion is not None
    spec = ServingSpec(
        deployment=deployment.name,
        deployment_id=deployment.id,
        revision=revision.revision,
        versions=[
            ServedVersion(
                version=row.version,
                model_version_id=row.id,
                sha256=row.artifact_sha256,
                flavor=row.flavor,
                signature=row.signature,
                trusted=row.trusted,
                trusted_types=[*settings.registry.skops_trusted_types, *row.trusted_types],
                compiled=(
                    CompiledArtifact(flavor=row.compiled_flavor, sha256=row.compiled_sha256)
                    if row.compiled_flavor and row.compiled_sha256
                    else None
                ),
            )
            for row in versions
        ],
        traffic=Traffic(
            champion=champion,
            canary=number(revision.canary_version_id),
            canary_weight=revision.canary_weight,
            shadow=number(revision.shadow_version_id),
        ),
        keys=KeySource(
            url=f"{control_plane_url(settings)}/api/v1/internal/deployments/{deployment.name}/keys"
        ),
    )
    return DesiredDeployment(
        name=deployment.name,
        spec=spec,
        replicas_min=revision.replicas_min,
        replicas_max=revision.replicas_max,
        env=serving_env(settings, deployment, secret),
    )


def record_status(deployment: Deployment, status: RuntimeStatus) -> None:
    deployment.status = _PHASE_TO_STATUS[status.phase]
    deployment.status_reason = status.reason.value if status.reason else None
    deployment.status_message = status.message[:2000]
    if status.endpoint_url:
        deployment.endpoint_url = status.endpoint_url


@dataclass(frozen=True)
class ReconcileResult:
    deployment_id: int
    status: str


def reconcile(
    factory: sessionmaker[Session],
    runtime: Runtime,
    settings: Settings,
    deployment_id: int,
    *,
    apply: bool = True,
) -> ReconcileResult | None:
    """Converge one deployment. `apply=False` only refreshes the recorded status."""
    secret = settings.jwt_secret()
    with unit_of_work(factory) as session:
        deployment = session.get(Deployment, deployment_id)
        if deployment is None:
            return None
        name = deployment.name
        deleting = deployment.status == DeploymentStatus.deleting
        desired = None if deleting else desired_state(session, deployment, settings, secret)

    # The runtime call happens outside any transaction: it may take seconds.
    if deleting:
        runtime.remove(name)
    elif apply and desired is not None:
        runtime.apply(desired)
    status = None if deleting else runtime.status(name)

    with unit_of_work(factory) as session:
        deployment = repository.lock(session, deployment_id)
        if deleting:
            deployment.status = DeploymentStatus.deleted
            deployment.endpoint_url = None
            # Free the name for a new deployment; the row (and its history) stays.
            deployment.name = f"{name}.deleted-{deployment.id}"
        elif status is not None:
            record_status(deployment, status)
        deployment.updated_at = utcnow()
        return ReconcileResult(deployment_id, deployment.status)


def reconcile_all(
    factory: sessionmaker[Session], runtime: Runtime, settings: Settings
) -> list[ReconcileResult]:
    with factory() as session:
        ids = repository.all_ids(session)
    results = []
    for deployment_id in ids:
        try:
            result = reconcile(factory, runtime, settings, deployment_id)
        except Exception:  # one broken deployment must not stop the others converging
            log.exception("reconciling deployment %s failed", deployment_id)
            continue
        if result is not None:
            results.append(result)
    return results
