"""Monitoring fixtures: the rows a prediction log points at, spool folders, Redis streams."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from konan.core.settings import Settings
from konan.db.engine import unit_of_work
from konan.deployments.orm import Deployment
from konan.governance.orm import Project, User
from konan.monitoring.consumer import MonitorConsumer
from konan.monitoring.orm import PredictionLog
from konan.registry.orm import Model, ModelVersion

REDIS_URL = os.environ.get("KONAN_TEST_REDIS_URL", "redis://127.0.0.1:6379")


@dataclass(frozen=True)
class Refs:
    deployment_id: int
    model_version_id: int


@pytest.fixture
def refs(session_factory: sessionmaker[Session]) -> Refs:
    """A project, user, model, model version and deployment for records to point at."""
    with unit_of_work(session_factory) as session:
        project = Project(name="monitoring")
        user = User(username="mara", password_hash="not-a-real-hash")
        session.add_all([project, user])
        session.flush()
        model = Model(project_id=project.id, name="churn", task="classification")
        session.add(model)
        session.flush()
        version = ModelVersion(
            model_id=model.id,
            version=1,
            flavor="sklearn",
            artifact_sha256=hashlib.sha256(b"model").hexdigest(),
            artifact_size=5,
            created_by_id=user.id,
        )
        deployment = Deployment(
            name="churn-live", project_id=project.id, model_id=model.id, runtime="local"
        )
        session.add_all([version, deployment])
        session.flush()
        return Refs(deployment.id, version.id)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def monitor_settings(tmp_path: Path, spool_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        monitoring={"spool_dir": spool_dir, "ingest_batch_size": 50},
    )


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def redis_stream(redis_client: redis.Redis) -> Iterator[str]:
    """A stream name no other test uses; the stream and its dead-letter stream are deleted after."""
    name = f"konan:test:{uuid.uuid4().hex}"
    yield name
    redis_client.delete(name, f"{name}:dead")


def stored(session_factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    """(request_id, role) of every stored prediction log, in insertion order."""
    with session_factory() as session:
        rows = session.execute(
            sa.select(PredictionLog.request_id, PredictionLog.role).order_by(PredictionLog.id)
        )
        return [(r, role) for r, role in rows]


@contextmanager
def running(consumer: MonitorConsumer) -> Iterator[threading.Thread]:
    """Run the consumer in a thread; stop it cleanly (and check it stopped) on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), name="monitor", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the monitor did not stop"
