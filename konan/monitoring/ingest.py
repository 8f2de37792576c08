"""Store decoded prediction records in prediction_logs: validated, batched, idempotent.

`ingest` never commits (the caller's unit of work does) and never fails a batch because of one
record: a record that is malformed, names a deployment or model version that does not exist, or
that the database refuses is returned as rejected, and the rest land. A record already stored
under the same (request_id, role) is skipped and counted as a duplicate, which makes replaying a
segment or a stream entry harmless.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from konan.core.errors import ConfigError
from konan.db.engine import json_text
from konan.deployments.orm import Deployment
from konan.monitoring import rollups
from konan.monitoring.orm import PredictionLog
from konan.monitoring.stream import ROLES
from konan.registry.orm import ModelVersion

DEFAULT_CHUNK_SIZE = 1000
_TABLE = cast(sa.Table, PredictionLog.__table__)
_MAX_EPOCH = 32503680000.0  # year 3000: anything later is a unit mistake (ms or µs)
_REQUEST_ID_MAX = 64

# Reason codes: stable, few (they label a Prometheus counter); `detail` says more.
INVALID = "invalid_record"
UNKNOWN_DEPLOYMENT = "unknown_deployment"
UNKNOWN_MODEL_VERSION = "unknown_model_version"
DATABASE_REJECTED = "database_rejected"


@dataclass(frozen=True)
class Rejection:
    index: int  # position in the batch given to `ingest`
    reason: str
    detail: str


@dataclass
class IngestResult:
    inserted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    oldest_at: float | None = None  # epoch seconds of the oldest valid record

    @property
    def total(self) -> int:
        return self.inserted + self.duplicates + len(self.rejected)


class _Invalid(ValueError):
    pass


class _Partial(Exception):
    """Raised inside a savepoint to undo an insert that stored only part of a chunk."""


@dataclass
class Prepared:
    """A batch validated and turned into rows, not stored yet (see `prepare`)."""

    rows: list[tuple[int, _Row]]  # (position in the batch, row)
    result: IngestResult  # the records already set aside: invalid, or doubled in the batch


def ingest(
    session: Session,
    records: Sequence[Mapping[str, Any] | Any],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> IngestResult:
    """Insert ``records`` (decoded JSON objects) into prediction_logs; flush, never commit."""
    return store(session, prepare(records), chunk_size=chunk_size)


def prepare(records: Sequence[Mapping[str, Any] | Any]) -> Prepared:
    """Validate ``records`` and build their rows, without the database: the part of `ingest`
    that the consumer runs for the next batch while the previous one is being stored."""
    result = IngestResult()
    rows: list[tuple[int, _Row]] = []
    seen: set[tuple[str, str]] = set()
    for index, record in enumerate(records):
        try:
            row = _to_row(record)
        except _Invalid as exc:
            result.rejected.append(Rejection(index, INVALID, str(exc)))
            continue
        key = (row["request_id"], row["role"])
        if key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        rows.append((index, row))
    return Prepared(rows, result)


def store(
    session: Session, prepared: Prepared, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> IngestResult:
    """Insert a prepared batch; flush, never commit. May be called again after a failure."""
    result = replace(prepared.result, rejected=list(prepared.result.rejected))
    if not prepared.rows:
        return result
    rows = _drop_unknown_references(session, prepared.rows, result)
    insert = _insert_for(session)
    for start in range(0, len(rows), chunk_size):
        _insert_chunk(session, insert, rows[start : start + chunk_size], result)
    return result


# ---- validation ---------------------------------------------------------------------------------


class _Row(dict[str, Any]):
    """A prediction_logs row (column -> value) that also carries its JSON columns as text:
    encoding them is a fair share of the cost of a record, so validation's encoding is the one
    COPY sends. A plain mapping to SQLAlchemy (the attribute is no column)."""

    __slots__ = ("json",)
    json: tuple[str, str]


def _to_row(record: Any) -> _Row:
    # Decoded JSON gives dicts; the exact-type test spares the slower ABC check for them.
    if type(record) is not dict and not isinstance(record, Mapping):
        raise _Invalid(f"a record must be an object, got {type(record).__name__}")
    request_id = record.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= _REQUEST_ID_MAX:
        raise _Invalid(f"request_id must be a string of 1 to {_REQUEST_ID_MAX} characters")
    deployment_id = _positive_int(record.get("deployment_id"), "deployment_id")
    version = record.get("model_version_id")
    model_version_id = None if version is None else _positive_int(version, "model_version_id")
    role = record.get("role", "champion")
    if role not in ROLES:
        raise _Invalid(f"role must be one of {', '.join(sorted(ROLES))}")
    at = _number(record.get("at"), "at")
    if not 0 <= at < _MAX_EPOCH:
        raise _Invalid("at must be epoch seconds")
    inputs = record.get("inputs", [])
    if not isinstance(inputs, list):
        raise _Invalid("inputs must be a list of rows")
    outputs = record.get("outputs", {})
    if not isinstance(outputs, dict):
        raise _Invalid("outputs must be an object")
    latency_ms = _number(record.get("latency_ms", 0.0), "latency_ms")
    if latency_ms < 0:
        raise _Invalid("latency_ms must not be negative")
    status_code = record.get("status_code", 200)
    if type(status_code) is not int or not 100 <= status_code <= 599:
        raise _Invalid("status_code must be an HTTP status")
    error = record.get("error")
    if error is not None and not isinstance(error, str):
        raise _Invalid("error must be a string or null")
    inputs, inputs_json = _json_no_nul(inputs)
    outputs, outputs_json = _json_no_nul(outputs)
    row = _Row(
        request_id=_no_nul(request_id),
        deployment_id=deployment_id,
        model_version_id=model_version_id,
        role=role,
        at=datetime.fromtimestamp(at, UTC),
        bucket_start=int(at // 60) * 60,
        inputs=inputs,
        outputs=outputs,
        latency_ms=latency_ms,
        status_code=status_code,
        error=None if error is None else _no_nul(error),
    )
    row.json = (inputs_json, outputs_json)
    return row


def _positive_int(value: Any, name: str) -> int:
    if type(value) is not int or value <= 0:
        raise _Invalid(f"{name} must be a positive integer")
    return value


def _number(value: Any, name: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Invalid(f"{name} must be a finite number")
    return float(value)


# PostgreSQL text and JSONB cannot hold NUL; store U+FFFD in its place rather than lose the row.
def _no_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _json_no_nul(value: Any) -> tuple[Any, str]:
    """``value`` with NUL replaced, and its JSON text."""
    try:
        encoded = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise _Invalid(f"inputs and outputs must be JSON: {exc}") from None
    if b"\\u0000" in encoded:
        value = _replace_nul(value)
        encoded = orjson.dumps(value)
    return value, json_text(value, encoded)


def _replace_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, list):
        return [_replace_nul(v) for v in value]
    if isinstance(value, dict):
        return {_no_nul(k): _replace_nul(v) for k, v in value.items()}
    return value


# ---- references and insert ------------------------------------------------------------------


def _drop_unknown_references(
    session: Session, rows: list[tuple[int, _Row]], result: IngestResult
) -> list[tuple[int, _Row]]:
    deployment_ids = {row["deployment_id"] for _, row in rows}
    version_ids = {row["model_version_id"] for _, row in rows} - {None}
    known_deployments = set(
        session.scalars(sa.select(Deployment.id).where(Deployment.id.in_(deployment_ids)))
    )
    known_versions = (
        set(session.scalars(sa.select(ModelVersion.id).where(ModelVersion.id.in_(version_ids))))
        if version_ids
        else set()
    )
    kept: list[tuple[int, _Row]] = []
    for index, row in rows:
        if row["deployment_id"] not in known_deployments:
            result.rejected.append(
                Rejection(index, UNKNOWN_DEPLOYMENT, f"no deployment {row['deployment_id']}")
            )
        elif row["model_version_id"] is not None and row["model_version_id"] not in known_versions:
            result.rejected.append(
                Rejection(
                    index, UNKNOWN_MODEL_VERSION, f"no model version {row['model_version_id']}"
                )
            )
        else:
            kept.append((index, row))
    return kept


def _insert_for(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(_TABLE)
    elif dialect == "sqlite":
        stmt = sqlite.insert(_TABLE)
    else:
        raise ConfigError(f"prediction logs need SQLite or PostgreSQL, not {dialect}")
    # No RETURNING: the drivers then run a plain executemany (psycopg pipelines one short,
    # cached statement), several times faster than one huge multi-VALUES statement that psycopg
    # re-parses per batch. Both drivers report the rows actually inserted as the rowcount.
    return stmt.on_conflict_do_nothing(index_elements=["request_id", "role"]).execution_options(
        preserve_rowcount=True
    )


def _insert_chunk(
    session: Session, insert: Any, chunk: list[tuple[int, _Row]], result: IngestResult
) -> None:
    params = [row for _, row in chunk]
    store = _copy_rows if session.get_bind().dialect.name == "postgresql" else _execute_rows
    try:
        try:
            with session.begin_nested():
                new_rows = store(session, insert, params)
        except _Partial:
            with session.begin_nested():
                returning = insert.returning(_TABLE.c.request_id, _TABLE.c.role)
                stored = {(r.request_id, r.role) for r in session.execute(returning, params)}
            new_rows = [row for row in params if (row["request_id"], row["role"]) in stored]
    except (sa.exc.IntegrityError, sa.exc.DataError):
        # One record the checks above let through (a deployment deleted meanwhile, a value the
        # database refuses): find it one savepoint per record, keep the others.
        for index, row in chunk:
            _insert_one(session, insert, index, row, result)
        return
    rollups.update(session, new_rows)
    _count(chunk, len(new_rows), result)


def _execute_rows(session: Session, insert: Any, params: list[_Row]) -> list[_Row]:
    """Executemany of the dialect insert (SQLite); returns the rows it stored."""
    inserted = _rowcount(session.execute(insert, params))
    if inserted in (0, len(params)):
        return params if inserted else []
    # Some rows were replays: ask again with RETURNING (rare) so that rollups add exactly the
    # rows this call stored. Nothing of the first try is kept: undo it with a savepoint.
    raise _Partial


_COLUMNS = (
    "request_id, deployment_id, model_version_id, role, at, bucket_start, inputs, outputs, "
    "latency_ms, status_code, error"
)
_COPY = f"COPY prediction_logs ({_COLUMNS}) FROM STDIN"
_STORED = (
    "SELECT request_id, role FROM prediction_logs WHERE (request_id, role) IN "
    "(SELECT * FROM unnest(%s::text[], %s::text[]))"
)


def _copy_rows(session: Session, insert: Any, params: list[_Row]) -> list[_Row]:
    """PostgreSQL: look up which (request_id, role) keys are already stored (one index probe
    per row), then COPY the others straight into prediction_logs; returns the rows stored.

    The unique key still decides: if another consumer stores one of these keys between the
    look-up and the COPY, the COPY fails with a unique violation, the caller's savepoint undoes
    it, and the chunk is stored one record at a time with ON CONFLICT DO NOTHING. COPY replaces
    a statement per row (and, compared with an INSERT … SELECT … ON CONFLICT from a staging
    table, the staging table's own COPY and JSON parsing)."""
    import psycopg

    raw = session.connection().connection.driver_connection
    assert raw is not None
    try:
        with raw.cursor() as cursor:
            cursor.execute(
                _STORED, ([row["request_id"] for row in params], [row["role"] for row in params])
            )
            stored = set(cursor.fetchall())
            new = (
                [row for row in params if (row["request_id"], row["role"]) not in stored]
                if stored
                else params
            )
            if new:
                with cursor.copy(_COPY) as copy:
                    for row in new:
                        copy.write_row(_copy_values(row))
    except psycopg.IntegrityError as exc:
        # Raised by the driver itself (COPY is not a SQLAlchemy statement): translate, so the
        # caller's per-record fallback and the consumer's error handling see the usual types.
        raise sa.exc.IntegrityError(_COPY, None, exc) from exc
    except psycopg.DataError as exc:
        raise sa.exc.DataError(_COPY, None, exc) from exc
    except psycopg.OperationalError as exc:
        raise sa.exc.OperationalError(_COPY, None, exc) from exc
    return new


def _copy_values(row: _Row) -> tuple[Any, ...]:
    return (
        row["request_id"],
        row["deployment_id"],
        row["model_version_id"],
        row["role"],
        row["at"],
        row["bucket_start"],
        *row.json,
        row["latency_ms"],
        row["status_code"],
        row["error"],
    )


def _insert_one(session: Session, insert: Any, index: int, row: _Row, result: IngestResult) -> None:
    try:
        with session.begin_nested():
            inserted = _rowcount(session.execute(insert, [row]))
    except (sa.exc.IntegrityError, sa.exc.DataError) as exc:
        detail = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        result.rejected.append(Rejection(index, DATABASE_REJECTED, detail[:500]))
        return
    rollups.update(session, [row] if inserted else [])
    _count([(index, row)], inserted, result)


def _rowcount(result: sa.Result[Any]) -> int:
    count: int = result.rowcount  # type: ignore[attr-defined]
    return count


def _count(chunk: list[tuple[int, _Row]], inserted: int, result: IngestResult) -> None:
    result.inserted += inserted
    result.duplicates += len(chunk) - inserted
    oldest = min(row["at"] for _, row in chunk).timestamp()
    if result.oldest_at is None or oldest < result.oldest_at:
        result.oldest_at = oldest
