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
        "runs": [
            {"run_id": "r1", "candidate": "hgb", "selected": True},
            {"run_id": "r2", "candidate": "narrow", "selected": False, "failed": True},
        ],
        "models": [
            {"name": "m", "version": "1", "aliases": ["champion"], "md5": {"2013-W02": "abc"}}
        ],
        "predictions": [{"path": "p.parquet", "model_name": "m", "model_version": "1", "rows": 10}],
        "scored_partition_predictions": [],
    }
    text = lineage.format_text(lin)
    assert "m v1 @champion trained on 2013-W02 abc" in text
    assert "p.parquet (m v1, 10 rows)" in text
    assert "r1 hgb (selected)" in text
    # and a candidate that failed to train is shown as such, not as a model's run
    assert "r2 narrow (failed: no model)" in text
