"""Alerts reach a real SMTP server and a real HTTP endpoint, both started on loopback.

The connections are Airflow connection environment variables (``AIRFLOW_CONN_MLOPS_SMTP``,
``AIRFLOW_CONN_MLOPS_WEBHOOK``, JSON form), as a deployment would set them. Real DAG runs
of tiny DAGs using ``mlops.airflow.defaults``' callbacks show which alerts a failure
sends, and from where. Task failure callbacks run in the task's process. The DAG's
failure callback runs, under ``dag.test()``, in the calling process once the run is
marked failed (``DagRun.update_state`` executes callbacks there); under a scheduler, in
the DAG processor, from the scheduler's callback request: the last test starts a real
Airflow to show it (about a minute; the others take seconds).
"""

from __future__ import annotations

import email
import json
import os
import socket
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.dags.airflow_env import configure, init_db

configure()

from aiosmtpd.controller import Controller  # noqa: E402

from mlops import alerts  # noqa: E402
from mlops.airflow import alerts as senders  # noqa: E402
from mlops.airflow import local  # noqa: E402

pytestmark = pytest.mark.integration

RECIPIENTS = ["ops@example.org", "ml@example.org"]
SECRET = "s3cr3t-pw-db"
JINJA = "{{ conn.mlops_smtp.host }}"
BREACH = {
    "partition": "2013-08",
    "kind": "performance",
    "reasons": ["roc_auc 0.61 below the holdout's 0.70 by more than 0.05"],
    "report": "/proj/data/reports/2013-08/performance.html",
    "model_version": "4",
}
PROBE_DAGS = textwrap.dedent(
    f"""
    import json, os
    from datetime import datetime

    from airflow.sdk import dag, task

    from mlops.airflow.defaults import DAG_CALLBACKS, DEFAULT_ARGS

    ARGS = {{**DEFAULT_ARGS, "retries": 0}}


    @dag(dag_id="alert_probe_fail", schedule=None, start_date=datetime(2024, 1, 1),
         default_args=ARGS, **DAG_CALLBACKS)
    def alert_probe_fail():
        @task(task_id="ingest")
        def ingest():
            return ["2013-08"]

        @task(task_id="score")
        def score(partitions):
            raise ValueError(
                "the store at http://svc:{SECRET}@db.local/x refused; {JINJA}"
            )

        score(ingest())


    @dag(dag_id="alert_probe_send", schedule=None, start_date=datetime(2024, 1, 1),
         default_args=ARGS, **DAG_CALLBACKS)
    def alert_probe_send():
        @task(task_id="monitor")
        def monitor():
            from mlops import alerts
            from mlops.airflow import alerts as senders

            out = senders.notify(alerts.breach({json.dumps(BREACH)}))
            with open(os.environ["ALERT_PROBE_OUT"], "w") as f:
                json.dump(out, f)

        monitor()


    alert_probe_fail()
    alert_probe_send()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mailbox:
    port: int
    messages: list[Message] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    def html(self, i: int) -> str:
        parts = [p for p in self.messages[i].walk() if p.get_content_type() == "text/html"]
        return str(parts[0].get_payload(decode=True).decode())

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


@dataclass
class Webhook:
    url: str
    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def mailbox(monkeypatch) -> Iterator[Mailbox]:
    """A real SMTP server on loopback, and the mlops_smtp connection pointing at it."""
    box = Mailbox(port=free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": box.port,
        "extra": {
            "to": ",".join(RECIPIENTS),
            "from_email": "mlops@example.org",
            "disable_ssl": True,
            "disable_tls": True,
            "timeout": 5,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_SMTP", json.dumps(conn))
    yield box
    controller.stop()


@pytest.fixture
def webhook(monkeypatch) -> Iterator[Webhook]:
    """A real HTTP endpoint on loopback, and the mlops_webhook connection at its URL."""
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            hook.bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(hook.status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/token"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_WEBHOOK", json.dumps({"conn_type": "http", "host": hook.url})
    )
    yield hook
    server.shutdown()
    server.server_close()


@pytest.fixture
def probe_dags(monkeypatch, tmp_path) -> Any:
    """The probe DAGs, in their own DAG bundle beside the repo's dags folder."""
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "alert_probe.py").write_text(PROBE_DAGS)
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "alert-probe", "classpath": local, "kwargs": {"path": str(folder)}},
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    monkeypatch.setenv("ALERT_PROBE_OUT", str(tmp_path / "sent.json"))
    init_db()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag.dags


def test_a_breach_reaches_the_mailbox_and_the_webhook(mailbox, webhook) -> None:
    # given both channels configured, when a performance breach is notified
    alert = alerts.breach(BREACH, model_name="flights_delay", mlflow_run_id="abc123")
    out = senders.notify(alert, {})
    # then both channels sent it
    assert out == {"smtp": "sent", "webhook": "sent"}
    # and one mail reached every recipient, naming the partition, the version, the report
    assert mailbox.recipients == [RECIPIENTS]
    assert mailbox.subjects() == ["[mlops] Performance breach: 2013-08, flights_delay v4"]
    html = mailbox.html(0)
    assert "/proj/data/reports/2013-08/performance.html" in html and "abc123" in html
    # and the webhook got the Slack-readable text and the structured fields
    [body] = webhook.bodies
    assert body["text"].startswith("Performance breach: partition 2013-08, model flights_delay v4")
    assert (body["kind"], body["partition"], body["model_version"]) == (
        "performance_breach",
        "2013-08",
        "4",
    )
    assert body["mlflow_run_id"] == "abc123"


def test_a_failed_dag_run_mails_the_task_failure_and_the_run_failure(
    mailbox, webhook, probe_dags
) -> None:
    # when a real DAG run fails in its second task
    dr = probe_dags["alert_probe_fail"].test()
    # then the run failed, and two alerts arrived: the task's, then the run's
    assert dr.state == "failed"
    assert mailbox.subjects() == [
        "[mlops] Task failed: 2013-08",
        "[mlops] DAG run failed: alert_probe_fail",
    ]
    task_mail, run_mail = mailbox.html(0), mailbox.html(1)
    # the task's names the task, its error, its try and log, and the partition it got
    assert "score failed after its last try: ValueError: the store at http://***@db.local" in (
        task_mail
    )
    assert "score, try 1" in task_mail and "/dags/alert_probe_fail/runs/" in task_mail
    # the run's names the failed task and links to the run
    assert "the failed task is score" in run_mail and "DAG run failed" in run_mail
    # and neither leaks the secret, nor reads the error as a template
    for text in (task_mail, run_mail, json.dumps(webhook.bodies)):
        assert SECRET not in text
    assert JINJA in task_mail
    assert [b["kind"] for b in webhook.bodies] == ["task_failed", "dag_failed"]


def test_missing_channels_are_skipped_and_a_dead_server_does_not_fail_the_task(
    monkeypatch, webhook, probe_dags, tmp_path
) -> None:
    # given no SMTP connection, then nothing is sent there and nothing fails
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_SMTP", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_WEBHOOK", raising=False)
    assert senders.notify(alerts.breach(BREACH), {}) == {"smtp": "skipped", "webhook": "skipped"}
    # given an SMTP server that is not listening and a webhook answering 500
    dead = {"conn_type": "smtp", "host": "127.0.0.1", "port": free_port(), "extra": {"to": "a@b"}}
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_SMTP", json.dumps(dead))
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_WEBHOOK", json.dumps({"conn_type": "http", "host": webhook.url})
    )
    webhook.status = 500
    # when a task notifies a breach in a real DAG run
    dr = probe_dags["alert_probe_send"].test()
    # then both sends failed, and the task and its run still succeeded
    assert json.loads(Path(tmp_path / "sent.json").read_text()) == {
        "smtp": "failed",
        "webhook": "failed",
    }
    assert dr.state == "success"
    assert len(webhook.bodies) == 1


def test_under_a_scheduler_the_dag_processor_sends_the_run_failure(mailbox, tmp_path) -> None:
    # given a real Airflow (scheduler, DAG processor, API server) on the probe DAGs, with
    # the SMTP connection in its environment
    from tests.integration.airflow_stack import REPO, free_port, up, wait_for, wait_run

    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "alert_probe.py").write_text(PROBE_DAGS)
    env = local.airflow_env(
        tmp_path / "airflow",
        REPO / "params.yaml",
        port=free_port(),
        dags=folder,
        base={k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        extra={
            "PYTHONPATH": str(REPO),
            "AIRFLOW_CONN_MLOPS_SMTP": os.environ["AIRFLOW_CONN_MLOPS_SMTP"],
        },
    )
    stack, api = up(env, dags=("alert_probe_fail",))
    try:
        # when a run of the failing DAG is triggered
        api.patch("/dags/alert_probe_fail", {"is_paused": False})
        api.trigger("alert_probe_fail", "probe", {})
        run = wait_run(api, stack, "alert_probe_fail", "probe", timeout=120)
        # then it failed; the task's process sent the task failure, and the DAG processor
        # (which runs DAG callbacks under a scheduler) sent the run's failure
        assert run["state"] == "failed"
        wait_for("both alert mails", lambda: len(mailbox.messages) >= 2, 90, stack, every=1)
        run_failed = "[mlops] DAG run failed: alert_probe_fail"
        assert sorted(mailbox.subjects()) == [run_failed, "[mlops] Task failed: 2013-08"]
        assert "the failed task is score" in mailbox.html(mailbox.subjects().index(run_failed))
        # and the DAG processor's log of the probe file says that it ran the callback
        logs = tmp_path / "airflow" / "logs" / "dag_processor"
        said = "\n".join(p.read_text() for p in logs.rglob("alert_probe.py.log"))
        assert "Executing on_failure dag callback" in said
        assert "dag_failed sent through smtp" in said
    finally:
        stack.stop(grace=10)
