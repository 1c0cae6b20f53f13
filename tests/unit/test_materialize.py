"""materialize: real Feast (DuckDB offline, SQLite online) on small slices of real months."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops import io
from mlops import materialize as m
from mlops.config import ConfigError, load_params
from tests.unit.conftest import ROWS


def _expected(params, df: pd.DataFrame) -> pd.DataFrame:
    """Validated rows as training_frame should return them."""
    c = params.contract
    out = df.sort_values([c.timestamp, *c.entity_keys]).reset_index(drop=True)
    for f in c.features:
        if f.dtype == "float":
            out[f.name] = out[f.name].astype("float64")
    return out[[*c.entity_keys, c.timestamp, *c.feature_names, c.target]]


def test_training_frame_has_one_row_per_label_with_the_validated_values(tmp_project, months):
    # given two validated months, materialised
    params, st = tmp_project
    m.run(params, st, ["2013-01", "2013-02"])

    # when the training set is built
    frame = m.training_frame(params, st, ["2013-01", "2013-02"])

    # then it holds every label row once, with the validated feature values, in order
    expected = _expected(params, pd.concat(months.values(), ignore_index=True))
    assert len(frame) == 2 * ROWS
    pd.testing.assert_frame_equal(frame, expected)


def _shared_flight(st, months) -> tuple[str, pd.Timestamp]:
    """Validated months where one flight has temp 10 in January and 20 in February."""
    jan, feb = months["2013-01"].copy(), months["2013-02"].copy()
    flight = jan.loc[0, "flight_id"]
    jan.loc[0, "temp"] = 10.0
    feb.loc[5, "flight_id"] = flight
    feb.loc[5, "temp"] = 20.0
    io.write_parquet(io.partition_file(st.validated_dir, "2013-01"), jan)
    io.write_parquet(io.partition_file(st.validated_dir, "2013-02"), feb)
    return flight, jan.loc[0, "event_ts"]


def test_point_in_time_ignores_feature_rows_later_than_the_label(tmp_project, months):
    # given one flight seen in January and again in February with another temperature
    params, st = tmp_project
    flight, jan_ts = _shared_flight(st, months)
    m.run(params, st, ["2013-01", "2013-02"])

    # when January's training set is built
    frame = m.training_frame(params, st, ["2013-01"])

    # then the January label gets the January value, not the later February one
    assert frame.loc[frame["flight_id"] == flight, "temp"].tolist() == [10.0]
    # and a label dated before any feature row of its entity gets no features
    early = pd.DataFrame({"flight_id": [flight], "event_ts": [jan_ts - pd.Timedelta("1h")]})
    assert m.retrieve(params, st, early)[params.contract.feature_names].isna().all(axis=None)
    # and online serving has the latest value
    assert m.online_features(params, st, [{"flight_id": flight}])["temp"].tolist() == [20.0]


def test_backfilling_an_older_partition_keeps_the_latest_online_value(tmp_project, months):
    # given January and February materialised, one flight in both
    params, st = tmp_project
    flight, _ = _shared_flight(st, months)
    m.run(params, st, ["2013-01", "2013-02"])

    # when January is materialised again
    result = m.run(params, st, ["2013-01"])

    # then the online load reached through February and the February value is served
    assert result["online"].endswith("[2013-01-01, 2013-03-01)")
    assert m.online_features(params, st, [{"flight_id": flight}])["temp"].tolist() == [20.0]


def test_rematerialising_a_partition_replaces_its_rows(tmp_project, months):
    # given January materialised once
    params, st = tmp_project
    m.run(params, st, ["2013-01"])

    # when it is materialised again after a correction
    jan = months["2013-01"].copy()
    jan.loc[3, "temp"] = -5.0
    io.write_parquet(io.partition_file(st.validated_dir, "2013-01"), jan)
    result = m.run(params, st, ["2013-01"])

    # then the offline source holds each row once, with the corrected value
    source = pd.read_parquet(m.source_dir(params, st))
    assert result["rows"] == ROWS
    assert len(source) == ROWS
    assert source["flight_id"].is_unique
    frame = m.training_frame(params, st, ["2013-01"])
    assert len(frame) == ROWS
    assert frame.loc[frame["flight_id"] == jan.loc[3, "flight_id"], "temp"].tolist() == [-5.0]


def test_online_features_latest_for_known_entity_missing_for_unknown(tmp_project, months):
    # given January materialised online
    params, st = tmp_project
    m.run(params, st, ["2013-01"])
    known = months["2013-01"].iloc[7]

    # when the online store is read for a known and an unknown flight
    out = m.online_features(params, st, [{"flight_id": known["flight_id"]}, {"flight_id": "nope"}])

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
    io.write_parquet(io.partition_file(st.validated_dir, "2013-02"), feb)
    m.run(params, st, ["2013-02"])

    # when February is prepared for scoring
    frame = m.scoring_frame(params, st, ["2013-02"])

    # then it has every row and no target
    assert len(frame) == ROWS
    assert params.contract.target not in frame.columns
    assert frame["temp"].notna().sum() > 0
    # and asking for January, never materialised, names the missing file
    with pytest.raises(m.FeatureError, match=r"2013-01\.parquet"):
        m.training_frame(params, st, ["2013-01"])
    # and training on February fails because it has no target
    with pytest.raises(m.FeatureError, match="is_delayed"):
        m.training_frame(params, st, ["2013-02"])


def test_definitions_follow_params_and_reapply_only_when_changed(tmp_project, tmp_path):
    # given a store built from params.yaml
    params, st = tmp_project
    from feast import FeatureStore
    from feast.types import Float64, Int64, String

    fs = m.store(params, st)
    view = fs.get_feature_view("flights")
    types = {f.name: f.dtype for f in view.features}
    assert [f.name for f in view.features] == params.contract.feature_names
    assert (types["carrier"], types["sched_hour"], types["temp"]) == (String, Int64, Float64)
    assert view.ttl.days == 3650
    assert fs.get_feature_service("flights_model").name == "flights_model"
    assert m.store(params, st) is fs
    # and a new process (no cached store) finds them applied and leaves the registry alone
    registry = st.data_root / "feast" / "registry.db"
    before = registry.stat().st_mtime_ns
    m._STORES.clear()
    m.store(params, st)
    assert registry.stat().st_mtime_ns == before

    # when the ttl changes in params.yaml
    text = (tmp_path / "params.yaml").read_text().replace("ttl_days: 3650", "ttl_days: 30")
    (tmp_path / "params.yaml").write_text(text)
    changed = load_params(tmp_path / "params.yaml")
    m.store(changed, st)

    # then the registry (read by a fresh store) holds the new definitions
    fresh = FeatureStore(config=m.repo_config(changed, st))
    assert fresh.get_feature_view("flights").ttl.days == 30


def test_integer_keys_become_int64_entities(tmp_project):
    # given params whose entity key data is integer
    params, st = tmp_project
    from feast import ValueType

    # when definitions are built for integer keys
    defs = m.definitions(params, st, key_types={"flight_id": "int"})

    # then the entity and its schema field are INT64
    assert defs.entities[0].value_type == ValueType.INT64
    assert (
        defs.view.tags[m.FINGERPRINT_TAG] != m.definitions(params, st).view.tags[m.FINGERPRINT_TAG]
    )


def test_online_store_setting(tmp_project, monkeypatch):
    # given no setting, then SQLite under the data root
    params, st = tmp_project
    assert m.online_store_config(st) == {
        "type": "sqlite",
        "path": str(st.data_root / "feast" / "online.db"),
    }
    # when a Redis URL is set, then Feast's connection string
    monkeypatch.setenv(m.ENV_ONLINE, "redis://127.0.0.1:6380/3")
    assert m.online_store_config(st) == {
        "type": "redis",
        "connection_string": "127.0.0.1:6380,db=3",
        "skip_dedup": True,
    }
    # when something else is set, then an error naming the variable
    monkeypatch.setenv(m.ENV_ONLINE, "memcached://x")
    with pytest.raises(ConfigError, match="MLOPS_FEAST_ONLINE"):
        m.online_store_config(st)


def test_redis_online_store(tmp_project, months, monkeypatch):
    # given Redis on 127.0.0.1:6379, db 11 used by this test only
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, db=11, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    params, st = tmp_project
    monkeypatch.setenv(m.ENV_ONLINE, "redis://127.0.0.1:6379/11")
    try:
        # when January is materialised into Redis
        result = m.run(params, st, ["2013-01"])
        known = months["2013-01"].iloc[2]
        out = m.online_features(params, st, [{"flight_id": known["flight_id"]}])

        # then it is served from Redis
        assert result["online"].startswith("redis")
        assert client.dbsize() > 0
        assert out.loc[0, "dest"] == known["dest"]
        assert out.loc[0, "temp"] == pytest.approx(known["temp"])
    finally:
        client.flushdb()
