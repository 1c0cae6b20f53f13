"""validate: the GX checkpoint run over raw partitions, quarantine and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops import io, partitions, validate
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
    assert validated.read_bytes() == raw.read_bytes()
    state = io.read_json(st.state_dir / "validation" / "2013-01.json")
    assert state["success"] is True and state["partition"] == "2013-01"
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
        (_duplicate_keys, "flight_id", "expect_column_values_to_be_unique", "2 unexpected values"),
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
        lambda df: df.assign(is_delayed=df["is_delayed"].astype("int64")),
    ],
    ids=["ts-in-microseconds", "category-dtype", "target-as-0-1"],
)
def test_storage_variants_that_honour_the_contract_pass(project, january, variant):
    # given a partition stored with another but equivalent representation
    params, st = project
    raw = put_raw(st, "2013-01", variant(january))

    # when validated
    out = validate.run(params, st, ["2013-01"])

    # then it passes and the validated file is the raw file unchanged
    assert out["2013-01"]["success"]
    assert partitions.file(st.validated_dir, "2013-01").read_bytes() == raw.read_bytes()


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


def test_missing_raw_partition_says_to_run_ingest(project):
    params, st = project

    with pytest.raises(FileNotFoundError, match=r"data/raw/2013-05\.parquet.*ingest"):
        validate.run(params, st, ["2013-05"])
