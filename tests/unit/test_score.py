"""score: the streamed feature rows are the point-in-time scoring frame, exactly."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from mlops import io, score
from mlops import materialize as m


def _shared_flight(st, months) -> str:
    """January and February where one flight is in both with other values, and one
    February row has missing features."""
    jan, feb = months["2013-01"].copy(), months["2013-02"].copy()
    flight = jan.loc[0, "flight_id"]
    jan.loc[0, "temp"] = 10.0
    feb.loc[5, ["flight_id", "temp"]] = [flight, 20.0]
    feb.loc[6, ["temp", "carrier", "sched_hour"]] = [None, None, None]
    io.write_parquet(io.partition_file(st.validated_dir, "2013-01"), jan)
    io.write_parquet(io.partition_file(st.validated_dir, "2013-02"), feb)
    return flight


def test_streamed_feature_rows_equal_the_point_in_time_scoring_frame(tmp_project, months):
    # given two materialised months sharing a flight, with a row of missing features
    params, st = tmp_project
    flight = _shared_flight(st, months)
    m.run(params, st, ["2013-01", "2013-02"])
    c = params.contract

    # when February is streamed from its feature file in chunks of 300 rows
    path = score.feature_file(params, st, "2013-02")
    chunks = list(score.feature_batches(path, params, 300))

    # then the chunks hold exactly the rows and values of Feast's point-in-time join
    assert [len(x) for x in chunks] == [300, 300, len(months["2013-02"]) - 600]
    streamed = pd.concat(chunks, ignore_index=True)
    joined = m.scoring_frame(params, st, ["2013-02"])
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
    with pytest.raises(m.FeatureError, match=r"2013-01\.parquet.*run `materialize 2013-01`"):
        score.feature_file(params, st, "2013-01")
    # and a partition that was never validated names the validated file instead
    with pytest.raises(FileNotFoundError, match=r"validated/2013-03\.parquet.*run validate"):
        score.feature_file(params, st, "2013-03")


def test_monitor_reads_only_a_seeded_sample_equal_to_sampling_the_full_join(tmp_project):
    # given February materialised and scored in row groups of 100 rows
    from mlops import monitor

    params, st = tmp_project
    m.run(params, st, ["2013-02"])
    c = params.contract
    keys = c.entity_keys
    full = m.scoring_frame(params, st, ["2013-02"])
    preds = full[[*keys, c.timestamp]].sample(frac=1, random_state=1, ignore_index=True)
    preds["prediction"] = [i / len(preds) for i in range(len(preds))]
    preds["model_name"] = pd.Series(["flights"] * len(preds), dtype="string")
    preds["model_version"] = pd.Series(["3"] * len(preds), dtype="string")
    target = io.partition_file(st.predictions_dir, "2013-02")
    score.write_predictions(target, (preds.iloc[i : i + 100] for i in range(0, len(preds), 100)))
    small = params.model_copy(
        update={"monitor": params.monitor.model_copy(update={"max_rows": 300})}
    )

    # when the monitor samples the scored partition
    current, total = monitor.current_sample(small, st, "2013-02", target)

    # then it counts every row but holds the same 300 rows, in file order, that sampling
    # the whole join of predictions, features and labels gives
    expected = (
        preds.drop(columns=[c.timestamp])
        .merge(full.drop(columns=[c.timestamp]), on=keys, how="inner", validate="1:1")
        .sample(n=300, random_state=monitor.SAMPLE_SEED)
        .sort_index()
        .reset_index(drop=True)
    )
    assert total == len(preds)
    # and the feature file is filtered to the sampled keys while it is read
    wanted = pa.Table.from_pandas(current[keys], preserve_index=False)
    feature_file = score.feature_file(params, st, "2013-02")
    assert monitor.matching_rows(feature_file, wanted, keys, 100).num_rows == 300
    current[keys] = current[keys].astype(object)
    expected[keys] = expected[keys].astype(object)
    pd.testing.assert_frame_equal(current, expected[current.columns], check_dtype=False)
    assert sorted(current.columns) == sorted(expected.columns)
    for col in [*c.feature_names, c.target, "prediction"]:
        assert current[col].dtype == expected[col].dtype, col
