"""train: fit every candidate from config, log each to MLflow, register the best.

The training set comes from Feast (point-in-time correct, one row per label row). The
most recent partitions are held out; candidates are compared on the gate metric there.
Each candidate becomes an MLflow run with params, holdout metrics, signature, input
example, plots and the model in a format that loads without running code (XGBoost's
own format, scikit-learn through skops). The best is registered as a new version, tagged
with the fingerprint of what it was trained from (``runs.training_fingerprint``); a rerun
with the same data, params and code gives that version back instead of registering another.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from mlops import faults, features, io, models, observe, partitions, plots, provenance, runs, tags
from mlops.config import Candidate, Params, Settings
from mlops.describe import refresh, write_model
from mlops.thresholds import Choice, describe_threshold, holdout_metrics, logged_params
from mlops.training_data import training_set

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops.registry import Registry

log = logging.getLogger(__name__)
REFERENCE_ROWS = 50_000


@dataclass
class Fitted:
    """One fitted candidate and its holdout result (a classifier's at its ``threshold``)."""

    candidate: Candidate
    model: Any
    metrics: dict[str, float]
    holdout_pred: np.ndarray
    fit_seconds: float
    threshold: Choice | None = None  # classification: chosen on the holdout


def split(df: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pure: hold out the most recent ``holdout_partitions`` partitions of the window."""
    ids = partitions.ids(df[params.contract.timestamp], params.ingest.partition)
    hold = set(params.train.holdout)
    mask = ids.isin(hold).to_numpy()
    train_df, hold_df = df.loc[~mask], df.loc[mask]
    if train_df.empty or hold_df.empty:
        raise ValueError(
            f"train: split left {len(train_df)} training and {len(hold_df)} holdout rows; "
            f"check train.partitions and train.holdout_partitions"
        )
    return train_df, hold_df


@dataclass
class Fits:
    """What :func:`fit_candidates` produced: the fitted, the failed, the category sets."""

    fitted: list[Fitted]
    failed: list[models.Failed]
    categories: dict[str, list[str]]
    capped: dict[str, models.CategoryCap]


class TrainError(RuntimeError):
    """No candidate could be trained; the message names each one and why."""


def fit_candidates(train_df: pd.DataFrame, hold_df: pd.DataFrame, params: Params) -> Fits:
    """Pure core: fit each candidate on the training rows, score it on the holdout.

    Category columns keep their ``train.max_categories`` most frequent values (the rest
    become ``other``). A candidate that fails is recorded with its reason and the others
    still run: one kind's limit must not hide what the rest learned.
    """
    c = params.contract
    raw = models.matrix(train_df, c)
    cats, capped = models.learn_categories(raw, params.train.max_categories)
    x_tr = models.align_categories(raw, cats)
    x_ho = models.align_categories(models.matrix(hold_df, c), cats)
    y_tr, y_ho = models.target(train_df, c), models.target(hold_df, c)
    if c.task == "classification" and len(set(y_tr.tolist())) < 2:
        raise ValueError(f"train: target {c.target!r} has a single class in the training rows")
    out, failed = [], []
    for cand in params.train.candidates:
        try:
            models.check_input(cand, x_tr)
            est = models.build(cand, c, params.train.seed)
            t0 = time.perf_counter()
            est.fit(models.fit_input(x_tr, cand.kind), y_tr)
            secs = time.perf_counter() - t0
            pred = models.predict(est, models.fit_input(x_ho, cand.kind), c.task)
            metrics, chosen = holdout_metrics(y_ho, pred, c.task, params.train.threshold)
            out.append(Fitted(cand, est, metrics, pred, secs, chosen))
            if chosen is not None and chosen.note:
                log.warning("train: candidate %s: %s", cand.name, chosen.note)
        except Exception as exc:  # noqa: BLE001 - reported per candidate (require_some)
            reason, column = models.explain(exc, models.input_columns(cand.kind, c))
            failed.append(
                models.Failed(cand, reason, column, "".join(traceback.format_exception(exc)))
            )
            log.warning("train: candidate %s failed: %s", cand.name, failed[-1].describe())
    return Fits(out, failed, cats, capped)


def require_some(fits: Fits) -> None:
    """Pure: raise a TrainError naming every failed candidate when none was fitted."""
    if fits.fitted:
        return
    lines = "; ".join(f.describe() for f in fits.failed)
    raise TrainError(
        f"train: every candidate failed ({len(fits.failed)}): {lines}; fix the data or the "
        f"candidate's settings under train.candidates in params.yaml"
    )


def best(fitted: list[Fitted], metric: str) -> Fitted:
    """Pure: the candidate with the best holdout value of ``metric`` (first wins ties)."""
    scored = [f for f in fitted if metric in f.metrics]
    if not scored:
        raise ValueError(f"train: no candidate has a holdout {metric!r} (one class only?)")
    top = scored[0]
    for f in scored[1:]:
        if models.better(f.metrics[metric], top.metrics[metric], metric):
            top = f
    return top


# --------------------------------------------------------------------------- logging
def log_candidate(
    f: Fitted,
    params: Params,
    exp_id: str,
    x_ho: pd.DataFrame,
    cats: dict[str, list[str]],
    lineage: dict[str, str],
    artifacts: Path,
    capped: dict[str, models.CategoryCap] | None = None,
) -> tuple[str, str]:
    """Log one candidate as an MLflow run; return (run_id, model_uri).

    The run gets the files in ``artifacts`` (see :func:`mlops.plots.evaluation_artifacts`) and
    ``features.json``: the feature order, the category sets (which scoring applies,
    ``other`` included) and the capped columns.
    """
    import mlflow
    from mlflow.models import infer_signature

    c = params.contract
    example = models.fit_input(x_ho.head(5), f.candidate.kind)
    sig = infer_signature(models.fit_input(x_ho.head(5), "sklearn"), f.holdout_pred[:5])
    run_tags = {tags.STAGE: "train", tags.CANDIDATE: f.candidate.name, tags.KIND: f.candidate.kind}
    # Tagged as it starts: a run killed at any point is still found as a train run.
    with runs.start(exp_id, f.candidate.name, {**run_tags, **lineage}) as run:
        logged = run_params(f.candidate, params)
        mlflow.log_params(logged)
        mlflow.log_metrics(
            {**{f"holdout_{k}": v for k, v in f.metrics.items()}, "fit_seconds": f.fit_seconds}
        )
        features = {
            "features": c.feature_names,
            "categories": cats,
            "capped_categories": capped or {},
            "task": c.task,
            "target": c.target,
        }
        mlflow.log_dict(features, "features.json")
        mlflow.log_artifacts(str(artifacts))
        # The model exists (PENDING) before its upload: a kill during the upload leaves it
        # PENDING under this run, and the next train marks it FAILED.
        pending = mlflow.initialize_logged_model(
            name="model",
            source_run_id=run.info.run_id,
            params={k: str(v) for k, v in logged.items()},
        )
        faults.point("train.model_pending", f.candidate.name)
        common = {
            "name": "model",
            "model_id": pending.model_id,
            "pip_requirements": models.requirements(f.candidate.kind),
            "signature": sig,
            "input_example": example,
        }
        if f.candidate.kind == "xgboost":
            # MLflow's serving check goes through JSON, which cannot carry the category
            # dtype XGBoost needs, and only warns; the native flavour used here keeps it.
            quiet = logging.getLogger("mlflow.models.model")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                info = mlflow.xgboost.log_model(f.model, model_format="ubj", **common)
            finally:
                quiet.setLevel(level)
        else:
            info = mlflow.sklearn.log_model(
                f.model,
                serialization_format="skops",
                skops_trusted_types=models.SKOPS_TRUSTED,
                **common,
            )
        return run.info.run_id, info.model_uri


def run_params(cand: Candidate, params: Params) -> dict[str, Any]:
    """A candidate run's params: kind, hyper-parameters, windows, the threshold's rule."""
    hold = params.train.holdout
    return {
        "kind": cand.kind,
        **cand.params,
        "train_partitions": ",".join(params.train.partitions),
        "holdout_partitions": ",".join(hold),
        "max_categories": params.train.max_categories,
        **logged_params(params.train.threshold, params.contract.task),
    }


def log_failure(
    f: models.Failed, params: Params, reg: Registry, exp_id: str, run_tags: dict[str, str]
) -> str:
    """Record a failed candidate as a FAILED MLflow run whose note says why; its id."""
    from mlflow.entities import Param
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    c = reg.client
    run = runs.create(
        c,
        exp_id,
        f.candidate.name,
        {
            tags.STAGE: "train",
            tags.CANDIDATE: f.candidate.name,
            tags.KIND: f.candidate.kind,
            **run_tags,
            MLFLOW_RUN_NOTE: io.redact(f"Failed: {f.describe()}"),
        },
    )
    rid = run.info.run_id
    c.log_batch(
        rid,
        params=[Param(k, str(v)) for k, v in run_params(f.candidate, params).items()],
    )
    c.log_text(rid, io.redact(f.detail or f.reason), "error.txt")
    c.set_terminated(rid, "FAILED")
    return rid


def lineage(params: Params, st: Settings) -> dict[str, str]:
    """The lineage tags of a training run: partitions, their DVC hashes, features, code."""
    from mlops.registry import git_revision

    manifest = provenance.manifest(st)
    hashes = {p: provenance.current(st, p, manifest) or "unknown" for p in params.train.partitions}
    return {
        tags.DATA_PARTITIONS: ",".join(params.train.partitions),
        tags.DATA_MD5: json.dumps(hashes, sort_keys=True),
        tags.FEATURE_SERVICE: features.service_name(params),
        tags.CODE_REVISION: git_revision(st.root),
    }


class Trained(TypedDict):
    """What ``train`` registered (also ``state/train.json``)."""

    model_name: str
    version: str
    run_id: str
    candidate: str
    metric: str
    holdout: dict[str, dict[str, float]]
    rows: dict[str, int]
    failed: dict[str, str]
    capped_categories: dict[str, models.CategoryCap]
    threshold: float | None


SUMMARY = "train.json"


def run(params: Params, st: Settings) -> Trained:
    """Fit, log and register; write ``state/train.json`` naming the version.

    One training of a model at a time: a second run while one is going is refused. The
    same data, params and code give the version they gave before (whatever the gate made
    of it, rejected included), so a retried task never registers two versions from them.
    """
    with io.exclusive(st.state_dir / "locks", "train", [params.model_name]):
        return _run(params, st)


def _again(params: Params, st: Settings, reg: Registry, fp: str, t0: float) -> Trained | None:
    """The version trained before from the same inputs, written to state as then; or None."""
    found = runs.trained_before(reg, params.model_name, fp, SUMMARY)
    if found is None:
        return None
    mv, summary = found
    result = cast(Trained, {**summary, "version": str(mv.version)})
    _describe(params, st, reg, str(mv.version))  # in case a kill came before it did
    io.write_json(st.state_dir / "train.json", result)
    gate = mv.tags.get(tags.GATE, "not run yet")
    held = f", aliases {', '.join(mv.aliases)}" if mv.aliases else ", no alias"
    print(
        f"train: {params.model_name} v{mv.version} was trained from the same data, params "
        f"and code (fingerprint {fp[:12]}; gate {gate}{held}); nothing retrained, "
        f"state/train.json names it, in {time.perf_counter() - t0:.1f}s"
    )
    return result


def _describe(params: Params, st: Settings, reg: Registry, version: str) -> None:
    """The registry's descriptions of the model and of this version of it."""
    write_model(reg, params, features.service_name(params), st.reports_dir / "cards")
    refresh(reg, params.model_name, version)


def _run(params: Params, st: Settings) -> Trained:
    from mlops.registry import connect

    t0 = time.perf_counter()
    reg = connect(st)
    exp_id = reg.retry(lambda: reg.experiment_id(params.model_name), "create experiment")
    runs.close_interrupted(reg, exp_id, "train")  # the lock: no other train of it is live
    run_tags = lineage(params, st)
    fp = runs.training_fingerprint(params, st, json.loads(run_tags[tags.DATA_MD5]))
    again = None if fp is None else _again(params, st, reg, fp, t0)
    if again is not None:
        return again
    data = training_set(params, st, params.train.partitions)
    df = data.frame
    train_df, hold_df = split(df, params)
    fits = fit_candidates(train_df, hold_df, params)
    caps = models.describe_caps(fits.capped, params.train.max_categories)
    for line in caps:
        log.warning("train: %s", line)
    for bad in fits.failed:
        reg.retry(
            functools.partial(log_failure, bad, params, reg, exp_id, run_tags),
            f"record failed candidate {bad.candidate.name}",
        )
    require_some(fits)
    fitted, cats = fits.fitted, fits.categories
    metric = params.gate_metric
    top = best(fitted, metric)

    c = params.contract
    x_ho = models.align_categories(models.matrix(hold_df, c), cats)
    y_ho = models.target(hold_df, c)
    n_ref = min(len(train_df), REFERENCE_ROWS)
    reference = train_df.sample(n=n_ref, random_state=params.train.seed).sort_index()
    logged = {}
    # XGBoost's TreeSHAP (seconds, and without the GIL) runs on the other core while
    # the candidates before it are plotted and logged; XGBoost's predictions are thread-safe.
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(1, "shap") as pool:
        native = {
            f.candidate.name: pool.submit(plots.contributions, f.model, f.candidate.kind, x_ho, c)
            for f in fitted
            if f.candidate.kind == "xgboost"
        }
        for f in fitted:
            where, shap = Path(tmp) / f.candidate.name, native.get(f.candidate.name)
            out = plots.evaluation_artifacts(f, params, x_ho, y_ho, reference, cats, where, shap)
            logged[f.candidate.name] = reg.retry(
                functools.partial(
                    log_candidate, f, params, exp_id, x_ho, cats, run_tags, out, fits.capped
                ),
                f"log candidate {f.candidate.name}",
            )
    run_id, model_uri = logged[top.candidate.name]
    result = Trained(
        model_name=params.model_name,
        version="",
        run_id=run_id,
        candidate=top.candidate.name,
        metric=metric,
        holdout={f.candidate.name: f.metrics for f in fitted},
        rows={"train": len(train_df), "holdout": len(hold_df), "unlabelled": data.left_out},
        failed={f.candidate.name: f.describe() for f in fits.failed},
        capped_categories=fits.capped,
        threshold=None if top.threshold is None else top.threshold.threshold,
    )
    summary = {k: v for k, v in result.items() if k != "version"}

    def select() -> None:
        reg.client.set_tag(run_id, tags.SELECTED, "true")
        reg.client.log_dict(run_id, summary, SUMMARY)  # what a rerun on the same inputs returns

    reg.retry(select, "tag the selected run")
    version_tags = {
        tags.CANDIDATE: top.candidate.name,
        tags.KIND: top.candidate.kind,
        tags.RUN_ID: run_id,
        tags.holdout(metric): f"{top.metrics[metric]:.6f}",
        **run_tags,
        **({tags.FINGERPRINT: fp} if fp else {}),
        **({} if top.threshold is None else {tags.THRESHOLD: repr(top.threshold.threshold)}),
    }
    # Tags go in with the version (one request, one transaction): a version is never
    # seen without its lineage or fingerprint, even if this process dies right after.
    mv = reg.register(model_uri, params.model_name, version_tags)
    faults.point("train.after_register")
    _describe(params, st, reg, str(mv.version))
    result["version"] = str(mv.version)
    io.write_json(st.state_dir / "train.json", result)
    scores = ", ".join(
        f"{f.candidate.name} {f.metrics.get(metric, float('nan')):.4f}" for f in fitted
    )
    failed = "".join(f"; FAILED {f.describe()}" for f in fits.failed)
    capped = "; categories capped: " + ", ".join(
        f"{n} {cap['cardinality']}->{cap['kept']}+{models.OTHER}" for n, cap in fits.capped.items()
    )
    at = describe_threshold(top.threshold, top.metrics, params.train.threshold.rule)
    observe.rows(len(train_df) + len(hold_df), None)
    print(
        f"train: {len(train_df):,} rows, holdout {len(hold_df):,}; {metric}: {scores}"
        f"{failed}{capped if fits.capped else ''}; "
        f"registered {params.model_name} v{mv.version} ({top.candidate.name}{at}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return result
