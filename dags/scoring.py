"""
### scoring

Scores each data interval with the `champion` model, then monitors it for drift.

`ingest → validate → materialize → score → monitor`

* **Monthly with catchup.** Unpausing the DAG replays the period from
  `MLOPS_SCORING_START` (2013-07-01) to `MLOPS_SCORING_END` (2013-12-31) month by month,
  one run at a time. The partition is the run's data interval, never "now"; the cadence
  (`MLOPS_SCORING_CRON`) must match `ingest.partition` in params.yaml.
* **`score`** writes `data/predictions/<partition>.parquet`; every row names the model
  version that scored it.
* **`monitor`** writes the Evidently report `data/reports/<partition>/drift.html` (also
  logged to MLflow). Only when the drift policy (`monitor` in params.yaml) says the
  partition breached does it update the `drift_breach` asset, which starts `training`;
  the event carries the partition and the reasons. No breach, no event.
* `max_active_runs=1`: runs share DVC's repository and the online store. `ingest` uses
  the `mlops_dvc` pool, shared with `training`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetAlias, CronDataIntervalTimetable, dag, task

from mlops import tasks
from mlops.dagdefaults import (
    DEFAULT_ARGS,
    DRIFT_BREACH_ALIAS,
    DVC_POOL,
    SERVICE_RETRIES,
    scoring_cron,
    scoring_end,
    scoring_start,
)

END = scoring_end()


@dag(
    dag_id="scoring",
    schedule=CronDataIntervalTimetable(scoring_cron(), timezone="UTC"),
    start_date=pendulum.parse(scoring_start(), tz="UTC"),
    end_date=pendulum.parse(END, tz="UTC") if END else None,
    catchup=True,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mlops", "scoring", "monitoring"],
    doc_md=__doc__,
)
def scoring():
    @task(task_id="ingest", pool=DVC_POOL, **SERVICE_RETRIES)
    def ingest(data_interval_start=None, data_interval_end=None):
        return tasks.ingest(tasks.partition_of(data_interval_start, data_interval_end))

    @task(task_id="validate")
    def validate(partitions):
        return tasks.validate(partitions)

    @task(task_id="materialize", **SERVICE_RETRIES)
    def materialize(partitions):
        return tasks.materialize(partitions)

    @task(task_id="score", **SERVICE_RETRIES)
    def score(partitions):
        return tasks.score(partitions)

    @task(task_id="monitor", outlets=[AssetAlias(DRIFT_BREACH_ALIAS)], **SERVICE_RETRIES)
    def monitor(partitions, outlet_events=None):
        return tasks.monitor(partitions, outlet_events)

    partitions = materialize(validate(ingest()))
    score(partitions) >> monitor(partitions)


scoring()
