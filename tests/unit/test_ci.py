"""The model check's sides never reach the project's services: their environment is pure."""

from __future__ import annotations

import os
from pathlib import Path

from mlops import ci


def test_a_side_runs_on_the_scratch_registry_and_a_local_online_store() -> None:
    base = {
        "PATH": "/usr/bin",
        "MLFLOW_TRACKING_URI": "postgresql://mlflow@db/mlflow",
        "MLOPS_FEAST_ONLINE": "redis://redis:6379/0",
        "MLOPS_PUSHGATEWAY_URL": "http://pushgateway:9091",
        "MLOPS_DVC_REMOTE": "s3://bucket/store",
        "MLFLOW_TRACKING_PASSWORD": os.urandom(8).hex(),
        "MLOPS_PARAMS": "/elsewhere/params.yaml",
    }
    env = ci.side_env(Path("/scratch"), None, base)
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////scratch/mlflow.db"
    assert env["MLOPS_FEAST_ONLINE"] == "sqlite"
    assert not set(ci.CLEARED) & set(env)
    assert env["PATH"] == "/usr/bin" and "PYTHONPATH" not in env
    # the caller's environment is left as it was
    assert base["MLOPS_FEAST_ONLINE"] == "redis://redis:6379/0"


def test_a_side_imports_its_own_revisions_code_first() -> None:
    env = ci.side_env(Path("/s"), Path("/s/head"), {"PYTHONPATH": "/opt/extra"})
    assert env["PYTHONPATH"] == os.pathsep.join(["/s/head", "/opt/extra"])


def test_the_checks_overrides_merge_sections_and_replace_lists() -> None:
    raw = {"train": {"partitions": ["a", "b", "c"], "seed": 1}, "project": "p"}
    over = {"train": {"partitions": ["a"]}, "monitor": {"max_rows": 10}}
    assert ci.merged(raw, over) == {
        "train": {"partitions": ["a"], "seed": 1},
        "project": "p",
        "monitor": {"max_rows": 10},
    }
    assert raw["train"]["partitions"] == ["a", "b", "c"]
