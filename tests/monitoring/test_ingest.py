"""ingest(): what lands in prediction_logs, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from konan.db.engine import dumps_json, unit_of_work
from konan.monitoring.ingest import (
    DATABASE_REJECTED,
    INVALID,
    UNKNOWN_DEPLOYMENT,
    UNKNOWN_MODEL_VERSION,
    IngestResult,
    ingest,
)
from konan.monitoring.orm import HealthMinute, PredictionLog

from ._support import record, wait_for
from .conftest import Refs, stored


def test_records_are_stored_with_their_minute_bucket(
    session_factory: sessionmaker[Session], refs: Refs
) -> None:
    rec = record(1, refs.deployment_id, refs.model_version_id, at=1_700_000_125.75)
    with unit_of_work(session_factory) as session:
        result = ingest(session, [rec])
    assert (result.inserted, result.duplicates, result.rejected) == (1, 0, [])

    with session_factory() as session:
        row = session.scalars(sa.select(PredictionLog)).one()
    assert row.request_id == rec["request_id"]
    assert row.deployment_id == refs.deployment_id
    assert row.model_version_id == refs.model_version_id
    assert row.role == "champion"
    assert row.at == datetime.fromtimestamp(rec["at"], UTC)
    assert row.bucket_start == 1_700_000_100  # 1_700_000_126.75 floored to the minute
    assert row.bucket_start % 60 == 0
    assert row.inputs == rec["inputs"]
    assert row.outputs == rec["outputs"]
    assert (row.latency_ms, row.status_code, row.error) == (1.5, 200, None)


def test_ingesting_the_same_records_again_stores_nothing_new(
    session_factory: sessionmaker[Session], refs: Refs
) -> None:
    batch = [record(i, refs.deployment_id) for i in range(5)]
    with unit_of_work(session_factory) as session:
        first = ingest(session, batch)
    with unit_of_work(session_factory) as session:
        again = ingest(session, [*batch[2:], record(9, refs.deployment_id)])

    assert (first.inserted, first.duplicates) == (5, 0)
    assert (again.inserted, again.duplicates) == (1, 3)
    assert len(stored(session_factory)) == 6


def test_one_request_is_stored_once_per_role(
    session_factory: sessionmaker[Session], refs: Refs
) -> None:
    champion = record(1, refs.deployment_id)
    shadow = record(1, refs.deployment_id, role="shadow")
    with unit_of_work(session_factory) as session:
        result = ingest(session, [champion, shadow, champion])

    assert (result.inserted, result.duplicates) == (2, 1)
    assert sorted(stored(session_factory)) == [("req-000001", "champion"), ("req-000001", "shadow")]


def test_bad_records_are_rejected_and_the_rest_land(
    session_factory: sessionmaker[Session], refs: Refs
) -> None:
    good = [record(i, refs.deployment_id, refs.model_version_id) for i in range(3)]
    unknown_deployment = record(10, refs.deployment_id + 1000)
    unknown_version = record(11, refs.deployment_id, refs.model_version_id + 1000)
    bad_role = {**record(12, refs.deployment_id), "role": "primary"}
    bad_time = {**record(13, refs.deployment_id), "at": "yesterday"}
    millis = {**record(14, refs.deployment_id), "at": 1_700_000_000_000.0}
    no_request_id = {**record(15, refs.deployment_id), "request_id": ""}
    not_an_object = ["req-16", refs.deployment_id]
    batch = [
        good[0],
        unknown_deployment,
        unknown_version,
        good[1],
        bad_role,
        bad_time,
        millis,
        no_request_id,
        not_an_object,
        good[2],
    ]

    with unit_of_work(session_factory) as session:
        result = ingest(session, batch)

    assert result.inserted == 3
    assert {(r.index, r.reason) for r in result.rejected} == {
        (1, UNKNOWN_DEPLOYMENT),
        (2, UNKNOWN_MODEL_VERSION),
        (4, INVALID),
        (5, INVALID),
        (6, INVALID),
        (7, INVALID),
        (8, INVALID),
    }
    assert "role" in next(r.detail for r in result.rejected if r.index == 4)
    assert [r for r, _ in stored(session_factory)] == [g["request_id"] for g in good]


def test_nul_characters_are_stored_replaced_rather_than_failing_the_batch(
    session_factory: sessionmaker[Session], refs: Refs
) -> None:
    # PostgreSQL text and JSONB refuse NUL; the record must still be kept.
    nul = {
        **record(1, refs.deployment_id),
        "inputs": [{"name\x00": "a\x00b"}],
        "error": "boom\x00",
    }
    with unit_of_work(session_factory) as session:
        result = ingest(session, [nul, record(2, refs.deployment_id)])

    assert (result.inserted, result.rejected) == (2, [])
    with session_factory() as session:
        row = session.scalars(
            sa.select(PredictionLog).where(PredictionLog.request_id == "req-000001")
        ).one()
    assert row.inputs == [{"name\ufffd": "a\ufffdb"}]
    assert row.error == "boom\ufffd"


def test_a_record_the_database_refuses_is_rejected_alone(
    session_factory: sessionmaker[Session], refs: Refs
) -> None:
    # Records from the stream cannot hold NaN (orjson writes null), but a direct caller can:
    # PostgreSQL's JSONB refuses it, SQLite keeps it. Either way the batch survives.
    odd = {**record(1, refs.deployment_id), "outputs": {"predictions": [float("nan")]}}
    with unit_of_work(session_factory) as session:
        dialect = session.get_bind().dialect.name
        result = ingest(
            session, [record(0, refs.deployment_id), odd, record(2, refs.deployment_id)]
        )

    kept = [r for r, _ in stored(session_factory)]
    if dialect == "postgresql":
        assert [(r.index, r.reason) for r in result.rejected] == [(1, DATABASE_REJECTED)]
        assert kept == ["req-000000", "req-000002"]
    else:
        assert result.rejected == []
        assert kept == ["req-000000", "req-000001", "req-000002"]


def test_chunks_of_one_transaction_each_store_only_their_own_new_rows(
    session_factory: sessionmaker[Session], refs: Refs
) -> None:
    # Several chunks in one unit of work, one of them partly replays: on PostgreSQL each chunk
    # looks up its stored keys first, which must see the earlier chunks of the transaction.
    with unit_of_work(session_factory) as session:
        ingest(session, [record(i, refs.deployment_id) for i in (1, 4)])
    batch = [record(i, refs.deployment_id) for i in range(8)]
    with unit_of_work(session_factory) as session:
        result = ingest(session, batch, chunk_size=3)
        again = ingest(session, batch[5:], chunk_size=3)  # same transaction: all replays

    assert (result.inserted, result.duplicates, result.rejected) == (6, 2, [])
    assert (again.inserted, again.duplicates) == (0, 3)
    assert sorted(r for r, _ in stored(session_factory)) == [f"req-{i:06d}" for i in range(8)]
    with session_factory() as session:
        requests = session.scalar(sa.select(sa.func.sum(HealthMinute.requests)))
    assert requests == 8  # the rollups counted each row once


def test_a_row_committed_by_another_consumer_during_the_copy_is_a_duplicate(
    session_factory: sessionmaker[Session], refs: Refs
) -> None:
    # PostgreSQL looks up the stored keys, then COPYs the rest. Another consumer storing one of
    # them in between (uncommitted at the look-up, committed while the COPY waits on it) must
    # make that record a duplicate, not a second row nor a failed batch.
    with session_factory() as probe:
        if probe.get_bind().dialect.name != "postgresql":
            pytest.skip("the look-up-then-COPY path is PostgreSQL's")
    batch = [record(i, refs.deployment_id) for i in range(5)]
    other = session_factory()
    other.begin()
    assert ingest(other, [batch[3]]).inserted == 1  # not committed yet
    results: list[IngestResult] = []

    def consume() -> None:
        with unit_of_work(session_factory) as session:
            results.append(ingest(session, batch))

    thread = threading.Thread(target=consume)
    thread.start()
    try:
        wait_for(lambda: _waiting_on_a_lock(session_factory), what="the COPY to wait on the row")
        other.commit()
    finally:
        other.close()
        thread.join(timeout=30)
    assert [(r.inserted, r.duplicates, r.rejected) for r in results] == [(4, 1, [])]
    assert sorted(r for r, _ in stored(session_factory)) == [f"req-{i:06d}" for i in range(5)]
    with session_factory() as session:
        requests = session.scalar(sa.select(sa.func.sum(HealthMinute.requests)))
    assert requests == 5  # each row counted once in the rollups


def _waiting_on_a_lock(session_factory: sessionmaker[Session]) -> bool:
    with session_factory() as session:
        waiting = session.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


def test_a_refused_record_in_a_later_chunk_leaves_the_other_chunks_alone(
    session_factory: sessionmaker[Session], refs: Refs
) -> None:
    odd = {**record(4, refs.deployment_id), "inputs": [{"x": float("inf")}]}
    batch = [record(i, refs.deployment_id) for i in range(4)] + [odd, record(5, refs.deployment_id)]
    with unit_of_work(session_factory) as session:
        dialect = session.get_bind().dialect.name
        result = ingest(session, batch, chunk_size=2)

    kept = {r for r, _ in stored(session_factory)}
    if dialect == "postgresql":  # JSONB refuses Infinity; SQLite stores it
        assert [(r.index, r.reason) for r in result.rejected] == [(4, DATABASE_REJECTED)]
        assert kept == {f"req-{i:06d}" for i in (0, 1, 2, 3, 5)}
    else:
        assert (result.inserted, result.rejected) == (6, [])
    with session_factory() as session:
        requests = session.scalar(sa.select(sa.func.sum(HealthMinute.requests)))
    assert requests == len(kept)


@pytest.mark.parametrize(
    "value",
    [
        [{"a": 1.5, "b": None, "c": "é\x00"}],
        {"predictions": [1, 0], "probabilities": [[0.25, 0.75]]},
        {1: "int key"},  # orjson refuses it, the stdlib writes "1"
        [2**70],  # beyond 64 bits: the same
        [float("nan"), float("inf")],  # orjson would write null: the stdlib's NaN is kept
    ],
)
def test_the_json_serializer_writes_what_the_stdlib_would_mean(value: Any) -> None:
    # The engine's JSON serializer (orjson for speed) must never store another value than the
    # stdlib json module did: same document when parsed back, NaN/Infinity kept as such (so
    # PostgreSQL still refuses them rather than storing null).
    def canonical(text: str) -> str:
        return json.dumps(json.loads(text), sort_keys=True)

    assert canonical(dumps_json(value)) == canonical(json.dumps(value))
