"""The closed loop with a real Airflow: drift in a scored partition starts a retraining run.

A throwaway Airflow (API server, scheduler, DAG processor, triggerer, LocalExecutor,
SQLite) runs this repo's DAGs on a small project (the production profile, PostgreSQL and
the CeleryExecutor, is tested in ``tests/production/test_celery.py``). Given a champion
trained on three January weeks, unpausing `scoring` replays two weeks: 2013-W03 (part
of the model's reference data: no drift) and 2013-W04 (a cold snap: drift). Everything
is driven and read through the REST API, as an external client would. Every wait is
bounded and every process group is killed at the end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mlops.airflow import stack as airflow_stack
from tests.conftest import FLIGHTS, FLIGHTS_WEEKLY, make_project, merge
from tests.integration.airflow_stack import champion_snapshot, stack_env, up, wait_for

pytestmark = pytest.mark.integration

CALM, DRIFT = "2013-W03", "2013-W04"
# The project's calendar, in its params.yaml: one scoring run per ISO week (the default
# cadence of week partitions, Mondays), replaying W03 and W04; training on breaches only.
LOOP = merge(
    FLIGHTS_WEEKLY,
    {"schedule": {"training": None, "start": "2013-01-14", "end": "2013-01-21"}},
)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def champion_project(tmp_path_factory) -> Callable[[], tuple[Path, str]]:
    """A project with a trained champion, restored fresh (same path) for each test."""
    return champion_snapshot(
        tmp_path_factory.mktemp("loop"), lambda root: make_project(root, FLIGHTS, LOOP)
    )


def test_drift_breach_starts_retraining_and_calm_week_does_not(
    champion_project, tmp_path: Path, record_property
) -> None:
    # given a project with a champion and a local Airflow on this repo's DAGs
    params_path, champion = champion_project()
    env = stack_env(params_path, tmp_path / "airflow")
    t0 = time.monotonic()
    stack, api = up(env)
    try:
        record_property("airflow_ready_s", round(time.monotonic() - t0, 1))
        assert api.get("/importErrors")["total_entries"] == 0
        assert api.get("/pools/mlops_dvc")["slots"] == 1

        # when both DAGs are unpaused: scoring replays W03, then W04
        api.patch("/dags/training", {"is_paused": False})
        api.patch("/dags/scoring", {"is_paused": False})

        def scoring_run(n: int) -> dict[str, Any] | None:
            runs = api.runs("scoring")
            done = [r for r in runs if r["state"] in ("success", "failed")]
            return done[n] if len(done) > n else None

        calm = wait_for(f"the scoring run of {CALM}", lambda: scoring_run(0), 420, stack)
        assert calm["state"] == "success", api.failure("scoring", calm["dag_run_id"])
        assert calm["data_interval_start"].startswith("2013-01-14")

        # then the calm week left no breach event and started no training run
        assert [e for e in api.breach_events() if e["source_run_id"] == calm["dag_run_id"]] == []
        assert api.runs("training") == []

        drift = wait_for(f"the scoring run of {DRIFT}", lambda: scoring_run(1), 420, stack)
        assert drift["state"] == "success", api.failure("scoring", drift["dag_run_id"])

        # then the drifting week emitted one breach event, and the scheduler started training
        events = api.breach_events()
        assert [e["source_run_id"] for e in events] == [drift["dag_run_id"]]
        event = events[0]
        assert event["name"] == "drift_breach" and event["extra"]["partition"] == DRIFT
        assert event["extra"]["reasons"] and event["source_task_id"] == "monitor"
        run = wait_for(
            "the retraining run",
            lambda: next(iter(api.runs("training")), None),
            120,
            stack,
            every=0.5,
        )
        assert run["run_type"] == "asset_triggered"
        started = wait_for(
            "the retraining run to start",
            lambda: api.get(f"/dags/training/dagRuns/{run['dag_run_id']}")["start_date"],
            120,
            stack,
            every=0.5,
        )
        breach_to_start = (_ts(started) - _ts(event["timestamp"])).total_seconds()
        upstream = api.get(f"/dags/training/dagRuns/{run['dag_run_id']}/upstreamAssetEvents")
        assert [e["id"] for e in upstream["asset_events"]] == [event["id"]]

        # and its plan handles the breach: a retrain on a window ending at the breached week
        plan = wait_for(
            "the plan task",
            lambda: (lambda t: t if t["state"] in ("success", "failed", "skipped") else None)(
                api.tis("training", run["dag_run_id"])["plan"]
            ),
            180,
            stack,
        )
        assert plan["state"] == "success", api.failure("training", run["dag_run_id"])
        window = api.get(
            f"/dags/training/dagRuns/{run['dag_run_id']}/taskInstances/plan/"
            "xcomEntries/return_value",
            deserialize=True,
        )["value"]
        assert window == ["2013-W02", "2013-W03", "2013-W04"]
        state = json.loads((params_path.parent / "data/state/retrain.json").read_text())
        assert state["decisions"][run["dag_run_id"]]["handled"] == [DRIFT]
        assert os.path.isfile(event["extra"]["report"])
        assert event["extra"]["model_version"] == champion

        record_property("breach_to_run_start_s", round(breach_to_start, 2))
        record_property("total_s", round(time.monotonic() - t0, 1))
        print(
            "\nbreach -> retraining run start: "
            f"{breach_to_start:.2f}s; whole test {time.monotonic() - t0:.0f}s"
        )
    finally:
        stack.stop(grace=5)
    # then nothing Airflow started is left, task processes included
    assert airflow_stack._session_members({p.pid for p in stack.procs.values()}) == []
