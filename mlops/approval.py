"""Approvals: the vocabulary, the policy, and the decisions recorded on a version.

A version that passed the gate in approval mode ``manual`` waits as ``challenger`` with
``mlops.approval.status=pending``. A person approves or rejects it (``mlops approve``,
the MLflow UI tag, or the Airflow task), or the request expires. Who, when and why are
tags on the version and an event in the audit history. ``blockers`` and ``outcome`` are
the pure rules; the rest records and acts on them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from mlops import audit, describe, tags
from mlops.config import Settings
from mlops.registry import CHALLENGER, CHAMPION, Registry, RegistryError, connect

UNKNOWN_UI = "unknown (set in the registry)"


class Status(StrEnum):
    """The values of ``mlops.approval.status`` on a model version."""

    AUTO = "auto"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Outcome(StrEnum):
    """Where a promotion's approval stands, as the training DAG sees it."""

    NOT_REQUIRED = "not_required"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


DECIDED = (Status.APPROVED, Status.REJECTED)


class Refused(RegistryError):
    """A governance rule forbids the action; the message says which and what to do."""


# --------------------------------------------------------------------------- pure rules
def blockers(version_tags: dict[str, str]) -> list[str]:
    """Pure: why a version with these tags may not become champion without an override."""
    gate, status = version_tags.get(tags.GATE), version_tags.get(tags.APPROVAL)
    out = []
    if status == Status.REJECTED:
        note = version_tags.get(tags.APPROVAL_NOTE)
        out.append(
            f"rejected by {version_tags.get(tags.APPROVAL_BY, '?')} at "
            f"{version_tags.get(tags.APPROVAL_AT, '?')}" + (f" ({note})" if note else "")
        )
    if gate is None:
        out.append(
            "no promotion gate result is recorded (run `mlops evaluate` and "
            "`mlops promote` for it first)"
        )
    elif gate != "passed" and not (status == Status.APPROVED and version_tags.get(tags.OVERRIDE)):
        out.append(
            f"failed the promotion gate ({version_tags.get(tags.GATE_REASONS, 'no reasons')})"
        )
    elif gate == "passed" and status == Status.PENDING:
        out.append("is waiting for approval (`mlops approve MODEL VERSION --by NAME`)")
    elif gate == "passed" and status == Status.EXPIRED:
        out.append("its approval request expired without a decision (approve it first)")
    return out


def outcome(
    promote: bool,
    mode: str,
    status: str | None,
    since: datetime,
    now: datetime,
    timeout: timedelta,
) -> Outcome | None:
    """Pure: where a promotion's approval stands.

    ``not_required`` (the gate failed, or approval mode is auto), ``approved`` or
    ``rejected`` (a person decided), ``expired`` (still pending ``timeout`` after the
    gate passed at ``since``), or None (keep waiting).
    """
    if not promote or mode != "manual":
        return Outcome.NOT_REQUIRED
    if status in DECIDED:
        return Outcome(str(status))
    if now - since >= timeout:
        return Outcome.EXPIRED
    return None


# --------------------------------------------------------------------------- records
def status(st: Settings | Registry, model: str, version: str) -> str | None:
    """The approval status tag of one version (None when never requested)."""
    return connect(st).get_version(model, version).tags.get(tags.APPROVAL)


def decide(
    st: Settings | Registry,
    model: str,
    version: str,
    approve: bool,
    by: str,
    note: str = "",
    override: bool = False,
) -> dict[str, Any]:
    """Record an approval or rejection on a version (who, when, why) and in the history.

    Approving a version that failed the gate is refused with the gate's reasons unless
    ``override`` (which needs a ``note``); the override is recorded. Rejecting the
    current challenger removes that alias. The champion cannot be rejected: roll back.
    The version is read and the decision recorded inside the registry lock, so a gate
    being written at the same time is seen, and the time agrees with the history order.
    """
    if not by or not by.strip():
        raise Refused("--by is required: say who decides")
    reg = connect(st)
    with audit.registry_lock(reg.st, model):
        audit.reconcile(reg, model)
        out = _decide(reg, model, version, approve, by, note, override)
        describe.refresh(reg, model, out["version"])
        return out


def _decide(
    reg: Registry, model: str, version: str, approve: bool, by: str, note: str, override: bool
) -> dict[str, Any]:
    mv = reg.resolve_version(model, version)
    version = str(mv.version)
    gate = mv.tags.get(tags.GATE)
    overridden = approve and gate != "passed"
    if overridden and not override:
        reasons = mv.tags.get(tags.GATE_REASONS) or "no gate result recorded"
        raise Refused(
            f"{model} v{version} did not pass the promotion gate ({reasons}); "
            f"use --override with --note to approve it anyway (recorded)"
        )
    if overridden and not note.strip():
        raise Refused("--override needs --note: the approval must say why the gate is overridden")
    if not approve and reg.alias_version(model, CHAMPION) == version:
        raise Refused(
            f"{model} v{version} is the champion; roll it back first "
            f"(`mlops rollback {model}`), then reject it"
        )
    c = reg.client
    decided, at = (Status.APPROVED if approve else Status.REJECTED), audit.now()
    for k, v in {
        tags.APPROVAL: decided.value,
        tags.APPROVAL_BY: by,
        tags.APPROVAL_AT: at,
        tags.APPROVAL_NOTE: note,
    }.items():
        c.set_model_version_tag(model, version, k, v)
    if overridden:
        c.set_model_version_tag(
            model,
            version,
            tags.OVERRIDE,
            f"gate {gate or 'missing'} overridden by {by} at {at}: {note}",
        )
    elif approve and mv.tags.get(tags.OVERRIDE):
        c.delete_model_version_tag(model, version, tags.OVERRIDE)
    event = {
        "action": "approve" if approve else "reject",
        "version": version,
        "actor": by,
        "at": at,
        "reason": note,
        "override": "true" if overridden else "",
    }
    if not approve and reg.alias_version(model, CHALLENGER) == version:
        audit.move(reg, model, CHALLENGER, None, event)
    else:
        audit.record(reg, model, event)
    return {
        "model": model,
        "version": version,
        "status": decided.value,
        "by": by,
        "at": at,
        "override": overridden,
    }


def complete(st: Settings | Registry, model: str, version: str) -> str:
    """Continue a promotion after its decision: approved -> champion; rejected -> dropped.

    A decision made by setting ``mlops.approval.status`` in the MLflow UI may lack who
    and when; they are filled in (who as unknown, when as now) so the record is whole.
    The rules of ``blockers`` still apply: a UI approval cannot skip the gate.
    """
    reg = connect(st)
    with audit.registry_lock(reg.st, model):
        audit.reconcile(reg, model)
        out = _complete(reg, model, version)
        describe.refresh(reg, model, version)
        return out


def _complete(reg: Registry, model: str, version: str) -> str:
    mv = reg.resolve_version(model, version)
    version, vtags = str(mv.version), dict(mv.tags)
    state = vtags.get(tags.APPROVAL)
    if state in DECIDED:
        for key, value in ((tags.APPROVAL_BY, UNKNOWN_UI), (tags.APPROVAL_AT, audit.now())):
            if not vtags.get(key):
                reg.client.set_model_version_tag(model, version, key, value)
                vtags[key] = value
    by = vtags.get(tags.APPROVAL_BY, UNKNOWN_UI)
    if state == Status.REJECTED:
        if reg.alias_version(model, CHALLENGER) == version:
            audit.move(
                reg,
                model,
                CHALLENGER,
                None,
                {
                    "action": "reject",
                    "version": version,
                    "actor": by,
                    "reason": vtags.get(tags.APPROVAL_NOTE, ""),
                },
            )
        return f"champion unchanged (v{version} rejected by {by})"
    if state != Status.APPROVED:
        return f"champion unchanged (v{version} approval {state or 'not requested'})"
    problems = blockers(vtags)
    if problems:
        raise Refused(
            f"{model} v{version} is approved but cannot become champion: {'; '.join(problems)}"
        )
    note = vtags.get(tags.APPROVAL_NOTE)
    prev = audit.move_champion(
        reg, model, version, f"approved by {by}" + (f": {note}" if note else ""), by=by
    )
    if prev == version:
        return f"champion v{version} (unchanged)"
    return f"champion v{prev} -> v{version}" if prev else f"champion -> v{version}"


def expire(
    st: Settings | Registry, model: str, version: str, reason: str, by: str = "scheduler"
) -> str:
    """Close an approval request that got no decision in time: tag it, drop the challenger."""
    reg = connect(st)
    with audit.registry_lock(reg.st, model):
        audit.reconcile(reg, model)
        mv = reg.resolve_version(model, version)
        version = str(mv.version)
        if mv.tags.get(tags.APPROVAL) in DECIDED:
            return f"v{version} already {mv.tags[tags.APPROVAL]}; nothing expired"
        c = reg.client
        c.set_model_version_tag(model, version, tags.APPROVAL_EXPIRED_AT, audit.now())
        c.set_model_version_tag(model, version, tags.APPROVAL_EXPIRED_WHY, reason)
        c.set_model_version_tag(model, version, tags.APPROVAL, Status.EXPIRED.value)
        event = {"action": "expire", "version": version, "actor": by, "reason": reason}
        if reg.alias_version(model, CHALLENGER) == version:
            audit.move(reg, model, CHALLENGER, None, event)
        else:
            audit.record(reg, model, event)
        describe.refresh(reg, model, version)
    return f"champion unchanged: v{version} approval expired ({reason})"
