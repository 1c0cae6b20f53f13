"""The decision threshold: each rule on small arrays whose counts can be checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mlops import models, thresholds
from mlops.config import Threshold

# prob >= t for each t:   TP FP FN  precision recall F1
#   0.1                    3  3  0    0.500   1.000  0.667
#   0.2                    3  2  0    0.600   1.000  0.750
#   0.3                    3  1  0    0.750   1.000  0.857  <- best F1
#   0.4                    2  1  1    0.667   0.667  0.667
#   0.6                    2  0  1    1.000   0.667  0.800
#   0.8                    1  0  2    1.000   0.333  0.500
Y = np.array([0, 0, 1, 0, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.8])


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("best_f1", None, 0.3),
        # the lowest threshold meeting the precision, so the most recall
        ("precision", 0.6, 0.2),
        ("precision", 0.7, 0.3),
        ("precision", 0.8, 0.6),
        ("precision", 1.0, 0.6),
        ("precision", 0.0, 0.1),
        # the highest threshold meeting the recall, so the most precision
        ("recall", 1.0, 0.3),
        ("recall", 0.5, 0.6),
        ("recall", 2 / 3, 0.6),
        ("recall", 0.7, 0.3),
        ("recall", 0.3, 0.8),
        ("recall", 0.0, 0.8),
        ("fixed", 0.42, 0.42),
    ],
)
def test_each_rule_picks_the_threshold_the_counts_give(
    rule: str, value: float | None, expected: float
) -> None:
    chosen = thresholds.choice(Y, P, rule, value)
    assert chosen.threshold == pytest.approx(expected)
    assert chosen.note is None
    assert thresholds.choose_threshold(Y, P, rule, value) == chosen.threshold


def test_the_threshold_is_a_probability_the_model_gave_so_labels_match_at_scoring() -> None:
    # given the best-F1 threshold, then it is one of the holdout's own probabilities, and
    # `prob >= threshold` labels exactly the rows the curve counted (TP 3, FP 1)
    t = thresholds.choose_threshold(Y, P, "best_f1", None)
    assert t in P.tolist()
    label = np.greater_equal(P, t)
    assert int((label & (Y == 1)).sum()) == 3 and int((label & (Y == 0)).sum()) == 1


def test_equal_f1_goes_to_the_higher_threshold() -> None:
    # given t=0.1 (P .5, R 1) and t=0.4 (P 1, R .5): both F1 2/3, the others lower
    y, p = np.array([1, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4])
    # then the higher one is taken
    assert thresholds.choose_threshold(y, p, "best_f1", None) == 0.4


def test_a_precision_no_threshold_reaches_takes_the_best_precision_and_says_so() -> None:
    # given precisions .5 (t .2), .33 (t .4), .5 (t .6), 0 (t .8): none reaches 0.9
    y, p = np.array([1, 0, 1, 0]), np.array([0.2, 0.4, 0.6, 0.8])
    chosen = thresholds.choice(y, p, "precision", 0.9)
    # then the best precision's lowest threshold (more recall), with a note saying why
    assert chosen.threshold == 0.2
    assert chosen.note is not None
    assert "no threshold reaches precision 0.9" in chosen.note
    assert "0.5000" in chosen.note and "train.threshold.value" in chosen.note


def test_a_holdout_of_one_class() -> None:
    # given no positive row, then nothing can be chosen: 0.5, and a note (fixed still fixed)
    y0, p = np.zeros(3, dtype=np.int32), np.array([0.2, 0.5, 0.9])
    for rule, value in (("best_f1", None), ("precision", 0.5), ("recall", 0.5)):
        chosen = thresholds.choice(y0, p, rule, value)
        assert chosen.threshold == thresholds.DEFAULT_THRESHOLD
        assert chosen.note is not None and "no positive rows" in chosen.note
    assert thresholds.choice(y0, p, "fixed", 0.3) == thresholds.Choice(0.3, None)
    # given only positive rows, then every precision is 1 and the recall decides
    y1 = np.ones(3, dtype=np.int32)
    assert thresholds.choose_threshold(y1, p, "best_f1", None) == 0.2
    assert thresholds.choose_threshold(y1, p, "precision", 1.0) == 0.2
    assert thresholds.choose_threshold(y1, p, "recall", 0.5) == 0.5


def test_all_equal_probabilities_have_one_threshold() -> None:
    # given one positive in four, every row at 0.3: the only cut is "all positive"
    y, p = np.array([0, 1, 0, 0]), np.full(4, 0.3)
    assert thresholds.choose_threshold(y, p, "best_f1", None) == 0.3
    assert thresholds.choose_threshold(y, p, "recall", 0.9) == 0.3
    assert thresholds.choice(y, p, "precision", 0.25) == thresholds.Choice(0.3, None)
    # a precision above the positive rate cannot be met, and it is said
    missed = thresholds.choice(y, p, "precision", 0.5)
    assert missed.threshold == 0.3 and missed.note is not None


def test_bad_arguments_are_refused_naming_the_rule() -> None:
    with pytest.raises(ValueError, match="unknown rule 'f2'"):
        thresholds.choice(Y, P, "f2", None)
    with pytest.raises(ValueError, match="rule 'recall' needs a value"):
        thresholds.choice(Y, P, "recall", None)
    with pytest.raises(ValueError, match="no holdout rows"):
        thresholds.choice(np.array([]), np.array([]), "best_f1", None)


def test_holdout_metrics_at_the_threshold_keep_the_earlier_keys() -> None:
    # given the hand-counted arrays and the best-F1 rule
    metrics, chosen = thresholds.holdout_metrics(Y, P, "classification", Threshold())
    # then the metrics are those of prob >= 0.3, and accuracy stays at 0.5 (5 of 6 right)
    assert chosen == thresholds.Choice(0.3, None)
    assert metrics["threshold"] == 0.3
    assert metrics["precision"] == pytest.approx(0.75) and metrics["recall"] == 1.0
    assert metrics["f1"] == pytest.approx(6 / 7)
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert set(models.metrics(Y, P, "classification")) < set(metrics)
    line = thresholds.describe_threshold(chosen, metrics, "best_f1")
    assert line == ", threshold 0.3000 (best_f1): holdout precision 0.750, recall 1.000, F1 0.857"
    # given a regression, then there is no threshold at all
    values = np.array([1.0, 2.0, 3.0])
    reg_metrics, none = thresholds.holdout_metrics(values, values, "regression", Threshold())
    assert none is None and "threshold" not in reg_metrics
    assert thresholds.describe_threshold(none, reg_metrics, "best_f1") == ""
