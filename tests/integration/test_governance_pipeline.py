"""Lineage both ways and the model card, after a real pipeline run on a few weeks of flights.

One module-scoped project runs ingest -> validate -> materialize -> train -> evaluate ->
promote -> score through the CLI (a SQLite MLflow store in the project), then trains a
second version on a shorter window so that forward lineage has something to tell apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops import audit, card, io, lineage, partitions, tags
from mlops.cli import main
from mlops.config import Params, Settings, load_params, settings
from mlops.registry import connect, git_revision
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, make_project, merge

pytestmark = pytest.mark.integration

MODEL = "flight_delay"
OVERRIDES = merge(
    FLIGHTS_SMALL,
    {
        "train": {
            "candidates": [
                {
                    "name": "hgb",
                    "kind": "sklearn_hist_gradient_boosting",
                    "params": {"max_iter": 30},
                }
            ]
        }
    },
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as mp:
        for var in (
            "MLFLOW_TRACKING_URI",
            "MLOPS_PARAMS",
            "MLOPS_DATA_ROOT",
            "MLOPS_PROJECT_ROOT",
            "MLOPS_FEAST_REPO",
        ):
            mp.delenv(var, raising=False)
        pp = make_project(tmp_path_factory.mktemp("lineage") / "proj", FLIGHTS, OVERRIDES)
        root = pp.parent
        subprocess.run(["git", "add", "params.yaml", ".gitignore", ".dvc"], cwd=root, check=True)
        subprocess.run(["git", "commit", "-qm", "demo"], cwd=root, check=True)
        for verb in ("ingest", "validate", "materialize", "train", "evaluate", "promote", "score"):
            assert main(["--params", str(pp), verb]) == 0, verb
        params, st = load_params(pp), settings(pp)
        from mlops import train

        short = params.model_copy(
            update={
                "train": params.train.model_copy(update={"partitions": ["2013-W03", "2013-W04"]})
            }
        )
        v2 = train.run(short, st)["version"]
        yield {
            "params": params,
            "st": st,
            "pp": pp,
            "v2": str(v2),
            "pred": partitions.file(st.predictions_dir, "2013-W28"),
            "manifest": io.read_json(st.state_dir / "ingest.json"),
        }


def test_lineage_from_a_prediction_file_back_to_data_validation_features_and_code(
    demo: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    st: Settings = demo["st"]
    sidecar = io.read_json(demo["pred"].with_suffix(".json"))
    # when tracing the prediction file back
    lin = lineage.trace(st, str(demo["pred"]))
    # then it names the exact version and run that wrote it
    assert lin["kind"] == "predictions" and lin["problems"] == []
    assert (lin["model"]["name"], lin["model"]["version"]) == (MODEL, "1")
    assert lin["run"]["run_id"] == sidecar["run_id"]
    # and the training data's DVC hashes, as ingest recorded them, each validated
    data = {e["partition"]: e for e in lin["data"]["versions"]}
    assert list(data) == ["2013-W02", "2013-W03", "2013-W04"]
    for pid, e in data.items():
        assert e["md5"] == demo["manifest"][pid]["md5"]
        assert e["in_dvc_cache"] and e["changed_since"] is False
        assert e["validation"]["success"] is True
        assert e["validation"]["covers_trained_data"] is True
        assert e["validation"]["statistics"]["failed"] == 0
    assert lin["data"]["window"][0].startswith("2013-01-07")
    assert lin["features"]["service"] == "flights_model"
    assert lin["code"]["revision"].split("-")[0] == git_revision(st.root).split("-")[0]
    assert lin["model"]["gate"] == "passed" and lin["model"]["champion_periods"]

    # and the CLI prints the same chain
    assert main(["--params", str(demo["pp"]), "lineage", str(demo["pred"])]) == 0
    out = capsys.readouterr().out
    assert f"model {MODEL} v1" in out
    assert f"2013-W02 DVC md5 {demo['manifest']['2013-W02']['md5']}" in out
    assert "validation passed" in out and "feature service flights_model" in out


def test_lineage_from_a_run_id_or_model_version_includes_its_predictions(demo) -> None:
    st = demo["st"]
    run_id = io.read_json(demo["pred"].with_suffix(".json"))["run_id"]
    by_run = lineage.trace(st, run_id)
    by_version = lineage.trace(st, MODEL, "1")
    assert by_run["model"]["version"] == by_version["model"]["version"] == "1"
    assert [p["path"] for p in by_version["predictions"]] == [str(demo["pred"])]
    # the second version has written no predictions
    assert lineage.trace(st, MODEL, demo["v2"])["predictions"] == []


def test_lineage_forward_from_a_data_version(demo) -> None:
    st, manifest, v2 = demo["st"], demo["manifest"], demo["v2"]
    # given W02 is only in v1's window, W04 in both
    w02 = lineage.trace(st, manifest["2013-W02"]["md5"])
    assert w02["kind"] == "forward" and w02["partitions"] == ["2013-W02"]
    assert [(m["name"], m["version"]) for m in w02["models"]] == [(MODEL, "1")]
    assert [p["path"] for p in w02["predictions"]] == [str(demo["pred"])]
    assert len(w02["runs"]) == 1 and w02["runs"][0]["selected"]

    w04 = lineage.trace(st, "2013-W04")
    assert sorted(m["version"] for m in w04["models"]) == sorted(["1", v2])
    assert all(m["md5"]["2013-W04"] == manifest["2013-W04"]["md5"] for m in w04["models"])
    # the scored partition leads to the prediction file made from it, not to a model
    w28 = lineage.trace(st, "2013-W28")
    assert w28["models"] == []
    assert [p["path"] for p in w28["scored_partition_predictions"]] == [str(demo["pred"])]


def test_lineage_flags_data_that_changed_after_validation(demo, tmp_path: Path) -> None:
    st = demo["st"]
    validated = partitions.file(st.validated_dir, "2013-W02")
    keep = tmp_path / "keep.parquet"
    shutil.copy(validated, keep)
    try:
        validated.write_bytes(validated.read_bytes() + b"tampered")
        lin = lineage.trace(st, MODEL, "1")
    finally:
        shutil.copy(keep, validated)
    assert any("2013-W02: the validation on record is for other data" in p for p in lin["problems"])


def test_model_card_content_and_logging(demo, capsys) -> None:
    params: Params = demo["params"]
    st = demo["st"]
    # when the card of v1 is written
    out = card.run(params, st, MODEL, "1")
    # then its holdout metrics are recomputed and match what training recorded
    run = connect(st).client.get_run(out["run_id"])
    assert out["holdout"]["metrics"]["roc_auc"] == pytest.approx(
        run.data.metrics["holdout_roc_auc"], abs=1e-9
    )
    assert out["holdout"]["partitions"] == ["2013-W04"]
    # and it is sliced by carrier and origin, covering every holdout row
    assert list(out["slices"]) == ["carrier", "origin"]
    origin = {r["value"]: r for r in out["slices"]["origin"]}
    assert set(origin) == {"EWR", "JFK", "LGA"}
    assert sum(r["rows"] for r in origin.values()) == out["holdout"]["rows"]
    assert all("roc_auc" in r["metrics"] for r in origin.values())
    # with the training window and hashes, the gate and the approval
    md = Path(out["markdown_path"]).read_text()
    for pid in ("2013-W02", "2013-W03", "2013-W04"):
        assert demo["manifest"][pid]["md5"] in md
    assert "| **Decision** | passed |" in md and "| **Status** | auto |" in md
    assert "## Known limitations" in md and "Trained on 2013-W02, 2013-W03 only" in md
    assert "| **Held out** | 2013-W04" in md
    assert "<h3>By carrier</h3>" in Path(out["html_path"]).read_text()
    # and why it predicts what it does: SHAP on the holdout, overall and per slice
    ex = out["explanations"]
    assert ex["rows"] == min(out["holdout"]["rows"], 2000) and ex["output"] == "log-odds"
    assert set(ex["overall"]) == set(params.contract.feature_names)
    assert list(ex["overall"].values()) == sorted(ex["overall"].values(), reverse=True)
    assert list(ex["slices"]) == ["carrier", "origin"]
    assert {r["value"] for r in ex["slices"]["origin"]} == {"EWR", "JFK", "LGA"}
    assert "## Why it predicts what it does (SHAP)" in md and "### SHAP by origin" in md
    assert "class='bar'" in Path(out["html_path"]).read_text()
    # and it is logged to the version's run, which the version points at
    names = {f.path for f in connect(st).client.list_artifacts(out["run_id"], card.ARTIFACT_DIR)}
    assert names == {f"{card.ARTIFACT_DIR}/model_card.{x}" for x in ("md", "html", "json")}
    tag = connect(st).client.get_model_version(MODEL, "1").tags[tags.CARD]
    assert tag == f"runs:/{out['run_id']}/model_card/model_card.html"

    # the CLI takes explicit slice columns
    capsys.readouterr()
    assert (
        main(["--params", str(demo["pp"]), "card", MODEL, "1", "--slices", "origin", "--no-log"])
        == 0
    )
    assert "slices: origin 3" in capsys.readouterr().out
    assert (
        main(["--params", str(demo["pp"]), "card", MODEL, "1", "--slices", "tailnum", "--no-log"])
        == 1
    )


def test_predictions_keep_their_version_after_the_champion_moves(demo, capsys) -> None:
    st, v2 = demo["st"], demo["v2"]
    # when v2 (never gated) is promoted by hand with an override, then rolled back
    assert (
        main(
            [
                "--params",
                str(demo["pp"]),
                "promote",
                MODEL,
                v2,
                "--override",
                "--reason",
                "lineage test",
            ]
        )
        == 0
    )
    lin = lineage.trace(st, str(demo["pred"]))
    # then the earlier prediction file still traces to v1, whose reign has an end
    assert lin["model"]["version"] == "1"
    assert lin["model"]["champion_periods"][-1]["until"] != ""
    assert main(["--params", str(demo["pp"]), "rollback", MODEL]) == 0
    capsys.readouterr()
    assert main(["--params", str(demo["pp"]), "status", MODEL, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["champion"]["version"] == "1" and row["history_problems"] == []
    assert row["problems"] == []  # the trained model's files are found where MLflow put them
    assert [e["action"] for e in audit.history(st, MODEL)[:2]] == ["rollback", "promote"]
