"""describe: what the MLflow registry page says about a model and each of its versions.

Tags are for machines; a person reads the description. A version's says which candidate
it is (run, kind, MLflow flavour), what it was trained on (window, DVC hashes), what the
promotion gate compared and decided (candidate against champion, the floor and the
required margin), where its approval stands and whether it is champion. The registered
model's says what the model predicts, its contract and where its model cards are.

Facts in, Markdown out: :func:`version_facts` reads a version's tags into a
``describe_render.Version`` and ``describe_render.version_text`` (or ``model_text``)
renders it, both pure. :func:`refresh` and :func:`write_model` then read the registry,
render and write, inside the registry lock. Every step that changes the facts calls
them: train, promote, approval decisions and expiry, champion moves, the model card.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mlops import tags
from mlops.describe_render import (
    Approval,
    Gate,
    Version,
    merge,
    model_text,
    version_text,
    window,
)
from mlops.registry import Registry, lock

if TYPE_CHECKING:
    from pathlib import Path

    from mlops.config import Params

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- facts
def _number(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return None if value is None or value != value else value


def _ids(raw: str | None) -> tuple[str, ...]:
    return tuple(p for p in (raw or "").split(",") if p)


def version_facts(
    model: str,
    version: str,
    version_tags: Mapping[str, str],
    aliases: Sequence[str] = (),
    run_id: str | None = None,
    run_params: Mapping[str, str] | None = None,
    run_tags: Mapping[str, str] | None = None,
) -> Version:
    """Pure: a version's facts from its tags, aliases and its run's params and tags."""
    vt, rp, rt = dict(version_tags), dict(run_params or {}), dict(run_tags or {})
    held = [k[len(tags.HOLDOUT_PREFIX) :] for k in vt if k.startswith(tags.HOLDOUT_PREFIX)]
    metric = vt.get(tags.GATE_METRIC) or (held[0] if held else None)
    parts = _ids(vt.get(tags.DATA_PARTITIONS))
    hold = _ids(rp.get("holdout_partitions")) or _ids(vt.get(tags.EVAL_HOLDOUT))
    try:
        md5 = {str(k): str(v) for k, v in json.loads(vt.get(tags.DATA_MD5) or "{}").items()}
    except (json.JSONDecodeError, AttributeError):
        md5 = {}
    gated = tags.GATE_CANDIDATE in vt
    champion_version = vt.get(tags.GATE_CHAMPION_VERSION if gated else tags.EVAL_CHAMPION_VERSION)
    gate = Gate(
        decision=vt.get(tags.GATE),
        reasons=vt.get(tags.GATE_REASONS),
        metric=metric,
        candidate=_number(vt.get(tags.GATE_CANDIDATE if gated else tags.evaluation(metric or ""))),
        champion=_number(
            vt.get(tags.GATE_CHAMPION if gated else tags.champion_evaluation(metric or ""))
        ),
        champion_version=champion_version or None,
        floor=_number(vt.get(tags.GATE_FLOOR)),
        min_improvement=_number(vt.get(tags.GATE_MIN_IMPROVEMENT)),
    )
    approval = Approval(
        status=vt.get(tags.APPROVAL),
        by=vt.get(tags.APPROVAL_BY),
        at=vt.get(tags.APPROVAL_AT),
        note=vt.get(tags.APPROVAL_NOTE),
        override=vt.get(tags.OVERRIDE),
        expired_at=vt.get(tags.APPROVAL_EXPIRED_AT),
        expired_why=vt.get(tags.APPROVAL_EXPIRED_WHY),
    )
    airflow_keys = (tags.AIRFLOW_DAG_ID, tags.AIRFLOW_DAG_RUN_ID, tags.AIRFLOW_TASK_ID)
    return Version(
        model=model,
        version=str(version),
        run_id=run_id,
        candidate=vt.get(tags.CANDIDATE) or rt.get(tags.CANDIDATE),
        kind=vt.get(tags.KIND) or rt.get(tags.KIND) or rp.get("kind"),
        metric=metric,
        holdout=_number(vt.get(tags.holdout(metric))) if metric else None,
        threshold=_number(vt.get(tags.THRESHOLD)),
        partitions=parts,
        held_out=hold,
        window=window(parts),
        md5=md5,
        feature_service=vt.get(tags.FEATURE_SERVICE),
        code_revision=vt.get(tags.CODE_REVISION),
        fingerprint=vt.get(tags.FINGERPRINT),
        gate=gate,
        approval=approval,
        aliases=tuple(aliases),
        champion_since=vt.get(tags.CHAMPION_SINCE),
        challenger_since=vt.get(tags.CHALLENGER_SINCE),
        replaced_by=vt.get(tags.REPLACED_BY),
        card=vt.get(tags.CARD),
        airflow={k: v for k, v in rt.items() if k.startswith(tags.AIRFLOW_PREFIX)}
        if any(rt.get(k) for k in airflow_keys)
        else {},
    )


# --------------------------------------------------------------------------- writes
def _write_version(reg: Registry, model: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    c = reg.client
    mv = c.get_model_version(model, version)
    run_params: dict[str, str] = {}
    run_tags: dict[str, str] = {}
    if mv.run_id:
        try:
            run = c.get_run(mv.run_id)
            run_params, run_tags = dict(run.data.params), dict(run.data.tags)
        except MlflowException:  # a deleted run leaves the version describable
            pass
    facts = version_facts(
        model, str(mv.version), mv.tags, list(mv.aliases), mv.run_id, run_params, run_tags
    )
    text = merge(mv.description, version_text(facts), version_text(facts, compact=True))
    if text == (mv.description or ""):
        return False
    c.update_model_version(model, str(mv.version), text)
    return True


def refresh(reg: Registry, model: str, *versions: str | int | None) -> None:
    """Rewrite the descriptions of ``versions`` of ``model`` from their tags; best effort.

    Inside the registry lock, so a decision recorded meanwhile is not overwritten by an
    older picture. A failure is logged, not raised: the tags are the record, and the
    next step that changes them writes the description again.
    """
    for v in dict.fromkeys(str(v).strip().lstrip("vV") for v in versions if v not in (None, "")):
        try:
            with lock(reg.st, model):
                reg.retry(
                    functools.partial(_write_version, reg, model, v), f"describe {model} v{v}"
                )
        except Exception as exc:  # noqa: BLE001 - the description is a view of the tags
            log.warning("the description of %s v%s was not rewritten: %s", model, v, exc)


def write_model(reg: Registry, params: Params, feature_service: str, cards: Path) -> None:
    """Rewrite the registered model's description from params.yaml; best effort.

    ``cards`` is the folder ``mlops card`` writes the model cards to.
    """
    name = params.model_name
    block = model_text(params, feature_service, str(cards))

    def write() -> None:
        rm = reg.client.get_registered_model(name)
        text = merge(rm.description, block)
        if text != (rm.description or ""):
            reg.client.update_registered_model(name, text)

    try:
        with lock(reg.st, name):
            reg.retry(write, f"describe {name}")
    except Exception as exc:  # noqa: BLE001 - the description is a view of params.yaml
        log.warning("the description of %s was not rewritten: %s", name, exc)
