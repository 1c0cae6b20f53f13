"""docker-compose.yml, checked statically (no Docker engine runs here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LONG_RUNNING = [
    "postgres",
    "redis",
    "mlflow",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "serve",
]


def test_topology_has_every_component() -> None:
    assert set(LONG_RUNNING) | {"airflow-init", "mlflow-init"} == set(SERVICES)
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["MLOPS_FEAST_ONLINE"].startswith("redis://redis:6379")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # the data, the Feast registry and the DVC remote are on the volume every worker mounts
    assert env["MLOPS_DATA_ROOT"].startswith("/shared/")
    assert env["MLOPS_DVC_REMOTE"].startswith("/shared/")
    assert {"shared:/shared"} <= set(SERVICES["airflow-worker"]["volumes"])
    assert "basic-auth" in (REPO / "deploy/mlflow-server.sh").read_text()


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_services_have_health_checks_and_restart_policies(name: str) -> None:
    svc = SERVICES[name]
    assert svc["healthcheck"]["test"]
    assert svc["restart"] in ("unless-stopped", "always", "on-failure")


def test_only_the_uis_are_published_and_on_localhost_by_default() -> None:
    published = {n: s["ports"] for n, s in SERVICES.items() if s.get("ports")}
    assert set(published) == {"airflow-apiserver", "mlflow", "serve"}
    for ports in published.values():
        for p in ports:
            assert p.startswith("${BIND_ADDRESS:-127.0.0.1}:")


def test_serve_reads_features_from_redis_and_needs_an_api_key() -> None:
    svc = SERVICES["serve"]
    env = svc["environment"]
    assert svc["command"][:2] == ["mlops", "serve"]
    assert (
        env["MLOPS_FEAST_ONLINE"] == SERVICES["airflow-worker"]["environment"]["MLOPS_FEAST_ONLINE"]
    )
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # it binds to every interface in its container, which mlops serve refuses without a key
    assert "0.0.0.0" in svc["command"]
    assert env["MLOPS_SERVE_API_KEY"] == "${MLOPS_SERVE_API_KEY:?set it in .env}"
    assert "/ready" in " ".join(svc["healthcheck"]["test"])
    assert {"redis", "mlflow"} <= set(svc["depends_on"])


def test_workers_scale_and_state_lives_in_volumes() -> None:
    assert "container_name" not in SERVICES["airflow-worker"]
    assert {"pgdata", "redisdata", "shared"} <= set(COMPOSE["volumes"])
    assert any("pgdata:" in v for v in SERVICES["postgres"]["volumes"])


def test_no_secret_has_a_value_in_the_repository() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for var in (
        "POSTGRES_PASSWORD",
        "AIRFLOW_DB_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        assert re.search(rf"\$\{{{var}(:\?[^}}]*)?\}}", text), var
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for key, value in example.items():
        if "PASSWORD" in key or "KEY" in key or "SECRET" in key:
            assert value == "", f".env.example gives {key} a value"
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()


def test_image_is_built_from_the_lock_file() -> None:
    docker = (REPO / "Dockerfile").read_text()
    assert "uv sync --frozen" in docker
    assert "COPY pyproject.toml uv.lock" in docker


def test_compose_file_validates(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose (Debian package) not installed: schema check not run")
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    env = "\n".join(
        line + ("x" if line.endswith("=") else "")
        for line in (REPO / ".env.example").read_text().splitlines()
    )
    (tmp_path / ".env").write_text(env + "\n")
    out = subprocess.run([tool, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # a missing secret is an error, not a silent empty default
    (tmp_path / ".env").write_text("")
    out = subprocess.run([tool, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "set it in .env" in out.stderr
