"""The audit history of a model's aliases and decisions, and the alias moves it records.

The history lives in the experiment ``audit/<model>``: one run per governance event
(alias move, approval, rejection, expiry) with its actor, time, from-version, to-version
and reason as ``audit.*`` tags and a ``seq`` metric that orders them. It survives
restarts and can be read from the MLflow UI (sort by ``seq``) or the API.

Alias moves of one model are serialised by a file lock under ``<data_root>/state``, so
every process that moves aliases (CLI, DAG tasks) must share that folder. Inside the
lock a move is written first as an intent (``audit.state=pending``), then the alias is
moved, then the intent is marked ``done``. A process killed at any instant leaves a
pending intent whose alias moved or did not; the next governance command settles it
(``reconcile``: completed or ``abandoned``) and records any move made outside mlops
before it decides anything, so the history and the alias never disagree for long and
rollback targets come from what really happened.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from mlops import describe, faults, observe, runs, tags
from mlops.config import Settings
from mlops.registry import (
    CHALLENGER,
    CHAMPION,
    LOCK_TIMEOUT_S,
    Registry,
    connect,
    lock,
)

AUDIT_PREFIX = "audit/"
PENDING, DONE, ABANDONED = "pending", "done", "abandoned"
log = logging.getLogger(__name__)

Event = dict[str, str]


def actor(st: Settings) -> str:
    """Who acts: ``MLOPS_ACTOR``, else the MLflow account in use, else the login name."""
    return st.actor or getpass.getuser()


def now() -> str:
    """The current UTC time, to the second, as recorded in tags and events."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def experiment(model: str) -> str:
    """The name of ``model``'s audit experiment."""
    return f"{AUDIT_PREFIX}{model}"


def registry_lock(
    st: Settings, model: str, timeout_s: float = LOCK_TIMEOUT_S
) -> AbstractContextManager[None]:
    """Serialise alias moves of one model so the history always matches the alias.

    ``registry.lock``: re-entrant within a thread; other threads and processes wait up
    to ``timeout_s``.
    """
    return lock(st, model, timeout_s)


def _event_from_run(run: Any) -> Event:
    data = run.data
    ev = {k[len("audit.") :]: v for k, v in data.tags.items() if k.startswith("audit.")}
    seq = data.metrics.get("seq")
    ev["seq"] = "" if seq is None else str(int(seq))  # empty: written before seq existed
    ev["run_id"] = run.info.run_id
    return ev


def history(st: Settings | Registry, model: str, limit: int | None = None) -> list[Event]:
    """Every recorded governance event of ``model``, newest first.

    Each event has ``seq``, ``at``, ``action`` (promote, rollback, challenger, approve,
    reject, expire, external), ``alias`` (empty for a decision that moved none),
    ``from_version``, ``to_version``, ``version`` (the subject), ``actor``, ``reason``,
    ``override`` and ``state`` (``pending``, ``done`` or ``abandoned``: see ``reconcile``,
    which adds a ``note`` to an interrupted move it settles).
    """
    c = connect(st).client
    exp = c.get_experiment_by_name(experiment(model))
    if exp is None:
        return []
    out: list[Event] = []
    token = None
    while True:
        page = c.search_runs(
            [exp.experiment_id],
            order_by=["metrics.seq DESC"],
            max_results=min(limit or 1000, 1000),
            page_token=token,
        )
        out.extend(_event_from_run(r) for r in page)
        token = page.token
        if not token or (limit is not None and len(out) >= limit):
            break
    return out[:limit] if limit is not None else out


def record(reg: Registry, model: str, event: Event, state: str = DONE) -> Event:
    """Append one event; call inside ``registry_lock`` so ``seq`` is gap- and race-free.

    ``at`` defaults to now; a caller that passes its own must have taken it inside the
    lock too, so that time order and ``seq`` order agree.
    """
    from mlflow.entities import Metric

    c = reg.client
    exp = reg.experiment_id(experiment(model))
    last = c.search_runs([exp], order_by=["metrics.seq DESC"], max_results=1)
    seq = int(last[0].data.metrics.get("seq", 0)) + 1 if last else 1
    full = {
        "action": "",
        "alias": "",
        "from_version": "",
        "to_version": "",
        "version": "",
        "actor": actor(reg.st),
        "at": now(),
        "reason": "",
        "override": "",
        **event,
        "state": state,
    }
    subject = full["version"] or full["to_version"] or full["from_version"]
    name = f"#{seq} {full['action']} {full['alias'] or ''} v{subject or '-'}".replace("  ", " ")
    r = runs.create(c, exp, name, {f"audit.{k}": v for k, v in full.items()})
    c.log_batch(r.info.run_id, metrics=[Metric("seq", seq, int(time.time() * 1000), 0)])
    c.set_terminated(r.info.run_id)
    return {**full, "seq": str(seq), "run_id": r.info.run_id}


def effective(events: Sequence[Event]) -> list[Event]:
    """Pure: the events that happened, without intents that were abandoned or are pending.

    Events written before intents existed have no ``state`` and count as done.
    """
    return [e for e in events if e.get("state") not in (PENDING, ABANDONED)]


def settle(pending: Event, events: Sequence[Event], alias_now: str | None) -> str:
    """Pure: DONE when a ``pending`` intent's alias move happened, else ABANDONED.

    It happened when the alias points at the intent's to-version and no later recorded
    move of that alias exists; an intent without ``seq`` was killed while being written,
    before its move could start.
    """
    if not pending.get("seq") or (alias_now or "") != (pending.get("to_version") or ""):
        return ABANDONED
    if pending.get("from_version", "") == pending.get("to_version", ""):
        return ABANDONED
    newer = [
        e
        for e in events
        if e.get("alias") == pending.get("alias")
        and e.get("state") != ABANDONED
        and int(e.get("seq") or 0) > int(pending["seq"])
    ]
    return ABANDONED if newer else DONE


def check_history(events: Sequence[Event], champion: str | None) -> list[str]:
    """Pure: how the champion moves in ``events`` (newest first) disagree, if at all.

    Consistent means every move starts where the one before it ended, and the newest
    move ends at the current ``champion``. Abandoned and pending intents are not moves.
    """
    moves = [e for e in effective(events) if e.get("alias") == CHAMPION][::-1]
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
        problems.append(
            f"history ends with champion v{last or '-'} but the alias points at v{champion or '-'}"
        )
    return problems


def previous_champion(events: Sequence[Event], current: str | None) -> str | None:
    """Pure: the version a rollback returns to, from ``events`` (newest first).

    That is the version that held ``champion`` before the current one, whoever moved it
    (``reconcile`` records outside moves first), skipping versions that a later rollback
    withdrew, so repeated rollbacks walk back through the history instead of toggling
    between two versions.
    """
    withdrawn: set[str] = set()
    for e in effective(events):
        if e.get("alias") != CHAMPION:
            continue
        if e.get("action") == "rollback" and e.get("from_version"):
            withdrawn.add(e["from_version"])
        cand = e.get("from_version") or ""
        if cand and cand != current and cand not in withdrawn:
            return cand
    return None


def was_champion(events: Sequence[Event], version: str) -> bool:
    """Pure: whether ``version`` ever held ``champion`` in ``events``."""
    return any(
        e.get("alias") == CHAMPION and e.get("to_version") == version for e in effective(events)
    )


def _set_alias(reg: Registry, model: str, alias: str, version: str | None) -> None:
    c = reg.client
    if version is None:
        reg.retry(lambda: c.delete_registered_model_alias(model, alias), f"remove {alias} alias")
    else:
        reg.retry(lambda: c.set_registered_model_alias(model, alias, version), f"set {alias} alias")


def _mark(reg: Registry, run_id: str, state: str, note: str = "") -> None:
    c = reg.client
    reg.retry(lambda: c.set_tag(run_id, "audit.state", state), f"mark audit event {state}")
    if note:
        reg.retry(lambda: c.set_tag(run_id, "audit.note", note), "annotate audit event")


def move(reg: Registry, model: str, alias: str, version: str | None, event: Event) -> Event:
    """Inside the lock: point ``alias`` at ``version`` (None removes it), recorded.

    The event is written first as a pending intent, the alias moved, and the intent
    marked done, so a kill at any instant leaves something ``reconcile`` can settle. If
    the move or the marking fails, the alias is put back and, once it is seen back, the
    intent abandoned (best effort: what is left, ``reconcile`` settles). Call
    ``reconcile`` first.
    """
    prev = reg.alias_version(model, alias)
    fields = {"alias": alias, "from_version": prev or "", "to_version": version or "", **event}
    rec = reg.retry(lambda: record(reg, model, fields, state=PENDING), "record audit event")
    faults.point("audit.after_intent", alias)
    try:
        _set_alias(reg, model, alias, version)
        faults.point("audit.after_alias", alias)
        _mark(reg, rec["run_id"], DONE)
    except Exception:
        with contextlib.suppress(Exception):
            _set_alias(reg, model, alias, prev)
        with contextlib.suppress(Exception):
            if reg.alias_version(model, alias) == prev:
                _mark(reg, rec["run_id"], ABANDONED, f"the move failed; v{prev or '-'} kept")
        raise
    # A pointer for UI readers, not part of the record: never fail the move for it.
    with contextlib.suppress(Exception):
        reg.client.set_registered_model_tag(model, tags.AUDIT_EXPERIMENT, experiment(model))
    return {**rec, "state": DONE}


def _after_champion(reg: Registry, model: str, prev: str, version: str, event: Event) -> None:
    """What follows a champion move: the challenger that won is dropped, versions tagged."""
    if reg.alias_version(model, CHALLENGER) == version:
        move(reg, model, CHALLENGER, None, {**event, "reason": f"v{version} became champion"})
    if prev:
        reg.client.set_model_version_tag(model, prev, tags.REPLACED_BY, version)
    reg.client.set_model_version_tag(model, version, tags.CHAMPION_SINCE, now())
    describe.refresh(reg, model, version, prev)


def _settle(reg: Registry, model: str, intent: Event, state: str) -> None:
    """Mark an interrupted intent done or abandoned, and finish what a done move began."""
    word = (
        "after the alias moved; completed" if state == DONE else "before the alias moved; abandoned"
    )
    note = f"interrupted {word} at the next governance command ({now()})"
    _mark(reg, intent["run_id"], state, note)
    with contextlib.suppress(Exception):
        reg.client.set_terminated(intent["run_id"], "FINISHED" if state == DONE else "KILLED")
    log.warning(
        "%s: event #%s (%s %s v%s -> v%s by %s) was %s",
        model,
        intent.get("seq") or "?",
        intent.get("action"),
        intent.get("alias"),
        intent.get("from_version") or "-",
        intent.get("to_version") or "-",
        intent.get("actor"),
        note,
    )
    if state == DONE and intent.get("alias") == CHAMPION:
        keep = {k: intent.get(k, "") for k in ("action", "version", "actor")}
        _after_champion(reg, model, intent.get("from_version", ""), intent["to_version"], keep)


def reconcile(reg: Registry, model: str) -> list[Event]:
    """Inside the lock, before deciding: settle interrupted moves, record outside ones.

    A pending intent whose alias moved is completed (with what followed a champion move)
    and one whose alias did not move is abandoned; both get a note saying so. Then an
    alias found elsewhere than its last recorded move (moved in the MLflow UI, say) is
    recorded as an ``external`` move, and a challenger left on the champion (a champion
    move killed before it dropped it) is dropped. Returns the history as it now stands,
    newest first.
    """
    events = history(reg, model)
    aliases = (CHAMPION, CHALLENGER)
    changed = False
    for e in [e for e in events if e.get("state") == PENDING][::-1]:
        alias = e.get("alias", "")
        _settle(reg, model, e, settle(e, events, reg.alias_version(model, alias)))
        changed = True
    if changed:
        events = history(reg, model)
    for alias in aliases:
        last = next((e for e in effective(events) if e.get("alias") == alias), None)
        was = (last.get("to_version") or None) if last else None
        found = reg.alias_version(model, alias)
        if was == found:
            continue
        log.warning(
            "%s: %s found at v%s, recorded at v%s: recording the move made outside mlops",
            model,
            alias,
            found or "-",
            was or "-",
        )
        record(
            reg,
            model,
            {
                "action": "external",
                "alias": alias,
                "from_version": was or "",
                "to_version": found or "",
                "version": found or "",
                "actor": "unknown (outside mlops)",
                "reason": "alias found moved outside mlops at the next governance command",
            },
        )
        describe.refresh(reg, model, was, found)
        changed = True
    champion = reg.alias_version(model, CHAMPION)
    if champion is not None and reg.alias_version(model, CHALLENGER) == champion:
        # a champion move killed once recorded, before it dropped the challenger that won
        events = history(reg, model) if changed else events
        last = next(e for e in effective(events) if e.get("alias") == CHAMPION)
        keep = {k: last.get(k, "") for k in ("action", "version", "actor")}
        log.warning("%s: v%s is champion and challenger: dropping the challenger", model, champion)
        _after_champion(reg, model, last.get("from_version", ""), champion, keep)
        changed = True
    return history(reg, model) if changed else events


def move_champion(
    st: Settings | Registry,
    model: str,
    version: str,
    reason: str,
    by: str | None = None,
    action: str = "promote",
    override: bool = False,
) -> str | None:
    """Point ``champion`` at ``version`` and record the move; return the previous version.

    No policy checks (see ``governance.promote``). Idempotent: when ``version`` is
    already champion nothing is moved or recorded, so a retried task does not add a
    second event. ``set_registered_model_alias`` replaces the alias in one write, so a
    reader resolving ``@champion`` meanwhile sees the old or the new version, never none.
    """
    reg = connect(st)
    version = str(reg.resolve_version(model, version).version)
    who = by or actor(reg.st)
    with registry_lock(reg.st, model):
        reconcile(reg, model)
        prev = reg.alias_version(model, CHAMPION)
        if prev == version:
            observe.champion(version)
            return prev
        event = {
            "action": action,
            "version": version,
            "actor": who,
            "reason": reason,
            "override": "true" if override else "",
        }
        move(reg, model, CHAMPION, version, event)
        faults.point("audit.after_champion")
        _after_champion(reg, model, prev or "", version, {**event, "override": ""})
    observe.champion(version)
    return prev
