"""A replay that withholds outcomes: a week is scored and monitored without its labels,
and trained on only once they are in its label store."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from mlops import io, outcomes, partitions
from mlops.cli import main
from mlops.config import load_params, settings
from tests.conftest import FLIGHTS_SMALL, REPO, merge

pytestmark = pytest.mark.integration

TRAIN = ["2013-W02", "2013-W03", "2013-W04"]
LATER = "2013-W05"
REPLAY = merge(
    FLIGHTS_SMALL,
    {
        "train": {
            "partitions": TRAIN,
            "candidates": [
                {
                    "name": "hgb",
                    "kind": "sklearn_hist_gradient_boosting",
                    "params": {"max_iter": 30},
                }
            ],
        },
        "score": {"partitions": [LATER]},
        "labels": {"withhold": True},
    },
)


def _outcomes(params) -> pd.DataFrame:
    """The week's real outcomes, as the label store keeps them: keys, int8 target, known_at."""
    from mlops.ingest import split_partitions
    from mlops.source import load

    c = params.contract
    df = load(params.source, REPO)
    week = split_partitions(df, c, params.source.timestamp_column, "week", [LATER])[LATER]
    week = week[week[c.target].notna()]
    return pd.DataFrame(
        {
            "flight_id": week["flight_id"].to_numpy(),
            c.target: week[c.target].astype("int8").to_numpy(),
            outcomes.KNOWN_AT: pd.Timestamp("2013-02-15", tz="UTC"),
        }
    )


def test_a_week_without_labels_is_scored_and_monitored_then_trained_once_they_arrive(
    project, capsys
):
    # given a replay project whose week after the training window is ingested without labels
    params_path = project(overrides=REPLAY)
    params, st = load_params(params_path), settings(params_path)
    c = params.contract

    def cli(*args: str, path=params_path) -> int:
        return main(["--params", str(path), *args])

    weeks = [*TRAIN, LATER]
    assert cli("ingest", "--partitions", *weeks) == 0
    assert c.target not in pd.read_parquet(partitions.file(st.raw_dir, LATER)).columns

    # when it is validated, materialised, scored by the champion and monitored
    assert cli("validate", "--partitions", *weeks) == 0
    assert cli("materialize", "--partitions", *weeks) == 0
    for verb in ("train", "evaluate", "promote"):
        assert cli(verb) == 0, verb
    assert cli("score", "--partitions", LATER) == 0
    assert cli("monitor", "--partitions", LATER) == 0

    # then it passed the suite without the target, every row was scored, and the report
    # compares features and predictions without claiming a target or a performance
    state = io.read_json(st.state_dir / "validation" / f"{LATER}.json")
    assert state["suite"] == "flights_contract_unlabelled" and state["labelled_rows"] == 0
    preds = pd.read_parquet(partitions.file(st.predictions_dir, LATER))
    assert len(preds) == state["rows"] == state["unlabelled_rows"] > 1000
    drift = io.read_json(st.reports_dir / LATER / "drift.json")
    assert drift["n_features"] == len(c.features) and drift["prediction_drift"] is not None
    assert drift["target_drift"] is None and drift["performance"] is None
    assert drift["rows"]["current"] == len(preds)

    # when a training window that includes the week is trained on
    raw = yaml.safe_load(params_path.read_text())
    raw["train"]["partitions"] = ["2013-W04", LATER]
    window = params_path.with_name("params_window.yaml")
    window.write_text(yaml.safe_dump(raw, sort_keys=False))
    capsys.readouterr()
    code = cli("train", path=window)

    # then it fails, naming the week and the run that brings its labels
    assert code == 1
    assert (
        f"train: partition {LATER} has no labels yet (scored without them); its outcomes "
        f"arrive through `mlops label {LATER}`"
    ) in capsys.readouterr().err

    # when the week's outcomes are in its label store, then it trains on them
    store = _outcomes(params)
    io.write_parquet(outcomes.path(st, LATER), store)
    assert cli("train", path=window) == 0
    out = capsys.readouterr().out
    assert f"train: {len(store):,} target(s) from the label store ({LATER} {len(store):,})" in out
    trained = io.read_json(st.state_dir / "train.json")
    assert trained["rows"]["holdout"] == len(store)
