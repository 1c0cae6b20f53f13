"""What the Airflow UI shows of a run: run notes, the approval request, the replay's end.

Pure rules and Airflow's own timetable machinery; no DAG run and no database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pendulum
import pytest

from tests.dags.airflow_env import configure

configure()

from airflow.timetables.base import DataInterval, TimeRestriction  # noqa: E402

from mlops.airflow import hitl, notes, tasks  # noqa: E402
from mlops.airflow.timetable import ReplayTimetable  # noqa: E402
from mlops.config import load_params  # noqa: E402
from tests.dags.airflow_env import REPO  # noqa: E402

DECISION = {
    "model_name": "flights",
    "version": "3",
    "promote": False,
    "approval": "auto",
    "outcome": "champion unchanged (gate failed)",
    "reasons": ["roc_auc 0.7410 >= floor 0.65: yes", "gain over champion +0.0000 >= 0.005: no"],
    "metric": "roc_auc",
    "candidate": 0.741,
    "champion": 0.741,
    "champion_version": "1",
    "window": ["2013-03", "2013-04"],
    "links": {"model_version": "http://127.0.0.1:5000/#/models/flights/versions/3"},
}


def test_a_failed_gate_notes_its_numbers_and_the_champion_kept() -> None:
    note = notes.gate(DECISION)
    assert note.startswith("gate failed for v3: ")
    assert "+0.0000 >= 0.005: no" in note and note.endswith("champion v1 kept")
    manual = {**DECISION, "promote": True, "approval": "manual"}
    assert notes.gate(manual).endswith("waits for approval (Required Actions)")
    first = {**DECISION, "champion_version": None}
    assert notes.gate(first).endswith("no champion yet")
    # train gave back the champion: no gate ran, so none failed
    same = {
        **DECISION,
        "reasons": ["v1 is already champion; its gate is not re-run"],
        "outcome": "champion v1 (unchanged)",
    }
    assert notes.gate(same) == (
        "v3 not promoted: v1 is already champion; its gate is not re-run; champion v1 (unchanged)"
    )


def test_a_note_keeps_each_line_once_newest_first_within_airflows_limit() -> None:
    assert notes.merged(None, "a") == "a"
    assert notes.merged("b\na", "a") == "a\nb"
    assert notes.merged("a", "b") == "b\na"
    long = "\n".join(f"line {i} " + "x" * 90 for i in range(30))
    out = notes.merged(long, "newest")
    assert len(out) <= notes.MAX_CHARS and out.startswith("newest\nline 0 ")
    assert "line 29" not in out


def test_without_the_api_connection_a_note_is_only_logged(monkeypatch, caplog) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_AIRFLOW_API", raising=False)

    class Dag:
        dag_id = "training"

    caplog.set_level("INFO")
    assert notes.add("skipped: cooldown", {"dag": Dag(), "run_id": "manual__1"}) is False
    assert "run note: skipped: cooldown" in caplog.text and "mlops_airflow_api" in caplog.text


def test_the_approval_request_shows_the_gate_the_links_and_the_other_ways() -> None:
    until = datetime(2013, 9, 5, 12, tzinfo=UTC)
    text = hitl.body({**DECISION, "promote": True, "approval": "manual"}, until, "/r/card.html")
    assert "**flights v3** passed the promotion gate" in text
    assert "Holdout roc_auc: candidate 0.7410, champion v1: 0.7410" in text
    assert "[MLflow version](http://127.0.0.1:5000/#/models/flights/versions/3)" in text
    assert "Model card: /r/card.html (also among the MLflow run's artifacts)" in text
    assert "Training window: 2013-03, 2013-04" in text
    assert "expires at 2013-09-05 12:00 UTC" in text and "mlops approve flights 3" in text


def test_a_response_that_timed_out_is_an_expiry() -> None:
    event = {"error": "The timeout has passed", "error_type": "timeout"}
    assert hitl.respond(DECISION, event) == "expired"
    with pytest.raises(RuntimeError, match="approval request failed"):
        hitl.respond(DECISION, {"error": "bad", "error_type": "validation"})


def test_manual_training_can_name_its_candidates(monkeypatch) -> None:
    params = load_params(REPO / "params.yaml")
    only = tasks.window(params, ["2013-02", "2013-01"], ["xgb"])
    assert [c.name for c in only.train.candidates] == ["xgb"]
    assert only.train.partitions == ["2013-01", "2013-02"]
    with pytest.raises(ValueError, match=r"candidates \['lgbm'\] are not in train.candidates"):
        tasks.window(params, None, ["lgbm"])


MONTHLY = "0 0 1 * *"


def test_the_replay_stops_scheduling_after_its_end_but_runs_are_not_bounded() -> None:
    end = pendulum.datetime(2013, 12, 31, tz="UTC")
    tt = ReplayTimetable(MONTHLY, "UTC", end)
    start = pendulum.datetime(2013, 7, 1, tz="UTC")
    restriction = TimeRestriction(earliest=start, latest=None, catchup=True)
    first = tt.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert first is not None and first.data_interval.start == start
    dec = DataInterval(pendulum.datetime(2013, 12, 1, tz="UTC"), pendulum.datetime(2014, 1, 1))
    nov = DataInterval(pendulum.datetime(2013, 11, 1, tz="UTC"), dec.start)
    after_nov = tt.next_dagrun_info(last_automated_data_interval=nov, restriction=restriction)
    assert after_nov is not None and after_nov.data_interval.start == dec.start
    # no run after December: the replay ends there
    assert tt.next_dagrun_info(last_automated_data_interval=dec, restriction=restriction) is None
    # open-ended, it goes on
    open_ended = ReplayTimetable(MONTHLY, "UTC")
    assert open_ended.next_dagrun_info(last_automated_data_interval=dec, restriction=restriction)
    assert "until 2013-12-31" in tt.summary and tt.expression == MONTHLY


def test_the_replay_timetable_survives_serialisation_through_the_plugin() -> None:
    from airflow import plugins_manager
    from airflow.serialization.encoders import encode_timetable

    assert "mlops.airflow.timetable.ReplayTimetable" in plugins_manager.get_timetables_plugins()
    tt = ReplayTimetable(MONTHLY, "UTC", datetime(2013, 12, 31, tzinfo=UTC))
    encoded = encode_timetable(tt)
    back = ReplayTimetable.deserialize(encoded["__var"])
    assert isinstance(back, ReplayTimetable) and back.expression == MONTHLY
    assert back.end == datetime(2013, 12, 31, tzinfo=UTC) and back.end - tt.end == timedelta(0)
