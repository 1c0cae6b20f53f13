"""Airflow's own metrics reach Prometheus through StatsD and ``deploy/statsd/mapping.yml``.

The production profile runs prom/statsd-exporter, which is a Go binary and is not
installed on this machine. Its mapping is applied here by a small reimplementation of
what the exporter does with a packet (statsd_exporter's pkg/line, pkg/mapper and
pkg/registry): InfluxDB tags become labels, glob rules are tried in file order, ``$n``
templates are expanded, timers are converted from ms to seconds, negative counter
updates are refused, and one name cannot carry two metric types. The mapping is checked
against every metric the installed Airflow registers, and against the packets a real
Airflow (API server, scheduler, DAG processor, triggerer; LocalExecutor on SQLite)
sends to a UDP socket while a DAG run with a failing task triggers a second DAG through
an asset.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops.airflow import local
from mlops.airflow import stack as components
from tests.conftest import REPO
from tests.integration.airflow_stack import Api, free_port, wait_for, wait_run

MAPPING = REPO / "deploy" / "statsd" / "mapping.yml"
COMPOSE = REPO / "docker-compose.yml"
# The [metrics] settings of the production profile. Host and port are the compose
# service's; the live test points them at its own socket.
METRICS_ENV = {
    "AIRFLOW__METRICS__STATSD_ON": "True",
    "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
    "AIRFLOW__METRICS__LEGACY_NAMES_ON": "False",
}
COMPOSE_TARGET = {"AIRFLOW__METRICS__STATSD_HOST": "statsd-exporter"}
COMPOSE_PORT = "9125"
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
# Airflow's registry also lists the metrics of executors and integrations this
# deployment does not run; they would reach Prometheus under the exporter's default names.
NOT_DEPLOYED = (
    "kubernetes_executor.",
    "edge_worker.",
    "edge_executor.",
    "batch_executor.",
    "ecs_executor.",
    "lambda_executor.",
    "ol.",
)
# Values for the variables some registry names carry in the name itself; "job" is what
# Airflow 3.3's Job class gives ("job_start", "job_end", "job_heartbeat_failure").
NAME_VARIABLES = {"job_name": "job", "dag_file": "training"}

PRODUCER, CONSUMER = "metrics_producer", "metrics_consumer"
DAG_FILE = f'''"""A manual run that announces an asset and fails, and the run the asset triggers."""

from airflow.sdk import Asset, dag, task

PROBE = Asset(name="statsd_probe", uri="file:///statsd-probe")


@dag(dag_id="{PRODUCER}", schedule=None, catchup=False)
def producer():
    @task(outlets=[PROBE])
    def announce():
        return "announced"

    @task(retries=0)
    def breaks():
        raise RuntimeError("fails on purpose, for the task failure metrics")

    announce()
    breaks()


@dag(dag_id="{CONSUMER}", schedule=[PROBE], catchup=False)
def consumer():
    @task
    def react():
        return "reacted"

    react()


producer()
consumer()
'''


# ---- statsd_exporter, as far as this mapping needs it --------------------------------

MATCH_RE = re.compile(r"^(\*|[a-zA-Z_][a-zA-Z0-9_\-]*)(\.\*|\.[a-zA-Z0-9_][a-zA-Z0-9_\-]*)*$")
NAME_RE = re.compile(r"^([a-zA-Z_]|\$\{?\d+\}?)([a-zA-Z0-9_]|\$\{?\d+\}?)*$")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]+$")
TEMPLATE_RE = re.compile(r"\$\{?([a-zA-Z0-9_$]+)\}?")
PROM_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
RULE_KEYS = {
    "match",
    "name",
    "labels",
    "honor_labels",
    "observer_type",
    "match_type",
    "help",
    "action",
    "match_metric_type",
    "ttl",
    "summary_options",
    "histogram_options",
    "scale",
}
DEFAULT_KEYS = {
    "observer_type",
    "match_type",
    "glob_disable_ordering",
    "ttl",
    "summary_options",
    "histogram_options",
}
HISTOGRAM_KEYS = {"buckets", "native_histogram_bucket_factor", "native_histogram_max_buckets"}
STATSD_TYPES = {"c": "counter", "g": "gauge", "ms": "observer", "h": "observer", "d": "observer"}


@dataclass(frozen=True)
class Event:
    """One StatsD sample: the name before the tags, its tags, value and type."""

    name: str
    tags: dict[str, str]
    value: float
    kind: str  # counter, gauge or observer
    line: str


@dataclass(frozen=True)
class Rule:
    index: int
    match: tuple[str, ...]
    name: str
    labels: dict[str, str]
    metric_type: str | None
    drop: bool
    observer: str


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    kind: str  # counter, gauge, histogram or summary
    value: float
    rule: Rule


def escape(name: str) -> str:
    """statsd_exporter's EscapeMetricName: invalid characters become "_", "--" one "_"."""
    out = "_" if name[:1].isdigit() else ""
    prev = ""
    for c in name:
        if c.isascii() and (c.isalnum() or c == "_"):
            out += c
        elif not (c == "-" and prev == "-"):
            out += "_"
        prev = c
    return out


def expand(template: str, captures: list[str]) -> str:
    """A ``$n`` / ``${n}`` template; as in the exporter, ``$1_total`` names no capture."""

    def value(m: re.Match[str]) -> str:
        ref = m.group(1)
        ok = ref.isdigit() and 1 <= int(ref) <= len(captures)
        return captures[int(ref) - 1] if ok else ""

    return TEMPLATE_RE.sub(value, template)


def parse_packet(packet: str) -> list[Event]:
    """The samples of a UDP packet, with InfluxDB-style tags (``name,k=v:1|c``)."""
    events = []
    for line in packet.splitlines():
        if not line:
            continue
        head, _, rest = line.partition(":")
        name, _, tag_text = head.partition(",")
        tags = dict(t.split("=", 1) for t in tag_text.split(",") if t) if tag_text else {}
        for sample in rest.split(":"):
            parts = sample.split("|")
            value = float(parts[0])
            if parts[1] == "ms":
                value /= 1000
            for extra in parts[2:]:
                if extra.startswith("@") and parts[1] == "c":
                    value /= float(extra[1:])
            events.append(
                Event(
                    name,
                    {escape(k): v for k, v in tags.items()},
                    value,
                    STATSD_TYPES[parts[1]],
                    line,
                )
            )
    return events


class Mapper:
    """The glob rules of a mapping file, applied as statsd_exporter applies them."""

    def __init__(self, path: Path) -> None:
        self.config = yaml.safe_load(path.read_text())
        self.defaults = self.config.get("defaults") or {}
        self.rules = [
            Rule(
                index=i,
                match=tuple(r["match"].split(".")),
                name=r["name"],
                labels={k: str(v) for k, v in (r.get("labels") or {}).items()},
                metric_type=r.get("match_metric_type"),
                drop=r.get("action") == "drop",
                observer=r.get("observer_type") or self.defaults.get("observer_type") or "summary",
            )
            for i, r in enumerate(self.config["mappings"])
        ]

    def find(self, name: str, kind: str) -> tuple[Rule, list[str]] | None:
        """The first rule in file order that matches, with its captures."""
        fields = name.split(".")
        for rule in self.rules:
            if rule.metric_type not in (None, kind) or len(rule.match) != len(fields):
                continue
            if all(m in ("*", f) for m, f in zip(rule.match, fields, strict=True)):
                return rule, [f for m, f in zip(rule.match, fields, strict=True) if m == "*"]
        return None

    def apply(self, event: Event) -> Sample | None:
        """The Prometheus sample an event becomes; None when a rule drops it.

        Raises:
            LookupError: No rule matches: the exporter would invent a name for it.
        """
        found = self.find(event.name, event.kind)
        if found is None:
            raise LookupError(f"no rule for {event.kind} {event.name!r} ({event.line})")
        rule, captures = found
        if rule.drop:
            return None
        labels = {**event.tags, **{k: expand(v, captures) for k, v in rule.labels.items()}}
        kind = rule.observer if event.kind == "observer" else event.kind
        return Sample(escape(expand(rule.name, captures)), labels, kind, event.value, rule)


@dataclass
class Exposition:
    """What the exporter would expose after a stream of samples."""

    kinds: dict[str, str] = field(default_factory=dict)
    series: dict[tuple[str, frozenset[tuple[str, str]]], list[float]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def add(self, s: Sample) -> None:
        if s.kind == "counter" and s.value < 0:
            self.refused.append(f"{s.name}{s.labels}: {s.value}")
            return
        taken = {s.name}
        if s.kind == "histogram":
            taken |= {s.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        clash = [n for n in taken if self.kinds.get(n, s.kind) != s.kind]
        if clash:
            self.conflicts.append(
                f"{s.name} as {s.kind} clashes with {clash[0]} ({self.kinds[clash[0]]})"
            )
            return
        for n in taken:
            self.kinds[n] = s.kind
        self.series.setdefault((s.name, frozenset(s.labels.items())), []).append(s.value)

    def total(self, name: str) -> float:
        """The sum of every sample of ``name`` (a counter's value over all its series)."""
        return sum(sum(values) for _, values in self.find(name))

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], list[float]]]:
        """The series of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return [
            (dict(key), values)
            for (n, key), values in self.series.items()
            if n == name and want <= set(key)
        ]


def registry_metrics() -> list[dict[str, Any]]:
    """The metrics the installed Airflow declares (its metrics_template.yaml).

    Found by path: importing airflow here would configure it in this process.
    """
    spec = find_spec("airflow")
    assert spec and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "_shared" / "observability" / "metrics" / "metrics_template.yaml"
    return list(yaml.safe_load(path.read_text())["metrics"])


# ---- the mapping file on its own ---------------------------------------------------------


def test_the_mapping_loads_in_statsd_exporter() -> None:
    # given the mapping file, read as the exporter does (strict keys, glob rules)
    config = yaml.safe_load(MAPPING.read_text())
    assert set(config) <= {"defaults", "mappings"}
    assert set(config.get("defaults") or {}) <= DEFAULT_KEYS
    assert config["defaults"]["observer_type"] in ("histogram", "summary")
    problems = []
    for i, r in enumerate(config["mappings"]):
        where = f"mapping {i} ({r.get('match')})"
        if set(r) - RULE_KEYS:
            problems.append(f"{where}: unknown keys {set(r) - RULE_KEYS}")
        if r.get("match_type", "glob") != "glob":
            problems.append(f"{where}: only glob rules are checked by this test")
        if not MATCH_RE.match(str(r.get("match", ""))):
            problems.append(f"{where}: invalid match")
        if not NAME_RE.match(str(r.get("name", ""))):
            problems.append(f"{where}: invalid name {r.get('name')!r}")
        if re.search(r"\$\d+[a-zA-Z0-9_]", str(r.get("name", ""))):
            problems.append(f"{where}: write ${{n}} before other characters, not $n")
        for k in r.get("labels") or {}:
            if not LABEL_RE.match(k):
                problems.append(f"{where}: invalid label name {k!r}")
        if r.get("match_metric_type", "counter") not in ("counter", "gauge", "observer"):
            problems.append(f"{where}: invalid match_metric_type")
        if r.get("action", "map") not in ("map", "drop"):
            problems.append(f"{where}: invalid action")
        hist = r.get("histogram_options") or {}
        if set(hist) - HISTOGRAM_KEYS:
            problems.append(f"{where}: unknown histogram_options {set(hist) - HISTOGRAM_KEYS}")
        buckets = hist.get("buckets", [])
        if buckets != sorted(set(buckets)):
            problems.append(f"{where}: buckets must increase")
    # then every rule is valid for the exporter
    assert problems == []


def test_no_rule_is_hidden_by_an_earlier_one() -> None:
    # given the rules in file order
    rules = Mapper(MAPPING).rules
    hidden = []
    for later in rules:
        for earlier in rules[: later.index]:
            shared_type = None in (earlier.metric_type, later.metric_type) or (
                earlier.metric_type == later.metric_type
            )
            if not shared_type:
                continue
            # an earlier rule that matches everything the later one does wins every time
            covers = len(earlier.match) == len(later.match) and all(
                e == "*" or e == lt for e, lt in zip(earlier.match, later.match, strict=True)
            )
            if covers and earlier.metric_type in (None, later.metric_type):
                hidden.append(f"{'.'.join(later.match)} by {'.'.join(earlier.match)}")
            # the exporter's state machine only marks a rule's last state as final when it
            # creates that state: a rule that ends where an earlier, longer one passes
            # through never matches
            if len(earlier.match) > len(later.match) and (
                earlier.match[: len(later.match)] == later.match
            ):
                hidden.append(f"{'.'.join(later.match)} (a prefix of {'.'.join(earlier.match)})")
    # then each rule can match something
    assert hidden == []


def test_every_metric_airflow_registers_gets_a_prometheus_name() -> None:
    # given every metric of the installed Airflow's registry, under its Airflow 3 name
    mapper, exposition = Mapper(MAPPING), Exposition()
    missing, badly_named = [], []
    kinds = {"counter": "c", "gauge": "g", "timer": "ms"}
    for m in registry_metrics():
        if m["name"].startswith(NOT_DEPLOYED):
            continue
        name = "airflow." + m["name"].format(**NAME_VARIABLES)
        event = parse_packet(f"{name}:1|{kinds[m['type']]}")[0]
        # when the exporter maps it
        try:
            sample = mapper.apply(event)
        except LookupError as e:
            missing.append(str(e))
            continue
        assert sample is not None, f"{name} is dropped"
        exposition.add(sample)
        suffix = {"counter": "_total", "timer": "_seconds"}.get(m["type"], "")
        if not (PROM_NAME_RE.match(sample.name) and sample.name.endswith(suffix)):
            badly_named.append(f"{name} -> {sample.name}")
        if m["type"] == "gauge" and sample.name.endswith("_total"):
            badly_named.append(f"{name} -> {sample.name}")
    # then each has a rule, a Prometheus-style name and a type of its own
    assert missing == []
    assert badly_named == []
    assert exposition.conflicts == []
    assert exposition.kinds["airflow_dagrun_duration_seconds"] == "histogram"


def test_names_that_carry_a_dag_id_are_mapped_to_labels_or_dropped() -> None:
    mapper = Mapper(MAPPING)
    # given what Airflow sends besides its registry names
    delay = parse_packet("airflow.dagrun.scoring.first_task_scheduling_delay:1500|ms")[0]
    run = parse_packet("airflow.dagrun.duration.success,dag_id=scoring,run_type=scheduled:90500|ms")
    # when mapped
    sample = mapper.apply(run[0])
    # then the DAG id stays a label, and the copy with the id in its name is dropped
    assert mapper.apply(delay) is None
    assert sample is not None
    assert (sample.name, sample.kind) == ("airflow_dagrun_duration_seconds", "histogram")
    assert sample.labels == {"dag_id": "scoring", "run_type": "scheduled", "state": "success"}
    assert sample.value == pytest.approx(90.5)


def test_the_compose_file_sends_airflow_metrics_to_the_exporter() -> None:
    # given the production profile
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    want = {**METRICS_ENV, **COMPOSE_TARGET, "AIRFLOW__METRICS__STATSD_PORT": COMPOSE_PORT}
    # then every Airflow component sends with the settings the live test checks
    for name in AIRFLOW_SERVICES:
        env = {k: str(v) for k, v in (services[name].get("environment") or {}).items()}
        assert {k: env.get(k) for k in want} == want, name
    # and the exporter reads this mapping
    exporter = services["statsd-exporter"]
    command = exporter.get("command") or []
    command = command.split() if isinstance(command, str) else command
    assert "--statsd.mapping-config=/etc/statsd/mapping.yml" in command
    mounts = [
        (v["source"], v["target"]) if isinstance(v, dict) else tuple(str(v).split(":")[:2])
        for v in exporter.get("volumes") or []
    ]
    assert (MAPPING, "/etc/statsd/mapping.yml") in [((REPO / s).resolve(), t) for s, t in mounts]


# ---- a real Airflow run -----------------------------------------------------------------


@dataclass
class StatsdRun:
    events: list[Event]
    runs: dict[str, dict[str, Any]]


class Receiver:
    """A StatsD server that only keeps the packets (UDP on 127.0.0.1, a free port)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.packets: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.packets.append(self.sock.recv(65535).decode())
            except TimeoutError:
                continue

    def events(self) -> list[Event]:
        return [e for p in list(self.packets) for e in parse_packet(p)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _seconds(run: dict[str, Any]) -> float:
    start, end = (datetime.fromisoformat(run[k]) for k in ("start_date", "end_date"))
    return (end - start).total_seconds()


@pytest.fixture(scope="module")
def statsd_run(tmp_path_factory) -> Iterator[StatsdRun]:
    """Run both DAGs on a real Airflow that sends its metrics to a socket of this test."""
    root = tmp_path_factory.mktemp("airflow-statsd")
    dags, home = root / "dags", root / "home"
    dags.mkdir()
    home.mkdir()
    (dags / "metrics_probe.py").write_text(DAG_FILE)
    receiver = Receiver()
    env = local.airflow_env(
        home,
        REPO / "params.yaml",
        port=free_port(),
        dags=dags,
        base={k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        extra={
            **METRICS_ENV,
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(receiver.port),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # the task-state gauges every 2 s instead of 30, so that the run shows them
            "AIRFLOW__SCHEDULER__TI_METRICS_INTERVAL": "2",
        },
    )
    local.init_metadata(env)
    password, _ = local.seed_password(home)
    running = components.start(env)
    try:
        components.wait_ready(running, timeout=180)
        api = Api(running.url, local.USER, password)
        wait_for(
            "both DAGs parsed",
            lambda: {d["dag_id"] for d in api.get("/dags")["dags"]} >= {PRODUCER, CONSUMER},
            90,
            running,
            every=1,
        )
        api.trigger(PRODUCER, "statsd-probe", {})
        produced = wait_run(api, running, PRODUCER, "statsd-probe", 120)
        consumed = wait_for(
            "the asset-triggered run",
            lambda: [r for r in api.runs(CONSUMER) if r["state"] in ("success", "failed")],
            90,
            running,
            every=1,
        )[0]
        # the scheduler sends a run's duration right after it sets the final state
        wait_for(
            "both DAG-run durations over StatsD",
            lambda: (
                {
                    e.tags.get("dag_id")
                    for e in receiver.events()
                    if e.name.startswith("airflow.dagrun.duration.")
                }
                >= {PRODUCER, CONSUMER}
            ),
            30,
            running,
            every=0.5,
        )
    finally:
        running.stop(grace=10)
        receiver.close()
    yield StatsdRun(receiver.events(), {PRODUCER: produced, CONSUMER: consumed})


@pytest.mark.integration
def test_airflow_sends_its_metrics_over_statsd_with_tags(statsd_run: StatsdRun) -> None:
    # given a manual run whose "breaks" task fails and the run its asset triggers
    assert statsd_run.runs[PRODUCER]["state"] == "failed"
    assert statsd_run.runs[CONSUMER]["state"] == "success"
    sent = {e.name for e in statsd_run.events}
    # then each component's metrics arrived: the scheduler's, the task runner's, the DAG
    # processor's, the triggerer's and the API server's (asset events)
    assert {
        "airflow.dagrun.duration.failed",
        "airflow.dagrun.duration.success",
        "airflow.asset.triggered_dagruns",
        "airflow.scheduler_heartbeat",
        "airflow.executor.open_slots",
        "airflow.ti.finish",
        "airflow.ti_failures",
        "airflow.task.duration",
        "airflow.dag_processing.import_errors",
        "airflow.dag_processor_heartbeat",
        "airflow.triggerer_heartbeat",
        "airflow.asset.updates",
    } <= sent
    # and, with the legacy names off, no name embeds a DAG or task id: they are tags
    assert [n for n in sent if re.search(r"metrics_|announce|breaks|react", n)] == []
    finished = {
        (e.tags["task_id"], e.tags["state"])
        for e in statsd_run.events
        if e.name == "airflow.ti.finish" and e.tags.get("dag_id") == PRODUCER
    }
    assert finished == {("announce", "success"), ("breaks", "failed")}


@pytest.mark.integration
def test_every_metric_of_the_run_maps_to_its_prometheus_series(statsd_run: StatsdRun) -> None:
    # given every sample the run sent
    mapper, exposition, unmapped = Mapper(MAPPING), Exposition(), []
    # when the exporter maps them
    for event in statsd_run.events:
        try:
            sample = mapper.apply(event)
        except LookupError as e:
            unmapped.append(str(e))
            continue
        if sample is not None:
            exposition.add(sample)
    # then each has a rule and no two types share a name
    assert unmapped == []
    assert exposition.conflicts == []
    # and the DAG-run durations are histograms in seconds, labelled by DAG, trigger and state
    for dag_id, run_type, state in (
        (PRODUCER, "manual", "failed"),
        (CONSUMER, "asset_triggered", "success"),
    ):
        [(labels, observed)] = exposition.find("airflow_dagrun_duration_seconds", dag_id=dag_id)
        assert labels == {"dag_id": dag_id, "run_type": run_type, "state": state}
        assert len(observed) == 1
        assert math.isclose(observed[0], _seconds(statsd_run.runs[dag_id]), abs_tol=0.01)
    assert exposition.kinds["airflow_dagrun_duration_seconds"] == "histogram"
    # and the task outcomes are counters labelled by DAG, task and state
    finish = {
        (lb["task_id"], lb["state"]): sum(v)
        for lb, v in exposition.find("airflow_task_finish_total", dag_id=PRODUCER)
    }
    assert finish == {("announce", "success"): 1, ("breaks", "failed"): 1}
    [(labels, failures)] = exposition.find("airflow_task_failures_total")
    assert labels == {"dag_id": PRODUCER, "task_id": "breaks"}
    assert sum(failures) == 1
    # and the asset that linked the two runs is counted on both ends
    assert exposition.total("airflow_asset_updates_total") >= 1
    assert exposition.total("airflow_asset_triggered_dagruns_total") >= 1
    # and the scheduler's health shows
    assert exposition.total("airflow_scheduler_heartbeat_total") > 0
    [(labels, _)] = exposition.find("airflow_executor_open_slots")
    assert labels["executor_class_name"] == "LocalExecutor"
