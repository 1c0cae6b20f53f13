"""The promotion gate is a pure function: floor, then improvement over the champion."""

from __future__ import annotations

import pytest

from mlops.config import Promote
from mlops.promote import should_promote

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
