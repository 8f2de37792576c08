"""Raw prediction export: one output row per input row, as CSV (streamed) or Parquet (bounded).

Columns: ``request_id, at, version, role, status_code, latency_ms``, one column per input
feature (the union of the signature inputs of the model's versions, in version order; when no
version has a signature, the keys of the first rows exported), ``extra_inputs`` (JSON of any
other keys a row had, so nothing is lost), ``prediction`` and ``label`` (the ground truth at
the same position, when it arrived). A request without inputs (a rejected one) gives one row
with empty features.

CSV is streamed: rows are read in keyset-paginated batches of ``BATCH`` requests, each in its
own short read, so memory stays flat whatever the window holds. A text cell that starts with
``= + - @``, a tab or a carriage return gets a leading apostrophe, so a spreadsheet shows it
instead of running it as a formula (ADVERSARIAL D10); numbers stay numbers.

Parquet is written in memory, so it is refused (422) over ``PARQUET_MAX_REQUESTS`` logged
requests; both formats refuse windows longer than ``MAX_SPAN``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from konan.core.errors import InvalidInput
from konan.deployments.orm import Deployment
from konan.monitoring.health import resolve_window
from konan.monitoring.orm import GroundTruth, PredictionLog
from konan.registry.orm import ModelVersion

BATCH = 1000
MAX_SPAN = timedelta(days=31)
DEFAULT_SPAN = timedelta(hours=24)
PARQUET_MAX_REQUESTS = 200_000
FORMATS = ("csv", "parquet")
FIXED = ["request_id", "at", "version", "role", "status_code", "latency_ms"]
TAIL = ["extra_inputs", "prediction", "label"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ExportPlan:
    deployment_id: int
    start: datetime
    end: datetime
    features: list[str]
    versions: dict[int, int]  # model_version_id -> version number

    @property
    def columns(self) -> list[str]:
        return FIXED + self.features + TAIL


def neutralise(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def plan_export(
    session: Session,
    deployment: Deployment,
    *,
    start: datetime | None,
    end: datetime | None,
    fmt: str,
    now: datetime | None = None,
) -> ExportPlan:
    """Checks the request (422s happen here, before any byte is streamed)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be csv or parquet, not {fmt!r}")
    window = resolve_window(start, end, now=now, default_span=DEFAULT_SPAN, max_span=MAX_SPAN)
    rows = session.execute(
        sa.select(ModelVersion.id, ModelVersion.version, ModelVersion.signature)
        .where(ModelVersion.model_id == deployment.model_id)
        .order_by(ModelVersion.version)
    ).all()
    features: list[str] = []
    for _, _, signature in rows:
        for item in (signature or {}).get("inputs") or []:
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name not in features:
                features.append(name)
    plan = ExportPlan(
        deployment.id, window.start, window.end, features, {vid: n for vid, n, _ in rows}
    )
    if fmt == "parquet":
        count = session.scalar(
            sa.select(sa.func.count()).select_from(PredictionLog).where(*_in_window(plan))
        )
        if (count or 0) > PARQUET_MAX_REQUESTS:
            raise InvalidInput(
                f"{count} logged requests in the window; Parquet exports hold at most "
                f"{PARQUET_MAX_REQUESTS}: narrow the window or use format=csv"
            )
    if not plan.features:
        first = session.scalars(
            sa.select(PredictionLog.inputs).where(*_in_window(plan)).limit(BATCH)
        ).all()
        names: list[str] = []
        for inputs in first:
            for row in inputs or []:
                if isinstance(row, dict):
                    names.extend(k for k in row if k not in names)
        plan = ExportPlan(plan.deployment_id, plan.start, plan.end, names, plan.versions)
    return plan


def _in_window(plan: ExportPlan) -> list[Any]:
    lo = int(plan.start.timestamp())
    return [
        PredictionLog.deployment_id == plan.deployment_id,
        PredictionLog.bucket_start >= lo - lo % 60,
        PredictionLog.bucket_start < int(plan.end.timestamp()),
        PredictionLog.at >= plan.start,
        PredictionLog.at < plan.end,
    ]


def _iso(moment: datetime) -> str:
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).isoformat()


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return json.dumps(value, separators=(",", ":"), default=str)


def iter_rows(session_factory: sessionmaker[Session], plan: ExportPlan) -> Iterator[list[Any]]:
    """Every output row in (at, id) order; each batch in its own short read."""
    last: tuple[datetime, int] | None = None
    known = set(plan.features)
    while True:
        with session_factory() as session:
            query = (
                sa.select(
                    PredictionLog.id,
                    PredictionLog.request_id,
                    PredictionLog.at,
                    PredictionLog.model_version_id,
                    PredictionLog.role,
                    PredictionLog.status_code,
                    PredictionLog.latency_ms,
                    PredictionLog.inputs,
                    PredictionLog.outputs,
                    GroundTruth.labels,
                )
                .outerjoin(
                    GroundTruth,
                    sa.and_(
                        GroundTruth.request_id == PredictionLog.request_id,
                        GroundTruth.deployment_id == PredictionLog.deployment_id,
                    ),
                )
                .where(*_in_window(plan))
                .order_by(PredictionLog.at, PredictionLog.id)
                .limit(BATCH)
            )
            if last is not None:
                after = sa.tuple_(
                    sa.literal(last[0], type_=PredictionLog.__table__.c.at.type),
                    sa.literal(last[1], type_=PredictionLog.__table__.c.id.type),
                )
                query = query.where(sa.tuple_(PredictionLog.at, PredictionLog.id) > after)
            batch = session.execute(query).all()
        for (
            log_id,
            request_id,
            at,
            version_id,
            role,
            status,
            latency,
            inputs,
            outputs,
            labels,
        ) in batch:
            head = [
                request_id,
                _iso(at),
                plan.versions.get(version_id) if version_id is not None else None,
                role,
                status,
                latency,
            ]
            rows = inputs if isinstance(inputs, list) and inputs else [None]
            predictions = outputs.get("predictions") if isinstance(outputs, dict) else None
            for i, row in enumerate(rows):
                values = row if isinstance(row, dict) else {}
                extra = {k: v for k, v in values.items() if k not in known}
                if row is not None and not isinstance(row, dict):
                    extra = {"value": row}
                prediction = (
                    predictions[i]
                    if isinstance(predictions, list) and i < len(predictions)
                    else None
                )
                label = labels[i] if isinstance(labels, list) and i < len(labels) else None
                yield [
                    *head,
                    *(_cell(values.get(name)) for name in plan.features),
                    _cell(extra) if extra else None,
                    _cell(prediction),
                    _cell(label),
                ]
            last = (at, log_id)
        if len(batch) < BATCH:
            return


class _Line(io.StringIO):
    def take(self) -> str:
        text = self.getvalue()
        self.seek(0)
        self.truncate()
        return text


def stream_csv(session_factory: sessionmaker[Session], plan: ExportPlan) -> Iterator[bytes]:
    buffer = _Line()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(plan.columns)
    pending = 0
    for row in iter_rows(session_factory, plan):
        writer.writerow([neutralise(v) for v in row])
        pending += 1
        if pending >= 500:
            yield buffer.take().encode()
            pending = 0
    yield buffer.take().encode()


def parquet_bytes(session_factory: sessionmaker[Session], plan: ExportPlan) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: list[list[Any]] = [[] for _ in plan.columns]
    for row in iter_rows(session_factory, plan):
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    arrays = []
    for name, values in zip(plan.columns, columns, strict=True):
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            # mixed types in one feature: keep every value, as text
            array = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        if name == "at":
            array = pa.array(
                [datetime.fromisoformat(v) for v in values], type=pa.timestamp("us", tz="UTC")
            )
        arrays.append(array)
    table = pa.Table.from_arrays(arrays, names=plan.columns)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()
