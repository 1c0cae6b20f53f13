"""What the Airflow DAGs call: one function per task, small values in and out.

Each function loads ``params.yaml`` (``MLOPS_PARAMS``, else the project's own), runs one
stage and returns something small enough for XCom. Errors that retrying cannot fix (bad
data, bad configuration, a failed gate) are raised as ``AirflowFailException`` so the task
fails at once instead of retrying.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from mlops import io
from mlops.config import ConfigError, Params, Settings, load_params, settings

log = logging.getLogger(__name__)
T = TypeVar("T")
DRIFT_BREACH_URI = "mlops://drift-breach"


def params_path() -> Path:
    return Path(os.environ.get("MLOPS_PARAMS") or Path(__file__).resolve().parents[1] / "params.yaml")


def _load() -> tuple[Params, Settings]:
    p = params_path()
    return load_params(p), settings(p)


@contextmanager
def _fail_fast() -> Iterator[None]:
    """Turn errors that a retry cannot fix into AirflowFailException."""
    from mlops.registry import RegistryError
    from mlops.source import SourceError

    permanent: tuple[type[BaseException], ...] = (ConfigError, SourceError, RegistryError,
                                                  FileNotFoundError, KeyError)
    try:
        from mlops.validate import ValidationFailed

        permanent = (*permanent, ValidationFailed)
    except ImportError:  # pragma: no cover - validate is part of the package
        pass
    try:
        yield
    except permanent as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc


def _call(fn: Callable[[Params, Settings], T]) -> T:
    with _fail_fast():
        params, st = _load()
        return fn(params, st)


def partition_of(interval_start: Any) -> str:
    """The partition a run's data interval covers (never 'now')."""
    params, _ = _load()
    return io.partition_for_interval(interval_start, params.ingest.partition)


def window(params: Params, partitions: list[str] | None) -> Params:
    """Params whose training window is ``partitions`` (unchanged when None)."""
    if not partitions:
        return params
    return params.model_copy(
        update={"train": params.train.model_copy(update={"partitions": sorted(partitions)})}
    )


# --------------------------------------------------------------------------- stages
def ingest(partitions: list[str]) -> list[str]:
    from mlops import ingest as stage

    return sorted(_call(lambda p, st: stage.run(p, st, partitions)))


def validate(partitions: list[str]) -> list[str]:
    from mlops import validate as stage

    return sorted(_call(lambda p, st: stage.run(p, st, partitions)))


def materialize(partitions: list[str]) -> list[str]:
    from mlops import materialize as stage

    _call(lambda p, st: stage.run(p, st, partitions))
    return partitions


def train(partitions: list[str] | None) -> str:
    from mlops import train as stage

    return str(_call(lambda p, st: stage.run(window(p, partitions), st))["version"])


def evaluate(partitions: list[str] | None, version: str) -> dict[str, Any]:
    from mlops import evaluate as stage

    out = _call(lambda p, st: stage.run(window(p, partitions), st, version))
    return {"version": version, "metric": out["metric"],
            "candidate": out["candidate"]["metrics"].get(out["metric"])}


def promote(partitions: list[str] | None) -> dict[str, Any]:
    from mlops import promote as stage

    out = _call(lambda p, st: stage.run(window(p, partitions), st))
    return {"version": out["version"], "promote": out["promote"], "approval": out["approval"],
            "outcome": out["outcome"]}


def score(partition: str) -> str:
    from mlops import score as stage

    return str(_call(lambda p, st: stage.run(p, st, partition))["path"])


def monitor(partition: str, outlet_events: Any = None) -> dict[str, Any]:
    """Drift report for the partition; on a breach, add an event to the breach asset."""
    from mlops import monitor as stage

    out = _call(lambda p, st: stage.run_partition(p, st, partition))
    summary = {"partition": partition, "breach": bool(out["breach"]),
               "reasons": out.get("reasons", []), "report": str(out.get("html", ""))}
    if summary["breach"] and outlet_events is not None:
        from airflow.sdk import Asset, AssetAlias

        outlet_events[AssetAlias("drift-breach-alias")].add(
            Asset(name="drift_breach", uri=DRIFT_BREACH_URI),
            extra={"partition": partition, "reasons": summary["reasons"]},
        )
        log.warning("drift breach on %s: %s", partition, "; ".join(summary["reasons"]))
    else:
        log.info("no drift breach on %s: no event emitted", partition)
    return summary


# --------------------------------------------------------------------------- retraining
@dataclass(frozen=True)
class Plan:
    """What a training run does: which window, or why it does nothing."""

    run: bool
    partitions: list[str]
    reason: str
    handled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def previous_partitions(last: str, n: int, freq: str) -> list[str]:
    """The ``n`` partitions ending with ``last`` (inclusive), oldest first."""
    import pandas as pd

    start, _ = io.partition_interval(last)
    step = {"month": pd.DateOffset(months=1), "week": pd.Timedelta(days=7),
            "day": pd.Timedelta(days=1)}[freq]
    stamps = [start - step * i for i in range(n)][::-1]
    return [io.partition_for_interval(s, freq) for s in stamps]


def plan_retrain(
    breaches: list[dict[str, Any]],
    last_retrain: datetime | None,
    now: datetime,
    cooldown: timedelta,
    default_window: list[str],
    freq: str,
) -> Plan:
    """Pure: decide a training run from the new breach events and the cooldown.

    Without breach events (a scheduled run) the configured window is trained. With
    breaches, the window slides to end at the newest breached partition; inside the
    cooldown after the last retrain, the run does nothing and every breach is skipped
    with that reason.
    """
    parts = sorted({str(b["partition"]) for b in breaches if b.get("partition")})
    if not parts:
        return Plan(True, sorted(default_window), "scheduled run: configured window")
    if last_retrain is not None and now - last_retrain < cooldown:
        left = cooldown - (now - last_retrain)
        return Plan(False, [], f"cooldown: last retrain at {last_retrain.isoformat()}, "
                    f"{left} left", skipped=parts)
    newest = parts[-1]
    win = previous_partitions(newest, len(default_window), freq)
    return Plan(True, win, f"drift breach on {', '.join(parts)}: retrain on {win[0]}..{win[-1]}",
                handled=parts)


def plan(inlet_events: Any = None) -> list[str]:
    """Plan a training run; skip (with the reason logged) inside the cooldown.

    Every breach event since the last plan is read through the Task SDK, including
    events that arrived while an earlier run was queued, so none is silently lost.
    """
    from datetime import UTC

    params, st = _load()
    state_path = st.state_dir / "retrain.json"
    state = io.read_json(state_path) if state_path.is_file() else {}
    seen = int(state.get("last_event_id", 0))
    events = []
    if inlet_events is not None:
        from airflow.sdk import Asset

        for ev in inlet_events[Asset(name="drift_breach", uri=DRIFT_BREACH_URI)]:
            if int(ev.id) > seen:
                events.append({"id": int(ev.id), **(ev.extra or {})})
    last = state.get("last_retrain")
    now = datetime.now(UTC)
    decision = plan_retrain(
        events, datetime.fromisoformat(last) if last else None, now,
        timedelta(hours=params.monitor.cooldown_hours), params.train.partitions,
        params.ingest.partition,
    )
    state["last_event_id"] = max([seen, *[e["id"] for e in events]])
    log_entry = {"at": now.isoformat(), "run": decision.run, "reason": decision.reason,
                 "handled": decision.handled, "skipped": decision.skipped}
    state["log"] = [*state.get("log", [])[-99:], log_entry]
    if decision.run and decision.handled:
        state["last_retrain"] = now.isoformat()
    io.write_json(state_path, state)
    if not decision.run:
        from airflow.sdk.exceptions import AirflowSkipException

        log.warning("retrain skipped: %s; breaches skipped: %s", decision.reason,
                    decision.skipped)
        raise AirflowSkipException(decision.reason)
    log.info("retrain planned: %s", decision.reason)
    return decision.partitions


def approval(version: str) -> bool:
    """Sensor poke: True once the pending version is approved or rejected."""
    from mlops import governance

    params, st = _load()
    status = governance.approval_status(st, params.model_name, version)
    return status in ("approved", "rejected")


def finish_approval(version: str) -> str:
    """After a decision: an approved version becomes champion; a rejected one does not."""
    from mlops import governance

    params, st = _load()
    status = governance.approval_status(st, params.model_name, version)
    if status == "approved":
        mv = governance.get_version(st, params.model_name, version)
        by = mv.tags.get(governance.TAG_APPROVAL_BY, "unknown")
        governance.move_champion(st, params.model_name, version, f"approved by {by}", by=by)
        return f"champion -> v{version}"
    return f"champion unchanged ({status})"
