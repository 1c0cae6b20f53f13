"""monitor: compare a partition with the reference data and decide whether drift is a breach.

The comparison is ``mlops.drift``'s (one Evidently ``ValueDrift`` per column, both sides
sampled to ``monitor.max_rows``); :func:`run_partition` samples the scored rows before
reading their features, so its memory does not grow with the partition, and measures
performance, once every outcome is known, against the holdout the version was evaluated
on. The decision itself, :func:`is_breach`, is a pure function of the summary; the page
opens with it (:func:`verdicts`) and shares Evidently's script with the other reports.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NotRequired

from mlops import (
    alerts,
    faults,
    features,
    io,
    observe,
    outcomes,
    partitions,
    provenance,
    runs,
    tags,
    timeline,
    training_data,
)
from mlops.config import Monitor, Params, Settings
from mlops.drift import PREDICTION, SAMPLE_SEED, Drift, evaluate, share_library, summary_html
from mlops.training_data import known_targets

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops.registry import Registry

PAGE = "drift.html"


class Monitored(Drift):
    """A partition's drift summary, breach decision and report files (``drift.json``)."""

    partition: str
    breach: bool
    reasons: list[str]
    html_path: str
    json_path: str
    model_version: NotRequired[str]
    input_md5: NotRequired[str | None]
    run_id: NotRequired[str]
    links: NotRequired[dict[str, str]]
    holdout_partitions: NotRequired[list[str]]


class Holdout(NamedTuple):
    """The rows a version was evaluated on, with its predictions: the performance reference."""

    frame: pd.DataFrame
    partitions: list[str]


def _fired(summary: Drift, cfg: Monitor) -> tuple[bool, bool]:
    """Whether the share rule and the prediction rule fire (``is_breach``'s two rules)."""
    n, total = summary["drifted_features"], summary["n_features"]
    share = bool(total) and n / total >= cfg.drift_share
    pred = summary.get("prediction_drift")
    return share, bool(pred and pred["drifted"] and cfg.breach_on_prediction_drift)


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
    by_share, by_prediction = _fired(summary, cfg)
    if by_share:
        names = sorted(c for c, r in summary["columns"].items() if r["drifted"])
        reasons.append(
            f"{n}/{total} features drifted ({share:.0%} >= drift_share {cfg.drift_share:.0%}): "
            + ", ".join(names)
        )
    pred = summary.get("prediction_drift")
    if pred and by_prediction:
        value = "n/a" if pred["value"] is None else f"{pred['value']:.3g}"
        reasons.append(
            f"prediction column {pred['column']!r} drifted "
            f"({pred['method']} {value}, threshold {pred['threshold']:g})"
        )
    return bool(reasons), reasons


def verdicts(summary: Drift, cfg: Monitor) -> list[str]:
    """Pure: one line per breach rule, whether it fired or not, for the top of the report.

    ``6 of 14 features drifted (43%) >= 30%: breach``, ``... (21%) < 30%: no breach``, and
    the prediction's, which says when the policy does not count it.
    """
    by_share, by_prediction = _fired(summary, cfg)
    n, total = summary["drifted_features"], summary["n_features"]
    share = n / total if total else 0.0
    out = [
        f"{n} of {total} features drifted ({share:.0%}) {'>=' if by_share else '<'} "
        f"{cfg.drift_share:.0%}: {'breach' if by_share else 'no breach'}"
    ]
    pred = summary.get("prediction_drift")
    if pred:
        value = "n/a" if pred["value"] is None else f"{pred['value']:.3g}"
        what = f"{pred['method']} {value}, threshold {pred['threshold']:g}"
        if not pred["drifted"]:
            out.append(f"prediction did not drift ({what}): no breach")
        elif by_prediction:
            out.append(f"prediction drifted ({what}): breach")
        else:
            out.append(
                f"prediction drifted ({what}): no breach "
                "(monitor.breach_on_prediction_drift is off)"
            )
    return out


def _observe(partition: str, summary: Drift, breach: bool, described: dict[str, Any]) -> None:
    """The partition's drift metrics: per feature, the share, the prediction, the breach."""
    tags_ = {"version": described.get("model_version"), "source": described.get("source", "batch")}
    for name, col in summary["columns"].items():
        labels = {**tags_, "feature": name}
        observe.gauge(
            "mlops_drift_score", col.get("value"), partition, method=col["method"], **labels
        )
        observe.gauge("mlops_feature_drifted", observe.flag(col["drifted"]), partition, **labels)
    observe.gauge("mlops_drift_share", summary["share"], partition, **tags_)
    observe.gauge("mlops_drifted_features", summary["drifted_features"], partition, **tags_)
    pred = summary["prediction_drift"]
    if pred is not None:
        value = pred.get("value")
        observe.gauge(
            "mlops_prediction_drift_score", value, partition, method=pred["method"], **tags_
        )
        observe.gauge("mlops_prediction_drifted", observe.flag(pred["drifted"]), partition, **tags_)
    observe.gauge("mlops_drift_breach", observe.flag(breach), partition, **tags_)
    observe.rows(summary["rows"]["current"], None, partition)


def run(
    params: Params,
    st: Settings,
    partition: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    current_rows: int | None = None,
    described: dict[str, str | None] | None = None,
    folder: Path | None = None,
    holdout: Holdout | None = None,
) -> Monitored:
    """Report drift of ``current`` (one partition) against ``reference`` and decide on a breach.

    ``current_rows`` is the partition's row count when ``current`` is a sample of it;
    ``described`` what the predictions were made from (``model_version``, ``input_md5``);
    ``holdout`` the performance reference (:func:`holdout`). Writes ``drift.html`` and
    ``drift.json`` (summary, breach, reasons, ``described``) to ``folder`` (default
    ``<reports_dir>/<partition>``) and returns that summary with the two paths added.
    """
    return _report(
        params, st, partition, reference, current, current_rows, described, folder, None, holdout
    )[0]


def previous_report(folder: Path, partition: str) -> Path | None:
    """The report of the latest partition before ``partition`` beside ``folder``, if any."""
    here = partitions.sort_key(partition)
    earlier = [
        p / PAGE
        for p in (folder.parent.iterdir() if folder.parent.is_dir() else [])
        if partitions.is_id(p.name) and partitions.sort_key(p.name) < here and (p / PAGE).is_file()
    ]
    return max(earlier, key=lambda p: partitions.sort_key(p.parent.name), default=None)


def _page(
    params: Params,
    partition: str,
    snapshot: Any,
    result: Monitored,
    out: Path,
    mlflow_run: str | None,
    holdout: Holdout | None,
) -> str:
    """The report's page: the verdict and links (:func:`drift.summary_html`), then Evidently's."""
    links = {}
    before = previous_report(out, partition)
    if before is not None:
        rel = Path(os.path.relpath(before, out)).as_posix()
        links[f"Previous report ({before.parent.name})"] = rel
    links["Timeline"] = timeline.url(params)
    if mlflow_run:
        links["MLflow run"] = mlflow_run
    version = result.get("model_version")
    served = " (served requests)" if result.get("source") == "served" else ""
    title = f"Drift of {params.model_name}{f' v{version}' if version else ''} on {partition}"
    where = "" if holdout is None else ", ".join(holdout.partitions)
    header = summary_html(
        title + served,
        result["breach"],
        verdicts(result, params.monitor),
        result,
        params.monitor,
        links,
        where,
    )
    return timeline.at_top(snapshot.get_html_str(as_iframe=False), header)


def _report(
    params: Params,
    st: Settings,
    partition: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    current_rows: int | None = None,
    described: dict[str, str | None] | None = None,
    folder: Path | None = None,
    mlflow_run: str | None = None,
    holdout: Holdout | None = None,
) -> tuple[Monitored, Any, str]:
    """:func:`run`, with Evidently's snapshot and the page as one file (for MLflow)."""
    partitions.check(partition)  # a malformed id fails before any work
    t0 = time.perf_counter()
    summary, snapshot = evaluate(
        reference,
        current,
        params.contract,
        params.monitor,
        current_rows=current_rows,
        holdout=None if holdout is None else holdout.frame,
    )
    breach, reasons = is_breach(summary, params.monitor)
    _observe(partition, summary, breach, described or {})
    out = folder or st.reports_dir / partition
    result = Monitored(
        **summary,
        partition=partition,
        breach=breach,
        reasons=reasons,
        html_path=str(out / PAGE),
        json_path=str(out / "drift.json"),
        **(described or {}),  # type: ignore[typeddict-item]
    )
    if holdout is not None and summary["rows"]["holdout"]:
        result["holdout_partitions"] = holdout.partitions
    page = _page(params, partition, snapshot, result, out, mlflow_run, holdout)
    html_path = io.write_text(out / PAGE, share_library(page, out / PAGE, st.reports_dir))
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
    return result, snapshot, page


def holdout(params: Params, st: Settings, reg: Registry, name: str, version: str) -> Holdout:
    """The rows ``version`` was evaluated on, each with the version's prediction.

    The partitions are its ``mlops.eval.holdout`` tag (``train.holdout`` before it was
    evaluated), read as ``evaluate`` reads them (rows whose outcome is known), so the
    report's reference performance is the version's holdout score, not its fit to the
    training rows.
    """
    tagged = reg.get_version(name, version).tags.get(tags.EVAL_HOLDOUT)
    parts = tagged.split(",") if tagged else params.train.holdout
    frame = training_data.training_frame(params, st, parts, stage="monitor")
    frame[PREDICTION] = reg.load(name, version).predict(frame, params.contract)
    return Holdout(frame, parts)


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
    rows with their features, labels when present, and predictions. Once every sampled
    outcome is known, performance is measured against the version's holdout
    (:func:`holdout`). Predictions made from an earlier version of the partition are
    refused. The report and summary are logged to MLflow as the ``monitor`` run of the
    partition, model version and input md5 (the HTML whole, with Evidently's script in
    it, so that it opens on its own): a rerun on the same predictions replaces that
    run's results rather than adding a run. One monitor of a partition at a time; a run
    an interrupted one left open is closed.
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
    target = params.contract.target
    labelled = target in current.columns and bool(current[target].notna().all())
    held = holdout(params, st, reg, name, version) if labelled else None

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
    with mlflow.start_run(**({"run_id": again} if again else first)) as active:
        faults.point("monitor.run_started", partition)
        # The run is opened first so that the report can link to it.
        mlflow_run = alerts.run_link(st.tracking_uri, active.info.run_id)
        out, snapshot, page = _report(
            params, st, partition, reference, current, total, described, None, mlflow_run, held
        )
        out["run_id"] = active.info.run_id
        mlflow.set_tags({**key, tags.BREACH: str(out["breach"])})
        mlflow.log_metrics(
            {
                "drift_share": float(out["share"]),
                "drifted_features": float(out["drifted_features"]),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            whole = io.write_text(Path(tmp) / PAGE, page)
            mlflow.log_artifact(str(whole), artifact_path=f"drift/{partition}")
        mlflow.log_artifact(out["json_path"], artifact_path=f"drift/{partition}")
    links = {"report": Path(out["html_path"]).resolve().as_uri(), "mlflow_run": mlflow_run}
    sid = timeline.add(params, st, snapshot, partition, "drift", links, version)
    out["links"] = {**links, "timeline": timeline.url(params, sid)}
    print(f"monitor: {partition} {timeline.links_text(out['links'])}")
    return out
