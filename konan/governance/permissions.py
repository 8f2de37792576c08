"""Who may do what, in one table. Routes name an Action; `authorize` checks it.

Roles are per project. A global admin may do everything everywhere. A caller with no role in a
project gets 404 for its objects, exactly as if they did not exist (no existence leak).
"""

from __future__ import annotations

import enum

from sqlalchemy.orm import Session

from konan.core.errors import NotFound, PermissionDenied
from konan.core.types import ProjectRole
from konan.governance import repository
from konan.governance.orm import Project, User


class Action(enum.StrEnum):
    read = "read"  # see models, versions, datasets, deployments, monitoring
    register = "register"  # upload models and datasets, move aliases
    deploy = "deploy"  # create, scale, change traffic of non-gated deployments
    request_promotion = "request_promotion"
    approve = "approve"  # decide approval requests (never one's own)
    manage_members = "manage_members"


ROLE_ACTIONS: dict[ProjectRole, frozenset[Action]] = {
    ProjectRole.viewer: frozenset({Action.read}),
    ProjectRole.maintainer: frozenset(
        {Action.read, Action.register, Action.deploy, Action.request_promotion}
    ),
    ProjectRole.approver: frozenset({Action.read, Action.approve}),
    ProjectRole.owner: frozenset(Action),
}


def role_in(session: Session, user: User, project: Project) -> ProjectRole | None:
    role = repository.member_role(session, project.id, user.id)
    return ProjectRole(role) if role else None


def authorize(session: Session, user: User, project: Project, action: Action) -> None:
    if user.is_admin:
        return
    role = role_in(session, user, project)
    if role is None:
        raise NotFound(f"project {project.name!r} not found")
    if action not in ROLE_ACTIONS[role]:
        raise PermissionDenied(
            f"your role in project {project.name!r} is {role.value}, which may not {action.value}"
        )


def visible_project(session: Session, user: User, name: str, action: Action) -> Project:
    """The project by name, if the caller may see it and do `action` in it."""
    project = repository.project_by_name(session, name)
    if project is None:
        raise NotFound(f"project {name!r} not found")
    authorize(session, user, project, action)
    return project


def visible_project_ids(session: Session, user: User) -> list[int] | None:
    """Ids of the projects the user can read; None means all (admin)."""
    if user.is_admin:
        return None
    return [project.id for project, _ in repository.memberships(session, user.id)]


def authorize_object(
    session: Session, user: User, project: Project | None, action: Action, missing: str
) -> Project:
    """Access to an object of `project`: 404 with `missing` when the object doesn't exist *or*
    the caller may not see its project (no existence leak); 403 when they see it but may not
    do `action`."""
    if project is None:
        raise NotFound(missing)
    try:
        authorize(session, user, project, Action.read)
    except NotFound:
        raise NotFound(missing) from None
    authorize(session, user, project, action)
    return project


def project_scope(session: Session, user: User, project_name: str | None) -> list[int] | None:
    """Project ids a listing covers: the named project (if visible), else every visible one
    (None: all, for an admin)."""
    if project_name is not None:
        return [visible_project(session, user, project_name, Action.read).id]
    return visible_project_ids(session, user)
