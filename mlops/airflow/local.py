"""A local Airflow for this project: API server with the UI, scheduler, DAG processor, triggerer.

``python -m mlops.airflow.local`` (or ``make airflow``) is ``airflow standalone`` made
safe for a laptop: the API binds to 127.0.0.1 only, the metadata DB is SQLite in
``<repo>/airflow/`` (the Airflow home, git-ignored), tasks run with the LocalExecutor at
a parallelism of 4, new DAG files show up within 10 s, and the ``admin`` login gets a
random password that is printed along with the file it is kept in. The pools the DAGs
use are created before the scheduler starts. Ctrl-C stops every component.

The production profile on one host is the same command with Airflow's own settings in
the environment: ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` (PostgreSQL) and
``AIRFLOW__CORE__EXECUTOR=CeleryExecutor`` with ``AIRFLOW__CELERY__BROKER_URL`` (Redis;
default ``redis://127.0.0.1:6379/0``) start ``--workers`` Celery workers as well.

The same functions start the throwaway Airflow of the scheduler tests.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops.airflow.stack import REPO, AirflowStartError, start, wait_ready
from mlops.config import params_path
from mlops.io import read_json, redact, write_text

CELERY = "CeleryExecutor"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
# Imported by the packages every task loads; if these lack bytecode, so does the rest.
BYTECODE_SENTINELS = ("airflow", "mlflow", "feast", "great_expectations", "evidently")


def airflow_env(
    home: Path,
    params: Path,
    port: int = 8080,
    db_url: str | None = None,
    dags: Path = REPO / "dags",
    base: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment every component runs with.

    Args:
        home: AIRFLOW_HOME.
        params: The project's params.yaml, passed to tasks as ``MLOPS_PARAMS``.
        port: Port of the API server and UI on 127.0.0.1.
        db_url: Metadata DB URL (default: ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` from
            ``base``, else SQLite in ``home``).
        dags: The DAGs folder.
        base: Environment to start from (default: ``os.environ``).
        extra: Variables set last, for example ``AIRFLOW__CORE__EXECUTOR``.

    The executor is ``AIRFLOW__CORE__EXECUTOR`` from ``base`` or ``extra`` (default:
    LocalExecutor); the CeleryExecutor gets a Redis broker on this host unless
    ``AIRFLOW__CELERY__BROKER_URL`` is set.
    """
    home = home.resolve()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ if base is None else base)
    db_url = db_url or env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    executor = (extra or {}).get("AIRFLOW__CORE__EXECUTOR") or env.get(
        "AIRFLOW__CORE__EXECUTOR", "LocalExecutor"
    )
    if executor == CELERY:
        env.setdefault("AIRFLOW__CELERY__BROKER_URL", DEFAULT_BROKER)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags.resolve()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url or f"sqlite:///{home / 'airflow.db'}",
            # Bind locally; workers reach the execution API through the same address.
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            # A task whose scheduler died is given back at the next orphan check (300 s by
            # default): after a scheduler crash and restart, tasks resume within a minute.
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / PASSWORDS_FILE),
            "MLOPS_PARAMS": str(params.resolve()),
            "DVC_NO_ANALYTICS": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "FEAST_USAGE": "False",
        }
    )
    if "AIRFLOW_CONN_MLOPS_AIRFLOW_API" not in env:
        # The REST API credentials tasks write run notes with (mlops.airflow.notes).
        password, _ = seed_password(home)
        env["AIRFLOW_CONN_MLOPS_AIRFLOW_API"] = json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": port, "login": USER}
            | {"password": password}
        )
    env.update(extra or {})
    return env


def ensure_bytecode(paths: list[Path] | None = None, quiet: bool = False) -> None:
    """Compile our code, and the environment if it was installed without bytecode.

    Task processes import mlflow, feast, great_expectations and evidently; without
    ``.pyc`` files each import takes two to three times longer, in every task.
    """
    for p in paths or [REPO / "mlops", REPO / "dags"]:
        compileall.compile_dir(p, quiet=1, force=False)
    missing = []
    for name in BYTECODE_SENTINELS:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec and spec.origin and spec.origin.endswith("__init__.py"):
            pyc = Path(importlib.util.cache_from_source(spec.origin))
            if not pyc.is_file():
                missing.append(Path(spec.origin).parent)
    if missing:
        if not quiet:
            print(
                f"compiling bytecode for {', '.join(p.name for p in missing)} (once; "
                "a minute or two)...",
                flush=True,
            )
        for p in missing:
            compileall.compile_dir(p, quiet=1, workers=0)


def _init_metadata() -> None:
    """In a child process with the Airflow environment: config file, DB, pools."""
    from airflow.configuration import write_default_airflow_configuration_if_needed

    # One process writes airflow.cfg (with its JWT secret) before the components start,
    # so that they all sign and check tokens with the same secret.
    write_default_airflow_configuration_if_needed()
    from airflow.models.pool import Pool
    from airflow.utils.db import initdb

    from mlops.airflow.defaults import POOLS

    initdb()
    for name, (slots, description) in POOLS.items():
        Pool.create_or_update_pool(name, slots, description, include_deferred=False)


def init_metadata(env: Mapping[str, str], timeout: float = 300) -> None:
    """Create or migrate the metadata DB and the DAGs' pools (in a child process)."""
    code = "from mlops.airflow.local import _init_metadata; _init_metadata()"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise AirflowStartError(
            f"metadata DB {env.get('AIRFLOW__DATABASE__SQL_ALCHEMY_CONN')}: migration "
            f"failed:\n{(out.stderr or out.stdout)[-3000:]}"
        )


def seed_password(home: Path, user: str = USER) -> tuple[str, Path]:
    """Return the user's password, generating a random one into the passwords file.

    Airflow's simple auth manager re-reads this file at every login, so editing it
    changes the password.
    """
    path = home / PASSWORDS_FILE
    passwords: dict[str, str] = {}
    if path.is_file() and path.read_text().strip():
        passwords = read_json(path, fix="Delete it: a new admin password is generated.")
    if not passwords.get(user):
        passwords[user] = secrets.token_urlsafe(12)
        # 0600 from before the first byte: the password is never readable by others
        write_text(path, json.dumps(passwords) + "\n", mode=0o600)
    return passwords[user], path


def main(argv: list[str] | None = None) -> int:
    """Start the local Airflow and keep it running until Ctrl-C; return the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m mlops.airflow.local",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    ap.add_argument(
        "--home", type=Path, default=REPO / "airflow", help="AIRFLOW_HOME (default: <repo>/airflow)"
    )
    ap.add_argument(
        "--params",
        type=Path,
        default=params_path(),
        help="the project's params.yaml (default: MLOPS_PARAMS or <repo>/params.yaml)",
    )
    ap.add_argument("--port", type=int, default=8080, help="API server and UI port (8080)")
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="Celery workers to start when AIRFLOW__CORE__EXECUTOR=CeleryExecutor (2)",
    )
    args = ap.parse_args(argv)
    if not args.params.is_file():
        print(f"{args.params}: params file not found", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    ensure_bytecode()
    home = args.home.resolve()
    env = airflow_env(home, args.params, args.port)
    print(f"airflow: home {home}, DAGs {REPO / 'dags'}, params {args.params.resolve()}", flush=True)
    celery = env["AIRFLOW__CORE__EXECUTOR"] == CELERY
    print(
        f"airflow: {env['AIRFLOW__CORE__EXECUTOR']}"
        + (
            f" with {args.workers} worker(s), broker {redact(env['AIRFLOW__CELERY__BROKER_URL'])}"
            if celery
            else ""
        )
        + f", metadata DB {redact(env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN'])}",
        flush=True,
    )
    init_metadata(env)
    password, pw_file = seed_password(home)
    stack = start(env, workers=args.workers if celery else 0)

    def _stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        wait_ready(stack)
        print(
            f"\nAirflow is up in {time.perf_counter() - t0:.0f}s: {stack.url}\n"
            f"  login:     {USER} / {password}\n"
            f"  password:  kept in {pw_file} (read at every login; edit it to change)\n"
            f"  logs:      {home / 'logs' / 'components'}/<component>.log\n"
            "  next:      unpause 'training' (it trains the first champion), then 'scoring'\n"
            "             to replay 2013 month by month. Ctrl-C stops Airflow.\n",
            flush=True,
        )
        while not stack.dead():
            time.sleep(2.0)
        name, code = next(iter(stack.dead().items()))
        print(
            f"airflow {name} exited with code {code}; end of its log:\n{stack.tail(name)}",
            file=sys.stderr,
        )
        return 1
    except AirflowStartError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping Airflow...", flush=True)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
