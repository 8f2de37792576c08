"""`konan monitoring …` and the SDK's monitoring methods against a real server on loopback
(uvicorn, the same app as production), with traffic stored through the real ingest path."""

from __future__ import annotations

import csv
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from typer.testing import CliRunner

import konan
from konan.cli.main import app as cli_app
from konan.core.errors import InvalidInput
from konan.core.settings import Settings
from konan.db import migrate
from konan.db.engine import make_engine, make_session_factory, unit_of_work
from konan.governance import service as governance
from konan.monitoring import alerts
from konan.monitoring.ingest import ingest
from konan.monitoring.rollups import BIN_CACHE
from konan.server.app import create_app
from tests.conftest import ADMIN_PASSWORD
from tests.factories import seed_deployment

from .test_rollups import T0, attach_reference, records_from, reference_frame

START = datetime.fromtimestamp(T0, UTC).isoformat()
END = datetime.fromtimestamp(T0 + 3 * 3600, UTC).isoformat()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    BIN_CACHE.clear()
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.database_url, settings)
    migrate.upgrade(engine)
    rng = np.random.default_rng(5)
    with unit_of_work(make_session_factory(engine)) as session:
        governance.bootstrap(session, ADMIN_PASSWORD)
        seeded = seed_deployment(session, "churn-live")
        attach_reference(session, seeded, reference_frame(np.random.default_rng(1), 800))
        shifted = reference_frame(rng, 600)
        shifted["tenure"] = [v + 6.0 for v in shifted["tenure"]]
        shifted["plan"] = ["=cmd|' /C calc'!A0"] * 600
        records = records_from(shifted, seeded.deployment.id, seeded.version.id, rng=rng)
        assert not ingest(session, records).rejected
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
        yield f"http://127.0.0.1:{port}", settings
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.konan.engine.dispose()


@pytest.fixture
def sdk(server: tuple[str, Settings]) -> Iterator[konan.Client]:
    with konan.Client(server[0]) as client:
        client.login("u-churn-live", "pw-churn-live")
        yield client


def _cli(sdk: konan.Client, *args: str) -> str:
    assert sdk.token is not None
    result = CliRunner().invoke(
        cli_app, ["monitoring", *args, "--url", sdk.url, "--token", sdk.token]
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_drift_prints_a_table_per_feature(sdk: konan.Client) -> None:
    out = _cli(sdk, "drift", "churn-live", "--start", START, "--end", END)
    for header in ("feature", "test", "statistic", "threshold", "drifted"):
        assert header in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 5}
    assert "yes" in lines["tenure"]  # shifted by 3 std
    assert "yes" in lines["plan"]  # one unseen category only
    assert "ks" in lines["tenure"]  # 800 reference rows: KS, as Evidently chooses
    assert "features drifted" in out


def test_health_performance_alerts_and_export(
    sdk: konan.Client, server: tuple[str, Settings], tmp_path: Path
) -> None:
    health = _cli(sdk, "health", "churn-live", "--start", START, "--end", END)
    assert "p99" in health
    hourly = sdk.monitoring_health("churn-live", start=START, end=END)["buckets"]
    minutes = sdk.monitoring_health("churn-live", start=START, end=END, bucket="1m")["buckets"]
    assert sum(b["requests"] for b in hourly) == sum(b["requests"] for b in minutes) > 0
    answer = sdk.feedback("churn-live", [{"request_id": "never-logged", "labels": [1]}])
    assert answer == {"accepted": 1, "duplicates": 0, "unmatched": ["never-logged"]}
    assert "labelled" in _cli(sdk, "performance", "churn-live", "--start", START, "--end", END)

    rule = sdk.create_alert_rule("churn-live", "error_rate", 0.01, window_seconds=3 * 3600)
    assert [r["id"] for r in sdk.list_alert_rules("churn-live")] == [rule["id"]]
    with pytest.raises(InvalidInput, match="link-local"):
        sdk.create_alert_rule("churn-live", "latency", 100, webhook_url="http://169.254.169.254/x")
    settings = server[1]
    engine = make_engine(settings.database_url, settings)
    try:
        changes = alerts.evaluate_and_notify(
            make_session_factory(engine),
            settings.jwt_secret(),
            now=datetime.fromtimestamp(T0 + 3 * 3600, UTC),
        )
    finally:
        engine.dispose()
    assert [c.state for c in changes] == ["firing"]
    assert [a["state"] for a in sdk.alerts("churn-live", state="firing")] == ["firing"]
    assert "firing" in _cli(sdk, "alerts", "churn-live")

    out = tmp_path / "preds.csv"
    _cli(sdk, "export", "churn-live", "--start", START, "--end", END, "--out", str(out))
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 600  # one row per input row
    assert {r["plan"] for r in rows} == {"'=cmd|' /C calc'!A0"}
    sdk.delete_alert_rule("churn-live", rule["id"])
    assert sdk.list_alert_rules("churn-live") == []
