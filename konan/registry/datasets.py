"""Profile an uploaded dataset version (training, reference, feedback export): format, schema,
summary statistics, the reference bins monitoring compares live traffic with, and the values
of categorical columns.

`profile_dataset` streams the file with pyarrow (CSV in ~1 MiB blocks, Parquet one column at a
time), so memory stays bounded however many rows there are. Everything it returns is plain
JSON (no NaN or infinity), ready for the ``DatasetVersion`` row. Any problem with the file is an
`InvalidInput` (422) that names it; nothing is returned half-profiled.

Decisions worth knowing
    - The format comes from the bytes, never the file name (`detect_format`).
    - CSV: comma-separated, ``"`` quotes (doubled to escape), quoted values may span lines,
      UTF-8 (a BOM is allowed), first line is the header. Empty fields and ``NA``, ``N/A``,
      ``NULL``, ``null``, ``None`` are nulls; ``nan``, ``inf``, ``-inf`` are float values.
      Booleans are ``true/false`` (any of ``true``, ``True``, ``TRUE``), not ``0/1``.
      Types are inferred from the first MiB; when a later row does not fit (``1.5`` in an
      integer column, ``abc`` in a float column) the column is widened (integer -> float ->
      string) and the file is read again.
    - Dates, times and timestamps become ``"string"`` columns: the signature has no temporal
      type, and a client sends them as text. CSV keeps the text as written; Parquet renders
      them as Arrow prints them (``2024-01-31``, ``2024-01-31 12:00:00.000000``). Decimals and
      half floats become ``"float"``. Lists, structs, maps, binary and duration columns are
      refused, naming the column and its type, as are columns without a single value.
    - NaN and +/-inf in a numeric column are counted (``nan``, ``posinf``, ``neginf``) and left
      out of min/max/mean/std, the quantiles and the bins. A numeric column with no finite
      value is refused.
    - Quantiles and bin edges come from a uniform reservoir sample of `RESERVOIR_SIZE`
      finite values per column (deterministic seed). When a column has more, its stats say
      ``"sampled": true``; its bin *counts* are still exact (a second pass over that column).
    - String columns count distinct values exactly up to `DISTINCT_CAP`; past that the count is
      a lower bound and the top values approximate (``"distinct_exact"``/``"top_exact"``:
      false). Categorical detection (at most ``MAX_CATEGORIES`` values) is always exact.

Stats per column (``DatasetProfile.stats[name]``), ``count`` = non-null values::

    float/integer: {"type", "count", "nulls", "nan", "posinf", "neginf", "min", "max", "mean",
                    "std" (ddof=1), "quantiles": {"p01", "p05", "p25", "p50", "p75", "p95", "p99"},
                    "sampled", "sample_size"}
    string:        {"type", "count", "nulls", "distinct", "distinct_exact",
                    "top": [{"value", "count"}, ... up to 20], "top_exact"}
    boolean:       {"type", "count", "nulls", "true", "false"}

Every column's stats also carry ``"chunk_thresholds"``: drift thresholds from the reference's
own chunks of rows (one more pass over the file when it has at least 1000 rows), or why there
are none; see `konan.registry.drift_statistics`.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from konan.core.errors import InvalidInput
from konan.registry.binning import (
    DEFAULT_NUMERIC_BINS,
    Bins,
    CategoricalBins,
    NumericBins,
    bins_from_json,
    categorical_bins_from_counts,
    count_numeric,
    quantile_edges,
)
from konan.registry.drift_statistics import (
    CHUNKS,
    chunk_bounds,
    chunk_thresholds,
    reference_counts,
)
from konan.registry.signature import MAX_CATEGORIES, ColumnSchema, ValueType

DataFormat = Literal["csv", "parquet"]
FORMATS: tuple[DataFormat, ...] = ("csv", "parquet")

RESERVOIR_SIZE = 100_000
DISTINCT_CAP = 10_000
TOP_VALUES = 20
MAX_COLUMN_NAME = 200  # FeatureSpec.name's limit: a longer name could never become a feature
QUANTILES = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}

# Peak memory grows with the block size (8 MiB blocks: ~160 MiB of Arrow buffers just to infer
# the types); 1 MiB parses as fast.
CSV_BLOCK_SIZE = 1 << 20
CSV_NULL_VALUES = ["", "NA", "N/A", "NULL", "null", "None"]
CSV_TRUE_VALUES = ["true", "True", "TRUE"]
CSV_FALSE_VALUES = ["false", "False", "FALSE"]
PARQUET_BATCH_ROWS = 65_536

_PARQUET_MAGIC = b"PAR1"
_SCAN_CHUNK = 1 << 20
_SEED = 20_240_601

# Leading bytes of formats people upload by mistake, to say what the file is instead.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one too); export it as CSV or Parquet"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "a gzip-compressed file; decompress it first"),
    (b"BZh", "a bzip2-compressed file; decompress it first"),
    (b"\xfd7zXZ\x00", "an xz-compressed file; decompress it first"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file; decompress it first"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"ARROW1", "an Arrow IPC / Feather file"),
    (b"FEA1", "a Feather v1 file"),
    (b"ORC", "an ORC file"),
    (b"Obj\x01", "an Avro file"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.xls); export it as CSV"),
    (b"%PDF", "a PDF document"),
    (b"\x89HDF", "an HDF5 file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x7fELF", "an executable"),
    (b"\xff\xfe", "UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text; save it as UTF-8"),
)


@dataclass(frozen=True)
class DatasetProfile:
    """What the registry stores about a dataset version (all fields plain JSON)."""

    format: DataFormat
    row_count: int
    columns: list[ColumnSchema]
    stats: dict[str, dict[str, Any]]
    reference_bins: dict[str, dict[str, Any]]
    # String and boolean columns with at most MAX_CATEGORIES distinct values: sorted values.
    category_values: dict[str, list[Any]] = field(default_factory=dict)

    def schema_json(self) -> dict[str, Any]:
        """The ``DatasetVersion.schema`` document."""
        return {"columns": [column.model_dump(mode="json") for column in self.columns]}


# --- format detection -------------------------------------------------------------------------


def detect_format(path: Path) -> DataFormat:
    """``"csv"`` or ``"parquet"`` from the file's bytes; anything else is `InvalidInput`.

    Parquet needs the ``PAR1`` marker at both ends and a footer that fits in the file. CSV must
    be UTF-8 text (a BOM is allowed) without NUL bytes; the whole file is checked, in chunks.
    """
    size = path.stat().st_size
    if size == 0:
        raise InvalidInput("the file is empty")
    with path.open("rb") as handle:
        head = handle.read(16)
        if head.startswith(_PARQUET_MAGIC):
            if _parquet_footer_ok(handle, size):
                return "parquet"
            # A CSV whose header happens to start with "PAR1" is still a CSV.
            if _text_problem(handle) is None:
                return "csv"
            raise InvalidInput(
                "truncated Parquet file: it starts with the Parquet marker but its footer is "
                "missing or cut short (was the upload interrupted?)"
            )
        if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
            raise InvalidInput("not CSV or Parquet: this is a Python pickle, which is never loaded")
        for signature, what in _SIGNATURES:
            if head.startswith(signature):
                raise InvalidInput(f"not CSV or Parquet: this looks like {what}")
        problem = _text_problem(handle)
    if problem is not None:
        raise InvalidInput(f"not CSV or Parquet: {problem}")
    return "csv"


def _parquet_footer_ok(handle: BinaryIO, size: int) -> bool:
    # PAR1 <data> <footer> <4-byte footer length> PAR1
    if size < 12:
        return False
    handle.seek(size - 8)
    tail = handle.read(8)
    footer = int.from_bytes(tail[:4], "little")
    return tail[4:] == _PARQUET_MAGIC and 0 < footer <= size - 12


def _text_problem(handle: BinaryIO) -> str | None:
    """Why the file is not UTF-8 text without NUL bytes, or None when it is."""
    handle.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    while chunk := handle.read(_SCAN_CHUNK):
        nul = chunk.find(b"\x00")
        if nul >= 0:
            return f"the file holds binary data (a NUL byte at offset {offset + nul})"
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            # exc.object is the decoder's buffered bytes followed by this chunk.
            position = offset - pending + exc.start
            return (
                f"the file is not UTF-8 text (invalid byte 0x{exc.object[exc.start]:02x} at "
                f"offset {position}); save the CSV as UTF-8"
            )
        offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "the file is not UTF-8 text (it ends in the middle of a character)"
    return None


# --- profiling --------------------------------------------------------------------------------


def profile_dataset(
    path: Path, *, declared_format: str | None = None, max_columns: int = 2000
) -> DatasetProfile:
    """Profile a CSV or Parquet file; `InvalidInput` naming the problem when it is unusable."""
    actual = detect_format(path)
    if declared_format is not None:
        declared = declared_format.strip().lower()
        if declared not in FORMATS:
            raise InvalidInput(
                f"unsupported dataset format {declared_format!r}: use csv or parquet"
            )
        if declared != actual:
            raise InvalidInput(f"declared {declared} but the file is {actual}")
    if actual == "csv":
        return _profile_csv(path, max_columns)
    return _profile_parquet(path, max_columns)


class _Source(Protocol):
    def scan(self, names: list[str]) -> Iterator[tuple[str, pa.Array]]:
        """Chunks of the named columns, in file order per column."""
        ...


def _profile_source(
    source: _Source, fmt: DataFormat, names: list[str], types: list[pa.DataType]
) -> DatasetProfile:
    profilers: dict[str, _ColumnProfiler] = {
        name: _profiler_for(name, arrow_type) for name, arrow_type in zip(names, types, strict=True)
    }
    for name, chunk in source.scan(names):
        profilers[name].update(chunk)

    row_counts = {p.rows for p in profilers.values()}
    if len(row_counts) != 1:  # pragma: no cover - a reader bug, not user input
        raise InvalidInput("columns have different lengths")
    row_count = row_counts.pop()
    if row_count == 0:
        raise InvalidInput("the file has no data rows")

    # Exact bin counts for columns whose edges came from a sample: one more pass over them.
    rebin = {
        name: profiler
        for name, profiler in profilers.items()
        if isinstance(profiler, _NumericProfiler) and profiler.sampled
    }
    if rebin:
        counts = {name: np.zeros(p.edges().size + 1, dtype=np.int64) for name, p in rebin.items()}
        for name, chunk in source.scan(list(rebin)):
            counts[name] += count_numeric(rebin[name].values_of(chunk), rebin[name].edges())
        for name, numeric in rebin.items():
            numeric.exact_counts = counts[name]

    columns: list[ColumnSchema] = []
    stats: dict[str, dict[str, Any]] = {}
    bins: dict[str, dict[str, Any]] = {}
    categories: dict[str, list[Any]] = {}
    for name, profiler in profilers.items():
        result = profiler.finish()
        columns.append(
            ColumnSchema(name=name, type=profiler.value_type, nullable=profiler.nulls > 0)
        )
        stats[name] = result.stats
        bins[name] = result.bins
        if result.categories is not None:
            categories[name] = result.categories
    _add_chunk_thresholds(source, profilers, row_count, stats, bins)
    return DatasetProfile(
        format=fmt,
        row_count=row_count,
        columns=columns,
        stats=stats,
        reference_bins=bins,
        category_values=categories,
    )


def _add_chunk_thresholds(
    source: _Source,
    profilers: dict[str, _ColumnProfiler],
    row_count: int,
    stats: dict[str, dict[str, Any]],
    bins: dict[str, dict[str, Any]],
) -> None:
    """``stats[column]["chunk_thresholds"]``: one more pass counts each chunk of rows into the
    column's bins (see `konan.registry.drift_statistics`)."""
    bounds = chunk_bounds(row_count)
    if isinstance(bounds, str):
        for name in profilers:
            stats[name]["chunk_thresholds"] = {"skipped": bounds}
        return
    parsed: dict[str, Bins] = {name: bins_from_json(bins[name]) for name in profilers}
    counts = {
        name: np.zeros((CHUNKS, reference_counts(b).size), dtype=np.int64)
        for name, b in parsed.items()
    }
    offsets = dict.fromkeys(profilers, 0)
    for name, chunk in source.scan(list(profilers)):
        start = offsets[name]
        end = offsets[name] = start + len(chunk)
        first = bisect.bisect_right(bounds, start) - 1
        for index in range(first, CHUNKS):
            lo, hi = max(bounds[index], start), min(bounds[index + 1], end)
            if lo >= hi:
                break
            piece = chunk.slice(lo - start, hi - lo)
            counts[name][index] += profilers[name].chunk_counts(piece, parsed[name])
    for name, column_bins in parsed.items():
        stats[name]["chunk_thresholds"] = chunk_thresholds(
            column_bins, list(counts[name]), stats[name], chunk_rows=row_count // CHUNKS
        )


# --- columns ----------------------------------------------------------------------------------


def _value_type(name: str, arrow_type: pa.DataType) -> ValueType:
    """The signature type for an Arrow type, or InvalidInput for a type we cannot profile."""
    if pa.types.is_dictionary(arrow_type):
        return _value_type(name, arrow_type.value_type)
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_string_view(arrow_type):
        return "string"
    if pa.types.is_temporal(arrow_type) and not (
        pa.types.is_duration(arrow_type) or pa.types.is_interval(arrow_type)
    ):
        return "string"
    if pa.types.is_null(arrow_type):
        raise InvalidInput(
            f"column {name!r} has no values (every row is empty); drop it or fill it"
        )
    raise InvalidInput(
        f"column {name!r} has type {arrow_type}, which cannot be profiled; "
        "use numbers, booleans or text"
    )


def _check_names(names: list[str], max_columns: int) -> None:
    if not names:
        raise InvalidInput("the file has no columns")
    if len(names) > max_columns:
        raise InvalidInput(f"the file has {len(names)} columns; at most {max_columns} are allowed")
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if not name.strip():
            raise InvalidInput(f"column {position} has an empty name")
        if len(name) > MAX_COLUMN_NAME:
            raise InvalidInput(
                f"column {position} has a name longer than {MAX_COLUMN_NAME} characters"
            )
        if "\x00" in name:
            raise InvalidInput(f"column {position} has a NUL character in its name")
        if name in seen:
            raise InvalidInput(
                f"duplicate column name {name!r} (columns {seen[name]} and {position})"
            )
        seen[name] = position


@dataclass
class _Result:
    stats: dict[str, Any]
    bins: dict[str, Any]
    categories: list[Any] | None = None


class _ColumnProfiler:
    value_type: ValueType

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows = 0
        self.nulls = 0

    def update(self, chunk: pa.Array) -> None:
        self.rows += len(chunk)
        self.nulls += chunk.null_count
        if chunk.null_count:
            chunk = chunk.drop_null()
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_decode()
        if len(chunk):
            self._update(chunk)

    def _update(self, chunk: pa.Array) -> None:
        raise NotImplementedError

    def finish(self) -> _Result:
        if self.rows == self.nulls:
            raise InvalidInput(
                f"column {self.name!r} has no values (every row is empty); drop it or fill it"
            )
        return self._finish()

    def _finish(self) -> _Result:
        raise NotImplementedError

    def chunk_counts(self, chunk: pa.Array, bins: Bins) -> npt.NDArray[np.int64]:
        """Counts of a slice of this column over ``bins`` (aligned with `reference_counts`)."""
        raise NotImplementedError

    def _base_stats(self) -> dict[str, Any]:
        return {"type": self.value_type, "count": self.rows - self.nulls, "nulls": self.nulls}


def _json_float(value: float | np.floating[Any]) -> float | None:
    # Only sums of values near the float limit overflow; JSON (and PostgreSQL) has no inf.
    number = float(value)
    return number if math.isfinite(number) else None


class _NumericProfiler(_ColumnProfiler):
    """Counts, streaming mean/variance (Chan et al.), min/max and a reservoir sample."""

    def __init__(self, name: str, value_type: ValueType) -> None:
        super().__init__(name)
        self.value_type = value_type
        self.nan = self.posinf = self.neginf = 0
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.low: int | float | None = None
        self.high: int | float | None = None
        self.seen = 0
        self.sample = np.empty(0, dtype=np.float64)
        self.rng = np.random.default_rng(_SEED)
        self.exact_counts: npt.NDArray[np.int64] | None = None
        self._edges: npt.NDArray[np.float64] | None = None

    @property
    def sampled(self) -> bool:
        return self.seen > RESERVOIR_SIZE

    def values_of(self, chunk: pa.Array) -> npt.NDArray[np.float64]:
        """Non-null values as float64 (non-finite ones kept; binning skips them)."""
        if chunk.null_count:
            chunk = chunk.drop_null()
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_decode()
        if pa.types.is_decimal(chunk.type) or pa.types.is_float16(chunk.type):
            chunk = pc.cast(chunk, pa.float64())
        return np.asarray(chunk.to_numpy(zero_copy_only=False), dtype=np.float64)

    def _update(self, chunk: pa.Array) -> None:
        values = self.values_of(chunk)
        if self.value_type == "float":
            finite_mask = np.isfinite(values)
            if not finite_mask.all():
                nan = int(np.isnan(values).sum())
                positive = int(np.isposinf(values).sum())
                self.nan += nan
                self.posinf += positive
                self.neginf += int(values.size - finite_mask.sum()) - nan - positive
                values = values[finite_mask]
            if values.size == 0:
                return
            low, high = float(values.min()), float(values.max())
        else:
            # Exact integer extremes: float64 would round beyond 2**53.
            extremes = pc.min_max(chunk)
            low, high = extremes["min"].as_py(), extremes["max"].as_py()
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

        count = values.size
        with np.errstate(over="ignore", invalid="ignore"):  # values near 1e308: see _json_float
            batch_mean = float(values.mean())
            batch_m2 = float(np.square(values - batch_mean).sum())
        total = self.n + count
        delta = batch_mean - self.mean
        self.mean += delta * count / total
        self.m2 += batch_m2 + delta * delta * self.n * count / total
        self.n = total
        self._reservoir(values)

    def _reservoir(self, values: npt.NDArray[np.float64]) -> None:
        # Algorithm R, vectorised: item t (0-based over the column) replaces slot j ~ U[0, t]
        # when j < k; assigning in order keeps the last write, as the sequential algorithm does.
        k, seen, m = RESERVOIR_SIZE, self.seen, values.size
        fill = min(max(k - seen, 0), m)
        if fill:
            self.sample = np.concatenate([self.sample, values[:fill]])
        if m > fill:
            if self.sample.size < k:  # pragma: no cover - fill guarantees a full reservoir here
                raise AssertionError("reservoir not full")
            positions = np.arange(seen + fill, seen + m, dtype=np.int64)
            slots = self.rng.integers(0, positions + 1)
            keep = slots < k
            self.sample[slots[keep]] = values[fill:][keep]
        self.seen += m

    def chunk_counts(self, chunk: pa.Array, bins: Bins) -> npt.NDArray[np.int64]:
        assert isinstance(bins, NumericBins)
        return bins.count(self.values_of(chunk))

    def edges(self) -> npt.NDArray[np.float64]:
        if self._edges is None:
            self._edges = quantile_edges(self.sample, DEFAULT_NUMERIC_BINS)
        return self._edges

    def _finish(self) -> _Result:
        if self.n == 0:
            raise InvalidInput(
                f"numeric column {self.name!r} has no finite values "
                f"({self.nan} NaN, {self.posinf + self.neginf} infinite)"
            )
        edges = self.edges()
        counts = self.exact_counts if self.sampled else count_numeric(self.sample, edges)
        assert counts is not None
        with np.errstate(over="ignore", invalid="ignore"):
            quantiles = np.quantile(self.sample, list(QUANTILES.values()))
        std = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0
        stats = {
            **self._base_stats(),
            "nan": self.nan,
            "posinf": self.posinf,
            "neginf": self.neginf,
            "min": self.low,
            "max": self.high,
            "mean": _json_float(self.mean),
            "std": _json_float(std),
            "quantiles": {
                key: _json_float(value) for key, value in zip(QUANTILES, quantiles, strict=True)
            },
            "sampled": self.sampled,
            "sample_size": int(self.sample.size),
        }
        bins = {
            "kind": "numeric",
            "edges": [float(e) for e in edges],
            "counts": [int(c) for c in counts],
        }
        return _Result(stats=stats, bins=bins)


class _StringProfiler(_ColumnProfiler):
    value_type: ValueType = "string"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.counts: dict[str, int] = {}
        self.exact = True
        self.most_distinct = 0

    @staticmethod
    def _value_counts(chunk: pa.Array) -> tuple[list[Any], list[int]]:
        counted = pc.value_counts(chunk)
        return counted.field("values").to_pylist(), counted.field("counts").to_pylist()

    def chunk_counts(self, chunk: pa.Array, bins: Bins) -> npt.NDArray[np.int64]:
        assert isinstance(bins, CategoricalBins)
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_decode()
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            chunk = pc.cast(chunk, pa.string())
        values, numbers = self._value_counts(chunk.drop_null())
        return bins.count_counted(dict(zip(values, numbers, strict=True)))

    def _update(self, chunk: pa.Array) -> None:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            chunk = pc.cast(chunk, pa.string())  # string_view and temporal types
        if pc.any(pc.match_substring(chunk, "\x00")).as_py():
            raise InvalidInput(f"column {self.name!r} contains a NUL character")
        values, numbers = self._value_counts(chunk)
        counts = self.counts
        for value, number in zip(values, numbers, strict=True):
            counts[value] = counts.get(value, 0) + number
        self.most_distinct = max(self.most_distinct, len(counts))
        if len(counts) > DISTINCT_CAP:
            # Keep the heavy hitters only: from here the counts are lower bounds.
            kept = sorted(counts.items(), key=lambda item: -item[1])[: DISTINCT_CAP // 2]
            self.counts = dict(kept)
            self.exact = False

    def _finish(self) -> _Result:
        count = self.rows - self.nulls
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        stats = {
            **self._base_stats(),
            "distinct": len(self.counts) if self.exact else self.most_distinct,
            "distinct_exact": self.exact,
            "top": [{"value": value, "count": n} for value, n in ranked[:TOP_VALUES]],
            "top_exact": self.exact,
        }
        bins = categorical_bins_from_counts(dict(ranked[:MAX_CATEGORIES]), MAX_CATEGORIES)
        top_total = int(bins.counts.sum())
        bins_json = {**bins.to_json(), "other": count - top_total}
        categories = (
            sorted(self.counts) if self.exact and len(self.counts) <= MAX_CATEGORIES else None
        )
        return _Result(stats=stats, bins=bins_json, categories=categories)


class _BooleanProfiler(_ColumnProfiler):
    value_type: ValueType = "boolean"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.true = 0

    def _update(self, chunk: pa.Array) -> None:
        self.true += int(pc.sum(chunk.cast(pa.int64())).as_py() or 0)

    def chunk_counts(self, chunk: pa.Array, bins: Bins) -> npt.NDArray[np.int64]:
        assert isinstance(bins, CategoricalBins)
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_decode()
        present = chunk.drop_null()
        true = int(pc.sum(present.cast(pa.int64())).as_py() or 0)
        return bins.count_counted({True: true, False: len(present) - true})

    def _finish(self) -> _Result:
        count = self.rows - self.nulls
        false = count - self.true
        stats = {**self._base_stats(), "true": self.true, "false": false}
        bins = categorical_bins_from_counts({True: self.true, False: false}, MAX_CATEGORIES)
        present = sorted(value for value, n in ((False, false), (True, self.true)) if n)
        return _Result(stats=stats, bins=bins.to_json(), categories=present)


class _NullProfiler(_ColumnProfiler):
    """A CSV column empty so far; the reader widens it if a value turns up later."""

    value_type: ValueType = "string"

    def _update(self, chunk: pa.Array) -> None:  # pragma: no cover - only nulls reach it
        raise AssertionError("a null column received values")

    def _finish(self) -> _Result:  # pragma: no cover - finish() refuses an all-null column
        raise AssertionError("unreachable")


def _profiler_for(name: str, arrow_type: pa.DataType) -> _ColumnProfiler:
    if pa.types.is_null(arrow_type):
        return _NullProfiler(name)
    value_type = _value_type(name, arrow_type)
    if value_type in ("float", "integer"):
        return _NumericProfiler(name, value_type)
    if value_type == "boolean":
        return _BooleanProfiler(name)
    return _StringProfiler(name)


# --- CSV --------------------------------------------------------------------------------------

_CONVERSION_ERROR = re.compile(
    r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+): invalid value '(.*)'",
    re.DOTALL,
)
_RAGGED = re.compile(r"Expected (\d+) columns, got (\d+)")


class _Widen(Exception):
    def __init__(self, index: int, arrow_type: pa.DataType) -> None:
        super().__init__(index, arrow_type)
        self.index = index
        self.arrow_type = arrow_type


def _csv_reader(
    path: Path,
    *,
    block_size: int,
    column_types: dict[str, pa.DataType] | None = None,
    include_columns: list[str] | None = None,
) -> pa_csv.CSVStreamingReader:
    return pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=block_size, use_threads=True),
        parse_options=pa_csv.ParseOptions(
            delimiter=",",
            quote_char='"',
            double_quote=True,
            escape_char=False,
            newlines_in_values=True,
            ignore_empty_lines=True,
        ),
        convert_options=pa_csv.ConvertOptions(
            check_utf8=True,
            column_types=column_types,
            include_columns=include_columns,
            null_values=CSV_NULL_VALUES,
            true_values=CSV_TRUE_VALUES,
            false_values=CSV_FALSE_VALUES,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _csv_error(path: Path, exc: pa.ArrowException) -> InvalidInput:
    message = _shorten(str(exc))
    ragged = _RAGGED.search(message)
    if ragged:
        return InvalidInput(_ragged_row(path, int(ragged.group(1))) or f"malformed CSV: {message}")
    if "straddling" in message:
        return InvalidInput(f"a CSV row is longer than {CSV_BLOCK_SIZE >> 20} MiB")
    if "Empty CSV file" in message:
        return InvalidInput("the CSV file has no header row")
    return InvalidInput(f"malformed CSV: {message}")


def _ragged_row(path: Path, expected: int) -> str | None:
    """Where the first row with the wrong number of fields starts (error path only)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as text:
            reader = csv.reader(text, strict=False)
            line = 0
            header_seen = False
            for row in reader:
                start, line = line + 1, reader.line_num
                if not row:
                    continue
                if not header_seen:
                    header_seen = True
                    expected = len(row)
                    continue
                if len(row) != expected:
                    return (
                        f"line {start} has {len(row)} fields but the header has {expected} "
                        "columns (a stray comma or an unquoted value?)"
                    )
    except (csv.Error, UnicodeDecodeError):
        return None
    return None


def _looks_like_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _infer_csv_types(path: Path, max_columns: int) -> tuple[list[str], list[pa.DataType]]:
    try:
        with _csv_reader(path, block_size=CSV_BLOCK_SIZE) as reader:
            schema = reader.schema
    except pa.ArrowException as exc:
        raise _csv_error(path, exc) from None
    names = list(schema.names)
    if len(names) == 1 and (";" in names[0] or "\t" in names[0]):
        separator = "';'" if ";" in names[0] else "tabs"
        raise InvalidInput(
            f"only comma-separated CSV is supported, and the header looks separated by {separator}"
        )
    _check_names(names, max_columns)
    if all(_looks_like_number(name) for name in names):
        raise InvalidInput(
            "the CSV has no header row: its first line looks like data "
            f"({', '.join(names[:5])}); add a line with the column names"
        )
    types = []
    for arrow_type in schema.types:
        # Keep dates and times as the text the file has (see the module doc).
        types.append(pa.string() if pa.types.is_temporal(arrow_type) else arrow_type)
    return names, types


def _widened(current: pa.DataType, value: str) -> pa.DataType:
    """The next type up for a CSV column that cannot hold ``value``."""
    if pa.types.is_null(current):
        if re.fullmatch(r"[+-]?\d+", value.strip()):
            return pa.int64()
        if value in CSV_TRUE_VALUES or value in CSV_FALSE_VALUES:
            return pa.bool_()
        if _looks_like_number(value):
            return pa.float64()
        return pa.string()
    if pa.types.is_integer(current) and _looks_like_number(value):
        return pa.float64()
    return pa.string()


@dataclass
class _CsvSource:
    path: Path
    names: list[str]
    types: list[pa.DataType]

    def scan(self, names: list[str]) -> Iterator[tuple[str, pa.Array]]:
        column_types = dict(zip(self.names, self.types, strict=True))
        include = None if names == self.names else names
        try:
            with _csv_reader(
                self.path,
                block_size=CSV_BLOCK_SIZE,
                column_types=column_types,
                include_columns=include,
            ) as reader:
                if reader.schema.names != names:  # pragma: no cover - pyarrow keeps the order
                    raise InvalidInput("the CSV header changed while it was read")
                for batch in reader:
                    yield from zip(names, batch.columns, strict=True)
        except pa.ArrowException as exc:
            conversion = _CONVERSION_ERROR.search(str(exc))
            if conversion is None:
                raise _csv_error(self.path, exc) from None
            index = int(conversion.group(1))
            if include is not None:  # pragma: no cover - the first pass converted every value
                raise _csv_error(self.path, exc) from None
            raise _Widen(index, _widened(self.types[index], conversion.group(3))) from None


def _profile_csv(path: Path, max_columns: int) -> DatasetProfile:
    names, types = _infer_csv_types(path, max_columns)
    # Each widening moves one column up null -> integer/boolean -> float -> string: bounded.
    for _ in range(3 * len(names) + 1):
        source = _CsvSource(path, names, list(types))
        try:
            return _profile_source(source, "csv", names, types)
        except _Widen as widen:
            if widen.arrow_type.equals(types[widen.index]):  # pragma: no cover - defensive
                break
            types[widen.index] = widen.arrow_type
    raise InvalidInput("could not settle the CSV column types")  # pragma: no cover


# --- Parquet ----------------------------------------------------------------------------------


@dataclass
class _ParquetSource:
    file: pq.ParquetFile

    def scan(self, names: list[str]) -> Iterator[tuple[str, pa.Array]]:
        # Column by column: memory is bounded by one column chunk of one row group.
        for name in names:
            try:
                for batch in self.file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[name]):
                    yield name, batch.column(0)
            except (pa.ArrowException, OSError) as exc:
                raise InvalidInput(f"corrupt Parquet file: {_shorten(str(exc))}") from None


def _profile_parquet(path: Path, max_columns: int) -> DatasetProfile:
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"corrupt Parquet file: {_shorten(str(exc))}") from None
    names = list(schema.names)
    _check_names(names, max_columns)
    types = list(schema.types)
    for name, arrow_type in zip(names, types, strict=True):
        _value_type(name, arrow_type)  # refuse unsupported types before reading any data
    with parquet:
        return _profile_source(_ParquetSource(parquet), "parquet", names, types)
