"""Reading arrived outcomes: type and set checks, counted skips, files and the source."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops import arrivals, outcomes
from mlops.config import Labels, Source
from mlops.contract import Contract
from mlops.outcomes import LabelError
from mlops.source import SourceError

KINDS = {"flight_id": "string"}


def _contract(p, **over) -> Contract:  # type: ignore[no-untyped-def]
    return p.contract.model_copy(update=over)


@pytest.mark.parametrize(
    "values",
    [
        [True, False, None],
        [1, 0, 1],
        [1.0, None, 0.0],
        pd.Series([True, None, False], dtype=object),
    ],
    ids=["bool", "int", "float_with_null", "object_bools"],
)
def test_classification_outcomes_take_0_1_true_false(tmp_project, values) -> None:
    # given outcomes written as booleans, integers or floats, some missing
    p, _ = tmp_project
    s = pd.Series(values, name="is_delayed")

    # when they are checked
    got, known = arrivals.outcome_values(s, p.contract, "labels.csv")

    # then the known ones come back as int8 0/1, and the missing ones are not known yet
    assert got.dtype == np.int8 and set(got.tolist()) <= {0, 1}
    assert known.tolist() == s.notna().tolist()


@pytest.mark.parametrize(
    ("values", "said"),
    [
        (["yes", "no", "yes"], "of the wrong type (e.g. 'yes', 'no')"),
        ([0, 1, 2, 2], "outside the contract's set {0, 1}"),
        ([0.5, 1.0], "outside the contract's set {0, 1} (True/False) (e.g. 0.5)"),
        (pd.Series([True, "x"], dtype=object), "1 value(s) of the wrong type (e.g. 'x')"),
    ],
    ids=["text", "two", "half", "mixed"],
)
def test_bad_classification_outcomes_are_refused_with_examples(tmp_project, values, said) -> None:
    p, _ = tmp_project
    with pytest.raises(LabelError) as err:
        arrivals.outcome_values(pd.Series(values, name="is_delayed"), p.contract, "f.csv")
    assert said in str(err.value) and "f.csv: outcome column 'is_delayed'" in str(err.value)


def test_regression_outcomes_are_numbers_within_the_contracts_range(tmp_project) -> None:
    # given a regression contract with a target range
    p, _ = tmp_project
    c = _contract(p, task="regression", target_min=-60.0, target_max=600.0)

    # then numbers inside it pass as float64 ...
    got, _ = arrivals.outcome_values(pd.Series([3, -5.5, None], name="y"), c, "f")
    assert got.dtype == np.float64 and got.tolist() == [3.0, -5.5]
    # ... and booleans, text, infinities and values outside it are refused
    for bad, said in (
        ([True, False], "wrong type"),
        (["12", "x"], "wrong type"),
        ([1.0, np.inf], "outside the contract's range [-60.0, 600.0]"),
        ([601.0], "outside the contract's range"),
    ):
        with pytest.raises(LabelError, match="outcome column 'y'") as err:
            arrivals.outcome_values(pd.Series(bad, name="y"), c, "f")
        assert said in str(err.value)


def _labels(p, st, rows: pd.DataFrame, name: str = "labels.csv", **cfg):  # type: ignore[no-untyped-def]
    path = Path(st.root) / "incoming" / name
    path.parent.mkdir(exist_ok=True)
    rows.to_csv(path, index=False) if name.endswith(".csv") else rows.to_parquet(path)
    labels = Labels(path=f"incoming/{name}", **cfg)
    return p.model_copy(update={"labels": labels})


def _scored(keys: list[str]) -> np.ndarray:
    return np.sort(outcomes.key_hash([np.array(keys, dtype=object)]))


def test_every_row_not_joined_is_counted_by_why(tmp_project) -> None:
    # given scored keys a..d and a labels file with: two known outcomes, one not known yet,
    # one known only after the as-of time, one of another partition, one never scored
    p, st = tmp_project
    jan, feb = "2013-01-10T00:00:00Z", "2013-02-10T00:00:00Z"
    rows = pd.DataFrame(
        {
            "flight_id": ["a", "b", "c", "d", "a", "zz"],
            "is_delayed": [True, False, None, True, True, False],
            "known_at": [
                "2013-01-11",
                "2013-01-12",
                None,
                "2013-03-01",
                "2013-01-20",
                "2013-01-11",
            ],
            "event_ts": [jan, jan, jan, jan, feb, jan],
        }
    )
    params = _labels(p, st, rows, known_at="known_at")
    as_of = datetime(2013, 2, 1, tzinfo=UTC)

    # when the outcomes of January are read
    got, counts = arrivals.arrived(params, st, "2013-01", as_of).read(
        KINDS, _scored(["a", "b", "c", "d"]), batch_rows=2
    )

    # then a and b are taken, and each other row is counted once
    assert sorted(got.hash.tolist()) == sorted(_scored(["a", "b"]).tolist())
    assert got.target.tolist() == [1, 0] and got.origin.tolist() == [0, 0]
    assert (counts.rows, counts.not_known_yet, counts.known_later) == (6, 1, 1)
    assert (counts.other_partitions, counts.unknown_keys) == (1, 1)
    assert counts.unknown_examples == ["'zz'"]


def test_missing_columns_and_timeless_outcomes_are_refused(tmp_project) -> None:
    p, st = tmp_project
    scored = _scored(["a"])
    rows = pd.DataFrame({"flight_id": ["a"], "delayed": [True]})
    with pytest.raises(LabelError, match=r"lacks column\(s\) \['is_delayed'\]") as err:
        arrivals.arrived(_labels(p, st, rows), st, "2013-01").read(KINDS, scored, 10)
    assert "labels.csv" in str(err.value) and "it has ['flight_id', 'delayed']" in str(err.value)

    # an outcome without the time it became known, when labels.known_at names that column
    rows = pd.DataFrame({"flight_id": ["a"], "is_delayed": [True], "when": [None]})
    with pytest.raises(LabelError, match="labels.known_at column 'when' is empty in 1 row"):
        params = _labels(p, st, rows, "t.parquet", known_at="when")
        arrivals.arrived(params, st, "2013-01").read(KINDS, scored, 10)


def test_a_labels_path_outside_the_project_is_refused(tmp_project, tmp_path_factory) -> None:
    p, st = tmp_project
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "labels.csv"
    params = p.model_copy(update={"labels": Labels(path=str(elsewhere))})
    with pytest.raises(SourceError, match="labels.path="):
        arrivals.arrived(params, st, "2013-01")


def test_without_a_labels_path_the_source_is_read_again(tmp_project) -> None:
    # given a CSV source holding January and February rows with their outcomes
    p, st = tmp_project
    c = p.contract
    df = pd.read_parquet(st.validated_dir / "2013-01.parquet").head(30)
    feb = pd.read_parquet(st.validated_dir / "2013-02.parquet").head(20)
    pd.concat([df, feb]).to_csv(Path(st.root) / "rows.csv", index=False)
    src = Source(path="rows.csv", format="csv", timestamp_column=c.timestamp)
    params = p.model_copy(update={"source": src, "labels": Labels()})

    # when January's outcomes are read (its keys scored)
    got, counts = arrivals.arrived(params, st, "2013-01").read(
        KINDS, _scored(df["flight_id"].tolist()), batch_rows=7
    )

    # then January's 30 rows are taken from the source (those with an outcome labelled),
    # February's are not read as labels
    known = int(df[c.target].notna().sum())
    assert counts.rows == 30 and counts.unknown_keys == 0
    assert counts.not_known_yet == 30 - known
    assert len(got) == known and got.target.sum() == int(df[c.target].sum())
