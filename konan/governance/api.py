"""Governance routes: auth (login with token pair + dashboard cookie, refresh, logout, me),
projects and their members, users."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Query, Request, Response

from konan.core.errors import NotFound, PermissionDenied, Unauthenticated
from konan.core.types import ProjectRole
from konan.deployments import repository as deployments_repo
from konan.deployments.api import enqueue_reconcile
from konan.deployments.orm import Deployment
from konan.governance import api_keys, approvals, audit, repository, service
from konan.governance.orm import ApiKey, ApprovalRequest, User
from konan.governance.permissions import Action, visible_project, visible_project_ids
from konan.governance.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    ApprovalRead,
    AuditEventRead,
    Decision,
    LoginRequest,
    MemberRead,
    MemberSet,
    MeRead,
    ProjectCreate,
    ProjectRead,
    ProjectRoleRead,
    RefreshRequest,
    TokenPair,
    UserCreate,
    UserRead,
)
from konan.server.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    PrincipalDep,
    SessionDep,
    StateDep,
)

auth_router = APIRouter(prefix="/auth", tags=["auth"])


def _set_session_cookies(response: Response, token: str, max_age: int, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )
    # Double-submit CSRF token: readable by the dashboard's JS, echoed in X-CSRF-Token.
    response.set_cookie(
        CSRF_COOKIE,
        secrets.token_urlsafe(24),
        max_age=max_age,
        httponly=False,
        samesite="strict",
        secure=secure,
        path="/",
    )


def _secure_cookies(state: StateDep) -> bool:
    url = state.settings.server.public_url
    return bool(url and url.startswith("https://"))


@auth_router.post("/login", response_model=TokenPair)
def login(
    body: LoginRequest, request: Request, response: Response, session: SessionDep, state: StateDep
) -> TokenPair:
    client = request.client.host if request.client else "unknown"
    limiter = state.rate_limiter
    limiter.check(limiter.login, "login", client, body.username.lower(), what="login attempts")
    auth = state.settings.auth
    issued = service.login(
        session,
        username=body.username,
        password=body.password,
        secret=state.jwt_secret,
        access_ttl=auth.access_token_ttl_seconds,
        refresh_ttl=auth.refresh_token_ttl_seconds,
    )
    # Commit before answering either way: a refusal must still count towards the lockout.
    session.commit()
    if issued is None:
        raise Unauthenticated(service.BAD_LOGIN)
    _set_session_cookies(
        response, issued.access_token, auth.access_token_ttl_seconds, _secure_cookies(state)
    )
    return TokenPair(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )


@auth_router.post("/refresh", response_model=TokenPair)
def refresh(body: RefreshRequest, session: SessionDep, state: StateDep) -> TokenPair:
    auth = state.settings.auth
    issued = service.refresh(
        session,
        refresh_token=body.refresh_token,
        secret=state.jwt_secret,
        access_ttl=auth.access_token_ttl_seconds,
        refresh_ttl=auth.refresh_token_ttl_seconds,
    )
    return TokenPair(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )


@auth_router.post("/logout", status_code=204)
def logout(principal: PrincipalDep, session: SessionDep, response: Response) -> Response:
    """Revokes every token of the caller (all devices) and clears the dashboard cookies."""
    service.logout_everywhere(
        session, principal.user, audit.Actor(principal.id, principal.username)
    )
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@auth_router.get("/me", response_model=MeRead)
def me(principal: PrincipalDep, session: SessionDep) -> MeRead:
    projects = [
        ProjectRoleRead(name=project.name, role=role)
        for project, role in repository.memberships(session, principal.id)
    ]
    return MeRead(
        id=principal.id,
        username=principal.username,
        is_admin=principal.is_admin,
        projects=projects,
    )


projects_router = APIRouter(tags=["projects"])


@projects_router.post("/projects", response_model=ProjectRead, status_code=201)
def create_project(
    body: ProjectCreate, principal: PrincipalDep, session: SessionDep
) -> ProjectRead:
    project = service.create_project(session, principal.user, body.name, body.description)
    return ProjectRead(
        id=project.id,
        name=project.name,
        description=project.description,
        role=None,
        created_at=project.created_at,
    )


@projects_router.get("/projects", response_model=list[ProjectRead])
def list_projects(principal: PrincipalDep, session: SessionDep) -> list[ProjectRead]:
    ids = visible_project_ids(session, principal.user)
    return [
        ProjectRead(
            id=p.id,
            name=p.name,
            description=p.description,
            role=repository.member_role(session, p.id, principal.id),
            created_at=p.created_at,
        )
        for p in repository.list_projects(session, ids)
    ]


@projects_router.put("/projects/{project}/members", response_model=MemberRead)
def set_member(
    project: str, body: MemberSet, principal: PrincipalDep, session: SessionDep
) -> MemberRead:
    target = visible_project(session, principal.user, project, Action.manage_members)
    service.set_member(session, principal.user, target, body.username, body.role)
    return MemberRead(username=body.username, role=body.role.value)


@projects_router.post("/users", response_model=UserRead, status_code=201)
def create_user(body: UserCreate, principal: PrincipalDep, session: SessionDep) -> UserRead:
    user = service.create_user(
        session,
        principal.user,
        username=body.username,
        password=body.password,
        email=body.email,
        is_admin=body.is_admin,
    )
    return UserRead(
        id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        is_active=user.is_active,
        created_at=user.created_at,
    )


keys_router = APIRouter(tags=["api-keys"])


def _key_read(session: SessionDep, row: ApiKey) -> dict[str, Any]:
    project = repository.project_by_id(session, row.project_id) if row.project_id else None
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes or []),
        "deployments": api_keys.deployments_of(session, row.id),
        "project": project.name if project else None,
        "expires_at": row.expires_at,
        "rate_limit": row.rate_limit,
        "revoked_at": row.revoked_at,
        "last_used_at": row.last_used_at,
        "created_at": row.created_at,
    }


@keys_router.post("/api-keys", response_model=ApiKeyCreated, status_code=201)
def create_api_key(
    body: ApiKeyCreate, principal: PrincipalDep, session: SessionDep
) -> ApiKeyCreated:
    """Create a key for applications; the secret is in this response only."""
    deployments = []
    for name in body.deployments:
        deployment = deployments_repo.by_name(session, name)
        if deployment is None:
            raise NotFound(f"deployment {name!r} not found")
        deployments.append(deployment)
    project = None
    if body.project is not None:
        project = visible_project(session, principal.user, body.project, Action.deploy)
    issued = api_keys.create_key(
        session,
        principal.user,
        name=body.name,
        deployments=deployments,
        project=project,
        scopes=body.scopes,
        expires_at=body.expires_at,
        rate_limit=body.rate_limit,
    )
    return ApiKeyCreated(**_key_read(session, issued.row), key=issued.key)


@keys_router.get("/api-keys", response_model=list[ApiKeyRead])
def list_api_keys(principal: PrincipalDep, session: SessionDep) -> list[ApiKeyRead]:
    return [
        ApiKeyRead(**_key_read(session, row)) for row in api_keys.list_keys(session, principal.user)
    ]


@keys_router.delete("/api-keys/{key_id}", status_code=204)
def revoke_api_key(key_id: int, principal: PrincipalDep, session: SessionDep) -> Response:
    """Revoke: model servers stop accepting it within seconds."""
    api_keys.revoke_key(session, principal.user, key_id)
    return Response(status_code=204)


approvals_router = APIRouter(tags=["approvals"])


def _approval_read(session: SessionDep, row: ApprovalRequest) -> ApprovalRead:
    deployment = session.get(Deployment, row.deployment_id)

    def name(user_id: int | None) -> str | None:
        user = session.get(User, user_id) if user_id else None
        return user.username if user else None

    return ApprovalRead(
        id=row.id,
        deployment=deployment.name if deployment else "",
        action=row.action,
        payload=row.payload,
        evidence=row.evidence,
        artifact_sha256=row.artifact_sha256,
        status=row.status,
        reason=row.reason,
        requested_by=name(row.requested_by_id),
        decided_by=name(row.decided_by_id),
        decided_at=row.decided_at,
        comment=row.comment,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


@approvals_router.get("/approvals", response_model=list[ApprovalRead])
def list_approvals(
    principal: PrincipalDep,
    session: SessionDep,
    status: Annotated[str | None, Query(pattern=r"^[a-z]{1,20}$")] = None,
    deployment: Annotated[str | None, Query(max_length=100)] = None,
) -> list[ApprovalRead]:
    rows = approvals.list_requests(session, principal.user, status, deployment)
    return [_approval_read(session, row) for row in rows]


@approvals_router.post("/approvals/{approval_id}/approve", response_model=ApprovalRead)
def approve(
    approval_id: int,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    background: BackgroundTasks,
    body: Annotated[Decision, Body()] = Decision(),
) -> ApprovalRead:
    """Approve and execute the change (once). Not your own request; approver role needed."""
    deployment = approvals.approve(session, principal.user, approval_id, body.comment)
    background.add_task(enqueue_reconcile, state, deployment.id)
    row = session.get(ApprovalRequest, approval_id)
    assert row is not None
    return _approval_read(session, row)


@approvals_router.post("/approvals/{approval_id}/reject", response_model=ApprovalRead)
def reject(
    approval_id: int,
    principal: PrincipalDep,
    session: SessionDep,
    body: Annotated[Decision, Body()] = Decision(),
) -> ApprovalRead:
    approvals.reject(session, principal.user, approval_id, body.comment)
    row = session.get(ApprovalRequest, approval_id)
    assert row is not None
    return _approval_read(session, row)


audit_router = APIRouter(tags=["audit"])


@audit_router.get("/audit", response_model=list[AuditEventRead])
def list_audit(
    principal: PrincipalDep,
    session: SessionDep,
    project: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    object_type: Annotated[str | None, Query(max_length=50)] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventRead]:
    """The append-only audit log, newest first. Admins see everything; project owners see
    their projects' events."""
    if project is not None:
        ids: list[int] | None = [
            visible_project(session, principal.user, project, Action.manage_members).id
        ]
    elif principal.is_admin:
        ids = None
    else:
        ids = [
            p.id
            for p, role in repository.memberships(session, principal.id)
            if role == ProjectRole.owner
        ]
        if not ids:
            raise PermissionDenied("reading the audit log needs the owner role or admin")
    events = audit.search(
        session,
        project_ids=ids,
        action=action,
        object_type=object_type,
        actor=actor,
        since=since,
        until=until,
        before_id=before_id,
        limit=limit,
    )
    names = {p.id: p.name for p in repository.list_projects(session, None)}
    return [
        AuditEventRead(
            id=e.id,
            at=e.at,
            actor=e.actor_name,
            action=e.action,
            object_type=e.object_type,
            object_id=e.object_id,
            project=names.get(e.project_id) if e.project_id else None,
            before=e.before,
            after=e.after,
            request_id=e.request_id,
            client_addr=e.client_addr,
            hash=e.hash,
        )
        for e in events
    ]
