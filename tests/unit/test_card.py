"""card: slices, slice metrics, known limitations and the data hash of a model card."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops import card, tags
from mlops.config import load_params
from tests.conftest import FLIGHTS


def test_slices_come_from_closed_category_lists_of_the_contract() -> None:
    # given the demo contract: carrier and origin list their categories, dest does not
    contract = load_params(FLIGHTS).contract
    assert card.slice_columns(contract) == ["carrier", "origin"]
    # and a tighter cap on levels keeps only origin (3 airports)
    assert card.slice_columns(contract, max_levels=5) == ["origin"]


def test_slice_metrics_per_value_and_small_slices_get_no_metric() -> None:
    # given a perfect ranker on airport A and a useless one on B, and 5 rows of C
    rng = np.random.default_rng(0)
    n = 400
    origin = np.array(["A"] * n + ["B"] * n + ["C"] * 5)
    y = np.concatenate([np.tile([0, 1], n // 2), np.tile([0, 1], n // 2), [0, 1, 0, 1, 0]])
    pred = np.concatenate([y[:n] * 0.8 + 0.1, rng.uniform(size=n), np.full(5, 0.5)])
    df = pd.DataFrame({"origin": pd.Categorical(origin)})
    # when sliced
    out = card.slice_metrics(df, y, pred, ["origin"], "classification", min_rows=100)
    rows = {r["value"]: r for r in out["origin"]}
    # then A is perfect, B near chance, C too small to judge
    assert rows["A"]["metrics"]["roc_auc"] == pytest.approx(1.0)
    assert 0.35 < rows["B"]["metrics"]["roc_auc"] < 0.65
    assert rows["C"]["metrics"] == {} and rows["C"]["rows"] == 5
    assert [r["value"] for r in out["origin"]][-1] == "C"  # largest first


def test_slice_metrics_name_a_missing_column() -> None:
    df = pd.DataFrame({"origin": ["A"]})
    with pytest.raises(KeyError, match="carrier"):
        card.slice_metrics(df, np.array([1]), np.array([0.5]), ["carrier"], "classification")


def _card(**over):
    base = {
        "model": "m",
        "version": "3",
        "run_id": "r" * 32,
        "aliases": ["champion"],
        "generated_at": "2026-01-01T00:00:00+00:00",
        "intended_use": "Score <flights> & more",
        "candidate": "hgb",
        "kind": "sklearn",
        "params": {"max_iter": "40"},
        "task": "classification",
        "target": "is_delayed",
        "entity_keys": ["flight_id"],
        "timestamp": "event_ts",
        "code_revision": "abc",
        "feature_service": "flights_model",
        "training": {
            "partitions": ["2013-W02", "2013-W03"],
            "fitted": ["2013-W02"],
            "holdout": ["2013-W03"],
            "window": ["2013-01-07T00:00:00+00:00", "2013-01-14T00:00:00+00:00"],
            "holdout_window": ["2013-01-14T00:00:00+00:00", "2013-01-21T00:00:00+00:00"],
            "md5": {"2013-W02": "a" * 32, "2013-W03": "b" * 32},
            "data_hash": "h",
            "rows": {"2013-W02": 10},
        },
        "features": [
            {"name": "carrier", "dtype": "category", "importance": 0.5, "categories": "16"}
        ],
        "metric": "roc_auc",
        "holdout": {
            "partitions": ["2013-W03"],
            "rows": 1000,
            "metrics": {"roc_auc": 0.70, "log_loss": 0.5},
            "recorded": {"roc_auc": 0.70, "log_loss": 0.5},
        },
        "slices": {
            "carrier": [
                {
                    "value": "AA",
                    "rows": 600,
                    "share": 0.6,
                    "mean_prediction": 0.2,
                    "metrics": {"roc_auc": 0.72},
                },
                {
                    "value": "EV",
                    "rows": 380,
                    "share": 0.38,
                    "mean_prediction": 0.3,
                    "metrics": {"roc_auc": 0.61},
                },
                {
                    "value": "HA",
                    "rows": 20,
                    "share": 0.02,
                    "mean_prediction": 0.3,
                    "metrics": {},
                    "note": "fewer than 100 rows",
                },
            ]
        },
        "min_slice_rows": 100,
        "unseen_categories": {"carrier": ["OO"]},
        "monitoring": [],
        "gate": {"decision": "passed", "reasons": "roc_auc 0.70 >= floor 0.55: yes"},
        "approval": {"status": "approved", "by": "ann", "at": "t", "note": "ok", "override": None},
    }
    base.update(over)
    return base


def test_limitations_flag_weak_and_small_slices_and_unseen_categories() -> None:
    lim = card.limitations(_card())
    text = "\n".join(lim)
    assert "carrier = EV: roc_auc 0.6100 is 0.0900 worse than overall" in text
    assert "carrier = AA" not in text  # better than overall is not a limitation
    assert "HA have too few holdout rows" in text
    assert "OO never occurred in training" in text
    # and "Trained on" names the fitted partition only, not the holdout
    assert "Trained on 2013-W02 only (2013-01-07 to 2013-01-14)" in text
    assert "Evaluated on one holdout window (2013-W03, 1,000 rows)" in text


def test_the_holdout_is_told_apart_as_training_recorded_it() -> None:
    # given a window whose training run recorded its holdout, then evaluate's tag, then none
    parts = ["2013-W10", "2013-W02", "2013-W03"]
    run_params = {"holdout_partitions": "2013-W03"}
    tagged = {tags.EVAL_HOLDOUT: "2013-W02,2013-W03"}
    # then the run's own record wins, then the tag, then the latest partitions in time order
    assert card.holdout_of(parts, run_params, tagged, 1) == ["2013-W03"]
    assert card.holdout_of(parts, {}, tagged, 1) == ["2013-W02", "2013-W03"]
    assert card.holdout_of(parts, {}, {}, 1) == ["2013-W10"]


def test_capped_categories_are_a_known_limitation() -> None:
    # given a model whose tail-number feature kept 250 of 412 categories
    cap = {"cardinality": 412, "kept": 250, "kept_rows": 0.931}
    c = _card(capped_categories={"tailnum": cap}, max_categories="250")
    # then the card says so, with the setting that decides it
    text = "\n".join(card.limitations(c))
    assert (
        "tailnum: only the 250 most frequent of its 412 categories in training (93.1% of rows) "
        "are told apart; the rest, and values never seen, are scored as 'other' "
        "(train.max_categories=250)."
    ) in text
    assert card._categories(["a"] * 251, cap) == (
        "250 most frequent of 412 (93.1% of rows); the rest -> other"
    )


def test_limitations_report_changed_holdout_and_overrides() -> None:
    c = _card(
        holdout={
            "partitions": ["2013-W03"],
            "rows": 1000,
            "metrics": {"roc_auc": 0.65},
            "recorded": {"roc_auc": 0.70},
        },
        approval={"override": "gate failed overridden by ann: urgent"},
        gate={"decision": "failed"},
    )
    text = "\n".join(card.limitations(c))
    assert "holdout data changed since training" in text
    assert "Promoted despite the gate: gate failed overridden by ann: urgent" in text
    assert "The promotion gate failed" in text


def test_data_hash_depends_on_every_partition_hash_but_not_on_order() -> None:
    a = card.data_hash({"x": "1", "y": "2"})
    assert a == card.data_hash({"y": "2", "x": "1"})
    assert a != card.data_hash({"x": "1", "y": "3"})


def realised_runs() -> list[dict]:
    """Two labelled partitions as ``performance_report.history`` returns them."""

    def slices(aa: float | None) -> dict:
        return {
            "carrier": [
                {"value": "AA", "rows": 500, "metrics": {} if aa is None else {"roc_auc": aa}},
                {"value": "HA", "rows": 12, "metrics": {}, "note": "fewer than 100 rows"},
            ]
        }

    return [
        {
            "partition": "2013-07",
            "value": 0.69,
            "holdout": 0.70,
            "breach": False,
            "reasons": [],
            "overall": {"rows": 5000, "roc_auc": 0.69, "recall": 0.41},
            "slices": slices(0.71),
        },
        {
            "partition": "2013-08",
            "value": 0.61,
            "holdout": 0.70,
            "breach": True,
            "reasons": ["realised roc_auc 0.610 is 0.090 below the holdout 0.700"],
            "overall": {"rows": 4000, "roc_auc": 0.61, "recall": 0.30},
            "slices": slices(None),
        },
    ]


def test_a_performance_breach_is_a_known_limitation_with_its_reason() -> None:
    text = "\n".join(card.limitations(_card(realised=realised_runs())))
    assert (
        "Performance breach on 2013-08: realised roc_auc 0.610 is 0.090 below the holdout 0.700."
    ) in text
    assert "2013-07" not in text
