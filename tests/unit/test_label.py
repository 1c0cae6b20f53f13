"""The label verb on a hand-made scored partition: refusals, counted skips, and the
streamed join of predictions, features and outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops import features, io, label, outcomes, partitions
from mlops.config import Labels
from mlops.outcomes import NO_TIME, LabelError, Outcomes

PID = "2013-01"


def _scored(p, st, pred_groups: int = 300, feat_groups: int = 250):  # type: ignore[no-untyped-def]
    """Predictions and a feature file for January's rows, in different row groups."""
    c = p.contract
    df = pd.read_parquet(partitions.file(st.validated_dir, PID))
    pred = df[[*c.entity_keys, c.timestamp]].copy()
    pred["prediction"] = np.linspace(0.01, 0.99, len(df))
    pred["predicted_label"] = (pred["prediction"] >= 0.5).astype("int8")
    pred["model_name"], pred["model_version"] = "flight_delay", "3"
    path = partitions.file(st.predictions_dir, PID)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(pred, preserve_index=False), path, pred_groups)
    meta = {"partition": PID, "model_name": "flight_delay", "model_version": "3"}
    io.write_json(path.with_suffix(".json"), {**meta, "input_md5": None, "md5": io.md5(path)})
    feat = features.source_dir(p, st) / f"{PID}.parquet"
    feat.parent.mkdir(parents=True, exist_ok=True)
    cols = [*c.entity_keys, c.timestamp, *c.feature_names]
    pq.write_table(pa.Table.from_pandas(df[cols], preserve_index=False), feat, feat_groups)
    small = p.score.model_copy(update={"chunk_rows": 128})
    return p.model_copy(update={"score": small}), df, feat


def _with_labels(p, st, rows: pd.DataFrame):  # type: ignore[no-untyped-def]
    path = Path(st.root) / "incoming.csv"
    rows.to_csv(path, index=False)
    return p.model_copy(update={"labels": Labels(path="incoming.csv")})


def test_a_partition_not_scored_is_refused_and_nothing_is_written(tmp_project) -> None:
    p, st = tmp_project
    with pytest.raises(LabelError) as err:
        label.run(p, st, PID)
    assert str(err.value) == (
        f"labels for {PID} cannot be joined: it has not been scored; run "
        f"`mlops score --partitions {PID}` first"
    )
    assert not outcomes.path(st, PID).exists() and not outcomes.sidecar(st, PID).exists()


def test_outcomes_of_keys_never_scored_are_counted_with_examples(tmp_project, capsys) -> None:
    # given a scored partition and outcomes for eight keys it never scored
    p, st = tmp_project
    p, _, _ = _scored(p, st)
    rows = pd.DataFrame({"flight_id": [f"X{i}" for i in range(8)], "is_delayed": True})
    p = _with_labels(p, st, rows)

    # when they are labelled
    out = label.run(p, st, PID)

    # then nothing is labelled, all eight are counted (five examples), and it says so
    assert (out["labelled"], out["unknown_keys"], out["performance"]) == (0, 8, None)
    assert out["unknown_examples"] == ["'X0'", "'X1'", "'X2'", "'X3'", "'X4'"]
    assert "0/800 predictions labelled (+0 new, 8 unknown keys skipped); no outcomes yet" in (
        capsys.readouterr().out
    )
    assert not outcomes.path(st, PID).exists()
    side = outcomes.sidecar(st, PID)
    assert io.read_json(side)["unknown_keys"] == 8

    # when it is run again, the sidecar is left as it was
    before = side.read_bytes()
    label.run(p, st, PID)
    assert side.read_bytes() == before


def test_conflicting_outcomes_name_the_file_and_the_key(tmp_project) -> None:
    p, st = tmp_project
    p, df, _ = _scored(p, st)
    key = df["flight_id"].iloc[17]
    rows = pd.DataFrame({"flight_id": [key, key], "is_delayed": [True, False]})
    with pytest.raises(LabelError) as err:
        label.run(_with_labels(p, st, rows), st, PID)
    msg = str(err.value)
    assert f"key {key!r} has conflicting outcomes [0, 1]" in msg
    assert "incoming.csv" in msg and "labels.known_at" in msg
    assert not outcomes.path(st, PID).exists() and not outcomes.sidecar(st, PID).exists()


def _merged(df: pd.DataFrame, every: int) -> Outcomes:
    keys = df["flight_id"].iloc[::every].to_numpy(dtype=object)
    y = df["is_delayed"].iloc[::every].fillna(False).to_numpy().astype("int8")
    t = np.where(np.arange(len(keys)) % 2 == 0, NO_TIME, 10**18).astype("int64")
    o = Outcomes(outcomes.key_hash([keys]), y, t, np.zeros(len(keys), "int16"))
    return o.sorted()


def test_the_store_is_written_in_prediction_order_across_uneven_row_groups(tmp_project) -> None:
    # given predictions and features cut into different row groups, and outcomes of every
    # third prediction
    p, st = tmp_project
    p, df, feat = _scored(p, st)
    merged = _merged(df, 3)
    pred_path = partitions.file(st.predictions_dir, PID)
    store = outcomes.path(st, PID)

    # when they are joined
    frame = label._join(p, pred_path, feat, merged, store)

    # then the store holds every third prediction's key and outcome, in prediction order
    got = pd.read_parquet(store)
    want = df.iloc[::3]
    assert got["flight_id"].tolist() == want["flight_id"].tolist()
    assert got["is_delayed"].tolist() == want["is_delayed"].fillna(False).astype(int).tolist()
    assert got["known_at"].isna().sum() == (len(want) + 1) // 2
    # and the labelled predictions carry their own slice values (as categories)
    assert len(frame) == len(want)
    assert frame["carrier"].astype(str).tolist() == want["carrier"].tolist()
    assert frame["prediction"].tolist() == pytest.approx(
        np.linspace(0.01, 0.99, len(df))[::3].tolist()
    )
    assert str(frame["carrier"].dtype) == "category"


def test_a_feature_file_in_another_order_is_refused_before_the_store_changes(
    tmp_project,
) -> None:
    # given a feature file whose rows were reordered after scoring
    p, st = tmp_project
    p, df, feat = _scored(p, st)
    table = pq.read_table(feat)
    pq.write_table(table.take(np.r_[np.arange(300), np.arange(301, 800), 300]), feat)
    store = outcomes.path(st, PID)
    io.write_parquet(store, pd.DataFrame({"flight_id": ["old"]}))
    before = store.read_bytes()

    # when the partition is joined, then it is refused naming the feature file
    pred_path = partitions.file(st.predictions_dir, PID)
    with pytest.raises(LabelError, match="does not hold the predictions' rows in their order"):
        label._join(p, pred_path, feat, _merged(df, 2), store)
    assert store.read_bytes() == before and not list(store.parent.glob(".*.tmp"))
