"""Typed configuration: one ``params.yaml``, grouped by stage, validated by pydantic.

The same file drives the CLI, ``dvc repro`` and the Airflow DAGs. Unknown keys are
rejected and every error names the key at fault. Locations (data root, MLflow tracking
URI, Feast repo) can be overridden from the environment for production.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_PARAMS = "MLOPS_PARAMS"
ENV_PROJECT_ROOT = "MLOPS_PROJECT_ROOT"
ENV_DATA_ROOT = "MLOPS_DATA_ROOT"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_FEAST_REPO = "MLOPS_FEAST_REPO"
ENV_ALLOW_OUTSIDE = "MLOPS_ALLOW_PATHS_OUTSIDE_ROOT"


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message names the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- contract
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
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        """Every column of a contract-conforming partition, in order."""
        return [*self.entity_keys, self.timestamp, *self.feature_names, self.target]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


# --------------------------------------------------------------------------- source
class Join(Strict):
    """A lookup table joined onto the source rows (left join)."""

    path: str
    keys: list[str] = Field(min_length=1, description="Join keys (present on both sides).")
    columns: list[str] = Field(min_length=1, description="Columns kept, after renaming.")
    rename: dict[str, str] = Field(default_factory=dict)
    parse_dates: list[str] = Field(default_factory=list)


class Derived(Strict):
    """A column computed from others: an expression or a key built by concatenation."""

    name: str
    expr: str | None = Field(None, description="A pandas.eval expression.")
    concat: list[str] | None = None
    sep: str = "-"

    @model_validator(mode="after")
    def _one_of(self) -> Derived:
        if (self.expr is None) == (self.concat is None):
            raise ValueError(f"derive {self.name!r}: give exactly one of 'expr' or 'concat'")
        return self


class Source(Strict):
    """A tabular source: a CSV or Parquet file or folder with a timestamp column."""

    path: str = Field(description="File or folder; 'pkg://package/rel/path' reads package data.")
    format: Literal["csv", "parquet"] = "csv"
    timestamp_column: str
    timestamp_format: str | None = None
    timezone: str = Field("UTC", description="Zone of naive timestamps in the source.")
    joins: list[Join] = Field(default_factory=list)
    derive: list[Derived] = Field(default_factory=list)
    dropna: list[str] = Field(default_factory=list, description="Rows without these are dropped.")
    rename: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- stages
class Ingest(Strict):
    partition: Literal["day", "week", "month"] = "month"
    push: bool = Field(True, description="Push the partitions to the DVC remote.")


class Validate(Strict):
    max_duplicate_keys: int = Field(0, ge=0)
    extra_expectations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra GX expectations: {'type': 'expect_...', 'kwargs': {...}}.",
    )
    build_data_docs: bool = True


class Materialize(Strict):
    project: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    ttl_days: int = Field(3650, ge=1)
    online: Literal["latest", "all", "off"] = Field(
        "latest",
        description="Online store load: the newest partition of each call (latest values "
        "per entity), every partition given, or none.",
    )


ModelKind = Literal[
    "sklearn_hist_gradient_boosting", "sklearn_logistic_regression", "sklearn_linear_regression",
    "sklearn_random_forest", "xgboost",
]


class Candidate(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: ModelKind
    params: dict[str, Any] = Field(default_factory=dict)


class Train(Strict):
    partitions: list[str] = Field(min_length=1, description="Partitions trained on.")
    holdout_partitions: int = Field(
        1, ge=1, description="The most recent N training partitions held out for evaluation."
    )
    candidates: list[Candidate] = Field(min_length=1)
    metric: Literal["roc_auc", "average_precision", "log_loss", "rmse", "mae", "r2"] | None = None
    seed: int = 42

    @model_validator(mode="after")
    def _check(self) -> Train:
        if self.holdout_partitions >= len(self.partitions):
            raise ValueError(
                f"train.holdout_partitions={self.holdout_partitions} leaves no partition to "
                f"train on (train.partitions has {len(self.partitions)})"
            )
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError("train.candidates: names must be unique")
        return self


class Promote(Strict):
    floor: float = Field(description="Absolute floor on the gate metric.")
    min_improvement: float = Field(
        0.0, ge=-1, le=1, description="Required gain over the champion on the gate metric."
    )
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout_hours: float = Field(72, gt=0)


class Score(Strict):
    partitions: list[str] = Field(default_factory=list, description="Partitions scored.")
    chunk_rows: int = Field(200_000, ge=1_000)


class Monitor(Strict):
    numerical_method: Literal["ks", "wasserstein", "psi", "jensenshannon"] = "wasserstein"
    numerical_threshold: float = Field(0.1, gt=0)
    categorical_method: Literal["chisquare", "psi", "jensenshannon", "TVD"] = "jensenshannon"
    categorical_threshold: float = Field(0.1, gt=0)
    drift_share: float = Field(0.3, gt=0, le=1, description="Share of drifted features = breach.")
    breach_on_prediction_drift: bool = True
    max_rows: int = Field(100_000, ge=1_000, description="Above this, both sides are sampled.")
    cooldown_hours: float = Field(24, ge=0)


class Params(Strict):
    """The whole of ``params.yaml``."""

    project: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    model_name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    contract: Contract
    source: Source
    ingest: Ingest = Ingest()
    validate_: Validate = Field(Validate(), alias="validate")
    materialize: Materialize
    train: Train
    promote: Promote
    score: Score = Score()
    monitor: Monitor = Monitor()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> Params:
        metric = self.gate_metric
        allowed = {
            "classification": {"roc_auc", "average_precision", "log_loss"},
            "regression": {"rmse", "mae", "r2"},
        }[self.contract.task]
        if metric not in allowed:
            raise ValueError(
                f"train.metric {metric!r} does not fit task {self.contract.task!r}; "
                f"use one of {sorted(allowed)}"
            )
        if metric in {"roc_auc", "average_precision", "r2"} and not -1 <= self.promote.floor <= 1:
            raise ValueError(f"promote.floor {self.promote.floor} is outside [-1, 1] for {metric}")
        reg_only = {"sklearn_linear_regression"}
        clf_only = {"sklearn_logistic_regression"}
        bad = reg_only if self.contract.task == "classification" else clf_only
        for c in self.train.candidates:
            if c.kind in bad:
                raise ValueError(
                    f"train.candidates[{c.name}].kind {c.kind!r} does not fit task "
                    f"{self.contract.task!r}"
                )
        return self

    @property
    def gate_metric(self) -> str:
        if self.train.metric:
            return self.train.metric
        return "roc_auc" if self.contract.task == "classification" else "rmse"

    @property
    def validate_cfg(self) -> Validate:
        return self.validate_


# --------------------------------------------------------------------------- locations
class Settings(Strict):
    """Where things live; resolved from the project root and the environment."""

    root: Path
    params_path: Path
    data_root: Path
    tracking_uri: str
    feast_repo: Path
    gx_root: Path

    @property
    def raw_dir(self) -> Path:
        return self.data_root / "raw"

    @property
    def validated_dir(self) -> Path:
        return self.data_root / "validated"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_root / "quarantine"

    @property
    def features_dir(self) -> Path:
        return self.data_root / "features"

    @property
    def predictions_dir(self) -> Path:
        return self.data_root / "predictions"

    @property
    def reports_dir(self) -> Path:
        return self.data_root / "reports"

    @property
    def state_dir(self) -> Path:
        return self.data_root / "state"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "mlartifacts"


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_params(path: str | os.PathLike[str] | None = None) -> Params:
    """Read and validate ``params.yaml``; raise ConfigError naming the key at fault."""
    p = Path(path or os.environ.get(ENV_PARAMS) or "params.yaml")
    if not p.is_file():
        raise ConfigError(f"{p}: configuration file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of stage groups at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(p, exc)) from None


def _inside(root: Path, value: str, key: str) -> Path:
    p = Path(value)
    p = (p if p.is_absolute() else root / p).resolve()
    if os.environ.get(ENV_ALLOW_OUTSIDE) != "1" and not p.is_relative_to(root.resolve()):
        raise ConfigError(
            f"{key}={value!r} resolves to {p}, outside the project root {root}; "
            f"set {ENV_ALLOW_OUTSIDE}=1 to allow it"
        )
    return p


def settings(params_path: str | os.PathLike[str] | None = None) -> Settings:
    """Resolve locations: project root is the folder of ``params.yaml`` unless overridden."""
    pp = Path(params_path or os.environ.get(ENV_PARAMS) or "params.yaml").resolve()
    root = Path(os.environ.get(ENV_PROJECT_ROOT) or pp.parent).resolve()
    data_root = _inside(root, os.environ.get(ENV_DATA_ROOT, "data"), ENV_DATA_ROOT)
    uri = os.environ.get(ENV_TRACKING_URI) or f"sqlite:///{root / 'mlflow.db'}"
    feast_repo = _inside(root, os.environ.get(ENV_FEAST_REPO, "feature_repo"), ENV_FEAST_REPO)
    return Settings(
        root=root,
        params_path=pp,
        data_root=data_root,
        tracking_uri=uri,
        feast_repo=feast_repo,
        gx_root=root / "great_expectations",
    )


Partition = Annotated[str, Field(pattern=r"^\d{4}-\d{2}(-\d{2})?$|^\d{4}-W\d{2}$")]
