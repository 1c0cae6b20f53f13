"""The MLflow tracking server of the production profile: PostgreSQL, served artifacts,
basic auth. Started with the same script docker-compose.yml runs."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

from mlops import audit
from mlops.production import ensure_user, grant_approver
from mlops.registry import CHAMPION, RegistryError, connect
from tests.production.conftest import free_port, start, stop, wait_http

REPO = Path(__file__).resolve().parents[2]
MODEL = "flight_delay"


@pytest.fixture
def mlflow_server(tmp_path, pg_database, monkeypatch):
    port = free_port()
    admin = secrets.token_urlsafe(12)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": pg_database("mlflow"),
        "MLFLOW_AUTH_DATABASE_URI": pg_database("mlflow_auth"),
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_ADMIN_PASSWORD": admin,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(16),
        "MLFLOW_PORT": str(port),
    }
    log = tmp_path / "mlflow.log"
    proc = start([str(REPO / "deploy/mlflow-server.sh")], env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 180, proc, log)
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri, admin
    finally:
        stop(proc)


def _as(monkeypatch, user: str, password: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    monkeypatch.setenv("MLOPS_ACTOR", user)


def test_only_an_approver_can_move_champion(mlflow_server, project, monkeypatch):
    from mlflow import MlflowClient

    from mlops.config import settings

    uri, admin = mlflow_server
    params_path = project()
    st = settings(params_path)
    pw = {u: secrets.token_urlsafe(10) for u in ("pipeline", "viewer", "approver")}
    for user, password in pw.items():
        ensure_user(admin, user, password)
    # given the pipeline account registered two versions (its runs, its model)
    _as(monkeypatch, "pipeline", pw["pipeline"])
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("flight_delay")
    client.create_registered_model(MODEL)
    versions = []
    for _ in range(2):
        run = client.create_run(exp)
        client.log_text(run.info.run_id, "model placeholder", "model/MLmodel")
        versions.append(
            client.create_model_version(
                MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id
            ).version
        )
    audit.move_champion(settings(params_path), MODEL, versions[0], "first model")
    grant_approver(admin, "approver", MODEL)

    # when a user with read access only tries to move champion, it is refused
    _as(monkeypatch, "viewer", pw["viewer"])
    with pytest.raises((RegistryError, Exception)) as err:
        audit.move_champion(settings(params_path), MODEL, versions[1], "viewer tries")
    assert "PERMISSION_DENIED" in str(err.value) or "403" in str(err.value)
    assert connect(st).version_by_alias(MODEL, CHAMPION).version == versions[0]

    # when the approver moves it, it moves and the history says who
    _as(monkeypatch, "approver", pw["approver"])
    # (settings() reads who acts, MLOPS_ACTOR, so they are resolved as that user)
    st = settings(params_path)
    audit.move_champion(st, MODEL, versions[1], "approved after review")
    assert connect(st).version_by_alias(MODEL, CHAMPION).version == versions[1]
    latest = audit.history(st, MODEL)[0]
    assert latest["actor"] == "approver"
    assert latest["to_version"] == str(versions[1])

    # and a wrong password is refused outright
    _as(monkeypatch, "approver", "wrong")
    with pytest.raises(Exception, match="401|Unauthorized|credentials"):
        MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(MODEL)
