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
    "pushgateway",
    "statsd-exporter",
    "prometheus",
    "grafana",
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
    # Prometheus, the Pushgateway and statsd-exporter have no login: reachable in the network only
    assert set(published) == {"airflow-apiserver", "mlflow", "serve", "grafana"}
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


def _mounts(name: str) -> dict[str, str]:
    """A service's bind mounts: container path -> repository path."""
    out = {}
    for v in SERVICES[name].get("volumes", []):
        src, dst, *_ = v.split(":")
        if src.startswith("./"):
            out[dst] = src
    return out


def test_every_stage_pushes_and_airflow_sends_statsd() -> None:
    env = COMPOSE["x-airflow-env"]
    for name in SERVICES:
        if name.startswith("airflow-"):
            assert SERVICES[name]["environment"]["MLOPS_PUSHGATEWAY_URL"] == (
                "http://pushgateway:9091"
            ), name
    assert env["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
    assert env["AIRFLOW__METRICS__STATSD_PREFIX"] == "airflow"
    statsd = SERVICES["statsd-exporter"]
    assert f"--statsd.listen-udp=:{env['AIRFLOW__METRICS__STATSD_PORT']}" in statsd["command"]
    config = next(a for a in statsd["command"] if a.startswith("--statsd.mapping-config="))
    assert _mounts("statsd-exporter")[config.split("=", 1)[1]] == "./deploy/statsd/mapping.yml"


def test_prometheus_scrapes_the_services_of_this_file_with_the_rules() -> None:
    svc = SERVICES["prometheus"]
    mounts = _mounts("prometheus")
    config = next(a for a in svc["command"] if a.startswith("--config.file="))
    path = config.split("=", 1)[1]
    folder = path.rsplit("/", 1)[0]
    assert mounts[folder] == "./deploy/prometheus"
    prom = yaml.safe_load((REPO / "deploy/prometheus" / path.rsplit("/", 1)[1]).read_text())
    assert prom["rule_files"] == ["rules.yml"]
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    for job, service in (("pushgateway", "pushgateway"), ("serve", "serve")):
        (target,) = jobs[job]["static_configs"][0]["targets"]
        assert target.split(":")[0] == service
    (target,) = jobs["airflow"]["static_configs"][0]["targets"]
    assert target == "statsd-exporter:9102"
    assert "--web.listen-address=:9102" in SERVICES["statsd-exporter"]["command"]
    # the pushed job, project, stage and partition labels are kept, not the scrape's own
    assert jobs["pushgateway"]["honor_labels"] is True
    assert any(v.startswith("promdata:") for v in svc["volumes"])
    assert any(v.startswith("pushdata:") for v in SERVICES["pushgateway"]["volumes"])


def test_grafana_provisions_the_data_source_and_dashboards_it_mounts() -> None:
    svc = SERVICES["grafana"]
    mounts = _mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provision = REPO / "deploy/grafana/provisioning"
    (source,) = yaml.safe_load((provision / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in SERVICES
    (provider,) = yaml.safe_load((provision / "dashboards/mlops.yml").read_text())["providers"]
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    home = svc["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (REPO / "deploy/grafana/dashboards" / home.rsplit("/", 1)[1]).is_file()
    assert svc["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == (
        "${GRAFANA_ADMIN_PASSWORD:?set it in .env}"
    )
    assert svc["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


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
        "GRAFANA_ADMIN_PASSWORD",
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
