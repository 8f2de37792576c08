"""Fixtures for deployment and approval tests: an app with an admin and three registered
versions of model `churn` (rows only: the runtime is exercised end to end in tests/e2e)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from konan.core.settings import Settings
from konan.db.engine import make_session_factory, unit_of_work
from konan.governance import service as governance
from konan.governance.orm import Project, User
from konan.registry.orm import Model, ModelVersion
from konan.server.app import create_app
from tests.conftest import ADMIN_PASSWORD


@dataclass
class Plane:
    client: TestClient
    admin: dict[str, str]
    engine: Engine
    app: FastAPI

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(path, json=body, headers=headers or self.admin)

    def put(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.client.put(path, json=body, headers=headers or self.admin)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(path, headers=headers or self.admin)

    def deploy(self, name: str = "churn-live", **extra: Any) -> Any:
        response = self.post(
            "/api/v1/deployments", {"name": name, "model": "churn", "version": 1, **extra}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def user(self, username: str, role: str | None) -> dict[str, str]:
        created = self.post(
            "/api/v1/users", {"username": username, "password": f"{username}-password-1"}
        )
        assert created.status_code == 201, created.text
        if role:
            member = self.put(
                "/api/v1/projects/default/members", {"username": username, "role": role}
            )
            assert member.status_code == 200
        token = self.client.post(
            "/api/v1/auth/login",
            json={"username": username, "password": f"{username}-password-1"},
        ).json()["access_token"]
        self.client.cookies.clear()
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def plane(settings: Settings, engine: Engine) -> Iterator[Plane]:
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        governance.bootstrap(session, ADMIN_PASSWORD)
        project = session.scalar(sa.select(Project).where(Project.name == "default"))
        admin = session.scalar(sa.select(User).where(User.username == "admin"))
        assert project is not None
        assert admin is not None
        model = Model(project_id=project.id, name="churn", task="classification")
        session.add(model)
        session.flush()
        for number in (1, 2, 3):
            session.add(
                ModelVersion(
                    model_id=model.id,
                    version=number,
                    flavor="sklearn",
                    artifact_sha256=hashlib.sha256(f"v{number}".encode()).hexdigest(),
                    artifact_size=1,
                    metrics={"auc": [0.81, 0.82, 0.83][number - 1]},
                    created_by_id=admin.id,
                )
            )
    app = create_app(settings)
    with TestClient(app) as client:
        token = client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        client.cookies.clear()
        yield Plane(client, {"Authorization": f"Bearer {token}"}, engine, app)
    app.state.konan.engine.dispose()
