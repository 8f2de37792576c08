"""`konan worker` serves Prometheus metrics on KONAN_QUEUE__WORKER_METRICS_PORT, and a value set
inside a task it runs is on that scrape (tasks run on the worker's thread pool, in the process
that serves the metrics). Both brokers: the embedded SQLite one and Redis with PostgreSQL."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from konan.backends.queue.celery_app import make_celery
from konan.core.settings import Settings, load_settings
from konan.db import heartbeats, migrate
from konan.db.engine import make_engine, make_session_factory, unit_of_work
from konan.monitoring import alerts
from konan.monitoring.alerts import AlertRuleCreate
from konan.monitoring.ingest import ingest
from konan.server.health import HEARTBEAT_WINDOW
from tests.cli.metrics_support import (
    clean_env,
    free_port,
    konan_process,
    samples,
    scrape,
    wait_for,
    wait_for_metrics,
)
from tests.conftest import REDIS_URL, _reset_pg_schema
from tests.factories import seed_deployment


@dataclass
class Worker:
    settings: Settings
    session_factory: sessionmaker[Session]
    port: int


@pytest.fixture(params=["embedded", "scale-out"])
def worker(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Worker]:
    port = free_port()
    env = clean_env(
        KONAN_DATA_DIR=str(tmp_path / "data"), KONAN_QUEUE__WORKER_METRICS_PORT=str(port)
    )
    if request.param == "scale-out":
        pg_url: str = request.getfixturevalue("pg_server_url")
        _reset_pg_schema(pg_url)
        env.update(
            KONAN_MODE="scale-out",
            KONAN_DATABASE__URL=pg_url,
            KONAN_QUEUE__BROKER_URL=f"{REDIS_URL}/0",
            KONAN_QUEUE__NAME=f"konan-test-{uuid.uuid4().hex[:10]}",
            KONAN_ARTIFACTS__URI=str(tmp_path / "artifacts"),
            KONAN_AUTH__SECRET_KEY="test-secret-for-the-worker-metrics",
        )
    for key in [k for k in os.environ if k.startswith("KONAN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("KONAN_"):
            monkeypatch.setenv(key, value)
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url, settings)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    log = tmp_path / "worker.log"
    try:
        with konan_process(
            ["worker", "--concurrency", "2", "--loglevel", "WARNING"], env, log
        ) as process:
            wait_for_metrics(process, port, log)

            def _alive() -> bool:
                with factory() as session:
                    return heartbeats.alive(session, "worker", HEARTBEAT_WINDOW)

            wait_for(_alive, 40, "the worker's first heartbeat")
            yield Worker(settings, factory, port)
            assert process.poll() is None, log.read_text()
    finally:
        engine.dispose()


def _firing(port: int) -> dict[str, float]:
    text = scrape(port)
    assert text is not None
    return {
        dict(labels)["kind"]: value
        for (name, labels), value in samples(text).items()
        if name == "konan_alerts_firing"
    }


def test_an_alert_the_evaluate_task_opens_is_on_the_workers_metrics(worker: Worker) -> None:
    text = scrape(worker.port)
    assert text is not None
    assert "# TYPE konan_alerts_firing gauge" in text  # the family, with no value set yet
    assert _firing(worker.port) == {}
    assert samples(text)[("konan_alerts_evaluated_timestamp_seconds", ())] == 0

    with unit_of_work(worker.session_factory) as session:
        seeded = seed_deployment(session)
        alerts.create_rule(
            session,
            seeded.user,
            seeded.deployment,
            AlertRuleCreate(kind="latency", threshold=1, window_seconds=600),
        )
        now = datetime.now(UTC).timestamp()
        ingest(
            session,
            [
                {
                    "request_id": f"slow-{i}",
                    "deployment_id": seeded.deployment.id,
                    "model_version_id": seeded.version.id,
                    "role": "champion",
                    "at": now - 30 + i * 0.01,
                    "inputs": [{"tenure": 1.0}],
                    "outputs": {"predictions": [1]},
                    "latency_ms": 4.0,  # p99 of 4 ms breaches the 1 ms threshold
                    "status_code": 200,
                    "error": None,
                }
                for i in range(3)
            ],
        )

    app = make_celery(worker.settings)
    sent_at = time.time()
    try:
        app.send_task("konan.monitoring.evaluate_alerts")
    finally:
        app.close()

    firing = wait_for(
        lambda: _firing(worker.port).get("latency"), 60, "konan_alerts_firing{kind=latency}"
    )
    assert firing == 1
    assert _firing(worker.port)["drift"] == 0  # the task sets every kind

    # ... and the worker records when that run finished (queries keep the newest worker's).
    def _evaluated() -> float:
        text = scrape(worker.port)
        assert text is not None
        return samples(text)[("konan_alerts_evaluated_timestamp_seconds", ())]

    evaluated = wait_for(_evaluated, 10, "konan_alerts_evaluated_timestamp_seconds")
    assert sent_at <= evaluated <= time.time()
