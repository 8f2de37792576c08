"""Governance routes: auth (login with token pair + dashboard cookie, refresh, logout, me),
projects and their members, users."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Response

from konan.core.errors import Unauthenticated
from konan.governance import audit, repository, service
from konan.governance.permissions import Action, visible_project, visible_project_ids
from konan.governance.schemas import (
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
    body: LoginRequest, response: Response, session: SessionDep, state: StateDep
) -> TokenPair:
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
