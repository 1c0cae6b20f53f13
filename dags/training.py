"""
### training

Trains on the configured window, or retrains after a drift breach.

`plan → ingest → validate → materialize → train → evaluate → promote → approval → finish`

* Runs quarterly **and** whenever the `drift_breach` asset is updated by the scoring DAG
  (this one DAG is both the training and the retraining DAG).
* On a breach the training window slides to end at the breached partition. Inside the
  cooldown (`monitor.cooldown_hours`) after a retrain, `plan` skips the run and logs
  every skipped breach with its reason, so a burst of breaches starts one retrain.
* With `promote.approval: manual` the candidate waits as `challenger` with a pending tag;
  `approval` waits in reschedule mode (no worker slot held) until it is approved or
  rejected in the MLflow UI or with `mlops approve/reject`, or times out and leaves the
  champion unchanged.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from mlops.dagdefaults import APPROVAL_TIMEOUT, DEFAULT_ARGS, SERVICE_RETRIES

DRIFT_BREACH = Asset(name="drift_breach", uri="mlops://drift-breach")


@dag(
    dag_id="training",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 1 */3 *", timezone="UTC"), assets=[DRIFT_BREACH]
    ),
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["mlops", "training"],
    doc_md=__doc__,
)
def training():
    @task(task_id="plan", inlets=[DRIFT_BREACH])
    def plan(inlet_events=None):
        from mlops import tasks

        return tasks.plan(inlet_events)

    @task(task_id="ingest", **SERVICE_RETRIES)
    def ingest(partitions):
        from mlops import tasks

        return tasks.ingest(partitions)

    @task(task_id="validate")
    def validate(partitions):
        from mlops import tasks

        return tasks.validate(partitions)

    @task(task_id="materialize", **SERVICE_RETRIES)
    def materialize(partitions):
        from mlops import tasks

        return tasks.materialize(partitions)

    @task(task_id="train", **SERVICE_RETRIES)
    def train(partitions):
        from mlops import tasks

        return tasks.train(partitions)

    @task(task_id="evaluate", **SERVICE_RETRIES)
    def evaluate(partitions, version):
        from mlops import tasks

        return tasks.evaluate(partitions, version)

    @task(task_id="promote", **SERVICE_RETRIES)
    def promote(partitions, evaluation):
        from mlops import tasks

        return tasks.promote(partitions)

    @task.sensor(task_id="approval", mode="reschedule", poke_interval=30,
                 timeout=APPROVAL_TIMEOUT, soft_fail=True)
    def approval(decision):
        from mlops import tasks

        if not decision["promote"] or decision["approval"] != "manual":
            return True
        return tasks.approval(decision["version"])

    @task(task_id="finish", **SERVICE_RETRIES)
    def finish(decision):
        from mlops import tasks

        if not decision["promote"] or decision["approval"] != "manual":
            return decision["outcome"]
        return tasks.finish_approval(decision["version"])

    window = plan()
    checked = materialize(validate(ingest(window)))
    version = train(checked)
    decision = promote(window, evaluate(window, version))
    approval(decision) >> finish(decision)


training()
