"""Model candidates built from config, the contract-driven feature matrix, and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops.config import Candidate
from mlops.contract import Contract

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Types skops refuses by default that our own sklearn candidates contain. They are
# trusted only because this project wrote the files it loads from its own registry.
SKOPS_TRUSTED = [
    "functools.partial",
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]

HIGHER_IS_BETTER = {
    "roc_auc": True,
    "average_precision": True,
    "r2": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
}


def matrix(df: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The model input: contract features in order, categories as ``category`` dtype.

    Categories named in the contract are fixed so codes never depend on the batch; an
    unseen value becomes missing, which every candidate handles.
    """
    import pandas as pd

    missing = [c for c in contract.feature_names if c not in df.columns]
    if missing:
        raise KeyError(f"feature columns {missing} are missing from the input frame")
    out = {}
    for f in contract.features:
        col = df[f.name]
        if f.dtype == "category":
            values = col.astype("string").astype(object).where(col.notna(), None)
            cats = f.categories
            out[f.name] = (
                pd.Categorical(values, categories=cats) if cats else values.astype("category")
            )
        else:
            out[f.name] = pd.to_numeric(col, errors="coerce").astype("float64")
    return pd.DataFrame(out, index=df.index)


def align_categories(x: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """Give category columns the category sets seen in training."""
    import pandas as pd

    x = x.copy()
    for name, cats in categories.items():
        x[name] = pd.Categorical(x[name].astype(object), categories=cats)
    return x


def target(df: pd.DataFrame, contract: Contract) -> np.ndarray:
    """The target column: int32 labels (classification) or float64 values."""
    import numpy as np

    y = df[contract.target].to_numpy()
    return y.astype(np.int32) if contract.task == "classification" else y.astype(np.float64)


def build(candidate: Candidate, contract: Contract, seed: int) -> Any:
    """An unfitted estimator for a candidate; sklearn ones include their encoders."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    cats = [f.name for f in contract.features if f.dtype == "category"]
    nums = [f.name for f in contract.features if f.dtype != "category"]
    clf = contract.task == "classification"
    p = dict(candidate.params)
    kind = candidate.kind

    if kind == "xgboost":
        import xgboost as xgb

        cls = xgb.XGBClassifier if clf else xgb.XGBRegressor
        p.setdefault("tree_method", "hist")
        p.setdefault("n_jobs", 2)
        return cls(enable_categorical=True, random_state=seed, **p)

    if kind == "sklearn_hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        est = (HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor)(
            random_state=seed, categorical_features=list(range(len(cats))), **p
        )
        enc = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=float("nan"),
            encoded_missing_value=float("nan"),
        )
        pre = ColumnTransformer([("cat", enc, cats), ("num", "passthrough", nums)])
        return Pipeline([("pre", pre), ("model", est)])

    if kind == "sklearn_random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        est = (RandomForestClassifier if clf else RandomForestRegressor)(
            random_state=seed, n_jobs=2, **p
        )
        enc = Pipeline(
            [
                (
                    "ord",
                    OrdinalEncoder(
                        handle_unknown="use_encoded_value",
                        unknown_value=-1,
                        encoded_missing_value=-1,
                    ),
                ),
            ]
        )
        pre = ColumnTransformer(
            [
                ("cat", enc, cats),
                ("num", SimpleImputer(strategy="median", keep_empty_features=True), nums),
            ]
        )
        return Pipeline([("pre", pre), ("model", est)])

    if kind in ("sklearn_logistic_regression", "sklearn_linear_regression"):
        from sklearn.linear_model import LinearRegression, LogisticRegression

        est = LogisticRegression(max_iter=1000, **p) if clf else LinearRegression(**p)
        pre = ColumnTransformer(
            [
                (
                    "cat",
                    Pipeline(
                        [
                            ("imp", SimpleImputer(strategy="constant", fill_value="__missing__")),
                            ("oh", OneHotEncoder(handle_unknown="ignore", min_frequency=20)),
                        ]
                    ),
                    cats,
                ),
                (
                    "num",
                    Pipeline(
                        [
                            ("imp", SimpleImputer(strategy="median", keep_empty_features=True)),
                            ("sc", StandardScaler()),
                        ]
                    ),
                    nums,
                ),
            ]
        )
        return Pipeline([("pre", pre), ("model", est)])

    raise ValueError(f"unknown model kind {kind!r}")


def fit_input(x: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Sklearn encoders take plain objects; XGBoost takes the ``category`` dtype."""
    if kind == "xgboost":
        return x
    x = x.copy()
    for c in x.columns:
        if str(x[c].dtype) == "category":
            x[c] = x[c].astype(object).where(x[c].notna(), None)
    return x


def predict(model: Any, x: pd.DataFrame, task: str) -> np.ndarray:
    """Probability of the positive class for classification, the value for regression."""
    import numpy as np

    if task == "classification":
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)
    return np.asarray(model.predict(x), dtype=np.float64)


def metrics(y: np.ndarray, pred: np.ndarray, task: str) -> dict[str, float]:
    """Holdout metrics; ``pred`` is a probability (classification) or a value."""
    import numpy as np
    from sklearn import metrics as m

    if task == "classification":
        out = {
            "log_loss": float(m.log_loss(y, np.clip(pred, 1e-7, 1 - 1e-7), labels=[0, 1])),
            "brier": float(m.brier_score_loss(y, pred)),
            "accuracy": float(m.accuracy_score(y, pred >= 0.5)),
            "positive_rate": float(np.mean(y)),
        }
        if len(np.unique(y)) > 1:
            out["roc_auc"] = float(m.roc_auc_score(y, pred))
            out["average_precision"] = float(m.average_precision_score(y, pred))
        return out
    return {
        "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
        "mae": float(m.mean_absolute_error(y, pred)),
        "r2": float(m.r2_score(y, pred)),
    }


def better(a: float, b: float, metric: str) -> bool:
    """Whether ``a`` is a better value of ``metric`` than ``b``."""
    return a > b if HIGHER_IS_BETTER[metric] else a < b
