"""Realised performance over time: prediction logs joined with late ground truth.

`performance(session, deployment, window)` joins `prediction_logs` (every role: champion,
canary, shadow) with `ground_truth` by request id at query time, so labels that arrive days
late, or before their log record, count as soon as both exist. Figures are per time bucket and
per model version, and over the whole window.

- Classification: accuracy; precision, recall, F1 (binary: the positive class is the second
  class of the version's signature, or 1 when the signature has none; multiclass: macro over
  the labels seen, as sklearn.metrics does); ROC AUC (binary, or one-vs-rest macro) and log
  loss when probabilities were logged; the confusion matrix (rows = truth, columns =
  prediction, in `labels` order).
- Regression: MAE, RMSE, R², MAPE (|y - ŷ| / max(|y|, eps), as sklearn).
- Every figure equals sklearn.metrics on the same labels (tests/monitoring/test_performance.py);
  a metric that is undefined for the data (one class only, fewer than two rows) is null.
- Versions compared over the same window against the champion's version: a two-proportion z
  test on accuracy (classification) or Welch's t test on absolute errors (regression), with
  the two-sided p-value.
- Estimated performance (CBPE, estimation.py) is included per bucket and version for
  classifiers that log probabilities, over *all* logged rows, labelled or not; the response
  carries the method and its assumptions.
- Bounded: a window with more than `max_rows` joined rows (labelled, or scanned for
  estimation) is refused with `InvalidInput` (422) asking for a shorter window.

Only successful requests (status < 400) count. A request's labels are matched to its rows by
position; a request whose label count differs from its row count is skipped and counted in
`skipped`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from scipy import stats
from sqlalchemy.orm import Session

from konan.core.errors import InvalidInput
from konan.deployments.orm import Deployment
from konan.monitoring import estimation
from konan.monitoring.orm import GroundTruth, PredictionLog
from konan.registry.orm import Model, ModelVersion

DEFAULT_MAX_ROWS = 1_000_000
MAX_BUCKETS = 2_000
REFERENCE_ROWS_CAP = 50_000
_BUCKET = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EPS = float(np.finfo(np.float64).eps)

Floats = NDArray[np.float64]


# ---- window ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    bucket: str
    bucket_seconds: int
    version: int | None = None


def parse_window(
    start: datetime | None,
    end: datetime | None,
    bucket: str | None,
    version: int | None = None,
    now: datetime | None = None,
) -> Window:
    """Defaults: the last 7 days in 1-day buckets. `bucket` is `<n><s|m|h|d|w>` (e.g. 1h)."""
    end = _utc(end) if end is not None else (now or datetime.now(UTC))
    start = _utc(start) if start is not None else end - timedelta(days=7)
    if start >= end:
        raise InvalidInput("start must be before end")
    text = (bucket or "1d").strip().lower()
    match = _BUCKET.match(text)
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput(f"bucket {bucket!r} is not a duration like 15m, 1h or 1d")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 60:
        raise InvalidInput("bucket must be at least 1 minute")
    count = math.ceil((end - start).total_seconds() / seconds)
    if count > MAX_BUCKETS:
        raise InvalidInput(f"{count} buckets of {text}; at most {MAX_BUCKETS}: use a wider bucket")
    return Window(start, end, text, seconds, version)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---- metrics (numpy; equal to sklearn.metrics) ----------------------------------------------


def canonical(value: Any) -> Any:
    """One key per class value: 1, 1.0 and True are the same class; lists become tuples."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return tuple(canonical(v) for v in value)
    return value


def _sorted_labels(values: Iterable[Any]) -> list[Any]:
    unique = set(values)
    try:
        return sorted(unique)
    except TypeError:
        return sorted(unique, key=repr)


def positive_class(classes: list[Any] | None) -> Any:
    return canonical(classes[1]) if classes and len(classes) == 2 else 1


def classification_metrics(
    y_true: list[Any],
    y_pred: list[Any],
    classes: list[Any] | None = None,
    proba: Floats | None = None,
) -> dict[str, Any]:
    """`proba` columns follow `classes` (required for ROC AUC and log loss)."""
    n = len(y_true)
    if n == 0:
        return {"rows": 0}
    truth = [canonical(v) for v in y_true]
    pred = [canonical(v) for v in y_pred]
    known = [canonical(c) for c in classes] if classes else []
    seen = _sorted_labels(truth + pred)
    index = {label: i for i, label in enumerate(seen)}
    t = np.fromiter((index[v] for v in truth), dtype=np.int64, count=n)
    p = np.fromiter((index[v] for v in pred), dtype=np.int64, count=n)
    k = len(seen)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denom = predicted + actual
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    binary = len(known) == 2 or (not known and set(seen) <= {0, 1})
    out: dict[str, Any] = {"rows": n, "accuracy": float(tp.sum() / n)}
    if binary:
        pos = positive_class(known or None)
        i = index.get(pos)
        out["average"] = "binary"
        out["positive_class"] = pos
        out["precision"] = float(precision[i]) if i is not None else 0.0
        out["recall"] = float(recall[i]) if i is not None else 0.0
        out["f1"] = float(f1[i]) if i is not None else 0.0
    else:
        out["average"] = "macro"
        out["precision"] = float(precision.mean())
        out["recall"] = float(recall.mean())
        out["f1"] = float(f1.mean())
    out["roc_auc"] = None
    out["log_loss"] = None
    if proba is not None and known and proba.shape == (n, len(known)):
        col = {c: i for i, c in enumerate(known)}
        if all(v in col for v in truth):
            ti = np.fromiter((col[v] for v in truth), dtype=np.int64, count=n)
            out["roc_auc"] = _roc_auc(ti, proba, binary)
            out["log_loss"] = _log_loss(ti, proba)
    labels = known + [v for v in seen if v not in set(known)]
    full = np.zeros((len(labels), len(labels)), dtype=np.int64)
    pos_of = {v: i for i, v in enumerate(labels)}
    for a in seen:
        for b in seen:
            full[pos_of[a], pos_of[b]] = cm[index[a], index[b]]
    out["confusion_matrix"] = {"labels": labels, "matrix": full.tolist()}
    return out


def _binary_auc(positive: NDArray[np.bool_], score: Floats) -> float | None:
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(score)  # average ranks for ties = the trapezoidal AUC
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _roc_auc(ti: NDArray[np.int64], proba: Floats, binary: bool) -> float | None:
    if binary:
        return _binary_auc(ti == 1, proba[:, 1])
    scores = [_binary_auc(ti == c, proba[:, c]) for c in range(proba.shape[1])]
    if any(s is None for s in scores):
        return None  # one-vs-rest needs every class present, as sklearn
    return float(np.mean([s for s in scores if s is not None]))


def _log_loss(ti: NDArray[np.int64], proba: Floats) -> float:
    total = proba.sum(axis=1, keepdims=True)
    normed = proba / np.where(total > 0, total, 1.0)
    picked = np.clip(normed[np.arange(len(ti)), ti], _EPS, 1 - _EPS)
    return float(-np.log(picked).mean())


def regression_metrics(y_true: Floats, y_pred: Floats) -> dict[str, Any]:
    n = len(y_true)
    if n == 0:
        return {"rows": 0}
    err = y_true - y_pred
    ss_res = float((err**2).sum())
    ss_tot = float(((y_true - y_true.mean()) ** 2).sum())
    r2: float | None
    if n < 2:
        r2 = None
    elif ss_tot == 0:
        r2 = 1.0 if ss_res == 0 else 0.0
    else:
        r2 = 1.0 - ss_res / ss_tot
    return {
        "rows": n,
        "mae": float(np.abs(err).mean()),
        "rmse": float(math.sqrt(ss_res / n)),
        "r2": r2,
        "mape": float((np.abs(err) / np.maximum(np.abs(y_true), _EPS)).mean()),
    }


# ---- significance ---------------------------------------------------------------------------


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> tuple[float | None, float | None]:
    """Pooled two-proportion z test of p2 - p1; (z, two-sided p-value)."""
    if n1 == 0 or n2 == 0:
        return None, None
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    diff = k2 / n2 - k1 / n1
    if se == 0:
        return None, 1.0 if diff == 0 else None
    z = diff / se
    return z, float(2 * stats.norm.sf(abs(z)))


def welch_t(a: Floats, b: Floats) -> tuple[float | None, float | None]:
    """Welch's t test of mean(b) - mean(a); (t, two-sided p-value)."""
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return None, None
    v1, v2 = float(a.var(ddof=1)) / n1, float(b.var(ddof=1)) / n2
    se = math.sqrt(v1 + v2)
    if se == 0:
        return None, None
    t = (float(b.mean()) - float(a.mean())) / se
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    return t, float(2 * stats.t.sf(abs(t), df))


# ---- the query ------------------------------------------------------------------------------


@dataclass
class _Rows:
    """Flattened rows of one (bucket, version) cell."""

    truth: list[Any] = field(default_factory=list)
    pred: list[Any] = field(default_factory=list)
    proba: list[list[float]] = field(default_factory=list)
    proba_ok: bool = True  # every row came with probabilities
    requests: int = 0


@dataclass
class _Unlabelled:
    pred: list[Any] = field(default_factory=list)
    proba: list[list[float]] = field(default_factory=list)


def _proba_rows(outputs: dict[str, Any], n: int, k: int) -> list[list[float]] | None:
    raw = outputs.get("probabilities")
    if not isinstance(raw, list) or len(raw) != n or k < 2:
        return None
    rows: list[list[float]] = []
    for row in raw:
        if isinstance(row, int | float) and not isinstance(row, bool) and k == 2:
            rows.append([1.0 - float(row), float(row)])
        elif isinstance(row, list) and len(row) == k:
            try:
                rows.append([float(v) for v in row])
            except (TypeError, ValueError):
                return None
        else:
            return None
    return rows


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _version_filter(session: Session, deployment: Deployment, version: int | None) -> list[Any]:
    if version is None:
        return []
    row_id = session.scalar(
        sa.select(ModelVersion.id).where(
            ModelVersion.model_id == deployment.model_id, ModelVersion.version == version
        )
    )
    if row_id is None:
        raise InvalidInput(f"the deployment's model has no version {version}")
    return [PredictionLog.model_version_id == row_id]


def performance(
    session: Session,
    deployment: Deployment,
    window: Window,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    estimated: bool = True,
) -> dict[str, Any]:
    model = session.get(Model, deployment.model_id)
    task = model.task if model is not None else "classification"
    classification = task != "regression"
    lo, hi = _epoch(window.start), _epoch(window.end)
    extra = _version_filter(session, deployment, window.version)
    in_window = [
        PredictionLog.deployment_id == deployment.id,
        PredictionLog.bucket_start >= lo - lo % 60,
        PredictionLog.bucket_start < hi,
        PredictionLog.at >= window.start,
        PredictionLog.at < window.end,
        PredictionLog.status_code < 400,
        *extra,
    ]
    joined = sa.and_(
        GroundTruth.request_id == PredictionLog.request_id,
        GroundTruth.deployment_id == deployment.id,
    )
    labelled_records = (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(PredictionLog)
            .join(GroundTruth, joined)
            .where(*in_window)
        )
        or 0
    )
    if labelled_records > max_rows:
        raise InvalidInput(
            f"{labelled_records} labelled requests in the window; at most {max_rows}: "
            "ask for a shorter window"
        )
    versions = _versions(session, deployment)
    size = window.bucket_seconds
    cells: dict[tuple[int, int], _Rows] = defaultdict(_Rows)
    roles: dict[int, set[str]] = defaultdict(set)
    skipped = 0
    flat = 0
    query = (
        sa.select(
            PredictionLog.bucket_start,
            PredictionLog.model_version_id,
            PredictionLog.role,
            PredictionLog.outputs,
            GroundTruth.labels,
        )
        .join(GroundTruth, joined)
        .where(*in_window)
        .execution_options(yield_per=5000)
    )
    for bucket_start, version_id, role, outputs, labels in session.execute(query):
        if version_id is None or not isinstance(outputs, dict):
            skipped += 1
            continue
        preds = outputs.get("predictions")
        if not isinstance(preds, list) or not isinstance(labels, list) or len(preds) != len(labels):
            skipped += 1
            continue
        flat += len(preds)
        if flat > max_rows:
            raise InvalidInput(
                f"more than {max_rows} labelled rows in the window: ask for a shorter window"
            )
        classes = versions.get(version_id, (0, None))[1]
        cell = cells[(bucket_start - bucket_start % size, version_id)]
        roles[version_id].add(role)
        cell.requests += 1
        if classification:
            k = len(classes) if classes else 0
            probs = _proba_rows(outputs, len(preds), k)
            if probs is None:
                cell.proba_ok = False  # never misalign: no probability metrics for this cell
            else:
                cell.proba.extend(probs)
            cell.truth.extend(labels)
            cell.pred.extend(preds)
        else:
            try:
                cell.truth.extend(float(v) for v in labels)
                cell.pred.extend(float(v) for v in preds)
            except (TypeError, ValueError):
                skipped += 1

    unlabelled: dict[tuple[int, int], _Unlabelled] = defaultdict(_Unlabelled)
    calibrators: dict[int, estimation.Calibrator] = {}
    if classification and estimated:
        unlabelled = _scan_for_estimation(session, in_window, versions, size, max_rows, roles)
        for version_id in {v for _, v in unlabelled}:
            calibrators[version_id] = _calibrator(
                session, deployment, version_id, versions, window.start
            )

    def metrics_of(rows: _Rows, version_id: int) -> dict[str, Any]:
        if classification:
            classes = versions.get(version_id, (0, None))[1]
            proba = (
                np.asarray(rows.proba, dtype=np.float64) if rows.proba_ok and rows.proba else None
            )
            return classification_metrics(rows.truth, rows.pred, classes, proba)
        return regression_metrics(np.asarray(rows.truth), np.asarray(rows.pred))

    def estimate_of(rows: _Unlabelled, version_id: int) -> dict[str, Any] | None:
        classes = versions.get(version_id, (0, None))[1]
        if not rows.proba or not classes or len(rows.proba) != len(rows.pred):
            return None
        col = {canonical(c): i for i, c in enumerate(classes)}
        try:
            pred_idx = np.asarray([col[canonical(v)] for v in rows.pred], dtype=np.int64)
        except (KeyError, TypeError):
            return None
        return estimation.estimate(
            np.asarray(rows.proba, dtype=np.float64), pred_idx, calibrators[version_id]
        )

    buckets = []
    first = lo - lo % size
    for b in range(first, hi, size):
        entries = []
        ids = sorted({v for (bb, v) in cells if bb == b} | {v for (bb, v) in unlabelled if bb == b})
        for version_id in ids:
            rows = cells.get((b, version_id))
            entry: dict[str, Any] = {
                "version": versions.get(version_id, (None, None))[0],
                "labelled_requests": rows.requests if rows else 0,
                "metrics": metrics_of(rows, version_id) if rows else None,
            }
            if classification and estimated:
                scan = unlabelled.get((b, version_id))
                entry["estimated"] = estimate_of(scan, version_id) if scan else None
            entries.append(entry)
        buckets.append(
            {"start": _iso(max(b, lo)), "end": _iso(min(b + size, hi)), "versions": entries}
        )

    totals: dict[int, _Rows] = defaultdict(_Rows)
    for (_, version_id), rows in sorted(cells.items()):
        total = totals[version_id]
        total.truth.extend(rows.truth)
        total.pred.extend(rows.pred)
        total.proba.extend(rows.proba)
        total.proba_ok = total.proba_ok and rows.proba_ok
        total.requests += rows.requests
    overall = [
        {
            "version": versions.get(v, (None, None))[0],
            "roles": sorted(roles[v]),
            "labelled_requests": rows.requests,
            "metrics": metrics_of(rows, v),
        }
        for v, rows in sorted(
            totals.items(), key=lambda item: versions.get(item[0], (0, None))[0] or 0
        )
    ]
    result: dict[str, Any] = {
        "deployment": deployment.name,
        "task": task,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "bucket": window.bucket,
        "bucket_seconds": size,
        "buckets": buckets,
        "overall": overall,
        "comparisons": _comparisons(totals, roles, versions, classification),
        "skipped_requests": skipped,
    }
    if classification and estimated:
        result["estimation"] = {
            "method": "CBPE (confidence-based performance estimation)",
            "calibration": {
                str(versions.get(v, (None, None))[0]): {
                    "method": c.method,
                    "reference_rows": c.reference_rows,
                }
                for v, c in calibrators.items()
            },
            "reference": "labelled logged predictions of the same version before `start`",
            "assumptions": estimation.ASSUMPTIONS
            + (
                [estimation.UNCALIBRATED]
                if any(c.maps is None for c in calibrators.values())
                else []
            ),
        }
    return result


def _versions(session: Session, deployment: Deployment) -> dict[int, tuple[int, list[Any] | None]]:
    """model_version_id → (number, classes from the signature)."""
    out: dict[int, tuple[int, list[Any] | None]] = {}
    rows = session.execute(
        sa.select(ModelVersion.id, ModelVersion.version, ModelVersion.signature).where(
            ModelVersion.model_id == deployment.model_id
        )
    )
    for row_id, number, signature in rows:
        outputs = (signature or {}).get("outputs") or {}
        classes = outputs.get("classes") if isinstance(outputs, dict) else None
        out[row_id] = (number, list(classes) if isinstance(classes, list) else None)
    return out


def _scan_for_estimation(
    session: Session,
    in_window: list[Any],
    versions: dict[int, tuple[int, list[Any] | None]],
    size: int,
    max_rows: int,
    roles: dict[int, set[str]],
) -> dict[tuple[int, int], _Unlabelled]:
    cells: dict[tuple[int, int], _Unlabelled] = defaultdict(_Unlabelled)
    query = (
        sa.select(
            PredictionLog.bucket_start,
            PredictionLog.model_version_id,
            PredictionLog.role,
            PredictionLog.outputs,
        )
        .where(*in_window)
        .execution_options(yield_per=5000)
    )
    flat = 0
    for bucket_start, version_id, role, outputs in session.execute(query):
        classes = versions.get(version_id, (0, None))[1] if version_id is not None else None
        if not classes or not isinstance(outputs, dict):
            continue
        preds = outputs.get("predictions")
        if not isinstance(preds, list):
            continue
        probs = _proba_rows(outputs, len(preds), len(classes))
        if probs is None:
            continue
        flat += len(preds)
        if flat > max_rows:
            raise InvalidInput(
                f"more than {max_rows} logged rows to estimate from: ask for a shorter window "
                "or estimated=false"
            )
        roles[version_id].add(role)
        cell = cells[(bucket_start - bucket_start % size, version_id)]
        cell.pred.extend(preds)
        cell.proba.extend(probs)
    return cells


def _calibrator(
    session: Session,
    deployment: Deployment,
    version_id: int,
    versions: dict[int, tuple[int, list[Any] | None]],
    before: datetime,
) -> estimation.Calibrator:
    classes = versions.get(version_id, (0, None))[1] or []
    col = {canonical(c): i for i, c in enumerate(classes)}
    query = (
        sa.select(PredictionLog.outputs, GroundTruth.labels)
        .join(
            GroundTruth,
            sa.and_(
                GroundTruth.request_id == PredictionLog.request_id,
                GroundTruth.deployment_id == deployment.id,
            ),
        )
        .where(
            PredictionLog.deployment_id == deployment.id,
            PredictionLog.model_version_id == version_id,
            PredictionLog.at < before,
            PredictionLog.status_code < 400,
        )
        .order_by(PredictionLog.at.desc())
        .limit(REFERENCE_ROWS_CAP)
    )
    proba: list[list[float]] = []
    truth: list[int] = []
    for outputs, labels in session.execute(query):
        if not isinstance(outputs, dict) or not isinstance(labels, list):
            continue
        preds = outputs.get("predictions")
        if not isinstance(preds, list) or len(preds) != len(labels):
            continue
        probs = _proba_rows(outputs, len(preds), len(classes))
        if probs is None:
            continue
        try:
            idx = [col[canonical(v)] for v in labels]
        except (KeyError, TypeError):
            continue
        proba.extend(probs)
        truth.extend(idx)
        if len(truth) >= REFERENCE_ROWS_CAP:
            break
    if not truth:
        return estimation.Calibrator(None, 0)
    return estimation.fit_calibrator(
        np.asarray(proba, dtype=np.float64), np.asarray(truth, dtype=np.int64)
    )


def _comparisons(
    totals: dict[int, _Rows],
    roles: dict[int, set[str]],
    versions: dict[int, tuple[int, list[Any] | None]],
    classification: bool,
) -> list[dict[str, Any]]:
    """Each other version against the champion's (or the lowest-numbered) over the window."""
    if len(totals) < 2:
        return []
    ids = sorted(totals, key=lambda v: versions.get(v, (0, None))[0] or 0)
    champions = [v for v in ids if "champion" in roles[v]]
    baseline = champions[-1] if champions else ids[0]
    base = totals[baseline]
    out = []
    for other_id in ids:
        if other_id == baseline:
            continue
        other = totals[other_id]
        entry: dict[str, Any] = {
            "baseline_version": versions.get(baseline, (None, None))[0],
            "version": versions.get(other_id, (None, None))[0],
            "n_baseline": len(base.truth),
            "n": len(other.truth),
        }
        if classification:
            k1 = sum(
                canonical(a) == canonical(b) for a, b in zip(base.truth, base.pred, strict=True)
            )
            k2 = sum(
                canonical(a) == canonical(b) for a, b in zip(other.truth, other.pred, strict=True)
            )
            z, p = two_proportion_z(k1, len(base.truth), k2, len(other.truth))
            b_acc = k1 / len(base.truth) if base.truth else None
            o_acc = k2 / len(other.truth) if other.truth else None
            entry.update(
                metric="accuracy",
                test="two_proportion_z",
                baseline_value=b_acc,
                value=o_acc,
                difference=(o_acc - b_acc) if b_acc is not None and o_acc is not None else None,
                statistic=z,
                p_value=p,
            )
        else:
            a = np.abs(np.asarray(base.truth) - np.asarray(base.pred))
            b = np.abs(np.asarray(other.truth) - np.asarray(other.pred))
            t, p = welch_t(a, b)
            entry.update(
                metric="mae",
                test="welch_t_on_absolute_errors",
                baseline_value=float(a.mean()) if len(a) else None,
                value=float(b.mean()) if len(b) else None,
                difference=float(b.mean() - a.mean()) if len(a) and len(b) else None,
                statistic=t,
                p_value=p,
            )
        out.append(entry)
    return out
