"""``mlops ci report``: a change's candidate against the base revision's model, in scratch.

The project is committed as a user's repository would be (params.yaml and the dvc.yaml
``mlops.stages`` writes); the change is uncommitted: a hyperparameter and a stricter gate.
Both revisions are trained on the same weeks and scored on one holdout; the gate fails,
the command exits 1, and the report says why with the numbers side by side. The project's
own data, registry and remote are neither read nor written.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from mlops import stages
from mlops.cli import main
from mlops.config import settings
from mlops.registry import connect
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, merge

pytestmark = pytest.mark.integration


def test_a_change_that_fails_the_gate_fails_the_check_with_its_report(
    project, tmp_path, monkeypatch, capsys
) -> None:
    # given a committed project on three January weeks
    # whose check trains on two of them (ci.overrides), so W04 and July are never read
    slice_ = {"ci": {"overrides": {"train": {"partitions": ["2013-W02", "2013-W03"]}}}}
    params_path = project(FLIGHTS, merge(FLIGHTS_SMALL, slice_))
    root = params_path.parent
    stages.write(root)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "base"], cwd=root, check=True)
    # and an uncommitted change: more boosting rounds and a gain no model reaches
    raw = yaml.safe_load(params_path.read_text())
    raw["train"]["candidates"][0]["params"]["max_iter"] = 80
    raw["promote"]["min_improvement"] = 0.5
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.chdir(root)

    # in a process that has used another registry before (MLflow's registry URI is global)
    other = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'other.db'}"}
    connect(settings(params_path, env=other))

    # when the check runs against the committed revision
    out = tmp_path / "check" / "report.md"
    code = main(["--params", str(params_path), "ci", "report", "--base", "HEAD", "--out", str(out)])

    # then it fails, saying so on the report's first screen and on the command's last line
    assert code == 1
    err = capsys.readouterr().err
    assert "error: ci: gate failed:" in err and "gain over champion" in err
    text = out.read_text()
    assert text == summary.read_text().rstrip("\n") + "\n"
    lines = text.splitlines()
    assert lines[2].startswith("**Gate FAILED: candidate v2 vs base v1, roc_auc ")
    check = json.loads(out.with_suffix(".json").read_text())
    ev = check["evaluation"]
    # both versions scored on the same holdout, in one table
    assert ev["holdout_partitions"] == ["2013-W03"] and ev["champion"]["version"] == "1"
    cand, base = ev["candidate"]["metrics"]["roc_auc"], ev["champion"]["metrics"]["roc_auc"]
    assert f"| **roc_auc** (gate) | {base:.4f} | {cand:.4f} |" in text
    assert check["gain"] == pytest.approx(cand - base)
    assert check["reasons"][-1].endswith(">= 0.5: no")
    # the slices of the model card, both versions
    assert "| origin | EWR |" in text and "| origin | JFK |" in text
    # DVC's own diffs: the changed parameters and the metrics files
    assert "promote.min_improvement" in check["params_diff"]
    assert "train.candidates" in check["params_diff"]
    assert "data/metrics/evaluate.json" in check["metrics_diff"]
    assert "candidate.roc_auc" in check["metrics_diff"]
    assert check["base_sha"] in check["metrics_diff"]  # not the scratch commit of its files
    ingested = (out.parent / "head-ingest.log").read_text()
    assert "ingest: 2 partition(s)" in ingested
    # each stage of each side logged beside the report
    assert {p.name for p in out.parent.glob("*.log")} == {
        f"{side}-{verb}.log" for side in ("base", "head") for verb in stages.STAGES[:5]
    }

    # and the project itself was neither read nor written: no data, registry or store
    assert not (root / "mlflow.db").exists()
    written = [p.relative_to(root) for p in (root / "data").rglob("*") if p.is_file()]
    assert [str(p) for p in written] == ["data/state/logs/mlops.log"]  # the CLI's own log
    assert not any((root / ".dvcstore").rglob("*"))
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=root, capture_output=True, text=True, check=True
    )
    assert len(worktrees.stdout.splitlines()) == 1
