"""The promotion gate's decision: pure functions of an evaluation and the gate's settings.

``promote`` applies it to move aliases; ``ci`` applies it to a pull request's candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlops import models
from mlops.config import Promote


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and the reasons, in words a reviewer can read."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def should_promote(
    candidate: dict[str, float], champion: dict[str, float] | None, gate: Promote, metric: str
) -> Decision:
    """Pure gate: floor first, then improvement over the champion (if there is one)."""
    higher = models.HIGHER_IS_BETTER[metric]
    value = candidate.get(metric)
    if value is None or value != value:
        return Decision(False, [f"candidate has no {metric} on the holdout"])
    reasons = []
    ok = value >= gate.floor if higher else value <= gate.floor
    cmp = ">=" if higher else "<="
    reasons.append(f"{metric} {value:.4f} {cmp} floor {gate.floor}: {'yes' if ok else 'no'}")
    if champion is None:
        reasons.append("no champion yet: floor only")
        return Decision(ok, reasons)
    base = champion.get(metric)
    if base is None or base != base:
        reasons.append(f"champion has no {metric}: floor only")
        return Decision(ok, reasons)
    gain = _gain(metric, value, base)
    improved = gain >= gate.min_improvement
    reasons.append(
        f"gain over champion {gain:+.4f} ({value:.4f} vs {base:.4f}) >= "
        f"{gate.min_improvement}: {'yes' if improved else 'no'}"
    )
    return Decision(ok and improved, reasons)


def _gain(metric: str, value: float, base: float) -> float:
    return value - base if models.HIGHER_IS_BETTER[metric] else base - value


def decide(ev: dict[str, Any], gate: Promote) -> Decision:
    """Pure: the gate on an evaluation (``evaluate``'s result): its candidate and champion."""
    champ = ev["champion"]
    return should_promote(
        ev["candidate"]["metrics"], champ["metrics"] if champ else None, gate, ev["metric"]
    )


def gain_of(ev: dict[str, Any]) -> float | None:
    """Pure: the candidate's gain over the champion on the gate metric (positive: better)."""
    metric, champ = ev["metric"], ev["champion"]
    value = ev["candidate"]["metrics"].get(metric)
    base = None if champ is None else champ["metrics"].get(metric)
    if value is None or base is None or value != value or base != base:
        return None
    return _gain(metric, value, base)


def gate_metrics(ev: dict[str, Any], passed: bool) -> dict[str, Any]:
    """Pure: the gate decision for ``dvc metrics`` (``metrics/promote.json``): 1 passed."""
    metric = ev["metric"]
    out: dict[str, Any] = {"passed": int(passed), metric: ev["candidate"]["metrics"].get(metric)}
    g = gain_of(ev)
    if g is not None:
        out["gain"] = g
    return out
