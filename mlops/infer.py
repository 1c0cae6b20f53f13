"""Infer a project's configuration from a data frame: the pure core of ``mlops init``.

Each value comes with the reason it was chosen (``Guess``): ``mlops init`` writes them as
commented lines of ``params.yaml``. Nothing is read or written here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops import partitions
from mlops.source import to_utc

if TYPE_CHECKING:
    import pandas as pd

MAX_LISTED_CATEGORIES = 50  # above this a category feature keeps no list of values
UNSEEN_TOLERANCE = 0.01  # share of unseen values a listed category feature lets through
LEAK_SCORE = 0.98  # AUC (classification) or |correlation| (regression) of one column alone
MIN_PARTITIONS = 12  # the coarsest frequency giving this many non-empty partitions wins
COARSEST_FIRST = ("year", "quarter", "month", "week", "day")
ROW_KEY = "row_id"


class InferError(ValueError):
    """The data cannot be made into a project as asked; the message names the column."""


@dataclass(frozen=True)
class Guess:
    """One inferred value and the reason it was chosen (the comment beside it)."""

    value: Any
    why: str


@dataclass
class Plan:
    """All ``mlops init`` infers: ``guess`` holds each value with its reason, by name.

    The names: task, target (the contract's, maybe derived), target_range (regression),
    keys, timestamp_format, timezone, frequency, train, holdout, score, min_rows, metric,
    floor.
    """

    timestamp: str
    guess: dict[str, Guess]
    counts: dict[str, int]  # rows per non-empty partition, oldest first
    features: list[Guess]  # contract feature dicts
    left_out: dict[str, str]  # column -> reason
    warnings: list[str]
    target_derive: dict[str, str] | None
    key_derive: dict[str, str] | None
    dropna: list[str]
    min_improvement: float


# --------------------------------------------------------------------------- timestamps
def timestamp_format(s: pd.Series) -> str | None:
    """``"%Y"`` for integer years (all in 1000..2999; pandas would read nanoseconds)."""
    import pandas as pd

    v = s.dropna()
    if v.empty or not pd.api.types.is_numeric_dtype(v) or v.dtype == bool:
        return None
    return "%Y" if bool((v == v.round()).all() and v.between(1000, 2999).all()) else None


def date_only(ts: pd.Series) -> bool:
    """Whether every timestamp falls on midnight: dates without a time of day."""
    t = ts.dropna()
    return bool((t == t.dt.normalize()).all())


# --------------------------------------------------------------------------- partitions
def choose_frequency(ts: pd.Series) -> Guess:
    """The partition size: the coarsest giving ``MIN_PARTITIONS`` non-empty partitions.

    When none does (a short or coarse series, such as yearly data), the one with the
    most non-empty partitions, the coarsest of those tied.
    """
    counts = {f: int(partitions.ids(ts, f).nunique()) for f in COARSEST_FIRST}
    seen = ", ".join(f"{counts[f]} {f}s" for f in COARSEST_FIRST)
    for f in COARSEST_FIRST:
        if counts[f] >= MIN_PARTITIONS:
            return Guess(f, f"coarsest with at least {MIN_PARTITIONS} non-empty ({seen})")
    best = max(COARSEST_FIRST, key=lambda f: counts[f])  # max keeps the first (coarsest) tie
    return Guess(best, f"most non-empty partitions, none reach {MIN_PARTITIONS} ({seen})")


def windows(pids: list[str]) -> tuple[Guess, Guess, Guess]:
    """Training window, holdout count and scored partitions over sorted non-empty ``pids``.

    Roughly the first half trains (at least two partitions), about a sixth of the window
    (at least one) is held out, and every later partition is scored.
    """
    n = len(pids)
    if n < 3:
        raise InferError(
            f"the data covers {n} partition(s) ({', '.join(pids)}); at least 3 are needed "
            "(two to train and hold out, one to score): give data over a longer time span"
        )
    n_train = min(max(2, math.ceil(n / 2)), n - 1)
    holdout = min(max(1, round(n_train / 6)), n_train - 1)
    train, score = pids[:n_train], pids[n_train:]
    return (
        Guess(train, f"the first {n_train} of {n} partitions with data"),
        Guess(holdout, f"the last {holdout} of the training window: evaluation and the gate"),
        Guess(score, f"the other {len(score)} partition(s), after the training window"),
    )


def min_rows(counts: dict[str, int]) -> Guess:
    """A row-count floor: half the smallest partition (at least 1)."""
    pid = min(counts, key=lambda p: counts[p])
    return Guess(max(1, counts[pid] // 2), f"half the smallest partition ({pid}: {counts[pid]})")


# --------------------------------------------------------------------------- target
def _name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", str(text)).strip("_") or "value"


def _ref(col: str) -> str:  # as pandas.eval reads it
    return col if col.isidentifier() else f"`{col}`"


def task_of(
    y: pd.Series, target: str, task: str | None = None
) -> tuple[Guess, str, dict[str, str] | None]:
    """Task, the contract's target column and, if needed, its derivation (``source.derive``).

    Two distinct values make a classification; a two-valued column that is not already
    boolean or 0/1 becomes a derived boolean ``<target>_is_<value>`` (the rarer value is
    the positive class). A numeric column with more values is a regression.
    """
    import pandas as pd

    values = y.dropna()
    distinct = values.unique()
    numeric = pd.api.types.is_numeric_dtype(values) and values.dtype != bool
    why = "--task"
    if task is None:
        task = "classification" if len(distinct) == 2 else "regression"
        why = f"the target has {len(distinct)} distinct values"
    if (task == "regression" and not (numeric and len(distinct) > 2)) or (
        task == "classification" and len(distinct) != 2
    ):
        shown = ", ".join(map(str, distinct[:5])) + (", ..." if len(distinct) > 5 else "")
        raise InferError(
            f"target {target!r} has {len(distinct)} distinct value(s) ({shown}): mlops needs "
            "two values for a classification or numbers for a regression (--task)"
        )
    if task == "regression" or values.dtype == bool or {str(v) for v in distinct} <= {"0", "1"}:
        return Guess(task, why), target, None
    counts = values.value_counts()
    positive = sorted(counts.index, key=lambda v: (counts[v], str(v)))[0]
    name = f"{_name(target)}_is_{_name(positive)}"
    literal = repr(positive) if isinstance(positive, str) else str(positive)
    return Guess(task, why), name, {"name": name, "expr": f"{_ref(target)} == {literal}"}


def target_range(y: pd.Series) -> Guess:
    """``(target_min, target_max)`` of a regression target, with a margin."""
    lo, hi = _margin(float(y.min()), float(y.max()), non_negative=bool((y >= 0).all()))
    return Guess((lo, hi), f"seen {_num(float(y.min()))}..{_num(float(y.max()))}, plus a margin")


def gate(task: str, y: pd.Series) -> tuple[Guess, Guess, float]:
    """Metric, promotion floor and minimum improvement that fit the task."""
    if task == "classification":
        return Guess("roc_auc", task), Guess(0.6, "AUC a model must reach (0.5: chance)"), 0.005
    std = float(y.std())
    floor = Guess(_round_up(std), "RMSE a model must beat: the target's standard deviation")
    return Guess("rmse", task), floor, float(f"{std * 0.01:.2g}")


# --------------------------------------------------------------------------- columns
def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _round_up(x: float) -> float:  # to two significant digits
    if x <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(x)) - 1)
    return float(f"{math.ceil(x / step) * step:.6g}")


def _margin(lo: float, hi: float, non_negative: bool) -> tuple[float, float]:
    """``[lo, hi]`` widened by a tenth of its span and rounded outwards; >= 0 stays >= 0."""
    pad = (hi - lo) * 0.1 or max(abs(hi) * 0.1, 1.0)
    step = 10 ** math.floor(math.log10(pad))
    out_lo = math.floor((lo - pad) / step) * step
    out_hi = math.ceil((hi + pad) / step) * step
    if non_negative:
        out_lo = max(0.0, out_lo)
    return float(f"{out_lo:.6g}"), float(f"{out_hi:.6g}")


def dtype_of(s: pd.Series) -> str:
    """The contract dtype of a column: bool, int, float or category."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(s):
        return "bool"
    values = s.dropna()
    if s.dtype == object and not values.empty and set(values.unique()) <= {True, False}:
        return "bool"
    if pd.api.types.is_integer_dtype(s):
        return "int"
    if pd.api.types.is_float_dtype(s):
        return "float"
    return "category"


def _looks_like_dates(s: pd.Series) -> bool:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(s):
        return True
    if s.dtype != object:
        return False
    sample = s.dropna().astype(str).head(200)
    if sample.empty or not sample.str.contains(r"\d[-/:]\d", regex=True).all():
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() > 0.95)


def leave_out(s: pd.Series) -> str | None:
    """Why a column should not be a feature (constant, id-like, a date), or None."""
    import pandas as pd

    values = s.dropna()
    if values.nunique() <= 1:
        shown = repr(values.iloc[0]) if len(values) else "missing"
        return f"constant ({shown} in every row): it cannot inform the model"
    if _looks_like_dates(s):
        return "a date or time other than the timestamp (derive features from it if needed)"
    unique = values.nunique() == len(s) and len(s) >= 20
    if unique and dtype_of(s) == "category":
        return "id-like: a different value in every row (pass it as --key if it is the key)"
    if unique and pd.api.types.is_integer_dtype(s) and values.max() - values.min() == len(s) - 1:
        return "id-like: consecutive integers, one per row (a row number)"
    return None


def _auc(score: pd.Series, positive: pd.Series) -> float:
    """ROC AUC of ``score`` for the boolean ``positive``, from ranks (ties averaged)."""
    ranks = score.rank()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def leak_score(x: pd.Series, y: pd.Series, task: str) -> float:
    """How well one column alone predicts the target: AUC (either direction) or |corr|.

    A category column is scored by its per-value target mean. Rows where either side is
    missing are skipped.
    """
    import pandas as pd

    ok = x.notna() & y.notna()
    x, y = x[ok], y[ok]
    if len(x) < 10:
        return 0.0
    if dtype_of(x) == "category":
        if x.nunique() > MAX_LISTED_CATEGORIES:
            return 0.0  # per-value means of a high-cardinality column overfit
        x = y.astype(float).groupby(x.astype(str)).transform("mean")
    x = pd.to_numeric(x.astype(float), errors="coerce")
    if task == "classification":
        auc = _auc(x, y.astype(bool))
        return max(auc, 1 - auc)
    corr = x.corr(y.astype(float))
    return 0.0 if pd.isna(corr) else abs(float(corr))


def feature(name: str, s: pd.Series, pids: pd.Series) -> Guess:
    """A contract feature for column ``s``: dtype, range, categories and null tolerance.

    ``pids`` names each row's partition: the null tolerance comes from the worst one of
    at least half the median size.
    """
    dtype = dtype_of(s)
    spec: dict[str, Any] = {"name": name, "dtype": dtype}
    notes: list[str] = []
    values = s.dropna()
    if dtype in ("int", "float"):
        lo, hi = float(values.min()), float(values.max())
        spec["min"], spec["max"] = _margin(lo, hi, non_negative=lo >= 0)
        if dtype == "int":
            spec["min"], spec["max"] = int(spec["min"]), int(spec["max"])
        notes.append(f"seen {_num(lo)}..{_num(hi)}")
    elif dtype == "category":
        cats = sorted({str(v) for v in values.unique()})
        if len(cats) <= MAX_LISTED_CATEGORIES:
            spec["categories"] = cats
            spec["unseen_category_tolerance"] = UNSEEN_TOLERANCE
            notes.append(f"{len(cats)} values seen; other values fail beyond 1%")
        else:
            notes.append(f"{len(cats)} values: too many to list, any value passes")
    sizes = pids.value_counts()  # a stub partition (a few rows at the edge) would set it alone
    worst = s.isna().groupby(pids.to_numpy()).mean()
    worst = worst[worst.index.isin(sizes[sizes >= sizes.median() / 2].index)]
    spec["max_null_fraction"] = min(1.0, _round_up(float(worst.max()) * 1.5 + 0.01))
    if worst.max() > 0:
        notes.append(f"worst partition {float(worst.max()):.1%} missing ({worst.idxmax()})")
    else:
        notes.append("never missing")
    return Guess(spec, "; ".join(notes))


# --------------------------------------------------------------------------- all of it
def columns(
    df: pd.DataFrame, y: pd.Series, task: str, pids: pd.Series, skip: set[str]
) -> tuple[list[Guess], dict[str, str]]:
    """The features among ``df``'s columns (but ``skip``), and why the others are left out."""
    features: list[Guess] = []
    left_out: dict[str, str] = {}
    for col in (str(c) for c in df.columns):
        if col in skip:
            continue
        reason = leave_out(df[col])
        leak = leak_score(df[col], y, task) if reason is None else 0.0
        if leak > LEAK_SCORE:
            what = "AUC" if task == "classification" else "|correlation|"
            reason = f"looks like a leak of the target: alone it predicts it ({what} {leak:.3f})"
        if reason is None:
            features.append(feature(col, df[col], pids))
        else:
            left_out[col] = reason
    return features, left_out


def _timestamps(
    df: pd.DataFrame, col: str, fmt: str | None, timezone: str | None
) -> tuple[pd.Series, Guess, Guess]:
    fmt_guess = Guess(fmt, "--timestamp-format")
    if not fmt:
        found = timestamp_format(df[col])
        fmt_guess = Guess(found, "integer years" if found else "parsed without a format")
    ts = to_utc(df, col, timezone or "UTC", f"column {col!r}", fmt_guess.value)
    if ts.isna().any():
        raise InferError(f"timestamp column {col!r} has {int(ts.isna().sum())} empty rows")
    if timezone:
        return ts, fmt_guess, Guess(timezone, "--timezone")
    if date_only(ts):
        return ts, fmt_guess, Guess("UTC", "dates without a time of day: cut at UTC midnight")
    return ts, fmt_guess, Guess("UTC", "naive times are read as UTC: set the zone they are in")


def _key(df: pd.DataFrame, keys: list[str], warnings: list[str]) -> Guess:
    if keys:
        dupes = df[keys].duplicated(keep=False)
        if dupes.any():
            shown = "; ".join(map(str, df.loc[dupes, keys].head(3).to_dict("records")))
            raise InferError(
                f"key column(s) {keys}: {int(dupes.sum())} rows share a key (e.g. {shown}); "
                "give unique --key column(s), or none for a stable hash of each row"
            )
        return Guess(keys, "--key")
    if df.duplicated().any():
        warnings.append(
            f"{int(df.duplicated().sum())} rows repeat another row exactly: they share a "
            f"{ROW_KEY} and validate refuses them; drop them from the source or give --key"
        )
    return Guess([ROW_KEY], "no --key: a stable hash of each whole row (source.derive)")


def infer(
    df: pd.DataFrame,
    target: str,
    timestamp: str,
    keys: list[str] | None = None,
    task: str | None = None,
    fmt: str | None = None,
    timezone: str | None = None,
) -> Plan:
    """Infer the whole plan for ``df`` (the source as read, before any derivation).

    Raises:
        InferError: a named column is missing, the key is not unique, the target fits
            no task, or the data spans too few partitions.
    """
    keys = list(keys or [])
    missing = [c for c in [target, timestamp, *keys] if c not in df.columns]
    if missing:
        raise InferError(f"column(s) {missing} not in the source; it has {list(df.columns)}")
    warnings: list[str] = []
    unlabelled = int(df[target].isna().sum())
    if unlabelled:
        df = df[df[target].notna()].reset_index(drop=True)
        warnings.append(f"{target}: {unlabelled} rows have no target; source.dropna drops them")
    ts, fmt_guess, tz = _timestamps(df, timestamp, fmt, timezone)
    freq = choose_frequency(ts)
    pids = partitions.ids(ts, freq.value)
    counts = {str(p): int(n) for p, n in pids.value_counts().items()}
    counts = {p: counts[p] for p in sorted(counts, key=partitions.start)}
    train, holdout, score = windows(list(counts))
    key = _key(df, keys, warnings)

    task_guess, target_col, target_derive = task_of(df[target], target, task)
    y = df[target]
    if target_derive is not None:
        y = df.eval(target_derive["expr"])
    elif task_guess.value == "classification":
        y = y.astype(bool) if y.dtype == bool else y.astype(float) > 0
    metric, floor, improvement = gate(task_guess.value, y)
    features, left_out = columns(df, y, task_guess.value, pids, {timestamp, target, *keys})
    warnings += [f"{col}: left out, {why}" for col, why in left_out.items()]
    if not features:
        raise InferError(f"no column is left to be a feature: {left_out}")
    guess = {
        "task": task_guess,
        "target": Guess(target_col, f"--target {target}" + (" as a flag" if target_derive else "")),
        "keys": key,
        "timestamp_format": fmt_guess,
        "timezone": tz,
        "frequency": freq,
        "train": train,
        "holdout": holdout,
        "score": score,
        "min_rows": min_rows(counts),
        "metric": metric,
        "floor": floor,
    }
    if task_guess.value == "regression":
        guess["target_range"] = target_range(y)
    return Plan(
        timestamp=timestamp,
        guess=guess,
        counts=counts,
        features=features,
        left_out=left_out,
        warnings=warnings,
        target_derive=target_derive,
        key_derive=None if keys else {"name": ROW_KEY, "hash": "row"},
        dropna=[target] if unlabelled or target_derive else [],
        min_improvement=improvement,
    )
