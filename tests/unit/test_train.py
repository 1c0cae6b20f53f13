"""train: the pure parts (feature importance of a fitted candidate)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.config import Candidate
from mlops.train import Fitted, _importance


def test_permutation_importance_finds_the_only_informative_column_in_one_predict() -> None:
    # given a model whose probability depends on column "a" alone, and a target that does
    rng = np.random.default_rng(0)
    x = pd.DataFrame(
        {
            "a": rng.normal(size=3000),
            "b": rng.normal(size=3000),
            "c": pd.Categorical(rng.choice(["x", "y"], size=3000)),
        }
    )
    y = (x["a"] > 0).to_numpy().astype(np.int32)

    class OnlyA:
        calls = 0

        def predict_proba(self, xs: pd.DataFrame) -> np.ndarray:
            OnlyA.calls += 1
            p = 1 / (1 + np.exp(-xs["a"].to_numpy()))
            return np.column_stack([1 - p, p])

    cand = Candidate(name="only_a", kind="sklearn_logistic_regression")
    f = Fitted(cand, OnlyA(), {}, np.zeros(len(x)), 0.0)

    # when its importance is computed on the holdout
    imp = _importance(f, y, x, "classification")

    # then only "a" matters, in the order of importance, from a single predict call
    assert list(imp)[0] == "a" and imp["a"] > 0.3
    assert imp["b"] == 0.0 and imp["c"] == 0.0
    assert OnlyA.calls == 1
