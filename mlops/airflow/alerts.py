"""Send alerts through Airflow's notifiers, configured from Airflow connections only.

Two channels, each used when its connection exists and skipped (logged once) when not:

* **E-mail**, connection ``mlops_smtp`` (type smtp: host, port, login, password; extra
  ``{"to": "a@x,b@y", "from_email": "mlops@x"}`` and the SMTP provider's own keys such
  as ``disable_ssl``, ``disable_tls``, ``timeout``, ``retry_limit``), sent through the
  provider's ``SmtpNotifier``.
* **Webhook**, connection ``mlops_webhook`` (type http), whose host is the full URL
  (a Slack incoming webhook: ``https://hooks.slack.com/services/...``) or a host name
  with ``schema`` (http or https, default https), ``port`` and extra ``endpoint``; the
  ``WebhookNotifier`` POSTs the message's JSON payload to it.

An alert must never break the pipeline: a send that fails is logged as an error, and
neither ``notify`` nor the callbacks raise. Task failure callbacks run in the task's
process; DAG failure callbacks run in the DAG processor under a scheduler, and in the
calling process under ``dag.test()``. Both read the same connections (environment
variables ``AIRFLOW_CONN_MLOPS_SMTP``, a secrets backend or the metadata DB).
"""

from __future__ import annotations

import inspect
import json
import logging
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from airflow.sdk.bases.notifier import BaseNotifier

from mlops import alerts, io

log = logging.getLogger(__name__)
SMTP_CONN_ID = "mlops_smtp"
WEBHOOK_CONN_ID = "mlops_webhook"
WEBHOOK_TIMEOUT_S = 10.0
_told_missing: set[str] = set()


class WebhookNotifier(BaseNotifier):
    """POST a JSON payload to the URL of an http connection (Slack-style webhook).

    Nothing in it is a template: the payload is sent as it is given.
    """

    template_fields = ()

    def __init__(
        self,
        payload: Mapping[str, Any],
        webhook_conn_id: str = WEBHOOK_CONN_ID,
        timeout: float = WEBHOOK_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.payload = dict(payload)
        self.webhook_conn_id = webhook_conn_id
        self.timeout = timeout

    def notify(self, context: Any) -> None:  # noqa: ARG002 - the payload is complete
        """Send the payload; an HTTP status other than 2xx raises ``urllib.error.HTTPError``."""
        from airflow.sdk import Connection

        conn = Connection.get(self.webhook_conn_id)
        url = webhook_url(conn.host, conn.schema, conn.port, conn.extra_dejson)
        request = urllib.request.Request(
            url,
            data=json.dumps(self.payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()


def webhook_url(
    host: str | None, schema: str | None, port: int | None, extra: Mapping[str, Any]
) -> str:
    """The URL an http connection names: its host when that is a URL, else built from parts.

    Raises:
        ValueError: The connection has no host.
    """
    if not host:
        raise ValueError("the webhook connection has no host; set it to the webhook's URL")
    if "://" in host:
        return host
    scheme = schema if schema in ("http", "https") else "https"
    endpoint = str(extra.get("endpoint") or "").lstrip("/")
    return f"{scheme}://{host}{f':{port}' if port else ''}/{endpoint}"


def _connection(conn_id: str) -> Any:
    """The connection, or None (logged at info once per id) when it is not defined."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        if conn_id not in _told_missing:
            _told_missing.add(conn_id)
            log.info("alerts: no Airflow connection %r, that channel is skipped", conn_id)
        return None


def _smtp(conn: Any, msg: alerts.Message) -> BaseNotifier:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    extra = conn.extra_dejson
    if not extra.get("to"):
        raise ValueError(
            f"connection {conn.conn_id!r} has no recipients: set its extra to "
            '{"to": "a@example.com,b@example.com", "from_email": "mlops@example.com"}'
        )
    return SmtpNotifier(
        to=extra["to"],
        from_email=extra.get("from_email"),
        subject=msg.subject,
        html_content=msg.html,
        smtp_conn_id=conn.conn_id,
    )


def _webhook(conn: Any, msg: alerts.Message) -> BaseNotifier:
    return WebhookNotifier(msg.payload, webhook_conn_id=conn.conn_id)


CHANNELS: dict[str, tuple[str, Callable[[Any, alerts.Message], BaseNotifier]]] = {
    "smtp": (SMTP_CONN_ID, _smtp),
    "webhook": (WEBHOOK_CONN_ID, _webhook),
}


def notify(alert: alerts.Alert, context: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Send ``alert`` through every configured channel; never raises.

    ``context`` (the Airflow context; inside a running task it defaults to the current
    one) adds the DAG, run, task, try, log URL and partition the alert does not name, and
    the settings add the MLflow tracking URI. The channels' own secrets (passwords, the
    webhook's URL) are masked in the message and in what is logged, besides ``io.redact``.

    Returns:
        channel -> ``sent``, ``skipped`` (no connection) or ``failed`` (logged).
    """
    out: dict[str, str] = {}
    ready: dict[str, Any] = {}
    for channel, (conn_id, _build) in CHANNELS.items():
        try:
            conn = _connection(conn_id)
        except Exception as exc:  # noqa: BLE001 - an alert must not break the pipeline
            out[channel] = "failed"
            log.error("alerts: connection %r does not load: %s", conn_id, io.redact(str(exc)))
            continue
        if conn is None:
            out[channel] = "skipped"
        else:
            ready[channel] = conn
    if not ready:
        return out
    hidden = _secrets(ready)
    try:
        ctx = (_attempt(_current) or {}) if context is None else context
        alert = alert.where(**_where(ctx), tracking_uri=_tracking_uri())
        msg = alerts.hide(alerts.message(alert), hidden)
    except Exception as exc:  # noqa: BLE001 - an alert must not break the pipeline
        error = alerts.hide_text(io.redact(str(exc)), hidden)
        log.error("alerts: %s not sent, its message failed: %s", alert.kind, error)
        return {**out, **dict.fromkeys(ready, "failed")}
    for channel, conn in ready.items():
        conn_id, build = CHANNELS[channel]
        try:
            # Called without Airflow's template rendering: the message holds error texts
            # and must not be read as a Jinja template.
            build(conn, msg).notify(ctx)  # type: ignore[arg-type]
            out[channel] = "sent"
            log.info("alerts: %s sent through %s (%s)", alert.kind, channel, conn_id)
        except Exception as exc:  # noqa: BLE001 - an alert must not break the pipeline
            out[channel] = "failed"
            log.error(
                "alerts: %r not sent through %s, connection %r: %s: %s",
                msg.subject,
                channel,
                conn_id,
                type(exc).__name__,
                alerts.hide_text(io.redact(str(exc)), hidden),
            )
    return out


def _secrets(conns: Mapping[str, Any]) -> list[str]:
    """What the channels' connections hold that no message or log line may show."""
    found = [c.password for c in conns.values() if c.password]
    if "webhook" in conns:
        c = conns["webhook"]
        found.append(_attempt(lambda: webhook_url(c.host, c.schema, c.port, c.extra_dejson)))
    return [s for s in found if s]


def on_task_failure(context: Mapping[str, Any]) -> None:
    """A task's ``on_failure_callback``: a quarantine, or the failure with its error."""
    try:
        error = context.get("exception")
        text = "no error recorded" if error is None else f"{type(error).__name__}: {error}"
        if error is not None and type(error).__name__ in ("AirflowFailException", "TaskError"):
            text = str(error)  # the task adapter's message already says what failed
        ti = context.get("ti") or context.get("task_instance")
        alert = alerts.task_failure(
            io.redact(text), _quarantine_dir(), task_id=getattr(ti, "task_id", None)
        )
    except Exception as exc:  # noqa: BLE001 - an alert must not break the pipeline
        log.error("alerts: the task failure alert failed: %s", io.redact(str(exc)))
        return
    notify(alert, context)


def on_dag_failure(context: Mapping[str, Any]) -> None:
    """A DAG's ``on_failure_callback``: the run failed, naming its failed task."""
    try:
        dag = context.get("dag")
        ti = context.get("ti") or context.get("task_instance")
        dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None) or alerts.UNKNOWN
        alert = alerts.dag_failure(dag_id, context.get("reason"), getattr(ti, "task_id", None))
    except Exception as exc:  # noqa: BLE001 - an alert must not break the pipeline
        log.error("alerts: the DAG failure alert failed: %s", io.redact(str(exc)))
        return
    notify(alert, context)


# --------------------------------------------------------------------------- context
def _current() -> Mapping[str, Any]:
    """The running task's context (raises outside a task)."""
    from airflow.sdk import get_current_context

    return get_current_context()


def _where(context: Mapping[str, Any]) -> dict[str, Any]:
    """The alert fields the Airflow context knows."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None)
    run_id = context.get("run_id") or getattr(ti, "run_id", None)
    out: dict[str, Any] = {"dag_id": dag_id, "dag_run_id": run_id}
    if ti is not None:
        out.update(task_id=getattr(ti, "task_id", None), try_number=getattr(ti, "try_number", None))
        out["log_url"] = _attempt(lambda: ti.log_url)
    if dag_id and run_id:
        out["airflow_url"] = _attempt(
            lambda: f"{_base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id)}"
        )
    out["partition"] = _attempt(lambda: _partition(context))
    return out


def _partition(context: Mapping[str, Any]) -> str | None:
    """The partition(s) of the task (its ``partition(s)`` argument) or of the run."""
    from mlops import partitions
    from mlops.config import load_params, params_path

    kwargs = _arguments(context.get("task"))
    run = context.get("dag_run")
    conf = getattr(run, "conf", None) or {}
    for value in (kwargs.get("partition"), kwargs.get("partitions"), conf.get("partitions")):
        if isinstance(value, str) and partitions.is_id(value):
            return value
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return ", ".join(value)
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        return None
    freq = load_params(params_path()).ingest.partition
    return ", ".join(partitions.covering(start, end, freq))


def _arguments(task: Any) -> dict[str, Any]:
    """The arguments a ``@task`` function was called with (after rendering), by name."""
    fn = getattr(task, "python_callable", None)
    args, kwargs = getattr(task, "op_args", None) or (), getattr(task, "op_kwargs", None) or {}
    if fn is None:
        return dict(kwargs)
    try:
        return dict(inspect.signature(fn).bind_partial(*args, **kwargs).arguments)
    except TypeError:
        return dict(kwargs)


def _base_url() -> str:
    from airflow.sdk.configuration import conf

    return str(conf.get("api", "base_url", fallback="http://localhost:8080/")).rstrip("/")


def _tracking_uri() -> str | None:
    from mlops.config import settings

    return _attempt(lambda: settings().tracking_uri)


def _quarantine_dir() -> Any:
    from mlops.config import settings

    return _attempt(lambda: settings().quarantine_dir)


def _attempt(fn: Callable[[], Any]) -> Any:
    """``fn()``, or None when it fails: a missing detail must not cost the alert."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - the alert goes out without that detail
        return None
