"""The audit log: append-only and hash-chained, written in the same transaction as the change.

Each event's hash covers its own content and the previous event's hash, so editing or deleting
any row breaks the chain from that row on; `verify` names the first event that does not match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from konan.core import request_context
from konan.core.types import utcnow
from konan.governance.orm import AuditEvent

GENESIS = "0" * 64
# Serialises appends on PostgreSQL so two transactions never chain onto the same predecessor.
# SQLite allows one writer at a time, which gives the same guarantee.
_PG_LOCK_KEY = 0x4B4F4E414E  # "KONAN"


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    name: str


SYSTEM = Actor(user_id=None, name="system")


def _digest(event: AuditEvent) -> str:
    body = {
        "at": event.at.isoformat(),
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "project_id": event.project_id,
        "before": event.before,
        "after": event.after,
        "request_id": event.request_id,
        "client_addr": event.client_addr,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str | int,
    project_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    request_id: str | None = None,
    client_addr: str | None = None,
) -> AuditEvent:
    context = request_context.current()
    if context is not None:
        request_id = request_id or context.request_id
        client_addr = client_addr or context.client_addr
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
    prev = session.scalar(sa.select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    # Microsecond precision survives both backends, so the hash recomputes identically on read.
    event = AuditEvent(
        at=utcnow(),
        actor_id=actor.user_id,
        actor_name=actor.name,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        project_id=project_id,
        before=before,
        after=after,
        request_id=request_id,
        client_addr=client_addr,
        prev_hash=prev or GENESIS,
    )
    event.hash = _digest(event)
    session.add(event)
    session.flush()
    return event


def _iter_events(session: Session, batch: int = 1000) -> Iterator[AuditEvent]:
    last_id = 0
    while True:
        rows = session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.id > last_id)
            .order_by(AuditEvent.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id


@dataclass(frozen=True)
class ChainReport:
    checked: int
    first_bad_id: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


def verify(session: Session) -> ChainReport:
    prev = GENESIS
    checked = 0
    for event in _iter_events(session):
        if event.prev_hash != prev:
            return ChainReport(checked, event.id, "its link to the previous event is broken")
        if _digest(event) != event.hash:
            return ChainReport(checked, event.id, "its content does not match its hash")
        prev = event.hash
        checked += 1
    return ChainReport(checked, None, None)


def search(
    session: Session,
    *,
    project_ids: list[int] | None,
    action: str | None = None,
    object_type: str | None = None,
    actor: str | None = None,
    since: Any = None,
    until: Any = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Newest first; `before_id` pages backwards. project_ids None means every event."""
    query = sa.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if project_ids is not None:
        query = query.where(AuditEvent.project_id.in_(project_ids))
    if action:
        query = query.where(AuditEvent.action == action)
    if object_type:
        query = query.where(AuditEvent.object_type == object_type)
    if actor:
        query = query.where(AuditEvent.actor_name == actor)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return list(session.scalars(query))
