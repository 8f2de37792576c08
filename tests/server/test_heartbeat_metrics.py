"""The control plane's /metrics reports how long ago each background process last reported, so an
alert can fire when a worker or the monitor is dead (a dead process exports nothing itself)."""

from __future__ import annotations

import math
from datetime import timedelta

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from konan.core.settings import Settings
from konan.core.types import utcnow
from konan.db import heartbeats
from konan.db.engine import unit_of_work
from konan.server.app import create_app
from konan.server.metrics import heartbeat_families


def _samples(text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels["process"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("konan_heartbeat")
        for sample in family.samples
    }


def _set_seen(session: Session, component: str, instance: str, seconds_ago: float) -> None:
    heartbeats.beat(session, component, instance)
    session.flush()
    session.execute(
        sa.update(heartbeats.Heartbeat)
        .where(
            heartbeats.Heartbeat.component == component,
            heartbeats.Heartbeat.instance == instance,
        )
        .values(seen_at=utcnow() - timedelta(seconds=seconds_ago))
    )


def test_ages_come_from_the_newest_instance_and_a_role_without_rows_is_infinite(
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as session:
        _set_seen(session, "worker", "host-a:1", 600)  # crashed long ago, row left behind
        _set_seen(session, "worker", "host-b:2", 40)
    now = utcnow()
    with session_factory() as session:
        families = heartbeat_families(session, now)
    values = {(s.name, s.labels["process"]): s.value for family in families for s in family.samples}
    assert 39 < values[("konan_heartbeat_age_seconds", "worker")] < 45
    assert values[("konan_heartbeat_instances", "worker")] == 0  # 40 s is outside the 30 s window
    assert math.isinf(values[("konan_heartbeat_age_seconds", "monitor")])
    assert values[("konan_heartbeat_instances", "monitor")] == 0

    with unit_of_work(session_factory) as session:
        heartbeats.beat(session, "worker", "host-c:3")
        heartbeats.beat(session, "monitor", "host-c:4")
    with session_factory() as session:
        families = heartbeat_families(session)
    values = {(s.name, s.labels["process"]): s.value for family in families for s in family.samples}
    assert values[("konan_heartbeat_age_seconds", "worker")] < 5
    assert values[("konan_heartbeat_instances", "worker")] == 1
    assert values[("konan_heartbeat_age_seconds", "monitor")] < 5


def test_the_scrape_shows_heartbeat_ages_and_a_clean_stop_reads_as_no_process(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    scraping = settings.model_copy(
        update={
            "server": settings.server.model_copy(update={"metrics_token": SecretStr("scrape-me")})
        }
    )
    app = create_app(scraping)
    auth = {"Authorization": "Bearer scrape-me"}
    try:
        with TestClient(app) as client:
            with unit_of_work(session_factory) as session:
                heartbeats.beat(session, "worker", "w:1")
                _set_seen(session, "monitor", "m:1", 120)
            first = client.get("/metrics", headers=auth)
            with unit_of_work(session_factory) as session:
                heartbeats.forget(session, "worker", "w:1")  # what a clean stop does
            second = client.get("/metrics", headers=auth)
    finally:
        app.state.konan.engine.dispose()
    assert first.status_code == 200
    assert "http_requests_total" in first.text  # the rest of /metrics is still there
    before = _samples(first.text)
    assert before[("konan_heartbeat_age_seconds", "worker")] < 5
    assert before[("konan_heartbeat_instances", "worker")] == 1
    assert 119 < before[("konan_heartbeat_age_seconds", "monitor")] < 130
    after = _samples(second.text)
    assert math.isinf(after[("konan_heartbeat_age_seconds", "worker")])
    assert after[("konan_heartbeat_instances", "worker")] == 0


def test_metrics_still_answer_when_the_database_does_not(
    settings: Settings, engine: Engine
) -> None:
    scraping = settings.model_copy(
        update={
            "server": settings.server.model_copy(update={"metrics_token": SecretStr("scrape-me")})
        }
    )
    app = create_app(scraping)
    try:
        with TestClient(app) as client:
            with app.state.konan.engine.begin() as conn:
                conn.execute(sa.text("DROP TABLE heartbeats"))
            response = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    finally:
        app.state.konan.engine.dispose()
    assert response.status_code == 200
    assert "http_requests_total" in response.text
    assert "konan_heartbeat_age_seconds" not in response.text
