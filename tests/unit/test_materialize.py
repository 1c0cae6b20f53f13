"""materialize: real Feast (DuckDB offline, SQLite online) on small slices of real months."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops import features, io, partitions, provenance, training_data
from mlops import materialize as m
from mlops.config import settings
from tests.conftest import REPO
from tests.helpers import shared_flight
from tests.unit.conftest import ROWS


def test_backfilling_an_older_partition_keeps_the_latest_online_value(tmp_project, months):
    # given January and February materialised, one flight in both
    params, st = tmp_project
    flight, _ = shared_flight(st, months)
    m.run(params, st, ["2013-01", "2013-02"])

    # when January is materialised again
    result = m.run(params, st, ["2013-01"])

    # then the online load reached through February and the February value is served
    assert result["online"].endswith("[2013-01-01, 2013-03-01)")
    assert features.online_features(params, st, [{"flight_id": flight}])["temp"].tolist() == [20.0]


def test_rematerialising_a_partition_replaces_its_rows(tmp_project, months):
    # given January materialised once
    params, st = tmp_project
    m.run(params, st, ["2013-01"])

    # when it is materialised again after a correction
    jan = months["2013-01"].copy()
    jan.loc[3, "temp"] = -5.0
    io.write_parquet(partitions.file(st.validated_dir, "2013-01"), jan)
    result = m.run(params, st, ["2013-01"])

    # then the offline source holds each row once, with the corrected value
    source = pd.read_parquet(m.source_dir(params, st))
    assert result["rows"] == ROWS
    assert len(source) == ROWS
    assert source["flight_id"].is_unique
    frame = training_data.training_frame(params, st, ["2013-01"])
    assert len(frame) == jan["is_delayed"].notna().sum()
    assert frame.loc[frame["flight_id"] == jan.loc[3, "flight_id"], "temp"].tolist() == [-5.0]


def test_redis_online_store(tmp_project, months, monkeypatch):
    # given Redis on 127.0.0.1:6379, db 11 used by this test only
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, db=11, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    params, st = tmp_project
    monkeypatch.setenv("MLOPS_FEAST_ONLINE", "redis://127.0.0.1:6379/11")
    st = settings(st.params_path)
    try:
        # when January is materialised into Redis
        result = m.run(params, st, ["2013-01"])
        known = months["2013-01"].iloc[2]
        out = features.online_features(params, st, [{"flight_id": known["flight_id"]}])

        # then it is served from Redis
        assert result["online"].startswith("redis")
        assert client.dbsize() > 0
        assert out.loc[0, "dest"] == known["dest"]
        assert out.loc[0, "temp"] == pytest.approx(known["temp"])
    finally:
        client.flushdb()


def test_many_partitions_in_one_call_write_the_files_of_one_call_each(
    tmp_project, months, tmp_path
):
    # given January and February validated
    params, st = tmp_project

    # when both are materialised in one call, and (elsewhere) one per call
    together = m.run(params, st, ["2013-01", "2013-02"])
    files = {p: partitions.file(m.source_dir(params, st), p).read_bytes() for p in months}
    for pid in months:
        m.run(params, st, [pid])

    # then each partition's feature file is byte for byte the same
    assert together["rows"] == 2 * ROWS
    for pid, data in files.items():
        assert partitions.file(m.source_dir(params, st), pid).read_bytes() == data


def test_partitions_without_their_outcomes_publish_the_same_features(tmp_project, months):
    # given January materialised as validated with its target
    params, st = tmp_project
    m.run(params, st, ["2013-01"])
    path = partitions.file(m.source_dir(params, st), "2013-01")
    labelled = pd.read_parquet(path)
    jan = months["2013-01"]
    target = params.contract.target

    for variant in (jan.drop(columns=[target]), jan.assign(**{target: None})):
        # when January is validated without its outcomes (no column, or all null)
        io.write_parquet(partitions.file(st.validated_dir, "2013-01"), variant)
        result = m.run(params, st, ["2013-01"])

        # then every row is published with the same features, and no target column
        assert result["rows"] == ROWS
        pd.testing.assert_frame_equal(pd.read_parquet(path), labelled)
        assert target not in labelled.columns


def test_a_validated_partition_with_a_duplicated_key_is_refused(tmp_project, months):
    # given a validated file where two rows share a flight_id (not written by validate)
    params, st = tmp_project
    jan = months["2013-01"].copy()
    key = jan.loc[0, "flight_id"]
    jan.loc[1, "flight_id"] = key
    io.write_parquet(partitions.file(st.validated_dir, "2013-01"), jan)

    # when materialised, then it is refused naming the file and the key, and nothing written
    with pytest.raises(
        features.FeatureError, match=r"2013-01\.parquet: entity key flight_id"
    ) as err:
        m.run(params, st, ["2013-01", "2013-02"])
    assert key in str(err.value) and "re-run validate" in str(err.value)
    assert not partitions.file(m.source_dir(params, st), "2013-01").exists()


@pytest.mark.parametrize(
    ("repo", "project", "entity"),
    [
        ("feature_repo", "flights", "entity_flight_id"),
        ("examples/palmer_penguins/feature_repo", "palmer_penguins", "entity_row_id"),
        ("examples/seattle_weather/feature_repo", "seattle", "entity_day_id"),
    ],
)
def test_each_feature_repo_gives_the_feast_cli_the_pipelines_definitions(
    repo, project, entity, monkeypatch
) -> None:
    """`feast apply` in a project's feature_repo/ imports features.py: it must load."""
    import runpy

    from mlops.config import load_params, settings

    # given a project's feature_repo/, with no MLOPS_PARAMS set
    monkeypatch.delenv("MLOPS_PARAMS", raising=False)
    folder = REPO / repo
    # when the Feast CLI imports its module
    found = runpy.run_path(str(folder / "features.py"))
    # then it names the project's Feast objects, those the pipeline applies
    params_file = folder.parent / "params.yaml"
    defs = features.definitions(load_params(params_file), settings(params_file))
    assert found["project"].name == project
    assert found[entity] == defs.entities[0]
    assert found["feature_view"].name == defs.view.name
    assert found["feature_service"].name == defs.service.name


def test_features_carry_the_raw_version_and_stale_ones_are_refused(tmp_project, months):
    # given January ingested as version A, validated (stamped A) and materialised
    params, st = tmp_project
    old, new = "a" * 32, "b" * 32
    entry = {"path": "data/raw/2013-01.parquet", "md5": old, "rows": ROWS, "at": "t0"}
    io.write_json(provenance.manifest_path(st), provenance.updated({}, "2013-01", entry))
    validated = partitions.file(st.validated_dir, "2013-01")
    io.write_parquet(validated, months["2013-01"], provenance.metadata(old))
    m.run(params, st, ["2013-01"])

    # then the feature file says it was made from version A, and training may read it
    feature_file = partitions.file(m.source_dir(params, st), "2013-01")
    assert provenance.made_from(feature_file) == old
    labelled = months["2013-01"]["is_delayed"].notna().sum()
    assert len(training_data.training_frame(params, st, ["2013-01"])) == labelled

    # when January is re-ingested as version B
    entry = {**entry, "md5": new, "at": "t1"}
    entries = provenance.updated(provenance.manifest(st), "2013-01", entry)
    io.write_json(provenance.manifest_path(st), entries)

    # then training refuses the features of version A, naming the file and what to re-run
    with pytest.raises(provenance.Stale) as err:
        training_data.training_frame(params, st, ["2013-01"])
    msg = str(err.value)
    assert msg.startswith(f"train 2013-01: {feature_file} was made from version {old}")
    assert f"current version is {new}" in msg
    assert "mlops validate --partitions 2013-01" in msg
    assert "mlops materialize --partitions 2013-01" in msg
    # and materialize refuses the validated file of version A, leaving the features as they were
    before = feature_file.read_bytes()
    with pytest.raises(provenance.Stale, match=r"materialize 2013-01: .*validate --partitions"):
        m.run(params, st, ["2013-01"])
    assert feature_file.read_bytes() == before
