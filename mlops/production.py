"""One-shot setup of the production profile's services (run by docker compose's init jobs).

``python -m mlops.production airflow-init``: migrate the Airflow metadata database and
write the admin login from ``AIRFLOW_ADMIN_PASSWORD``.

``python -m mlops.production mlflow-users``: create the pipeline's MLflow account from
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` using the admin account.

``python -m mlops.production dvc-init``: make the shared data folder (``MLOPS_DATA_ROOT``)
a DVC repository of its own whose default remote is ``MLOPS_DVC_REMOTE``.

``python -m mlops.production grant-approver USER``: let USER move the model's aliases.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from mlops.io import write_text


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"error: environment variable {name} must be set")
    return value


def airflow_init() -> None:
    """Migrate the metadata DB, seed the admin password, set up the shared data folder."""
    password = _need("AIRFLOW_ADMIN_PASSWORD")
    path = Path(_need("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"))
    subprocess.run(["airflow", "db", "migrate"], check=True)
    write_text(path, json.dumps({"admin": password}), mode=0o600)  # never readable by others
    print(f"airflow-init: database migrated, admin login in {path}")
    dvc_init()


def dvc_init() -> None:
    """Make ``MLOPS_DATA_ROOT`` a DVC repository pushing to ``MLOPS_DVC_REMOTE``."""
    from mlops.config import settings
    from mlops.versioning import ENV_REMOTE, init_shared

    st = settings()
    if not st.dvc_remote:
        raise SystemExit(f"error: environment variable {ENV_REMOTE} must be set")
    root = init_shared(st.data_root, st.dvc_remote)
    print(f"dvc-init: {root} is a DVC repository; default remote {st.dvc_remote}")


_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@contextlib.contextmanager
def _acting_as(user: str, password: str) -> Iterator[None]:
    """MLflow calls in the block authenticate as ``user``; the caller's login is restored."""
    saved = {k: os.environ.get(k) for k in _CREDENTIALS}
    os.environ.update(dict(zip(_CREDENTIALS, (user, password), strict=True)))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def auth_client():
    """An MLflow auth client acting as whoever the credential variables name."""
    from mlflow.server.auth.client import AuthServiceClient

    return AuthServiceClient(_need("MLFLOW_TRACKING_URI"))


def ensure_user(admin_password: str, user: str, password: str, admin: bool = False) -> None:
    """Create ``user`` if missing (idempotent), acting as the admin."""
    from mlflow.exceptions import MlflowException

    with _acting_as("admin", admin_password):
        client = auth_client()
        try:
            client.get_user(user)
        except MlflowException:
            client.create_user(user, password)
        if admin:
            client.update_user_admin(user, True)


def grant_approver(admin_password: str, user: str, model: str) -> None:
    """Let ``user`` approve and move aliases of ``model``, and record that in the audit.

    MANAGE on the registered model, EDIT on its audit experiment (created here, by the
    admin, when the pipeline has not created it yet).
    """
    from mlflow import MlflowClient

    pipeline = os.environ.get("MLFLOW_TRACKING_USERNAME")
    with _acting_as("admin", admin_password):
        client = auth_client()
        client.grant_user_permission(user, "registered_model", model, "MANAGE")
        tracking = MlflowClient(_need("MLFLOW_TRACKING_URI"))
        exp = tracking.get_experiment_by_name(f"audit/{model}")
        exp_id = exp.experiment_id if exp else tracking.create_experiment(f"audit/{model}")
        for who in {user, pipeline} - {None, "admin"}:
            if exp is None or who == user:
                client.grant_user_permission(str(who), "experiment", str(exp_id), "EDIT")


def main(argv: list[str]) -> int:
    """Run one set-up command; return the exit code."""
    if not argv:
        print(__doc__)
        return 2
    cmd = argv[0]
    if cmd == "airflow-init":
        airflow_init()
    elif cmd == "mlflow-users":
        ensure_user(
            _need("MLFLOW_ADMIN_PASSWORD"),
            _need("MLFLOW_TRACKING_USERNAME"),
            _need("MLFLOW_TRACKING_PASSWORD"),
        )
        print("mlflow-users: pipeline account ready")
    elif cmd == "dvc-init":
        dvc_init()
    elif cmd == "grant-approver" and len(argv) == 2:
        from mlops.config import load_params

        grant_approver(_need("MLFLOW_ADMIN_PASSWORD"), argv[1], load_params().model_name)
        print(f"grant-approver: {argv[1]} may now approve and move aliases")
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
