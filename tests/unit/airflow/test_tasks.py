"""The Airflow adapter's own rules: one door per task, and which errors fail it at once.

No DAG is parsed and no Airflow database is needed; only Airflow's exceptions are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.dags.airflow_env import REPO, configure

configure()

from airflow.sdk.exceptions import AirflowFailException  # noqa: E402

from mlops.airflow import door, hitl, tasks  # noqa: E402
from mlops.config import load_params  # noqa: E402
from tests.configs.cases import case  # noqa: E402


@pytest.fixture
def invalid_params(tmp_path: Path, monkeypatch) -> Path:
    """MLOPS_PARAMS at the repo's params.yaml with one unknown key (train.epochs)."""
    path = tmp_path / "params.yaml"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["epochs"] = 3
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("MLOPS_PARAMS", str(path))
    return path


def test_errors_a_retry_cannot_fix_fail_the_task_at_once(tmp_path, monkeypatch) -> None:
    # given a params file with an unknown key: no retry can fix it
    monkeypatch.setenv("MLOPS_PARAMS", str(case("unknown_key").write(tmp_path)))
    with pytest.raises(AirflowFailException, match="unknown key"):
        tasks.validate(["2013-07"])
    # while a service that is down is left to the retries (not an AirflowFailException)
    retried = pytest.raises(door.TaskError, match="ConnectionError: mlflow server unreachable")
    with retried, door._fail_fast():
        raise ConnectionError("mlflow server unreachable")


def test_a_failed_task_raises_no_credential_and_no_chained_cause(monkeypatch, caplog) -> None:
    # given a password in the tracking URI, quoted by an error and by its chained cause
    secret = "s3cr3t-pw"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://mlops:{secret}@tracking:5000")

    def failing(permanent: bool) -> None:
        try:
            raise ConnectionError(f"GET http://mlops:{secret}@tracking:5000/api refused")
        except ConnectionError as cause:
            if permanent:
                raise ValueError(f"bad answer from http://mlops:{secret}@tracking:5000") from cause
            raise

    for permanent, kind in ((True, AirflowFailException), (False, door.TaskError)):
        # when a task fails with it, permanently or for the retries
        with pytest.raises(kind) as err, door._fail_fast():
            failing(permanent)
        # then what Airflow gets carries the masked message and nothing chained
        assert "http://***@tracking:5000" in str(err.value) and secret not in str(err.value)
        assert err.value.__cause__ is None and err.value.__suppress_context__
    # and the tracebacks logged for the task log are whole but masked
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged.count("Traceback (most recent call last)") >= 2 and secret not in logged


def test_every_task_loads_its_config_through_the_one_door(invalid_params) -> None:
    # given an invalid params.yaml, when the tasks that decide rather than run a stage
    # are called, then each fails at once naming the key: the config is loaded in _call
    decision = {
        "model_name": "flights",
        "version": "3",
        "promote": True,
        "approval": "manual",
        "outcome": "pending approval",
        "at": datetime(2013, 9, 2, tzinfo=UTC).isoformat(),
    }
    calls = {
        "plan": lambda: tasks.plan({}, "manual__1"),
        "approval": lambda: hitl.request(decision),
        "apply_approval": lambda: tasks.apply_approval(decision, "approved"),
    }
    for name, call in calls.items():
        with pytest.raises(AirflowFailException, match=r"train\.epochs: unknown key") as err:
            call()
        assert str(invalid_params) in str(err.value), name


def test_scoring_partitions_come_from_the_run_or_its_data_interval(monkeypatch) -> None:
    # given the repo's monthly partitioning
    monkeypatch.setenv("MLOPS_PARAMS", str(REPO / "params.yaml"))
    july, august = datetime(2013, 7, 1, tzinfo=UTC), datetime(2013, 8, 1, tzinfo=UTC)
    # then named partitions win over the interval, checked and sorted
    assert tasks.partitions_of(july, august, ["2013-09", "2013-08"]) == ["2013-08", "2013-09"]
    assert tasks.partitions_of(july, august) == ["2013-07"]
    # and an interval that no retry can make whole fails the task at once
    with pytest.raises(AirflowFailException, match=r"schedule\.scoring"):
        tasks.partitions_of(july, datetime(2013, 7, 15, tzinfo=UTC))
    with pytest.raises(AirflowFailException, match="not a month partition"):
        tasks.partitions_of(None, None, ["2013-W28"])


def test_window_replaces_only_the_training_partitions() -> None:
    params = load_params(REPO / "params.yaml")
    assert tasks.window(params, None) is params and tasks.window(params, []) is params
    moved = tasks.window(params, ["2013-05", "2013-04"])
    assert moved.train.partitions == ["2013-04", "2013-05"]
    assert moved.train.model_copy(update={"partitions": params.train.partitions}) == params.train
    assert moved.contract == params.contract and params.train.partitions != ["2013-04", "2013-05"]
