"""`konan monitor` serves Prometheus metrics on the port its settings name: a real process, fed a
real prediction record through the same stream a model server writes to, answers /metrics with
the konan_monitor_* values that record moved. Bad metrics settings stop it with the variable's
name. (The worker's half is tests/worker/test_worker_metrics.py.)

SQLite runs the embedded path (the spool folder is the stream); PostgreSQL runs scale-out
(Redis streams, on Redis database 14 so no other test's monitor reads these records)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from konan.core.settings import load_settings
from konan.db import heartbeats
from konan.db.engine import unit_of_work
from konan.monitoring.orm import PredictionLog
from konan.monitoring.stream import DEFAULT_STREAM, make_producer
from konan.server.health import HEARTBEAT_WINDOW
from tests.conftest import REDIS_URL
from tests.factories import seed_deployment

from .metrics_support import (
    ROOT,
    clean_env,
    free_port,
    konan_process,
    samples,
    scrape,
    wait_for,
    wait_for_metrics,
)

MONITOR_REDIS = f"{REDIS_URL}/14"


@dataclass
class Monitor:
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes]


def monitor_env(db_url: str, tmp_path: Path, port: int) -> dict[str, str]:
    env = clean_env(
        KONAN_DATA_DIR=str(tmp_path / "data"),
        KONAN_DATABASE__URL=db_url,
        KONAN_MONITORING__METRICS_PORT=str(port),
    )
    if db_url.startswith("postgresql"):
        env.update(
            KONAN_MODE="scale-out",
            KONAN_QUEUE__BROKER_URL=MONITOR_REDIS,
            KONAN_ARTIFACTS__URI=str(tmp_path / "artifacts"),
            KONAN_AUTH__SECRET_KEY="test-secret-for-the-monitor-metrics",
        )
    return env


@pytest.fixture
def monitor(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[Monitor]:
    if db_url.startswith("postgresql"):
        client = redis.Redis.from_url(MONITOR_REDIS)
        client.delete(DEFAULT_STREAM)
        client.close()
    port = free_port()
    env = monitor_env(db_url, tmp_path, port)
    log = tmp_path / "monitor.log"
    with konan_process(["monitor"], env, log) as process:
        wait_for_metrics(process, port, log)
        yield Monitor(env, port, log, process)


def _value(port: int, name: str) -> float | None:
    text = scrape(port)
    assert text is not None
    return samples(text).get((name, ()))


def test_a_running_monitor_serves_what_it_ingested(
    monitor: Monitor, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _value(monitor.port, "konan_monitor_ingested_total") == 0
    first = scrape(monitor.port)
    assert first is not None
    # Each dead-letter reason is there at 0 from the start, so its first increase is seen.
    dead = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples(first).items()
        if name == "konan_monitor_dead_lettered_total"
    }
    assert dead == {
        "corrupt": 0,
        "invalid_record": 0,
        "unknown_deployment": 0,
        "unknown_model_version": 0,
        "database_rejected": 0,
    }
    with unit_of_work(session_factory) as session:
        seeded = seed_deployment(session)
        refs = (seeded.deployment.id, seeded.version.id)

    for key, value in monitor.env.items():
        if key.startswith("KONAN_"):
            monkeypatch.setenv(key, value)
    settings = load_settings()
    with make_producer(settings) as producer:  # what a model server logs through
        assert producer.submit(
            {
                "request_id": "metrics-1",
                "deployment_id": refs[0],
                "model_version_id": refs[1],
                "role": "champion",
                "at": 1_700_000_000.0,
                "inputs": [{"tenure": 3}],
                "outputs": {"predictions": [1]},
                "latency_ms": 2.0,
                "status_code": 200,
                "error": None,
            }
        )
        assert producer.flush()

    wait_for(
        lambda: _value(monitor.port, "konan_monitor_ingested_total") == 1,
        30,
        "konan_monitor_ingested_total to reach 1 on the monitor's /metrics",
    )
    with session_factory() as session:
        assert session.scalars(sa.select(PredictionLog.request_id)).all() == ["metrics-1"]
        assert heartbeats.alive(session, "monitor", HEARTBEAT_WINDOW)
    # The backlog is measured with each heartbeat (every 5 s), so it follows a little later.
    wait_for(
        lambda: _value(monitor.port, "konan_monitor_backlog_records") == 0,
        30,
        "konan_monitor_backlog_records to come back to 0",
    )
    text = scrape(monitor.port)
    assert text is not None
    values = samples(text)
    assert values[("konan_monitor_duplicates_total", ())] == 0
    # The record's `at` is from 2023: the lag gauge reports how old the batch's oldest was.
    assert values[("konan_monitor_lag_seconds", ())] > 3600
    assert monitor.process.poll() is None


def _run_monitor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "konan", "monitor"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("KONAN_MONITORING__METRICS_PORT", "70000", "less than or equal to 65535"),
        ("KONAN_MONITORING__METRICS_PORT", "0", "greater than or equal to 1"),
        ("KONAN_MONITORING__METRICS_PORT", "http", "valid integer"),
        ("KONAN_QUEUE__WORKER_METRICS_PORT", "-1", "greater than or equal to 1"),
    ],
)
def test_a_metrics_port_out_of_range_stops_the_process_naming_the_variable(
    tmp_path: Path, variable: str, value: str, says: str
) -> None:
    env = clean_env(KONAN_DATA_DIR=str(tmp_path / "data"), **{variable: value})
    command = "monitor" if "MONITORING" in variable else "worker"
    done = subprocess.run(
        [sys.executable, "-m", "konan", command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert variable in done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "konan.db").exists()  # stopped before touching anything


def test_a_metrics_port_in_use_stops_the_monitor_naming_the_variable(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(
            KONAN_DATA_DIR=str(tmp_path / "data"), KONAN_MONITORING__METRICS_PORT=str(port)
        )
        done = _run_monitor(env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "KONAN_MONITORING__METRICS_PORT" in done.stderr
    assert "Traceback" not in done.stderr
