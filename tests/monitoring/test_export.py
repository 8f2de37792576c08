"""GET …/monitoring/export on SQLite and PostgreSQL: CSV round trip (one row per input row,
formula-like cells neutralised, labels joined), Parquet, and the 422 bounds."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from konan.db.engine import make_session_factory, unit_of_work
from konan.monitoring import export
from konan.monitoring.ingest import ingest
from konan.monitoring.orm import GroundTruth
from konan.registry.orm import ModelVersion
from tests.factories import seed_deployment

T0 = 1_700_000_000 // 3600 * 3600
START = datetime.fromtimestamp(T0, UTC).isoformat()
END = datetime.fromtimestamp(T0 + 3600, UTC).isoformat()
PATH = "/api/v1/deployments/churn-live/monitoring/export"
HOSTILE = ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\tlead", "\rcr", "plain"]


def _record(i: int, dep: int, ver: int, rows: list[dict[str, Any]], status: int = 200) -> Any:
    return {
        "request_id": f"r-{i:04d}",
        "deployment_id": dep,
        "model_version_id": ver,
        "role": "champion",
        "at": T0 + 10 + i,
        "inputs": rows,
        "outputs": {"predictions": [j % 2 for j in range(len(rows))]},
        "latency_ms": 2.5,
        "status_code": status,
        "error": None,
    }


@pytest.fixture
def api(app: FastAPI, engine: Engine) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with unit_of_work(make_session_factory(engine)) as session:
        seeded = seed_deployment(session, "churn-live")
        version = session.get(ModelVersion, seeded.version.id)
        assert version is not None
        version.signature = {"inputs": [{"name": "tenure"}, {"name": "plan"}]}
        dep, ver = seeded.deployment.id, seeded.version.id
        records = [
            _record(i, dep, ver, [{"tenure": i, "plan": HOSTILE[i % len(HOSTILE)]}] * (1 + i % 3))
            for i in range(40)
        ]
        records.append(_record(40, dep, ver, [{"tenure": -5, "plan": "x", "extra": "=1"}]))
        records.append(_record(41, dep, ver, [], status=422))
        assert not ingest(session, records).rejected
        session.add(
            GroundTruth(
                request_id="r-0001", deployment_id=dep, labels=[1, 0], received_at=datetime.now(UTC)
            )
        )
    with TestClient(app) as client:
        token = client.post(
            "/api/v1/auth/login", json={"username": "u-churn-live", "password": "pw-churn-live"}
        ).json()["access_token"]
        yield client, {"Authorization": f"Bearer {token}"}


def _expected_rows() -> int:
    return sum(1 + i % 3 for i in range(40)) + 2


def test_csv_round_trip_neutralises_formula_cells(
    api: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "BATCH", 7)  # several keyset pages
    client, headers = api
    response = client.get(PATH, params={"start": START, "end": END}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "churn-live-predictions.csv" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert list(rows[0]) == [*export.FIXED, "tenure", "plan", *export.TAIL]
    assert len(rows) == _expected_rows()
    assert [r["request_id"] for r in rows] == sorted(r["request_id"] for r in rows)
    plans = {r["plan"] for r in rows}
    assert {'\'=HYPERLINK("http://x")', "'+1+2", "'-2+3", "'@SUM(A1)", "'\tlead"} <= plans
    assert "'\rcr" in plans
    assert "plain" in plans
    assert not any(p.startswith(("=", "+", "-", "@", "\t", "\r")) for p in plans if p)
    negative = next(r for r in rows if r["request_id"] == "r-0040")
    assert negative["tenure"] == "-5"  # a number stays a number
    assert negative["extra_inputs"] == '{"extra":"=1"}'  # JSON text, kept in full
    labelled = [r for r in rows if r["request_id"] == "r-0001"]
    assert [r["label"] for r in labelled] == ["1", "0"]
    assert [r["prediction"] for r in labelled] == ["0", "1"]
    rejected = next(r for r in rows if r["request_id"] == "r-0041")
    assert rejected["status_code"] == "422"
    assert rejected["tenure"] == ""
    assert rows[0]["version"] == "1"
    assert rows[0]["role"] == "champion"


def test_parquet_holds_the_same_rows(api: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = api
    response = client.get(
        PATH, params={"start": START, "end": END, "format": "parquet"}, headers=headers
    )
    assert response.status_code == 200, response.text
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == _expected_rows()
    assert table.column_names == [*export.FIXED, "tenure", "plan", *export.TAIL]
    data = table.to_pydict()
    assert '=HYPERLINK("http://x")' in data["plan"]  # typed data: stored as it was sent
    assert data["label"][1:3] == [1, 0]


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({"start": "2020-01-01T00:00:00Z", "end": "2020-03-01T00:00:00Z"}, "longer than"),
        ({"start": END, "end": START}, "must be before"),
        ({"format": "xlsx"}, "format"),
    ],
)
def test_bad_windows_and_formats_are_refused(
    api: tuple[TestClient, dict[str, str]], params: dict[str, str], phrase: str
) -> None:
    client, headers = api
    response = client.get(PATH, params=params, headers=headers)
    assert response.status_code == 422, response.text
    assert phrase in response.text


def test_parquet_over_the_row_bound_is_refused(
    api: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "PARQUET_MAX_REQUESTS", 10)
    client, headers = api
    params = {"start": START, "end": END, "format": "parquet"}
    response = client.get(PATH, params=params, headers=headers)
    assert response.status_code == 422, response.text
    assert "at most 10" in response.json()["detail"]
    csv_response = client.get(PATH, params={**params, "format": "csv"}, headers=headers)
    assert csv_response.status_code == 200


def test_neutralise() -> None:
    assert export.neutralise("=1+1") == "'=1+1"
    assert export.neutralise("a=1") == "a=1"
    assert export.neutralise(-3) == -3
    assert export.neutralise(None) is None
