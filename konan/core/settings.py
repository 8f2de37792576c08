"""Konan's settings: one typed tree from `KONAN_*` env vars, an optional TOML file and defaults.

Two modes share the same code:

* ``embedded`` (the default): SQLite, a local artifact folder and a Celery broker on a SQLite file,
  all under ``data_dir``. Nothing to install, nothing to configure.
* ``scale-out``: PostgreSQL, Redis and S3. Every URL and secret must be given explicitly; a missing
  one fails at start with the env var to set.

Nested sections use ``__``: ``KONAN_DATABASE__URL``, ``KONAN_ARTIFACTS__URI``,
``KONAN_RUNTIME__KIND``.
A config file is read from ``KONAN_CONFIG_FILE`` (TOML, same keys as the sections below).
Only composition roots (server, worker, serving, CLI) build a ``Settings``; nothing here runs at
import.
"""

from __future__ import annotations

import json
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from konan.core.errors import ConfigError

ENV_PREFIX = "KONAN_"
CONFIG_FILE_ENV = "KONAN_CONFIG_FILE"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    url: str | None = Field(
        default=None, description="SQLAlchemy URL; embedded default: sqlite file in data_dir"
    )
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=20, ge=0)
    pool_timeout: float = Field(default=5.0, gt=0, description="seconds to wait for a connection")
    echo: bool = False


class ArtifactSettings(_Section):
    uri: str | None = Field(
        default=None,
        description="folder path, file:// or s3://bucket/prefix; default: data_dir/artifacts",
    )
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None


class QueueSettings(_Section):
    broker_url: str | None = Field(default=None, description="default: a SQLite broker in data_dir")
    result_backend: str | None = None
    # Seconds a task may stay unacknowledged before the broker hands it to another worker.
    # Must exceed the longest task (builds, retrains) or they run twice.
    visibility_timeout: int = Field(default=3600, ge=10)
    name: str = Field(
        default="konan", pattern=r"^[A-Za-z0-9_.:-]{1,100}$", description="queue name"
    )
    worker_concurrency: int = Field(default=2, ge=1)
    # Periodic work (Celery beat): how often pending approvals are checked for expiry.
    expire_approvals_every_seconds: float = Field(default=60.0, ge=1)
    # How often every deployment is reconciled (heals crashes, refreshes status).
    reconcile_every_seconds: float = Field(default=5.0, ge=1)
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="port where `konan worker` serves Prometheus /metrics; unset: not served",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="address `konan worker` binds its /metrics port to"
    )


class RuntimeSettings(_Section):
    kind: Literal["local", "docker", "kubernetes"] = "local"
    # Local processes: where each deployment's spec, status and logs live (default
    # data_dir/serving) and the host its endpoint binds to.
    local_root: Path | None = None
    local_host: str = "127.0.0.1"
    # Autoscaling target: average requests in flight per replica before another starts. For a
    # model served on the event loop (one request at a time) this is its busy fraction.
    target_in_flight: float = Field(default=0.75, gt=0)
    # Docker and Kubernetes: the serving image and where it runs.
    image: str = "konan-serving:latest"
    namespace: str = "konan"
    kubeconfig: str | None = None
    ingress_host: str | None = None
    # The control plane's URL as model servers reach it (key refresh); default: the server's.
    control_plane_url: str | None = None


class AuthSettings(_Section):
    secret_key: SecretStr | None = Field(
        default=None, description="JWT signing key; embedded default: generated once into data_dir"
    )
    access_token_ttl_seconds: int = Field(default=900, ge=30)
    refresh_token_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)


class ServerSettings(_Section):
    # A wildcard origin with credentials would let any site act as the signed-in user.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = None
    max_json_bytes: int = Field(default=16 * 1024**2, ge=1024, description="JSON body limit")
    rate_limit_enabled: bool = True
    # A bearer token Prometheus sends to scrape /metrics (admins' own tokens work too).
    metrics_token: SecretStr | None = None
    login_rate_limit: str = Field(default="10/minute", description="per client address + user")
    user_rate_limit: str = Field(default="1200/minute", description="per signed-in user")
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed to call the API from a browser"
    )


class RegistrySettings(_Section):
    max_artifact_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_dataset_bytes: int = Field(default=2 * 1024**3, ge=1)
    # skops types every upload may load (beyond skops' own safe set), e.g. a site-wide
    # custom transformer; an admin may also vouch for extra types on one upload.
    skops_trusted_types: list[str] = Field(default_factory=list)
    sandbox_timeout_seconds: float = Field(default=120.0, gt=0)
    sandbox_memory_mb: int = Field(default=2048, ge=256)
    sample_rows: int = Field(default=200, ge=1, le=500)
    # Compile scikit-learn models to ONNX at registration (served instead of the original when
    # it answers identically). Off: registration skips the compile step (faster, no skl2onnx
    # run) and the original artifact is served; the version's `konan.compile` tag says why.
    compile_onnx: bool = Field(
        default=True, description="compile scikit-learn models to ONNX at registration"
    )


class MonitoringSettings(_Section):
    spool_dir: Path | None = None
    raw_retention_days: int = Field(default=30, ge=1)
    ingest_batch_size: int = Field(default=5000, ge=1)
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="port where `konan monitor` serves Prometheus /metrics; unset: not served",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="address `konan monitor` binds its /metrics port to"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    mode: Literal["embedded", "scale-out"] = "embedded"
    data_dir: Path = Path(".konan")
    admin_password: SecretStr | None = None

    database: DatabaseSettings = DatabaseSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    queue: QueueSettings = QueueSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    auth: AuthSettings = AuthSettings()
    server: ServerSettings = ServerSettings()
    registry: RegistrySettings = RegistrySettings()
    monitoring: MonitoringSettings = MonitoringSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _no_wildcard_cors(self) -> Settings:
        if "*" in self.server.cors_origins:
            raise ValueError(
                "KONAN_SERVER__CORS_ORIGINS must list origins; '*' is refused (cookies ride along)"
            )
        return self

    # Scale-out settings a process of this kind cannot start without.
    _scale_out_required: tuple[str, ...] = ("database", "broker", "artifacts", "secret")

    @model_validator(mode="after")
    def _scale_out_needs_everything_explicit(self) -> Settings:
        if self.mode != "scale-out":
            return self
        missing = []
        required = self._scale_out_required
        if "database" in required and not self.database.url:
            missing.append("KONAN_DATABASE__URL")
        if "broker" in required and not self.queue.broker_url:
            missing.append("KONAN_QUEUE__BROKER_URL")
        if "artifacts" in required and not self.artifacts.uri:
            missing.append("KONAN_ARTIFACTS__URI")
        if "secret" in required and (
            self.auth.secret_key is None or not self.auth.secret_key.get_secret_value()
        ):
            missing.append("KONAN_AUTH__SECRET_KEY")
        if missing:
            raise ValueError(f"scale-out mode needs these settings: {', '.join(missing)}")
        return self

    # ---- resolved values: embedded defaults live under data_dir -------------------------------

    @cached_property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir.resolve() / 'konan.db'}"

    @cached_property
    def artifacts_uri(self) -> str:
        return self.artifacts.uri or str(self.data_dir.resolve() / "artifacts")

    @cached_property
    def broker_url(self) -> str:
        return self.queue.broker_url or f"sqla+sqlite:///{self.data_dir.resolve() / 'broker.db'}"

    @cached_property
    def result_backend(self) -> str | None:
        if self.queue.result_backend:
            return self.queue.result_backend
        if self.queue.broker_url:
            # Tasks record their outcome in our own tables (jobs); a result backend is optional.
            return None
        return f"db+sqlite:///{self.data_dir.resolve() / 'results.db'}"

    @cached_property
    def tmp_dir(self) -> Path:
        """Private scratch space for uploads and validation (same disk as the data)."""
        return self.data_dir.resolve() / "tmp"

    @cached_property
    def serving_root(self) -> Path:
        return self.runtime.local_root or self.data_dir.resolve() / "serving"

    @cached_property
    def spool_dir(self) -> Path:
        return self.monitoring.spool_dir or self.data_dir.resolve() / "spool"

    def jwt_secret(self) -> str:
        """The JWT signing key; in embedded mode generated once and kept in data_dir (0600)."""
        if self.auth.secret_key is not None and self.auth.secret_key.get_secret_value():
            return self.auth.secret_key.get_secret_value()
        path = self.data_dir.resolve() / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def child_env(self) -> dict[str, str]:
        """Env vars that make a child process (worker, monitor, server) see these same settings."""
        env = {
            "KONAN_MODE": self.mode,
            "KONAN_DATA_DIR": str(self.data_dir.resolve()),
        }
        for section in (
            "database",
            "artifacts",
            "queue",
            "runtime",
            "auth",
            "server",
            "monitoring",
        ):
            model: BaseModel = getattr(self, section)
            for name, value in model.model_dump(exclude_defaults=True).items():
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                if value is None:
                    continue
                if isinstance(value, list | dict):
                    value = json.dumps(value)
                env[f"{ENV_PREFIX}{section.upper()}__{name.upper()}"] = str(value)
        if self.admin_password is not None:
            env["KONAN_ADMIN_PASSWORD"] = self.admin_password.get_secret_value()
        return env


def _setting_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not str(p).startswith("function-after")]
    if not parts:
        return "KONAN settings"
    return ENV_PREFIX + "__".join(p.upper() for p in parts)


class ServingSettings(Settings):
    """A model server's settings. It never opens the database nor signs tokens, and the
    control plane keeps those settings out of its environment (deployments.reconciler's
    serving_env), so scale-out asks it only for the broker (log stream) and the artifacts."""

    _scale_out_required: tuple[str, ...] = ("broker", "artifacts")


def load_settings(settings_cls: type[Settings] = Settings, **overrides: Any) -> Settings:
    """Build settings, turning a validation failure into a ConfigError that names the env var."""
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            problems.append(f"{_setting_name(err['loc'])}: {err['msg']}")
        raise ConfigError("invalid configuration — " + "; ".join(problems)) from None
