"""train: fit every candidate from config, log each to MLflow, register the best.

The training set comes from Feast (point-in-time correct, one row per label row). The
most recent partitions are held out; candidates are compared on the gate metric there.
Each candidate becomes an MLflow run with params, holdout metrics, signature, input
example, plots and the model in a format that loads without running code (XGBoost's
own format, scikit-learn through skops). The best is registered as a new version.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from mlops import faults, features, io, models, partitions, tags
from mlops.config import Candidate, Params, Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)
REFERENCE_ROWS = 50_000


@dataclass
class Fitted:
    """One fitted candidate and its holdout result."""

    candidate: Candidate
    model: Any
    metrics: dict[str, float]
    holdout_pred: np.ndarray
    fit_seconds: float


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


def learned_categories(x: pd.DataFrame) -> dict[str, list[str]]:
    """The category set of each category column, as the model learns it."""
    return {
        c: [str(v) for v in x[c].cat.categories] for c in x.columns if str(x[c].dtype) == "category"
    }


def fit_candidates(
    train_df: pd.DataFrame, hold_df: pd.DataFrame, params: Params
) -> tuple[list[Fitted], dict[str, list[str]]]:
    """Pure core: fit each candidate on the training rows, score it on the holdout."""
    c = params.contract
    x_tr = models.matrix(train_df, c)
    cats = learned_categories(x_tr)
    x_ho = models.align_categories(models.matrix(hold_df, c), cats)
    y_tr, y_ho = models.target(train_df, c), models.target(hold_df, c)
    if c.task == "classification" and len(set(y_tr.tolist())) < 2:
        raise ValueError(f"train: target {c.target!r} has a single class in the training rows")
    out = []
    for cand in params.train.candidates:
        est = models.build(cand, c, params.train.seed)
        t0 = time.perf_counter()
        est.fit(models.fit_input(x_tr, cand.kind), y_tr)
        secs = time.perf_counter() - t0
        pred = models.predict(est, models.fit_input(x_ho, cand.kind), c.task)
        out.append(Fitted(cand, est, models.metrics(y_ho, pred, c.task), pred, secs))
    return out, cats


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
def _requirements(kind: str) -> list[str]:
    pkgs = ["mlflow", "scikit-learn", "pandas", "numpy", "scipy"]
    pkgs += ["xgboost"] if kind == "xgboost" else ["skops"]
    return [f"{p}=={importlib.metadata.version(p)}" for p in pkgs]


def _plots(f: Fitted, y: np.ndarray, x_ho: pd.DataFrame, task: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if task == "classification":
        from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        RocCurveDisplay.from_predictions(y, f.holdout_pred, ax=axes[0])
        PrecisionRecallDisplay.from_predictions(y, f.holdout_pred, ax=axes[1])
        axes[0].set_title("ROC (holdout)")
        axes[1].set_title("Precision-recall (holdout)")
        fig.tight_layout()
        fig.savefig(out / "roc_pr.png", dpi=80)
    else:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(f.holdout_pred, y - f.holdout_pred, s=2, alpha=0.3)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("prediction")
        ax.set_ylabel("residual")
        ax.set_title("Residuals (holdout)")
        fig.tight_layout()
        fig.savefig(out / "residuals.png", dpi=80)
    plt.close(fig)

    imp = _importance(f, y, x_ho, task)
    (out / "feature_importance.json").write_text(json.dumps(imp, indent=2))
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(names))))
    ax.barh(names, [imp[n] for n in names])
    ax.set_title("Feature importance")
    fig.tight_layout()
    fig.savefig(out / "feature_importance.png", dpi=80)
    plt.close(fig)


def _importance(f: Fitted, y: np.ndarray, x_ho: pd.DataFrame, task: str) -> dict[str, float]:
    """Native importances where the model has them, else permutation importance."""
    cols = list(x_ho.columns)
    if hasattr(f.model, "feature_importances_"):
        vals = [float(v) for v in f.model.feature_importances_]
    else:
        vals = _permutation_importance(f, y, x_ho, task)
    pairs = sorted(zip(cols, vals, strict=True), key=lambda p: -p[1])
    return dict(pairs)


def _permutation_importance(
    f: Fitted, y: np.ndarray, x_ho: pd.DataFrame, task: str, rows: int = 2000, seed: int = 0
) -> list[float]:
    """Drop in the holdout score when each column alone is shuffled (one repeat).

    The score is ROC AUC (classification with both classes), else accuracy or R2, as
    sklearn's ``permutation_importance`` uses. All shuffled copies go through the model in
    one ``predict`` call: tree ensembles pay a fixed cost per call and per tree that
    dwarfs a 2,000-row batch.
    """
    import numpy as np
    import pandas as pd
    from sklearn import metrics as m

    n = min(len(x_ho), rows)
    x = x_ho.iloc[:n].reset_index(drop=True)
    y = y[:n]
    rng = np.random.RandomState(seed)
    blocks = [x]
    for col in x.columns:
        shuffled = x.copy()
        shuffled[col] = x[col].iloc[rng.permutation(n)].reset_index(drop=True)
        blocks.append(shuffled)
    pred = models.predict(
        f.model, models.fit_input(pd.concat(blocks, ignore_index=True), f.candidate.kind), task
    )

    def score(p: np.ndarray) -> float:
        if task != "classification":
            return float(m.r2_score(y, p))
        if len(set(y.tolist())) > 1:
            return float(m.roc_auc_score(y, p))
        return float(m.accuracy_score(y, p >= 0.5))

    base = score(pred[:n])
    return [base - score(pred[(i + 1) * n : (i + 2) * n]) for i in range(len(x.columns))]


def evaluation_artifacts(
    f: Fitted,
    params: Params,
    x_ho: pd.DataFrame,
    y_ho: np.ndarray,
    reference: pd.DataFrame,
    cats: dict[str, list[str]],
    out: Path,
) -> Path:
    """Write a candidate's evaluation artifacts into ``out`` and return it.

    Holdout plots (ROC and precision-recall, or residuals), ``feature_importance.json``
    and its plot, and ``reference.parquet``: a sample of training rows with this
    candidate's predictions, which ``monitor`` compares scored partitions against.
    """
    c = params.contract
    out.mkdir(parents=True, exist_ok=True)
    _plots(f, y_ho, x_ho, c.task, out)
    ref = reference.copy()
    x_ref = models.align_categories(models.matrix(ref, c), cats)
    ref["prediction"] = models.predict(f.model, models.fit_input(x_ref, f.candidate.kind), c.task)
    io.write_parquet(out / "reference.parquet", ref)
    return out


def log_candidate(
    f: Fitted,
    params: Params,
    exp_id: str,
    x_ho: pd.DataFrame,
    cats: dict[str, list[str]],
    lineage: dict[str, str],
    artifacts: Path,
) -> tuple[str, str]:
    """Log one candidate as an MLflow run; return (run_id, model_uri).

    The run gets the files in ``artifacts`` (see :func:`evaluation_artifacts`).
    """
    import mlflow
    from mlflow.models import infer_signature

    c = params.contract
    example = models.fit_input(x_ho.head(5), f.candidate.kind)
    sig = infer_signature(models.fit_input(x_ho.head(5), "sklearn"), f.holdout_pred[:5])
    with mlflow.start_run(experiment_id=exp_id, run_name=f.candidate.name) as run:
        mlflow.set_tags(
            {
                tags.STAGE: "train",
                tags.CANDIDATE: f.candidate.name,
                tags.KIND: f.candidate.kind,
                **lineage,
            }
        )
        mlflow.log_params(
            {
                "kind": f.candidate.kind,
                **f.candidate.params,
                "train_partitions": ",".join(params.train.partitions),
            }
        )
        mlflow.log_metrics(
            {**{f"holdout_{k}": v for k, v in f.metrics.items()}, "fit_seconds": f.fit_seconds}
        )
        features = {
            "features": c.feature_names,
            "categories": cats,
            "task": c.task,
            "target": c.target,
        }
        mlflow.log_dict(features, "features.json")
        mlflow.log_artifacts(str(artifacts))
        common = {
            "name": "model",
            "pip_requirements": _requirements(f.candidate.kind),
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


def lineage(params: Params, st: Settings) -> dict[str, str]:
    """The lineage tags of a training run: partitions, their DVC hashes, features, code."""
    from mlops.registry import git_revision

    manifest_path = st.state_dir / "ingest.json"
    manifest = io.read_json(manifest_path) if manifest_path.is_file() else {}
    hashes = {p: manifest.get(p, {}).get("md5", "unknown") for p in params.train.partitions}
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


def run(params: Params, st: Settings) -> Trained:
    """Fit, log and register; write ``state/train.json`` naming the new version.

    One training of a model at a time: a second run while one is going is refused, so a
    retried task never registers two versions from the same data.
    """
    with io.exclusive(st.state_dir / "locks", "train", [params.model_name]):
        return _run(params, st)


def _run(params: Params, st: Settings) -> Trained:
    import mlflow

    from mlops.registry import connect

    t0 = time.perf_counter()
    df = features.training_frame(params, st, params.train.partitions)
    train_df, hold_df = split(df, params)
    fitted, cats = fit_candidates(train_df, hold_df, params)
    metric = params.gate_metric
    top = best(fitted, metric)

    c = params.contract
    x_ho = models.align_categories(models.matrix(hold_df, c), cats)
    y_ho = models.target(hold_df, c)
    n_ref = min(len(train_df), REFERENCE_ROWS)
    reference = train_df.sample(n=n_ref, random_state=params.train.seed).sort_index()
    reg = connect(st)
    exp_id = reg.retry(lambda: reg.experiment_id(params.model_name), "create experiment")
    run_tags = lineage(params, st)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for f in fitted:
            out = evaluation_artifacts(
                f, params, x_ho, y_ho, reference, cats, Path(tmp) / f.candidate.name
            )
            runs[f.candidate.name] = reg.retry(
                functools.partial(log_candidate, f, params, exp_id, x_ho, cats, run_tags, out),
                f"log candidate {f.candidate.name}",
            )
    run_id, model_uri = runs[top.candidate.name]
    reg.retry(lambda: reg.client.set_tag(run_id, tags.SELECTED, "true"), "tag the selected run")
    version_tags = {
        tags.CANDIDATE: top.candidate.name,
        tags.RUN_ID: run_id,
        tags.holdout(metric): f"{top.metrics[metric]:.6f}",
        **run_tags,
    }
    # Tags go in with the version (one request, one transaction): a version is never
    # seen without its lineage, even if this process dies right after.
    mv = reg.retry(
        lambda: mlflow.register_model(
            model_uri, params.model_name, await_registration_for=0, tags=version_tags
        ),
        "register model",
    )
    faults.point("train.after_register")
    result = Trained(
        model_name=params.model_name,
        version=str(mv.version),
        run_id=run_id,
        candidate=top.candidate.name,
        metric=metric,
        holdout={f.candidate.name: f.metrics for f in fitted},
        rows={"train": len(train_df), "holdout": len(hold_df)},
    )
    io.write_json(st.state_dir / "train.json", result)
    scores = ", ".join(
        f"{f.candidate.name} {f.metrics.get(metric, float('nan')):.4f}" for f in fitted
    )
    print(
        f"train: {len(train_df):,} rows, holdout {len(hold_df):,}; {metric}: {scores}; "
        f"registered {params.model_name} v{mv.version} ({top.candidate.name}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return result
