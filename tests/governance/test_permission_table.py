"""Every route, called as every role, answers what the permission table says.

The table is konan/governance/route_permissions.py. A route missing from it fails here; so does
a route whose service lets a role through that the table forbids, or the reverse.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from konan.core.types import ProjectRole
from konan.db.engine import make_session_factory, unit_of_work
from konan.governance.permissions import ROLE_ACTIONS, Action
from konan.governance.route_permissions import ROUTE_RULES, Rule
from konan.registry.orm import Dataset, DatasetVersion, Model
from tests.deployments.conftest import Plane

ROLES = ["viewer", "maintainer", "approver", "owner", "outsider", "admin"]
HIDDEN_ROUTES = {
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/api/v1/internal/deployments/{name}/keys"),
}
# Checked by their own tests: they take no user credential at all.
NOT_USER_ROUTES = {"public", "credential_exchange", "api_key", "serving_token"}


def test_every_route_has_a_row_in_the_table(plane: Plane) -> None:
    app: FastAPI = plane.app
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    routes = documented | HIDDEN_ROUTES
    assert routes - set(ROUTE_RULES) == set(), "routes without a permission rule"
    assert set(ROUTE_RULES) - routes == set(), "rules for routes that no longer exist"


def expected(rule: Rule, role: str) -> str:
    """'allow', 'forbid' (403) or 'hidden' (404, as if the object did not exist)."""
    if role == "admin":
        return "allow"
    if rule == "authenticated":
        return "allow"
    if rule in ("admin", "scrape"):
        return "forbid"
    if rule == "owner_or_admin":
        return "allow" if role == "owner" else "forbid"
    if rule == "key_owner":
        return "hidden"
    assert isinstance(rule, Action), rule
    if role == "outsider":
        return "hidden"
    return "allow" if rule in ROLE_ACTIONS[ProjectRole(role)] else "forbid"


@dataclass
class Call:
    method: str
    route: str
    path: str
    kwargs: dict[str, Any]


def _seed(plane: Plane) -> dict[str, Any]:
    """Objects every route can act on, made by the admin and a separate requester."""
    state = plane.app.state.konan
    state.artifacts.put(io.BytesIO(b"v1"))  # version 1's bytes, for the download route
    with unit_of_work(make_session_factory(plane.engine)) as session:
        model = session.scalar(sa.select(Model).where(Model.name == "churn"))
        assert model is not None
        dataset = Dataset(project_id=model.project_id, name="d")
        session.add(dataset)
        session.flush()
        session.add(
            DatasetVersion(
                dataset_id=dataset.id,
                version=1,
                sha256="0" * 64,
                format="csv",
                size=1,
                row_count=1,
            )
        )
    plane.deploy("churn-live")
    plane.deploy("gated", production_gated=True)
    requester = plane.user("req", "maintainer")
    plane.user("member-target", None)
    approvals = [
        plane.post("/api/v1/deployments/gated/promote", {"version": n}, requester).json()[
            "approval_id"
        ]
        for n in (2, 3)
    ]
    key = plane.post("/api/v1/api-keys", {"name": "admin-key", "deployments": ["churn-live"]})
    rule = plane.post(
        "/api/v1/deployments/churn-live/alert-rules", {"kind": "error_rate", "threshold": 0.1}
    )
    assert rule.status_code == 201, rule.text
    return {
        "approve": approvals[0],
        "reject": approvals[1],
        "key_id": key.json()["id"],
        "rule_id": rule.json()["id"],
    }


def _calls(ids: dict[str, Any], role: str) -> list[Call]:
    junk = {"artifact": ("m.bin", b"\x00junk", "application/octet-stream")}
    c = Call
    return [
        # reads
        c("GET", "/openapi.json", "/openapi.json", {}),
        c("GET", "/docs", "/docs", {}),
        c("GET", "/metrics", "/metrics", {}),
        c("GET", "/api/v1/auth/me", "/api/v1/auth/me", {}),
        c("GET", "/api/v1/projects", "/api/v1/projects", {}),
        c("GET", "/api/v1/api-keys", "/api/v1/api-keys", {}),
        c("GET", "/api/v1/approvals", "/api/v1/approvals", {}),
        c("GET", "/api/v1/audit", "/api/v1/audit", {}),
        c("GET", "/api/v1/models", "/api/v1/models", {}),
        c("GET", "/api/v1/models/{name}", "/api/v1/models/churn", {}),
        c("GET", "/api/v1/models/{name}/versions", "/api/v1/models/churn/versions", {}),
        c("GET", "/api/v1/models/{name}/versions/{version}", "/api/v1/models/churn/versions/1", {}),
        c(
            "GET",
            "/api/v1/models/{name}/versions/{version}/artifact",
            "/api/v1/models/churn/versions/1/artifact",
            {},
        ),
        c("GET", "/api/v1/models/{name}/aliases", "/api/v1/models/churn/aliases", {}),
        c(
            "GET",
            "/api/v1/models/{name}/aliases/history",
            "/api/v1/models/churn/aliases/history",
            {},
        ),
        c("GET", "/api/v1/datasets", "/api/v1/datasets", {}),
        c("GET", "/api/v1/datasets/{name}/versions", "/api/v1/datasets/d/versions", {}),
        c(
            "GET",
            "/api/v1/datasets/{name}/versions/{version}",
            "/api/v1/datasets/d/versions/1",
            {},
        ),
        c("GET", "/api/v1/deployments", "/api/v1/deployments", {}),
        c("GET", "/api/v1/deployments/{name}", "/api/v1/deployments/churn-live", {}),
        c(
            "GET",
            "/api/v1/deployments/{name}/revisions",
            "/api/v1/deployments/churn-live/revisions",
            {},
        ),
        c("GET", "/api/v1/deployments/{name}/logs", "/api/v1/deployments/churn-live/logs", {}),
        *[
            c(
                "GET",
                f"/api/v1/deployments/{{name}}/monitoring/{view}",
                f"/api/v1/deployments/churn-live/monitoring/{view}",
                {},
            )
            for view in ("health", "drift", "performance", "export", "settings")
        ],
        c(
            "GET",
            "/api/v1/deployments/{name}/alert-rules",
            "/api/v1/deployments/churn-live/alert-rules",
            {},
        ),
        c("GET", "/api/v1/deployments/{name}/alerts", "/api/v1/deployments/churn-live/alerts", {}),
        c(
            "POST",
            "/api/v1/deployments/{name}/feedback",
            "/api/v1/deployments/churn-live/feedback",
            {"json": {"request_id": f"fb-{role}", "labels": [1]}},
        ),
        # changes
        c("POST", "/api/v1/projects", "/api/v1/projects", {"json": {"name": f"p-{role}"}}),
        c(
            "PUT",
            "/api/v1/projects/{project}/members",
            "/api/v1/projects/default/members",
            {"json": {"username": "member-target", "role": "viewer"}},
        ),
        c(
            "POST",
            "/api/v1/users",
            "/api/v1/users",
            {"json": {"username": f"new-{role}", "password": "a-long-password"}},
        ),
        c(
            "POST",
            "/api/v1/api-keys",
            "/api/v1/api-keys",
            {"json": {"name": "k", "deployments": ["churn-live"]}},
        ),
        c(
            "POST",
            "/api/v1/models",
            "/api/v1/models",
            {"json": {"name": f"m-{role}", "task": "regression"}},
        ),
        c(
            "POST",
            "/api/v1/models/{name}/versions",
            "/api/v1/models/churn/versions",
            {"files": junk, "data": {"metadata": "{}"}},
        ),
        c(
            "PATCH",
            "/api/v1/models/{name}/versions/{version}",
            "/api/v1/models/churn/versions/1",
            {"json": {"tags": {"reviewed": "yes"}}},
        ),
        c(
            "PUT",
            "/api/v1/models/{name}/aliases/{alias}",
            "/api/v1/models/churn/aliases/staging",
            {"json": {"version": 1}},
        ),
        c(
            "POST",
            "/api/v1/datasets",
            "/api/v1/datasets",
            {
                "files": {"file": ("d.csv", b"\x00junk", "text/csv")},
                "data": {"metadata": json.dumps({"name": "d"})},
            },
        ),
        c(
            "POST",
            "/api/v1/deployments",
            "/api/v1/deployments",
            {"json": {"name": f"d-{role}", "model": "churn", "version": 1}},
        ),
        c(
            "PUT",
            "/api/v1/deployments/{name}/traffic",
            "/api/v1/deployments/churn-live/traffic",
            {"json": {"canary": 2, "canary_weight": 0.1}},
        ),
        c(
            "POST",
            "/api/v1/deployments/{name}/promote",
            "/api/v1/deployments/churn-live/promote",
            {"json": {}},
        ),
        c(
            "POST",
            "/api/v1/deployments/{name}/rollback",
            "/api/v1/deployments/churn-live/rollback",
            {"json": {}},
        ),
        c(
            "POST",
            "/api/v1/deployments/{name}/scale",
            "/api/v1/deployments/churn-live/scale",
            {"json": {"replicas": {"min": 1, "max": 2}}},
        ),
        c(
            "POST",
            "/api/v1/approvals/{approval_id}/approve",
            f"/api/v1/approvals/{ids['approve']}/approve",
            {"json": {}},
        ),
        c(
            "POST",
            "/api/v1/approvals/{approval_id}/reject",
            f"/api/v1/approvals/{ids['reject']}/reject",
            {"json": {}},
        ),
        c(
            "POST",
            "/api/v1/deployments/{name}/alert-rules",
            "/api/v1/deployments/churn-live/alert-rules",
            {"json": {"kind": "latency", "threshold": 500}},
        ),
        c(
            "PUT",
            "/api/v1/deployments/{name}/monitoring/settings",
            "/api/v1/deployments/churn-live/monitoring/settings",
            {"json": {"drift": {"method": "fixed", "threshold": 0.2, "drift_share": 0.3}}},
        ),
        c(
            "DELETE",
            "/api/v1/deployments/{name}/alert-rules/{rule_id}",
            f"/api/v1/deployments/churn-live/alert-rules/{ids['rule_id']}",
            {},
        ),
        c("DELETE", "/api/v1/api-keys/{key_id}", f"/api/v1/api-keys/{ids['key_id']}", {}),
        c("DELETE", "/api/v1/deployments/{name}", "/api/v1/deployments/churn-live", {}),
        c("POST", "/api/v1/auth/logout", "/api/v1/auth/logout", {}),
    ]


@pytest.fixture(params=ROLES)
def role(request: pytest.FixtureRequest) -> Iterator[str]:
    return request.param


def test_each_role_gets_exactly_what_the_table_says(plane: Plane, role: str) -> None:
    ids = _seed(plane)
    if role == "admin":
        headers = plane.admin
    else:
        headers = plane.user(f"as-{role}", None if role == "outsider" else role)
    calls = _calls(ids, role)
    covered = {(c.method, c.route) for c in calls}
    user_routes = {k for k, rule in ROUTE_RULES.items() if rule not in NOT_USER_ROUTES}
    assert user_routes - covered == set(), "routes this test does not call yet"

    wrong = []
    for call in calls:
        rule = ROUTE_RULES[(call.method, call.route)]
        want = expected(rule, role)
        response = plane.client.request(call.method, call.path, headers=headers, **call.kwargs)
        got = response.status_code
        ok = {
            "allow": got not in (401, 403, 404),
            "forbid": got == 403,
            "hidden": got == 404,
        }[want]
        if not ok:
            wrong.append(f"{call.method} {call.path}: want {want}, got {got} {response.text[:120]}")
    assert wrong == []


def test_a_role_change_applies_to_the_next_request(plane: Plane) -> None:
    """A18: the role is read on every request, so a downgrade applies to the next one."""
    headers = plane.user("mia", "maintainer")
    body = {"name": "m-x", "task": "regression"}
    assert plane.post("/api/v1/models", body, headers).status_code == 201
    plane.put("/api/v1/projects/default/members", {"username": "mia", "role": "viewer"})
    assert plane.post("/api/v1/models", {**body, "name": "m-y"}, headers).status_code == 403
