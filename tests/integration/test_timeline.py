"""The timeline of a real replay: Evidently's UI over the workspace, opened in Chromium.

One small project is trained for the module (three weeks of January, an XGBoost
champion) and replays four later weeks through the CLI: score, monitor and label. The
timeline then holds a drift and a performance snapshot per week; ``mlops ui`` serves it
on a loopback port; headless Chromium opens the dashboard and one week's drift report.
With ``MLOPS_DOCS_SCREENSHOTS=1`` the dashboard's screenshot is also saved as the README's
``docs/timeline.png`` (``test_drift_report`` saves ``docs/drift-report.png``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops import partitions, timeline, ui
from mlops.cli import main
from mlops.config import Params, Settings, load_params, settings
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, make_project, merge

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TRAIN = ["2013-W02", "2013-W03", "2013-W04"]
REPLAYED = ["2013-W05", "2013-W10", "2013-W23", "2013-W28"]
XGB = {"name": "xgb", "kind": "xgboost", "params": {"n_estimators": 40, "max_depth": 4}}
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20
MIN_PNG_BYTES = 20_000
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Replay:
    """The module's project after the replay."""

    params_path: Path

    @property
    def params(self) -> Params:
        return load_params(self.params_path)

    @property
    def st(self) -> Settings:
        return settings(self.params_path)


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """Train on January, then score, monitor and label the replayed weeks via the CLI."""
    over = merge(FLIGHTS_SMALL, {"train": {"candidates": [XGB]}, "score": {"partitions": REPLAYED}})
    path = make_project(tmp_path_factory.mktemp("timeline") / "proj", FLIGHTS, over)

    def cli(*args: str) -> None:
        assert main(["--params", str(path), *args]) == 0, args

    cli("ingest", "--partitions", *TRAIN, *REPLAYED)
    cli("validate", "--partitions", *TRAIN, *REPLAYED)
    cli("materialize", "--partitions", *TRAIN, *REPLAYED)
    for verb in ("train", "evaluate", "promote"):
        cli(verb)
    for verb in ("score", "monitor", "label"):
        cli(verb, "--partitions", *REPLAYED)
    return Replay(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """``mlops ui`` running on a loopback port."""

    proc: subprocess.Popen[bytes]
    base: str
    log: Path


@pytest.fixture(scope="module")
def service(replay: Replay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The UI as an operator starts it, stopped with a signal when the module ends."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlops", "--params", str(replay.params_path)]
    cmd += ["ui", "--port", str(port)]
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/api/version", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"ui not ready in {READY_TIMEOUT_S}s"
            time.sleep(0.5)
        yield Service(proc, base, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)


def test_the_replay_left_one_snapshot_per_partition_and_kind(replay: Replay) -> None:
    params, st = replay.params, replay.st
    # then the timeline knows a drift and a performance snapshot of every replayed week
    found = timeline.snapshots(params, st)
    assert sorted(found) == sorted((p, k) for p in REPLAYED for k in timeline.KINDS)
    files = list((timeline.folder(st) / str(timeline.project_id(params)) / "snapshots").iterdir())
    assert sorted(f.stem for f in files) == sorted(found.values())
    # and each links to its stage's own HTML report of that week
    from evidently.ui.storage.local.base import LocalState

    state = LocalState(str(timeline.folder(st)))
    pages = {"drift": st.reports_dir, "performance": st.performance_dir}
    for (pid, kind), sid in found.items():
        meta = state.read_snapshot(timeline.project_id(params), sid).metadata
        page = pages[kind] / pid / f"{kind}.html"
        assert meta["report"] == page.resolve().as_uri() and page.is_file()
        # and the report links back to the timeline, to its MLflow run and, after the
        # first week, to the report of the week replayed before it
        text = page.read_text()
        if kind == "drift":
            head = text[text.index('<section id="drift-summary"') : text.index("</section>")]
            assert f'<a href="{timeline.url(params)}"' in head
            assert f'<a href="{meta["mlflow_run"]}"' in head
            before = REPLAYED.index(pid) - 1
            previous = f'<a href="../{REPLAYED[before]}/drift.html"'
            assert (previous in head) is (before >= 0), (pid, head)
        else:
            assert timeline.url(params) in text
            assert f'MLflow run: <a href="{meta["mlflow_run"]}"' in text


def test_a_second_monitor_run_replaces_its_weeks_snapshot(replay: Replay) -> None:
    params, st = replay.params, replay.st
    before = timeline.snapshots(params, st)
    # when one week is monitored again
    week, out = REPLAYED[1], io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--params", str(replay.params_path), "monitor", "--partitions", week]) == 0
    after = timeline.snapshots(params, st)
    # and its output ends with where to look: the report, the MLflow run, the timeline
    last = out.getvalue().strip().splitlines()[-1]
    report = (st.reports_dir / REPLAYED[1] / "drift.html").resolve().as_uri()
    snap = timeline.url(params, after[(REPLAYED[1], "drift")])
    assert last.startswith(f"monitor: {week} report {report} | mlflow_run http://127.0.0.1:5000/")
    assert last.endswith(f" | timeline {snap}")
    # then its drift snapshot was replaced and nothing else changed
    assert after.keys() == before.keys()
    assert after[(REPLAYED[1], "drift")] != before[(REPLAYED[1], "drift")]
    assert {k: v for k, v in after.items() if k != (REPLAYED[1], "drift")} == {
        k: v for k, v in before.items() if k != (REPLAYED[1], "drift")
    }


def test_the_ui_answers_on_loopback_with_the_project_and_its_snapshots(
    replay: Replay, service: Service
) -> None:
    params = replay.params
    pid = str(timeline.project_id(params))
    # the project is listed under the model's name
    projects = httpx.get(f"{service.base}/api/projects", timeout=10).json()
    assert [(p["id"], p["name"]) for p in projects] == [
        (pid, f"{params.project} / {params.model_name}")
    ]
    # with one snapshot per replayed week and kind, dated at the week's start
    snaps = httpx.get(f"{service.base}/api/projects/{pid}/snapshots", timeout=10).json()
    seen = sorted((s["metadata"]["partition"], s["metadata"]["kind"]) for s in snaps)
    assert seen == sorted((p, k) for p in REPLAYED for k in timeline.KINDS)
    for s in snaps:
        start = partitions.sort_key(s["metadata"]["partition"]).replace(tzinfo=None)
        assert s["timestamp"].startswith(start.isoformat())
    # and the log line names the timeline page
    assert timeline.url(params, port=int(service.base.rsplit(":", 1)[1])) in service.log.read_text()


def panel_data(service: Service, pid: str, panel: dict[str, Any]) -> dict[str, Any]:
    """The panel's series, asked for as its page asks: one filter per line."""
    keys = ("tags", "metadata", "metric", "metric_labels")
    body = {"series_filter": [{k: v[k] for k in keys} for v in panel["values"]]}
    got = httpx.post(
        f"{service.base}/api/v2/snapshots/{pid}/data_series_batch", json=body, timeout=30
    )
    assert got.status_code in (200, 201), got.text
    return dict(got.json())


def test_every_dashboard_panel_resolves_to_a_point_per_week(
    replay: Replay, service: Service
) -> None:
    pid = str(timeline.project_id(replay.params))
    board = httpx.get(f"{service.base}/api/v2/dashboards/{pid}", timeout=10).json()
    titles = [p["title"] for p in board["panels"]]
    assert titles == [p.title for p in timeline.panels(replay.params)]
    found = {}
    for panel in board["panels"]:
        # when the UI asks for the panel's data
        data = found[panel["title"]] = panel_data(service, pid, panel)
        # then every line of it has a number for every replayed week, in time order
        weeks = [s["metadata"]["partition"] for s in data["sources"]]
        assert weeks == REPLAYED, panel["title"]
        assert len(data["series"]) == len(panel["values"]), panel["title"]
        for series in data["series"]:
            assert all(isinstance(v, float) for v in series["values"]), (panel["title"], series)
    # and the drift share plotted is the one monitor decided on, week by week
    (share,) = found["Share of drifted features"]["series"]
    decided = [
        json.loads((replay.st.reports_dir / w / "drift.json").read_text())["share"]
        for w in REPLAYED
    ]
    assert share["values"] == pytest.approx(decided)


def watch(page: Any) -> list[str]:
    """Collect the page's console errors, uncaught exceptions and requests off this host."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def request(r: Any) -> None:
        if not r.url.startswith(("http://127.0.0.1:", "file://", "data:", "blob:")):
            errors.append(f"request off this host: {r.url}")

    page.on("request", request)
    return errors


def screenshot(page: Any, url: str, out: Path, wait_for: str) -> list[str]:
    """Open ``url``, wait for ``wait_for`` to show, save a PNG; return the console's errors."""
    errors = watch(page)
    page.goto(url, wait_until="networkidle", timeout=60_000)
    page.wait_for_selector(wait_for, timeout=60_000)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(out), full_page=True)
    return errors


def png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG), path
    assert len(data) > MIN_PNG_BYTES, (path, len(data))
    return data


def test_chromium_opens_the_timeline_and_a_weeks_drift_report(
    replay: Replay, service: Service, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    params, st = replay.params, replay.st
    port = int(service.base.rsplit(":", 1)[1])
    board, report = tmp_path / "timeline.png", tmp_path / "drift-report.png"
    week = REPLAYED[-1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # when the timeline page is opened: its charts draw a point per week and line
            errors = screenshot(page, timeline.url(params, port=port), board, "svg circle")
            points = page.locator("svg circle").count()
            lines = sum(len(p.lines) for p in timeline.panels(params))
            assert points >= lines * len(REPLAYED), points
            assert page.get_by_text("Share of drifted features").count() == 1
            assert errors == []
            # when one week's drift report is opened from its file
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            html = st.reports_dir / week / "drift.html"
            errors = screenshot_at(page, html.as_uri(), report, "Drift in column 'temp'")
            assert page.locator("svg").count() > len(params.contract.features)
            assert page.get_by_role("link", name="Timeline").get_attribute("href") == (
                timeline.url(params)
            )
            assert errors == []
        finally:
            browser.close()
    # then both screenshots are real pictures
    png(board), png(report)
    if os.environ.get("MLOPS_DOCS_SCREENSHOTS") == "1":
        docs = REPO / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copy(board, docs / "timeline.png")


def screenshot_at(page: Any, url: str, out: Path, heading: str) -> list[str]:
    """Open a long report page once ``heading`` is drawn, save its top screen (the links).

    Returns the console's errors.
    """
    errors = watch(page)
    page.goto(url, wait_until="load", timeout=60_000)
    page.get_by_text(heading, exact=True).wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(out), full_page=False)
    return errors


def test_the_ui_stops_cleanly_on_sigterm(service: Service) -> None:
    # when the operator stops it
    service.proc.send_signal(signal.SIGTERM)
    code = service.proc.wait(timeout=STOP_TIMEOUT_S)
    # then it says so, exits 0, and nothing listens on its port any more
    assert code == 0, service.log.read_text()
    assert service.log.read_text().rstrip().endswith("ui: stopped")
    port = int(service.base.rsplit(":", 1)[1])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.base}/api/version", timeout=5)
    ui._check_free("127.0.0.1", port)
