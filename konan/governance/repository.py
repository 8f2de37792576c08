"""Queries of the governance domain. Flush, never commit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from konan.governance.orm import Project, ProjectMember, User

DEFAULT_PROJECT = "default"


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(sa.select(User).where(User.username == username))


def user_by_id(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def project_by_name(session: Session, name: str) -> Project | None:
    return session.scalar(sa.select(Project).where(Project.name == name))


def memberships(session: Session, user_id: int) -> list[tuple[Project, str]]:
    rows = session.execute(
        sa.select(Project, ProjectMember.role)
        .join(ProjectMember, ProjectMember.project_id == Project.id)
        .where(ProjectMember.user_id == user_id)
        .order_by(Project.name)
    ).all()
    return [(project, role) for project, role in rows]


def count_admins(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(User).where(User.is_admin)) or 0


def member_role(session: Session, project_id: int, user_id: int) -> str | None:
    return session.scalar(
        sa.select(ProjectMember.role).where(
            ProjectMember.project_id == project_id, ProjectMember.user_id == user_id
        )
    )


def list_projects(session: Session, ids: list[int] | None) -> list[Project]:
    query = sa.select(Project).order_by(Project.name)
    if ids is not None:
        query = query.where(Project.id.in_(ids))
    return list(session.scalars(query))


def project_by_id(session: Session, project_id: int) -> Project | None:
    return session.get(Project, project_id)
