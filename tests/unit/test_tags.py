"""tags: every mlops.* tag name, once, and the helpers that build them."""

from __future__ import annotations

from mlops import tags


def test_tag_names_are_namespaced_and_distinct() -> None:
    names = {k: v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str)}
    assert all(v.startswith("mlops.") for v in names.values()), names
    assert len(set(names.values())) == len(names)
    assert tags.GATE == "mlops.gate.decision" and tags.APPROVAL == "mlops.approval.status"
    assert tags.CARD == "mlops.card"


def test_metric_tags_and_search_filters() -> None:
    assert tags.holdout("roc_auc") == "mlops.holdout_roc_auc"
    assert tags.evaluation("roc_auc") == "mlops.eval.roc_auc"
    assert tags.champion_evaluation("rmse") == "mlops.eval.champion_rmse"
    assert tags.search(tags.STAGE, "monitor") == "tags.`mlops.stage` = 'monitor'"
