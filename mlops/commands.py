"""The registry commands of the CLI: approve, reject, status, history, rollback, lineage, card.

Each is ``do_<command>(params, settings, args)`` as ``mlops.cli`` dispatches it, and
imports what it uses inside, so that ``mlops <verb>`` loads none of it.
"""

from __future__ import annotations

import argparse
from typing import Any

from mlops.config import Params, Settings


def do_approve(_p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Approve or reject a version (``approve`` / ``reject``), recorded with who and why."""
    from mlops import approval
    from mlops.registry import connect

    reg = connect(st)
    approve = a.command == "approve"
    out = approval.decide(
        reg, a.model, a.version, approve, a.by, a.note, getattr(a, "override", False)
    )
    extra = " (gate OVERRIDDEN, recorded)" if out["override"] else ""
    print(
        f"{a.command}: {a.model} v{out['version']} {out['status']} by {out['by']} at "
        f"{out['at']}{extra}"
    )
    if approve and getattr(a, "promote", False):
        print(f"{a.command}: {approval.complete(reg, a.model, out['version'])}")
    return out


KEY_METRICS = ("roc_auc", "average_precision", "log_loss", "rmse", "mae", "r2")
REALISED_SHOWN = 3  # the latest labelled partitions `status` prints per version


def _metric_text(d: dict[str, Any], metric: str) -> str:
    value = d["eval"].get(metric, d["holdout_metrics"].get(metric))
    if value is None:
        return f"{metric} -"
    return f"{metric} {float(value):.4f}"


def do_status(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Print champion and challenger of each registered model (or ``--json``)."""
    import json

    from mlops import governance, traffic

    rows = governance.status(st, a.model)
    for r in rows:
        if r["model"] == p.model_name:
            r["serving"] = traffic.summary(p, st)
    if a.json:
        print(json.dumps(rows, indent=2, default=str))
        return rows
    if not rows:
        print("status: no registered model yet; run the pipeline first")
    for r in rows:
        print(f"{r['model']}  ({r['events']} governance events)")
        for alias in ("champion", "challenger"):
            d = r[alias]
            if d is None:
                print(f"  @{alias:<10} none")
                continue
            metrics, metric = d["holdout_metrics"], p.gate_metric
            if r["model"] != p.model_name:
                metric = next((k for k in KEY_METRICS if k in metrics), metric)
            approval = d["approval"] or "-"
            if d["approval_by"]:
                approval += f" by {d['approval_by']} at {d['approval_at']}"
            if d["override"]:
                approval += " (gate OVERRIDDEN)"
            md5 = ", ".join(f"{k} {v[:8]}" for k, v in sorted(d["data_md5"].items()))
            print(f"  @{alias:<10} v{d['version']}  since {d['since'] or '-'}")
            holdout = ", ".join(f"{k} {metrics[k]:.4f}" for k in KEY_METRICS if k in metrics)
            print(
                f"      metrics   {_metric_text(d, metric)} (holdout at training: {holdout or '-'})"
            )
            realised = d.get("realised") or {}
            if realised:
                base = metrics.get(metric)
                latest = list(realised.items())[-REALISED_SHOWN:]
                shown = ", ".join(
                    f"{pid} {v:.4f}" + ("" if base is None else f" ({v - base:+.4f})")
                    for pid, v in latest
                )
                earlier = len(realised) - len(latest)
                print(
                    f"      realised  {metric} {shown}"
                    f"{f' (and {earlier} earlier)' if earlier else ''}; holdout "
                    f"{'-' if base is None else f'{base:.4f}'}"
                )
            print(f"      gate      {d['gate'] or '-'}; approval {approval}")
            print(
                f"      data      {', '.join(d['partitions']) or '-'}"
                f"{' (md5 ' + md5 + ')' if md5 else ''}"
            )
            print(
                f"      run       {d['run_id']} ({d['candidate'] or '-'}), code "
                f"{d['code_revision'] or '-'}"
            )
        for problem in r["problems"]:
            print(f"  ! {problem}")
        if r.get("serving"):
            _serving(r["serving"], traffic.age(st), p.gate_metric)
    return rows


def _serving(served: dict[str, Any], age: str, metric: str) -> None:
    """Print what ``mlops serve`` answered, per arm, from its prediction log."""
    if not served["arms"]:
        return
    print(f"  serving     {served['rows']:,} rows answered, last written {age}")
    for arm, d in served["arms"].items():
        versions = ", ".join(f"v{v}" for v in d["versions"])
        lat = d["latency_ms"]
        line = f"      {arm:<11} {versions:<8} {d['rows']:>9,} rows"
        if lat["p50"] is not None:
            line += f"  p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms"
        perf = d["performance"] or {}
        if perf.get(metric) is not None:
            line += f"  realised {metric} {perf[metric]:.4f} on {d['labelled']:,} labelled"
        else:
            line += f"  {d['labelled']:,} labelled"
        print(line)


def do_history(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Print a model's governance events, newest first (or ``--json``)."""
    import json

    from mlops import audit
    from mlops.registry import connect

    model = a.model or p.model_name
    reg = connect(st)
    reg.require_model(model)
    rows = audit.history(reg, model, limit=a.limit)
    if a.json:
        print(json.dumps(rows, indent=2))
        return rows
    if not rows:
        print(f"history: {model} has no recorded governance events")
    for r in rows:
        if r.get("alias"):
            move = f"{r['alias']}: v{r.get('from_version') or '-'} -> v{r.get('to_version') or '-'}"
        else:
            move = f"v{r.get('version')}"
        override = "  OVERRIDE" if r.get("override") else ""
        state, note = r.get("state") or "done", r.get("note") or ""
        settled = f"  [{state}{': ' + note if note else ''}]" if state != "done" or note else ""
        print(
            f"#{r.get('seq'):>3} {r.get('at')}  {r.get('action'):<10} {move}  "
            f"by {r.get('actor')}{override}  ({r.get('reason') or '-'}){settled}"
        )
    return rows


def do_rollback(_p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Move champion back to the previous champion (or ``--to VERSION``)."""
    from mlops import governance

    out = governance.rollback(st, a.model, to=a.to, by=a.by, reason=a.reason)
    print(
        f"rollback: {a.model} champion v{out['from_version']} -> v{out['to_version']} "
        f"by {out['by']} ({out['reason']})"
    )
    return out


def do_lineage(_p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Print the lineage of a prediction file, run, version or data version."""
    import json

    from mlops import lineage

    lin = lineage.trace(st, a.target, a.version)
    print(json.dumps(lin, indent=2, default=str) if a.json else lineage.format_text(lin))
    return lin


def do_card(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Write a version's model card and log it to its run."""
    from mlops import card

    slices = [c.strip() for c in a.slices.split(",") if c.strip()] if a.slices else None
    return card.run(p, st, a.model, a.version, slices=slices, log=not a.no_log)
