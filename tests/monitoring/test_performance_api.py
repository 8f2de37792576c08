"""GET …/monitoring/performance: logs joined with late ground truth, per bucket and version,
compared with a significance test, with CBPE estimates on the same timeline."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm
from sqlalchemy.engine import Engine

from konan.core.settings import Settings
from konan.monitoring import performance as performance_service
from tests.monitoring.test_feedback import AT, Mon, open_mon


@pytest.fixture
def mon(settings: Settings, engine: Engine) -> Iterator[Mon]:
    with open_mon(settings, engine) as opened:
        yield opened


PERF = "/api/v1/deployments/{}/monitoring/performance"
WINDOW: dict[str, Any] = {
    "start": AT.isoformat(),
    "end": (AT + timedelta(hours=2)).isoformat(),
    "bucket": "1h",
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-x)))


def _send(mon: Mon, deployment: str, labels: dict[str, list[Any]]) -> None:
    items = [{"request_id": rid, "labels": lab} for rid, lab in labels.items()]
    for start in range(0, len(items), 10_000):
        answer = mon.post(
            f"/api/v1/deployments/{deployment}/feedback", {"items": items[start : start + 10_000]}
        )
        assert answer.status_code == 200, answer.text


def _by_version(bucket: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {entry["version"]: entry for entry in bucket["versions"]}


def test_classification_per_bucket_and_version_equals_sklearn(mon: Mon) -> None:
    rng = np.random.default_rng(11)
    logs, labels = [], {}
    truth: dict[tuple[int, int], list[int]] = {}
    preds: dict[tuple[int, int], list[int]] = {}
    probas: dict[tuple[int, int], list[list[float]]] = {}
    for i in range(120):
        hour = i % 2
        at = AT + timedelta(hours=hour, minutes=i % 50)
        rows = 3
        y = rng.integers(0, 2, rows).tolist()
        labels[f"r{i}"] = y
        for version, role, noise in ((1, "champion", 0.8), (2, "shadow", 1.5)):
            score = np.clip(np.array(y) * 0.4 + 0.3 + rng.normal(0, noise * 0.2, rows), 0, 1)
            pred = (score > 0.5).astype(int).tolist()
            proba = [[1 - s, s] for s in score.tolist()]
            logs.append(
                {
                    "request_id": f"r{i}",
                    "deployment": "churn-live",
                    "version": version,
                    "role": role,
                    "at": at,
                    "outputs": {"predictions": pred, "probabilities": proba},
                }
            )
            truth.setdefault((hour, version), []).extend(y)
            preds.setdefault((hour, version), []).extend(pred)
            probas.setdefault((hour, version), []).extend(proba)
    mon.log(logs)
    # a logged request without labels yet, and labels whose log is not in the window
    mon.log(
        [
            {
                "request_id": "unlabelled",
                "deployment": "churn-live",
                "version": 1,
                "at": AT,
                "outputs": {"predictions": [1], "probabilities": [[0.1, 0.9]]},
            }
        ]
    )
    _send(mon, "churn-live", labels | {"later": [1]})

    answer = mon.get(PERF.format("churn-live"), WINDOW)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["task"] == "classification"
    assert len(body["buckets"]) == 2
    for hour, bucket in enumerate(body["buckets"]):
        for version, entry in _by_version(bucket).items():
            y, p = truth[(hour, version)], preds[(hour, version)]
            matrix = np.array(probas[(hour, version)])
            got = entry["metrics"]
            assert entry["labelled_requests"] == 60
            assert got["rows"] == len(y)
            assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
            assert got["precision"] == pytest.approx(
                skm.precision_score(y, p, zero_division=0), abs=1e-12
            )
            assert got["recall"] == pytest.approx(skm.recall_score(y, p), abs=1e-12)
            assert got["f1"] == pytest.approx(skm.f1_score(y, p), abs=1e-12)
            assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, matrix[:, 1]), abs=1e-12)
            assert got["log_loss"] == pytest.approx(skm.log_loss(y, matrix), abs=1e-12)
            assert got["confusion_matrix"]["matrix"] == skm.confusion_matrix(y, p).tolist()
            assert entry["estimated"]["rows"] >= len(y)

    (comparison,) = body["comparisons"]
    assert comparison["baseline_version"] == 1
    assert comparison["version"] == 2
    assert comparison["test"] == "two_proportion_z"
    y1 = truth[(0, 1)] + truth[(1, 1)]
    p1 = preds[(0, 1)] + preds[(1, 1)]
    y2 = truth[(0, 2)] + truth[(1, 2)]
    p2 = preds[(0, 2)] + preds[(1, 2)]
    k1 = sum(a == b for a, b in zip(y1, p1, strict=True))
    k2 = sum(a == b for a, b in zip(y2, p2, strict=True))
    chi2 = stats.chi2_contingency(
        np.array([[k1, len(y1) - k1], [k2, len(y2) - k2]]), correction=False
    )
    assert comparison["p_value"] == pytest.approx(chi2.pvalue, abs=1e-10)
    assert comparison["difference"] == pytest.approx(k2 / len(y2) - k1 / len(y1))
    assert "no concept drift: P(y|x) unchanged" in body["estimation"]["assumptions"][0]

    only_two = mon.get(PERF.format("churn-live"), WINDOW | {"version": 2}).json()
    assert {e["version"] for b in only_two["buckets"] for e in b["versions"]} == {2}


def test_regression_figures_and_welch_test(mon: Mon) -> None:
    rng = np.random.default_rng(12)
    logs, labels = [], {}
    errors: dict[int, list[float]] = {1: [], 2: []}
    truth: dict[int, list[float]] = {1: [], 2: []}
    preds: dict[int, list[float]] = {1: [], 2: []}
    for i in range(200):
        version = 1 if i % 4 else 2  # a canary on a quarter of the traffic
        y = rng.normal(100, 20, 2)
        p = y + rng.normal(0, 5 if version == 1 else 8, 2)
        labels[f"p{i}"] = y.tolist()
        truth[version].extend(y.tolist())
        preds[version].extend(p.tolist())
        errors[version].extend(np.abs(y - p).tolist())
        logs.append(
            {
                "request_id": f"p{i}",
                "deployment": "price-live",
                "model": "price",
                "version": version,
                "role": "champion" if version == 1 else "canary",
                "at": AT + timedelta(minutes=i % 100),
                "outputs": {"predictions": p.tolist()},
            }
        )
    mon.log(logs)
    _send(mon, "price-live", labels)
    body = mon.get(PERF.format("price-live"), WINDOW).json()
    assert body["task"] == "regression"
    assert "estimation" not in body
    overall = {entry["version"]: entry["metrics"] for entry in body["overall"]}
    for version in (1, 2):
        y, p = np.array(truth[version]), np.array(preds[version])
        got = overall[version]
        assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p), abs=1e-9)
        assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)), abs=1e-9)
        assert got["r2"] == pytest.approx(skm.r2_score(y, p), abs=1e-9)
        assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, p), abs=1e-9)
    (comparison,) = body["comparisons"]
    expected = stats.ttest_ind(errors[2], errors[1], equal_var=False)
    assert comparison["test"] == "welch_t_on_absolute_errors"
    assert comparison["statistic"] == pytest.approx(expected.statistic, abs=1e-9)
    assert comparison["p_value"] == pytest.approx(expected.pvalue, abs=1e-9)


def test_estimated_accuracy_tracks_realised_on_a_covariate_shift(mon: Mon) -> None:
    """Reference: labelled traffic the day before; analysed window: shifted inputs. Tolerance:
    |estimated - realised| < 0.05 (5,000 analysed rows)."""
    rng = np.random.default_rng(13)
    logs, labels = [], {}
    realised: list[bool] = []
    for phase, mean, when in (("ref", 0.0, AT - timedelta(days=1)), ("new", 1.2, AT)):
        for i in range(500):
            x = rng.normal(mean, 1.0, 10)
            y = (rng.uniform(size=10) < _sigmoid(2 * x)).astype(int).tolist()
            score = _sigmoid(3 * x + 0.5)
            pred = (score > 0.5).astype(int).tolist()
            logs.append(
                {
                    "request_id": f"{phase}{i}",
                    "deployment": "churn-live",
                    "version": 1,
                    "at": when + timedelta(minutes=i % 60),
                    "outputs": {
                        "predictions": pred,
                        "probabilities": [[1 - s, s] for s in score.tolist()],
                    },
                }
            )
            labels[f"{phase}{i}"] = y
            if phase == "new":
                realised.extend(a == b for a, b in zip(y, pred, strict=True))
    mon.log(logs)
    # Before labels land for the new window: an estimate, no realised figures.
    _send(mon, "churn-live", {k: v for k, v in labels.items() if k.startswith("ref")})
    window = {"start": AT.isoformat(), "end": (AT + timedelta(hours=1)).isoformat(), "bucket": "1h"}
    before = mon.get(PERF.format("churn-live"), window).json()
    (entry,) = before["buckets"][0]["versions"]
    assert entry["metrics"] is None
    assert entry["estimated"]["rows"] == 5000
    assert before["estimation"]["calibration"]["1"] == {
        "method": "isotonic",
        "reference_rows": 5000,
    }
    estimated = entry["estimated"]["accuracy"]
    # Labels land: realised and estimated on the same timeline.
    _send(mon, "churn-live", {k: v for k, v in labels.items() if k.startswith("new")})
    after = mon.get(PERF.format("churn-live"), window).json()
    (entry,) = after["buckets"][0]["versions"]
    assert entry["metrics"]["accuracy"] == pytest.approx(float(np.mean(realised)), abs=1e-12)
    assert abs(estimated - entry["metrics"]["accuracy"]) < 0.05
    assert entry["estimated"]["accuracy"] == pytest.approx(estimated)


def test_refusals(mon: Mon, monkeypatch: pytest.MonkeyPatch) -> None:
    url = PERF.format("churn-live")
    backwards = {"start": WINDOW["end"], "end": WINDOW["start"]}
    assert mon.get(url, backwards).status_code == 422
    assert mon.get(url, WINDOW | {"bucket": "often"}).status_code == 422
    assert mon.get(url, WINDOW | {"version": 9}).status_code == 422
    assert mon.get(PERF.format("nope"), WINDOW).status_code == 404
    outsider = mon.user("olga", None)
    assert mon.get(url, WINDOW, headers=outsider).status_code == 404
    viewer = mon.user("vera", "viewer")
    assert mon.get(url, WINDOW, headers=viewer).status_code == 200
    assert mon.client.get(url, params=WINDOW).status_code == 401

    mon.log(
        [
            {
                "request_id": f"b{i}",
                "deployment": "churn-live",
                "version": 1,
                "at": AT,
                "outputs": {"predictions": [1, 0], "probabilities": [[0.4, 0.6], [0.7, 0.3]]},
            }
            for i in range(3)
        ]
    )
    _send(mon, "churn-live", {f"b{i}": [1, 1] for i in range(3)})
    monkeypatch.setattr(performance_service, "DEFAULT_MAX_ROWS", 2)
    too_big = mon.get(url, WINDOW)
    assert too_big.status_code == 422
    assert "shorter window" in too_big.json()["detail"]
