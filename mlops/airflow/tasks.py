"""What the Airflow DAGs call: one function per task, small values in and out.

Every function goes through one door, ``mlops.airflow.door._call``: it loads
``params.yaml`` and the settings, runs one stage and returns something small enough for
XCom. Errors that retrying cannot fix (bad data, bad configuration, a missing model) are
raised there as ``AirflowFailException``, so the task fails at once instead of retrying.

The decisions are pure and live below this package (``mlops.retrain``,
``mlops.approval.outcome``, ``mlops.partitions``); the functions here only gather their
inputs from Airflow and act on the result. Importing this module imports neither
Airflow nor any heavy library.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from mlops import io, partitions, retrain
from mlops.airflow import notes
from mlops.airflow.defaults import DRIFT_BREACH_ALIAS, DRIFT_BREACH_NAME, DRIFT_BREACH_URI, _utc
from mlops.airflow.door import _call, _skip
from mlops.config import Params, Settings

log = logging.getLogger(__name__)
RETRAIN_STATE = "retrain.json"
RETRAIN_FIX = (
    "Delete it: the next training run rebuilds it from the drift-breach events (those "
    "earlier runs took count as handled, the cooldown runs from the newest of them)."
)
KEEP_DECISIONS = 100


# --------------------------------------------------------------------------- partitions
def partitions_of(start: Any, end: Any, requested: Iterable[str] | None = None) -> list[str]:
    """The partitions a scoring run covers.

    ``requested`` when given (the run's ``partitions`` parameter: re-scoring or
    backfilling named partitions), else those of its data interval (never 'now').
    """

    def pick(p: Params, _st: Settings) -> list[str]:
        if requested:
            return partitions.named(requested, p.ingest.partition)
        pids = partitions.covering(start, end, p.ingest.partition)
        last = p.schedule.end
        if last and pids and partitions.start(pids[0]).to_pydatetime() > _utc(str(last)):
            # Only a manual run gets here (the timetable stops at schedule.end).
            reason = (
                f"nothing to score: the run's interval {pids[0]} is after schedule.end "
                f"{last}; name partitions in the run's `partitions` parameter to re-score"
            )
            notes.add(f"skipped: {reason}")
            _skip(reason)
        return pids

    return _call(pick)


def window(
    params: Params, pids: list[str] | None, candidates: Iterable[str] | None = None
) -> Params:
    """Params whose training window is ``pids`` and, with ``candidates``, only those.

    Unchanged when both are empty. A candidate name that ``train.candidates`` does not
    define raises ValueError naming it and the ones there are.
    """
    update: dict[str, Any] = {}
    if pids:
        update["partitions"] = sorted(pids)
    wanted = list(candidates or [])
    if wanted:
        known = [c.name for c in params.train.candidates]
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise ValueError(
                f"candidates {unknown} are not in train.candidates of {params_file()} "
                f"(there: {known})"
            )
        update["candidates"] = [c for c in params.train.candidates if c.name in wanted]
    if not update:
        return params
    return params.model_copy(update={"train": params.train.model_copy(update=update)})


def params_file() -> str:
    """The params.yaml the tasks read, for messages."""
    from mlops.config import params_path

    return str(params_path())


# --------------------------------------------------------------------------- stages
def ingest(pids: list[str]) -> list[str]:
    """Ingest ``pids``; return them for the next task."""
    from mlops import ingest as stage

    return sorted(_call(lambda p, st: stage.run(p, st, pids), "ingest", pids))


def validate(pids: list[str]) -> list[str]:
    """Validate ``pids``; return those that passed (a failure fails the task)."""
    from mlops import validate as stage

    return sorted(_call(lambda p, st: stage.run(p, st, pids), "validate", pids))


def materialize(pids: list[str]) -> list[str]:
    """Materialise ``pids``; return them for the next task."""
    from mlops import materialize as stage

    _call(lambda p, st: stage.run(p, st, pids), "materialize", pids)
    return sorted(pids)


def train(pids: list[str], candidates: list[str] | None = None) -> str:
    """Train on ``pids`` (only ``candidates``, when named); return the registered version."""
    from mlops import train as stage

    return _call(lambda p, st: stage.run(window(p, pids, candidates), st), "train")["version"]


def evaluate(pids: list[str], version: str) -> dict[str, Any]:
    """Candidate against champion on the window's holdout; small summary for XCom."""
    from mlops import evaluate as stage

    out = _call(lambda p, st: stage.run(window(p, pids), st, version), "evaluate")
    champ = out["champion"]
    return {
        "version": str(version),
        "metric": out["metric"],
        "candidate": out["candidate"]["metrics"].get(out["metric"]),
        "champion": champ["metrics"].get(out["metric"]) if champ else None,
        "champion_version": champ["version"] if champ else None,
    }


def promote(pids: list[str], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Apply the gate to this run's evaluation; return the decision and when it was made."""
    from mlops import promote as stage

    def run(p: Params, st: Settings) -> stage.Promotion:
        state = st.state_dir / "evaluate.json"
        fix = "Clear the evaluate task of this run and re-run it; it writes this file anew."
        evaluated = (
            io.read_json(state, fix=fix)["candidate"]["version"] if state.is_file() else None
        )
        if str(evaluated) != str(evaluation["version"]):
            raise ValueError(
                f"{state} is for version {evaluated}, but this run evaluated "
                f"v{evaluation['version']} (another run wrote it meanwhile); clear and re-run "
                "the evaluate task"
            )
        return stage.run(window(p, pids), st)

    out = _call(run, "promote")
    decision = {
        **{k: out[k] for k in ("model_name", "version", "promote", "approval", "outcome")},
        "at": datetime.now(UTC).isoformat(),
        # What the approver is shown (mlops.airflow.hitl) and the run note says.
        "reasons": [str(r) for r in out["reasons"]],
        **{k: evaluation.get(k) for k in ("metric", "candidate", "champion", "champion_version")},
        "window": sorted(pids),
        "links": dict(out.get("links") or {}),
    }
    from mlops import alerts
    from mlops.airflow import alerts as senders

    if not out["promote"] and "gate failed" in out["outcome"]:
        senders.notify(alerts.gate_failed(out))
    elif out["promote"] and out["approval"] == "manual":
        senders.notify(alerts.approval_pending(out))
    notes.add(notes.gate(decision))
    _links(out)
    return decision


def score(partition: str) -> str:
    """Score one partition (one mapped task per partition); return the partition id."""
    from mlops import score as stage

    out = _call(lambda p, st: stage.run(p, st, partition), "score", [partition])
    log.info("scored %s: %s", partition, out["path"])
    return partition


def monitor(partition: str, outlet_events: Any = None) -> dict[str, Any]:
    """Drift report for one partition; on a breach only, add a drift-breach asset event."""
    from mlops import monitor as stage

    out = _call(lambda p, st: stage.run_partition(p, st, partition), "monitor", [partition])
    summary: dict[str, Any] = {
        "partition": partition,
        "breach": bool(out["breach"]),
        "reasons": [str(r) for r in out["reasons"]],
        "report": str(out["html_path"]),
        "model_version": str(out["model_version"]),
        "kind": "drift",
    }
    if summary["breach"]:
        _announce(summary, outlet_events)
    else:
        log.info("no drift breach on %s: no asset event", partition)
        notes.add(f"{partition}: no drift breach (v{summary['model_version']})")
    _links(out)
    return summary


def to_label(pids: list[str]) -> list[str]:
    """The partitions a scoring run labels: its own, ``labels.delay`` partitions back."""

    def pick(p: Params, _st: Settings) -> list[str]:
        delay = p.labels.delay if p.labels is not None else 1
        return sorted({partitions.shift(pid, -delay, p.ingest.partition) for pid in pids})

    return _call(pick)


def label(pids: list[str], as_of: Any = None, outlet_events: Any = None) -> list[dict[str, Any]]:
    """Join the outcomes known by ``as_of`` to the scored ones of ``pids``; announce breaches.

    A partition that was never scored has nothing to label and is left out (logged);
    when none of ``pids`` was scored the task is skipped. A realised-performance breach
    adds a breach asset event of kind ``performance``, which starts ``training``.
    """
    from mlops import label as stage

    def run(p: Params, st: Settings) -> list[Any]:
        done = []
        for pid in pids:
            if not partitions.file(st.predictions_dir, pid).is_file():
                log.info("label: %s was not scored; nothing to label", pid)
                continue
            done.append(stage.run(p, st, pid, as_of))
        return done

    results = _call(run, "label", pids)
    if not results:
        _skip(f"nothing to label: {', '.join(pids)} not scored")
    out = []
    for r in results:
        perf = r.get("performance") or {}
        summary: dict[str, Any] = {
            "partition": r["partition"],
            "kind": "performance",
            "labelled": int(r["labelled"]),
            "breach": bool(perf.get("breach")),
            "reasons": [str(x) for x in perf.get("reasons", [])],
            "report": str(perf.get("html_path") or perf.get("json_path") or ""),
            "model_version": str(r["model_version"]),
        }
        out.append(summary)
        if summary["breach"]:
            _announce(summary, outlet_events)
    for r in results:
        _links(r.get("performance") or {})
    return out


def _links(result: Any) -> None:
    """End the task's log with where to look: the report, the MLflow run, the timeline."""
    for name, href in (result.get("links") or {}).items():
        log.info("%s: %s", name, href)


def _announce(summary: dict[str, Any], outlet_events: Any) -> None:
    """Add a breach asset event (drift or performance) for ``summary``; alert people."""
    from mlops import alerts
    from mlops.airflow import alerts as senders

    if outlet_events is None:
        raise RuntimeError("a breach needs the task's outlet_events to announce it")
    from airflow.sdk import Asset, AssetAlias

    outlet_events[AssetAlias(DRIFT_BREACH_ALIAS)].add(
        Asset(name=DRIFT_BREACH_NAME, uri=DRIFT_BREACH_URI), extra=retrain.breach_event(summary)
    )
    notes.add(
        f"{summary['partition']}: {summary.get('kind', 'drift')} breach "
        f"({'; '.join(summary['reasons'])}): training starts"
    )
    log.warning(
        "%s breach on %s: %s; asset %s updated",
        summary.get("kind", "drift"),
        summary["partition"],
        "; ".join(summary["reasons"]),
        DRIFT_BREACH_URI,
    )
    senders.notify(alerts.breach(summary))


# --------------------------------------------------------------------------- retraining
def _event(ev: Any) -> dict[str, Any]:
    return {"id": int(ev.id), "timestamp": ev.timestamp, **(ev.extra or {})}


def plan(
    inlet_events: Any,
    run_id: str,
    triggering: Any = None,
    run_type: str | None = None,
    requested: list[str] | None = None,
) -> list[str]:
    """Plan a training run: its window, or a skip whose reason is logged and noted.

    Every breach event the scoring DAG emitted since the last plan is read through the
    Task SDK (not only this run's triggering events, ``triggering``: Airflow's
    ``triggering_asset_events``), so events that arrived while an earlier run was queued
    or while this DAG was paused are handled too, or skipped with a reason, never lost.
    The decision is kept per run, so a retried ``plan`` repeats it. A manual run with
    ``requested`` partitions (its ``partitions`` parameter) trains on them and leaves the
    breach events to the next run.
    """
    if requested:
        pids = _call(lambda p, _st: partitions.named(requested, p.ingest.partition))
        reason = f"manual run: window {pids[0]}..{pids[-1]} (the run's partitions parameter)"
        log.info("retrain planned: %s", reason)
        notes.add(reason)
        return pids
    since = min(
        (e.timestamp for events in (triggering or {}).values() for e in events), default=None
    )
    run = "manual" if str(run_type or "").lower().endswith("manual") else "scheduled"
    decision = _call(lambda p, st: _plan(p, st, inlet_events, run_id, bool(triggering), since, run))
    if not decision.run:
        if decision.skipped or decision.handled:  # a breach that started no retrain
            log.warning("retrain skipped: %s", decision.reason)
        notes.add(f"skipped: {decision.reason}")
        _skip(decision.reason)
    log.info("retrain planned: %s", decision.reason)
    notes.add(f"training: {decision.reason}")
    return decision.partitions


def _plan(
    params: Params,
    st: Settings,
    inlet_events: Any,
    run_id: str,
    triggered: bool,
    pending_since: datetime | None,
    run: str = "scheduled",
) -> retrain.Plan:
    from airflow.sdk import Asset

    path = st.state_dir / RETRAIN_STATE
    lost = not path.is_file()
    state = {} if lost else io.read_json(path, fix=RETRAIN_FIX)
    decisions = state.setdefault("decisions", {})
    if run_id in decisions:
        kept = decisions[run_id]
        log.info("plan already decided for run %s: %s", run_id, kept["reason"])
        return retrain.Plan(
            kept["run"], kept["partitions"], kept["reason"], kept["handled"], kept["skipped"]
        )
    accessor = inlet_events[Asset(name=DRIFT_BREACH_NAME, uri=DRIFT_BREACH_URI)]
    if state.get("watermark"):
        accessor = accessor.after(datetime.fromisoformat(state["watermark"]))
    seen = [_event(e) for e in accessor]
    if lost and seen:
        # Without its state the plan would replay every past breach and skip the cooldown.
        state = retrain.rebuild_state(seen, pending_since)
        decisions = state["decisions"]
        log.warning(
            "%s is missing: rebuilt from %d drift-breach event(s); the ones earlier runs "
            "took count as handled and the cooldown runs from the newest of them (%s)",
            path,
            len(seen),
            state.get("last_retrain") or "none: no earlier event",
        )
    new = retrain.unhandled(seen, state.get("watermark"), state.get("ids_at_watermark", []))
    last = state.get("last_retrain")
    now = datetime.now(UTC)
    decision = retrain.plan_retrain(
        new,
        datetime.fromisoformat(last) if last else None,
        now,
        timedelta(hours=params.monitor.cooldown_hours),
        params.train.partitions,
        params.ingest.partition,
        triggered,
        labelled=lambda pid: _labelled(params, st, pid),
        last_window=state.get("last_window") or params.train.partitions,
        run=run,
    )
    if new:
        mark = new[-1]["timestamp"]
        state["watermark"] = mark.isoformat()
        state["ids_at_watermark"] = [e["id"] for e in new if e["timestamp"] == mark]
    if decision.run and decision.handled:
        state["last_retrain"] = now.isoformat()
        state["last_window"] = decision.partitions
    decisions[run_id] = {
        **asdict(decision),
        "at": now.isoformat(),
        "events": [e["id"] for e in new],
    }
    state["decisions"] = dict(list(decisions.items())[-KEEP_DECISIONS:])
    io.write_json(path, state)
    return decision


def _labelled(params: Params, st: Settings, pid: str) -> bool:
    """Whether any outcome of ``pid`` is known: in its validated rows or its label store."""
    import pyarrow.parquet as pq

    from mlops import outcomes

    if outcomes.path(st, pid).is_file():
        return True
    path = partitions.file(st.validated_dir, pid)
    target = params.contract.target
    if not path.is_file() or target not in pq.read_schema(path).names:
        return False
    column = pq.read_table(path, columns=[target]).column(0)
    return column.null_count < len(column)


# --------------------------------------------------------------------------- approval
def apply_approval(decision: dict[str, Any], outcome: str) -> str:
    """Act on the approval: an approved version becomes champion; otherwise it is retired.

    A rejected or expired version loses the ``challenger`` alias (an expired one is
    tagged so), and the champion stays as it was.
    """
    from mlops import approval as policy

    name, version = decision["model_name"], str(decision["version"])

    def act(p: Params, st: Settings) -> str:
        if outcome in (policy.Outcome.APPROVED, policy.Outcome.REJECTED):
            return policy.complete(st, name, version)
        hours = p.promote.approval_timeout_hours
        return policy.expire(st, name, version, f"no decision within {hours:g} h")

    out = _call(act, "approval")
    log.info("%s v%s: %s", name, version, out)
    notes.add(f"approval of v{version} {outcome}: {out}")
    return out
