"""The alerting rules and every Grafana panel, evaluated by a real Prometheus.

A real Pushgateway and Prometheus (Debian's packages) run on loopback ports with the
repository's rules.yml and a copy of prometheus.yml whose targets point at them. A small
real pipeline runs through ``mlops.cli.main`` with ``MLOPS_PUSHGATEWAY_URL`` set: three
January weeks trained on, the model promoted, a calm week (W03) and a drifting July week
(W28) scored and monitored, W28 labelled, and a damaged week (W29) failing validation into
quarantine. ``mlops serve`` then answers good and refused requests while Prometheus
scrapes it. Each alert's measured quantity, and each panel's query (template variables
substituted), must return a series with a value; the breach, the failed stage and the
quarantine must be firing.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from mlops import io
from mlops.cli import main
from mlops.config import settings
from tests.conftest import FLIGHTS, FLIGHTS_WEEKLY, make_project, merge
from tests.helpers import record_raw
from tests.production.conftest import free_port, start, stop
from tests.unit.test_deploy import ALERTS, PROMETHEUS, metric_names, panel_targets, substitute

pytestmark = pytest.mark.integration

TRAIN = ["2013-W02", "2013-W03", "2013-W04"]
CALM, DRIFTING, BAD = "2013-W03", "2013-W28", "2013-W29"
PROJECT = "observed"
XGB = {"name": "xgb", "kind": "xgboost", "params": {"n_estimators": 40, "max_depth": 4}}
# Alerts this scenario must set off; the others must only measure something.
MUST_FIRE = {"MlopsStageFailed", "MlopsPartitionQuarantined", "MlopsDriftBreach"}
READY_S = 60
SERVE_READY_S = 240
WAIT_S = 90
# Spec metrics this scenario pushes, each for at least one group.
PUSHED = [
    "mlops_stage_duration_seconds",
    "mlops_stage_success",
    "mlops_stage_last_success_timestamp_seconds",
    "mlops_stage_runs_total",
    "mlops_stage_input_rows",
    "mlops_stage_output_rows",
    "mlops_schedule_interval_seconds",
    "mlops_validation_failed_expectations",
    "mlops_validation_quarantined",
    "mlops_validation_quarantines_total",
    "mlops_drift_score",
    "mlops_feature_drifted",
    "mlops_drift_share",
    "mlops_drifted_features",
    "mlops_prediction_drift_score",
    "mlops_prediction_drifted",
    "mlops_drift_breach",
    "mlops_model_metric",
    "mlops_promotion_gate_passed",
    "mlops_promotion_decision",
    "mlops_champion_version",
    "mlops_realised_metric",
    "mlops_holdout_metric",
    "mlops_labelled_rows",
    "mlops_performance_breach",
]


@dataclass
class Observed:
    """The running Prometheus and the project whose pipeline it watched."""

    prom: str
    project: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.prom}/api/v1/query", params={"query": expr}, timeout=30)
        body = resp.json()
        assert resp.status_code == 200 and body["status"] == "success", (expr, body)
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def valued(self, expr: str) -> list[dict[str, Any]]:
        """The series of ``expr`` whose value is a number (NaN shows as no data)."""
        return [s for s in self.query(expr) if math.isfinite(float(s["value"][1]))]

    def alerts(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.prom}/api/v1/alerts", timeout=30).json()
        return body["data"]["alerts"]


def until(fn: Any, what: str, timeout: float = WAIT_S) -> Any:
    """``fn()`` once it is truthy; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (got := fn()):
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f}s still not true: {what}")
        time.sleep(0.5)
    return got


def ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=2).status_code == 200
        return False

    until(up, f"{url} ready", READY_S)


def prometheus_config(tmp: Path, ports: dict[str, int]) -> Path:
    """prometheus.yml with 1s intervals and its targets on this machine's loopback ports."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    hosts = {
        "localhost:9090": ports["prometheus"],
        "pushgateway:9091": ports["pushgateway"],
        "serve:8000": ports["serve"],
    }
    jobs = []
    for job in config["scrape_configs"]:
        targets = job["static_configs"][0]["targets"]
        if job["job_name"] == "airflow":
            continue  # no statsd-exporter package here: see test_airflow_statsd.py
        job["static_configs"] = [{"targets": [f"127.0.0.1:{hosts[t]}" for t in targets]}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    shutil.copy(PROMETHEUS / "rules.yml", tmp / "rules.yml")
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(params_path: Path, *args: str, code: int = 0) -> None:
    assert main(["--params", str(params_path), *args]) == code, args


def train_and_score(params_path: Path) -> None:
    """Ingest, validate and materialise the weeks; train, promote; score W03 and W28."""
    weeks = [*TRAIN, DRIFTING]
    cli(params_path, "ingest", "--partitions", *weeks, BAD)
    cli(params_path, "validate", "--partitions", *weeks)
    cli(params_path, "materialize", "--partitions", *weeks)
    for verb in ("train", "evaluate", "promote"):
        cli(params_path, verb)
    for pid in (CALM, DRIFTING):
        cli(params_path, "score", "--partitions", pid)


def monitor_label_and_break(params_path: Path) -> None:
    """Monitor W03 then W28 (the newest, a breach), label W28, fail W29's validation."""
    for pid in (CALM, DRIFTING):  # the breach alert looks at the partition monitored last
        cli(params_path, "monitor", "--partitions", pid)
    cli(params_path, "label", "--partitions", DRIFTING)
    # a bad upstream delivers W29 without a column: validate fails and quarantines it
    st = settings(params_path)
    raw = st.raw_dir / f"{BAD}.parquet"
    io.write_parquet(raw, pd.read_parquet(raw).drop(columns=["temp"]))
    record_raw(st, BAD)
    cli(params_path, "validate", "--partitions", BAD, code=1)


def traffic(url: str, keys: list[str], stop_: threading.Event) -> None:
    """Good and refused prediction requests until ``stop_`` is set."""
    with httpx.Client(base_url=url, timeout=30) as http:
        i = 0
        while not stop_.is_set():
            key = keys[i % len(keys)]
            with contextlib.suppress(httpx.HTTPError):  # a slow answer must not stop the traffic
                http.post("/predict", json={"flight_id": key})
                http.post("/predict", json={"rows": [{"flight_id": k} for k in keys[:5]]})
                if i % 3 == 0:
                    http.post("/predict", json={"flight_id": key, "sched_hour": "twelve"})  # 422
                    http.get("/no-such-endpoint")  # 404
            i += 1
            stop_.wait(0.2)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """Pushgateway and Prometheus up, the pipeline run, ``mlops serve`` answering."""
    for tool in ("prometheus", "prometheus-pushgateway"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (Debian package; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("observe")
    ports = {k: free_port() for k in ("prometheus", "pushgateway", "serve")}
    gateway_url = f"http://127.0.0.1:{ports['pushgateway']}"
    prom_url = f"http://127.0.0.1:{ports['prometheus']}"
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_SERVE_API_KEY"}
    procs: list[subprocess.Popen[bytes]] = []
    stop_traffic = threading.Event()
    sender: threading.Thread | None = None
    try:
        gw_log = tmp / "pushgateway.log"
        procs.append(
            start(
                [
                    "prometheus-pushgateway",
                    f"--web.listen-address=127.0.0.1:{ports['pushgateway']}",
                    "--persistence.file=",  # Debian's default file is shared by every gateway
                ],
                env,
                gw_log,
            )
        )
        ready(f"{gateway_url}/-/ready", procs[-1], gw_log)
        prom_log = tmp / "prometheus.log"
        config = prometheus_config(tmp, ports)
        procs.append(
            start(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                ],
                env,
                prom_log,
            )
        )
        ready(f"{prom_url}/-/ready", procs[-1], prom_log)

        # a project name of its own: any other run's pushes that reach this gateway differ
        over = merge(FLIGHTS_WEEKLY, {"project": PROJECT, "train": {"candidates": [XGB]}})
        params_path = make_project(tmp / "proj", FLIGHTS, over)
        serve_log = tmp / "serve.log"
        cmd = [sys.executable, "-m", "mlops", "--params", str(params_path)]
        cmd += ["serve", "--port", str(ports["serve"])]
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLOPS_PUSHGATEWAY_URL", gateway_url)
            train_and_score(params_path)
            # the server starts (imports, loads the champion) while the pipeline goes on
            with serve_log.open("wb") as out:
                serve = subprocess.Popen(
                    cmd,
                    cwd=params_path.parent,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            procs.append(serve)
            monitor_label_and_break(params_path)
        st = settings(params_path)
        serve_url = f"http://127.0.0.1:{ports['serve']}"

        def serving() -> bool:
            if serve.poll() is not None:
                pytest.fail(f"serve exited:\n{serve_log.read_text()[-3000:]}")
            return _ok(f"{serve_url}/ready")

        until(serving, "mlops serve ready", SERVE_READY_S)
        keys = pd.read_parquet(st.predictions_dir / f"{DRIFTING}.parquet")["flight_id"]
        sender = threading.Thread(
            target=traffic,
            args=(serve_url, keys.iloc[::50].head(40).tolist(), stop_traffic),
            daemon=True,
        )
        sender.start()
        obs = Observed(prom_url, PROJECT)
        # Prometheus has scraped the gateway's groups and a minute-wide rate of the
        # server's predictions exists
        until(
            lambda: obs.valued(f'mlops_validation_quarantined{{project="{PROJECT}"}} == 1'),
            "the quarantine reached Prometheus",
        )
        until(
            lambda: obs.valued("rate(mlops_serve_predictions_total[1m]) > 0"),
            "a rate of predictions",
        )
        yield obs
    finally:
        stop_traffic.set()
        if sender is not None:
            sender.join(30)
        for proc in reversed(procs):  # each in its own process group, SIGTERM then SIGKILL
            stop(proc)


def _ok(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=5).status_code == 200
    return False


# --------------------------------------------------------------------------- pushed metrics
@pytest.mark.parametrize("name", PUSHED)
def test_every_spec_metric_reaches_prometheus_with_the_grouping_labels(
    observed: Observed, name: str
) -> None:
    series = observed.query(f'{name}{{job="mlops", project="{observed.project}"}}')
    assert series, f"{name} was not pushed by the pipeline run"
    for s in series:
        labels = s["metric"]
        assert {"stage", "partition", "model"} <= set(labels), labels
        assert labels["stage"] and labels["partition"], labels


def test_the_failed_validation_and_its_quarantine_are_recorded(observed: Observed) -> None:
    p = f'project="{observed.project}", stage="validate", partition="{BAD}"'
    (failed,) = observed.query(f"mlops_stage_success{{{p}}}")
    assert failed["value"][1] == "0"
    (runs,) = observed.query(f'mlops_stage_runs_total{{{p}, outcome="failure"}}')
    assert float(runs["value"][1]) >= 1
    (quarantined,) = observed.query(f"mlops_validation_quarantined{{{p}}}")
    assert quarantined["value"][1] == "1"
    (total,) = observed.query(f"mlops_validation_quarantines_total{{{p}}}")
    assert float(total["value"][1]) >= 1
    ok = observed.query(f'mlops_stage_success{{project="{observed.project}", stage="score"}}')
    assert {s["metric"]["partition"] for s in ok} == {CALM, DRIFTING}
    assert {s["value"][1] for s in ok} == {"1"}


# --------------------------------------------------------------------------- alerts
def measured(name: str, expr: str) -> str:
    """What alert ``name`` compares with its threshold, or the whole rule when it must fire.

    ``a > b`` becomes ``(a) - (b)``: a series exists exactly when both sides have one with
    the same labels. A breach rule's ``x == 1 and on (...) (...)`` drops the ``== 1``.
    """
    if name in MUST_FIRE:
        return expr
    text = expr.strip()
    first, _, rest = text.partition("\n")
    if re.search(r"\s==\s*1$", first) and rest.lstrip().startswith("and"):
        return re.sub(r"\s==\s*1$", "", first) + "\n" + rest
    lines = text.splitlines()
    if len(lines) > 1 and re.match(r"\s*(==|!=|>=|<=|>|<)", lines[-1]):
        threshold = re.sub(r"^\s*(==|!=|>=|<=|>|<)", "", lines[-1])
        return "(" + "\n".join(lines[:-1]) + f") - ({threshold})"
    m = re.fullmatch(r"(.+?)\s+(==|!=|>=|<=|>|<)\s+([^=<>!]+)", text, re.DOTALL)
    assert m, f"no threshold found in {name}: {expr}"
    return f"({m.group(1)}) - ({m.group(3)})"


def test_measured_strips_the_threshold_only() -> None:
    assert measured("X", "up == 0") == "(up) - (0)"
    assert measured("X", "a\n  > 2 * b\n") == "(a) - ( 2 * b)"
    assert measured("X", "x == 1\nand on (p) (y)") == "x\nand on (p) (y)"
    assert measured("MlopsStageFailed", "s == 0") == "s == 0"


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_alert_measures_its_quantity(observed: Observed, name: str) -> None:
    rule = ALERTS[name]
    expr = measured(name, rule["expr"])
    got = observed.valued(expr)
    assert got, f"{name}: `{expr}` returned no series with a value"
    if 'job="mlops"' in rule["expr"]:
        assert {s["metric"].get("project") for s in got} >= {observed.project}, got


def test_the_breach_the_failure_and_the_quarantine_are_firing(observed: Observed) -> None:
    def firing() -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for a in observed.alerts():
            if a["state"] == "firing" and a["labels"].get("project") == observed.project:
                out.setdefault(a["labels"]["alertname"], []).append(a["labels"])
        return out if set(out) >= MUST_FIRE else {}

    alerts = until(firing, f"{sorted(MUST_FIRE)} firing")
    failed = {(a["stage"], a["partition"]) for a in alerts["MlopsStageFailed"]}
    assert failed == {("validate", BAD)}
    (breach,) = alerts["MlopsDriftBreach"]
    assert (breach["project"], breach["partition"]) == (observed.project, DRIFTING)
    assert {a["partition"] for a in alerts["MlopsPartitionQuarantined"]} == {BAD}
    # the calm partition is monitored but not a breach, and the scoring is fresh
    assert "MlopsScoringStale" not in alerts
    calm = observed.query(f'mlops_drift_breach{{project="{observed.project}", partition="{CALM}"}}')
    assert [s["value"][1] for s in calm] == ["0"]


# --------------------------------------------------------------------------- Grafana panels
PANELS = [
    pytest.param(board, panel["title"], target, id=f"{board}: {panel['title']} [{target['refId']}]")
    for board, panel, target in panel_targets()
]


@pytest.mark.parametrize(("board", "title", "target"), PANELS)
def test_every_grafana_panel_shows_data(
    observed: Observed, board: str, title: str, target: dict[str, Any]
) -> None:
    if "ALERTS" in metric_names(target["expr"]):  # the panel shows alerts: wait for them
        until(
            lambda: any(
                a["state"] == "firing" and a["labels"].get("project") == observed.project
                for a in observed.alerts()
            ),
            "an alert of the project firing",
        )
    expr = substitute(target["expr"], {"project": observed.project})
    got = observed.valued(expr)
    assert got, f"panel {title!r} of {board}.json shows no data: `{expr}`"
