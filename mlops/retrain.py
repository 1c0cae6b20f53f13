"""The retraining policy: which drift-breach events are new, and what a training run does.

Pure functions of their inputs; the Airflow adapter gathers the events and the state,
calls ``plan_retrain`` and acts on the ``Plan``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mlops import partitions


@dataclass(frozen=True)
class Plan:
    """What a training run does: which window, or why it does nothing."""

    run: bool
    partitions: list[str]
    reason: str
    handled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def unhandled(
    events: Iterable[dict[str, Any]], watermark: str | None, ids_at_watermark: Iterable[int]
) -> list[dict[str, Any]]:
    """Pure: the events not yet handled, oldest first.

    An event is handled when it is older than the watermark (the newest handled event's
    timestamp) or is one of the events at exactly that timestamp. Timestamps rather than
    ids alone, so that a reset Airflow database does not hide new events.
    """
    seen = set(ids_at_watermark)
    mark = datetime.fromisoformat(watermark) if watermark else None
    out = [
        e
        for e in events
        if mark is None or e["timestamp"] > mark or (e["timestamp"] == mark and e["id"] not in seen)
    ]
    return sorted(out, key=lambda e: (e["timestamp"], e["id"]))


def plan_retrain(
    breaches: list[dict[str, Any]],
    last_retrain: datetime | None,
    now: datetime,
    cooldown: timedelta,
    default_window: list[str],
    freq: str,
    triggered: bool = False,
    labelled: Callable[[str], bool] | None = None,
    last_window: list[str] | None = None,
    run: str = "scheduled",
) -> Plan:
    """Pure: decide a training run from the unhandled breach events and the cooldown.

    Without breaches, a scheduled or manual run trains the configured window, while a run
    triggered by breach events that an earlier run already handled does nothing. With
    breaches, inside the cooldown after the last breach-driven retrain the run does
    nothing and every breach is skipped with that reason; otherwise one retrain handles
    them all, on a window of the configured length that ends at the newest breached
    partition (or at the configured window's end, when that is later).

    Breaches come from drift (the inputs or outputs moved) or from performance (the
    realised metric on labelled outcomes fell); each event says which (``kind``, drift
    when absent). A model can only learn from partitions whose outcomes have arrived:
    with ``labelled`` the window ends at the newest labelled partition at or before that
    end, and when the breached partition's outcomes are missing and that leaves
    ``last_window`` (the window of the last breach-driven retrain) unchanged, the run does
    nothing (no new outcomes to learn from) and the breaches are handled without starting
    the cooldown. ``run`` names the run in the reason (scheduled or manual).
    """
    if not breaches:
        if triggered:
            return Plan(
                False,
                [],
                "triggered by drift-breach events that an earlier run "
                "already handled: nothing new to retrain on",
            )
        return Plan(True, sorted(default_window), f"{run} run: configured window")
    parts = sorted(
        {str(b["partition"]) for b in breaches if b.get("partition")}, key=partitions.start
    )
    kinds = sorted({str(b.get("kind") or "drift") for b in breaches})
    label = ", ".join(parts) or f"{len(breaches)} event(s) without a partition"
    what = " and ".join(kinds)
    if last_retrain is not None and now - last_retrain < cooldown:
        left = cooldown - (now - last_retrain)
        return Plan(
            False,
            [],
            f"cooldown: the last breach retrain was at "
            f"{last_retrain.isoformat(timespec='seconds')}, "
            f"{str(left).split('.')[0]} of the {cooldown.total_seconds() / 3600:g} h cooldown "
            f"(monitor.cooldown_hours) left; skipped {what} breach(es): {label}",
            skipped=parts,
        )
    end = max([*parts, *default_window], key=partitions.start)
    waiting = ""
    if labelled is not None:
        floor = max(default_window, key=partitions.start)
        newest = end
        while partitions.start(end) > partitions.start(floor) and not labelled(end):
            end = partitions.shift(end, -1, freq)
        if end != newest:
            waiting = f" (outcomes have arrived up to {end}, not for {newest})"
    win = partitions.previous(end, len(default_window), freq)
    if waiting and last_window and sorted(last_window) == win:
        return Plan(
            False,
            [],
            f"{what} breach on {label}: no outcomes newer than the last retrain's window "
            f"{win[0]}..{win[-1]}{waiting}; the next retrain waits for them (`mlops label`)",
            handled=parts,
        )
    return Plan(
        True,
        win,
        f"{what} breach on {label}{waiting}: retrain on {win[0]}..{win[-1]}",
        handled=parts,
    )


def breach_event(summary: dict[str, Any]) -> dict[str, Any]:
    """Pure: the extra of a breach asset event (what ``plan_retrain`` reads back).

    ``kind`` is ``drift`` or ``performance``.
    """
    return {
        "partition": summary["partition"],
        "kind": summary.get("kind", "drift"),
        "reasons": list(summary["reasons"]),
        "report": summary["report"],
        "model_version": summary["model_version"],
    }


def rebuild_state(events: list[dict[str, Any]], pending_since: datetime | None) -> dict[str, Any]:
    """Pure: the retraining state of a lost ``retrain.json``, from the breach events alone.

    ``pending_since`` is the time of the oldest event that triggered this run (None for a
    run no event triggered). Airflow hands a run only the events queued since the last
    run it triggered, so every event before ``pending_since`` (every event, for a run no
    event triggered) was taken by an earlier run: it counts as handled, and the newest of
    them as the last retrain, so the cooldown runs from it (never "no cooldown"). With no
    earlier event (the first breach ever) nothing was handled and no cooldown applies.
    """
    handled = sorted(
        (e for e in events if pending_since is None or e["timestamp"] < pending_since),
        key=lambda e: (e["timestamp"], e["id"]),
    )
    state: dict[str, Any] = {"decisions": {}}
    if handled:
        mark = handled[-1]["timestamp"]
        state["last_retrain"] = mark.isoformat()
        state["watermark"] = mark.isoformat()
        state["ids_at_watermark"] = [e["id"] for e in handled if e["timestamp"] == mark]
    return state
