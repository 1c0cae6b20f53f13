"""monitor: compare a partition with the reference data and decide whether drift is a breach.

The report holds one Evidently ``ValueDrift`` per column, with the method and threshold
taken from ``params.monitor``: Evidently's defaults change with the number of rows, and its
drift preset computes every column three times. Both sides are sampled down to
``monitor.max_rows`` first, because the statistical tests use every row they are given;
:func:`run_partition` samples the scored rows before reading their features, so its
memory does not grow with the partition. The decision itself, :func:`is_breach`, is a
pure function of the summary.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from mlops import faults, features, io, outcomes, partitions, provenance, runs, tags
from mlops.config import Monitor, Params, Settings
from mlops.contract import Contract
from mlops.training_data import known_targets

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

PREDICTION = "prediction"
SAMPLE_SEED = 42


class Drift(TypedDict):
    """The drift summary of one comparison (``drift_report``)."""

    columns: dict[str, dict[str, Any]]
    drifted_features: int
    n_features: int
    share: float
    prediction_drift: dict[str, Any] | None
    target_drift: dict[str, Any] | None
    performance: dict[str, dict[str, float | None]] | None
    rows: dict[str, Any]


class Monitored(Drift):
    """A partition's drift summary, breach decision and report files (``drift.json``)."""

    partition: str
    breach: bool
    reasons: list[str]
    html_path: str
    json_path: str
    model_version: NotRequired[str]
    input_md5: NotRequired[str | None]


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


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    contract: Contract,
    cfg: Monitor,
    prediction_col: str | None = PREDICTION,
    seed: int = SAMPLE_SEED,
    current_rows: int | None = None,
) -> tuple[Drift, str]:
    """Compare ``current`` with ``reference``: feature, prediction and target drift, performance.

    Target drift is included when the target is in both frames (its nulls, outcomes not
    known yet, left out), performance when it is known on every row, prediction drift
    when ``prediction_col`` is (a probability for classification, a value for
    regression). Frames above ``cfg.max_rows`` are sampled with a fixed seed.
    ``current_rows`` is the size of the data ``current`` was already sampled from, if it was.

    Returns:
        A JSON-serialisable summary and the report as a self-contained HTML page.
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
    report = Report([*drift_metrics.values(), *perf_metrics.values()], include_tests=True)
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
    return summary, snapshot.get_html_str(as_iframe=False)


def _value(result: Any) -> Any:
    """The headline number of an Evidently result (MAE comes back as a mean and a std)."""
    return result.mean.value if hasattr(result, "mean") else result.value


def is_breach(summary: Drift, cfg: Monitor) -> tuple[bool, list[str]]:
    """Decide from a drift summary whether the model's inputs or outputs moved too far.

    A breach is a share of drifted features at or above ``cfg.drift_share``, or a drifted
    prediction when ``cfg.breach_on_prediction_drift`` is set.

    Returns:
        Whether it is a breach, and one human-readable reason per rule that fired.
    """
    reasons = []
    n, total = summary["drifted_features"], summary["n_features"]
    share = n / total if total else 0.0
    if total and share >= cfg.drift_share:
        names = sorted(c for c, r in summary["columns"].items() if r["drifted"])
        reasons.append(
            f"{n}/{total} features drifted ({share:.0%} >= drift_share {cfg.drift_share:.0%}): "
            + ", ".join(names)
        )
    pred = summary.get("prediction_drift")
    if pred and pred["drifted"] and cfg.breach_on_prediction_drift:
        value = "n/a" if pred["value"] is None else f"{pred['value']:.3g}"
        reasons.append(
            f"prediction column {pred['column']!r} drifted "
            f"({pred['method']} {value}, threshold {pred['threshold']:g})"
        )
    return bool(reasons), reasons


def run(
    params: Params,
    st: Settings,
    partition: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    current_rows: int | None = None,
    described: dict[str, str | None] | None = None,
    folder: Path | None = None,
) -> Monitored:
    """Report drift of ``current`` (one partition) against ``reference`` and decide on a breach.

    ``current_rows`` is the partition's row count when ``current`` is a sample of it;
    ``described`` what the predictions were made from (``model_version``, ``input_md5``).
    Writes ``drift.html`` and ``drift.json`` (summary, breach, reasons, ``described``) to
    ``folder`` (default ``<reports_dir>/<partition>``) and returns that summary with the
    two paths added.
    """
    partitions.check(partition)  # a malformed id fails before any work
    t0 = time.perf_counter()
    summary, html = drift_report(
        reference, current, params.contract, params.monitor, current_rows=current_rows
    )
    breach, reasons = is_breach(summary, params.monitor)
    out = folder or st.reports_dir / partition
    result = Monitored(
        **summary,
        partition=partition,
        breach=breach,
        reasons=reasons,
        html_path=str(out / "drift.html"),
        json_path=str(out / "drift.json"),
        **(described or {}),  # type: ignore[typeddict-item]
    )
    html_path = io.write_text(out / "drift.html", html)
    # The JSON goes last: when it exists, the HTML it describes does too.
    io.write_json(out / "drift.json", {k: v for k, v in result.items() if not k.endswith("_path")})

    pred = summary["prediction_drift"]
    pred_txt = "n/a" if pred is None else ("yes" if pred["drifted"] else "no")
    print(
        f"monitor: {partition} drift {summary['drifted_features']}/{summary['n_features']} "
        f"features ({summary['share']:.0%}), prediction drift {pred_txt} -> "
        f"{'BREACH' if breach else 'ok'} (report: {html_path}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return result


def sample_positions(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of ``k`` of ``n`` rows (all when ``n <= k``).

    The same rows ``DataFrame.sample(n=k, random_state=seed)`` picks from ``n`` rows.
    """
    import numpy as np

    if n <= k:
        return np.arange(n)
    return np.sort(np.random.RandomState(seed).choice(n, size=k, replace=False))


def current_sample(
    params: Params, st: Settings, partition: str, pred_path: Path
) -> tuple[pd.DataFrame, int]:
    """A seeded sample of scored rows, and the partition's row count.

    At most ``monitor.max_rows`` rows, in file order, with their features, prediction,
    model name and version, and the target when any is known: the validated partition's,
    else the label store's (``known_targets``); none for a partition scored without it.

    Only the sampled rows are kept: predictions are read by position, features and
    target by key, both in batches, so memory does not grow with the partition.
    """
    import pyarrow.parquet as pq

    c = params.contract
    keys = c.entity_keys
    total = pq.ParquetFile(pred_path).metadata.num_rows
    if total == 0:
        raise ValueError(f"{pred_path}: no predictions; run score {partition} again")
    positions = sample_positions(total, params.monitor.max_rows, SAMPLE_SEED)
    preds = io.read_rows(pred_path, positions, [*keys, PREDICTION, "model_name", "model_version"])
    # Each side is checked before the join: a key shared by two rows would pair a
    # prediction with another row's features or label.
    where = f"monitor {partition}:"
    redo = features.REDO.format(what=partition)
    io.one_to_one(preds, keys, f"{where} predictions {pred_path}", f"run score {partition} again")
    wanted = preds.select(keys)
    batch = params.score.chunk_rows
    feat_path = features.feature_file(params, st, partition)
    feats = io.matching_rows(feat_path, wanted, [*keys, *c.feature_names], batch)
    io.one_to_one(feats, keys, f"{where} feature file {feat_path}", redo)
    current = preds.to_pandas().merge(
        features.restore_dtypes(feats.to_pandas(), c), on=keys, how="inner", validate="1:1"
    )
    validated = partitions.file(st.validated_dir, partition)
    own = [c.target] if c.target in pq.read_schema(validated).names else []
    if own or outcomes.path(st, partition).is_file():
        labels = io.matching_rows(validated, wanted, [*keys, *own], batch)
        io.one_to_one(labels, keys, f"{where} validated partition {validated}", redo)
        known = known_targets(st, c, partition, labels.to_pandas(), "monitor")
        if known[c.target].notna().any():
            current = current.merge(known, on=keys, how="left", validate="1:1")
    return current, total


def run_partition(params: Params, st: Settings, partition: str) -> Monitored:
    """Monitor a scored partition against the reference of the model that scored it.

    The reference (a sample of that model's training rows with its predictions) is read
    from the model's MLflow run; the current side is a sample of the partition's scored
    rows with their features, labels when present, and predictions. Predictions made
    from an earlier version of the partition are refused. The report and summary are
    logged to MLflow as the ``monitor`` run of the partition, model version and input md5:
    a rerun on the same predictions replaces that run's results rather than adding a run.
    One monitor of a partition at a time; a run an interrupted one left open is closed.
    """
    pred_path = partitions.file(st.predictions_dir, partition)  # refuses a malformed id
    with io.exclusive(st.state_dir / "locks", "monitor", [partition]):
        return _run_partition(params, st, partition, pred_path)


def _run_partition(params: Params, st: Settings, partition: str, pred_path: Path) -> Monitored:
    import mlflow

    from mlops.registry import connect

    if not pred_path.is_file():
        raise FileNotFoundError(f"{pred_path}: no predictions for {partition}; run score first")
    redo = f"mlops score --partitions {partition}"
    meta = io.read_json(pred_path.with_suffix(".json"), missing={}, fix=f"Re-run `{redo}`.")
    made = provenance.require(st, partition, meta.get("input_md5"), "monitor", pred_path, redo)
    input_md5 = made or meta.get("input_md5")
    current, total = current_sample(params, st, partition, pred_path)
    name, version = str(current["model_name"].iloc[0]), str(current["model_version"].iloc[0])
    reg = connect(st)
    reference = reg.reference(name, version)
    described = {"model_version": version, "input_md5": input_md5}
    out = run(params, st, partition, reference, current, total, described)

    exp = reg.experiment_id(params.model_name)
    runs.close_interrupted(reg, exp, "monitor", {tags.PARTITION: partition})
    key = {
        tags.STAGE: "monitor",
        tags.PARTITION: partition,
        tags.MODEL_VERSION: version,
        tags.INPUT_MD5: input_md5 or "unknown",
    }
    again = runs.find_run(reg, exp, "monitor", key)
    # Tagged as it starts: a run killed at any point is still found as this monitor's.
    first = {"experiment_id": exp, "run_name": f"monitor {partition}", "tags": key}
    with mlflow.start_run(**({"run_id": again} if again else first)):
        faults.point("monitor.run_started", partition)
        mlflow.set_tags({**key, tags.BREACH: str(out["breach"])})
        mlflow.log_metrics(
            {
                "drift_share": float(out["share"]),
                "drifted_features": float(out["drifted_features"]),
            }
        )
        mlflow.log_artifact(out["html_path"], artifact_path=f"drift/{partition}")
        mlflow.log_artifact(out["json_path"], artifact_path=f"drift/{partition}")
    return out
