"""Small shared types and helpers used by every domain."""

from __future__ import annotations

import enum
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


class ProjectRole(enum.StrEnum):
    viewer = "viewer"
    maintainer = "maintainer"
    approver = "approver"
    owner = "owner"


class TaskType(enum.StrEnum):
    classification = "classification"
    regression = "regression"


class DeploymentStatus(enum.StrEnum):
    pending = "pending"
    starting = "starting"
    ready = "ready"
    degraded = "degraded"
    failed = "failed"
    deleting = "deleting"
    deleted = "deleted"


class ApprovalStatus(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    expired = "expired"
    executed = "executed"


class JobState(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class AlertState(enum.StrEnum):
    firing = "firing"
    resolved = "resolved"
