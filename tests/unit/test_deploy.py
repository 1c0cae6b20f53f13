"""deploy/: the Prometheus config, alerting rules and Grafana dashboards, checked statically.

promtool checks the config and the rules and runs the rules' unit tests; every dashboard
panel's query is parsed by promtool too (as a recording rule) and may name only metrics
that mlops produces. tests/production/test_observability.py evaluates the same queries
in a running Prometheus after a real pipeline run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
ALERTS = {r["alert"]: r for g in RULES["groups"] for r in g["rules"] if "alert" in r}
# Series Prometheus and the Pushgateway add themselves, which panels and rules may use.
BUILTIN = {"up", "push_time_seconds", "push_failure_time_seconds", "ALERTS"}
# The process collector of prometheus-client, which `mlops serve` registers.
BUILTIN |= {"process_resident_memory_bytes", "process_cpu_seconds_total"}
# What the Grafana template variables become when a query is run outside Grafana.
GRAFANA_VARS = {"__rate_interval": "1m", "__interval": "15s"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool (Debian package prometheus) not installed; .ci/run installs it")
    return tool


def datasource_uid() -> str:
    (source,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    return str(source["uid"])


def dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows left out, collapsed rows' panels included)."""
    out = []
    for p in board["panels"]:
        if p["type"] == "row":
            out += p.get("panels", [])
        else:
            out.append(p)
    return out


def panel_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file stem, panel, target) of every query of every dashboard."""
    return [
        (path.stem, p, t)
        for path in DASHBOARDS
        for p in panels(dashboard(path))
        for t in p["targets"]
    ]


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with Grafana's ``$name`` and ``${name}`` variables replaced."""
    every = {**GRAFANA_VARS, **values}

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in every, f"unknown template variable ${name} in {expr}"
        return every[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label values and keywords left out)."""
    bare = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'", '""', expr)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)  # label matchers, ranges
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\()?", bare):
        if m.group(2) is None and m.group(1) not in PROMQL_WORDS:  # not a function
            names.add(m.group(1))
    return names


def produced_metrics() -> set[str]:
    """Every mlops_* metric named in the package (the push layer, serving, the stages)."""
    names: set[str] = set()
    for src in (REPO / "mlops").rglob("*.py"):
        names |= set(re.findall(r"[\"'](mlops_[a-z0-9_]+)[\"']", src.read_text()))
    histograms = re.findall(
        r"Histogram\(\s*\"(mlops_[a-z0-9_]+)\"", (REPO / "mlops" / "serve_metrics.py").read_text()
    )
    assert histograms, "no histogram found in mlops/serve_metrics.py"
    for h in histograms:
        names |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    return names


def unknown(expr: str, produced: set[str]) -> set[str]:
    return {n for n in metric_names(expr) if n not in produced and n not in BUILTIN}


# --------------------------------------------------------------------------- Prometheus
def test_the_metric_name_parser_finds_selected_metrics_only() -> None:
    expr = (
        'sum by (stage, le) (rate(mlops_a_total{job="x", stage=~"a|b"}[5m])) '
        "/ on (project) group_left () max(mlops_b) > 2 * time() and up offset 5m"
    )
    assert metric_names(expr) == {"mlops_a_total", "mlops_b", "up"}
    assert unknown("mlops_made_up{project='p'} == 1", {"mlops_b"}) == {"mlops_made_up"}


CONFIGS = sorted(p.name for p in PROMETHEUS.glob("*.yml") if not p.name.startswith("rules"))


@pytest.mark.parametrize("name", CONFIGS)
def test_prometheus_configs_pass_promtool_and_feed_the_rules(name: str) -> None:
    out = subprocess.run(
        [promtool(), "check", "config", name], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load((PROMETHEUS / name).read_text())
    assert config["rule_files"] == ["rules.yml"]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    # the rules select job="pushgateway" and job="serve"; pushed series keep job="mlops"
    assert {"prometheus", "pushgateway", "serve"} <= set(jobs)
    assert jobs["pushgateway"]["honor_labels"] is True
    assert "honor_labels" not in jobs["serve"]


def test_the_production_config_scrapes_airflow_and_the_rules_pass_promtool() -> None:
    assert "prometheus.yml" in CONFIGS
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert "airflow" in {j["job_name"] for j in config["scrape_configs"]}
    out = subprocess.run(
        [promtool(), "check", "rules", "rules.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_fires_and_stays_quiet_in_the_rules_unit_tests() -> None:
    tool = promtool()
    out = subprocess.run(
        [tool, "test", "rules", "rules.test.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    cases = yaml.safe_load((PROMETHEUS / "rules.test.yml").read_text())
    assert cases["rule_files"] == ["rules.yml"]
    checks = [c for t in cases["tests"] for c in t.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in checks if c.get("exp_alerts")}
    assert firing == set(ALERTS), f"alerts without a firing case: {set(ALERTS) - firing}"
    # a firing case lists the alerts exactly, so each of them also proves the good series
    # of its input stay quiet; these ones have such good series beside the bad
    for test in cases["tests"]:
        for check in test.get("alert_rule_test", []):
            fired = len(check.get("exp_alerts") or [])
            assert len(test["input_series"]) > fired, check["alertname"]


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_alert_has_a_severity_and_says_what_is_at_fault(name: str) -> None:
    rule = ALERTS[name]
    assert rule["labels"]["severity"] in {"critical", "warning"}
    text = rule["annotations"]["summary"] + " " + rule["annotations"]["description"]
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    if name.startswith("MlopsServing"):
        assert "$labels.instance" in text
    elif 'job="mlops"' in rule["expr"]:
        assert "$labels.project" in text
        if "by (project)" not in rule["expr"]:  # one alert per group: name the group
            assert "$labels.stage" in text and "$labels.partition" in text
    assert unknown(rule["expr"], produced_metrics()) == set()


def test_the_issue_alerts_exist() -> None:
    assert {
        "MlopsDriftBreach",
        "MlopsPerformanceBreach",
        "MlopsStageFailed",
        "MlopsScoringStale",
        "MlopsServingErrorRate",
        "MlopsServingLatencyP99",
    } <= set(ALERTS)
    assert "histogram_quantile(0.99" in ALERTS["MlopsServingLatencyP99"]["expr"]
    assert "mlops_schedule_interval_seconds" in ALERTS["MlopsScoringStale"]["expr"]


# --------------------------------------------------------------------------- Grafana
def test_the_dashboards_are_provisioned_from_this_folder() -> None:
    assert [p.stem for p in DASHBOARDS] == ["model", "pipeline", "serving"]
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "mlops.yml").read_text()
    )["providers"]
    assert provider["type"] == "file"
    uids = [dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for path in DASHBOARDS:
        board = dashboard(path)
        assert board["schemaVersion"] >= 36, path.name
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), f"{path.name}: panel ids repeat"
        assert panels(board), path.name


@pytest.mark.parametrize(
    ("board", "title"),
    sorted({(b, p["title"]) for b, p, _ in panel_targets()}),
)
def test_every_panel_queries_the_provisioned_prometheus_for_known_metrics(
    board: str, title: str
) -> None:
    uid = datasource_uid()
    (panel,) = [p for b, p, _ in panel_targets() if b == board and p["title"] == title][:1]
    assert panel["datasource"]["uid"] == uid
    assert panel["targets"], "a panel without a query"
    variables = {
        v["name"] for v in dashboard(GRAFANA / "dashboards" / f"{board}.json")["templating"]["list"]
    }
    produced = produced_metrics()
    for target in panel["targets"]:
        assert target["datasource"]["uid"] == uid
        expr = target["expr"]
        used = set(re.findall(r"\$\{?(\w+)", expr)) - set(GRAFANA_VARS)
        assert used <= variables, f"undefined template variables {used - variables}"
        assert unknown(expr, produced) == set(), expr
        assert metric_names(expr), f"the query selects no metric: {expr}"


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    tool = promtool()
    rules = [
        {"record": f"panel:{board}:{i}", "expr": substitute(t["expr"], {"project": "flights"})}
        for i, (board, _, t) in enumerate(panel_targets())
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboards_show_what_the_issue_asks_for() -> None:
    def exprs(board: str) -> str:
        return " ".join(t["expr"] for b, _, t in panel_targets() if b == board)

    pipeline, model, serving = exprs("pipeline"), exprs("model"), exprs("serving")
    for name in (
        "mlops_stage_duration_seconds",
        "mlops_stage_success",
        "mlops_stage_runs_total",
        "mlops_validation_failed_expectations",
        "mlops_validation_quarantined",
    ):
        assert name in pipeline, name
    for name in (
        "mlops_drift_score",
        "mlops_drift_share",
        "mlops_drift_breach",
        "mlops_champion_version",
        "mlops_realised_metric",
        "mlops_holdout_metric",
    ):
        assert name in model, name
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, " in serving
    for name in ("mlops_serve_requests_total", "mlops_serve_predictions_total"):
        assert name in serving, name
    assert "arm" in serving and "mlops_serve_model_info" in serving


def test_substitute_replaces_grafana_variables() -> None:
    got = substitute('rate(x{p="$project", q="${project}"}[$__rate_interval])', {"project": "f"})
    assert got == 'rate(x{p="f", q="f"}[1m])'
    with pytest.raises(AssertionError, match="unknown template variable"):
        substitute('x{p="$nope"}', {})


# --------------------------------------------------------------------------- compose
def test_every_path_the_compose_file_mounts_exists() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = [
        (name, v.split(":")[0])
        for name, svc in compose["services"].items()
        for v in svc.get("volumes", [])
        if v.startswith("./")
    ]
    assert {"prometheus", "grafana", "statsd-exporter"} <= {n for n, _ in mounts}
    missing = [(n, src) for n, src in mounts if not (REPO / src).exists()]
    assert not missing, f"mounted but not in the repository: {missing}"
