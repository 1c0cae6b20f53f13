"""features: Feast definitions, point-in-time reads and the online store, on real slices.

Real Feast (DuckDB offline, SQLite online) on small slices of real months.
"""

from __future__ import annotations

import pandas as pd
import pytest

from mlops import features, io, partitions, training_data
from mlops import materialize as m
from mlops.config import ConfigError, load_params, settings
from tests.helpers import copy_key_in_feature_file, scoring_frame, shared_flight
from tests.unit.conftest import ROWS


def _expected(params, df: pd.DataFrame) -> pd.DataFrame:
    """Validated rows with a known target as training_frame should return them."""
    c = params.contract
    out = df[df[c.target].notna()].sort_values([c.timestamp, *c.entity_keys])
    out = out.reset_index(drop=True)
    for f in c.features:
        if f.dtype == "float":
            out[f.name] = out[f.name].astype("float64")
    out[c.target] = out[c.target].astype("int8")  # as the label store types it
    return out[[*c.entity_keys, c.timestamp, *c.feature_names, c.target]]


def test_training_frame_has_one_row_per_label_with_the_validated_values(tmp_project, months):
    # given two validated months, materialised
    params, st = tmp_project
    m.run(params, st, ["2013-01", "2013-02"])

    # when the training set is built
    frame = training_data.training_frame(params, st, ["2013-01", "2013-02"])

    # then it holds every labelled row once, with the validated feature values, in order
    expected = _expected(params, pd.concat(months.values(), ignore_index=True))
    assert len(frame) == len(expected) > ROWS
    pd.testing.assert_frame_equal(frame, expected)


def test_point_in_time_ignores_feature_rows_later_than_the_label(tmp_project, months):
    # given one flight seen in January and again in February with another temperature
    params, st = tmp_project
    flight, jan_ts = shared_flight(st, months)
    m.run(params, st, ["2013-01", "2013-02"])

    # when January's training set is built
    frame = training_data.training_frame(params, st, ["2013-01"])

    # then the January label gets the January value, not the later February one
    assert frame.loc[frame["flight_id"] == flight, "temp"].tolist() == [10.0]
    # and a label dated before any feature row of its entity gets no features
    early = pd.DataFrame({"flight_id": [flight], "event_ts": [jan_ts - pd.Timedelta("1h")]})
    assert features.retrieve(params, st, early)[params.contract.feature_names].isna().all(axis=None)
    # and online serving has the latest value
    assert features.online_features(params, st, [{"flight_id": flight}])["temp"].tolist() == [20.0]


def test_online_features_latest_for_known_entity_missing_for_unknown(tmp_project, months):
    # given January materialised online
    params, st = tmp_project
    m.run(params, st, ["2013-01"])
    known = months["2013-01"].iloc[7]

    # when the online store is read for a known and an unknown flight
    out = features.online_features(
        params, st, [{"flight_id": known["flight_id"]}, {"flight_id": "nope"}]
    )

    # then columns follow the contract, the known row has its values, the unknown none
    c = params.contract
    assert list(out.columns) == [*c.entity_keys, *c.feature_names]
    assert out.loc[0, "carrier"] == known["carrier"]
    assert out.loc[0, "distance"] == pytest.approx(float(known["distance"]))
    assert out.loc[1, "carrier"] is None
    assert out.loc[1, c.feature_names[3:]].isna().all()


def test_scoring_frame_without_target_and_missing_features_are_errors(tmp_project, months):
    # given February validated without its target, and only February materialised
    params, st = tmp_project
    feb = months["2013-02"].drop(columns=[params.contract.target])
    io.write_parquet(partitions.file(st.validated_dir, "2013-02"), feb)
    m.run(params, st, ["2013-02"])

    # when February is prepared for scoring
    frame = scoring_frame(params, st, ["2013-02"])

    # then it has every row and no target
    assert len(frame) == ROWS
    assert params.contract.target not in frame.columns
    assert frame["temp"].notna().sum() > 0
    # and asking for January, never materialised, names the missing file
    with pytest.raises(features.FeatureError, match=r"2013-01\.parquet"):
        training_data.training_frame(params, st, ["2013-01"])
    # and training on February fails because none of its outcomes is known
    with pytest.raises(features.FeatureError, match="partition 2013-02 has no labels yet"):
        training_data.training_frame(params, st, ["2013-02"])


def test_definitions_follow_params_and_reapply_only_when_changed(tmp_project, tmp_path):
    # given a store built from params.yaml
    params, st = tmp_project
    from feast import FeatureStore
    from feast.types import Float64, Int64, String

    fs = features.store(params, st)
    view = fs.get_feature_view("flights")
    types = {f.name: f.dtype for f in view.features}
    assert [f.name for f in view.features] == params.contract.feature_names
    assert (types["carrier"], types["sched_hour"], types["temp"]) == (String, Int64, Float64)
    assert view.ttl.days == 3650
    assert fs.get_feature_service("flights_model").name == "flights_model"
    assert features.store(params, st) is fs
    # and a new process (no cached store) finds them applied and leaves the registry alone
    registry = st.data_root / "feast" / "registry.db"
    before = registry.stat().st_mtime_ns
    features._STORES.clear()
    features.store(params, st)
    assert registry.stat().st_mtime_ns == before

    # when the ttl changes in params.yaml
    text = (tmp_path / "params.yaml").read_text().replace("ttl_days: 3650", "ttl_days: 30")
    (tmp_path / "params.yaml").write_text(text)
    changed = load_params(tmp_path / "params.yaml")
    features.store(changed, st)

    # then the registry (read by a fresh store) holds the new definitions
    fresh = FeatureStore(config=features.repo_config(changed, st))
    assert fresh.get_feature_view("flights").ttl.days == 30


def test_integer_keys_become_int64_entities(tmp_project):
    # given params whose entity key data is integer
    params, st = tmp_project
    from feast import ValueType

    # when definitions are built for integer keys
    defs = features.definitions(params, st, key_types={"flight_id": "int"})

    # then the entity and its schema field are INT64
    assert defs.entities[0].value_type == ValueType.INT64
    assert (
        defs.view.tags[features.FINGERPRINT_TAG]
        != features.definitions(params, st).view.tags[features.FINGERPRINT_TAG]
    )


def test_online_store_setting(tmp_project, monkeypatch):
    # given no setting, then SQLite under the data root
    params, st = tmp_project
    assert features.online_store_config(st) == {
        "type": "sqlite",
        "path": str(st.data_root / "feast" / "online.db"),
    }
    # when a Redis URL is set, then Feast's connection string
    monkeypatch.setenv("MLOPS_FEAST_ONLINE", "redis://127.0.0.1:6380/3")
    assert features.online_store_config(settings(st.params_path)) == {
        "type": "redis",
        "connection_string": "127.0.0.1:6380,db=3",
        "skip_dedup": True,
    }
    # when something else is set, then an error naming the variable
    monkeypatch.setenv("MLOPS_FEAST_ONLINE", "memcached://x")
    with pytest.raises(ConfigError, match="MLOPS_FEAST_ONLINE"):
        features.online_store_config(settings(st.params_path))


# --------------------------------------------------------------------------- feature files
def test_streamed_feature_rows_equal_the_point_in_time_scoring_frame(tmp_project, months):
    # given two materialised months sharing a flight, with a row of missing features
    params, st = tmp_project
    flight, _ = shared_flight(st, months, gaps=True)
    m.run(params, st, ["2013-01", "2013-02"])
    c = params.contract

    # when February is streamed from its feature file in chunks of 300 rows
    path = features.feature_file(params, st, "2013-02")
    chunks = list(features.batches(params, path, 300))

    # then the chunks hold exactly the rows and values of Feast's point-in-time join
    assert [len(x) for x in chunks] == [300, 300, len(months["2013-02"]) - 600]
    streamed = pd.concat(chunks, ignore_index=True)
    joined = scoring_frame(params, st, ["2013-02"])
    key, ts = c.entity_keys[0], c.timestamp
    got = streamed.sort_values(key, ignore_index=True)
    want = joined.sort_values(key, ignore_index=True)
    # Keys and timestamp are stored as the feature view declares them (string, us).
    got[key], want[key] = got[key].astype(object), want[key].astype(object)
    got[ts], want[ts] = got[ts].dt.as_unit("ns"), want[ts].dt.as_unit("ns")
    pd.testing.assert_frame_equal(got, want[got.columns])
    # and the shared flight has its February value, not January's
    assert streamed.loc[streamed["flight_id"] == flight, "temp"].tolist() == [20.0]


def test_a_partition_never_materialised_names_the_file_and_the_stage(tmp_project):
    # given January validated but not materialised
    params, st = tmp_project

    # when its feature file is asked for, then the error names it and says what to run
    with pytest.raises(features.FeatureError, match=r"2013-01\.parquet.*run `materialize 2013-01`"):
        features.feature_file(params, st, "2013-01")
    # and a partition that was never validated names the validated file instead
    with pytest.raises(FileNotFoundError, match=r"validated/2013-03\.parquet.*run validate"):
        features.feature_file(params, st, "2013-03")


# --------------------------------------------------------------------------- one row per key
def test_rows_sharing_a_key_and_timestamp_never_reach_the_point_in_time_join(tmp_project, months):
    # given January validated and materialised with two rows for one flight at one time
    params, st = tmp_project
    jan = months["2013-01"].copy()
    io.write_parquet(partitions.file(st.validated_dir, "2013-01"), jan)
    m.run(params, st, ["2013-01"])
    flight = jan.loc[0, "flight_id"]
    cols = ("flight_id", "event_ts")
    copy_key_in_feature_file(params, st, "2013-01", flight, jan.loc[1, "flight_id"], cols)
    jan.loc[1, ["flight_id", "event_ts"]] = jan.loc[0, ["flight_id", "event_ts"]].tolist()

    # when the training set is built, then it is refused naming the stage, file and key
    with pytest.raises(io.DuplicateKeys) as err:
        training_data.training_frame(params, st, ["2013-01"])
    msg = str(err.value)
    assert msg.startswith(f"train: feature file {features.source_dir(params, st)}/2013-01.parquet")
    assert "['flight_id', 'event_ts']" in msg and repr(flight) in msg
    assert "validate.max_duplicate_keys" in msg
    # and an evaluation names its own stage
    with pytest.raises(io.DuplicateKeys, match="^evaluate: "):
        training_data.training_frame(params, st, ["2013-01"], stage="evaluate")

    # when label rows sharing a key and timestamp are joined directly
    labels = jan[["flight_id", "event_ts"]].iloc[:2]
    with pytest.raises(io.DuplicateKeys, match=r"^card: label rows: 2 rows share 1 value"):
        features.retrieve(params, st, labels, stage="card")


def test_feast_is_imported_without_runtime_instrumentation_and_typeguard_is_restored() -> None:
    import subprocess
    import sys

    # given a fresh interpreter
    code = (
        "import typeguard\n"
        "checked = typeguard.typechecked\n"
        "from mlops import features\n"
        "features.load_feast()\n"
        "import feast.feature_view as fv\n"
        "names = fv.FeatureView.__init__.__code__.co_names\n"
        "print(any('typeguard' in n for n in names), typeguard.typechecked is checked)\n"
    )
    # when Feast is loaded the framework's way
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # then Feast's classes are not recompiled with checks, and the decorator is typeguard's
    assert out.stdout.split() == ["False", "True"]
