"""source: a missing or corrupt source file is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.config import load_params, settings
from mlops.source import SourceError, load


def test_missing_source_file_is_named(project, tmp_path: Path) -> None:
    params_path = project(overrides={"source": {"path": "nowhere/flights.csv"}})
    params = load_params(params_path)
    with pytest.raises(SourceError, match="nowhere/flights.csv: source file not found"):
        load(params.source, settings(params_path).root)


def test_corrupt_source_file_is_named(project) -> None:
    params_path = project(
        overrides={"source": {"path": "bad.parquet", "format": "parquet", "joins": []}}
    )
    root = settings(params_path).root
    (root / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match="bad.parquet: cannot read as parquet"):
        load(load_params(params_path).source, root)
