"""DockerRuntime: the generated build context and the exact container-run arguments.

No Docker engine runs here: tests that need one skip with the reason; the contract suite
(test_runtime_contract.py) runs the adapter against an engine when one answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from konan.backends.runtimes.docker import (
    DOCKERFILE,
    LABEL_CONFIG,
    DockerRuntime,
    build_context,
    config_digest,
    connect,
    container_run_kwargs,
)
from konan.core.errors import DependencyUnavailable
from konan.core.settings import Settings
from tests.backends.runtime_harness import make_desired

REPO = Path(__file__).resolve().parents[2]


def engine_or_skip() -> None:
    try:
        connect().close()
    except DependencyUnavailable as exc:
        pytest.skip(f"needs a Docker engine (docker.from_env().ping()): {exc.detail}")


def test_build_context_holds_only_what_the_image_needs(tmp_path: Path) -> None:
    context = build_context(tmp_path / "ctx")
    assert sorted(p.name for p in context.iterdir()) == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "konan",
        "pyproject.toml",
    ]
    assert (context / "konan" / "serving" / "spec.py").is_file()
    assert not list(context.rglob("__pycache__"))
    assert (context / "pyproject.toml").read_bytes() == (REPO / "pyproject.toml").read_bytes()


def test_dockerfile_is_slim_non_root_with_healthcheck_and_serving_entrypoint(
    tmp_path: Path,
) -> None:
    text = build_context(tmp_path).joinpath("Dockerfile").read_text()
    assert text == DOCKERFILE
    lines = [line.strip() for line in text.splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert "RUN pip install --no-cache-dir . \\" in lines
    assert "USER 10001:10001" in lines
    assert "EXPOSE 8080 8081" in lines
    healthcheck = text[text.index("HEALTHCHECK") :]
    assert "python" in healthcheck.split("ENTRYPOINT")[0]
    assert "/healthz" in healthcheck.split("ENTRYPOINT")[0]
    assert lines[-1] == (
        'ENTRYPOINT ["python", "-m", "konan.serving", "--spec", "/etc/konan/spec.json", '
        '"--host", "0.0.0.0", "--port", "8080", "--admin-port", "8081"]'
    )
    # The user is created before USER switches to it, and the install runs as root before.
    assert text.index("useradd") < text.index("pip install") < text.index("USER 10001")


def test_build_context_can_be_rebuilt_in_place(tmp_path: Path) -> None:
    build_context(tmp_path)
    (tmp_path / "konan" / "stale.py").write_text("x = 1\n")
    build_context(tmp_path)
    assert not (tmp_path / "konan" / "stale.py").exists()


def test_container_run_kwargs_are_exact(tmp_path: Path) -> None:
    desired = make_desired("churn-live", revision=4, replicas_min=2, replicas_max=2)
    kwargs = container_run_kwargs(
        desired, 1, image="konan-serving:1.0", spec_dir=tmp_path, host="127.0.0.1"
    )
    digest = config_digest(desired, image="konan-serving:1.0", spec_dir=tmp_path, host="127.0.0.1")
    assert kwargs == {
        "image": "konan-serving:1.0",
        "name": "konan-churn-live-1",
        "detach": True,
        "labels": {
            "konan.deployment": "churn-live",
            "konan.replica": "1",
            "konan.revision": "4",
            "konan.config": digest,
        },
        "environment": {
            "KONAN_SERVING_TOKEN": "test-serving-token",
            "KONAN_DATA_DIR": "/var/lib/konan",
        },
        "volumes": {str(tmp_path): {"bind": "/etc/konan", "mode": "ro"}},
        "ports": {"8080/tcp": ("127.0.0.1", None), "8081/tcp": ("127.0.0.1", None)},
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 10},
        "read_only": True,
        "tmpfs": {
            "/tmp": "rw,nosuid,nodev,size=1g,mode=1777",
            "/var/lib/konan": "rw,nosuid,nodev,size=4g,mode=1777",
        },
        "user": "10001:10001",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "init": True,
        "stop_signal": "SIGTERM",
    }


def test_a_new_revision_keeps_containers_but_new_env_or_image_replaces_them(
    tmp_path: Path,
) -> None:
    def digest(
        desired_env: dict[str, str] | None = None, revision: int = 1, image: str = "i:1"
    ) -> str:
        kwargs = container_run_kwargs(
            make_desired(revision=revision, env=desired_env),
            0,
            image=image,
            spec_dir=tmp_path,
            host="127.0.0.1",
        )
        label: str = kwargs["labels"][LABEL_CONFIG]
        return label

    assert digest(revision=1) == digest(revision=2)
    assert digest() != digest({"KONAN_SERVING_TOKEN": "rotated"})
    assert digest() != digest(image="i:2")


def test_without_an_engine_apply_says_docker_is_unavailable(tmp_path: Path) -> None:
    try:
        connect().close()
    except DependencyUnavailable:
        pass  # the case under test
    else:
        pytest.skip("a Docker engine answers; this test covers the engine-less case")
    runtime = DockerRuntime(Settings(data_dir=tmp_path, runtime={"kind": "docker"}))
    with pytest.raises(DependencyUnavailable, match="Docker"):
        runtime.apply(make_desired())
    status = runtime.status("churn-live")
    assert status.reason == "runtime_unavailable"


def test_the_image_builds_on_an_engine(tmp_path: Path) -> None:
    engine_or_skip()
    runtime = DockerRuntime(
        Settings(data_dir=tmp_path, runtime={"kind": "docker", "image": "konan-serving:test"})
    )
    assert runtime.build_image() == "konan-serving:test"


def test_an_engine_that_does_not_answer_is_reported_not_leaked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    with pytest.raises(DependencyUnavailable, match="no Docker engine answers"):
        connect()
