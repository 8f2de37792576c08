"""API keys: a random secret with a visible prefix, stored only as a sha256 hash, shown once.

Keys are for applications calling the data plane (predict, feedback). They are scoped to
deployments and/or a project and to an action set, may expire, and are revoked by deleting
them. Model servers learn the hashes of the keys that may call them through the internal
key endpoint (see `keys_for_deployment`) and refresh them every few seconds.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from limits import parse as parse_limit
from sqlalchemy.orm import Session

from konan.core.errors import InvalidInput, NotFound
from konan.core.types import utcnow
from konan.deployments.orm import Deployment
from konan.governance import audit
from konan.governance.orm import ApiKey, Project, User, api_key_deployments
from konan.governance.permissions import Action, authorize

KEY_SCOPES = frozenset({"predict", "feedback"})


@dataclass(frozen=True)
class KeyRate:
    """A key's request budget: `amount` requests per `seconds`."""

    amount: int
    seconds: int


def parse_rate_limit(text: str) -> KeyRate:
    """'100/second', '5000/minute', '10 per 2 seconds' (the `limits` notation) → KeyRate."""
    try:
        item = parse_limit(text)
    except ValueError:
        raise InvalidInput(
            f"rate_limit {text!r} is not a rate: write it as '<count>/<second|minute|hour|day>', "
            "e.g. '100/second'"
        ) from None
    if item.amount < 1:
        raise InvalidInput("rate_limit must allow at least one request")
    return KeyRate(amount=item.amount, seconds=item.get_expiry())


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_secret() -> tuple[str, str]:
    """(prefix, full key): `kn_3f9a1c2b_<43 url-safe chars>`; the prefix identifies it in lists."""
    prefix = f"kn_{secrets.token_hex(4)}"
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class IssuedKey:
    row: ApiKey
    key: str
    deployments: list[str]


def create_key(
    session: Session,
    user: User,
    *,
    name: str,
    deployments: list[Deployment],
    project: Project | None,
    scopes: list[str],
    expires_at: datetime | None,
    rate_limit: str | None = None,
) -> IssuedKey:
    unknown = sorted(set(scopes) - KEY_SCOPES)
    if unknown:
        raise InvalidInput(
            f"unknown scopes: {', '.join(unknown)} (allowed: {', '.join(sorted(KEY_SCOPES))})"
        )
    if not deployments and project is None:
        raise InvalidInput("scope the key to at least one deployment or a project")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= utcnow():
            raise InvalidInput("expires_at is in the past")
    if rate_limit is not None:
        rate_limit = rate_limit.strip()
        parse_rate_limit(rate_limit)
    for deployment in deployments:
        target = session.get(Project, deployment.project_id)
        assert target is not None
        authorize(session, user, target, Action.deploy)
    if project is not None:
        authorize(session, user, project, Action.deploy)
    prefix, key = new_secret()
    row = ApiKey(
        name=name,
        prefix=prefix,
        key_hash=hash_key(key),
        owner_id=user.id,
        project_id=project.id if project else None,
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
        rate_limit=rate_limit,
    )
    session.add(row)
    session.flush()
    for deployment in deployments:
        session.execute(
            sa.insert(api_key_deployments).values(api_key_id=row.id, deployment_id=deployment.id)
        )
    audit.record(
        session,
        actor=audit.Actor(user.id, user.username),
        action="api_key.create",
        object_type="api_key",
        object_id=row.id,
        project_id=row.project_id,
        after={
            "name": name,
            "prefix": prefix,
            "scopes": row.scopes,
            "deployments": [d.name for d in deployments],
            "expires_at": expires_at.isoformat() if expires_at else None,
            "rate_limit": rate_limit,
        },
    )
    return IssuedKey(row=row, key=key, deployments=[d.name for d in deployments])


def deployments_of(session: Session, key_id: int) -> list[str]:
    return list(
        session.scalars(
            sa.select(Deployment.name)
            .join(api_key_deployments, api_key_deployments.c.deployment_id == Deployment.id)
            .where(api_key_deployments.c.api_key_id == key_id)
            .order_by(Deployment.name)
        )
    )


def list_keys(session: Session, user: User) -> list[ApiKey]:
    query = sa.select(ApiKey).order_by(ApiKey.id)
    if not user.is_admin:
        query = query.where(ApiKey.owner_id == user.id)
    return list(session.scalars(query))


def revoke_key(session: Session, user: User, key_id: int) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None or (not user.is_admin and row.owner_id != user.id):
        raise NotFound(f"API key {key_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(
            session,
            actor=audit.Actor(user.id, user.username),
            action="api_key.revoke",
            object_type="api_key",
            object_id=row.id,
            project_id=row.project_id,
            before={"revoked": False},
            after={"revoked": True, "prefix": row.prefix},
        )
    return row


def keys_for_deployment(session: Session, deployment: Deployment, scope: str) -> list[ApiKey]:
    """Live keys that may call this deployment: scoped to it or to its project, not revoked,
    not expired, and holding `scope`."""
    now = utcnow()
    linked = sa.select(api_key_deployments.c.api_key_id).where(
        api_key_deployments.c.deployment_id == deployment.id
    )
    rows = session.scalars(
        sa.select(ApiKey).where(
            ApiKey.revoked_at.is_(None),
            sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            sa.or_(ApiKey.id.in_(linked), ApiKey.project_id == deployment.project_id),
        )
    ).all()
    return [row for row in rows if scope in (row.scopes or [])]


def record_use(session: Session, used: dict[str, float]) -> None:
    """Last-used times reported by model servers (prefix → epoch seconds)."""
    for prefix, at in list(used.items())[:1000]:
        stamp = datetime.fromtimestamp(float(at), UTC)
        session.execute(
            sa.update(ApiKey)
            .where(
                ApiKey.prefix == prefix,
                sa.or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < stamp),
            )
            .values(last_used_at=stamp)
        )
