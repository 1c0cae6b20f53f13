"""
### scoring

Scores each data interval with the `champion` model, monitors it for drift, and joins
the outcomes that have arrived since to an earlier interval's predictions.

`ingest → validate → materialize → score[partition] → label → monitor[partition]`

* **One run per data interval, with catchup.** The calendar is the `schedule` group of
  the project's `params.yaml` (`MLOPS_PARAMS` names it): the cadence is
  `schedule.scoring`, by default one run per `ingest.partition`; the replay starts at
  `schedule.start`, by default the start of the first `score.partitions` entry, and
  stops after `schedule.end` (none: open-ended). Unpausing the DAG replays that period
  one run at a time. The partitions are the run's data interval, never "now"; the
  cadence must be a whole number of `ingest.partition`s (a weekly cron over daily
  partitions scores seven), else the run fails naming `schedule.scoring`.
* **One `score` and one `monitor` per partition** (dynamic task mapping): an interval of
  several partitions (a weekly run over daily partitions), or a manual run whose
  `partitions` parameter names several (a re-score or backfill), spreads over the
  executor's slots and, with the CeleryExecutor, over the workers.
* **`score`** writes `data/predictions/<partition>.parquet`; every row names the model
  version that scored it.
* **`monitor`** writes the Evidently report `data/reports/<partition>/drift.html` (also
  logged to MLflow). Only when the drift policy (`monitor` in params.yaml) says the
  partition breached does it update the `drift_breach` asset, which starts `training`;
  the event carries the partition and the reasons. No breach, no event.
* **`label`**, after `score` and before `monitor` (a performance breach is announced
  before the new interval's drift), joins the outcomes known by the end of the data
  interval to the predictions of the partitions `labels.delay` intervals back (default
  one: August's run labels July's scores), writes `data/labels/<partition>.parquet` and
  the realised-performance report `data/performance/<partition>/performance.html` (also
  logged to MLflow, and on the model version). When the realised gate metric falls more
  than `monitor.max_performance_drop` below the version's holdout score, or below
  `promote.floor`, it updates the same `drift_breach` asset with kind `performance`,
  which starts `training`. Nothing scored that far back: skipped, and `monitor` runs.
* `max_active_runs=1`: runs share DVC's repository and the online store. `ingest` uses
  the `mlops_dvc` pool, shared with `training`.
"""

from __future__ import annotations

from airflow.sdk import AssetAlias, Param, dag, task

from mlops.airflow import tasks
from mlops.airflow.defaults import (
    DAG_CALLBACKS,
    DEFAULT_ARGS,
    DRIFT_BREACH_ALIAS,
    DVC_POOL,
    calendar,
)
from mlops.airflow.timetable import ReplayTimetable

# A params.yaml that does not load raises here, naming the file and the key: Airflow
# shows it as this file's import error.
CALENDAR = calendar()
PARTITIONS_HELP = (
    "Partitions to score instead of the data interval's, as ingest.partition ids, one per "
    "line (e.g. 2013-08 and 2013-09 for months); empty: the data interval's."
)


@dag(
    dag_id="scoring",
    # schedule.end bounds the schedule, not the DAG (an end_date would drop every task
    # of a manual run whose logical date is later, such as a re-score from the UI).
    schedule=ReplayTimetable(CALENDAR.scoring_cron, "UTC", CALENDAR.scoring_end),
    start_date=CALENDAR.scoring_start,
    catchup=True,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    **DAG_CALLBACKS,
    params={
        "partitions": Param(
            None, type=["null", "array"], items={"type": "string"}, description=PARTITIONS_HELP
        )
    },
    tags=["mlops", "scoring", "monitoring"],
    doc_md=__doc__,
)
def scoring():
    @task(task_id="ingest", pool=DVC_POOL)
    def ingest(data_interval_start=None, data_interval_end=None, params=None):
        wanted = (params or {}).get("partitions")
        return tasks.ingest(tasks.partitions_of(data_interval_start, data_interval_end, wanted))

    @task(task_id="validate")
    def validate(partitions):
        return tasks.validate(partitions)

    @task(task_id="materialize")
    def materialize(partitions):
        return tasks.materialize(partitions)

    @task(task_id="score", map_index_template="{{ partition }}")
    def score(partition):
        return tasks.score(partition)

    # Runs when label found nothing to label (skipped) too; a refused outcome batch stops it.
    @task(
        task_id="monitor",
        outlets=[AssetAlias(DRIFT_BREACH_ALIAS)],
        trigger_rule="none_failed",
        map_index_template="{{ partition }}",
    )
    def monitor(partition, outlet_events=None):
        return tasks.monitor(partition, outlet_events)

    @task(task_id="label", outlets=[AssetAlias(DRIFT_BREACH_ALIAS)])
    def label(partitions, data_interval_end=None, outlet_events=None):
        return tasks.label(tasks.to_label(partitions), data_interval_end, outlet_events)

    partitions = materialize(validate(ingest()))
    scored = score.expand(partition=partitions)
    labelled = label(partitions)
    scored >> labelled >> monitor.expand(partition=scored)


scoring()
