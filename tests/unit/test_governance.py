"""Governance decisions, history checks, lineage parsing and model-card rendering: pure parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops import card, governance, lineage
from mlops.config import load_params
from tests.conftest import FLIGHTS


def ev(seq: int, action: str, frm: str, to: str, alias: str = "champion") -> dict[str, str]:
    return {"seq": str(seq), "action": action, "alias": alias, "from_version": frm,
            "to_version": to}


# --------------------------------------------------------------------------- promotion policy
@pytest.mark.parametrize(
    ("tags", "blocked_by"),
    [
        ({"mlops.gate.decision": "passed", "mlops.approval.status": "auto"}, None),
        ({"mlops.gate.decision": "passed", "mlops.approval.status": "approved"}, None),
        ({"mlops.gate.decision": "passed", "mlops.approval.status": "pending"},
         "waiting for approval"),
        ({"mlops.gate.decision": "passed", "mlops.approval.status": "expired"}, "expired"),
        ({"mlops.gate.decision": "failed", "mlops.gate.reasons": "roc_auc 0.6 >= floor 0.65: no"},
         "roc_auc 0.6 >= floor 0.65: no"),
        ({"mlops.gate.decision": "failed", "mlops.approval.status": "approved"},
         "failed the promotion gate"),  # approved without a recorded override
        ({"mlops.gate.decision": "failed", "mlops.approval.status": "approved",
          "mlops.approval.override": "gate failed overridden by ann"}, None),
        ({}, "no promotion gate result"),
        ({"mlops.gate.decision": "passed", "mlops.approval.status": "rejected",
          "mlops.approval.by": "bob"}, "rejected by bob"),
    ],
)
def test_blockers_name_what_stops_a_promotion(tags, blocked_by) -> None:
    # given the tags on a version / when asked what blocks it
    out = governance.blockers(tags)
    # then exactly the expected rule speaks up
    if blocked_by is None:
        assert out == []
    else:
        assert any(blocked_by in b for b in out), out


# --------------------------------------------------------------------------- history
def test_consistent_history_has_no_problems() -> None:
    events = [ev(3, "rollback", "2", "1"), ev(2, "promote", "1", "2"), ev(1, "promote", "", "1")]
    assert governance.check_history(events, "1") == []


def test_history_that_skips_a_move_or_disagrees_with_the_alias_is_flagged() -> None:
    # given two moves that both start from v1 (a lost update) and an alias elsewhere
    events = [ev(3, "promote", "1", "3"), ev(2, "promote", "1", "2"), ev(1, "promote", "", "1")]
    problems = governance.check_history(events, "2")
    assert any("#3 moves champion from v1 but #2 left it at v2" in p for p in problems)
    assert any("alias points at v2" in p for p in problems)


def test_decisions_without_alias_do_not_count_as_moves() -> None:
    events = [{"seq": "2", "action": "approve", "alias": "", "version": "5"},
              ev(1, "promote", "", "1")]
    assert governance.check_history(events, "1") == []


def test_previous_champion_walks_back_through_rollbacks() -> None:
    # given v1 -> v2 -> v3, then a rollback to v2
    events = [ev(3, "rollback", "3", "2"), ev(2, "promote", "2", "3"), ev(1, "promote", "1", "2"),
              ev(0, "promote", "", "1")]
    # when rolling back again, then it goes to v1 (not back to the withdrawn v3)
    assert governance.previous_champion(events, "2") == "1"
    # and with only the first move recorded there is nothing before it
    assert governance.previous_champion([ev(0, "promote", "", "1")], "1") is None


def test_a_version_promoted_again_after_a_rollback_is_a_rollback_target() -> None:
    events = [ev(4, "promote", "2", "3"), ev(3, "promote", "1", "2"), ev(2, "rollback", "2", "1"),
              ev(1, "promote", "1", "2")]
    assert governance.previous_champion(events, "3") == "2"


def test_challenger_moves_are_ignored_by_rollback() -> None:
    events = [ev(2, "challenger", "", "7", alias="challenger"), ev(1, "promote", "4", "5")]
    assert governance.previous_champion(events, "5") == "4"


def test_version_ranges_read_like_a_person_would_write_them() -> None:
    assert governance._ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"


# --------------------------------------------------------------------------- lineage
@pytest.mark.parametrize(("text", "partition", "md5"), [
    ("2013-01", True, False), ("2013-W05", True, False), ("2013-01-05", True, False),
    ("4396c36e8000f9e172f7d14ffac78bcb", False, True), ("data/predictions/x.parquet", False,
                                                        False),
])
def test_data_versions_are_told_apart_from_paths(text, partition, md5) -> None:
    assert bool(lineage.PARTITION.match(text)) is partition
    assert bool(lineage.HEX32.match(text)) is md5


def test_forward_lineage_text_lists_models_and_predictions() -> None:
    lin = {"kind": "forward", "start": "2013-W02", "partitions": ["2013-W02"],
           "current_md5": {"2013-W02": "abc"},
           "runs": [{"run_id": "r1", "candidate": "hgb", "selected": True}],
           "models": [{"name": "m", "version": "1", "aliases": ["champion"],
                       "md5": {"2013-W02": "abc"}}],
           "predictions": [{"path": "p.parquet", "model_name": "m", "model_version": "1",
                            "rows": 10}],
           "scored_partition_predictions": []}
    text = lineage.format_text(lin)
    assert "m v1 @champion trained on 2013-W02 abc" in text
    assert "p.parquet (m v1, 10 rows)" in text
    assert "r1 hgb (selected)" in text


# --------------------------------------------------------------------------- model card
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
        "model": "m", "version": "3", "run_id": "r" * 32, "aliases": ["champion"],
        "generated_at": "2026-01-01T00:00:00+00:00", "intended_use": "Score <flights> & more",
        "candidate": "hgb", "kind": "sklearn", "params": {"max_iter": "40"},
        "task": "classification", "target": "is_delayed", "entity_keys": ["flight_id"],
        "timestamp": "event_ts", "code_revision": "abc", "feature_service": "flights_model",
        "training": {"partitions": ["2013-W02", "2013-W03"],
                     "window": ["2013-01-07T00:00:00+00:00", "2013-01-21T00:00:00+00:00"],
                     "md5": {"2013-W02": "a" * 32, "2013-W03": "b" * 32}, "data_hash": "h",
                     "rows": {"2013-W02": 10}},
        "features": [{"name": "carrier", "dtype": "category", "importance": 0.5}],
        "metric": "roc_auc",
        "holdout": {"partitions": ["2013-W03"], "rows": 1000,
                    "metrics": {"roc_auc": 0.70, "log_loss": 0.5},
                    "recorded": {"roc_auc": 0.70, "log_loss": 0.5}},
        "slices": {"carrier": [
            {"value": "AA", "rows": 600, "share": 0.6, "mean_prediction": 0.2,
             "metrics": {"roc_auc": 0.72}},
            {"value": "EV", "rows": 380, "share": 0.38, "mean_prediction": 0.3,
             "metrics": {"roc_auc": 0.61}},
            {"value": "HA", "rows": 20, "share": 0.02, "mean_prediction": 0.3, "metrics": {},
             "note": "fewer than 100 rows"}]},
        "min_slice_rows": 100, "unseen_categories": {"carrier": ["OO"]}, "monitoring": [],
        "gate": {"decision": "passed", "reasons": "roc_auc 0.70 >= floor 0.55: yes"},
        "approval": {"status": "approved", "by": "ann", "at": "t", "note": "ok",
                     "override": None},
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
    assert "Trained on 2013-W02, 2013-W03 only (2013-01-07 to 2013-01-21)" in text


def test_limitations_report_changed_holdout_and_overrides() -> None:
    c = _card(holdout={"partitions": ["2013-W03"], "rows": 1000, "metrics": {"roc_auc": 0.65},
                       "recorded": {"roc_auc": 0.70}},
              approval={"override": "gate failed overridden by ann: urgent"},
              gate={"decision": "failed"})
    text = "\n".join(card.limitations(c))
    assert "holdout data changed since training" in text
    assert "Promoted despite the gate: gate failed overridden by ann: urgent" in text
    assert "The promotion gate failed" in text


def test_card_renders_the_same_facts_in_markdown_and_escaped_html() -> None:
    c = _card()
    c["limitations"] = card.limitations(c)
    bs = card.blocks(c)
    md, page = card.to_markdown(bs), card.to_html(bs, "Model card: m v3")
    for section in ("Intended use", "Training data", "Features", "Holdout metrics",
                    "By carrier", "Promotion gate", "Approval", "Known limitations"):
        assert f"## {section}" in md or f"### {section}" in md
        assert f">{section}</h" in page
    assert "| AA | 600 | 60.0% |" in md
    assert "Score &lt;flights&gt; &amp; more" in page and "<flights>" not in page
    assert "a" * 32 in md and "a" * 32 in page


def test_data_hash_depends_on_every_partition_hash_but_not_on_order() -> None:
    a = card.data_hash({"x": "1", "y": "2"})
    assert a == card.data_hash({"y": "2", "x": "1"})
    assert a != card.data_hash({"x": "1", "y": "3"})
