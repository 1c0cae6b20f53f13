"""The realised metrics' kernels: classification and regression metrics of plain arrays.

Ranking metrics read the rows sorted by score once (``mlops.performance`` sorts, and
groups slices without sorting again), and every kernel steps through ``CHUNK`` rows at a
time, so their scratch memory stays flat however many rows are labelled. They give
sklearn's values: ties form one step, log loss clips as ``models.metrics`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np

CALIBRATION_BINS = 10
LOG_LOSS_EPS = 1e-7  # as models.metrics clips, so realised and holdout log loss compare
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
CHUNK = 1 << 18  # rows per step: the kernels' scratch memory stays flat


def _chunks(n: int) -> Iterator[slice]:
    return (slice(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK))


def _ties_kept(p: np.ndarray) -> Iterator[slice]:
    """Spans of about ``CHUNK`` rows of sorted ``p`` that never split a run of equal values."""
    import numpy as np

    start, n, size = 0, len(p), CHUNK
    while start < n:
        end = min(start + size, n)
        if end < n:
            end = int(np.searchsorted(p, p[end - 1], side="right"))
        yield slice(start, end)
        start = end


def _ranking(y: np.ndarray, p: np.ndarray) -> tuple[float, float] | None:
    """ROC AUC and average precision of ``p`` sorted ascending (``y`` aligned), as sklearn.

    Equal scores form one step (AUC counts a tied pair as half, AP takes one threshold);
    None with one class only. Span by span, so memory does not grow with the rows.
    """
    import numpy as np

    n, n1 = len(y), int(np.count_nonzero(y))
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        return None
    pairs = ap = 0.0
    passed = 0  # positives below the span
    for span in _ties_kept(p):
        ps, ys = p[span], y[span]
        new = np.empty(len(ps), dtype=bool)
        new[0] = True
        np.not_equal(ps[1:], ps[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        pos = np.add.reduceat(ys, starts, dtype=np.int64)
        neg = np.diff(starts, append=len(ps)) - pos
        below = np.cumsum(pos) - pos + passed  # positives under each distinct score
        at = starts + span.start  # rows under each distinct score
        # Each positive outranks the negatives under its score and ties half of those at it.
        pairs += float(np.dot(pos, (at - below) + 0.5 * neg))
        # Thresholds from the top: at score g, the positives not under it are predicted so.
        ap += float(np.dot(pos, (n1 - below) / (n - at)))
        passed += int(pos.sum())
    return pairs / (n1 * n0), ap / n1


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def binary(y: np.ndarray, p: np.ndarray, label: np.ndarray) -> tuple[dict[str, Any], list[str]]:
    """Classification metrics of rows sorted by ``p`` ascending; notes on what is undefined."""
    import numpy as np

    n = len(y)
    counts = np.zeros(4, dtype=np.int64)
    log_loss = brier = 0.0
    for part in _chunks(n):
        ys, ps = y[part], p[part]
        counts += np.bincount(2 * ys + label[part], minlength=4)
        clipped = np.clip(ps, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
        hit = ys == 1
        log_loss -= float(np.log(clipped[hit]).sum() + np.log1p(-clipped[~hit]).sum())
        brier += float(np.square(ps - ys).sum())
    tn, fp, fn, tp = (int(v) for v in counts)
    ranked = _ranking(y, p)
    out: dict[str, Any] = {
        "rows": n,
        "positive_rate": (tp + fn) / n,
        "predicted_positive_rate": (tp + fp) / n,
        "mean_prediction": float(p.mean()),
        "roc_auc": None if ranked is None else ranked[0],
        "average_precision": None if ranked is None else ranked[1],
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": (tp + tn) / n,
        "brier": brier / n,
        "log_loss": log_loss / n,
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }
    notes = []
    if ranked is None:
        only = "positive" if tp + fn else "negative"
        notes.append(
            f"roc_auc and average_precision need both classes; all {n:,} labelled rows are {only}"
        )
    if tp + fp == 0:
        notes.append("precision is undefined: no row is predicted positive")
    if tp + fn == 0:
        notes.append("recall is undefined: no row is positive")
    return out, notes


def calibration(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Mean predicted probability against the observed rate in ``bins`` equal-width bins.

    Also the expected calibration error: the row-weighted mean gap between the two.
    """
    import numpy as np

    rows, sum_p, sum_y = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for part in _chunks(len(p)):
        idx = np.minimum((p[part] * bins).astype(np.int64), bins - 1)
        rows += np.bincount(idx, minlength=bins)
        sum_p += np.bincount(idx, weights=p[part], minlength=bins)
        sum_y += np.bincount(idx, weights=y[part], minlength=bins)
    table = []
    for b in range(bins):
        k = int(rows[b])
        table.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "rows": k,
                "mean_predicted": float(sum_p[b] / k) if k else None,
                "observed_rate": float(sum_y[b] / k) if k else None,
            }
        )
    ece = float(np.abs(sum_p - sum_y).sum() / len(p)) if len(p) else None
    return {"bins": table, "ece": ece}


def regression(y: np.ndarray, pred: np.ndarray) -> tuple[dict[str, Any], list[str]]:
    """Regression metrics and the residuals' summary; a note when R² is undefined."""
    import numpy as np

    n = len(y)
    resid = y - pred
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    notes = [] if ss_tot > 0 else [f"r2 is undefined: the target is constant on all {n:,} rows"]
    qs = np.quantile(resid, QUANTILES)
    return {
        "rows": n,
        "mean_prediction": float(pred.mean()),
        "mean_target": float(y.mean()),
        "rmse": float(np.sqrt(np.mean(resid**2))),
        "mae": float(np.mean(np.abs(resid))),
        "r2": 1 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else None,
        "residuals": {
            "mean": float(resid.mean()),
            "std": float(resid.std()),
            **{f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
        },
    }, notes
