"""KubernetesRuntime: rendered manifests, validated offline against the Kubernetes schemas.

No cluster runs here; the contract suite (test_runtime_contract.py) runs the adapter against a
real cluster when KONAN_TEST_KUBECONFIG names one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from konan.backends.runtimes.base import DesiredDeployment
from konan.backends.runtimes.kubernetes import (
    ENV_DIGEST_ANNOTATION,
    KubernetesRuntime,
    render,
    render_secret,
    resource_name,
    secret_name,
)
from konan.core.errors import ConfigError, InvalidInput
from konan.core.settings import Settings
from tests.backends.runtime_harness import make_desired

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# The newest schemas kubernetes-validate ships, and an older minor still widely run.
VERSIONS = [kubernetes_validate.latest_version(), "1.30.0"]

STATES = {
    "one-replica": make_desired("churn-live", revision=1, replicas_min=1, replicas_max=1),
    "autoscaled": make_desired("churn-live", revision=3, replicas_min=2, replicas_max=6),
    "scaled-to-zero": make_desired("churn-live", revision=2, replicas_min=0, replicas_max=0),
    "odd-name": make_desired("fraud_v2.eu", revision=1, replicas_min=1, replicas_max=3),
    "long-name": make_desired("a" * 63, revision=1, replicas_min=1, replicas_max=2),
}


def _render(desired: DesiredDeployment, ingress_host: str | None = None) -> list[dict[str, Any]]:
    return render(desired, image="konan-serving:1.0", namespace="konan", ingress_host=ingress_host)


def _by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("ingress_host", [None, "models.example.com"])
@pytest.mark.parametrize("state", sorted(STATES))
def test_every_rendered_manifest_passes_strict_schema_validation(
    state: str, ingress_host: str | None, version: str
) -> None:
    desired = STATES[state]
    manifests = [*_render(desired, ingress_host), render_secret(desired, namespace="konan")]
    for manifest in manifests:
        # strict: unknown fields fail too (a typo would otherwise be silently dropped)
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("state", sorted(STATES))
def test_names_are_deterministic_and_dns_safe(state: str) -> None:
    desired = STATES[state]
    first, second = _render(desired, "models.example.com"), _render(desired, "models.example.com")
    assert first == second
    for manifest in first:
        name = manifest["metadata"]["name"]
        assert len(name) <= 63
        assert DNS_1123_LABEL.match(name), name
        assert DNS_1035_LABEL.match(name), name  # Services need a leading letter
        assert manifest["metadata"]["namespace"] == "konan"
        assert manifest["metadata"]["labels"]["app.kubernetes.io/instance"] == name
        assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "konan"
    secret = secret_name(desired.name)
    assert len(secret) <= 63
    assert DNS_1123_LABEL.match(secret)


def test_names_that_need_rewriting_stay_distinct() -> None:
    assert resource_name("churn-live") == "konan-churn-live"
    rewritten = {resource_name(n) for n in ("fraud.v2", "fraud_v2", "fraud-v2")}
    assert len(rewritten) == 3
    assert resource_name("fraud.v2") == resource_name("fraud.v2")
    with pytest.raises(InvalidInput):
        resource_name("../etc")


def test_deployment_serves_the_spec_with_safe_probes_and_rollout() -> None:
    desired = STATES["autoscaled"]
    kinds = _by_kind(_render(desired))
    assert list(kinds) == ["ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"]

    config_map = kinds["ConfigMap"]
    assert config_map["metadata"]["name"] == "konan-churn-live"
    assert '"revision": 3' in config_map["data"]["spec.json"]

    spec = kinds["Deployment"]["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert set(spec["selector"]["matchLabels"].items()) <= set(
        spec["template"]["metadata"]["labels"].items()
    )
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == "konan-serving:1.0"
    assert container["command"] == ["python", "-m", "konan.serving"]
    assert container["args"] == [
        "--spec",
        "/etc/konan/spec.json",
        "--host",
        "0.0.0.0",  # noqa: S104 - asserting the pod's args
        "--port",
        "8080",
        "--admin-port",
        "8081",
    ]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8080,
        "admin": 8081,
    }
    assert "sleep" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert container["resources"]["requests"]["cpu"]  # the HPA's CPU target needs a request
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["envFrom"] == [{"secretRef": {"name": "konan-churn-live-env"}}]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts["/var/cache/konan"]]
    assert volumes[mounts["/etc/konan"]]["configMap"]["name"] == "konan-churn-live"

    service = kinds["Service"]["spec"]
    assert service["selector"] == spec["selector"]["matchLabels"]
    assert {p["name"]: p["targetPort"] for p in service["ports"]} == {
        "http": "http",
        "admin": "admin",
    }

    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["scaleTargetRef"]["name"] == "konan-churn-live"
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"


def test_autoscaler_only_when_there_is_room_to_scale() -> None:
    assert "HorizontalPodAutoscaler" not in _by_kind(_render(STATES["one-replica"]))
    zero = _by_kind(_render(STATES["scaled-to-zero"]))
    assert "HorizontalPodAutoscaler" not in zero
    assert zero["Deployment"]["spec"]["replicas"] == 0


def test_ingress_only_with_an_ingress_host() -> None:
    assert "Ingress" not in _by_kind(_render(STATES["one-replica"]))
    ingress = _by_kind(_render(STATES["one-replica"], "models.example.com"))["Ingress"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "churn-live.models.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "konan-churn-live", "port": {"name": "http"}}


def test_secrets_never_appear_in_the_rendered_manifests() -> None:
    desired = make_desired(env={"KONAN_SERVING_TOKEN": "s3cr3t-token"})
    assert "s3cr3t-token" not in repr(_render(desired, "models.example.com"))
    secret = render_secret(desired, namespace="konan")
    assert secret["metadata"]["name"] == "konan-churn-live-env"
    assert secret["stringData"]["KONAN_SERVING_TOKEN"] == "s3cr3t-token"


def test_env_change_rolls_pods_but_a_new_spec_revision_does_not() -> None:
    def template(desired: DesiredDeployment) -> dict[str, Any]:
        return _by_kind(_render(desired))["Deployment"]["spec"]["template"]

    base = template(make_desired(revision=1))
    assert template(make_desired(revision=2)) == base  # servers re-read the mounted spec
    rotated = template(make_desired(revision=1, env={"KONAN_SERVING_TOKEN": "rotated"}))
    assert (
        rotated["metadata"]["annotations"][ENV_DIGEST_ANNOTATION]
        != base["metadata"]["annotations"][ENV_DIGEST_ANNOTATION]
    )


def test_bad_replica_bounds_are_rejected() -> None:
    with pytest.raises(InvalidInput):
        _render(make_desired(replicas_min=3, replicas_max=1))


def test_apply_without_a_kubeconfig_names_the_setting(tmp_path: Path) -> None:
    runtime = KubernetesRuntime(Settings(data_dir=tmp_path, runtime={"kind": "kubernetes"}))
    with pytest.raises(ConfigError, match="KONAN_RUNTIME__KUBECONFIG"):
        runtime.apply(make_desired())


def test_the_validator_would_catch_a_misspelt_field() -> None:
    deployment = _by_kind(_render(STATES["one-replica"]))["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
