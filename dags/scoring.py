"""
### scoring

Scores each monthly data interval with the `champion` model and monitors drift.

`ingest → validate → materialize → score → monitor`

* Scheduled monthly with `catchup`: unpausing it replays the configured period month by
  month as a backfill. The partition is the run's data interval, never "now".
* `monitor` writes the Evidently report and, only when the drift policy says the
  partition breached, updates the `drift_breach` asset, which starts `training`.
* `max_active_runs=1`: runs share DVC's repository lock and the online store.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import AssetAlias, CronDataIntervalTimetable, dag, task

from mlops.dagdefaults import DEFAULT_ARGS, SERVICE_RETRIES

START = os.environ.get("MLOPS_SCORING_START", "2013-07-01")
END = os.environ.get("MLOPS_SCORING_END", "2013-12-31")


@dag(
    dag_id="scoring",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=pendulum.parse(START),
    end_date=pendulum.parse(END) if END else None,
    catchup=True,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mlops", "scoring", "monitoring"],
    doc_md=__doc__,
)
def scoring():
    @task(task_id="ingest", **SERVICE_RETRIES)
    def ingest(data_interval_start=None):
        from mlops import tasks

        return tasks.ingest([tasks.partition_of(data_interval_start)])

    @task(task_id="validate")
    def validate(partitions):
        from mlops import tasks

        return tasks.validate(partitions)

    @task(task_id="materialize", **SERVICE_RETRIES)
    def materialize(partitions):
        from mlops import tasks

        return tasks.materialize(partitions)

    @task(task_id="score", **SERVICE_RETRIES)
    def score(partitions):
        from mlops import tasks

        return tasks.score(partitions[0])

    @task(task_id="monitor", outlets=[AssetAlias("drift-breach-alias")], **SERVICE_RETRIES)
    def monitor(partitions, predictions, outlet_events=None):
        from mlops import tasks

        return tasks.monitor(partitions[0], outlet_events)

    parts = materialize(validate(ingest()))
    monitor(parts, score(parts))


scoring()
