"""GET …/monitoring/health and …/monitoring/drift over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from konan.db.engine import make_session_factory, unit_of_work
from konan.monitoring.api import router
from konan.monitoring.ingest import ingest
from konan.monitoring.rollups import BIN_CACHE
from tests.factories import Seeded, seed_deployment

from .test_rollups import T0, attach_reference, records_from, reference_frame

START = datetime.fromtimestamp(T0, UTC).isoformat()
END = datetime.fromtimestamp(T0 + 3 * 3600, UTC).isoformat()


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    paths = {getattr(r, "path", "") for r in app.routes}
    if "/api/v1/deployments/{name}/monitoring/drift" not in paths:
        app.include_router(router, prefix="/api/v1")
    with TestClient(app) as client:
        yield client


def _login(client: TestClient, seeded: Seeded) -> dict[str, str]:
    name = seeded.deployment.name
    response = client.post(
        "/api/v1/auth/login", json={"username": f"u-{name}", "password": f"pw-{name}"}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def seeded(engine: Engine) -> dict[str, Seeded]:
    """churn-live (with reference data and traffic), no-ref (without), and an outsider's."""
    BIN_CACHE.clear()
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        live = seed_deployment(session, "churn-live")
        attach_reference(session, live, reference_frame(np.random.default_rng(1), 800))
        no_ref = seed_deployment(session, "no-ref")
        other = seed_deployment(session, "other")
        rng = np.random.default_rng(2)
        frame = reference_frame(rng, 600)
        assert not ingest(
            session, records_from(frame, live.deployment.id, live.version.id, rng=rng)
        ).rejected
        session.expunge_all()
    return {"live": live, "no_ref": no_ref, "other": other}


def _get(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    return client.get(f"/api/v1/deployments/{path}", params=params, headers=headers)


def test_health_answers_per_bucket_and_version(api: TestClient, seeded: dict[str, Seeded]) -> None:
    headers = _login(api, seeded["live"])
    response = _get(api, "churn-live/monitoring/health", headers, start=START, end=END)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bucket"] == "1h"
    assert len(body["buckets"]) == 3
    first = body["buckets"][0]
    assert first["model_version"] == 1
    assert set(first["latency_ms"]) == {"mean", "p50", "p95", "p99"}
    assert first["errors"] == first["errors_by_class"]["4xx"] + first["errors_by_class"]["5xx"]
    five = _get(api, "churn-live/monitoring/health", headers, start=START, end=END, bucket="5m")
    assert sum(b["requests"] for b in five.json()["buckets"]) == sum(
        b["requests"] for b in body["buckets"]
    )


def test_drift_answers_per_feature_with_thresholds(
    api: TestClient, seeded: dict[str, Seeded]
) -> None:
    headers = _login(api, seeded["live"])
    response = _get(api, "churn-live/monitoring/drift", headers, start=START, end=END)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 1
    assert {f["name"] for f in body["features"]} == {"tenure", "spend", "plan", "active"}
    assert not body["dataset_drift"]
    assert body["prediction"]["name"] == "__prediction__"
    tuned = _get(
        api,
        "churn-live/monitoring/drift",
        headers,
        start=START,
        end=END,
        threshold=0.9,
        feature_threshold=["plan=0.2"],
        drift_share=0.25,
    ).json()
    thresholds = {f["name"]: f["threshold"] for f in tuned["features"]}
    assert thresholds == {"tenure": 0.9, "spend": 0.9, "plan": 0.2, "active": 0.9}
    assert tuned["drift_share"] == 0.25


@pytest.mark.parametrize(
    ("path", "params", "status", "phrase"),
    [
        ("churn-live/monitoring/health", {"start": END, "end": START}, 422, "must be before"),
        ("churn-live/monitoring/drift", {"start": END, "end": START}, 422, "must be before"),
        ("churn-live/monitoring/health", {"bucket": "2h"}, 422, "unknown bucket"),
        (
            "churn-live/monitoring/health",
            {"start": "2020-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z", "bucket": "1m"},
            422,
            "longer than",
        ),
        (
            "churn-live/monitoring/drift",
            {"start": "2000-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            422,
            "longer than",
        ),
        ("churn-live/monitoring/drift", {"version": 7}, 404, "no model version 7"),
        ("churn-live/monitoring/drift", {"feature_threshold": "plan"}, 422, "name=value"),
        ("churn-live/monitoring/drift", {"feature_threshold": "nope=0.1"}, 422, "no feature nope"),
        ("churn-live/monitoring/health", {"start": "yesterday"}, 422, "start"),
        ("no-ref/monitoring/drift", {}, 422, "deployment 'no-ref' has no reference dataset"),
        ("missing/monitoring/health", {}, 404, "not found"),
    ],
)
def test_bad_requests_get_a_clear_answer(
    api: TestClient,
    seeded: dict[str, Seeded],
    path: str,
    params: dict[str, Any],
    status: int,
    phrase: str,
) -> None:
    owner = seeded["no_ref"] if path.startswith("no-ref") else seeded["live"]
    response = _get(api, path, _login(api, owner), **params)
    assert response.status_code == status, response.text
    assert phrase in response.text


@pytest.mark.parametrize("what", ["health", "drift"])
def test_an_outsider_does_not_see_the_deployment(
    api: TestClient, seeded: dict[str, Seeded], what: str
) -> None:
    response = _get(api, f"churn-live/monitoring/{what}", _login(api, seeded["other"]))
    assert response.status_code == 404
    assert response.json()["detail"] == "deployment 'churn-live' not found"
