"""`konan monitoring settings` and the threshold source in `konan monitoring drift`, through
the SDK against a real server on loopback."""

from __future__ import annotations

import pytest

import konan
from konan.core.errors import InvalidInput

from .test_monitoring_cli import END, START, _cli, sdk, server

__all__ = ["sdk", "server"]  # the fixtures, imported for pytest


def _rows(out: str) -> dict[str, str]:
    return {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 3}


def test_settings_are_shown_changed_and_used_by_the_drift_table(sdk: konan.Client) -> None:
    shown = _rows(_cli(sdk, "settings", "churn-live"))
    assert "auto" in shown["method"]
    assert "0.5" in shown["drift_share"]
    before = _rows(_cli(sdk, "drift", "churn-live", "--start", START, "--end", END))
    assert "default" in before["tenure"]
    assert "(p)" in before["tenure"]  # 800 reference rows: KS, a p-value threshold

    changed = _rows(
        _cli(
            sdk,
            "settings",
            "churn-live",
            "--threshold",
            "0.01",
            "--feature-threshold",
            "plan=0.2",
            "--test",
            "spend=psi",
        )
    )
    assert "0.01" in changed["threshold"]
    assert "0.2" in changed["threshold[plan]"]
    assert "psi" in changed["test[spend]"]
    # Options not given keep their stored values.
    again = _rows(_cli(sdk, "settings", "churn-live", "--drift-share", "0.25"))
    assert "0.01" in again["threshold"]
    assert sdk.monitoring_settings("churn-live")["drift"]["drift_share"] == 0.25

    after = _rows(_cli(sdk, "drift", "churn-live", "--start", START, "--end", END))
    assert "deployment" in after["tenure"]
    assert "feature" in after["plan"]
    assert "psi" in after["spend"]
    queried = _rows(
        _cli(sdk, "drift", "churn-live", "--start", START, "--end", END, "--threshold", "0.3")
    )
    assert "query" in queried["tenure"]

    with pytest.raises(InvalidInput, match="no feature ghost"):
        sdk.set_monitoring_settings("churn-live", {"feature_thresholds": {"ghost": 0.1}})
    reset = _rows(_cli(sdk, "settings", "churn-live", "--reset"))
    assert reset["threshold"].count("│") >= 3
    assert sdk.monitoring_settings("churn-live")["drift"]["feature_thresholds"] == {}
