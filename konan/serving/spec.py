"""The serving spec: everything a model server needs to know about what to serve.

The control plane writes it (one JSON document per deployment revision); runtimes hand it to
every replica (a file for local processes, a mounted ConfigMap on Kubernetes, a file in the
container for Docker). A model server re-reads it when it changes and swaps to the new revision
only once every version in it has loaded and answered a warm-up prediction, so promote,
rollback and traffic changes never drop a request.

Secrets are never in the spec: the artifact store's credentials and the token for the key
endpoint come from the replica's environment (KONAN_* settings, `KONAN_SERVING_TOKEN`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SERVING_TOKEN_ENV = "KONAN_SERVING_TOKEN"  # noqa: S105 - the name of an env var
ROUTE_KEY_HEADER = "X-Konan-Route-Key"


class CompiledArtifact(BaseModel):
    """A faster equivalent of the version's artifact, compiled and checked at registration.
    Fetched through the artifact store by sha256 like the original; the server prefers it and
    falls back to the original when it cannot load it."""

    model_config = ConfigDict(extra="forbid")

    flavor: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ServedVersion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    model_version_id: int
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    flavor: str
    signature: dict[str, Any] = Field(description="konan.registry.signature.Signature as JSON")
    trusted: bool = False
    trusted_types: list[str] = Field(default_factory=list)
    compiled: CompiledArtifact | None = None


class Traffic(BaseModel):
    """Who answers: the champion, or the canary for `canary_weight` of requests. A shadow gets a
    copy of every request; its answer is logged, never returned, and never waited for."""

    model_config = ConfigDict(extra="forbid")

    champion: int = Field(ge=1)
    canary: int | None = Field(default=None, ge=1)
    canary_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow: int | None = Field(default=None, ge=1)
    # When a request carries this header, the same value always goes to the same version.
    sticky_header: str | None = ROUTE_KEY_HEADER

    @model_validator(mode="after")
    def _consistent(self) -> Traffic:
        if self.canary is None and self.canary_weight > 0:
            raise ValueError("canary_weight needs a canary version")
        if self.canary is not None and self.canary == self.champion:
            raise ValueError("the canary must differ from the champion")
        if self.shadow is not None and self.shadow == self.champion:
            raise ValueError("the shadow must differ from the champion")
        return self

    def versions(self) -> list[int]:
        found = [self.champion]
        for extra in (self.canary, self.shadow):
            if extra is not None and extra not in found:
                found.append(extra)
        return found


class KeySource(BaseModel):
    """Where a replica learns which API keys may call it (hashes only, never secrets)."""

    model_config = ConfigDict(extra="forbid")

    # POST {url} with `Authorization: Bearer $KONAN_SERVING_TOKEN` and body
    # {"used": {"<key prefix>": <epoch seconds last used>, …}} answers
    # {"keys": [{"id": 7, "prefix": "kn_3f9a", "sha256": "<hex of sha256(full key)>",
    #            "expires_at": <epoch seconds or null>}]}
    url: str
    refresh_seconds: float = Field(default=2.0, gt=0, le=60)


class ServingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment: str
    deployment_id: int
    revision: int = Field(ge=1)
    versions: list[ServedVersion] = Field(min_length=1)
    traffic: Traffic
    keys: KeySource
    max_batch_rows: int = Field(default=1000, ge=1, le=100_000)
    # What a category the signature never saw does: "reject" answers 422 naming it; "flag"
    # predicts anyway (the model decides, e.g. OneHotEncoder(handle_unknown="ignore")) and
    # marks the log record. Deterministic either way (ADVERSARIAL C14).
    unseen_category: Literal["reject", "flag"] = "reject"

    @model_validator(mode="after")
    def _traffic_names_served_versions(self) -> ServingSpec:
        served = {v.version for v in self.versions}
        missing = [v for v in self.traffic.versions() if v not in served]
        if missing:
            raise ValueError(f"traffic names versions not in the spec: {missing}")
        return self

    def version(self, number: int) -> ServedVersion:
        for served in self.versions:
            if served.version == number:
                return served
        raise KeyError(number)

    def write(self, path: Path) -> None:
        """Atomically replace `path` (readers never see half a spec)."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> ServingSpec:
        return cls.model_validate_json(path.read_bytes())
