"""The SDK and the CLI against a real server on loopback (uvicorn, the same app as production)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

import konan
from konan.cli.main import app as cli_app
from konan.core.errors import InvalidInput, NotFound
from konan.core.settings import Settings
from konan.db import migrate
from konan.db.engine import make_engine, make_session_factory, unit_of_work
from konan.governance import service as governance
from konan.server.app import create_app
from tests.conftest import ADMIN_PASSWORD
from tests.registry import builders


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.database_url, settings)
    migrate.upgrade(engine)
    with unit_of_work(make_session_factory(engine)) as session:
        governance.bootstrap(session, ADMIN_PASSWORD)
    engine.dispose()
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.konan.engine.dispose()


@pytest.fixture
def client(server_url: str) -> Iterator[konan.Client]:
    with konan.Client(server_url) as sdk:
        sdk.login("admin", ADMIN_PASSWORD)
        yield sdk


def test_register_an_in_memory_model_from_python(client: konan.Client) -> None:
    frame = builders.reference_frame()
    model = builders.pipeline_classifier(frame)
    seen: list[int] = []
    version = client.register_model(
        model,
        name="churn",
        reference_data=frame,
        target="churned",
        metrics={"auc": 0.9},
        params={"C": 1.0},
        tags={"team": "growth"},
        progress=seen.append,
    )
    assert version["version"] == 1
    assert version["flavor"] == "sklearn"
    assert client.get_model("churn")["task"] == "classification"  # created on the way
    assert sum(seen) > 0  # the progress callback saw the bytes go out
    assert [v["version"] for v in client.list_versions("churn")] == [1]
    client.set_alias("churn", "champion", 1, reason="first")
    assert client.list_aliases("churn")[0]["version"] == 1
    assert client.alias_history("churn")[0]["reason"] == "first"


def test_a_retry_with_the_same_key_registers_once(client: konan.Client, tmp_path: Path) -> None:
    numbers = builders.numeric_frame()
    path = tmp_path / "model.skops"
    path.write_bytes(builders.skops_bytes(builders.numeric_classifier(numbers)))
    kwargs: dict[str, Any] = {
        "name": "m",
        "task": "classification",
        "reference_data": numbers,
        "target": "y",
        "idempotency_key": "k-1",
    }
    first = client.register_model(path, **kwargs)
    second = client.register_model(path, **kwargs)
    assert first["version"] == second["version"] == 1
    assert len(client.list_versions("m")) == 1


def test_sdk_errors_are_the_server_errors(client: konan.Client, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        client.get_model("nope")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00junk" * 50)
    with pytest.raises(InvalidInput, match="artifact"):
        client.register_model(junk, name="j", task="regression")


def test_download_gives_the_registered_bytes(client: konan.Client, tmp_path: Path) -> None:
    numbers = builders.numeric_frame()
    data = builders.onnx_bytes(builders.numeric_classifier(numbers))
    client.register_model(data, name="o", task="classification", reference_data=numbers, target="y")
    out = client.download_artifact("o", 1, tmp_path / "o.onnx")
    assert out.read_bytes() == data


def test_cli_push_list_show_and_datasets(server_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"KONAN_URL": server_url, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    login = runner.invoke(
        cli_app, ["login", "--username", "admin", "--password", ADMIN_PASSWORD], env=env
    )
    assert login.exit_code == 0, login.output
    creds = tmp_path / "config" / "konan" / "credentials.json"
    assert creds.stat().st_mode & 0o077 == 0

    numbers = builders.numeric_frame()
    model = tmp_path / "model.skops"
    model.write_bytes(builders.skops_bytes(builders.numeric_classifier(numbers)))
    reference = tmp_path / "ref.csv"
    reference.write_bytes(builders.csv_bytes(numbers))
    push = runner.invoke(
        cli_app,
        [
            "models",
            "push",
            str(model),
            "--name",
            "churn",
            "--task",
            "classification",
            "--reference",
            str(reference),
            "--target",
            "y",
            "--metrics",
            '{"auc": 0.8}',
            "--tag",
            "team=growth",
        ],
        env=env,
    )
    assert push.exit_code == 0, push.output
    assert "registered churn version 1" in push.output

    listed = runner.invoke(cli_app, ["models", "list"], env=env)
    assert listed.exit_code == 0
    assert "churn" in listed.output
    shown = runner.invoke(cli_app, ["models", "show", "churn"], env=env)
    assert "auc=0.8" in shown.output
    one = runner.invoke(cli_app, ["models", "show", "churn", "--version", "1"], env=env)
    assert '"flavor": "sklearn"' in one.output

    data = runner.invoke(cli_app, ["datasets", "push", str(reference), "--name", "train"], env=env)
    assert data.exit_code == 0, data.output
    assert f"{len(numbers)} rows" in data.output
    datasets = runner.invoke(cli_app, ["datasets", "list"], env=env)
    assert "train" in datasets.output

    bad = runner.invoke(cli_app, ["models", "push", str(reference), "--name", "churn"], env=env)
    assert bad.exit_code == 1
    assert "error" in bad.output
