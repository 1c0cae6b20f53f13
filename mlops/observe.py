"""Pipeline metrics: what each stage run took, did and decided, pushed to a Pushgateway.

Every stage run (the CLI, ``dvc repro`` and each Airflow task) is measured by
:func:`stage`: its duration, outcome and, where the stage knows them, rows in and out.
Inside it, stages add what they decided (:func:`gauge`): validation failures and
quarantines, drift per feature and the breach, the gate's metrics, realised performance.
At the end the samples are pushed to the Prometheus Pushgateway named by
``MLOPS_PUSHGATEWAY_URL``, one group per stage and partition
(``job="mlops", project, stage, partition``), so a replay of many partitions keeps one
series per partition. Without that variable nothing is measured or written.

Pushing never fails a stage: a Pushgateway that cannot be reached is one logged warning,
and the group is kept under ``<state_dir>/metrics/pending/`` and pushed with the next
stage run. Counters (``_total``) and each group's last success are kept in
``<state_dir>/metrics/state.json``, so a push always carries their whole history.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import io, partitions

if TYPE_CHECKING:
    from mlops.config import Params, Settings

log = logging.getLogger(__name__)

ENV = "MLOPS_PUSHGATEWAY_URL"
JOB = "mlops"
ALL = "all"  # the partition label of a run not about exactly one partition
REGISTRY = "registry"  # the group of the champion version, whichever command moved it
TIMEOUT_S = 3.0
KEEP_PENDING = 500  # groups kept while the gateway is down; the oldest go first
# The longest gap between two runs of each default cadence (a month can have 31 days).
CADENCE_S = {
    "day": 86_400,
    "week": 7 * 86_400,
    "month": 31 * 86_400,
    "quarter": 92 * 86_400,
    "year": 366 * 86_400,
}
HELP = {
    "mlops_stage_duration_seconds": "Wall time of the stage's last run.",
    "mlops_stage_success": "1 when the stage's last run succeeded, 0 when it failed.",
    "mlops_stage_last_success_timestamp_seconds": "Unix time of the stage's last success.",
    "mlops_stage_runs_total": "Stage runs, by outcome.",
    "mlops_stage_cpu_seconds": "CPU time of the stage's last run (user and system).",
    "mlops_stage_max_rss_bytes": "Peak resident memory of the process by the stage's end.",
    "mlops_stage_input_rows": "Rows the stage's last run read.",
    "mlops_stage_output_rows": "Rows the stage's last run wrote.",
    "mlops_schedule_interval_seconds": "Longest gap between two scheduled scoring runs.",
    "mlops_validation_failed_expectations": "Expectations the partition failed.",
    "mlops_validation_quarantined": "1 when the partition was quarantined.",
    "mlops_validation_quarantines_total": "Times the partition was quarantined.",
    "mlops_drift_score": "Drift statistic of a feature (the method's value).",
    "mlops_feature_drifted": "1 when the feature drifted.",
    "mlops_drift_share": "Share of features that drifted.",
    "mlops_drifted_features": "Features that drifted.",
    "mlops_prediction_drift_score": "Drift statistic of the prediction.",
    "mlops_prediction_drifted": "1 when the prediction drifted.",
    "mlops_drift_breach": "1 when the drift policy called a breach.",
    "mlops_model_metric": "Holdout metric of the candidate and the champion.",
    "mlops_promotion_gate_passed": "1 when the candidate passed the promotion gate.",
    "mlops_promotion_decision": "1 when the candidate is promoted or awaits approval.",
    "mlops_champion_version": "The champion's version number.",
    "mlops_realised_metric": "Realised gate metric on the outcomes known so far.",
    "mlops_holdout_metric": "Holdout gate metric of the version that scored the partition.",
    "mlops_labelled_rows": "Scored rows whose outcome is known.",
    "mlops_performance_breach": "1 when realised performance breached.",
}


Sample = tuple[str, dict[str, str], float]


@dataclass
class Run:
    """The samples of one stage run, by group: (stage, partition)."""

    stage: str
    partition: str
    labels: dict[str, str]
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)

    def add(
        self,
        name: str,
        value: float,
        labels: dict[str, Any],
        partition: str | None = None,
        group: str | None = None,
    ) -> None:
        """Keep one gauge sample; a non-finite value is left out (Prometheus has no null)."""
        if not math.isfinite(float(value)):
            return
        key = (group or self.stage, partition or self.partition)
        tags = {k: str(v) for k, v in labels.items() if v is not None}
        self.samples.setdefault(key, []).append((name, tags, float(value)))


_current: ContextVar[Run | None] = ContextVar("mlops_observe_run", default=None)


def gauge(
    name: str, value: Any, partition: str | None = None, group: str | None = None, **labels: Any
) -> None:
    """Record ``name`` in the current stage run (a no-op outside one or when not pushing).

    ``partition`` files it under that partition's group (default: the run's);
    ``group`` under another stage name's (the champion version is ``registry``'s, so
    a rollback and a promotion update the same series).
    """
    run = _current.get()
    if run is not None and value is not None:
        run.add(name, float(value), labels, partition, group)


def rows(
    rows_in: int | None = None, rows_out: int | None = None, partition: str | None = None
) -> None:
    """Record the rows the current stage run read and wrote."""
    gauge("mlops_stage_input_rows", rows_in, partition)
    gauge("mlops_stage_output_rows", rows_out, partition)


def champion(version: Any) -> None:
    """Record the champion version after a promotion or rollback."""
    with suppress(TypeError, ValueError):
        gauge("mlops_champion_version", int(str(version)), partition=ALL, group=REGISTRY)


def flag(value: Any) -> float:
    """A decision as a 0/1 gauge value."""
    return 1.0 if value else 0.0


def interval_seconds(params: Params) -> float:
    """The longest gap between two scoring runs of the project's cadence."""
    cron = params.scoring_cron
    for freq, default in partitions.CRON.items():
        if cron == default:
            return float(CADENCE_S[freq])
    from datetime import UTC, datetime

    from croniter import croniter

    it = croniter(cron, datetime(2024, 1, 1, tzinfo=UTC))
    fires = [it.get_next(float) for _ in range(30)]
    return max(b - a for a, b in zip(fires, fires[1:], strict=False))


@contextmanager
def stage(
    params: Params, st: Settings, name: str, partitions: Iterable[str] | None = None
) -> Iterator[Run | None]:
    """Measure one run of stage ``name`` over ``partitions`` and push it when it ends.

    Yields the run (``None`` when no Pushgateway is configured, and nothing is done).
    The stage's error, if any, is re-raised unchanged after its failure is recorded.
    """
    url = os.environ.get(ENV, "").strip()
    if not url or _current.get() is not None:  # a stage inside a stage is the outer's
        yield None
        return
    pids = sorted(set(partitions or []))
    run = Run(
        name,
        pids[0] if len(pids) == 1 else ALL,
        {"model": params.model_name},
    )
    token = _current.set(run)
    t0, cpu0, ok = time.perf_counter(), time.process_time(), False
    try:
        yield run
        ok = True
    finally:
        _current.reset(token)
        try:
            run.add("mlops_stage_duration_seconds", time.perf_counter() - t0, {})
            run.add("mlops_stage_cpu_seconds", time.process_time() - cpu0, {})
            run.add("mlops_stage_max_rss_bytes", _max_rss_bytes(), {})
            run.add("mlops_schedule_interval_seconds", interval_seconds(params), {})
            push(url, st, params.project, run, ok)
        except Exception as exc:  # noqa: BLE001 - metrics never fail a stage
            log.warning("metrics for %s not pushed: %s", name, io.redact(str(exc)))


def _max_rss_bytes() -> float:
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


# --------------------------------------------------------------------------- pushing
def group_path(project: str, stage_name: str, partition: str) -> str:
    """The Pushgateway path of one group (values with '/' or empty are base64-encoded)."""
    parts = [f"job/{JOB}"]
    for key, value in (("project", project), ("stage", stage_name), ("partition", partition)):
        if not value or "/" in value:
            enc = base64.urlsafe_b64encode(value.encode()).decode() or "="
            parts.append(f"{key}@base64/{enc}")
        else:
            parts.append(f"{key}/{value}")
    return "/metrics/" + "/".join(parts)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(samples: list[Sample]) -> str:
    """Samples in Prometheus's text format: one family per name, HELP and TYPE first."""
    lines: list[str] = []
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))
    for name in sorted(by_name):
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} {kind}"]
        seen = {}
        for labels, value in by_name[name]:
            tags = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            seen[tags] = value  # a series recorded twice keeps its last value
        lines += [f"{name}{{{t}}} {v!r}" if t else f"{name} {v!r}" for t, v in seen.items()]
    return "\n".join(lines) + "\n"


def _with_history(st: Settings, project: str, run: Run, ok: bool) -> dict[str, str]:
    """Each group's exposition, counters and last success merged from the kept state."""
    state_path = st.state_dir / "metrics" / "state.json"
    now = time.time()
    bodies = {}
    with io.file_lock(state_path.with_suffix(".lock"), wait=30):
        state = io.read_json(state_path, missing={}, fix="Delete it; counters start again.")
        own = (run.stage, run.partition)
        for (group, partition), samples in {own: [], **run.samples}.items():
            key = group_path(project, group, partition)
            kept = state.setdefault(key, {"runs": {}, "last_success": None, "quarantines": 0})
            extra: list[Sample] = []
            if (group, partition) == own:
                outcome = "success" if ok else "failure"
                kept["runs"][outcome] = kept["runs"].get(outcome, 0) + 1
                if ok:
                    kept["last_success"] = now
                extra.append(("mlops_stage_success", {}, flag(ok)))
                extra += [
                    ("mlops_stage_runs_total", {"outcome": o}, float(kept["runs"].get(o, 0)))
                    for o in ("success", "failure")
                ]
                if kept["last_success"] is not None:
                    extra.append(
                        ("mlops_stage_last_success_timestamp_seconds", {}, kept["last_success"])
                    )
            if any(s[0] == "mlops_validation_quarantined" and s[2] for s in samples):
                kept["quarantines"] += 1
            if group == "validate" and samples:
                extra.append(("mlops_validation_quarantines_total", {}, float(kept["quarantines"])))
            every = [(n, {**run.labels, **lab}, v) for n, lab, v in [*samples, *extra]]
            bodies[key] = exposition(every)
        io.write_json(state_path, state)
    return bodies


def _pending_dir(st: Settings) -> Path:
    return st.state_dir / "metrics" / "pending"


def _send(url: str, path: str, body: str) -> None:
    req = urllib.request.Request(
        url.rstrip("/") + path,
        data=body.encode(),
        method="PUT",
        headers={"Content-Type": "text/plain; version=0.0.4"},
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        resp.read()


def push(url: str, st: Settings, project: str, run: Run, ok: bool) -> int:
    """Push ``run``'s groups and any kept from earlier failed pushes; return groups pushed.

    A group that cannot be pushed is written to the pending folder (replacing an older
    copy of the same group) and retried by the next push; the first failure is logged.
    """
    bodies = _with_history(st, project, run, ok)
    pending = _pending_dir(st)
    queued = (
        sorted(pending.glob("*.json"), key=lambda p: p.stat().st_mtime) if pending.is_dir() else []
    )
    todo: list[tuple[str, str, Path | None]] = []
    for kept in queued:
        with suppress(OSError, ValueError, KeyError):
            item = json.loads(kept.read_text())
            if item["path"] not in bodies:  # this run's copy of a group is newer
                todo.append((item["path"], item["body"], kept))
    todo += [(path, body, None) for path, body in bodies.items()]
    pushed, failed = 0, None
    for path, body, kept_file in todo:
        if failed is None:
            try:
                _send(url, path, body)
                pushed += 1
                # A kept copy of a group this run pushed is older: it must not follow.
                (kept_file or pending / _kept_name(path)).unlink(missing_ok=True)
                continue
            except (OSError, urllib.error.URLError) as exc:
                failed = exc
        if kept_file is None:
            _keep(pending, path, body)
    if failed is not None:
        log.warning(
            "metrics: the Pushgateway at %s did not take the push (%s); %d group(s) kept "
            "in %s for the next push",
            io.redact(url),
            failed,
            len(todo) - pushed,
            pending,
        )
        _trim(pending)
    return pushed


def _kept_name(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:16] + ".json"


def _keep(pending: Path, path: str, body: str) -> None:
    io.write_json(pending / _kept_name(path), {"path": path, "body": body})


def _trim(pending: Path) -> None:
    kept = sorted(pending.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for old in kept[: max(0, len(kept) - KEEP_PENDING)]:
        old.unlink(missing_ok=True)
