"""Retention of raw prediction logs (rollups are kept; raw rows age out)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from konan.core.types import utcnow
from konan.monitoring.orm import PredictionLog

PURGE_BATCH = 5000


def purge_raw_logs(session: Session, *, older_than_days: int, batch: int = PURGE_BATCH) -> int:
    cutoff = int(utcnow().timestamp()) - older_than_days * 86400
    ids = sa.select(PredictionLog.id).where(PredictionLog.bucket_start < cutoff).limit(batch)
    result = session.execute(
        sa.delete(PredictionLog).where(PredictionLog.id.in_(ids.scalar_subquery()))
    )
    return int(getattr(result, "rowcount", 0) or 0)
