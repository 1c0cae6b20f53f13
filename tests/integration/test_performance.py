"""performance.run on a trained, registered model in a real MLflow store (SQLite).

A gradient-boosting model is fitted on real January flights and registered with its
holdout score and decision threshold; August, labelled, is then measured against it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mlops import governance, io, models, outcomes, performance, performance_report, tags
from mlops.config import Candidate, Params, Settings, load_params, settings
from mlops.registry import connect
from mlops.source import load
from tests.conftest import FLIGHTS, REPO

pytestmark = pytest.mark.integration

PID = "2013-08"
THRESHOLD = 0.25


@pytest.fixture(scope="module")
def flights() -> dict[str, pd.DataFrame]:
    """Two January weeks to fit, the third to hold out, and the first week of August.

    Flights without an outcome (cancelled) are left out: each of these rows is labelled.
    """
    df = load(load_params(FLIGHTS).source, REPO)
    df = df[df["is_delayed"].notna()].astype({"is_delayed": "int8"})
    ts = df["event_ts"]
    day = pd.Timestamp

    def between(a: str, b: str) -> pd.DataFrame:
        return df[(ts >= day(a, tz="UTC")) & (ts < day(b, tz="UTC"))].reset_index(drop=True)

    return {
        "fit": between("2013-01-01", "2013-01-15"),
        "holdout": between("2013-01-15", "2013-01-22"),
        "august": between("2013-08-01", "2013-08-08"),
    }


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, flights: dict[str, pd.DataFrame]
) -> dict[str, Any]:
    """A project whose registry holds one version trained on January, and August scored."""
    root = tmp_path_factory.mktemp("perf")
    shutil.copy(FLIGHTS, root / "params.yaml")
    params = load_params(root / "params.yaml")
    st = settings(root / "params.yaml").model_copy(
        update={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "data_root": root / "data"}
    )
    c = params.contract
    cand = Candidate(name="hgb", kind="sklearn_hist_gradient_boosting", params={"max_iter": 40})
    est = models.build(cand, c, seed=0)

    def x(df: pd.DataFrame) -> pd.DataFrame:
        return models.fit_input(models.matrix(df, c), cand.kind)

    est.fit(x(flights["fit"]), models.target(flights["fit"], c))
    holdout = models.metrics(
        models.target(flights["holdout"], c),
        models.predict(est, x(flights["holdout"]), c.task),
        c.task,
    )
    reg = connect(st)
    with mlflow.start_run(experiment_id=reg.experiment_id(params.model_name)):
        info = mlflow.sklearn.log_model(
            est,
            name="model",
            serialization_format="skops",
            skops_trusted_types=models.SKOPS_TRUSTED,
            pip_requirements=["scikit-learn"],
        )
    mv = reg.register(
        info.model_uri,
        params.model_name,
        {tags.holdout("roc_auc"): f"{holdout['roc_auc']:.6f}", tags.THRESHOLD: str(THRESHOLD)},
    )
    aug = flights["august"]
    pred = models.predict(est, x(aug), c.task)
    scored = pd.DataFrame(
        {
            "flight_id": aug["flight_id"],
            c.target: aug[c.target].astype("int8"),
            "prediction": pred,
            "predicted_label": (pred >= THRESHOLD).astype("int8"),
            "carrier": aug["carrier"],
            "origin": aug["origin"],
        }
    )
    io.write_parquet(outcomes.path(st, PID), scored[["flight_id", c.target]])
    return {"params": params, "st": st, "version": str(mv.version), "scored": scored}


def run(trained: dict[str, Any], scored: pd.DataFrame) -> performance.Realised:
    params: Params = trained["params"]
    st: Settings = trained["st"]
    counts = {"predictions": len(scored), "labelled": len(scored)}
    return performance.run(params, st, PID, scored, trained["version"], counts)


def test_realised_performance_is_reported_logged_and_tagged(
    trained: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # given a version trained on January, with its holdout ROC AUC and threshold recorded
    scored, st, version = trained["scored"], trained["st"], trained["version"]
    reg = connect(st)
    mv = reg.get_version("flight_delay", version)
    holdout = float(mv.tags[tags.holdout("roc_auc")])

    # when August's labelled predictions are measured
    out = run(trained, scored)

    # then the realised ROC AUC is sklearn's on every row, compared with the holdout
    y, p = scored["is_delayed"].to_numpy(), scored["prediction"].to_numpy()
    assert out["value"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert out["holdout"] == pytest.approx(holdout) and out["threshold"] == THRESHOLD
    assert out["drop"] == pytest.approx(holdout - out["value"])
    assert out["overall"]["recall"] == pytest.approx(skm.recall_score(y, p >= THRESHOLD))
    floor, most = trained["params"].promote.floor, trained["params"].monitor.max_performance_drop
    assert out["breach"] is (holdout - out["value"] > most or out["value"] < floor)
    assert out["breach"] is bool(out["reasons"])
    assert {"carrier", "origin"} <= set(out["slices"]) and out["kind"] == "performance"
    line = capsys.readouterr().out
    assert f"performance: {PID} roc_auc {out['value']:.3f} (holdout {holdout:.3f}" in line

    # and the HTML is Evidently's report; the JSON holds the summary, counts included
    html = Path(out["html_path"])
    assert html == st.performance_dir / PID / "performance.html"
    text = html.read_text()
    assert "<html" in text.lower() and "window.drawDashboard(" in text and len(text) > 100_000
    assert "Confusion" in text and "ROC" in text  # the classification preset's widgets
    saved = json.loads(Path(out["json_path"]).read_text())
    assert saved["value"] == out["value"] and saved["breach"] == out["breach"]
    assert saved["counts"] == {"predictions": len(scored), "labelled": len(scored)}
    assert saved["slices"]["origin"][0]["metrics"]["roc_auc"] is not None

    # and MLflow holds one label run for the partition and version, with both files
    c = reg.client
    exp = c.get_experiment_by_name("flight_delay").experiment_id
    found = c.search_runs([exp], tags.search(tags.STAGE, "label"))
    assert [r.info.run_id for r in found] == [out["run_id"]]
    r = found[0]
    assert r.data.tags[tags.PARTITION] == PID and r.data.tags[tags.MODEL_VERSION] == version
    assert r.data.tags[tags.BREACH_KIND] == "performance"
    assert r.data.metrics["realised_roc_auc"] == pytest.approx(out["value"])
    files = {f.path for f in c.list_artifacts(r.info.run_id, f"performance/{PID}")}
    assert files == {f"performance/{PID}/performance.html", f"performance/{PID}/performance.json"}

    # and the version shows its realised score, as does its MLflow model for the partition
    mv = reg.get_version("flight_delay", version)
    assert mv.tags[tags.realised(PID)] == f"{out['value']:.6f}"
    logged = c.get_logged_model(performance_report.model_id_of(mv))
    on_model = {(m.key, m.dataset_name): m.value for m in logged.metrics or []}
    assert on_model[("realised_roc_auc", PID)] == pytest.approx(out["value"])

    # and the card reads it back from MLflow, slices included; status from the version tag
    (back,) = performance_report.history(reg, "flight_delay", version)
    assert back["partition"] == PID and back["run_id"] == out["run_id"]
    assert back["value"] == out["value"] and back["slices"] == saved["slices"]
    c.set_registered_model_alias("flight_delay", "champion", version)
    (row,) = governance.status(reg, "flight_delay")
    assert row["champion"]["realised"] == {PID: pytest.approx(out["value"], abs=1e-6)}


def test_a_rerun_on_worse_predictions_breaches_and_replaces_the_runs_results(
    trained: dict[str, Any],
) -> None:
    # given the partition measured once
    first = run(trained, trained["scored"])

    # when its predictions are measured again, shuffled so they no longer rank anything
    rng = np.random.default_rng(0)
    shuffled = trained["scored"].assign(
        prediction=rng.permutation(trained["scored"]["prediction"].to_numpy())
    )
    out = run(trained, shuffled)

    # then it is a performance breach that says by how much, in the same MLflow run
    assert out["breach"] is True and 0.45 < out["value"] < 0.55
    most = trained["params"].monitor.max_performance_drop
    why = f"below the holdout {out['holdout']:.3f} (max_performance_drop {most:g})"
    assert any(why in r for r in out["reasons"])
    assert out["run_id"] == first["run_id"]
    reg = connect(trained["st"])
    r = reg.client.get_run(out["run_id"])
    assert r.data.metrics["realised_roc_auc"] == pytest.approx(out["value"])
    assert r.data.tags[tags.BREACH] == "True"
    mv = reg.get_version("flight_delay", trained["version"])
    assert mv.tags[tags.realised(PID)] == f"{out['value']:.6f}"
