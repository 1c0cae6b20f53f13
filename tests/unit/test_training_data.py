"""training_data: training rows take their target from the partition or the label store.

Real Feast (DuckDB offline, SQLite online) on small slices of real months; the label
store file is written here as ``mlops label`` leaves it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops import io, outcomes, partitions, training_data
from mlops import materialize as m
from tests.unit.conftest import ROWS

TARGET = "is_delayed"


def _store(st, pid: str, rows: pd.DataFrame) -> None:
    """The label store of ``pid`` holding ``rows``' keys and outcomes (int8, as label writes)."""
    out = pd.DataFrame(
        {
            "flight_id": rows["flight_id"].to_numpy(),
            TARGET: rows[TARGET].astype("int8").to_numpy(),
            outcomes.KNOWN_AT: pd.Timestamp("2013-03-01", tz="UTC"),
        }
    )
    io.write_parquet(outcomes.path(st, pid), out)


def _validated(st, pid: str, df: pd.DataFrame) -> None:
    io.write_parquet(partitions.file(st.validated_dir, pid), df)


def test_a_partition_without_outcomes_is_refused_naming_the_label_run(tmp_project, months):
    # given February validated and materialised without its target, no outcome arrived
    params, st = tmp_project
    _validated(st, "2013-02", months["2013-02"].drop(columns=[TARGET]))
    m.run(params, st, ["2013-01", "2013-02"])

    # when a window or a holdout including it is read, then it is refused naming it
    want = (
        "train: partition 2013-02 has no labels yet (scored without them); its outcomes "
        "arrive through `mlops label 2013-02`"
    )
    with pytest.raises(training_data.LabelsMissing) as err:
        training_data.training_frame(params, st, ["2013-01", "2013-02"])
    assert str(err.value) == want
    with pytest.raises(training_data.LabelsMissing, match=r"^evaluate: partition 2013-02 "):
        training_data.training_frame(params, st, ["2013-02"], stage="evaluate")
    # and a target column holding only nulls is no better
    _validated(st, "2013-02", months["2013-02"].assign(**{TARGET: None}))
    with pytest.raises(training_data.LabelsMissing, match="partition 2013-02 has no labels"):
        training_data.training_frame(params, st, ["2013-02"], stage="card")


def test_targets_come_from_the_partition_else_the_label_store(tmp_project, months, capsys):
    # given January whose first 300 outcomes are unknown in the validated partition, the
    # label store knowing 200 of them (and, for 10 rows the partition knows, the opposite)
    params, st = tmp_project
    jan = months["2013-01"].copy()
    truth = jan[TARGET].astype("float64").to_numpy()
    known_here = jan[TARGET].notna().to_numpy()
    jan[TARGET] = jan[TARGET].astype("boolean")
    jan.loc[:299, TARGET] = pd.NA
    _validated(st, "2013-01", jan)
    stored = months["2013-01"].iloc[100:310].copy()
    stored = stored[stored[TARGET].notna()]
    flipped = stored.index >= 300
    stored.loc[flipped, TARGET] = ~stored.loc[flipped, TARGET].astype(bool)
    _store(st, "2013-01", stored)
    m.run(params, st, ["2013-01"])

    # when the training set is built
    got = training_data.training_set(params, st, ["2013-01"])

    # then rows with a known target are kept: their own, else the label store's
    frame = got.frame.set_index("flight_id")
    first = set(jan["flight_id"].iloc[:100])
    assert first.isdisjoint(frame.index)  # unknown everywhere: left out
    for i in range(100, ROWS):
        flight = jan.loc[i, "flight_id"]
        if known_here[i]:
            assert frame.loc[flight, TARGET] == truth[i], i  # never overridden by the store
    assert frame[TARGET].dtype == np.int8 and set(frame[TARGET]) <= {0, 1}
    # and the rows left out and those taken from the store are counted and reported
    n_store = int(stored.index.isin(range(100, 300)).sum())
    assert got.from_store == {"2013-01": n_store}
    assert got.unlabelled == {"2013-01": ROWS - len(frame)} and got.left_out == ROWS - len(frame)
    assert len(frame) == int(known_here[300:].sum()) + n_store
    out = capsys.readouterr().out
    assert f"train: left out {got.left_out:,} row(s) whose outcome is not known yet" in out
    assert f"train: {n_store:,} target(s) from the label store (2013-01 {n_store:,})" in out


def test_a_partition_scored_without_its_target_trains_once_its_outcomes_arrive(tmp_project, months):
    # given February ingested without its target, and every outcome in its label store
    params, st = tmp_project
    feb = months["2013-02"]
    _validated(st, "2013-02", feb.drop(columns=[TARGET]))
    labelled = feb[feb[TARGET].notna()]
    _store(st, "2013-02", labelled.iloc[::-1])  # in another order than the partition's
    m.run(params, st, ["2013-01", "2013-02"])

    # when the training set of both months is built
    got = training_data.training_set(params, st, ["2013-01", "2013-02"])

    # then February's rows carry the outcomes of their own keys
    frame = got.frame
    feb_rows = frame[frame["flight_id"].isin(feb["flight_id"])].set_index("flight_id")
    want = labelled.set_index("flight_id")[TARGET].astype("int8")
    pd.testing.assert_series_equal(feb_rows[TARGET].sort_index(), want.sort_index())
    assert got.from_store == {"2013-01": 0, "2013-02": len(labelled)}


def test_two_outcomes_for_one_key_in_the_label_store_are_refused(tmp_project, months):
    # given February without its target, its label store holding one flight twice
    params, st = tmp_project
    feb = months["2013-02"]
    _validated(st, "2013-02", feb.drop(columns=[TARGET]))
    labelled = feb[feb[TARGET].notna()]
    _store(st, "2013-02", pd.concat([labelled, labelled.iloc[:1]]))
    m.run(params, st, ["2013-02"])

    # when trained on, then the label store file and the key are named
    with pytest.raises(io.DuplicateKeys) as err:
        training_data.training_frame(params, st, ["2013-02"])
    msg = str(err.value)
    assert msg.startswith(f"train: label store {outcomes.path(st, '2013-02')}: 2 rows share")
    assert repr(labelled["flight_id"].iloc[0]) in msg and "mlops label 2013-02" in msg
