"""Ground-truth feedback: labels that arrive after the prediction, joined by request id.

`record_feedback(session, deployment, items)` stores one `ground_truth` row per request id.

- Idempotent by request id: a repeat with the same labels counts as a duplicate; a repeat with
  different labels is a `Conflict` (409) naming the request id (labels are never overwritten
  silently: a corrected label is a new fact that deserves a human decision).
- A request id that was never logged for this deployment is kept and reported as unmatched:
  feedback may arrive before the monitor has ingested the log record. The join with
  `prediction_logs` happens at query time (see performance.py), so it counts once the log lands.
- When the log exists, the number of labels must equal the number of rows the request
  predicted (`InvalidInput`, 422, naming the request id).
- A batch is all or nothing: one bad item refuses the whole batch and nothing is written.
- Concurrent writers: the insert is `ON CONFLICT (request_id) DO NOTHING`; rows that lost a race
  are re-read and compared like any other repeat.

Who may call it (performance_api.py): an API key (`Authorization: Bearer kn_…`) holding the
"feedback" scope for the deployment, or a signed-in user with `Action.deploy` on its project.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from konan.core.errors import Conflict, InvalidInput
from konan.core.types import utcnow
from konan.deployments.orm import Deployment
from konan.monitoring.orm import GroundTruth, PredictionLog

MAX_ITEMS = 10_000
_CHUNK = 500  # request ids per IN (...) query; well under SQLite's parameter limit


class FeedbackItem(BaseModel):
    request_id: str = Field(min_length=1, max_length=64)
    labels: list[Any] = Field(min_length=1, max_length=100_000)


class FeedbackBody(BaseModel):
    """`{"request_id", "labels"}` or `{"items": [{"request_id", "labels"}, …]}`."""

    request_id: str | None = Field(default=None, min_length=1, max_length=64)
    labels: list[Any] | None = Field(default=None, min_length=1, max_length=100_000)
    items: list[FeedbackItem] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _one_shape(self) -> FeedbackBody:
        single = self.request_id is not None or self.labels is not None
        if single and self.items is not None:
            raise ValueError("send either request_id + labels or items, not both")
        if self.items is None and (self.request_id is None or self.labels is None):
            raise ValueError("send request_id and labels, or items")
        return self

    def all_items(self) -> list[FeedbackItem]:
        if self.items is not None:
            return self.items
        assert self.request_id is not None
        assert self.labels is not None
        return [FeedbackItem(request_id=self.request_id, labels=self.labels)]


class FeedbackRead(BaseModel):
    accepted: int = Field(description="new ground-truth rows stored")
    duplicates: int = Field(description="repeats of labels already stored (same labels)")
    unmatched: list[str] = Field(
        description="accepted request ids with no prediction log for this deployment yet"
    )


@dataclass
class FeedbackResult:
    accepted: int
    duplicates: int
    unmatched: list[str]


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _existing(session: Session, request_ids: Sequence[str]) -> dict[str, tuple[int, list[Any]]]:
    found: dict[str, tuple[int, list[Any]]] = {}
    for chunk in _chunks(request_ids):
        rows = session.execute(
            sa.select(GroundTruth.request_id, GroundTruth.deployment_id, GroundTruth.labels).where(
                GroundTruth.request_id.in_(chunk)
            )
        )
        for request_id, deployment_id, labels in rows:
            found[request_id] = (deployment_id, labels)
    return found


def _logged_rows(
    session: Session, deployment_id: int, request_ids: Sequence[str]
) -> dict[str, int]:
    """Rows predicted per logged request (any role: champion and shadow saw the same input)."""
    counts: dict[str, int] = {}
    for chunk in _chunks(request_ids):
        rows = session.execute(
            sa.select(PredictionLog.request_id, PredictionLog.inputs, PredictionLog.outputs).where(
                PredictionLog.deployment_id == deployment_id,
                PredictionLog.request_id.in_(chunk),
            )
        )
        for request_id, inputs, outputs in rows:
            n = _row_count(inputs, outputs)
            if n is not None:
                counts[request_id] = n
    return counts


def _row_count(inputs: Any, outputs: Any) -> int | None:
    if isinstance(outputs, dict) and isinstance(outputs.get("predictions"), list):
        return len(outputs["predictions"])
    if isinstance(inputs, list):
        return len(inputs)
    return None


def _check_repeat(
    request_id: str, deployment_id: int, stored: tuple[int, list[Any]], labels: list[Any]
) -> None:
    stored_deployment, stored_labels = stored
    if stored_deployment != deployment_id:
        raise Conflict(f"request id {request_id!r} already has ground truth on another deployment")
    if stored_labels != labels:
        raise Conflict(
            f"request id {request_id!r} already has different labels; "
            "ground truth is not overwritten"
        )


def _insert(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        stmt: Any = postgresql.insert(GroundTruth)
    else:
        stmt = sqlite.insert(GroundTruth)
    return stmt.on_conflict_do_nothing(index_elements=["request_id"]).returning(
        GroundTruth.request_id
    )


def record_feedback(
    session: Session, deployment: Deployment, items: Sequence[FeedbackItem]
) -> FeedbackResult:
    if len(items) > MAX_ITEMS:
        raise InvalidInput(f"at most {MAX_ITEMS} feedback items per call (got {len(items)})")
    # Repeats inside one batch are judged like repeats across calls.
    batch: dict[str, list[Any]] = {}
    duplicates = 0
    for item in items:
        seen = batch.get(item.request_id)
        if seen is None:
            batch[item.request_id] = item.labels
        elif seen == item.labels:
            duplicates += 1
        else:
            raise Conflict(f"request id {item.request_id!r} appears twice with different labels")
    ids = list(batch)
    stored = _existing(session, ids)
    logged = _logged_rows(session, deployment.id, ids)
    new: list[str] = []
    for request_id, labels in batch.items():
        if request_id in stored:
            _check_repeat(request_id, deployment.id, stored[request_id], labels)
            duplicates += 1
            continue
        expected = logged.get(request_id)
        if expected is not None and expected != len(labels):
            raise InvalidInput(
                f"request id {request_id!r} predicted {expected} rows but got "
                f"{len(labels)} labels; send one label per input row"
            )
        new.append(request_id)
    now = utcnow()
    inserted: set[str] = set()
    stmt = _insert(session)
    for chunk in _chunks(new):
        values = [
            {
                "request_id": rid,
                "deployment_id": deployment.id,
                "labels": batch[rid],
                "received_at": now,
            }
            for rid in chunk
        ]
        # One multi-row INSERT … RETURNING (executemany with RETURNING is not portable).
        inserted.update(row[0] for row in session.execute(stmt.values(values)))
    raced = [rid for rid in new if rid not in inserted]
    if raced:
        again = _existing(session, raced)
        for rid in raced:
            _check_repeat(rid, deployment.id, again[rid], batch[rid])
            duplicates += 1
    unmatched = [rid for rid in new if rid in inserted and rid not in logged]
    return FeedbackResult(accepted=len(inserted), duplicates=duplicates, unmatched=unmatched)
