"""A tail-number feature (~2,000 categories) through the whole pipeline, in a sub-folder.

The project sits in ``examples/planes/`` of a DVC repository, as a second dataset
would; the HistGradientBoosting candidate that cannot take the data fails on its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from mlops.cli import main
from mlops.config import load_params, settings
from mlops.registry import CHAMPION, connect
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, make_project, merge
from tests.helpers import run_ok

pytestmark = pytest.mark.integration

FEATURES = [
    *yaml.safe_load(FLIGHTS.read_text())["contract"]["features"],
    {"name": "tailnum", "dtype": "category", "unseen_category_tolerance": 1.0},
]
NARROW = {
    "name": "narrow",
    "kind": "sklearn_hist_gradient_boosting",
    "params": {"max_iter": 10, "max_bins": 100},
}
OVERRIDES = merge(
    FLIGHTS_SMALL,
    {
        "contract": {"features": FEATURES},
        "train": {"candidates": [*FLIGHTS_SMALL["train"]["candidates"], NARROW]},
    },
)


def _project_in_a_sub_folder(repo: Path) -> Path:
    """examples/planes/ of a git + DVC repository (with a local remote) at ``repo``."""
    pp = make_project(repo / "examples" / "planes", FLIGHTS, OVERRIDES)
    shutil.rmtree(pp.parent / ".dvc")
    shutil.rmtree(pp.parent / ".git")
    dvc = str(Path(sys.executable).with_name("dvc"))
    for cmd in (
        ["git", "init", "-q"],
        [dvc, "init", "-q"],
        [dvc, "remote", "add", "-q", "-d", "local", str(repo / ".dvcstore")],
    ):
        subprocess.run(cmd, cwd=repo, check=True)
    return pp


def test_many_categories_train_score_and_trace_from_a_sub_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a project in examples/planes/ whose contract adds the tail number, and three
    # candidates of which one (HGB with max_bins=100) cannot take 250 categories
    for var in ("MLOPS_PROJECT_ROOT", "MLOPS_DATA_ROOT", "MLOPS_FEAST_REPO", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    pp = _project_in_a_sub_folder(tmp_path / "repo")
    params, st = load_params(pp), settings(pp)

    # when the whole pipeline runs
    run_ok("--params", str(pp), "run")
    out = capsys.readouterr().out

    # then train capped the tail number, named the failed candidate and its column,
    # and registered the best of the two that trained
    train_line = next(
        line for line in out.splitlines() if line.startswith("train: ") and "registered" in line
    )
    assert "FAILED narrow (sklearn_hist_gradient_boosting, column 'tailnum')" in train_line
    assert "categories capped: tailnum " in train_line and "->250+other" in train_line
    trained = json.loads((st.state_dir / "train.json").read_text())
    assert set(trained["holdout"]) == {"hgb", "xgb"} and set(trained["failed"]) == {"narrow"}
    assert trained["capped_categories"]["tailnum"]["kept"] == 250

    # and the failure is a FAILED run in MLflow that says why
    client = MlflowClient(st.tracking_uri)
    exp = client.get_experiment_by_name(params.model_name)
    (failed,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'narrow'")
    assert failed.info.status == "FAILED"
    assert "column 'tailnum'" in failed.data.tags["mlflow.note.content"]

    # and the champion scored the July week, unseen planes included
    champ = connect(st).version_by_alias(params.model_name, CHAMPION)
    preds = pd.read_parquet(st.predictions_dir / "2013-W28.parquet")
    assert len(preds) > 1000 and preds["prediction"].between(0, 1).all()
    assert set(preds["model_version"]) == {str(champ.version)}

    # when its model card is written
    assert main(["--params", str(pp), "card", params.model_name, str(champ.version)]) == 0
    card = json.loads(
        (st.reports_dir / "cards" / f"{params.model_name}-v{champ.version}.json").read_text()
    )
    md = (st.reports_dir / "cards" / f"{params.model_name}-v{champ.version}.md").read_text()
    # then it was trained on W02 and W03, held out W04, and says the tail number is capped
    assert card["training"]["fitted"] == ["2013-W02", "2013-W03"]
    assert card["training"]["holdout"] == ["2013-W04"]
    trained_on = next(line for line in md.splitlines() if "**Trained on**" in line)
    assert "2013-W04" not in trained_on and "2013-W03" in trained_on
    assert any(line.startswith("- tailnum: only the 250 most frequent") for line in md.splitlines())

    # when the prediction file is traced back, then its data is in the repository's cache
    capsys.readouterr()
    assert main(["--params", str(pp), "lineage", str(st.predictions_dir / "2013-W28.parquet")]) == 0
    lineage = capsys.readouterr().out
    assert "2013-W02 DVC md5" in lineage
    assert "not in the local DVC cache" not in lineage
