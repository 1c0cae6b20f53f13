"""The ``mlops`` command line: one subcommand per pipeline verb, plus ``run``.

Every subcommand reads the same ``params.yaml`` (``--params`` or ``MLOPS_PARAMS``).
Failures print one clear message and exit non-zero: 2 for configuration, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from mlops import logs, observe, ownership
from mlops.commands import (
    do_approve,
    do_card,
    do_history,
    do_lineage,
    do_rollback,
    do_status,
)
from mlops.config import ConfigError, Params, Settings, load_params, settings

STAGES = [
    "ingest",
    "validate",
    "materialize",
    "train",
    "evaluate",
    "promote",
    "score",
    "monitor",
    "label",
]


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
    """Monitor the named scored partitions (default: ``score.partitions``).

    With ``--served``: the requests ``mlops serve`` answered in each partition (default:
    every partition its prediction log holds), against the reference of the version that
    answered most, reported under ``<reports_dir>/served/<partition>/``.
    """
    from mlops import monitor

    if not getattr(a, "served", False):
        return [monitor.run_partition(p, st, pid) for pid in (a.partitions or p.score.partitions)]
    from mlops import traffic
    from mlops.registry import connect

    pids = a.partitions or traffic.served_partitions(st)
    if not pids:
        raise FileNotFoundError(f"{st.served_dir}: nothing served yet; start `mlops serve`")
    out = []
    for pid in pids:
        current, total, name, version = traffic.current(p, st, pid)
        reference = connect(st).reference(name, version)
        described: dict[str, str | None] = {"model_version": version, "source": "served"}
        folder = st.reports_dir / "served" / pid
        out.append(monitor.run(p, st, pid, reference, current, total, described, folder))
    return out


def do_label(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Join arrived outcomes to the named scored partitions (default: ``score.partitions``)."""
    from mlops import label

    as_of = getattr(a, "as_of", None)
    return [label.run(p, st, pid, _moment(as_of)) for pid in (a.partitions or p.score.partitions)]


def do_serve(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Serve the champion online until interrupted (README, "Serving")."""
    from mlops import serve

    serve.run(p, st, a.host, a.port, a.workers)
    return None


def do_ui(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Serve the timeline (Evidently's UI on ``<data>/timeline``) until interrupted."""
    from mlops import ui

    return ui.run(p, st, a.host, a.port)


def do_ci(_p: Params, st: Settings, a: argparse.Namespace) -> object:
    """Check this revision's model against the base revision's (README, "CI/CD for models")."""
    from pathlib import Path

    from mlops import ci

    return ci.report(st, a.base, Path(a.out) if a.out else None)


def _moment(text: str | None) -> datetime | None:
    """``--as-of``: an ISO date or time (UTC when it names no zone)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--as-of {text!r} is not a date or time such as 2013-08-31T23:00"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def do_run(p: Params, st: Settings, a: argparse.Namespace) -> object:
    """The whole pipeline in order, as ``dvc repro`` runs it (``mlops.run``)."""
    from mlops import io, run

    t0 = time.perf_counter()
    timings = run.pipeline(p, st, COMMANDS, STAGES, verbose=getattr(a, "verbose", False))
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


COMMANDS: dict[str, Callable[[Params, Settings, argparse.Namespace], object]] = {
    "ingest": do_ingest,
    "validate": do_validate,
    "materialize": do_materialize,
    "train": do_train,
    "evaluate": do_evaluate,
    "promote": do_promote,
    "score": do_score,
    "monitor": do_monitor,
    "label": do_label,
    "serve": do_serve,
    "ui": do_ui,
    "run": do_run,
    "approve": do_approve,
    "reject": do_approve,
    "status": do_status,
    "history": do_history,
    "rollback": do_rollback,
    "lineage": do_lineage,
    "card": do_card,
    "ci": do_ci,
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
    "label": "join arrived outcomes to scored partitions; realised performance and its breach",
    "serve": "answer prediction requests online with the champion (HTTP, v2 protocol)",
    "ui": "the timeline: Evidently's UI on every partition's drift and realised performance",
    "run": "the whole pipeline, in order",
    "approve": "approve a model version (who, when, why)",
    "reject": "reject a model version (who, when, why)",
    "status": "champion and challenger of each registered model",
    "history": "alias moves and decisions of a model, newest first",
    "rollback": "move champion back to the previous champion (or --to VERSION)",
    "lineage": "trace a prediction file, run or model version back to its data, or a data "
    "version (md5 or partition) forward to models and predictions",
    "card": "write a model card (Markdown, HTML) and log it to the version's run",
    "ci": "report: train this revision's candidate and --base's model in scratch copies, "
    "compare them on one holdout with the gate; exit 1 when the gate fails",
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
        if name in ("ingest", "validate", "materialize", "score", "monitor", "label"):
            sp.add_argument(
                "--partitions",
                nargs="+",
                metavar="ID",
                help="partition ids such as 2013-07 (default: from params.yaml)",
            )
        if name == "monitor":
            sp.add_argument(
                "--served",
                action="store_true",
                help="the requests `mlops serve` answered (its prediction log), not batch scores",
            )
        if name == "label":
            sp.add_argument(
                "--as-of",
                default=None,
                metavar="TIME",
                help="join only outcomes known by then (labels.known_at; default: now)",
            )
        if name == "serve":
            sp.add_argument("--host", default="127.0.0.1", help="interface (default: loopback)")
            sp.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
            sp.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
        if name == "ui":
            sp.add_argument("--host", default="127.0.0.1", help="interface (default: loopback)")
            sp.add_argument("--port", type=int, default=8001, help="port (default: 8001)")
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
        if name in ("promote", "run"):
            sp.add_argument(
                "--approval",
                choices=["auto", "manual"],
                default=None,
                help="promote.approval for this run; manual: a passing candidate waits as "
                "challenger for a person's approval (default: from params.yaml)",
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
        if name == "ci":
            sp.add_argument("action", choices=["report"], help="what to do (report)")
            sp.add_argument(
                "--base",
                required=True,
                metavar="REF",
                help="the git revision to compare with (a pull request's target: origin/main)",
            )
            sp.add_argument(
                "--out",
                default=None,
                metavar="PATH",
                help="the Markdown report (default: <data>/ci/report.md; JSON beside it)",
            )
    sp = sub.add_parser("init", add_help=False, prefix_chars="+", help="a project from a data file")
    sp.add_argument("rest", nargs="*", help=argparse.SUPPRESS)  # parsed by mlops.init.parser
    return ap


def with_approval(params: Params, approval: str | None) -> Params:
    """Pure: ``params`` with ``promote.approval`` set by ``--approval`` (unchanged for None)."""
    if approval is None:
        return params
    gate = params.promote.model_copy(update={"approval": approval})
    return params.model_copy(update={"promote": gate})


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
    params = with_approval(params, getattr(args, "approval", None))
    logs.to_file(st.state_dir / "logs" / "mlops.log")
    try:
        if args.command in (*STAGES, "run"):
            ownership.claim(params, st)
        measured = args.command in (*STAGES, "rollback", "approve")
        with (
            observe.stage(params, st, args.command, getattr(args, "partitions", None))
            if measured
            else contextlib.nullcontext()
        ):
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
