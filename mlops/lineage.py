"""lineage: from a prediction file back to the data it came from, and forward again.

Backward, from a prediction file (or a run id, or a model version): the model version
that wrote it, that version's MLflow run, the training data's DVC content hashes and
partitions, the validation result that passed each partition, the Feast feature
service and the code revision. Forward, from a data version (a DVC md5 or a partition
id): the training runs and model versions that used it and the prediction files those
versions wrote (plus the prediction files of that partition itself).

Everything is read from what the stages already record: version and run tags in the
registry, ``state/ingest.json``, ``state/validation/<partition>.json``, DVC pointers
and the ``<partition>.json`` sidecar beside each prediction file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mlops import audit, partitions, provenance, tags
from mlops.config import Settings
from mlops.lineage_records import (
    LineageError,
    current_md5,
    dvc_cache_file,
    prediction_files,
    prediction_record,
    relative,
    validation_record,
)
from mlops.registry import CHAMPION, Registry, connect

HEX32 = re.compile(r"^[0-9a-f]{32}$")


# --------------------------------------------------------------------------- registry records
def _tags_md5(vt: dict[str, str]) -> dict[str, str]:
    try:
        return dict(json.loads(vt.get(tags.DATA_MD5, "{}")))
    except (json.JSONDecodeError, TypeError):
        return {}


def _partitions(vt: dict[str, str]) -> list[str]:
    return [p for p in vt.get(tags.DATA_PARTITIONS, "").split(",") if p]


def _window(parts: list[str]) -> list[str] | None:
    try:
        start = partitions.interval(min(parts))[0]
        end = partitions.interval(max(parts))[1]
    except ValueError:
        return None
    return [start.isoformat(), end.isoformat()]


def _champion_periods(events: list[dict[str, str]], version: str) -> list[dict[str, str]]:
    """When ``version`` held ``champion``, oldest first, from the audit history."""
    periods: list[dict[str, str]] = []
    for e in reversed(events):
        if e.get("alias") != CHAMPION:
            continue
        if e.get("to_version") == version:
            periods.append({"from": e.get("at", ""), "until": "", "how": e.get("action", "")})
        elif e.get("from_version") == version and periods and not periods[-1]["until"]:
            periods[-1]["until"] = e.get("at", "")
    return periods


def model_chain(
    st: Settings, name: str, version: str, reg: Registry | None = None
) -> dict[str, Any]:
    """Backward from one model version: run, data, validation, features, code."""
    reg = reg or connect(st)
    mv = reg.resolve_version(name, version)
    c = reg.client
    vt = dict(mv.tags)
    run: dict[str, Any] = {"run_id": mv.run_id}
    problems: list[str] = []
    try:
        r = c.get_run(mv.run_id)
        exp = c.get_experiment(r.info.experiment_id)
        run.update(
            experiment=exp.name,
            run_name=r.info.run_name,
            status=r.info.status,
            start_time=r.info.start_time,
            params=dict(r.data.params),
            metrics={k: v for k, v in r.data.metrics.items() if k.startswith("holdout_")},
        )
        for key in (tags.DATA_MD5, tags.CODE_REVISION, tags.FEATURE_SERVICE):
            if key in r.data.tags and key in vt and r.data.tags[key] != vt[key]:
                problems.append(f"run tag {key} differs from the version tag")
        vt = {**r.data.tags, **vt}
    except Exception as exc:  # noqa: BLE001 - a deleted run still leaves the version
        problems.append(f"run {mv.run_id} cannot be read: {exc}")
    parts, md5 = _partitions(vt), _tags_md5(vt)
    data = []
    for pid in parts:
        h = md5.get(pid)
        now = current_md5(st, pid)
        v = validation_record(st, pid, h)
        entry = {
            "partition": pid,
            "md5": h,
            "current_md5": now,
            "changed_since": None if (h is None or now is None) else h != now,
            "in_dvc_cache": bool(h and dvc_cache_file(st, h).is_file()),
            "validation": v,
        }
        if not h or h == "unknown":
            problems.append(f"partition {pid}: no DVC hash was recorded at training")
        if not v["found"]:
            problems.append(f"partition {pid}: no validation record at {v['record']}")
        elif v.get("covers_trained_data") is False:
            edited = "; its validated copy changed since" if v["validated_copy_changed"] else ""
            problems.append(
                f"partition {pid}: the validation on record is for other data "
                f"(md5 {v.get('validated_md5')}, trained on {h}{edited})"
            )
        data.append(entry)
    rev = str(vt.get(tags.CODE_REVISION) or "unknown")
    if rev == "unknown":
        problems.append("no code revision was recorded (not a git checkout at training?)")
    elif rev.endswith("-dirty"):
        problems.append(
            f"code revision {rev}: trained with uncommitted changes, so the "
            f"revision does not pin the code exactly"
        )
    events = audit.effective(audit.history(reg, name))
    return {
        "model": {
            "name": name,
            "version": str(mv.version),
            "aliases": list(mv.aliases),
            "created": mv.creation_timestamp,
            "source": mv.source,
            "candidate": vt.get(tags.CANDIDATE),
            "gate": vt.get(tags.GATE),
            "gate_reasons": vt.get(tags.GATE_REASONS),
            "approval": vt.get(tags.APPROVAL),
            "approval_by": vt.get(tags.APPROVAL_BY),
            "approval_at": vt.get(tags.APPROVAL_AT),
            "override": vt.get(tags.OVERRIDE),
            "champion_periods": _champion_periods(events, str(mv.version)),
        },
        "run": run,
        "data": {
            "partitions": parts,
            "window": _window(parts) if parts else None,
            "versions": data,
        },
        "features": {
            "service": vt.get(tags.FEATURE_SERVICE),
            "feast_repo": relative(st.feast_repo, st),
        },
        "code": {
            "revision": vt.get(tags.CODE_REVISION),
            "dirty": str(vt.get(tags.CODE_REVISION, "")).endswith("-dirty"),
        },
        "problems": problems,
    }


def backward(
    st: Settings, target: str, version: str | None = None, reg: Registry | None = None
) -> dict[str, Any]:
    """Lineage from a prediction file, a run id, or a model name and ``version``."""
    if version is not None:
        chain = model_chain(st, target, version, reg)
        chain["predictions"] = [
            p
            for p in prediction_files(st)
            if (p["model_name"], p["model_version"]) == (target, version)
        ]
        return {"kind": "model", "start": f"{target} v{version}", **chain}
    path = Path(target)
    if path.suffix in (".parquet", ".json") or path.exists():
        pred = prediction_record(path)
        chain = model_chain(st, pred["model_name"], pred["model_version"], reg)
        problems = [*pred["problems"], *chain.pop("problems")]
        now = current_md5(st, pred["partition"])
        if pred["input_md5"] and now and pred["input_md5"] != now:
            problems.append(
                f"made from version {pred['input_md5']} of {pred['partition']}; the current "
                f"version is {now} (re-ingested since)"
            )
        if pred["run_id"] and pred["run_id"] != chain["run"]["run_id"]:
            problems.append(
                f"sidecar run id {pred['run_id']} is not the run of "
                f"{pred['model_name']} v{pred['model_version']} "
                f"({chain['run']['run_id']})"
            )
        return {
            "kind": "predictions",
            "start": pred["path"],
            "predictions": [pred],
            **chain,
            "problems": problems,
        }
    reg = reg or connect(st)
    c = reg.client
    try:
        c.get_run(target)
    except Exception:  # noqa: BLE001
        try:
            c.get_registered_model(target)
        except Exception:  # noqa: BLE001
            raise LineageError(
                f"{target!r} is not a prediction file, an MLflow run id, a registered model, "
                f"a DVC md5 or a partition id"
            ) from None
        raise LineageError(
            f"{target!r} is a registered model: give a version too "
            f"(`mlops lineage {target} VERSION`)"
        ) from None
    versions = c.search_model_versions(f"run_id = '{target}'")
    if not versions:
        raise LineageError(
            f"run {target} has no registered model version (a candidate that "
            f"was not selected?); its tags still hold its training data"
        )
    mv = max(versions, key=lambda m: int(m.version))
    out = backward(st, mv.name, str(mv.version), reg)
    return {**out, "kind": "run", "start": target}


def forward(st: Settings, data: str, reg: Registry | None = None) -> dict[str, Any]:
    """Everything that used a data version: a DVC md5 or a partition id."""
    c = (reg or connect(st)).client
    manifest = provenance.manifest(st)
    if partitions.is_id(data):
        pids, md5s = {data}, set()
    elif HEX32.match(data):
        md5s = {data}  # current or earlier: the manifest keeps every version
        pids = {p for p, _ in provenance.find(manifest, data)}
    else:
        raise LineageError(f"{data!r} is neither a DVC md5 (32 hex digits) nor a partition id")

    models = []
    for mv in c.search_model_versions(max_results=10_000):
        vt = dict(mv.tags)
        hashes = _tags_md5(vt)
        hit = (
            [p for p, h in hashes.items() if h in md5s]
            if md5s
            else [p for p in _partitions(vt) if p in pids]
        )
        if md5s:
            pids.update(hit)
        if hit:
            models.append(
                {
                    "name": mv.name,
                    "version": str(mv.version),
                    "run_id": mv.run_id,
                    "aliases": list(mv.aliases),
                    "partitions": hit,
                    "md5": {p: hashes.get(p) for p in hit},
                }
            )
    runs: list[dict[str, Any]] = []
    unfinished: list[dict[str, Any]] = []
    exps = [
        e.experiment_id
        for e in c.search_experiments(max_results=1000)
        if not e.name.startswith("audit/")
    ]
    needle = next(iter(md5s)) if md5s else None
    for r in (
        c.search_runs(exps, filter_string=tags.search(tags.STAGE, "train"), max_results=10_000)
        if exps
        else []
    ):
        rt = r.data.tags
        used = (
            (needle in _tags_md5(rt).values())
            if needle
            else bool(pids.intersection(_partitions(rt)))
        )
        if used:
            # A run killed mid-training stays RUNNING (or is marked KILLED): not a training
            # run that produced anything, so it is listed apart and not counted.
            (runs if r.info.status == "FINISHED" else unfinished).append(
                {
                    "run_id": r.info.run_id,
                    "run_name": r.info.run_name,
                    "candidate": rt.get(tags.CANDIDATE),
                    "selected": rt.get(tags.SELECTED) == "true",
                    "status": r.info.status,
                    "failed": r.info.status == "FAILED",
                }
            )
    used_by = {(m["name"], m["version"]) for m in models}

    def made_from(p: dict[str, Any]) -> bool:
        # a data hash: only what was made from those bytes, not later versions' outputs
        return p.get("input_md5") in md5s if md5s else p["partition"] in pids

    preds, scored = [], []
    for p in prediction_files(st):
        if (p["model_name"], p["model_version"]) in used_by:
            preds.append(p)
        if made_from(p):
            scored.append(p)
    current = {p: current_md5(st, p) for p in sorted(pids)}
    return {
        "kind": "forward",
        "start": data,
        "partitions": sorted(pids),
        "md5": sorted(md5s) if md5s else sorted({h for h in current.values() if h}),
        "current_md5": current,
        "versions": {p: provenance.versions(manifest.get(p) or {}) for p in sorted(pids)},
        "runs": runs,
        "unfinished_runs": unfinished,
        "models": models,
        "predictions": preds,
        "scored_partition_predictions": scored,
        "archived_predictions": [p for p in prediction_files(st, archived=True) if made_from(p)],
    }


def trace(st: Settings, target: str, version: str | None = None) -> dict[str, Any]:
    """Pick the direction from the argument: a data version goes forward, the rest back."""
    reg = connect(st)
    if version is None and not Path(target).exists():
        if partitions.is_id(target):
            return forward(st, target, reg)
        if HEX32.match(target):
            try:
                reg.client.get_run(target)
            except Exception:  # noqa: BLE001 - not a run: a data hash
                return forward(st, target, reg)
    return backward(st, target, version, reg)


# --------------------------------------------------------------------------- output
def format_text(lin: dict[str, Any]) -> str:
    """Pure: the lineage as an indented chain a person can read."""
    lines: list[str] = []
    if lin["kind"] == "forward":
        lines.append(f"data {lin['start']}: partitions {', '.join(lin['partitions']) or '-'}")
        for p, h in lin["current_md5"].items():
            lines.append(f"  {p}: current DVC md5 {h or '-'}")
            lines += [
                f"    earlier version {v.get('md5')} ingested {v.get('at', '?')}, replaced "
                f"{v.get('until', '?')}"
                for v in lin.get("versions", {}).get(p, [])[:-1]
            ]
        lines.append(f"  training runs ({len(lin['runs'])}):")
        lines += [
            f"    {r['run_id']} {r['candidate']}{' (selected)' if r['selected'] else ''}"
            for r in lin["runs"]
        ]
        if lin.get("unfinished_runs"):
            n = len(lin["unfinished_runs"])
            lines.append(f"  runs that did not finish, not counted ({n}):")
            lines += [
                f"    {r['run_id']} {r['candidate']} "
                + ("(failed: no model)" if r["failed"] else f"({r['status']}: interrupted?)")
                for r in lin["unfinished_runs"]
            ]
        lines.append(f"  model versions ({len(lin['models'])}):")
        lines += [
            " ".join(
                [
                    f"    {m['name']} v{m['version']}",
                    *("@" + a for a in m["aliases"]),
                    "trained on",
                    ", ".join(f"{p} {h}" for p, h in m["md5"].items()),
                ]
            )
            for m in lin["models"]
        ]
        lines.append(f"  prediction files from those versions ({len(lin['predictions'])}):")
        lines += [
            f"    {p['path']} ({p['model_name']} v{p['model_version']}, {p['rows']:,} rows)"
            for p in lin["predictions"]
        ]
        if lin["scored_partition_predictions"]:
            lines.append("  prediction files of the partition itself:")
            lines += [
                f"    {p['path']} ({p['model_name']} v{p['model_version']})"
                for p in lin["scored_partition_predictions"]
            ]
        if lin.get("archived_predictions"):
            lines.append("  every prediction version of the partition, oldest first:")
            lines += [
                f"    {p['path']} ({p['model_name']} v{p['model_version']}, input md5 "
                f"{p['input_md5'] or '-'}, {p['rows']:,} rows)"
                for p in lin["archived_predictions"]
            ]
        return "\n".join(lines)
    for p in lin.get("predictions", []) if lin["kind"] == "predictions" else []:
        lines.append(f"predictions {p['path']} ({p['rows']:,} rows, partition {p['partition']})")
    m, r = lin["model"], lin["run"]
    held = "; ".join(f"{x['from']} .. {x['until'] or 'now'}" for x in m["champion_periods"])
    lines.append(
        f"  model {m['name']} v{m['version']} {' '.join('@' + a for a in m['aliases'])}".rstrip()
    )
    lines.append(
        f"    gate {m['gate'] or '-'}; approval {m['approval'] or '-'}"
        f"{' by ' + m['approval_by'] if m['approval_by'] else ''}"
        f"{'; OVERRIDE ' + m['override'] if m['override'] else ''}"
    )
    if held:
        lines.append(f"    champion {held}")
    metrics = ", ".join(
        f"{k[len('holdout_') :]} {v:.4f}" for k, v in sorted(r.get("metrics", {}).items())
    )
    lines.append(
        f"  run {r['run_id']} ({r.get('experiment', '?')}/{r.get('run_name', '?')})"
        f"{': ' + metrics if metrics else ''}"
    )
    d = lin["data"]
    win = f" window {d['window'][0]} .. {d['window'][1]}" if d["window"] else ""
    lines.append(f"  training data: {', '.join(d['partitions']) or '-'}{win}")
    for e in d["versions"]:
        v = e["validation"]
        changed = (
            " (CHANGED since: now " + str(e["current_md5"]) + ")" if e["changed_since"] else ""
        )
        lines.append(
            f"    {e['partition']} DVC md5 {e['md5']}{changed}"
            f"{'' if e['in_dvc_cache'] else ' (not in the local DVC cache)'}"
        )
        if v["found"]:
            stats = v.get("statistics") or {}
            lines.append(
                f"      validation {'passed' if v['success'] else 'FAILED'} at "
                f"{v.get('validated_at')} ({stats.get('evaluated', '?')} "
                f"expectations, suite {v.get('suite')}) {v['record']}"
            )
        else:
            lines.append(f"      validation: no record at {v['record']}")
    lines.append(
        f"  features: Feast feature service {lin['features']['service']} "
        f"({lin['features']['feast_repo']})"
    )
    lines.append(f"  code: {lin['code']['revision']}")
    if lin["kind"] != "predictions" and lin.get("predictions"):
        lines.append(f"  prediction files ({len(lin['predictions'])}):")
        lines += [f"    {p['path']} ({p['rows']:,} rows)" for p in lin["predictions"]]
    for problem in lin.get("problems", []):
        lines.append(f"  ! {problem}")
    return "\n".join(lines)
