"""Reference-chunk thresholds, drift settings stored per deployment (with their precedence),
and prediction drift against the model's own predictions, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from konan.db.engine import make_session_factory, unit_of_work
from konan.deployments.orm import Deployment
from konan.governance.orm import AuditEvent
from konan.monitoring import alerts, drift
from konan.monitoring.alerts import AlertRuleCreate
from konan.monitoring.api import router
from konan.monitoring.ingest import ingest
from konan.monitoring.orm import FeatureHistogram
from konan.monitoring.rollups import BIN_CACHE, PREDICTION
from konan.registry import datasets
from konan.registry.binning import categorical_bins, numeric_bins
from konan.registry.datasets import profile_dataset
from konan.registry.drift_statistics import (
    CHUNKS,
    Test,
    chunk_thresholds,
    compute,
)
from konan.registry.orm import Dataset, DatasetVersion, ModelVersion
from tests.factories import Seeded, seed_deployment

from .test_alerts import SECRET
from .test_rollups import PLANS, T0, attach_reference, records_from, reference_frame

START = datetime.fromtimestamp(T0, UTC)
END = datetime.fromtimestamp(T0 + 3 * 3600, UTC)


# ---- chunk thresholds at registration ---------------------------------------------------------


def _table(frame: dict[str, list[Any]]) -> pa.Table:
    return pa.table({k: v for k, v in frame.items() if k != PREDICTION})


def test_chunk_thresholds_are_stored_beside_unchanged_bins(tmp_path: Path) -> None:
    frame = reference_frame(np.random.default_rng(7), 3000)
    path = tmp_path / "ref.csv"
    pa_csv.write_csv(_table(frame), path)

    profile = profile_dataset(path)

    # The bins keep exactly the shape bins_from_json parses.
    assert all(set(b) <= {"kind", "edges", "counts", "categories", "other"} for b in
               profile.reference_bins.values())  # fmt: skip
    expected = {
        "tenure": {"ks", "wasserstein", "psi", "jensenshannon"},
        "spend": {"ks", "wasserstein", "psi", "jensenshannon"},
        "plan": {"chisquare", "psi", "jensenshannon"},
        "active": {"chisquare", "z", "psi", "jensenshannon"},
    }
    for name, tests in expected.items():
        entry = profile.stats[name]["chunk_thresholds"]
        assert (entry["chunks"], entry["chunk_rows"]) == (10, 300)
        assert set(entry["thresholds"]) == tests
        for test, found in entry["thresholds"].items():
            if found["on"] == "p_value":
                assert 1e-3 <= found["threshold"] <= 0.05
            else:
                assert found["threshold"] == pytest.approx(found["mean"] + 3 * found["std"])
                assert found["threshold"] > 0, (name, test)
    assert profile.stats["tenure"]["chunk_thresholds"]["thresholds"]["ks"]["on"] == "statistic"


def test_the_streamed_chunk_pass_equals_a_direct_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parquet batches of 333 rows straddle the 400-row chunk boundaries.
    monkeypatch.setattr(datasets, "PARQUET_BATCH_ROWS", 333)
    rng = np.random.default_rng(8)
    values = rng.gamma(2.0, 3.0, 4000)
    plans = rng.choice(PLANS, 4000).tolist()
    path = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"x": values, "plan": plans}), path)

    profile = profile_dataset(path)

    for name, column in (("x", values), ("plan", plans)):
        bins = (numeric_bins if name == "x" else categorical_bins)(column)
        assert bins.to_json() == {
            k: v for k, v in profile.reference_bins[name].items() if k in bins.to_json()
        }
        counts = [_count(bins, column[i * 400 : (i + 1) * 400]) for i in range(CHUNKS)]
        want = chunk_thresholds(bins, counts, profile.stats[name], chunk_rows=400)
        assert profile.stats[name]["chunk_thresholds"] == want


def _count(bins: Any, values: Any) -> Any:
    if hasattr(bins, "edges"):
        return bins.count(np.asarray(values))
    return bins.count(values)


def test_a_small_reference_skips_chunk_thresholds_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    pa_csv.write_csv(_table(reference_frame(np.random.default_rng(9), 640)), path)
    entry = profile_dataset(path).stats["tenure"]["chunk_thresholds"]
    assert entry == {
        "skipped": "the reference has 640 rows; 10 chunks of at least 100 rows need 1000"
    }


def test_a_fresh_sample_stays_below_the_chunk_thresholds_in_most_seeds() -> None:
    """40 fixed seeds: a fresh chunk-sized sample of the reference distribution exceeds the
    mean + 3 std threshold rarely; a one-std shift always."""
    tests: tuple[Test, ...] = ("ks", "wasserstein", "psi", "jensenshannon")
    below = dict.fromkeys(tests, 0)
    shifted_above = dict.fromkeys(tests, 0)
    seeds = range(40)
    for seed in seeds:
        rng = np.random.default_rng(1000 + seed)
        reference = rng.normal(10, 2, 5000)
        bins = numeric_bins(reference)
        info = {"min": reference.min(), "max": reference.max(), "std": reference.std(ddof=1)}
        chunks = [bins.count(reference[i * 500 : (i + 1) * 500]) for i in range(CHUNKS)]
        found = chunk_thresholds(bins, chunks, info, chunk_rows=500)["thresholds"]
        fresh = bins.count(rng.normal(10, 2, 500))
        shifted = bins.count(rng.normal(12, 2, 500))
        for test in tests:
            limit = found[test]["threshold"]
            below[test] += compute(test, bins, bins.counts, fresh, info)[0] <= limit
            shifted_above[test] += compute(test, bins, bins.counts, shifted, info)[0] > limit
    assert all(n >= 36 for n in below.values()), below  # at least 90% of the seeds
    assert all(n == len(seeds) for n in shifted_above.values()), shifted_above


# ---- drift under each method, from the rollups ---------------------------------------------


def attach_profiled_reference(
    session: Session, seeded: Seeded, frame: dict[str, list[Any]], folder: Path
) -> None:
    """A reference dataset version profiled the way registration profiles it (so with chunk
    thresholds), and a prediction profile from the frame's predictions."""
    path = folder / f"{uuid.uuid4().hex}.csv"
    pa_csv.write_csv(_table(frame), path)
    profile = profile_dataset(path)
    dataset = Dataset(project_id=seeded.project.id, name=f"ref-{uuid.uuid4().hex[:8]}")
    session.add(dataset)
    session.flush()
    version = DatasetVersion(
        dataset_id=dataset.id,
        version=1,
        sha256=uuid.uuid4().hex * 2,
        format="csv",
        size=path.stat().st_size,
        row_count=profile.row_count,
        stats=profile.stats,
        reference_bins=profile.reference_bins,
    )
    session.add(version)
    session.flush()
    model_version = session.get(ModelVersion, seeded.version.id)
    assert model_version is not None
    model_version.reference_dataset_version_id = version.id
    model_version.signature = {
        "inputs": [{"name": n} for n in frame if n != PREDICTION],
        "outputs": {"kind": "label"},
    }
    model_version.prediction_profile = {
        "bins": {PREDICTION: categorical_bins(frame[PREDICTION]).to_json()},
        "rows": len(frame[PREDICTION]),
        "source": "reference_sample",
    }
    session.flush()


def shifted_frame(rng: np.random.Generator, n: int) -> dict[str, list[Any]]:
    frame = reference_frame(rng, n)
    frame["tenure"] = rng.normal(12.0, 2.0, n).tolist()  # one std up
    frame["plan"] = rng.choice(PLANS, n, p=[0.2, 0.3, 0.5]).tolist()
    frame[PREDICTION] = rng.choice([0, 1], n, p=[0.3, 0.7]).tolist()
    return frame


def _report_for(
    factory: sessionmaker[Session],
    folder: Path,
    settings: dict[str, Any],
    live: dict[str, list[Any]],
    **query: Any,
) -> dict[str, Any]:
    BIN_CACHE.clear()
    with unit_of_work(factory) as session:
        seeded = seed_deployment(session, f"d-{uuid.uuid4().hex[:6]}")
        attach_profiled_reference(
            session, seeded, reference_frame(np.random.default_rng(21), 5000), folder
        )
        deployment = session.get(Deployment, seeded.deployment.id)
        assert deployment is not None
        deployment.monitoring_settings = {"drift": settings}
        rng = np.random.default_rng(22)
        ids = (seeded.deployment.id, seeded.version.id)
        records = records_from(live, *ids, rng=rng, prefix=deployment.name)
        result = ingest(session, records)
        assert (result.rejected, result.duplicates) == ([], 0)
        deployment_id = seeded.deployment.id
    with factory() as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        return drift.drift_report(session, deployment, start=START, end=END, **query)


METHODS: dict[str, dict[str, Any]] = {
    "auto": {},
    "reference_chunks": {"method": "reference_chunks"},
    "psi": {"numeric_test": "psi", "categorical_test": "psi"},
}
SOURCE = {"auto": "default", "reference_chunks": "reference_chunks", "psi": "default"}


@pytest.mark.parametrize("method", list(METHODS))
def test_shifted_features_drift_and_a_fresh_sample_does_not_under_each_method(
    session_factory: sessionmaker[Session], tmp_path: Path, method: str
) -> None:
    settings = METHODS[method]
    shifted = _report_for(
        session_factory, tmp_path, settings, shifted_frame(np.random.default_rng(23), 2000)
    )
    by_name = {f["name"]: f for f in shifted["features"]}
    assert {n for n, f in by_name.items() if f["drifted"]} == {"tenure", "plan"}
    assert {f["threshold_source"] for f in by_name.values()} == {SOURCE[method]}
    assert shifted["prediction"]["drifted"]
    assert shifted["prediction_reference"] == "prediction_profile"
    if method == "psi":
        assert {f["test"] for f in by_name.values()} == {"psi"}
        assert {f["threshold"] for f in by_name.values()} == {0.1}
        assert by_name["tenure"]["statistic"] == by_name["tenure"]["psi"] > 0.2
    if method == "reference_chunks":
        assert by_name["tenure"]["test"] == "wasserstein"
        assert by_name["tenure"]["threshold_on"] == "distance"
        # The prediction's profile has no chunk thresholds: the default, with a note.
        assert shifted["prediction"]["threshold_source"] == "default"
        assert any(note.startswith(f"{PREDICTION}: no reference-chunk") for note in
                   shifted["notes"])  # fmt: skip

    fresh = _report_for(
        session_factory, tmp_path, settings, reference_frame(np.random.default_rng(24), 2000)
    )
    assert [f["name"] for f in fresh["features"] if f["drifted"]] == []
    assert not fresh["prediction"]["drifted"]
    assert fresh["features_tested"] == 4
    assert fresh["method"] == settings.get("method", "auto")


def test_a_ks_chunk_threshold_is_on_the_statistic(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    report = _report_for(
        session_factory,
        tmp_path,
        {"method": "reference_chunks", "numeric_test": "ks", "categorical_test": "chisquare"},
        shifted_frame(np.random.default_rng(25), 2000),
    )
    by_name = {f["name"]: f for f in report["features"]}
    tenure, plan = by_name["tenure"], by_name["plan"]
    assert (tenure["test"], tenure["threshold_on"]) == ("ks", "statistic")
    assert tenure["drifted"]
    assert tenure["statistic"] > tenure["threshold"]
    assert (plan["test"], plan["threshold_on"]) == ("chisquare", "p_value")
    assert plan["drifted"]
    assert plan["p_value"] < plan["threshold"]


def test_an_old_reference_without_chunk_thresholds_falls_back_with_a_note(
    session_factory: sessionmaker[Session],
) -> None:
    BIN_CACHE.clear()
    with unit_of_work(session_factory) as session:
        seeded = seed_deployment(session, "old-ref")
        attach_reference(session, seeded, reference_frame(np.random.default_rng(1), 800))
        deployment = session.get(Deployment, seeded.deployment.id)
        assert deployment is not None
        deployment.monitoring_settings = {"drift": {"method": "reference_chunks"}}
        report = drift.drift_report(session, deployment, start=START, end=END)
    assert {f["threshold_source"] for f in report["features"]} == {"default"}
    assert any("profiled before chunk thresholds were computed" in note for note in report["notes"])


# ---- prediction drift ---------------------------------------------------------------------


def test_a_prediction_profile_filled_in_later_is_picked_up_by_ingest(
    session_factory: sessionmaker[Session],
) -> None:
    BIN_CACHE.clear()
    rng = np.random.default_rng(31)
    with unit_of_work(session_factory) as session:
        seeded = seed_deployment(session, "late-profile")
        frame = reference_frame(np.random.default_rng(1), 800)
        attach_reference(session, seeded, {k: v for k, v in frame.items() if k != PREDICTION})
        first = reference_frame(rng, 200)
        ids = (seeded.deployment.id, seeded.version.id)
        assert not ingest(session, records_from(first, *ids, rng=rng, prefix="a")).rejected
    with unit_of_work(session_factory) as session:
        version = session.get(ModelVersion, ids[1])
        assert version is not None
        version.prediction_profile = {
            "bins": {PREDICTION: categorical_bins(frame[PREDICTION]).to_json()},
            "rows": 800,
            "source": "reference_sample",
        }
    with unit_of_work(session_factory) as session:
        shifted = shifted_frame(rng, 1000)
        assert not ingest(session, records_from(shifted, *ids, rng=rng, prefix="b")).rejected
        counted = session.scalar(
            sa.select(sa.func.sum(FeatureHistogram.count)).where(
                FeatureHistogram.feature == PREDICTION
            )
        )
        deployment = session.get(Deployment, ids[0])
        assert deployment is not None
        report = drift.drift_report(session, deployment, start=START, end=END)
    assert counted == 1000  # only what arrived after the profile
    assert report["prediction_reference"] == "prediction_profile"
    assert report["prediction"]["drifted"]
    assert report["prediction"]["current_count"] == 1000


# ---- stored settings over HTTP ----------------------------------------------------------------


@pytest.fixture
def api(app: FastAPI, engine: Engine) -> Iterator[tuple[TestClient, dict[str, str]]]:
    BIN_CACHE.clear()
    paths = {getattr(r, "path", "") for r in app.routes}
    if "/api/v1/deployments/{name}/monitoring/settings" not in paths:
        app.include_router(router, prefix="/api/v1")
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        live = seed_deployment(session, "churn-live")
        attach_reference(session, live, reference_frame(np.random.default_rng(1), 800))
        rng = np.random.default_rng(2)
        frame = reference_frame(rng, 600)
        ids = (live.deployment.id, live.version.id)
        assert not ingest(session, records_from(frame, *ids, rng=rng)).rejected
        seed_deployment(session, "empty")
    with TestClient(app) as client:
        response = client.post(
            "/api/v1/auth/login", json={"username": "u-churn-live", "password": "pw-churn-live"}
        )
        assert response.status_code == 200, response.text
        yield client, {"Authorization": f"Bearer {response.json()['access_token']}"}


SETTINGS = "/api/v1/deployments/churn-live/monitoring/settings"
DRIFT = "/api/v1/deployments/churn-live/monitoring/drift"
DEFAULTS = {
    "method": "auto",
    "threshold": None,
    "feature_thresholds": {},
    "drift_share": 0.5,
    "numeric_test": None,
    "categorical_test": None,
    "tests": {},
}


def _audits(engine: Engine) -> list[AuditEvent]:
    with make_session_factory(engine)() as session:
        return list(
            session.scalars(
                sa.select(AuditEvent).where(AuditEvent.action == "deployment.monitoring_settings")
            )
        )


@pytest.mark.parametrize(
    ("drift_settings", "message"),
    [
        ({"feature_thresholds": {"nope": 0.1, "plan": 0.01}}, "no feature nope"),
        ({"tests": {"spend": "chi2"}}, "spend is numeric: test chisquare does not apply"),
        ({"tests": {"ghost": "psi"}}, "no feature ghost"),
        ({"threshold": 1.5}, "is no p-value threshold"),
        ({"tests": {"plan": "jensenshannon"}, "feature_thresholds": {"plan": 0.9}}, "sqrt(ln 2)"),
        ({"method": "fixed"}, "method 'fixed' needs a threshold"),
        ({"categorical_test": "z"}, "binary features only: plan"),
        ({"drift_share": 0}, "drift_share"),
        ({"drift_share": 1.5}, "drift_share"),
        ({"threshold": -0.1}, "threshold"),
        ({"feature_thresholds": {"plan": 0}}, "positive finite numbers: plan"),
        ({"method": "nannyml"}, "method"),
        ({"tests": {"plan": "anderson"}}, "tests"),
        ({"tresholds": 0.1}, "tresholds"),
    ],
)
def test_bad_settings_are_refused_by_name_and_change_nothing(
    api: tuple[TestClient, dict[str, str]],
    engine: Engine,
    drift_settings: dict[str, Any],
    message: str,
) -> None:
    client, headers = api
    response = client.put(SETTINGS, json={"drift": drift_settings}, headers=headers)
    assert response.status_code == 422, response.text
    assert message in response.text
    assert client.get(SETTINGS, headers=headers).json() == {
        "deployment": "churn-live",
        "drift": DEFAULTS,
    }
    assert _audits(engine) == []


def test_settings_round_trip_are_audited_and_take_precedence_below_the_query(
    api: tuple[TestClient, dict[str, str]], engine: Engine
) -> None:
    client, headers = api
    before = client.get(DRIFT, params={"start": START, "end": END}, headers=headers).json()
    assert {f["threshold_source"] for f in before["features"]} == {"default"}
    assert before["drift_share"] == 0.5

    stored = {"threshold": 0.01, "feature_thresholds": {"plan": 0.2}, "drift_share": 0.25}
    response = client.put(SETTINGS, json={"drift": stored}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"deployment": "churn-live", "drift": {**DEFAULTS, **stored}}
    assert client.get(SETTINGS, headers=headers).json() == response.json()
    [event] = _audits(engine)
    assert event.after is not None
    assert event.after["drift"]["feature_thresholds"] == {"plan": 0.2}
    assert event.before == {}

    report = client.get(DRIFT, params={"start": START, "end": END}, headers=headers).json()
    by_name = {f["name"]: f for f in report["features"]}
    assert (by_name["plan"]["threshold"], by_name["plan"]["threshold_source"]) == (0.2, "feature")
    assert (by_name["tenure"]["threshold"], by_name["tenure"]["threshold_source"]) == (
        0.01,
        "deployment",
    )
    assert report["drift_share"] == 0.25

    query = {"start": START, "end": END, "feature_threshold": "tenure=0.04", "drift_share": 0.9}
    report = client.get(DRIFT, params=query, headers=headers).json()
    by_name = {f["name"]: f for f in report["features"]}
    assert (by_name["tenure"]["threshold"], by_name["tenure"]["threshold_source"]) == (
        0.04,
        "query",
    )
    assert by_name["plan"]["threshold_source"] == "feature"
    assert report["drift_share"] == 0.9
    everything = client.get(DRIFT, params={"threshold": 0.3}, headers=headers).json()
    assert {f["threshold_source"] for f in everything["features"]} == {"query"}

    bad = client.get(DRIFT, params={"threshold": 1.5}, headers=headers)
    assert bad.status_code == 422
    assert "is no p-value threshold" in bad.text

    reset = client.put(SETTINGS, json={}, headers=headers)
    assert reset.json()["drift"] == DEFAULTS
    assert len(_audits(engine)) == 2


def test_settings_without_a_champion_reference_refuse_per_feature_entries(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = api
    response = client.post(
        "/api/v1/auth/login", json={"username": "u-empty", "password": "pw-empty"}
    )
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    path = "/api/v1/deployments/empty/monitoring/settings"
    refused = client.put(path, json={"drift": {"tests": {"plan": "psi"}}}, headers=headers)
    assert refused.status_code == 422
    assert "cannot be checked" in refused.text
    accepted = client.put(
        path, json={"drift": {"method": "fixed", "threshold": 0.2}}, headers=headers
    )
    assert accepted.status_code == 200, accepted.text


# ---- alerts ------------------------------------------------------------------------------------


def test_drift_alerts_use_the_stored_settings(engine: Engine) -> None:
    BIN_CACHE.clear()
    factory = make_session_factory(engine)
    rng = np.random.default_rng(41)
    with unit_of_work(factory) as session:
        seeded = seed_deployment(session, "alerting")
        attach_reference(session, seeded, reference_frame(np.random.default_rng(1), 800))
        records = records_from(
            reference_frame(rng, 600), seeded.deployment.id, seeded.version.id, rng=rng
        )
        assert not ingest(session, records).rejected
        rule = alerts.create_rule(
            session,
            seeded.user,
            seeded.deployment,
            AlertRuleCreate(kind="drift", threshold=0, feature="plan", cooldown_seconds=0),
        )
        rule_id, deployment_id = rule.id, seeded.deployment.id
    at = datetime.fromtimestamp(T0 + 3 * 3600, UTC)
    assert alerts.evaluate_and_notify(factory, SECRET, now=at) == []
    with unit_of_work(factory) as session:
        deployment = session.get(Deployment, deployment_id)
        assert deployment is not None
        # p < 0.999: a fresh sample "drifts" under this (absurd) stored threshold.
        deployment.monitoring_settings = {"drift": {"feature_thresholds": {"plan": 0.999}}}
    fired = alerts.evaluate_and_notify(factory, SECRET, now=at)
    assert [(t.rule_id, t.state) for t in fired] == [(rule_id, "firing")]
