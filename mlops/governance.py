"""Model governance on the MLflow registry: gate outcomes, approvals and alias moves.

Everything is kept in the registry itself, with aliases and tags only, so the MLflow UI
shows it. Each alias move is also recorded as a run in the experiment
``audit/<model>`` (actor, time, from-version, to-version, reason): an append-only
history that survives restarts and is readable from the UI and the API.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from mlops.config import Settings
from mlops.promote import APPROVED, AUTO, PENDING, REJECTED, Decision
from mlops.registry import CHALLENGER, CHAMPION, RegistryError, client, get_version, retry

TAG_GATE = "mlops.gate.decision"
TAG_GATE_REASONS = "mlops.gate.reasons"
TAG_APPROVAL = "mlops.approval.status"
TAG_APPROVAL_BY = "mlops.approval.by"
TAG_APPROVAL_AT = "mlops.approval.at"
TAG_APPROVAL_NOTE = "mlops.approval.note"
TAG_OVERRIDE = "mlops.approval.override"


def actor() -> str:
    return os.environ.get("MLOPS_ACTOR") or getpass.getuser()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def registry_lock(st: Settings, model: str) -> Iterator[None]:
    """Serialise alias moves of one model so the history always matches the alias."""
    st.state_dir.mkdir(parents=True, exist_ok=True)
    path = st.state_dir / f"registry-{model}.lock"
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _audit(st: Settings, model: str, event: dict[str, str]) -> None:
    import mlflow

    from mlops.registry import experiment_id

    exp = experiment_id(st, f"audit/{model}")
    c = client(st)
    r = c.create_run(exp, run_name=f"{event['action']} v{event.get('to_version') or '-'}",
                     tags={f"audit.{k}": v for k, v in event.items()})
    c.set_terminated(r.info.run_id)
    del mlflow


def move_champion(st: Settings, model: str, version: str, reason: str,
                  by: str | None = None, action: str = "promote") -> str | None:
    """Point ``champion`` at ``version``; record the move. Returns the previous version.

    ``set_registered_model_alias`` replaces the alias in one write, so a reader
    resolving ``@champion`` meanwhile sees the old or the new version, never none.
    """
    c = client(st)
    get_version(st, model, version)
    with registry_lock(st, model):
        prev = _alias_version(st, model, CHAMPION)
        retry(lambda: c.set_registered_model_alias(model, CHAMPION, str(version)),
              "set champion alias")
        if _alias_version(st, model, CHALLENGER) == str(version):
            c.delete_registered_model_alias(model, CHALLENGER)
        if prev is not None and prev != str(version):
            c.set_model_version_tag(model, prev, "mlops.replaced_by", str(version))
        c.set_model_version_tag(model, str(version), "mlops.champion_since", now())
        _audit(st, model, {"action": action, "alias": CHAMPION, "from_version": prev or "",
                           "to_version": str(version), "actor": by or actor(), "at": now(),
                           "reason": reason})
    return prev


def _alias_version(st: Settings, model: str, alias: str) -> str | None:
    from mlops.registry import version_by_alias

    mv = version_by_alias(st, model, alias)
    return None if mv is None else str(mv.version)


def apply_gate(st: Settings, model: str, version: str, decision: Decision, mode: str) -> str:
    """Record the gate on the version, then move aliases as the decision and mode allow."""
    c = client(st)
    c.set_model_version_tag(model, version, TAG_GATE, "passed" if decision.promote else "failed")
    c.set_model_version_tag(model, version, TAG_GATE_REASONS, "; ".join(decision.reasons))
    if not decision.promote:
        return "champion unchanged (gate failed)"
    if mode == "auto":
        c.set_model_version_tag(model, version, TAG_APPROVAL, AUTO)
        prev = move_champion(st, model, version, "gate passed, approval mode auto", by="gate")
        return f"champion v{prev} -> v{version}" if prev else f"champion -> v{version}"
    with registry_lock(st, model):
        c.set_registered_model_alias(model, CHALLENGER, version)
        c.set_model_version_tag(model, version, TAG_APPROVAL, PENDING)
        _audit(st, model, {"action": "challenger", "alias": CHALLENGER, "from_version": "",
                           "to_version": version, "actor": "gate", "at": now(),
                           "reason": "gate passed, waiting for approval"})
    return f"challenger v{version}, approval pending"


def approval_status(st: Settings, model: str, version: str) -> str | None:
    mv = get_version(st, model, version)
    return mv.tags.get(TAG_APPROVAL)


def decide(st: Settings, model: str, version: str, approve: bool, by: str,
           note: str = "", override: bool = False) -> dict[str, Any]:
    """Record an approval or rejection on a version (who, when, why)."""
    mv = get_version(st, model, version)
    gate = mv.tags.get(TAG_GATE)
    if approve and gate != "passed" and not override:
        raise RegistryError(
            f"{model} v{version} did not pass the promotion gate "
            f"({mv.tags.get(TAG_GATE_REASONS, 'no gate result recorded')}); "
            f"use --override to approve it anyway"
        )
    c = client(st)
    status = APPROVED if approve else REJECTED
    for k, v in {TAG_APPROVAL: status, TAG_APPROVAL_BY: by, TAG_APPROVAL_AT: now(),
                 TAG_APPROVAL_NOTE: note}.items():
        c.set_model_version_tag(model, version, k, v)
    if approve and gate != "passed":
        c.set_model_version_tag(model, version, TAG_OVERRIDE, f"gate overridden by {by}")
    return {"model": model, "version": version, "status": status, "by": by}


def wait_for_approval(st: Settings, model: str, version: str, timeout_s: float,
                      poll_s: float = 10.0) -> str:
    """Block until the version is approved or rejected, or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = approval_status(st, model, version)
        if status in (APPROVED, REJECTED):
            return status
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(poll_s)


def history(st: Settings, model: str) -> list[dict[str, str]]:
    """Every recorded alias move of ``model``, newest first."""
    c = client(st)
    exp = c.get_experiment_by_name(f"audit/{model}")
    if exp is None:
        return []
    runs = c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"],
                         max_results=1000)
    return [{k[len("audit."):]: v for k, v in r.data.tags.items() if k.startswith("audit.")}
            for r in runs]
