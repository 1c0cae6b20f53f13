"""Model governance on the MLflow registry: gate outcomes, manual moves, rollback, status.

Everything lives in the registry, with aliases and tags only (never stages), so the
MLflow UI shows it:

* on each version, the gate decision (``mlops.gate.*``) and the approval
  (``mlops.approval.*``, see ``mlops.approval``);
* on the registered model, the aliases ``champion`` and ``challenger``;
* in the experiment ``audit/<model>``, the history of every move and decision
  (``mlops.audit``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mlops import approval, audit, io, partitions, tags
from mlops.approval import Refused, Status
from mlops.config import Settings
from mlops.registry import CHALLENGER, CHAMPION, Registry, RegistryError, connect


def promote(
    st: Settings | Registry,
    model: str,
    version: str,
    by: str | None = None,
    reason: str = "",
    override: bool = False,
) -> dict[str, Any]:
    """Make ``version`` champion by hand, if governance allows it (or with ``override``).

    Refused when the version was rejected, failed the gate without an approved override,
    has no gate result, or waits for approval. ``override`` needs a ``reason`` and is
    recorded in the history.
    """
    if override and not reason.strip():
        raise Refused("--override needs --reason: the history must say why")
    reg = connect(st)
    by = by or audit.actor(reg.st)
    with audit.registry_lock(reg.st, model):
        audit.reconcile(reg, model)
        mv = reg.resolve_version(model, version)
        version = str(mv.version)
        problems = approval.blockers(mv.tags)
        if problems and not override:
            raise Refused(
                f"{model} v{version} cannot become champion: {'; '.join(problems)}. "
                f"Use --override with --reason to promote it anyway (recorded)"
            )
        why = reason or "manual promotion"
        if problems:
            why = f"{why} [override: {'; '.join(problems)}]"
        prev = audit.move_champion(
            reg, model, version, why, by=by, action="promote", override=bool(problems)
        )
    return {
        "model": model,
        "from_version": prev,
        "to_version": version,
        "moved": prev != version,
        "by": by,
        "reason": why,
    }


def rollback(
    st: Settings | Registry,
    model: str,
    to: str | None = None,
    by: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Move ``champion`` back: to ``to`` or, by default, to the previous champion.

    The target must have been champion before (use ``promote`` for a new version).
    The target is chosen inside the lock, after interrupted and outside moves are
    recorded, so it is the version that really held the alias before, and two rollbacks
    racing do not both return to the same version.
    """
    reg = connect(st)
    reg.require_model(model)
    by = by or audit.actor(reg.st)
    with audit.registry_lock(reg.st, model):
        events = audit.reconcile(reg, model)
        current = reg.alias_version(model, CHAMPION)
        if current is None:
            raise Refused(f"model {model!r} has no champion to roll back from")
        if to is None:
            target = audit.previous_champion(events, current)
            if target is None:
                raise Refused(
                    f"{model} has no previous champion before v{current} to roll back to; "
                    f"name one with --to VERSION"
                )
            try:
                reg.resolve_version(model, target)
            except RegistryError as exc:
                raise Refused(
                    f"the previous champion v{target} of {model} is gone ({exc}); "
                    f"name another with --to VERSION"
                ) from None
        else:
            target = str(reg.resolve_version(model, to).version)
            if target == current:
                raise Refused(f"{model} v{target} is already champion")
            if not audit.was_champion(events, target):
                raise Refused(
                    f"{model} v{target} has never been champion, so it is not a rollback "
                    f"target; use `mlops promote {model} {target}`"
                )
        why = reason or f"rollback from v{current}"
        audit.move_champion(reg, model, target, why, by=by, action="rollback")
    return {"model": model, "from_version": current, "to_version": target, "by": by, "reason": why}


def apply_gate(
    st: Settings | Registry,
    model: str,
    version: str,
    passed: bool,
    reasons: Sequence[str],
    mode: str,
) -> str:
    """Record the gate on the version, then move aliases as the verdict and mode allow.

    All inside the registry lock. Mode ``auto``: a passing version becomes champion.
    Mode ``manual``: it becomes challenger with a pending approval. A failing version
    moves nothing.
    """
    reg = connect(st)
    with audit.registry_lock(reg.st, model):
        return _apply_gate(reg, model, str(version), passed, reasons, mode)


def _apply_gate(
    reg: Registry, model: str, version: str, passed: bool, reasons: Sequence[str], mode: str
) -> str:
    """Inside the lock, so a manual promotion waiting on it reads the gate just written."""
    c = reg.client
    audit.reconcile(reg, model)
    what = f"record the gate on {model} v{version}"
    reg.retry(
        lambda: c.set_model_version_tag(
            model, version, tags.GATE, "passed" if passed else "failed"
        ),
        what,
    )
    reg.retry(
        lambda: c.set_model_version_tag(model, version, tags.GATE_REASONS, "; ".join(reasons)), what
    )
    if not passed:
        return "champion unchanged (gate failed)"
    if mode == "auto":
        c.set_model_version_tag(model, version, tags.APPROVAL, Status.AUTO.value)
        prev = audit.move_champion(
            reg, model, version, "gate passed, approval mode auto", by="gate"
        )
        if prev == version:
            return f"champion v{version} (unchanged)"
        return f"champion v{prev} -> v{version}" if prev else f"champion -> v{version}"
    c.set_model_version_tag(model, version, tags.APPROVAL, Status.PENDING.value)
    if reg.alias_version(model, CHALLENGER) != version:
        audit.move(
            reg,
            model,
            CHALLENGER,
            version,
            {
                "action": "challenger",
                "version": version,
                "actor": "gate",
                "reason": "gate passed, waiting for approval",
            },
        )
        c.set_model_version_tag(model, version, tags.CHALLENGER_SINCE, audit.now())
    return f"challenger v{version}, approval pending"


# --------------------------------------------------------------------------- status
def _since(events: Sequence[audit.Event], alias: str, version: str) -> str | None:
    for e in events:
        if e.get("alias") == alias:
            return e.get("at") if e.get("to_version") == version else None
    return None


def _describe(reg: Registry, mv: Any, alias: str, events: Sequence[audit.Event]) -> dict[str, Any]:
    vt = mv.tags
    try:
        metrics = (
            {
                k[len("holdout_") :]: v
                for k, v in reg.client.get_run(mv.run_id).data.metrics.items()
                if k.startswith("holdout_")
            }
            if mv.run_id
            else {}
        )
    except Exception:  # noqa: BLE001 - a deleted run leaves the version readable
        metrics = {}
    skip = (tags.EVAL_HOLDOUT, tags.EVAL_CHAMPION_VERSION)
    evals = {
        k[len(tags.EVAL_PREFIX) :]: v
        for k, v in vt.items()
        if k.startswith(tags.EVAL_PREFIX)
        and k not in skip
        and not k.startswith(tags.EVAL_CHAMPION_PREFIX)
    }
    try:
        md5 = json.loads(vt.get(tags.DATA_MD5, "{}"))
    except json.JSONDecodeError:
        md5 = {}
    fallback = tags.CHAMPION_SINCE if alias == CHAMPION else tags.CHALLENGER_SINCE
    return {
        "alias": alias,
        "version": str(mv.version),
        "since": _since(events, alias, str(mv.version)) or vt.get(fallback),
        "run_id": mv.run_id,
        "candidate": vt.get(tags.CANDIDATE),
        "holdout_metrics": metrics,
        "eval": evals,
        "gate": vt.get(tags.GATE),
        "gate_reasons": vt.get(tags.GATE_REASONS),
        "approval": vt.get(tags.APPROVAL),
        "approval_by": vt.get(tags.APPROVAL_BY),
        "approval_at": vt.get(tags.APPROVAL_AT),
        "approval_note": vt.get(tags.APPROVAL_NOTE),
        "override": vt.get(tags.OVERRIDE),
        "partitions": [p for p in vt.get(tags.DATA_PARTITIONS, "").split(",") if p],
        "data_md5": md5,
        "code_revision": vt.get(tags.CODE_REVISION),
        "realised": realised(vt),
    }


def realised(version_tags: dict[str, str]) -> dict[str, float]:
    """Pure: a version's realised gate metric per labelled partition, oldest partition first.

    Read from the ``mlops.realised.<partition>`` tags ``label`` sets; a tag that is not
    a number or not on a partition id is left out.
    """
    found = {}
    for key, value in version_tags.items():
        pid = key[len(tags.REALISED_PREFIX) :]
        if not key.startswith(tags.REALISED_PREFIX) or not partitions.is_id(pid):
            continue
        try:
            found[pid] = float(value)
        except ValueError:
            continue
    return {pid: found[pid] for pid in sorted(found, key=partitions.sort_key)}


def missing_artifacts(reg: Registry, model: str, mv: Any) -> str | None:
    """Why ``mv``'s model files cannot be served, if they cannot: a listing, not a load."""
    import mlflow

    try:
        uri = reg.client.get_model_version_download_uri(model, str(mv.version))
        files = mlflow.artifacts.list_artifacts(artifact_uri=uri)
    except Exception as exc:  # noqa: BLE001 - any failure to list is what we report
        return f"its artifacts at {io.redact(mv.source)} cannot be listed ({io.redact(str(exc))})"
    if any(f.path.rsplit("/", 1)[-1] == "MLmodel" for f in files):
        return None
    return f"artifacts are missing at {io.redact(uri)} (no MLmodel file)"


def status(st: Settings | Registry, model: str | None = None) -> list[dict[str, Any]]:
    """Champion and challenger of ``model`` (default: every registered model).

    Each entry: the model, its aliases described (version, since when, holdout and
    evaluation metrics, gate, approval, training data, the realised gate metric of each
    labelled partition), any disagreement between the
    history and the champion alias (``history_problems``) and every problem found
    (``problems``: those, and a champion whose model files are gone). Interrupted and
    outside moves are settled first, as by every governance command.
    """
    reg = connect(st)
    if model is not None:
        reg.require_model(model)
        names = [model]
    else:
        names = sorted(m.name for m in reg.client.search_registered_models(max_results=1000))
    out = []
    for name in names:
        problems: list[str] = []
        try:
            with audit.registry_lock(reg.st, name):
                recorded = audit.reconcile(reg, name)
        except Exception as exc:  # noqa: BLE001 - a reader without write access still sees
            recorded = audit.history(reg, name)
            problems.append(
                f"interrupted or outside alias moves could not be recorded "
                f"({io.redact(str(exc))}); run `mlops status {name}` as a user who may "
                f"move aliases"
            )
        events = audit.effective(recorded)
        aliases: dict[str, dict[str, Any] | None] = {}
        for alias in (CHAMPION, CHALLENGER):
            mv = reg.version_by_alias(name, alias)
            aliases[alias] = None if mv is None else _describe(reg, mv, alias, events)
            gone = None if mv is None else missing_artifacts(reg, name, mv)
            if gone:
                fix = f"`mlops reject {name} {mv.version} --by NAME`"
                fix = f"run `mlops rollback {name}`" if alias == CHAMPION else f"run {fix}"
                problems.append(f"{alias} v{mv.version}: {gone}; {fix}")
        top = aliases[CHAMPION]
        champ = top["version"] if top else None
        history_problems = audit.check_history(events, champ) if events else []
        out.append(
            {
                "model": name,
                **aliases,
                "events": len(recorded),
                "history_problems": history_problems,
                "problems": [*problems, *history_problems],
            }
        )
    return out
