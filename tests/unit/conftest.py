"""Fixtures of the unit tests: small slices of real months in a throwaway project."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlops import io, partitions
from mlops.config import load_params, settings

REPO = Path(__file__).resolve().parents[2]
ROWS = 800
ENV = (
    "MLOPS_PARAMS",
    "MLOPS_PROJECT_ROOT",
    "MLOPS_DATA_ROOT",
    "MLOPS_FEAST_REPO",
    "MLOPS_FEAST_ONLINE",
)


@pytest.fixture(scope="session")
def months() -> dict[str, pd.DataFrame]:
    """The first rows of 2013-01 and 2013-02, from the ingested partitions or the source."""
    pids = ["2013-01", "2013-02"]
    raw = REPO / "data" / "raw"
    if all(partitions.file(raw, p).is_file() for p in pids):
        parts = {p: pd.read_parquet(partitions.file(raw, p)) for p in pids}
    else:
        from mlops.ingest import split_partitions
        from mlops.source import load

        params = load_params(REPO / "params.yaml")
        df = load(params.source, REPO)
        ts = params.source.timestamp_column
        parts = split_partitions(df, params.contract, ts, "month", pids)
    return {p: d.head(ROWS).reset_index(drop=True) for p, d in parts.items()}


@pytest.fixture
def tmp_project(tmp_path, monkeypatch, months):
    """A project in tmp_path whose validated folder holds the two slices."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    for pid, df in months.items():
        io.write_parquet(partitions.file(tmp_path / "data" / "validated", pid), df)
    return load_params(tmp_path / "params.yaml"), settings(tmp_path / "params.yaml")
