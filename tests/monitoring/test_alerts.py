"""Alert rules: validation and webhook URL refusals over HTTP; firing → resolved transitions with
a cooldown, evaluated by the service on SQLite and PostgreSQL; signed webhooks checked by a real
HTTP server on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from konan.backends.queue.context import TaskContext, set_task_context
from konan.core.settings import Settings
from konan.db.engine import make_session_factory, unit_of_work
from konan.monitoring import alerts, tasks, webhooks
from konan.monitoring.alerts import AlertRuleCreate
from konan.monitoring.ingest import ingest
from konan.monitoring.orm import Alert, AlertRule, GroundTruth
from konan.monitoring.rollups import BIN_CACHE
from konan.worker.app import beat_schedule
from tests.factories import Seeded, seed_deployment

from .test_rollups import T0, attach_reference, records_from, reference_frame

SECRET = "test-jwt-secret"


class Receiver:
    """A stdlib HTTP server on 127.0.0.1 that keeps every request it gets."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append((dict(self.headers.items()), self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def do_GET(self) -> None:
                received.append((dict(self.headers.items()), b""))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


# ---- over HTTP: validation and refusals --------------------------------------------------------


@pytest.fixture
def live(engine: Engine) -> Seeded:
    with unit_of_work(make_session_factory(engine)) as session:
        seeded = seed_deployment(session, "churn-live")
        session.expunge_all()
    return seeded


@pytest.fixture
def api(app: FastAPI, live: Seeded) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(app) as client:
        response = client.post(
            "/api/v1/auth/login", json={"username": "u-churn-live", "password": "pw-churn-live"}
        )
        assert response.status_code == 200, response.text
        yield client, {"Authorization": f"Bearer {response.json()['access_token']}"}


RULES = "/api/v1/deployments/churn-live/alert-rules"


def test_rules_are_created_listed_and_deleted(api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    body = {"kind": "drift", "threshold": 0.3, "feature": "tenure", "cooldown_seconds": 120}
    created = client.post(RULES, json=body, headers=headers)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["kind"] == "drift"
    assert rule["feature"] == "tenure"
    assert rule["window_seconds"] == alerts.DEFAULT_WINDOWS["drift"]
    listed = client.get(RULES, headers=headers).json()
    assert [r["id"] for r in listed] == [rule["id"]]
    assert client.delete(f"{RULES}/{rule['id']}", headers=headers).status_code == 204
    assert client.get(RULES, headers=headers).json() == []
    assert client.delete(f"{RULES}/{rule['id']}", headers=headers).status_code == 404


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({"kind": "performance", "threshold": 0.8}, "needs metric"),
        ({"kind": "latency", "threshold": 200, "feature": "tenure"}, "drift rules only"),
        ({"kind": "error_rate", "threshold": 2}, "share between 0 and 1"),
        ({"kind": "latency", "threshold": 200, "window_seconds": 90}, "whole number of minutes"),
        ({"kind": "latency", "threshold": -1}, "greater than or equal"),
        ({"kind": "volume", "threshold": 1}, "kind"),
        ({"kind": "latency", "threshold": 200, "cooldown_seconds": -5}, "cooldown_seconds"),
    ],
)
def test_a_bad_rule_is_refused_with_the_reason(
    api: tuple[TestClient, dict[str, str]], body: dict[str, Any], phrase: str
) -> None:
    client, headers = api
    response = client.post(RULES, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert phrase in response.text
    assert client.get(RULES, headers=headers).json() == []


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://127.0.0.1:{port}/_x", "scheme 'gopher'"),
        ("ftp://example.com/x", "scheme 'ftp'"),
        ("http://127.0.0.1:{port}/hook", "loopback"),
        ("http://localhost:{port}/hook", "loopback"),
        ("http://[::1]:{port}/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://10.1.2.3/hook", "private"),
        ("http://172.16.0.9/hook", "private"),
        ("http://192.168.1.20/hook", "private"),
        ("http://[fc00::7]/hook", "private"),
        ("http://0.0.0.0:{port}/hook", "unspecified"),
        ("http://[::ffff:127.0.0.1]:{port}/hook", "loopback"),
        ("http://user:pw@example.com/hook", "credentials"),
    ],
)
def test_webhooks_to_internal_addresses_are_refused_without_a_call(
    api: tuple[TestClient, dict[str, str]], receiver: Receiver, url: str, phrase: str
) -> None:
    """ADVERSARIAL D12 (rules of B22): 422 naming the reason, no rule, nothing sent."""
    client, headers = api
    body = {"kind": "latency", "threshold": 100, "webhook_url": url.format(port=receiver.port)}
    response = client.post(RULES, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert phrase in response.json()["detail"]
    assert client.get(RULES, headers=headers).json() == []
    assert receiver.received == []


def test_deliver_refuses_an_internal_address_at_send_time_too(receiver: Receiver) -> None:
    before = webhooks.WEBHOOK_FAILURES._value.get()
    sent = webhooks.deliver(f"http://127.0.0.1:{receiver.port}/", {"a": 1}, b"k")
    assert sent is False
    assert receiver.received == []
    assert webhooks.WEBHOOK_FAILURES._value.get() == before + 1


# ---- the service: transitions on both databases ----------------------------------------------


def _records(
    deployment_id: int, version_id: int, prefix: str, at: float, n: int, status: int
) -> list[dict[str, Any]]:
    return [
        {
            "request_id": f"{prefix}-{i}",
            "deployment_id": deployment_id,
            "model_version_id": version_id,
            "role": "champion",
            "at": at + i * 0.01,
            "inputs": [{"tenure": 1.0}],
            "outputs": {"predictions": [1]},
            "latency_ms": 4.0,
            "status_code": status,
            "error": None,
        }
        for i in range(n)
    ]


def _at(offset: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset, UTC)


def _alerts(factory: sessionmaker[Session]) -> list[tuple[int | None, str]]:
    with factory() as session:
        rows = session.execute(sa.select(Alert.rule_id, Alert.state).order_by(Alert.id)).all()
        return [(r, s) for r, s in rows]


def test_error_rate_fires_resolves_and_respects_the_cooldown(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        seeded = seed_deployment(session)
        dep, ver = seeded.deployment.id, seeded.version.id
        rule = alerts.create_rule(
            session,
            seeded.user,
            seeded.deployment,
            AlertRuleCreate(
                kind="error_rate", threshold=0.5, window_seconds=300, cooldown_seconds=600
            ),
        )
        rule_id = rule.id
        assert not ingest(session, _records(dep, ver, "a", T0, 10, 500)).rejected

    def evaluate(offset: float) -> list[alerts.Transition]:
        return alerts.evaluate_and_notify(factory, SECRET, now=_at(offset))

    first = evaluate(60)
    assert [(t.rule_id, t.state) for t in first] == [(rule_id, "firing")]
    assert first[0].payload["alert"]["value"] == 1.0
    assert evaluate(61) == []  # still true: no second firing alert
    assert _alerts(factory) == [(rule_id, "firing")]
    assert alerts.FIRING.labels(kind="error_rate")._value.get() == 1

    with unit_of_work(factory) as session:
        ingest(session, _records(dep, ver, "b", T0 + 20, 90, 200))
    assert [t.state for t in evaluate(62)] == ["resolved"]  # 10 of 100 failed
    assert _alerts(factory) == [(rule_id, "resolved")]
    assert alerts.FIRING.labels(kind="error_rate")._value.get() == 0

    with unit_of_work(factory) as session:
        ingest(session, _records(dep, ver, "c", T0 + 100, 200, 500))
    assert evaluate(120) == []  # true again (210 of 300), but inside the 600 s cooldown
    assert _alerts(factory) == [(rule_id, "resolved")]

    with unit_of_work(factory) as session:
        ingest(session, _records(dep, ver, "d", T0 + 650, 5, 500))
    assert [t.state for t in evaluate(700)] == ["firing"]  # window: only the new failures
    assert _alerts(factory) == [(rule_id, "resolved"), (rule_id, "firing")]
    assert evaluate(3000) == []  # no traffic in the window: unknown, nothing changes

    with factory() as session:
        listed = alerts.list_alerts(session, session.get(type(seeded.deployment), dep), "firing")
        assert [a.state for a in listed] == ["firing"]


def test_latency_and_drift_rules_fire_on_their_conditions(engine: Engine) -> None:
    BIN_CACHE.clear()
    factory = make_session_factory(engine)
    rng = np.random.default_rng(3)
    with unit_of_work(factory) as session:
        seeded = seed_deployment(session)
        attach_reference(session, seeded, reference_frame(np.random.default_rng(1), 800))
        shifted = reference_frame(rng, 600)
        shifted["tenure"] = [v + 6.0 for v in shifted["tenure"]]
        shifted["spend"] = [v * 4.0 for v in shifted["spend"]]
        records = records_from(shifted, seeded.deployment.id, seeded.version.id, rng=rng)
        assert not ingest(session, records).rejected
        make = alerts.create_rule
        user, deployment = seeded.user, seeded.deployment
        slow = make(session, user, deployment, AlertRuleCreate(kind="latency", threshold=1))
        fast = make(session, user, deployment, AlertRuleCreate(kind="latency", threshold=60000))
        share = make(session, user, deployment, AlertRuleCreate(kind="drift", threshold=0.5))
        tenure = make(
            session, user, deployment, AlertRuleCreate(kind="drift", threshold=0, feature="tenure")
        )
        plan = make(
            session, user, deployment, AlertRuleCreate(kind="drift", threshold=0, feature="plan")
        )
        ids = {"slow": slow.id, "fast": fast.id, "share": share.id, "tenure": tenure.id}
        plan_id = plan.id
    end = 3 * 3600
    fired = {t.rule_id for t in alerts.evaluate_and_notify(factory, SECRET, now=_at(end))}
    assert {ids["slow"], ids["share"], ids["tenure"]} <= fired
    assert ids["fast"] not in fired
    assert plan_id not in fired  # the plan column was not shifted


def test_webhook_carries_a_verifiable_hmac(engine: Engine, receiver: Receiver) -> None:
    factory = make_session_factory(engine)
    url = f"http://127.0.0.1:{receiver.port}/hook"
    with unit_of_work(factory) as session:
        seeded = seed_deployment(session)
        body = AlertRuleCreate(
            kind="error_rate", threshold=0.5, window_seconds=300, webhook_url=url
        )
        rule_id = alerts.create_rule(
            session, seeded.user, seeded.deployment, body, allow_private_webhooks=True
        ).id
        ingest(session, _records(seeded.deployment.id, seeded.version.id, "w", T0, 4, 503))
    alerts.evaluate_and_notify(factory, SECRET, now=_at(60), allow_private_webhooks=True)
    assert len(receiver.received) == 1
    headers, raw = receiver.received[0]
    key = hmac.new(SECRET.encode(), f"konan-alert-webhook:{rule_id}".encode(), hashlib.sha256)
    expected = hmac.new(key.digest(), raw, hashlib.sha256).hexdigest()
    assert headers["X-Konan-Signature"] == f"sha256={expected}"
    assert abs(int(headers["X-Konan-Timestamp"]) - datetime.now(UTC).timestamp()) < 60
    payload = json.loads(raw)
    assert payload["alert"]["state"] == "firing"
    assert payload["rule"]["id"] == rule_id
    assert payload["deployment"]["name"] == "churn-live"

    # a receiver that is gone: counted, never raised, and the alert still resolves
    with unit_of_work(factory) as session:
        row = session.get(AlertRule, rule_id)
        assert row is not None
        row.webhook_url = "http://127.0.0.1:9/gone"
        ingest(session, _records(seeded.deployment.id, seeded.version.id, "ok", T0 + 5, 50, 200))
    before = webhooks.WEBHOOK_FAILURES._value.get()
    changes = alerts.evaluate_and_notify(
        factory, SECRET, now=_at(61) + timedelta(seconds=1), allow_private_webhooks=True
    )
    assert [t.state for t in changes] == ["resolved"]
    assert webhooks.WEBHOOK_FAILURES._value.get() == before + 1


# ---- the worker task and its schedule ---------------------------------------------------------


def test_the_worker_task_evaluates_and_beat_runs_it_every_minute(
    engine: Engine, tmp_path: Path
) -> None:
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        seeded = seed_deployment(session)
        alerts.create_rule(
            session,
            seeded.user,
            seeded.deployment,
            AlertRuleCreate(kind="latency", threshold=1, window_seconds=600),
        )
        now = datetime.now(UTC).timestamp()
        ingest(session, _records(seeded.deployment.id, seeded.version.id, "t", now - 30, 3, 200))
    settings = Settings(data_dir=tmp_path / "data")
    set_task_context(TaskContext(settings, factory))
    try:
        assert tasks.evaluate_alerts() == 1  # p99 of 4 ms >= 1 ms: one alert opened
        assert tasks.evaluate_alerts() == 0
    finally:
        set_task_context(None)
    assert _alerts(factory)[0][1] == "firing"
    entry = beat_schedule(settings)["evaluate-alerts"]
    assert entry == {"task": "konan.monitoring.evaluate_alerts", "schedule": 60.0}
    assert "purge-prediction-logs" in beat_schedule(settings)


def test_a_performance_rule_fires_on_realised_accuracy(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        seeded = seed_deployment(session)
        dep = seeded.deployment.id
        make = alerts.create_rule
        low = make(
            session,
            seeded.user,
            seeded.deployment,
            AlertRuleCreate(kind="performance", metric="accuracy", threshold=0.9),
        )
        lenient = make(
            session,
            seeded.user,
            seeded.deployment,
            AlertRuleCreate(kind="performance", metric="accuracy", threshold=0.2),
        )
        low_id, lenient_id = low.id, lenient.id
        ingest(session, _records(dep, seeded.version.id, "p", T0, 10, 200))  # predicts 1
        for i in range(10):  # 3 of 10 right: accuracy 0.3
            session.add(
                GroundTruth(
                    request_id=f"p-{i}",
                    deployment_id=dep,
                    labels=[1 if i < 3 else 0],
                    received_at=_at(100),
                )
            )
    changes = alerts.evaluate_and_notify(factory, SECRET, now=_at(3600))
    assert [(c.rule_id, c.state) for c in changes] == [(low_id, "firing")]
    assert changes[0].payload["alert"]["value"] == pytest.approx(0.3)
    assert lenient_id not in {c.rule_id for c in changes}
