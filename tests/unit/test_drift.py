"""drift: the verdict at the top of the report page, and the shared Evidently script."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops import drift
from mlops.config import Monitor, load_params

REPO = Path(__file__).resolve().parents[2]


def evidently_script() -> Path:
    from evidently.legacy.utils.dashboard import STATIC_PATH

    return Path(STATIC_PATH) / "index.js"


@pytest.fixture(scope="module")
def page(months: dict[str, pd.DataFrame]) -> str:
    """A real Evidently page: January's first rows against February's, features only."""
    params = load_params(REPO / "params.yaml")
    _, snapshot = drift.evaluate(
        months["2013-01"], months["2013-02"], params.contract, params.monitor, None
    )
    return str(snapshot.get_html_str(as_iframe=False))


def summary(**over: Any) -> dict[str, Any]:
    columns = {
        "temp": {"kind": "numerical", "method": "wasserstein", "value": 1.5, "drifted": True},
        "dewp": {"kind": "numerical", "method": "wasserstein", "value": 0.05, "drifted": False},
        "carrier": {
            "kind": "categorical",
            "method": "jensenshannon",
            "value": 0.2,
            "drifted": True,
        },
    }
    base = {
        "columns": columns,
        "drifted_features": 2,
        "n_features": 3,
        "share": 2 / 3,
        "prediction_drift": None,
        "target_drift": None,
        "performance": None,
        "rows": {
            "reference": 50_000,
            "current": 195_482,
            "sampled": True,
            "max_rows": 100_000,
            "holdout": None,
        },
    }
    return {**base, **over}


def section(html: str) -> str:
    return html[: html.index("</section>")]


# --------------------------------------------------------------------------- summary_html
def test_the_summary_says_title_verdict_rows_methods_and_links() -> None:
    cfg = Monitor(numerical_method="ks", numerical_threshold=0.05)
    # when the summary of a sampled breach is rendered
    html = drift.summary_html(
        "Drift of flights v3 on 2013-07",
        True,
        ["2 of 3 features drifted (67%) >= 30%: breach"],
        summary(),  # type: ignore[arg-type]
        cfg,
        {
            "Previous report (2013-06)": "../2013-06/drift.html",
            "Timeline": "http://127.0.0.1:8001/p",
        },
    )
    # then it names what was compared and how, and decides in words
    assert html.startswith('<section id="drift-summary"') and html.endswith("</section>")
    assert "Drift of flights v3 on 2013-07: " in html and ">BREACH</span>" in html
    assert "<li" in html and "2 of 3 features drifted (67%) &gt;= 30%: breach</li>" in html
    assert "100,000 of 195,482 current rows compared (a seeded sample)" in html
    assert "reference: 50,000 of the model's training rows" in html
    assert "numerical (2) ks, threshold 0.05" in html
    assert "categorical (1) jensenshannon, threshold 0.1" in html
    assert "<b>Drifted:</b> temp 1.5, carrier 0.2</div>" in html
    # and links to the previous report relatively, to the timeline absolutely
    assert '<a href="../2013-06/drift.html" title="../2013-06/drift.html">' in html
    assert ">Previous report (2013-06)</a> &middot; <a" in html


def test_everything_shown_is_escaped() -> None:
    evil = '<img src=x onerror="alert(1)">&'
    html = drift.summary_html(
        f"Drift of {evil}",
        False,
        [f"verdict {evil}"],
        summary(columns={evil: {"kind": "numerical", "value": 1, "drifted": True}}),  # type: ignore[arg-type]
        Monitor(),
        {evil: f'javascript:"{evil}'},
        holdout=evil,
    )
    # then no tag or attribute of the text survives: only the summary's own markup
    assert "<img" not in html and 'onerror="' not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in html
    assert 'href="javascript:&quot;&lt;img' in html
    assert ">no breach</span>" in html


def test_performance_names_its_holdout_and_waits_for_outcomes() -> None:
    target = {"column": "is_delayed", "method": "jensenshannon", "value": 0.06, "drifted": False}
    perf = {"roc_auc": {"current": 0.714, "reference": 0.746}}
    rows = {**summary()["rows"], "holdout": 27_075}
    cfg = Monitor()
    # when every outcome is known and the holdout was read
    known = drift.summary_html(
        "t",
        False,
        [],
        summary(target_drift=target, performance=perf, rows=rows),
        cfg,
        {},
        "2013-06",  # type: ignore[arg-type]
    )
    # then the performance is shown against the holdout rows, named
    assert "roc_auc 0.714 (holdout 0.746)" in known
    assert "reference: the 27,075 holdout rows of 2013-06 the version was evaluated on" in known
    assert "<b>Target</b> is_delayed did not drift (jensenshannon 0.06)" in known
    # when outcomes are still missing, then it says performance waits for them
    waiting = drift.summary_html("t", False, [], summary(target_drift=target), cfg, {})  # type: ignore[arg-type]
    assert "measured once every outcome of the rows is known" in waiting
    assert "<nav" not in waiting


# --------------------------------------------------------------------------- share_library
def test_the_script_is_shared_once_and_referenced_relatively(page: str, tmp_path: Path) -> None:
    shared_dir = tmp_path / "reports"
    script = evidently_script()
    # when a month's page and a served page are made to share the script
    month = drift.share_library(page, shared_dir / "2013-07" / "drift.html", shared_dir)
    (shared,) = shared_dir.glob("evidently-*.js")
    stat = shared.stat()
    served = drift.share_library(page, shared_dir / "served" / "2013-07" / "drift.html", shared_dir)
    # then each loads the one copy, from its own folder, and holds no inline copy
    assert f'<script src="../{shared.name}"></script>' in month
    assert f'<script src="../../{shared.name}"></script>' in served
    assert shared.read_bytes() == script.read_bytes()
    assert len(page) - len(month) > 0.95 * script.stat().st_size
    # and nothing else of the page changed
    inline = f"<script>{script.read_text(encoding='utf-8')}</script>"
    assert month.replace(f'<script src="../{shared.name}"></script>', inline) == page
    # and the copy was written once: the second page left the file as it was
    after = shared.stat()
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert not [p for p in shared_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_copy_is_replaced_and_a_foreign_page_kept_whole(
    page: str, tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    drift.share_library(page, folder / "2013-07" / "drift.html", folder)
    (shared,) = folder.glob("evidently-*.js")
    # given a copy cut short (by hand: writes are atomic)
    shared.write_bytes(shared.read_bytes()[:1000])
    # when the next report is written, then the copy is whole again
    drift.share_library(page, folder / "2013-08" / "drift.html", folder)
    assert shared.read_bytes() == evidently_script().read_bytes()
    # and a page that does not inline Evidently's script is returned unchanged
    other = page[:5000]
    assert drift.share_library(other, folder / "x" / "drift.html", folder) == other
    # and nothing but the shared copy was written
    assert os.listdir(folder) == [shared.name]
