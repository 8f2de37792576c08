"""Settings: embedded defaults under one data dir, env and TOML overrides, clear start failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from konan.core.errors import ConfigError
from konan.core.settings import ServingSettings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("KONAN_"):
            monkeypatch.delenv(key)


def test_embedded_default_keeps_everything_under_the_data_dir(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.mode == "embedded"
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'konan.db'}"
    assert s.broker_url == f"sqla+sqlite:///{tmp_path.resolve() / 'broker.db'}"
    assert Path(s.artifacts_uri) == tmp_path.resolve() / "artifacts"
    assert s.spool_dir == tmp_path.resolve() / "spool"


def test_compiling_at_registration_is_on_unless_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings(data_dir=tmp_path).registry.compile_onnx is True
    monkeypatch.setenv("KONAN_REGISTRY__COMPILE_ONNX", "false")
    assert load_settings(data_dir=tmp_path).registry.compile_onnx is False
    monkeypatch.setenv("KONAN_REGISTRY__COMPILE_ONNX", "maybe")
    with pytest.raises(ConfigError, match="KONAN_REGISTRY__COMPILE_ONNX"):
        load_settings(data_dir=tmp_path)


def test_nested_env_vars_override_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KONAN_DATABASE__URL", "postgresql+psycopg://u@db/konan")
    monkeypatch.setenv("KONAN_RUNTIME__KIND", "kubernetes")
    monkeypatch.setenv("KONAN_QUEUE__VISIBILITY_TIMEOUT", "7200")
    s = load_settings()
    assert s.database_url == "postgresql+psycopg://u@db/konan"
    assert s.runtime.kind == "kubernetes"
    assert s.queue.visibility_timeout == 7200


def test_config_file_is_read_and_env_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "konan.toml"
    cfg.write_text('[server]\nport = 9001\nhost = "0.0.0.0"\n[runtime]\nkind = "docker"\n')
    monkeypatch.setenv("KONAN_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("KONAN_SERVER__PORT", "9002")
    s = load_settings()
    assert s.runtime.kind == "docker"
    assert s.server.host == "0.0.0.0"  # noqa: S104 - a value read back, nothing binds
    assert s.server.port == 9002


def test_unknown_backend_kind_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KONAN_RUNTIME__KIND", "nomad")
    with pytest.raises(ConfigError, match="KONAN_RUNTIME__KIND"):
        load_settings()


def test_scale_out_without_secrets_names_every_missing_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KONAN_MODE", "scale-out")
    monkeypatch.setenv("KONAN_DATABASE__URL", "postgresql+psycopg://u@db/konan")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = info.value.detail
    assert "KONAN_AUTH__SECRET_KEY" in message
    assert "KONAN_QUEUE__BROKER_URL" in message
    assert "KONAN_ARTIFACTS__URI" in message
    assert "KONAN_DATABASE__URL" not in message


def test_a_scale_out_model_server_needs_only_the_broker_and_the_artifacts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The control plane keeps the database URL and the auth key out of a model server's
    # environment (serving_env); its settings must load without them.
    monkeypatch.setenv("KONAN_MODE", "scale-out")
    with pytest.raises(ConfigError) as info:
        load_settings(ServingSettings)
    message = info.value.detail
    assert "KONAN_QUEUE__BROKER_URL" in message
    assert "KONAN_ARTIFACTS__URI" in message
    assert "KONAN_DATABASE__URL" not in message
    assert "KONAN_AUTH__SECRET_KEY" not in message
    monkeypatch.setenv("KONAN_QUEUE__BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("KONAN_ARTIFACTS__URI", "s3://bucket/konan")
    settings = load_settings(ServingSettings)
    assert settings.mode == "scale-out"
    # Every other process still needs them all.
    with pytest.raises(ConfigError, match="KONAN_DATABASE__URL, KONAN_AUTH__SECRET_KEY"):
        load_settings()


def test_unknown_setting_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "konan.toml"
    cfg.write_text("[server]\nprot = 9001\n")
    monkeypatch.setenv("KONAN_CONFIG_FILE", str(cfg))
    with pytest.raises(ConfigError, match="KONAN_SERVER__PROT"):
        load_settings()


def test_embedded_jwt_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    first = s.jwt_secret()
    assert len(first) >= 40
    assert load_settings(data_dir=tmp_path).jwt_secret() == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_child_env_reproduces_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load_settings(data_dir=tmp_path, queue={"name": "q1"}, server={"port": 9100})
    for key, value in s.child_env().items():
        monkeypatch.setenv(key, value)
    again = load_settings()
    assert again.database_url == s.database_url
    assert again.queue.name == "q1"
    assert again.server.port == 9100
