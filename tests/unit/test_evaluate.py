"""What evaluate writes for ``dvc metrics`` and ``dvc plots``: pure functions of its results."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from mlops import evaluate, models


def _frame(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text))


def test_a_classifiers_curves_are_roc_and_precision_recall_within_the_point_budget() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    pred = np.clip(y * 0.3 + rng.random(5000) * 0.7, 0, 1)
    files = evaluate.curves(y, pred, "classification")
    assert set(files) == set(models.PLOTS["classification"])
    roc = _frame(files["roc.csv"])
    assert list(roc.columns) == ["fpr", "tpr"]
    assert 2 < len(roc) <= evaluate.MAX_POINTS
    # both ends of the curve are kept when it is thinned
    assert (roc.iloc[0].tolist(), roc.iloc[-1].tolist()) == ([0.0, 0.0], [1.0, 1.0])
    assert roc["fpr"].is_monotonic_increasing
    pr = _frame(files["precision_recall.csv"])
    assert list(pr.columns) == ["recall", "precision"] and len(pr) <= evaluate.MAX_POINTS


def test_a_holdout_of_one_class_writes_the_files_with_headers_only() -> None:
    files = evaluate.curves(np.ones(10), np.full(10, 0.8), "classification")
    assert files == {"roc.csv": "fpr,tpr\n", "precision_recall.csv": "recall,precision\n"}


def test_a_regressors_plot_is_actual_against_predicted_sorted_by_the_actual() -> None:
    y = np.arange(2000, 0, -1, dtype=float)
    files = evaluate.curves(y, y + 0.5, "regression")
    assert set(files) == set(models.PLOTS["regression"])
    res = _frame(files["residuals.csv"])
    assert list(res.columns) == ["actual", "predicted"]
    assert len(res) == evaluate.MAX_POINTS
    assert res["actual"].is_monotonic_increasing
    assert (res["actual"].iloc[0], res["actual"].iloc[-1]) == (1.0, 2000.0)
    assert (res["predicted"] - res["actual"]).eq(0.5).all()


def test_the_metrics_file_holds_both_versions_numbers_and_no_versions() -> None:
    ev = {
        "rows": 10,
        "metric": "roc_auc",
        "candidate": {"version": "3", "metrics": {"roc_auc": 0.7}},
        "champion": {"version": "2", "metrics": {"roc_auc": 0.68}},
    }
    assert evaluate.metrics_file(ev) == {  # type: ignore[arg-type]
        "rows": 10,
        "candidate": {"roc_auc": 0.7},
        "champion": {"roc_auc": 0.68},
    }
    ev["champion"] = None
    assert evaluate.metrics_file(ev) == {"rows": 10, "candidate": {"roc_auc": 0.7}}  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 3, 500, 501, 10_000])
def test_thinning_keeps_both_ends_and_at_most_the_budget(n: int) -> None:
    idx = evaluate._thin(n)
    assert idx[0] == 0 and idx[-1] == n - 1
    assert len(idx) == min(n, evaluate.MAX_POINTS)
