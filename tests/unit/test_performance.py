"""performance: realised metrics on labelled real flights, by slice, and the breach policy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mlops import card, governance, models, performance, performance_metrics, performance_report
from mlops.config import load_params
from mlops.contract import Contract
from tests.conftest import FLIGHTS

CONTRACT = load_params(FLIGHTS).contract
REGRESSION = Contract.model_validate({**CONTRACT.model_dump(), "task": "regression"})
THRESHOLD = 0.2


@pytest.fixture(scope="module")
def labelled(months: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """February's real flights scored by a model fitted on January, with their outcomes."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    numeric = [f.name for f in CONTRACT.features if f.dtype in ("float", "int")]
    # Cancelled flights have no outcome: a labelled partition holds none of them.
    jan, feb = (
        months[m].dropna(subset=[CONTRACT.target]).reset_index(drop=True)
        for m in ("2013-01", "2013-02")
    )
    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression())
    model.fit(jan[numeric], jan[CONTRACT.target])
    pred = model.predict_proba(feb[numeric])[:, 1]
    return pd.DataFrame(
        {
            "flight_id": feb["flight_id"],
            CONTRACT.target: feb[CONTRACT.target].astype("int8"),
            "prediction": pred,
            "predicted_label": (pred >= THRESHOLD).astype("int8"),
            "carrier": feb["carrier"],
            "origin": feb["origin"],
        }
    )


# --------------------------------------------------------------------------- metrics
def test_classification_metrics_are_sklearns_at_the_models_threshold(labelled) -> None:
    # given February's real outcomes and predictions labelled at the version's threshold
    y, p = labelled["is_delayed"].to_numpy(), labelled["prediction"].to_numpy()
    hard = p >= THRESHOLD

    # when measured
    out = performance.metrics(labelled, CONTRACT, THRESHOLD)

    # then every metric is sklearn's, and log loss and Brier are the holdout's own formula
    assert out["rows"] == len(labelled) and out["threshold"] == THRESHOLD
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert out["average_precision"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert out["precision"] == pytest.approx(skm.precision_score(y, hard))
    assert out["recall"] == pytest.approx(skm.recall_score(y, hard))
    assert out["f1"] == pytest.approx(skm.f1_score(y, hard))
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, hard))
    holdout_way = models.metrics(y, p, "classification")
    assert out["log_loss"] == pytest.approx(holdout_way["log_loss"])
    assert out["brier"] == pytest.approx(holdout_way["brier"])
    tn, fp, fn, tp = skm.confusion_matrix(y, hard).ravel()
    assert out["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert out["positive_rate"] == pytest.approx(y.mean()) and out["notes"] == []


def test_ranking_metrics_treat_tied_scores_as_sklearn_does() -> None:
    # given scores with many ties (a coarse model) and both classes within the ties
    rng = np.random.default_rng(1)
    p = rng.integers(0, 5, 3000) / 4
    y = (rng.uniform(size=3000) < 0.2 + 0.5 * p).astype(int)
    frame = pd.DataFrame({"is_delayed": y, "prediction": p, "predicted_label": p >= 0.5})

    # when measured, then AUC and AP match sklearn's handling of ties exactly
    out = performance.metrics(frame, CONTRACT, 0.5)
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert out["average_precision"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)


def test_metrics_are_the_same_computed_a_few_rows_at_a_time(labelled, monkeypatch) -> None:
    # given scores with ties, measured whole
    coarse = labelled.assign(prediction=labelled["prediction"].round(2))
    whole = performance.metrics(coarse, CONTRACT, THRESHOLD)

    # when the kernels step through 7 rows at a time (ties then straddle the steps)
    monkeypatch.setattr(performance_metrics, "CHUNK", 7)
    stepped = performance.metrics(coarse, CONTRACT, THRESHOLD)

    # then nothing changes but float rounding
    for key in ("roc_auc", "average_precision", "log_loss", "brier", "recall", "confusion"):
        assert stepped[key] == pytest.approx(whole[key], abs=1e-12)
    for a, b in zip(stepped["calibration"]["bins"], whole["calibration"]["bins"], strict=True):
        assert a["rows"] == b["rows"] and a["mean_predicted"] == pytest.approx(b["mean_predicted"])
    y, p = coarse["is_delayed"], coarse["prediction"]
    assert stepped["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)


def test_calibration_compares_mean_prediction_with_the_observed_rate_per_bin(labelled) -> None:
    # when measured
    cal = performance.metrics(labelled, CONTRACT, THRESHOLD)["calibration"]

    # then ten bins cover [0, 1] and hold every row once, each with its own means
    bins = cal["bins"]
    assert [b["lower"] for b in bins] == pytest.approx([i / 10 for i in range(10)])
    assert sum(b["rows"] for b in bins) == len(labelled)
    p, y = labelled["prediction"], labelled["is_delayed"]
    first = bins[0]
    in_first = p < 0.1
    assert first["rows"] == in_first.sum()
    assert first["mean_predicted"] == pytest.approx(p[in_first].mean())
    assert first["observed_rate"] == pytest.approx(y[in_first].mean())
    assert all(b["mean_predicted"] is None for b in bins if b["rows"] == 0)
    gaps = sum(b["rows"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in bins if b["rows"])
    assert cal["ece"] == pytest.approx(gaps / len(labelled))


def test_one_class_leaves_ranking_metrics_none_with_a_note_not_a_crash(labelled) -> None:
    # given a partition whose labelled flights were all on time
    on_time = labelled[labelled["is_delayed"] == 0]

    # when measured
    out = performance.metrics(on_time, CONTRACT, THRESHOLD)

    # then what needs both classes is None and says why; the rest is still measured
    assert out["roc_auc"] is None and out["average_precision"] is None
    assert out["recall"] is None and out["accuracy"] == pytest.approx(
        1 - out["predicted_positive_rate"]
    )
    assert any("need both classes" in n and "negative" in n for n in out["notes"])
    assert any("recall is undefined" in n for n in out["notes"])


def test_no_labelled_rows_is_measured_as_nothing_with_a_note(labelled) -> None:
    overall, by_slice = performance.measure(labelled.head(0), CONTRACT, THRESHOLD)
    assert overall["rows"] == 0 and "roc_auc" not in overall
    assert overall["notes"] == ["no labelled rows"]
    assert by_slice == {"carrier": [], "origin": []}


def test_without_a_label_column_labels_are_taken_at_the_threshold_and_noted(labelled) -> None:
    # given predictions without predicted_label
    bare = labelled.drop(columns="predicted_label")

    # when measured at the version's threshold, then labels are the same as score's
    out = performance.metrics(bare, CONTRACT, THRESHOLD)
    assert out["recall"] == performance.metrics(labelled, CONTRACT, THRESHOLD)["recall"]
    assert any("threshold 0.2" in n for n in out["notes"])
    # and without a threshold the default 0.5 is said
    assert any("0.5" in n for n in performance.metrics(bare, CONTRACT, None)["notes"])


def test_bad_labelled_frames_are_refused_naming_the_column(labelled) -> None:
    with pytest.raises(KeyError, match="'prediction'"):
        performance.metrics(labelled.drop(columns="prediction"), CONTRACT, THRESHOLD)
    with pytest.raises(ValueError, match="must be 0 or 1.*1 rows hold 256"):
        wrong = [256] + [0] * (len(labelled) - 1)
        performance.metrics(labelled.assign(is_delayed=wrong), CONTRACT, THRESHOLD)
    with pytest.raises(ValueError, match="must be 0 or 1.*1 rows hold nan"):
        missing = labelled["is_delayed"].astype("float64").where(labelled.index > 0)
        performance.metrics(labelled.assign(is_delayed=missing), CONTRACT, THRESHOLD)
    with pytest.raises(KeyError, match="slice column"):
        performance.slices(labelled, CONTRACT, THRESHOLD, ["dest"])


def test_regression_metrics_and_residuals() -> None:
    # given a real-valued target and predictions off by known residuals
    rng = np.random.default_rng(0)
    y = rng.normal(10, 3, 2000)
    pred = y - rng.normal(0.5, 1, 2000)
    frame = pd.DataFrame({"is_delayed": y, "prediction": pred, "origin": "EWR"})

    # when measured
    out = performance.metrics(frame, REGRESSION, None)

    # then RMSE, MAE and R2 are sklearn's, and the residuals are summarised
    assert out["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
    assert out["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert out["r2"] == pytest.approx(skm.r2_score(y, pred))
    res = out["residuals"]
    assert res["mean"] == pytest.approx(np.mean(y - pred))
    assert res["p50"] == pytest.approx(np.median(y - pred))
    assert res["p05"] < res["p25"] < res["p50"] < res["p75"] < res["p95"]
    # and a constant target leaves R2 undefined, said so
    flat = performance.metrics(frame.assign(is_delayed=1.0), REGRESSION, None)
    assert flat["r2"] is None and any("r2 is undefined" in n for n in flat["notes"])


# --------------------------------------------------------------------------- slices
def test_slices_measure_each_value_as_the_whole_would_and_mark_small_ones(labelled) -> None:
    # when sliced by the card's columns
    out = performance.slices(labelled, CONTRACT, THRESHOLD, min_rows=50)

    # then the card's slice columns are used, largest slice first, every row counted once
    assert list(out) == card.slice_columns(CONTRACT)
    for rows in out.values():
        assert sum(r["rows"] for r in rows) == len(labelled)
        assert [r["rows"] for r in rows] == sorted((r["rows"] for r in rows), reverse=True)
    # and each large slice has the metrics its own rows give
    ewr = next(r for r in out["origin"] if r["value"] == "EWR")
    own = labelled[labelled["origin"] == "EWR"]
    assert ewr["metrics"] == {
        k: pytest.approx(v) if v is not None else None
        for k, v in performance.metrics(own, CONTRACT, THRESHOLD).items()
        if k not in ("confusion", "calibration", "threshold", "notes")
    }
    # and a slice under min_rows gets its size, no metrics and a note
    small = [r for r in out["carrier"] if r["rows"] < 50]
    assert small and all(r["metrics"] == {} and "fewer than 50" in r["note"] for r in small)


def test_missing_slice_values_are_a_slice_of_their_own(labelled) -> None:
    frame = labelled.assign(origin=labelled["origin"].where(labelled.index >= 10))
    rows = {r["value"]: r for r in performance.slices(frame, CONTRACT, THRESHOLD)["origin"]}
    assert rows[card.MISSING]["rows"] == 10


def test_regression_slices() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=600)
    frame = pd.DataFrame(
        {"is_delayed": y, "prediction": y + 0.1, "origin": ["EWR", "JFK", "LGA"] * 200}
    )
    rows = performance.slices(frame, REGRESSION, None)["origin"]
    assert [r["rows"] for r in rows] == [200, 200, 200]
    assert all(r["metrics"]["rmse"] == pytest.approx(0.1) for r in rows)


# --------------------------------------------------------------------------- policy
@pytest.mark.parametrize(
    ("value", "holdout", "metric", "floor", "breach", "rule"),
    [
        # higher is better: a drop of more than max_drop, or a value under the floor
        (0.652, 0.745, "roc_auc", 0.55, True, "0.093 below the holdout 0.745"),
        (0.70, 0.75, "roc_auc", 0.55, False, None),  # exactly max_drop: not more than it
        (0.6999, 0.75, "roc_auc", 0.55, True, "below the holdout"),
        (0.80, 0.75, "roc_auc", 0.55, False, None),  # better than the holdout
        (0.54, 0.56, "roc_auc", 0.55, True, "below the floor 0.55"),
        (0.55, 0.56, "roc_auc", 0.55, False, None),  # exactly the floor passes, as the gate
        (0.30, 0.36, "average_precision", 0.2, True, "below the holdout"),
        (0.60, 0.70, "r2", 0.5, True, "below the holdout"),
        # lower is better: a rise of more than max_drop, or a value over the floor
        (0.46, 0.40, "log_loss", 0.7, True, "0.060 above the holdout 0.400"),
        (0.45, 0.40, "log_loss", 0.7, False, None),
        (0.35, 0.40, "log_loss", 0.7, False, None),
        (0.71, 0.69, "log_loss", 0.7, True, "above the floor 0.7"),
        (12.0, 10.0, "rmse", 20, True, "above the holdout"),
        (10.04, 10.0, "mae", 20, False, None),
    ],
)
def test_breach_policy(value, holdout, metric, floor, breach, rule) -> None:
    found, reasons = performance.is_breach(value, holdout, metric, floor, 0.05)
    assert found is breach
    assert bool(reasons) is breach
    if rule:
        assert any(rule in r for r in reasons)


def test_both_rules_give_both_reasons_with_the_numbers() -> None:
    found, reasons = performance.is_breach(0.52, 0.745, "roc_auc", 0.55, 0.05)
    assert found and reasons == [
        "realised roc_auc 0.520 is 0.225 below the holdout 0.745 (max_performance_drop 0.05)",
        "realised roc_auc 0.520 is below the floor 0.55 (promote.floor)",
    ]


def test_no_value_is_no_breach_and_no_holdout_leaves_the_floor() -> None:
    assert performance.is_breach(None, 0.745, "roc_auc", 0.55, 0.05) == (False, [])
    assert performance.is_breach(float("nan"), 0.745, "roc_auc", 0.55, 0.05) == (False, [])
    assert performance.is_breach(0.60, None, "roc_auc", 0.55, 0.05) == (False, [])
    found, reasons = performance.is_breach(0.50, None, "roc_auc", 0.55, 0.05)
    assert found and len(reasons) == 1 and "floor" in reasons[0]


def test_drop_follows_the_metrics_direction() -> None:
    assert performance.drop(0.70, 0.75, "roc_auc") == pytest.approx(0.05)
    assert performance.drop(0.45, 0.40, "log_loss") == pytest.approx(0.05)
    assert performance.drop(0.80, 0.75, "roc_auc") == pytest.approx(-0.05)


# --------------------------------------------------------------------------- report
def test_the_report_is_evidentlys_preset_on_a_sample_even_with_one_class(labelled) -> None:
    # given labelled rows of one class only (Evidently's ROC AUC cannot run on them)
    on_time = labelled[labelled["is_delayed"] == 0]

    # when the report is built on at most 200 of them, then it is Evidently's page
    page = performance_report.html(on_time, CONTRACT, THRESHOLD, max_rows=200)
    assert "window.drawDashboard(" in page and "Accuracy" in page
    # and the sample is seeded and keeps the rows in order
    a, b = performance_report.sample(labelled, 200), performance_report.sample(labelled, 200)
    assert len(a) == 200 and a.index.equals(b.index) and a.index.is_monotonic_increasing


# --------------------------------------------------------------------------- status
def test_status_reads_the_realised_score_of_each_labelled_partition_in_time_order() -> None:
    # given a version's tags: two labelled months out of order, and unrelated or bad tags
    version_tags = {
        "mlops.realised.2013-09": "0.612000",
        "mlops.realised.2013-08": "0.652000",
        "mlops.realised.not-a-partition": "0.5",
        "mlops.realised.2013-10": "n/a",
        "mlops.holdout_roc_auc": "0.745000",
    }
    # when read, then the months come oldest first, as numbers, and nothing else does
    assert governance.realised(version_tags) == {"2013-08": 0.652, "2013-09": 0.612}


def test_the_report_opens_with_the_verdict_against_the_holdout() -> None:
    from mlops import performance_report

    # given a breached partition's summary and an Evidently page
    result = {
        "partition": "2013-07",
        "model_name": "flight_delay",
        "model_version": "3",
        "metric": "roc_auc",
        "value": 0.7136,
        "holdout": 0.7463,
        "drop": 0.0327,
        "threshold": 0.25,
        "breach": True,
        "reasons": ["realised roc_auc 0.714 is 0.033 below the holdout 0.746"],
        "notes": [],
        "overall": {"precision": 0.48, "recall": 0.65},
        "slices": {"origin": [{"value": "EWR", "rows": 10126, "metrics": {"roc_auc": 0.72}}]},
        "counts": {"labelled": 28280, "predictions": 29428},
    }
    page = '<html><head></head><body class="x"><div id="evidently"></div></body></html>'
    # when the summary is put into the page
    out = performance_report.with_summary(page, result)
    # then the verdict, realised and holdout values, the change, reasons and slices come
    # first in the body, and the Evidently report follows unchanged
    body = out.split('<body class="x">', 1)[1]
    assert body.index("BREACH") < body.index('<div id="evidently">')
    for text in ("0.7136", "0.7463", "-0.0327", "28,280 of 29,428", "below the holdout", "EWR"):
        assert text in body, text
    assert out.endswith('<div id="evidently"></div></body></html>')
