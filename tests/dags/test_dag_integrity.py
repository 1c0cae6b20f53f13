"""DAG integrity: the DAGs parse, are wired as the stage order says, and parse light.

Also the pure decisions behind the tasks: retraining plans (cooldown, bursts, the
sliding window), breach-event bookkeeping, data-interval partitions and approval.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.dags.airflow_env import DAGS, REPO, configure

configure()

from airflow.dag_processing.dagbag import DagBag  # noqa: E402

from mlops import dagdefaults, tasks  # noqa: E402

ORDER = {
    "training": [
        "plan",
        "ingest",
        "validate",
        "materialize",
        "train",
        "evaluate",
        "promote",
        "approval",
        "apply_approval",
    ],
    "scoring": ["ingest", "validate", "materialize", "score", "monitor"],
}
HEAVY = [
    "mlflow",
    "feast",
    "great_expectations",
    "evidently",
    "xgboost",
    "sklearn",
    "pandas",
    "dvc",
]
MLOPS_ENV = [
    "MLOPS_SCORING_CRON",
    "MLOPS_SCORING_START",
    "MLOPS_SCORING_END",
    "MLOPS_TRAINING_CRON",
    "MLOPS_APPROVAL_POKE_SECONDS",
]


@pytest.fixture
def bag(monkeypatch) -> DagBag:
    for name in MLOPS_ENV:
        monkeypatch.delenv(name, raising=False)
    return DagBag(dag_folder=str(DAGS))


# --------------------------------------------------------------------------- the DAGs
def test_dagbag_has_both_dags_and_no_import_errors(bag) -> None:
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == set(ORDER)


@pytest.mark.parametrize("dag_id", sorted(ORDER))
def test_dag_has_tags_doc_and_one_active_run(bag, dag_id) -> None:
    dag = bag.dags[dag_id]
    assert "mlops" in dag.tags and len(dag.tags) >= 2
    assert dag.doc_md and dag.doc_md.strip().startswith(f"### {dag_id}")
    assert dag.max_active_runs == 1


@pytest.mark.parametrize("dag_id", sorted(ORDER))
def test_task_graph_follows_the_stage_order(bag, dag_id) -> None:
    dag = bag.dags[dag_id]
    order = ORDER[dag_id]
    assert set(dag.task_ids) == set(order)
    for before, after in zip(order, order[1:], strict=False):
        assert after in dag.get_task(before).downstream_task_ids, f"{before} -> {after}"
    for tid in order:  # nothing runs before an earlier stage
        upstream = dag.get_task(tid).upstream_task_ids
        assert all(order.index(u) < order.index(tid) for u in upstream), tid


@pytest.mark.parametrize("dag_id", sorted(ORDER))
def test_every_step_retries_with_backoff(bag, dag_id) -> None:
    # a lost worker or a killed task process is retried, whatever the step
    for t in bag.dags[dag_id].tasks:
        assert t.retries >= 2 and t.retry_exponential_backoff > 1, t.task_id
        assert t.max_retry_delay is not None
        assert t.execution_timeout is not None
        assert t.pool in (*dagdefaults.POOLS, "default_pool"), t.task_id


def test_errors_a_retry_cannot_fix_fail_the_task_at_once(monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    # given a params file with an unknown key: no retry can fix it
    monkeypatch.setenv("MLOPS_PARAMS", str(REPO / "tests/configs/invalid/unknown_key.yaml"))
    with pytest.raises(AirflowFailException, match="unknown key"):
        tasks.validate(["2013-07"])
    # while a service that is down is left to the retries
    with pytest.raises(ConnectionError), tasks._fail_fast():
        raise ConnectionError("mlflow server unreachable")


def test_ingest_uses_the_dvc_pool_in_both_dags(bag) -> None:
    for dag_id in ORDER:
        assert bag.dags[dag_id].get_task("ingest").pool == dagdefaults.DVC_POOL
    assert dagdefaults.POOLS[dagdefaults.DVC_POOL][0] == 1


def test_breach_asset_connects_monitor_to_training(bag) -> None:
    from airflow.sdk import Asset, AssetAlias

    breach = Asset(name="drift_breach", uri="mlops://drift-breach")
    monitor = bag.dags["scoring"].get_task("monitor")
    assert monitor.outlets == [AssetAlias(dagdefaults.DRIFT_BREACH_ALIAS)]
    training = bag.dags["training"]
    assert list(training.timetable.asset_condition.objects) == [breach]
    assert training.get_task("plan").inlets == [breach]
    assert not training.catchup


def test_training_can_be_breach_only(monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_TRAINING_CRON", "none")
    dag = DagBag(dag_folder=str(DAGS / "training.py")).dags["training"]
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"


def test_scoring_replays_2013_monthly_with_catchup(bag) -> None:
    dag = bag.dags["scoring"]
    assert dag.catchup
    assert dag.timetable.expression == "0 0 1 * *"
    assert dag.start_date == datetime(2013, 7, 1, tzinfo=UTC)
    assert dag.end_date == datetime(2013, 12, 31, tzinfo=UTC)


def test_approval_waits_in_reschedule_mode(bag) -> None:
    sensor = bag.dags["training"].get_task("approval")
    assert sensor.mode == "reschedule"
    assert sensor.timeout == dagdefaults.APPROVAL_BACKSTOP.total_seconds()
    assert sensor.poke_interval == 60


IMPORT_PROBE = """
import importlib.util, json, sys, time
path = sys.argv[1]
import airflow.sdk  # what the DAG processor has loaded before it parses a file
before = set(sys.modules)
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("probe_dag", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "new": sorted({m.split(".")[0] for m in set(sys.modules) - before}),
                  "all": sorted({m.split(".")[0] for m in sys.modules})}))
"""


@pytest.mark.parametrize("dag_file", ["training.py", "scoring.py"])
def test_dag_file_imports_no_heavy_library(dag_file, record_property) -> None:
    # given a fresh interpreter (clean sys.modules), when the DAG file is imported
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(DAGS / dag_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    # then none of the heavy libraries was imported, by the file or by Airflow itself
    assert [m for m in HEAVY if m in probe["all"]] == []
    record_property(f"import_s_{dag_file}", round(probe["seconds"], 4))


@pytest.mark.parametrize("dag_file", ["training.py", "scoring.py"])
def test_dag_file_parse_time_is_recorded(dag_file, record_property) -> None:
    # measured, not asserted: the number goes in the report (junit property / -s output)
    t = time.perf_counter()
    bag = DagBag(dag_folder=str(DAGS / dag_file))
    seconds = time.perf_counter() - t
    assert bag.import_errors == {} and len(bag.dag_ids) == 1
    record_property(f"dagbag_parse_s_{dag_file}", round(seconds, 4))
    print(f"\nDagBag parse {dag_file}: {seconds * 1000:.0f} ms")


# --------------------------------------------------------------------------- plan_retrain
NOW = datetime(2013, 9, 2, 12, tzinfo=UTC)
DAY = timedelta(hours=24)
WINDOW = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05", "2013-06"]


def breach(pid: str, i: int = 1) -> dict:
    return {"id": i, "timestamp": NOW, "partition": pid, "reasons": ["drift"]}


def test_scheduled_run_without_breaches_trains_the_configured_window() -> None:
    p = tasks.plan_retrain([], None, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions == WINDOW and p.handled == [] and p.skipped == []


def test_triggered_run_whose_breaches_were_already_handled_does_nothing() -> None:
    p = tasks.plan_retrain([], None, NOW, DAY, WINDOW, "month", triggered=True)
    assert not p.run and "already handled" in p.reason


def test_breach_slides_the_window_to_end_at_the_breached_partition() -> None:
    p = tasks.plan_retrain([breach("2013-08")], None, NOW, DAY, WINDOW, "month")
    assert p.run
    assert p.partitions == ["2013-03", "2013-04", "2013-05", "2013-06", "2013-07", "2013-08"]
    assert p.handled == ["2013-08"] and "2013-08" in p.reason


def test_breach_inside_the_configured_window_keeps_it() -> None:
    p = tasks.plan_retrain([breach("2013-02")], None, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions == WINDOW and p.handled == ["2013-02"]


def test_burst_of_breaches_gives_one_retrain_on_the_newest() -> None:
    burst = [breach("2013-07", 1), breach("2013-09", 3), breach("2013-08", 2)]
    p = tasks.plan_retrain(burst, None, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions[-1] == "2013-09" and len(p.partitions) == len(WINDOW)
    assert p.handled == ["2013-07", "2013-08", "2013-09"] and p.skipped == []


def test_breaches_inside_the_cooldown_are_skipped_with_the_reason() -> None:
    last = NOW - timedelta(hours=3)
    p = tasks.plan_retrain(
        [breach("2013-08"), breach("2013-09", 2)], last, NOW, DAY, WINDOW, "month"
    )
    assert not p.run and p.partitions == []
    assert p.skipped == ["2013-08", "2013-09"] and p.handled == []
    assert p.reason.startswith("cooldown") and "21:00:00 of the 24 h cooldown" in p.reason
    assert "2013-08, 2013-09" in p.reason


def test_breach_after_the_cooldown_retrains_again() -> None:
    p = tasks.plan_retrain([breach("2013-10")], NOW - DAY, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions[-1] == "2013-10"


def test_weekly_window_crosses_the_year() -> None:
    p = tasks.plan_retrain(
        [breach("2014-W01")], None, NOW, DAY, ["2013-W02", "2013-W03", "2013-W04"], "week"
    )
    assert p.partitions == ["2013-W51", "2013-W52", "2014-W01"]


def test_event_without_partition_retrains_the_configured_window() -> None:
    p = tasks.plan_retrain([{"id": 9, "timestamp": NOW}], None, NOW, DAY, WINDOW, "month")
    assert p.run and p.partitions == WINDOW and "without a partition" in p.reason


@pytest.mark.parametrize(
    ("last", "n", "freq", "expected"),
    [
        ("2013-03", 3, "month", ["2013-01", "2013-02", "2013-03"]),
        ("2013-01", 2, "month", ["2012-12", "2013-01"]),
        ("2013-W02", 3, "week", ["2012-W52", "2013-W01", "2013-W02"]),
        ("2013-03-01", 2, "day", ["2013-02-28", "2013-03-01"]),
        ("2013-07", 1, "month", ["2013-07"]),
    ],
)
def test_previous_partitions(last, n, freq, expected) -> None:
    assert tasks.previous_partitions(last, n, freq) == expected


# --------------------------------------------------------------------------- bookkeeping
def test_unhandled_events_are_those_after_the_watermark_or_new_at_it() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        {"id": 5, "timestamp": t0 + timedelta(seconds=2)},
        {"id": 1, "timestamp": t0 - timedelta(seconds=1)},
        {"id": 3, "timestamp": t0},
        {"id": 4, "timestamp": t0},
    ]
    assert tasks.unhandled(events, None, []) == sorted(
        events, key=lambda e: (e["timestamp"], e["id"])
    )
    new = tasks.unhandled(events, t0.isoformat(), [3])
    assert [e["id"] for e in new] == [4, 5]


def test_unhandled_survives_a_reset_airflow_db() -> None:
    # ids start again at 1 after `airflow db reset`; timestamps keep moving forward
    mark = datetime(2026, 1, 1, tzinfo=UTC)
    later = [{"id": 1, "timestamp": mark + timedelta(days=1)}]
    assert tasks.unhandled(later, mark.isoformat(), [57]) == later


def test_breach_event_extra_is_small_and_json() -> None:
    extra = tasks.breach_event(
        {
            "partition": "2013-07",
            "reasons": ["6/14 features drifted"],
            "report": "/r/2013-07/drift.html",
            "model_version": "3",
            "breach": True,
        }
    )
    assert extra == {
        "partition": "2013-07",
        "reasons": ["6/14 features drifted"],
        "report": "/r/2013-07/drift.html",
        "model_version": "3",
    }
    json.dumps(extra)


@pytest.mark.parametrize(
    ("start", "end", "freq", "expected"),
    [
        ("2013-07-01T00:00:00+00:00", "2013-08-01T00:00:00+00:00", "month", ["2013-07"]),
        ("2013-07-08T00:00:00+00:00", "2013-07-15T00:00:00+00:00", "week", ["2013-W28"]),
        ("2013-12-30T00:00:00+00:00", "2014-01-06T00:00:00+00:00", "week", ["2014-W01"]),
        (
            "2013-07-08T00:00:00+00:00",
            "2013-07-11T00:00:00+00:00",
            "day",
            ["2013-07-08", "2013-07-09", "2013-07-10"],
        ),
        ("2013-07-01T00:00:00+00:00", "2013-09-01T00:00:00+00:00", "month", ["2013-07", "2013-08"]),
    ],
)
def test_interval_partitions_are_the_data_interval(start, end, freq, expected) -> None:
    assert (
        tasks.interval_partitions(datetime.fromisoformat(start), datetime.fromisoformat(end), freq)
        == expected
    )


def test_interval_not_made_of_whole_partitions_names_the_fix() -> None:
    with pytest.raises(ValueError, match="MLOPS_SCORING_CRON"):
        tasks.interval_partitions(
            datetime(2013, 7, 1, tzinfo=UTC), datetime(2013, 8, 1, tzinfo=UTC), "week"
        )
    with pytest.raises(ValueError, match="MLOPS_SCORING_CRON"):
        tasks.interval_partitions(
            datetime(2013, 7, 1, 12, tzinfo=UTC), datetime(2013, 7, 3, tzinfo=UTC), "day"
        )
    with pytest.raises(ValueError, match="no data interval"):
        tasks.interval_partitions(None, None, "month")


def test_named_partitions_are_checked_against_the_partitioning() -> None:
    assert tasks.named_partitions(["2013-W04", "2013-W03", "2013-W04"], "week") == [
        "2013-W03",
        "2013-W04",
    ]
    with pytest.raises(ValueError, match="not a week partition"):
        tasks.named_partitions(["2013-07"], "week")
    with pytest.raises(ValueError, match="not a partition id"):
        tasks.named_partitions(["../2013-07"], "month")


def test_scoring_maps_score_and_monitor_over_the_runs_partitions(bag) -> None:
    dag = bag.dags["scoring"]
    assert dag.params["partitions"] == []
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    for tid in ("score", "monitor"):
        assert isinstance(dag.get_task(tid), MappedOperator), tid
    assert not isinstance(dag.get_task("materialize"), MappedOperator)


# --------------------------------------------------------------------------- approval
def decision(**kw) -> dict:
    return {"promote": True, "approval": "manual", "at": NOW.isoformat(), **kw}


@pytest.mark.parametrize(
    ("dec", "status", "after", "expected"),
    [
        (decision(approval="auto"), None, 0, "not_required"),
        (decision(promote=False), None, 0, "not_required"),
        (decision(), "pending", 1, None),
        (decision(), "approved", 1, "approved"),
        (decision(), "rejected", 1, "rejected"),
        (decision(), "pending", 72, "expired"),
        (decision(), "approved", 100, "approved"),
    ],
)
def test_approval_outcome(dec, status, after, expected) -> None:
    now = NOW + timedelta(hours=after)
    assert tasks.approval_outcome(dec, status, now, timedelta(hours=72)) == expected
