"""Drift settings stored per deployment (``deployments.monitoring_settings["drift"]``).

One document, replaced as a whole by ``PUT …/monitoring/settings`` (a maintainer, audited)::

    {"drift": {"method": "auto" | "reference_chunks" | "fixed",
               "threshold": 0.2 | null,              # every feature (p-value or distance)
               "feature_thresholds": {"tenure": 0.15},
               "drift_share": 0.5,                    # dataset drift when this share drifted
               "numeric_test": "psi" | null,          # Evidently's num_stattest
               "categorical_test": "chisquare" | null,  # cat_stattest
               "tests": {"plan": "psi"}}}             # per_column_stattest

Methods: ``auto`` chooses tests and thresholds as Evidently does (``threshold`` overrides the
defaults); ``fixed`` is the same with ``threshold`` required; ``reference_chunks`` uses the
thresholds derived from the reference's own chunks (see `konan.registry.drift_statistics`),
and ``threshold`` only for features that have none.

A drift report takes, per feature: the query's ``feature_threshold`` or ``threshold`` > this
document's ``feature_thresholds`` > (``reference_chunks``: the chunk threshold) > its
``threshold`` > the test's default; the source is reported as ``threshold_source``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session

from konan.core.errors import InvalidInput
from konan.deployments.orm import Deployment
from konan.governance import audit
from konan.governance.orm import User
from konan.registry.binning import Bins
from konan.registry.drift_statistics import JS_MAX, PVALUE_TESTS, TESTS_BY_KIND, column_kind

Method = Literal["auto", "reference_chunks", "fixed"]
DriftTest = Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"]
NumericTest = Literal["ks", "wasserstein", "jensenshannon", "psi"]
CategoricalTest = Literal["chisquare", "z", "jensenshannon", "psi"]
DEFAULT_DRIFT_SHARE = 0.5
MAX_FEATURE_ENTRIES = 2000

_ALIASES = {"chi2": "chisquare", "js": "jensenshannon", "kolmogorov_smirnov": "ks"}


def _alias(value: Any) -> Any:
    return _ALIASES.get(value, value) if isinstance(value, str) else value


class DriftSettings(BaseModel):
    """How drift is judged for one deployment."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "auto",
        description="auto: Evidently's tests and thresholds; fixed: `threshold` for every "
        "feature; reference_chunks: mean + 3 std of the reference's own chunks",
    )
    threshold: float | None = Field(
        None,
        gt=0,
        description="every feature's threshold: a p-value (ks, chisquare, z: drift when p < it) "
        "or a distance (wasserstein, jensenshannon, psi: drift when >= it)",
    )
    feature_thresholds: dict[str, float] = Field(
        default_factory=dict, max_length=MAX_FEATURE_ENTRIES
    )
    drift_share: float = Field(DEFAULT_DRIFT_SHARE, gt=0, le=1)
    numeric_test: NumericTest | None = None
    categorical_test: CategoricalTest | None = None
    tests: dict[str, DriftTest] = Field(default_factory=dict, max_length=MAX_FEATURE_ENTRIES)

    @field_validator("numeric_test", "categorical_test", mode="before")
    @classmethod
    def _test_alias(cls, value: Any) -> Any:
        return _alias(value)

    @field_validator("tests", mode="before")
    @classmethod
    def _tests_alias(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _alias(v) for k, v in value.items()}
        return value

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value

    @field_validator("feature_thresholds")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in value.items() if not (math.isfinite(v) and v > 0))
        if bad:
            raise ValueError(f"thresholds must be positive finite numbers: {', '.join(bad)}")
        return value


class MonitoringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drift: DriftSettings = Field(default_factory=DriftSettings)


class MonitoringSettingsRead(MonitoringSettings):
    deployment: str


def stored(deployment: Deployment) -> tuple[MonitoringSettings, str | None]:
    """The deployment's settings, or the defaults and a note when the stored ones are unusable
    (written by hand, or by an older release)."""
    try:
        return MonitoringSettings.model_validate(deployment.monitoring_settings or {}), None
    except ValidationError as exc:
        return MonitoringSettings(), (
            f"the stored monitoring settings of deployment {deployment.name!r} are invalid "
            f"({exc.error_count()} errors); the defaults apply"
        )


def resolve_test(name: str, bins: Bins, settings: DriftSettings, default: DriftTest) -> DriftTest:
    """The test of one feature: ``tests[name]`` > numeric_test / categorical_test > Evidently's
    choice. A configured test that does not fit the column's kind is ignored."""
    kind = column_kind(bins)
    choice: str | None = settings.tests.get(name)
    if choice is None:
        choice = settings.numeric_test if kind == "numeric" else settings.categorical_test
    if choice is not None and choice in TESTS_BY_KIND[kind]:
        return choice
    return default


def threshold_problem(name: str, test: str, value: float) -> str | None:
    """Why ``value`` cannot be ``name``'s threshold under ``test``, or None."""
    if test in PVALUE_TESTS and value >= 1:
        return f"{name}: {value:g} is no p-value threshold for {test} (it must be below 1)"
    if test == "jensenshannon" and value > JS_MAX:
        return (
            f"{name}: {value:g} is above the largest Jensen-Shannon distance, "
            f"sqrt(ln 2) = {JS_MAX:.4f}"
        )
    return None


def validate(
    settings: MonitoringSettings,
    features: dict[str, Bins] | None,
    default_test: Callable[[Bins], DriftTest],
    what: str,
) -> None:
    """Check ``settings`` against the champion's features (``features``; None: the deployment
    has no champion with reference data). `InvalidInput` names every problem."""
    drift = settings.drift
    problems: list[str] = []
    if drift.method == "fixed" and drift.threshold is None:
        problems.append("method 'fixed' needs a threshold")
    named = set(drift.feature_thresholds) | set(drift.tests)
    if features is None:
        if named:
            problems.append(
                f"{what} has no champion with reference data, so per-feature settings "
                f"({', '.join(sorted(named))}) cannot be checked; set them after deploying one"
            )
        if problems:
            raise InvalidInput("; ".join(problems))
        return
    unknown = sorted(named - set(features))
    if unknown:
        problems.append(
            f"no feature {', '.join(unknown)} in the reference of {what} "
            f"(features: {', '.join(sorted(features))})"
        )
    for name, test in sorted(drift.tests.items()):
        bins = features.get(name)
        if bins is not None and test not in TESTS_BY_KIND[column_kind(bins)]:
            kind = column_kind(bins)
            problems.append(
                f"{name} is {kind}: test {test} does not apply "
                f"(use one of {', '.join(TESTS_BY_KIND[kind])})"
            )
    kinds = {column_kind(b) for b in features.values()}
    if drift.categorical_test == "z" and "categorical" in kinds:
        problems.append(
            "categorical_test z applies to binary features only: "
            + ", ".join(sorted(n for n, b in features.items() if column_kind(b) == "categorical"))
            + " have more categories"
        )
    for name, bins in features.items():
        test = resolve_test(name, bins, drift, default_test(bins))
        value = drift.feature_thresholds.get(name, drift.threshold)
        if value is None:
            continue
        problem = threshold_problem(name, test, value)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise InvalidInput("; ".join(problems))


def replace(
    session: Session, user: User, deployment: Deployment, settings: MonitoringSettings
) -> None:
    """Store ``settings`` (already validated) and audit the change, in the caller's unit of
    work."""
    before = dict(deployment.monitoring_settings or {})
    after = settings.model_dump(mode="json")
    deployment.monitoring_settings = after
    session.flush()
    audit.record(
        session,
        actor=audit.Actor(user.id, user.username),
        action="deployment.monitoring_settings",
        object_type="deployment",
        object_id=deployment.id,
        project_id=deployment.project_id,
        before=before,
        after=after,
    )
