"""explain: SHAP feature attributions of a model's predictions, exact for every kind we train.

``contributions`` returns, per row, one value per contract feature and a base value that
add up to the model's raw output: the log-odds of a classifier (probability for a random
forest, which averages probabilities), the value of a regressor.

- XGBoost: its own TreeSHAP (``pred_contribs``); ``approximate=True`` uses its path
  attribution (``approx_contribs``, Saabas), which also adds up and is far faster.
- HistGradientBoosting and random forests: path-dependent TreeSHAP (``tree_shap``) on
  the fitted trees, with HistGradientBoosting's own category splits and missing-value
  directions.
- Linear models: coefficient times the transformed input against the training mean
  (numeric features are standardised, so their reference is 0; a category's reference is
  no category); the base is the intercept.

``attributions`` summarises them for the model card: mean absolute contribution per
feature on the holdout, overall and per slice value. ``top_k`` is what ``score`` and
``mlops serve`` return per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops import tree_shap
from mlops.tree_shap import Tree

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops.contract import Contract
    from mlops.registry import Loaded

# The most holdout rows the card explains (a seeded sample beyond it).
MAX_ROWS = 2000
# The features the card lists per slice value.
SLICE_TOP = 5


@dataclass(frozen=True)
class Contributions:
    """Per-row contributions of each feature; ``values.sum(1) + base`` is the raw output."""

    values: np.ndarray  # (rows, features)
    base: np.ndarray  # (rows,)
    features: list[str]
    output: str  # what the raw output is: "log-odds", "probability" or "value"
    method: str


def contributions(
    loaded: Loaded, df: pd.DataFrame, contract: Contract, approximate: bool = False
) -> Contributions:
    """The contributions of ``loaded``'s prediction for each row of ``df``."""
    from mlops import models

    x = models.align_categories(models.matrix(df, contract), loaded.categories)
    return of_matrix(loaded.model, loaded.flavor, x, contract, approximate)


def of_matrix(
    model: Any, flavor: str, x: pd.DataFrame, contract: Contract, approximate: bool = False
) -> Contributions:
    """The contributions for ``x``, the feature matrix with its categories aligned.

    ``flavor`` is ``xgboost`` or ``sklearn`` (a fitted pipeline of encoders and estimator).
    """
    from mlops import models

    clf = contract.task == "classification"
    if flavor == "xgboost":
        return _xgboost(model, x, clf, approximate)
    pre, est = model[:-1], model[-1]
    z = pre.transform(models.fit_input(x, "sklearn"))
    names = models.input_columns("sklearn", contract)
    kind = type(est).__name__
    if kind.startswith("HistGradientBoosting"):
        values, base = _hgb(est, _dense(z))
        out = "log-odds" if clf else "value"
        return _reorder(values, base, names, contract, out, "TreeSHAP (path-dependent)")
    if kind.startswith("RandomForest"):
        values, base = _forest(est, _dense(z), clf)
        out = "probability" if clf else "value"
        return _reorder(values, base, names, contract, out, "TreeSHAP (path-dependent)")
    if kind in ("LogisticRegression", "LinearRegression"):
        return _linear(pre, est, z, contract, clf)
    raise ValueError(f"explain: no exact method for a {kind} model")


def raw_output(loaded: Loaded, df: pd.DataFrame, contract: Contract) -> np.ndarray:
    """The model's raw output (the quantity contributions add up to) for each row."""
    import numpy as np

    from mlops import models

    x = models.align_categories(models.matrix(df, contract), loaded.categories)
    if loaded.flavor == "xgboost":
        booster = _booster(loaded.model)
        return np.asarray(booster.inplace_predict(x, predict_type="margin"), dtype=np.float64)
    model = loaded.model
    xs = models.fit_input(x, "sklearn")
    est = model[-1]
    if type(est).__name__.startswith("RandomForest"):
        return models.predict(model, xs, contract.task)
    if contract.task == "classification":
        return np.asarray(model.decision_function(xs), dtype=np.float64)
    return np.asarray(model.predict(xs), dtype=np.float64)


def _dense(z: Any) -> np.ndarray:
    import numpy as np

    return np.asarray(z.toarray() if hasattr(z, "toarray") else z, dtype=np.float64)


def _booster(model: Any) -> Any:
    return model.get_booster() if hasattr(model, "get_booster") else model


def _xgboost(model: Any, x: pd.DataFrame, clf: bool, approximate: bool) -> Contributions:
    import numpy as np
    import xgboost as xgb

    booster = _booster(model)
    d = xgb.DMatrix(x, enable_categorical=True)
    c = np.asarray(
        booster.predict(d, pred_contribs=True, approx_contribs=approximate), dtype=np.float64
    )
    method = "path attribution (Saabas, XGBoost)" if approximate else "TreeSHAP (XGBoost)"
    return Contributions(
        c[:, :-1], c[:, -1], list(x.columns), "log-odds" if clf else "value", method
    )


def _reorder(
    values: np.ndarray,
    base: np.ndarray,
    names: list[str],
    contract: Contract,
    output: str,
    method: str,
) -> Contributions:
    """Columns from the estimator's order (categories first) to the contract's."""
    order = [names.index(f) for f in contract.feature_names]
    return Contributions(values[:, order], base, list(contract.feature_names), output, method)


def _hgb(est: Any, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TreeSHAP of a fitted HistGradientBoosting model on its encoded input ``z``."""
    import numpy as np

    phi = np.zeros(z.shape)
    base = float(np.ravel(est._baseline_prediction)[0])
    for (predictor,) in est._predictors:
        nodes = predictor.nodes
        bitsets = predictor.raw_left_cat_bitsets
        feat = nodes["feature_idx"].astype(int)
        xv = z[:, feat].T  # (nodes, rows)
        missing = np.isnan(xv)
        numeric = xv <= nodes["num_threshold"][:, None]
        cat = nodes["is_categorical"].astype(bool)
        go_left = np.where(missing, nodes["missing_go_to_left"].astype(bool)[:, None], numeric)
        for i in np.flatnonzero(cat & ~nodes["is_leaf"].astype(bool)):
            code = np.nan_to_num(xv[i], nan=0).astype(np.int64).clip(0, 255)
            words = bitsets[nodes["bitset_idx"][i]]
            inside = (words[code // 32] >> (code % 32).astype(np.uint32)) & 1
            go_left[i] = np.where(missing[i], bool(nodes["missing_go_to_left"][i]), inside == 1)
        leaf = nodes["is_leaf"].astype(bool)
        tree = Tree(
            left=np.where(leaf, -1, nodes["left"].astype(np.int64)),
            right=np.where(leaf, -1, nodes["right"].astype(np.int64)),
            feature=feat,
            value=nodes["value"].astype(np.float64),
            cover=nodes["count"].astype(np.float64),
            go_left=go_left,
        )
        values, expected = tree_shap.shap_values(tree, z.shape[1])
        phi += values
        base += expected
    return phi, np.full(len(z), base)


def _forest(est: Any, z: np.ndarray, clf: bool) -> tuple[np.ndarray, np.ndarray]:
    """TreeSHAP of a fitted random forest (its trees averaged) on its encoded input ``z``."""
    import numpy as np

    z32 = z.astype(np.float32).astype(np.float64)  # sklearn's trees compare in float32
    phi = np.zeros(z.shape)
    base = 0.0
    for t in est.estimators_:
        tr = t.tree_
        feat = np.maximum(tr.feature, 0)
        xv = z32[:, feat].T
        go_left = xv <= tr.threshold[:, None]
        if hasattr(tr, "missing_go_to_left"):
            go_left = np.where(np.isnan(xv), tr.missing_go_to_left.astype(bool)[:, None], go_left)
        value = tr.value[:, 0, 1] if clf else tr.value[:, 0, 0]
        if clf:  # class fractions per node (or counts, in older versions)
            value = value / tr.value[:, 0, :].sum(axis=1)
        tree = Tree(
            left=tr.children_left,
            right=tr.children_right,
            feature=feat,
            value=value.astype(np.float64),
            cover=tr.weighted_n_node_samples.astype(np.float64),
            go_left=go_left,
        )
        values, expected = tree_shap.shap_values(tree, z.shape[1])
        phi += values
        base += expected
    k = len(est.estimators_)
    return phi / k, np.full(len(z), base / k)


def _linear(pre: Any, est: Any, z: Any, contract: Contract, clf: bool) -> Contributions:
    """Exact SHAP of a linear model against the training mean of its standardised input."""
    import numpy as np

    zz = _dense(z)
    coef = np.ravel(est.coef_)
    parts = coef * zz  # numeric columns are centred by the scaler; a category's reference is 0
    owners: list[str] = []
    ct = pre[-1] if hasattr(pre, "steps") else pre
    for name, _trans, cols in ct.transformers_:
        if name == "remainder" or not len(cols):
            continue
        sl = ct.output_indices_[name]
        width = sl.stop - sl.start
        if name == "cat":
            oh = ct.named_transformers_["cat"][-1]
            counts = getattr(oh, "_n_features_outs", None) or [len(c) for c in oh.categories_]
            owners += [c for c, k in zip(cols, counts, strict=True) for _ in range(k)]
        else:
            owners += list(cols)[:width]
    values = np.zeros((len(zz), len(contract.feature_names)))
    for j, owner in enumerate(owners):
        values[:, contract.feature_names.index(owner)] += parts[:, j]
    base = np.full(len(zz), float(np.ravel(est.intercept_)[0]))
    return Contributions(
        values,
        base,
        list(contract.feature_names),
        "log-odds" if clf else "value",
        "linear (coefficient x standardised value)",
    )


# ---- summaries ------------------------------------------------------------------------


def mean_abs(values: np.ndarray, features: list[str]) -> dict[str, float]:
    """Pure: mean absolute contribution per feature, largest first."""
    import numpy as np

    m = np.abs(values).mean(axis=0) if len(values) else np.zeros(len(features))
    return dict(sorted(zip(features, map(float, m), strict=True), key=lambda p: -p[1]))


def _largest(c: Contributions, k: int) -> np.ndarray:
    """Per row, the indices of the ``k`` largest absolute contributions, largest first."""
    import numpy as np

    return np.argsort(-np.abs(c.values), axis=1, kind="stable")[:, :k]


def top_k(c: Contributions, k: int) -> list[list[dict[str, Any]]]:
    """Pure: per row, the ``k`` features with the largest absolute contribution."""
    return [
        [{"feature": c.features[j], "contribution": float(c.values[r, j])} for j in row]
        for r, row in enumerate(_largest(c, k))
    ]


def top_columns(c: Contributions, k: int) -> dict[str, Any]:
    """Pure: ``explain_base`` and ``explain_feature_i`` / ``explain_contribution_i``, i=1..k.

    The columns ``score`` adds: the ``k`` features of each row with the largest absolute
    contribution, largest first, and the base value they add to.
    """
    import numpy as np

    order = _largest(c, min(k, len(c.features)))
    names = np.asarray(c.features, dtype=object)
    out: dict[str, Any] = {"explain_base": c.base}
    for i in range(order.shape[1]):
        out[f"explain_feature_{i + 1}"] = names[order[:, i]]
        out[f"explain_contribution_{i + 1}"] = np.take_along_axis(
            c.values, order[:, i : i + 1], axis=1
        )[:, 0]
    return out


def sample_rows(df: pd.DataFrame, n: int = MAX_ROWS) -> pd.DataFrame:
    """At most ``n`` rows of ``df``, a seeded sample: what the card and a run explain."""
    return df.sample(n, random_state=0) if len(df) > n else df


def attributions(
    loaded: Loaded,
    df: pd.DataFrame,
    contract: Contract,
    slice_keys: dict[str, np.ndarray],
    max_rows: int = MAX_ROWS,
    min_rows: int = 100,
) -> dict[str, Any]:
    """The card's explanation: mean |SHAP| per feature on the holdout, overall and per slice.

    ``slice_keys`` holds each slice column's value per row of ``df``, as the card shows it
    (``card.slice_keys``). Overall on a seeded sample of ``max_rows``; a slice value the
    sample holds fewer than ``min_rows`` of gets more of its own rows (up to ``min_rows``)
    for its own line.
    """
    import numpy as np
    import pandas as pd

    df = df.reset_index(drop=True)
    keys = {col: pd.Series(k) for col, k in slice_keys.items()}
    sample = sample_rows(df, max_rows)
    picked = sample.index
    for k in keys.values():
        have = k[sample.index].value_counts()
        rest = k.drop(sample.index)
        for value, n in rest.value_counts().items():
            need = min_rows - int(have.get(value, 0))
            if 0 < need <= n:
                picked = picked.append(rest[rest == value].sample(need, random_state=0).index)
    picked = picked.unique()  # the sample's rows first, in its order
    try:
        c = contributions(loaded, df.loc[picked], contract)
    except ValueError as exc:  # a model kind without an exact method: the card says so
        return {"error": str(exc)}
    slices: dict[str, list[dict[str, Any]]] = {}
    for col, k in keys.items():
        values = k.loc[picked].to_numpy()
        rows = []
        for value in sorted(set(values)):
            pos = np.flatnonzero(values == value)
            entry: dict[str, Any] = {"value": str(value), "rows": len(pos)}
            if len(pos) >= min_rows:
                top = mean_abs(c.values[pos], c.features)
                entry["top"] = dict(list(top.items())[:SLICE_TOP])
            rows.append(entry)
        slices[col] = sorted(rows, key=lambda r: (-r["rows"], r["value"]))
    n = len(sample)
    return {
        "method": c.method,
        "output": c.output,
        "rows": n,
        "of_rows": len(df),
        "slice_rows": len(picked),
        "base": float(c.base[:n].mean()) if n else None,
        "overall": mean_abs(c.values[:n], c.features),
        "slices": slices,
        "min_rows": min_rows,
    }
