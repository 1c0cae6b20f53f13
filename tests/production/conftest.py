"""Throwaway PostgreSQL databases and Redis db numbers on this machine's services."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
REDIS = ("127.0.0.1", 6379)


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pg_database() -> Iterator[callable]:
    """Factory of throwaway databases, dropped at teardown."""
    import psycopg2

    if not _reachable("127.0.0.1", 5432):
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (.ci/run starts it)")
    made: list[str] = []

    def make(prefix: str = "mlops_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
        conn.close()
        made.append(name)
        return f"{PG}/{name}"

    yield make
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    for name in made:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


# Redis dbs 11, 12 and 14 belong to single modules (materialize, celery, serve)
WORKER_DBS = (13, 15, 10, 9, 8, 7)


@pytest.fixture
def redis_db() -> Iterator[int]:
    """A Redis db number for this test, flushed before and after."""
    import redis

    if not _reachable(*REDIS):
        pytest.fail("Redis is not reachable on 127.0.0.1:6379 (.ci/run starts it)")
    # one db per pytest-xdist worker, none of them a db another module holds as its own
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    db = WORKER_DBS[worker % len(WORKER_DBS)]
    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=db)
    client.flushdb()
    yield db
    client.flushdb()


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a service in its own process group, output to ``log``."""
    fh = log.open("wb")
    return subprocess.Popen(
        cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    """Stop the whole process group (MLflow leaves children behind otherwise)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited early:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{log.read_text()[-3000:]}")
