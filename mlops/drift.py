"""drift: the Evidently comparison of a partition with its reference, as a summary.

The report holds one Evidently ``ValueDrift`` per column, with the method and threshold
taken from ``params.monitor``: Evidently's defaults change with the number of rows, and its
drift preset computes every column three times. Both sides are sampled down to
``monitor.max_rows`` first, because the statistical tests use every row they are given.
Performance is measured in a report of its own, whose reference is the holdout the
version was evaluated on (its training rows would flatter it), and merged into one
snapshot. ``monitor`` decides on a breach from the summary; the timeline keeps the
snapshot. :func:`summary_html` is the verdict at the top of the page and
:func:`share_library` points the page at one shared copy of Evidently's script.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from mlops import io, timeline
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


def _holdout(holdout: pd.DataFrame, contract: Contract, target: str, pred: str) -> pd.DataFrame:
    """The holdout's target and prediction, typed as ``_frames`` types the current side's."""
    missing = [c for c in (target, pred) if c not in holdout.columns]
    if missing:
        raise ValueError(
            f"monitor: the holdout lacks column(s) {missing}; it needs the target and the "
            "version's prediction of every row"
        )
    out = holdout[[target, pred]].dropna(subset=[target])
    if out.empty:
        raise ValueError("monitor: the holdout has no row whose outcome is known")
    if contract.task == "classification":
        out = out.assign(**{target: out[target].astype("int64")})
    return out


def _performance(
    contract: Contract,
    cur: pd.DataFrame,
    ref: pd.DataFrame | None,
    target: str,
    pred: str,
    kinds: dict[str, str],
) -> tuple[dict[str, dict[str, float | None]] | None, Any]:
    """Realised performance of ``cur`` against the holdout ``ref``, in a report of its own.

    Evidently takes one reference per report, and the drift reference is a sample of the
    training rows: performance measured there is the model's fit, not its score. Without
    a holdout the current side is reported alone (``reference`` None).

    Returns:
        The metrics by name (current and reference), or None when the task has none here,
        and the snapshot of that report (None likewise).
    """
    from evidently import DataDefinition, Dataset, Report

    metrics, task = _performance_metrics(contract, cur if ref is None else ref, cur, target, pred)
    if not metrics:
        return None, None
    definition = DataDefinition(
        numerical_columns=[c for c in (target, pred) if kinds[c] == "numerical"],
        categorical_columns=[c for c in (target, pred) if kinds[c] == "categorical"],
        text_columns=[],
        datetime_columns=[],
        list_columns=[],
        unknown_columns=[],
        classification=[task] if contract.task == "classification" else None,
        regression=[task] if contract.task == "regression" else None,
    )
    cols = [target, pred]
    snapshot = Report(list(metrics.values())).run(
        Dataset.from_pandas(cur[cols], data_definition=definition),
        None if ref is None else Dataset.from_pandas(ref[cols], data_definition=definition),
    )

    def reference(metric: Any) -> float | None:
        if ref is None:
            return None
        return _number(_value(snapshot.context.get_reference_metric_result(metric.metric_id)))

    out = {
        name: {
            "current": _number(_value(snapshot.metric_results[metric.metric_id])),
            "reference": reference(metric),
        }
        for name, metric in metrics.items()
    }
    return out, snapshot


def _merged(first: Any, second: Any) -> Any:
    """One snapshot holding both reports' results and widgets, ``first``'s before ``second``'s."""
    from evidently.core.report import Snapshot

    a, b = first.to_snapshot_model(), second.to_snapshot_model()
    model = a.copy(
        update={
            "metric_results": {**a.metric_results, **b.metric_results},
            "top_level_metrics": [*a.top_level_metrics, *b.top_level_metrics],
            "widgets": [*a.widgets, *b.widgets],
            "tests_widgets": [*a.tests_widgets, *b.tests_widgets],
        }
    )
    return Snapshot.load_model(model)


def evaluate(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    contract: Contract,
    cfg: Monitor,
    prediction_col: str | None = PREDICTION,
    seed: int = SAMPLE_SEED,
    current_rows: int | None = None,
    holdout: pd.DataFrame | None = None,
) -> tuple[Drift, Any]:
    """Compare ``current`` with ``reference``: feature, prediction and target drift, performance.

    Target drift is included when the target is in both frames (its nulls, outcomes not
    known yet, left out), performance when it is known on every current row, prediction
    drift when ``prediction_col`` is (a probability for classification, a value for
    regression). Performance is measured against ``holdout`` (the rows the version was
    evaluated on, with its predictions), never against the training ``reference``.
    ``reference`` and ``current`` above ``cfg.max_rows`` are sampled with a fixed seed
    (the holdout is not). ``current_rows`` is the size of the data ``current`` was
    already sampled from, if it was.

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
        "holdout": None,  # the performance reference's rows, when there is one
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

    # Every column list is given, so Evidently infers nothing: the target and the prediction
    # are typed here but only ever compared through their own metrics, never as features.
    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numerical"],
        categorical_columns=[c for c, k in kinds.items() if k == "categorical"],
        text_columns=[],
        datetime_columns=[],
        list_columns=[],
        unknown_columns=[],
    )
    features = contract.feature_names
    untested = [c for c in features if c not in drift_metrics and checked[c]["drifted"]]
    share = timeline.drift_share(features, drift_metrics, untested)
    report = Report([*drift_metrics.values(), share], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )

    for col, metric in drift_metrics.items():
        result = snapshot.metric_results[metric.metric_id]
        checked[col]["value"] = _number(result.value)
        checked[col]["drifted"] = any(t.status == TestStatus.FAIL for t in result.tests)

    performance = None
    if target and pred and cur[target].notna().all():
        hold = None
        if holdout is not None:
            # Every holdout row, unsampled: the reference is then the version's own score.
            hold = _holdout(holdout, contract, target, pred)
        performance, perf = _performance(contract, cur, hold, target, pred, kinds)
        if perf is not None:
            snapshot = _merged(snapshot, perf)
            rows["holdout"] = None if hold is None else len(hold)

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


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.3g}"


def summary_html(
    title: str,
    breach: bool,
    verdicts: Sequence[str],
    summary: Drift,
    cfg: Monitor,
    links: Mapping[str, str],
    holdout: str = "",
) -> str:
    """The verdict above the Evidently report, readable without scrolling.

    ``title`` names the partition and model, ``verdicts`` are each rule's line (e.g.
    ``6 of 14 features drifted (43%) >= 30%: breach``), ``links`` the pages to go to
    (relative or absolute), ``holdout`` what the performance reference is. Plain HTML and
    inline CSS: the page has no stylesheet of its own before Evidently's script runs.
    """
    colour = "#b00020" if breach else "#1b5e20"
    rows, cols = summary["rows"], summary["columns"]
    shown, ref = (min(rows[side], rows["max_rows"]) for side in ("current", "reference"))
    how = "all" if shown == rows["current"] else "a seeded sample"
    lines = [
        f"<b>Rows:</b> {shown:,} of {rows['current']:,} current rows compared ({how}); "
        f"reference: {ref:,} of the model's training rows"
    ]
    kinds = []
    for kind in ("numerical", "categorical"):
        n = sum(1 for c in cols.values() if c["kind"] == kind)
        method, threshold = getattr(cfg, f"{kind}_method"), getattr(cfg, f"{kind}_threshold")
        kinds.append(f"{kind} ({n}) {escape(method)}, threshold {threshold:g}")
    lines.append(f"<b>Drift test:</b> {'; '.join(kinds)} (params.yaml monitor)")
    drifted = [f"{escape(n)} {_fmt(c.get('value'))}" for n, c in cols.items() if c["drifted"]]
    lines.append(f"<b>Drifted:</b> {', '.join(drifted) or 'none'}")
    target, perf = summary["target_drift"], summary["performance"]
    if target is not None:
        state = "drifted" if target["drifted"] else "did not drift"
        lines.append(
            f"<b>Target</b> {escape(str(target['column']))} {state} "
            f"({escape(target['method'])} {_fmt(target['value'])})"
        )
    if perf:
        values = ", ".join(
            f"{escape(m)} {_fmt(v['current'])} (holdout {_fmt(v['reference'])})"
            for m, v in perf.items()
        )
        against = (
            f"the {rows['holdout']:,} holdout rows of {escape(holdout)} the version was "
            "evaluated on"
            if rows.get("holdout")
            else "none (no holdout)"
        )
        lines.append(f"<b>Performance:</b> {values}; reference: {against}")
    elif target is not None:
        lines.append("<b>Performance:</b> measured once every outcome of the rows is known")
    nav = " &middot; ".join(
        f'<a href="{escape(href, quote=True)}" title="{escape(href, quote=True)}">'
        f"{escape(name)}</a>"
        for name, href in links.items()
    )
    items = "".join(f'<li style="margin:2px 0">{escape(v)}</li>' for v in verdicts)
    return (
        '<section id="drift-summary" style="font:15px/1.4 sans-serif;margin:12px 24px;'
        f'padding:10px 16px;border:2px solid {colour};border-radius:6px;color:#222">'
        f'<h1 style="font-size:22px;margin:0 0 6px">{escape(title)}: '
        f'<span style="color:{colour}">{"BREACH" if breach else "no breach"}</span></h1>'
        '<ul class="verdict" style="font-size:17px;font-weight:bold;margin:4px 0 8px;'
        f'padding-left:20px">{items}</ul>'
        + "".join(f'<div style="margin:2px 0">{line}</div>' for line in lines)
        + (f'<nav style="margin-top:6px">{nav}</nav>' if nav else "")
        + "</section>"
    )


def share_library(page: str, html_path: Path, shared_dir: Path) -> str:
    """``page`` loading Evidently's script from one copy in ``shared_dir``, not inline.

    The script is about 3.5 MB of every report; the copy, named by Evidently's version so
    an upgrade leaves older reports working, is written atomically when missing or
    different, and referenced relatively from ``html_path``'s folder. A page without the
    inline script (another Evidently layout) is returned unchanged, whole.
    """
    import evidently
    from evidently.legacy.utils.dashboard import STATIC_PATH

    source = Path(STATIC_PATH) / "index.js"
    code = source.read_text(encoding="utf-8")
    inline = f"<script>{code}</script>"
    if inline not in page:
        return page
    target = shared_dir / f"evidently-{evidently.__version__}.js"
    data = code.encode("utf-8")
    if not target.is_file() or target.read_bytes() != data:
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(data)
    href = Path(os.path.relpath(target, html_path.parent)).as_posix()
    return page.replace(inline, f'<script src="{escape(href, quote=True)}"></script>', 1)
