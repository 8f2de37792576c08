"""Four-eyes approval of production changes (ADVERSARIAL group A: A12, A13, A16, A17, A18)."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa

from konan.db.engine import make_session_factory, unit_of_work
from konan.governance import audit
from konan.governance.orm import ApprovalRequest
from konan.registry.orm import ModelVersion
from tests.deployments.conftest import Plane


def _gated(plane: Plane) -> dict[str, dict[str, str]]:
    plane.deploy(production_gated=True)
    return {
        "mara": plane.user("mara", "maintainer"),
        "ada": plane.user("ada", "approver"),
        "abe": plane.user("abe", "approver"),
        "vera": plane.user("vera", "viewer"),
        "olga": plane.user("olga", "owner"),
    }


def _request_promotion(plane: Plane, who: dict[str, str], version: int = 2) -> int:
    response = plane.post(
        "/api/v1/deployments/churn-live/promote", {"version": version, "reason": "better"}, who
    )
    assert response.status_code == 202, response.text
    approval_id: int = response.json()["approval_id"]
    return approval_id


def _champion(plane: Plane) -> tuple[int, int]:
    body = plane.get("/api/v1/deployments/churn-live").json()
    return body["revision"], body["traffic"]["champion"]


def test_an_approver_other_than_the_requester_executes_it_once(plane: Plane) -> None:
    users = _gated(plane)
    approval = _request_promotion(plane, users["mara"])
    assert _champion(plane) == (1, 1)
    decided = plane.post(f"/api/v1/approvals/{approval}/approve", {"comment": "lgtm"}, users["ada"])
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "executed"
    assert decided.json()["decided_by"] == "ada"
    assert _champion(plane) == (2, 2)
    again = plane.post(f"/api/v1/approvals/{approval}/approve", {}, users["abe"])
    assert again.status_code == 409
    assert _champion(plane) == (2, 2)
    history = plane.get("/api/v1/deployments/churn-live/revisions").json()
    assert history[-1]["created_by"] == "mara"
    assert "approved by ada" in history[-1]["reason"]


def test_nobody_approves_their_own_request(plane: Plane) -> None:
    users = _gated(plane)
    # An owner may both request and approve, and an admin may do anything: never their own.
    for who in (users["olga"], plane.admin):
        own = _request_promotion(plane, who)
        response = plane.post(f"/api/v1/approvals/{own}/approve", {}, who)
        assert response.status_code == 403
        assert "four eyes" in response.json()["detail"]
    assert _champion(plane) == (1, 1)


def test_maintainers_and_viewers_cannot_decide(plane: Plane) -> None:
    users = _gated(plane)
    approval = _request_promotion(plane, users["olga"])
    for who in ("mara", "vera"):
        response = plane.post(f"/api/v1/approvals/{approval}/approve", {}, users[who])
        assert response.status_code == 403, who
    viewer_request = plane.post(
        "/api/v1/deployments/churn-live/promote", {"version": 2}, users["vera"]
    )
    assert viewer_request.status_code == 403
    assert _champion(plane) == (1, 1)


def test_a_rejected_or_expired_request_cannot_be_approved(plane: Plane) -> None:
    users = _gated(plane)
    rejected = _request_promotion(plane, users["mara"])
    no = plane.post(f"/api/v1/approvals/{rejected}/reject", {"comment": "not yet"}, users["ada"])
    assert no.json()["status"] == "rejected"
    assert plane.post(f"/api/v1/approvals/{rejected}/approve", {}, users["abe"]).status_code == 409

    stale = _request_promotion(plane, users["mara"], version=3)
    with unit_of_work(make_session_factory(plane.engine)) as session:
        session.execute(
            sa.update(ApprovalRequest)
            .where(ApprovalRequest.id == stale)
            .values(expires_at=sa.func.current_timestamp())
        )
    expired = plane.post(f"/api/v1/approvals/{stale}/approve", {}, users["ada"])
    assert expired.status_code == 409
    assert "expired" in expired.json()["detail"]
    assert _champion(plane) == (1, 1)


def test_a_changed_artifact_after_the_request_refuses_the_promotion(plane: Plane) -> None:
    users = _gated(plane)
    approval = _request_promotion(plane, users["mara"])
    with unit_of_work(make_session_factory(plane.engine)) as session:
        session.execute(
            sa.update(ModelVersion)
            .where(ModelVersion.version == 2)
            .values(artifact_sha256="f" * 64)
        )
    response = plane.post(f"/api/v1/approvals/{approval}/approve", {}, users["ada"])
    assert response.status_code == 409
    assert "artifact" in response.json()["detail"]
    assert _champion(plane) == (1, 1)


def test_of_two_conflicting_requests_only_the_first_approved_applies(plane: Plane) -> None:
    users = _gated(plane)
    first = _request_promotion(plane, users["mara"], version=2)
    second = _request_promotion(plane, users["mara"], version=3)
    results: dict[int, Any] = {}

    def decide(approval: int, who: str) -> None:
        results[approval] = plane.client.post(
            f"/api/v1/approvals/{approval}/approve", json={}, headers=users[who]
        ).status_code

    threads = [
        threading.Thread(target=decide, args=(first, "ada")),
        threading.Thread(target=decide, args=(second, "abe")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [200, 409]
    revision, champion = _champion(plane)
    assert revision == 2
    winner = first if results[first] == 200 else second
    assert champion == (2 if winner == first else 3)
    with plane.engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(ApprovalRequest.id, ApprovalRequest.status)).all())
    assert statuses[winner] == "executed"
    assert statuses[first if winner == second else second] == "pending"


def test_a_downgraded_approver_is_refused_on_the_next_request(plane: Plane) -> None:
    users = _gated(plane)
    approval = _request_promotion(plane, users["mara"])
    downgrade = plane.put("/api/v1/projects/default/members", {"username": "ada", "role": "viewer"})
    assert downgrade.status_code == 200
    response = plane.post(f"/api/v1/approvals/{approval}/approve", {}, users["ada"])
    assert response.status_code == 403
    assert _champion(plane) == (1, 1)


def test_gated_rollback_and_canary_changes_wait_for_approval_and_everything_is_audited(
    plane: Plane,
) -> None:
    users = _gated(plane)
    approval = _request_promotion(plane, users["mara"])
    plane.post(f"/api/v1/approvals/{approval}/approve", {}, users["ada"])
    back = plane.post("/api/v1/deployments/churn-live/rollback", {}, users["mara"])
    assert back.status_code == 202
    canary = plane.put(
        "/api/v1/deployments/churn-live/traffic", {"canary": 3, "canary_weight": 0.1}, users["mara"]
    )
    assert canary.status_code == 202
    listed = plane.get("/api/v1/approvals?status=pending", users["ada"]).json()
    assert sorted(a["action"] for a in listed) == ["rollback", "traffic"]
    rollback_id = next(a["id"] for a in listed if a["action"] == "rollback")
    assert (
        plane.post(f"/api/v1/approvals/{rollback_id}/approve", {}, users["abe"]).status_code == 200
    )
    assert _champion(plane) == (3, 1)
    with make_session_factory(plane.engine)() as session:
        assert audit.verify(session).ok
        actions = session.scalars(
            sa.select(sa.text("action")).select_from(sa.text("audit_events"))
        ).all()
    assert actions.count("approval.request") == 3
    assert actions.count("approval.approve") == 2
