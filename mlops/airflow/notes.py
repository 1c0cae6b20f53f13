"""Run notes: the outcome of a run, where the Airflow grid shows it.

A run that decides "no" (a cooldown skip, a failed gate, a rejection) is a green run;
its reason goes on the DAG run's note ("gate failed: ...; champion v1 kept", "skipped:
cooldown ..."), which the run's page shows without opening a log; the newest decision is
the note's first line.

The Task SDK cannot write notes, so they are written through Airflow's REST API with the
credentials of the connection ``mlops_airflow_api`` (``AIRFLOW_CONN_MLOPS_AIRFLOW_API``,
for example ``http://admin:<password>@127.0.0.1:8080``; the local Airflow of
``mlops.airflow.local`` sets it). Without that connection, or when the API does not
answer, the note is only logged: a note never fails a task. Importing this module imports
nothing heavy.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

log = logging.getLogger(__name__)
CONN_ID = "mlops_airflow_api"
# Airflow keeps at most this many characters of a note.
MAX_CHARS = 1000
TIMEOUT_S = 10


def merged(current: str | None, line: str) -> str:
    """Pure: the note after adding ``line`` (once) on top of ``current``, within MAX_CHARS.

    The newest line comes first, as the UI shows a note's first line; the oldest lines
    are dropped when the note would be too long.
    """
    lines = [x for x in (current or "").splitlines() if x.strip() and x != line]
    lines.insert(0, line)
    while len(lines) > 1 and len("\n".join(lines)) > MAX_CHARS:
        lines.pop()
    return "\n".join(lines)[:MAX_CHARS]


def gate(decision: dict[str, Any]) -> str:
    """Pure: the run note of a promotion decision."""
    reasons = "; ".join(decision.get("reasons") or [])
    version, prev = decision["version"], decision.get("champion_version")
    if not decision["promote"]:
        if "gate failed" not in decision["outcome"]:  # e.g. train gave back the champion
            return f"v{version} not promoted: {reasons}; {decision['outcome']}"
        kept = f"champion v{prev} kept" if prev else "no champion yet"
        return f"gate failed for v{version}: {reasons}; {kept}"
    if decision["approval"] == "manual":
        return f"gate passed for v{version}: {reasons}; waits for approval (Required Actions)"
    return f"gate passed for v{version}: {reasons}; {decision['outcome']}"


def _request(method: str, url: str, body: Any = None, token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        return json.loads(resp.read() or b"null")


def _api() -> tuple[str, str] | None:
    """The API's base URL and a token, from the connection; None without one."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(CONN_ID)
    except Exception:  # noqa: BLE001 - AirflowNotFoundException: no connection configured
        return None
    scheme = conn.schema or "http"
    base = f"{scheme}://{conn.host}" + (f":{conn.port}" if conn.port else "")
    token = _request(
        "POST", f"{base}/auth/token", {"username": conn.login, "password": conn.password}
    )["access_token"]
    return base, token


def add(line: str, context: Any = None) -> bool:
    """Add ``line`` to the note of the running task's DAG run; log it either way.

    Returns whether the note was written. ``context`` is the task's context (default:
    the current one).
    """
    log.info("run note: %s", line)
    try:
        if context is None:
            from airflow.sdk import get_current_context

            context = get_current_context()
        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        api = _api()
        if api is None:
            log.info("run note not written: no Airflow connection %r", CONN_ID)
            return False
        base, token = api
        from urllib.parse import quote

        url = f"{base}/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}"
        current = _request("GET", url, token=token).get("note")
        _request("PATCH", url, {"note": merged(current, line)}, token=token)
        return True
    except (urllib.error.URLError, OSError, KeyError, ValueError, RuntimeError) as exc:
        log.warning("run note not written (%s): %s", type(exc).__name__, exc)
        return False
