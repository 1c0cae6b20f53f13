"""The promotion gate is pure: floor, then improvement over the champion; its gain and record."""

from __future__ import annotations

import pytest

from mlops.config import Promote
from mlops.gate import decide, gain_of, gate_metrics, should_promote

GATE = Promote(floor=0.65, min_improvement=0.01)


@pytest.mark.parametrize(
    ("cand", "champ", "expected"),
    [
        (0.70, None, True),  # first model: floor only
        (0.60, None, False),  # below the floor
        (0.72, 0.70, True),  # improves by 0.02 >= 0.01
        (0.705, 0.70, False),  # improves by 0.005 < 0.01
        (0.64, 0.50, False),  # big gain but below the floor
    ],
)
def test_gate_on_higher_is_better_metric(cand, champ, expected) -> None:
    d = should_promote(
        {"roc_auc": cand}, None if champ is None else {"roc_auc": champ}, GATE, "roc_auc"
    )
    assert d.promote is expected
    assert d.reasons and "floor" in d.reasons[0]


def test_gate_on_lower_is_better_metric() -> None:
    gate = Promote(floor=4.0, min_improvement=0.1)
    assert should_promote({"rmse": 3.0}, {"rmse": 3.2}, gate, "rmse").promote
    assert not should_promote({"rmse": 3.15}, {"rmse": 3.2}, gate, "rmse").promote
    assert not should_promote({"rmse": 4.5}, None, gate, "rmse").promote


def test_missing_metric_never_passes() -> None:
    d = should_promote({"log_loss": 0.5}, None, GATE, "roc_auc")
    assert not d.promote
    assert "no roc_auc" in d.reasons[0]


def _ev(cand: float | None, champ: float | None, metric: str = "roc_auc") -> dict:
    return {
        "metric": metric,
        "candidate": {"version": "2", "metrics": {} if cand is None else {metric: cand}},
        "champion": None if champ is None else {"version": "1", "metrics": {metric: champ}},
    }


def test_the_gain_is_positive_when_the_candidate_is_better_whichever_way_is_better() -> None:
    assert gain_of(_ev(0.75, 0.70)) == pytest.approx(0.05)
    assert gain_of(_ev(3.0, 3.2, "rmse")) == pytest.approx(0.2)
    assert gain_of(_ev(3.4, 3.2, "rmse")) == pytest.approx(-0.2)


def test_there_is_no_gain_without_a_champion_or_a_value() -> None:
    assert gain_of(_ev(0.75, None)) is None
    assert gain_of(_ev(None, 0.70)) is None
    assert gain_of(_ev(float("nan"), 0.70)) is None


def test_the_gate_record_for_dvc_metrics_is_numbers_only() -> None:
    assert gate_metrics(_ev(0.75, 0.70), True) == {
        "passed": 1,
        "roc_auc": 0.75,
        "gain": pytest.approx(0.05),
    }
    assert gate_metrics(_ev(0.60, None), False) == {"passed": 0, "roc_auc": 0.60}


def test_the_gate_on_an_evaluation_reads_its_candidate_and_champion() -> None:
    gate = Promote(floor=0.6, min_improvement=0.01)
    assert decide(_ev(0.75, 0.70), gate) == should_promote(
        {"roc_auc": 0.75}, {"roc_auc": 0.70}, gate, "roc_auc"
    )
    assert decide(_ev(0.705, 0.70), gate).promote is False
    assert decide(_ev(0.65, None), gate).reasons[-1] == "no champion yet: floor only"
