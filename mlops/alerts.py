"""Alerts: what happened, to which partition and model version, and where to look.

Pure: whoever sees the event (a task, an Airflow callback) builds an ``Alert``, and
``message`` turns it into what people read: a subject, plain and HTML bodies, and the
JSON payload of a webhook (``{"text": ...}``, which a Slack incoming webhook shows, plus
the same facts as fields). The Airflow adapter, ``mlops.airflow.alerts``, sends it.
Credentials never reach a message: every text in it is masked with ``io.redact``, and
the tracking URI loses its user and password before it becomes a link.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from mlops import io, tags
from mlops.settings import MIN_SECRET_CHARS

# Every kind of alert, with the title people read first.
KINDS = {
    "drift_breach": "Drift breach",
    "performance_breach": "Performance breach",
    "gate_failed": "Promotion gate failed",
    "quarantined": "Batch quarantined",
    "approval_pending": "Approval pending",
    "task_failed": "Task failed",
    "dag_failed": "DAG run failed",
}
UNKNOWN = "unknown"
# A task's error can be a long traceback-like text; a message keeps its head.
MAX_DETAILS = 20
MAX_DETAIL_CHARS = 500
# `validate` names each partition it quarantines as "<raw file> failed validation: ...".
_FAILED_VALIDATION = re.compile(r"(?:^|[\s/])([0-9][0-9A-Za-z-]*)\.parquet failed validation")


LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store


@dataclass(frozen=True)
class Alert:
    """One event worth telling people about.

    Attributes:
        kind: One of ``KINDS``.
        summary: One sentence: what happened and what to do.
        partition: The partition (or partitions, comma-separated) concerned.
        model_name: The registered model.
        model_version: Its version.
        details: Further lines: the breach reasons, the gate's reasons, the error.
        report: Path of the report to open (drift, performance, quarantine).
        mlflow_run_id: The MLflow run that recorded it.
        tracking_uri: The MLflow tracking URI (links are made when it is a server).
        dag_id: The Airflow DAG.
        dag_run_id: The Airflow DAG run.
        task_id: The Airflow task.
        try_number: The try of that task.
        log_url: The task's log in the Airflow UI.
        airflow_url: The DAG run in the Airflow UI.
    """

    kind: str
    summary: str
    partition: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    details: tuple[str, ...] = field(default=())
    report: str | None = None
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    dag_id: str | None = None
    dag_run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    log_url: str | None = None
    airflow_url: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"alert kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def where(self, **known: Any) -> Alert:
        """This alert with the fields of ``known`` it does not have yet filled in."""
        mine = asdict(self)
        return replace(self, **{k: v for k, v in known.items() if v is not None and not mine[k]})

    @property
    def title(self) -> str:
        """What happened, in a few words."""
        return KINDS[self.kind]

    @property
    def model(self) -> str:
        """``name vN``, or what of it is known."""
        if self.model_version is None:
            return self.model_name or UNKNOWN
        return f"{self.model_name or 'model'} v{self.model_version}"

    @property
    def mlflow_url(self) -> str | None:
        """The MLflow UI page of the run, when the tracking URI is a server."""
        if _server(self.tracking_uri) is None or not self.mlflow_run_id:
            return None
        return run_link(str(self.tracking_uri), self.mlflow_run_id)

    @property
    def model_url(self) -> str | None:
        """The MLflow UI page of the model version, when the tracking URI is a server."""
        if _server(self.tracking_uri) is None or not self.model_name or not self.model_version:
            return None
        return version_link(str(self.tracking_uri), self.model_name, self.model_version)


def run_link(tracking_uri: str, run_id: str) -> str:
    """An MLflow run's page: on the tracking server, else in ``mlflow ui`` on this machine.

    A local store is opened with ``mlflow ui --backend-store-uri <tracking uri>``, which
    serves on ``LOCAL_MLFLOW_UI``; credentials never appear in the link.
    """
    return f"{_server(tracking_uri) or LOCAL_MLFLOW_UI}/#/runs/{quote(run_id)}"


def version_link(tracking_uri: str, model: str, version: str) -> str:
    """A model version's page, on the tracking server or in a local ``mlflow ui``."""
    base = _server(tracking_uri) or LOCAL_MLFLOW_UI
    return f"{base}/#/models/{quote(model)}/versions/{quote(version)}"


@dataclass(frozen=True)
class Message:
    """An alert as it is sent: e-mail subject and bodies, and the webhook payload."""

    subject: str
    text: str
    html: str
    payload: dict[str, Any]


def _server(uri: str | None) -> str | None:
    """The tracking server's base URL without user and password; None for a local store."""
    if not uri or not uri.startswith(("http://", "https://")):
        return None
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _tracking(uri: str | None) -> str | None:
    """The tracking URI as it may be shown: credentials gone."""
    if not uri:
        return None
    return _server(uri) or io.redact(uri)


def _places(alert: Alert) -> list[tuple[str, str, str | None]]:
    """(label, text, link) for each place to look that is known."""
    out: list[tuple[str, str, str | None]] = []
    if alert.report:
        out.append(("Report", alert.report, None))
    if alert.mlflow_run_id:
        store = _tracking(alert.tracking_uri)
        text = alert.mlflow_run_id + (f" ({store})" if store and not alert.mlflow_url else "")
        out.append(("MLflow run", text, alert.mlflow_url))
    if alert.model_url:
        out.append(("MLflow model", alert.model, alert.model_url))
    if alert.dag_id:
        run = f"{alert.dag_id} / {alert.dag_run_id}" if alert.dag_run_id else alert.dag_id
        out.append(("Airflow run", run, alert.airflow_url))
    if alert.task_id:
        task = alert.task_id + (f", try {alert.try_number}" if alert.try_number else "")
        out.append(("Airflow task log", task, alert.log_url))
    return out


def message(alert: Alert) -> Message:
    """The subject, plain and HTML bodies and webhook payload of ``alert``, masked."""
    scope = alert.partition or alert.dag_id or UNKNOWN
    model = f", {alert.model}" if alert.model != UNKNOWN else ""
    subject = f"[mlops] {alert.title}: {scope}{model}"
    details = [_clip(d) for d in alert.details[:MAX_DETAILS]]
    places = _places(alert)
    lines = [
        f"{alert.title}: partition {alert.partition or UNKNOWN}, model {alert.model}.",
        alert.summary,
        *(f"- {d}" for d in details),
        "",
        f"Partition: {alert.partition or UNKNOWN}",
        f"Model version: {alert.model}",
        "Where to look:",
        *(f"  {label}: {text}" + (f" <{link}>" if link else "") for label, text, link in places),
    ]
    if not places:
        lines.append("  nothing recorded beyond this message")
    text = io.redact("\n".join(lines))
    payload = {
        "text": text,
        "title": alert.title,
        **{k: v for k, v in asdict(alert).items() if k != "tracking_uri"},
        "details": details,
        "tracking_uri": _tracking(alert.tracking_uri),
        "mlflow_url": alert.mlflow_url,
        "model_url": alert.model_url,
    }
    return Message(
        subject=io.redact(subject),
        text=text,
        html=io.redact(_html(alert, details, places)),
        payload=_masked(payload),
    )


def hide_text(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` (those of a few characters or more) masked."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret.strip()) >= MIN_SECRET_CHARS:
            text = text.replace(secret, "***")
    return text


def hide(msg: Message, secrets: list[str]) -> Message:
    """``msg`` with ``secrets`` masked everywhere: the channels' own credentials."""
    return Message(
        subject=hide_text(msg.subject, secrets),
        text=hide_text(msg.text, secrets),
        html=hide_text(msg.html, secrets),
        payload=_masked(msg.payload, lambda t: hide_text(t, secrets)),
    )


def _html(alert: Alert, details: list[str], places: list[tuple[str, str, str | None]]) -> str:
    e = html.escape
    rows = [("Partition", e(alert.partition or UNKNOWN)), ("Model version", e(alert.model))]
    for label, text, link in places:
        shown = f'<a href="{e(link)}">{e(text)}</a>' if link else f"<code>{e(text)}</code>"
        rows.append((label, shown))
    table = "".join(f"<tr><th align='left'>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    items = "".join(f"<li>{e(d)}</li>" for d in details)
    return (
        f"<h3>{e(alert.title)}</h3><p>{e(alert.summary)}</p>"
        + (f"<ul>{items}</ul>" if items else "")
        + f"<table>{table}</table>"
    )


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


def _masked(value: Any, mask: Callable[[str], str] = io.redact) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list | tuple):
        return [_masked(v, mask) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v, mask) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- builders
def breach(summary: Mapping[str, Any], **where: Any) -> Alert:
    """The alert of a breach summary (``monitor``'s: partition, reasons, report, version).

    ``kind`` ``performance`` in the summary makes it a performance breach, otherwise a
    drift breach; ``where`` adds the other fields of ``Alert`` (model name, MLflow run).
    """
    performance = summary.get("kind") == "performance"
    reasons = tuple(str(r) for r in summary.get("reasons", ()))
    what = "realised performance" if performance else "drift"
    alert = Alert(
        kind="performance_breach" if performance else "drift_breach",
        summary=(
            f"The {what} policy breached on {summary['partition']}; the training DAG "
            "retrains on it unless a retrain ran within monitor.cooldown_hours."
        ),
        partition=str(summary["partition"]),
        model_version=_str(summary.get("model_version")),
        details=reasons,
        report=_str(summary.get("report")),
    )
    return alert.where(**where)


def gate_failed(decision: Mapping[str, Any], reasons: tuple[str, ...] = (), **where: Any) -> Alert:
    """The alert of a candidate that did not pass the promotion gate (``promote``'s decision)."""
    name, version = decision["model_name"], str(decision["version"])
    alert = Alert(
        kind="gate_failed",
        summary=(
            f"{name} v{version} did not pass the promotion gate ({decision.get('outcome')}); "
            "the champion stays. See the evaluation in the model's MLflow run."
        ),
        model_name=name,
        model_version=version,
        details=tuple(str(r) for r in (reasons or decision.get("reasons", ()))),
    )
    return alert.where(**where)


def approval_pending(decision: Mapping[str, Any], **where: Any) -> Alert:
    """The alert of a candidate waiting as challenger for a person's approval."""
    name, version = decision["model_name"], str(decision["version"])
    alert = Alert(
        kind="approval_pending",
        summary=(
            f"{name} v{version} passed the gate and waits for approval: "
            f"`mlops approve {name} {version} --by <you>` or `mlops reject {name} {version} "
            f"--by <you>`, or the tag {tags.APPROVAL}=approved|rejected in the MLflow UI."
        ),
        model_name=name,
        model_version=version,
    )
    return alert.where(**where)


def quarantined(error: str) -> list[str]:
    """The partitions a ``validate`` error says it quarantined (empty for other errors)."""
    return list(dict.fromkeys(_FAILED_VALIDATION.findall(error)))


def task_failure(error: str, quarantine_dir: Path | None = None, **where: Any) -> Alert:
    """The alert of a failed task: a quarantine when validation failed, else the error.

    ``quarantine_dir`` (``Settings.quarantine_dir``) names the report of a quarantined
    partition; ``where`` adds the Airflow fields (DAG, run, task, try, log URL).
    """
    lines = tuple(line for line in error.strip().splitlines() if line.strip()) or ("no message",)
    pids = quarantined(error)
    if pids:
        folder = quarantine_dir or Path("quarantine")
        alert = Alert(
            kind="quarantined",
            summary=(
                f"Validation failed on {', '.join(pids)}: moved to {folder}/<partition>/ "
                "beside its validation.json. Fix the source or the contract in params.yaml, "
                "then re-run ingest and validate."
            ),
            partition=", ".join(pids),
            details=lines,
            report=str(folder / pids[0] / "validation.json"),
        )
    else:
        task = where.get("task_id") or "a task"
        alert = Alert(
            kind="task_failed",
            summary=f"{task} failed after its last try: {lines[0]}",
            details=lines[1:],
        )
    return alert.where(**where)


def dag_failure(dag_id: str, reason: str | None, failed_task: str | None, **where: Any) -> Alert:
    """The alert of a failed DAG run (``reason``: Airflow's, e.g. ``task_failure``)."""
    because = f" ({reason})" if reason else ""
    culprit = f"; the failed task is {failed_task}, see its log" if failed_task else ""
    alert = Alert(
        kind="dag_failed",
        summary=f"The {dag_id} DAG run failed{because}{culprit}.",
        dag_id=dag_id,
    )
    return alert.where(**{**where, "task_id": where.get("task_id") or failed_task})


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
