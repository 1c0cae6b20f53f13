"""The ``mlops`` command line: one subcommand per pipeline verb, plus ``run``.

Every subcommand reads the same ``params.yaml`` (``--params`` or ``MLOPS_PARAMS``).
Failures print one clear message and exit non-zero: 2 for configuration, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from mlops import logs, ownership
from mlops.config import ConfigError, Params, Settings, load_params, settings

STAGES = ["ingest", "validate", "materialize", "train", "evaluate", "promote", "score", "monitor"]


def _data_partitions(params: Params) -> list[str]:
    return sorted(set(params.train.partitions) | set(params.score.partitions))


def do_ingest(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Ingest the named partitions (default: every partition in params.yaml)."""
    from mlops import ingest

    return ingest.run(p, st, a.partitions or _data_partitions(p))


def do_validate(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Validate the named partitions (default: every partition in params.yaml)."""
    from mlops import validate

    return validate.run(p, st, a.partitions or _data_partitions(p))


def do_materialize(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Materialise the named partitions (default: every partition in params.yaml)."""
    from mlops import materialize

    return materialize.run(p, st, a.partitions or _data_partitions(p))


def do_train(p: Params, st: Settings, _a: argparse.Namespace) -> object:
    """Train the candidates on ``train.partitions`` and register the best."""
    from mlops import train

    return train.run(p, st)


def do_evaluate(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Evaluate a version (default: the last trained) against the champion."""
    from mlops import evaluate

    return evaluate.run(p, st, a.version)


def do_promote(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Without arguments the pipeline stage (the gate); with MODEL VERSION a manual move."""
    model, version = getattr(a, "model", None), getattr(a, "version", None)
    if model is None:
        from mlops import promote

        return promote.run(p, st)
    if version is None:
        raise ConfigError("promote: give both MODEL and VERSION (or neither, to run the gate)")
    from mlops import governance

    out = governance.promote(st, model, version, by=a.by, reason=a.reason, override=a.override)
    if not out["moved"]:
        print(f"promote: {model} v{out['to_version']} is already champion; nothing moved")
    else:
        print(
            f"promote: {model} champion v{out['from_version'] or '-'} -> v{out['to_version']} "
            f"by {out['by']} ({out['reason']})"
        )
    return out


def do_score(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Score the named partitions (default: ``score.partitions``) with the champion."""
    from mlops import score

    return [score.run(p, st, pid) for pid in (a.partitions or p.score.partitions)]


def do_monitor(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Monitor the named scored partitions (default: ``score.partitions``)."""
    from mlops import monitor

    return [monitor.run_partition(p, st, pid) for pid in (a.partitions or p.score.partitions)]


def do_run(p: Params, st: Settings, _a: argparse.Namespace) -> object:
    """The whole pipeline in order, as ``dvc repro`` runs it."""
    t0 = time.perf_counter()
    ns = argparse.Namespace(partitions=None, version=None)
    timings = {}
    for verb in STAGES:
        t = time.perf_counter()
        COMMANDS[verb](p, st, ns)
        timings[verb] = round(time.perf_counter() - t, 2)
    from mlops import io

    io.write_json(
        st.state_dir / "run.json", {"seconds": timings, "total": round(time.perf_counter() - t0, 2)}
    )
    print(
        f"run: pipeline finished in {time.perf_counter() - t0:.1f}s "
        f"({', '.join(f'{k} {v:.1f}s' for k, v in timings.items())})"
    )
    return timings


def do_init(a: argparse.Namespace) -> int:
    """Make a project from a data file (``mlops init -h``), then ingest and validate it."""
    from mlops import ingest, init, validate

    return init.main(a.rest, ingest=ingest.run, validate=validate.run)


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


def _metric_text(d: dict[str, Any], metric: str) -> str:
    value = d["eval"].get(metric, d["holdout_metrics"].get(metric))
    if value is None:
        return f"{metric} -"
    return f"{metric} {float(value):.4f}"


def do_status(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Print champion and challenger of each registered model (or ``--json``)."""
    import json

    from mlops import governance

    rows = governance.status(st, a.model)
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
    return rows


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


COMMANDS: dict[str, Callable[[Params, Settings, argparse.Namespace], object]] = {
    "ingest": do_ingest,
    "validate": do_validate,
    "materialize": do_materialize,
    "train": do_train,
    "evaluate": do_evaluate,
    "promote": do_promote,
    "score": do_score,
    "monitor": do_monitor,
    "run": do_run,
    "approve": do_approve,
    "reject": do_approve,
    "status": do_status,
    "history": do_history,
    "rollback": do_rollback,
    "lineage": do_lineage,
    "card": do_card,
}

HELP = {
    "ingest": "cut source partitions to Parquet and version them with DVC",
    "validate": "check partitions against the data contract (Great Expectations)",
    "materialize": "load features into Feast's offline and online stores",
    "train": "fit the candidates, log them to MLflow, register the best",
    "evaluate": "score the candidate and the champion on the same holdout",
    "promote": "apply the promotion gate and move aliases; with MODEL VERSION, make that "
    "version champion by hand",
    "score": "batch predictions for partitions with the champion",
    "monitor": "Evidently drift report and breach decision for scored partitions",
    "run": "the whole pipeline, in order",
    "approve": "approve a model version (who, when, why)",
    "reject": "reject a model version (who, when, why)",
    "status": "champion and challenger of each registered model",
    "history": "alias moves and decisions of a model, newest first",
    "rollback": "move champion back to the previous champion (or --to VERSION)",
    "lineage": "trace a prediction file, run or model version back to its data, or a data "
    "version (md5 or partition) forward to models and predictions",
    "card": "write a model card (Markdown, HTML) and log it to the version's run",
}


BY_HELP = "who acts (default: $MLOPS_ACTOR, $MLFLOW_TRACKING_USERNAME or the login name)"


def parser() -> argparse.ArgumentParser:
    """The ``mlops`` argument parser: one subcommand per verb and command."""
    ap = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--params", help="path to params.yaml (default: $MLOPS_PARAMS or ./params.yaml)"
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        sp = sub.add_parser(name, help=HELP[name])
        if name in ("ingest", "validate", "materialize", "score", "monitor"):
            sp.add_argument(
                "--partitions",
                nargs="+",
                metavar="ID",
                help="partition ids such as 2013-07 (default: from params.yaml)",
            )
        if name == "evaluate":
            sp.add_argument("--version", help="model version (default: the last trained)")
        if name in ("approve", "reject"):
            sp.add_argument("model")
            sp.add_argument("version")
            sp.add_argument("--by", required=True, help="who decides")
            sp.add_argument("--note", default="", help="why")
            if name == "approve":
                sp.add_argument(
                    "--override",
                    action="store_true",
                    help="approve a version that failed the gate (needs --note; recorded)",
                )
                sp.add_argument(
                    "--promote",
                    action="store_true",
                    help="also make it champion now (without Airflow)",
                )
        if name == "promote":
            sp.add_argument("model", nargs="?", help="registered model (omit to run the gate)")
            sp.add_argument("version", nargs="?", help="version to make champion")
            sp.add_argument("--by", default=None, help=BY_HELP)
            sp.add_argument("--reason", default="", help="why (recorded in the history)")
            sp.add_argument(
                "--override",
                action="store_true",
                help="promote despite the gate or approval (needs --reason)",
            )
        if name == "rollback":
            sp.add_argument("model")
            sp.add_argument(
                "--to",
                default=None,
                metavar="VERSION",
                help="a former champion (default: the previous champion)",
            )
            sp.add_argument("--by", default=None, help=BY_HELP)
            sp.add_argument("--reason", default="", help="why (recorded in the history)")
        if name == "status":
            sp.add_argument("model", nargs="?", help="registered model (default: all)")
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "history":
            sp.add_argument("model", nargs="?", help="registered model (default: params)")
            sp.add_argument("--limit", type=int, default=None, help="newest N events only")
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "lineage":
            sp.add_argument(
                "target", help="prediction file, run id, registered model, DVC md5 or partition id"
            )
            sp.add_argument("version", nargs="?", help="model version (when TARGET is a model)")
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "card":
            sp.add_argument("model")
            sp.add_argument("version")
            sp.add_argument(
                "--slices",
                default=None,
                metavar="COL,COL",
                help="slice columns (default: the contract's category features "
                "with a declared category list)",
            )
            sp.add_argument(
                "--no-log",
                action="store_true",
                help="write the files only; do not log them to MLflow",
            )
    sp = sub.add_parser("init", add_help=False, prefix_chars="+", help="a project from a data file")
    sp.add_argument("rest", nargs="*", help=argparse.SUPPRESS)  # parsed by mlops.init.parser
    return ap


def _safe(exc: BaseException, traceback: bool = False) -> str:
    """The error message, or with ``traceback`` the whole chain, credentials masked."""
    from traceback import format_exception

    from mlops.io import redact

    return redact("".join(format_exception(exc)).rstrip() if traceback else str(exc))


def main(argv: list[str] | None = None) -> int:
    """Run one ``mlops`` command; return the exit code (2: configuration, 1: failure)."""
    args = parser().parse_args(argv)
    logs.setup(args.verbose)
    if args.command == "init":  # there is no params.yaml yet
        return do_init(args)
    try:
        params = load_params(args.params)
        st = settings(args.params)
    except ConfigError as exc:
        print(f"error: {_safe(exc)}", file=sys.stderr)
        return 2
    logs.to_file(st.state_dir / "logs" / "mlops.log")
    try:
        if args.command in (*STAGES, "run"):
            ownership.claim(params, st)
        COMMANDS[args.command](params, st, args)
    except ConfigError as exc:
        print(f"error: {_safe(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI's last word: one line, exit 1
        if args.verbose:  # the traceback and every chained cause, never a credential
            print(_safe(exc, traceback=True), file=sys.stderr)
        print(f"error: {args.command}: {_safe(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
