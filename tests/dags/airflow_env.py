"""A throwaway Airflow home for in-process tests, set up before anything imports airflow.

Airflow reads its configuration once, at the first ``import airflow``, so every test
module that needs Airflow calls ``configure()`` at import time, before its own Airflow
imports.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
_home: Path | None = None
_db_ready = False


def configure() -> Path:
    """Point Airflow at a temporary home with a SQLite DB and this repo's dags/."""
    global _home
    if _home is not None:
        return _home
    if "airflow" in sys.modules:
        raise RuntimeError(
            "airflow was imported before tests/dags/airflow_env.configure(); import this "
            "module first in every test module that uses Airflow"
        )
    home = Path(tempfile.mkdtemp(prefix="mlops-airflow-test-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    _home = home
    return home


def init_db() -> None:
    """Create the metadata DB once per session (about 1.5 s)."""
    global _db_ready
    configure()
    if not _db_ready:
        from airflow.utils.db import initdb

        initdb()
        _db_ready = True
