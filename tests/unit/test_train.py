"""train: feature importance, high-cardinality categories and per-candidate failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from mlops import models, plots, registry, tags, train
from mlops.config import Candidate, load_params, settings
from mlops.source import load
from mlops.train import Fitted
from tests.conftest import FLIGHTS, REPO, merge


def test_permutation_importance_finds_the_only_informative_column_in_one_predict() -> None:
    # given a model whose probability depends on column "a" alone, and a target that does
    rng = np.random.default_rng(0)
    x = pd.DataFrame(
        {
            "a": rng.normal(size=3000),
            "b": rng.normal(size=3000),
            "c": pd.Categorical(rng.choice(["x", "y"], size=3000)),
        }
    )
    y = (x["a"] > 0).to_numpy().astype(np.int32)

    class OnlyA:
        calls = 0

        def predict_proba(self, xs: pd.DataFrame) -> np.ndarray:
            OnlyA.calls += 1
            p = 1 / (1 + np.exp(-xs["a"].to_numpy()))
            return np.column_stack([1 - p, p])

    cand = Candidate(name="only_a", kind="sklearn_logistic_regression")
    f = Fitted(cand, OnlyA(), {}, np.zeros(len(x)), 0.0)

    # when its importance is computed on the holdout
    imp = models.importance(f.model, cand.kind, y, x, "classification")

    # then only "a" matters, in the order of importance, from a single predict call
    assert list(imp)[0] == "a" and imp["a"] > 0.3
    assert imp["b"] == 0.0 and imp["c"] == 0.0
    assert OnlyA.calls == 1


# --------------------------------------------------------------------------- categories
HGB = {"name": "hgb", "kind": "sklearn_hist_gradient_boosting", "params": {"max_iter": 20}}
XGB = {"name": "xgb", "kind": "xgboost", "params": {"n_estimators": 20, "max_depth": 3}}
TAILS = 400


@pytest.fixture(scope="module")
def tail_rows() -> pd.DataFrame:
    """Two weeks of real flights by their 400 busiest planes: ~400 tail numbers."""
    params = load_params(FLIGHTS)
    df = load(params.source, REPO)
    df = df[df["event_ts"] < pd.Timestamp("2013-01-14", tz="UTC")]
    # labelled rows only: a cancelled flight's outcome is missing, and never arrives
    df = df[df["is_delayed"].notna()].astype({"is_delayed": bool})
    busiest = df["tailnum"].value_counts().index[:TAILS]
    return df[df["tailnum"].isin(busiest)].reset_index(drop=True)


def tail_params(tmp_path: Path, candidates: list[dict[str, Any]]) -> Path:
    """params.yaml of weekly partitions (W02 held out) with the tail number as a feature."""
    raw = yaml.safe_load(FLIGHTS.read_text())
    raw["contract"]["features"].append(
        {"name": "tailnum", "dtype": "category", "unseen_category_tolerance": 1.0}
    )
    raw = merge(
        raw,
        {
            "ingest": {"partition": "week"},
            "train": {"partitions": ["2013-W01", "2013-W02"], "candidates": candidates},
            "score": {"partitions": ["2013-W03"]},
        },
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_feature_with_400_categories_trains_hgb_and_xgb_and_scores_from_the_registry(
    tmp_path: Path, tail_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given real flights where the tail number has ~400 values (HGB takes at most 255)
    for var in ("MLFLOW_TRACKING_URI", "MLOPS_PROJECT_ROOT", "MLOPS_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    pp = tail_params(tmp_path, [HGB, XGB])
    params, st = load_params(pp), settings(pp)
    train_df, hold_df = train.split(tail_rows, params)
    assert train_df["tailnum"].nunique() > 300

    # when both candidates are fitted
    fits = train.fit_candidates(train_df, hold_df, params)

    # then both learn, and the tail number keeps its 250 most frequent values plus other
    assert [f.candidate.name for f in fits.fitted] == ["hgb", "xgb"] and fits.failed == []
    assert all(f.metrics["roc_auc"] > 0.55 for f in fits.fitted)
    cap = fits.capped["tailnum"]
    assert cap["cardinality"] == train_df["tailnum"].nunique() and cap["kept"] == 250
    assert fits.categories["tailnum"][-1] == models.OTHER
    assert len(fits.categories["tailnum"]) == 251

    # when each is logged and registered, then loaded back as scoring loads it
    reg = registry.connect(st)
    exp_id = reg.experiment_id(params.model_name)
    c = params.contract
    x_ho = models.align_categories(models.matrix(hold_df, c), fits.categories)
    y_ho = models.target(hold_df, c)
    unseen = hold_df.head(20).assign(tailnum="N0NEW")
    for f in fits.fitted:
        out = plots.evaluation_artifacts(
            f, params, x_ho, y_ho, train_df.head(200), fits.categories, tmp_path / f.candidate.name
        )
        _, uri = train.log_candidate(f, params, exp_id, x_ho, fits.categories, {}, out, fits.capped)
        mv = mlflow.register_model(uri, params.model_name, await_registration_for=0)
        loaded = reg.load(params.model_name, mv.version)

        # then the loaded model scores the holdout as it was scored at training
        np.testing.assert_allclose(loaded.predict(hold_df, c), f.holdout_pred, rtol=1e-6)
        # and a tail number never seen reaches the model as "other", and scores as such
        seen_as = models.align_categories(models.matrix(unseen, c), loaded.categories)
        assert (seen_as["tailnum"] == models.OTHER).all()
        as_other = loaded.predict(unseen.assign(tailnum=models.OTHER), c)
        np.testing.assert_allclose(loaded.predict(unseen, c), as_other, rtol=1e-9)


def test_one_failing_candidate_is_reported_by_name_and_column_and_the_others_still_train(
    tmp_path: Path, tail_rows: pd.DataFrame
) -> None:
    # given an HGB candidate whose max_bins is below the 250 categories kept, and XGBoost
    narrow = {**HGB, "name": "narrow", "params": {"max_iter": 5, "max_bins": 100}}
    params = load_params(tail_params(tmp_path, [narrow, XGB]))
    train_df, hold_df = train.split(tail_rows, params)
    # when fitted
    fits = train.fit_candidates(train_df, hold_df, params)
    # then XGBoost is trained and the failure names the candidate, its kind and the column
    assert [f.candidate.name for f in fits.fitted] == ["xgb"]
    (bad,) = fits.failed
    assert bad.column == "tailnum"
    text = bad.describe()
    assert text.startswith("narrow (sklearn_hist_gradient_boosting, column 'tailnum'): ")
    assert "train.max_categories" in text
    train.require_some(fits)  # one success is enough


def test_the_stage_fails_naming_every_candidate_only_when_all_fail(
    tmp_path: Path, tail_rows: pd.DataFrame
) -> None:
    # given two candidates that both cannot train on this data
    narrow = {**HGB, "name": "narrow", "params": {"max_bins": 100}}
    broken = {**XGB, "name": "broken", "params": {"max_depth": -3}}
    params = load_params(tail_params(tmp_path, [narrow, broken]))
    fits = train.fit_candidates(*train.split(tail_rows, params), params)
    # when the stage checks them, then the error names both, with kind and reason
    with pytest.raises(train.TrainError) as e:
        train.require_some(fits)
    msg = str(e.value)
    assert "every candidate failed (2)" in msg
    assert "narrow (sklearn_hist_gradient_boosting, column 'tailnum')" in msg
    assert "broken (xgboost" in msg and "max_depth" in msg


def test_a_failed_candidate_is_a_failed_mlflow_run_that_says_why(
    tmp_path: Path, tail_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a failed candidate
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    narrow = {**HGB, "name": "narrow", "params": {"max_bins": 100}}
    pp = tail_params(tmp_path, [narrow])
    params, st = load_params(pp), settings(pp)
    (bad,) = train.fit_candidates(*train.split(tail_rows, params), params).failed
    # when it is recorded
    reg = registry.connect(st)
    exp_id = reg.experiment_id(params.model_name)
    rid = train.log_failure(bad, params, reg, exp_id, {tags.DATA_PARTITIONS: "2013-W01"})
    # then MLflow shows a FAILED train run of that candidate whose note names the column
    run = reg.client.get_run(rid)
    assert run.info.status == "FAILED" and run.info.run_name == "narrow"
    assert run.data.tags[tags.STAGE] == "train" and run.data.tags[tags.CANDIDATE] == "narrow"
    assert "column 'tailnum'" in run.data.tags["mlflow.note.content"]
    assert run.data.params["max_bins"] == "100"
    error = Path(mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="error.txt"))
    assert "CandidateError" in error.read_text()


# --------------------------------------------------------------------------- threshold
def test_train_records_the_threshold_it_chose_on_the_holdout(
    tmp_project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # given January's and February's first rows materialised, February held out, and the
    # rule "the highest threshold whose recall reaches 0.6"
    from mlops import io
    from mlops import materialize as m

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, st = tmp_project
    raw = yaml.safe_load(st.params_path.read_text())
    raw["train"].update(
        partitions=["2013-01", "2013-02"],
        candidates=[HGB, XGB],
        threshold={"rule": "recall", "value": 0.6},
    )
    st.params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    params, st = load_params(st.params_path), settings(st.params_path)
    m.run(params, st, ["2013-01", "2013-02"])

    # when trained
    result = train.run(params, st)

    # then every candidate's holdout metrics are at its own threshold, which meets the rule
    for name, metrics in result["holdout"].items():
        assert 0 < metrics["threshold"] < 1, name
        assert metrics["recall"] >= 0.6 and {"precision", "f1", "roc_auc"} <= set(metrics)
    chosen = result["holdout"][result["candidate"]]["threshold"]
    assert result["threshold"] == chosen
    assert io.read_json(st.state_dir / "train.json")["threshold"] == chosen
    # and the version carries it as a tag that reads back exactly, and the run its rule
    reg = registry.connect(st)
    mv = reg.get_version(params.model_name, result["version"])
    assert float(mv.tags[tags.THRESHOLD]) == chosen
    run = reg.client.get_run(result["run_id"])
    assert run.data.params["threshold_rule"] == "recall"
    assert run.data.params["threshold_value"] == "0.6"
    assert run.data.metrics["holdout_threshold"] == pytest.approx(chosen)
    assert run.data.metrics["holdout_recall"] >= 0.6
    # and the summary line says it
    line = next(
        x
        for x in capsys.readouterr().out.splitlines()
        if x.startswith("train: ") and "registered" in x
    )
    assert f"threshold {chosen:.4f} (recall): holdout precision " in line

    # when the version is loaded, then it brings its threshold; without the tag (a version
    # trained before thresholds were chosen) it uses 0.5
    assert reg.load(params.model_name, result["version"]).threshold == chosen
    reg.client.delete_model_version_tag(params.model_name, result["version"], tags.THRESHOLD)
    assert reg.load(params.model_name, result["version"]).threshold == 0.5
