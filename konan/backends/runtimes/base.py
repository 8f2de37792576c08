"""The Runtime seam: turn a desired deployment into running model servers, and report on them.

Adapters: `LocalProcessRuntime` (the embedded default), `DockerRuntime`, `KubernetesRuntime`,
chosen once from `KONAN_RUNTIME__KIND`. Every method is idempotent: `apply` twice with the same
desired state changes nothing the second time (the reconciler relies on it), and workloads are
named deterministically from the deployment name.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field

from konan.serving.spec import ServingSpec


class Phase(enum.StrEnum):
    pending = "pending"
    starting = "starting"
    ready = "ready"
    degraded = "degraded"
    failed = "failed"
    absent = "absent"


class Reason(enum.StrEnum):
    """Why a deployment is not (fully) ready; typed so the dashboard can explain it."""

    artifact_missing = "artifact_missing"
    load_error = "load_error"
    health_check_failed = "health_check_failed"
    crash_loop = "crash_loop"
    scheduling = "scheduling"
    runtime_unavailable = "runtime_unavailable"


@dataclass(frozen=True)
class DesiredDeployment:
    name: str
    spec: ServingSpec
    replicas_min: int = 1
    replicas_max: int = 1
    # Settings the replicas need (artifact store, log stream, serving token): KONAN_* vars.
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeStatus:
    phase: Phase
    reason: Reason | None = None
    message: str = ""
    endpoint_url: str | None = None
    ready_replicas: int = 0
    desired_replicas: int = 0
    # The revision every ready replica serves; None while a rollover is in progress.
    serving_revision: int | None = None


class Runtime(abc.ABC):
    kind: str

    @abc.abstractmethod
    def apply(self, desired: DesiredDeployment) -> None:
        """Converge the running workload towards `desired` (safe to call repeatedly)."""

    @abc.abstractmethod
    def status(self, name: str) -> RuntimeStatus:
        """What is running for deployment `name` now."""

    @abc.abstractmethod
    def logs(self, name: str, tail: int = 200) -> list[str]:
        """The last lines the deployment's model servers wrote."""

    @abc.abstractmethod
    def remove(self, name: str) -> None:
        """Stop and delete everything of deployment `name` (safe when nothing is there)."""
