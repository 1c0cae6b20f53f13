"""drift: the Evidently comparison of a partition with its reference, as a summary.

The report holds one Evidently ``ValueDrift`` per column, with the method and threshold
taken from ``params.monitor``: Evidently's defaults change with the number of rows, and its
drift preset computes every column three times. Both sides are sampled down to
``monitor.max_rows`` first, because the statistical tests use every row they are given.
``monitor`` decides on a breach from the summary; the timeline keeps the snapshot.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypedDict

from mlops import timeline
from mlops.config import Monitor
from mlops.contract import Contract

if TYPE_CHECKING:
    import pandas as pd

PREDICTION = "prediction"
SAMPLE_SEED = 42


class Drift(TypedDict):
    """The drift summary of one comparison (:func:`evaluate`)."""

    columns: dict[str, dict[str, Any]]
    drifted_features: int
    n_features: int
    share: float
    prediction_drift: dict[str, Any] | None
    target_drift: dict[str, Any] | None
    performance: dict[str, dict[str, float | None]] | None
    rows: dict[str, Any]


def _sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(df) <= n:
        return df
    # Row order is kept so Evidently's per-index plots still read left to right in time.
    return df.sample(n=n, random_state=seed).sort_index()


def _number(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    contract: Contract,
    prediction_col: str | None,
) -> tuple[pd.DataFrame, pd.DataFrame, str | None, str | None]:
    """Project both sides onto the columns the report reads; say which target/prediction to use.

    Entity keys and the timestamp are left out: no metric reads them, and Evidently
    re-profiles every column of the frame for each performance metric.
    """
    features = contract.feature_names
    for side, df in (("reference", reference), ("current", current)):
        if df.empty:
            raise ValueError(f"monitor: the {side} data has no rows; nothing to compare")
        missing = [c for c in features if c not in df.columns]
        if missing:
            raise ValueError(
                f"monitor: the {side} data lacks contract feature column(s) {missing}; "
                "pass frames with every feature of params.yaml contract.features"
            )
    target: str | None = contract.target
    if target not in reference.columns or target not in current.columns:
        target = None
    pred = prediction_col
    if pred is not None and (pred not in reference.columns or pred not in current.columns):
        pred = None
    keep = [*features, *([target] if target else []), *([pred] if pred else [])]
    ref, cur = reference[keep], current[keep]
    if target and contract.task == "classification":
        # Evidently reads a single probability column only against an integer 0/1 target;
        # one with outcomes not known yet stays float, its nulls left out of its drift.
        whole = ref[target].notna().all() and cur[target].notna().all()
        kind = "int64" if whole else "float64"
        ref, cur = (df.assign(**{target: df[target].astype(kind)}) for df in (ref, cur))
    return ref, cur, target, pred


def _performance_metrics(
    contract: Contract, ref: pd.DataFrame, cur: pd.DataFrame, target: str, pred: str
) -> tuple[dict[str, Any], Any]:
    """Evidently metrics (by summary name) and the task definition, or ({}, None) if unsupported."""
    from evidently import BinaryClassification, Regression
    from evidently.metrics import MAE, RMSE, Accuracy, LogLoss, R2Score, RocAuc

    # tests=[] turns off Evidently's own "within 20% of reference" checks: this module
    # decides, and a report that shows a second, different verdict would confuse.
    if contract.task == "regression":
        metrics = {
            "rmse": RMSE(tests=[]),
            "mae": MAE(mean_tests=[], std_tests=[]),
            "r2": R2Score(tests=[]),
        }
        return metrics, Regression(target=target, prediction=pred)
    labels = set(ref[target].dropna().unique()) | set(cur[target].dropna().unique())
    if not labels <= {0, 1} or cur[pred].dtype.kind != "f":
        return {}, None
    metrics = {
        # The ROC curve plot costs about a sixth of the whole report at 100k rows.
        "roc_auc": RocAuc(roc_curve=False, tests=[]),
        "log_loss": LogLoss(tests=[]),
        "accuracy": Accuracy(tests=[]),
    }
    return metrics, BinaryClassification(target=target, prediction_probas=pred, pos_label=1)


def evaluate(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    contract: Contract,
    cfg: Monitor,
    prediction_col: str | None = PREDICTION,
    seed: int = SAMPLE_SEED,
    current_rows: int | None = None,
) -> tuple[Drift, Any]:
    """Compare ``current`` with ``reference``: feature, prediction and target drift, performance.

    Target drift is included when the target is in both frames (its nulls, outcomes not
    known yet, left out), performance when it is known on every row, prediction drift
    when ``prediction_col`` is (a probability for classification, a value for
    regression). Frames above ``cfg.max_rows`` are sampled with a fixed seed.
    ``current_rows`` is the size of the data ``current`` was already sampled from, if it was.

    Returns:
        A JSON-serialisable summary and Evidently's snapshot of the report.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.core.metric_types import TestStatus
    from evidently.metrics import ValueDrift

    n_current = len(current) if current_rows is None else current_rows
    rows = {
        "reference": len(reference),
        "current": n_current,
        "sampled": len(reference) > cfg.max_rows or n_current > cfg.max_rows,
        "max_rows": cfg.max_rows,
    }
    ref, cur, target, pred = _frames(
        _sample(reference, cfg.max_rows, seed),
        _sample(current, cfg.max_rows, seed),
        contract,
        prediction_col,
    )

    num_method = (cfg.numerical_method, cfg.numerical_threshold)
    cat_method = (cfg.categorical_method, cfg.categorical_threshold)
    numerical = [f.name for f in contract.features if f.dtype in ("float", "int")]
    categorical = [f.name for f in contract.features if f.dtype in ("category", "bool")]
    kinds = {**dict.fromkeys(numerical, "numerical"), **dict.fromkeys(categorical, "categorical")}
    if target:
        kinds[target] = "numerical" if contract.task == "regression" else "categorical"
    if pred:
        kinds[pred] = "numerical" if cur[pred].dtype.kind in "fiu" else "categorical"

    checked: dict[str, dict[str, Any]] = {}
    drift_metrics = {}
    for col, kind in kinds.items():
        method, threshold = num_method if kind == "numerical" else cat_method
        checked[col] = {"kind": kind, "method": method, "threshold": threshold}
        has_ref, has_cur = ref[col].notna().any(), cur[col].notna().any()
        if has_ref and has_cur:
            drift_metrics[col] = ValueDrift(column=col, method=method, threshold=threshold)
        else:
            # Evidently refuses an all-null column; a side that empties out has drifted.
            checked[col].update(value=None, drifted=bool(has_ref != has_cur), note="all null")

    perf_metrics: dict[str, Any] = {}
    task = None
    if target and pred and ref[target].notna().all() and cur[target].notna().all():
        perf_metrics, task = _performance_metrics(contract, ref, cur, target, pred)

    # Every column list is given, so Evidently infers nothing: the target and the prediction
    # are typed here but only ever compared through their own metrics, never as features.
    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numerical"],
        categorical_columns=[c for c, k in kinds.items() if k == "categorical"],
        text_columns=[],
        datetime_columns=[],
        list_columns=[],
        unknown_columns=[],
        classification=[task] if task is not None and contract.task == "classification" else None,
        regression=[task] if task is not None and contract.task == "regression" else None,
    )
    features = contract.feature_names
    untested = [c for c in features if c not in drift_metrics and checked[c]["drifted"]]
    share = timeline.drift_share(features, drift_metrics, untested)
    report = Report([*drift_metrics.values(), share, *perf_metrics.values()], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )

    for col, metric in drift_metrics.items():
        result = snapshot.metric_results[metric.metric_id]
        checked[col]["value"] = _number(result.value)
        checked[col]["drifted"] = any(t.status == TestStatus.FAIL for t in result.tests)

    performance = None
    if perf_metrics:
        performance = {}
        for name, metric in perf_metrics.items():
            cur_res = snapshot.metric_results[metric.metric_id]
            ref_res = snapshot.context.get_reference_metric_result(metric.metric_id)
            performance[name] = {
                "current": _number(_value(cur_res)),
                "reference": _number(_value(ref_res)),
            }

    columns = {c: checked[c] for c in contract.feature_names}
    drifted = sum(1 for c in columns.values() if c["drifted"])
    summary = Drift(
        columns=columns,
        drifted_features=drifted,
        n_features=len(columns),
        share=drifted / len(columns),
        prediction_drift={"column": pred, **checked[pred]} if pred else None,
        target_drift={"column": target, **checked[target]} if target else None,
        performance=performance,
        rows=rows,
    )
    return summary, snapshot


def _value(result: Any) -> Any:
    """The headline number of an Evidently result (MAE comes back as a mean and a std)."""
    return result.mean.value if hasattr(result, "mean") else result.value
