"""The audit history of a model's aliases and decisions, and the alias moves it records.

The history lives in the experiment ``audit/<model>``: one run per governance event
(alias move, approval, rejection, expiry) with its actor, time, from-version, to-version
and reason as ``audit.*`` tags and a ``seq`` metric that orders them. It survives
restarts and can be read from the MLflow UI (sort by ``seq``) or the API.

Alias moves of one model are serialised by a file lock under ``<data_root>/state``, so
every process that moves aliases (CLI, DAG tasks) must share that folder. Inside the
lock the alias is moved first and the event written second; if the event cannot be
written, the alias is put back, so the history never disagrees with the alias.
"""

from __future__ import annotations

import contextlib
import getpass
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from mlops import io, tags
from mlops.config import Settings
from mlops.registry import CHALLENGER, CHAMPION, Registry, RegistryError, connect

AUDIT_PREFIX = "audit/"
LOCK_TIMEOUT_S = 120.0

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


@contextmanager
def registry_lock(st: Settings, model: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise alias moves of one model so the history always matches the alias.

    Re-entrant within a thread; other threads and processes wait up to ``timeout_s``.
    """
    path = st.state_dir / f"registry-{model}.lock"

    def busy(holder: str) -> RegistryError:
        return RegistryError(
            f"{path}: another alias move of {model!r} (process {holder}) has held this lock "
            f"for over {timeout_s:.0f}s; retry when it finishes"
        )

    with io.file_lock(path, wait=timeout_s, busy=busy):
        yield


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
    ``from_version``, ``to_version``, ``version`` (the subject), ``actor``, ``reason``
    and ``override``.
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


def record(reg: Registry, model: str, event: Event) -> Event:
    """Append one event; call inside ``registry_lock`` so ``seq`` is gap- and race-free."""
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
    }
    subject = full["version"] or full["to_version"] or full["from_version"]
    name = f"#{seq} {full['action']} {full['alias'] or ''} v{subject or '-'}".replace("  ", " ")
    r = c.create_run(exp, run_name=name, tags={f"audit.{k}": v for k, v in full.items()})
    c.log_batch(r.info.run_id, metrics=[Metric("seq", seq, int(time.time() * 1000), 0)])
    c.set_terminated(r.info.run_id)
    return {**full, "seq": str(seq), "run_id": r.info.run_id}


def check_history(events: Sequence[Event], champion: str | None) -> list[str]:
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
        problems.append(
            f"history ends with champion v{last or '-'} but the alias points at v{champion or '-'}"
        )
    return problems


def previous_champion(events: Sequence[Event], current: str | None) -> str | None:
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


def was_champion(events: Sequence[Event], version: str) -> bool:
    """Pure: whether ``version`` ever held ``champion`` in ``events``."""
    return any(e.get("alias") == CHAMPION and e.get("to_version") == version for e in events)


def move(reg: Registry, model: str, alias: str, version: str | None, event: Event) -> Event:
    """Inside the lock: point ``alias`` at ``version`` (None removes it), then record it.

    A move made outside mlops (in the MLflow UI) is recorded first, as found. If the
    event cannot be recorded the alias is put back and the error raised, so the history
    and the alias never disagree.
    """
    c = reg.client
    prev = reg.alias_version(model, alias)
    last = next((e for e in history(reg, model, limit=200) if e.get("alias") == alias), None)
    if last is not None and (last.get("to_version") or None) != prev:
        record(
            reg,
            model,
            {
                "action": "external",
                "alias": alias,
                "from_version": last.get("to_version", ""),
                "to_version": prev or "",
                "version": prev or "",
                "actor": "unknown (outside mlops)",
                "reason": "alias found moved outside mlops at the next move",
            },
        )
    if version is None:
        reg.retry(lambda: c.delete_registered_model_alias(model, alias), f"remove {alias} alias")
    else:
        reg.retry(lambda: c.set_registered_model_alias(model, alias, version), f"set {alias} alias")
    try:
        rec = reg.retry(
            lambda: record(
                reg,
                model,
                {"alias": alias, "from_version": prev or "", "to_version": version or "", **event},
            ),
            "record audit event",
        )
    except Exception:
        if prev is None:
            c.delete_registered_model_alias(model, alias)
        else:
            c.set_registered_model_alias(model, alias, prev)
        raise
    # A pointer for UI readers, not part of the record: never fail the move for it.
    with contextlib.suppress(Exception):
        c.set_registered_model_tag(model, tags.AUDIT_EXPERIMENT, experiment(model))
    return rec


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
        prev = reg.alias_version(model, CHAMPION)
        if prev == version:
            return prev
        event = {
            "action": action,
            "version": version,
            "actor": who,
            "reason": reason,
            "override": "true" if override else "",
        }
        move(reg, model, CHAMPION, version, event)
        if reg.alias_version(model, CHALLENGER) == version:
            move(
                reg,
                model,
                CHALLENGER,
                None,
                {
                    "action": action,
                    "version": version,
                    "actor": who,
                    "reason": f"v{version} became champion",
                },
            )
        if prev is not None:
            reg.client.set_model_version_tag(model, prev, tags.REPLACED_BY, version)
        reg.client.set_model_version_tag(model, version, tags.CHAMPION_SINCE, now())
    return prev
