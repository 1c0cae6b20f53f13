"""The data contract: entity keys, timestamp, target, task and typed features.

Written once in ``params.yaml`` and used by validation, Feast, training and drift.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """A frozen model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(Strict):
    """One model input column of the data contract."""

    name: str
    dtype: Literal["float", "int", "category", "bool"]
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    max_null_fraction: float = Field(0.05, ge=0, le=1)
    unseen_category_tolerance: float = Field(
        0.0, ge=0, le=1, description="Share of unseen categories that only warns."
    )

    @model_validator(mode="after")
    def _check(self) -> Feature:
        if self.categories is not None and self.dtype != "category":
            raise ValueError(f"feature {self.name!r}: 'categories' needs dtype 'category'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} > max {self.max}")
        return self


class Contract(Strict):
    """The data contract, written once and used by every stage."""

    entity_keys: list[str] = Field(min_length=1)
    timestamp: str
    target: str
    task: Literal["classification", "regression"]
    features: list[Feature] = Field(min_length=1)
    target_min: float | None = None
    target_max: float | None = None
    min_rows: int = Field(1, ge=0, description="Row-count floor of one partition.")
    max_rows: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> Contract:
        names = [f.name for f in self.features]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"contract.features: duplicate names {sorted(dupes)}")
        if self.target in (self.timestamp, *self.entity_keys):
            raise ValueError(
                f"contract.target {self.target!r} is also an entity key or the timestamp"
            )
        if len(set(self.entity_keys)) != len(self.entity_keys) or (
            self.timestamp in self.entity_keys
        ):
            raise ValueError("contract.entity_keys: must be unique and differ from the timestamp")
        reserved = {self.target, self.timestamp, *self.entity_keys}
        clash = reserved.intersection(names)
        if clash:
            raise ValueError(
                f"contract.features: {sorted(clash)} is also a key, timestamp or the target"
            )
        return self

    @property
    def feature_names(self) -> list[str]:
        """The model inputs, in contract order."""
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        """Every column of a contract-conforming partition, in order."""
        return [*self.entity_keys, self.timestamp, *self.feature_names, self.target]

    def feature(self, name: str) -> Feature:
        """The feature called ``name``; KeyError when the contract has none."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)
