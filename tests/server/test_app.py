"""The control plane's composition root: health, readiness, errors, metrics, schema check."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from konan.core.errors import SchemaOutOfDate
from konan.core.settings import Settings
from konan.db import heartbeats
from konan.db.engine import make_session_factory, unit_of_work
from konan.server.app import create_app


def test_healthz_answers_without_credentials(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_is_503_until_a_worker_and_a_monitor_report(
    client: TestClient, engine: Engine
) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["worker"]["ok"] is False
    assert "worker" in body["checks"]["worker"]["detail"]

    with unit_of_work(make_session_factory(engine)) as session:
        heartbeats.beat(session, "worker", "test-host:1")
        heartbeats.beat(session, "monitor", "test-host:2")
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "ready"


def test_readyz_reports_an_unreachable_broker(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    broken = settings.model_copy(
        update={"queue": settings.queue.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})}
    )
    app = create_app(broken)
    with TestClient(app) as client:
        body = client.get("/readyz").json()
    app.state.konan.engine.dispose()
    assert body["checks"]["broker"]["ok"] is False
    assert "unreachable" in body["checks"]["broker"]["detail"]


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found", "code": "not_found"}


def test_validation_errors_name_the_field(client: TestClient) -> None:
    response = client.post("/api/v1/auth/login", json={"username": "admin"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_input"
    assert "password" in body["detail"]


def test_malformed_json_is_a_json_4xx_without_a_stack_trace(client: TestClient) -> None:
    response = client.post(
        "/api/v1/auth/login",
        content=b'{"username": "admin", "password": "x"} trailing',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    assert "Traceback" not in response.text


def test_metrics_are_exposed_in_prometheus_format_to_admins(
    client: TestClient, admin_token: str
) -> None:
    client.get("/healthz")
    client.get("/api/v1/nothing-here")
    client.cookies.clear()
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 200
    assert "http_requests_total" in response.text


def test_metrics_accept_the_scrape_token(settings: Settings, engine: Engine) -> None:
    scraping = settings.model_copy(
        update={
            "server": settings.server.model_copy(update={"metrics_token": SecretStr("scrape-me")})
        }
    )
    app = create_app(scraping)
    with TestClient(app) as client:
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    app.state.konan.engine.dispose()
    assert ok.status_code == 200
    assert wrong.status_code == 401


def test_security_headers_are_on_every_answer(client: TestClient) -> None:
    response = client.get("/healthz")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert (
        "unsafe-inline"
        not in response.headers["content-security-policy"].split("script-src")[1].split(";")[0]
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_openapi_document_lists_the_auth_routes(client: TestClient, admin_token: str) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    paths = client.get("/openapi.json", headers=headers).json()["paths"]
    assert "/api/v1/auth/login" in paths
    assert "/api/v1/auth/me" in paths


def test_server_refuses_a_database_behind_the_migrations(db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database={"url": db_url})
    with pytest.raises(SchemaOutOfDate, match="konan admin db upgrade"):
        create_app(settings)
