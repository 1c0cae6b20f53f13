"""``mlops init`` on real data, then the pipeline in the new folder, as a new user runs it.

Three datasets: the demo's flights (the inferred contract against the hand-written one),
the Seattle weather (a daily regression without a key: `mlops run` and `dvc repro` with no
file edited) and the Palmer penguins (a yearly classification whose target is text with
missing values: init, then `mlops run`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops.cli import STAGES, main
from mlops.config import load_params, settings
from mlops.source import load
from tests.conftest import FLIGHTS, make_project

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# The same few trees on both sides of the comparison, to keep it fast.
SMALL = [
    {"name": "hgb", "kind": "sklearn_hist_gradient_boosting", "params": {"max_iter": 40}},
    {"name": "xgb", "kind": "xgboost", "params": {"n_estimators": 40, "max_depth": 4}},
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}


def _holdout_auc(params_path: Path) -> float:
    st = settings(params_path)
    out = json.loads((st.state_dir / "train.json").read_text())
    return max(m["roc_auc"] for m in out["holdout"].values())


def test_init_on_the_demo_data_matches_the_hand_written_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("MLOPS_PARAMS", "MLFLOW_TRACKING_URI", "MLOPS_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    # given the demo's ingested columns for 2013 in one Parquet file
    demo = load_params(FLIGHTS)
    rows = load(demo.source, REPO)[demo.contract.columns]
    rows = rows[rows[demo.contract.timestamp].dt.year == 2013]  # late Dec 31 is 2014 in UTC
    source = tmp_path / "flights.parquet"
    rows.to_parquet(source, index=False)
    # when init makes a project from it
    folder = tmp_path / "inferred"
    argv = ["init", str(folder), "--source", str(source), "--key", "flight_id"]
    assert main([*argv, "--target", "is_delayed", "--timestamp", "event_ts"]) == 0
    out = capsys.readouterr().out
    # then the inferred contract validated all twelve months of 2013
    params_path = folder / "params.yaml"
    params, st = load_params(params_path), settings(params_path)
    assert params.ingest.partition == "month"
    months = [f"2013-{m:02d}" for m in range(1, 13)]
    for pid in months:
        assert json.loads((st.state_dir / "validation" / f"{pid}.json").read_text())["success"]
    assert "12 month partitions (2013-01 to 2013-12)" in out
    assert set(params.contract.feature_names) == set(demo.contract.feature_names)

    # when both configs train the same few trees on the same window
    raw = yaml.safe_load(params_path.read_text())
    raw["train"]["candidates"] = SMALL
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    for verb in ("materialize", "train"):
        assert main(["--params", str(params_path), verb]) == 0
    window = load_params(params_path).train
    same = {
        "partitions": window.partitions,
        "holdout_partitions": window.holdout_partitions,
        "candidates": SMALL,
    }
    hand = make_project(tmp_path / "hand", FLIGHTS, {"train": same, "score": {"partitions": []}})
    for verb in ("ingest", "validate", "materialize", "train"):
        assert main(["--params", str(hand), verb]) == 0
    # then the inferred contract's model is as good as the hand-written one's
    inferred_auc, hand_auc = _holdout_auc(params_path), _holdout_auc(hand)
    assert abs(inferred_auc - hand_auc) <= 0.01, (inferred_auc, hand_auc)


def test_init_on_the_seattle_weather_then_run_and_dvc_repro_with_no_edit(tmp_path: Path) -> None:
    # given the second example's data and nothing else
    folder = tmp_path / "seattle"
    env = _env()
    cmd = [sys.executable, "-m", "mlops", "init", str(folder)]
    args = ["--source", "pkg://vega_datasets/_data/seattle-weather.csv", "--target", "temp_max"]
    made = subprocess.run(
        [*cmd, *args, "--timestamp", "date"], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    params = load_params(folder / "params.yaml")
    assert params.contract.task == "regression" and params.contract.entity_keys == ["row_id"]
    # when the pipeline runs in the new folder, by the CLI then by DVC
    run = subprocess.run(
        [sys.executable, "-m", "mlops", "run"], cwd=folder, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    dvc = str(Path(sys.executable).with_name("dvc"))
    repro = subprocess.run([dvc, "repro"], cwd=folder, env=env, capture_output=True, text=True)
    # then both pass, DVC running every stage
    assert repro.returncode == 0, repro.stdout + repro.stderr
    for verb in STAGES:
        assert f"Running stage '{verb}'" in repro.stdout
    assert (folder / "dvc.lock").is_file()
    st = settings(folder / "params.yaml")
    assert len(list(st.predictions_dir.glob("*.parquet"))) == len(params.score.partitions)


def test_init_on_the_penguins_then_run_end_to_end(tmp_path: Path) -> None:
    # given the penguins: a yearly integer column, no key, a text target with gaps
    folder = tmp_path / "penguins"
    env = _env()
    args = ["--source", "pkg://palmerpenguins/data/penguins.csv", "--target", "sex"]
    made = subprocess.run(
        [sys.executable, "-m", "mlops", "init", str(folder), *args, "--timestamp", "year"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    params = load_params(folder / "params.yaml")
    assert params.source.timestamp_format == "%Y" and params.ingest.partition == "year"
    assert params.contract.task == "classification" and params.source.dropna == ["sex"]
    # when the whole pipeline runs with nothing edited
    run = subprocess.run(
        [sys.executable, "-m", "mlops", "run"], cwd=folder, env=env, capture_output=True, text=True
    )
    # then it passes, and the champion scored the last year
    assert run.returncode == 0, run.stdout + run.stderr
    assert "promote: " in run.stdout and "PASSED" in run.stdout
    st = settings(folder / "params.yaml")
    assert (st.predictions_dir / "2009.parquet").is_file()
