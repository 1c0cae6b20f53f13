"""Model governance on the MLflow registry: gate outcomes, approvals, alias moves, history.

Everything lives in the registry, with aliases and tags only (never stages), so the
MLflow UI shows it:

* on each version, the gate decision (``mlops.gate.*``) and the approval
  (``mlops.approval.status|by|at|note|override``);
* on the registered model, the aliases ``champion`` and ``challenger``;
* in the experiment ``audit/<model>``, one run per governance event (alias move,
  approval, rejection) with its actor, time, from-version, to-version and reason as
  ``audit.*`` tags and a ``seq`` metric that orders them. The history survives restarts
  and can be read from the UI (sort by ``seq``) or the API.

Alias moves of one model are serialised by a file lock under ``<data_root>/state``, so
every process that moves aliases (CLI, DAG tasks) must share that folder. Inside the
lock the alias is moved first and the event written second; if the event cannot be
written, the alias is put back, so the history never disagrees with the alias.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from mlops.config import Settings
from mlops.promote import APPROVED, AUTO, PENDING, REJECTED, Decision
from mlops.registry import CHALLENGER, CHAMPION, RegistryError, client, get_version, retry

__all__ = [
    "CHALLENGER", "CHAMPION", "RegistryError", "Refused", "actor", "apply_gate",
    "approval_status", "blockers", "check_history", "complete_approval", "decide",
    "expire_approval",
    "get_version", "history", "move_champion", "previous_champion", "promote",
    "promote_when_approved", "resolve_version", "rollback", "status", "wait_for_approval",
]

TAG_GATE = "mlops.gate.decision"
TAG_GATE_REASONS = "mlops.gate.reasons"
TAG_APPROVAL = "mlops.approval.status"
TAG_APPROVAL_BY = "mlops.approval.by"
TAG_APPROVAL_AT = "mlops.approval.at"
TAG_APPROVAL_NOTE = "mlops.approval.note"
TAG_OVERRIDE = "mlops.approval.override"
TAG_CHAMPION_SINCE = "mlops.champion_since"
TAG_CHALLENGER_SINCE = "mlops.challenger_since"
TAG_REPLACED_BY = "mlops.replaced_by"
TAG_AUDIT_EXPERIMENT = "mlops.audit_experiment"
AUDIT_PREFIX = "audit/"
LOCK_TIMEOUT_S = 120.0
UNKNOWN_UI = "unknown (set in the registry)"
EXPIRED = "expired"


class Refused(RegistryError):
    """A governance rule forbids the action; the message says which and what to do."""


def actor() -> str:
    """Who acts: ``MLOPS_ACTOR``, else the MLflow account in use, else the login name."""
    return (os.environ.get("MLOPS_ACTOR") or os.environ.get("MLFLOW_TRACKING_USERNAME")
            or getpass.getuser())


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def audit_experiment(model: str) -> str:
    return f"{AUDIT_PREFIX}{model}"


_held = threading.local()


@contextmanager
def registry_lock(st: Settings, model: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise alias moves of one model so the history always matches the alias.

    Re-entrant within a thread; other threads and processes wait (``flock`` conflicts
    between separate opens of the file, also inside one process).
    """
    st.state_dir.mkdir(parents=True, exist_ok=True)
    path = st.state_dir / f"registry-{model}.lock"
    held: set[str] = _held.__dict__.setdefault("paths", set())
    if str(path) in held:
        yield
        return
    deadline = time.monotonic() + timeout_s
    with path.open("w") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"{path}: another alias move of {model!r} has held this lock for over "
                        f"{timeout_s:.0f}s; retry when it finishes"
                    ) from None
                time.sleep(0.05)
        held.add(str(path))
        try:
            yield
        finally:
            held.discard(str(path))
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- versions
def resolve_version(st: Settings, model: str, version: str | int):  # type: ignore[no-untyped-def]
    """The model version, or a RegistryError that says exactly what is wrong.

    Accepts ``3`` or ``v3``. Tells apart an unknown model, an unknown version and a
    version number that exists only under another registered model.
    """
    from mlflow.exceptions import MlflowException

    c = client(st)
    v = str(version).strip()
    v = v[1:] if v[:1] in ("v", "V") else v
    if not v.isdigit():
        raise RegistryError(f"model version {version!r} is not a version number (e.g. 3 or v3)")
    require_model(st, model)
    try:
        return c.get_model_version(model, v)
    except MlflowException:
        pass
    mine = sorted(int(mv.version) for mv in c.search_model_versions(f"name = '{model}'"))
    others = sorted({mv.name for mv in c.search_model_versions(f"version_number = {v}")
                     if mv.name != model})
    have = f"its versions are {_ranges(mine)}" if mine else "it has no versions"
    hint = (f"; version {v} belongs to {', '.join(map(repr, others))}, not {model!r}"
            if others else "")
    raise RegistryError(f"model {model!r} has no version {v} ({have}){hint}")


def require_model(st: Settings, model: str) -> None:
    """Raise a RegistryError naming the registered models when ``model`` is not one."""
    from mlflow.exceptions import MlflowException

    c = client(st)
    try:
        c.get_registered_model(model)
    except MlflowException:
        names = sorted(m.name for m in c.search_registered_models(max_results=100))
        known = f"registered models: {', '.join(names)}" if names else "no model is registered"
        raise RegistryError(f"model {model!r} is not registered ({known})") from None


def _ranges(nums: Sequence[int]) -> str:
    out: list[str] = []
    for n in nums:
        if out and "-" not in out[-1] and int(out[-1]) == n - 1:
            out[-1] = f"{out[-1]}-{n}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == n - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def _alias_version(st: Settings, model: str, alias: str) -> str | None:
    from mlops.registry import version_by_alias

    mv = version_by_alias(st, model, alias)
    return None if mv is None else str(mv.version)


# --------------------------------------------------------------------------- audit history
def _event_from_run(run: Any) -> dict[str, str]:
    ev = {k[len("audit."):]: v for k, v in run.data.tags.items() if k.startswith("audit.")}
    seq = run.data.metrics.get("seq")
    ev["seq"] = "" if seq is None else str(int(seq))  # empty: written before seq existed
    ev["run_id"] = run.info.run_id
    return ev


def history(st: Settings, model: str, limit: int | None = None) -> list[dict[str, str]]:
    """Every recorded governance event of ``model``, newest first.

    Each event has ``seq``, ``at``, ``action`` (promote, rollback, challenger, approve,
    reject, external), ``alias`` (empty for a decision that moved none),
    ``from_version``, ``to_version``, ``version`` (the subject), ``actor``, ``reason``
    and ``override``.
    """
    c = client(st)
    exp = c.get_experiment_by_name(audit_experiment(model))
    if exp is None:
        return []
    out: list[dict[str, str]] = []
    token = None
    while True:
        page = c.search_runs([exp.experiment_id], order_by=["metrics.seq DESC"],
                             max_results=min(limit or 1000, 1000), page_token=token)
        out.extend(_event_from_run(r) for r in page)
        token = page.token
        if not token or (limit is not None and len(out) >= limit):
            break
    return out[:limit] if limit is not None else out


def _audit(st: Settings, model: str, event: dict[str, str]) -> dict[str, str]:
    """Append one event; call inside ``registry_lock`` so ``seq`` is gap- and race-free."""
    from mlflow.entities import Metric

    from mlops.registry import experiment_id

    c = client(st)
    exp = experiment_id(st, audit_experiment(model))
    last = c.search_runs([exp], order_by=["metrics.seq DESC"], max_results=1)
    seq = int(last[0].data.metrics.get("seq", 0)) + 1 if last else 1
    full = {"action": "", "alias": "", "from_version": "", "to_version": "", "version": "",
            "actor": actor(), "at": now(), "reason": "", "override": "", **event}
    subject = full["version"] or full["to_version"] or full["from_version"]
    name = f"#{seq} {full['action']} {full['alias'] or ''} v{subject or '-'}".replace("  ", " ")
    r = c.create_run(exp, run_name=name, tags={f"audit.{k}": v for k, v in full.items()})
    ms = int(time.time() * 1000)
    c.log_batch(r.info.run_id, metrics=[Metric("seq", seq, ms, 0)])
    c.set_terminated(r.info.run_id)
    return {**full, "seq": str(seq), "run_id": r.info.run_id}


def check_history(events: Sequence[dict[str, str]], champion: str | None) -> list[str]:
    """Pure: how the champion moves in ``events`` (newest first) disagree, if at all.

    Consistent means every move starts where the one before it ended, and the newest
    move ends at the current ``champion``.
    """
    moves = [e for e in events if e.get("alias") == CHAMPION][::-1]
    problems = []
    for before, after in zip(moves, moves[1:], strict=False):
        if (after.get("from_version") or "") != (before.get("to_version") or ""):
            problems.append(
                f"event #{after.get('seq')} moves champion from "
                f"v{after.get('from_version') or '-'} but #{before.get('seq')} left it at "
                f"v{before.get('to_version') or '-'}"
            )
    last = moves[-1].get("to_version") or None if moves else None
    if last != champion:
        problems.append(f"history ends with champion v{last or '-'} but the alias points at "
                        f"v{champion or '-'}")
    return problems


def previous_champion(events: Sequence[dict[str, str]], current: str | None) -> str | None:
    """Pure: the version a rollback returns to, from ``events`` (newest first).

    That is the champion before the current one, skipping versions that a later
    rollback withdrew, so repeated rollbacks walk back through the history instead of
    toggling between two versions.
    """
    withdrawn: set[str] = set()
    for e in events:
        if e.get("alias") != CHAMPION:
            continue
        if e.get("action") == "rollback" and e.get("from_version"):
            withdrawn.add(e["from_version"])
        cand = e.get("from_version") or ""
        if cand and cand != current and cand not in withdrawn:
            return cand
    return None


def _was_champion(events: Sequence[dict[str, str]], version: str) -> bool:
    return any(e.get("alias") == CHAMPION and e.get("to_version") == version for e in events)


def _move(st: Settings, model: str, alias: str, version: str | None, event: dict[str, str]
          ) -> dict[str, str]:
    """Inside the lock: point ``alias`` at ``version`` (None removes it), then record it.

    If the event cannot be recorded the alias is put back and the error raised, so the
    history and the alias never disagree.
    """
    c = client(st)
    prev = _alias_version(st, model, alias)
    last = next((e for e in history(st, model, limit=200) if e.get("alias") == alias), None)
    if last is not None and (last.get("to_version") or None) != prev:
        # moved outside mlops (e.g. in the MLflow UI): record that first, as found
        _audit(st, model, {"action": "external", "alias": alias,
                           "from_version": last.get("to_version", ""), "to_version": prev or "",
                           "version": prev or "", "actor": "unknown (outside mlops)",
                           "reason": "alias found moved outside mlops at the next move"})
    if version is None:
        retry(lambda: c.delete_registered_model_alias(model, alias), f"remove {alias} alias")
    else:
        retry(lambda: c.set_registered_model_alias(model, alias, version), f"set {alias} alias")
    try:
        rec = retry(lambda: _audit(st, model, {"alias": alias, "from_version": prev or "",
                                               "to_version": version or "", **event}),
                    "record audit event")
    except Exception:
        if prev is None:
            c.delete_registered_model_alias(model, alias)
        else:
            c.set_registered_model_alias(model, alias, prev)
        raise
    try:
        c.set_registered_model_tag(model, TAG_AUDIT_EXPERIMENT, audit_experiment(model))
    except Exception:  # noqa: BLE001 - a pointer for UI readers, not part of the record
        pass
    return rec


def move_champion(st: Settings, model: str, version: str, reason: str,
                  by: str | None = None, action: str = "promote",
                  override: bool = False) -> str | None:
    """Point ``champion`` at ``version`` and record the move; return the previous version.

    No policy checks (see ``promote``). Idempotent: when ``version`` is already champion
    nothing is moved or recorded, so a retried task does not add a second event.
    ``set_registered_model_alias`` replaces the alias in one write (an upsert in one
    transaction), so a reader resolving ``@champion`` meanwhile sees the old or the new
    version, never none.
    """
    version = str(resolve_version(st, model, version).version)
    c = client(st)
    with registry_lock(st, model):
        prev = _alias_version(st, model, CHAMPION)
        if prev == version:
            return prev
        _move(st, model, CHAMPION, version,
              {"action": action, "version": version, "actor": by or actor(), "reason": reason,
               "override": "true" if override else ""})
        if _alias_version(st, model, CHALLENGER) == version:
            _move(st, model, CHALLENGER, None,
                  {"action": action, "version": version, "actor": by or actor(),
                   "reason": f"v{version} became champion"})
        if prev is not None:
            c.set_model_version_tag(model, prev, TAG_REPLACED_BY, version)
        c.set_model_version_tag(model, version, TAG_CHAMPION_SINCE, now())
    return prev


# --------------------------------------------------------------------------- policy
def blockers(tags: dict[str, str]) -> list[str]:
    """Pure: why a version with these tags may not become champion without an override."""
    gate, status = tags.get(TAG_GATE), tags.get(TAG_APPROVAL)
    out = []
    if status == REJECTED:
        note = tags.get(TAG_APPROVAL_NOTE)
        out.append(f"rejected by {tags.get(TAG_APPROVAL_BY, '?')} at "
                   f"{tags.get(TAG_APPROVAL_AT, '?')}" + (f" ({note})" if note else ""))
    if gate is None:
        out.append("no promotion gate result is recorded (run `mlops evaluate` and "
                   "`mlops promote` for it first)")
    elif gate != "passed" and not (status == APPROVED and tags.get(TAG_OVERRIDE)):
        out.append(f"failed the promotion gate ({tags.get(TAG_GATE_REASONS, 'no reasons')})")
    elif gate == "passed" and status == PENDING:
        out.append("is waiting for approval (`mlops approve MODEL VERSION --by NAME`)")
    elif gate == "passed" and status == EXPIRED:
        out.append("its approval request expired without a decision (approve it first)")
    return out


def promote(st: Settings, model: str, version: str, by: str | None = None, reason: str = "",
            override: bool = False) -> dict[str, Any]:
    """Make ``version`` champion by hand, if governance allows it (or with ``override``).

    Refused when the version was rejected, failed the gate without an approved override,
    has no gate result, or waits for approval. ``override`` needs a ``reason`` and is
    recorded in the history.
    """
    if override and not reason.strip():
        raise Refused("--override needs --reason: the history must say why")
    by = by or actor()
    with registry_lock(st, model):
        mv = resolve_version(st, model, version)
        version = str(mv.version)
        problems = blockers(mv.tags)
        if problems and not override:
            raise Refused(f"{model} v{version} cannot become champion: {'; '.join(problems)}. "
                          f"Use --override with --reason to promote it anyway (recorded)")
        why = reason or "manual promotion"
        if problems:
            why = f"{why} [override: {'; '.join(problems)}]"
        prev = move_champion(st, model, version, why, by=by, action="promote",
                             override=bool(problems))
    moved = prev != version
    return {"model": model, "from_version": prev, "to_version": version, "moved": moved,
            "by": by, "reason": why}


def rollback(st: Settings, model: str, to: str | None = None, by: str | None = None,
             reason: str = "") -> dict[str, Any]:
    """Move ``champion`` back: to ``to`` or, by default, to the previous champion.

    The target must have been champion before (use ``promote`` for a new version).
    The target is chosen inside the lock, so two rollbacks racing do not both return
    to the same version.
    """
    require_model(st, model)
    by = by or actor()
    with registry_lock(st, model):
        current = _alias_version(st, model, CHAMPION)
        if current is None:
            raise Refused(f"model {model!r} has no champion to roll back from")
        events = history(st, model)
        if to is None:
            target = previous_champion(events, current)
            if target is None:
                raise Refused(f"{model} has no previous champion before v{current} to roll "
                              f"back to; name one with --to VERSION")
            try:
                resolve_version(st, model, target)
            except RegistryError as exc:
                raise Refused(f"the previous champion v{target} of {model} is gone ({exc}); "
                              f"name another with --to VERSION") from None
        else:
            target = str(resolve_version(st, model, to).version)
            if target == current:
                raise Refused(f"{model} v{target} is already champion")
            if not _was_champion(events, target):
                raise Refused(f"{model} v{target} has never been champion, so it is not a "
                              f"rollback target; use `mlops promote {model} {target}`")
        why = reason or f"rollback from v{current}"
        move_champion(st, model, target, why, by=by, action="rollback")
    return {"model": model, "from_version": current, "to_version": target, "by": by,
            "reason": why}


# --------------------------------------------------------------------------- gate & approval
def apply_gate(st: Settings, model: str, version: str, decision: Decision, mode: str) -> str:
    """Record the gate on the version, then move aliases as the decision and mode allow."""
    c = client(st)
    retry(lambda: c.set_model_version_tag(model, version, TAG_GATE,
                                          "passed" if decision.promote else "failed"),
          f"record the gate on {model} v{version}")
    retry(lambda: c.set_model_version_tag(model, version, TAG_GATE_REASONS,
                                          "; ".join(decision.reasons)),
          f"record the gate on {model} v{version}")
    if not decision.promote:
        return "champion unchanged (gate failed)"
    if mode == "auto":
        c.set_model_version_tag(model, version, TAG_APPROVAL, AUTO)
        prev = move_champion(st, model, version, "gate passed, approval mode auto", by="gate")
        if prev == str(version):
            return f"champion v{version} (unchanged)"
        return f"champion v{prev} -> v{version}" if prev else f"champion -> v{version}"
    c.set_model_version_tag(model, version, TAG_APPROVAL, PENDING)
    with registry_lock(st, model):
        if _alias_version(st, model, CHALLENGER) != str(version):
            _move(st, model, CHALLENGER, str(version),
                  {"action": "challenger", "version": str(version), "actor": "gate",
                   "reason": "gate passed, waiting for approval"})
            c.set_model_version_tag(model, version, TAG_CHALLENGER_SINCE, now())
    return f"challenger v{version}, approval pending"


def approval_status(st: Settings, model: str, version: str) -> str | None:
    mv = get_version(st, model, version)
    return mv.tags.get(TAG_APPROVAL)


def decide(st: Settings, model: str, version: str, approve: bool, by: str,
           note: str = "", override: bool = False) -> dict[str, Any]:
    """Record an approval or rejection on a version (who, when, why) and in the history.

    Approving a version that failed the gate is refused with the gate's reasons unless
    ``override`` (which needs a ``note``); the override is recorded. Rejecting the
    current challenger removes that alias. The champion cannot be rejected: roll back.
    """
    if not by or not by.strip():
        raise Refused("--by is required: say who decides")
    mv = resolve_version(st, model, version)
    version = str(mv.version)
    gate = mv.tags.get(TAG_GATE)
    overridden = approve and gate != "passed"
    if overridden and not override:
        reasons = mv.tags.get(TAG_GATE_REASONS) or "no gate result recorded"
        raise Refused(f"{model} v{version} did not pass the promotion gate ({reasons}); "
                      f"use --override with --note to approve it anyway (recorded)")
    if overridden and not note.strip():
        raise Refused("--override needs --note: the approval must say why the gate is "
                      "overridden")
    if not approve and _alias_version(st, model, CHAMPION) == version:
        raise Refused(f"{model} v{version} is the champion; roll it back first "
                      f"(`mlops rollback {model}`), then reject it")
    c = client(st)
    status, at = (APPROVED if approve else REJECTED), now()
    tags = {TAG_APPROVAL: status, TAG_APPROVAL_BY: by, TAG_APPROVAL_AT: at,
            TAG_APPROVAL_NOTE: note}
    for k, v in tags.items():
        c.set_model_version_tag(model, version, k, v)
    if overridden:
        c.set_model_version_tag(model, version, TAG_OVERRIDE,
                                f"gate {gate or 'missing'} overridden by {by} at {at}: {note}")
    elif approve and mv.tags.get(TAG_OVERRIDE):
        c.delete_model_version_tag(model, version, TAG_OVERRIDE)
    event = {"action": "approve" if approve else "reject", "version": version, "actor": by,
             "at": at, "reason": note, "override": "true" if overridden else ""}
    with registry_lock(st, model):
        if not approve and _alias_version(st, model, CHALLENGER) == version:
            _move(st, model, CHALLENGER, None, event)
        else:
            _audit(st, model, event)
    return {"model": model, "version": version, "status": status, "by": by, "at": at,
            "override": overridden}


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


def complete_approval(st: Settings, model: str, version: str) -> str:
    """Continue a promotion after its decision: approved -> champion; rejected -> dropped.

    A decision made by setting ``mlops.approval.status`` in the MLflow UI may lack who
    and when; they are filled in (who as unknown, when as now) so the record is whole.
    The rules of ``blockers`` still apply: a UI approval cannot skip the gate.
    """
    mv = resolve_version(st, model, version)
    version, tags = str(mv.version), dict(mv.tags)
    status = tags.get(TAG_APPROVAL)
    c = client(st)
    if status in (APPROVED, REJECTED):
        for key, value in ((TAG_APPROVAL_BY, UNKNOWN_UI), (TAG_APPROVAL_AT, now())):
            if not tags.get(key):
                c.set_model_version_tag(model, version, key, value)
                tags[key] = value
    by = tags.get(TAG_APPROVAL_BY, UNKNOWN_UI)
    if status == REJECTED:
        with registry_lock(st, model):
            if _alias_version(st, model, CHALLENGER) == version:
                _move(st, model, CHALLENGER, None,
                      {"action": "reject", "version": version, "actor": by,
                       "at": tags.get(TAG_APPROVAL_AT, now()),
                       "reason": tags.get(TAG_APPROVAL_NOTE, "")})
        return f"champion unchanged (v{version} rejected by {by})"
    if status != APPROVED:
        return f"champion unchanged (v{version} approval {status or 'not requested'})"
    problems = blockers(tags)
    if problems:
        raise Refused(f"{model} v{version} is approved but cannot become champion: "
                      f"{'; '.join(problems)}")
    note = tags.get(TAG_APPROVAL_NOTE)
    prev = move_champion(st, model, version,
                         f"approved by {by}" + (f": {note}" if note else ""), by=by)
    if prev == version:
        return f"champion v{version} (unchanged)"
    return f"champion v{prev} -> v{version}" if prev else f"champion -> v{version}"


def expire_approval(st: Settings, model: str, version: str, reason: str,
                    by: str = "scheduler") -> str:
    """Close an approval request that got no decision in time: tag it, drop the challenger."""
    mv = resolve_version(st, model, version)
    version = str(mv.version)
    if mv.tags.get(TAG_APPROVAL) in (APPROVED, REJECTED):
        return f"v{version} already {mv.tags[TAG_APPROVAL]}; nothing expired"
    c = client(st)
    with registry_lock(st, model):
        c.set_model_version_tag(model, version, TAG_APPROVAL, EXPIRED)
        event = {"action": "expire", "version": version, "actor": by, "reason": reason}
        if _alias_version(st, model, CHALLENGER) == version:
            _move(st, model, CHALLENGER, None, event)
        else:
            _audit(st, model, event)
    return f"champion unchanged: v{version} approval expired ({reason})"


def promote_when_approved(st: Settings, model: str, version: str, timeout_s: float,
                          poll_s: float = 10.0) -> str:
    """Wait for the decision on a pending version, then act on it (see complete_approval)."""
    status = wait_for_approval(st, model, version, timeout_s, poll_s)
    if status == "timeout":
        return f"champion unchanged (no decision on v{version} within {timeout_s:.0f}s)"
    return complete_approval(st, model, version)


# --------------------------------------------------------------------------- status
def _since(events: Sequence[dict[str, str]], alias: str, version: str) -> str | None:
    for e in events:
        if e.get("alias") == alias:
            return e.get("at") if e.get("to_version") == version else None
    return None


def _describe(st: Settings, mv: Any, alias: str, events: Sequence[dict[str, str]]
              ) -> dict[str, Any]:
    c = client(st)
    tags = mv.tags
    try:
        metrics = {k[len("holdout_"):]: v for k, v in c.get_run(mv.run_id).data.metrics.items()
                   if k.startswith("holdout_")} if mv.run_id else {}
    except Exception:  # noqa: BLE001 - a deleted run leaves the version readable
        metrics = {}
    evals = {k[len("mlops.eval."):]: v for k, v in tags.items()
             if k.startswith("mlops.eval.") and k[len("mlops.eval."):] not in
             ("holdout", "champion_version") and not k.startswith("mlops.eval.champion_")}
    try:
        md5 = json.loads(tags.get("mlops.data.md5", "{}"))
    except json.JSONDecodeError:
        md5 = {}
    fallback = TAG_CHAMPION_SINCE if alias == CHAMPION else TAG_CHALLENGER_SINCE
    return {
        "alias": alias,
        "version": str(mv.version),
        "since": _since(events, alias, str(mv.version)) or tags.get(fallback),
        "run_id": mv.run_id,
        "candidate": tags.get("mlops.candidate"),
        "holdout_metrics": metrics,
        "eval": evals,
        "gate": tags.get(TAG_GATE),
        "gate_reasons": tags.get(TAG_GATE_REASONS),
        "approval": tags.get(TAG_APPROVAL),
        "approval_by": tags.get(TAG_APPROVAL_BY),
        "approval_at": tags.get(TAG_APPROVAL_AT),
        "approval_note": tags.get(TAG_APPROVAL_NOTE),
        "override": tags.get(TAG_OVERRIDE),
        "partitions": [p for p in tags.get("mlops.data.partitions", "").split(",") if p],
        "data_md5": md5,
        "code_revision": tags.get("mlops.code_revision"),
    }


def status(st: Settings, model: str | None = None) -> list[dict[str, Any]]:
    """Champion and challenger of ``model`` (default: every registered model).

    Each entry: the model, its aliases described (version, since when, holdout and
    evaluation metrics, gate, approval, training data) and any disagreement between the
    history and the champion alias.
    """
    from mlops.registry import version_by_alias

    c = client(st)
    if model is not None:
        require_model(st, model)
        names = [model]
    else:
        names = sorted(m.name for m in c.search_registered_models(max_results=1000))
    out = []
    for name in names:
        events = history(st, name)
        aliases: dict[str, dict[str, Any] | None] = {}
        for alias in (CHAMPION, CHALLENGER):
            mv = version_by_alias(st, name, alias)
            aliases[alias] = None if mv is None else _describe(st, mv, alias, events)
        top = aliases[CHAMPION]
        champ = top["version"] if top else None
        out.append({"model": name, **aliases, "events": len(events),
                    "history_problems": check_history(events, champ) if events else []})
    return out
