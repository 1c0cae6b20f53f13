"""
### training

Trains on the configured window, and retrains when the scoring DAG reports drift.

`plan → ingest → validate → materialize → train → evaluate → promote → approval → apply_approval`

* **One DAG for training and retraining.** It runs on its time schedule,
  `schedule.training` in the project's `params.yaml` (`MLOPS_PARAMS` names it;
  quarterly by default, `null` for breaches only), **and** whenever the `drift_breach`
  asset is updated by `scoring`'s `monitor` task.
* **`plan`** reads every drift-breach event not handled yet. A breach slides the training
  window (same length as `train.partitions`) to end at the breached partition. Within
  `monitor.cooldown_hours` after a drift retrain, the run is skipped and each skipped
  breach is logged with the reason, so a burst of breaches starts one retrain. Decisions
  are kept in `data/state/retrain.json`.
* **`promote`** applies the gate. With `promote.approval: auto` a passing candidate
  becomes `champion` at once and the approval steps are skipped.
* **`approval`**, with `promote.approval: manual`: the candidate waits as `challenger`
  with `mlops.approval.status=pending` in the MLflow registry, and the request appears on
  Airflow's **Required Actions** page with the gate's numbers and links to the model card
  and the MLflow version. Approve or reject it there (with a note), with
  `mlops approve|reject`, or with the tag in the MLflow UI: each ends the wait and lands in
  the same audit record. The task is deferred while it waits (no worker slot held). No
  decision within `promote.approval_timeout_hours`: the request expires. `apply_approval`
  then makes an approved version champion, and otherwise retires the challenger and leaves
  the champion unchanged.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from mlops.airflow import tasks
from mlops.airflow.defaults import (
    DAG_CALLBACKS,
    DEFAULT_ARGS,
    DRIFT_BREACH_NAME,
    DRIFT_BREACH_URI,
    DVC_POOL,
    approval_poke_interval,
    calendar,
)
from mlops.airflow.hitl import Approval

WINDOW_HELP = (
    "Manual runs: the training window, as ingest.partition ids, one per line (e.g. "
    "2013-03 and 2013-04); empty: the configured window, or the one a drift breach decides."
)
CANDIDATES_HELP = (
    "Manual runs: train only these of train.candidates, by name, one per line (e.g. xgb); "
    "empty: all of them."
)
DRIFT_BREACH = Asset(name=DRIFT_BREACH_NAME, uri=DRIFT_BREACH_URI)
# A params.yaml that does not load raises here, naming the file and the key: Airflow
# shows it as this file's import error.
CALENDAR = calendar()
CRON = CALENDAR.training_cron
SCHEDULE = (
    AssetOrTimeSchedule(timetable=CronTriggerTimetable(CRON, timezone="UTC"), assets=[DRIFT_BREACH])
    if CRON
    else [DRIFT_BREACH]
)


@dag(
    dag_id="training",
    schedule=SCHEDULE,
    start_date=CALENDAR.training_start,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    **DAG_CALLBACKS,
    params={
        "partitions": Param(
            None, type=["null", "array"], items={"type": "string"}, description=WINDOW_HELP
        ),
        "candidates": Param(
            None, type=["null", "array"], items={"type": "string"}, description=CANDIDATES_HELP
        ),
    },
    tags=["mlops", "training", "retraining"],
    doc_md=__doc__,
)
def training():
    @task(task_id="plan", inlets=[DRIFT_BREACH])
    def plan(
        inlet_events=None, run_id=None, triggering_asset_events=None, dag_run=None, params=None
    ):
        requested = (params or {}).get("partitions")
        run_type = getattr(dag_run, "run_type", None)
        return tasks.plan(inlet_events, run_id, triggering_asset_events, run_type, requested)

    @task(task_id="ingest", pool=DVC_POOL)
    def ingest(partitions):
        return tasks.ingest(partitions)

    @task(task_id="validate")
    def validate(partitions):
        return tasks.validate(partitions)

    @task(task_id="materialize")
    def materialize(partitions):
        return tasks.materialize(partitions)

    @task(task_id="train")
    def train(partitions, params=None):
        return tasks.train(partitions, (params or {}).get("candidates"))

    @task(task_id="evaluate")
    def evaluate(partitions, version):
        return tasks.evaluate(partitions, version)

    @task(task_id="promote")
    def promote(partitions, evaluation):
        return tasks.promote(partitions, evaluation)

    @task(task_id="apply_approval")
    def apply_approval(decision, outcome):
        return tasks.apply_approval(decision, outcome)

    partitions = materialize(validate(ingest(plan())))
    decision = promote(partitions, evaluate(partitions, train(partitions)))
    approval = Approval(
        task_id="approval", decision=decision, poke_interval=approval_poke_interval()
    )
    apply_approval(decision, approval.output)


training()
