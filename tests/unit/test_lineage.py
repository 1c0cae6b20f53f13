"""lineage: data versions told apart, and the lineage as text."""

from __future__ import annotations

import pytest

from mlops import lineage, partitions


@pytest.mark.parametrize(
    ("text", "partition", "md5"),
    [
        ("2013-01", True, False),
        ("2013-W05", True, False),
        ("2013-01-05", True, False),
        ("4396c36e8000f9e172f7d14ffac78bcb", False, True),
        ("data/predictions/x.parquet", False, False),
    ],
)
def test_data_versions_are_told_apart_from_paths(text, partition, md5) -> None:
    assert partitions.is_id(text) is partition
    assert bool(lineage.HEX32.match(text)) is md5


def test_forward_lineage_text_lists_models_and_predictions() -> None:
    lin = {
        "kind": "forward",
        "start": "2013-W02",
        "partitions": ["2013-W02"],
        "current_md5": {"2013-W02": "abc"},
        "versions": {
            "2013-W02": [
                {"md5": "old", "at": "2013-02-01", "until": "2013-03-01"},
                {"md5": "abc", "at": "2013-03-01"},
            ]
        },
        "runs": [{"run_id": "r1", "candidate": "hgb", "selected": True}],
        "unfinished_runs": [
            {"run_id": "r2", "candidate": "narrow", "status": "FAILED", "failed": True},
            {"run_id": "r3", "candidate": "xgb", "status": "RUNNING", "failed": False},
        ],
        "models": [
            {"name": "m", "version": "1", "aliases": ["champion"], "md5": {"2013-W02": "abc"}}
        ],
        "predictions": [{"path": "p.parquet", "model_name": "m", "model_version": "1", "rows": 10}],
        "scored_partition_predictions": [],
        "archived_predictions": [
            {
                "path": "a/v1/old.parquet",
                "model_name": "m",
                "model_version": "1",
                "input_md5": "old",
                "rows": 9,
            }
        ],
    }
    text = lineage.format_text(lin)
    assert "m v1 @champion trained on 2013-W02 abc" in text
    assert "p.parquet (m v1, 10 rows)" in text
    assert "earlier version old ingested 2013-02-01, replaced 2013-03-01" in text
    # only the finished run counts as a training run
    assert "training runs (1):\n    r1 hgb (selected)\n" in text
    # and a candidate that failed, or a run left RUNNING by a kill, is listed apart
    assert "not counted (2):" in text
    assert "r2 narrow (failed: no model)" in text and "r3 xgb (RUNNING: interrupted?)" in text
    # and every archived prediction version is listed with its model and input version
    assert "a/v1/old.parquet (m v1, input md5 old, 9 rows)" in text
