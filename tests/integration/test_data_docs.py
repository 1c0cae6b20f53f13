"""Data Docs built by the real validate stage open without a network.

One small project validates three weeks of January through the CLI, one run per week,
so the Data Docs index holds a row per week. Headless Chromium opens the index from disk
(``file://``) and from a static server on a loopback port, with every request off this
machine aborted and recorded: the validation table shows its rows, the tabs switch
(Bootstrap's script), a week's result page draws with the site's own Bootstrap, and no
request off this machine was attempted. With ``MLOPS_DOCS_SCREENSHOTS=1`` the index is
also saved as the README's ``docs/data-docs.png``.

Then pruning, on a copy of the project: a registered version trained on two of the
weeks keeps their results, and the third goes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mlops import gx_context, provenance, tags
from mlops.cli import main
from mlops.config import load_params, settings
from mlops.registry import connect
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, make_project

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WEEKS = ["2013-W02", "2013-W03", "2013-W04"]
TIMEOUT_MS = 30_000
MIN_PNG_BYTES = 20_000
PNG = b"\x89PNG\r\n\x1a\n"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def params_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose weeks were ingested together and validated one run each."""
    path = make_project(tmp_path_factory.mktemp("docs") / "proj", FLIGHTS, FLIGHTS_SMALL)
    assert main(["--params", str(path), "ingest", "--partitions", *WEEKS]) == 0
    for week in WEEKS:
        assert main(["--params", str(path), "validate", "--partitions", week]) == 0
    return path


@pytest.fixture(scope="module")
def site(params_path: Path) -> Path:
    return settings(params_path).gx_root / gx_context.SITE_DIR


class Server(ThreadingHTTPServer):
    """A plain static file server on a loopback port."""

    def __init__(self, root: Path) -> None:
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))


@pytest.fixture
def served(site: Path) -> Iterator[str]:
    server = Server(site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            yield b
        finally:
            b.close()


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("file", "data", "blob", "about") or parts.hostname in LOCAL_HOSTS


class Watched:
    """A page whose requests off this machine are aborted; what it tried is recorded."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.off_host: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("response", lambda r: self.failed.append(r.url) if r.status >= 400 else None)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if is_local(url):
            route.continue_()
        else:
            self.off_host.append(url)
            route.abort()

    def open(self, url: str) -> Any:
        self.page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
        self.page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
        return self.page


def validation_rows(page: Any) -> Any:
    return page.locator("#Validation-Results table tbody tr")


def run_names(page: Any) -> list[str]:
    rows = validation_rows(page)
    return [rows.nth(i).locator("td").nth(2).inner_text().strip() for i in range(rows.count())]


def assert_bootstrap_applied(page: Any) -> None:
    """The site's own Bootstrap stylesheet (its spacing classes) and script are in use."""
    sheets = page.evaluate("[...document.styleSheets].filter(s => s.href).map(s => s.href)")
    assert len(sheets) == 1 and sheets[0].endswith("/static/vendor/bootstrap.min.css"), sheets
    padding = "getComputedStyle(document.querySelector('.container-fluid.pl-5')).paddingLeft"
    assert page.evaluate(padding) == "48px"  # Bootstrap's pl-5: 3rem
    assert page.evaluate("typeof jQuery === 'function' && typeof jQuery.fn.modal === 'function'")


def png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG), path
    assert len(data) > MIN_PNG_BYTES, (path, len(data))


def test_the_index_shows_a_row_per_week_from_disk_and_asks_nothing_off_host(
    site: Path, browser: Any, tmp_path: Path
) -> None:
    # given the index built by validate, opened from disk with the network cut off
    watched = Watched(browser)
    page = watched.open((site / "index.html").as_uri())

    # then the validation table shows a row per week, newest first, each visible
    validation_rows(page).first.wait_for(timeout=TIMEOUT_MS)
    assert run_names(page) == WEEKS[::-1]
    rows = validation_rows(page)
    assert all(rows.nth(i).is_visible() for i in range(rows.count()))
    assert all(rows.nth(i).locator(".fa-check-circle").count() == 1 for i in range(rows.count()))
    # and no filter buttons are left over from the table script that is not loaded
    assert page.get_by_text("Clear Filters").count() == 0
    # and the page's styles and scripts are the site's own
    assert_bootstrap_applied(page)
    shot = tmp_path / "data-docs.png"
    page.screenshot(path=str(shot), full_page=True)
    # when the suites tab is chosen, Bootstrap's script switches to it
    suites = page.locator("#Expectation-Suites table tbody tr")
    assert not suites.first.is_visible()
    page.get_by_role("tab", name="Expectation Suites").click()
    suites.first.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert suites.first.inner_text().strip() == "flights_contract"
    assert not validation_rows(page).first.is_visible()

    # then nothing off this machine was even asked for, and nothing failed
    assert watched.off_host == []
    assert [u for u in watched.requests if not is_local(u)] == []
    assert watched.errors == []
    png(shot)
    if os.environ.get("MLOPS_DOCS_SCREENSHOTS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(shot, REPO / "docs" / "data-docs.png")


def test_a_weeks_link_opens_its_result_page_drawn_offline(
    params_path: Path, site: Path, browser: Any
) -> None:
    # given the index from disk, with the network cut off
    watched = Watched(browser)
    page = watched.open((site / "index.html").as_uri())
    week = WEEKS[1]

    # when the week's row is followed
    page.get_by_role("link", name=week, exact=True).click()
    page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)

    # then it is the page validate recorded for the week, drawn with the site's Bootstrap
    summary = json.loads(
        (settings(params_path).state_dir / "validation" / f"{week}.json").read_text()
    )
    assert page.url == Path(summary["data_docs_page"]).as_uri()
    page.get_by_text("Evaluated Expectations").wait_for(timeout=TIMEOUT_MS)
    assert page.get_by_role("link", name="Home").is_visible()
    assert_bootstrap_applied(page)
    icon = page.locator(".fa-check-circle").first
    assert icon.evaluate("e => getComputedStyle(e, '::before').content") == '"\u2714"'
    assert watched.off_host == [] and watched.errors == []
    # and every image and stylesheet it asked for exists beside it (no broken relative path)
    asked = [u for u in watched.requests if u.startswith("file:")]
    assert all(Path(urlsplit(u).path).is_file() for u in asked), asked


def test_a_static_server_serves_the_site_with_every_request_to_itself(
    served: str, browser: Any
) -> None:
    # given the site folder served as it is by a plain static server
    watched = Watched(browser)

    # when the index is opened from it
    page = watched.open(f"{served}/index.html")

    # then the rows show, every request went to that server, and none failed
    validation_rows(page).first.wait_for(timeout=TIMEOUT_MS)
    assert run_names(page) == WEEKS[::-1]
    assert_bootstrap_applied(page)
    assert watched.requests and all(u.startswith(served) for u in watched.requests)
    assert watched.failed == [] and watched.off_host == [] and watched.errors == []


def test_a_registered_version_keeps_the_results_of_its_training_weeks(
    params_path: Path, tmp_path: Path
) -> None:
    # given a copy of the project (so its absolute paths on record are stale) ...
    root = shutil.copytree(params_path.parent, tmp_path / "moved")
    params, st = load_params(root / "params.yaml"), settings(root / "params.yaml")
    results = st.gx_root / "uncommitted" / "validations"
    pages = st.gx_root / gx_context.SITE_DIR / "validations"
    stored = {p.relative_to(results).parts[1]: p for p in results.rglob("*.json")}
    assert sorted(stored) == WEEKS
    # ... with no registry yet: nothing is needed, and none is created by asking
    assert gx_context.needed_validations(st, params.model_name) == set()
    assert not (root / "mlflow.db").exists()

    # and a registered version trained on the first two weeks as ingested
    trained = WEEKS[:2]
    md5 = {pid: provenance.current(st, pid) for pid in trained}
    reg = connect(st)
    c = reg.client
    c.create_registered_model(params.model_name)
    run = c.create_run(reg.experiment_id(params.model_name)).info.run_id
    source = f"runs:/{run}/model"
    c.create_model_version(
        params.model_name,
        source,
        run_id=run,
        tags={tags.DATA_PARTITIONS: ",".join(trained), tags.DATA_MD5: json.dumps(md5)},
    )
    # and one trained on another version of the third week than the one on record
    other = {WEEKS[2]: "0" * 32}
    c.create_model_version(
        params.model_name, source, run_id=run, tags={tags.DATA_MD5: json.dumps(other)}
    )

    # when the results are pruned to none but those needed
    needed = gx_context.needed_validations(st, params.model_name)
    removed = gx_context.prune_validations(st.gx_root, keep=0, needed=needed)

    # then the first two weeks' results and pages stay, the third's are gone
    assert removed == 1
    left = sorted(p.relative_to(results).parts[1] for p in results.rglob("*.json"))
    assert left == trained
    assert sorted(p.relative_to(pages).parts[1] for p in pages.rglob("*.html")) == trained
    assert not stored[WEEKS[2]].exists()
