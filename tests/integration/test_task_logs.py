"""Task logs on a live Airflow: the stage's summary, no library notices, no false ERROR.

Airflow's task supervisor logs whatever a task writes to stderr at ERROR, and every
library record at INFO reaches the task log. A throwaway Airflow (as in
``test_airflow_loop``) runs one training run and one scoring run on the small weekly
project, and a scoring run that fails; the logs are read through the REST API, as the UI
reads them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FLIGHTS, FLIGHTS_WEEKLY, make_project, merge
from tests.integration.airflow_stack import Api, stack_env, up, wait_for, wait_run

pytestmark = pytest.mark.integration

SCORED = "2013-W03"
# One scoring run, of a week the model was trained on (calm: no breach, no retraining).
PROJECT = merge(
    FLIGHTS_WEEKLY,
    {"schedule": {"training": None, "start": "2013-01-14", "end": "2013-01-14"}},
)
# The last line each stage itself writes (its summary): the adapter's own lines
# (mlops.airflow: asset events, run notes, links) may follow it.
SUMMARY = {
    "validate": r"validate: 3 partition\(s\) in [\d.]+s",
    "train": r"train: [\d,]+ rows, holdout [\d,]+; roc_auc: .* registered flight_delay v1 ",
    "evaluate": r"evaluate: flight_delay v1 roc_auc [\d.]+ .* holdout rows \(2013-W04\)",
    "score": rf"score: {SCORED} [\d,]+ rows with flight_delay v1 at threshold ",
    "monitor": rf"monitor: {SCORED} report file://\S+/drift\.html \| mlflow_run ",
}
# A validate run of three weeks writes about 16 lines, Airflow's own included (with
# Great Expectations' notices, over 220).
MAX_VALIDATE_LINES = 30


def task_log(api: Api, dag: str, ti: dict[str, Any]) -> list[dict[str, Any]]:
    """The structured lines of a task instance's (last) try."""
    path = f"/dags/{dag}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}"
    out = api.get(f"{path}/logs/{ti['try_number']}", map_index=ti.get("map_index", -1))
    return [line for line in out["content"] if isinstance(line, dict)]


def show(lines: list[dict[str, Any]]) -> str:
    return "\n".join(f"{ln.get('level')} {ln.get('logger')}: {ln.get('event')}" for ln in lines)


def stage_lines(lines: list[dict[str, Any]]) -> list[str]:
    """What the stage itself wrote: its printed lines and its package's records."""
    return [
        str(ln["event"])
        for ln in lines
        if ln.get("logger") == "task.stdout"
        or (
            str(ln.get("logger", "")).startswith("mlops.")
            and not str(ln["logger"]).startswith("mlops.airflow")
        )
    ]


def test_task_logs_hold_the_summary_and_no_library_noise(tmp_path: Path) -> None:
    # given a fresh weekly project and a live Airflow on this repo's DAGs
    params_path = make_project(tmp_path / "proj", FLIGHTS, PROJECT)
    stack, api = up(stack_env(params_path, tmp_path / "airflow"))
    try:
        # when a training run trains the first champion (one candidate: the logs are
        # what is tested, not the comparison)
        api.patch("/dags/training", {"is_paused": False})
        api.trigger("training", "logs", {"candidates": ["xgb"]})
        training = wait_run(api, stack, "training", "logs", 600)
        assert training["state"] == "success", api.failure("training", "logs")
        # and the scoring DAG, unpaused, scores its one week with it
        api.patch("/dags/scoring", {"is_paused": False})
        # and a manual scoring run names a partition that is not a week: its ingest fails
        api.trigger("scoring", "bad", {"partitions": ["2013-01"]})
        scoring = wait_for(
            f"the scoring run of {SCORED}",
            lambda: next(
                (
                    r
                    for r in api.runs("scoring")
                    if r["run_type"] == "scheduled" and r["state"] in ("success", "failed")
                ),
                None,
            ),
            420,
            stack,
        )
        assert scoring["state"] == "success", api.failure("scoring", scoring["dag_run_id"])
        assert wait_run(api, stack, "scoring", "bad", 180)["state"] == "failed"
        failed = task_log(api, "scoring", api.tis("scoring", "bad")["ingest"])
        logs: dict[str, list[dict[str, Any]]] = {}
        for dag, run in (("training", "logs"), ("scoring", scoring["dag_run_id"])):
            for ti in api.all_tis(dag, run):
                if ti["try_number"]:
                    logs[f"{dag}.{ti['task_id']}[{ti.get('map_index', -1)}]"] = task_log(
                        api, dag, ti
                    )
    finally:
        stack.stop(grace=5)

    # then the failed task's log shows its error, with the traceback, at ERROR
    errors = [str(ln.get("event")) for ln in failed if ln.get("level") == "error"]
    assert [e for e in errors if "Traceback" in e and "is not a week partition" in e], show(failed)

    # and no log of a task that did not fail holds a line at ERROR (stderr is logged so)
    assert {"training.validate[-1]", "scoring.score[0]", "scoring.monitor[0]"} <= set(logs)
    for name, lines in logs.items():
        bad = [ln for ln in lines if ln.get("level") in ("error", "critical")]
        bad += [ln for ln in lines if ln.get("logger") == "task.stderr"]
        assert not bad, f"{name}:\n{show(bad)}"

    # and the validate log is short: not one line from Great Expectations, nor a bar
    validate = logs["training.validate[-1]"]
    gx = [ln for ln in validate if str(ln.get("logger", "")).startswith("great_expectations")]
    assert gx == [], show(gx)
    assert not [ln for ln in validate if "%|" in str(ln.get("event"))], show(validate)
    assert len(validate) <= MAX_VALIDATE_LINES, show(validate)
    # (Great Expectations' notices went to the project's log file instead)
    details = (params_path.parent / "data/state/logs/mlops.log").read_text()
    assert " great_expectations" in details

    # and no log holds a library's notice (below WARNING): Airflow's lines and ours only
    for name, lines in logs.items():
        notices = [
            ln
            for ln in lines
            if ln.get("level") in ("debug", "info")
            and not str(ln.get("logger")).startswith(("airflow", "task", "mlops"))
        ]
        assert notices == [], f"{name}:\n{show(notices)}"

    # and in every stage's log, the last line the stage wrote is its summary
    for name, stage in (
        ("training.validate[-1]", "validate"),
        ("training.train[-1]", "train"),
        ("training.evaluate[-1]", "evaluate"),
        ("scoring.score[0]", "score"),
        ("scoring.monitor[0]", "monitor"),
    ):
        own = stage_lines(logs[name])
        assert own and re.match(SUMMARY[stage], own[-1]), f"{name}:\n{show(logs[name])}"
    # (the monitor's summary is its decision, then the links to the report)
    decision = stage_lines(logs["scoring.monitor[0]"])[-2]
    assert re.match(rf"monitor: {SCORED} drift \d+/\d+ features", decision), decision
