"""DAG integrity: the DAGs parse, are wired as the stage order says, and parse light.

The pure decisions behind the tasks are unit tests: tests/unit/test_retrain.py,
test_partitions.py and test_approval.py; the task adapter's in tests/unit/airflow/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from tests.dags.airflow_env import DAGS, REPO, configure

configure()

from airflow.dag_processing.dagbag import DagBag  # noqa: E402

from mlops.airflow import defaults  # noqa: E402

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
        assert t.pool in (*defaults.POOLS, "default_pool"), t.task_id


def test_ingest_uses_the_dvc_pool_in_both_dags(bag) -> None:
    for dag_id in ORDER:
        assert bag.dags[dag_id].get_task("ingest").pool == defaults.DVC_POOL
    assert defaults.POOLS[defaults.DVC_POOL][0] == 1


def test_breach_asset_connects_monitor_to_training(bag) -> None:
    from airflow.sdk import Asset, AssetAlias

    breach = Asset(name="drift_breach", uri="mlops://drift-breach")
    monitor = bag.dags["scoring"].get_task("monitor")
    assert monitor.outlets == [AssetAlias(defaults.DRIFT_BREACH_ALIAS)]
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
    assert sensor.timeout == defaults.APPROVAL_BACKSTOP.total_seconds()
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


def test_scoring_maps_score_and_monitor_over_the_runs_partitions(bag) -> None:
    dag = bag.dags["scoring"]
    assert dag.params["partitions"] == []
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    for tid in ("score", "monitor"):
        assert isinstance(dag.get_task(tid), MappedOperator), tid
    assert not isinstance(dag.get_task("materialize"), MappedOperator)
