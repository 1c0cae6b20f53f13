"""Feast with Redis as the online store serves what the SQLite online store serves."""

from __future__ import annotations

import pandas as pd

from mlops import features, materialize
from mlops.cli import main
from mlops.config import load_params, settings
from tests.conftest import FLIGHTS_SMALL

WEEK = "2013-W02"


def test_redis_and_sqlite_online_stores_agree(project, redis_db, monkeypatch):
    # given one real week ingested and validated
    params_path = project(overrides=FLIGHTS_SMALL)
    assert main(["--params", str(params_path), "ingest", "--partitions", WEEK]) == 0
    assert main(["--params", str(params_path), "validate", "--partitions", WEEK]) == 0
    params, st = load_params(params_path), settings(params_path)
    keys = pd.read_parquet(st.validated_dir / f"{WEEK}.parquet")["flight_id"].iloc[::50]
    rows = [{"flight_id": k} for k in keys] + [{"flight_id": "no-such-flight"}]

    # when it is materialised into SQLite, then into Redis (same data, same settings)
    # (settings() reads MLOPS_FEAST_ONLINE, so they are resolved after it is set)
    monkeypatch.setenv("MLOPS_FEAST_ONLINE", "sqlite")
    st = settings(params_path)
    materialize.run(params, st, [WEEK])
    from_sqlite = features.online_features(params, st, rows)
    monkeypatch.setenv("MLOPS_FEAST_ONLINE", f"redis://127.0.0.1:6379/{redis_db}")
    st = settings(params_path)
    materialize.run(params, st, [WEEK])
    from_redis = features.online_features(params, st, rows)

    # then both serve the same values, in the contract's column order
    assert list(from_redis.columns) == list(from_sqlite.columns)
    pd.testing.assert_frame_equal(
        from_redis.reset_index(drop=True), from_sqlite.reset_index(drop=True), check_dtype=False
    )
    assert from_redis.iloc[-1][params.contract.feature_names].isna().all()
    assert from_redis.iloc[0][params.contract.feature_names].notna().any()
    import redis

    assert redis.Redis(port=6379, db=redis_db).dbsize() > 0
