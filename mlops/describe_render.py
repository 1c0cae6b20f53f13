"""describe_render: the Markdown the MLflow registry shows for a model and its versions.

Pure: the facts (a ``Version``, which ``mlops.describe`` reads from the registry) in,
Markdown out. The project's
text comes first (its first line is what the registry's lists show) and ends with an
HTML comment, as its first line does; the MLflow UI does not show them. What a person
writes below it is kept (:func:`merge`, :func:`authored`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops import models, partitions, tags
from mlops.registry import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from mlops.config import Params

OPEN = "<!-- mlops:begin"
BEGIN = f"{OPEN}: mlops writes this block from the tags; notes below it are kept -->"
END = "<!-- mlops:end -->"
LIMIT = 5000
"""MLflow stores at most 5000 characters of a model's or a version's description."""
MAX_HASH_ROWS = 12
MAX_CATEGORIES = 8


@dataclass(frozen=True)
class Gate:
    """What the promotion gate compared and decided (None: not recorded)."""

    decision: str | None = None
    reasons: str | None = None
    metric: str | None = None
    candidate: float | None = None
    champion: float | None = None
    champion_version: str | None = None
    floor: float | None = None
    min_improvement: float | None = None


@dataclass(frozen=True)
class Approval:
    """Where a version's approval stands, from its ``mlops.approval.*`` tags."""

    status: str | None = None
    by: str | None = None
    at: str | None = None
    note: str | None = None
    override: str | None = None
    expired_at: str | None = None
    expired_why: str | None = None


@dataclass(frozen=True)
class Version:
    """The facts a version's description is written from."""

    model: str
    version: str
    run_id: str | None = None
    candidate: str | None = None
    kind: str | None = None
    metric: str | None = None
    holdout: float | None = None
    threshold: float | None = None
    partitions: tuple[str, ...] = ()
    held_out: tuple[str, ...] = ()
    window: tuple[str, str] | None = None
    md5: dict[str, str] = field(default_factory=dict)
    feature_service: str | None = None
    code_revision: str | None = None
    fingerprint: str | None = None
    gate: Gate = Gate()
    approval: Approval = Approval()
    aliases: tuple[str, ...] = ()
    champion_since: str | None = None
    challenger_since: str | None = None
    replaced_by: str | None = None
    card: str | None = None
    airflow: dict[str, str] = field(default_factory=dict)


def data_hash(md5: Mapping[str, str]) -> str:
    """One hash for a training window: md5 over the sorted partition -> md5 map."""
    return hashlib.md5(json.dumps(dict(md5), sort_keys=True).encode()).hexdigest()


def window(parts: Sequence[str]) -> tuple[str, str] | None:
    """The first and last instant (ISO) the partitions ``parts`` cover; None if unknown."""
    with contextlib.suppress(ValueError):
        first = min(parts, key=partitions.sort_key)
        last = max(parts, key=partitions.sort_key)
        return partitions.interval(first)[0].isoformat(), partitions.interval(last)[1].isoformat()
    return None


# --------------------------------------------------------------------------- text
def _text(value: object) -> str:
    """Free text (a person's note, a reason) safe inside the block and a table cell."""
    return " ".join(str(value).split()).replace("<", "&lt;").replace("|", "\\|")


def _at(value: str | None) -> str:
    return value or "an unrecorded time"


def flavour(kind: str | None) -> str:
    """Pure: the MLflow flavour and format ``train`` logs a candidate kind in."""
    if not kind:
        return "unknown"
    return "`xgboost` (UBJ)" if kind == "xgboost" else "`sklearn` (skops)"


def summary(f: Version) -> str:
    """Pure: a version's first line, the one the registry's list of versions shows."""
    roles = [a for a in (CHAMPION, CHALLENGER) if a in f.aliases]
    if roles:
        where = " and ".join(roles).capitalize()
    else:
        where = f"Replaced by v{f.replaced_by}" if f.replaced_by else "No alias"
    a = f.approval
    approval = {
        "approved": f"approved by {_text(a.by or '?')}",
        "rejected": f"rejected by {_text(a.by or '?')}",
        "pending": "approval pending",
        "expired": "approval expired",
        "auto": "approval auto",
    }.get(a.status or "", "")
    gate = f"gate {f.gate.decision}" if f.gate.decision else "gate not run"
    value = f.gate.candidate if f.gate.candidate is not None else f.holdout
    score = f"`{f.metric}` {value:.4f}" if f.metric and value is not None else ""
    return " · ".join(b for b in (where, approval, gate, score) if b)


def _candidate(f: Version) -> list[str]:
    out = [
        "#### Candidate",
        f"- `{f.candidate or '?'}`: kind `{f.kind or '?'}`, MLflow flavour {flavour(f.kind)}, "
        f"run `{f.run_id or '?'}`",
    ]
    if f.metric and f.holdout is not None:
        on = f" on {', '.join(f.held_out)}" if f.held_out else ""
        cut = "" if f.threshold is None else f", decision threshold {f.threshold:.4f}"
        out.append(f"- holdout {f.metric} **{f.holdout:.4f}**{on}{cut}")
    a = f.airflow
    if a:
        link = f" ([task instance]({a[tags.AIRFLOW_URL]}))" if a.get(tags.AIRFLOW_URL) else ""
        index = f", map index {a[tags.AIRFLOW_MAP_INDEX]}" if a.get(tags.AIRFLOW_MAP_INDEX) else ""
        out.append(
            f"- trained in Airflow: DAG `{a.get(tags.AIRFLOW_DAG_ID, '?')}`, run "
            f"`{a.get(tags.AIRFLOW_DAG_RUN_ID, '?')}`, task `{a.get(tags.AIRFLOW_TASK_ID, '?')}`"
            f"{index}, try {a.get(tags.AIRFLOW_TRY_NUMBER, '?')}{link}"
        )
    return out


def _training(f: Version, table: bool) -> list[str]:
    out = ["#### Training data"]
    if f.partitions:
        fitted = [p for p in f.partitions if p not in f.held_out]
        span = f"{f.window[0][:10]} to {f.window[1][:10]}: " if f.window else ""
        hold = f"; held out {_list(f.held_out)}" if f.held_out else ""
        out.append(f"- window {span}fitted on {_list(fitted) or '-'}{hold}")
    else:
        out.append("- window: not recorded (not trained by `mlops train`)")
    if f.md5:
        out.append(f"- data hash `{data_hash(f.md5)}` (md5 over the partitions' DVC hashes)")
    ids = [
        f"feature service `{f.feature_service}`" if f.feature_service else "",
        f"code `{f.code_revision}`" if f.code_revision else "",
        f"fingerprint `{f.fingerprint[:12]}`" if f.fingerprint else "",
    ]
    if any(ids):
        out.append("- " + ", ".join(i for i in ids if i))
    if f.md5 and table:
        rows = sorted(f.md5.items(), key=lambda kv: _sort(kv[0]))
        out += ["", "| partition | DVC md5 |", "|---|---|"]
        out += [f"| {p} | `{_text(h)}` |" for p, h in rows[:MAX_HASH_ROWS]]
        if len(rows) > MAX_HASH_ROWS:
            out.append(f"| ... | {len(rows) - MAX_HASH_ROWS} more in tag `{tags.DATA_MD5}` |")
    return out


def _list(pids: Sequence[str], most: int = 6) -> str:
    """Partitions by name, or the first and last of a long list and how many."""
    if len(pids) <= most:
        return ", ".join(pids)
    ordered = sorted(pids, key=_sort)
    return f"{ordered[0]} ... {ordered[-1]} ({len(pids)} partitions)"


def _sort(pid: str) -> tuple[int, Any]:
    try:
        return 0, partitions.sort_key(pid)
    except ValueError:
        return 1, pid


def _gate(f: Version, reasons: bool) -> list[str]:
    g = f.gate
    if g.decision is None:
        return [
            "#### Promotion gate: not run yet",
            f"- `mlops evaluate` then `mlops promote` decide whether v{f.version} may replace "
            f"the champion",
        ]
    metric = g.metric or "?"
    higher = models.HIGHER_IS_BETTER.get(metric, True)
    cmp = ">=" if higher else "<="
    out = [f"#### Promotion gate: **{g.decision}**", "", f"| {metric} | |", "|---|---|"]
    cand = "not recorded" if g.candidate is None else f"{g.candidate:.4f}"
    out.append(f"| candidate v{f.version} | {cand} |")
    if g.champion is not None:
        out.append(f"| champion v{g.champion_version or '?'} | {g.champion:.4f} |")
        gain = None if g.candidate is None else (g.candidate - g.champion) * (1 if higher else -1)
        need = "not recorded" if g.min_improvement is None else f"{g.min_improvement:.4f}"
        verdict = (
            ""
            if gain is None or g.min_improvement is None
            else f": {'yes' if gain >= g.min_improvement else 'no'}"
        )
        shown = "?" if gain is None else f"{gain:+.4f}"
        out.append(f"| gain over the champion | {shown} (required margin >= {need}{verdict}) |")
    else:
        out.append("| champion | none at the gate: floor only |")
    if g.floor is not None:
        ok = g.candidate is not None and (
            g.candidate >= g.floor if higher else g.candidate <= g.floor
        )
        out.append(f"| floor | {g.floor:.4f} (candidate {cmp} floor: {'yes' if ok else 'no'}) |")
    else:
        out.append("| floor | not recorded |")
    if reasons and g.reasons:
        out += ["", f"Reasons: {_text(g.reasons)}"]
    return out


def _approval(f: Version) -> list[str]:
    a, g = f.approval, f.gate
    name = f"{f.model} {f.version}"
    if a.status == "approved":
        line = f"- **approved** by {_text(a.by or '?')} at {_at(a.at)}"
        if a.expired_at:
            line += f", after its request expired at {a.expired_at}"
    elif a.status == "rejected":
        line = f"- **rejected** by {_text(a.by or '?')} at {_at(a.at)}"
    elif a.status == "pending":
        since = f" since {f.challenger_since}" if f.challenger_since else ""
        line = (
            f"- **pending**{since}: waiting for a person (`mlops approve {name} --by NAME`, "
            f"`mlops reject {name} --by NAME`, or the Airflow approval task)"
        )
    elif a.status == "expired":
        why = f" ({_text(a.expired_why)})" if a.expired_why else ""
        line = (
            f"- **expired** at {_at(a.expired_at)}{why}: no decision in time; it can still "
            f"be approved"
        )
    elif a.status == "auto":
        line = "- not needed: approval mode `auto`, the gate decided"
    elif g.decision == "failed":
        line = "- not requested: the gate failed"
    else:
        line = "- not requested yet"
    out = ["#### Approval", line]
    if a.note and a.status in ("approved", "rejected"):
        out.append(f"- note: {_text(a.note)}")
    if a.override:
        out.append(f"- **gate overridden**: {_text(a.override)}")
    return out


def _registry(f: Version) -> list[str]:
    out = ["#### Registry"]
    if CHAMPION in f.aliases:
        out.append(f"- **champion** since {_at(f.champion_since)}")
    elif f.replaced_by:
        out.append(f"- was champion until replaced by v{f.replaced_by}")
    if CHALLENGER in f.aliases:
        out.append(f"- **challenger** since {_at(f.challenger_since)}")
    if not f.aliases and not f.replaced_by:
        out.append("- holds no alias")
    card = f"`{f.card}`" if f.card else f"not written yet (`mlops card {f.model} {f.version}`)"
    out.append(f"- model card: {card}")
    return out


FOOTER = (
    "_Kept up to date by mlops from this version's `mlops.*` tags at every step that "
    "changes them; notes written below this line are kept._"
)


def version_text(f: Version, compact: bool = False) -> str:
    """Pure: the Markdown block of a version's description (``compact``: shorter)."""
    parts = [
        _candidate(f),
        _training(f, table=not compact),
        _gate(f, reasons=not compact),
        _approval(f),
        _registry(f),
        [FOOTER],
    ]
    body = "\n\n".join("\n".join(p) for p in parts)
    return f"{summary(f)} {BEGIN}\n\n{body}\n{END}"


def _allowed(feat: Any) -> str:
    if feat.categories:
        shown = ", ".join(_text(c) for c in feat.categories[:MAX_CATEGORIES])
        more = " ..." if len(feat.categories) > MAX_CATEGORIES else ""
        return f"{shown}{more} ({len(feat.categories)})"
    if feat.dtype == "category":
        return "learned at training"
    if feat.min is not None or feat.max is not None:
        lo = "-inf" if feat.min is None else f"{feat.min:g}"
        hi = "inf" if feat.max is None else f"{feat.max:g}"
        return f"{lo} to {hi}"
    return ""


def model_text(params: Params, feature_service: str, cards: str) -> str:
    """Pure: the Markdown block of the registered model's description.

    What it predicts (target, task), the contract's features and where the model cards
    are (``cards``: the folder ``mlops card`` writes them to).
    """
    c, name = params.contract, params.model_name
    keys = ", ".join(f"`{k}`" for k in c.entity_keys)
    if c.task == "classification":
        what = (
            f"a **classification** model: the probability that `{c.target}` is true, and "
            f"the label at each version's decision threshold"
        )
    else:
        bounds = [f"{v:g}" for v in (c.target_min, c.target_max) if v is not None]
        span = f" (from {' to '.join(bounds)})" if len(bounds) == 2 else ""
        what = f"a **regression** model: the value of `{c.target}`{span}"
    rows = [f"| `{f.name}` | {f.dtype} | {_allowed(f)} |" for f in c.features]
    first = f"Predicts `{c.target}` ({c.task}) for each {keys} at `{c.timestamp}`"
    body = [
        f"**{name}** predicts **`{c.target}`** for each {keys} at `{c.timestamp}`: {what}.",
        "\n".join(
            [
                f"- gate metric `{params.gate_metric}`, on the most recent "
                f"{params.train.holdout_partitions} {params.ingest.partition} partition(s) "
                f"of the training window",
                f"- features read through the Feast feature service `{feature_service}`",
                f"- model cards: `mlops card {name} VERSION` writes `{cards}/{name}-vVERSION.html` "
                f"(and `.md`, `.json`) and logs it to the version's run under `model_card/`; "
                f"the version's description links it",
                f"- aliases: `{CHAMPION}` is served and scored with, `{CHALLENGER}` waits for "
                f"approval; each version's description says what it was trained on, what the "
                f"gate decided and where its approval stands",
            ]
        ),
        "\n".join(
            [
                f"#### Contract: {len(c.features)} features, in model input order",
                "",
                "| feature | type | values |",
                "|---|---|---|",
                *rows,
            ]
        ),
        "_Kept up to date by mlops from params.yaml at every `mlops train`; notes written "
        "below this line are kept, and the model card takes them as its intended use._",
    ]
    return f"{first} {BEGIN}\n\n" + "\n\n".join(body) + f"\n{END}"


def _block(text: str) -> tuple[int, int] | None:
    """Where the project's block is in ``text``: from the start of its marker's line."""
    start = text.find(OPEN)
    end = text.find(END, max(start, 0))
    if start < 0 or end < 0:
        return None
    return text.rfind("\n", 0, start) + 1, end + len(END)


def authored(description: str | None) -> str:
    """Pure: what a person wrote in a description: all of it but the project's block."""
    text = description or ""
    found = _block(text)
    if found is None:
        return text.strip()
    return (text[: found[0]].rstrip() + "\n\n" + text[found[1] :].lstrip()).strip()


def merge(description: str | None, block: str, shorter: str | None = None) -> str:
    """Pure: ``description`` with its project block replaced by ``block``.

    The block comes first (its first line is what lists of versions show), then a
    person's text as written. Over MLflow's limit, ``shorter`` (a compact block) is used
    instead, then the person's text is cut, saying so.
    """
    mine = authored(description)
    for candidate in (block, shorter or block):
        out = f"{candidate}\n\n{mine}" if mine else candidate
        if len(out) <= LIMIT:
            return out
    last = shorter or block
    cut = "\n\n_(cut: MLflow keeps at most 5000 characters)_"
    return f"{last}\n\n{mine[: max(LIMIT - len(last) - len(cut) - 2, 0)]}{cut}"[:LIMIT]
