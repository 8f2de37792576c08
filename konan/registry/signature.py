"""The signature of a model version: what goes in, what comes out.

One vocabulary for the registry (inferred at registration or given explicitly), the serving
data plane (validates every request against it) and monitoring (drift per feature). Stored as
JSON on the version row; this module is the only place that defines its shape.

    {"inputs": [{"name": "tenure", "type": "float", "nullable": false, "categories": null},
                {"name": "plan", "type": "string", "nullable": false,
                 "categories": ["basic", "pro"]}],
     "outputs": {"kind": "label", "type": "integer", "classes": [0, 1], "probabilities": true}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ValueType = Literal["float", "integer", "boolean", "string"]

# A string column with at most this many distinct values in the reference data is treated as
# categorical: serving can then flag (or refuse) a category it never saw.
MAX_CATEGORIES = 100


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    type: ValueType
    nullable: bool = False
    categories: list[str | int | bool] | None = Field(
        default=None, description="allowed values; null means any value of the type"
    )


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["label", "value"] = Field(
        description="label: classification (one class per row); value: regression (a number)"
    )
    type: ValueType
    classes: list[str | int | bool | float] | None = None
    probabilities: bool = False


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[FeatureSpec] = Field(min_length=1)
    outputs: OutputSpec

    @model_validator(mode="after")
    def _unique_names(self) -> Signature:
        seen: set[str] = set()
        for feature in self.inputs:
            if feature.name in seen:
                raise ValueError(f"feature {feature.name!r} appears twice in the signature")
            seen.add(feature.name)
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ColumnSchema(BaseModel):
    """A column of a dataset version, as profiled from CSV or Parquet."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: ValueType
    nullable: bool = False


def inputs_from_columns(
    columns: list[ColumnSchema], category_values: dict[str, list[Any]]
) -> list[FeatureSpec]:
    """Feature specs for a dataset's columns; string columns with few values become categorical."""
    features = []
    for column in columns:
        categories = None
        values = category_values.get(column.name)
        if column.type == "string" and values is not None and len(values) <= MAX_CATEGORIES:
            categories = sorted(values, key=str)
        features.append(
            FeatureSpec(
                name=column.name, type=column.type, nullable=column.nullable, categories=categories
            )
        )
    return features
