"""Typed configuration: one ``params.yaml``, grouped by stage, validated by pydantic.

The same file drives the CLI, ``dvc repro`` and the Airflow DAGs. Unknown keys are
rejected and every error names the key at fault. Locations and services come from the
environment (``mlops.settings``, re-exported here).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from mlops import partitions
from mlops.contract import Contract, Strict
from mlops.inputs import Derived, Join, Labels, Source
from mlops.settings import (
    ENV,
    ENV_ALLOW_OUTSIDE,
    ENV_PARAMS,
    ConfigError,
    Settings,
    format_error,
    params_path,
    settings,
)

__all__ = [
    "ENV",
    "ENV_ALLOW_OUTSIDE",
    "ENV_PARAMS",
    "ConfigError",
    "Contract",
    "Derived",
    "Join",
    "Labels",
    "Params",
    "Settings",
    "Source",
    "load_params",
    "params_path",
    "settings",
]


# --------------------------------------------------------------------------- stages
Frequency = Literal["day", "week", "month", "quarter", "year"]


class PartitionRange(Strict):
    """Partitions given as a range: ``{from: A, to: B}`` or ``{last: N, to: B}``.

    For ``train.partitions`` ``to`` may be left out: it is then the partition before the
    first scored one.
    """

    from_: str | None = Field(None, alias="from")
    to: str | None = None
    last: int | None = Field(None, ge=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> PartitionRange:
        if (self.from_ is None) == (self.last is None):
            raise ValueError("give exactly one of 'from' or 'last'")
        if self.from_ is not None and self.to is None:
            raise ValueError("'from' needs 'to'")
        return self

    def expand(self, freq: str, to: str | None, where: str) -> list[str]:
        """The partition ids of the range, oldest first."""
        last = self.to or to
        if last is None:
            raise ValueError(f"{where}: 'last' needs 'to' here")
        if self.from_ is not None:
            return partitions.span(self.from_, last, freq)
        assert self.last is not None
        return partitions.span(partitions.shift(last, 1 - self.last, freq), last, freq)


def _expand_ranges(raw: Any) -> Any:
    """Turn partition ranges in ``train``/``score`` into lists (before validation)."""
    if not isinstance(raw, dict):
        return raw
    freq = (raw.get("ingest") or {}).get("partition", "month")
    if freq not in partitions.FREQUENCIES:
        return raw  # the Ingest model reports it
    out = dict(raw)
    score = out.get("score")
    first_scored: str | None = None
    for group in ("score", "train"):
        cfg = out.get(group)
        if not isinstance(cfg, dict) or not isinstance(cfg.get("partitions"), dict):
            if group == "score" and isinstance(score, dict) and score.get("partitions"):
                first_scored = min(score["partitions"], key=partitions.sort_key)
            continue
        where = f"{group}.partitions"
        try:
            rng = PartitionRange.model_validate(cfg["partitions"])
            before = partitions.shift(first_scored, -1, freq) if first_scored else None
            pids = rng.expand(freq, before if group == "train" else None, where)
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"{where}: {_first_message(exc)}") from None
        out[group] = {**cfg, "partitions": pids}
        if group == "score" and pids:
            first_scored = pids[0]
    return out


def _first_message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(e["msg"] for e in exc.errors())
    return str(exc)


class Ingest(Strict):
    partition: Frequency = "month"
    push: bool = Field(True, description="Push the partitions to the DVC remote.")


class Validate(Strict):
    max_duplicate_keys: int = Field(
        0,
        ge=0,
        description="Rows of a partition that may share an entity key with another row and "
        "still let it pass; such rows are dropped from the validated partition (never "
        "joined), and reported. 0: any duplicate key fails the partition.",
    )
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
    "sklearn_hist_gradient_boosting",
    "sklearn_logistic_regression",
    "sklearn_linear_regression",
    "sklearn_random_forest",
    "xgboost",
]


class Candidate(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: ModelKind
    params: dict[str, Any] = Field(default_factory=dict)


class Threshold(Strict):
    """How ``train`` picks a classifier's decision threshold on the holdout.

    ``best_f1`` maximises F1; ``precision`` (``recall``) takes the threshold of the
    highest recall (precision) whose precision (recall) reaches ``value``; ``fixed`` uses
    ``value`` as it is.
    """

    rule: Literal["best_f1", "precision", "recall", "fixed"] = "best_f1"
    value: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> Threshold:
        if self.rule != "best_f1" and self.value is None:
            raise ValueError(f"train.threshold.rule {self.rule!r} needs a value in [0, 1]")
        if self.rule == "best_f1" and self.value is not None:
            raise ValueError("train.threshold.value is not read with rule 'best_f1'; remove it")
        return self


class Train(Strict):
    partitions: list[str] = Field(min_length=1, description="Partitions trained on.")
    holdout_partitions: int = Field(
        1, ge=1, description="The most recent N training partitions held out for evaluation."
    )
    candidates: list[Candidate] = Field(min_length=1)
    metric: Literal["roc_auc", "average_precision", "log_loss", "rmse", "mae", "r2"] | None = None
    seed: int = 42
    threshold: Threshold = Field(
        Threshold(), description="Classification: how the decision threshold is chosen."
    )
    max_categories: int = Field(
        250,
        ge=2,
        le=253,
        description="Most frequent categories of a feature kept as they are; the rest are "
        "mapped to one 'other' value recorded in the model (at most 253: HistGradientBoosting "
        "takes 255 codes, 'other' and missing included).",
    )

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

    @property
    def holdout(self) -> list[str]:
        """The most recent ``holdout_partitions`` partitions of the window, held out."""
        return sorted(self.partitions, key=partitions.sort_key)[-self.holdout_partitions :]


class Promote(Strict):
    floor: float = Field(description="Absolute floor on the gate metric.")
    min_improvement: float = Field(
        0.0,
        description="Required gain over the champion on the gate metric, in its units "
        "(within [-1, 1] for roc_auc, average_precision and r2).",
    )
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout_hours: float = Field(72, gt=0)


class Score(Strict):
    partitions: list[str] = Field(default_factory=list, description="Partitions scored.")
    chunk_rows: int = Field(200_000, ge=1_000)
    explain_top_k: int = Field(
        0,
        ge=0,
        le=50,
        description="Per row, the k features contributing most (SHAP) and their "
        "contributions, as explain_* columns; 0: none.",
    )
    explain_exact: bool = Field(
        False,
        description="XGBoost: exact TreeSHAP for explain_top_k (about 200x the prediction "
        "time) instead of its path attribution (Saabas; about 2x). Other kinds: always exact.",
    )


class Monitor(Strict):
    numerical_method: Literal["ks", "wasserstein", "psi", "jensenshannon"] = "wasserstein"
    numerical_threshold: float = Field(0.1, gt=0)
    categorical_method: Literal["chisquare", "psi", "jensenshannon", "TVD"] = "jensenshannon"
    categorical_threshold: float = Field(0.1, gt=0)
    drift_share: float = Field(0.3, gt=0, le=1, description="Share of drifted features = breach.")
    breach_on_prediction_drift: bool = True
    max_rows: int = Field(100_000, ge=1_000, description="Above this, both sides are sampled.")
    cooldown_hours: float = Field(24, ge=0)
    max_performance_drop: float = Field(
        0.05,
        ge=0,
        description="Realised gate metric worse than the model's holdout score by more than "
        "this (in the metric's units) is a performance breach; so is one below promote.floor.",
    )


class Serve(Strict):
    """``mlops serve``: batch and body limits, alias polling, shadow and canary, the log."""

    max_batch_rows: int = Field(1_000, ge=1, description="Rows one request may carry.")
    max_body_bytes: int = Field(4_000_000, ge=1_024)
    timeout_s: float = Field(10, gt=0, description="A request still running then gets a 504.")
    poll_seconds: float = Field(10, gt=0, description="How often the aliases are re-read.")
    shadow: bool = Field(False, description="Also score every request with the challenger.")
    canary_share: float = Field(0, ge=0, le=1, description="Share of keys the challenger answers.")
    log_flush_rows: int = Field(5_000, ge=1)
    log_flush_seconds: float = Field(5, gt=0)

    @model_validator(mode="after")
    def _arms(self) -> Serve:
        if self.shadow and self.canary_share > 0:
            raise ValueError("serve: shadow and canary_share exclude each other; choose one")
        return self


class CI(Strict):
    """The model check of a change (``mlops ci report``)."""

    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="params.yaml values merged into both revisions' params for the check "
        "(a smaller training window, fewer rounds); nested sections merge, lists replace.",
    )


class Schedule(Strict):
    """When the Airflow DAGs run: training's cron, the scoring cadence and its dates."""

    training: str | None = Field(
        "0 3 1 */3 *", description="Training DAG's cron; null: drift breaches only."
    )
    scoring: str | None = Field(
        None, description="Scoring cron; default: one run per ingest.partition."
    )
    start: str | None = Field(
        None,
        description="First data interval scored (a date); default: the start of the first "
        "score partition, else of the partition after the training window.",
    )
    end: str | None = Field(None, description="Last data interval scored (a date); none: open.")

    @model_validator(mode="after")
    def _dates(self) -> Schedule:
        for key in ("start", "end"):
            value = getattr(self, key)
            if value is not None:
                try:
                    datetime.fromisoformat(value)
                except ValueError:
                    raise ValueError(
                        f"schedule.{key} {value!r} is not a date such as 2013-07-01"
                    ) from None
        return self


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
    labels: Labels | None = None
    serve: Serve = Serve()
    schedule: Schedule = Schedule()
    ci: CI = CI()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _ranges(cls, raw: Any) -> Any:
        return _expand_ranges(raw)

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
        if metric in {"roc_auc", "average_precision", "r2"}:
            for key in ("floor", "min_improvement"):
                value = getattr(self.promote, key)
                if not -1 <= value <= 1:
                    raise ValueError(f"promote.{key} {value} is outside [-1, 1] for {metric}")
        reg_only = {"sklearn_linear_regression"}
        clf_only = {"sklearn_logistic_regression"}
        bad = reg_only if self.contract.task == "classification" else clf_only
        for c in self.train.candidates:
            if c.kind in bad:
                raise ValueError(
                    f"train.candidates[{c.name}].kind {c.kind!r} does not fit task "
                    f"{self.contract.task!r}"
                )
        freq = self.ingest.partition
        for group, pids in (("train", self.train.partitions), ("score", self.score.partitions)):
            for pid in pids:
                if not partitions.is_id(pid) or partitions.frequency(pid) != freq:
                    raise ValueError(
                        f"{group}.partitions: {pid!r} is not a {freq} partition "
                        f"(ingest.partition={freq!r}; {partitions.EXPECTED})"
                    )
        return self

    def withholds_target(self, partition: str) -> bool:
        """Whether ``partition`` is ingested without its target (``labels.withhold``)."""
        if self.labels is None or not self.labels.withhold:
            return False
        last = max(self.train.partitions, key=partitions.sort_key)
        return partitions.sort_key(partition) > partitions.sort_key(last)

    @property
    def scoring_cron(self) -> str:
        """The scoring DAG's cron: ``schedule.scoring``, else one run per partition."""
        return self.schedule.scoring or partitions.CRON[self.ingest.partition]

    @property
    def scoring_start(self) -> str:
        """The first data interval the scoring DAG runs (an ISO date)."""
        if self.schedule.start:
            return self.schedule.start
        freq = self.ingest.partition
        if self.score.partitions:
            first = min(self.score.partitions, key=partitions.sort_key)
        else:
            first = partitions.shift(max(self.train.partitions, key=partitions.sort_key), 1, freq)
        return partitions.sort_key(first).date().isoformat()

    @property
    def gate_metric(self) -> str:
        """The metric the gate compares: ``train.metric``, else ROC AUC or RMSE."""
        if self.train.metric:
            return self.train.metric
        return "roc_auc" if self.contract.task == "classification" else "rmse"

    @property
    def validate_cfg(self) -> Validate:
        """The ``validate`` group (``validate`` is a pydantic method name)."""
        return self.validate_


def load_params(path: str | os.PathLike[str] | None = None) -> Params:
    """Read and validate ``params.yaml``; raise ConfigError naming the key at fault."""
    p = params_path(path)
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
        raise ConfigError(format_error(p, exc)) from None
