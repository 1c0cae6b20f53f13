"""partitions: ids, the intervals they cover, data intervals and named partitions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlops import partitions


@pytest.mark.parametrize(
    ("last", "n", "freq", "expected"),
    [
        ("2013-03", 3, "month", ["2013-01", "2013-02", "2013-03"]),
        ("2013-01", 2, "month", ["2012-12", "2013-01"]),
        ("2013-W02", 3, "week", ["2012-W52", "2013-W01", "2013-W02"]),
        ("2013-03-01", 2, "day", ["2013-02-28", "2013-03-01"]),
        ("2013-07", 1, "month", ["2013-07"]),
    ],
)
def test_previous_partitions(last, n, freq, expected) -> None:
    assert partitions.previous(last, n, freq) == expected


@pytest.mark.parametrize(
    ("start", "end", "freq", "expected"),
    [
        ("2013-07-01T00:00:00+00:00", "2013-08-01T00:00:00+00:00", "month", ["2013-07"]),
        ("2013-07-08T00:00:00+00:00", "2013-07-15T00:00:00+00:00", "week", ["2013-W28"]),
        ("2013-12-30T00:00:00+00:00", "2014-01-06T00:00:00+00:00", "week", ["2014-W01"]),
        (
            "2013-07-08T00:00:00+00:00",
            "2013-07-11T00:00:00+00:00",
            "day",
            ["2013-07-08", "2013-07-09", "2013-07-10"],
        ),
        ("2013-07-01T00:00:00+00:00", "2013-09-01T00:00:00+00:00", "month", ["2013-07", "2013-08"]),
    ],
)
def test_interval_partitions_are_the_data_interval(start, end, freq, expected) -> None:
    assert (
        partitions.covering(datetime.fromisoformat(start), datetime.fromisoformat(end), freq)
        == expected
    )


def test_interval_not_made_of_whole_partitions_names_the_fix() -> None:
    with pytest.raises(ValueError, match="schedule.scoring"):
        partitions.covering(
            datetime(2013, 7, 1, tzinfo=UTC), datetime(2013, 8, 1, tzinfo=UTC), "week"
        )
    with pytest.raises(ValueError, match="schedule.scoring"):
        partitions.covering(
            datetime(2013, 7, 1, 12, tzinfo=UTC), datetime(2013, 7, 3, tzinfo=UTC), "day"
        )
    with pytest.raises(ValueError, match="no data interval"):
        partitions.covering(None, None, "month")


def test_named_partitions_are_checked_against_the_partitioning() -> None:
    assert partitions.named(["2013-W04", "2013-W03", "2013-W04"], "week") == [
        "2013-W03",
        "2013-W04",
    ]
    with pytest.raises(ValueError, match="not a week partition"):
        partitions.named(["2013-07"], "week")
    with pytest.raises(ValueError, match="not a partition id"):
        partitions.named(["../2013-07"], "month")


# --------------------------------------------------------------------------- ids and files
def test_ids_name_the_partition_of_each_timestamp() -> None:
    import pandas as pd

    ts = pd.Series(pd.to_datetime(["2013-01-05 23:59", "2013-12-30 00:00"], utc=True))
    assert partitions.ids(ts, "month").tolist() == ["2013-01", "2013-12"]
    assert partitions.ids(ts, "week").tolist() == ["2013-W01", "2014-W01"]
    assert partitions.ids(ts, "day").tolist() == ["2013-01-05", "2013-12-30"]
    with pytest.raises(ValueError, match="unknown partition frequency 'hour'"):
        partitions.ids(ts, "hour")
    assert partitions.of(ts.iloc[1], "week") == "2014-W01"


@pytest.mark.parametrize("freq", ["year", "quarter", "month", "week", "day"])
def test_ids_equal_formatting_every_row_and_keep_missing_timestamps_missing(freq) -> None:
    import numpy as np
    import pandas as pd

    # given unordered UTC timestamps over several years, with some missing, on a shuffled index
    rng = np.random.default_rng(7)
    secs = rng.integers(1_300_000_000, 1_450_000_000, 400)
    ts = pd.Series(pd.to_datetime(secs, unit="s", utc=True), index=rng.permutation(400))
    ts.iloc[::37] = pd.NaT
    # when each row is named
    got = partitions.ids(ts, freq)
    # then every present row has the name its own timestamp formats to, on the same index
    present = ts.notna()
    expected = [partitions.ids(pd.Series([t]), freq).iloc[0] for t in ts[present]]
    assert got[present].tolist() == expected
    assert got.index.equals(ts.index)
    assert got[~present].isna().all() and int((~present).sum()) == 11
    assert all(partitions.is_id(x) for x in got[present])


def test_interval_is_half_open_and_malformed_ids_are_refused() -> None:
    import pandas as pd

    assert partitions.interval("2013-02") == (
        pd.Timestamp("2013-02-01", tz="UTC"),
        pd.Timestamp("2013-03-01", tz="UTC"),
    )
    assert partitions.interval("2013-W01")[0] == pd.Timestamp("2012-12-31", tz="UTC")
    assert partitions.start("2013-01-05") == pd.Timestamp("2013-01-05", tz="UTC")
    for bad in ("2013-13", "2013-W60", "../2013-01", "2013-01.parquet"):
        with pytest.raises(ValueError, match="not a partition id"):
            partitions.interval(bad)
    assert partitions.is_id("2013-W05") and not partitions.is_id("2013-1")
    assert partitions.check("2013-01") == "2013-01"


def test_files_cannot_name_paths_and_a_missing_one_is_named(tmp_path) -> None:
    import pandas as pd

    assert partitions.file(tmp_path, "2013-01") == tmp_path / "2013-01.parquet"
    with pytest.raises(ValueError, match="not a partition id"):
        partitions.file(tmp_path, "../etc/passwd")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "2013-01.parquet")
    pd.DataFrame({"x": [2, 3]}).to_parquet(tmp_path / "2013-02.parquet")
    assert partitions.read(tmp_path, ["2013-01", "2013-02"])["x"].tolist() == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match=r"2013-03\.parquet: validated partition '2013-03'"):
        partitions.read(tmp_path, ["2013-01", "2013-03"], what="validated partition")


@pytest.mark.parametrize(
    ("freq", "when", "pid", "start", "end"),
    [
        ("year", "2013-07-04", "2013", "2013-01-01", "2014-01-01"),
        ("quarter", "2013-02-28", "2013-Q1", "2013-01-01", "2013-04-01"),
        ("quarter", "2013-12-31", "2013-Q4", "2013-10-01", "2014-01-01"),
        ("month", "2013-12-31", "2013-12", "2013-12-01", "2014-01-01"),
        ("week", "2013-01-01", "2013-W01", "2012-12-31", "2013-01-07"),
        ("day", "2013-03-01", "2013-03-01", "2013-03-01", "2013-03-02"),
    ],
)
def test_every_frequency_names_and_bounds_its_partitions(freq, when, pid, start, end) -> None:
    import pandas as pd

    ts = pd.Series(pd.to_datetime([f"{when}T12:00:00Z"]))
    assert partitions.ids(ts, freq).tolist() == [pid]
    assert partitions.of(ts.iloc[0], freq) == pid
    assert partitions.frequency(pid) == freq
    lo, hi = partitions.interval(pid)
    assert (str(lo.date()), str(hi.date())) == (start, end)
    assert partitions.named([pid], freq) == [pid]


@pytest.mark.parametrize(
    ("pid", "n", "freq", "expected"),
    [
        ("2013-Q4", 1, "quarter", "2014-Q1"),
        ("2013-Q1", -1, "quarter", "2012-Q4"),
        ("2009", -2, "year", "2007"),
        ("2013-12", 2, "month", "2014-02"),
        ("2013-W52", 1, "week", "2014-W01"),
        ("2012-02-28", 1, "day", "2012-02-29"),
    ],
)
def test_shift_steps_whole_partitions(pid, n, freq, expected) -> None:
    assert partitions.shift(pid, n, freq) == expected


def test_span_lists_a_range_and_refuses_a_wrong_one() -> None:
    assert partitions.span("2012-Q3", "2013-Q2", "quarter") == [
        "2012-Q3",
        "2012-Q4",
        "2013-Q1",
        "2013-Q2",
    ]
    assert partitions.span("2007", "2007", "year") == ["2007"]
    with pytest.raises(ValueError, match="comes first"):
        partitions.span("2013-03", "2013-01", "month")
    with pytest.raises(ValueError, match="not a month partition"):
        partitions.span("2013-Q1", "2013-03", "month")


@pytest.mark.parametrize("bad", ["2013-Q5", "13", "2013-13", "2013/01", "../2013"])
def test_malformed_ids_are_refused(bad) -> None:
    with pytest.raises(ValueError, match="not a partition id"):
        partitions.interval(bad)
