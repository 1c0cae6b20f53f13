"""Defaults shared by the DAG files (kept here so DAG files only wire tasks)."""

from __future__ import annotations

from datetime import timedelta

# Steps that talk to services (MLflow, Feast's stores, the DVC remote) retry with
# exponential back-off; steps that judge data fail at once.
SERVICE_RETRIES = {
    "retries": 3,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
}

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 0,
    "execution_timeout": timedelta(hours=2),
}

APPROVAL_TIMEOUT = timedelta(hours=72)
