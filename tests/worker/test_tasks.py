"""Tasks run in a real worker process on both brokers: the embedded SQLite broker and Redis
(with PostgreSQL). Same task code; the test only changes the settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from konan.backends.queue.celery_app import make_celery
from konan.core.settings import Settings, load_settings
from konan.core.types import ApprovalStatus, utcnow
from konan.db import heartbeats, migrate
from konan.db.engine import make_engine, make_session_factory, unit_of_work
from konan.governance.orm import ApprovalRequest, AuditEvent
from konan.monitoring.orm import PredictionLog
from tests.conftest import REDIS_URL, _reset_pg_schema
from tests.factories import approval_request, seed_deployment


@dataclass
class RunningWorker:
    settings: Settings
    session_factory: sessionmaker[Session]
    process: subprocess.Popen[bytes]

    def send(self, task: str, *args: object) -> None:
        app = make_celery(self.settings)
        try:
            app.send_task(task, args=list(args))
        finally:
            app.close()


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def _env_for(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
    env["KONAN_DATA_DIR"] = str(tmp_path / "data")
    env["KONAN_QUEUE__EXPIRE_APPROVALS_EVERY_SECONDS"] = "2"
    if mode == "scale-out":
        pg_url: str = request.getfixturevalue("pg_server_url")
        _reset_pg_schema(pg_url)
        env.update(
            KONAN_MODE="scale-out",
            KONAN_DATABASE__URL=pg_url,
            KONAN_QUEUE__BROKER_URL=f"{REDIS_URL}/0",
            KONAN_QUEUE__NAME=f"konan-test-{uuid.uuid4().hex[:10]}",
            KONAN_ARTIFACTS__URI=str(tmp_path / "artifacts"),
            KONAN_AUTH__SECRET_KEY="test-secret-for-the-worker-suite",
        )
    return env


def _start(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *extra_args: str,
) -> Iterator[RunningWorker]:
    env = _env_for(request.param, tmp_path, request)
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
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "konan",
            "worker",
            "--concurrency",
            "2",
            "--loglevel",
            "WARNING",
            *extra_args,
        ],
        env=env,
    )
    try:

        def _alive() -> bool:
            with factory() as session:
                return heartbeats.alive(session, "worker", timedelta(seconds=30))

        wait_until(_alive, 40, "the worker's first heartbeat")
        yield RunningWorker(settings, factory, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        engine.dispose()


@pytest.fixture(params=["embedded", "scale-out"])
def worker(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningWorker]:
    yield from _start(request, tmp_path, monkeypatch)


@pytest.fixture(params=["embedded", "scale-out"])
def worker_with_beat(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningWorker]:
    yield from _start(request, tmp_path, monkeypatch, "--beat")


def test_the_periodic_schedule_runs_without_anyone_sending_a_task(
    worker_with_beat: RunningWorker,
) -> None:
    worker = worker_with_beat
    with unit_of_work(worker.session_factory) as session:
        seeded = seed_deployment(session)
        stale = approval_request(session, seeded, expires_in=timedelta(minutes=-1)).id

    def _expired() -> bool:
        with worker.session_factory() as session:
            row = session.get(ApprovalRequest, stale)
            return row is not None and row.status == ApprovalStatus.expired

    # The schedule is every 2 s in this test (60 s by default).
    wait_until(_expired, 30, "beat to run konan.governance.expire_approvals")


def test_expired_approvals_are_marked_and_audited_by_the_worker(worker: RunningWorker) -> None:
    with unit_of_work(worker.session_factory) as session:
        seeded = seed_deployment(session)
        stale = approval_request(session, seeded, expires_in=timedelta(minutes=-1)).id
        fresh = approval_request(session, seeded, expires_in=timedelta(hours=1)).id

    worker.send("konan.governance.expire_approvals")

    def _expired() -> bool:
        with worker.session_factory() as session:
            return session.get(ApprovalRequest, stale).status == ApprovalStatus.expired  # type: ignore[union-attr]

    wait_until(_expired, 30, "the stale approval request to expire")
    with worker.session_factory() as session:
        assert session.get(ApprovalRequest, fresh).status == ApprovalStatus.pending  # type: ignore[union-attr]
        events = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "approval.expire")
        ).all()
    assert [e.object_id for e in events] == [str(stale)]


def test_old_prediction_logs_are_purged_and_recent_ones_kept(worker: RunningWorker) -> None:
    now = utcnow()
    with unit_of_work(worker.session_factory) as session:
        seeded = seed_deployment(session)
        for i, age_days in enumerate([40, 35, 31, 1, 0]):
            at = now - timedelta(days=age_days)
            session.add(
                PredictionLog(
                    request_id=f"r{i}",
                    deployment_id=seeded.deployment.id,
                    model_version_id=seeded.version.id,
                    at=at,
                    bucket_start=int(at.timestamp()) // 60 * 60,
                    inputs=[{"x": i}],
                    outputs={"predictions": [0]},
                )
            )

    worker.send("konan.monitoring.purge_prediction_logs", 30)

    def _remaining() -> list[str]:
        with worker.session_factory() as session:
            return sorted(session.scalars(sa.select(PredictionLog.request_id)).all())

    wait_until(lambda: _remaining() == ["r3", "r4"], 30, "old prediction logs to be purged")
