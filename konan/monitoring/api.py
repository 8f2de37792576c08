"""Monitoring routes: health and drift of a deployment, answered from the rollups, and the
deployment's stored monitoring settings."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from konan.core.errors import InvalidInput
from konan.deployments import service as deployments
from konan.governance.permissions import Action
from konan.monitoring import drift, drift_settings, health
from konan.monitoring.drift_settings import (
    DriftTest,
    Method,
    MonitoringSettings,
    MonitoringSettingsRead,
)
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
    test: DriftTest | None
    statistic: float | None
    p_value: float | None
    distance: float | None
    threshold: float
    threshold_source: Literal["query", "feature", "deployment", "reference_chunks", "default"]
    threshold_on: Literal["p_value", "distance", "statistic"] = Field(
        description="p_value: drift when p < threshold; distance: when distance >= threshold; "
        "statistic (KS from reference chunks): when the statistic > threshold"
    )
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
    method: Method
    drift_share: float
    dataset_drift: bool
    features_tested: int
    features_drifted: int
    share_drifted: float
    features: list[FeatureDriftRead]
    prediction: FeatureDriftRead | None
    prediction_reference: Literal["prediction_profile", "reference_dataset"] | None = Field(
        description="where the prediction's reference bins come from: the model's own "
        "predictions on its reference sample, or a reference dataset column"
    )
    notes: list[str]


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
    drift_share: Annotated[
        float | None, Query(gt=0, le=1, description="default: the stored setting, else 0.5")
    ] = None,
    method: Annotated[
        Method | None, Query(description="default: the stored setting, else auto")
    ] = None,
) -> DriftRead:
    """Drift per feature and of the prediction against the version's reference data.
    Query parameters override the deployment's stored settings, which override the defaults."""
    deployment = deployments.get_deployment(session, principal.user, name)
    if threshold is not None and not math.isfinite(threshold):
        raise InvalidInput("threshold must be a finite number")
    report = drift.drift_report(
        session,
        deployment,
        version=version,
        start=start,
        end=end,
        threshold=threshold,
        feature_thresholds=_feature_thresholds(feature_threshold or []),
        drift_share=drift_share,
        method=method,
    )
    return DriftRead.model_validate(report)


@router.get(
    "/deployments/{name}/monitoring/settings",
    response_model=MonitoringSettingsRead,
    summary="The deployment's drift settings (the defaults when none were stored)",
)
def get_monitoring_settings(
    name: str, session: SessionDep, principal: PrincipalDep
) -> MonitoringSettingsRead:
    deployment = deployments.get_deployment(session, principal.user, name)
    settings, _ = drift_settings.stored(deployment)
    return MonitoringSettingsRead(deployment=deployment.name, **settings.model_dump())


@router.put(
    "/deployments/{name}/monitoring/settings",
    response_model=MonitoringSettingsRead,
    summary="Replace the deployment's drift settings (checked against the champion; audited)",
)
def put_monitoring_settings(
    name: str, body: MonitoringSettings, session: SessionDep, principal: PrincipalDep
) -> MonitoringSettingsRead:
    deployment = deployments.get_deployment(session, principal.user, name, Action.deploy)
    drift_settings.validate(
        body,
        drift.champion_features(session, deployment),
        drift.default_test_of,
        f"the champion of deployment {deployment.name!r}",
    )
    drift_settings.replace(session, principal.user, deployment, body)
    return MonitoringSettingsRead(deployment=deployment.name, **body.model_dump())


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
