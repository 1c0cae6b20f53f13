"""What the Airflow DAGs call: one function per task, small values in and out.

Each function loads ``params.yaml`` (``MLOPS_PARAMS``, else the project's own), runs one
stage and returns something small enough for XCom. Errors that retrying cannot fix (bad
data, bad configuration, a missing model) are raised as ``AirflowFailException`` so the
task fails at once instead of retrying.

The retraining decision is pure (``plan_retrain``, ``unhandled``, ``approval_outcome``);
``plan`` and ``approval`` only gather its inputs from Airflow and act on the result.
Importing this module imports neither Airflow nor any heavy library.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from mlops import io
from mlops.config import ConfigError, Params, Settings, load_params, settings
from mlops.dagdefaults import DRIFT_BREACH_ALIAS, DRIFT_BREACH_NAME, DRIFT_BREACH_URI

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRAIN_STATE = "retrain.json"
KEEP_DECISIONS = 100


def params_path() -> Path:
    """``MLOPS_PARAMS``, else the params.yaml of the repository holding this package."""
    default = Path(__file__).resolve().parents[1] / "params.yaml"
    return Path(os.environ.get("MLOPS_PARAMS") or default)


def _load() -> tuple[Params, Settings]:
    p = params_path()
    return load_params(p), settings(p)


@contextmanager
def _fail_fast() -> Iterator[None]:
    """Turn errors that a retry cannot fix into AirflowFailException."""
    from mlops.registry import RegistryError
    from mlops.source import SourceError
    from mlops.validate import ValidationFailed

    permanent = (
        ConfigError,
        SourceError,
        RegistryError,
        ValidationFailed,
        FileNotFoundError,
        KeyError,
        ValueError,
    )
    try:
        yield
    except permanent as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc


def _call(fn: Callable[[Params, Settings], T]) -> T:
    with _fail_fast(), warnings.catch_warnings():
        # Loading a scikit-learn model, skops looks up each of its functions in every
        # loaded module; in a task process Airflow's modules answer every lookup with a
        # deprecation FutureWarning: over a thousand lines in each task log.
        warnings.filterwarnings("ignore", category=FutureWarning, module="skops")
        params, st = _load()
        return fn(params, st)


def _skip(reason: str) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(reason)


# --------------------------------------------------------------------------- partitions
def interval_partitions(start: Any, end: Any, freq: str) -> list[str]:
    """Pure: the partitions a data interval covers exactly, oldest first.

    A monthly schedule over monthly partitions gives one; a weekly schedule over daily
    partitions gives seven, which the scoring DAG scores and monitors side by side.

    Raises:
        ValueError: The interval is missing, or does not start and end on ``freq``
            partition boundaries (the schedule does not match ``ingest.partition``).
    """
    import pandas as pd

    if start is None or end is None:
        raise ValueError(
            "this run has no data interval; trigger it with a logical date, for example "
            "from the UI's 'Trigger' form or with `airflow dags trigger -l 2013-08-01 scoring`"
            ", or name the partitions in the run's `partitions` parameter"
        )
    s, e = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    out: list[str] = []
    cur = s
    while cur < e:
        pid = io.partition_for_interval(cur, freq)
        p_start, p_end = io.partition_interval(pid)
        if p_start != cur or p_end > e:
            raise ValueError(
                f"data interval [{s:%Y-%m-%d %H:%M}, {e:%Y-%m-%d %H:%M}) is not made of whole "
                f"{freq} partitions ({pid} is [{p_start:%Y-%m-%d}, {p_end:%Y-%m-%d})); make "
                f"MLOPS_SCORING_CRON match ingest.partition={freq!r}"
            )
        out.append(pid)
        cur = p_end
    if not out:
        raise ValueError(f"data interval [{s}, {e}) is empty: no partition to score")
    return out


def named_partitions(requested: Iterable[str], freq: str) -> list[str]:
    """Pure: partition ids named by a person, checked to be ``freq`` partitions, sorted."""
    out = set()
    for pid in requested:
        start, _ = io.partition_interval(str(pid))  # raises on a malformed id
        if io.partition_for_interval(start, freq) != pid:
            raise ValueError(
                f"partition {pid!r} is not a {freq} partition (ingest.partition={freq!r}); "
                f"name partitions like {io.partition_for_interval(start, freq)!r}"
            )
        out.add(str(pid))
    return sorted(out, key=_start)


def partitions_of(start: Any, end: Any, requested: Iterable[str] | None = None) -> list[str]:
    """The partitions a scoring run covers: ``requested`` when given (the run's
    ``partitions`` parameter: re-scoring or backfilling named partitions), else those of
    its data interval (never 'now')."""

    def pick(p: Params, st: Settings) -> list[str]:
        if requested:
            return named_partitions(requested, p.ingest.partition)
        return interval_partitions(start, end, p.ingest.partition)

    return _call(pick)


def window(params: Params, partitions: list[str] | None) -> Params:
    """Params whose training window is ``partitions`` (unchanged when None or empty)."""
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
    return sorted(partitions)


def train(partitions: list[str]) -> str:
    """Train on ``partitions``; return the registered version."""
    from mlops import train as stage

    return str(_call(lambda p, st: stage.run(window(p, partitions), st))["version"])


def evaluate(partitions: list[str], version: str) -> dict[str, Any]:
    """Candidate against champion on the window's holdout; small summary for XCom."""
    from mlops import evaluate as stage

    out = _call(lambda p, st: stage.run(window(p, partitions), st, version))
    champ = out["champion"]
    return {
        "version": str(version),
        "metric": out["metric"],
        "candidate": out["candidate"]["metrics"].get(out["metric"]),
        "champion": champ["metrics"].get(out["metric"]) if champ else None,
        "champion_version": champ["version"] if champ else None,
    }


def promote(partitions: list[str], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Apply the gate to this run's evaluation; return the decision and when it was made."""
    from mlops import promote as stage

    def run(p: Params, st: Settings) -> dict[str, Any]:
        state = st.state_dir / "evaluate.json"
        evaluated = io.read_json(state)["candidate"]["version"] if state.is_file() else None
        if str(evaluated) != str(evaluation["version"]):
            raise ValueError(
                f"{state} is for version {evaluated}, but this run evaluated "
                f"v{evaluation['version']} (another run wrote it meanwhile); clear and re-run "
                "the evaluate task"
            )
        return stage.run(window(p, partitions), st)

    out = _call(run)
    return {
        "model_name": out["model_name"],
        "version": out["version"],
        "promote": out["promote"],
        "approval": out["approval"],
        "outcome": out["outcome"],
        "at": datetime.now(UTC).isoformat(),
    }


def score(partition: str) -> str:
    """Score one partition (one mapped task per partition); return the partition id."""
    from mlops import score as stage

    out = _call(lambda p, st: stage.run(p, st, partition))
    log.info("scored %s: %s", partition, out["path"])
    return partition


def breach_event(summary: dict[str, Any]) -> dict[str, Any]:
    """Pure: the extra of a drift-breach asset event (what ``plan`` reads back)."""
    return {
        "partition": summary["partition"],
        "reasons": list(summary["reasons"]),
        "report": summary["report"],
        "model_version": summary["model_version"],
    }


def monitor(partition: str, outlet_events: Any = None) -> dict[str, Any]:
    """Drift report for one partition; on a breach only, add a drift-breach asset event."""
    from mlops import monitor as stage

    out = _call(lambda p, st: stage.run_partition(p, st, partition))
    reasons = [str(r) for r in out.get("reasons", [])]
    summary: dict[str, Any] = {
        "partition": partition,
        "breach": bool(out["breach"]),
        "reasons": reasons,
        "report": str(out["html"]),
        "model_version": str(out["model_version"]),
    }
    if not summary["breach"]:
        log.info("no drift breach on %s: no asset event", partition)
        return summary
    if outlet_events is None:
        raise RuntimeError("monitor: a breach needs the task's outlet_events to announce it")
    from airflow.sdk import Asset, AssetAlias

    outlet_events[AssetAlias(DRIFT_BREACH_ALIAS)].add(
        Asset(name=DRIFT_BREACH_NAME, uri=DRIFT_BREACH_URI), extra=breach_event(summary)
    )
    log.warning(
        "drift breach on %s: %s; asset %s updated", partition, "; ".join(reasons), DRIFT_BREACH_URI
    )
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
    """Pure: the ``n`` partitions ending with ``last`` (inclusive), oldest first."""
    import pandas as pd

    start, _ = io.partition_interval(last)
    step = {
        "month": pd.DateOffset(months=1),
        "week": pd.Timedelta(days=7),
        "day": pd.Timedelta(days=1),
    }[freq]
    return [io.partition_for_interval(start - step * i, freq) for i in range(n - 1, -1, -1)]


def _start(pid: str) -> Any:
    return io.partition_interval(pid)[0]


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
) -> Plan:
    """Pure: decide a training run from the unhandled breach events and the cooldown.

    Without breaches, a scheduled or manual run trains the configured window, while a run
    triggered by breach events that an earlier run already handled does nothing. With
    breaches, inside the cooldown after the last breach-driven retrain the run does
    nothing and every breach is skipped with that reason; otherwise one retrain handles
    them all, on a window of the configured length that ends at the newest breached
    partition (or at the configured window's end, when that is later).
    """
    if not breaches:
        if triggered:
            return Plan(
                False,
                [],
                "triggered by drift-breach events that an earlier run "
                "already handled: nothing new to retrain on",
            )
        return Plan(True, sorted(default_window), "scheduled run: configured window")
    parts = sorted({str(b["partition"]) for b in breaches if b.get("partition")}, key=_start)
    label = ", ".join(parts) or f"{len(breaches)} event(s) without a partition"
    if last_retrain is not None and now - last_retrain < cooldown:
        left = cooldown - (now - last_retrain)
        return Plan(
            False,
            [],
            f"cooldown: the last drift retrain was at "
            f"{last_retrain.isoformat(timespec='seconds')}, "
            f"{str(left).split('.')[0]} of the {cooldown.total_seconds() / 3600:g} h cooldown "
            f"(monitor.cooldown_hours) left; skipped breach(es): {label}",
            skipped=parts,
        )
    end = max([*parts, *default_window], key=_start)
    win = previous_partitions(end, len(default_window), freq)
    return Plan(
        True, win, f"drift breach on {label}: retrain on {win[0]}..{win[-1]}", handled=parts
    )


def _event(ev: Any) -> dict[str, Any]:
    return {"id": int(ev.id), "timestamp": ev.timestamp, **(ev.extra or {})}


def plan(inlet_events: Any, run_id: str, triggered: bool) -> list[str]:
    """Plan a training run: its window, or a skip whose reason is logged.

    Every breach event the scoring DAG emitted since the last plan is read through the
    Task SDK (not only this run's triggering events), so events that arrived while an
    earlier run was queued or while this DAG was paused are handled too, or skipped with
    a reason, never lost. The decision is kept per run, so a retried ``plan`` repeats it.
    """
    from airflow.sdk import Asset

    params, st = _load()
    path = st.state_dir / RETRAIN_STATE
    state = io.read_json(path) if path.is_file() else {}
    decisions = state.setdefault("decisions", {})
    if run_id in decisions:
        kept = decisions[run_id]
        decision = Plan(
            kept["run"], kept["partitions"], kept["reason"], kept["handled"], kept["skipped"]
        )
        log.info("plan already decided for run %s: %s", run_id, decision.reason)
    else:
        accessor = inlet_events[Asset(name=DRIFT_BREACH_NAME, uri=DRIFT_BREACH_URI)]
        if state.get("watermark"):
            accessor = accessor.after(datetime.fromisoformat(state["watermark"]))
        new = unhandled(
            [_event(e) for e in accessor], state.get("watermark"), state.get("ids_at_watermark", [])
        )
        last = state.get("last_retrain")
        now = datetime.now(UTC)
        decision = plan_retrain(
            new,
            datetime.fromisoformat(last) if last else None,
            now,
            timedelta(hours=params.monitor.cooldown_hours),
            params.train.partitions,
            params.ingest.partition,
            triggered,
        )
        if new:
            mark = new[-1]["timestamp"]
            state["watermark"] = mark.isoformat()
            state["ids_at_watermark"] = [e["id"] for e in new if e["timestamp"] == mark]
        if decision.run and decision.handled:
            state["last_retrain"] = now.isoformat()
        decisions[run_id] = {
            **asdict(decision),
            "at": now.isoformat(),
            "events": [e["id"] for e in new],
        }
        state["decisions"] = dict(list(decisions.items())[-KEEP_DECISIONS:])
        io.write_json(path, state)
    if not decision.run:
        if decision.skipped:
            log.warning("retrain skipped: %s", decision.reason)
        _skip(decision.reason)
    log.info("retrain planned: %s", decision.reason)
    return decision.partitions


# --------------------------------------------------------------------------- approval
def approval_outcome(
    decision: dict[str, Any], status: str | None, now: datetime, timeout: timedelta
) -> str | None:
    """Pure: where a promotion's approval stands.

    Returns ``not_required`` (the gate failed, or approval mode is auto), ``approved`` or
    ``rejected`` (a person decided), ``expired`` (still pending after ``timeout`` since
    the gate passed), or None (keep waiting).
    """
    from mlops.promote import APPROVED, REJECTED

    if not decision["promote"] or decision["approval"] != "manual":
        return "not_required"
    if status in (APPROVED, REJECTED):
        return status
    if now - datetime.fromisoformat(decision["at"]) >= timeout:
        return "expired"
    return None


def approval(decision: dict[str, Any]) -> Any:
    """Sensor poke: done once the pending version is approved, rejected or expired.

    The timeout is ``promote.approval_timeout_hours`` from params.yaml, counted from the
    promotion decision. Skips when no approval is needed.
    """
    from airflow.sdk import PokeReturnValue

    from mlops import governance

    params, st = _load()
    status = None
    if decision["promote"] and decision["approval"] == "manual":
        with _fail_fast():
            status = governance.approval_status(st, decision["model_name"], decision["version"])
    outcome = approval_outcome(
        decision, status, datetime.now(UTC), timedelta(hours=params.promote.approval_timeout_hours)
    )
    if outcome == "not_required":
        _skip(f"no approval needed: {decision['outcome']}")
    if outcome is None:
        log.info(
            "%s v%s waits for approval (`mlops approve` or the MLflow UI tag %s)",
            decision["model_name"],
            decision["version"],
            governance.TAG_APPROVAL,
        )
    return PokeReturnValue(is_done=outcome is not None, xcom_value=outcome)


def apply_approval(decision: dict[str, Any], outcome: str) -> str:
    """Act on the approval: an approved version becomes champion; otherwise it is retired.

    A rejected or expired version loses the ``challenger`` alias (an expired one is
    tagged so), and the champion stays as it was.
    """
    from mlops import governance

    params, st = _load()
    name, version = decision["model_name"], str(decision["version"])
    with _fail_fast():
        if outcome in ("approved", "rejected"):
            out = governance.complete_approval(st, name, version)
        else:
            hours = params.promote.approval_timeout_hours
            out = governance.expire_approval(st, name, version,
                                             f"no decision within {hours:g} h")
    log.info("%s v%s: %s", name, version, out)
    return out
