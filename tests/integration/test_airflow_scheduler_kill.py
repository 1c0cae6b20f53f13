"""kill -9 of the Airflow scheduler in the middle of a scoring run, then a restart.

A throwaway Airflow (API server, scheduler, DAG processor, triggerer, LocalExecutor,
SQLite) runs this repo's DAGs on a small project whose champion was trained on three
January weeks; unpausing `scoring` scores one week, 2013-W04 (a cold snap: drift). While
its `score` task runs, or its `monitor` task (the one that emits the drift-breach
event), the scheduler and every process it started, the task processes of the
LocalExecutor included, are SIGKILLed, as when its container or host dies; or the
scheduler's own process alone, as ``kill -9 <pid>`` does. The same command with the
same environment starts it again. Everything is driven and read
through the REST API, as an external client would.

Airflow gives a running task of a dead scheduler back to the scheduler (resets it, its
try recorded as failed) once the dead scheduler's heartbeat is older than
``[scheduler] scheduler_health_check_threshold`` (30 s), at the next orphan check,
``[scheduler] orphaned_tasks_check_interval``: 300 s by default, 5 s here, so that the
test ends in minutes. Task heartbeats do not help: a scheduler only times out the tasks
that it queued itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlops import io, partitions
from mlops.airflow import stack as airflow_stack
from mlops.config import settings
from tests.conftest import FLIGHTS, FLIGHTS_WEEKLY, REPO, make_project, merge
from tests.integration.airflow_stack import champion_snapshot, stack_env, up, wait_for

pytestmark = pytest.mark.integration

DRIFT = "2013-W04"
# One scoring run, of the cold-snap week; training on breaches only.
ONE_WEEK = merge(
    FLIGHTS_WEEKLY,
    {"schedule": {"training": None, "start": "2013-01-21", "end": "2013-01-21"}},
)
# The scoring DAG's tasks and their map index (score and monitor map over partitions).
TASKS = {"ingest": -1, "validate": -1, "materialize": -1, "score": 0, "monitor": 0}
FAST_ORPHAN_CHECK = {"AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "5"}


@pytest.fixture(scope="module")
def champion_project(tmp_path_factory) -> Callable[[], tuple[Path, str]]:
    """A project with a trained champion, restored fresh (same path) for each test."""
    return champion_snapshot(
        tmp_path_factory.mktemp("kill"), lambda root: make_project(root, FLIGHTS, ONE_WEEK)
    )


def _ended(ti: dict[str, Any]) -> dict[str, Any] | None:
    return ti if ti["state"] in ("success", "failed", "skipped", "upstream_failed") else None


# Run in a child process: this one's MLflow store may still hold the SQLite file that
# the fixture replaced with the snapshot's copy.
RUNS_AND_CHAMPION = """
import json, sys
from mlops import tags
from mlops.config import load_params, settings
from mlops.registry import CHAMPION, connect
p, st = load_params(sys.argv[1]), settings(sys.argv[1])
reg = connect(st)
runs = reg.client.search_runs(
    [reg.experiment_id(p.model_name)],
    f"tags.`{tags.STAGE}` = 'monitor' and tags.`{tags.PARTITION}` = '{sys.argv[2]}'",
)
champion = str(reg.version_by_alias(p.model_name, CHAMPION).version)
print(json.dumps({"monitor_runs": [r.info.status for r in runs], "champion": champion}))
"""


def _child(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize(
    ("killed_in", "session"),
    [("score", True), ("monitor", True), ("monitor", False)],
    ids=["score-with-tasks", "monitor-with-tasks", "monitor-scheduler-only"],
)
def test_scheduler_killed_mid_scoring_run_retries_the_task_and_retrains_once(
    champion_project, tmp_path: Path, killed_in: str, session: bool
) -> None:
    # given a project with a champion and a local Airflow on this repo's DAGs
    params_path, champion = champion_project()
    env = stack_env(params_path, tmp_path / "airflow", extra=FAST_ORPHAN_CHECK)
    stack, api = up(env)
    sessions = {p.pid for p in stack.procs.values()}
    try:
        # when both DAGs are unpaused and a task of the drifting week's run is running
        api.patch("/dags/training", {"is_paused": False})
        api.patch("/dags/scoring", {"is_paused": False})
        run_id = wait_for(
            "the scoring run",
            lambda: next((r["dag_run_id"] for r in api.runs("scoring")), None),
            120,
            stack,
        )
        ti = wait_for(
            f"{killed_in} of {DRIFT} running",
            lambda: (lambda t: t if t and (_ended(t) or t["state"] == "running") else None)(
                api.tis("scoring", run_id).get(killed_in)
            ),
            420,
            stack,
            every=0.3,
        )
        assert ti["state"] == "running", f"{killed_in} ended before the kill: {ti}"

        # and the scheduler is killed, with every process it started or alone, then
        # started again with the same command and environment
        killed = airflow_stack.kill(stack, "scheduler", session=session)
        if session:
            assert len(killed) > 1, "the scheduler had no task process to kill with it"
            assert api.tis("scoring", run_id)[killed_in]["state"] == "running"
        airflow_stack.respawn(stack, "scheduler", env)
        sessions.add(stack.procs["scheduler"].pid)

        # then the scoring run ends in success: the tasks that had finished are not run
        # again, those after the killed one run once, and the killed one is tried again;
        # or, killed alone, the scheduler's task goes on and ends on its own (tried again
        # only if still running when Airflow gave it back to the scheduler)
        run = wait_for(
            "the scoring run to end",
            lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(
                api.run("scoring", run_id)
            ),
            300,
            stack,
        )
        assert run["state"] == "success", api.failure("scoring", run_id)
        tries = {
            task: [t["state"] for t in api.tries("scoring", run_id, task, map_index)]
            for task, map_index in TASKS.items()
        }
        ended_alone = [] if session else [["success"]]
        assert tries[killed_in] in [["failed", "success"], *ended_alone], tries
        assert {t: v for t, v in tries.items() if t != killed_in} == {
            t: ["success"] for t in TASKS if t != killed_in
        }, tries

        # and exactly one drift-breach event, from that run's monitor
        events = api.breach_events()
        assert [(e["source_run_id"], e["source_task_id"]) for e in events] == [
            (run_id, "monitor")
        ], events
        event = events[0]
        assert event["extra"]["partition"] == DRIFT
        assert event["extra"]["model_version"] == champion

        # and exactly one retraining run, whose plan handles that breach once
        training = wait_for("the retraining run", lambda: api.runs("training"), 120, stack)
        assert len(training) == 1, training
        retrain_id = training[0]["dag_run_id"]
        plan = wait_for(
            "the plan task",
            lambda: _ended(api.tis("training", retrain_id)["plan"]),
            240,
            stack,
        )
        assert plan["state"] == "success", api.failure("training", retrain_id)
        upstream = api.get(f"/dags/training/dagRuns/{retrain_id}/upstreamAssetEvents")
        assert [e["id"] for e in upstream["asset_events"]] == [event["id"]]
        state = json.loads((params_path.parent / "data/state/retrain.json").read_text())
        assert list(state["decisions"]) == [retrain_id]
        decision = state["decisions"][retrain_id]
        assert decision["run"] and decision["handled"] == [DRIFT]
        assert decision["events"] == [event["id"]]
        assert len(api.runs("training")) == 1
    finally:
        stack.stop(grace=5)
        # Killed alone, the scheduler leaves its LocalExecutor workers behind, idle for
        # good (each holds the write end of the queue it waits on); Stack.stop does not
        # know the old session.
        left = airflow_stack.kill_sessions(sessions)
    # then nothing Airflow started is left, but for the workers of a scheduler killed alone
    assert left == [] or not session, left

    # and the partition's files are whole: the drift report names the champion, the
    # predictions' sidecar names the champion and their md5, and scoring again writes
    # the same bytes; the killed monitor's MLflow run is not left RUNNING
    child = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{params_path.parent / 'mlflow.db'}"}
    st = settings(params_path)
    drift = json.loads((st.reports_dir / DRIFT / "drift.json").read_text())
    assert drift["breach"] and drift["model_version"] == champion
    assert (st.reports_dir / DRIFT / "drift.html").stat().st_size > 0
    found = json.loads(_child(child, "-c", RUNS_AND_CHAMPION, str(params_path), DRIFT))
    assert "RUNNING" not in found["monitor_runs"], found
    assert found["monitor_runs"].count("FINISHED") == 1, found
    assert found["champion"] == champion
    predictions = partitions.file(st.predictions_dir, DRIFT)
    sidecar = json.loads(predictions.with_suffix(".json").read_text())
    assert sidecar["model_version"] == champion and sidecar["md5"] == io.md5(predictions)
    before = predictions.read_bytes()
    _child(child, "-m", "mlops", "--params", str(params_path), "score", "--partitions", DRIFT)
    assert predictions.read_bytes() == before
