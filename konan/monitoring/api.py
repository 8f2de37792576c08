"""Monitoring routes: health and drift of a deployment, answered from the rollups."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from konan.core.errors import InvalidInput
from konan.deployments import service as deployments
from konan.monitoring import drift, health
from konan.server.deps import PrincipalDep, SessionDep
from konan.server.errors import ERROR_RESPONSES

router = APIRouter(tags=["monitoring"], responses=ERROR_RESPONSES)


class LatencyRead(BaseModel):
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class HealthBucketRead(BaseModel):
    start: datetime
    model_version: int | None
    requests: int
    errors: int
    errors_by_class: dict[str, int]
    status: dict[str, int]
    rejected: int
    error_rate: float
    latency_ms: LatencyRead


class HealthRead(BaseModel):
    deployment: str
    start: datetime
    end: datetime
    bucket: str
    latency_bounds_ms: list[float]
    buckets: list[HealthBucketRead]


class FeatureDriftRead(BaseModel):
    name: str
    kind: Literal["numeric", "categorical", "binary"]
    test: Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon"] | None
    statistic: float | None
    p_value: float | None
    distance: float | None
    threshold: float
    drifted: bool
    psi: float | None
    jensenshannon: float | None
    reference_count: int
    current_count: int
    current_missing: int


class DriftRead(BaseModel):
    deployment: str
    model_version: int
    reference_dataset_version_id: int
    start: datetime
    end: datetime
    drift_share: float
    dataset_drift: bool
    features_tested: int
    features_drifted: int
    share_drifted: float
    features: list[FeatureDriftRead]
    prediction: FeatureDriftRead | None


Start = Annotated[datetime | None, Query(description="ISO time; default: end - 24 h")]
End = Annotated[datetime | None, Query(description="ISO time; default: now")]


@router.get("/deployments/{name}/monitoring/health", response_model=HealthRead)
def get_health(
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    start: Start = None,
    end: End = None,
    bucket: Annotated[str, Query(description="1m | 5m | 1h | 1d")] = "1h",
) -> HealthRead:
    """Requests, errors by status class, error rate and latency percentiles per bucket and
    model version."""
    deployment = deployments.get_deployment(session, principal.user, name)
    report = health.health_report(session, deployment, start=start, end=end, bucket=bucket)
    return HealthRead.model_validate(report)


@router.get("/deployments/{name}/monitoring/drift", response_model=DriftRead)
def get_drift(
    name: str,
    session: SessionDep,
    principal: PrincipalDep,
    start: Start = None,
    end: End = None,
    version: Annotated[int | None, Query(ge=1, description="default: the champion")] = None,
    threshold: Annotated[
        float | None,
        Query(gt=0, description="overrides every feature's threshold (p-value or distance)"),
    ] = None,
    feature_threshold: Annotated[
        list[str] | None, Query(description="per feature, repeatable: name=value")
    ] = None,
    drift_share: Annotated[float, Query(gt=0, le=1)] = drift.DEFAULT_DRIFT_SHARE,
) -> DriftRead:
    """Drift per feature and of the prediction against the version's reference data."""
    deployment = deployments.get_deployment(session, principal.user, name)
    report = drift.drift_report(
        session,
        deployment,
        version=version,
        start=start,
        end=end,
        threshold=threshold,
        feature_thresholds=_feature_thresholds(feature_threshold or []),
        drift_share=drift_share,
    )
    return DriftRead.model_validate(report)


def _feature_thresholds(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name or not math.isfinite(number) or number <= 0:
            raise InvalidInput(
                f"feature_threshold {item!r} must look like name=value with a positive number"
            )
        out[name] = number
    return out
