"""The SDK stays light (no server-only module) and speaks the API, errors included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from starlette.testclient import TestClient

import konan
from konan.core.errors import InvalidInput, Unauthenticated
from tests.conftest import ADMIN_PASSWORD

SERVER_ONLY = ["sqlalchemy", "celery", "fastapi", "starlette", "alembic", "kombu", "uvicorn"]


def test_importing_the_sdk_pulls_in_no_server_module() -> None:
    code = (
        "import json, sys\n"
        "import konan\n"
        "from konan import Client\n"
        "import konan.sdk\n"
        f"print(json.dumps(sorted(m for m in {SERVER_ONLY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


@pytest.fixture
def sdk(client: TestClient) -> konan.Client:
    # The SDK over the app's in-process transport: the same HTTP the network would carry.
    return konan.Client("http://testserver", transport=client._transport)  # type: ignore[attr-defined]


def test_login_and_me(sdk: konan.Client) -> None:
    tokens = sdk.login("admin", ADMIN_PASSWORD)
    assert tokens["token_type"] == "bearer"
    assert sdk.me()["username"] == "admin"
    assert sdk.health()["status"] == "ok"


def test_server_errors_come_back_as_the_same_exception(sdk: konan.Client) -> None:
    with pytest.raises(Unauthenticated, match="wrong username or password"):
        sdk.login("admin", "wrong")
    with pytest.raises(InvalidInput, match="password"):
        sdk.request("POST", "/api/v1/auth/login", json={"username": "admin"})
