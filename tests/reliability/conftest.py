"""One real project, trained once for the whole reliability suite, and helpers to inspect it.

Training on real data takes about a minute, so every reliability test shares one project
(session scope). Each test works on its own partition where it changes data, and checks
what it must not change by comparing snapshots taken before and after.

Weeks of 2013 and what they are for:
  W02-W04 train (W04 held out), W28 scored: the pipeline's normal state.
  W26  raw copy turned into a CSV source (ingest from CSV, DVC lock).
  W27  validated, not materialised: materialisation faults.
  W29  raw template for bad batches (damaged copies are validated, never this file).
  W30  raw template for the within-tolerance (warning) case.
  W31  never ingested: ingest killed half-way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mlops.cli import main
from mlops.config import Params, Settings, load_params, settings
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, REPO, make_project, merge

TRAIN = ["2013-W02", "2013-W03", "2013-W04"]
SCORED = "2013-W28"
CSV_WEEK = "2013-W26"
MATERIALIZE_WEEK = "2013-W27"
BAD_WEEK = "2013-W29"
WARN_WEEK = "2013-W30"
KILL_INGEST_WEEK = "2013-W31"
ORIGIN_TOLERANCE = 0.02


def overrides() -> dict[str, Any]:
    """FLIGHTS_SMALL, plus a category feature whose unseen values only warn up to 2%."""
    base = yaml.safe_load(FLIGHTS.read_text())
    features = [
        {**f, "unseen_category_tolerance": ORIGIN_TOLERANCE} if f["name"] == "origin" else f
        for f in base["contract"]["features"]
    ]
    return merge(FLIGHTS_SMALL, {"contract": {**base["contract"], "features": features}})


def digest(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


def digests(folder: Path, pattern: str = "*") -> dict[str, str]:
    return {
        p.name: hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob(pattern))
        if p.is_file()
    }


@dataclass
class Project:
    """The shared project: its params files, settings and before/after snapshots."""

    params_path: Path
    pristine: Path

    @property
    def root(self) -> Path:
        return self.params_path.parent

    @property
    def params(self) -> Params:
        return load_params(self.params_path)

    @property
    def st(self) -> Settings:
        """Settings as the environment says now (tests override it with monkeypatch)."""
        return settings(self.params_path)

    def file(self, name: str) -> Path:
        return self.root / name

    def cli(self, *args: str, params: str = "params.yaml") -> int:
        return main(["--params", str(self.root / params), *args])

    def champion(self) -> str | None:
        from mlops.registry import CHAMPION, connect

        return connect(self.st).alias_version(self.params.model_name, CHAMPION)

    def versions(self) -> dict[str, list[str]]:
        """Registered version -> its aliases."""
        from mlops.registry import connect

        c = connect(self.st).client
        aliases: dict[str, list[str]] = {}
        for alias, v in c.get_registered_model(self.params.model_name).aliases.items():
            aliases.setdefault(str(v), []).append(alias)
        return {
            str(mv.version): sorted(aliases.get(str(mv.version), []))
            for mv in c.search_model_versions(f"name='{self.params.model_name}'")
        }

    def snapshot(self) -> dict[str, Any]:
        """What a failure must never change: champion, predictions, online store, features."""
        st = self.st
        return {
            "champion": self.champion(),
            "predictions": digests(st.predictions_dir),
            "online": digest(st.data_root / "feast" / "online.db"),
            "features": digests(st.features_dir / self.params.materialize.project),
            "validated": digests(st.validated_dir),
        }

    def stage(
        self,
        *args: str,
        fault: str | None = None,
        env: dict[str, str] | None = None,
        params: str = "params.yaml",
        timeout: float = 600,
    ) -> subprocess.CompletedProcess:
        """Run ``python -m mlops`` in a child process (so it can be killed for real)."""
        full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        full.pop("MLOPS_FAULT", None)
        if fault:
            full["MLOPS_FAULT"] = fault
        return subprocess.run(
            [sys.executable, "-m", "mlops", "--params", str(self.root / params), *args],
            capture_output=True,
            text=True,
            env=full,
            cwd=REPO,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def proj(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The trained and scored project (about a minute, once per session)."""
    base = tmp_path_factory.mktemp("reliability")
    params_path = make_project(base / "proj", FLIGHTS, overrides())
    p = Project(params_path, base / "pristine")
    weeks = [*TRAIN, CSV_WEEK, MATERIALIZE_WEEK, SCORED, BAD_WEEK, WARN_WEEK]
    assert p.cli("ingest", "--partitions", *weeks) == 0
    assert p.cli("validate", "--partitions", *TRAIN, MATERIALIZE_WEEK, SCORED) == 0
    for verb in ("materialize", "train", "evaluate", "promote", "score"):
        assert p.cli(verb) == 0, verb
    st = p.st
    p.pristine.mkdir()
    for week in (CSV_WEEK, BAD_WEEK, WARN_WEEK):
        shutil.copy(st.raw_dir / f"{week}.parquet", p.pristine / f"{week}.parquet")
    return p


@contextmanager
def quiet_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[None]:
    """Set environment variables for the block only."""
    with monkeypatch.context() as m:
        for k, v in env.items():
            m.setenv(k, v)
        yield


def csv_params(proj: Project, source: Path) -> str:
    """A params file beside the project's that reads a CSV file of contract columns."""
    raw = yaml.safe_load(proj.params_path.read_text())
    raw["source"] = {
        "path": str(source.relative_to(proj.root)),
        "format": "csv",
        "timestamp_column": "event_ts",
    }
    name = f"params_{source.stem}.yaml"
    (proj.root / name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return name


def read_pristine(p: Project, week: str) -> pd.DataFrame:
    return pd.read_parquet(p.pristine / f"{week}.parquet")
