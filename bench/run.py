"""Run the benchmarks: every stage as the framework runs it beside the bare computation.

    python -m bench.run                       # 1M rows, every stage, the demo, the DAGs
    python -m bench.run --sizes 100k,1M,5M
    python -m bench.run --sizes 5M --stages score,monitor
    python -m bench.run --sizes 1M,5M --stages label
    python -m bench.run --sizes 1M --stages train --repeat 3
    python -m bench.run --quick               # 100k rows, no demo or DAG run: a smoke test
    python -m bench.run --quick --sizes 20k --out /tmp/bench-results
    python -m bench.run --stages e2e --peers  # the demo beside ZenML (make bench-peers)

Stages: validate, materialize (training-set retrieval, online write), train, score,
monitor, label (outcomes joined to the scored month and its realised performance) per
size; e2e (the demo: ``bench/bare_pipeline.py``, ``mlops run`` and a cold ``dvc repro``,
in interleaved ``--rounds``, with ZenML beside them under ``--peers``, and the CLI's
start-up; ``bench/e2e.py``), dags (parse time
per DAG file), airflow (one scoring DAG run against its stages' own times; needs e2e
first), celery (one scoring run over six months on the production profile's
CeleryExecutor, one worker against two; ``bench/celery.py``), partitions (one source
through ingest, validate and materialize cut into days, then into years: the same rows;
``bench/partitions.py``), serve (``mlops serve`` against a bare FastAPI app and ``mlflow
models serve`` at 200 requests/s, batches, a champion swap under load; ``bench/serve.py``),
observe (``mlops validate``, ``monitor`` and ``score`` with and without a Pushgateway, and
the push itself in-process; ``bench/observe.py``), explain (the contributions of 100k rows
against their prediction; ``bench/explain.py``).

Each size gets a project under ``--work`` (default ``/tmp/mlops-bench``) whose training
window (January-June) and scored month (July) are the real 2013 partitions scaled to that
many rows each (``bench/scale.py``). ``COMPARE`` lists every comparison: a framework case,
run side by side with its bare baselines, each in a fresh interpreter (time and peak
memory come from there, see ``bench/cases.py``), and the target rows made from their
results. A case that passes ``--max-rss-gb`` is stopped and reported as such. With
``--repeat N`` every case runs N times, interleaved, and the fastest is kept (the others
are recorded): use it on a shared machine. Results are merged into
``<--out>/results.json`` (default ``bench/results``; a later run replaces what it
measured and keeps the rest) and ``results.md`` is rewritten from it.

Needs about 8 GB of free memory at 5M rows. A Redis at 127.0.0.1:6379 is used when
reachable (db 15, flushed; the serve stage uses db 10); otherwise the Redis comparison is
skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import ENV as CASE_ENV

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SIZE_STAGES = ["validate", "materialize", "train", "score", "monitor", "label"]
STAGES = [
    *SIZE_STAGES,
    *("e2e", "dags", "airflow", "celery", "partitions", "serve", "observe", "explain"),
]
ENV = {**CASE_ENV, "PYTHONWARNINGS": "ignore"}
MAX_RSS_MB = 9 * 1024  # a case above this is stopped and reported (set by --max-rss-gb)
E2E: dict[str, Any] = {"rounds": 3, "peers": False}  # set by --rounds and --peers
Res = dict[str, Any] | None
EVALS = "evaluation_artifacts"
SECTIONS = ("main", "fit", EVALS, "log_register", "log_register_again")  # in results.md
CASES_HEADER = (
    "| size | case | section | seconds | peak RSS in section (MB) | process peak RSS (MB) |"
)
LIBRARIES = ["feast", "great_expectations", "mlflow", "evidently", "xgboost", "scikit-learn"]
LIBRARIES += ["pandas", "pyarrow", "duckdb", "apache-airflow"]


def parse_size(text: str) -> int:
    from bench.scale import parse_size as p

    return p(text)


def label(n: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- subprocesses
def _rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    m = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def spawn(
    cmd: list[str],
    log: Path,
    cwd: Path = REPO,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; wall time and its own peak RSS (from wait4).

    A process that passes ``MAX_RSS_MB`` or the timeout is killed and reported as such,
    so one runaway case cannot take the machine down.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    killed = None
    with log.open("w") as fh:
        full = {**os.environ, **ENV, **(env or {})}
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=full)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > t0 + timeout:
                killed = f"timeout after {timeout:.0f}s"
            elif _rss_mb(proc.pid) > MAX_RSS_MB:
                killed = f"RSS above {MAX_RSS_MB / 1024:.0f} GB"
            if killed:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    out = {
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "process_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "returncode": os.waitstatus_to_exitcode(status),
        "log": str(log),
        # The machine may be shared: the load around a case says how far to trust it.
        "load_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    if killed:
        out["killed"] = killed
    return out


def spawn_json(
    cmd: list[str], log: Path, cwd: Path = REPO, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``spawn`` a script printing its result as its last JSON line (else the log's tail)."""
    proc = spawn(cmd, log, cwd, env=env)
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    res: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": log.read_text()[-800:]}
    return {**res, **proc}


def _report(name: str, res: dict[str, Any]) -> None:
    first = next(iter(res.get("sections", {}).values()), None)
    secs = f"{first['seconds']:.2f}s" if first else f"{res.get('wall_seconds', 0):.1f}s"
    fail = "" if res.get("ok", res.get("returncode") == 0) else f"  FAILED: {res.get('error')}"
    print(f"  {name}: {secs}, process peak {res['process_peak_rss_mb']:.0f} MB{fail}", flush=True)


def run_case(name: str, key: str, args: dict[str, Any], work: Path) -> dict[str, Any]:
    """One case of ``bench.cases`` in a fresh interpreter: its sections, time and memory."""
    out = work / "results" / f"{key}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = [PY, "-m", "bench.cases", name, json.dumps(args), str(out)]
    proc = spawn(cmd, work / "logs" / f"{key}.log")
    why = f"no result (exit {proc['returncode']})"
    why = f"killed: {proc['killed']}" if "killed" in proc else why
    res = json.loads(out.read_text()) if out.is_file() else dict(case=name, ok=False, error=why)
    peak = proc.pop("process_peak_rss_mb")
    res.update(proc)
    # The worker resets the high-water mark per section, so its own account is the whole
    # process; wait4's is the peak since the last reset (all there is for a killed case).
    res["process_peak_rss_mb"] = max(res.get("process_peak_rss_mb") or 0.0, peak)
    _report(key, res)
    return res


# --------------------------------------------------------------------------- results helpers
def _sec(res: Res, section: str = "main", field: str = "seconds") -> float | None:
    if not res or (field == "seconds" and not res.get("ok")):
        return None
    s = res.get("sections", {}).get(section)
    return s[field] if s else None


def _out(res: Res) -> dict[str, Any]:
    return (res or {}).get("out") or {}


def _t(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _within(q: float | None, limit: float, at_least: bool = False) -> bool:
    return q is not None and (q >= limit if at_least else q <= limit)


# --------------------------------------------------------------------------- comparisons
# A rule makes one target row from a comparison's results (framework first): target ("{v}"
# is the variant), measured, met, detail, and the results whose failures the row names.
Row = tuple[str, Any, Any, str, Sequence[Res]]


@dataclass(frozen=True)
class Compare:
    """A framework case run side by side with its bare baselines, and the rules making
    the target rows from their results. A result's key is its case name (``.variant``
    appended); the rows are made when the framework case has a result."""

    stage: str
    cases: tuple[str, ...]
    rules: tuple[Callable[[list[Res]], Row], ...] = ()
    variants: tuple[str, ...] = ("",)

    def keys(self, variant: str) -> list[str]:
        return [f"{c}.{variant}" if variant else c for c in self.cases]


def _validate(r: list[Res]) -> Row:
    fw, gx, pd_ = (_sec(x) for x in r)
    note = f"framework {_t(fw)}, GX {_t(gx)}; GX vs vectorised pandas {_t(pd_)}: "
    note += f"{_ratio(gx, pd_)}x"
    q = _ratio(fw, gx)
    return "validate <= 1.2x GX's own checkpoint run", q, _within(q, 1.2), note, r


def _retrieve(r: list[Res]) -> Row:
    fw, bare, join = _sec(r[0]), _sec(r[1]), _out(r[1]).get("join_seconds")
    same = _out(r[0]).get("digest") == _out(r[1]).get("digest")
    note = f"Feast {_t(fw)} vs read+sort+merge_asof {_t(bare)} (join alone {_t(join)}: "
    note += f"{_ratio(fw, join)}x); identical result: {same}"
    q = _ratio(fw, bare)
    return "training-set retrieval <= 3x merge_asof (same reads + sort)", q, _within(q, 3), note, r


def _online(r: list[Res]) -> Row:
    fwr, bare_r = r[0] or {}, r[1] or {}
    out, bare = _out(fwr), _sec(bare_r)
    write = out.get("feast_online_write_seconds", out.get("feast_materialize_seconds"))
    note = (
        f"Feast online write {_t(write)} (stage {_t(_sec(fwr))}) vs bulk {_t(bare)}; entities "
        f"in store {out.get('entities_in_store')} / {_out(bare_r).get('entities_in_store')}, "
        f"{out.get('mismatched_columns')} columns differ on read-back"
        if fwr.get("ok")
        else f"stopped after {fwr.get('wall_seconds')}s at "
        f"{fwr.get('process_peak_rss_mb', 0) / 1024:.1f} GB; bulk write {_t(bare)} "
        f"at {bare_r.get('process_peak_rss_mb', 0) / 1024:.1f} GB"
    )
    q = _ratio(write, bare)
    return "online write ({v}) <= 3x bulk write", q, _within(q, 3), note, r


def _fit(r: list[Res]) -> Row:
    fw, bare = _sec(r[0], "fit"), _sec(r[1], "fit")
    m1, m2 = (_out(x).get("metrics", {}).get("roc_auc") for x in r)
    note = f"fit_candidates {_t(fw)} vs bare {_t(bare)}; holdout AUC {m1} vs {m2}"
    q = _ratio(fw, bare)
    return "train fit ({v}) <= 1.2x bare fit", q, _within(q, 1.2), note, r


def _mlflow(r: list[Res]) -> Row:
    log_s, again, evals = (_sec(r[0], s) for s in ("log_register", "log_register_again", EVALS))
    calls = _out(r[0]).get("mlflow_calls_seconds") or {}
    mlflow_s = round(sum(calls.values()), 2) if calls else None
    note = (
        f"first model in a fresh process {_t(log_s)} (MLflow's own calls {_t(mlflow_s)}: "
        f"{', '.join(f'{k} {v}s' for k, v in calls.items())}); the same model logged "
        f"again in that process {_t(again)}; evaluation artifacts before logging "
        f"(plots, importance, reference predictions) {_t(evals)}"
    )
    return "MLflow log + register ({v}) < 2 s", log_s, log_s is not None and log_s < 2, note, r[:1]


def _score(r: list[Res]) -> Row:
    fw, bare = _sec(r[0]), _sec(r[1])
    s1, s2 = (_out(x).get("prediction_sum") for x in r)
    note = f"score.run {_t(fw)} vs read+inplace_predict+write {_t(bare)}; prediction sums "
    q = _ratio(bare, fw)
    met = _within(q, 0.7, at_least=True)
    return "score throughput >= 0.7x inplace_predict", q, met, note + f"{s1} / {s2}", r


def _monitor(r: list[Res]) -> Row:
    fw, bare, ks = _sec(r[0]), _sec(r[1]), _sec(r[1], "ks")
    note = f"monitor.run {_t(fw)} vs wasserstein+JS on full data {_t(bare)} (KS {_t(ks)})"
    q = _ratio(fw, bare)
    target = "monitor <= 3x numpy/scipy per-column statistics on the full data"
    return target, q, _within(q, 3), note, r


def _sampled(r: list[Res]) -> Row:
    a, b = (_out(x).get("columns") or {} for x in r)
    diff = sorted(k for k in a if k in b and a[k]["drifted"] != b[k]["drifted"])
    agree, note = f"{len(a) - len(diff)}/{len(a)} columns agree", f"differ: {diff}" if diff else ""
    return "sampled drift decisions == full-data decisions", agree, bool(a) and not diff, note, ()


def _label(r: list[Res]) -> Row:
    fw, bare = _sec(r[0]), _sec(r[1])
    a, b = (_out(x) for x in r)
    note = (
        f"label.run (join, store, realised performance, report, MLflow) {_t(fw)} vs pandas "
        f"merge + sklearn metrics {_t(bare)}; labelled {a.get('labelled')} / "
        f"{b.get('labelled')}, ROC AUC {a.get('roc_auc')} / {b.get('roc_auc')}"
    )
    q = _ratio(fw, bare)
    return "label + performance <= 2x pandas merge + sklearn metrics", q, _within(q, 2), note, r


KINDS = ("xgboost", "sklearn_hist_gradient_boosting")
COMPARE = [
    Compare("validate", ("validate.framework", "validate.gx", "validate.pandas"), (_validate,)),
    Compare("materialize", ("retrieve.framework", "retrieve.bare"), (_retrieve,)),
    Compare("materialize", ("online.framework", "online.bare"), (_online,), ("sqlite", "redis")),
    Compare("train", ("train.framework", "train.bare"), (_fit, _mlflow), KINDS),
    Compare("score", ("score.framework", "score.bare"), (_score,)),
    Compare("monitor", ("monitor.framework", "monitor.bare"), (_monitor, _sampled)),
    Compare("monitor", ("monitor.stage",)),  # for the peak memory across sizes
    Compare("label", ("label.prepare",)),  # the inputs, untimed, in a process of their own
    Compare("label", ("label.framework", "label.bare"), (_label,)),
]
# peak memory, 5M vs 1M
SCALING = (
    ("score.framework", "score"),
    ("monitor.stage", "monitor"),
    ("label.framework", "label + performance"),
)


def plan(stages: list[str], use_redis: bool) -> list[tuple[str, str, str]]:
    """(result key, case, variant) of every case of the chosen stages, in order: each
    framework case right before its bare baselines."""
    return [
        (key, name, v)
        for cmp in COMPARE
        if cmp.stage in stages
        for v in cmp.variants
        if use_redis or v != "redis"
        for name, key in zip(cmp.cases, cmp.keys(v), strict=True)
    ]


def run_size(
    args: dict[str, Any], stages: list[str], use_redis: bool, repeat: int = 1
) -> dict[str, Any]:
    """Every planned case ``repeat`` times, interleaved; the fastest run of each is kept
    (the machine may be shared: the minimum is the least disturbed), all times recorded."""
    work = Path(args["work"])
    r: dict[str, Any] = {}
    times: dict[str, list[float | None]] = {}
    for i in range(repeat):
        if repeat > 1:
            print(f"  repeat {i + 1}/{repeat}", flush=True)
        for key, name, variant in plan(stages, use_redis):
            res = run_case(name, key, {**args, "variant": variant}, work)
            first = next(iter(res.get("sections", {}).values()), None)
            secs = first["seconds"] if first and res.get("ok") else None
            times.setdefault(key, []).append(secs)
            best = next(iter(r.get(key, {}).get("sections", {}).values()), None)
            if key not in r or (secs is not None and (best is None or secs < best["seconds"])):
                r[key] = res
    for key, res in r.items():
        res["repeats"] = times[key]
    return r


# --------------------------------------------------------------------------- projects
def project(root: Path, kind: str, work: Path, source: Path | None = None) -> dict[str, Any]:
    """A fresh project at ``root``, made by the ``project`` case (see there for ``kind``)."""
    shutil.rmtree(root, ignore_errors=True)
    args = {"params": str(root / "params.yaml"), "work": str(root), "variant": kind}
    res = run_case("project", f"project-{root.name}", {**args, "source": str(source or root)}, work)
    if not res.get("ok"):
        raise SystemExit(f"project {root} failed: {res.get('error')}; see {res['log']}")
    return res["out"]


def prepare_base(work: Path) -> Path:
    """The real demo data: a project with all 12 months of 2013 ingested and validated."""
    base = work / "base"
    if not (base / "data" / "validated" / "2013-12.parquet").is_file():
        print("base: ingesting and validating the 12 real months of 2013", flush=True)
        project(base, "base", work)
    return base


def prepare_size(work: Path, base: Path, rows: int, fresh: bool) -> dict[str, Any]:
    """A project whose training window and scored month hold ``rows`` rows each."""
    root = work / label(rows)
    marker = root / "scaled.json"
    spec = {"rows": rows, "seed": 2013, "jitter": 0.02}
    if fresh or not marker.is_file() or json.loads(marker.read_text()).get("spec") != spec:
        print(f"{label(rows)}: scaling the real data to {rows:,} rows per side", flush=True)
        marker.write_text(json.dumps({"spec": spec, **project(root, str(rows), work, base)}))
    args = {"params": str(root / "params.yaml"), "work": str(root / "bench"), "size": label(rows)}
    (root / "bench").mkdir(exist_ok=True)
    res = run_case("setup", "setup", args, root / "bench")
    if not res.get("ok"):
        raise SystemExit(f"setup of {root} failed: {res.get('error')}")
    return args


# --------------------------------------------------------------------------- demo, DAGs
def run_e2e(work: Path) -> dict[str, Any]:
    """The demo four ways side by side (``bench/e2e.py``): bare, ``mlops run``, cold
    ``dvc repro`` and, with ``--peers``, ZenML; then the CLI's start-up."""
    from bench.e2e import run

    return run(work, E2E["rounds"], E2E["peers"])


AIRFLOW_HOME = r"""
import json, os, sys, time, tempfile
home = tempfile.mkdtemp(prefix="mlops-bench-airflow-")
os.environ.update({"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": os.path.dirname(sys.argv[1]),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"})
"""
DAG_PARSE = (
    AIRFLOW_HOME
    + r"""
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
t0 = time.perf_counter()
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
t2 = time.perf_counter()
stats = [{"file": s.file, "duration": s.duration.total_seconds(), "dags": s.dag_num,
          "tasks": s.task_num} for s in bag.dagbag_stats]
print(json.dumps({"airflow_import": t1 - t0, "dagbag": t2 - t1, "stats": stats,
                  "errors": {k: v[-500:] for k, v in bag.import_errors.items()}}))
"""
)
DAG_TEST = (
    AIRFLOW_HOME
    + r"""
os.environ.update({"AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING", "MLOPS_PARAMS": sys.argv[2]})
import pendulum
from airflow.utils.db import initdb
initdb()
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1], safe_mode=False).dags["scoring"]
t0 = time.perf_counter()
dr = dag.test(logical_date=pendulum.parse(sys.argv[3], tz="UTC"))
wall = time.perf_counter() - t0
print("\n" + json.dumps({"state": str(dr.state), "wall": wall}))
"""
)


def run_dags(work: Path) -> dict[str, Any]:
    """Parse time of each DAG file: DagBag's own per-file duration, in a fresh interpreter."""
    out = {}
    for f in sorted((REPO / "dags").glob("*.py")):
        if f.name.startswith("_"):
            continue
        res = spawn_json([PY, "-c", DAG_PARSE, str(f)], work / "logs" / f"dag-{f.stem}.log")
        res["parse_seconds"] = (res.get("stats") or [{}])[0].get("duration")
        out[f.name] = res
        errors = f" ERRORS {list(res['errors'])}" if res.get("errors") else ""
        imports = f"airflow import {res.get('airflow_import', 0):.1f}s"
        print(f"  dag {f.name}: parse {res['parse_seconds']}s ({imports}){errors}", flush=True)
    return out


def run_airflow(work: Path, month: str = "2013-08") -> dict[str, Any]:
    """One scoring DAG run (``dag.test``, tasks in-process) on the demo project left by
    the e2e stage, against the sum of the stages' own times printed by each task."""
    done = sorted((work / "e2e").glob("run-*/mlflow.db"), key=lambda p: p.stat().st_mtime)
    if not done:
        return {"error": "needs the e2e stage first (its project and champion)"}
    root = done[-1].parent
    log = work / "logs" / "airflow-scoring.log"
    dag, params = str(REPO / "dags" / "scoring.py"), str(root / "params.yaml")
    cmd = [PY, "-c", DAG_TEST, dag, params, f"{month}-01"]
    res = spawn_json(cmd, log, cwd=root)
    text = log.read_text()
    stages = {}
    for verb in ("ingest", "validate", "materialize", "score", "monitor"):
        m = re.findall(rf"^.*?\b{verb}: .* in ([0-9.]+)s\s*$", text, re.M)
        if m:
            stages[verb] = float(m[-1])
    res["stage_seconds"], total = stages, sum(stages.values())
    if "wall" in res and len(stages) == 5:
        res["overhead_per_task_seconds"] = round((res["wall"] - total) / 5, 2)
    overhead = f"overhead per task {res.get('overhead_per_task_seconds')}s"
    print(
        f"  scoring DAG run: {res.get('wall', 0):.1f}s, stages {total:.1f}s, {overhead}", flush=True
    )
    return res


def run_celery(work: Path) -> dict[str, Any]:
    from bench.celery import run_celery as run

    return run(work)


def _dags_row(dags: dict[str, Any]) -> tuple[Any, ...] | None:
    if not dags:
        return None
    worst = max((d.get("parse_seconds") or 99) for d in dags.values())
    note = ", ".join(f"{k} {v.get('parse_seconds')}s" for k, v in dags.items())
    return "each DAG file parses in < 0.3 s", "-", round(worst, 3), worst < 0.3, note


def _e2e_rows(e2e: dict[str, Any]) -> list[tuple[Any, ...]]:
    from bench.e2e import rows

    return rows(e2e)


def _airflow_row(af: dict[str, Any]) -> tuple[Any, ...]:
    per_task = af.get("overhead_per_task_seconds")
    note = (
        f"scoring DAG run (dag.test, {af.get('state')}) {_t(af.get('wall'))} vs its "
        f"stages' own {_t(sum((af.get('stage_seconds') or {}).values()))}; includes "
        "dag.test's in-process execution API start"
        if per_task is not None
        else f"not measured: {af.get('error', 'run the airflow stage (after e2e)')}"[:300]
    )
    return "Airflow overhead per task (no target; reported)", "demo", per_task, None, note


def _celery_row(cel: dict[str, Any]) -> tuple[Any, ...]:
    one, two = cel.get("workers_1") or {}, cel.get("workers_2") or {}
    speedup = cel.get("speedup_two_workers")
    note = (
        f"1 worker {_t(one.get('wall_seconds'))} ({one.get('state')}), 2 workers "
        f"{_t(two.get('wall_seconds'))} ({two.get('state')}); score/monitor tasks per "
        f"worker {two.get('mapped_tasks_per_worker')}; {os.cpu_count()} CPUs"
        if speedup is not None
        else f"not measured: {cel.get('error', 'run the celery stage')}"[:300]
    )
    target = "scoring DAG on the CeleryExecutor: 2 workers vs 1 (speed-up; no target; reported)"
    return target, f"demo, {len(cel.get('partitions') or [])} partitions", speedup, None, note


def run_partitions(work: Path) -> dict[str, Any]:
    from bench.partitions import run_partitions as run

    return run(work)


def _partitions_row(res: dict[str, Any]) -> tuple[Any, ...] | None:
    if not res:
        return None
    notes, worst = [], None
    for source, r in res.items():
        day, year, q = r["day"], r["year"], r["ratio"]
        stages = ", ".join(
            f"{s} {day.get(s)}s vs {year.get(s)}s ({q.get(s)}x)"
            for s in ("ingest", "validate", "materialize")
        )
        stages += f", all three {q.get('total')}x"
        notes.append(
            f"{source}: {day.get('partitions')} days vs {year.get('partitions')} year(s) of "
            f"{day.get('rows')} rows: {stages}"
        )
        worst = q.get("total") if worst is None else max(worst, q.get("total") or 99)
    sizes = ", ".join(
        f"{s} {r['day'].get('partitions')}d/{r['year'].get('partitions')}y" for s, r in res.items()
    )
    target = "many small partitions: ingest + validate + materialize of days <= 3x years"
    return target, sizes, worst, worst is not None and worst <= 3, "; ".join(notes)


def run_serve(work: Path) -> dict[str, Any]:
    from bench.serve import run_serve as run

    return run(work)


def _serve_rows(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    from bench.serve import rows

    return rows(res)


def run_observe(work: Path) -> dict[str, Any]:
    from bench.observe import run_observe as run

    return run(work)


def _observe_rows(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    from bench.observe import rows

    return rows(res)


def run_explain(work: Path) -> dict[str, Any]:
    from bench.explain import run_explain as run

    return run(work)


def _explain_rows(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    from bench.explain import rows

    return rows(res)


# A stage's target row, or several (serve, observe, explain)
Report = Callable[[dict[str, Any]], "tuple[Any, ...] | list[tuple[Any, ...]] | None"]
CELERY = "a scoring run of six months on one Celery worker, then two"
# stage -> (what is printed, how it runs, its target row): in this order, after the sizes
RUNS: dict[str, tuple[str, Callable[[Path], dict[str, Any]], Report]] = {
    "dags": ("parse time per file", run_dags, _dags_row),
    "e2e": (
        "the demo: bare, `mlops run`, `dvc repro` (and ZenML with --peers)",
        run_e2e,
        _e2e_rows,
    ),
    "airflow": ("a scoring DAG run against its stages' own times", run_airflow, _airflow_row),
    "celery": (CELERY, run_celery, _celery_row),
    "partitions": (
        "one source in day partitions against the same rows in year partitions",
        run_partitions,
        _partitions_row,
    ),
    "serve": (
        "one row at 200 requests/s, batches and a champion swap against bare servers",
        run_serve,
        _serve_rows,
    ),
    "observe": (
        "stage runs with and without a Pushgateway, and the push itself",
        run_observe,
        _observe_rows,
    ),
    "explain": (
        "contributions of 100k rows against their prediction (XGBoost, HistGradientBoosting)",
        run_explain,
        _explain_rows,
    ),
}


# --------------------------------------------------------------------------- targets
def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Targets from the issue, each with the measured value and whether it is met."""
    sizes = results.get("sizes", {})
    rows: list[dict[str, Any]] = []

    def add(target: str, size: str, measured: Any, met: Any, note: str, *cases: Res) -> None:
        errors = [f"{c.get('case')}: {c.get('error')}" for c in cases if c and not c.get("ok")]
        note = "; ".join([*errors, note] if note else errors)
        rows.append(dict(target=target, size=size, measured=measured, met=met, note=note))

    main = "1M" if "1M" in sizes else next(iter(sorted(sizes, key=parse_size)), None)
    r = sizes.get(main, {}) if main else {}
    for cmp in COMPARE:
        for v in cmp.variants:
            keys = cmp.keys(v)
            if keys[0] in r:
                for rule in cmp.rules:
                    target, measured, met, note, blame = rule([r.get(k) for k in keys])
                    add(target.format(v=v), main, measured, met, note, *blame)
    small, big = sizes.get("1M", {}), sizes.get("5M", {})
    for key, what in SCALING:
        if key in small and key in big:
            p1, p5 = (_sec(s[key], "main", "peak_rss_mb") for s in (small, big))
            note = f"{p1} MB at 1M, {p5} MB at 5M (peak RSS during the stage call)"
            q = _ratio(p5, p1)
            target = f"{what} peak memory 5M <= 1.5x 1M"
            add(target, "1M/5M", q, _within(q, 1.5), note, small[key], big[key])
    for stage, (_, _, row) in RUNS.items():
        made = row(results.get(stage) or {})
        for one in made if isinstance(made, list) else [made] if made else []:
            add(*one)
    return rows


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gb']} GB, Python {m['python']}. Updated "
        f"{results['updated']}. Ratios are framework / bare (score: bare time / framework "
        "time, i.e. relative throughput). Each case ran in a fresh process; with `--repeat` "
        "the fastest run is kept. The machine may be shared with other work: the load "
        "average around every case is in `results.json`. Produced by `make bench`.",
        "",
        "| target | size | measured | met | detail |",
        "|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(
            f"| {t['target']} | {t['size']} | {_fmt(t['measured'])} | {met} | {t['note']} |"
        )
    lines += ["", "## Cases", "", CASES_HEADER, "|---|---|---|---|---|---|"]
    for size in sorted(results.get("sizes", {}), key=parse_size):
        for name, res in results["sizes"][size].items():
            if not res.get("ok"):
                lines.append(f"| {size} | {name} | - | FAILED | | {res.get('error', '')[:80]} |")
                continue
            secs = res.get("sections", {})
            for sec in sorted(secs, key=lambda k: SECTIONS.index(k) if k in SECTIONS else 9):
                s = secs[sec]
                lines.append(
                    f"| {size} | {name} | {sec} | {s['seconds']:.2f} | "
                    f"{s['peak_rss_mb']:.0f} | {res['process_peak_rss_mb']:.0f} |"
                )
    from bench.e2e import markdown_lines as e2e_lines

    lines += e2e_lines(results.get("e2e"))
    from bench.serve import markdown_lines

    lines += markdown_lines(results.get("serve"))
    from bench.observe import markdown_lines as observe_lines

    lines += observe_lines(results.get("observe"))
    return "\n".join(lines) + "\n"


def _git(*args: str) -> str:
    try:
        cmd = ["git", *args]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    meminfo = Path("/proc/meminfo").read_text()
    mem = int(re.search(r"^MemTotal:\s+(\d+)", meminfo, re.M).group(1))  # type: ignore[union-attr]
    libs: dict[str, str | None] = {}
    for p in LIBRARIES:
        try:
            libs[p] = version(p)
        except PackageNotFoundError:
            libs[p] = None
    dirty = _git("status", "--porcelain", "mlops", "dags")
    return {
        "cpus": os.cpu_count(),
        "memory_gb": mem // (1024 * 1024),
        "python": platform.python_version(),
        "libraries": libs,
        "code_revision": _git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_changes": [ln[3:] for ln in dirty.splitlines()],
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _save(results: dict[str, Any], folder: Path) -> None:
    results["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["machine"] = machine()
    results["targets"] = evaluate(results)
    for name, text in (
        ("results.json", json.dumps(results, indent=1, sort_keys=True, default=str) + "\n"),
        ("results.md", markdown(results)),
    ):
        tmp = folder / f"{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arg = ap.add_argument
    arg("--sizes", help="comma-separated, e.g. 100k,1M,5M (default 1M, 100k with --quick)")
    arg("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    arg(
        "--quick",
        action="store_true",
        help="100k rows, no demo, Airflow, Celery, serve or observe run",
    )
    arg("--work", type=Path, default=Path("/tmp/mlops-bench"), help="projects and logs")
    arg("--out", "--results", dest="results", type=Path, default=REPO / "bench" / "results")
    arg("--fresh", action="store_true", help="regenerate the scaled projects")
    arg("--no-redis", action="store_true", help="skip the Redis online store")
    arg("--repeat", type=int, default=1, help="run every case N times, keep the fastest")
    arg("--max-rss-gb", type=float, default=9.0, help="stop a case whose memory passes this")
    arg("--rounds", type=int, default=3, help="interleaved rounds of the e2e stage")
    arg("--peers", action="store_true", help="e2e: also ZenML, in its own venv (bench/peers)")
    a = ap.parse_args(argv)
    E2E.update(rounds=a.rounds, peers=a.peers)
    global MAX_RSS_MB
    MAX_RSS_MB = a.max_rss_gb * 1024
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    if set(stages) - set(STAGES):
        ap.error(f"unknown stages {sorted(set(stages) - set(STAGES))}; choose from {STAGES}")
    sizes = [parse_size(s) for s in (a.sizes or ("100k" if a.quick else "1M")).split(",")]
    if a.quick:
        stages = [s for s in stages if s not in ("e2e", "airflow", "celery", "serve", "observe")]
    use_redis = redis_up() and not a.no_redis
    a.work.mkdir(parents=True, exist_ok=True)
    a.results.mkdir(parents=True, exist_ok=True)
    path = a.results / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.setdefault("sizes", {})
    t0 = time.perf_counter()
    size_stages = [s for s in stages if s in SIZE_STAGES]
    if size_stages:
        base = prepare_base(a.work)
        for n in sizes:
            print(f"{label(n)}: {', '.join(size_stages)}", flush=True)
            args = prepare_size(a.work, base, n, a.fresh)
            measured = run_size(args, size_stages, use_redis, a.repeat)
            results["sizes"].setdefault(label(n), {}).update(measured)
            _save(results, a.results)
    for stage, (what, run, _) in RUNS.items():
        if stage in stages:
            print(f"{stage}: {what}", flush=True)
            results[stage] = run(a.work)
    _save(results, a.results)
    print(f"bench: done in {time.perf_counter() - t0:.0f}s -> {a.results}/results.md")
    for t in results["targets"]:
        met = {True: "yes", False: "NO", None: "n/a"}[t["met"]]
        print(f"  [{met:>3}] {t['target']} ({t['size']}): {_fmt(t['measured'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
