"""Candidates, feature matrix and metrics on a real slice of flights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops import models
from mlops.config import Candidate, load_params
from mlops.source import load
from tests.conftest import FLIGHTS, REPO


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    params = load_params(FLIGHTS)
    df = load(params.source, REPO)
    return df[df["event_ts"] < pd.Timestamp("2013-01-15", tz="UTC")].reset_index(drop=True)


def test_matrix_fixes_categories_from_the_contract(flights) -> None:
    c = load_params(FLIGHTS).contract
    x = models.matrix(flights.head(50), c)
    assert list(x.columns) == c.feature_names
    assert list(x["origin"].cat.categories) == ["EWR", "JFK", "LGA"]
    odd = flights.head(3).assign(origin="XXX")
    assert models.matrix(odd, c)["origin"].isna().all()


@pytest.mark.parametrize(
    "kind",
    [
        "sklearn_hist_gradient_boosting",
        "xgboost",
        "sklearn_logistic_regression",
        "sklearn_random_forest",
    ],
)
def test_each_candidate_kind_learns_something(flights, kind) -> None:
    c = load_params(FLIGHTS).contract
    params = {
        "sklearn_random_forest": {"n_estimators": 20},
        "xgboost": {"n_estimators": 30},
        "sklearn_hist_gradient_boosting": {"max_iter": 30},
    }.get(kind, {})
    est = models.build(Candidate(name="c", kind=kind, params=params), c, seed=0)
    train, test = flights.iloc[:8000], flights.iloc[8000:]
    x = models.matrix(train, c)
    est.fit(models.fit_input(x, kind), models.target(train, c))
    xt = models.align_categories(
        models.matrix(test, c),
        {k: list(v.cat.categories) for k, v in x.items() if str(v.dtype) == "category"},
    )
    pred = models.predict(est, models.fit_input(xt, kind), "classification")
    m = models.metrics(models.target(test, c), pred, "classification")
    assert ((pred >= 0) & (pred <= 1)).all()
    assert m["roc_auc"] > 0.55


def test_regression_metrics() -> None:
    y = np.array([1.0, 2.0, 3.0])
    m = models.metrics(y, y + 1, "regression")
    assert m["rmse"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(1.0)
    assert models.better(0.5, 1.0, "rmse") and not models.better(0.5, 1.0, "roc_auc")
