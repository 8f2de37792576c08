"""Per-key rate limits on the model server (ADVERSARIAL E01): a burst over the key's budget is
answered 429 with Retry-After, the model is not called, and no prediction record is written."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from konan.serving.key_limits import KeyRate, KeyRateLimiter
from konan.serving.keys import parse_keys
from konan.serving.validation import Rejected
from tests.serving.serving_harness import (
    ROW,
    Deployment,
    KeyServer,
    ServerProcess,
    python_model,
    served,
    spec,
    wait_for,
)

LIMITED = "kn_limited_key_000000000001"
OTHER = "kn_unlimited_key_00000000001"

# Appends one line per call to a file, so the test can see whether the model ran.
COUNTING = """
import numpy as np

CALLS = {calls!r}

class Model:
    classes_ = [0, 1]

    @classmethod
    def load(cls, model_dir):
        return cls()

    def predict(self, X):
        with open(CALLS, "a") as out:
            out.write("call\\n")
        return (X["a"].to_numpy() > 0).astype(int)
"""


# ---- the limiter itself ----------------------------------------------------------------------


def test_a_burst_of_the_budget_passes_then_one_per_interval() -> None:
    limiter = KeyRateLimiter()
    rate = KeyRate(amount=5, seconds=1.0)
    for _ in range(5):
        limiter.admit(1, rate, now=100.0)
    with pytest.raises(Rejected) as refused:
        limiter.admit(1, rate, now=100.0)
    assert refused.value.status == 429
    assert refused.value.code == "rate_limited"
    assert dict(refused.value.headers)[b"retry-after"] == b"1"
    assert "5 requests per 1 s" in refused.value.detail
    limiter.admit(1, rate, now=100.2)  # one slot freed after seconds/amount
    with pytest.raises(Rejected):
        limiter.admit(1, rate, now=100.2)
    for _ in range(5):  # a full second later the whole burst is available again
        limiter.admit(1, rate, now=101.3)


def test_keys_have_separate_budgets_and_retry_after_is_the_wait() -> None:
    limiter = KeyRateLimiter()
    slow = KeyRate(amount=1, seconds=60.0)
    limiter.admit(1, slow, now=0.0)
    with pytest.raises(Rejected) as refused:
        limiter.admit(1, slow, now=10.0)
    assert dict(refused.value.headers)[b"retry-after"] == b"50"
    limiter.admit(2, slow, now=10.0)  # another key is untouched
    assert limiter.limited == 1


def test_idle_keys_are_forgotten_when_the_table_is_full() -> None:
    limiter = KeyRateLimiter(max_entries=10)
    rate = KeyRate(amount=1, seconds=1.0)
    for key in range(10):
        limiter.admit(key, rate, now=0.0)
    limiter.admit(99, rate, now=5.0)  # everyone's bucket refilled: the old entries go
    assert len(limiter._tat) == 1


def test_the_key_list_carries_rates_and_refuses_nonsense_ones() -> None:
    digest = "a" * 64
    keys = parse_keys(
        b'{"keys": [{"id": 1, "prefix": "kn_a", "sha256": "' + digest.encode() + b'", '
        b'"expires_at": null, "rate": {"amount": 10, "seconds": 60}}]}'
    )
    assert keys[digest].rate == KeyRate(amount=10, seconds=60.0)
    for bad in (b'{"amount": 0, "seconds": 1}', b'{"amount": 1.5, "seconds": 1}', b'"fast"'):
        doc = (
            b'{"keys": [{"id": 1, "prefix": "kn_a", "sha256": "'
            + digest.encode()
            + b'", "rate": '
            + bad
            + b"}]}"
        )
        assert parse_keys(doc) == {}  # a malformed entry is skipped, not trusted unlimited


# ---- through a real model server -------------------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, KeyServer]]:
    keys = KeyServer().start()
    keys.add(LIMITED, rate=(3, 60.0))
    keys.add(OTHER)
    calls = tmp_path / "calls.txt"
    deployment = Deployment(tmp_path / "deployment")
    sha = deployment.put(python_model(COUNTING.format(calls=str(calls))))
    deployment.write(spec([served(1, sha, flavor="python")], keys.url))
    server = ServerProcess(deployment)
    try:
        server.wait_ready()
        yield server, calls, keys
    finally:
        server.stop()
        keys.stop()


def test_a_burst_over_the_key_budget_is_429_unlogged_and_never_reaches_the_model(
    limited: tuple[ServerProcess, Path, KeyServer],
) -> None:
    server, calls, _ = limited
    warmup = calls.read_text().count("call") if calls.exists() else 0  # loading warms it up
    answers = []
    for _ in range(8):
        request_id = uuid.uuid4().hex
        response = server.predict(
            {"inputs": [ROW]}, key=LIMITED, headers={"x-request-id": request_id}
        )
        answers.append((request_id, response))
    assert [r.status_code for _, r in answers] == [200] * 3 + [429] * 5
    for request_id, response in answers[3:]:
        assert response.headers["content-type"] == "application/json"
        assert 1 <= int(response.headers["retry-after"]) <= 60
        doc = response.json()
        assert doc["code"] == "rate_limited"
        assert doc["request_id"] == request_id
        assert LIMITED not in response.text
    # Another key is not held back by the first one's budget.
    assert server.predict({"inputs": [ROW]}, key=OTHER).status_code == 200
    marker = server.predict({"inputs": [ROW]}, key=OTHER).json()["request_id"]
    wait_for(lambda: server.deployment.records_for(marker))
    # 3 + 2 calls: none of the 429s ran the model
    assert calls.read_text().count("call") - warmup == 5
    for request_id, _ in answers[:3]:
        assert len(server.deployment.records_for(request_id)) == 1
    for request_id, _ in answers[3:]:
        assert server.deployment.records_for(request_id) == []
    metrics = server.http.get(f"{server.admin_url}/metrics").text
    assert 'konan_serving_rejections_total{reason="rate_limited"} 5.0' in metrics
