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

from mlops import io
from mlops.config import Settings
from mlops.registry import RegistryError

HEX32 = re.compile(r"^[0-9a-f]{32}$")
PARTITION = re.compile(r"^\d{4}-\d{2}(-\d{2})?$|^\d{4}-W\d{2}$")


class LineageError(RegistryError):
    """The starting point of a lineage query cannot be found; the message says why."""


# --------------------------------------------------------------------------- local records
def _rel(path: Path, st: Settings) -> str:
    return str(path.relative_to(st.root)) if path.is_relative_to(st.root) else str(path)


def dvc_cache_file(st: Settings, md5: str) -> Path:
    """Where DVC 3 keeps a file of this content hash in the project's local cache."""
    return st.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def current_md5(st: Settings, partition: str) -> str | None:
    """The content hash the raw partition has now: its DVC pointer, else the manifest."""
    from mlops.versioning import VersioningError, content_hash

    try:
        return content_hash(io.partition_file(st.raw_dir, partition))
    except (VersioningError, KeyError, TypeError):
        manifest = _manifest(st)
        return manifest.get(partition, {}).get("md5")


def _manifest(st: Settings) -> dict[str, Any]:
    path = st.state_dir / "ingest.json"
    return io.read_json(path) if path.is_file() else {}


def validation_record(st: Settings, partition: str, md5: str | None) -> dict[str, Any]:
    """The validation result on record for a partition, and whether it covers ``md5``.

    The summary names the file it validated; the validated copy is a byte copy of the
    raw file, so its md5 tells whether the result on record is for the data trained on.
    """
    path = st.state_dir / "validation" / f"{partition}.json"
    out: dict[str, Any] = {"partition": partition, "record": _rel(path, st)}
    if not path.is_file():
        quarantined = st.quarantine_dir / partition / "validation.json"
        if quarantined.is_file():
            q = io.read_json(quarantined)
            out.update(found=True, success=False, record=_rel(quarantined, st),
                       validated_at=q.get("validated_at"), message=q.get("message"))
        else:
            out.update(found=False, success=None)
        return out
    s = io.read_json(path)
    validated = io.partition_file(st.validated_dir, partition)
    checked = s.get("md5") or (io.md5(validated) if validated.is_file() else None)
    out.update(
        found=True,
        success=bool(s.get("success")),
        validated_at=s.get("validated_at"),
        suite=s.get("suite"),
        checkpoint=s.get("checkpoint"),
        statistics=s.get("statistics"),
        data_docs_page=s.get("data_docs_page"),
        validated_md5=checked,
        covers_trained_data=None if (checked is None or md5 is None) else checked == md5,
    )
    return out


def prediction_record(path: Path) -> dict[str, Any]:
    """What a prediction file says about itself: its sidecar, else its own columns."""
    import pyarrow.parquet as pq

    if path.suffix == ".json":
        path = path.with_suffix(".parquet")
    if not path.is_file():
        raise LineageError(f"{path}: no such prediction file")
    side = path.with_suffix(".json")
    meta = io.read_json(side) if side.is_file() else {}
    try:
        cols = pq.read_table(path, columns=["model_name", "model_version"]).to_pandas()
    except (KeyError, ValueError) as exc:
        raise LineageError(f"{path}: not a prediction file of mlops (no model_name and "
                           f"model_version columns: {exc})") from None
    pairs = sorted({(str(a), str(b)) for a, b in zip(cols["model_name"], cols["model_version"],
                                                     strict=True)})
    problems = []
    if len(pairs) != 1:
        problems.append(f"rows come from {len(pairs)} model versions: {pairs}")
    if meta and pairs and (meta.get("model_name"), str(meta.get("model_version"))) != pairs[0]:
        problems.append(f"sidecar {side.name} names {meta.get('model_name')} "
                        f"v{meta.get('model_version')} but the rows say {pairs[0][0]} "
                        f"v{pairs[0][1]}")
    name, version = pairs[0] if pairs else (meta.get("model_name"), meta.get("model_version"))
    return {"path": str(path), "partition": meta.get("partition", path.stem),
            "rows": len(cols), "model_name": name, "model_version": str(version),
            "run_id": meta.get("run_id"), "input_md5": meta.get("input_md5"),
            "sidecar": side.is_file(), "problems": problems}


def prediction_files(st: Settings) -> list[dict[str, Any]]:
    """Every prediction file under the predictions folder, described."""
    folder = st.predictions_dir
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.parquet")):
        try:
            out.append(prediction_record(p))
        except LineageError:
            continue
    return out


# --------------------------------------------------------------------------- registry records
def _tags_md5(tags: dict[str, str]) -> dict[str, str]:
    try:
        return dict(json.loads(tags.get("mlops.data.md5", "{}")))
    except (json.JSONDecodeError, TypeError):
        return {}


def _partitions(tags: dict[str, str]) -> list[str]:
    return [p for p in tags.get("mlops.data.partitions", "").split(",") if p]


def _window(parts: list[str]) -> list[str] | None:
    try:
        start = io.partition_interval(min(parts))[0]
        end = io.partition_interval(max(parts))[1]
    except ValueError:
        return None
    return [start.isoformat(), end.isoformat()]


def _champion_periods(events: list[dict[str, str]], version: str) -> list[dict[str, str]]:
    """When ``version`` held ``champion``, oldest first, from the audit history."""
    from mlops.registry import CHAMPION

    periods: list[dict[str, str]] = []
    for e in reversed(events):
        if e.get("alias") != CHAMPION:
            continue
        if e.get("to_version") == version:
            periods.append({"from": e.get("at", ""), "until": "", "how": e.get("action", "")})
        elif e.get("from_version") == version and periods and not periods[-1]["until"]:
            periods[-1]["until"] = e.get("at", "")
    return periods


def model_chain(st: Settings, name: str, version: str) -> dict[str, Any]:
    """Backward from one model version: run, data, validation, features, code."""
    from mlops import governance
    from mlops.registry import client

    mv = governance.resolve_version(st, name, version)
    c = client(st)
    tags = dict(mv.tags)
    run: dict[str, Any] = {"run_id": mv.run_id}
    problems: list[str] = []
    try:
        r = c.get_run(mv.run_id)
        exp = c.get_experiment(r.info.experiment_id)
        run.update(experiment=exp.name, run_name=r.info.run_name, status=r.info.status,
                   start_time=r.info.start_time, params=dict(r.data.params),
                   metrics={k: v for k, v in r.data.metrics.items() if k.startswith("holdout_")})
        for key in ("mlops.data.md5", "mlops.code_revision", "mlops.feature_service"):
            if key in r.data.tags and key in tags and r.data.tags[key] != tags[key]:
                problems.append(f"run tag {key} differs from the version tag")
        tags = {**r.data.tags, **tags}
    except Exception as exc:  # noqa: BLE001 - a deleted run still leaves the version
        problems.append(f"run {mv.run_id} cannot be read: {exc}")
    parts, md5 = _partitions(tags), _tags_md5(tags)
    data = []
    for pid in parts:
        h = md5.get(pid)
        now = current_md5(st, pid)
        v = validation_record(st, pid, h)
        entry = {"partition": pid, "md5": h, "current_md5": now,
                 "changed_since": None if (h is None or now is None) else h != now,
                 "in_dvc_cache": bool(h and dvc_cache_file(st, h).is_file()),
                 "validation": v}
        if not h or h == "unknown":
            problems.append(f"partition {pid}: no DVC hash was recorded at training")
        if not v["found"]:
            problems.append(f"partition {pid}: no validation record at {v['record']}")
        elif v.get("covers_trained_data") is False:
            problems.append(f"partition {pid}: the validation on record is for other data "
                            f"(md5 {v.get('validated_md5')}, trained on {h})")
        data.append(entry)
    rev = str(tags.get("mlops.code_revision") or "unknown")
    if rev == "unknown":
        problems.append("no code revision was recorded (not a git checkout at training?)")
    elif rev.endswith("-dirty"):
        problems.append(f"code revision {rev}: trained with uncommitted changes, so the "
                        f"revision does not pin the code exactly")
    events = governance.history(st, name)
    return {
        "model": {"name": name, "version": str(mv.version), "aliases": list(mv.aliases),
                  "created": mv.creation_timestamp, "source": mv.source,
                  "candidate": tags.get("mlops.candidate"),
                  "gate": tags.get(governance.TAG_GATE),
                  "gate_reasons": tags.get(governance.TAG_GATE_REASONS),
                  "approval": tags.get(governance.TAG_APPROVAL),
                  "approval_by": tags.get(governance.TAG_APPROVAL_BY),
                  "approval_at": tags.get(governance.TAG_APPROVAL_AT),
                  "override": tags.get(governance.TAG_OVERRIDE),
                  "champion_periods": _champion_periods(events, str(mv.version))},
        "run": run,
        "data": {"partitions": parts, "window": _window(parts) if parts else None,
                 "versions": data},
        "features": {"service": tags.get("mlops.feature_service"),
                     "feast_repo": _rel(st.feast_repo, st)},
        "code": {"revision": tags.get("mlops.code_revision"),
                 "dirty": str(tags.get("mlops.code_revision", "")).endswith("-dirty")},
        "problems": problems,
    }


def backward(st: Settings, target: str, version: str | None = None) -> dict[str, Any]:
    """Lineage from a prediction file, a run id, or a model name and ``version``."""
    from mlops.registry import client

    if version is not None:
        chain = model_chain(st, target, version)
        chain["predictions"] = [p for p in prediction_files(st)
                                if (p["model_name"], p["model_version"]) == (target, version)]
        return {"kind": "model", "start": f"{target} v{version}", **chain}
    path = Path(target)
    if path.suffix in (".parquet", ".json") or path.exists():
        pred = prediction_record(path)
        chain = model_chain(st, pred["model_name"], pred["model_version"])
        problems = [*pred["problems"], *chain.pop("problems")]
        if pred["run_id"] and pred["run_id"] != chain["run"]["run_id"]:
            problems.append(f"sidecar run id {pred['run_id']} is not the run of "
                            f"{pred['model_name']} v{pred['model_version']} "
                            f"({chain['run']['run_id']})")
        return {"kind": "predictions", "start": pred["path"], "predictions": [pred], **chain,
                "problems": problems}
    c = client(st)
    try:
        c.get_run(target)
    except Exception:  # noqa: BLE001
        try:
            c.get_registered_model(target)
        except Exception:  # noqa: BLE001
            raise LineageError(
                f"{target!r} is not a prediction file, an MLflow run id, a registered model, "
                f"a DVC md5 or a partition id") from None
        raise LineageError(f"{target!r} is a registered model: give a version too "
                           f"(`mlops lineage {target} VERSION`)") from None
    versions = c.search_model_versions(f"run_id = '{target}'")
    if not versions:
        raise LineageError(f"run {target} has no registered model version (a candidate that "
                           f"was not selected?); its tags still hold its training data")
    mv = max(versions, key=lambda m: int(m.version))
    out = backward(st, mv.name, str(mv.version))
    return {**out, "kind": "run", "start": target}


def forward(st: Settings, data: str) -> dict[str, Any]:
    """Everything that used a data version: a DVC md5 or a partition id."""
    from mlops.registry import client

    c = client(st)
    manifest = _manifest(st)
    if PARTITION.match(data):
        partitions, md5s = {data}, set()
    elif HEX32.match(data):
        md5s = {data}
        partitions = {p for p, e in manifest.items() if e.get("md5") == data}
    else:
        raise LineageError(f"{data!r} is neither a DVC md5 (32 hex digits) nor a partition id")

    models = []
    for mv in c.search_model_versions(max_results=10_000):
        tags = dict(mv.tags)
        hashes = _tags_md5(tags)
        hit = [p for p, h in hashes.items() if h in md5s] if md5s else [
            p for p in _partitions(tags) if p in partitions]
        if md5s:
            partitions.update(hit)
        if hit:
            models.append({"name": mv.name, "version": str(mv.version), "run_id": mv.run_id,
                           "aliases": list(mv.aliases), "partitions": hit,
                           "md5": {p: hashes.get(p) for p in hit}})
    runs = []
    exps = [e.experiment_id for e in c.search_experiments(max_results=1000)
            if not e.name.startswith("audit/")]
    needle = next(iter(md5s)) if md5s else None
    for r in c.search_runs(exps, filter_string="tags.`mlops.stage` = 'train'",
                           max_results=10_000) if exps else []:
        tags = r.data.tags
        used = (needle in _tags_md5(tags).values()) if needle else bool(
            partitions.intersection(_partitions(tags)))
        if used:
            runs.append({"run_id": r.info.run_id, "run_name": r.info.run_name,
                         "candidate": tags.get("mlops.candidate"),
                         "selected": tags.get("mlops.selected") == "true"})
    used_by = {(m["name"], m["version"]) for m in models}
    preds, scored = [], []
    for p in prediction_files(st):
        if (p["model_name"], p["model_version"]) in used_by:
            preds.append(p)
        if p["partition"] in partitions or (p.get("input_md5") and p["input_md5"] in md5s):
            scored.append(p)
    current = {p: current_md5(st, p) for p in sorted(partitions)}
    return {"kind": "forward", "start": data, "partitions": sorted(partitions),
            "md5": sorted(md5s) if md5s else sorted({h for h in current.values() if h}),
            "current_md5": current, "runs": runs, "models": models,
            "predictions": preds, "scored_partition_predictions": scored}


def trace(st: Settings, target: str, version: str | None = None) -> dict[str, Any]:
    """Pick the direction from the argument: a data version goes forward, the rest back."""
    if version is None and not Path(target).exists():
        if PARTITION.match(target):
            return forward(st, target)
        if HEX32.match(target):
            from mlops.registry import client

            try:
                client(st).get_run(target)
            except Exception:  # noqa: BLE001 - not a run: a data hash
                return forward(st, target)
    return backward(st, target, version)


# --------------------------------------------------------------------------- output
def format_text(lin: dict[str, Any]) -> str:
    """Pure: the lineage as an indented chain a person can read."""
    lines: list[str] = []
    if lin["kind"] == "forward":
        lines.append(f"data {lin['start']}: partitions {', '.join(lin['partitions']) or '-'}")
        for p, h in lin["current_md5"].items():
            lines.append(f"  {p}: current DVC md5 {h or '-'}")
        lines.append(f"  training runs ({len(lin['runs'])}):")
        lines += [f"    {r['run_id']} {r['candidate']}{' (selected)' if r['selected'] else ''}"
                  for r in lin["runs"]]
        lines.append(f"  model versions ({len(lin['models'])}):")
        lines += [" ".join([f"    {m['name']} v{m['version']}",
                            *("@" + a for a in m["aliases"]), "trained on",
                            ", ".join(f"{p} {h}" for p, h in m["md5"].items())])
                  for m in lin["models"]]
        lines.append(f"  prediction files from those versions ({len(lin['predictions'])}):")
        lines += [f"    {p['path']} ({p['model_name']} v{p['model_version']}, {p['rows']:,} "
                  f"rows)" for p in lin["predictions"]]
        if lin["scored_partition_predictions"]:
            lines.append("  prediction files of the partition itself:")
            lines += [f"    {p['path']} ({p['model_name']} v{p['model_version']})"
                      for p in lin["scored_partition_predictions"]]
        return "\n".join(lines)
    for p in lin.get("predictions", []) if lin["kind"] == "predictions" else []:
        lines.append(f"predictions {p['path']} ({p['rows']:,} rows, partition "
                     f"{p['partition']})")
    m, r = lin["model"], lin["run"]
    held = "; ".join(f"{x['from']} .. {x['until'] or 'now'}" for x in m["champion_periods"])
    lines.append(f"  model {m['name']} v{m['version']} "
                 f"{' '.join('@' + a for a in m['aliases'])}".rstrip())
    lines.append(f"    gate {m['gate'] or '-'}; approval {m['approval'] or '-'}"
                 f"{' by ' + m['approval_by'] if m['approval_by'] else ''}"
                 f"{'; OVERRIDE ' + m['override'] if m['override'] else ''}")
    if held:
        lines.append(f"    champion {held}")
    metrics = ", ".join(f"{k[len('holdout_'):]} {v:.4f}"
                        for k, v in sorted(r.get("metrics", {}).items()))
    lines.append(f"  run {r['run_id']} ({r.get('experiment', '?')}/{r.get('run_name', '?')})"
                 f"{': ' + metrics if metrics else ''}")
    d = lin["data"]
    win = f" window {d['window'][0]} .. {d['window'][1]}" if d["window"] else ""
    lines.append(f"  training data: {', '.join(d['partitions']) or '-'}{win}")
    for e in d["versions"]:
        v = e["validation"]
        changed = " (CHANGED since: now " + str(e["current_md5"]) + ")" if e["changed_since"] \
            else ""
        lines.append(f"    {e['partition']} DVC md5 {e['md5']}{changed}"
                     f"{'' if e['in_dvc_cache'] else ' (not in the local DVC cache)'}")
        if v["found"]:
            stats = v.get("statistics") or {}
            lines.append(f"      validation {'passed' if v['success'] else 'FAILED'} at "
                         f"{v.get('validated_at')} ({stats.get('evaluated', '?')} "
                         f"expectations, suite {v.get('suite')}) {v['record']}")
        else:
            lines.append(f"      validation: no record at {v['record']}")
    lines.append(f"  features: Feast feature service {lin['features']['service']} "
                 f"({lin['features']['feast_repo']})")
    lines.append(f"  code: {lin['code']['revision']}")
    if lin["kind"] != "predictions" and lin.get("predictions"):
        lines.append(f"  prediction files ({len(lin['predictions'])}):")
        lines += [f"    {p['path']} ({p['rows']:,} rows)" for p in lin["predictions"]]
    for problem in lin.get("problems", []):
        lines.append(f"  ! {problem}")
    return "\n".join(lines)


def run(st: Settings, target: str, version: str | None = None) -> dict[str, Any]:
    """Trace and print the lineage of ``target``; return it."""
    lin = trace(st, target, version)
    print(format_text(lin))
    return lin
