"""Inference of a project's configuration on small frames (``mlops.infer``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops import infer
from mlops.infer import InferError


def frame(n: int = 240, freq: str = "D", start: str = "2020-01-01", seed: int = 0) -> pd.DataFrame:
    """``n`` rows at ``freq`` with a numeric target, a float, an int, a category and a flag."""
    rng = np.random.default_rng(seed)
    x = rng.normal(10, 3, n)
    return pd.DataFrame(
        {
            "ts": pd.date_range(start, periods=n, freq=freq).strftime("%Y-%m-%d %H:%M"),
            "x": x,
            "count": rng.integers(0, 20, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "flag": rng.random(n) > 0.5,
            "y": x * 0.5 + rng.normal(0, 3, n),
        }
    )


# --------------------------------------------------------------------------- dtypes
def test_each_column_gets_its_contract_dtype() -> None:
    df = frame()
    # when the dtype of each column is inferred
    got = {c: infer.dtype_of(df[c]) for c in ("x", "count", "colour", "flag")}
    # then floats, integers, strings and booleans map to the contract's dtypes
    assert got == {"x": "float", "count": "int", "colour": "category", "flag": "bool"}
    assert infer.dtype_of(pd.Series([True, None, False], dtype=object)) == "bool"


def test_a_numeric_range_has_a_margin_and_stays_non_negative() -> None:
    pids = pd.Series(["2020"] * 4)
    # given a non-negative column 0..50 and one that goes below zero
    spec = infer.feature("rain", pd.Series([0.0, 10.0, 50.0, 25.0]), pids).value
    neg = infer.feature("temp", pd.Series([-7.1, 18.3, 0.0, 3.0]), pids).value
    # then each range holds the data with room around it, and >= 0 stays >= 0
    assert spec["min"] == 0 and 50 < spec["max"] <= 60
    assert neg["min"] < -7.1 and neg["max"] > 18.3
    assert neg["min"] >= -7.1 - 0.2 * 25.4 and neg["max"] <= 18.3 + 0.2 * 25.4


def test_an_integer_range_stays_integral() -> None:
    spec = infer.feature("n", pd.Series([3, 7, 19]), pd.Series(["a"] * 3)).value
    assert spec["dtype"] == "int"
    assert isinstance(spec["min"], int) and isinstance(spec["max"], int)
    assert spec["min"] <= 3 and spec["max"] >= 19


def test_the_null_tolerance_comes_from_the_worst_partition() -> None:
    # given a column missing in 1 of 10 rows of one partition and never in the other
    s = pd.Series([None] + [1.0] * 19)
    pids = pd.Series(["2020-01"] * 10 + ["2020-02"] * 10)
    spec = infer.feature("v", s, pids)
    # then the tolerance is above the worst partition's 10% (not the overall 5%), with room
    assert 0.1 < spec.value["max_null_fraction"] <= 0.2
    assert "2020-01" in spec.why
    # and a column never missing still tolerates a little
    never = infer.feature("w", pd.Series([1.0] * 20), pids).value
    assert 0 < never["max_null_fraction"] <= 0.02


def test_few_categories_are_listed_with_a_tolerance_and_many_are_not() -> None:
    pids = pd.Series(["p"] * 300)
    few = infer.feature("c", pd.Series(["b", "a", "c"] * 100), pids).value
    many = infer.feature("d", pd.Series([f"v{i % 120}" for i in range(300)]), pids).value
    assert few["categories"] == ["a", "b", "c"]
    assert 0 < few["unseen_category_tolerance"] <= 0.05
    assert "categories" not in many and "unseen_category_tolerance" not in many


# --------------------------------------------------------------------------- left out
def test_constant_id_like_and_date_columns_are_left_out_with_a_reason() -> None:
    n = 50
    df = pd.DataFrame(
        {
            "const": ["same"] * n,
            "uid": [f"id-{i:04d}" for i in range(n)],
            "rowno": range(n),
            "when": pd.date_range("2020-01-01", periods=n).strftime("%Y-%m-%d"),
            "ok": np.arange(n) % 7,
        }
    )
    reasons = {c: infer.leave_out(df[c]) for c in df.columns}
    assert "constant" in reasons["const"]
    assert "id-like" in reasons["uid"]
    assert "row number" in reasons["rowno"]
    assert "date" in reasons["when"]
    assert reasons["ok"] is None


def test_a_column_that_alone_predicts_the_target_is_a_leak() -> None:
    rng = np.random.default_rng(1)
    y = pd.Series(rng.random(400) > 0.5)
    leak = y.astype(float) * 10 + rng.normal(0, 0.1, 400)
    noise = pd.Series(rng.normal(0, 1, 400))
    # then the copy of the label scores near 1 and noise near chance
    assert infer.leak_score(leak, y, "classification") > infer.LEAK_SCORE
    assert infer.leak_score(noise, y, "classification") < 0.7
    # and the same holds for a regression target and a category column
    yr = pd.Series(rng.normal(0, 1, 400))
    assert infer.leak_score(yr * 2 + 0.001, yr, "regression") > infer.LEAK_SCORE
    label = y.map({True: "yes", False: "no"})
    assert infer.leak_score(label, y, "classification") > infer.LEAK_SCORE


def test_infer_leaves_out_the_key_the_timestamp_and_a_leak_and_says_why() -> None:
    df = frame()
    df["id"] = [f"k{i}" for i in range(len(df))]
    df["y_copy"] = df["y"] * 1.8 + 32
    plan = infer.infer(df, target="y", timestamp="ts", keys=["id"])
    names = [f.value["name"] for f in plan.features]
    assert names == ["x", "count", "colour", "flag"]
    assert "leak" in plan.left_out["y_copy"]
    assert any(w.startswith("y_copy: left out") for w in plan.warnings)
    assert plan.guess["keys"].value == ["id"] and plan.key_derive is None


def test_a_key_that_repeats_is_refused_naming_it() -> None:
    df = frame()
    df["id"] = [f"k{i % 100}" for i in range(len(df))]
    with pytest.raises(InferError, match=r"key column\(s\) \['id'\]: 240 rows share a key"):
        infer.infer(df, target="y", timestamp="ts", keys=["id"])


def test_without_a_key_each_row_gets_a_stable_hash() -> None:
    plan = infer.infer(frame(), target="y", timestamp="ts")
    assert plan.key_derive == {"name": "row_id", "hash": "row"}
    assert plan.guess["keys"].value == ["row_id"]


# --------------------------------------------------------------------------- target
def test_the_task_comes_from_the_target() -> None:
    df = frame()
    # a numeric target with many values is a regression, with a range around it
    plan = infer.infer(df, target="y", timestamp="ts")
    assert plan.guess["task"].value == "regression" and plan.guess["metric"].value == "rmse"
    lo, hi = plan.guess["target_range"].value
    assert lo < df["y"].min() and hi > df["y"].max()
    # a boolean one a classification, as it is
    plan = infer.infer(df, target="flag", timestamp="ts")
    assert plan.guess["task"].value == "classification" and plan.target_derive is None
    assert plan.guess["metric"].value == "roc_auc" and 0.5 < plan.guess["floor"].value < 1


def test_a_two_valued_text_target_becomes_a_derived_flag_without_missing_rows() -> None:
    df = frame()
    df["sex"] = np.where(np.arange(len(df)) % 3 == 0, "female", "male")
    df.loc[5, "sex"] = None
    plan = infer.infer(df, target="sex", timestamp="ts")
    # then the rarer value is the positive class, rows without it are dropped first
    assert plan.target_derive == {"name": "sex_is_female", "expr": "sex == 'female'"}
    assert plan.guess["target"].value == "sex_is_female"
    assert plan.dropna == ["sex"]
    assert "sex" not in [f.value["name"] for f in plan.features]
    assert any("1 rows have no target" in w for w in plan.warnings)
    # and the expression computes the flag
    assert df.eval(plan.target_derive["expr"]).sum() == (df["sex"] == "female").sum()


def test_a_target_that_fits_no_task_is_refused() -> None:
    df = frame()
    df["grade"] = np.array(["a", "b", "c"])[np.arange(len(df)) % 3]
    with pytest.raises(InferError, match="'grade' has 3 distinct value"):
        infer.infer(df, target="grade", timestamp="ts")
    with pytest.raises(InferError, match="not in the source"):
        infer.infer(df, target="nope", timestamp="ts")


# --------------------------------------------------------------------------- time
def test_integer_years_need_a_year_format() -> None:
    assert infer.timestamp_format(pd.Series([2007, 2008, 2009])) == "%Y"
    assert infer.timestamp_format(pd.Series([2007.0, None, 2009.0])) == "%Y"
    assert infer.timestamp_format(pd.Series([20070101, 20080101])) is None
    assert infer.timestamp_format(pd.Series(["2007-01-01"])) is None


def test_yearly_integer_timestamps_give_year_partitions() -> None:
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"year": np.repeat([2007, 2008, 2009, 2010], 30), "x": rng.normal(0, 1, 120)})
    df["y"] = df["x"] + rng.normal(0, 1, 120)
    plan = infer.infer(df, target="y", timestamp="year")
    assert plan.guess["timestamp_format"].value == "%Y"
    assert plan.guess["frequency"].value == "year"
    assert list(plan.counts) == ["2007", "2008", "2009", "2010"]
    assert plan.guess["timezone"].value == "UTC"
    assert "year" not in [f.value["name"] for f in plan.features]


@pytest.mark.parametrize(
    ("n", "freq", "expected"),
    [
        (3 * 365, "D", "quarter"),  # three years of days: 12 quarters
        (365, "D", "month"),
        (120, "D", "week"),  # four months of days: 17 weeks
        (24 * 20, "h", "day"),  # twenty days of hours
        (5 * 12, "MS", "quarter"),  # five years of months: 20 quarters
        (20, "YS", "year"),
    ],
)
def test_the_partition_size_is_the_coarsest_with_enough_partitions(
    n: int, freq: str, expected: str
) -> None:
    ts = pd.Series(pd.date_range("2001-01-01", periods=n, freq=freq, tz="UTC"))
    assert infer.choose_frequency(ts).value == expected


def test_coarse_data_takes_the_frequency_with_most_partitions() -> None:
    # given three monthly timestamps: months, weeks and days all give 3, the coarsest wins
    ts = pd.Series(pd.to_datetime(["2020-01-01", "2020-02-01", "2020-03-01"], utc=True))
    assert infer.choose_frequency(ts).value == "month"


def test_windows_train_on_the_first_half_hold_out_a_sixth_and_score_the_rest() -> None:
    pids = [f"2013-{m:02d}" for m in range(1, 13)]
    train, holdout, score = infer.windows(pids)
    assert train.value == pids[:6] and holdout.value == 1 and score.value == pids[6:]
    train, holdout, score = infer.windows(["2007", "2008", "2009"])
    assert (train.value, holdout.value, score.value) == (["2007", "2008"], 1, ["2009"])
    assert infer.windows([str(y) for y in range(2000, 2024)])[1].value == 2
    with pytest.raises(InferError, match="at least 3 are needed"):
        infer.windows(["2007", "2008"])


def test_min_rows_is_half_the_smallest_partition() -> None:
    g = infer.min_rows({"2020-01": 40, "2020-02": 31, "2020-03": 50})
    assert g.value == 15 and "2020-02" in g.why


def test_a_stub_partition_at_the_edge_does_not_set_the_null_tolerance() -> None:
    # given a column always present in two full partitions, missing in a 3-row stub
    s = pd.Series([1.0] * 40 + [None] * 3)
    pids = pd.Series(["2013-11"] * 20 + ["2013-12"] * 20 + ["2014-01"] * 3)
    # then the tolerance is the full partitions' (none missing), not 100%
    assert infer.feature("temp", s, pids).value["max_null_fraction"] <= 0.02
