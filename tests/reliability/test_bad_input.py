"""Bad input on real data: the stage that must catch it does, says what and where, and
nothing downstream changes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from mlops import io, partitions
from tests.helpers import record_raw
from tests.reliability.conftest import (
    BAD_WEEK,
    CSV_WEEK,
    ORIGIN_TOLERANCE,
    WARN_WEEK,
    Project,
    csv_params,
    digests,
    read_pristine,
)

pytestmark = pytest.mark.integration
AREA = "Bad input"
QUARANTINED = (
    "`validate` exits 1 naming the file, {what}; the batch moves to "
    "`quarantine/<partition>/` with `validation.json`; champion, online store, "
    "features and predictions unchanged; `materialize` refuses it"
)


def _set(df: pd.DataFrame, rows: slice | pd.Index, column: str, value: object) -> pd.DataFrame:
    df = df.copy()
    if value is None and not pd.api.types.is_float_dtype(df[column]):
        df[column] = df[column].astype(object)
    df.loc[df.index[rows], column] = value
    return df


def _corrupt(path: Path, df: pd.DataFrame) -> None:
    io.write_parquet(path, df)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@dataclass(frozen=True)
class Bad:
    id: str
    case: str
    column: str
    rule: str
    damage: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    write: Callable[[Path, pd.DataFrame], None] | None = None

    @property
    def what(self) -> str:
        if self.column == "table":
            return f"the table rule `{self.rule}`"
        if self.write is not None:
            return f"why: `{self.rule}`"
        return f"column `{self.column}` and rule `{self.rule}`"

    @property
    def behaviour(self) -> str:
        return QUARANTINED.format(what=self.what)


BAD_INPUTS = [
    Bad(
        "missing_column",
        "A contract column is missing (`temp` dropped)",
        "temp",
        "expect_table_columns_to_match_set",
        lambda d: d.drop(columns=["temp"]),
    ),
    Bad(
        "extra_column",
        "A column the contract does not know (`tailnum`) in a raw partition",
        "tailnum",
        "expect_table_columns_to_match_set",
        lambda d: d.assign(tailnum="N14228"),
    ),
    Bad(
        "wrong_type",
        "A column of the wrong type (`distance` as text)",
        "distance",
        "expect_column_values_to_be_in_type_list",
        lambda d: d.assign(distance=d["distance"].astype(str) + " miles"),
    ),
    Bad(
        "null_keys",
        "Nulls in the entity key",
        "flight_id",
        "expect_column_values_to_not_be_null",
        lambda d: _set(d, slice(0, 5), "flight_id", None),
    ),
    Bad(
        "null_spike",
        "A spike of nulls in a feature (half of `temp`, 5% allowed)",
        "temp",
        "expect_column_values_to_not_be_null mostly=0.95",
        lambda d: _set(d, slice(None, None, 2), "temp", None),
    ),
    Bad(
        "out_of_range",
        "Values out of range (`humid` 150, max 100)",
        "humid",
        "expect_column_values_to_be_between",
        lambda d: _set(d, slice(0, 10), "humid", 150.0),
    ),
    Bad(
        "unseen_category",
        "Unseen categories beyond tolerance (`carrier` ZZ, tolerance 0)",
        "carrier",
        "expect_column_values_to_be_in_set",
        lambda d: _set(d, slice(0, 20), "carrier", "ZZ"),
    ),
    Bad(
        "unseen_beyond_tolerance",
        f"Unseen categories above the tolerated share (`origin` 10%, tolerance "
        f"{ORIGIN_TOLERANCE:.0%})",
        "origin",
        "expect_column_values_to_be_in_set",
        lambda d: _set(d, slice(None, None, 10), "origin", "XXX"),
    ),
    Bad(
        "duplicate_keys",
        "Duplicate entity keys",
        "flight_id",
        "expect_column_values_to_be_unique",
        lambda d: pd.concat([d, d.head(3)]),
    ),
    Bad(
        "empty_partition",
        "An empty partition (no rows)",
        "table",
        "expect_table_row_count_to_be_between",
        lambda d: d.head(0),
    ),
    Bad(
        "corrupt_parquet",
        "A truncated, corrupt Parquet file",
        "(whole file)",
        "cannot be read as Parquet",
        write=_corrupt,
    ),
    Bad(
        "timestamp_outside",
        "Timestamps outside the partition's interval",
        "event_ts",
        "expect_column_values_to_be_between",
        lambda d: _set(d, slice(0, 5), "event_ts", d["event_ts"].iloc[0] + pd.Timedelta(days=30)),
    ),
    Bad(
        "timestamp_naive",
        "Timestamps without a time zone (naive, not UTC)",
        "event_ts",
        "expect_column_type_to_be datetime64[ns, UTC]",
        lambda d: d.assign(event_ts=d["event_ts"].dt.tz_localize(None)),
    ),
    Bad(
        "target_outside_set",
        "A target value outside the contract's set (`is_delayed` 2)",
        "is_delayed",
        "expect_column_values_to_be_in_set",
        lambda d: d.assign(is_delayed=d["is_delayed"].astype("Int64").mask(d.index < 10, 2)),
    ),
    Bad(
        "target_as_text",
        "The target stored as text",
        "is_delayed",
        "expect_column_values_to_be_in_type_list",
        lambda d: d.assign(is_delayed=d["is_delayed"].astype(str)),
    ),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda b: b.id)
def test_validate_quarantines_bad_batch(proj: Project, capsys, bad: Bad) -> None:
    """Cases: BAD_INPUTS"""
    # given a real week damaged as a bad upstream would damage it
    st = proj.st
    before = proj.snapshot()
    raw = partitions.file(st.raw_dir, BAD_WEEK)
    df = read_pristine(proj, BAD_WEEK)
    if bad.write is not None:
        bad.write(raw, df)
    else:
        io.write_parquet(raw, bad.damage(df))  # type: ignore[misc]
    record_raw(st, BAD_WEEK)  # delivered as the current version (ingest would project it)
    capsys.readouterr()

    # when validate runs on it
    code = proj.cli("validate", "--partitions", BAD_WEEK)

    # then it fails naming file, column and rule
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: validate: data/raw/{BAD_WEEK}.parquet failed validation" in err
    if bad.column not in ("table", "(whole file)"):
        assert repr(bad.column) in err or f"['{bad.column}']" in err
    assert bad.rule in err
    # and the batch is in quarantine with its report
    q = st.quarantine_dir / BAD_WEEK
    assert (q / f"{BAD_WEEK}.parquet").is_file() and not raw.exists()
    report = json.loads((q / "validation.json").read_text())
    assert report["success"] is False and report["file"] == f"data/raw/{BAD_WEEK}.parquet"
    if bad.write is None:
        assert any(bad.rule.split()[0] == f["expectation"] for f in report["failed"])
    else:
        assert "cannot be read as Parquet" in report["error"]
    # and nothing downstream took it or changed
    assert proj.cli("materialize", "--partitions", BAD_WEEK) == 1
    assert "not found" in capsys.readouterr().err
    assert proj.snapshot() == before


@dataclass(frozen=True)
class Warned(Bad):
    @property
    def behaviour(self) -> str:
        return (
            f"`validate` passes and warns naming the file, column `{self.column}` and "
            f"rule `{self.rule}`; the batch is validated and goes on (exit 0)"
        )


WARN_INPUTS = [
    Warned(
        "unseen_within_tolerance",
        f"Unseen categories within the tolerated share (`origin` 1%, tolerance "
        f"{ORIGIN_TOLERANCE:.0%})",
        "origin",
        "expect_column_values_to_be_in_set",
        lambda d: _set(d, slice(None, None, 100), "origin", "XXX"),
    ),
]


@pytest.mark.parametrize("bad", WARN_INPUTS, ids=lambda b: b.id)
def test_validate_warns_within_tolerance(proj: Project, capsys, caplog, bad: Warned) -> None:
    """Cases: WARN_INPUTS"""
    # given a week with a few unseen categories, below the configured tolerance
    st = proj.st
    io.write_parquet(
        partitions.file(st.raw_dir, WARN_WEEK), bad.damage(read_pristine(proj, WARN_WEEK))
    )  # type: ignore[misc]
    record_raw(st, WARN_WEEK)
    capsys.readouterr()

    # when validate runs
    with caplog.at_level(logging.WARNING, logger="mlops.validate"):
        code = proj.cli("validate", "--partitions", WARN_WEEK)

    # then it passes, warns naming file, column and rule, and the batch goes on
    out = capsys.readouterr().out
    assert code == 0
    assert f"validate: {WARN_WEEK} passed" in out and "(1 warned)" in out
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert f"{WARN_WEEK}.parquet" in warning and repr(bad.column) in warning
    assert bad.rule in warning
    summary = json.loads((st.state_dir / "validation" / f"{WARN_WEEK}.json").read_text())
    assert [w["column"] for w in summary["warnings"]] == [bad.column]
    assert partitions.file(st.validated_dir, WARN_WEEK).is_file()
    assert not (st.quarantine_dir / WARN_WEEK).exists()


def write_csv_source(proj: Project, name: str, extra: bool = False) -> Path:
    df = read_pristine(proj, CSV_WEEK)
    if extra:
        df = df.assign(tailnum="N14228", dep_delay=3.0)
    path = proj.root / "sources" / f"{name}.csv"
    path.parent.mkdir(exist_ok=True)
    df.to_csv(path, index=False)
    return path


def test_ingest_drops_extra_source_columns(proj: Project, capsys) -> None:
    """Case: The source has columns the contract does not know (`tailnum`, `dep_delay`).
    Behaviour: `ingest` keeps only the contract's columns; the partition validates and goes on
    """
    # given a CSV source with two extra columns
    params = csv_params(proj, write_csv_source(proj, "extra", extra=True))
    st = proj.st

    # when it is ingested and validated
    assert proj.cli("ingest", "--partitions", CSV_WEEK, params=params) == 0
    assert proj.cli("validate", "--partitions", CSV_WEEK, params=params) == 0

    # then the raw partition holds exactly the contract columns
    raw = pd.read_parquet(partitions.file(st.raw_dir, CSV_WEEK))
    assert list(raw.columns) == proj.params.contract.columns
    assert len(raw) == len(read_pristine(proj, CSV_WEEK))


def _truncate_mid_row(path: Path) -> None:
    data = path.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 40  # 40 bytes into a row
    path.write_bytes(data[:cut])


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = bytes(range(192, 256))  # invalid UTF-8
    path.write_bytes(bytes(data))


@dataclass(frozen=True)
class CsvFault:
    id: str
    case: str
    needle: str
    corrupt: Callable[[Path], None]

    @property
    def behaviour(self) -> str:
        return (
            f"`ingest` exits 1 naming the file and `{self.needle}`; no raw partition, DVC "
            "pointer or manifest entry is written"
        )


CSV_FAULTS = [
    CsvFault(
        "truncated_csv",
        "A CSV source file cut off mid-row (a truncated copy)",
        "file looks truncated",
        _truncate_mid_row,
    ),
    CsvFault(
        "corrupt_csv",
        "A CSV source file with corrupt bytes (not valid UTF-8)",
        "cannot read as csv",
        _garble,
    ),
]


@pytest.mark.parametrize("fault", CSV_FAULTS, ids=lambda f: f.id)
def test_ingest_refuses_corrupt_csv(proj: Project, capsys, fault: CsvFault) -> None:
    """Cases: CSV_FAULTS"""
    # given a CSV source damaged on its way in
    path = write_csv_source(proj, fault.id)
    fault.corrupt(path)
    params = csv_params(proj, path)
    st = proj.st
    raw_before = digests(st.raw_dir)
    manifest_before = (st.state_dir / "ingest.json").read_text()
    capsys.readouterr()

    # when ingest reads it
    code = proj.cli("ingest", "--partitions", CSV_WEEK, params=params)

    # then it fails naming the file and the reason; nothing was written
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: ingest: {path}: ") and fault.needle in err
    assert digests(st.raw_dir) == raw_before
    assert (st.state_dir / "ingest.json").read_text() == manifest_before


def test_ingest_of_empty_interval_is_caught_by_validate(proj: Project, capsys) -> None:
    """Case: The source holds no rows for the requested partition.
    Behaviour: `ingest` writes and versions an empty partition (the fact is recorded);
    `validate` exits 1 on rule `expect_table_row_count_to_be_between` and quarantines it
    """
    # given a CSV source of one week, asked for a week it does not cover
    params = csv_params(proj, write_csv_source(proj, "oneweek"))
    empty = "2013-W40"
    st = proj.st
    before = proj.snapshot()

    # when the empty week is ingested, then validated
    assert proj.cli("ingest", "--partitions", empty, params=params) == 0
    assert pd.read_parquet(partitions.file(st.raw_dir, empty)).empty
    capsys.readouterr()
    code = proj.cli("validate", "--partitions", empty, params=params)

    # then validation fails on the row count and quarantines it
    err = capsys.readouterr().err
    assert code == 1
    assert f"{empty}.parquet" in err and "expect_table_row_count_to_be_between" in err
    assert "observed 0" in err
    assert (st.quarantine_dir / empty / "validation.json").is_file()
    assert proj.snapshot() == before


def test_score_refuses_a_partition_that_never_passed_validation(proj: Project, capsys) -> None:
    """Case: `score` is asked for a partition that never passed validation (quarantined or not
    yet validated).
    Behaviour: `score` exits 1 naming the missing validated file and the stage to run; no
    predictions are written
    """
    # given a week that only exists raw or in quarantine
    st = proj.st
    before = digests(st.predictions_dir)
    capsys.readouterr()

    # when score is asked for it
    code = proj.cli("score", "--partitions", BAD_WEEK)

    # then it refuses, saying which file is missing and what to run
    err = capsys.readouterr().err
    assert code == 1
    assert f"validated/{BAD_WEEK}.parquet" in err and "run validate" in err
    assert digests(st.predictions_dir) == before
