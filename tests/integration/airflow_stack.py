"""A real Airflow for tests: throwaway metadata databases, the REST client, bounded waits,
and a small project with a trained champion.

Used by the scheduler tests (``test_airflow_loop``) and the production-profile tests
(``tests/production/test_celery.py``). Everything is driven and read through the REST
API, as an external client would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops.airflow import local
from mlops.airflow import stack as components
from mlops.config import load_params, settings
from tests.conftest import REPO

PG = ("127.0.0.1", 5432)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(addr: tuple[str, int]) -> bool:
    try:
        socket.create_connection(addr, timeout=2).close()
        return True
    except OSError:
        return False


@contextmanager
def pg_database(prefix: str = "mlops_airflow") -> Iterator[str]:
    """A throwaway PostgreSQL database (its SQLAlchemy URL), dropped afterwards."""
    if not reachable(PG):
        pytest.fail(f"PostgreSQL is not reachable on {PG[0]}:{PG[1]} (.ci/run starts it)")
    import psycopg2

    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = psycopg2.connect(host=PG[0], port=PG[1], user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://postgres@{PG[0]}:{PG[1]}/{name}"
    finally:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


class Api:
    """The few REST calls an external client needs (SimpleAuthManager login)."""

    def __init__(self, url: str, user: str, password: str) -> None:
        r = httpx.post(
            f"{url}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        r.raise_for_status()
        self.http = httpx.Client(
            base_url=f"{url}/api/v2",
            timeout=30,
            headers={
                "Authorization": f"Bearer {r.json()['access_token']}",
                "Accept": "application/json",
            },
        )

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        r = self.http.patch(path, json=body)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = self.http.post(path, json=body)
        r.raise_for_status()
        return r.json()

    def runs(self, dag: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag}/dagRuns", order_by="logical_date")["dag_runs"])

    def run(self, dag: str, run: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag}/dagRuns/{run}"))

    def trigger(self, dag: str, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.post(
                f"/dags/{dag}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf}
            )
        )

    def all_tis(self, dag: str, run: str) -> list[dict[str, Any]]:
        """Every task instance of a run, mapped ones one per map index."""
        out = self.get(f"/dags/{dag}/dagRuns/{run}/taskInstances", limit=1000)
        return list(out["task_instances"])

    def tis(self, dag: str, run: str) -> dict[str, dict[str, Any]]:
        return {t["task_id"]: t for t in self.all_tis(dag, run)}

    def tries(self, dag: str, run: str, task: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Every try of one task instance, oldest first."""
        path = f"/dags/{dag}/dagRuns/{run}/taskInstances/{task}/{map_index}/tries"
        if map_index < 0:
            path = f"/dags/{dag}/dagRuns/{run}/taskInstances/{task}/tries"
        return sorted(self.get(path)["task_instances"], key=lambda t: t["try_number"])

    def breach_events(self) -> list[dict[str, Any]]:
        # Airflow 3.3 answers 500 while a run that an event created has not started yet
        # (its response model requires the run's start_date): ask again until it has.
        for _ in range(30):
            r = self.http.get(
                "/assets/events", params={"source_dag_id": "scoring", "order_by": "timestamp"}
            )
            if r.status_code != 500:
                break
            time.sleep(1)
        r.raise_for_status()
        return list(r.json()["asset_events"])

    def failure(self, dag: str, run: str) -> str:
        """The end of the log of the run's failed task, for the assertion message."""
        for ti in self.all_tis(dag, run):
            if ti["state"] in ("failed", "upstream_failed") and ti["try_number"]:
                path = f"/dags/{dag}/dagRuns/{run}/taskInstances/{ti['task_id']}"
                log = self.get(f"{path}/logs/{ti['try_number']}", map_index=ti.get("map_index", -1))
                text = json.dumps(log.get("content", log))[-3000:]
                return f"{dag}/{run}/{ti['task_id']}[{ti.get('map_index')}] failed: {text}"
        return f"{dag}/{run}: no failed task found"


def wait_for(
    what: str, fn: Callable[[], Any], timeout: float, stack: Any, every: float = 2.0
) -> Any:
    """Poll ``fn`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = stack.dead()
        assert not dead, f"airflow component exited {dead}: {stack.tail(next(iter(dead)))}"
        value = fn()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_run(api: Api, stack: Any, dag: str, run: str, timeout: float) -> dict[str, Any]:
    """Wait until a DAG run ends; return it."""
    return dict(
        wait_for(
            f"{dag} run {run}",
            lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(
                api.run(dag, run)
            ),
            timeout,
            stack,
        )
    )


def stack_env(
    params_path: Path,
    home: Path,
    db_url: str | None = None,
    broker_db: int | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a throwaway Airflow on a project: LocalExecutor on SQLite, or
    with ``broker_db`` (a Redis db number) the CeleryExecutor with a Redis broker and
    ``db_url`` as the result backend. MLflow is the project's own SQLite store."""
    celery = {}
    if broker_db is not None:
        assert db_url, "the CeleryExecutor needs a PostgreSQL metadata DB"
        celery = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{broker_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db_url,
        }
    return local.airflow_env(
        home,
        params_path,
        port=free_port(),
        db_url=db_url,
        # not the in-process Airflow settings of other test modules
        base={k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        extra={
            "MLFLOW_TRACKING_URI": f"sqlite:///{params_path.parent}/mlflow.db",
            **celery,
            **(extra or {}),
        },
    )


def up(
    env: dict[str, str], workers: int = 0, dags: tuple[str, ...] = ("training", "scoring")
) -> tuple[components.Stack, Api]:
    """Migrate, start and wait for a throwaway Airflow until ``dags`` are parsed."""
    home = Path(env["AIRFLOW_HOME"])
    local.init_metadata(env)
    password, _ = local.seed_password(home)
    running = components.start(env, workers=workers)
    try:
        components.wait_ready(running, timeout=300)
        api = Api(running.url, local.USER, password)
        wait_for(
            f"DAGs {dags} parsed",
            lambda: {d["dag_id"] for d in api.get("/dags")["dags"]} >= set(dags),
            180,
            running,
        )
    except BaseException:
        running.stop(grace=5)
        raise
    return running, api


def train_champion(params_path: Path) -> str:
    """Train and promote the first champion with the stages themselves (no Airflow)."""
    from mlops import evaluate, ingest, materialize, promote, train, validate

    p, st = load_params(params_path), settings(params_path)
    weeks = list(p.train.partitions)
    ingest.run(p, st, weeks)
    validate.run(p, st, weeks)
    materialize.run(p, st, weeks)
    version = train.run(p, st)["version"]
    evaluate.run(p, st, version)
    assert promote.run(p, st)["promote"], "the first model must pass the floor"
    return str(version)


def champion_snapshot(base: Path, make: Callable[[Path], Path]) -> Callable[[], tuple[Path, str]]:
    """Train a champion once in ``base/proj``; return a function that restores it fresh.

    Training once and copying back is faster than training per test, and keeps the
    absolute paths that MLflow, Feast and DVC recorded valid.
    """
    root, snapshot = base / "proj", base / "snapshot"
    params_path = make(root)
    with pytest.MonkeyPatch.context() as mp:
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; keep it out of later tests
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        version = train_champion(params_path)
    shutil.copytree(root, snapshot, symlinks=True)

    def fresh() -> tuple[Path, str]:
        shutil.rmtree(root)
        shutil.copytree(snapshot, root, symlinks=True)
        return params_path, version

    return fresh


def dags_test(
    dags: Path, params_path: Path, home: Path, dag_id: str, extra: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, str]:
    """Run ``airflow dags test DAG_ID`` on the DAG files of ``dags`` in a throwaway home.

    No server: the tasks run in the child process through Airflow's real task runner and
    logging. Returns the process and everything it left to read: stdout, stderr and every
    file under the home's ``logs/``.
    """
    env = local.airflow_env(
        home,
        params_path,
        port=free_port(),
        dags=dags,
        base={k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        extra={"PYTHONPATH": str(REPO), **(extra or {})},
    )
    if not (home / "airflow.db").is_file():
        local.init_metadata(env)
    airflow = str(Path(sys.executable).with_name("airflow"))
    out = subprocess.run(
        [airflow, "dags", "test", dag_id],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = sorted(p for p in (home / "logs").rglob("*") if p.is_file())
    return out, "\n".join([out.stdout, out.stderr, *(p.read_text(errors="replace") for p in logs)])
