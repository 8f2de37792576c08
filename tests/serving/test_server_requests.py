"""A real model server answering good and bad predict requests (ADVERSARIAL group C, A04/A05).

Every bad request gets a 4xx with a JSON body, never a 5xx, and leaves no prediction record;
a good one gets predictions, probabilities, the version, and exactly one record in the spool."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io

from tests.serving import model_builders as mb
from tests.serving.serving_harness import (
    CHURN_SIGNATURE,
    ROW,
    Deployment,
    KeyServer,
    ServerProcess,
    onnx_logistic,
    served,
    spec,
    wait_for,
)

KEY = "kn_good_key_for_requests_0001"
MAX_ROWS = 5
CHURN_ROW = {"tenure": 12.0, "spend": 40.0, "plan": "pro"}


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyServer]:
    server = KeyServer().start()
    server.add(KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def numeric(tmp_path_factory: pytest.TempPathFactory, keys: KeyServer) -> Iterator[ServerProcess]:
    deployment = Deployment(tmp_path_factory.mktemp("numeric"))
    sha = deployment.put(onnx_logistic(deployment.root))
    deployment.write(spec([served(1, sha)], keys.url, max_batch_rows=MAX_ROWS))
    server = ServerProcess(deployment)
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory, keys: KeyServer) -> Iterator[ServerProcess]:
    deployment = Deployment(tmp_path_factory.mktemp("churn"))
    data = skops.io.dumps(mb.churn_pipeline())
    trusted = skops.io.get_untrusted_types(data=data)
    sha = deployment.put(data)
    version = served(
        1, sha, flavor="sklearn", signature=CHURN_SIGNATURE, trusted_types=list(trusted)
    )
    deployment.write(spec([version], keys.url))
    server = ServerProcess(deployment)
    server.wait_ready()
    yield server
    server.stop()


def rid() -> str:
    return uuid.uuid4().hex


def assert_refused(
    server: ServerProcess,
    status: int,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    key: str | None = KEY,
    path: str = "/predict",
    good: dict[str, Any] = ROW,
) -> dict[str, Any]:
    """The request is refused with `status` and a JSON error, and leaves no record."""
    request_id = rid()
    response = server.predict(
        body,
        key=key,
        raw=raw,
        headers={"x-request-id": request_id, **(headers or {})},
        path=path,
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    doc: dict[str, Any] = response.json()
    assert isinstance(doc["detail"], str)
    assert "Traceback" not in response.text
    assert doc["request_id"] == request_id
    # Records are written in order: once a later good request is logged, this one would be too.
    marker = server.predict({"inputs": [good]}, key=KEY).json()["request_id"]
    wait_for(lambda: server.deployment.records_for(marker))
    assert server.deployment.records_for(request_id) == []
    return doc


# ---- a good request -----------------------------------------------------------------------------


def test_valid_request_answers_predictions_probabilities_and_version(
    numeric: ServerProcess,
) -> None:
    rows = [ROW, {"a": -3.0, "b": 2, "c": 0.25, "d": 1}]
    response = numeric.predict({"inputs": rows}, key=KEY)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["model_version"] == 1
    assert response.headers["x-konan-model-version"] == "1"
    assert len(doc["predictions"]) == 2
    assert set(doc["predictions"]) <= {0, 1}
    assert len(doc["probabilities"]) == 2
    for pair in doc["probabilities"]:
        assert sum(pair) == pytest.approx(1.0, abs=1e-5)
    expected = mb.logistic().predict(np.array([[r[n] for n in mb.NUMERIC] for r in rows]))
    assert doc["predictions"] == expected.tolist()
    assert len(doc["request_id"]) == 32
    assert response.headers["x-request-id"] == doc["request_id"]

    records = wait_for(lambda: numeric.deployment.records_for(doc["request_id"]))
    assert len(records) == 1
    record = records[0]
    assert record["role"] == "champion"
    assert record["deployment_id"] == 7
    assert record["model_version_id"] == 101
    assert record["status_code"] == 200
    assert record["inputs"] == rows
    assert record["outputs"]["predictions"] == doc["predictions"]
    assert record["latency_ms"] > 0


def test_the_control_plane_route_reaches_the_same_handler(numeric: ServerProcess) -> None:
    response = numeric.predict(
        {"inputs": [ROW]}, key=KEY, path="/api/v1/deployments/churn-live/predict"
    )
    assert response.status_code == 200
    assert response.json()["model_version"] == 1


def test_unknown_deployment_is_404_without_a_record(numeric: ServerProcess) -> None:
    doc = assert_refused(
        numeric, 404, body={"inputs": [ROW]}, path="/api/v1/deployments/other/predict"
    )
    assert doc["code"] == "not_found"


def test_a_sane_incoming_request_id_is_kept_and_a_bad_one_replaced(
    numeric: ServerProcess,
) -> None:
    mine = f"trace-{uuid.uuid4().hex[:20]}.1"
    response = numeric.predict({"inputs": [ROW]}, key=KEY, headers={"x-request-id": mine})
    assert response.json()["request_id"] == mine
    response = numeric.predict(
        {"inputs": [ROW]}, key=KEY, headers={"x-request-id": "bad id\twith spaces"}
    )
    assert response.json()["request_id"] != "bad id\twith spaces"
    assert len(response.json()["request_id"]) == 32


# ---- keys (A04, A05) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "headers"),
    [
        (None, {}),
        ("kn_not_a_key_we_know", {}),
        (None, {"authorization": f"Basic {KEY}"}),
        (None, {"authorization": "Bearer"}),
    ],
)
def test_missing_or_unknown_key_is_401(
    numeric: ServerProcess, key: str | None, headers: dict[str, str]
) -> None:
    doc = assert_refused(numeric, 401, body={"inputs": [ROW]}, key=key, headers=headers)
    assert doc["code"] == "unauthenticated"


@pytest.mark.parametrize("name", ["key", "api_key", "apikey", "token", "access_token"])
def test_key_in_query_string_is_401_and_never_logged(numeric: ServerProcess, name: str) -> None:
    doc = assert_refused(
        numeric, 401, body={"inputs": [ROW]}, path=f"/predict?{name}={KEY}", key=KEY
    )
    assert doc["code"] == "unauthenticated"
    assert "Authorization header" in doc["detail"]
    assert KEY not in numeric.stderr()
    assert KEY not in numeric.stdout_path.read_text()


def test_expired_key_is_401(numeric: ServerProcess, keys: KeyServer) -> None:
    expired = "kn_expired_key_000000001"
    keys.add(expired, expires_at=1.0)
    # Wait until the server holds it (as expired), i.e. the refresh after adding it happened.
    calls = keys.calls
    wait_for(lambda: keys.calls >= calls + 2)
    assert_refused(numeric, 401, body={"inputs": [ROW]}, key=expired)


def test_used_key_prefixes_are_reported_to_the_control_plane(
    numeric: ServerProcess, keys: KeyServer
) -> None:
    assert numeric.predict({"inputs": [ROW]}, key=KEY).status_code == 200
    wait_for(lambda: any(KEY[:7] in report["used"] for report in keys.used_reports))


# ---- bad input (group C) ----------------------------------------------------------------------


def test_missing_feature_is_422_naming_it(numeric: ServerProcess) -> None:
    row = {k: v for k, v in ROW.items() if k != "c"}
    doc = assert_refused(numeric, 422, body={"inputs": [ROW, row]})
    assert "row 1" in doc["detail"]
    assert "'c'" in doc["detail"]
    assert doc["errors"][0] == {
        "row": 1,
        "feature": "c",
        "reason": "missing_feature",
        "message": doc["detail"],
    }


def test_unknown_feature_is_422_naming_it(numeric: ServerProcess) -> None:
    doc = assert_refused(numeric, 422, body={"inputs": [{**ROW, "surprise": 1}]})
    assert "'surprise'" in doc["detail"]
    assert doc["errors"][0]["reason"] == "unknown_feature"


@pytest.mark.parametrize("value", ["1.5", [1.5], {"v": 1.5}, True])
def test_wrong_type_is_422(numeric: ServerProcess, value: Any) -> None:
    doc = assert_refused(numeric, 422, body={"inputs": [{**ROW, "b": value}]})
    assert doc["errors"][0]["reason"] == "wrong_type"
    assert doc["errors"][0]["feature"] == "b"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_422(numeric: ServerProcess, literal: bytes) -> None:
    raw = b'{"inputs": [{"a": ' + literal + b', "b": 1, "c": 1, "d": 1}]}'
    doc = assert_refused(numeric, 422, raw=raw)
    assert "NaN, Infinity and -Infinity are not valid JSON" in doc["detail"]


def test_null_for_a_non_nullable_feature_is_422(numeric: ServerProcess) -> None:
    doc = assert_refused(numeric, 422, body={"inputs": [{**ROW, "d": None}]})
    assert doc["errors"][0]["reason"] == "null_not_allowed"


def test_batch_over_the_limit_is_413_and_exactly_the_limit_is_served(
    numeric: ServerProcess,
) -> None:
    doc = assert_refused(numeric, 413, body={"inputs": [ROW] * (MAX_ROWS + 1)})
    assert doc["max_batch_rows"] == MAX_ROWS
    response = numeric.predict({"inputs": [ROW] * MAX_ROWS}, key=KEY)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == MAX_ROWS


@pytest.mark.parametrize(
    "raw", [b"", b"null", b"{}", b'{"inputs": null}', b'{"inputs": []}', b"[]"]
)
def test_empty_or_null_body_is_422(numeric: ServerProcess, raw: bytes) -> None:
    assert_refused(numeric, 422, raw=raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"inputs": [{"a": 1, "b": 2, "c": 3, "d": 4}]',
        b'{"inputs": [{"a": 1, "b": 2, "c": 3, "d": 4}]} {"more": 1}',
        b'{"inputs": [{"a": 1, "b": 2, "c": 3, "d": 4,}]}',
        b"\xff\xfe not json",
    ],
)
def test_malformed_json_or_trailing_garbage_is_400(numeric: ServerProcess, raw: bytes) -> None:
    doc = assert_refused(numeric, 400, raw=raw)
    assert doc["code"] == "bad_request"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_non_json_media_types_are_415(numeric: ServerProcess, content_type: str) -> None:
    doc = assert_refused(
        numeric, 415, body={"inputs": [ROW]}, headers={"content-type": content_type}
    )
    assert doc["code"] == "unsupported_media_type"


def test_json_with_a_charset_is_accepted(numeric: ServerProcess) -> None:
    response = numeric.predict(
        {"inputs": [ROW]}, key=KEY, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


def test_duplicate_keys_last_wins_and_the_log_shows_what_the_model_saw(
    numeric: ServerProcess,
) -> None:
    raw = b'{"inputs": [{"a": 100.0, "b": -1.25, "c": 2.0, "d": 0.0, "a": -100.0}]}'
    response = numeric.predict(None, key=KEY, raw=raw)
    assert response.status_code == 200
    seen = {**ROW, "a": -100.0}
    plain = numeric.predict({"inputs": [seen]}, key=KEY).json()
    doc = response.json()
    assert doc["predictions"] == plain["predictions"]
    assert doc["probabilities"] == plain["probabilities"]
    record = wait_for(lambda: numeric.deployment.records_for(doc["request_id"]))[0]
    assert record["inputs"] == [seen]


def test_the_body_limit_is_413(numeric: ServerProcess) -> None:
    raw = b'{"inputs": [' + b" " * (17 * 1024 * 1024) + b"]}"
    assert_refused(numeric, 413, raw=raw)


def test_rejections_are_counted_by_reason(numeric: ServerProcess) -> None:
    numeric.predict({"inputs": [{**ROW, "a": "x"}]}, key=KEY)
    metrics = numeric.http.get(f"{numeric.admin_url}/metrics").text
    assert 'konan_serving_rejections_total{reason="wrong_type"}' in metrics
    assert 'konan_serving_requests_total{role="champion",status="200",version="1"}' in metrics


def test_metrics_and_stats_need_the_admin_port_or_the_serving_token(
    numeric: ServerProcess,
) -> None:
    for path in ("/metrics", "/stats"):
        assert numeric.http.get(f"{numeric.url}{path}").status_code == 401
        assert (
            numeric.http.get(
                f"{numeric.url}{path}", headers={"authorization": f"Bearer {KEY}"}
            ).status_code
            == 401
        )
        assert numeric.http.get(f"{numeric.admin_url}{path}").status_code == 200
    assert numeric.http.get(f"{numeric.url}/healthz").status_code == 200
    assert numeric.http.get(f"{numeric.url}/readyz").status_code == 200


# ---- strings and categories (C14, C16) ---------------------------------------------------------


def test_categorical_model_serves_and_logs(churn: ServerProcess) -> None:
    response = churn.predict({"inputs": [CHURN_ROW]}, key=KEY)
    assert response.status_code == 200, response.text
    doc = response.json()
    record = wait_for(lambda: churn.deployment.records_for(doc["request_id"]))[0]
    assert "flags" not in record["outputs"]


def test_unseen_category_is_rejected_naming_it(churn: ServerProcess) -> None:
    doc = assert_refused(
        churn, 422, body={"inputs": [{**CHURN_ROW, "plan": "platinum"}]}, good=CHURN_ROW
    )
    assert "'platinum'" in doc["detail"]
    assert doc["errors"][0]["reason"] == "unseen_category"


@pytest.mark.parametrize(
    ("plan", "reason"),
    [("p" * 10_001, "string_too_long"), ("pro\x00", "nul_character"), (12, "wrong_type")],
)
def test_long_strings_and_nul_are_422(churn: ServerProcess, plan: Any, reason: str) -> None:
    doc = assert_refused(churn, 422, body={"inputs": [{**CHURN_ROW, "plan": plan}]}, good=CHURN_ROW)
    assert doc["errors"][0]["reason"] == reason


def test_unseen_category_in_flag_mode_predicts_and_flags_the_record(
    tmp_path: Path, keys: KeyServer
) -> None:
    deployment = Deployment(tmp_path)
    data = skops.io.dumps(mb.churn_pipeline())
    sha = deployment.put(data)
    version = served(
        1,
        sha,
        flavor="sklearn",
        signature=CHURN_SIGNATURE,
        trusted_types=list(skops.io.get_untrusted_types(data=data)),
    )
    deployment.write(spec([version], keys.url, unseen_category="flag"))
    server = ServerProcess(deployment)
    try:
        server.wait_ready()
        response = server.predict(
            {"inputs": [CHURN_ROW, {**CHURN_ROW, "plan": "platinum"}]}, key=KEY
        )
        assert response.status_code == 200, response.text
        doc = response.json()
        assert len(doc["predictions"]) == 2
        record = wait_for(lambda: deployment.records_for(doc["request_id"]))[0]
        assert record["outputs"]["flags"] == {
            "unseen_categories": [{"row": 1, "feature": "plan", "value": "platinum"}]
        }
        assert record["inputs"][1]["plan"] == "platinum"
    finally:
        server.stop()
