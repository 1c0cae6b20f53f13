"""The scoring DAG in the production profile: one Celery worker against two.

    python -m bench.run --stages celery

A demo project (monthly partitions, a champion trained on January-June 2013) is scored
for July-December in one scoring run whose ``partitions`` parameter names the six months,
so ``score`` and ``monitor`` are mapped six times each. Airflow runs on a throwaway
PostgreSQL database with the CeleryExecutor (Redis broker, PostgreSQL result backend),
first with one worker, then with two, each time on a fresh copy of the same project.
Reported: the run's wall time from trigger to success, the sum of its task durations,
and which worker ran how many tasks. Needs PostgreSQL and Redis on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

MONTHS = ["2013-07", "2013-08", "2013-09", "2013-10", "2013-11", "2013-12"]
BROKER_DB = 14  # unlike the tests (11-13), so a test run alongside cannot flush it


def _seconds(ti: dict[str, Any]) -> float:
    if ti.get("duration") is not None:
        return float(ti["duration"])
    start, end = ti.get("start_date"), ti.get("end_date")
    if not start or not end:
        return 0.0
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).seconds


def _one(params_path: Path, home: Path, workers: int, months: list[str]) -> dict[str, Any]:
    import redis

    from tests.integration.airflow_stack import pg_database, stack_env, up, wait_run

    broker = redis.Redis(host="127.0.0.1", port=6379, db=BROKER_DB)
    broker.flushdb()
    with pg_database("mlops_bench") as db_url:
        env = stack_env(
            params_path,
            home,
            db_url,
            broker_db=BROKER_DB,
        )
        stack, api = up(env, workers=workers, dags=("scoring",))
        try:
            api.patch("/dags/scoring", {"is_paused": False})
            t0 = time.perf_counter()
            api.trigger("scoring", "bench", {"partitions": months})
            run = wait_run(api, stack, "scoring", "bench", 1800)
            wall = time.perf_counter() - t0
            tis = api.all_tis("scoring", "bench")
        finally:
            stack.stop(grace=5)
            broker.flushdb()
    per_host: dict[str, int] = {}
    for t in tis:
        if t["task_id"] in ("score", "monitor"):
            per_host[t["hostname"]] = per_host.get(t["hostname"], 0) + 1
    tasks = {
        f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]: round(
            _seconds(t), 2
        )
        for t in tis
    }
    out = {
        "workers": workers,
        "state": run["state"],
        "wall_seconds": round(wall, 2),
        "task_seconds_sum": round(sum(tasks.values()), 2),
        "mapped_tasks_per_worker": per_host,
        "task_seconds": tasks,
    }
    print(
        f"  {workers} worker(s): {run['state']} in {wall:.1f}s (task time "
        f"{sum(tasks.values()):.1f}s, score/monitor per worker {per_host})",
        flush=True,
    )
    return out


def run_celery(work: Path, months: list[str] = MONTHS) -> dict[str, Any]:
    """Score ``months`` in one run on one Celery worker, then on two; compare wall times."""
    from tests.conftest import FLIGHTS, make_project
    from tests.integration.airflow_stack import reachable, train_champion

    if not (reachable(("127.0.0.1", 5432)) and reachable(("127.0.0.1", 6379))):
        return {"error": "needs PostgreSQL and Redis on 127.0.0.1"}
    base = work / "celery"
    shutil.rmtree(base, ignore_errors=True)
    root, snapshot = base / "proj", base / "snapshot"
    # No scheduled runs: the project's calendar starts in 2100, training waits for breaches.
    params_path = make_project(
        root, FLIGHTS, {"schedule": {"training": None, "start": "2100-01-01", "end": None}}
    )
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    try:
        train_champion(params_path)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    shutil.copytree(root, snapshot, symlinks=True)
    results: dict[str, Any] = {"partitions": months}
    for n in (1, 2):
        shutil.rmtree(root)
        shutil.copytree(snapshot, root, symlinks=True)
        results[f"workers_{n}"] = _one(params_path, base / f"airflow-{n}", n, months)
    one, two = results["workers_1"], results["workers_2"]
    if one["state"] == two["state"] == "success":
        results["speedup_two_workers"] = round(one["wall_seconds"] / two["wall_seconds"], 2)
    return results
