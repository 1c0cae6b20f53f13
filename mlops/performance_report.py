"""The realised-performance report for people (Evidently) and its MLflow record.

:func:`html` builds Evidently's classification or regression preset on a seeded sample of
the labelled predictions (:func:`report_rows`): the preset re-profiles every row it is
given, and the numbers that decide are computed on all rows by ``mlops.performance``.
:func:`log` records the summary as the ``label`` run of the partition and version, and
:func:`history` reads those runs back for the model card.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from mlops import io, outcomes, partitions, runs, tags, timeline
from mlops.contract import Contract

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import pandas as pd

    from mlops.config import Params, Settings
    from mlops.registry import Registry

PREDICTION = "prediction"
LABEL = "predicted_label"
STAGE = "label"
"""The MLflow run stage that records a partition's realised performance."""
FILE = "performance"
"""``<performance_dir>/<partition>/performance.html`` and ``.json``; the run's artifact folder."""
SAMPLE_SEED = 42
REGRESSION_REPORT_ROWS = 20_000
logger = logging.getLogger(__name__)


class Realised(TypedDict):
    """A labelled partition's realised performance and breach decision (``performance.json``)."""

    partition: str
    model_name: str
    model_version: str
    task: str
    metric: str
    value: float | None
    holdout: float | None
    drop: float | None
    threshold: float | None
    breach: bool
    kind: str
    reasons: list[str]
    notes: list[str]
    overall: dict[str, Any]
    slices: dict[str, list[dict[str, Any]]]
    min_slice_rows: int
    counts: dict[str, Any]
    rows: dict[str, Any]
    html_path: str | None
    json_path: str
    run_id: NotRequired[str | None]
    links: NotRequired[dict[str, str]]


METRIC_PREFIX = "realised_"
LOGGED = (
    "rows",
    "positive_rate",
    "predicted_positive_rate",
    "mean_prediction",
    "roc_auc",
    "average_precision",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "brier",
    "log_loss",
    "mean_target",
    "rmse",
    "mae",
    "r2",
)


def paths(st: Settings, partition: str) -> tuple[Path, Path]:
    """The HTML report and JSON summary of ``partition``'s realised performance."""
    out = st.performance_dir / partitions.check(partition)
    return out / f"{FILE}.html", out / f"{FILE}.json"


def _float(text: str | None) -> float | None:
    try:
        x = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def version_scores(mv: Any, metric: str, task: str) -> tuple[float | None, float | None]:
    """A version's decision threshold (classification) and holdout ``metric``, from its tags."""
    from mlops.registry import version_threshold

    vt = dict(mv.tags)
    threshold = None
    if task == "classification":
        threshold = version_threshold(vt, str(mv.name), str(mv.version))
    return threshold, _float(vt.get(tags.holdout(metric)))


def line(result: Mapping[str, Any], seconds: float) -> str:
    """The one line ``performance.run`` prints: value, holdout, change, decision, report."""
    value, holdout = result["value"], result["holdout"]
    shown = "n/a" if value is None else f"{value:.3f}"
    vs = ""
    if holdout is not None:
        vs = f" (holdout {holdout:.3f}{'' if value is None else f', {value - holdout:+.3f}'})"
    return (
        f"performance: {result['partition']} {result['metric']} {shown}{vs} -> "
        f"{'BREACH' if result['breach'] else 'ok'} "
        f"(report: {result['html_path'] or result['json_path']}) in {seconds:.1f}s"
    )


def report_rows(task: str, rows: int, max_rows: int) -> int:
    """How many rows the report is built on: at most ``max_rows``, fewer for regression.

    Evidently's regression metrics validate the list of distinct target values once per
    metric, which on a continuous target costs seconds per 100,000 rows.
    """
    cap = max_rows if task == "classification" else min(max_rows, REGRESSION_REPORT_ROWS)
    return min(rows, cap)


def sample(frame: pd.DataFrame, n: int, seed: int = SAMPLE_SEED) -> pd.DataFrame:
    """At most ``n`` rows of ``frame``, seeded, in their original order."""
    if len(frame) <= n:
        return frame
    return frame.sample(n=n, random_state=seed).sort_index()


def _cut(frame: pd.DataFrame, threshold: float | None) -> float | None:
    """The threshold the labels were taken at: the version's, else the lowest positive score.

    Evidently takes labels from the probabilities at ``probas_threshold`` (a score at or
    above it is positive), whatever label column it is given.
    """
    if threshold is not None or LABEL not in frame.columns:
        return threshold
    positive = frame.loc[frame[LABEL].astype(bool), PREDICTION]
    return float(positive.min()) if len(positive) else None


def html(frame: pd.DataFrame, contract: Contract, threshold: float | None, max_rows: int) -> str:
    """:func:`snapshot` as a self-contained HTML page."""
    return str(snapshot(frame, contract, threshold, max_rows).get_html_str(as_iframe=False))


def snapshot(
    frame: pd.DataFrame, contract: Contract, threshold: float | None, max_rows: int
) -> Any:
    """Evidently's classification or regression preset of labelled predictions (its snapshot).

    Built on a seeded sample of :func:`report_rows` rows, with an explicit data definition and
    no Evidently tests: ``mlops.performance.is_breach`` decides, and a second verdict in
    the report would confuse.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset
    from sklearn.exceptions import UndefinedMetricWarning

    target = contract.target
    keep = [target, PREDICTION, *([LABEL] if LABEL in frame.columns else [])]
    cur = sample(frame[keep], report_rows(contract.task, len(frame), max_rows))
    empty: dict[str, list[str]] = {
        "text_columns": [],
        "datetime_columns": [],
        "list_columns": [],
        "unknown_columns": [],
    }
    if contract.task == "regression":
        cur = cur[[target, PREDICTION]].astype("float64")
        definition = DataDefinition(
            numerical_columns=[target, PREDICTION],
            categorical_columns=[],
            regression=[Regression(target=target, prediction=PREDICTION)],
            **empty,
        )
        preset: Any = RegressionPreset()
        one_class = False
    else:
        cut = _cut(cur, threshold)
        cur = cur.assign(**{target: cur[target].astype("int64")})
        if LABEL in cur.columns:
            cur = cur.assign(**{LABEL: cur[LABEL].astype("int64")})
        labels = LABEL if LABEL in cur.columns else None
        both = cur[target].nunique() > 1
        one_class = not both
        # With one class only Evidently's ROC AUC fails: the report then reads the labels.
        task = BinaryClassification(
            target=target,
            prediction_probas=PREDICTION if both or labels is None else None,
            prediction_labels=labels,
            pos_label=1,
        )
        definition = DataDefinition(
            numerical_columns=[PREDICTION],
            categorical_columns=[target, *([labels] if labels else [])],
            classification=[task],
            **empty,
        )
        preset = ClassificationPreset(probas_threshold=cut if task.prediction_probas else None)
    report = Report([preset], include_tests=False)
    with warnings.catch_warnings():
        if one_class:
            # sklearn and numpy warn of each undefined ratio; the summary's notes say why.
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
        return report.run(Dataset.from_pandas(cur, data_definition=definition), None)


def logged_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The run metrics of a summary: ``realised_<name>`` for each number of the overall."""
    overall = result["overall"]
    out = {f"{METRIC_PREFIX}{k}": float(overall[k]) for k in LOGGED if overall.get(k) is not None}
    for k, v in (overall.get("confusion") or {}).items():
        out[f"{METRIC_PREFIX}{k}"] = float(v)
    ece = (overall.get("calibration") or {}).get("ece")
    if ece is not None:
        out[f"{METRIC_PREFIX}ece"] = float(ece)
    if result["drop"] is not None:
        out[f"{METRIC_PREFIX}drop"] = float(result["drop"])
    return out


def _dataset(reg: Registry, result: Mapping[str, Any]) -> Any:
    """The partition's labels as an MLflow dataset (name: the partition), or None."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    path = outcomes.path(reg.st, result["partition"])
    if not path.is_file():
        return None
    with warnings.catch_warnings():
        # MLflow registers the local artifact source twice and warns that it picked one.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(path))
    digest = io.md5(path)[:8]
    return MetaDataset(source, name=result["partition"], digest=digest)  # type: ignore[abstract]


def model_id_of(mv: Any) -> str | None:
    """The MLflow model (``m-...``) a version was registered from, or None.

    The registry leaves ``model_id`` empty on a version registered from ``models:/m-...``;
    its source still names the model.
    """
    found = getattr(mv, "model_id", None)
    source = str(getattr(mv, "source", "") or "")
    if not found and source.startswith("models:/m-"):
        found = source[len("models:/") :].split("/")[0]
    return found or None


def log(reg: Registry, params: Params, result: Mapping[str, Any], mv: Any) -> str:
    """Log ``result`` as the ``label`` run of its partition and version; tag the version.

    The run (tags: stage ``label``, partition, model version) is found again on a rerun,
    which replaces its results. Its metrics are ``realised_<name>``, also logged on the
    version's MLflow model for the partition's dataset; its artifacts the report and the
    summary. The version gets ``mlops.realised.<partition>`` = the realised gate metric.
    Call it inside the label stage's lock: a run an interrupted one left open is closed.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    partition, version = result["partition"], result["model_version"]
    exp = reg.experiment_id(params.model_name)
    runs.close_interrupted(reg, exp, STAGE, {tags.PARTITION: partition})
    key = {tags.STAGE: STAGE, tags.PARTITION: partition, tags.MODEL_VERSION: version}
    again = runs.find_run(reg, exp, STAGE, key)
    # Tagged as it starts: a run killed at any point is still found as this partition's.
    first = {"experiment_id": exp, "run_name": f"label {partition}", "tags": key}
    values = logged_metrics(result)
    model_id = model_id_of(mv)
    with mlflow.start_run(**({"run_id": again} if again else first)) as run:
        mlflow.set_tags(
            {**key, tags.BREACH: str(result["breach"]), tags.BREACH_KIND: result["kind"]}
        )
        if values and model_id:
            try:
                mlflow.log_metrics(values, model_id=model_id, dataset=_dataset(reg, result))
                values = {}
            except MlflowException as exc:  # the run's metrics are the record; say why not
                logger.warning(
                    "performance: realised metrics not logged on model %s of %s v%s: %s",
                    model_id,
                    params.model_name,
                    version,
                    io.redact(str(exc)),
                )
        if values:
            mlflow.log_metrics(values)
        for path in (result["html_path"], result["json_path"]):
            if path:
                mlflow.log_artifact(path, artifact_path=f"{FILE}/{partition}")
        run_id = str(run.info.run_id)
    c, name, tag = reg.client, params.model_name, tags.realised(partition)
    what = f"record the realised {result['metric']} of {partition} on {name} v{version}"
    if result["value"] is not None:
        value = f"{result['value']:.6f}"
        reg.retry(lambda: c.set_model_version_tag(name, version, tag, value), what)
    elif tag in mv.tags:
        reg.retry(lambda: c.delete_model_version_tag(name, version, tag), what)
    return run_id


def history(reg: Registry, model: str, version: str, limit: int = 24) -> list[dict[str, Any]]:
    """The realised performance of ``model`` v``version``, oldest labelled partition first.

    Read from MLflow: the version's ``label`` runs (the latest ``limit`` partitions) and
    the summary each logged (``performance/<partition>/performance.json``): the gate
    metric, its holdout score and change, the overall metrics, the slices and the
    decision. A run whose summary cannot be read gives its ``realised_*`` metrics alone.
    """
    import mlflow

    c = reg.client
    exp = c.get_experiment_by_name(model)
    if exp is None:
        return []
    where = " AND ".join(
        [
            "attributes.status = 'FINISHED'",
            tags.search(tags.STAGE, STAGE),
            tags.search(tags.MODEL_VERSION, str(version)),
        ]
    )
    found = c.search_runs(
        [exp.experiment_id], where, order_by=["attributes.start_time DESC"], max_results=limit
    )
    out = []
    for r in found:
        pid = r.data.tags.get(tags.PARTITION, "")
        if not partitions.is_id(pid):
            continue
        try:
            summary = dict(
                mlflow.artifacts.load_dict(f"runs:/{r.info.run_id}/{FILE}/{pid}/{FILE}.json")
            )
        except Exception:  # noqa: BLE001 - the run's metrics still say how it did
            n = len(METRIC_PREFIX)
            overall = {k[n:]: v for k, v in r.data.metrics.items() if k.startswith(METRIC_PREFIX)}
            summary = {"overall": overall, "breach": r.data.tags.get(tags.BREACH) == "True"}
        out.append({"partition": pid, "run_id": r.info.run_id, **summary})
    return sorted(out, key=lambda s: partitions.sort_key(s["partition"]))


def summary_html(result: Mapping[str, Any]) -> str:
    """The verdict above the Evidently report: realised against holdout, reasons, slices."""
    from html import escape

    def num(x: Any) -> str:
        return "-" if x is None else f"{float(x):.4f}"

    metric, overall = str(result["metric"]), result["overall"]
    verdict = "BREACH" if result["breach"] else "no breach"
    colour = "#b00020" if result["breach"] else "#1b5e20"
    change = "-" if result["drop"] is None else f"{-float(result['drop']):+.4f}"
    counts = result["counts"]
    rows = [
        f"<tr><td><b>{escape(metric)}</b> (gate)</td><td>{num(result['value'])}</td>"
        f"<td>{num(result['holdout'])}</td><td>{change}</td></tr>"
    ]
    for name in ("average_precision", "precision", "recall", "f1", "brier", "rmse", "mae", "r2"):
        if name != metric and overall.get(name) is not None:
            rows.append(f"<tr><td>{name}</td><td>{num(overall[name])}</td><td></td><td></td></tr>")
    slices = []
    for column, entries in result["slices"].items():
        cells = "".join(
            f"<tr><td>{escape(str(e['value']))}</td><td>{e['rows']:,}</td>"
            f"<td>{num((e.get('metrics') or {}).get(metric))}</td></tr>"
            for e in entries[:12]
        )
        slices.append(
            f"<table><tr><th>{escape(column)}</th><th>rows</th><th>{escape(metric)}</th></tr>"
            f"{cells}</table>"
        )
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in result["reasons"] + result["notes"])
    threshold = result.get("threshold")
    at = "" if threshold is None else f", labels at the version's threshold {threshold:.4f}"
    return (
        '<section style="font-family:sans-serif;margin:16px 32px;padding:12px 16px;'
        f'border:2px solid {colour};border-radius:6px">'
        f'<h2 style="margin:0 0 8px">Realised performance of {escape(result["model_name"])} '
        f"v{escape(result['model_version'])} on {escape(result['partition'])}: "
        f'<span style="color:{colour}">{verdict}</span></h2>'
        f"<p>{counts.get('labelled', 0):,} of {counts.get('predictions', 0):,} predictions "
        f"labelled{at}. The holdout is the version's score when it was trained.</p>"
        "<table><tr><th>metric</th><th>realised</th><th>holdout</th><th>change</th></tr>"
        f"{''.join(rows)}</table>"
        f"{'<ul>' + reasons + '</ul>' if reasons else ''}"
        f'<div style="display:flex;gap:32px;align-items:flex-start">{"".join(slices)}</div>'
        "</section>"
    )


def with_summary(page: str, result: Mapping[str, Any]) -> str:
    """``page`` (an Evidently report) with :func:`summary_html` at the top of its body."""
    return timeline.at_top(page, summary_html(result))
