"""The alert senders without a server: connections read, missing, broken; callbacks safe.

Sending to a real SMTP server and HTTP endpoint is tests/integration/test_alerts.py.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.dags.airflow_env import REPO, configure

configure()

from mlops import alerts  # noqa: E402
from mlops.airflow import alerts as senders  # noqa: E402
from mlops.airflow import defaults  # noqa: E402

BREACH = alerts.breach(
    {"partition": "2013-08", "reasons": ["drift"], "report": "r.html", "model_version": "4"}
)


@pytest.fixture
def no_channels(monkeypatch):
    """Neither alert connection defined, and nothing said about them yet."""
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_SMTP", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_WEBHOOK", raising=False)
    monkeypatch.setattr(senders, "_told_missing", set())


def test_a_webhook_url_is_the_connections_host_or_is_built_from_its_parts() -> None:
    # a Slack-style connection: the whole URL in the host
    slack = "https://hooks.slack.com/services/T0/B0/xyz"
    assert senders.webhook_url(slack, None, None, {}) == slack
    # or a host name, with the scheme in `schema`, a port and the path in extra `endpoint`
    built = senders.webhook_url("hooks.local", "http", 8081, {"endpoint": "/alerts"})
    assert built == "http://hooks.local:8081/alerts"
    assert senders.webhook_url("hooks.local", None, None, {}) == "https://hooks.local/"
    with pytest.raises(ValueError, match="no host; set it to the webhook's URL"):
        senders.webhook_url(None, None, None, {})


def test_channels_without_a_connection_are_skipped_and_said_once(no_channels, caplog) -> None:
    # given no alert connection, when two alerts are sent
    with caplog.at_level(logging.INFO, logger=senders.__name__):
        first = senders.notify(BREACH, {})
        second = senders.notify(BREACH, {})
    # then both channels are skipped, and each missing connection is logged once, at info
    assert first == second == {"smtp": "skipped", "webhook": "skipped"}
    said = [r for r in caplog.records if "that channel is skipped" in r.getMessage()]
    assert sorted(r.getMessage().split("'")[1] for r in said) == ["mlops_smtp", "mlops_webhook"]
    assert {r.levelno for r in said} == {logging.INFO}


def test_a_connection_without_recipients_fails_its_channel_only(
    no_channels, monkeypatch, caplog
) -> None:
    # given an SMTP connection whose extra has no "to", and a webhook connection that
    # does not parse
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": 9, "password": "s3cr3t-pw-smtp"}
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_SMTP", json.dumps(smtp))
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_WEBHOOK", "{not json")
    # when an alert is sent
    with caplog.at_level(logging.ERROR, logger=senders.__name__):
        out = senders.notify(BREACH, {})
    # then the SMTP channel failed naming the fix; the webhook's connection was not found
    assert out == {"smtp": "failed", "webhook": "skipped"}
    errors = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert "has no recipients: set its extra to" in errors and '"to":' in errors
    assert "s3cr3t-pw-smtp" not in caplog.text


def test_the_callbacks_never_raise_whatever_the_context(no_channels) -> None:
    # given contexts missing about everything, or holding objects of the wrong type
    contexts = [{}, {"exception": ValueError("x"), "ti": object()}, {"dag": 3, "reason": None}]
    # then each callback returns, and so do the lazy ones the DAGs use
    for context in contexts:
        assert senders.on_task_failure(context) is None
        assert senders.on_dag_failure(context) is None
        assert defaults.on_task_failure(context) is None


def test_the_dag_defaults_carry_the_alert_callbacks() -> None:
    # every task alerts on its last failure, every DAG that adds DAG_CALLBACKS on a failed run
    assert defaults.DEFAULT_ARGS["on_failure_callback"] is defaults.on_task_failure
    assert {"on_failure_callback": defaults.on_dag_failure} == defaults.DAG_CALLBACKS


def test_a_scheduled_runs_partition_is_the_one_its_data_interval_covers(monkeypatch) -> None:
    # given the repo's monthly project, and the context of a scheduled run of August 2013
    from datetime import UTC, datetime

    monkeypatch.setenv("MLOPS_PARAMS", str(REPO / "params.yaml"))
    context = {
        "run_id": "scheduled__2013-08-01T00:00:00+00:00",
        "data_interval_start": datetime(2013, 8, 1, tzinfo=UTC),
        "data_interval_end": datetime(2013, 9, 1, tzinfo=UTC),
    }
    # then the alert fields name the partition the interval covers, and the run
    where = senders._where(context)
    assert where["partition"] == "2013-08"
    assert where["dag_run_id"] == "scheduled__2013-08-01T00:00:00+00:00"
