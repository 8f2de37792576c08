"""The operator commands, on both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from konan.cli.main import app

runner = CliRunner()


def test_db_upgrade_current_downgrade(db_url: str) -> None:
    env = {"KONAN_DATABASE__URL": db_url}
    behind = runner.invoke(app, ["admin", "db", "current"], env=env)
    assert behind.exit_code == 1
    assert "konan admin db upgrade" in behind.output

    up = runner.invoke(app, ["admin", "db", "upgrade"], env=env)
    assert up.exit_code == 0, up.output
    current = runner.invoke(app, ["admin", "db", "current"], env=env)
    assert current.exit_code == 0, current.output

    down = runner.invoke(app, ["admin", "db", "downgrade", "base"], env=env)
    assert down.exit_code == 0, down.output
    assert "base" in down.output


def test_server_refuses_to_start_on_an_unmigrated_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
    result = subprocess.run(
        [sys.executable, "-m", "konan", "server", "--data-dir", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "konan admin db upgrade" in result.stderr


def test_a_bad_setting_fails_at_start_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONAN_")}
    env["KONAN_RUNTIME__KIND"] = "nomad"
    result = subprocess.run(
        [sys.executable, "-m", "konan", "worker", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "KONAN_RUNTIME__KIND" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == "0.1.0"
