"""card: a model card for one registered version, in Markdown and HTML.

The card says what the model is for, what it was trained on (window, partitions and
their DVC hashes), which features it reads, how it does on its holdout overall and by
slice, how it really did on each labelled partition (its ``label`` runs in MLflow), what
the promotion gate decided, who approved it, and its known limitations.
Holdout metrics are recomputed from the version's own holdout partitions through Feast,
so they must match the metrics recorded at training; a difference is reported.

Slices are the contract's category features with a declared, closed list of categories
(for the flights demo: ``carrier`` and ``origin``), or the columns passed explicitly.
The card is written to ``<reports_dir>/cards/`` and logged to the version's run under
``model_card/``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from mlops import (
    card_render,
    describe,
    explain,
    io,
    models,
    partitions,
    performance_report,
    provenance,
    tags,
    training_data,
)
from mlops.config import Params, Settings
from mlops.contract import Contract
from mlops.describe_render import authored, data_hash, window
from mlops.registry import Registry, RegistryError, connect

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MIN_SLICE_ROWS = 100
MAX_SLICE_LEVELS = 30
GAP = 0.05
ARTIFACT_DIR = "model_card"
MISSING = "(missing)"


# --------------------------------------------------------------------------- pure core
def slice_columns(contract: Contract, max_levels: int = MAX_SLICE_LEVELS) -> list[str]:
    """Category features with a declared list of at most ``max_levels`` categories."""
    return [
        f.name
        for f in contract.features
        if f.dtype in ("category", "bool")
        and (f.dtype == "bool" or (f.categories and len(f.categories) <= max_levels))
    ]


def slice_keys(values: pd.Series) -> np.ndarray:
    """Pure: a slice column's value per row as its table shows it (``MISSING`` for none)."""
    return values.astype(object).where(values.notna(), MISSING).astype(str).to_numpy()


def slice_metrics(
    df: pd.DataFrame,
    y: np.ndarray,
    pred: np.ndarray,
    columns: list[str],
    task: str,
    min_rows: int = MIN_SLICE_ROWS,
    threshold: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Metrics per value of each slice column, largest slice first.

    Slices with fewer than ``min_rows`` rows get their size but no metrics: a metric
    on a handful of rows says more about chance than about the model.
    """
    import numpy as np

    out: dict[str, list[dict[str, Any]]] = {}
    n = len(df)
    for col in columns:
        if col not in df.columns:
            raise KeyError(
                f"slice column {col!r} is not in the holdout frame "
                f"(columns: {', '.join(map(str, df.columns))})"
            )
        keys = slice_keys(df[col])
        rows = []
        for value in sorted(set(keys)):
            mask = keys == value
            k = int(mask.sum())
            entry: dict[str, Any] = {
                "value": value,
                "rows": k,
                "share": k / n if n else 0.0,
                "mean_prediction": float(np.mean(pred[mask])),
            }
            if k >= min_rows:
                entry["metrics"] = models.metrics(y[mask], pred[mask], task, threshold)
            else:
                entry["metrics"] = {}
                entry["note"] = f"fewer than {min_rows} rows"
            rows.append(entry)
        out[col] = sorted(rows, key=lambda r: (-r["rows"], r["value"]))
    return out


def _categories(learned: list[str] | None, cap: dict[str, Any] | None) -> str | None:
    """Pure: how the model tells a category feature's values apart, for the card."""
    if learned is None:
        return None
    if cap:
        return (
            f"{cap['kept']} most frequent of {cap['cardinality']} "
            f"({cap['kept_rows']:.1%} of rows); the rest -> {models.OTHER}"
        )
    return f"{len(learned)}"


def limitations(card: dict[str, Any], gap: float = GAP) -> list[str]:
    """Pure: the known limitations a reader must see, derived from the card's facts."""
    out = []
    tr = card["training"]
    fitted = tr.get("fitted", tr["partitions"])
    if tr.get("window"):
        out.append(
            f"Trained on {', '.join(fitted)} only ({tr['window'][0][:10]} to "
            f"{tr['window'][1][:10]}); data from other periods (other seasons, "
            f"schedules or weather) may differ and degrade it."
        )
    metric = card["metric"]
    higher = models.HIGHER_IS_BETTER[metric]
    overall = card["holdout"]["metrics"].get(metric)
    recorded = card["holdout"].get("recorded", {}).get(metric)
    if overall is not None and recorded is not None and abs(overall - recorded) > 1e-6:
        out.append(
            f"The holdout data changed since training: {metric} is {overall:.4f} now "
            f"but was {recorded:.4f} when the version was trained."
        )
    out.append(
        f"Evaluated on one holdout window ({', '.join(card['holdout']['partitions'])}, "
        f"{card['holdout']['rows']:,} rows), not on a random or future sample."
    )
    for col, rows in card["slices"].items():
        small = [r["value"] for r in rows if not r["metrics"]]
        if small:
            out.append(
                f"{col}: {', '.join(small[:10])}{' ...' if len(small) > 10 else ''} "
                f"have too few holdout rows to measure (< {card['min_slice_rows']})."
            )
        if overall is None:
            continue
        for r in rows:
            v = r["metrics"].get(metric)
            if v is None:
                continue
            worse = overall - v if higher else v - overall
            if worse > gap:
                out.append(
                    f"{col} = {r['value']}: {metric} {v:.4f} is {worse:.4f} worse than "
                    f"overall ({overall:.4f}) on {r['rows']:,} rows."
                )
    capped = card.get("capped_categories", {})
    for col, cap in capped.items():
        out.append(
            f"{col}: only the {cap['kept']} most frequent of its {cap['cardinality']} "
            f"categories in training ({cap['kept_rows']:.1%} of rows) are told apart; the "
            f"rest, and values never seen, are scored as {models.OTHER!r} "
            f"(train.max_categories={card.get('max_categories') or '?'})."
        )
    for col, missing in card.get("unseen_categories", {}).items():
        if missing:
            out.append(
                f"{col}: {', '.join(missing)} never occurred in training; rows with "
                f"them are scored as an unknown category."
            )
    for m in card.get("monitoring", []):
        if m.get("breach"):
            out.append(
                f"Drift breach when scoring {m['partition']} "
                f"(drift share {m.get('drift_share', float('nan')):.0%})."
            )
    for r in card.get("realised", []):
        if r.get("breach"):
            why = "; ".join(r.get("reasons") or []) or "see its report"
            out.append(f"Performance breach on {r['partition']}: {why}.")
    if card["approval"].get("override"):
        out.append(f"Promoted despite the gate: {card['approval']['override']}.")
    if card["gate"].get("decision") != "passed":
        out.append(f"The promotion gate {card['gate'].get('decision') or 'has not run'}.")
    return out


# --------------------------------------------------------------------------- gathering
def holdout_of(
    parts: list[str], run_params: dict[str, str], version_tags: dict[str, str], n: int
) -> list[str]:
    """The partitions a version was evaluated on, not fitted on.

    As training recorded them (run param ``holdout_partitions``), else as ``evaluate``
    tagged them, else the last ``n`` of the window (``train.holdout_partitions``).
    """
    for recorded in (run_params.get("holdout_partitions"), version_tags.get(tags.EVAL_HOLDOUT)):
        hold = [p for p in (recorded or "").split(",") if p]
        if hold:
            return hold
    return sorted(parts, key=partitions.sort_key)[-n:]


def _window(parts: list[str]) -> list[str] | None:
    found = window(parts)
    return None if found is None else list(found)


def _run_json(run_id: str, name: str) -> dict[str, Any]:
    """A JSON artifact of the run, or ``{}`` for runs logged before it existed."""
    try:
        import mlflow

        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name)
        with open(path) as fh:
            return dict(json.load(fh))
    except Exception:  # noqa: BLE001 - optional: the card says "-" without it
        return {}


def _intended_use(
    params: Params,
    rm_description: str | None,
    window: list[str] | None,
    service: str | None,
) -> str:
    if rm_description:
        return rm_description
    c = params.contract
    what = "the probability that" if c.task == "classification" else "the value of"
    when = f" Trained on data from {window[0][:10]} to {window[1][:10]}." if window else ""
    return (
        f"Batch scoring of {what} {c.target} for each {', '.join(c.entity_keys)} at "
        f"{c.timestamp}, from the features of the Feast feature service "
        f"{service or '-'}, by `mlops score` on new partitions.{when} Intended for "
        f"monitoring and prioritisation by people who know the domain; it was not assessed "
        f"for other populations or for automated decisions without review. Write the "
        f"intended use in the registered model's description in MLflow (outside the block "
        f"mlops keeps there) to replace this text."
    )


def build(
    params: Params,
    st: Settings,
    model: str,
    version: str,
    slices: list[str] | None = None,
    reg: Registry | None = None,
) -> dict[str, Any]:
    """Gather the card's facts: registry tags, the run, and holdout metrics by slice."""
    from datetime import UTC, datetime

    if model != params.model_name:
        raise RegistryError(
            f"card: {st.params_path} describes model {params.model_name!r}, "
            f"not {model!r}; pass the params.yaml of {model!r}"
        )
    reg = reg or connect(st)
    mv = reg.resolve_version(model, version)
    version = str(mv.version)
    c = reg.client
    vt = dict(mv.tags)
    run = c.get_run(mv.run_id)
    con = params.contract
    parts = [p for p in vt.get(tags.DATA_PARTITIONS, "").split(",") if p]
    if not parts:
        raise RegistryError(
            f"{model} v{version} has no mlops.data.partitions tag: it was "
            f"not trained by `mlops train`"
        )
    hold = holdout_of(parts, run.data.params, vt, params.train.holdout_partitions)
    fitted = [p for p in parts if p not in hold]
    md5 = json.loads(vt.get(tags.DATA_MD5, "{}"))
    manifest = provenance.manifest(st)

    loaded = reg.load(model, version)
    df = training_data.training_frame(params, st, hold, stage="card")
    pred = loaded.predict(df, con)
    y = models.target(df, con)
    columns = slices if slices is not None else slice_columns(con)

    importance = _run_json(mv.run_id, "feature_importance.json")
    capped = _run_json(mv.run_id, "features.json").get("capped_categories") or {}
    unseen = {}
    for f in con.features:
        if f.dtype == "category" and f.categories and f.name not in capped:
            seen = set(loaded.categories.get(f.name, []))
            unseen[f.name] = [v for v in f.categories if v not in seen]
    monitoring = []
    exp = c.get_experiment_by_name(model)
    if exp is not None:
        for r in c.search_runs(
            [exp.experiment_id],
            filter_string=f"{tags.search(tags.STAGE, 'monitor')} AND "
            f"{tags.search(tags.MODEL_VERSION, version)}",
            order_by=["attributes.start_time DESC"],
            max_results=20,
        ):
            monitoring.append(
                {
                    "partition": r.data.tags.get(tags.PARTITION),
                    "breach": r.data.tags.get(tags.BREACH) == "True",
                    "drift_share": r.data.metrics.get("drift_share"),
                }
            )
    try:
        rm_desc = c.get_registered_model(model).description
    except Exception:  # noqa: BLE001
        rm_desc = None
    fitted_window = _window(fitted)
    service = vt.get(tags.FEATURE_SERVICE)
    card: dict[str, Any] = {
        "model": model,
        "version": version,
        "run_id": mv.run_id,
        "aliases": list(mv.aliases),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "intended_use": _intended_use(
            params, authored(rm_desc) or authored(mv.description), fitted_window, service
        ),
        "candidate": vt.get(tags.CANDIDATE),
        "kind": run.data.params.get("kind"),
        "params": dict(run.data.params),
        "task": con.task,
        "target": con.target,
        "entity_keys": con.entity_keys,
        "timestamp": con.timestamp,
        "code_revision": vt.get(tags.CODE_REVISION),
        "feature_service": service,
        "training": {
            "partitions": parts,
            "fitted": fitted,
            "holdout": hold,
            "window": fitted_window,
            "holdout_window": _window(hold),
            "md5": md5,
            "data_hash": data_hash(md5),
            # the version trained on, current or earlier (re-ingested since)
            "rows": {
                pid: v["rows"]
                for p in parts
                for pid, v in provenance.find(manifest, md5.get(p, ""))
                if pid == p and "rows" in v
            },
        },
        "features": [
            {
                "name": f.name,
                "dtype": f.dtype,
                "importance": importance.get(f.name),
                "categories": _categories(loaded.categories.get(f.name), capped.get(f.name)),
            }
            for f in con.features
        ],
        "capped_categories": capped,
        "max_categories": run.data.params.get("max_categories"),
        "metric": params.gate_metric,
        "holdout": {
            "partitions": hold,
            "rows": len(df),
            "metrics": models.metrics(y, pred, con.task, loaded.threshold),
            "recorded": {
                k[len("holdout_") :]: v
                for k, v in run.data.metrics.items()
                if k.startswith("holdout_")
            },
        },
        "slices": slice_metrics(df, y, pred, columns, con.task, threshold=loaded.threshold),
        "explanations": explain.attributions(
            loaded, df, con, {col: slice_keys(df[col]) for col in columns}, min_rows=MIN_SLICE_ROWS
        ),
        "min_slice_rows": MIN_SLICE_ROWS,
        "unseen_categories": unseen,
        "monitoring": monitoring,
        "realised": performance_report.history(reg, model, version),
        "gate": {"decision": vt.get(tags.GATE), "reasons": vt.get(tags.GATE_REASONS)},
        "approval": {
            "status": vt.get(tags.APPROVAL),
            "by": vt.get(tags.APPROVAL_BY),
            "at": vt.get(tags.APPROVAL_AT),
            "note": vt.get(tags.APPROVAL_NOTE),
            "override": vt.get(tags.OVERRIDE),
        },
    }
    card["limitations"] = limitations(card)
    return card


def run(
    params: Params,
    st: Settings,
    model: str,
    version: str,
    slices: list[str] | None = None,
    log: bool = True,
) -> dict[str, Any]:
    """Build the card, write it under ``reports/cards/`` and log it to the version's run."""
    t0 = time.perf_counter()
    reg = connect(st)
    card = build(params, st, model, version, slices, reg)
    version = card["version"]
    bs = card_render.blocks(card)
    md = card_render.to_markdown(bs)
    page = card_render.to_html(bs, f"Model card: {model} v{version}")
    out = st.reports_dir / "cards"
    md_path = io.write_text(out / f"{model}-v{version}.md", md)
    html_path = io.write_text(out / f"{model}-v{version}.html", page)
    io.write_json(out / f"{model}-v{version}.json", card)
    if log:
        c = reg.client
        c.log_text(card["run_id"], md, f"{ARTIFACT_DIR}/model_card.md")
        c.log_text(card["run_id"], page, f"{ARTIFACT_DIR}/model_card.html")
        c.log_dict(card["run_id"], card, f"{ARTIFACT_DIR}/model_card.json")
        c.set_model_version_tag(
            model, version, tags.CARD, f"runs:/{card['run_id']}/{ARTIFACT_DIR}/model_card.html"
        )
        describe.refresh(reg, model, version)
    m = card["metric"]
    sizes = ", ".join(f"{k} {len(v)}" for k, v in card["slices"].items()) or "none"
    breaches = sum(1 for r in card["realised"] if r.get("breach"))
    print(
        f"card: {model} v{version} {m} {card['holdout']['metrics'].get(m, float('nan')):.4f} "
        f"on {card['holdout']['rows']:,} holdout rows; slices: {sizes}; realised on "
        f"{len(card['realised'])} labelled partitions ({breaches} breaches); "
        f"{len(card['limitations'])} limitations; SHAP top: "
        f"{', '.join(list(card['explanations'].get('overall', {}))[:3]) or '-'} -> {html_path}"
        f"{', logged to run ' + card['run_id'] if log else ''} "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return {**card, "markdown_path": str(md_path), "html_path": str(html_path)}
