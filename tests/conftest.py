"""Shared fixtures. Persistence runs on both backends: the embedded default (SQLite) and the
real PostgreSQL server (127.0.0.1:5432, trust auth) — each test session gets its own fresh
PostgreSQL database, so parallel runs never see each other's rows."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from botocore.config import Config
from fastapi import FastAPI
from moto.server import ThreadedMotoServer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from konan.core.settings import Settings
from konan.db import migrate
from konan.db.engine import make_engine, make_session_factory, unit_of_work
from konan.governance import service
from konan.server.app import create_app

PG_ADMIN_URL = os.environ.get(
    "KONAN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("KONAN_TEST_REDIS_URL", "redis://127.0.0.1:6379")

BACKENDS = ["sqlite", "postgresql"]

# Registration compiles scikit-learn models to ONNX in the sandbox (0.5-5 s a version). Tests
# that are not about that run with it off, in this process and in the processes they start
# with this environment; tests about it carry `@pytest.mark.compile_onnx`. Run the whole suite
# with it on: `KONAN_REGISTRY__COMPILE_ONNX=true pytest`.
COMPILE_ENV = "KONAN_REGISTRY__COMPILE_ONNX"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "compile_onnx: registration compiles scikit-learn models to ONNX (off in other tests)",
    )
    os.environ.setdefault(COMPILE_ENV, "false")


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """argon2id exactly as in production (pwdlib, same code paths), at its lowest cost: the
    production parameters cost ~0.2 s of CPU per hash and per verification, and most tests
    create an admin and log in. Processes the tests start hash with the production ones."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    from konan.governance import security

    cheap = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(security, "_hasher", cheap)
        patch.setattr(security, "_DUMMY_HASH", cheap.hash("dummy-password-never-matches"))
        yield


@pytest.fixture(autouse=True)
def _compile_onnx(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("compile_onnx") is not None:
        monkeypatch.setenv(COMPILE_ENV, "true")


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session; dropped at the end."""
    name = f"konan_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_pg_schema(url: str) -> None:
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    eng.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL on each backend (not migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'konan.db'}"
    url: str = request.getfixturevalue("pg_server_url")
    _reset_pg_schema(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database on each backend."""
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


ADMIN_PASSWORD = "correct-horse-battery"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings for an app on the parametrised database (embedded mode otherwise)."""
    return Settings(data_dir=tmp_path / "data", database={"url": db_url})


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Iterator[FastAPI]:
    with unit_of_work(make_session_factory(engine)) as session:
        service.bootstrap(session, ADMIN_PASSWORD)
    application = create_app(settings)
    yield application
    application.state.konan.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def admin_token(client: TestClient) -> str:
    response = client.post(
        "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


ACCESS_KEY = "konan-test-access"
SECRET_KEY = "konan-test-secret-do-not-print"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        # stop() shuts the serve loop down but leaves the listening socket open.
        if server._server is not None:
            server._server.server_close()


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str) -> Iterator[Any]:
    """A plain boto3 client for looking at the bucket behind the store's back."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def bucket(s3_admin: Any) -> Iterator[str]:
    name = f"konan-test-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in s3_admin.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                s3_admin.delete_object(Bucket=name, Key=obj["Key"])
        for upload in s3_admin.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3_admin.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        s3_admin.delete_bucket(Bucket=name)
