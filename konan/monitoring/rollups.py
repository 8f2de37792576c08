"""Rollups kept incrementally at ingest, in the same transaction as the raw insert.

* `HealthMinute`: per deployment, model version, role and minute: requests, status classes,
  latency sum and a fixed latency histogram (`LATENCY_BOUNDS_MS`), so percentiles come from
  bucket counts, never from a scan of raw logs.
* `FeatureHistogram`: per deployment, model version, feature (and ``__prediction__``) and hour:
  counts over the version's reference bins, fixed when the reference dataset was registered
  (the prediction's from the version's ``prediction_profile`` when it has one).

`update(session, rows)` takes the rows `ingest` actually inserted (never replays) and adds them
with ``INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n``: the dialect insert on SQLite and
PostgreSQL alike, one code path. It flushes, never commits.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from konan.core.errors import ConfigError
from konan.monitoring.orm import (
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    FeatureHistogram,
    HealthMinute,
)
from konan.registry.binning import Bins, CategoricalBins, NumericBins, bins_from_json
from konan.registry.orm import DatasetVersion, ModelVersion

MINUTE = 60
HOUR = 3600
PREDICTION = "__prediction__"  # the feature name under which predictions are counted
MISSING_BIN = -1  # null, NaN, +/-inf, or a value of the wrong type

_HEALTH = cast(sa.Table, HealthMinute.__table__)
_HISTOGRAM = cast(sa.Table, FeatureHistogram.__table__)
_HEALTH_KEY = ("deployment_id", "model_version_id", "role", "bucket_start")
_HEALTH_SUMS = ("requests", "status_2xx", "status_4xx", "status_5xx", "latency_sum_ms")
_HEALTH_VALUES = _HEALTH_SUMS + LATENCY_COLUMNS
_HISTOGRAM_KEY = ("deployment_id", "model_version_id", "bucket_start", "feature", "bin")


# ---- the bins of a model version, cached per process -------------------------------------------


@dataclass(frozen=True)
class VersionBins:
    """What live traffic of one model version is counted into: feature name -> reference bins.

    Includes ``__prediction__`` from the version's ``prediction_profile`` (the model's own
    predictions on its reference sample), else from the reference dataset's bins of that name.
    """

    reference_dataset_version_id: int
    features: Mapping[str, Bins]
    prediction_source: Literal["prediction_profile", "reference_dataset"] | None = None


def prediction_bins(version: ModelVersion) -> Bins | None:
    """``prediction_profile["bins"]["__prediction__"]`` parsed, or None (absent or malformed)."""
    profile = version.prediction_profile
    entry = profile.get("bins") if isinstance(profile, Mapping) else None
    raw = entry.get(PREDICTION) if isinstance(entry, Mapping) else None
    if not isinstance(raw, Mapping):
        return None
    try:
        return bins_from_json(raw)
    except (ValueError, TypeError, AttributeError):
        return None


def version_bins_from(version: ModelVersion, reference: DatasetVersion) -> VersionBins:
    """Parse a reference dataset's bins for the version's input features (all columns when the
    signature names none), and the prediction's. Malformed entries are skipped rather than
    failing ingest."""
    declared = [
        str(f.get("name"))
        for f in (version.signature or {}).get("inputs", [])
        if isinstance(f, Mapping)
    ]
    raw = reference.reference_bins or {}
    names = [n for n in declared if n in raw] if declared else [n for n in raw if n != PREDICTION]
    features: dict[str, Bins] = {}
    for name in names:
        try:
            features[name] = bins_from_json(raw[name])
        except (ValueError, TypeError, AttributeError):
            continue
    source: Literal["prediction_profile", "reference_dataset"] | None = None
    predicted = prediction_bins(version)
    if predicted is not None:
        features[PREDICTION], source = predicted, "prediction_profile"
    elif PREDICTION in raw:
        try:
            features[PREDICTION] = bins_from_json(raw[PREDICTION])
            source = "reference_dataset"
        except (ValueError, TypeError, AttributeError):
            pass
    return VersionBins(reference.id, features, source)


class BinCache:
    """Parsed bins per model version. Versions and dataset versions are immutable, so an entry
    stays valid; a cheap query per batch keys it by ids *and* creation times, so a database that
    was reset (tests, a restored backup) never serves another version's bins."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._entries: dict[tuple[Any, ...], VersionBins | None] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def lookup(self, session: Session, version_ids: Iterable[int]) -> dict[int, VersionBins | None]:
        ids = sorted(set(version_ids) - {0})
        if not ids:
            return {}
        keys = session.execute(
            sa.select(
                ModelVersion.id,
                ModelVersion.created_at,
                DatasetVersion.id,
                DatasetVersion.created_at,
                # The prediction profile may be filled in after the version was created.
                ModelVersion.prediction_profile,
            )
            .outerjoin(
                DatasetVersion, DatasetVersion.id == ModelVersion.reference_dataset_version_id
            )
            .where(ModelVersion.id.in_(ids))
        ).all()
        out: dict[int, VersionBins | None] = {}
        for mv_id, mv_at, dv_id, dv_at, profile in keys:
            key = (_url(session), mv_id, mv_at, dv_id, dv_at, _fingerprint(profile))
            with self._lock:
                hit = key in self._entries
                found = self._entries.get(key)
            if not hit:
                found = self._load(session, mv_id, dv_id)
                with self._lock:
                    if len(self._entries) >= self._max:
                        self._entries.clear()
                    self._entries[key] = found
            out[mv_id] = found
        return out

    @staticmethod
    def _load(
        session: Session, version_id: int, dataset_version_id: int | None
    ) -> VersionBins | None:
        if dataset_version_id is None:
            return None
        version = session.get(ModelVersion, version_id)
        reference = session.get(DatasetVersion, dataset_version_id)
        if version is None or reference is None:
            return None
        return version_bins_from(version, reference)


def _fingerprint(profile: Any) -> bytes | None:
    if profile is None:
        return None
    return orjson.dumps(profile, option=orjson.OPT_SORT_KEYS)


def _url(session: Session) -> str:
    return session.get_bind().engine.url.render_as_string(hide_password=True)


BIN_CACHE = BinCache()  # the consumer process's cache


# ---- counting ------------------------------------------------------------------------------------


def latency_bucket(latency_ms: float) -> int:
    """Index into LATENCY_COLUMNS: the first bound >= the latency (Prometheus ``le``)."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def status_class(status_code: int) -> str | None:
    if 200 <= status_code < 300:
        return "status_2xx"
    if 400 <= status_code < 500:
        return "status_4xx"
    if status_code >= 500:
        return "status_5xx"
    return None


def health_counts(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Per (deployment, version or 0, role, minute): the HealthMinute increments."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (
            row["deployment_id"],
            row["model_version_id"] or 0,
            row["role"],
            int(row["bucket_start"]) // MINUTE * MINUTE,
        )
        acc = out.get(key)
        if acc is None:
            acc = out[key] = dict.fromkeys(_HEALTH_VALUES, 0)
            acc["latency_sum_ms"] = 0.0
        acc["requests"] += 1
        klass = status_class(row["status_code"])
        if klass is not None:
            acc[klass] += 1
        latency = float(row["latency_ms"])
        acc["latency_sum_ms"] += latency
        acc[LATENCY_COLUMNS[latency_bucket(latency)]] += 1
    return out


def _numeric_values(values: list[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_to_float(v) for v in values], dtype=np.float64)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return math.nan  # null or a value of the wrong type: missing


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def bin_counts(bins: Bins, values: list[Any]) -> dict[int, int]:
    """Counts of ``values`` per bin index (MISSING_BIN for missing), zero bins left out."""
    if not values:
        return {}
    if isinstance(bins, NumericBins):
        array = _numeric_values(values)
        counts = bins.count(array)
        missing = int(array.size - counts.sum())
    else:
        assert isinstance(bins, CategoricalBins)
        try:
            counts = bins.count(values)
        except TypeError:  # an unhashable value (list, object) cannot be a category: missing
            counts = bins.count([v for v in values if isinstance(v, str | bool | int | float)])
        missing = len(values) - int(counts.sum())
    out = {i: int(n) for i, n in enumerate(counts.tolist()) if n}
    if missing:
        out[MISSING_BIN] = missing
    return out


def histogram_counts(
    rows: Sequence[Mapping[str, Any]], version_bins: Mapping[int, VersionBins | None]
) -> dict[tuple[Any, ...], int]:
    """Per (deployment, version, hour, feature, bin): how many live values to add."""
    out: dict[tuple[Any, ...], int] = {}
    for (deployment_id, version_id, hour), (items, predictions) in _gather(
        rows, version_bins
    ).items():
        features = version_bins[version_id].features  # type: ignore[union-attr]
        # Decoded JSON: input rows are dicts; anything else counts as missing in every feature.
        dicts = [item if type(item) is dict else _NO_VALUES for item in items]
        for name, bins in features.items():
            # One column at a time over the whole group, so numpy bins it in one call.
            column = predictions if name == PREDICTION else [item.get(name) for item in dicts]
            for index, n in bin_counts(bins, column).items():
                out[(deployment_id, version_id, hour, name, index)] = n
    return out


_NO_VALUES: dict[str, Any] = {}


def _gather(
    rows: Sequence[Mapping[str, Any]], version_bins: Mapping[int, VersionBins | None]
) -> dict[tuple[int, int, int], tuple[list[Any], list[Any]]]:
    """Per (deployment, version, hour): every input row and every prediction of ``rows``, in
    two flat lists (one pass over the records; nothing per feature yet)."""
    groups: dict[tuple[int, int, int], tuple[list[Any], list[Any]]] = {}
    for row in rows:
        version_id = row["model_version_id"]
        bins = version_bins.get(version_id) if version_id else None
        if bins is None or not bins.features:
            continue
        key = (row["deployment_id"], version_id, int(row["bucket_start"]) // HOUR * HOUR)
        group = groups.get(key)
        if group is None:
            group = groups[key] = ([], [])
        group[0].extend(row.get("inputs") or [])
        if PREDICTION in bins.features:
            predictions = (row.get("outputs") or {}).get("predictions")
            if isinstance(predictions, list):
                group[1].extend(predictions)
    return groups


# ---- the upsert ---------------------------------------------------------------------------


def _insert(session: Session, table: sa.Table) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise ConfigError(f"monitoring rollups need SQLite or PostgreSQL, not {dialect}")


def _upsert(
    session: Session, table: sa.Table, key: Sequence[str], sums: Sequence[str], params: list[Any]
) -> None:
    if not params:
        return
    if session.get_bind().dialect.name == "postgresql":
        _upsert_arrays(session, table, key, sums, params)
        return
    stmt = _insert(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={name: table.c[name] + stmt.excluded[name] for name in sums},
    )
    session.execute(stmt, params)


def _upsert_arrays(
    session: Session, table: sa.Table, key: Sequence[str], sums: Sequence[str], params: list[Any]
) -> None:
    """PostgreSQL: the same upsert as one statement over one array per column (``unnest``):
    one round trip and one plan for the batch's few hundred rollup rows, instead of a pipelined
    statement per row. Keys are unique within ``params``, as ON CONFLICT DO UPDATE requires."""
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    columns = [*key, *sums]
    arrays = ", ".join(
        f"CAST(:{name} AS {table.c[name].type.compile(dialect=dialect)}[])" for name in columns
    )
    target = quote(table.name)
    updates = ", ".join(f"{quote(n)} = {target}.{quote(n)} + excluded.{quote(n)}" for n in sums)
    statement = sa.text(
        f"INSERT INTO {target} ({', '.join(quote(c) for c in columns)}) "  # noqa: S608 - names from the table
        f"SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({', '.join(quote(k) for k in key)}) DO UPDATE SET {updates}"
    )
    session.execute(statement, {name: [p[name] for p in params] for name in columns})


@dataclass(frozen=True)
class RollupResult:
    health_rows: int
    histogram_rows: int


def update(
    session: Session, rows: Sequence[Mapping[str, Any]], cache: BinCache | None = None
) -> RollupResult:
    """Add freshly inserted prediction-log rows (as `ingest` builds them) to the rollups."""
    if not rows:
        return RollupResult(0, 0)
    cache = BIN_CACHE if cache is None else cache
    health = health_counts(rows)
    version_bins = cache.lookup(session, (r["model_version_id"] or 0 for r in rows))
    histograms = histogram_counts(rows, version_bins)
    # Sorted keys: two consumers upserting overlapping rows lock them in the same order.
    _upsert(
        session,
        _HEALTH,
        _HEALTH_KEY,
        _HEALTH_VALUES,
        [dict(zip(_HEALTH_KEY, k, strict=True), **health[k]) for k in sorted(health)],
    )
    _upsert(
        session,
        _HISTOGRAM,
        _HISTOGRAM_KEY,
        ("count",),
        [
            dict(zip(_HISTOGRAM_KEY, k, strict=True), count=histograms[k])
            for k in sorted(histograms)
        ],
    )
    return RollupResult(len(health), len(histograms))


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())
