"""Use cases of the governance domain: first start, login, tokens. Raises domain errors."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from konan.core.errors import Conflict, InvalidInput, PermissionDenied, Unauthenticated
from konan.core.types import ApprovalStatus, ProjectRole, utcnow
from konan.governance import audit, repository
from konan.governance.audit import SYSTEM, Actor
from konan.governance.orm import ApprovalRequest, Project, ProjectMember, User
from konan.governance.security import (
    decode_token,
    hash_password,
    issue_token,
    verify_password,
)

ADMIN_USERNAME = "admin"
LOCKOUT_THRESHOLD = 5
LOCKOUT_SECONDS = 300
BAD_LOGIN = "wrong username or password"


@dataclass(frozen=True)
class BootstrapResult:
    admin_created: bool
    generated_password: str | None  # set only when we generated it: print it once, never store it


def bootstrap(session: Session, admin_password: str | None) -> BootstrapResult:
    """First start: the default project and the `admin` user. Safe to run on every start."""
    if repository.project_by_name(session, repository.DEFAULT_PROJECT) is None:
        project = Project(name=repository.DEFAULT_PROJECT, description="Default project")
        session.add(project)
        session.flush()
        audit.record(
            session,
            actor=SYSTEM,
            action="project.create",
            object_type="project",
            object_id=project.id,
            project_id=project.id,
            after={"name": project.name},
        )
    if repository.user_by_username(session, ADMIN_USERNAME) is not None:
        return BootstrapResult(admin_created=False, generated_password=None)
    generated = None
    if not admin_password:
        generated = admin_password = secrets.token_urlsafe(18)
    admin = User(
        username=ADMIN_USERNAME, password_hash=hash_password(admin_password), is_admin=True
    )
    session.add(admin)
    session.flush()
    default = repository.project_by_name(session, repository.DEFAULT_PROJECT)
    assert default is not None
    session.add(ProjectMember(project_id=default.id, user_id=admin.id, role=ProjectRole.owner))
    audit.record(
        session,
        actor=SYSTEM,
        action="user.create",
        object_type="user",
        object_id=admin.id,
        after={"username": admin.username, "is_admin": True},
    )
    return BootstrapResult(admin_created=True, generated_password=generated)


@dataclass(frozen=True)
class IssuedTokens:
    user: User
    access_token: str
    refresh_token: str
    expires_in: int


def _issue(user: User, secret: str, access_ttl: int, refresh_ttl: int) -> IssuedTokens:
    return IssuedTokens(
        user=user,
        access_token=issue_token(
            secret=secret,
            user_id=user.id,
            token_version=user.token_version,
            kind="access",
            ttl_seconds=access_ttl,
        ),
        refresh_token=issue_token(
            secret=secret,
            user_id=user.id,
            token_version=user.token_version,
            kind="refresh",
            ttl_seconds=refresh_ttl,
        ),
        expires_in=access_ttl,
    )


def login(
    session: Session,
    *,
    username: str,
    password: str,
    secret: str,
    access_ttl: int,
    refresh_ttl: int,
) -> IssuedTokens | None:
    """Tokens, or None for a refused login (same answer, one argon2 verification, whether the
    user exists or not). A refusal still updates the lockout counters: the caller commits."""
    user = repository.user_by_username(session, username)
    now = utcnow()
    valid, new_hash = verify_password(password, user.password_hash if user else None)
    if user is None or not user.is_active:
        return None
    if user.locked_until is not None and user.locked_until > now:
        return None
    if not valid:
        user.failed_logins += 1
        if user.failed_logins >= LOCKOUT_THRESHOLD:
            user.locked_until = now + timedelta(seconds=LOCKOUT_SECONDS)
            user.failed_logins = 0
        return None
    user.failed_logins = 0
    user.locked_until = None
    if new_hash:
        user.password_hash = new_hash
    return _issue(user, secret, access_ttl, refresh_ttl)


def refresh(
    session: Session, *, refresh_token: str, secret: str, access_ttl: int, refresh_ttl: int
) -> IssuedTokens:
    claims = decode_token(refresh_token, secret=secret, kind="refresh")
    user = repository.user_by_id(session, claims.user_id)
    if user is None or not user.is_active or user.token_version != claims.token_version:
        raise Unauthenticated("the refresh token is no longer valid; log in again")
    return _issue(user, secret, access_ttl, refresh_ttl)


def logout_everywhere(session: Session, user: User, actor: Actor) -> None:
    """Every token issued so far to this user stops working."""
    user.token_version += 1
    audit.record(session, actor=actor, action="user.logout", object_type="user", object_id=user.id)


def expire_approvals(session: Session, batch: int = 500) -> int:
    """Pending requests past their deadline become `expired`, each with an audit event."""
    now = utcnow()
    rows = session.scalars(
        sa.select(ApprovalRequest)
        .where(ApprovalRequest.status == ApprovalStatus.pending, ApprovalRequest.expires_at <= now)
        .order_by(ApprovalRequest.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    for request in rows:
        request.status = ApprovalStatus.expired
        request.decided_at = now
        audit.record(
            session,
            actor=SYSTEM,
            action="approval.expire",
            object_type="approval_request",
            object_id=request.id,
            before={"status": ApprovalStatus.pending.value},
            after={"status": ApprovalStatus.expired.value},
        )
    return len(rows)


def create_project(session: Session, user: User, name: str, description: str) -> Project:
    if not user.is_admin:
        raise PermissionDenied("only an admin can create projects")
    if repository.project_by_name(session, name) is not None:
        raise Conflict(f"project {name!r} already exists")
    project = Project(name=name, description=description)
    session.add(project)
    session.flush()
    audit.record(
        session,
        actor=Actor(user.id, user.username),
        action="project.create",
        object_type="project",
        object_id=project.id,
        project_id=project.id,
        after={"name": name},
    )
    return project


def set_member(
    session: Session, user: User, project: Project, username: str, role: ProjectRole
) -> ProjectMember:
    member_user = repository.user_by_username(session, username)
    if member_user is None:
        raise InvalidInput(f"no user named {username!r}")
    existing = session.get(ProjectMember, (project.id, member_user.id))
    before = {"role": existing.role} if existing else None
    if existing is None:
        existing = ProjectMember(project_id=project.id, user_id=member_user.id, role=role)
        session.add(existing)
    else:
        existing.role = role
    session.flush()
    audit.record(
        session,
        actor=Actor(user.id, user.username),
        action="project.member.set",
        object_type="project_member",
        object_id=f"{project.id}:{member_user.id}",
        project_id=project.id,
        before=before,
        after={"username": username, "role": role.value},
    )
    return existing


def create_user(
    session: Session,
    admin: User,
    *,
    username: str,
    password: str,
    email: str | None,
    is_admin: bool,
) -> User:
    if not admin.is_admin:
        raise PermissionDenied("only an admin can create users")
    if repository.user_by_username(session, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(
        username=username, email=email, password_hash=hash_password(password), is_admin=is_admin
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=Actor(admin.id, admin.username),
        action="user.create",
        object_type="user",
        object_id=user.id,
        after={"username": username, "is_admin": is_admin},
    )
    return user
