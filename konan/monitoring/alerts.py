"""Alert rules per deployment, their evaluation, and the alerts they open and resolve.

A rule's condition is computed from what monitoring already answers, never from a raw scan:

============  ===============================================================================
kind          fires when (over the last ``window_seconds``)
============  ===============================================================================
drift         the share of drifted input features >= ``threshold`` (drift.drift_report), or,
              with ``feature``, that feature drifted; feature thresholds, tests and method
              are the deployment's stored drift settings (drift_settings)
performance   realised ``metric`` (performance.performance, labelled requests of the champion)
              < ``threshold``
error_rate    5xx responses / requests >= ``threshold`` (health minute rollups)
latency       p99 latency >= ``threshold`` ms (histogram_quantile over the minute rollups)
============  ===============================================================================

State machine, per rule: no firing alert and the condition is true -> open one (state
``firing``) unless the last alert of the rule started less than ``cooldown_seconds`` ago;
a firing alert and the condition is false -> resolve it. A condition that cannot be computed
(no traffic in the window, no labels, no reference data) changes nothing. Rules are locked
(``FOR UPDATE`` on PostgreSQL; SQLite serialises writers) while evaluated, so two evaluators
never open two firing alerts for one rule. Each state change is returned as a `Transition`;
`evaluate_and_notify` sends their webhooks only after the transaction committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from prometheus_client import Gauge
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.orm import Session, sessionmaker

from konan.core.errors import InvalidInput, KonanError, NotFound
from konan.core.types import AlertState, utcnow
from konan.db.engine import unit_of_work
from konan.deployments.orm import Deployment
from konan.governance import audit
from konan.governance.orm import User
from konan.monitoring import drift, health, performance, webhooks
from konan.monitoring.metrics import _get_or_create
from konan.monitoring.orm import LATENCY_COLUMNS, Alert, AlertRule, HealthMinute

log = logging.getLogger("konan.monitoring.alerts")

Kind = Literal["drift", "performance", "error_rate", "latency"]
KINDS: tuple[str, ...] = ("drift", "performance", "error_rate", "latency")
DEFAULT_WINDOWS: dict[str, int] = {
    "drift": 24 * 3600,
    "performance": 7 * 24 * 3600,
    "error_rate": 300,
    "latency": 300,
}
MAX_WINDOW_SECONDS = 30 * 24 * 3600
MAX_COOLDOWN_SECONDS = 7 * 24 * 3600
MAX_RULES_PER_DEPLOYMENT = 100
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "r2")
EVALUATE_EVERY_SECONDS = 60.0

FIRING = _get_or_create(
    Gauge, "konan_alerts_firing", "Alerts currently firing, by rule kind.", labelnames=("kind",)
)


# ---- wire models ----------------------------------------------------------------------------


class AlertRuleCreate(BaseModel):
    kind: Kind
    threshold: float = Field(
        ge=0, description="share (drift, error_rate), metric value (performance) or ms (latency)"
    )
    window_seconds: int | None = Field(
        default=None, ge=60, le=MAX_WINDOW_SECONDS, description="default depends on the kind"
    )
    feature: str | None = Field(default=None, min_length=1, max_length=200)
    metric: str | None = None
    cooldown_seconds: int = Field(default=3600, ge=0, le=MAX_COOLDOWN_SECONDS)
    webhook_url: str | None = Field(default=None, max_length=webhooks.MAX_URL_LENGTH)
    enabled: bool = True

    @model_validator(mode="after")
    def _by_kind(self) -> AlertRuleCreate:
        if self.feature is not None and self.kind != "drift":
            raise ValueError("feature applies to drift rules only")
        if self.kind == "performance":
            if self.metric not in METRICS:
                raise ValueError(f"a performance rule needs metric, one of {', '.join(METRICS)}")
        elif self.metric is not None:
            raise ValueError("metric applies to performance rules only")
        if self.kind in ("drift", "error_rate") and self.threshold > 1:
            raise ValueError(f"a {self.kind} threshold is a share between 0 and 1")
        if self.window_seconds is not None and self.window_seconds % 60:
            raise ValueError("window_seconds must be a whole number of minutes")
        return self


class AlertRuleRead(BaseModel):
    id: int
    deployment: str
    kind: str
    threshold: float
    window_seconds: int
    feature: str | None
    metric: str | None
    cooldown_seconds: int
    webhook_url: str | None
    enabled: bool
    created_at: datetime


class AlertRead(BaseModel):
    id: int
    rule_id: int | None
    deployment: str
    kind: str
    state: str
    message: str
    value: float | None
    started_at: datetime
    resolved_at: datetime | None


def rule_read(rule: AlertRule, deployment: Deployment) -> AlertRuleRead:
    config = rule.config or {}
    return AlertRuleRead(
        id=rule.id,
        deployment=deployment.name,
        kind=rule.kind,
        threshold=float(config.get("threshold", 0.0)),
        window_seconds=int(config.get("window_seconds", DEFAULT_WINDOWS[rule.kind])),
        feature=config.get("feature"),
        metric=config.get("metric"),
        cooldown_seconds=rule.cooldown_seconds,
        webhook_url=rule.webhook_url,
        enabled=rule.enabled,
        created_at=rule.created_at,
    )


def alert_read(alert: Alert, deployment: Deployment) -> AlertRead:
    return AlertRead(
        id=alert.id,
        rule_id=alert.rule_id,
        deployment=deployment.name,
        kind=alert.kind,
        state=alert.state,
        message=alert.message,
        value=alert.value,
        started_at=_utc(alert.started_at),
        resolved_at=_utc(alert.resolved_at) if alert.resolved_at else None,
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# ---- rules ----------------------------------------------------------------------------------


def create_rule(
    session: Session,
    user: User,
    deployment: Deployment,
    body: AlertRuleCreate,
    *,
    allow_private_webhooks: bool = False,
) -> AlertRule:
    """A new rule on ``deployment`` (the caller checked Action.deploy); audited."""
    if body.webhook_url is not None:
        webhooks.validate_webhook_url(body.webhook_url, allow_private=allow_private_webhooks)
    count = session.scalar(
        sa.select(sa.func.count())
        .select_from(AlertRule)
        .where(AlertRule.deployment_id == deployment.id)
    )
    if (count or 0) >= MAX_RULES_PER_DEPLOYMENT:
        raise InvalidInput(f"deployment {deployment.name!r} has {count} alert rules, the most")
    config: dict[str, Any] = {
        "threshold": body.threshold,
        "window_seconds": body.window_seconds or DEFAULT_WINDOWS[body.kind],
    }
    if body.feature is not None:
        config["feature"] = body.feature
    if body.metric is not None:
        config["metric"] = body.metric
    rule = AlertRule(
        deployment_id=deployment.id,
        kind=body.kind,
        config=config,
        cooldown_seconds=body.cooldown_seconds,
        webhook_url=body.webhook_url,
        enabled=body.enabled,
    )
    session.add(rule)
    session.flush()
    audit.record(
        session,
        actor=audit.Actor(user.id, user.username),
        action="alert_rule.create",
        object_type="alert_rule",
        object_id=rule.id,
        project_id=deployment.project_id,
        after={"deployment": deployment.name, "kind": rule.kind, **config},
    )
    return rule


def list_rules(session: Session, deployment: Deployment) -> list[AlertRule]:
    return list(
        session.scalars(
            sa.select(AlertRule)
            .where(AlertRule.deployment_id == deployment.id)
            .order_by(AlertRule.id)
        )
    )


def delete_rule(session: Session, user: User, deployment: Deployment, rule_id: int) -> None:
    rule = session.get(AlertRule, rule_id)
    if rule is None or rule.deployment_id != deployment.id:
        raise NotFound(f"deployment {deployment.name!r} has no alert rule {rule_id}")
    before = {"deployment": deployment.name, "kind": rule.kind, **(rule.config or {})}
    session.delete(rule)  # its alerts stay, with rule_id set to NULL
    session.flush()
    audit.record(
        session,
        actor=audit.Actor(user.id, user.username),
        action="alert_rule.delete",
        object_type="alert_rule",
        object_id=rule_id,
        project_id=deployment.project_id,
        before=before,
    )


def list_alerts(
    session: Session, deployment: Deployment, state: str | None = None, limit: int = 500
) -> list[Alert]:
    query = sa.select(Alert).where(Alert.deployment_id == deployment.id)
    if state is not None:
        if state not in (AlertState.firing, AlertState.resolved):
            raise InvalidInput(f"state must be firing or resolved, not {state!r}")
        query = query.where(Alert.state == state)
    return list(
        session.scalars(query.order_by(Alert.started_at.desc(), Alert.id.desc()).limit(limit))
    )


# ---- conditions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """A rule's condition now: ``value`` None when it cannot be computed (no data)."""

    value: float | None
    breached: bool
    message: str


def _health_sums(
    session: Session, deployment: Deployment, start: datetime, end: datetime
) -> tuple[int, int, list[int]]:
    h = HealthMinute
    lo = int(start.timestamp()) // 60 * 60
    columns = [sa.func.sum(h.requests), sa.func.sum(h.status_5xx)]
    columns += [sa.func.sum(getattr(h, name)) for name in LATENCY_COLUMNS]
    row = session.execute(
        sa.select(*columns).where(
            h.deployment_id == deployment.id,
            h.bucket_start >= lo,
            h.bucket_start < int(end.timestamp()),
        )
    ).one()
    values = [int(v or 0) for v in row]
    return values[0], values[1], values[2:]


def read_condition(
    session: Session, deployment: Deployment, rule: AlertRule, now: datetime
) -> Reading:
    config = rule.config or {}
    threshold = float(config.get("threshold", 0.0))
    window = int(config.get("window_seconds", DEFAULT_WINDOWS[rule.kind]))
    start = now - timedelta(seconds=window)
    span = f"over the last {window // 60} min"
    if rule.kind in ("error_rate", "latency"):
        requests, errors, latency = _health_sums(session, deployment, start, now)
        if requests == 0:
            return Reading(None, False, f"no requests {span}")
        if rule.kind == "error_rate":
            rate = errors / requests
            return Reading(
                rate, rate >= threshold, f"5xx share {rate:.3f} {span} (threshold {threshold:g})"
            )
        p99 = health.histogram_quantile(0.99, latency)
        if p99 is None:
            return Reading(None, False, f"no latencies {span}")
        return Reading(
            p99, p99 >= threshold, f"p99 latency {p99:.1f} ms {span} (threshold {threshold:g} ms)"
        )
    if rule.kind == "drift":
        report = drift.drift_report(session, deployment, start=start, end=now, now=now)
        feature = config.get("feature")
        if feature is not None:
            found = next((f for f in report["features"] if f["name"] == feature), None)
            if found is None or found["test"] is None:
                return Reading(None, False, f"no live values of feature {feature!r} {span}")
            value = found["statistic"] if found["statistic"] is not None else found["distance"]
            return Reading(
                float(value) if value is not None else None,
                bool(found["drifted"]),
                f"feature {feature!r} {'drifted' if found['drifted'] else 'did not drift'} "
                f"({found['test']}, threshold {found['threshold']:g} on the "
                f"{found['threshold_on'].replace('_', '-')}, from {found['threshold_source']}) "
                f"{span}",
            )
        if report["features_tested"] == 0:
            return Reading(None, False, f"no live feature values {span}")
        share = float(report["share_drifted"])
        return Reading(
            share,
            share >= threshold,
            f"{report['features_drifted']} of {report['features_tested']} features drifted "
            f"{span} (share {share:.2f}, threshold {threshold:g})",
        )
    metric = str(config.get("metric"))
    window_spec = performance.parse_window(start, now, f"{max(window // 60, 1)}m", now=now)
    result = performance.performance(session, deployment, window_spec, estimated=False)
    rows = [o for o in result["overall"] if "champion" in o["roles"]] or result["overall"]
    values = [o["metrics"].get(metric) for o in rows if o["metrics"]]
    found_value = next((v for v in values if isinstance(v, int | float)), None)
    if found_value is None:
        return Reading(None, False, f"no labelled requests with {metric} {span}")
    figure = float(found_value)
    return Reading(
        figure, figure < threshold, f"{metric} {figure:.4f} {span} (threshold {threshold:g})"
    )


# ---- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """A state change to announce: the webhook payload and where to send it."""

    rule_id: int
    state: str
    webhook_url: str | None
    payload: dict[str, Any]


def _payload(alert: Alert, rule: AlertRule, deployment: Deployment) -> dict[str, Any]:
    return {
        "alert": alert_read(alert, deployment).model_dump(mode="json"),
        "rule": rule_read(rule, deployment).model_dump(mode="json"),
        "deployment": {"id": deployment.id, "name": deployment.name},
    }


def evaluate_alerts(session: Session, *, now: datetime | None = None) -> list[Transition]:
    """Evaluate every enabled rule once; flush, never commit. Returns the state changes."""
    now = _utc(now) if now is not None else utcnow()
    query = sa.select(AlertRule).where(AlertRule.enabled.is_(True)).order_by(AlertRule.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # another evaluator holds it: skip
    transitions: list[Transition] = []
    for rule in session.scalars(query).all():
        deployment = session.get(Deployment, rule.deployment_id)
        if deployment is None:
            continue
        try:
            reading = read_condition(session, deployment, rule, now)
        except KonanError as exc:  # no reference data, a window too large …: nothing to say
            log.info("alert rule %s not evaluated: %s", rule.id, exc.detail)
            continue
        firing = session.scalars(
            sa.select(Alert)
            .where(Alert.rule_id == rule.id, Alert.state == AlertState.firing)
            .order_by(Alert.id)
        ).first()
        if reading.value is None:
            continue
        if reading.breached and firing is None:
            last = session.scalar(
                sa.select(sa.func.max(Alert.started_at)).where(Alert.rule_id == rule.id)
            )
            if last is not None and now - _utc(last) < timedelta(seconds=rule.cooldown_seconds):
                continue
            alert = Alert(
                rule_id=rule.id,
                deployment_id=deployment.id,
                kind=rule.kind,
                state=AlertState.firing,
                message=reading.message,
                value=reading.value,
                started_at=now,
            )
            session.add(alert)
            session.flush()
        elif not reading.breached and firing is not None:
            alert = firing
            alert.state = AlertState.resolved
            alert.resolved_at = now
            alert.message = f"{firing.message}; resolved: {reading.message}"
            alert.value = reading.value
            session.flush()
        else:
            continue
        transitions.append(
            Transition(rule.id, alert.state, rule.webhook_url, _payload(alert, rule, deployment))
        )
    _update_gauge(session)
    return transitions


def _update_gauge(session: Session) -> None:
    counts = dict(
        session.execute(
            sa.select(Alert.kind, sa.func.count())
            .where(Alert.state == AlertState.firing)
            .group_by(Alert.kind)
        ).all()
    )
    for kind in KINDS:
        FIRING.labels(kind=kind).set(int(counts.get(kind, 0)))


def notify(
    transitions: list[Transition], jwt_secret: str, *, allow_private_webhooks: bool = False
) -> int:
    """Send each transition's webhook; returns how many were delivered. Never raises."""
    delivered = 0
    for t in transitions:
        if t.webhook_url is None:
            continue
        secret = webhooks.signing_secret(jwt_secret, t.rule_id)
        if webhooks.deliver(t.webhook_url, t.payload, secret, allow_private=allow_private_webhooks):
            delivered += 1
    return delivered


def evaluate_and_notify(
    session_factory: sessionmaker[Session],
    jwt_secret: str,
    *,
    now: datetime | None = None,
    allow_private_webhooks: bool = False,
) -> list[Transition]:
    """One evaluation in its own unit of work; webhooks go out after it committed."""
    with unit_of_work(session_factory) as session:
        transitions = evaluate_alerts(session, now=now)
    notify(transitions, jwt_secret, allow_private_webhooks=allow_private_webhooks)
    return transitions
