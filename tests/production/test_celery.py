"""Airflow in the production profile: PostgreSQL metadata DB, CeleryExecutor, Redis broker,
PostgreSQL result backend and two Celery workers, on this machine's services.

One scoring run covers several weeks (its ``partitions`` parameter), so ``score`` and
``monitor`` are mapped once per week and spread over the workers. The same run under a
LocalExecutor Airflow on SQLite is the reference: the outputs must be equal. Then one
worker is killed (its whole process session, as a lost machine) while it runs a task:
the scheduler notices the missing heartbeat, the retry runs on the other worker, and the
run completes with the same outputs written once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops import io, partitions
from mlops.airflow import stack as airflow_stack
from mlops.config import load_params, settings
from tests.conftest import FLIGHTS, FLIGHTS_WEEKLY, make_project, merge
from tests.integration.airflow_stack import (
    Api,
    champion_snapshot,
    pg_database,
    reachable,
    stack_env,
    up,
    wait_for,
    wait_run,
)

pytestmark = pytest.mark.integration

WEEKS = ["2013-W03", "2013-W04", "2013-W05", "2013-W06"]
WORKERS = ("worker-1", "worker-2")
BROKER_DB = 12  # a Redis db number of its own, flushed before and after
# No scheduled runs: the tests trigger the scoring runs they need (the project's calendar,
# in its params.yaml, starts in 2100 and training waits for breaches).
TRIGGERED_ONLY = merge(
    FLIGHTS_WEEKLY, {"schedule": {"training": None, "start": "2100-01-04", "end": None}}
)


@pytest.fixture(scope="module")
def champion_project(tmp_path_factory) -> Callable[[], tuple[Path, str]]:
    return champion_snapshot(
        tmp_path_factory.mktemp("celery"),
        lambda root: make_project(root, FLIGHTS, TRIGGERED_ONLY),
    )


def score_weeks(api: Api, stack: Any, run_id: str, timeout: float = 600) -> tuple[dict, float]:
    """Trigger one scoring run over WEEKS and wait for it; return the run and its seconds."""
    t0 = time.monotonic()
    api.trigger("scoring", run_id, {"partitions": WEEKS})
    run = wait_run(api, stack, "scoring", run_id, timeout)
    assert run["state"] == "success", api.failure("scoring", run_id)
    return run, time.monotonic() - t0


def outputs(params_path: Path) -> dict[str, Any]:
    """Predictions (sorted by key) and drift decisions of every scored week."""
    st = settings(params_path)
    keys = load_params(params_path).contract.entity_keys
    out: dict[str, Any] = {}
    for week in WEEKS:
        preds = pd.read_parquet(partitions.file(st.predictions_dir, week))
        assert not preds.duplicated(keys).any(), f"{week}: a row was scored twice"
        drift = io.read_json(st.reports_dir / week / "drift.json")
        out[week] = {
            "predictions": preds.sort_values(keys).reset_index(drop=True),
            "breach": drift["breach"],
            "drifted": sorted(c for c, r in drift["columns"].items() if r["drifted"]),
        }
    leftovers = [p.name for p in st.predictions_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temporary files left in {st.predictions_dir}: {leftovers}"
    return out


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for week in want:
        pd.testing.assert_frame_equal(got[week]["predictions"], want[week]["predictions"])
        assert (got[week]["breach"], got[week]["drifted"]) == (
            want[week]["breach"],
            want[week]["drifted"],
        ), week


def hosts(api: Api, run_id: str, tasks: tuple[str, ...] = ("score", "monitor")) -> set[str]:
    return {t["hostname"] for t in api.all_tis("scoring", run_id) if t["task_id"] in tasks}


@pytest.fixture(scope="module")
def local_reference(champion_project, tmp_path_factory) -> dict[str, Any]:
    """The outputs of one scoring run over WEEKS under LocalExecutor on SQLite."""
    params_path, _ = champion_project()
    env = stack_env(params_path, tmp_path_factory.mktemp("local") / "airflow")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    stack, api = up(env, dags=("scoring",))
    try:
        api.patch("/dags/scoring", {"is_paused": False})
        _, seconds = score_weeks(api, stack, "local")
    finally:
        stack.stop(grace=5)
    print(f"\n[LocalExecutor, SQLite] scoring {len(WEEKS)} weeks: {seconds:.1f}s")
    return outputs(params_path)


@pytest.fixture(scope="module")
def celery_airflow(champion_project, local_reference, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Production-profile Airflow on a fresh copy of the same project, with two workers.

    Set up after the LocalExecutor reference, which uses the same project folder.
    """
    import redis

    if not reachable(("127.0.0.1", 6379)):
        pytest.fail("Redis is not reachable on 127.0.0.1:6379 (.ci/run starts it)")
    broker = redis.Redis(host="127.0.0.1", port=6379, db=BROKER_DB)
    broker.flushdb()
    params_path, _ = champion_project()
    with pg_database() as db_url:
        env = stack_env(
            params_path,
            tmp_path_factory.mktemp("celery-home") / "airflow",
            db_url,
            broker_db=BROKER_DB,
            extra={
                # A worker lost with its tasks is noticed after 30 s without a heartbeat.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            },
        )
        stack, api = up(env, workers=len(WORKERS), dags=("scoring",))
        try:
            api.patch("/dags/scoring", {"is_paused": False})
            yield {"api": api, "stack": stack, "params": params_path, "env": env}
        finally:
            stack.stop(grace=5)
            broker.flushdb()
        assert airflow_stack._session_members({p.pid for p in stack.procs.values()}) == []


def test_two_celery_workers_share_the_partitions_and_match_the_local_executor(
    celery_airflow, local_reference, record_property
) -> None:
    api, stack = celery_airflow["api"], celery_airflow["stack"]

    # when one scoring run covers four weeks on the CeleryExecutor with two workers
    run, seconds = score_weeks(api, stack, "celery-two-workers")

    # then score and monitor ran once per week, and both workers took some of them
    tis = api.all_tis("scoring", run["dag_run_id"])
    mapped = sorted((t["task_id"], t["map_index"]) for t in tis if t["map_index"] >= 0)
    assert mapped == [(t, i) for t in ("monitor", "score") for i in range(len(WEEKS))]
    assert hosts(api, run["dag_run_id"]) == set(WORKERS)

    # and what landed equals the LocalExecutor run on SQLite
    assert_same(outputs(celery_airflow["params"]), local_reference)

    # and each drifted week announced itself through the drift-breach asset (label adds
    # its own events, of kind performance, for the weeks before)
    events = [
        e
        for e in api.breach_events()
        if e["source_run_id"] == run["dag_run_id"] and e["source_task_id"] == "monitor"
    ]
    breached = sorted(w for w, out in local_reference.items() if out["breach"])
    assert breached and sorted(e["extra"]["partition"] for e in events) == breached
    record_property("scoring_two_workers_s", round(seconds, 1))
    print(f"\n[CeleryExecutor, PostgreSQL] scoring {len(WEEKS)} weeks, 2 workers: {seconds:.1f}s")


def test_a_killed_worker_s_task_is_retried_on_the_other(celery_airflow, local_reference) -> None:
    api, stack = celery_airflow["api"], celery_airflow["stack"]
    run_id = "celery-worker-lost"

    # given a scoring run whose score task is running on worker-1
    api.trigger("scoring", run_id, {"partitions": WEEKS})

    def score_on_worker_1() -> dict[str, Any] | None:
        for t in api.all_tis("scoring", run_id):
            if t["task_id"] == "score" and t["state"] == "running" and t["hostname"] == WORKERS[0]:
                return t
        return None

    victim = wait_for("a score task running on worker-1", score_on_worker_1, 300, stack, 0.2)

    # when worker-1 is lost with every process it started
    worker = stack.procs.pop(WORKERS[0])
    for pid in airflow_stack._session_members({worker.pid}):
        os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=30)

    # then the run still completes: the lost try failed and a retry ran on worker-2
    run = wait_run(api, stack, "scoring", run_id, 600)
    assert run["state"] == "success", api.failure("scoring", run_id)
    tries = api.tries("scoring", run_id, "score", victim["map_index"])
    assert [t["hostname"] for t in tries][0] == WORKERS[0]
    assert tries[0]["state"] == "failed" and len(tries) >= 2
    assert tries[-1]["state"] == "success" and tries[-1]["hostname"] == WORKERS[1]

    # and every week's output was written once, equal to the LocalExecutor's
    assert_same(outputs(celery_airflow["params"]), local_reference)
