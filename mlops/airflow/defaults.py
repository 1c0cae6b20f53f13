"""What the DAG files share: default arguments, pools, the breach asset and schedules.

Kept out of the DAG files so they only wire tasks. Reads ``config.settings()`` only
(the environment): a DAG file is parsed every few seconds, so nothing here touches a
file, a database or a heavy library.
"""

from __future__ import annotations

from datetime import timedelta

from mlops.config import settings

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
}

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

# The human approval of a manual promotion is polled in reschedule mode (no worker slot
# held between polls). Its timeout is `promote.approval_timeout_hours` from params.yaml,
# applied at run time; this is only the hard stop behind it.
APPROVAL_BACKSTOP = timedelta(days=30)


def approval_poke_interval() -> float:
    """Seconds between approval checks (``MLOPS_APPROVAL_POKE_SECONDS``, default 60)."""
    return settings().approval_poke_s


def training_cron() -> str | None:
    """The training DAG's time schedule (``MLOPS_TRAINING_CRON``); None: breaches only.

    The default is quarterly. ``none`` leaves only the drift-breach trigger.
    """
    return settings().training_cron


def scoring_cron() -> str:
    """The scoring cadence (``MLOPS_SCORING_CRON``); it must match ``ingest.partition``.

    Monthly by default; weekly partitions need a Monday cron such as ``0 0 * * 1``.
    """
    return settings().scoring_cron


def scoring_start() -> str:
    """First data interval of the scoring replay (``MLOPS_SCORING_START``)."""
    return settings().scoring_start


def scoring_end() -> str | None:
    """The DAG's end_date, the last replayed interval (``MLOPS_SCORING_END``; empty: none)."""
    return settings().scoring_end
