"""The deployment control plane over REST: revisions for every change, traffic rules, approval
gating, permissions, API keys and the key endpoint model servers poll. The runtime is exercised
end to end in tests/e2e; here only desired state and its history are checked."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import sqlalchemy as sa

from konan.db.engine import make_session_factory, unit_of_work
from konan.deployments.orm import Deployment
from konan.deployments.reconciler import serving_env
from konan.governance.orm import ApprovalRequest
from konan.serving.spec import SERVING_TOKEN_ENV
from tests.deployments.conftest import Plane


def traffic(body: dict[str, Any]) -> tuple[Any, ...]:
    t = body["traffic"]
    return (body["revision"], t["champion"], t["canary"], t["canary_weight"], t["shadow"])


def test_deploy_then_canary_promote_rollback_each_make_a_revision(plane: Plane) -> None:
    created = plane.deploy(replicas={"min": 1, "max": 3})
    assert traffic(created) == (1, 1, None, 0.0, None)
    assert created["status"] == "pending"
    assert created["predict_url"].endswith("/api/v1/deployments/churn-live/predict")
    assert created["replicas"] == {"min": 1, "max": 3}

    canary = plane.put(
        "/api/v1/deployments/churn-live/traffic",
        {"canary": 2, "canary_weight": 0.1, "shadow": 3, "reason": "try v2"},
    )
    assert canary.status_code == 200, canary.text
    assert traffic(canary.json()) == (2, 1, 2, 0.1, 3)

    promoted = plane.post("/api/v1/deployments/churn-live/promote", {"reason": "v2 is better"})
    assert traffic(promoted.json()) == (3, 2, None, 0.0, 3)

    back = plane.post("/api/v1/deployments/churn-live/rollback", {"reason": "oops"})
    assert traffic(back.json()) == (4, 1, 2, 0.1, 3)

    to_first = plane.post("/api/v1/deployments/churn-live/rollback", {"revision": 1})
    assert traffic(to_first.json()) == (5, 1, None, 0.0, None)

    history = plane.get("/api/v1/deployments/churn-live/revisions").json()
    assert [(h["revision"], h["created_by"]) for h in history] == [
        (n, "admin") for n in range(1, 6)
    ]
    assert history[1]["reason"] == "try v2"
    assert history[3]["reason"] == "oops"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"canary": 1, "canary_weight": 0.5}, 422, "canary"),
        ({"canary_weight": 0.3}, 422, "canary"),
        ({"canary": 2, "canary_weight": 1.5}, 422, "canary_weight"),
        ({"canary": 9, "canary_weight": 0.1}, 422, "no version 9"),
        ({"shadow": 1}, 422, "shadow"),
        ({"champion": 2, "canary": 2, "canary_weight": 0.1}, 422, "canary"),
    ],
)
def test_inconsistent_traffic_is_refused_and_changes_nothing(
    plane: Plane, body: dict[str, Any], status: int, fragment: str
) -> None:
    plane.deploy()
    response = plane.put("/api/v1/deployments/churn-live/traffic", body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]
    assert plane.get("/api/v1/deployments/churn-live").json()["revision"] == 1


def test_promote_and_rollback_need_something_to_move_to(plane: Plane) -> None:
    plane.deploy()
    nothing = plane.post("/api/v1/deployments/churn-live/promote", {})
    assert nothing.status_code == 422
    same = plane.post("/api/v1/deployments/churn-live/promote", {"version": 1})
    assert same.status_code == 409
    no_history = plane.post("/api/v1/deployments/churn-live/rollback", {})
    assert no_history.status_code == 409
    assert plane.get("/api/v1/deployments/churn-live").json()["revision"] == 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "x", "model": "nope", "version": 1}, "model 'nope'"),
        ({"name": "x", "model": "churn", "version": 7}, "no version 7"),
        ({"name": "Bad Name", "model": "churn", "version": 1}, "name"),
        ({"name": "x", "model": "churn", "version": 1, "replicas": {"min": 3, "max": 1}}, "max"),
        ({"name": "x", "model": "churn", "version": 1, "runtime": "nomad"}, "runtime"),
    ],
)
def test_bad_deployments_are_refused(plane: Plane, body: dict[str, Any], fragment: str) -> None:
    response = plane.post("/api/v1/deployments", body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]
    with plane.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Deployment)).scalar_one() == 0


def test_duplicate_name_is_409_until_the_old_one_is_gone(plane: Plane) -> None:
    plane.deploy()
    again = plane.post(
        "/api/v1/deployments", {"name": "churn-live", "model": "churn", "version": 2}
    )
    assert again.status_code == 409
    gone = plane.client.delete("/api/v1/deployments/churn-live", headers=plane.admin)
    assert gone.status_code == 202
    assert plane.get("/api/v1/deployments/churn-live").status_code == 404


def test_a_gated_deployment_turns_changes_into_approval_requests(plane: Plane) -> None:
    plane.deploy(production_gated=True)
    promote = plane.post("/api/v1/deployments/churn-live/promote", {"version": 2, "reason": "r"})
    assert promote.status_code == 202
    approval_id = promote.json()["approval_id"]
    weight = plane.put(
        "/api/v1/deployments/churn-live/traffic", {"canary": 3, "canary_weight": 0.2}
    )
    assert weight.status_code == 202
    assert plane.get("/api/v1/deployments/churn-live").json()["revision"] == 1
    with plane.engine.connect() as conn:
        row = conn.execute(
            sa.select(ApprovalRequest).where(ApprovalRequest.id == approval_id)
        ).one()
    assert row.status == "pending"
    assert row.action == "promote"
    assert row.artifact_sha256 == hashlib.sha256(b"v2").hexdigest()
    assert row.evidence["metrics"]["candidate"] == {"auc": 0.82}


def test_roles_decide_who_changes_what(plane: Plane) -> None:
    plane.deploy()
    viewer = plane.user("vera", "viewer")
    outsider = plane.user("otto", None)
    maintainer = plane.user("mara", "maintainer")
    assert plane.get("/api/v1/deployments/churn-live", viewer).status_code == 200
    change = {"canary": 2, "canary_weight": 0.1}
    assert plane.put("/api/v1/deployments/churn-live/traffic", change, viewer).status_code == 403
    assert plane.get("/api/v1/deployments/churn-live", outsider).status_code == 404
    assert plane.put("/api/v1/deployments/churn-live/traffic", change, outsider).status_code == 404
    assert plane.get("/api/v1/deployments", outsider).json() == []
    assert (
        plane.put("/api/v1/deployments/churn-live/traffic", change, maintainer).status_code == 200
    )


# ---- API keys and the key endpoint ----------------------------------------------------------


def _serving_headers(plane: Plane, name: str) -> dict[str, str]:
    state = plane.app.state.konan
    with state.session_factory() as session:
        deployment = session.scalar(sa.select(Deployment).where(Deployment.name == name))
        assert deployment is not None
        env = serving_env(state.settings, deployment, state.jwt_secret)
    return {"Authorization": f"Bearer {env[SERVING_TOKEN_ENV]}"}


def test_keys_are_shown_once_and_stored_only_as_hashes(plane: Plane) -> None:
    plane.deploy()
    created = plane.post("/api/v1/api-keys", {"name": "checkout", "deployments": ["churn-live"]})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith(created.json()["prefix"])
    listed = plane.get("/api/v1/api-keys")
    assert key not in listed.text
    assert hashlib.sha256(key.encode()).hexdigest() not in listed.text
    assert listed.json()[0]["deployments"] == ["churn-live"]
    with plane.engine.connect() as conn:
        dump = " ".join(
            str(v) for row in conn.execute(sa.text("SELECT * FROM api_keys")) for v in row
        )
    assert key not in dump


def test_a_predict_key_cannot_call_the_control_plane(plane: Plane) -> None:
    plane.deploy()
    key = plane.post("/api/v1/api-keys", {"name": "app", "deployments": ["churn-live"]}).json()
    as_key = {"Authorization": f"Bearer {key['key']}"}
    for method, path, body in [
        ("POST", "/api/v1/models", {"name": "m2", "task": "regression"}),
        ("PUT", "/api/v1/deployments/churn-live/traffic", {"canary": 2, "canary_weight": 0.5}),
        ("POST", "/api/v1/api-keys", {"name": "more", "deployments": ["churn-live"]}),
        ("GET", "/api/v1/auth/me", None),
    ]:
        response = plane.client.request(method, path, json=body, headers=as_key)
        assert response.status_code == 403, (path, response.text)
    assert plane.get("/api/v1/deployments/churn-live").json()["revision"] == 1
    plane.client.delete(f"/api/v1/api-keys/{key['id']}", headers=plane.admin)
    revoked = plane.client.get("/api/v1/auth/me", headers=as_key)
    assert revoked.status_code == 401


def test_model_servers_learn_exactly_their_live_keys(plane: Plane) -> None:
    plane.deploy("a")
    plane.deploy("b")
    for_a = plane.post("/api/v1/api-keys", {"name": "a", "deployments": ["a"]}).json()
    for_b = plane.post("/api/v1/api-keys", {"name": "b", "deployments": ["b"]}).json()
    for_project = plane.post("/api/v1/api-keys", {"name": "all", "project": "default"}).json()
    no_predict = plane.post(
        "/api/v1/api-keys", {"name": "fb", "deployments": ["a"], "scopes": ["feedback"]}
    ).json()
    headers = _serving_headers(plane, "a")

    def hashes() -> set[str]:
        response = plane.client.post(
            "/api/v1/internal/deployments/a/keys", json={"used": {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        return {k["sha256"] for k in response.json()["keys"]}

    def sha(key: dict[str, Any]) -> str:
        return hashlib.sha256(key["key"].encode()).hexdigest()

    assert hashes() == {sha(for_a), sha(for_project)}
    assert sha(for_b) not in hashes()
    assert sha(no_predict) not in hashes()
    plane.client.delete(f"/api/v1/api-keys/{for_a['id']}", headers=plane.admin)
    assert hashes() == {sha(for_project)}

    # Usage reports become last-used times.
    plane.client.post(
        "/api/v1/internal/deployments/a/keys",
        json={"used": {for_project["prefix"]: 1_800_000_000.0}},
        headers=headers,
    )
    listed = {k["prefix"]: k for k in plane.get("/api/v1/api-keys").json()}
    assert listed[for_project["prefix"]]["last_used_at"].startswith("2027-01-15")

    # Another deployment's token, a user token or nothing: refused.
    other = _serving_headers(plane, "b")
    assert (
        plane.client.post("/api/v1/internal/deployments/a/keys", json={}, headers=other).status_code
        == 404
    )
    assert (
        plane.client.post(
            "/api/v1/internal/deployments/a/keys", json={}, headers=plane.admin
        ).status_code
        == 401
    )
    assert plane.client.post("/api/v1/internal/deployments/a/keys", json={}).status_code == 401


def test_expired_or_past_keys_are_refused(plane: Plane) -> None:
    plane.deploy()
    past = plane.post(
        "/api/v1/api-keys",
        {"name": "old", "deployments": ["churn-live"], "expires_at": "2020-01-01T00:00:00Z"},
    )
    assert past.status_code == 422
    unscoped = plane.post("/api/v1/api-keys", {"name": "nothing"})
    assert unscoped.status_code == 422
    bad_scope = plane.post(
        "/api/v1/api-keys", {"name": "x", "deployments": ["churn-live"], "scopes": ["admin"]}
    )
    assert bad_scope.status_code == 422


def test_predict_through_the_control_plane_needs_a_key_and_a_known_deployment(
    plane: Plane,
) -> None:
    plane.deploy()
    body = {"inputs": [{"a": 1.0}]}
    assert plane.client.post("/api/v1/deployments/churn-live/predict", json=body).status_code == 401
    key = {"Authorization": "Bearer kn_00000000_x"}
    unknown = plane.client.post("/api/v1/deployments/nope/predict", json=body, headers=key)
    assert unknown.status_code == 404
    # Known but not serving anywhere yet (no endpoint recorded): not found as a serving target.
    idle = plane.client.post("/api/v1/deployments/churn-live/predict", json=body, headers=key)
    assert idle.status_code == 404
    text = plane.client.post(
        "/api/v1/deployments/churn-live/predict",
        content=b"a=1",
        headers={**key, "content-type": "application/x-www-form-urlencoded"},
    )
    assert text.status_code == 415


def test_predict_answers_503_when_the_model_servers_do_not(plane: Plane) -> None:
    plane.deploy()
    with unit_of_work(make_session_factory(plane.engine)) as session:
        session.execute(
            sa.update(Deployment)
            .where(Deployment.name == "churn-live")
            .values(endpoint_url="http://127.0.0.1:9")
        )
    response = plane.client.post(
        "/api/v1/deployments/churn-live/predict",
        json={"inputs": [{"a": 1.0}]},
        headers={"Authorization": "Bearer kn_00000000_x"},
    )
    assert response.status_code == 503
    assert response.headers["retry-after"]


def test_the_serving_environment_is_stable_between_reconciles(plane: Plane) -> None:
    """A changing env would make every runtime replace its replicas on every pass."""
    plane.deploy()
    assert _serving_headers(plane, "churn-live") == _serving_headers(plane, "churn-live")


def test_a_key_rate_limit_is_validated_stored_and_sent_to_model_servers(plane: Plane) -> None:
    plane.deploy("a")
    created = plane.post(
        "/api/v1/api-keys", {"name": "capped", "deployments": ["a"], "rate_limit": "120/minute"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["rate_limit"] == "120/minute"
    plane.post("/api/v1/api-keys", {"name": "free", "deployments": ["a"]})
    response = plane.client.post(
        "/api/v1/internal/deployments/a/keys", json={}, headers=_serving_headers(plane, "a")
    )
    rates = {k["prefix"]: k["rate"] for k in response.json()["keys"]}
    assert rates[created.json()["prefix"]] == {"amount": 120, "seconds": 60}
    assert sorted(rates.values(), key=str) == [None, {"amount": 120, "seconds": 60}]
    audit = plane.get("/api/v1/audit?action=api_key.create").json()
    assert any(e["after"].get("rate_limit") == "120/minute" for e in audit)


@pytest.mark.parametrize("rate", ["fast", "0/second", "10/fortnight", "-3/minute", ""])
def test_a_nonsense_key_rate_limit_is_422_and_creates_nothing(plane: Plane, rate: str) -> None:
    plane.deploy("a")
    with plane.engine.connect() as conn:
        keys_before = conn.scalar(sa.text("SELECT count(*) FROM api_keys"))
        audit_before = conn.scalar(sa.text("SELECT count(*) FROM audit_events"))
    response = plane.post(
        "/api/v1/api-keys", {"name": "capped", "deployments": ["a"], "rate_limit": rate}
    )
    assert response.status_code == 422, response.text
    assert "rate_limit" in response.json()["detail"]
    with plane.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM api_keys")) == keys_before
        assert conn.scalar(sa.text("SELECT count(*) FROM audit_events")) == audit_before


def test_with_rate_limits_switched_off_model_servers_get_no_budgets(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = plane.app.state.konan
    off = state.settings.server.model_copy(update={"rate_limit_enabled": False})
    monkeypatch.setattr(state, "settings", state.settings.model_copy(update={"server": off}))
    plane.deploy("a")
    body = {"name": "capped", "deployments": ["a"], "rate_limit": "1/hour"}
    assert plane.post("/api/v1/api-keys", body).status_code == 201
    response = plane.client.post(
        "/api/v1/internal/deployments/a/keys", json={}, headers=_serving_headers(plane, "a")
    )
    assert [k["rate"] for k in response.json()["keys"]] == [None]
