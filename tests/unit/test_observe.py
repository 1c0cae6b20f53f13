"""Pipeline metrics pushed to a real Pushgateway (Debian's prometheus-pushgateway).

Each test that pushes starts its own gateway on a free loopback port and reads back what
the gateway holds, as Prometheus would scrape it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops import observe
from mlops.config import Params, Settings, load_params, settings

REPO = Path(__file__).resolve().parents[2]
PROJECT = "observe_unit_test"
GATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
needs_gateway = pytest.mark.skipif(
    GATEWAY is None, reason="prometheus-pushgateway is not installed (.ci/run installs it)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pushgateway(port: int) -> Iterator[str]:
    assert GATEWAY is not None
    proc = subprocess.Popen(
        # No persistence file: Debian's default is one file every gateway shares.
        [GATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the Pushgateway did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scrape(url: str) -> list[str]:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    mine = f'project="{PROJECT}"'
    return [line for line in text.splitlines() if line.startswith("mlops_") and mine in line]


def series(lines: list[str], name: str, **labels: str) -> list[float]:
    """Values of ``name`` whose labels include ``labels``."""
    out = []
    for line in lines:
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            out.append(float(value))
    return out


@pytest.fixture
def project(tmp_path: Path) -> tuple[Params, Settings]:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    path = tmp_path / "params.yaml"
    # A project name of its own: only this test's pushes are read back.
    return load_params(path).model_copy(update={"project": PROJECT}), settings(path, env={})


def test_without_a_gateway_nothing_is_measured_or_written(project, monkeypatch):
    # Given no MLOPS_PUSHGATEWAY_URL
    params, st = project
    monkeypatch.delenv(observe.ENV, raising=False)
    # When a stage runs and records a decision
    with observe.stage(params, st, "monitor", ["2013-07"]) as run:
        observe.gauge("mlops_drift_share", 0.5)
    # Then nothing was collected and no state was written
    assert run is None
    assert not (st.state_dir / "metrics").exists()


@needs_gateway
def test_a_stage_run_is_pushed_with_its_group_labels_and_decisions(project, monkeypatch):
    params, st = project
    with pushgateway(free_port()) as url:
        monkeypatch.setenv(observe.ENV, url)
        # When monitor runs twice on July and records drift per feature
        for _ in range(2):
            with observe.stage(params, st, "monitor", ["2013-07"]):
                observe.gauge(
                    "mlops_drift_score", 0.01, "2013-07", feature="dep_delay", method="psi"
                )
                observe.gauge("mlops_drift_breach", observe.flag(True), "2013-07", version="3")
                observe.gauge("mlops_drift_share", float("nan"))  # left out, not pushed
        lines = scrape(url)
    group = {"job": "mlops", "project": params.project, "stage": "monitor", "partition": "2013-07"}
    # Then one group holds the run's duration, outcome, counters and decisions
    assert series(lines, "mlops_stage_success", **group) == [1.0]
    assert series(lines, "mlops_stage_runs_total", outcome="success", **group) == [2.0]
    assert series(lines, "mlops_stage_runs_total", outcome="failure", **group) == [0.0]
    assert series(lines, "mlops_stage_duration_seconds", model=params.model_name, **group)
    assert series(lines, "mlops_drift_score", feature="dep_delay", method="psi", **group) == [0.01]
    assert series(lines, "mlops_drift_breach", version="3", **group) == [1.0]
    assert series(lines, "mlops_drift_share") == []
    (last,) = series(lines, "mlops_stage_last_success_timestamp_seconds", **group)
    assert abs(last - time.time()) < 120
    assert series(lines, "mlops_schedule_interval_seconds", **group) == [31 * 86_400.0]


@needs_gateway
def test_a_failed_stage_is_recorded_and_its_error_raised_unchanged(project, monkeypatch):
    params, st = project
    with pushgateway(free_port()) as url:
        monkeypatch.setenv(observe.ENV, url)
        with observe.stage(params, st, "score", ["2013-08"]):
            pass
        # When the next run of the same group fails
        with pytest.raises(KeyError, match="boom"), observe.stage(params, st, "score", ["2013-08"]):
            raise KeyError("boom")
        lines = scrape(url)
    group = {"stage": "score", "partition": "2013-08"}
    # Then its outcome is 0, the failure counted, and the earlier success still shown
    assert series(lines, "mlops_stage_success", **group) == [0.0]
    assert series(lines, "mlops_stage_runs_total", outcome="failure", **group) == [1.0]
    assert series(lines, "mlops_stage_runs_total", outcome="success", **group) == [1.0]
    assert len(series(lines, "mlops_stage_last_success_timestamp_seconds", **group)) == 1


@needs_gateway
def test_a_gateway_that_is_down_costs_a_warning_and_the_metrics_wait(project, monkeypatch, caplog):
    params, st = project
    port = free_port()
    monkeypatch.setenv(observe.ENV, f"http://127.0.0.1:{port}")
    # Given a gateway that is not running: the stage still succeeds, with one warning
    with caplog.at_level(logging.WARNING, "mlops.observe"), observe.stage(params, st, "train"):
        observe.gauge("mlops_champion_version", 4, partition=observe.ALL, group=observe.REGISTRY)
    assert "did not take the push" in caplog.text
    pending = list((st.state_dir / "metrics" / "pending").glob("*.json"))
    assert len(pending) == 2  # train's own group and the registry's
    # When the gateway is back, the next stage run pushes what waited as well
    with pushgateway(port) as url:
        with observe.stage(params, st, "score", ["2013-09"]):
            pass
        lines = scrape(url)
    assert series(lines, "mlops_stage_success", stage="train", partition="all") == [1.0]
    assert series(lines, "mlops_champion_version", stage="registry") == [4.0]
    assert series(lines, "mlops_stage_success", stage="score", partition="2013-09") == [1.0]
    assert not list((st.state_dir / "metrics" / "pending").glob("*.json"))


@needs_gateway
def test_a_kept_group_never_overwrites_a_newer_push_of_it(project, monkeypatch):
    params, st = project
    port = free_port()
    monkeypatch.setenv(observe.ENV, f"http://127.0.0.1:{port}")
    # Given July's monitor kept while the gateway was down
    with observe.stage(params, st, "monitor", ["2013-07"]):
        observe.gauge("mlops_drift_share", 0.1)
    with pushgateway(port) as url:
        # When July is monitored again, then another stage runs
        with observe.stage(params, st, "monitor", ["2013-07"]):
            observe.gauge("mlops_drift_share", 0.2)
        with observe.stage(params, st, "score", ["2013-08"]):
            pass
        lines = scrape(url)
    # Then the gateway holds the newer value and nothing waits
    assert series(lines, "mlops_drift_share", partition="2013-07") == [0.2]
    assert not list((st.state_dir / "metrics" / "pending").glob("*.json"))


def test_a_nested_stage_is_counted_once_by_the_outer_run(project, monkeypatch):
    params, st = project
    monkeypatch.setenv(observe.ENV, f"http://127.0.0.1:{free_port()}")
    with observe.stage(params, st, "promote") as outer, observe.stage(params, st, "x") as inner:
        observe.gauge("mlops_promotion_decision", 1.0, version="2")
    assert inner is None
    assert outer is not None
    assert outer.samples[("promote", "all")][0][0] == "mlops_promotion_decision"


def test_group_paths_encode_what_a_url_path_cannot_hold():
    assert observe.group_path("flights", "score", "2013-07") == (
        "/metrics/job/mlops/project/flights/stage/score/partition/2013-07"
    )
    assert observe.group_path("p", "s", "a/b").endswith("/partition@base64/YS9i")
    assert observe.group_path("p", "s", "").endswith("/partition@base64/=")


def test_exposition_is_one_family_per_name_with_escaped_labels():
    text = observe.exposition(
        [
            ("mlops_drift_score", {"feature": 'a"b'}, 0.5),
            ("mlops_stage_runs_total", {"outcome": "success"}, 3.0),
            ("mlops_drift_score", {"feature": "c"}, 0.25),
        ]
    )
    lines = text.splitlines()
    assert lines.count("# TYPE mlops_drift_score gauge") == 1
    assert "# TYPE mlops_stage_runs_total counter" in lines
    assert 'mlops_drift_score{feature="a\\"b"} 0.5' in lines
    assert lines.index('mlops_drift_score{feature="c"} 0.25') < lines.index(
        "# TYPE mlops_stage_runs_total counter"
    )


def test_the_schedule_interval_is_the_longest_gap_of_the_cadence(project):
    params, _ = project
    assert observe.interval_seconds(params) == 31 * 86_400  # the demo scores monthly
    six_hourly = params.model_copy(
        update={"schedule": params.schedule.model_copy(update={"scoring": "0 */6 * * *"})}
    )
    assert observe.interval_seconds(six_hourly) == 6 * 3600
