"""Request bodies and rows, checked against a model version's signature.

`parse_body` turns the raw bytes into the list of rows (or a `Rejected` with a status and a
message a person can act on). `Checker` is compiled once per served version from its
signature and turns valid rows into the columnar data `LoadedModel.predict` takes.

The check is built for the hot path: one C-level pass picks every feature out of every row
(`operator.itemgetter`), one set of value types per column decides the common case, and only
a failing request pays for the row-by-row walk that names each problem. An all-float
signature (the usual numeric model) goes straight to one float64 matrix whose columns are
views, which is what every numeric runtime wants anyway.

JSON rules worth knowing:

* NaN, Infinity and -Infinity are not JSON; the parser refuses them and so do we (422).
* Duplicate keys in an object: the last one wins (orjson's behaviour). The rows the model
  sees and the rows that are logged are the same parsed objects, so the log always shows
  exactly the values the model was given.
* Booleans are not numbers here, and numbers are not strings: no coercion, ever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import orjson

from konan.registry.signature import FeatureSpec, Signature
from konan.serving.flavors.columns import MatrixColumns

MAX_STRING_CHARS = 10_000
MAX_REPORTED_ERRORS = 20
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_NONE = type(None)
_NUMBER = frozenset((int, float))
_EXPECTED = {
    "float": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "string": "a string",
}
_JSON_TYPE_NAMES = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
    _NONE: "null",
}


class Rejected(Exception):
    """A request refused before the model was called: status, stable code, and why."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        code: str = "invalid_input",
        errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason  # label of the rejection counter: a small, fixed set
        self.detail = detail
        self.code = code
        self.errors = errors
        self.extra = extra
        self.headers = headers

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.detail, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        if self.extra:
            body.update(self.extra)
        return body


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _non_finite_literal(body: bytes, exc: orjson.JSONDecodeError) -> bool:
    if "infinity" in str(exc):  # a number too large for a double, e.g. 1e400
        return True
    around = body[max(0, exc.pos - 1) : exc.pos + 9]
    return b"NaN" in around or b"Infinity" in around


def parse_body(body: bytes, max_rows: int) -> list[Any]:
    """The rows of a `{"inputs": [...]}` body; Rejected otherwise (413 above max_rows)."""
    if not body.strip():
        raise Rejected(
            422,
            "empty_body",
            'the request body is empty; send {"inputs": [{"feature": value, …}, …]}',
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if _non_finite_literal(body, exc):
            raise Rejected(
                422,
                "non_finite",
                "NaN, Infinity and -Infinity are not valid JSON numbers and cannot be "
                "predicted on; send finite numbers (or null where a feature is nullable)",
            ) from None
        raise Rejected(
            400, "malformed_json", f"the body is not valid JSON: {exc}", code="bad_request"
        ) from None
    if type(doc) is not dict:
        got = "null" if doc is None else _json_type(doc)
        raise Rejected(
            422,
            "invalid_body",
            f'the body must be a JSON object {{"inputs": [...]}}, got {got}',
        )
    inputs = doc.get("inputs")
    if len(doc) != 1 or "inputs" not in doc:
        unknown = [k for k in doc if k != "inputs"]
        if unknown:
            raise Rejected(
                422,
                "invalid_body",
                "unknown field(s) in the body: "
                + ", ".join(_shown(k, 40) for k in unknown[:5])
                + '; the body is {"inputs": [...]}',
            )
    if inputs is None:
        raise Rejected(
            422, "invalid_body", '"inputs" is missing or null; send a list of rows to predict on'
        )
    if type(inputs) is not list:
        raise Rejected(
            422,
            "invalid_body",
            f'"inputs" must be a list of rows (objects), got {_json_type(inputs)}',
        )
    if not inputs:
        raise Rejected(422, "empty_batch", '"inputs" is empty; send at least one row')
    if len(inputs) > max_rows:
        raise Rejected(
            413,
            "too_many_rows",
            f"{len(inputs)} rows in one request; this deployment takes at most {max_rows}",
            code="payload_too_large",
            extra={"max_batch_rows": max_rows},
        )
    return inputs


# ---- per-signature checkers ------------------------------------------------------------------


@dataclass(slots=True)
class Checked:
    """Valid rows as columns (signature order), plus what the log record should flag."""

    columns: Mapping[str, Any]
    rows: int
    unseen: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class _Problem:
    row: int
    feature: str | None
    reason: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "feature": self.feature, "reason": self.reason}


@dataclass(slots=True)
class _Feature:
    name: str
    kind: str  # the signature's value type: float | integer | boolean | string
    nullable: bool
    categories: frozenset[Any] | None
    shown_categories: str
    allowed_types: frozenset[type] = field(default_factory=frozenset)

    @classmethod
    def compile(cls, spec: FeatureSpec) -> _Feature:
        base: frozenset[type] = {
            "float": _NUMBER,
            "integer": _NUMBER,  # 3.0 is an integer in JSON; 3.5 is not (checked below)
            "boolean": frozenset((bool,)),
            "string": frozenset((str,)),
        }[spec.type]
        categories = frozenset(spec.categories) if spec.categories is not None else None
        shown = ", ".join(_shown(c, 30) for c in (spec.categories or [])[:10])
        if spec.categories is not None and len(spec.categories) > 10:
            shown += f", … ({len(spec.categories)} in all)"
        return cls(
            name=spec.name,
            kind=spec.type,
            nullable=spec.nullable,
            categories=categories,
            shown_categories=shown,
            allowed_types=base | {_NONE} if spec.nullable else base,
        )

    def column_ok(self, column: Sequence[Any]) -> bool:
        """True when every value of the column has the right type, size and range."""
        types = set(map(type, column))
        if not types <= self.allowed_types:
            return False
        if self.kind == "string":
            values = [v for v in column if v is not None] if _NONE in types else column
            if values and (max(map(len, values)) > MAX_STRING_CHARS or "\x00" in "".join(values)):
                return False
        elif self.kind == "integer":
            values = [v for v in column if v is not None] if _NONE in types else column
            if float in types and not all(v.is_integer() for v in values if type(v) is float):
                return False
            if values and (min(values) < _INT64_MIN or max(values) > _INT64_MAX):
                return False
        return True

    def problem(self, row: int, value: Any) -> _Problem | None:
        """What is wrong with one value (the slow path that names it), or None."""
        where = f"row {row}, feature {_shown(self.name, 60)}"
        if value is None:
            if self.nullable:
                return None
            return _Problem(
                row,
                self.name,
                "null_not_allowed",
                f"{where}: null is not allowed (the feature is not nullable)",
            )
        if type(value) not in self.allowed_types:
            return _Problem(
                row,
                self.name,
                "wrong_type",
                f"{where}: expected {_EXPECTED[self.kind]}, got {_json_type(value)}",
            )
        if self.kind == "integer":
            if type(value) is float and not value.is_integer():
                return _Problem(
                    row, self.name, "wrong_type", f"{where}: expected an integer, got {value!r}"
                )
            if not _INT64_MIN <= value <= _INT64_MAX:
                return _Problem(
                    row,
                    self.name,
                    "out_of_range",
                    f"{where}: {_shown(value)} is outside the 64-bit integer range",
                )
        if self.kind == "string":
            if len(value) > MAX_STRING_CHARS:
                return _Problem(
                    row,
                    self.name,
                    "string_too_long",
                    f"{where}: the string has {len(value)} characters; "
                    f"the limit is {MAX_STRING_CHARS}",
                )
            if "\x00" in value:
                return _Problem(
                    row,
                    self.name,
                    "nul_character",
                    f"{where}: the string contains a NUL character",
                )
        return None

    def unseen_problem(self, row: int, value: Any) -> _Problem:
        return _Problem(
            row,
            self.name,
            "unseen_category",
            f"row {row}, feature {_shown(self.name, 60)}: {_shown(value)} is not a known "
            f"category (known: {self.shown_categories})",
        )

    def synthetic(self) -> Any:
        if self.categories:
            return sorted(self.categories, key=repr)[0]
        return {"float": 0.0, "integer": 0, "boolean": False, "string": ""}[self.kind]


class Checker:
    """Rows -> columns for one signature; compiled once per served version."""

    def __init__(
        self, signature: Signature, unseen_category: Literal["reject", "flag"] = "reject"
    ) -> None:
        self.names: tuple[str, ...] = tuple(f.name for f in signature.inputs)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._n = len(self.names)
        self._features = [_Feature.compile(f) for f in signature.inputs]
        self._unseen = unseen_category
        self._get: Callable[[Any], tuple[Any, ...]]
        if self._n == 1:
            only = self.names[0]
            self._get = lambda row: (row[only],)
        else:
            self._get = itemgetter(*self.names)
        # The common numeric model: every feature a non-null float without categories.
        self._float_matrix = all(
            f.kind == "float" and not f.nullable and f.categories is None for f in self._features
        )
        self._categorical = [
            (i, f) for i, f in enumerate(self._features) if f.categories is not None
        ]
        shown = ", ".join(_shown(n, 40) for n in self.names[:30])
        self._shown_names = shown + (f", … ({self._n} in all)" if self._n > 30 else "")

    def validate(self, rows: list[Any]) -> Checked:
        try:
            values = list(map(self._get, rows))
        except (KeyError, TypeError):
            raise self._explain(rows) from None
        # itemgetter succeeded, so every row is an object holding every feature; more keys
        # than features means an unknown one somewhere.
        if sum(map(len, rows)) != self._n * len(rows):
            raise self._explain(rows)
        if self._float_matrix:
            if not set(map(type, chain.from_iterable(values))) <= _NUMBER:
                raise self._explain(rows)
            matrix = np.array(values, dtype=np.float64)
            return Checked(MatrixColumns(self.names, self._index, matrix), len(rows))
        by_feature = list(zip(*values, strict=True))
        for feature, column in zip(self._features, by_feature, strict=True):
            if not feature.column_ok(column):
                raise self._explain(rows)
        unseen: list[dict[str, Any]] | None = None
        for i, feature in self._categorical:
            assert feature.categories is not None
            column = by_feature[i]
            outside = set(column) - feature.categories
            outside.discard(None)
            if not outside:
                continue
            if self._unseen == "reject":
                raise self._explain(rows)
            unseen = unseen or []
            for row, value in enumerate(column):
                if value in outside and len(unseen) < 100:
                    unseen.append({"row": row, "feature": feature.name, "value": value})
        return Checked(dict(zip(self.names, by_feature, strict=True)), len(rows), unseen)

    def synthetic_row(self) -> dict[str, Any]:
        """One valid row (first category, or zero / false / empty string) for the warm-up."""
        return {f.name: f.synthetic() for f in self._features}

    # ---- the slow path: say exactly what is wrong -------------------------------------------

    def _explain(self, rows: list[Any]) -> Rejected:
        problems: list[_Problem] = []
        known = set(self.names)
        for index, row in enumerate(rows):
            if len(problems) > MAX_REPORTED_ERRORS:
                break
            if type(row) is not dict:
                problems.append(
                    _Problem(
                        index,
                        None,
                        "not_an_object",
                        f"row {index}: expected an object of feature values, got {_json_type(row)}",
                    )
                )
                continue
            for feature in self._features:
                if feature.name not in row:
                    problems.append(
                        _Problem(
                            index,
                            feature.name,
                            "missing_feature",
                            f"row {index}: missing feature {_shown(feature.name, 60)}",
                        )
                    )
                    continue
                value = row[feature.name]
                found = feature.problem(index, value)
                if (
                    found is None
                    and self._unseen == "reject"
                    and feature.categories is not None
                    and value is not None
                    and value not in feature.categories
                ):
                    found = feature.unseen_problem(index, value)
                if found is not None:
                    problems.append(found)
            if len(row) != self._n or not known.issuperset(row):
                for name in row:
                    if name not in known:
                        problems.append(
                            _Problem(
                                index,
                                _shown(name, 60),
                                "unknown_feature",
                                f"row {index}: unknown feature {_shown(name, 60)} "
                                f"(the model takes: {self._shown_names})",
                            )
                        )
        if not problems:  # not reachable when the fast path is right; never a 5xx anyway
            problems.append(_Problem(0, None, "invalid_row", "row 0: invalid input"))
        shown = problems[:MAX_REPORTED_ERRORS]
        detail = shown[0].message
        if len(problems) > 1:
            more = f"{len(problems) - 1}" if len(problems) <= MAX_REPORTED_ERRORS else "more"
            detail += f" (and {more} other problem{'s' if len(problems) > 2 else ''})"
        return Rejected(
            422,
            shown[0].reason,
            detail,
            errors=[{**p.as_dict(), "message": p.message} for p in shown],
        )
