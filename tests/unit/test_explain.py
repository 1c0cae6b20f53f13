"""explain: each kind's contributions add up to its raw output, on real data.

Every candidate kind is fitted on two January weeks of real flights (category features,
missing values and all) and explained on the third, the regressors on Seattle's weather:
for each row, the contributions plus the base value equal the model's raw output
(log-odds, probability or value) within 1e-5 (and 1e-6 of the value), and the tree
method gives the brute-force Shapley values.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from mlops import card, explain, models, tree_shap
from mlops.config import Candidate, load_params
from mlops.registry import Loaded
from mlops.source import load
from tests.conftest import FLIGHTS, REPO

PARAMS = load_params(FLIGHTS)
CONTRACT = PARAMS.contract
KINDS = {
    "xgboost": {"n_estimators": 30, "max_depth": 4},
    "sklearn_hist_gradient_boosting": {"max_iter": 30},
    "sklearn_random_forest": {"n_estimators": 5, "max_depth": 6},
    "sklearn_logistic_regression": {},
}


@pytest.fixture(scope="module")
def weeks() -> tuple[pd.DataFrame, pd.DataFrame]:
    df = load(PARAMS.source, REPO)
    df = df[df["event_ts"] < pd.Timestamp("2013-01-22", tz="UTC")]
    df = df[df[CONTRACT.target].notna()].reset_index(drop=True)
    cut = pd.Timestamp("2013-01-15", tz="UTC")
    return df[df["event_ts"] < cut], df[df["event_ts"] >= cut].head(600)


def _keys(rows: pd.DataFrame, *columns: str) -> dict[str, np.ndarray]:
    return {col: card.slice_keys(rows[col]) for col in columns}


def fit(kind: str, train: pd.DataFrame, task_contract=CONTRACT) -> Loaded:
    x = models.matrix(train, task_contract)
    cats, _ = models.learn_categories(x, 50)
    x = models.align_categories(x, cats)
    est = models.build(Candidate(name=kind, kind=kind, params=KINDS[kind]), task_contract, 0)
    est.fit(models.fit_input(x, kind), models.target(train, task_contract))
    flavor = "xgboost" if kind == "xgboost" else "sklearn"
    return Loaded(est, "m", "1", "run", flavor, cats, list(task_contract.feature_names))


@pytest.mark.parametrize("kind", list(KINDS))
def test_contributions_plus_the_base_are_the_raw_output(kind, weeks) -> None:
    train, rows = weeks
    loaded = fit(kind, train)
    c = explain.contributions(loaded, rows, CONTRACT)
    raw = explain.raw_output(loaded, rows, CONTRACT)
    assert c.values.shape == (len(rows), len(CONTRACT.feature_names))
    assert c.features == list(CONTRACT.feature_names)
    np.testing.assert_allclose(c.values.sum(axis=1) + c.base, raw, rtol=0, atol=1e-5)
    # every feature the model can split on gets some attribution somewhere
    assert (np.abs(c.values).sum(axis=0) > 0).sum() >= 3
    if kind == "sklearn_random_forest":
        assert c.output == "probability"
        np.testing.assert_allclose(raw, loaded.predict(rows, CONTRACT), atol=1e-9)
    else:
        assert c.output == "log-odds"


def test_xgboosts_fast_path_attribution_adds_up_too(weeks) -> None:
    train, rows = weeks
    loaded = fit("xgboost", train)
    c = explain.contributions(loaded, rows, CONTRACT, approximate=True)
    raw = explain.raw_output(loaded, rows, CONTRACT)
    np.testing.assert_allclose(c.values.sum(axis=1) + c.base, raw, rtol=0, atol=1e-5)
    assert c.method.startswith("path attribution")


def _brute_force(tree: tree_shap.Tree, n_features: int, row: int) -> np.ndarray:
    """Shapley values by every coalition, with the path-dependent value function."""

    def value(node: int, known: set[int]) -> float:
        if tree.left[node] < 0:
            return float(tree.value[node])
        f = int(tree.feature[node])
        lc, rc = int(tree.left[node]), int(tree.right[node])
        if f in known:
            return value(lc if tree.go_left[node, row] else rc, known)
        c = tree.cover
        return (c[lc] * value(lc, known) + c[rc] * value(rc, known)) / c[node]

    phi = np.zeros(n_features)
    m = n_features
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            for s in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                phi[i] += weight * (value(0, {*s, i}) - value(0, set(s)))
    return phi


def test_tree_shap_is_the_shapley_value_of_the_path_dependent_game() -> None:
    # given a small tree that splits on feature 0 twice and on features 1 and 2
    rng = np.random.default_rng(1)
    left = np.array([1, 3, 5, -1, -1, 7, -1, -1, -1])
    right = np.array([2, 4, 6, -1, -1, 8, -1, -1, -1])
    feature = np.array([0, 1, 0, 0, 0, 2, 0, 0, 0])
    cover = np.array([100, 40, 60, 10, 30, 35, 25, 20, 15], dtype=float)
    value = np.array([0, 0, 0, 1.5, -2.0, 0, 0.7, 3.1, -0.4])
    go_left = rng.random((9, 16)) < 0.5
    tree = tree_shap.Tree(left, right, feature, value, cover, go_left)
    # when it is explained, then each row's values are the brute-force Shapley values
    phi, expected = tree_shap.shap_values(tree, 3)
    for row in range(16):
        np.testing.assert_allclose(phi[row], _brute_force(tree, 3, row), atol=1e-12)
    leaves = left < 0
    assert expected == pytest.approx((cover[leaves] * value[leaves]).sum() / 100)


def test_the_top_features_of_a_row_are_its_largest_contributions() -> None:
    c = explain.Contributions(
        np.array([[0.1, -0.5, 0.2], [0.0, 0.01, -0.02]]), np.zeros(2), ["a", "b", "c"], "x", "m"
    )
    top = explain.top_k(c, 2)
    assert [[t["feature"] for t in row] for row in top] == [["b", "c"], ["c", "b"]]
    assert top[0][0]["contribution"] == -0.5


def test_the_cards_summary_is_mean_absolute_contributions_overall_and_per_slice(weeks) -> None:
    train, rows = weeks
    loaded = fit("xgboost", train)
    a = explain.attributions(loaded, rows, CONTRACT, _keys(rows, "origin"), min_rows=100)
    assert a["rows"] == len(rows) and a["method"] == "TreeSHAP (XGBoost)"
    overall = list(a["overall"].values())
    assert overall == sorted(overall, reverse=True) and overall[0] > 0
    origins = {r["value"]: r for r in a["slices"]["origin"]}
    assert set(origins) == {"EWR", "JFK", "LGA"}
    assert sum(r["rows"] for r in origins.values()) == len(rows)
    assert all(len(r["top"]) == explain.SLICE_TOP for r in origins.values())


def _scoring(k: int, exact: bool = False):
    return PARAMS.model_copy(
        update={
            "score": PARAMS.score.model_copy(update={"explain_top_k": k, "explain_exact": exact})
        }
    )


@pytest.mark.parametrize("kind", ["xgboost", "sklearn_hist_gradient_boosting"])
def test_score_writes_each_rows_top_features_which_add_up_when_all_are_kept(kind, weeks) -> None:
    from mlops import score

    train, rows = weeks
    loaded = fit(kind, train)
    n = len(CONTRACT.feature_names)
    # when every feature is kept, the row's contributions and base are its raw output
    out = score.predict_frame(rows, loaded, _scoring(n, exact=True))
    parts = out[[f"explain_contribution_{i}" for i in range(1, n + 1)]].to_numpy()
    raw = explain.raw_output(loaded, rows, CONTRACT)
    np.testing.assert_allclose(parts.sum(axis=1) + out["explain_base"], raw, atol=1e-5)
    # and with three, they are the three largest, largest first, named per row
    top = score.predict_frame(rows, loaded, _scoring(3))
    assert [c for c in top.columns if c.startswith("explain_")] == [
        "explain_base",
        *[f"explain_{w}_{i}" for i in (1, 2, 3) for w in ("feature", "contribution")],
    ]
    size = top[[f"explain_contribution_{i}" for i in (1, 2, 3)]].abs().to_numpy()
    assert (np.diff(size, axis=1) <= 1e-12).all()
    assert set(top["explain_feature_1"]) <= set(CONTRACT.feature_names)
    assert str(top["explain_feature_1"].dtype) == "string"
    # the prediction itself is the same with or without explanations
    plain = score.predict_frame(rows, loaded, _scoring(0))
    assert not any(c.startswith("explain_") for c in plain.columns)
    np.testing.assert_array_equal(plain["prediction"], top["prediction"])


@pytest.mark.parametrize(
    "kind", ["xgboost", "sklearn_hist_gradient_boosting", "sklearn_linear_regression"]
)
def test_a_regressors_contributions_add_up_to_its_value(kind) -> None:
    # given daily Seattle weather (the regression example), fitted on all but 200 days
    from tests.conftest import SEATTLE

    params = load_params(SEATTLE)
    df = load(params.source, SEATTLE.parent)
    df = df[df[params.contract.target].notna()].reset_index(drop=True)
    KINDS.setdefault("sklearn_linear_regression", {})
    loaded = fit(kind, df.iloc[:-200], params.contract)
    rows = df.iloc[-200:]
    # when explained, then base + contributions is the predicted value itself
    c = explain.contributions(loaded, rows, params.contract)
    assert c.output == "value"
    np.testing.assert_allclose(
        c.values.sum(axis=1) + c.base, loaded.predict(rows, params.contract), rtol=1e-6, atol=1e-5
    )  # XGBoost sums in float32: 1e-6 of a value near 25 degrees


def test_a_slice_value_the_sample_misses_gets_its_own_rows_and_the_overall_does_not(
    weeks,
) -> None:
    train, rows = weeks
    loaded = fit("xgboost", train)
    # given a sample too small for most carriers
    a = explain.attributions(loaded, rows, CONTRACT, _keys(rows, "carrier"), 100, min_rows=40)
    counts = rows["carrier"].astype(str).value_counts()
    got = {r["value"]: r for r in a["slices"]["carrier"]}
    # then every carrier with 40 rows in the holdout is explained on at least 40
    for value, n in counts.items():
        if n >= 40:
            assert got[value]["rows"] >= 40 and "top" in got[value], value
    # while the overall figure stays on the uniform sample
    assert a["rows"] == 100 and a["slice_rows"] > 100
    again = explain.attributions(loaded, rows, CONTRACT, {}, 100, min_rows=40)
    assert again["overall"] == pytest.approx(a["overall"])
