"""alerts: every kind of message says what happened, the partition, the model version and
where to look, and no credential reaches it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops import alerts

MONITOR = {
    "partition": "2013-08",
    "breach": True,
    "reasons": ["3 of 12 features drifted (share 0.25 > 0.2)"],
    "report": "/proj/data/reports/2013-08/drift.html",
    "model_version": "4",
}
DECISION = {
    "model_name": "flights_delay",
    "version": "5",
    "promote": False,
    "approval": "auto",
    "outcome": "champion v4 (kept)",
}
AIRFLOW = {
    "dag_id": "scoring",
    "dag_run_id": "scheduled__2013-08-01T00:00:00+00:00",
    "task_id": "monitor",
    "try_number": 2,
    "log_url": "http://airflow.local:8080/dags/scoring/runs/x/tasks/monitor?try_number=2",
    "airflow_url": "http://airflow.local:8080/dags/scoring/runs/x",
}
VALIDATE_ERROR = (
    "data/raw/2013-09.parquet failed validation: column 'dep_delay': values between: 3 rows\n"
    "1 partition(s) moved to data/quarantine/<partition>/ with validation.json; fix the "
    "source or the contract in params.yaml, then re-run ingest and validate."
)


def every_kind() -> dict[str, alerts.Alert]:
    """One alert of each kind, as the task adapter and the callbacks build them."""
    where = {"model_name": "flights_delay", "mlflow_run_id": "abc123", **AIRFLOW}
    return {
        "drift_breach": alerts.breach(MONITOR, **where),
        "performance_breach": alerts.breach(
            {**MONITOR, "kind": "performance", "reasons": ["roc_auc 0.61 < holdout 0.70 - 0.05"]},
            **where,
        ),
        "gate_failed": alerts.gate_failed(
            DECISION, ("roc_auc 0.66 < champion 0.70",), partition="2013-08", **AIRFLOW
        ),
        "quarantined": alerts.task_failure(
            VALIDATE_ERROR,
            Path("/proj/data/quarantine"),
            model_name="flights_delay",
            model_version="4",
            **AIRFLOW,
        ),
        "approval_pending": alerts.approval_pending(
            {**DECISION, "promote": True, "approval": "manual"}, partition="2013-08", **AIRFLOW
        ),
        "task_failed": alerts.task_failure(
            "ConnectionError: mlflow server unreachable",
            partition="2013-08",
            model_name="flights_delay",
            model_version="4",
            **AIRFLOW,
        ),
        "dag_failed": alerts.dag_failure(
            "scoring",
            "task_failure",
            "score",
            partition="2013-08",
            model_name="flights_delay",
            model_version="4",
            **{k: v for k, v in AIRFLOW.items() if k not in ("dag_id", "task_id")},
        ),
    }


def test_there_is_one_example_of_each_kind() -> None:
    # given the examples, then each is of the kind it is filed under, and all kinds are there
    examples = every_kind()
    assert {k: a.kind for k, a in examples.items()} == {k: k for k in alerts.KINDS}


@pytest.mark.parametrize("kind", sorted(alerts.KINDS))
def test_every_message_names_what_where_which_model_and_where_to_look(kind: str) -> None:
    # given an alert of this kind, when its message is made
    alert = every_kind()[kind]
    msg = alerts.message(alert)
    # then subject and both bodies say what happened, the partition and the model version
    for body in (msg.subject, msg.text, msg.html):
        assert alerts.KINDS[kind] in body
    partition = "2013-09" if kind == "quarantined" else "2013-08"
    version = {"gate_failed": "v5", "approval_pending": "v5"}.get(kind, "v4")
    for body in (msg.subject, msg.text):
        assert partition in body and version in body, body
    # and where to look: the Airflow run and task log, as links in the HTML
    assert "Airflow run: scoring / scheduled__2013-08-01" in msg.text
    assert f'href="{AIRFLOW["log_url"]}"' in msg.html
    assert "try 2" in msg.text
    # and the webhook payload carries the text (Slack shows it) and the same facts as fields
    assert msg.payload["text"] == msg.text
    assert (msg.payload["kind"], msg.payload["partition"]) == (kind, alert.partition)
    json.dumps(msg.payload)


def test_a_breach_points_at_its_report_and_mlflow_run_with_its_reasons() -> None:
    # given a drift breach on a tracking server, and a performance breach
    alert = alerts.breach(MONITOR, model_name="flights_delay", mlflow_run_id="abc123").where(
        tracking_uri="http://mlflow.local:5000/"
    )
    perf = alerts.breach({**MONITOR, "kind": "performance"})
    msg = alerts.message(alert)
    # then the message names the report, the reasons and links to the run and the version
    assert "Report: /proj/data/reports/2013-08/drift.html" in msg.text
    assert "- 3 of 12 features drifted (share 0.25 > 0.2)" in msg.text
    assert "http://mlflow.local:5000/#/runs/abc123" in msg.text
    assert msg.payload["model_url"] == "http://mlflow.local:5000/#/models/flights_delay/versions/4"
    # and the breach's origin decides the kind
    assert (alert.kind, perf.kind) == ("drift_breach", "performance_breach")
    assert "realised performance" in perf.summary


def test_a_local_tracking_store_gives_the_run_id_and_the_store_without_a_link() -> None:
    # given a run tracked in a SQLite store
    alert = alerts.breach(MONITOR, mlflow_run_id="abc123", tracking_uri="sqlite:////p/mlflow.db")
    msg = alerts.message(alert)
    # then the run id and the store are named, and no URL is made up
    assert "MLflow run: abc123 (sqlite:////p/mlflow.db)" in msg.text
    assert msg.payload["mlflow_url"] is None and "#/runs" not in msg.html


def test_a_failed_validation_becomes_a_quarantine_alert_naming_its_report() -> None:
    # given validate's error over two quarantined partitions
    error = VALIDATE_ERROR.replace(
        "data/raw/2013-09.parquet",
        "data/raw/2013-W02.parquet failed validation: x\ndata/raw/2013-09.parquet",
    )
    alert = alerts.task_failure(error, Path("/proj/data/quarantine"))
    # then both partitions are named, and the first one's validation.json is the report
    assert alerts.quarantined(error) == ["2013-W02", "2013-09"]
    assert (alert.kind, alert.partition) == ("quarantined", "2013-W02, 2013-09")
    assert alert.report == "/proj/data/quarantine/2013-W02/validation.json"
    assert "re-run ingest and validate" in alert.summary
    # and any other error is a task failure with its first line in the summary
    other = alerts.task_failure("ValueError: bad\nsecond line", task_id="score")
    assert other.kind == "task_failed"
    assert other.summary.startswith("score failed after its last try: ValueError: bad")
    assert other.details == ("second line",)
    assert alerts.quarantined("ValueError: bad") == []


def test_no_credential_reaches_any_part_of_a_message(monkeypatch) -> None:
    # given secrets in the environment, in the tracking URI and in a task's error
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "tr4cking-pw")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://eve:s3cr3t-pw-uri@mlflow.local:5000")
    error = (
        "ConnectionError: http://eve:s3cr3t-pw-uri@mlflow.local:5000 refused, "
        "password=inline-pw, login tr4cking-pw"
    )
    alert = alerts.task_failure(error, mlflow_run_id="r1", model_version="4", partition="2013-08")
    alert = alert.where(tracking_uri="http://eve:s3cr3t-pw-uri@mlflow.local:5000", **AIRFLOW)
    # when its message is made, and a channel's own secret is hidden too
    msg = alerts.hide(alerts.message(alert), ["smtp-pw-123"])
    every = json.dumps([msg.subject, msg.text, msg.html, msg.payload])
    # then no secret is in it, while the link to the run stays usable
    for secret in ("tr4cking-pw", "s3cr3t-pw-uri", "inline-pw", "eve:"):
        assert secret not in every, secret
    assert msg.payload["mlflow_url"] == "http://mlflow.local:5000/#/runs/r1"
    hidden = alerts.hide(
        alerts.message(alerts.task_failure("auth smtp-pw-123 refused")), ["smtp-pw-123"]
    )
    assert "smtp-pw-123" not in json.dumps([hidden.text, hidden.html, hidden.payload])
    assert "auth *** refused" in hidden.text


def test_the_html_body_escapes_what_the_error_says() -> None:
    # given an error quoting markup
    alert = alerts.task_failure("ValueError: <script>alert(1)</script> & more", task_id="x")
    html = alerts.message(alert).html
    # then it is shown, not run
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html


def test_a_long_error_is_cut_to_a_readable_message() -> None:
    lines = "\n".join(f"line {i} " + "x" * 900 for i in range(100))
    msg = alerts.message(alerts.task_failure("Boom\n" + lines))
    assert len(msg.payload["details"]) == alerts.MAX_DETAILS
    assert max(len(d) for d in msg.payload["details"]) == alerts.MAX_DETAIL_CHARS


def test_an_unknown_kind_is_refused_naming_the_kinds() -> None:
    with pytest.raises(ValueError, match="'breach' is not one of drift_breach, performance"):
        alerts.Alert(kind="breach", summary="x")


def test_where_fills_only_what_the_alert_does_not_know() -> None:
    # given an alert naming its partition
    alert = alerts.breach(MONITOR)
    # when the Airflow context adds its fields, a partition among them
    filled = alert.where(partition="2013-12", dag_id="scoring", task_id=None)
    # then the alert's own partition stays, the rest is added, None adds nothing
    assert (filled.partition, filled.dag_id, filled.task_id) == ("2013-08", "scoring", None)


def test_a_pending_approval_says_how_to_decide_and_a_failed_gate_why() -> None:
    pending = alerts.approval_pending({**DECISION, "promote": True, "approval": "manual"})
    failed = alerts.gate_failed({**DECISION, "reasons": ["roc_auc 0.66 < champion 0.70"]})
    assert "mlops approve flights_delay 5 --by <you>" in pending.summary
    assert "mlops reject flights_delay 5 --by <you>" in pending.summary
    assert failed.details == ("roc_auc 0.66 < champion 0.70",)
    assert "champion v4 (kept)" in failed.summary
