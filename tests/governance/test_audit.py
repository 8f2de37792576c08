"""The audit log is hash-chained: any edit or deletion is detected and located."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient
from typer.testing import CliRunner

from konan.db.engine import unit_of_work
from konan.governance import audit, service
from konan.governance.audit import SYSTEM
from konan.governance.orm import AuditEvent


def _seed(session_factory: sessionmaker[Session], n: int = 5) -> None:
    with unit_of_work(session_factory) as session:
        service.bootstrap(session, "pw-for-audit-tests")
        for i in range(n):
            audit.record(
                session,
                actor=SYSTEM,
                action="test.event",
                object_type="thing",
                object_id=i,
                before={"n": i},
                after={"n": i + 1, "nested": {"b": [1, 2.5, "x"], "a": None}},
            )


def test_bootstrap_is_audited_and_the_chain_verifies(
    session_factory: sessionmaker[Session],
) -> None:
    _seed(session_factory)
    with session_factory() as session:
        actions = session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)).all()
        report = audit.verify(session)
    assert actions[:2] == ["project.create", "user.create"]
    assert report.ok
    assert report.checked == len(actions) == 7


def test_an_edited_event_is_named(session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    with unit_of_work(session_factory) as session:
        target = session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id).offset(3)).first()
        assert target is not None
        target_id = target.id
        session.execute(
            sa.update(AuditEvent).where(AuditEvent.id == target_id).values(actor_name="mallory")
        )
    with session_factory() as session:
        report = audit.verify(session)
    assert not report.ok
    assert report.first_bad_id == target_id
    assert report.checked == 3


def test_a_deleted_event_is_named(session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory)
    with unit_of_work(session_factory) as session:
        ids = session.scalars(sa.select(AuditEvent.id).order_by(AuditEvent.id)).all()
        session.execute(sa.delete(AuditEvent).where(AuditEvent.id == ids[2]))
    with session_factory() as session:
        report = audit.verify(session)
    assert report.first_bad_id == ids[3]
    assert "link" in (report.reason or "")


def test_cli_audit_verify_exit_code(session_factory: sessionmaker[Session], db_url: str) -> None:
    from konan.cli.main import app

    _seed(session_factory)
    runner = CliRunner()
    env = {"KONAN_DATABASE__URL": db_url}
    ok = runner.invoke(app, ["admin", "audit", "verify"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output
    with unit_of_work(session_factory) as session:
        session.execute(sa.update(AuditEvent).where(AuditEvent.id == 2).values(after={"x": 1}))
    bad = runner.invoke(app, ["admin", "audit", "verify"], env=env)
    assert bad.exit_code == 1
    assert "event 2" in bad.output


def test_audit_events_carry_the_request_id_and_client_address(
    client: TestClient, admin_token: str
) -> None:
    headers = {"Authorization": f"Bearer {admin_token}", "X-Request-ID": "req-audit-42"}
    created = client.post("/api/v1/projects", json={"name": "fraud"}, headers=headers)
    assert created.status_code == 201
    assert created.headers["x-request-id"] == "req-audit-42"
    events = client.get("/api/v1/audit?action=project.create&limit=1", headers=headers).json()
    assert events[0]["after"] == {"name": "fraud"}
    assert events[0]["actor"] == "admin"
    assert events[0]["request_id"] == "req-audit-42"
    assert events[0]["client_addr"] == "testclient"


def test_the_audit_log_is_for_admins_and_owners(client: TestClient, admin_token: str) -> None:
    admin = {"Authorization": f"Bearer {admin_token}"}
    client.post(
        "/api/v1/users", json={"username": "vic", "password": "vic-password-1"}, headers=admin
    )
    client.put(
        "/api/v1/projects/default/members",
        json={"username": "vic", "role": "viewer"},
        headers=admin,
    )
    token = client.post(
        "/api/v1/auth/login", json={"username": "vic", "password": "vic-password-1"}
    ).json()["access_token"]
    client.cookies.clear()
    response = client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
