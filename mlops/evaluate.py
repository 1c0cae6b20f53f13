"""evaluate: score the new candidate and the current champion on the same holdout.

The holdout is the most recent ``train.holdout_partitions`` partitions of the training
window, retrieved through Feast like the training set. Results are written as tags on
the candidate version and to ``state/evaluate.json`` for ``promote``. A classifier's
precision, recall and F1 are at its own decision threshold; the gate metric needs none.

For ``dvc metrics`` and ``dvc plots`` (``dvc.yaml`` declares them) it also writes both
versions' metrics to ``metrics/evaluate.json`` and the candidate's curves to
``plots/evaluate/``: ROC and precision-recall points for a classifier, actual against
predicted for a regressor.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypedDict

from mlops import io, models, observe, tags, training_data
from mlops.config import Params, Settings
from mlops.registry import CHAMPION, connect

if TYPE_CHECKING:
    import numpy as np

# The most points a curve file keeps: enough for a smooth plot, small enough to diff.
MAX_POINTS = 500


class Scored(TypedDict):
    """One version's metrics on the holdout (a classifier's also at its ``threshold``)."""

    version: str
    metrics: dict[str, float]


class Evaluation(TypedDict):
    """Candidate and champion on the same holdout (also ``state/evaluate.json``)."""

    model_name: str
    metric: str
    holdout_partitions: list[str]
    rows: int
    candidate: Scored
    champion: Scored | None
    champion_at_evaluation: str | None


def run(params: Params, st: Settings, version: str | None = None) -> Evaluation:
    """Evaluate ``version`` (default: the one ``train`` registered last) against champion."""
    t0 = time.perf_counter()
    name = params.model_name
    if version is None:
        state = st.state_dir / "train.json"
        if not state.is_file():
            raise FileNotFoundError(f"{state}: no trained candidate; run `mlops train` first")
        fix = "Re-run `mlops train` (or the train task); it rewrites it."
        version = str(io.read_json(state, fix=fix)["version"])
    parts = params.train.holdout
    df = training_data.training_frame(params, st, parts, stage="evaluate")
    c = params.contract
    y = models.target(df, c)
    reg = connect(st)

    def scored(v: str) -> tuple[dict[str, float], np.ndarray]:
        loaded = reg.load(name, v)
        pred = loaded.predict(df, c)
        return models.metrics(y, pred, c.task, loaded.threshold), pred

    cand, cand_pred = scored(str(version))
    champ_mv = reg.version_by_alias(name, CHAMPION)
    champ: Scored | None = None
    if champ_mv is not None and str(champ_mv.version) != str(version):
        champ = Scored(version=str(champ_mv.version), metrics=scored(str(champ_mv.version))[0])
    metric = params.gate_metric
    cl = reg.client
    cand_value = cand.get(metric, float("nan"))
    cl.set_model_version_tag(name, version, tags.evaluation(metric), f"{cand_value:.6f}")
    cl.set_model_version_tag(name, version, tags.EVAL_HOLDOUT, ",".join(parts))
    if champ is not None:
        cl.set_model_version_tag(name, version, tags.EVAL_CHAMPION_VERSION, champ["version"])
        cl.set_model_version_tag(
            name,
            version,
            tags.champion_evaluation(metric),
            f"{champ['metrics'].get(metric, float('nan')):.6f}",
        )
    result = Evaluation(
        model_name=name,
        metric=metric,
        holdout_partitions=parts,
        rows=len(df),
        candidate=Scored(version=str(version), metrics=cand),
        champion=champ,
        champion_at_evaluation=None if champ_mv is None else str(champ_mv.version),
    )
    io.write_json(st.state_dir / "evaluate.json", result)
    io.write_json(st.data_root / "metrics" / "evaluate.json", metrics_file(result))
    for file, text in curves(y, cand_pred, c.task).items():
        io.write_text(st.data_root / "plots" / "evaluate" / file, text)
    observe.rows(len(df))
    observe.gauge(
        "mlops_model_metric", cand_value, role="candidate", metric=metric, version=version
    )
    if champ is not None:
        value = champ["metrics"].get(metric)
        observe.gauge(
            "mlops_model_metric", value, role="champion", metric=metric, version=champ["version"]
        )
    vs = (
        f"champion v{champ['version']} {champ['metrics'].get(metric, float('nan')):.4f}"
        f"{at_threshold(champ['metrics'])}"
        if champ
        else "no champion yet"
    )
    print(
        f"evaluate: {name} v{version} {metric} {cand_value:.4f}{at_threshold(cand)} vs {vs} "
        f"on {len(df):,} holdout rows ({','.join(parts)}) in {time.perf_counter() - t0:.1f}s"
    )
    return result


def at_threshold(m: dict[str, float]) -> str:
    """Pure: `` (precision 0.41, recall 0.52, F1 0.46 at threshold 0.23)`` or nothing."""
    if "threshold" not in m:
        return ""
    return (
        f" (precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f} "
        f"at threshold {m['threshold']:.4f})"
    )


def metrics_file(ev: Evaluation) -> dict[str, Any]:
    """Pure: what ``dvc metrics`` shows of an evaluation (numbers only, both versions)."""
    out: dict[str, Any] = {"rows": ev["rows"], "candidate": dict(ev["candidate"]["metrics"])}
    if ev["champion"] is not None:
        out["champion"] = dict(ev["champion"]["metrics"])
    return out


def _thin(n: int) -> np.ndarray:
    """Indices of at most ``MAX_POINTS`` evenly spaced points of ``n``, both ends kept."""
    import numpy as np

    return np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).round().astype(int))


def curves(y: np.ndarray, pred: np.ndarray, task: str) -> dict[str, str]:
    """Pure: the CSV text of each file in ``models.PLOTS[task]``, at most ``MAX_POINTS`` rows each.

    A regressor's rows are an even sample of the holdout sorted by the actual value.
    """
    import numpy as np
    import pandas as pd
    from sklearn import metrics as m

    frames: dict[str, pd.DataFrame] = {}
    if task == "classification" and len(np.unique(y)) > 1:
        fpr, tpr, _ = m.roc_curve(y, pred)
        precision, recall, _ = m.precision_recall_curve(y, pred)
        frames["roc.csv"] = pd.DataFrame({"fpr": fpr, "tpr": tpr})
        frames["precision_recall.csv"] = pd.DataFrame({"recall": recall, "precision": precision})
    elif task == "classification":  # one class in the holdout: no curve, the files stay
        frames = {f: pd.DataFrame(columns=list(xy)) for f, xy in models.PLOTS[task].items()}
    else:
        order = np.argsort(y, kind="stable")
        frames["residuals.csv"] = pd.DataFrame({"actual": y[order], "predicted": pred[order]})
    return {
        f: frame.iloc[_thin(len(frame))].to_csv(index=False, float_format="%.6g")
        if len(frame)
        else frame.to_csv(index=False)
        for f, frame in frames.items()
    }
