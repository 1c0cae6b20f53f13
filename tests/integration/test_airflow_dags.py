"""Each DAG run with ``dag.test()`` on real weeks of flights, in a throwaway Airflow home.

The tasks run in-process against a temporary project (git, DVC, MLflow, Feast, GX), and
the tests assert on what landed: registry aliases and tags, predictions, drift reports,
the drift-breach asset events in Airflow's DB, and the retraining decisions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dags.airflow_env import DAGS, configure, init_db

configure()

import pandas as pd  # noqa: E402
import pendulum  # noqa: E402

from mlops import approval, audit, io, partitions, tags  # noqa: E402
from mlops.config import Settings, load_params, settings  # noqa: E402
from mlops.registry import CHALLENGER, CHAMPION, connect  # noqa: E402
from tests.conftest import FLIGHTS, FLIGHTS_WEEKLY, make_project, merge  # noqa: E402

pytestmark = pytest.mark.integration

DAG_ENV = {"MLOPS_APPROVAL_POKE_SECONDS": "1"}
# The weekly project's calendar, in its params.yaml: scoring one run per ISO week (the
# default cadence of week partitions) from 2013-W02 on, open-ended.
WEEKLY = merge(FLIGHTS_WEEKLY, {"schedule": {"start": "2013-01-07", "end": None}})


def week_end(pid: str) -> pendulum.DateTime:
    """The logical date whose manual data interval is the ISO week ``pid``."""
    return pendulum.instance(partitions.interval(pid)[1].to_pydatetime())


@pytest.fixture
def dags(monkeypatch) -> Iterator[Any]:
    """A function returning a DAG parsed with the test environment.

    The DAG files are parsed at the first call, after ``use`` has pointed
    ``MLOPS_PARAMS`` at the test's project: their calendar is that project's.
    """
    for k, v in DAG_ENV.items():
        monkeypatch.setenv(k, v)
    init_db()
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.settings import Session
    from sqlalchemy import delete

    # One Airflow serves one project; the session's DB is shared, so start without the
    # breach events of earlier tests.
    with Session() as s:
        s.execute(delete(AssetEvent))
        s.commit()

    bags: list[DagBag] = []

    def dag(dag_id: str) -> Any:
        if not bags:
            bags.append(DagBag(dag_folder=str(DAGS)))
            assert bags[0].import_errors == {}
        return bags[0].dags[dag_id]

    yield dag


def use(monkeypatch, params_path: Path) -> tuple[Any, Settings]:
    """Point the in-process tasks at a project.

    The tracking URI is pinned too: ``mlflow.set_tracking_uri`` exports
    ``MLFLOW_TRACKING_URI``, which would otherwise send this project's models to the
    registry of the previous test's project.
    """
    monkeypatch.setenv("MLOPS_PARAMS", str(params_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{params_path.parent / 'mlflow.db'}")
    return load_params(params_path), settings(params_path)


def states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def breach_events(run_id: str | None = None) -> list[Any]:
    """Drift-breach asset events in Airflow's DB (all, or those of one scoring run)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session
    from sqlalchemy import select

    with Session() as s:
        q = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "drift_breach")
            .order_by(AssetEvent.id)
        )
        events = list(s.scalars(q))
        s.expunge_all()
    return [e for e in events if run_id is None or e.source_run_id == run_id]


def champion(st: Settings, model: str) -> str | None:
    mv = connect(st).version_by_alias(model, CHAMPION)
    return None if mv is None else str(mv.version)


def test_train_score_monitor_and_retrain_on_breach(dags, monkeypatch, tmp_path) -> None:
    # given a fresh project on weekly partitions
    params, st = use(monkeypatch, make_project(tmp_path / "proj", FLIGHTS, WEEKLY))
    name = params.model_name
    # whose calendar the DAGs took from its params.yaml alone
    assert dags("scoring").timetable.expression == "0 0 * * 1"
    assert dags("scoring").start_date == pendulum.datetime(2013, 1, 7, tz="UTC")
    assert dags("scoring").timetable.end is None
    assert dags("training").start_date == pendulum.datetime(2013, 1, 7, tz="UTC")  # 2013-W02

    # when the training DAG runs on its schedule (no breach yet)
    dr = dags("training").test()

    # then it trained the configured weeks and promoted the first champion automatically
    assert dr.state == "success", states(dr)
    assert states(dr)["approval"] == "skipped" and states(dr)["apply_approval"] == "skipped"
    first = champion(st, name)
    assert first == "1"
    mv = connect(st).get_version(name, first)
    assert mv.tags["mlops.data.partitions"] == "2013-W02,2013-W03,2013-W04"
    assert mv.tags[tags.APPROVAL] == "auto"

    # when scoring runs on a calm week (part of the model's reference data)
    calm = dags("scoring").test(logical_date=week_end("2013-W03"))

    # then predictions carry the champion's version, a report exists, and no event was sent
    assert calm.state == "success", states(calm)
    preds = pd.read_parquet(st.predictions_dir / "2013-W03.parquet")
    assert len(preds) > 1000 and set(preds["model_version"]) == {first}
    drift = io.read_json(st.reports_dir / "2013-W03" / "drift.json")
    assert drift["breach"] is False and (st.reports_dir / "2013-W03" / "drift.html").is_file()
    assert breach_events(calm.run_id) == []

    # when two drifting weeks are scored before training runs again (a burst)
    runs = [dags("scoring").test(logical_date=week_end(w)) for w in ("2013-W04", "2013-W28")]

    # then each emitted one breach event naming its week and the reasons
    for run, week in zip(runs, ("2013-W04", "2013-W28"), strict=True):
        assert run.state == "success", states(run)
        (event,) = breach_events(run.run_id)
        assert event.extra["partition"] == week and event.extra["reasons"]
        assert event.extra["model_version"] == first
        assert io.read_json(st.reports_dir / week / "drift.json")["breach"] is True

    # when training runs: one retrain handles the whole burst
    retrain = dags("training").test()

    # then the window slid to end at the newest breached week and a new version was trained
    assert retrain.state == "success", states(retrain)
    state = io.read_json(st.state_dir / "retrain.json")
    decision = state["decisions"][retrain.run_id]
    assert decision["run"] and decision["handled"] == ["2013-W04", "2013-W28"]
    assert decision["partitions"] == ["2013-W26", "2013-W27", "2013-W28"]
    trained = io.read_json(st.state_dir / "train.json")["version"]
    assert trained == "2"
    assert connect(st).get_version(name, trained).tags["mlops.data.partitions"] == (
        "2013-W26,2013-W27,2013-W28"
    )
    assert champion(st, name) in (first, trained)  # the gate decides; the run succeeded

    # when another week breaches inside the cooldown and training runs again
    late = dags("scoring").test(logical_date=week_end("2013-W29"))
    assert late.state == "success" and len(breach_events(late.run_id)) == 1
    skipped = dags("training").test()

    # then the run does nothing, and the skipped breach is recorded with the reason
    assert skipped.state == "success"
    assert set(states(skipped).values()) == {"skipped"}
    kept = io.read_json(st.state_dir / "retrain.json")["decisions"][skipped.run_id]
    assert not kept["run"] and kept["skipped"] == ["2013-W29"]
    assert kept["reason"].startswith("cooldown")
    assert io.read_json(st.state_dir / "train.json")["version"] == trained


def test_manual_approval_waits_for_a_person_then_expires(dags, monkeypatch, tmp_path) -> None:
    # given a project whose promotions need a person (and any candidate passes the gate)
    manual = merge(
        WEEKLY,
        {"promote": {"approval": "manual", "min_improvement": -1, "approval_timeout_hours": 0.002}},
    )
    path = make_project(tmp_path / "proj", FLIGHTS, manual)
    params, st = use(monkeypatch, path)
    name = params.model_name
    seen: dict[str, Any] = {}

    def reviewer() -> None:
        """Approve the first version once it waits as challenger with a pending tag."""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                mv = connect(st).version_by_alias(name, CHALLENGER)
            except Exception:  # noqa: BLE001 - the registry is created by the run
                mv = None
            if mv is not None and mv.tags.get(tags.APPROVAL) == "pending":
                seen["pending"] = str(mv.version)
                seen["champion_meanwhile"] = champion(st, name)
                approval.decide(st, name, str(mv.version), True, by="reviewer", note="ok")
                return
            time.sleep(0.5)

    # when training runs and a reviewer approves the pending candidate
    thread = threading.Thread(target=reviewer, daemon=True)
    thread.start()
    dr = dags("training").test()
    thread.join(timeout=10)

    # then it waited as challenger (no champion yet), and the approval made it champion
    assert dr.state == "success", states(dr)
    assert seen == {"pending": "1", "champion_meanwhile": None}
    assert champion(st, name) == "1"
    assert connect(st).version_by_alias(name, CHALLENGER) is None
    events = audit.history(st, name)
    assert events[0]["action"] == "promote" and events[0]["actor"] == "reviewer"
    assert [e["action"] for e in events[1:3]].count("approve") == 1

    # when the next candidate (another seed: the same inputs would give back v1) gets no
    # decision within promote.approval_timeout_hours (7 s)
    raw = yaml.safe_load(path.read_text())
    raw["train"]["seed"] += 1
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    expired = dags("training").test()

    # then it expires: the champion is unchanged and the candidate is retired
    assert expired.state == "success", states(expired)
    assert states(expired)["apply_approval"] == "success"
    assert champion(st, name) == "1"
    assert connect(st).version_by_alias(name, CHALLENGER) is None
    assert approval.status(st, name, "2") == "expired"
