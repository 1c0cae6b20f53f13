"""A rare target through the pipeline: the threshold chosen on the holdout, not 0.5, labels it.

Flights more than 90 minutes late are 1.7-5.4% of the January weeks (5.4% of the held-out
W04). A probability rarely reaches 0.5 on such a target, so a 0.5 threshold finds few
of them; the best-F1 threshold chosen at training finds several times more, and scoring
labels with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops import io, models, partitions, tags, training_data
from mlops.cli import main
from mlops.config import load_params, settings
from mlops.ingest import split_partitions
from mlops.registry import CHAMPION, connect
from mlops.source import load
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, REPO, merge

pytestmark = pytest.mark.integration

# Ingest and validation do nothing here that depends on the threshold: the weeks are cut
# from the source as ingest cuts them and written as validated partitions.
STAGES = ["materialize", "train", "evaluate", "promote", "score"]


def _rare_target() -> dict:
    """FLIGHTS_SMALL with ``is_delayed`` meaning more than 90 minutes late; XGBoost only."""
    derive = [
        {"name": "is_delayed", "expr": "arr_delay > 90"} if d["name"] == "is_delayed" else d
        for d in yaml.safe_load(FLIGHTS.read_text())["source"]["derive"]
    ]
    xgb = [c for c in FLIGHTS_SMALL["train"]["candidates"] if c["kind"] == "xgboost"]
    return merge(FLIGHTS_SMALL, {"source": {"derive": derive}, "train": {"candidates": xgb}})


def _recall(y: np.ndarray, label: np.ndarray) -> float:
    return float((label & (y == 1)).sum() / (y == 1).sum())


def test_a_rare_target_is_labelled_at_the_threshold_chosen_on_the_holdout(
    project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a project whose target is a flight more than 90 minutes late
    for var in ("MLOPS_PROJECT_ROOT", "MLOPS_DATA_ROOT", "MLOPS_FEAST_REPO", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    pp = project(overrides=_rare_target())
    params, st = load_params(pp), settings(pp)
    assert params.train.threshold.rule == "best_f1"
    weeks = [*params.train.partitions, *params.score.partitions]
    rows = load(params.source, REPO)
    cut = split_partitions(rows, params.contract, params.source.timestamp_column, "week", weeks)
    for week, df in cut.items():
        io.write_parquet(partitions.file(st.validated_dir, week), df)

    # when it is trained, evaluated, promoted and the July week scored
    for verb in STAGES:
        assert main(["--params", str(pp), verb]) == 0, verb
    out = capsys.readouterr().out

    # then the version records the threshold train chose, in its tag and state/train.json
    trained = json.loads((st.state_dir / "train.json").read_text())
    chosen = trained["threshold"]
    reg = connect(st)
    champ = reg.version_by_alias(params.model_name, CHAMPION)
    assert str(champ.version) == trained["version"]
    assert float(champ.tags[tags.THRESHOLD]) == chosen
    assert 0 < chosen < 0.5

    # and on the holdout its recall is several times what 0.5 gives
    hold = training_data.training_frame(params, st, params.train.holdout, stage="test")
    y = models.target(hold, params.contract)
    assert 0.04 < y.mean() < 0.07  # a rare target
    prob = reg.load(params.model_name, champ.version).predict(hold, params.contract)
    at_chosen, at_half = _recall(y, prob >= chosen), _recall(y, prob >= 0.5)
    assert at_chosen == pytest.approx(trained["holdout"][trained["candidate"]]["recall"])
    assert at_chosen >= 2 * at_half and at_chosen - at_half >= 0.1

    # and evaluate reported precision, recall and F1 at that threshold
    evaluation = json.loads((st.state_dir / "evaluate.json").read_text())
    assert evaluation["candidate"]["metrics"]["threshold"] == chosen
    assert evaluation["candidate"]["metrics"]["recall"] == pytest.approx(at_chosen)
    assert any(line.startswith("evaluate: ") and "at threshold" in line for line in out.split("\n"))

    # and every scored row is labelled at the chosen threshold, which the sidecar records;
    # rows between it and 0.5 are positive
    (week,) = params.score.partitions
    path = st.predictions_dir / f"{week}.parquet"
    preds = pd.read_parquet(path)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["threshold"] == chosen and side["model_version"] == str(champ.version)
    expected = (preds["prediction"] >= chosen).astype("int8")
    assert preds["predicted_label"].tolist() == expected.tolist()
    between = preds["prediction"].between(chosen, 0.5, inclusive="left")
    assert between.sum() > 50 and (preds.loc[between, "predicted_label"] == 1).all()
    assert Path(side["archived"]).read_bytes() == path.read_bytes()
