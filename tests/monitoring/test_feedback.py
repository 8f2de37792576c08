"""Ground-truth feedback over REST: single and batch, idempotent, conflicts, unmatched ids,
label counts, and who may send it (a feedback-scoped key or a user who may deploy)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from konan.core.settings import Settings
from konan.db.engine import make_session_factory, unit_of_work
from konan.deployments.orm import Deployment, DeploymentRevision
from konan.governance import service as governance
from konan.governance.orm import Project, User
from konan.monitoring.orm import GroundTruth, PredictionLog
from konan.monitoring.performance_api import router
from konan.registry.orm import Model, ModelVersion
from konan.server.app import create_app
from tests.conftest import ADMIN_PASSWORD

BINARY = {"outputs": {"kind": "label", "type": "integer", "classes": [0, 1], "probabilities": True}}
MULTI = {"outputs": {"kind": "label", "type": "string", "classes": ["a", "b", "c"]}}
REGRESSION = {"outputs": {"kind": "value", "type": "number"}}


@dataclass
class Mon:
    client: TestClient
    admin: dict[str, str]
    engine: Engine
    app: FastAPI
    versions: dict[tuple[str, int], int]  # (model, number) → model_version id
    deployments: dict[str, int]

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(path, json=body, headers=headers or self.admin)

    def get(
        self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        return self.client.get(path, params=params, headers=headers or self.admin)

    def user(self, username: str, role: str | None) -> dict[str, str]:
        created = self.post(
            "/api/v1/users", {"username": username, "password": f"{username}-password-1"}
        )
        assert created.status_code == 201, created.text
        if role:
            member = self.client.put(
                "/api/v1/projects/default/members",
                json={"username": username, "role": role},
                headers=self.admin,
            )
            assert member.status_code == 200, member.text
        token = self.client.post(
            "/api/v1/auth/login",
            json={"username": username, "password": f"{username}-password-1"},
        ).json()["access_token"]
        self.client.cookies.clear()
        return {"Authorization": f"Bearer {token}"}

    def key(self, deployment: str, scopes: list[str]) -> dict[str, str]:
        made = self.post(
            "/api/v1/api-keys",
            {"name": f"k-{'-'.join(scopes)}", "deployments": [deployment], "scopes": scopes},
        )
        assert made.status_code == 201, made.text
        return {"Authorization": f"Bearer {made.json()['key']}"}

    def log(self, rows: list[dict[str, Any]]) -> None:
        """Insert prediction logs: dicts with request_id, deployment, version, outputs, at, role."""
        factory = make_session_factory(self.engine)
        with unit_of_work(factory) as session:
            session.execute(
                sa.insert(PredictionLog),
                [
                    {
                        "request_id": r["request_id"],
                        "deployment_id": self.deployments[r["deployment"]],
                        "model_version_id": self.versions[(r.get("model", "churn"), r["version"])],
                        "role": r.get("role", "champion"),
                        "at": r["at"],
                        "bucket_start": int(r["at"].timestamp()) // 60 * 60,
                        "inputs": r.get("inputs", [{"x": 0}] * len(r["outputs"]["predictions"])),
                        "outputs": r["outputs"],
                        "status_code": 200,
                    }
                    for r in rows
                ],
            )

    def truth(self) -> dict[str, list[Any]]:
        factory = make_session_factory(self.engine)
        with unit_of_work(factory) as session:
            rows = session.execute(sa.select(GroundTruth.request_id, GroundTruth.labels))
            return {request_id: labels for request_id, labels in rows}


def _seed(engine: Engine) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
    versions: dict[tuple[str, int], int] = {}
    deployments: dict[str, int] = {}
    with unit_of_work(make_session_factory(engine)) as session:
        governance.bootstrap(session, ADMIN_PASSWORD)
        project = session.scalar(sa.select(Project).where(Project.name == "default"))
        admin = session.scalar(sa.select(User).where(User.username == "admin"))
        assert project is not None
        assert admin is not None
        for model_name, task, signature, deployment_name in (
            ("churn", "classification", BINARY, "churn-live"),
            ("iris", "classification", MULTI, "iris-live"),
            ("price", "regression", REGRESSION, "price-live"),
        ):
            model = Model(project_id=project.id, name=model_name, task=task)
            session.add(model)
            session.flush()
            for number in (1, 2):
                version = ModelVersion(
                    model_id=model.id,
                    version=number,
                    flavor="sklearn",
                    signature=signature,
                    artifact_sha256=hashlib.sha256(f"{model_name}{number}".encode()).hexdigest(),
                    artifact_size=1,
                    created_by_id=admin.id,
                )
                session.add(version)
                session.flush()
                versions[(model_name, number)] = version.id
            deployment = Deployment(
                name=deployment_name,
                project_id=project.id,
                model_id=model.id,
                runtime="local",
                created_by_id=admin.id,
            )
            session.add(deployment)
            session.flush()
            session.add(
                DeploymentRevision(
                    deployment_id=deployment.id,
                    revision=1,
                    champion_version_id=versions[(model_name, 1)],
                )
            )
            deployments[deployment_name] = deployment.id
    return versions, deployments


@contextmanager
def open_mon(settings: Settings, engine: Engine) -> Iterator[Mon]:
    """An app with the performance router (unless app.py already includes it), seeded rows."""
    versions, deployments = _seed(engine)
    app = create_app(settings)
    if not any(getattr(r, "path", "").endswith("/feedback") for r in app.routes):
        app.include_router(router, prefix="/api/v1")
    try:
        with TestClient(app) as client:
            token = client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            ).json()["access_token"]
            client.cookies.clear()
            admin = {"Authorization": f"Bearer {token}"}
            yield Mon(client, admin, engine, app, versions, deployments)
    finally:
        app.state.konan.engine.dispose()


@pytest.fixture
def mon(settings: Settings, engine: Engine) -> Iterator[Mon]:
    with open_mon(settings, engine) as opened:
        yield opened


AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
FEEDBACK = "/api/v1/deployments/churn-live/feedback"


def _logged(mon: Mon, *request_ids: str, rows: int = 2) -> None:
    mon.log(
        [
            {
                "request_id": rid,
                "deployment": "churn-live",
                "version": 1,
                "at": AT,
                "outputs": {"predictions": [1] * rows, "probabilities": [[0.3, 0.7]] * rows},
            }
            for rid in request_ids
        ]
    )


def test_single_feedback_is_stored_and_matched(mon: Mon) -> None:
    _logged(mon, "r1")
    answer = mon.post(FEEDBACK, {"request_id": "r1", "labels": [1, 0]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "duplicates": 0, "unmatched": []}
    assert mon.truth() == {"r1": [1, 0]}


def test_batch_feedback_reports_unmatched_ids_and_keeps_them(mon: Mon) -> None:
    _logged(mon, "r1", "r2")
    items = [
        {"request_id": "r1", "labels": [1, 1]},
        {"request_id": "r2", "labels": [0, 0]},
        {"request_id": "early", "labels": [1]},
    ]
    answer = mon.post(FEEDBACK, {"items": items})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 3, "duplicates": 0, "unmatched": ["early"]}
    assert mon.truth() == {"r1": [1, 1], "r2": [0, 0], "early": [1]}


def test_repeating_the_same_labels_is_idempotent(mon: Mon) -> None:
    _logged(mon, "r1")
    first = mon.post(FEEDBACK, {"request_id": "r1", "labels": [1, 0]})
    again = mon.post(
        FEEDBACK,
        {"items": [{"request_id": "r1", "labels": [1, 0]}, {"request_id": "r1", "labels": [1, 0]}]},
    )
    assert first.json()["accepted"] == 1
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 2, "unmatched": []}
    assert mon.truth() == {"r1": [1, 0]}


def test_different_labels_for_a_stored_request_conflict_and_change_nothing(mon: Mon) -> None:
    _logged(mon, "r1", "r2")
    mon.post(FEEDBACK, {"request_id": "r1", "labels": [1, 0]})
    clash = mon.post(
        FEEDBACK,
        {"items": [{"request_id": "r2", "labels": [1, 1]}, {"request_id": "r1", "labels": [0, 0]}]},
    )
    assert clash.status_code == 409
    assert "r1" in clash.json()["detail"]
    assert mon.truth() == {"r1": [1, 0]}  # r2 was not half-written


def test_label_count_must_match_the_logged_rows(mon: Mon) -> None:
    _logged(mon, "r1", rows=3)
    answer = mon.post(FEEDBACK, {"request_id": "r1", "labels": [1, 0]})
    assert answer.status_code == 422
    assert "r1" in answer.json()["detail"]
    assert "3" in answer.json()["detail"]
    assert mon.truth() == {}


def test_bad_bodies_are_refused(mon: Mon) -> None:
    assert mon.post(FEEDBACK, {"request_id": "r1"}).status_code == 422
    assert mon.post(FEEDBACK, {"items": []}).status_code == 422
    too_many = [{"request_id": f"r{i}", "labels": [1]} for i in range(10_001)]
    assert mon.post(FEEDBACK, {"items": too_many}).status_code == 422
    assert mon.truth() == {}


def test_a_feedback_scoped_key_is_accepted_and_a_predict_only_key_refused(mon: Mon) -> None:
    _logged(mon, "r1", "r2")
    feedback_key = mon.key("churn-live", ["feedback"])
    predict_key = mon.key("churn-live", ["predict"])
    refused = mon.post(FEEDBACK, {"request_id": "r1", "labels": [1, 0]}, headers=predict_key)
    assert refused.status_code == 403
    accepted = mon.post(FEEDBACK, {"request_id": "r2", "labels": [1, 0]}, headers=feedback_key)
    assert accepted.status_code == 200, accepted.text
    assert mon.truth() == {"r2": [1, 0]}
    other = mon.post(
        "/api/v1/deployments/iris-live/feedback",
        {"request_id": "x", "labels": ["a"]},
        headers=feedback_key,
    )
    assert other.status_code == 403  # scoped to churn-live only
    bogus = {"Authorization": "Bearer kn_00000000_not-a-real-key"}
    assert mon.post(FEEDBACK, {"request_id": "r3", "labels": [1]}, headers=bogus).status_code == 401


def test_users_need_the_deploy_action_and_outsiders_see_nothing(mon: Mon) -> None:
    _logged(mon, "r1", "r2")
    viewer = mon.user("vera", "viewer")
    maintainer = mon.user("max", "maintainer")
    outsider = mon.user("olga", None)
    body = {"request_id": "r1", "labels": [1, 0]}
    assert mon.post(FEEDBACK, body, headers=viewer).status_code == 403
    assert mon.post(FEEDBACK, body, headers=outsider).status_code == 404
    assert mon.post(FEEDBACK, body, headers=maintainer).status_code == 200
    missing = mon.post("/api/v1/deployments/nope/feedback", body)
    assert missing.status_code == 404
    assert mon.client.post(FEEDBACK, json=body).status_code == 401


def test_credentials_are_checked_before_the_body(mon: Mon) -> None:
    assert mon.client.post(FEEDBACK, json={"nonsense": True}).status_code == 401
