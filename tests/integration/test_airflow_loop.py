"""The closed loop with a real Airflow: drift in a scored partition starts a retraining run.

A throwaway Airflow (API server, scheduler, DAG processor, triggerer, LocalExecutor)
runs this repo's DAGs on a small project, once with SQLite and once with PostgreSQL as
the metadata DB. Given a champion trained on three January weeks, unpausing `scoring`
replays two weeks: 2013-W03 (part of the model's reference data: no drift) and 2013-W04
(a cold snap: drift). Everything is driven and read through the REST API, as an
external client would. Every wait is bounded and every process group is killed at the
end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops import airflow_local
from mlops.config import load_params, settings
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, make_project, merge

pytestmark = pytest.mark.integration

# Weekly partitions need a drift policy for weeks: a week's weather alone differs from
# the two-week reference by up to ~0.5 (normed Wasserstein), a cold snap by 2-3.
WEEKLY = merge(
    FLIGHTS_SMALL,
    {
        "monitor": {
            "numerical_threshold": 0.6,
            "drift_share": 0.1,
            "breach_on_prediction_drift": False,
            "cooldown_hours": 24,
        },
    },
)
CALM, DRIFT = "2013-W03", "2013-W04"
SCORING_ENV = {
    "MLOPS_SCORING_CRON": "0 0 * * 1",  # ISO weeks start on Monday
    "MLOPS_SCORING_START": "2013-01-14",  # 2013-W03
    "MLOPS_SCORING_END": "2013-01-21",  # 2013-W04
    "MLOPS_TRAINING_CRON": "none",  # only the drift trigger starts training
}
PG = ("127.0.0.1", 5432)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(addr: tuple[str, int]) -> bool:
    try:
        socket.create_connection(addr, timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", "postgres"])
def metadata_db(request, tmp_path: Path) -> Iterator[str | None]:
    """None for SQLite in AIRFLOW_HOME, else the URL of a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    if not _reachable(PG):
        pytest.skip(f"PostgreSQL not reachable on {PG[0]}:{PG[1]}")
    import psycopg2

    name = f"mlops_airflow_{secrets.token_hex(4)}"
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

    def runs(self, dag: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag}/dagRuns", order_by="logical_date")["dag_runs"])

    def tis(self, dag: str, run: str) -> dict[str, dict[str, Any]]:
        out = self.get(f"/dags/{dag}/dagRuns/{run}/taskInstances")["task_instances"]
        return {t["task_id"]: t for t in out}

    def breach_events(self) -> list[dict[str, Any]]:
        return list(
            self.get("/assets/events", source_dag_id="scoring", order_by="timestamp")[
                "asset_events"
            ]
        )

    def failure(self, dag: str, run: str) -> str:
        """The end of the log of the run's failed task, for the assertion message."""
        for tid, ti in self.tis(dag, run).items():
            if ti["state"] in ("failed", "upstream_failed") and ti["try_number"]:
                log = self.get(
                    f"/dags/{dag}/dagRuns/{run}/taskInstances/{tid}/logs/{ti['try_number']}"
                )
                text = json.dumps(log.get("content", log))[-3000:]
                return f"{dag}/{run}/{tid} failed: {text}"
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


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


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


@pytest.fixture(scope="module")
def champion_project(tmp_path_factory) -> Iterator[Callable[[], tuple[Path, str]]]:
    """A project with a trained champion, restored fresh (same path) for each test.

    Training once and copying back is faster than training per metadata DB, and keeps
    the absolute paths that MLflow, Feast and DVC recorded valid.
    """
    base = tmp_path_factory.mktemp("loop")
    root, snapshot = base / "proj", base / "snapshot"
    params_path = make_project(root, FLIGHTS, WEEKLY)
    with pytest.MonkeyPatch.context() as mp:
        # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; keep it out of later tests
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        version = train_champion(params_path)
    shutil.copytree(root, snapshot, symlinks=True)

    def fresh() -> tuple[Path, str]:
        shutil.rmtree(root)
        shutil.copytree(snapshot, root, symlinks=True)
        return params_path, version

    yield fresh


def test_drift_breach_starts_retraining_and_calm_week_does_not(
    champion_project, metadata_db: str | None, tmp_path: Path, record_property
) -> None:
    # given a project with a champion and a local Airflow on this repo's DAGs
    params_path, champion = champion_project()
    home = tmp_path / "airflow"
    env = airflow_local.airflow_env(
        home,
        params_path,
        port=_free_port(),
        db_url=metadata_db,
        # not the in-process Airflow settings of other test modules
        base={k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        extra={**SCORING_ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{params_path.parent}/mlflow.db"},
    )
    t0 = time.monotonic()
    airflow_local.init_metadata(env)
    password, _ = airflow_local.seed_password(home)
    stack = airflow_local.start(env)
    try:
        airflow_local.wait_ready(stack, timeout=300)
        api = Api(stack.url, airflow_local.USER, password)
        wait_for(
            "both DAGs parsed",
            lambda: {d["dag_id"] for d in api.get("/dags")["dags"]} >= {"training", "scoring"},
            180,
            stack,
        )
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
            f"\n[{metadata_db and 'postgres' or 'sqlite'}] breach -> retraining run start: "
            f"{breach_to_start:.2f}s; whole test {time.monotonic() - t0:.0f}s"
        )
    finally:
        stack.stop(grace=5)
    # then nothing Airflow started is left, task processes included
    assert airflow_local._session_members({p.pid for p in stack.procs.values()}) == []
