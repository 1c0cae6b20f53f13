"""The decision threshold of a classifier: chosen on the holdout by ``train.threshold``.

``train`` picks it on each candidate's holdout predictions and records it with the
version (tag ``mlops.threshold``); ``score`` labels a row positive when its probability
is at least the threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from mlops import models

if TYPE_CHECKING:
    import numpy as np

    from mlops.config import Threshold

RULES = ("best_f1", "precision", "recall", "fixed")
DEFAULT_THRESHOLD = 0.5
"""The decision threshold of a classifier that records none (trained before thresholds)."""


class Choice(NamedTuple):
    """A chosen decision threshold, and why it misses the rule's target when it does."""

    threshold: float
    note: str | None = None


def choose_threshold(y: np.ndarray, prob: np.ndarray, rule: str, value: float | None) -> float:
    """Pure: the decision threshold ``rule`` picks on holdout labels ``y`` (see :func:`choice`)."""
    return choice(y, prob, rule, value).threshold


def choice(y: np.ndarray, prob: np.ndarray, rule: str, value: float | None) -> Choice:
    """Pure: the threshold (a row is positive when ``prob >= threshold``) by ``rule``.

    ``best_f1``: the highest F1 (ties: the higher threshold). ``precision``: the lowest
    threshold whose precision reaches ``value``, so the highest recall that meets it;
    when none does, the threshold of the best precision (ties: the lower), with a note.
    ``recall``: the highest threshold whose recall reaches ``value``. ``fixed``: ``value``.
    A holdout without positive rows gives :data:`DEFAULT_THRESHOLD`, with a note.
    """
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    if rule not in RULES:
        raise ValueError(f"threshold: unknown rule {rule!r} (one of {', '.join(RULES)})")
    if rule != "best_f1" and value is None:
        raise ValueError(f"threshold: rule {rule!r} needs a value in [0, 1]")
    target = 0.0 if value is None else float(value)
    if rule == "fixed":
        return Choice(target)
    y, prob = np.asarray(y), np.asarray(prob, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("threshold: no holdout rows to choose a decision threshold on")
    if not (y == 1).any():
        note = f"the holdout has no positive rows to apply {rule} to; threshold {DEFAULT_THRESHOLD}"
        return Choice(DEFAULT_THRESHOLD, note)
    # thresholds rise; precision[i] and recall[i] are those of ``prob >= thresholds[i]``
    precision, recall, thresholds = precision_recall_curve(y, prob)
    precision, recall = precision[:-1], recall[:-1]
    eps = 1e-12
    if rule == "best_f1":
        total = precision + recall
        f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
        return Choice(float(thresholds[np.flatnonzero(f1 >= f1.max() - eps)[-1]]))
    if rule == "recall":
        return Choice(float(thresholds[np.flatnonzero(recall >= target - eps)[-1]]))
    met = np.flatnonzero(precision >= target - eps)
    if len(met):
        return Choice(float(thresholds[met[0]]))
    top = int(np.flatnonzero(precision >= precision.max() - eps)[0])
    return Choice(
        float(thresholds[top]),
        f"no threshold reaches precision {target:g} on the holdout; took the best precision, "
        f"{precision[top]:.4f} (recall {recall[top]:.4f}); lower train.threshold.value",
    )


def holdout_metrics(
    y: np.ndarray, pred: np.ndarray, task: str, rule: Threshold
) -> tuple[dict[str, float], Choice | None]:
    """Pure: a candidate's holdout metrics, a classifier's at the threshold ``rule`` picks.

    Regression has no threshold (None).
    """
    if task != "classification":
        return models.metrics(y, pred, task), None
    chosen = choice(y, pred, rule.rule, rule.value)
    return models.metrics(y, pred, task, chosen.threshold), chosen


def logged_params(rule: Threshold, task: str) -> dict[str, str | float]:
    """Pure: a classifier run's params of the rule: ``threshold_rule`` (and ``_value``)."""
    if task != "classification":
        return {}
    return {
        "threshold_rule": rule.rule,
        **({} if rule.value is None else {"threshold_value": rule.value}),
    }


def describe_threshold(chosen: Choice | None, metrics: dict[str, float], rule: str) -> str:
    """Pure: ``, threshold 0.2310 (best_f1): holdout precision ...`` and its note, or ""."""
    if chosen is None:
        return ""
    note = f"; WARNING {chosen.note}" if chosen.note else ""
    return (
        f", threshold {chosen.threshold:.4f} ({rule}): holdout precision "
        f"{metrics['precision']:.3f}, recall {metrics['recall']:.3f}, F1 {metrics['f1']:.3f}{note}"
    )
