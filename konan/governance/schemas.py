"""Wire models of the governance domain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from konan.core.names import Name
from konan.core.types import ProjectRole

EmailLike = Annotated[str, StringConstraints(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}$")]


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=4096)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class ProjectRoleRead(BaseModel):
    name: str
    role: str


class MeRead(BaseModel):
    id: int
    username: str
    is_admin: bool
    projects: list[ProjectRoleRead]


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""


class ProjectRead(BaseModel):
    id: int
    name: str
    description: str
    role: str | None = Field(description="the caller's role; null for an admin with none")
    created_at: datetime


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=100)
    role: ProjectRole


class MemberRead(BaseModel):
    username: str
    role: str


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Name
    password: str = Field(min_length=10, max_length=1024)
    email: EmailLike | None = None
    is_admin: bool = False


class UserRead(BaseModel):
    id: int
    username: str
    is_admin: bool
    is_active: bool
    created_at: datetime


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    deployments: list[Name] = Field(default_factory=list, max_length=100)
    project: Name | None = Field(default=None, description="all deployments of this project")
    scopes: list[str] = Field(default_factory=lambda: ["predict"], min_length=1, max_length=10)
    expires_at: datetime | None = None
    rate_limit: str | None = Field(
        default=None,
        max_length=40,
        description="requests this key may make, e.g. '100/second' or '5000/minute'; "
        "enforced by each model server process; unset: unlimited",
        examples=["100/second"],
    )


class ApiKeyRead(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    deployments: list[str]
    project: str | None
    expires_at: datetime | None
    rate_limit: str | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="the secret: shown only in this response, never again")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Annotated[str, StringConstraints(max_length=5000)] = ""


class ApprovalRead(BaseModel):
    id: int
    deployment: str
    action: str
    payload: dict[str, Any]
    evidence: dict[str, Any]
    artifact_sha256: str | None
    status: str
    reason: str
    requested_by: str | None
    decided_by: str | None
    decided_at: datetime | None
    comment: str
    created_at: datetime
    expires_at: datetime


class AuditEventRead(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    project: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    client_addr: str | None
    hash: str
