"""DAG integrity: the DAGs parse, are wired as the stage order says, and parse light.

Their calendar comes from the params.yaml that ``MLOPS_PARAMS`` names: the repo's demo,
or a small params file per test for other cadences and for one that does not load.
The pure decisions behind the tasks are unit tests: tests/unit/test_retrain.py,
test_partitions.py and test_approval.py; the task adapter's in tests/unit/airflow/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dags.airflow_env import DAGS, REPO, configure

configure()

from airflow.dag_processing.dagbag import DagBag  # noqa: E402

from mlops.airflow import defaults  # noqa: E402
from tests.conftest import FLIGHTS, merge  # noqa: E402

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
    "scoring": ["ingest", "validate", "materialize", "score", "label", "monitor"],
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
# The variables that used to set the calendar: set to values no test project uses, they
# must change nothing now that the calendar lives in params.yaml.
OLD_SCHEDULE_ENV = {
    "MLOPS_SCORING_CRON": "0 0 * * 1",
    "MLOPS_SCORING_START": "2001-01-01",
    "MLOPS_SCORING_END": "2001-02-01",
    "MLOPS_TRAINING_CRON": "none",
}
PARSE_LIMIT_S = 0.3


def params_file(folder: Path, overrides: dict[str, Any]) -> Path:
    """The demo's params.yaml with ``overrides`` merged in, written to ``folder``."""
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(FLIGHTS.read_text()), overrides)))
    return path


def parse(monkeypatch, params: Path, dag_file: str | None = None) -> DagBag:
    """Parse the real DAG files (or one) with ``MLOPS_PARAMS`` at ``params``."""
    monkeypatch.setenv("MLOPS_PARAMS", str(params))
    monkeypatch.delenv("MLOPS_APPROVAL_POKE_SECONDS", raising=False)
    return DagBag(dag_folder=str(DAGS / dag_file if dag_file else DAGS))


@pytest.fixture
def bag(monkeypatch) -> DagBag:
    for name in OLD_SCHEDULE_ENV:
        monkeypatch.delenv(name, raising=False)
    return parse(monkeypatch, REPO / "params.yaml")


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
    for tid in ("monitor", "label"):
        task = bag.dags["scoring"].get_task(tid)
        assert task.outlets == [AssetAlias(defaults.DRIFT_BREACH_ALIAS)], tid
    scoring = bag.dags["scoring"]
    assert scoring.get_task("label").upstream_task_ids == {"materialize", "score"}
    assert scoring.get_task("monitor").upstream_task_ids == {"score", "label"}
    assert scoring.get_task("monitor").trigger_rule == "none_failed"
    training = bag.dags["training"]
    assert list(training.timetable.asset_condition.objects) == [breach]
    assert training.get_task("plan").inlets == [breach]
    assert not training.catchup


def test_training_can_be_breach_only(monkeypatch, tmp_path) -> None:
    # given schedule.training: null in params.yaml
    params = params_file(tmp_path, {"schedule": {"training": None}})
    # when the training DAG is parsed, then only the drift breach starts it
    dag = parse(monkeypatch, params, "training.py").dags["training"]
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"


def test_scoring_replays_2013_monthly_with_catchup(bag) -> None:
    dag = bag.dags["scoring"]
    assert dag.catchup
    assert dag.timetable.expression == "0 0 1 * *"
    assert dag.start_date == datetime(2013, 7, 1, tzinfo=UTC)
    # the replay's end bounds the schedule, not the DAG: a manual run after it has tasks
    assert dag.end_date is None and dag.timetable.end == datetime(2013, 12, 31, tzinfo=UTC)
    training = bag.dags["training"]
    assert training.timetable.timetable.expression == "0 3 1 */3 *"
    assert training.start_date == datetime(2013, 1, 1, tzinfo=UTC)


DAILY_2021 = {
    "ingest": {"partition": "day"},
    "train": {"partitions": {"from": "2021-03-01", "to": "2021-03-28"}},
    "score": {"partitions": {"from": "2021-03-29", "to": "2021-04-30"}},
    "schedule": {"training": "0 6 * * 1", "end": "2021-04-30"},
}
YEARLY_2016 = {
    "ingest": {"partition": "year"},
    "train": {"partitions": ["2016", "2017", "2018"]},
    "score": {"partitions": ["2019"]},
    "schedule": {"training": None, "end": None},
}
WEEKLY_OVER_DAYS = {
    "ingest": {"partition": "day"},
    "train": {"partitions": {"last": 14, "to": "2020-02-02"}},
    "score": {"partitions": []},
    "schedule": {"scoring": "0 0 * * 1", "start": "2020-02-03T01:00:00+01:00", "end": None},
}


@pytest.mark.parametrize(
    ("overrides", "want"),
    [
        (DAILY_2021, ("0 0 * * *", "2021-03-29", "2021-04-30", "0 6 * * 1", "2021-03-01")),
        (YEARLY_2016, ("0 0 1 1 *", "2019-01-01", None, None, "2016-01-01")),
        (WEEKLY_OVER_DAYS, ("0 0 * * 1", "2020-02-03", None, "0 3 1 */3 *", "2020-01-20")),
    ],
    ids=["daily-2021", "yearly-2016", "weekly-over-days"],
)
def test_the_calendar_comes_from_params_alone(monkeypatch, tmp_path, overrides, want) -> None:
    # given a project on another cadence and years, and the old variables set to others
    for name, value in OLD_SCHEDULE_ENV.items():
        monkeypatch.setenv(name, value)
    params = params_file(tmp_path, overrides)
    cron, start, end, training_cron, training_start = want

    # when the real DAG files are parsed with MLOPS_PARAMS pointing at it
    bag = parse(monkeypatch, params)

    # then the scoring DAG replays that project's partitions on its cadence
    assert bag.import_errors == {}
    scoring = bag.dags["scoring"]
    assert scoring.timetable.expression == cron
    assert scoring.start_date == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert scoring.timetable.end == (end and datetime.fromisoformat(end).replace(tzinfo=UTC))
    # and training runs on schedule.training from the start of its first partition
    training = bag.dags["training"]
    if training_cron is None:
        assert type(training.timetable).__name__ == "AssetTriggeredTimetable"
    else:
        assert training.timetable.timetable.expression == training_cron
    assert training.start_date == datetime.fromisoformat(training_start).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"schedule": {"start": "July 2013"}}, "schedule.start"),
        ({"schedule": {"scoring": "monthly"}}, "schedule.scoring"),
        ({"schedule": {"training": "61 0 * * *"}}, "schedule.training"),
        ({"schedule": {"every": "month"}}, "schedule.every: unknown key"),
    ],
)
def test_a_bad_params_file_is_each_dags_import_error_naming_the_key(
    monkeypatch, tmp_path, overrides, key
) -> None:
    # given a params.yaml whose schedule group does not load
    params = params_file(tmp_path, overrides)
    # when the DAG folder is parsed
    bag = parse(monkeypatch, params)
    # then no DAG is half-made: each file is an import error naming the file and the key
    assert bag.dag_ids == []
    assert {Path(f).name for f in bag.import_errors} == {"training.py", "scoring.py"}
    for message in bag.import_errors.values():
        assert key in message and str(params) in message, message


def test_a_missing_params_file_names_the_path_and_the_variable(monkeypatch, tmp_path) -> None:
    # given MLOPS_PARAMS naming a file that is not there
    bag = parse(monkeypatch, tmp_path / "nowhere" / "params.yaml")
    # then each DAG file fails to import, saying which file and which variable to set
    assert bag.dag_ids == [] and len(bag.import_errors) == 2
    for message in bag.import_errors.values():
        assert "nowhere/params.yaml: configuration file not found" in message
        assert "MLOPS_PARAMS" in message


def test_approval_is_a_required_action_with_approve_and_reject(bag) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    op = bag.dags["training"].get_task("approval")
    # Airflow's own human-in-the-loop operator: it shows on the Required Actions page
    assert isinstance(op, HITLOperator)
    assert op.options == ["Approve", "Reject"] and not op.multiple and op.defaults is None
    assert "note" in op.params and op.poke_interval == 60
    # it waits deferred with its own timeout; the execution timeout bounds its steps only
    assert op.execution_timeout == defaults.DEFAULT_ARGS["execution_timeout"]
    assert op.upstream_task_ids == {"promote"}
    assert bag.dags["training"].get_task("apply_approval").upstream_task_ids == {
        "promote",
        "approval",
    }


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
def test_dag_file_parses_well_under_the_limit(dag_file, monkeypatch, record_property) -> None:
    # given the DAG file, which reads params.yaml for its calendar
    monkeypatch.setenv("MLOPS_PARAMS", str(REPO / "params.yaml"))
    # when it is parsed
    t = time.perf_counter()
    bag = DagBag(dag_folder=str(DAGS / dag_file))
    seconds = time.perf_counter() - t
    # then it parsed, and fast: the DAG processor re-parses it every few seconds
    assert bag.import_errors == {} and len(bag.dag_ids) == 1
    record_property(f"dagbag_parse_s_{dag_file}", round(seconds, 4))
    print(f"\nDagBag parse {dag_file}: {seconds * 1000:.0f} ms")
    assert seconds < PARSE_LIMIT_S


def test_scoring_maps_score_and_monitor_over_the_runs_partitions(bag) -> None:
    dag = bag.dags["scoring"]
    # the trigger form's partitions are optional (null: the run's data interval)
    assert dag.params["partitions"] is None
    assert dag.params.get_param("partitions").schema["type"] == ["null", "array"]
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    for tid in ("score", "monitor"):
        assert isinstance(dag.get_task(tid), MappedOperator), tid
        # the grid names each mapped task by its partition, not 0, 1, 2
        assert dag.get_task(tid).map_index_template == "{{ partition }}", tid
    assert not isinstance(dag.get_task("materialize"), MappedOperator)
