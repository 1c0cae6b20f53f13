"""The ``mlops`` command line: one subcommand per pipeline verb, plus ``run``.

Every subcommand reads the same ``params.yaml`` (``--params`` or ``MLOPS_PARAMS``).
Failures print one clear message and exit non-zero: 2 for configuration, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from mlops.config import ConfigError, Params, Settings, load_params, settings

STAGES = ["ingest", "validate", "materialize", "train", "evaluate", "promote", "score",
          "monitor"]


def _data_partitions(params: Params) -> list[str]:
    return sorted(set(params.train.partitions) | set(params.score.partitions))


def do_ingest(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import ingest

    return ingest.run(p, st, a.partitions or _data_partitions(p))


def do_validate(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import validate

    return validate.run(p, st, a.partitions or _data_partitions(p))


def do_materialize(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import materialize

    return materialize.run(p, st, a.partitions or _data_partitions(p))


def do_train(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import train

    return train.run(p, st)


def do_evaluate(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import evaluate

    return evaluate.run(p, st, a.version)


def do_promote(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import promote

    return promote.run(p, st)


def do_score(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import score

    return [score.run(p, st, pid) for pid in (a.partitions or p.score.partitions)]


def do_monitor(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import monitor

    return [monitor.run_partition(p, st, pid) for pid in (a.partitions or p.score.partitions)]


def do_run(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    """The whole pipeline in order, as ``dvc repro`` runs it."""
    t0 = time.perf_counter()
    ns = argparse.Namespace(partitions=None, version=None)
    timings = {}
    for verb in STAGES:
        t = time.perf_counter()
        COMMANDS[verb](p, st, ns)
        timings[verb] = round(time.perf_counter() - t, 2)
    from mlops import io

    io.write_json(st.state_dir / "run.json", {"seconds": timings,
                                              "total": round(time.perf_counter() - t0, 2)})
    print(f"run: pipeline finished in {time.perf_counter() - t0:.1f}s "
          f"({', '.join(f'{k} {v:.1f}s' for k, v in timings.items())})")
    return timings


def do_approve(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import governance

    out = governance.decide(st, a.model, a.version, a.command == "approve", a.by, a.note,
                            getattr(a, "override", False))
    print(f"{a.command}: {a.model} v{a.version} {out['status']} by {a.by}")
    return out


def do_status(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops.registry import CHALLENGER, CHAMPION, version_by_alias

    name = a.model or p.model_name
    for alias in (CHAMPION, CHALLENGER):
        mv = version_by_alias(st, name, alias)
        if mv is None:
            print(f"{name} @{alias}: none")
            continue
        tags = mv.tags
        metric = p.gate_metric
        print(f"{name} @{alias}: v{mv.version} {metric} "
              f"{tags.get(f'mlops.eval.{metric}', tags.get(f'mlops.holdout_{metric}', '?'))} "
              f"approval {tags.get('mlops.approval.status', '-')} "
              f"data {tags.get('mlops.data.partitions', '?')} "
              f"since {tags.get('mlops.champion_since', '-')}")
    return None


def do_history(p: Params, st: Settings, a: argparse.Namespace) -> Any:
    from mlops import governance

    rows = governance.history(st, a.model or p.model_name)
    for r in rows:
        print(f"{r.get('at')}  {r.get('action'):<10} {r.get('alias')}: "
              f"v{r.get('from_version') or '-'} -> v{r.get('to_version')}  by {r.get('actor')}"
              f"  ({r.get('reason')})")
    return rows


COMMANDS: dict[str, Callable[[Params, Settings, argparse.Namespace], Any]] = {
    "ingest": do_ingest, "validate": do_validate, "materialize": do_materialize,
    "train": do_train, "evaluate": do_evaluate, "promote": do_promote, "score": do_score,
    "monitor": do_monitor, "run": do_run, "approve": do_approve, "reject": do_approve,
    "status": do_status, "history": do_history,
}

HELP = {
    "ingest": "cut source partitions to Parquet and version them with DVC",
    "validate": "check partitions against the data contract (Great Expectations)",
    "materialize": "load features into Feast's offline and online stores",
    "train": "fit the candidates, log them to MLflow, register the best",
    "evaluate": "score the candidate and the champion on the same holdout",
    "promote": "apply the promotion gate and move aliases",
    "score": "batch predictions for partitions with the champion",
    "monitor": "Evidently drift report and breach decision for scored partitions",
    "run": "the whole pipeline, in order",
    "approve": "approve a pending model version",
    "reject": "reject a pending model version",
    "status": "champion and challenger of the model",
    "history": "alias moves of the model, newest first",
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    ap.add_argument("--params", help="path to params.yaml (default: $MLOPS_PARAMS or ./params.yaml)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        sp = sub.add_parser(name, help=HELP[name])
        if name in ("ingest", "validate", "materialize", "score", "monitor"):
            sp.add_argument("--partitions", nargs="+", metavar="ID",
                            help="partition ids such as 2013-07 (default: from params.yaml)")
        if name == "evaluate":
            sp.add_argument("--version", help="model version (default: the last trained)")
        if name in ("approve", "reject"):
            sp.add_argument("model")
            sp.add_argument("version")
            sp.add_argument("--by", required=True, help="who decides")
            sp.add_argument("--note", default="", help="why")
            if name == "approve":
                sp.add_argument("--override", action="store_true",
                                help="approve a version that failed the gate (recorded)")
        if name in ("status", "history"):
            sp.add_argument("model", nargs="?", help="registered model (default: params)")
    return ap


def _quiet_libraries() -> None:
    """Keep the output to one line per stage: libraries' notices go to the debug log."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("FEAST_USAGE", "False")
    for name in ("mlflow", "dvc", "great_expectations", "feast", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("py.warnings", "mlflow.utils.environment", "mlflow.models.model"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_libraries()
    try:
        params = load_params(args.params)
        st = settings(args.params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        COMMANDS[args.command](params, st, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one readable line, the trace with -v
        if args.verbose:
            raise
        print(f"error: {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
