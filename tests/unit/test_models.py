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
    # labelled rows only: a cancelled flight's outcome is missing, and never arrives
    df = df[df["is_delayed"].notna()].astype({"is_delayed": bool})
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


def _codes(values: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame({"c": pd.Categorical(values), "n": np.arange(len(values), dtype=float)})


def test_learn_categories_keeps_the_most_frequent_and_maps_the_rest_to_other() -> None:
    # given a column of 5 values (a x4, b x3, c x2, d x1, e x1) and a cap of 3
    x = _codes(list("aaaabbbccde") + [None])
    # when the categories are learned
    cats, caps = models.learn_categories(x, max_categories=3)
    # then a, b, c are kept, "other" comes last and the cap is recorded
    assert cats["c"] == ["a", "b", "c", models.OTHER]
    assert caps["c"] == {"cardinality": 5, "kept": 3, "kept_rows": pytest.approx(9 / 11)}
    # and rare, unseen and missing values map to other, other and missing
    out = models.align_categories(_codes(["a", "d", "zzz", None]), cats)["c"]
    assert out.tolist()[:3] == ["a", models.OTHER, models.OTHER] and pd.isna(out.iloc[3])


def test_an_uncapped_column_keeps_unseen_values_missing_even_with_a_real_other() -> None:
    # given a column whose own values include "other", which sorts last, under the cap
    x = _codes(["cat", "dog", "other", "dog"])
    # when learned and a new value arrives at scoring
    cats, caps = models.learn_categories(x, max_categories=10)
    out = models.align_categories(_codes(["other", "emu"]), cats)["c"]
    # then nothing is capped, "other" stays a category, and the new value is missing
    assert caps == {} and set(cats["c"]) == {"cat", "dog", "other"}
    assert not models.is_capped(cats["c"])
    assert out.iloc[0] == "other" and pd.isna(out.iloc[1])


def test_hist_gradient_boosting_input_over_max_bins_is_refused_naming_column_and_setting() -> None:
    # given 120 values plus missing in a column, and an HGB candidate with max_bins=100
    x = _codes([f"v{i}" for i in range(120)] + [None])
    cand = Candidate(name="hgb", kind="sklearn_hist_gradient_boosting", params={"max_bins": 100})
    # when checked before fitting, then the error names the column and the setting to change
    with pytest.raises(models.CandidateError, match=r"'c' has 121 .*train.max_categories") as e:
        models.check_input(cand, x)
    assert e.value.column == "c" and "at most 98" in str(e.value)
    # and other kinds take it
    models.check_input(Candidate(name="x", kind="xgboost"), x)


def test_an_estimator_error_by_index_is_traced_to_the_column() -> None:
    # given sklearn's error about the encoded column at index 1, and the order it saw
    exc = ValueError("Categorical feature at index 1 is expected to have a cardinality <= 255")
    reason, column = models.explain(exc, ["carrier", "dest", "temp"])
    # then the reason keeps the message and the column is named
    assert column == "dest" and reason.startswith("ValueError: Categorical feature")
    assert models.explain(KeyError("no such thing"), ["dest"])[1] is None
