"""The whole journey on `konan up`: register two versions, deploy on the local runtime, predict
with a key, canary at 10 %, promote, roll back — with a load generator running through every
change and not one failed request — then kill a model server and see it replaced."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

import konan
from tests.e2e.test_konan_up import Up
from tests.registry import builders

# The journey registers and serves compiled artifacts, as a default install does (`Up` also
# starts `konan up` without the test run's KONAN_* variables).
pytestmark = pytest.mark.compile_onnx

PASSWORD = "journey-admin-password"
ROWS = [{"a": 0.5, "b": -1.0, "c": 0.25, "d": 2.0}]


class Load:
    """Sends predictions back to back until stopped; counts answers by status and version."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}
        self.statuses: Counter[int] = Counter()
        self.versions: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx2.Client(timeout=30) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(self.url, json={"inputs": ROWS}, headers=self.headers)
                except httpx2.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    self.versions.append(response.json()["model_version"])
                else:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def recent(self, n: int) -> list[int]:
        return self.versions[-n:]


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def serving_pids(data_dir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(cmdline).decode(errors="replace")
        if "konan.serving" in text and str(data_dir) in text and "--spec" in text:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Up, konan.Client]]:
    up = Up(tmp_path / "data", admin_password=PASSWORD)
    try:
        up.wait_for("/readyz", 200, timeout=90)
        with konan.Client(up.url) as client:
            client.login("admin", PASSWORD)
            yield up, client
    finally:
        up.stop()


def test_canary_promote_rollback_under_load_without_a_failed_request(
    platform: tuple[Up, konan.Client], tmp_path: Path
) -> None:
    up, client = platform
    frame = builders.numeric_frame()
    # Two different models; answers are told apart by the version number they carry.
    first = builders.numeric_classifier(frame)
    second = builders.numeric_classifier(frame.assign(y=1 - frame["y"]))
    for model in (first, second):
        registered = client.register_model(model, name="churn", reference_data=frame, target="y")
        assert registered["compiled"]["flavor"] == "onnx", registered["compiled"]
    deployed = client.deploy("churn-live", model="churn", version=1, wait=90)
    assert deployed["status"] == "ready"
    key = client.create_api_key("load", deployments=["churn-live"])["key"]

    def direct() -> httpx2.Response:
        return httpx2.post(
            f"{deployed['endpoint_url']}/predict",
            json={"inputs": ROWS},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )

    # A new key reaches the model servers at their next key refresh (every 2 s).
    wait_for(lambda: direct().status_code == 200, 5, "the new key to be accepted")
    assert direct().json()["model_version"] == 1

    load = Load(f"{up.url}/api/v1/deployments/churn-live/predict", key).start()
    try:
        wait_for(lambda: len(load.versions) >= 20, 30, "the first answers")

        canary = client.set_traffic("churn-live", canary=2, canary_weight=0.1, reason="try v2")
        client.wait_until_ready("churn-live", revision=canary["revision"], timeout=60)
        mark = len(load.versions)
        wait_for(lambda: 2 in load.versions[mark:], 60, "the canary to answer")
        wait_for(lambda: len(load.versions) - mark >= 300, 60, "300 answers with a canary")
        share = load.versions[mark:].count(2) / len(load.versions[mark:])
        assert 0.02 < share < 0.25, share

        promoted = client.promote("churn-live", reason="v2 wins")
        client.wait_until_ready("churn-live", revision=promoted["revision"], timeout=60)
        wait_for(lambda: load.recent(50) == [2] * 50, 60, "every answer from version 2")

        back = client.rollback("churn-live", revision=1, reason="back to v1")
        client.wait_until_ready("churn-live", revision=back["revision"], timeout=60)
        wait_for(lambda: load.recent(50) == [1] * 50, 60, "every answer from version 1 again")
    finally:
        load.stop()

    assert load.failures == [], load.failures[:5]
    assert load.statuses[200] > 500, load.statuses

    # The monitor stored that traffic, and drift covers the prediction too: its reference is the
    # profile registration took of version 1's own predictions on the reference data.
    def prediction_drift() -> bool:
        report = client.drift("churn-live", version=1)
        found = report.get("prediction") or {}
        return (
            bool(found.get("current_count"))
            and report["prediction_reference"] == "prediction_profile"
        )

    wait_for(prediction_drift, 30, "drift of version 1's logged predictions")

    # A model server killed outright is replaced and serving again within 5 seconds.
    pids = serving_pids(tmp_path / "data")
    assert pids, "no model server process found"
    os.kill(pids[0], signal.SIGKILL)
    killed_at = time.monotonic()
    headers = {"Authorization": f"Bearer {key}"}

    def serving_again() -> bool:
        try:
            response = httpx2.post(
                f"{up.url}/api/v1/deployments/churn-live/predict",
                json={"inputs": ROWS},
                headers=headers,
                timeout=2,
            )
        except httpx2.HTTPError:
            return False
        return response.status_code == 200 and pids[0] not in serving_pids(tmp_path / "data")

    wait_for(serving_again, 5, "a replacement model server")
    assert time.monotonic() - killed_at < 5

    # A07: a key scoped to one deployment is refused by another one's model servers.
    other = client.deploy("churn-other", model="churn", version=2, wait=90)
    other_key = client.create_api_key("other", deployments=["churn-other"])["key"]

    def answer(deployment: str, api_key: str) -> int:
        return httpx2.post(
            f"{up.url}/api/v1/deployments/{deployment}/predict",
            json={"inputs": ROWS},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=5,
        ).status_code

    wait_for(lambda: answer("churn-other", other_key) == 200, 5, "the second deployment's key")
    assert answer("churn-other", key) == 401
    assert answer("churn-live", other_key) == 401
    assert other["endpoint_url"] != deployed["endpoint_url"]

    # Revoking the key stops it within 5 seconds.
    key_id = next(k["id"] for k in client.list_api_keys() if k["name"] == "load")
    client.revoke_api_key(key_id)

    def refused() -> bool:
        response = httpx2.post(
            f"{up.url}/api/v1/deployments/churn-live/predict",
            json={"inputs": ROWS},
            headers=headers,
            timeout=2,
        )
        return response.status_code == 401

    wait_for(refused, 5, "the revoked key to be refused")


def test_the_cli_deploys_predicts_and_changes_traffic(
    platform: tuple[Up, konan.Client], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from konan.cli.main import app as cli

    up, client = platform
    frame = builders.numeric_frame()
    for flip in (False, True):
        labels = 1 - frame["y"] if flip else frame["y"]
        model = builders.numeric_classifier(frame.assign(y=labels))
        client.register_model(model, name="churn", reference_data=frame, target="y")
    runner = CliRunner()
    env = {
        "KONAN_URL": up.url,
        "KONAN_TOKEN": client.token or "",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == 0, (args, result.output)
        return result.output

    deployed = run("deploy", "churn", "--version", "1", "--name", "churn-cli", "--wait", "90")
    assert "churn-cli revision 1: ready" in deployed
    created = run("keys", "create", "cli-app", "--deployment", "churn-cli")
    key = created.strip().splitlines()[-1]
    assert key.startswith("kn_")
    rows = '[{"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}]'

    def predicted() -> bool:
        result = runner.invoke(
            cli, ["predict", "churn-cli", "--key", key, "--inputs", rows], env=env
        )
        return result.exit_code == 0 and '"model_version": 1' in result.output

    wait_for(predicted, 5, "the CLI's prediction with the new key")

    assert "canary v2 at 20%" in run("traffic", "churn-cli", "--canary", "2", "--weight", "0.2")
    assert "champion v2" in run("promote", "churn-cli", "--reason", "cli")
    assert "champion v1" in run("rollback", "churn-cli", "--revision", "1")
    listing = run("deployments", "list")
    assert "churn-cli" in listing
    shown = run("deployments", "show", "churn-cli")
    assert "cli" in shown  # the promote's reason in the revision history
    logs = run("deployments", "logs", "churn-cli", "--tail", "20")
    assert logs.strip()
    assert "cli-app" in run("keys", "list")

    # A key with a budget (E01): past it, 429 + Retry-After through the control plane's route.
    capped = run(
        "keys", "create", "capped", "--deployment", "churn-cli", "--rate-limit", "3/minute"
    )
    capped_key = capped.strip().splitlines()[-1]
    assert "3/minute" in run("keys", "list")
    statuses: list[int] = []

    def limited() -> bool:
        response = httpx2.post(
            f"{up.url}/api/v1/deployments/churn-cli/predict",
            json={"inputs": [{"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}]},
            headers={"Authorization": f"Bearer {capped_key}"},
            timeout=10,
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert 1 <= int(response.headers["retry-after"]) <= 60
            assert response.json()["code"] == "rate_limited"
            return True
        return False

    wait_for(limited, 10, "the capped key to be refused with 429")
    assert statuses.count(200) >= 3  # the budget itself was served (after the key arrived)
    bad = runner.invoke(
        cli, ["predict", "churn-cli", "--key", key, "--inputs", '[{"a": "x"}]'], env=env
    )
    assert bad.exit_code == 1
    assert "error" in bad.output
