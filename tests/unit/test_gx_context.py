"""gx_context: the GX file context's housekeeping."""

from __future__ import annotations

import os

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
