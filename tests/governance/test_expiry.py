"""Approval expiry is idempotent: a second pass (a retried or redelivered task) changes nothing."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from konan.core.types import ApprovalStatus
from konan.db.engine import unit_of_work
from konan.governance import service
from konan.governance.orm import ApprovalRequest, AuditEvent
from tests.factories import approval_request, seed_deployment


def test_expiring_twice_expires_once(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        seeded = seed_deployment(session)
        stale = approval_request(session, seeded, expires_in=timedelta(seconds=-1)).id
        fresh = approval_request(session, seeded, expires_in=timedelta(days=1)).id
    with unit_of_work(session_factory) as session:
        assert service.expire_approvals(session) == 1
    with unit_of_work(session_factory) as session:
        assert service.expire_approvals(session) == 0
    with session_factory() as session:
        assert session.get(ApprovalRequest, stale).status == ApprovalStatus.expired  # type: ignore[union-attr]
        assert session.get(ApprovalRequest, fresh).status == ApprovalStatus.pending  # type: ignore[union-attr]
        n = session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "approval.expire")
        )
    assert n == 1
