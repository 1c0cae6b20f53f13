"""Model candidates built from config, the contract-driven feature matrix, and metrics."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from mlops.config import Candidate
from mlops.contract import Contract

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# The candidate's curves ``evaluate`` writes under ``plots/evaluate/`` for ``dvc plots``:
# file -> (x column, y column), by task.
PLOTS: dict[str, dict[str, tuple[str, str]]] = {
    "classification": {"roc.csv": ("fpr", "tpr"), "precision_recall.csv": ("recall", "precision")},
    "regression": {"residuals.csv": ("actual", "predicted")},
}

# Types skops refuses by default that our own sklearn candidates contain. They are
# trusted only because this project wrote the files it loads from its own registry.
SKOPS_TRUSTED = [
    "functools.partial",
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]

OTHER = "other"
"""The one category that values beyond ``train.max_categories`` are mapped to."""
HGB_MAX_BINS = 255

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


class CategoryCap(TypedDict):
    """A category column capped at training: how many values it had and kept."""

    cardinality: int
    kept: int
    kept_rows: float


class CandidateError(ValueError):
    """A candidate cannot be fitted on this data; ``column`` names the column when known."""

    def __init__(self, message: str, column: str | None = None) -> None:
        """Keep the message and the column at fault."""
        super().__init__(message)
        self.column = column


@dataclass
class Failed:
    """One candidate that could not be fitted or scored, and why (see :func:`explain`)."""

    candidate: Candidate
    reason: str
    column: str | None = None
    detail: str = ""

    def describe(self) -> str:
        """``name (kind, column 'c'): reason``, for people."""
        col = f", column {self.column!r}" if self.column else ""
        return f"{self.candidate.name} ({self.candidate.kind}{col}): {self.reason}"


def is_capped(categories: list[str]) -> bool:
    """Whether a learned category list maps every value outside it to :data:`OTHER`.

    A capped list ends with ``OTHER`` (see :func:`learn_categories`); the list travels
    with the model (``features.json``), so scoring applies the same mapping.
    """
    return len(categories) > 2 and categories[-1] == OTHER


def learn_categories(
    x: pd.DataFrame, max_categories: int
) -> tuple[dict[str, list[str]], dict[str, CategoryCap]]:
    """The category set of each category column as the model learns it, and the caps.

    A column with more than ``max_categories`` distinct values in ``x`` (the training
    rows) keeps its most frequent ones (ties by value) and gets ``OTHER`` last, which
    :func:`align_categories` maps every other value to. An uncapped column keeps its
    categories; a real ``"other"`` in it is moved first so the list is not read as capped.
    """
    cats: dict[str, list[str]] = {}
    caps: dict[str, CategoryCap] = {}
    for name in x.columns:
        if str(x[name].dtype) != "category":
            continue
        counts = x[name].value_counts(sort=False)
        counts = counts[counts > 0]
        if len(counts) <= max_categories:
            learned = [str(v) for v in x[name].cat.categories]
            if is_capped(learned):
                learned = [OTHER, *learned[:-1]]
            cats[name] = learned
            continue
        ranked = sorted(((-int(n), str(v)) for v, n in counts.items()))
        kept = [v for _, v in ranked if v != OTHER][:max_categories]
        cats[name] = [*sorted(kept), OTHER]
        total = int(counts.sum())
        share = int(counts[counts.index.astype(str).isin(kept)].sum()) / total
        caps[name] = CategoryCap(cardinality=len(counts), kept=len(kept), kept_rows=share)
    return cats, caps


def align_categories(x: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """Give category columns the category sets learned in training.

    In a capped column (:func:`is_capped`) a value outside the set becomes ``OTHER``;
    elsewhere it becomes missing, which every candidate handles.
    """
    import pandas as pd

    x = x.copy()
    for name, cats in categories.items():
        values = x[name].astype(object)
        if is_capped(cats):
            values = values.where(values.isna() | values.isin(cats), OTHER)
        x[name] = pd.Categorical(values, categories=cats)
    return x


def input_columns(kind: str, contract: Contract) -> list[str]:
    """The feature order the estimator itself sees (sklearn encodes categories first)."""
    if kind == "xgboost":
        return list(contract.feature_names)
    cats = [f.name for f in contract.features if f.dtype == "category"]
    return cats + [f.name for f in contract.features if f.dtype != "category"]


def check_input(candidate: Candidate, x: pd.DataFrame) -> None:
    """Refuse, before fitting, a category column the candidate cannot take.

    HistGradientBoosting takes at most ``max_bins`` (255) distinct codes per category
    column, missing values counted as one.
    """
    if candidate.kind != "sklearn_hist_gradient_boosting":
        return
    limit = int(candidate.params.get("max_bins", HGB_MAX_BINS))
    for name in x.columns:
        if str(x[name].dtype) != "category":
            continue
        missing = int(bool(x[name].isna().any()))
        n = int(x[name].nunique(dropna=True)) + missing
        if n > limit:
            raise CandidateError(
                f"category column {name!r} has {n} distinct values in the training rows"
                f"{' (missing counted as one)' if missing else ''}, more than "
                f"HistGradientBoosting's max_bins={limit}; set train.max_categories to at "
                f"most {limit - 1 - missing} in params.yaml, or raise this candidate's "
                f"max_bins (at most {HGB_MAX_BINS})",
                column=name,
            )


def explain(exc: BaseException, columns: list[str]) -> tuple[str, str | None]:
    """An estimator's error for people, and the column it is about when known.

    The column comes from the error (``CandidateError``), a quoted feature name, or an
    index into ``columns`` (the order the estimator sees, :func:`input_columns`).
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, CandidateError):
        return first, exc.column
    reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    m = re.search(r"(?:feature|column) at index (\d+)", text)
    if m and int(m.group(1)) < len(columns):
        return reason, columns[int(m.group(1))]
    return reason, next((c for c in columns if f"'{c}'" in text or f'"{c}"' in text), None)


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


def requirements(kind: str) -> list[str]:
    """The pinned packages a logged model of ``kind`` loads with (inferring them is slow)."""
    import importlib.metadata

    pkgs = ["mlflow", "scikit-learn", "pandas", "numpy", "scipy"]
    pkgs += ["xgboost"] if kind == "xgboost" else ["skops"]
    return [f"{p}=={importlib.metadata.version(p)}" for p in pkgs]


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


def metrics(
    y: np.ndarray, pred: np.ndarray, task: str, threshold: float | None = None
) -> dict[str, float]:
    """Holdout metrics; ``pred`` is a probability (classification) or a value.

    With a ``threshold`` (classification) they add it, and the precision, recall and F1 of
    ``pred >= threshold``; accuracy stays at 0.5, comparable across versions.
    """
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
        if threshold is not None:
            p, r, f, _ = m.precision_recall_fscore_support(
                y, pred >= threshold, average="binary", zero_division=0
            )
            out.update(threshold=float(threshold), precision=float(p), recall=float(r), f1=float(f))
        return out
    return {
        "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
        "mae": float(m.mean_absolute_error(y, pred)),
        "r2": float(m.r2_score(y, pred)),
    }


def importance(
    model: Any, kind: str, y: np.ndarray, x_ho: pd.DataFrame, task: str
) -> dict[str, float]:
    """Native importances where the model has them, else permutation importance."""
    cols = list(x_ho.columns)
    if hasattr(model, "feature_importances_"):
        vals = [float(v) for v in model.feature_importances_]
    else:
        vals = _permutation_importance(model, kind, y, x_ho, task)
    pairs = sorted(zip(cols, vals, strict=True), key=lambda p: -p[1])
    return dict(pairs)


def _permutation_importance(
    model: Any,
    kind: str,
    y: np.ndarray,
    x_ho: pd.DataFrame,
    task: str,
    rows: int = 2000,
    seed: int = 0,
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
    pred = predict(model, fit_input(pd.concat(blocks, ignore_index=True), kind), task)

    def score(p: np.ndarray) -> float:
        if task != "classification":
            return float(m.r2_score(y, p))
        if len(set(y.tolist())) > 1:
            return float(m.roc_auc_score(y, p))
        return float(m.accuracy_score(y, p >= 0.5))

    base = score(pred[:n])
    return [base - score(pred[(i + 1) * n : (i + 2) * n]) for i in range(len(x.columns))]


def describe_caps(capped: dict[str, CategoryCap], limit: int) -> list[str]:
    """Pure: one line per capped category column, for the log and the summary."""
    return [
        f"{name}: {cap['cardinality']} categories in the training rows, kept the "
        f"{cap['kept']} most frequent ({cap['kept_rows']:.1%} of rows), the rest -> "
        f"{OTHER!r} (train.max_categories={limit})"
        for name, cap in capped.items()
    ]


def better(a: float, b: float, metric: str) -> bool:
    """Whether ``a`` is a better value of ``metric`` than ``b``."""
    return a > b if HIGHER_IS_BETTER[metric] else a < b
