"""runs: every MLflow run the project starts names the Airflow task instance it ran in."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from mlops import runs, tags
from mlops.config import settings
from mlops.registry import connect
from tests.conftest import FLIGHTS

RUN_ID = "scheduled__2013-09-01T03:00:00+00:00"
TASK_ENV = {
    "AIRFLOW_CTX_DAG_ID": "training",
    "AIRFLOW_CTX_DAG_RUN_ID": RUN_ID,
    "AIRFLOW_CTX_TASK_ID": "train",
    "AIRFLOW_CTX_TRY_NUMBER": "2",
    "AIRFLOW_CTX_DAG_OWNER": "mlops",
}
TI_URL = (
    "http://127.0.0.1:8080/dags/training/runs/scheduled__2013-09-01T03%3A00%3A00%2B00%3A00"
    "/tasks/train?try_number=2"
)


def test_the_task_instance_is_named_and_linked_as_airflow_links_it() -> None:
    # given the environment Airflow's task runner exports, and the API's base URL
    got = runs.airflow_tags(TASK_ENV, "http://127.0.0.1:8080/")
    # then the DAG, its run, the task and the try are tags, and the link is its page
    assert got == {
        tags.AIRFLOW_DAG_ID: "training",
        tags.AIRFLOW_DAG_RUN_ID: RUN_ID,
        tags.AIRFLOW_TASK_ID: "train",
        tags.AIRFLOW_TRY_NUMBER: "2",
        tags.AIRFLOW_URL: TI_URL,
    }
    # a mapped task instance is named by its index, and linked as Airflow links it
    mapped = runs.airflow_tags(TASK_ENV, "http://127.0.0.1:8080", map_index=3)
    assert mapped[tags.AIRFLOW_MAP_INDEX] == "3"
    assert mapped[tags.AIRFLOW_URL] == TI_URL.replace("?", "/mapped/3?")
    assert tags.AIRFLOW_MAP_INDEX not in runs.airflow_tags(TASK_ENV, None, map_index=-1)
    # outside a task (Airflow not even loaded) there is no map index
    assert runs.airflow_map_index() is None
    # without a base URL there is no link; outside Airflow there is nothing
    assert tags.AIRFLOW_URL not in runs.airflow_tags(TASK_ENV, None)
    assert tags.AIRFLOW_URL not in runs.airflow_tags(TASK_ENV, "  ")
    assert runs.airflow_tags({"HOME": "/root"}, "http://127.0.0.1:8080") == {}


def test_the_base_url_comes_from_airflows_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # given AIRFLOW__API__BASE_URL (read through Airflow's configuration if it is loaded)
    monkeypatch.setenv(runs.BASE_URL_ENV, "http://airflow.example:8080")
    assert runs.airflow_base_url(dict(os.environ)) == "http://airflow.example:8080"
    # given Airflow not loaded and the setting absent, then no URL is known
    monkeypatch.delenv(runs.BASE_URL_ENV)
    monkeypatch.setitem(sys.modules, "airflow.sdk.configuration", None)
    assert runs.airflow_base_url(dict(os.environ)) is None


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in ("MLFLOW_TRACKING_URI", "MLOPS_PROJECT_ROOT", "MLOPS_DATA_ROOT", "MLOPS_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    for var in (*TASK_ENV, runs.BASE_URL_ENV):
        monkeypatch.delenv(var, raising=False)
    shutil.copy(FLIGHTS, tmp_path / "params.yaml")
    return connect(settings(tmp_path / "params.yaml"))


def test_runs_started_in_an_airflow_task_carry_its_tags(registry, monkeypatch) -> None:
    reg = registry
    exp = reg.experiment_id("runs_test")
    # given a process outside Airflow, a run started there has no Airflow tags
    with runs.start(exp, "outside", {tags.STAGE: "monitor"}) as active:
        outside = active.info.run_id
    assert not any(k.startswith(tags.AIRFLOW_PREFIX) for k in reg.client.get_run(outside).data.tags)

    # given the environment of an Airflow task, with the API's base URL
    for k, v in TASK_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(runs.BASE_URL_ENV, "http://127.0.0.1:8080")
    # when a run is started (fluent API) and another created (client)
    with runs.start(exp, "fluent", {tags.STAGE: "train", tags.CANDIDATE: "hgb"}) as active:
        fluent = active.info.run_id
    created = runs.create(reg.client, exp, "client", {"audit.action": "approve"}).info.run_id
    # then both carry the task instance and their own tags
    for rid, own in ((fluent, {tags.CANDIDATE: "hgb"}), (created, {"audit.action": "approve"})):
        t = reg.client.get_run(rid).data.tags
        assert t[tags.AIRFLOW_DAG_ID] == "training" and t[tags.AIRFLOW_TASK_ID] == "train"
        assert (t[tags.AIRFLOW_DAG_RUN_ID], t[tags.AIRFLOW_TRY_NUMBER]) == (RUN_ID, "2")
        assert t[tags.AIRFLOW_URL] == TI_URL
        assert own.items() <= t.items()

    # when a later try resumes the first run, then the run names the try that resumed it
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "3")
    with runs.start(exp, "ignored", {}, run_id=outside):
        pass
    t = reg.client.get_run(outside).data.tags
    assert t[tags.AIRFLOW_TRY_NUMBER] == "3" and t[tags.AIRFLOW_URL].endswith("try_number=3")
    assert t[tags.STAGE] == "monitor"


def test_how_versions_are_described_is_not_part_of_what_a_version_is_trained_from() -> None:
    # given the modules train imports, which include the ones that write descriptions
    from mlops import stages

    assert {"mlops/describe.py", "mlops/describe_render.py"} <= set(stages.stage_modules("train"))
    # then an edit of the descriptions' wording does not change the training fingerprint
    code = runs.code_identity()
    assert "mlops/describe.py" not in code and "mlops/describe_render.py" not in code
    assert "mlops/runs.py" in code
