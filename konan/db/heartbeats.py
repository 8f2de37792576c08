"""Liveness of background processes (worker, monitor), read by /readyz.

Each process upserts its row every few seconds; readiness asks whether a row is recent.
Celery's own ping is a broadcast, which the embedded SQLite broker cannot carry.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from konan.core.types import utcnow
from konan.db.base import Base


class Heartbeat(Base):
    __tablename__ = "heartbeats"

    component: Mapped[str] = mapped_column(sa.String(30), primary_key=True)
    instance: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    seen_at: Mapped[datetime]


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def beat(session: Session, component: str, instance: str | None = None) -> None:
    row = session.get(Heartbeat, (component, instance or instance_name()))
    if row is None:
        session.add(
            Heartbeat(component=component, instance=instance or instance_name(), seen_at=utcnow())
        )
    else:
        row.seen_at = utcnow()


def forget(session: Session, component: str, instance: str | None = None) -> None:
    session.execute(
        sa.delete(Heartbeat).where(
            Heartbeat.component == component, Heartbeat.instance == (instance or instance_name())
        )
    )


def alive(session: Session, component: str, within: timedelta) -> bool:
    cutoff = utcnow() - within
    found = session.scalar(
        sa.select(sa.func.count())
        .select_from(Heartbeat)
        .where(Heartbeat.component == component, Heartbeat.seen_at >= cutoff)
    )
    return bool(found)
