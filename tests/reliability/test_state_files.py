"""A state file of the pipeline is damaged or deleted by hand: the file is named with what to
do, and nothing falls back to a state that was never true (such as "no cooldown")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops import io
from mlops.airflow.defaults import DRIFT_BREACH_NAME, DRIFT_BREACH_URI
from tests.conftest import REPO
from tests.integration.airflow_stack import dags_test

pytestmark = pytest.mark.integration
AREA = "Damaged state files"

# Two scoring runs' breach events (July, then August), then the training DAG's `plan`
# task as dags/training.py declares it, all on Airflow's real task runner and assets.
BREACHES_THEN_PLAN = f'''
from airflow.sdk import Asset, dag, task

BREACH = Asset(name="{DRIFT_BREACH_NAME}", uri="{DRIFT_BREACH_URI}")


@dag(schedule=None, dag_id="breaches_then_plan")
def breaches_then_plan():
    def breach(partition):
        @task(task_id=f"monitor_{{partition}}", outlets=[BREACH], retries=0)
        def monitor(outlet_events=None):
            outlet_events[BREACH].extra = {{"partition": partition, "reasons": ["drift"]}}

        return monitor()

    @task(task_id="plan", inlets=[BREACH], retries=0)
    def plan(inlet_events=None, run_id=None):
        from mlops.airflow import tasks

        # as if August's breach triggered this run (July's taken by an earlier run)
        newest = list(inlet_events[BREACH])[-1]
        return tasks.plan(inlet_events, run_id, {{BREACH: [newest]}})

    breach("2013-07") >> breach("2013-08") >> plan()


breaches_then_plan()
'''


def _project(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A params.yaml (monthly partitions, 24 h cooldown), the DAG folder, the state file."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "breaches_then_plan.py").write_text(BREACHES_THEN_PLAN)
    params = tmp_path / "proj" / "params.yaml"
    params.parent.mkdir()
    params.write_text((REPO / "params.yaml").read_text())
    return params, tmp_path / "dags", params.parent / "data" / "state" / "retrain.json"


def test_truncated_retrain_state(tmp_path: Path) -> None:
    """Case: `data/state/retrain.json` (the retraining watermark, cooldown and decisions) is
    truncated, e.g. by a disk that filled up under an editor.
    Behaviour: the training DAG's `plan` fails at once (no retries) naming the file, where it
    breaks and what to do (delete it: the next run rebuilds it from the breach events); the
    file is left as it was
    """
    params, dags, state = _project(tmp_path)
    state.parent.mkdir(parents=True)
    state.write_text('{"watermark": "2013-09-02T00:00:00+00:00", "ids_at_')
    before = state.read_bytes()

    out, text = dags_test(dags, params, tmp_path / "airflow", "breaches_then_plan")

    assert out.returncode != 0
    assert f"{state}: damaged state file, not valid JSON" in text, text[-3000:]
    assert "Delete it: the next training run rebuilds it" in text
    assert state.read_bytes() == before


def test_deleted_retrain_state_keeps_the_cooldown(tmp_path: Path) -> None:
    """Case: `data/state/retrain.json` is deleted while the drift-breach asset holds past events
    (a retrain was just planned from July's; August's triggers the next run).
    Behaviour: `plan` rebuilds the state from the asset's own events (a warning names the file):
    the breaches earlier runs took count as handled and the cooldown runs from the newest of
    them, so no retrain is planned straight away: August's is skipped with the cooldown reason
    """
    params, dags, state = _project(tmp_path)

    out, text = dags_test(dags, params, tmp_path / "airflow", "breaches_then_plan")

    assert f"{state} is missing: rebuilt from 2 drift-breach event(s)" in text, text[-3000:]
    kept = io.read_json(state)
    (decision,) = kept["decisions"].values()
    assert not decision["run"] and decision["handled"] == []
    assert decision["skipped"] == ["2013-08"] and decision["reason"].startswith("cooldown")
    assert len(decision["events"]) == 1
    assert json.dumps(kept)  # and it is whole JSON again
