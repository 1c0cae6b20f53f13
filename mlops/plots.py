"""plots: a candidate's holdout plots and feature importance, written as files for its run.

ROC and precision-recall curves for classification, residuals for regression, the
feature importance as ``feature_importance.json`` and SHAP's mean absolute contribution
per feature as ``shap_importance.json`` (``mlops.explain``), each with its bar chart.
Matplotlib runs headless (``Agg``) and is imported only here, when a candidate is logged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import explain, io, models

if TYPE_CHECKING:
    from concurrent.futures import Future

    import numpy as np
    import pandas as pd

    from mlops.config import Params
    from mlops.contract import Contract


def holdout(
    model: Any,
    kind: str,
    y: np.ndarray,
    pred: np.ndarray,
    x_ho: pd.DataFrame,
    contract: Contract,
    out: Path,
    shap: Future[explain.Contributions] | None = None,
) -> None:
    """Write the holdout plots, feature importance and SHAP of one fitted model into ``out``.

    ``shap``: the model's contributions (``contributions``) being computed elsewhere,
    such as XGBoost's TreeSHAP in a thread of its own while other candidates are logged.
    """
    task = contract.task
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if task == "classification":
        from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        RocCurveDisplay.from_predictions(y, pred, ax=axes[0])
        PrecisionRecallDisplay.from_predictions(y, pred, ax=axes[1])
        axes[0].set_title("ROC (holdout)")
        axes[1].set_title("Precision-recall (holdout)")
        fig.tight_layout()
        fig.savefig(out / "roc_pr.png", dpi=80)
    else:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(pred, y - pred, s=2, alpha=0.3)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("prediction")
        ax.set_ylabel("residual")
        ax.set_title("Residuals (holdout)")
        fig.tight_layout()
        fig.savefig(out / "residuals.png", dpi=80)
    plt.close(fig)

    imp = models.importance(model, kind, y, x_ho, task)
    (out / "feature_importance.json").write_text(json.dumps(imp, indent=2))
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(names))))
    ax.barh(names, [imp[n] for n in names])
    ax.set_title("Feature importance")
    fig.tight_layout()
    fig.savefig(out / "feature_importance.png", dpi=80)
    plt.close(fig)
    shap_importance(model, kind, x_ho, contract, out, shap)


def contributions(
    model: Any, kind: str, x_ho: pd.DataFrame, contract: Contract
) -> explain.Contributions:
    """The exact contributions of the holdout rows that ``shap_importance`` summarises.

    They are those of a seeded sample of at most ``explain.MAX_ROWS`` rows; ValueError for
    a kind without an exact method.
    """
    sample = explain.sample_rows(x_ho)
    flavor = "xgboost" if kind == "xgboost" else "sklearn"
    return explain.of_matrix(model, flavor, sample, contract)


def shap_importance(
    model: Any,
    kind: str,
    x_ho: pd.DataFrame,
    contract: Contract,
    out: Path,
    shap: Future[explain.Contributions] | None = None,
) -> None:
    """``shap_importance.json`` (mean |SHAP| per feature on the holdout) and its bar chart."""
    import matplotlib.pyplot as plt

    try:
        c = contributions(model, kind, x_ho, contract) if shap is None else shap.result()
    except ValueError as exc:  # no exact method for this kind: said in the file
        (out / "shap_importance.json").write_text(json.dumps({"error": str(exc)}))
        return
    imp = explain.mean_abs(c.values, c.features)
    rows = len(c.values)
    doc = {"method": c.method, "output": c.output, "rows": rows, "mean_abs": imp}
    (out / "shap_importance.json").write_text(json.dumps(doc, indent=2))
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(names))))
    ax.barh(names, [imp[n] for n in names])
    ax.set_xlabel(f"mean |SHAP| ({c.output}), {rows:,} holdout rows")
    ax.set_title(f"SHAP: {c.method}")
    fig.tight_layout()
    fig.savefig(out / "shap_importance.png", dpi=80)
    plt.close(fig)


def evaluation_artifacts(
    f: Any,
    params: Params,
    x_ho: pd.DataFrame,
    y_ho: np.ndarray,
    reference: pd.DataFrame,
    cats: dict[str, list[str]],
    out: Path,
    shap: Future[explain.Contributions] | None = None,
) -> Path:
    """Write a candidate's evaluation artifacts (``f``: a ``train.Fitted``) into ``out``.

    Holdout plots (ROC and precision-recall, or residuals), ``feature_importance.json``
    and ``shap_importance.json`` with their plots, and ``reference.parquet``: a sample of
    training rows with this candidate's predictions, which ``monitor`` compares scored
    partitions against.
    """
    c = params.contract
    out.mkdir(parents=True, exist_ok=True)
    holdout(f.model, f.candidate.kind, y_ho, f.holdout_pred, x_ho, c, out, shap)
    ref = reference.copy()
    x_ref = models.align_categories(models.matrix(ref, c), cats)
    ref["prediction"] = models.predict(f.model, models.fit_input(x_ref, f.candidate.kind), c.task)
    io.write_parquet(out / "reference.parquet", ref)
    return out
