"""validate: the GX checkpoint run over raw partitions, quarantine and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops import io, partitions, provenance, validate
from mlops.config import Params, Settings, load_params, settings

REPO = Path(__file__).resolve().parents[2]
ROWS = 2000


@pytest.fixture(scope="session")
def january() -> pd.DataFrame:
    """The first rows of the real 2013-01 partition (built from the source if not ingested)."""
    raw = REPO / "data" / "raw" / "2013-01.parquet"
    if raw.is_file():
        return pd.read_parquet(raw).head(ROWS)
    from mlops.ingest import split_partitions
    from mlops.source import load

    p = load_params(REPO / "params.yaml")
    df = load(p.source, REPO)
    part = split_partitions(df, p.contract, p.source.timestamp_column, "month", ["2013-01"])
    return part["2013-01"].head(ROWS)


def make_project(tmp_path: Path, edit=None) -> tuple[Params, Settings]:
    """A project in tmp_path with the repo's params.yaml, optionally edited."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    if edit:
        edit(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return load_params(tmp_path / "params.yaml"), settings(tmp_path / "params.yaml")


@pytest.fixture
def project(tmp_path: Path) -> tuple[Params, Settings]:
    return make_project(tmp_path)


def put_raw(st: Settings, pid: str, df: pd.DataFrame, pointer: bool = False) -> Path:
    path = io.write_parquet(partitions.file(st.raw_dir, pid), df)
    if pointer:
        path.with_name(path.name + ".dvc").write_text("outs:\n- md5: 0\n  path: x\n")
    return path


def assert_copy_of(validated: Path, raw: Path) -> None:
    """The validated file holds the raw file's rows, types and pandas dtypes unchanged,
    stamped with the raw file's md5."""
    import pyarrow.parquet as pq

    a, b = pq.read_table(validated), pq.read_table(raw)
    assert a.equals(b) and a.schema.pandas_metadata == b.schema.pandas_metadata
    assert provenance.made_from(validated) == io.md5(raw)


# --------------------------------------------------------------------------- run
def test_good_slice_passes_and_lands_in_validated(project, january):
    # given a raw partition that honours the contract
    params, st = project
    raw = put_raw(st, "2013-01", january)

    # when validated
    out = validate.run(params, st, ["2013-01"])

    # then the same bytes land in validated/ with a summary, and the GX context was created
    summary = out["2013-01"]
    assert summary["success"] and summary["rows"] == ROWS
    assert summary["statistics"]["failed"] == 0
    assert summary["statistics"]["evaluated"] == len(summary["expectations"]) > 40
    validated = partitions.file(st.validated_dir, "2013-01")
    assert_copy_of(validated, raw)
    state = io.read_json(st.state_dir / "validation" / "2013-01.json")
    assert state["success"] is True and state["partition"] == "2013-01"
    assert state["md5"] == io.md5(raw) and state["validated_md5"] == io.md5(validated)
    gx_yml = yaml.safe_load((st.gx_root / "great_expectations.yml").read_text())
    assert gx_yml["analytics_enabled"] is False
    assert gx_yml["progress_bars"]["globally"] is False
    assert Path(summary["data_docs"]) == st.gx_root / "uncommitted/data_docs/local_site/index.html"
    assert Path(summary["data_docs"]).is_file() and Path(summary["data_docs_page"]).is_file()
    assert not st.quarantine_dir.exists()


def test_rerun_keeps_one_set_of_gx_definitions(project, january):
    # given a partition validated once
    params, st = project
    put_raw(st, "2013-01", january)
    validate.run(params, st, ["2013-01"])
    suite_file = st.gx_root / "expectations" / "flights_contract.json"
    first = suite_file.read_text()

    # when validated again
    validate.run(params, st, ["2013-01"])

    # then definitions are updated in place, not piled up, and the suite file is unchanged
    for folder in ("expectations", "validation_definitions", "checkpoints"):
        assert len(list((st.gx_root / folder).glob("*.json"))) == 1, folder
    assert suite_file.read_text() == first


def _drop_temp(df):
    return df.drop(columns=["temp"])


def _distance_as_text(df):
    return df.assign(distance=df["distance"].astype(str))


def _null_keys(df):
    df = df.copy()
    df.loc[df.index[:5], "flight_id"] = None
    return df


def _hot(df):
    df = df.copy()
    df.loc[df.index[:3], "temp"] = 500.0
    return df


def _duplicate_keys(df):
    df = df.copy()
    df.loc[df.index[1], "flight_id"] = df["flight_id"].iloc[0]
    return df


def _next_month(df):
    df = df.copy()
    df.loc[df.index[:4], "event_ts"] = pd.Timestamp("2013-02-03 10:00", tz="UTC")
    return df


def _naive_ts(df):
    return df.assign(event_ts=df["event_ts"].dt.tz_localize(None))


def _unknown_origin(df):
    df = df.copy()
    df.loc[df.index[:2], "origin"] = "XXX"
    return df


@pytest.mark.parametrize(
    ("corrupt", "column", "rule", "observed"),
    [
        (_drop_temp, "temp", "expect_table_columns_to_match_set", "missing ['temp']"),
        (
            _distance_as_text,
            "distance",
            "expect_column_values_to_be_in_type_list",
            "2,000 unexpected",
        ),
        (_null_keys, "flight_id", "expect_column_values_to_not_be_null", "5 nulls"),
        (_hot, "temp", "expect_column_values_to_be_between [-30.0, 120.0]", "3 unexpected values"),
        (_duplicate_keys, "flight_id", "expect_column_values_to_be_unique", "2 rows with a dup"),
        (_next_month, "event_ts", "expect_column_values_to_be_between [2013-01-01", "4 unexpected"),
        (_naive_ts, "event_ts", "expect_column_type_to_be datetime64[ns, UTC]", "datetime64[ns]"),
        (_unknown_origin, "origin", "expect_column_values_to_be_in_set", "e.g. XXX"),
    ],
    ids=[
        "missing-column",
        "wrong-type",
        "null-keys",
        "out-of-range",
        "dup-keys",
        "ts-outside",
        "naive-ts",
        "unseen-category",
    ],
)
def test_bad_batch_is_quarantined_with_a_message(project, january, corrupt, column, rule, observed):
    # given a raw partition (with its DVC pointer) that breaks one rule of the contract
    params, st = project
    raw = put_raw(st, "2013-01", corrupt(january), pointer=True)

    # when validated
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(params, st, ["2013-01"])

    # then the message names the file, column, rule and what was observed
    msg = str(err.value)
    assert msg.startswith("data/raw/2013-01.parquet failed validation: ")
    if column == "temp" and "match_set" in rule:
        assert "table: expect_table_columns_to_match_set" in msg and "column 'temp': missing" in msg
    else:
        line = next(p for p in msg.split("; ") if f"column {column!r}: {rule}" in p)
        assert observed in line
    # and the file and its pointer moved to quarantine beside validation.json
    folder = st.quarantine_dir / "2013-01"
    assert not raw.exists() and not raw.with_name(raw.name + ".dvc").exists()
    assert (folder / "2013-01.parquet").is_file() and (folder / "2013-01.parquet.dvc").is_file()
    report = json.loads((folder / "validation.json").read_text())
    assert report["success"] is False and report["message"] == msg.splitlines()[0]
    assert any(f["column"] == column for f in report["failed"])
    # and nothing was published as validated
    assert not partitions.file(st.validated_dir, "2013-01").exists()
    assert not (st.state_dir / "validation" / "2013-01.json").exists()
    assert err.value.failures.keys() == {"2013-01"}


@pytest.mark.parametrize(
    "variant",
    [
        lambda df: df.assign(event_ts=df["event_ts"].astype("datetime64[us, UTC]")),
        lambda df: df.assign(carrier=df["carrier"].astype("category")),
        lambda df: df.assign(is_delayed=df["is_delayed"].fillna(False).astype("int64")),
    ],
    ids=["ts-in-microseconds", "category-dtype", "target-as-0-1"],
)
def test_storage_variants_that_honour_the_contract_pass(project, january, variant):
    # given a partition stored with another but equivalent representation
    params, st = project
    raw = put_raw(st, "2013-01", variant(january))

    # when validated
    out = validate.run(params, st, ["2013-01"])

    # then it passes and the validated file holds the raw file unchanged
    assert out["2013-01"]["success"]
    assert_copy_of(partitions.file(st.validated_dir, "2013-01"), raw)


def test_unseen_category_within_tolerance_passes_with_a_warning(tmp_path, january):
    # given a contract listing dest categories with a 1% tolerance, and 0.5% unseen values
    def edit(raw):
        for f in raw["contract"]["features"]:
            if f["name"] == "dest":
                f["categories"] = sorted(january["dest"].unique())
                f["unseen_category_tolerance"] = 0.01

    params, st = make_project(tmp_path, edit)
    df = january.copy()
    df.loc[df.index[:10], "dest"] = "ZZZ"
    put_raw(st, "2013-01", df)

    # when validated
    out = validate.run(params, st, ["2013-01"])

    # then it passes, and the summary warns about the unseen values
    summary = out["2013-01"]
    assert summary["success"] and summary["statistics"]["warned"] == 1
    (warning,) = summary["warnings"]
    assert warning["column"] == "dest" and warning["unexpected_count"] == 10
    assert "ZZZ" in warning["observed"]
    assert partitions.file(st.validated_dir, "2013-01").is_file()


def test_allowed_duplicates_and_warning_severity_do_not_fail(tmp_path, january):
    # given a contract allowing 2 rows with a duplicated key, and an extra warning-only rule
    def edit(raw):
        raw["validate"]["max_duplicate_keys"] = 2
        raw["validate"]["extra_expectations"] = [
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {"column": "temp", "min_value": 1000, "severity": "warning"},
            }
        ]

    params, st = make_project(tmp_path, edit)
    put_raw(st, "2013-01", _duplicate_keys(january))

    # when validated
    out = validate.run(params, st, ["2013-01"])

    # then both show up as warnings and the partition passes
    warned = {w["expectation"]: w for w in out["2013-01"]["warnings"]}
    assert warned["expect_column_values_to_be_unique"]["unexpected_count"] == 2
    assert warned["expect_column_mean_to_be_between"]["success"] is False
    assert partitions.file(st.validated_dir, "2013-01").is_file()


def test_good_partitions_are_written_even_when_another_fails(project, january):
    # given one good partition and one whose rows all fall outside its month
    params, st = project
    put_raw(st, "2013-01", january)
    put_raw(st, "2013-03", january)

    # when both are validated
    with pytest.raises(validate.ValidationFailed, match="data/raw/2013-03.parquet") as err:
        validate.run(params, st, ["2013-01", "2013-03"])

    # then the good one is validated and only the bad one is quarantined
    assert "data/raw/2013-01.parquet" not in str(err.value)
    assert partitions.file(st.validated_dir, "2013-01").is_file()
    assert not partitions.file(st.validated_dir, "2013-03").exists()
    assert (st.quarantine_dir / "2013-03" / "validation.json").is_file()


def test_corrupt_parquet_is_quarantined(project):
    params, st = project
    raw = st.raw_dir / "2013-01.parquet"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"PAR1 this is not parquet")

    with pytest.raises(validate.ValidationFailed, match="cannot be read as Parquet"):
        validate.run(params, st, ["2013-01"])

    assert (st.quarantine_dir / "2013-01" / "2013-01.parquet").is_file()
    assert not raw.exists()


def test_duplicate_column_names_are_quarantined_not_half_checked(project, january):
    params, st = project
    path = st.raw_dir / "2013-01.parquet"
    path.parent.mkdir(parents=True)
    twice = pd.concat([january, january[["temp"]]], axis=1)
    # pyarrow refuses duplicate names from pandas; write the table directly
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array(twice.iloc[:, i]) for i in range(twice.shape[1])]
    pq.write_table(pa.Table.from_arrays(arrays, names=list(twice.columns)), path)

    with pytest.raises(validate.ValidationFailed, match=r"cannot be read as Parquet.*\(temp\)"):
        validate.run(params, st, ["2013-01"])
    assert (st.quarantine_dir / "2013-01" / "validation.json").is_file()


def test_raw_file_changed_after_ingest_is_refused_naming_ingest(project, january):
    # given a raw partition whose manifest entry records other bytes than the file's
    params, st = project
    raw = put_raw(st, "2013-01", january)
    recorded = {"path": "data/raw/2013-01.parquet", "md5": "0" * 32, "rows": ROWS, "at": "t"}
    io.write_json(provenance.manifest_path(st), provenance.updated({}, "2013-01", recorded))

    # when validated, then it is refused naming the file, both hashes and ingest
    with pytest.raises(provenance.Stale) as err:
        validate.run(params, st, ["2013-01"])
    msg = str(err.value)
    assert str(raw) in msg and io.md5(raw) in msg and "0" * 32 in msg
    assert "re-run `mlops ingest --partitions 2013-01`" in msg
    # and nothing was validated or quarantined
    assert not partitions.file(st.validated_dir, "2013-01").exists()
    assert raw.is_file() and not st.quarantine_dir.exists()

    # when the manifest records the file's own bytes, then it validates, stamped with them
    recorded["md5"] = io.md5(raw)
    io.write_json(provenance.manifest_path(st), {"2013-01": recorded})
    assert validate.run(params, st, ["2013-01"])["2013-01"]["md5"] == io.md5(raw)
    assert provenance.made_from(partitions.file(st.validated_dir, "2013-01")) == io.md5(raw)


def test_missing_raw_partition_says_to_run_ingest(project):
    params, st = project

    with pytest.raises(FileNotFoundError, match=r"data/raw/2013-05\.parquet.*ingest"):
        validate.run(params, st, ["2013-05"])


# --------------------------------------------------------------------------- many partitions
def _days(january: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The slice cut into day partitions (2013-01-01 .. 2013-01-03)."""
    day = january["event_ts"].dt.strftime("%Y-%m-%d")
    return {d: part.reset_index(drop=True) for d, part in january.groupby(day)}


def _daily(raw):
    raw["ingest"]["partition"] = "day"
    raw["contract"]["min_rows"] = 10
    raw["train"]["partitions"] = ["2013-01-01", "2013-01-02"]
    raw["score"]["partitions"] = ["2013-01-03"]
    for f in raw["contract"]["features"]:
        f.setdefault("max_null_fraction", 0.1)  # 2013-01-01 misses 5.6% of its weather


def _stable(summary: dict) -> dict:
    """A summary without what differs from run to run (time, the Data Docs page)."""
    varying = ("validated_at", "duration_s", "data_docs", "data_docs_page")
    return {k: v for k, v in summary.items() if k not in varying}


def _with_warnings(days: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    first, second, third = (d.copy() for d in days.values())
    first.loc[first.index[:7], "pressure"] = None  # nulls within max_null_fraction
    second.loc[second.index[3:5], "dest"] = "ZZZ"  # unseen, within the 1% tolerance
    third.loc[third.index[:2], "temp"] = None
    return dict(zip(days, (first, second, third), strict=True))


def _tolerant(raw):
    _daily(raw)
    for f in raw["contract"]["features"]:
        if f["name"] == "dest":
            f["categories"] = ["ATL", "ORD", "LAX", "BOS", "MCO", "IAH", "MIA", "FLL", "CLT"]
            f["unseen_category_tolerance"] = 0.9


def test_many_partitions_in_one_run_get_the_summaries_of_one_run_each(tmp_path, january):
    # given three day partitions with warnings of their own, in two identical projects
    days = _with_warnings(_days(january))
    (tmp_path / "together").mkdir()
    (tmp_path / "alone").mkdir()
    together = make_project(tmp_path / "together", _tolerant)
    alone = make_project(tmp_path / "alone", _tolerant)
    for _, st in (together, alone):
        for pid, df in days.items():
            put_raw(st, pid, df)

    # when one validates them in one call and the other one partition per call
    many = validate.run(*together, list(days))
    one = {pid: validate.run(*alone, [pid])[pid] for pid in days}

    # then they were checked in one GX run (one result page)
    assert len({s["data_docs_page"] for s in many.values()}) == 1
    # and every partition's summary, state file and validated copy are the same
    assert len({json.dumps(s["expectations"]) for s in many.values()}) == 3
    d1, d2, _ = days
    (dest,) = many[d2]["warnings"]
    assert dest["column"] == "dest" and "ZZZ" in dest["observed"]
    pressure = next(
        x
        for x in many[d1]["expectations"]
        if x["column"] == "pressure" and x["expectation"] == "expect_column_values_to_not_be_null"
    )
    assert pressure["unexpected_count"] >= 7
    for pid in days:
        assert _stable(many[pid]) == _stable(one[pid]), pid
        st_t, st_a = together[1], alone[1]
        state_t = io.read_json(st_t.state_dir / "validation" / f"{pid}.json")
        state_a = io.read_json(st_a.state_dir / "validation" / f"{pid}.json")
        assert _stable(state_t) == _stable(state_a)
        assert_copy_of(partitions.file(st_t.validated_dir, pid), partitions.file(st_t.raw_dir, pid))
        assert Path(many[pid]["data_docs_page"]).is_file()


def test_a_bad_partition_among_many_fails_alone_with_gx_own_result(tmp_path, january):
    # given three day partitions, the second with temperatures out of range
    params, st = make_project(tmp_path, _daily)
    days = _days(january)
    bad = list(days)[1]
    days[bad] = _hot(days[bad])
    for pid, df in days.items():
        put_raw(st, pid, df)

    # when validated in one call
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(params, st, list(days))

    # then only that one is quarantined, with GX's own result for it, and the others pass
    assert err.value.failures.keys() == {bad}
    assert f"data/raw/{bad}.parquet failed validation: column 'temp'" in str(err.value)
    report = io.read_json(st.quarantine_dir / bad / "validation.json")
    assert report["gx_result"]["success"] is False
    assert report["gx_result"]["meta"]["run_id"]["run_name"] == bad
    for pid in days:
        assert partitions.file(st.validated_dir, pid).is_file() == (pid != bad)


def test_partitions_that_cannot_share_a_run_are_checked_one_by_one(tmp_path, january):
    # given three day partitions, one lacking a column (another schema)
    params, st = make_project(tmp_path, _daily)
    days = _days(january)
    odd = list(days)[0]
    days[odd] = days[odd].drop(columns=["visib"])
    for pid, df in days.items():
        put_raw(st, pid, df)

    # when validated in one call
    with pytest.raises(validate.ValidationFailed, match="column 'visib': missing") as err:
        validate.run(params, st, list(days))

    # then the odd one fails on its own and the two others pass
    assert err.value.failures.keys() == {odd}
    assert sorted(p.stem for p in st.validated_dir.glob("*.parquet")) == sorted(set(days) - {odd})


# --------------------------------------------------------------------------- duplicate keys
def test_a_duplicated_key_fails_naming_the_key_an_example_and_the_setting(project, january):
    # given a partition where two rows share a flight_id (max_duplicate_keys: 0)
    params, st = project
    put_raw(st, "2013-01", _duplicate_keys(january))
    key = january["flight_id"].iloc[0]

    # when validated
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(params, st, ["2013-01"])

    # then it is quarantined, the message naming the key column, the key and the setting
    msg = str(err.value)
    assert "column 'flight_id': expect_column_values_to_be_unique" in msg
    assert f"2 rows with a duplicated key (0.10%), e.g. {key}" in msg
    assert "validate.max_duplicate_keys" in msg
    assert (st.quarantine_dir / "2013-01" / "validation.json").is_file()


def _compound(raw):
    raw["contract"]["entity_keys"] = ["flight_id", "dest"]
    raw["contract"]["features"] = [f for f in raw["contract"]["features"] if f["name"] != "dest"]


def test_a_duplicated_compound_key_fails_naming_both_columns(tmp_path, january):
    # given a two-column key, and two rows sharing both values
    params, st = make_project(tmp_path, _compound)
    df = january.copy()
    df.loc[df.index[1], ["flight_id", "dest"]] = df.loc[df.index[0], ["flight_id", "dest"]].values
    put_raw(st, "2013-01", df)
    flight, dest = df.loc[df.index[0], ["flight_id", "dest"]]

    # when validated
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(params, st, ["2013-01"])

    # then the message names both key columns and the key as people read it
    msg = str(err.value)
    assert "column 'flight_id,dest': expect_compound_columns_to_be_unique" in msg
    assert f"e.g. (flight_id={flight}, dest={dest})" in msg
    assert "validate.max_duplicate_keys" in msg


def test_duplicates_within_tolerance_are_dropped_never_validated(tmp_path, january, capsys):
    # given max_duplicate_keys: 3 and a key shared by three rows
    params, st = make_project(tmp_path, lambda raw: raw["validate"].update(max_duplicate_keys=3))
    df = january.copy()
    key = df["flight_id"].iloc[0]
    df.loc[df.index[1:3], "flight_id"] = key
    put_raw(st, "2013-01", df)

    # when validated
    out = validate.run(params, st, ["2013-01"])

    # then it passes, but no row of that key reaches the validated partition
    validated = pd.read_parquet(partitions.file(st.validated_dir, "2013-01"))
    assert len(validated) == ROWS - 3 and key not in set(validated["flight_id"])
    assert validated["flight_id"].is_unique
    assert list(validated.dtypes) == list(df.dtypes)
    # and the summary, state file and output say how many rows and which key
    dropped = out["2013-01"]["dropped_duplicates"]
    assert dropped == {"columns": ["flight_id"], "rows": 3, "keys": 1, "examples": [key]}
    state = io.read_json(st.state_dir / "validation" / "2013-01.json")
    assert state["dropped_duplicates"] == dropped and state["rows_validated"] == ROWS - 3
    printed = capsys.readouterr().out
    assert f"dropped 3 row(s) sharing 1 flight_id key(s) (e.g. {key})" in printed


def test_duplicates_beyond_tolerance_fail(tmp_path, january):
    # given max_duplicate_keys: 2 and a key shared by three rows
    params, st = make_project(tmp_path, lambda raw: raw["validate"].update(max_duplicate_keys=2))
    df = january.copy()
    df.loc[df.index[1:3], "flight_id"] = df["flight_id"].iloc[0]
    put_raw(st, "2013-01", df)

    # when validated, then it fails and nothing is validated
    with pytest.raises(validate.ValidationFailed, match="3 rows with a duplicated key"):
        validate.run(params, st, ["2013-01"])
    assert not partitions.file(st.validated_dir, "2013-01").exists()


# --------------------------------------------------------------------------- outcomes unknown
TARGET = "is_delayed"


def test_a_partition_without_the_target_passes_against_its_own_suite(project, january):
    # given a raw partition ingested without its target column (rows to score)
    params, st = project
    raw = put_raw(st, "2013-01", january.drop(columns=[TARGET]))

    # when validated
    out = validate.run(params, st, ["2013-01"])

    # then it passes the suite of partitions without the target, every row unlabelled
    summary = out["2013-01"]
    assert summary["success"] and summary["suite"] == "flights_contract_unlabelled"
    assert summary["checkpoint"] == "flights_validate_unlabelled"
    assert (summary["labelled_rows"], summary["unlabelled_rows"]) == (0, ROWS)
    assert not any(x["column"] == TARGET for x in summary["expectations"])
    assert_copy_of(partitions.file(st.validated_dir, "2013-01"), raw)
    state = io.read_json(st.state_dir / "validation" / "2013-01.json")
    assert state["unlabelled_rows"] == ROWS
    assert Path(summary["data_docs_page"]).is_file()
    suites = st.gx_root / "expectations"
    assert [p.name for p in suites.glob("*.json")] == ["flights_contract_unlabelled.json"]

    # when the same partition comes again with temperatures out of range
    raw = put_raw(st, "2013-01", _hot(january).drop(columns=[TARGET]), pointer=True)
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(params, st, ["2013-01"])

    # then it is quarantined as before, naming the file and the column
    assert str(err.value).startswith("data/raw/2013-01.parquet failed validation: column 'temp'")
    assert (st.quarantine_dir / "2013-01" / "2013-01.parquet").is_file() and not raw.exists()
    report = io.read_json(st.quarantine_dir / "2013-01" / "validation.json")
    assert report["gx_result"]["success"] is False


@pytest.mark.parametrize(
    "unknown",
    [
        lambda s: s.astype("boolean").mask(s.index < 300),
        lambda s: s.astype("float64").mask(s.index < 300),
        lambda s: s.astype(object).mask(s.index < 300, None),
    ],
    ids=["nullable-bool", "float-nan", "object-none"],
)
def test_a_target_with_unknown_outcomes_passes_and_counts_them(project, january, unknown):
    # given a partition whose first 300 outcomes are not known yet (stored as a null)
    params, st = project
    df = january.assign(**{TARGET: unknown(january[TARGET])})
    put_raw(st, "2013-01", df)

    # when validated
    summary = validate.run(params, st, ["2013-01"])["2013-01"]

    # then it passes, and the summary counts the rows with and without an outcome
    known = int(df[TARGET].notna().sum())
    assert summary["success"] and summary["suite"] == "flights_contract"
    assert known <= ROWS - 300
    assert (summary["labelled_rows"], summary["unlabelled_rows"]) == (known, ROWS - known)


def test_an_outcome_outside_the_set_still_fails_among_unknown_ones(project, january):
    # given a partition with unknown outcomes and one outcome of 2
    params, st = project
    target = january[TARGET].astype("float64").mask(january.index < 300)
    target.iloc[400] = 2.0
    put_raw(st, "2013-01", january.assign(**{TARGET: target}))

    # when validated, then the target's set is named with what was seen
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(params, st, ["2013-01"])
    line = next(p for p in str(err.value).split("; ") if f"column {TARGET!r}" in p)
    assert "expect_column_values_to_be_in_set" in line and "1 unexpected values" in line


@pytest.mark.parametrize("withheld", [2, 1], ids=["two-without", "two-with-unknowns"])
def test_partitions_with_and_without_the_target_in_one_run_match_one_by_one(
    tmp_path, january, withheld
):
    # given three day partitions: the first ones without the target, the others with
    # unknown outcomes (a schema shared by two is checked in one GX run)
    days = _days(january)
    pids = list(days)
    for pid in pids[:withheld]:
        days[pid] = days[pid].drop(columns=[TARGET])
    for pid in pids[withheld:]:
        known = days[pid][TARGET].astype("boolean")
        days[pid] = days[pid].assign(**{TARGET: known.mask(known.index < 5)})
    (tmp_path / "together").mkdir()
    (tmp_path / "alone").mkdir()
    together = make_project(tmp_path / "together", _daily)
    alone = make_project(tmp_path / "alone", _daily)
    for _, st in (together, alone):
        for pid, df in days.items():
            put_raw(st, pid, df)

    # when one project validates them in one call and the other one partition per call
    many = validate.run(*together, list(days))
    one = {pid: validate.run(*alone, [pid])[pid] for pid in days}

    # then each schema was checked against its own suite, the two sharing one in one run
    pair = pids[:2] if withheld == 2 else pids[1:]
    assert many[pair[0]]["data_docs_page"] == many[pair[1]]["data_docs_page"]
    assert [many[d]["suite"] for d in pids] == [
        "flights_contract_unlabelled" if i < withheld else "flights_contract" for i in range(3)
    ]
    for pid in pids[withheld:]:
        assert many[pid]["unlabelled_rows"] == int(days[pid][TARGET].isna().sum()) >= 5
    # and every summary is the one a call of its own gives
    for pid in days:
        assert _stable(many[pid]) == _stable(one[pid]), pid
