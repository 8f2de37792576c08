"""KubernetesRuntime: a deployment as Kubernetes objects (the kubernetes client lives here only).

``render(desired)`` is pure: it returns the manifests, all named ``konan-<name>`` (DNS-1123 safe,
see :func:`resource_name`) and labelled ``app.kubernetes.io/*``:

* ConfigMap ``konan-<name>`` with ``spec.json``, mounted as a folder at /etc/konan (a folder,
  not a subPath, so a new revision reaches running pods and the server swaps without a restart);
* Deployment ``konan-<name>``: ``replicas_min`` pods running ``python -m konan.serving``;
  readiness on the admin port's /readyz, liveness on /healthz (plus a startup probe for slow
  model loads); rolling update maxUnavailable 0 / maxSurge 1; a preStop pause so endpoints drop
  the pod before it drains; non-root, read-only root filesystem with emptyDir /tmp and cache;
  env from the Secret ``konan-<name>-env`` (see :func:`render_secret`, applied but never
  printed by ``render``), whose digest is a pod annotation so a changed env rolls the pods;
* Service ``konan-<name>`` (port 80 → 8080, 8081 for metrics);
* HorizontalPodAutoscaler ``konan-<name>`` on CPU, when ``replicas_max > replicas_min >= 1``;
* Ingress ``konan-<name>`` for host ``<name>.<ingress_host>`` when
  ``settings.runtime.ingress_host`` is set.

``apply`` server-side-applies them (field manager ``konan``) and deletes the optional ones that
are no longer rendered; it needs ``settings.runtime.kubeconfig`` (a path, or ``in-cluster``).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from konan.backends.runtimes.base import DesiredDeployment, Phase, Reason, Runtime, RuntimeStatus
from konan.backends.runtimes.layout import check_name
from konan.core.errors import ConfigError, DependencyUnavailable, InvalidInput
from konan.core.settings import Settings

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

SERVING_PORT = 8080
ADMIN_PORT = 8081
SPEC_MOUNT = "/etc/konan"
CACHE_DIR = "/var/cache/konan"
IMAGE_UID = 10001
FIELD_MANAGER = "konan"
IN_CLUSTER = "in-cluster"
DEPLOYMENT_LABEL = "konan.io/deployment"
REVISION_ANNOTATION = "konan.io/revision"
ENV_DIGEST_ANNOTATION = "konan.io/env-sha256"

_PREFIX = "konan-"
_MAX_LABEL = 63
_SUFFIX_ROOM = len("-env")  # the Secret's name is the longest derived name


def resource_name(name: str) -> str:
    """``konan-<name>`` as a DNS-1123 label (≤ 63, lowercase alphanumerics and '-').

    Deployment names may hold '.' and '_' (see konan.core.names), which Kubernetes names may
    not: those become '-' and an 8-hex digest of the original keeps distinct names distinct.
    """
    check_name(name)
    base = re.sub(r"[^a-z0-9-]", "-", name).strip("-") or "x"
    limit = _MAX_LABEL - len(_PREFIX) - _SUFFIX_ROOM
    if base == name and len(base) <= limit:
        return _PREFIX + base
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{_PREFIX}{base[: limit - 9].rstrip('-')}-{digest}"


def secret_name(name: str) -> str:
    return f"{resource_name(name)}-env"


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "konan-serving",
        "app.kubernetes.io/instance": resource_name(name),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "konan",
        "app.kubernetes.io/managed-by": "konan",
        DEPLOYMENT_LABEL: resource_name(name)[len(_PREFIX) :],
    }


def selector(name: str) -> dict[str, str]:
    """The Deployment's selector (immutable once created: never add to it)."""
    return {
        "app.kubernetes.io/name": "konan-serving",
        "app.kubernetes.io/instance": resource_name(name),
    }


def env_digest(env: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()


def _meta(desired: DesiredDeployment, namespace: str, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or resource_name(desired.name),
        "namespace": namespace,
        "labels": labels(desired.name),
    }


def render(
    desired: DesiredDeployment,
    *,
    image: str,
    namespace: str,
    ingress_host: str | None = None,
) -> list[dict[str, Any]]:
    """The manifests for ``desired``, in apply order (without the Secret: see render_secret)."""
    if desired.replicas_min < 0 or desired.replicas_max < desired.replicas_min:
        raise InvalidInput("replicas must satisfy 0 <= min <= max")
    name = resource_name(desired.name)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            **_meta(desired, namespace),
            "annotations": {REVISION_ANNOTATION: str(desired.spec.revision)},
        },
        "data": {"spec.json": desired.spec.model_dump_json(indent=2)},
    }
    container = {
        "name": "model-server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "konan.serving"],
        "args": [
            "--spec",
            f"{SPEC_MOUNT}/spec.json",
            "--host",
            "0.0.0.0",  # noqa: S104 - inside the pod; the Service decides who reaches it
            "--port",
            str(SERVING_PORT),
            "--admin-port",
            str(ADMIN_PORT),
        ],
        "ports": [
            {"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "env": [{"name": "KONAN_DATA_DIR", "value": CACHE_DIR}],
        "envFrom": [{"secretRef": {"name": secret_name(desired.name)}}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "admin"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "admin"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        # Model loading may take minutes; liveness starts counting only after this passes.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "admin"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 150,
        },
        "lifecycle": {
            # Endpoints drop a terminating pod asynchronously: keep serving a few seconds
            # before SIGTERM starts the drain, so no new connection meets a closed port.
            "preStop": {"exec": {"command": ["python", "-c", "import time; time.sleep(5)"]}}
        },
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir of the pod
            {"name": "cache", "mountPath": CACHE_DIR},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(desired, namespace),
        "spec": {
            "replicas": desired.replicas_min,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(desired.name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels(desired.name),
                    "annotations": {
                        ENV_DIGEST_ANNOTATION: env_digest(desired.env),
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(ADMIN_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": IMAGE_UID,
                        "runAsGroup": IMAGE_UID,
                        "fsGroup": IMAGE_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "spec",
                            "configMap": {
                                "name": name,
                                "items": [{"key": "spec.json", "path": "spec.json"}],
                            },
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "cache", "emptyDir": {"sizeLimit": "4Gi"}},
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(desired, namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(desired.name),
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "admin", "port": ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"},
            ],
        },
    }
    manifests: list[dict[str, Any]] = [config_map, deployment, service]
    if desired.replicas_min >= 1 and desired.replicas_max > desired.replicas_min:
        manifests.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": _meta(desired, namespace),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": desired.replicas_min,
                    "maxReplicas": desired.replicas_max,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {"type": "Utilization", "averageUtilization": 70},
                            },
                        }
                    ],
                    "behavior": {
                        "scaleUp": {"stabilizationWindowSeconds": 0},
                        "scaleDown": {"stabilizationWindowSeconds": 300},
                    },
                },
            }
        )
    if ingress_host:
        manifests.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": _meta(desired, namespace),
                "spec": {
                    "rules": [
                        {
                            "host": f"{name[len(_PREFIX) :]}.{ingress_host}",
                            "http": {
                                "paths": [
                                    {
                                        "path": "/",
                                        "pathType": "Prefix",
                                        "backend": {
                                            "service": {"name": name, "port": {"name": "http"}}
                                        },
                                    }
                                ]
                            },
                        }
                    ]
                },
            }
        )
    return manifests


def render_secret(desired: DesiredDeployment, *, namespace: str) -> dict[str, Any]:
    """The Secret ``konan-<name>-env`` holding the replicas' KONAN_* env (serving token…)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(desired, namespace, secret_name(desired.name)),
        "type": "Opaque",
        "stringData": {str(k): str(v) for k, v in sorted(desired.env.items())},
    }


# (apiVersion, kind) of everything apply may create, in deletion order.
_KINDS = [
    ("networking.k8s.io/v1", "Ingress"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
]


class KubernetesRuntime(Runtime):
    kind = "kubernetes"

    def __init__(self, settings: Settings, api_client: ApiClient | None = None) -> None:
        runtime = settings.runtime
        self.image = runtime.image
        self.namespace = runtime.namespace
        self.ingress_host = runtime.ingress_host
        self.kubeconfig = runtime.kubeconfig
        self._api_client = api_client

    def render(self, desired: DesiredDeployment) -> list[dict[str, Any]]:
        return render(
            desired, image=self.image, namespace=self.namespace, ingress_host=self.ingress_host
        )

    @property
    def api_client(self) -> ApiClient:
        if self._api_client is None:
            if not self.kubeconfig:
                raise ConfigError(
                    "the Kubernetes runtime needs KONAN_RUNTIME__KUBECONFIG (a kubeconfig path, "
                    f"or {IN_CLUSTER!r} inside a pod)"
                )
            import kubernetes

            # The client's config helpers are untyped; keep them at arm's length.
            client: Any = kubernetes.client
            config: Any = kubernetes.config
            try:
                if self.kubeconfig == IN_CLUSTER:
                    config.load_incluster_config()
                    self._api_client = client.ApiClient()
                else:
                    self._api_client = config.new_client_from_config(config_file=self.kubeconfig)
            except config.ConfigException as exc:
                raise ConfigError(f"KONAN_RUNTIME__KUBECONFIG: {exc}") from None
        return self._api_client

    # ---- Runtime ----------------------------------------------------------------------------

    def apply(self, desired: DesiredDeployment) -> None:
        manifests = self.render(desired)
        rendered = {(m["apiVersion"], m["kind"]) for m in manifests}
        dynamic = self._dynamic()
        try:
            self._server_side_apply(dynamic, render_secret(desired, namespace=self.namespace))
            for manifest in manifests:
                if manifest["kind"] == "Deployment":
                    manifest = self._keep_scaled_replicas(dynamic, manifest, desired)
                self._server_side_apply(dynamic, manifest)
            for api_version, kind in (
                ("autoscaling/v2", "HorizontalPodAutoscaler"),
                ("networking.k8s.io/v1", "Ingress"),
            ):
                if (api_version, kind) not in rendered:
                    self._delete(dynamic, api_version, kind, resource_name(desired.name))
        except Exception as exc:
            raise _unavailable(exc) from None

    def status(self, name: str) -> RuntimeStatus:
        from kubernetes.client import AppsV1Api, CoreV1Api
        from kubernetes.client.exceptions import ApiException

        k8s_name = resource_name(name)
        deployment: Any
        config_map: Any
        pods: list[Any]
        try:
            deployment = AppsV1Api(self.api_client).read_namespaced_deployment(
                k8s_name, self.namespace
            )
            config_map = CoreV1Api(self.api_client).read_namespaced_config_map(
                k8s_name, self.namespace
            )
            pods = (
                CoreV1Api(self.api_client)
                .list_namespaced_pod(self.namespace, label_selector=_selector_string(name))
                .items
            )
        except ApiException as exc:
            if exc.status == 404:
                return RuntimeStatus(phase=Phase.absent)
            return RuntimeStatus(
                phase=Phase.pending, reason=Reason.runtime_unavailable, message=str(exc.reason)
            )
        except Exception as exc:
            return RuntimeStatus(
                phase=Phase.pending, reason=Reason.runtime_unavailable, message=str(exc)
            )
        spec = deployment.spec
        st = deployment.status
        wanted = spec.replicas or 0
        ready = st.ready_replicas or 0
        updated = st.updated_replicas or 0
        revision_text = (config_map.metadata.annotations or {}).get(REVISION_ANNOTATION)
        revision = int(revision_text) if revision_text and revision_text.isdigit() else None
        reason, message = _pod_problems(pods)
        for condition in st.conditions or []:
            if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
                message = message or str(condition.message)
                reason = reason or Reason.health_check_failed
        rolled = updated >= wanted and (st.replicas or 0) == wanted
        if wanted == 0 or (ready >= wanted and rolled):
            phase = Phase.ready
        elif ready:
            phase = Phase.degraded
        elif reason is not None:
            phase = Phase.failed
        else:
            phase = Phase.starting
        host = f"{k8s_name}.{self.namespace}.svc.cluster.local"
        endpoint = (
            f"http://{k8s_name[len(_PREFIX) :]}.{self.ingress_host}"
            if self.ingress_host
            else f"http://{host}"
        )
        return RuntimeStatus(
            phase=phase,
            reason=None if phase == Phase.ready else reason,
            message=message or f"{ready} of {wanted} pods ready",
            endpoint_url=endpoint,
            ready_replicas=ready,
            desired_replicas=wanted,
            # ConfigMap updates reach pods within a kubelet sync; after a finished rollout
            # every ready pod has loaded this revision (readiness waits for it).
            serving_revision=revision if phase == Phase.ready else None,
        )

    def logs(self, name: str, tail: int = 200) -> list[str]:
        from kubernetes.client import CoreV1Api

        core: Any = CoreV1Api(self.api_client)
        try:
            pods: list[Any] = core.list_namespaced_pod(
                self.namespace, label_selector=_selector_string(name)
            ).items
            lines: list[str] = []
            for pod in sorted(pods, key=lambda p: p.metadata.name):
                text = core.read_namespaced_pod_log(
                    pod.metadata.name, self.namespace, container="model-server", tail_lines=tail
                )
                lines += [f"{pod.metadata.name} | {line}" for line in str(text).splitlines()]
        except Exception as exc:
            raise _unavailable(exc) from None
        return lines[-tail:] if tail > 0 else []

    def remove(self, name: str) -> None:
        dynamic = self._dynamic()
        k8s_name = resource_name(name)
        try:
            for api_version, kind in _KINDS:
                object_name = secret_name(name) if kind == "Secret" else k8s_name
                self._delete(dynamic, api_version, kind, object_name)
        except Exception as exc:
            raise _unavailable(exc) from None

    # ---- helpers ----------------------------------------------------------------------------

    def _dynamic(self) -> Any:
        import kubernetes.dynamic

        dynamic_client: Any = kubernetes.dynamic.DynamicClient
        try:
            return dynamic_client(self.api_client)
        except ConfigError:
            raise
        except Exception as exc:
            raise _unavailable(exc) from None

    def _server_side_apply(self, dynamic: Any, manifest: dict[str, Any]) -> None:
        resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        dynamic.server_side_apply(
            resource,
            body=manifest,
            name=manifest["metadata"]["name"],
            namespace=self.namespace,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )

    def _keep_scaled_replicas(
        self, dynamic: Any, manifest: dict[str, Any], desired: DesiredDeployment
    ) -> dict[str, Any]:
        """Leave the HPA's replica count alone: apply the current count clamped to [min, max]."""
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = dynamic.resources.get(api_version="apps/v1", kind="Deployment")
        try:
            current = dynamic.get(
                resource, name=manifest["metadata"]["name"], namespace=self.namespace
            )
        except NotFoundError:
            return manifest
        replicas = int(current.spec.replicas or 0)
        clamped = min(max(replicas, desired.replicas_min), max(desired.replicas_max, 0))
        return {**manifest, "spec": {**manifest["spec"], "replicas": clamped}}

    def _delete(self, dynamic: Any, api_version: str, kind: str, name: str) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

        try:
            resource = dynamic.resources.get(api_version=api_version, kind=kind)
            dynamic.delete(resource, name=name, namespace=self.namespace)
        except (NotFoundError, ResourceNotFoundError):
            return


def _selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(name).items())


def _pod_problems(pods: list[Any]) -> tuple[Reason | None, str]:
    """Why pods are not ready: crash loops, image pulls, scheduling."""
    for pod in pods:
        for condition in (pod.status.conditions or []) if pod.status else []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return Reason.scheduling, str(condition.message or "unschedulable")
        statuses = (pod.status.container_statuses or []) if pod.status else []
        for cs in statuses:
            waiting = cs.state.waiting if cs.state else None
            if waiting is None:
                continue
            if waiting.reason == "CrashLoopBackOff":
                return Reason.crash_loop, f"{pod.metadata.name}: {waiting.message or 'crash loop'}"
            if waiting.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                return Reason.runtime_unavailable, f"{pod.metadata.name}: {waiting.reason}"
    return None, ""


def _unavailable(exc: Exception) -> Exception:
    if isinstance(exc, ConfigError | InvalidInput | DependencyUnavailable):
        return exc
    return DependencyUnavailable(f"Kubernetes API error: {exc}")
