"""Wire models of deployments: create, traffic, promote, rollback, scale, and what is read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from konan.core.names import Name

Reason = Annotated[str, StringConstraints(max_length=2000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Replicas(Strict):
    min: int = Field(default=1, ge=0, le=100)
    max: int = Field(default=1, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.max < self.min:
            raise ValueError("replicas.max must be at least replicas.min")
        return self


class DeploymentCreate(Strict):
    name: Name
    model: Name
    version: int = Field(ge=1)
    project: Name = "default"
    runtime: Literal["local", "docker", "kubernetes"] | None = Field(
        default=None, description="default: the site's KONAN_RUNTIME__KIND"
    )
    replicas: Replicas = Replicas()
    production_gated: bool = False
    reason: Reason = ""


class TrafficUpdate(Strict):
    champion: int | None = Field(default=None, ge=1, description="default: unchanged")
    canary: int | None = Field(default=None, ge=1)
    canary_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow: int | None = Field(default=None, ge=1)
    reason: Reason = ""


class PromoteRequest(Strict):
    version: int | None = Field(default=None, ge=1, description="default: the current canary")
    reason: Reason = ""


class RollbackRequest(Strict):
    revision: int | None = Field(default=None, ge=1, description="default: the previous one")
    reason: Reason = ""


class ScaleRequest(Strict):
    replicas: Replicas
    reason: Reason = ""


class TrafficRead(BaseModel):
    champion: int
    canary: int | None
    canary_weight: float
    shadow: int | None


class RevisionRead(BaseModel):
    revision: int
    traffic: TrafficRead
    replicas: Replicas
    reason: str
    created_by: str | None
    created_at: datetime


class DeploymentRead(BaseModel):
    name: str
    project: str
    model: str
    runtime: str
    status: str
    status_reason: str | None
    status_message: str
    production_gated: bool
    revision: int
    traffic: TrafficRead
    replicas: Replicas
    predict_url: str = Field(description="the control plane's predict route for this deployment")
    endpoint_url: str | None = Field(description="the model servers' own address (fast path)")
    created_by: str | None
    created_at: datetime


class PendingApproval(BaseModel):
    approval_id: int
    status: str
    detail: str
