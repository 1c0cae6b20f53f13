"""gx_context: the GX file context's housekeeping."""

from __future__ import annotations

import os
import re

import yaml

from mlops import gx_context


def test_prune_keeps_the_newest_validation_results(tmp_path):
    # given 5 stored validation results with their docs pages, oldest first
    root = tmp_path / "uncommitted" / "validations" / "s"
    site = tmp_path / "uncommitted" / "data_docs" / "local_site" / "validations" / "s"
    for i in range(5):
        f = root / f"run{i}" / "b.json"
        f.parent.mkdir(parents=True)
        f.write_text("{}")
        os.utime(f, (1000 + i, 1000 + i))
        page = site / f"run{i}" / "b.html"
        page.parent.mkdir(parents=True)
        page.write_text("<html>")

    # when pruned to 2
    removed = gx_context.prune_validations(tmp_path, keep=2)

    # then only the two newest results and pages remain, without empty folders
    assert removed == 3
    assert sorted(p.name for p in root.iterdir()) == ["run3", "run4"]
    assert sorted(p.name for p in site.iterdir()) == ["run3", "run4"]


def stored_results(root, runs):
    """Stored results and their pages under GX root ``root``, oldest first."""
    results = root / "uncommitted" / "validations"
    site = root / gx_context.SITE_DIR / "validations"
    for i, run in enumerate(runs):
        f = results / "s" / run / "t" / "b.json"
        f.parent.mkdir(parents=True)
        f.write_text("{}")
        os.utime(f, (1000 + i, 1000 + i))
        page = site / "s" / run / "t" / "b.html"
        page.parent.mkdir(parents=True)
        page.write_text("<html>")
    return results, site


def test_prune_keeps_the_needed_results_however_old(tmp_path):
    # given 5 stored results, oldest first, of which the oldest two are needed
    results, site = stored_results(tmp_path, [f"run{i}" for i in range(5)])
    needed = {"s/run0/t/b", "s/run1/t/b"}

    # when pruned to 2 besides the needed ones
    removed = gx_context.prune_validations(tmp_path, keep=2, needed=lambda: needed)

    # then the needed and the two newest others remain, results and pages alike
    assert removed == 1
    assert sorted(p.name for p in (results / "s").iterdir()) == ["run0", "run1", "run3", "run4"]
    assert sorted(p.name for p in (site / "s").iterdir()) == ["run0", "run1", "run3", "run4"]


def test_prune_asks_what_is_needed_only_when_something_would_go(tmp_path):
    # given 3 stored results
    stored_results(tmp_path, ["a", "b", "c"])

    def needed():
        raise AssertionError("asked although nothing is deleted")

    # when pruned to as many, then nothing is asked, nothing deleted
    assert gx_context.prune_validations(tmp_path, keep=3, needed=needed) == 0


CDN_PAGE = """<html><head>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<link rel="stylesheet" href="https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css">
<style>.navbar-brand a { background: url('https://assets.example/full_logo_dark.png') 0 0; }</style>
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js"
  integrity="sha384-JjSmVgyd0p3pX" crossorigin="anonymous"></script>
<link rel="shortcut icon" href="../../../static/images/favicon.ico" type="image/x-icon"/>
</head><body>
<img class="NO-CACHE"
  src="https://assets.example/logo-long.png?d=20260101&dataContextId=x" alt="GX"/>
<img src="https://assets.example/tracker.gif"/>
<a href="https://greatexpectations.io">Great Expectations</a>
<script>$(".x").modal();</script>
</body></html>"""


def test_a_page_is_made_to_load_nothing_from_another_host():
    # given a GX page loading its libraries from CDNs, four folders below the site root
    # when made offline
    out = gx_context.offline_page(CDN_PAGE, "../../../../", {"logo-long.png", "favicon.ico"})

    # then jQuery and Bootstrap come from the site's copies, in GX's order, without the
    # CDN files' integrity pins (which the copies would not match)
    vendor = "../../../../static/vendor"
    assert f'<link rel="stylesheet" href="{vendor}/bootstrap.min.css"/>' in out
    assert out.index(f'src="{vendor}/jquery.min.js"') < out.index(
        f'src="{vendor}/bootstrap.min.js"'
    )
    assert "integrity" not in out and "crossorigin" not in out
    # and GX's own images come from the site, the favicon at the page's real depth
    assert 'src="../../../../static/images/logo-long.png"' in out
    assert 'href="../../../../static/images/favicon.ico"' in out
    # and nothing else remote is loaded: not the table script, vega, styles' urls, images
    assert "bootstrap-table" not in out and "vega" not in out and "tracker" not in out
    assert "background: none 0 0" in out
    # while links to follow and inline scripts stay, and icons are drawn as characters
    assert '<a href="https://greatexpectations.io">' in out
    assert '<script>$(".x").modal();</script>' in out
    assert out.count(gx_context.ICONS) == 1 and out.index(gx_context.ICONS) < out.index("</head>")
    assert [u for u in re.findall(r'(?:src|href)="([^"]*)"', out) if "//" in u] == [
        "https://greatexpectations.io"
    ]


def test_the_context_builds_its_docs_offline_and_saves_that_once(tmp_path):
    # given a new GX file context
    root = tmp_path / "great_expectations"
    gx_context.get_context(root)
    yml = root / "great_expectations.yml"
    site = yaml.safe_load(yml.read_text())["data_docs_sites"][gx_context.SITE]

    # then its site is built by the offline site builder, its store as GX made it
    assert {k: site[k] for k in gx_context.OFFLINE_SITE} == gx_context.OFFLINE_SITE
    assert site["store_backend"]["base_directory"] == f"{gx_context.SITE_DIR}/"
    # and GX finds the builder by that name
    assert gx_context.OfflineSiteBuilder.__name__ == site["class_name"]

    # when opened again, then the file is not rewritten
    before = yml.read_bytes(), yml.stat().st_mtime_ns
    gx_context.get_context(root)
    assert (yml.read_bytes(), yml.stat().st_mtime_ns) == before
