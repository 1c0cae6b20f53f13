"""score: the pure core (prediction frames) and the atomic, streamed predictions file."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from mlops import io, partitions, score
from mlops import materialize as m
from mlops.config import load_params
from tests.conftest import FLIGHTS
from tests.helpers import copy_key_in_feature_file, predict_chunks


@dataclass
class Stub:
    """What predict_frame needs of a loaded model: a prediction per row, name, version."""

    name: str = "flights"
    version: str = "7"
    threshold: float | None = None

    def predict(self, df: pd.DataFrame, contract) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(df)) if len(df) > 1 else np.full(len(df), 0.9)


def test_prediction_frames_carry_keys_label_and_the_exact_model_version(months) -> None:
    # given ten rows of January and a model named with an exact version
    params = load_params(FLIGHTS)
    c = params.contract
    rows = months["2013-01"].head(10)

    # when predicted in chunks of four, with an empty chunk in the stream
    chunks = [rows.iloc[:4], rows.iloc[:0], rows.iloc[4:8], rows.iloc[8:]]
    out = list(score.predict_batches(iter(chunks), Stub(), params))

    # then the empty chunk gives nothing and every row keeps its keys and timestamp
    assert [len(x) for x in out] == [4, 4, 2]
    first = out[0]
    assert list(first.columns) == [
        *c.entity_keys,
        c.timestamp,
        "prediction",
        "predicted_label",
        "model_name",
        "model_version",
    ]
    assert first["flight_id"].tolist() == rows["flight_id"].iloc[:4].tolist()
    assert first["prediction"].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert first["predicted_label"].tolist() == [0, 0, 1, 1]
    assert first["predicted_label"].dtype == "int8"
    assert set(pd.concat(out)["model_version"]) == {"7"}
    assert pd.concat(out)["model_name"].dtype == "string"


@pytest.mark.parametrize(
    ("threshold", "labels"),
    [(0.3, [0, 0, 1, 1, 1, 1, 1]), (0.9, [0, 0, 0, 0, 0, 0, 1]), (None, [0, 0, 0, 1, 1, 1, 1])],
)
def test_labels_are_the_probability_at_the_versions_threshold(
    months, threshold: float | None, labels: list[int]
) -> None:
    # given seven rows whose probabilities are 0, 1/6, ..., 1 and a version's threshold
    params = load_params(FLIGHTS)
    rows = months["2013-01"].head(7)
    # when predicted
    out = score.predict_frame(rows, Stub(threshold=threshold), params)
    # then a row is positive when its probability reaches the threshold (0.5 without one),
    # and the probability is kept as it was
    assert out["predicted_label"].tolist() == labels
    assert out["prediction"].tolist() == pytest.approx([i / 6 for i in range(7)])


def test_predictions_are_written_whole_or_not_at_all(tmp_path, months) -> None:
    # given a previous predictions file
    params = load_params(FLIGHTS)
    target = tmp_path / "predictions" / "2013-01.parquet"
    target.parent.mkdir()
    target.write_bytes(b"previous")
    rows = months["2013-01"].head(25)

    # when nothing is scored, then it is an error and the previous file is unchanged
    with pytest.raises(ValueError, match="nothing to score"):
        score.write_predictions(target, iter([]))
    assert target.read_bytes() == b"previous"
    assert not list(target.parent.glob(".*.tmp"))

    # when 25 rows are streamed in chunks of 10, then one file holds them all, in order
    assert score.write_predictions(target, predict_chunks(rows, Stub(), params, 10)) == 25
    written = pd.read_parquet(target)
    assert written["flight_id"].tolist() == rows["flight_id"].tolist()


def test_a_partition_whose_rows_share_a_key_is_not_scored(tmp_project, months) -> None:
    # given January materialised with one flight id on two rows (at different times)
    params, st = tmp_project
    jan = months["2013-01"].copy()
    io.write_parquet(partitions.file(st.validated_dir, "2013-01"), jan)
    m.run(params, st, ["2013-01"])
    first = jan.loc[0, "flight_id"]
    copy_key_in_feature_file(params, st, "2013-01", first, jan.loc[3, "flight_id"], ("flight_id",))

    # when it is scored, then it is refused naming the stage, the file and the key, before
    # any model is looked up, and no predictions are written
    with pytest.raises(io.DuplicateKeys) as err:
        score.run(params, st, "2013-01")
    msg = str(err.value)
    assert msg.startswith("score 2013-01: feature file ") and "2013-01.parquet" in msg
    assert "['flight_id']" in msg and repr(jan.loc[0, "flight_id"]) in msg
    assert not partitions.file(st.predictions_dir, "2013-01").exists()
