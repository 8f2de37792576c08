"""Dataset profiling: what the registry learns from an uploaded CSV or Parquet file, and the
clear 422 it gives for a file it cannot use."""

from __future__ import annotations

import csv
import json
import math
import pickle
import subprocess
import sys
import textwrap
import zipfile
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from konan.core.errors import InvalidInput
from konan.registry import datasets
from konan.registry.binning import CategoricalBins, NumericBins, bins_from_json, count_numeric
from konan.registry.datasets import DatasetProfile, detect_format, profile_dataset
from konan.registry.signature import MAX_CATEGORIES, ColumnSchema, inputs_from_columns

ROWS = 5_000
PLANS = ["basic", "pro", "enterprise", "free"]


def _reference_columns() -> dict[str, list[Any]]:
    rng = np.random.default_rng(42)
    age = rng.normal(40.0, 12.0, ROWS).round(3)
    score = rng.exponential(2.0, ROWS)
    score[::50] = np.nan
    score[7::200] = np.inf
    score[11::300] = -np.inf
    visits = rng.integers(0, 30, ROWS)
    return {
        "age": [None if i % 20 == 3 else float(v) for i, v in enumerate(age)],
        "tenure": [int(v) for v in rng.integers(0, 121, ROWS)],
        "visits": [None if i % 33 == 0 else int(v) for i, v in enumerate(visits)],
        "active": [bool(v) for v in rng.random(ROWS) < 0.3],
        "plan": [None if i % 41 == 0 else PLANS[v] for i, v in enumerate(rng.integers(0, 4, ROWS))],
        "city": [f"city-{v:03d}" for v in rng.integers(0, 150, ROWS)],
        "score": [float(v) for v in score],
    }


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # round-trips, and writes nan / inf / -inf
    return str(value)


def write_csv(path: Path, columns: dict[str, list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in zip(*columns.values(), strict=True):
            writer.writerow([_csv_cell(v) for v in row])
    return path


def write_parquet(path: Path, columns: dict[str, Any], **kwargs: Any) -> Path:
    pq.write_table(pa.table(columns), path, **kwargs)
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference() -> dict[str, list[Any]]:
    return _reference_columns()


@pytest.fixture(scope="module")
def both_profiles(
    reference: dict[str, list[Any]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[DatasetProfile, DatasetProfile]:
    folder = tmp_path_factory.mktemp("reference")
    # Small row groups so the Parquet side is read in several chunks, like the CSV side.
    parquet = write_parquet(folder / "reference.parquet", reference, row_group_size=1_000)
    return (
        profile_dataset(write_csv(folder / "reference.csv", reference)),
        profile_dataset(parquet),
    )


def assert_close(left: Any, right: Any, path: str = "") -> None:
    if isinstance(left, dict):
        assert isinstance(right, dict), path
        assert left.keys() == right.keys(), path
        for key in left:
            assert_close(left[key], right[key], f"{path}.{key}")
    elif isinstance(left, list):
        assert isinstance(right, list), path
        assert len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_close(a, b, f"{path}[{i}]")
    elif isinstance(left, float) and not isinstance(right, bool):
        assert right == pytest.approx(left, rel=1e-9, abs=1e-12), path
    else:
        assert left == right, path
        assert type(left) is type(right), path


# --- what a profile says ------------------------------------------------------------------------


def test_csv_and_parquet_of_the_same_data_profile_alike(
    both_profiles: tuple[DatasetProfile, DatasetProfile],
) -> None:
    from_csv, from_parquet = both_profiles

    assert (from_csv.format, from_parquet.format) == ("csv", "parquet")
    assert from_csv.row_count == from_parquet.row_count == ROWS
    assert from_csv.columns == from_parquet.columns
    assert_close(from_csv.stats, from_parquet.stats)
    assert_close(from_csv.reference_bins, from_parquet.reference_bins)
    assert from_csv.category_values == from_parquet.category_values


def test_types_and_nullability_are_inferred(
    both_profiles: tuple[DatasetProfile, DatasetProfile],
) -> None:
    for profile in both_profiles:
        assert profile.columns == [
            ColumnSchema(name="age", type="float", nullable=True),
            ColumnSchema(name="tenure", type="integer", nullable=False),
            ColumnSchema(name="visits", type="integer", nullable=True),
            ColumnSchema(name="active", type="boolean", nullable=False),
            ColumnSchema(name="plan", type="string", nullable=True),
            ColumnSchema(name="city", type="string", nullable=False),
            ColumnSchema(name="score", type="float", nullable=False),  # NaN is a value, not null
        ]
        assert profile.schema_json()["columns"][0] == {
            "name": "age",
            "type": "float",
            "nullable": True,
        }


def test_numeric_stats_match_numpy(
    reference: dict[str, list[Any]], both_profiles: tuple[DatasetProfile, DatasetProfile]
) -> None:
    age = np.array([v for v in reference["age"] if v is not None])
    tenure = np.array(reference["tenure"])
    for profile in both_profiles:
        stats = profile.stats["age"]
        assert stats["count"] == age.size
        assert stats["nulls"] == ROWS - age.size
        assert stats["min"] == age.min()
        assert stats["max"] == age.max()
        assert stats["mean"] == pytest.approx(age.mean(), rel=1e-12)
        assert stats["std"] == pytest.approx(age.std(ddof=1), rel=1e-9)
        assert stats["quantiles"]["p50"] == pytest.approx(np.quantile(age, 0.5))
        assert stats["quantiles"]["p01"] == pytest.approx(np.quantile(age, 0.01))
        assert stats["sampled"] is False

        tenure_stats = profile.stats["tenure"]
        assert (tenure_stats["min"], tenure_stats["max"]) == (int(tenure.min()), int(tenure.max()))
        assert isinstance(tenure_stats["min"], int)
        assert tenure_stats["quantiles"]["p95"] == pytest.approx(np.quantile(tenure, 0.95))


def test_string_and_boolean_stats(
    reference: dict[str, list[Any]], both_profiles: tuple[DatasetProfile, DatasetProfile]
) -> None:
    plans = [v for v in reference["plan"] if v is not None]
    for profile in both_profiles:
        plan = profile.stats["plan"]
        assert plan["nulls"] == ROWS - len(plans)
        assert plan["distinct"] == 4
        assert plan["distinct_exact"] is True
        assert {t["value"]: t["count"] for t in plan["top"]} == {p: plans.count(p) for p in PLANS}

        city = profile.stats["city"]
        assert city["distinct"] == len(set(reference["city"]))
        assert len(city["top"]) == 20
        truth = Counter(reference["city"])
        assert city["top"][0]["count"] == max(truth.values())
        assert all(t["count"] == truth[t["value"]] for t in city["top"])

        active = profile.stats["active"]
        assert active["true"] == sum(reference["active"])
        assert active["false"] == ROWS - sum(reference["active"])


def test_nan_and_infinities_are_counted_and_left_out(
    reference: dict[str, list[Any]], both_profiles: tuple[DatasetProfile, DatasetProfile]
) -> None:
    score = np.array(reference["score"])
    finite = score[np.isfinite(score)]
    for profile in both_profiles:
        stats = profile.stats["score"]
        assert stats["nan"] == int(np.isnan(score).sum()) > 0
        assert stats["posinf"] == int(np.isposinf(score).sum()) > 0
        assert stats["neginf"] == int(np.isneginf(score).sum()) > 0
        assert stats["count"] == ROWS
        assert (stats["min"], stats["max"]) == (finite.min(), finite.max())
        assert stats["mean"] == pytest.approx(finite.mean())
        bins = NumericBins.from_json(profile.reference_bins["score"])
        assert bins.total == finite.size
        assert bins.counts.tolist() == count_numeric(finite, bins.edges).tolist()
        # Stored as JSON (PostgreSQL too): no NaN or infinity anywhere.
        json.dumps([profile.stats, profile.reference_bins], allow_nan=False)


def test_reference_bins_per_column(
    reference: dict[str, list[Any]], both_profiles: tuple[DatasetProfile, DatasetProfile]
) -> None:
    age = np.array([v for v in reference["age"] if v is not None])
    for profile in both_profiles:
        kinds = {name: b["kind"] for name, b in profile.reference_bins.items()}
        assert kinds == {
            "age": "numeric",
            "tenure": "numeric",
            "visits": "numeric",
            "active": "categorical",
            "plan": "categorical",
            "city": "categorical",
            "score": "numeric",
        }
        age_bins = NumericBins.from_json(profile.reference_bins["age"])
        assert age_bins.edges.size == 19
        assert np.allclose(age_bins.proportions(), 0.05, atol=0.01)
        assert age_bins.counts.tolist() == count_numeric(age, age_bins.edges).tolist()

        plan = bins_from_json(profile.reference_bins["plan"])
        assert isinstance(plan, CategoricalBins)
        assert set(plan.categories) == set(PLANS)
        assert plan.other == 0

        city = CategoricalBins.from_json(profile.reference_bins["city"])
        assert len(city.categories) == MAX_CATEGORIES
        assert city.total == ROWS
        assert city.other > 0


def test_category_values_only_for_columns_with_few_values(
    both_profiles: tuple[DatasetProfile, DatasetProfile],
) -> None:
    for profile in both_profiles:
        assert profile.category_values == {
            "active": [False, True],
            "plan": sorted(PLANS),
        }
        features = {
            f.name: f for f in inputs_from_columns(profile.columns, profile.category_values)
        }
        assert features["plan"].categories == sorted(PLANS)
        assert features["city"].categories is None


def test_categorical_detection_stops_at_max_categories(tmp_path: Path) -> None:
    exactly = [f"v{i:03d}" for i in range(MAX_CATEGORIES)] * 3
    one_more = [f"v{i:03d}" for i in range(MAX_CATEGORIES + 1)] * 3
    path = write_csv(tmp_path / "c.csv", {"exactly": exactly + exactly[:3], "over": one_more})

    profile = profile_dataset(path)

    assert profile.category_values == {"exactly": sorted(set(exactly))}
    over = CategoricalBins.from_json(profile.reference_bins["over"])
    assert len(over.categories) == MAX_CATEGORIES
    assert over.other == 3


def test_constant_column(tmp_path: Path) -> None:
    profile = profile_dataset(write_csv(tmp_path / "c.csv", {"k": [7] * 50, "x": list(range(50))}))

    assert profile.reference_bins["k"] == {"kind": "numeric", "edges": [7.0], "counts": [50, 0]}
    assert profile.stats["k"]["std"] == 0.0
    assert (profile.stats["k"]["min"], profile.stats["k"]["max"]) == (7, 7)


def test_large_columns_are_sampled_but_bin_counts_stay_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "RESERVOIR_SIZE", 1_000)
    # Sorted, so a sample of the first rows (not a uniform one) would be far off.
    values = np.sort(np.random.default_rng(5).normal(size=20_000))
    path = write_parquet(tmp_path / "big.parquet", {"x": values}, row_group_size=3_000)

    profile = profile_dataset(path)

    stats = profile.stats["x"]
    assert stats["sampled"] is True
    assert stats["sample_size"] == 1_000
    assert stats["mean"] == pytest.approx(values.mean())  # exact: streamed, not sampled
    assert stats["quantiles"]["p50"] == pytest.approx(np.median(values), abs=0.15)
    bins = NumericBins.from_json(profile.reference_bins["x"])
    assert bins.counts.tolist() == count_numeric(values, bins.edges).tolist()
    assert bins.total == 20_000
    assert np.allclose(bins.proportions(), 0.05, atol=0.02)


def test_high_cardinality_strings_report_a_lower_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "DISTINCT_CAP", 100)
    monkeypatch.setattr(datasets, "PARQUET_BATCH_ROWS", 50)
    ids = [f"id{i}" for i in range(1_000)] + ["hot"] * 200
    profile = profile_dataset(write_parquet(tmp_path / "ids.parquet", {"id": ids}))

    stats = profile.stats["id"]
    assert stats["distinct_exact"] is False
    assert stats["distinct"] > 100
    assert stats["top"][0]["value"] == "hot"
    assert "id" not in profile.category_values
    assert CategoricalBins.from_json(profile.reference_bins["id"]).total == 1_200


def test_csv_types_widen_when_later_rows_do_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "CSV_BLOCK_SIZE", 1 << 10)  # types inferred from the first KiB
    n = 2_000
    columns = {
        "late_float": [str(i) for i in range(n - 1)] + ["1.5"],
        "late_text": [str(i) for i in range(n - 1)] + ["n/a"],
        "late_value": [""] * (n - 1) + ["12"],
        "late_bool": [""] * (n - 1) + ["true"],
    }
    profile = profile_dataset(write_csv(tmp_path / "w.csv", columns))

    assert {c.name: (c.type, c.nullable) for c in profile.columns} == {
        "late_float": ("float", False),
        "late_text": ("string", False),
        "late_value": ("integer", True),
        "late_bool": ("boolean", True),
    }
    assert profile.stats["late_float"]["max"] == 1998.0
    assert profile.stats["late_value"]["count"] == 1
    assert profile.row_count == n


def test_dates_become_strings(tmp_path: Path) -> None:
    from datetime import date, datetime

    csv_path = write_text(
        tmp_path / "d.csv", "day,at\n2024-01-31,2024-01-31T12:00:00\n2024-02-01,\n"
    )
    parquet_path = write_parquet(
        tmp_path / "d.parquet",
        {"day": [date(2024, 1, 31), date(2024, 2, 1)], "at": [datetime(2024, 1, 31, 12), None]},
    )

    from_csv = profile_dataset(csv_path)
    from_parquet = profile_dataset(parquet_path)

    for profile in (from_csv, from_parquet):
        assert [(c.type, c.nullable) for c in profile.columns] == [
            ("string", False),
            ("string", True),
        ]
        assert profile.category_values["day"] == ["2024-01-31", "2024-02-01"]
    assert from_csv.category_values["at"] == ["2024-01-31T12:00:00"]  # the text as written
    assert from_parquet.category_values["at"][0].startswith("2024-01-31 12:00:00")


def test_parquet_dictionary_and_small_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "plan": pa.array(["a", "b", "a", None]).dictionary_encode(),
            "small": pa.array([1, 2, 3, 4], pa.int8()),
            "ratio": pa.array([0.5, 1.5, None, 2.5], pa.float32()),
            "price": pa.array([Decimal("1.10"), Decimal("2.25"), Decimal("3.00"), None]),
            "code": pa.array([3, 1, 3, 2]).dictionary_encode(),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")

    profile = profile_dataset(tmp_path / "t.parquet")

    assert [(c.name, c.type, c.nullable) for c in profile.columns] == [
        ("plan", "string", True),
        ("small", "integer", False),
        ("ratio", "float", True),
        ("price", "float", True),
        ("code", "integer", False),
    ]
    assert profile.category_values["plan"] == ["a", "b"]
    assert profile.stats["ratio"]["max"] == 2.5
    assert profile.stats["price"]["mean"] == pytest.approx(2.1166666666)
    assert (profile.stats["code"]["min"], profile.stats["code"]["max"]) == (1, 3)


def test_utf8_bom_and_quoted_newlines_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b'\xef\xbb\xbfname,n\n"two\nlines",1\nplain,2\n')

    profile = profile_dataset(path, declared_format="CSV")

    assert [c.name for c in profile.columns] == ["name", "n"]
    assert profile.category_values["name"] == ["plain", "two\nlines"]


def test_format_comes_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    parquet_named_csv = write_parquet(tmp_path / "data.csv", {"a": [1, 2]})
    csv_named_parquet = write_text(tmp_path / "data.parquet", "a\n1\n")

    assert detect_format(parquet_named_csv) == "parquet"
    assert detect_format(csv_named_parquet) == "csv"
    assert profile_dataset(parquet_named_csv).format == "parquet"


# --- files it refuses -------------------------------------------------------------------------


def _parquet_bytes(tmp_path: Path) -> bytes:
    return write_parquet(tmp_path / "ok.parquet", {"a": list(range(1_000))}).read_bytes()


def _zip_bytes(tmp_path: Path) -> bytes:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr("data.csv", "a,b\n1,2\n")
    return (tmp_path / "a.zip").read_bytes()


BAD_FILES: list[tuple[str, Any, str]] = [
    ("empty", lambda _: b"", "the file is empty"),
    ("binary junk", lambda _: bytes(range(256)) * 8, "not CSV or Parquet: .*binary data"),
    ("pickle", lambda _: pickle.dumps({"model": [1, 2, 3]}), "not CSV or Parquet: .*pickle"),
    ("zip", _zip_bytes, "not CSV or Parquet: .*ZIP archive"),
    ("gzip", lambda _: b"\x1f\x8b\x08\x00" + b"\x00" * 20, "gzip"),
    ("latin-1", lambda _: "name\ncaf\xe9\n".encode("latin-1"), "not UTF-8 text .*offset 8"),
    ("utf-16", lambda _: "a,b\n1,2\n".encode("utf-16"), "UTF-16"),
    ("NUL in text", lambda _: b"a,b\n1,\x002\n", "NUL byte at offset 6"),
    ("truncated parquet", lambda t: _parquet_bytes(t)[:300], "truncated Parquet file"),
    (
        "corrupt parquet",
        lambda t: (lambda b: b[:4] + b"\xff" * (len(b) - 12) + b[-8:])(_parquet_bytes(t)),
        "corrupt Parquet file",
    ),
    ("header only", lambda _: b"a,b\n", "no data rows"),
    ("blank lines only", lambda _: b"\n\n\n", "no header row"),
    ("ragged row", lambda _: b"a,b\n1,2\n3,4\n5,6,7\n8,9\n", "line 4 has 3 fields .* 2 columns"),
    ("short row", lambda _: b'a,b\n"x\ny",2\n3\n', "line 4 has 1 fields but the header has 2"),
    ("duplicate names", lambda _: b"a,b,a\n1,2,3\n", "duplicate column name 'a' .*1 and 3"),
    ("empty name", lambda _: b"a,,c\n1,2,3\n", "column 2 has an empty name"),
    ("no header", lambda _: b"1,2.5,3\n4,5,6\n", "no header row"),
    ("semicolons", lambda _: b"a;b;c\n1;2;3\n", "comma-separated"),
    ("all NaN", lambda _: b"a,b\nnan,1\ninf,2\n", "column 'a' has no finite values"),
    ("all empty", lambda _: b"a,b\n,1\n,2\n", "column 'a' has no values"),
    ("long name", lambda _: b"a," + b"n" * 201 + b"\n1,2\n", "column 2 has a name longer"),
]


@pytest.mark.parametrize(
    ("content", "problem"),
    [pytest.param(c, p, id=name) for name, c, p in BAD_FILES],
)
def test_unusable_files_are_refused_with_the_reason(
    tmp_path: Path, content: Any, problem: str
) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(content(tmp_path))

    with pytest.raises(InvalidInput, match=problem) as caught:
        profile_dataset(path)

    assert caught.value.status == 422


def test_declared_format_must_match_the_bytes(tmp_path: Path) -> None:
    parquet = write_parquet(tmp_path / "a.parquet", {"a": [1, 2]})
    text = write_text(tmp_path / "a.csv", "a\n1\n")

    with pytest.raises(InvalidInput, match="declared csv but the file is parquet"):
        profile_dataset(parquet, declared_format="csv")
    with pytest.raises(InvalidInput, match="declared parquet but the file is csv"):
        profile_dataset(text, declared_format="parquet")
    with pytest.raises(InvalidInput, match="unsupported dataset format 'xlsx'"):
        profile_dataset(text, declared_format="xlsx")
    assert profile_dataset(parquet, declared_format="parquet").row_count == 2


def test_too_many_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "wide.csv", {f"c{i}": [i] for i in range(5)})

    with pytest.raises(InvalidInput, match="5 columns; at most 4"):
        profile_dataset(path, max_columns=4)
    assert len(profile_dataset(path, max_columns=5).columns) == 5


def test_parquet_problems_name_the_column(tmp_path: Path) -> None:
    nested = write_parquet(tmp_path / "n.parquet", {"x": [1, 2], "tags": [["a"], ["b", "c"]]})
    duplicated = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], ["a", "a"]), duplicated)
    no_rows = write_parquet(tmp_path / "empty.parquet", {"a": pa.array([], pa.int64())})
    nul = write_parquet(tmp_path / "nul.parquet", {"s": ["ok", "bad\x00value"]})

    with pytest.raises(InvalidInput, match="column 'tags' has type list<"):
        profile_dataset(nested)
    with pytest.raises(InvalidInput, match="duplicate column name 'a'"):
        profile_dataset(duplicated)
    with pytest.raises(InvalidInput, match="no data rows"):
        profile_dataset(no_rows)
    with pytest.raises(InvalidInput, match="column 's' contains a NUL character"):
        profile_dataset(nul)


# --- memory and time on a large file ------------------------------------------------------------


def _write_large_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    columns: dict[str, Any] = {}
    for i in range(10):
        columns[f"f{i}"] = rng.normal(i, 1.0 + i, rows)
    for i in range(5):
        columns[f"i{i}"] = rng.integers(0, 10 ** (i + 1), rows)
    for i in range(3):
        columns[f"s{i}"] = pa.array(np.array(PLANS)[rng.integers(0, 4, rows)])
    columns["b0"] = rng.random(rows) < 0.5
    columns["id"] = pa.array(np.char.add("u", np.arange(rows).astype(str)))
    pa_csv.write_csv(pa.table(columns), path)


MEASURE = textwrap.dedent(
    """
    import json, re, sys, time
    from pathlib import Path
    from konan.registry.datasets import profile_dataset

    def peak_kib():
        # VmHWM, not ru_maxrss: the latter survives fork + exec, so it starts at pytest's peak.
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))

    before = peak_kib()
    start = time.perf_counter()
    profile = profile_dataset(Path(sys.argv[1]))
    elapsed = time.perf_counter() - start
    after = peak_kib()
    print(json.dumps({
        "seconds": elapsed,
        "extra_mib": (after - before) / 1024,
        "rows": profile.row_count,
        "columns": len(profile.columns),
        "sampled": profile.stats["f0"]["sampled"],
        "f0_total": sum(profile.reference_bins["f0"]["counts"]),
        "id_exact": profile.stats["id"]["distinct_exact"],
    }))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux /proc")
def test_million_row_csv_profiles_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "large.csv"
    _write_large_csv(path, 1_000_000)
    size_mib = path.stat().st_size / 2**20

    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    )
    result = json.loads(done.stdout)

    print(
        f"\nprofiled 1,000,000 x 20 CSV ({size_mib:.0f} MiB) in {result['seconds']:.1f} s, "
        f"peak RSS +{result['extra_mib']:.0f} MiB"
    )
    assert result["rows"] == 1_000_000
    assert result["columns"] == 20
    assert result["sampled"] is True
    assert result["f0_total"] == 1_000_000
    assert result["id_exact"] is False
    assert result["extra_mib"] < 400
    assert math.isfinite(result["seconds"])
