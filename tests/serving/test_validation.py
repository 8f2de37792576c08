"""Request bodies and rows against a signature, in-process (the HTTP tests cover the wiring)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from konan.registry.signature import Signature
from konan.serving.validation import MAX_STRING_CHARS, Checker, Rejected, parse_body

OUTPUTS = {"kind": "label", "type": "integer", "classes": [0, 1]}


def checker(*inputs: dict[str, Any], unseen: str = "reject") -> Checker:
    signature = Signature.model_validate({"inputs": list(inputs), "outputs": OUTPUTS})
    return Checker(signature, unseen)  # type: ignore[arg-type]


NUMERIC = checker(*({"name": n, "type": "float"} for n in "abcd"))
MIXED = checker(
    {"name": "tenure", "type": "float", "nullable": True},
    {"name": "seats", "type": "integer"},
    {"name": "trial", "type": "boolean"},
    {"name": "plan", "type": "string", "categories": ["basic", "pro"]},
)
MIXED_ROW = {"tenure": 3.5, "seats": 4, "trial": False, "plan": "pro"}


def rejected(call: Any, *args: Any) -> Rejected:
    with pytest.raises(Rejected) as info:
        call(*args)
    return info.value


# ---- the body ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"", 422, "empty_body"),
        (b"  \n", 422, "empty_body"),
        (b"null", 422, "invalid_body"),
        (b"[]", 422, "invalid_body"),
        (b"{}", 422, "invalid_body"),
        (b'{"inputs": null}', 422, "invalid_body"),
        (b'{"inputs": []}', 422, "empty_batch"),
        (b'{"inputs": {"a": 1}}', 422, "invalid_body"),
        (b'{"inputs": [{"a": 1}], "extra": 1}', 422, "invalid_body"),
        (b'{"inputs": [{"a": 1}]', 400, "malformed_json"),
        (b'{"inputs": [{"a": 1}]} trailing', 400, "malformed_json"),
        (b'{"inputs": [{"a": NaN}]}', 422, "non_finite"),
        (b'{"inputs": [{"a": Infinity}]}', 422, "non_finite"),
        (b'{"inputs": [{"a": -Infinity}]}', 422, "non_finite"),
        (b'{"inputs": [{"a": 1e400}]}', 422, "non_finite"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body: bytes, status: int, reason: str) -> None:
    error = rejected(parse_body, body, 10)
    assert (error.status, error.reason) == (status, reason)
    assert "Traceback" not in error.detail


def test_non_finite_numbers_get_a_message_that_says_so() -> None:
    error = rejected(parse_body, b'{"inputs": [{"a": NaN}]}', 10)
    assert "NaN, Infinity and -Infinity are not valid JSON" in error.detail


def test_more_rows_than_allowed_is_413_and_exactly_the_limit_passes() -> None:
    rows = [{"a": 1}] * 5
    assert len(parse_body(b'{"inputs": ' + repr(rows).replace("'", '"').encode() + b"}", 5)) == 5
    error = rejected(parse_body, b'{"inputs": [' + b",".join([b'{"a": 1}'] * 6) + b"]}", 5)
    assert error.status == 413
    assert error.payload()["max_batch_rows"] == 5


def test_duplicate_keys_keep_the_last_value() -> None:
    rows = parse_body(b'{"inputs": [{"a": 1, "b": 2, "c": 3, "d": 4, "a": 9}]}', 10)
    assert rows == [{"a": 9, "b": 2, "c": 3, "d": 4}]
    checked = NUMERIC.validate(rows)
    assert checked.columns["a"].tolist() == [9.0]


# ---- rows against the signature ------------------------------------------------------------------


def test_valid_numeric_rows_become_float_columns_in_signature_order() -> None:
    rows = [{"d": 4, "c": 3.5, "b": -2, "a": 1}, {"a": 0, "b": 0, "c": 0, "d": 1e300}]
    checked = NUMERIC.validate(rows)
    assert list(checked.columns) == ["a", "b", "c", "d"]
    assert checked.rows == 2
    np.testing.assert_array_equal(checked.columns["c"], [3.5, 0.0])
    assert checked.columns["a"].dtype == np.float64
    assert checked.unseen is None


@pytest.mark.parametrize(
    ("row", "reason", "named"),
    [
        ({"a": 1, "b": 2, "c": 3}, "missing_feature", "'d'"),
        ({"a": 1, "b": 2, "c": 3, "d": 4, "zzz": 5}, "unknown_feature", "'zzz'"),
        ({"a": "1", "b": 2, "c": 3, "d": 4}, "wrong_type", "'a'"),
        ({"a": [1], "b": 2, "c": 3, "d": 4}, "wrong_type", "got a list"),
        ({"a": {"x": 1}, "b": 2, "c": 3, "d": 4}, "wrong_type", "got an object"),
        ({"a": True, "b": 2, "c": 3, "d": 4}, "wrong_type", "got a boolean"),
        ({"a": None, "b": 2, "c": 3, "d": 4}, "null_not_allowed", "'a'"),
    ],
)
def test_each_bad_value_is_named(row: dict[str, Any], reason: str, named: str) -> None:
    error = rejected(NUMERIC.validate, [dict(zip("abcd", [0, 0, 0, 0], strict=True)), row])
    assert (error.status, error.reason) == (422, reason)
    assert error.detail.startswith("row 1")
    assert named in error.detail
    assert error.errors is not None
    assert error.errors[0]["row"] == 1


def test_a_row_that_is_not_an_object_is_named() -> None:
    error = rejected(NUMERIC.validate, [[1, 2, 3, 4]])
    assert error.reason == "not_an_object"
    assert "row 0" in error.detail


def test_every_problem_is_listed_up_to_a_limit() -> None:
    rows = [{"a": "x"}] * 50
    error = rejected(NUMERIC.validate, rows)
    assert error.errors is not None
    assert len(error.errors) == 20
    assert "other problems" in error.detail


def test_mixed_types_pass_as_columns() -> None:
    rows = [MIXED_ROW, {"tenure": None, "seats": 2.0, "trial": True, "plan": "basic"}]
    checked = MIXED.validate(rows)
    assert checked.columns["tenure"] == (3.5, None)
    assert checked.columns["seats"] == (4, 2.0)
    assert checked.columns["plan"] == ("pro", "basic")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"seats": 2.5}, "wrong_type"),
        ({"seats": 2**70}, "out_of_range"),
        ({"seats": True}, "wrong_type"),
        ({"trial": 1}, "wrong_type"),
        ({"trial": "yes"}, "wrong_type"),
        ({"plan": 3}, "wrong_type"),
        ({"plan": "enterprise"}, "unseen_category"),
        ({"plan": "p" * (MAX_STRING_CHARS + 1)}, "string_too_long"),
        ({"plan": "pro\x00"}, "nul_character"),
        ({"plan": None}, "null_not_allowed"),
    ],
)
def test_mixed_signature_refusals(change: dict[str, Any], reason: str) -> None:
    error = rejected(MIXED.validate, [{**MIXED_ROW, **change}])
    assert (error.status, error.reason) == (422, reason)


def test_unseen_category_in_flag_mode_passes_and_is_reported() -> None:
    flagging = checker(
        {"name": "plan", "type": "string", "categories": ["basic", "pro"]}, unseen="flag"
    )
    checked = flagging.validate([{"plan": "pro"}, {"plan": "gold"}])
    assert checked.columns["plan"] == ("pro", "gold")
    assert checked.unseen == [{"row": 1, "feature": "plan", "value": "gold"}]


def test_synthetic_row_is_valid() -> None:
    for compiled in (NUMERIC, MIXED):
        assert compiled.validate([compiled.synthetic_row()]).rows == 1
