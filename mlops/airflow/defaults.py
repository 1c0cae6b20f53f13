"""What the DAG files share: default arguments and callbacks, pools, assets, schedules.

Kept out of the DAG files so they only wire tasks. A DAG file is parsed every few
seconds, so nothing here touches a database or imports Airflow or a heavy library: the
schedules come from the project's ``params.yaml`` (YAML and pydantic, a few
milliseconds), the approval poke interval from the environment, and the failure
callbacks import the alert senders only when they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops import partitions
from mlops.config import ENV_PARAMS, ConfigError, load_params, params_path, settings


def on_task_failure(context: Any) -> None:
    """A task failed after its last try: alert (``mlops.airflow.alerts``, imported here)."""
    from mlops.airflow import alerts

    alerts.on_task_failure(context)


def on_dag_failure(context: Any) -> None:
    """A DAG run failed: alert (``mlops.airflow.alerts``, imported here)."""
    from mlops.airflow import alerts

    alerts.on_dag_failure(context)


# Every step retries with exponential back-off: a lost worker, a killed process or a
# service that is briefly down is worth another try. Errors that a retry cannot fix (bad
# data, bad configuration, a missing model) are raised as AirflowFailException by
# mlops.airflow.tasks, which fails the task at once whatever its retries.
DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 3,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(hours=2),
    # After the last try only; a failed send is logged and never fails the task.
    "on_failure_callback": on_task_failure,
}

# What each ``@dag(...)`` adds: ``@dag(..., **DAG_CALLBACKS)``. A failed run alerts; the
# DAG processor runs this under a scheduler (``dag.test()`` runs it in its own process).
DAG_CALLBACKS = {"on_failure_callback": on_dag_failure}

# Pools the DAGs use; `python -m mlops.airflow.local` creates them. A task naming a pool
# that does not exist stays scheduled forever.
DVC_POOL = "mlops_dvc"
POOLS = {DVC_POOL: (1, "DVC repository of the project: one writer at a time (ingest)")}

# The asset the monitor updates on a drift breach, and the alias it emits it through:
# an alias outlet emits nothing unless the task adds an event, so a partition that did
# not breach leaves no event while `monitor` still succeeds.
DRIFT_BREACH_NAME = "drift_breach"
DRIFT_BREACH_URI = "mlops://drift-breach"
DRIFT_BREACH_ALIAS = "drift-breach-alias"


# While a manual promotion waits on Airflow's Required Actions page, its trigger also
# checks the registry for a decision made with the CLI or in the MLflow UI this often.
def approval_poke_interval() -> float:
    """Seconds between registry checks (``MLOPS_APPROVAL_POKE_SECONDS``, default 60)."""
    return settings().approval_poke_s


# Airflow resolves this preset itself; croniter, which validates the rest, does not know it.
_CRON_PRESETS = {"@quarterly": "0 0 1 */3 *"}


@dataclass(frozen=True)
class Calendar:
    """When the DAGs run, from the ``schedule`` group of the project's params.yaml.

    Attributes:
        training_cron: The training DAG's cron (``schedule.training``); None: only drift
            breaches start it.
        training_start: The training DAG's start_date: the start of the first training
            partition (with ``catchup=False`` it only has to lie in the past).
        scoring_cron: The scoring cadence (``schedule.scoring``, else one run per
            ``ingest.partition``).
        scoring_start: The first data interval scored (``schedule.start``, else the start
            of the first score partition).
        scoring_end: The scoring DAG's end_date (``schedule.end``); None: open-ended.
        source: The params.yaml read.
    """

    training_cron: str | None
    training_start: datetime
    scoring_cron: str
    scoring_start: datetime
    scoring_end: datetime | None
    source: Path


def calendar(path: str | Path | None = None) -> Calendar:
    """Read the DAGs' calendar from params.yaml (``path``, else ``MLOPS_PARAMS``).

    Raises:
        ConfigError: params.yaml does not load, a cron in ``schedule`` is not one, or
            ``schedule.end`` comes before the start; the message names the file and the
            key. Raised while a DAG file is parsed, it is the import error Airflow shows
            for that file.
    """
    source = params_path(path).resolve()
    try:
        params = load_params(source)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}\n(the DAGs take their schedule from this file; {ENV_PARAMS} names it)"
        ) from None
    training = params.schedule.training
    first_trained = min(params.train.partitions, key=partitions.sort_key)
    start = _utc(params.scoring_start)
    end = None if params.schedule.end is None else _utc(params.schedule.end)
    if end is not None and end < start:
        origin = "schedule.start" if params.schedule.start else "the first score partition"
        raise ConfigError(
            f"{source}: schedule.end {params.schedule.end} is before the first scored "
            f"interval, {start:%Y-%m-%d} ({origin}); move schedule.end later, or set it "
            "to null for an open-ended schedule"
        )
    return Calendar(
        training_cron=None if training is None else _cron(training, "schedule.training", source),
        training_start=partitions.sort_key(first_trained),
        scoring_cron=_cron(params.scoring_cron, "schedule.scoring", source),
        scoring_start=start,
        scoring_end=end,
        source=source,
    )


def _cron(expression: str, key: str, source: Path) -> str:
    """``expression`` if it is a cron Airflow accepts; else a ConfigError naming ``key``."""
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    try:
        croniter(_CRON_PRESETS.get(expression, expression))
    except (CroniterBadCronError, CroniterBadDateError, ValueError) as exc:
        hint = "; null: only drift breaches start training" if key == "schedule.training" else ""
        reason = str(exc).rstrip(".")
        raise ConfigError(
            f"{source}: {key} {expression!r} is not a cron expression ({reason}); write "
            f"five fields such as '0 0 1 * *' (minute hour day month weekday){hint}"
        ) from None
    return expression


def _utc(value: str) -> datetime:
    """An ISO date or datetime from params.yaml, in UTC (naive values are UTC)."""
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
