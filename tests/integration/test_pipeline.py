"""The whole pipeline on small real slices, through the CLI, for both example configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlops import io
from mlops.cli import STAGES
from mlops.config import load_params, settings
from mlops.registry import CHAMPION, connect
from tests.conftest import FLIGHTS_SMALL, SEATTLE
from tests.helpers import run_ok

pytestmark = pytest.mark.integration


def _assert_landed(params_path: Path, expect_breach: bool | None = None) -> dict:
    params, st = load_params(params_path), settings(params_path)
    # DVC-tracked raw snapshots, pushed to the local remote
    manifest = json.loads((st.state_dir / "ingest.json").read_text())
    for pid, entry in manifest.items():
        assert (st.raw_dir / f"{pid}.parquet.dvc").is_file()
        md5 = entry["md5"]
        assert (st.root / ".dvcstore/files/md5" / md5[:2] / md5[2:]).is_file()
    # a GX validation result and Data Docs
    for pid in manifest:
        assert json.loads((st.state_dir / "validation" / f"{pid}.json").read_text())["success"]
    assert (st.gx_root / "uncommitted/data_docs/local_site/index.html").is_file()
    # Feast registry, offline source and online store
    assert (st.data_root / "feast/registry.db").is_file()
    assert (st.data_root / "feast/online.db").is_file()
    # a registered model whose champion alias points at a version
    champ = connect(st).version_by_alias(params.model_name, CHAMPION)
    assert champ is not None
    assert champ.tags["mlops.gate.decision"] == "passed"
    # predictions carry the exact model version, one row per scored entity
    for pid in params.score.partitions:
        path = st.predictions_dir / f"{pid}.parquet"
        preds = pd.read_parquet(path)
        assert len(preds) > 0
        # made from the partition's current raw version, and archived under the model version
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["input_md5"] == manifest[pid]["md5"] and side["md5"] == io.md5(path)
        assert Path(side["archived"]).read_bytes() == path.read_bytes()
        assert Path(side["archived"]).parent.name == f"v{champ.version}"
        assert set(preds["model_version"]) == {str(champ.version)}
        assert set(preds["model_name"]) == {params.model_name}
        assert not preds.duplicated(params.contract.entity_keys).any()
        report = st.reports_dir / pid
        assert (report / "drift.html").stat().st_size > 100_000
        summary = json.loads((report / "drift.json").read_text())
        assert summary["n_features"] == len(params.contract.features)
        # the monitor samples, but reports the partition's true row count
        assert summary["rows"]["current"] == len(preds)
        if expect_breach is not None:
            assert summary["breach"] is expect_breach
    # the champion's run holds its evaluation artifacts and the monitor's reference
    from mlflow import MlflowClient

    logged = {a.path for a in MlflowClient().list_artifacts(champ.run_id)}
    plot = "roc_pr.png" if params.contract.task == "classification" else "residuals.png"
    expected = {"features.json", "feature_importance.json", "feature_importance.png", plot}
    assert expected | {"reference.parquet", "shap_importance.json", "shap_importance.png"} <= logged
    # with SHAP on the holdout: every feature, largest first, by an exact method
    local = MlflowClient().download_artifacts(champ.run_id, "shap_importance.json", str(st.root))
    shap = json.loads(Path(local).read_text())
    assert set(shap["mean_abs"]) == set(params.contract.feature_names)
    values = list(shap["mean_abs"].values())
    assert values == sorted(values, reverse=True) and values[0] > 0
    assert "TreeSHAP" in shap["method"] or shap["method"].startswith("linear")
    return {"params": params, "st": st, "champion": champ}


def test_flights_demo_end_to_end(project, capsys) -> None:
    # given a fresh project on three weeks of January and a week of July
    params_path = project(overrides=FLIGHTS_SMALL)
    # when the whole pipeline runs
    run_ok("--params", str(params_path), "run")
    out = capsys.readouterr().out
    # then every stage printed its summary and everything landed; July drifts
    for verb in STAGES:
        assert f"{verb}: " in out
    landed = _assert_landed(params_path, expect_breach=True)

    # when the same pipeline runs again on the same data, params and code
    run_ok("--params", str(params_path), "run")
    # then the existing version comes back (no second one) and stays champion
    reg = connect(landed["st"])
    name = landed["params"].model_name
    versions = reg.client.search_model_versions(f"name='{name}'")
    assert [str(v.version) for v in versions] == [str(landed["champion"].version)]
    assert reg.version_by_alias(name, CHAMPION).version == landed["champion"].version


def test_second_example_regression_end_to_end(project) -> None:
    # given the Seattle weather config (regression) and no code change
    params_path = project(base=SEATTLE, name="seattle")
    run_ok("--params", str(params_path), "run")
    landed = _assert_landed(params_path)
    preds = pd.read_parquet(landed["st"].predictions_dir / "2013-07.parquet")
    # then predictions are temperatures, not probabilities
    assert preds["prediction"].between(5, 40).all()
    assert "predicted_label" not in preds.columns


def test_dvc_repro_runs_the_stages_then_does_nothing(project) -> None:
    # given a project with the repository's dvc.yaml and the package on PATH
    params_path = project(overrides=FLIGHTS_SMALL)
    root = params_path.parent
    repo = Path(__file__).resolve().parents[2]
    (root / "dvc.yaml").write_text((repo / "dvc.yaml").read_text())
    (root / "mlops").symlink_to(repo / "mlops")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    dvc = str(Path(sys.executable).with_name("dvc"))
    # when dvc repro runs twice
    first = subprocess.run([dvc, "repro"], cwd=root, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    second = subprocess.run([dvc, "repro"], cwd=root, env=env, capture_output=True, text=True)
    # then the first runs every stage and the second has nothing to do
    for verb in STAGES:
        assert f"Running stage '{verb}'" in first.stdout
    assert second.returncode == 0
    assert "Running stage" not in second.stdout
    status = subprocess.run([dvc, "status"], cwd=root, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout
    _assert_landed(params_path)
