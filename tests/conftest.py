"""Shared fixtures: throwaway projects (git + DVC + a local remote) on real data."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("FEAST_USAGE", "False")
os.environ.setdefault("GIT_AUTHOR_NAME", "mlops-tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@example.invalid")
os.environ.setdefault("GIT_COMMITTER_NAME", "mlops-tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@example.invalid")

REPO = Path(__file__).resolve().parents[1]
FLIGHTS = REPO / "params.yaml"
SEATTLE = REPO / "examples" / "seattle_weather" / "params.yaml"

# A few weeks of real flights: three weeks of January to train on (the last held out)
# and a week of July to score, which drifts with the season.
FLIGHTS_SMALL: dict[str, Any] = {
    "ingest": {"partition": "week", "push": True},
    "train": {
        "partitions": ["2013-W02", "2013-W03", "2013-W04"],
        "candidates": [
            {"name": "hgb", "kind": "sklearn_hist_gradient_boosting", "params": {"max_iter": 40}},
            {"name": "xgb", "kind": "xgboost", "params": {"n_estimators": 40, "max_depth": 4}},
        ],
    },
    "promote": {"floor": 0.55},
    "score": {"partitions": ["2013-W28"]},
    "monitor": {"max_rows": 5000},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# A drift policy for single weeks: a week's weather alone differs from the two-week
# reference by up to ~0.5 (normed Wasserstein), a cold snap by 2-3. W03 is calm against
# the model's W02-W03 reference; W04 (a cold snap) and July weeks drift.
FLIGHTS_WEEKLY = merge(
    FLIGHTS_SMALL,
    {
        "monitor": {
            "numerical_threshold": 0.6,
            "drift_share": 0.1,
            "breach_on_prediction_drift": False,
            "cooldown_hours": 24,
        },
    },
)


def make_project(root: Path, base: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A fresh project folder: git and DVC initialised, a local remote, params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    params = merge(yaml.safe_load(base.read_text()), overrides or {})
    if "labels" in params and "labels" not in (overrides or {}):
        # The demo replays its months without their outcomes; the test slices keep them,
        # unless a test asks for withholding (tests of late labels).
        params["labels"] = {**params["labels"], "withhold": False}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc = str(Path(os.sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "-q"], cwd=root, check=True)
    subprocess.run(
        [dvc, "remote", "add", "-q", "-d", "local", str(root / ".dvcstore")], cwd=root, check=True
    )
    if (REPO / "feature_repo").is_dir():
        shutil.copytree(
            REPO / "feature_repo",
            root / "feature_repo",
            ignore=shutil.ignore_patterns("data", "__pycache__"),
        )
    return root / "params.yaml"


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``project(base=FLIGHTS, overrides=...)`` returns the params.yaml path."""

    def factory(
        base: Path = FLIGHTS, overrides: dict[str, Any] | None = None, name: str = "proj"
    ) -> Path:
        return make_project(tmp_path / name, base, overrides)

    return factory
