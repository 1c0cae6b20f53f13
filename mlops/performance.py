"""performance: how a model version really did on a labelled partition, and whether it breached.

Once outcomes arrive (``label``), a partition's predictions are scored against them: the
gate metric and its companions overall (classification: ROC AUC, PR AUC, precision,
recall, F1 and accuracy at the version's threshold, Brier score, log loss, calibration,
confusion matrix; regression: RMSE, MAE, R², residuals) and by the slices the model card
uses, then compared with the version's holdout score. :func:`is_breach` decides, purely.

The metrics come from one sort of the predictions, slices included, in flat memory
(``mlops.performance_metrics``), so they cost less than sklearn's at any size; Evidently's
preset report, for people, is built on a seeded sample (``mlops.performance_report``).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from mlops import alerts, card, io, models, observe, partitions, performance_report, tags, timeline
from mlops import performance_metrics as kernels
from mlops.config import Params, Settings
from mlops.contract import Contract
from mlops.performance_report import LABEL, PREDICTION, Realised

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

KIND = "performance"
EPS = 1e-12  # a drop equal to max_drop up to float rounding is not above it


# --------------------------------------------------------------------------- pure core
def _number(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _arrays(
    frame: pd.DataFrame, contract: Contract, threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """Target, prediction and (classification) predicted label, checked; notes on them."""
    import numpy as np

    target = contract.target
    for col in (target, PREDICTION):
        if col not in frame.columns:
            raise KeyError(
                f"performance: the labelled predictions lack column {col!r} "
                f"(columns: {', '.join(map(str, frame.columns))})"
            )
    notes: list[str] = []
    pred = frame[PREDICTION].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(pred).any():
        raise ValueError(
            f"performance: {int(np.isnan(pred).sum())} labelled rows have no {PREDICTION!r}; "
            "run score on the partition again"
        )
    if contract.task == "regression":
        y = frame[target].to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(y).any():
            raise ValueError(f"performance: {int(np.isnan(y).sum())} rows have no {target!r}")
        return y, pred, None, notes
    raw = frame[target]
    # An integer or bool target is checked as it is, without a float copy of it.
    values = raw.to_numpy() if raw.dtype.kind in "biu" and not raw.hasnans else None
    if values is None:
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = (values != 0) & (values != 1)
    if bad.any():
        shown = sorted({str(v) for v in raw[bad].head(5)})
        raise ValueError(
            f"performance: target {target!r} must be 0 or 1 in every labelled row; "
            f"{int(bad.sum())} rows hold {', '.join(shown)}"
        )
    y = values.astype(np.int8, copy=False)
    if LABEL in frame.columns:
        col = frame[LABEL]
        label = (
            col.to_numpy() != 0
            if col.dtype.kind in "biu"
            else col.to_numpy(dtype=np.float64, na_value=np.nan) >= 0.5
        )
    else:
        cut = 0.5 if threshold is None else threshold
        label = pred >= cut
        notes.append(
            f"no {LABEL!r} column: labels taken at threshold {cut:g}"
            + (" (the version records none)" if threshold is None else "")
        )
    return y, pred, label.view(np.int8), notes


def metrics(frame: pd.DataFrame, contract: Contract, threshold: float | None) -> dict[str, Any]:
    """Pure: the realised metrics of labelled predictions, overall.

    ``frame`` holds the target, ``prediction`` and, for classification, ``predicted_label``
    (labels at the version's threshold, as score wrote them; without it, labels are taken
    at ``threshold``, else 0.5). A metric that cannot be computed (one class only, a
    constant target, no rows) is None, and ``notes`` says why.
    """
    return measure(frame, contract, threshold, [])[0]


def slices(
    frame: pd.DataFrame,
    contract: Contract,
    threshold: float | None,
    columns: list[str] | None = None,
    min_rows: int = card.MIN_SLICE_ROWS,
) -> dict[str, list[dict[str, Any]]]:
    """Pure: the realised metrics per value of each slice column, largest slice first.

    ``columns`` defaults to the card's slice columns (``card.slice_columns``) found in
    ``frame``. Entries have the card's shape (``card.slice_metrics``): value, rows, share,
    mean prediction and metrics; a slice under ``min_rows`` rows gets no metrics, a note.
    """
    return measure(frame, contract, threshold, columns, min_rows)[1]


def measure(
    frame: pd.DataFrame,
    contract: Contract,
    threshold: float | None,
    columns: list[str] | None = None,
    min_rows: int = card.MIN_SLICE_ROWS,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Pure: :func:`metrics` and :func:`slices` together, from one sort of the predictions."""
    import numpy as np

    y, pred, label, notes = _arrays(frame, contract, threshold)
    if columns is None:
        columns = [c for c in card.slice_columns(contract) if c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(
            f"performance: slice column(s) {missing} are not in the labelled predictions "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    if len(y) == 0:
        empty = {"rows": 0, "threshold": threshold, "notes": [*notes, "no labelled rows"]}
        return empty, {col: [] for col in columns}
    if label is None:
        order = np.arange(len(y))
        out, more = kernels.regression(y, pred)
    else:
        # Ties need no order among themselves: the ranking metrics treat them as one.
        order = np.argsort(pred)
        out, more = kernels.binary(y[order], pred[order], label[order])  # sorted copies, then freed
        out.update(calibration=kernels.calibration(y, pred), threshold=threshold)
    out["notes"] = notes + more
    by_slice = {col: _slice(frame[col], y, pred, label, order, min_rows) for col in columns}
    return out, by_slice


def _slice(
    values: pd.Series,
    y: np.ndarray,
    pred: np.ndarray,
    label: np.ndarray | None,
    order: np.ndarray,
    min_rows: int,
) -> list[dict[str, Any]]:
    import numpy as np
    import pandas as pd

    n = len(y)
    codes, uniques = pd.factorize(values, sort=False)
    names = [str(u) for u in uniques]
    if (codes < 0).any():
        names.append(card.MISSING)
        codes = np.where(codes < 0, len(names) - 1, codes)
    sizes = np.bincount(codes, minlength=len(names))
    # Small integer codes sort stably by radix; stable grouping keeps each group sorted
    # by score, as the ranking metrics need.
    small = codes.astype(np.int16) if len(names) < 2**15 else codes
    del codes
    grouped = order[np.argsort(small[order], kind="stable")]
    del small
    ends = np.cumsum(sizes)
    rows = []
    for g, name in enumerate(names):
        k = int(sizes[g])
        idx = grouped[ends[g] - k : ends[g]]
        ps = pred[idx]
        entry: dict[str, Any] = {
            "value": name,
            "rows": k,
            "share": k / n,
            "mean_prediction": float(ps.mean()),
        }
        if k < min_rows:
            entry.update(metrics={}, note=f"fewer than {min_rows} rows")
        else:
            if label is None:
                found, why = kernels.regression(y[idx], ps)
                found.pop("residuals")
            else:
                found, why = kernels.binary(y[idx], ps, label[idx])
                found.pop("confusion")
            entry.update(metrics=found, **({"note": "; ".join(why)} if why else {}))
        rows.append(entry)
    return sorted(rows, key=lambda r: (-r["rows"], r["value"]))


def drop(value: float, holdout: float, metric: str) -> float:
    """Pure: how much worse ``value`` is than ``holdout`` (negative: better), by direction."""
    return holdout - value if models.HIGHER_IS_BETTER[metric] else value - holdout


def is_breach(
    value: float | None, holdout: float | None, metric: str, floor: float, max_drop: float
) -> tuple[bool, list[str]]:
    """Decide whether a realised gate metric is a performance breach.

    A breach when ``value`` is worse than the version's ``holdout`` score by more than
    ``max_drop`` (``monitor.max_performance_drop``), or worse than ``floor``
    (``promote.floor``); "worse" follows the metric's direction. No value (one class
    only) is no breach and no reason; no holdout leaves the floor alone.

    Returns:
        Whether it is a breach, and one human-readable reason per rule that fired.
    """
    if value is None or not math.isfinite(value):
        return False, []
    higher = models.HIGHER_IS_BETTER[metric]
    reasons = []
    if holdout is not None and math.isfinite(holdout):
        worse = drop(value, holdout, metric)
        if worse > max_drop + EPS:
            where = "below" if higher else "above"
            reasons.append(
                f"realised {metric} {value:.3f} is {worse:.3f} {where} the holdout "
                f"{holdout:.3f} (max_performance_drop {max_drop:g})"
            )
    if (value < floor) if higher else (value > floor):
        reasons.append(
            f"realised {metric} {value:.3f} is {'below' if higher else 'above'} "
            f"the floor {floor:g} (promote.floor)"
        )
    return bool(reasons), reasons


# --------------------------------------------------------------------------- I/O
def run(
    params: Params,
    st: Settings,
    partition: str,
    scored: pd.DataFrame,
    model_version: str,
    counts: dict[str, Any],
) -> Realised:
    """Measure a labelled partition against the version's holdout and decide on a breach.

    ``scored`` holds the labelled predictions: the target, ``prediction``,
    ``predicted_label`` (classification) and the slice columns; ``counts`` what labelling
    found (written as is). Writes ``<performance_dir>/<partition>/performance.html``
    (Evidently's preset, on a sample) and ``performance.json`` (this summary), JSON last;
    logs them and ``realised_<metric>`` to the ``label`` run of the partition and version
    (a rerun replaces its results) and tags the version ``mlops.realised.<partition>``.
    Call it inside the label stage's lock of ``partition``.
    """
    from mlops.registry import connect

    partitions.check(partition)
    t0 = time.perf_counter()
    c, metric = params.contract, params.gate_metric
    reg = connect(st)
    mv = reg.get_version(params.model_name, model_version)
    threshold, holdout = performance_report.version_scores(mv, metric, c.task)

    overall, by_slice = measure(scored, c, threshold)
    value = _number(overall.get(metric))
    breach, reasons = is_breach(
        value, holdout, metric, params.promote.floor, params.monitor.max_performance_drop
    )
    notes = list(overall.pop("notes"))
    if value is None:
        notes.append(f"no realised {metric} on {partition}: no breach decided")
    if holdout is None:
        notes.append(
            f"{params.model_name} v{model_version} has no {tags.holdout(metric)} tag: "
            "compared with promote.floor only"
        )
    html_path, json_path = performance_report.paths(st, partition)
    sample_rows = performance_report.report_rows(c.task, len(scored), params.monitor.max_rows)
    result = Realised(
        partition=partition,
        model_name=params.model_name,
        model_version=str(model_version),
        task=c.task,
        metric=metric,
        value=value,
        holdout=holdout,
        drop=None if value is None or holdout is None else drop(value, holdout, metric),
        threshold=threshold,
        breach=breach,
        kind=KIND,
        reasons=reasons,
        notes=notes,
        overall=overall,
        slices=by_slice,
        min_slice_rows=card.MIN_SLICE_ROWS,
        counts=dict(counts),
        rows={
            "labelled": len(scored),
            "report": sample_rows,
            "sampled": len(scored) > sample_rows,
            "max_rows": params.monitor.max_rows,
        },
        html_path=str(html_path) if len(scored) else None,
        json_path=str(json_path),
    )
    report = page = None
    nav = {"Timeline": timeline.url(params)}
    if len(scored):
        report = performance_report.snapshot(scored, c, threshold, params.monitor.max_rows)
        page = performance_report.with_summary(str(report.get_html_str(as_iframe=False)), result)
        io.write_text(html_path, timeline.with_links(page, nav))
    # The JSON goes last: when it exists, the HTML it describes does too.
    io.write_json(json_path, {k: v for k, v in result.items() if not k.endswith(("_path", "_id"))})
    result["run_id"] = performance_report.log(reg, params, result, mv)
    if report is not None and page is not None:
        links = {"report": html_path.resolve().as_uri()}
        if result["run_id"]:
            links["mlflow_run"] = alerts.run_link(st.tracking_uri, result["run_id"])
            # The run exists only now: the page on disk gains its link (MLflow keeps its copy).
            io.write_text(
                html_path, timeline.with_links(page, {**nav, "MLflow run": links["mlflow_run"]})
            )
        sid = timeline.add(params, st, report, partition, "performance", links, str(model_version))
        result["links"] = {**links, "timeline": timeline.url(params, sid)}
    tags_ = {"partition": partition, "metric": metric, "version": str(model_version)}
    observe.gauge("mlops_realised_metric", value, **tags_)
    observe.gauge("mlops_holdout_metric", holdout, **tags_)
    observe.gauge(
        "mlops_performance_breach", observe.flag(breach), partition, version=model_version
    )
    print(performance_report.line(result, time.perf_counter() - t0))
    if "links" in result:
        print(f"label: {partition} {timeline.links_text(result['links'])}")
    return result
