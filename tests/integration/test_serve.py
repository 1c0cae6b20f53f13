"""mlops serve as a real server process on a loopback port, over a small trained project.

One project is trained once for the module: three weeks of January, an XGBoost champion
(v1) that batch-scored a week of July, and a scikit-learn version (v2) that is not
promoted. Each scenario starts its own ``mlops serve`` subprocess with its own
params file (the ``serve`` group differs) and stops it with a signal, as an operator would.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from mlops import features, traffic
from mlops.cli import main
from mlops.config import Params, Settings, load_params, settings
from mlops.predictor import in_canary, key_text
from mlops.registry import CHALLENGER, CHAMPION, connect
from tests.conftest import FLIGHTS, FLIGHTS_SMALL, make_project, merge

pytestmark = pytest.mark.integration

TRAIN = ["2013-W02", "2013-W03", "2013-W04"]
SCORED = "2013-W28"
XGB = {"name": "xgb", "kind": "xgboost", "params": {"n_estimators": 40, "max_depth": 4}}
HGB = {"name": "hgb", "kind": "sklearn_hist_gradient_boosting", "params": {"max_iter": 30}}
MAX_ROWS = 50
MAX_BODY = 64_000
API_KEY = "placeholder-serve-key-for-tests"
REDIS_DB = 14  # a Redis db number of this module's own, flushed before and after
READY_TIMEOUT_S = 240


@dataclass
class Trained:
    """The module's project: v1 (XGBoost, champion, batch-scored) and v2 (scikit-learn)."""

    params_path: Path
    v1: str
    v2: str
    scored: pd.DataFrame

    @property
    def root(self) -> Path:
        return self.params_path.parent

    @property
    def params(self) -> Params:
        return load_params(self.params_path)

    @property
    def st(self) -> Settings:
        return settings(self.params_path)

    def variant(self, name: str, serve: dict[str, Any]) -> Path:
        """A params file beside the project's, differing only in its ``serve`` group."""
        raw = yaml.safe_load(self.params_path.read_text())
        raw["serve"] = serve
        path = self.root / f"params_{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    def aliases(self, champion: str, challenger: str | None = None) -> None:
        """Point the aliases as a test needs them (outside moves; the audit records them)."""
        name = self.params.model_name
        client = connect(self.st).client
        client.set_registered_model_alias(name, CHAMPION, champion)
        if challenger is None:
            with contextlib.suppress(Exception):
                client.delete_registered_model_alias(name, CHALLENGER)
        else:
            client.set_registered_model_alias(name, CHALLENGER, challenger)

    def broken_version(self) -> str:
        """A new version whose model loads but whose ``features.json`` is damaged."""
        name = self.params.model_name
        client = connect(self.st).client
        good = client.get_model_version(name, self.v1)
        run = client.create_run(client.get_run(good.run_id).info.experiment_id)
        client.log_text(run.info.run_id, '{"features": [', "features.json")
        client.set_terminated(run.info.run_id)
        return str(client.create_model_version(name, good.source, run_id=run.info.run_id).version)

    def keys(self, n: int, label: int | None = None) -> list[str]:
        """``n`` distinct scored keys spread over the week (of one predicted label)."""
        df = self.scored if label is None else self.scored[self.scored["predicted_label"] == label]
        step = max(1, len(df) // n)
        return df["flight_id"].iloc[::step].head(n).tolist()

    def batch(self, key: str) -> dict[str, Any]:
        """What batch scoring wrote for ``key``."""
        return self.scored.set_index("flight_id").loc[key].to_dict()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Ingest, validate, materialise and train v1, promote and score; train v2."""
    over = merge(FLIGHTS_SMALL, {"train": {"candidates": [XGB]}})
    path = make_project(tmp_path_factory.mktemp("serve") / "proj", FLIGHTS, over)

    def cli(*args: str, params: Path = path) -> None:
        assert main(["--params", str(params), *args]) == 0, args

    cli("ingest", "--partitions", *TRAIN, SCORED)
    cli("validate", "--partitions", *TRAIN, SCORED)
    cli("materialize", "--partitions", *TRAIN, SCORED)
    for verb in ("train", "evaluate", "promote"):
        cli(verb)
    cli("score", "--partitions", SCORED)
    params, st = load_params(path), settings(path)
    reg = connect(st)
    v1 = reg.alias_version(params.model_name, CHAMPION)
    raw = yaml.safe_load(path.read_text())
    raw["train"]["candidates"] = [HGB]
    hgb = path.with_name("params_hgb.yaml")
    hgb.write_text(yaml.safe_dump(raw, sort_keys=False))
    cli("train", params=hgb)
    versions = sorted(
        str(mv.version) for mv in reg.client.search_model_versions(f"name='{params.model_name}'")
    )
    assert v1 is not None and len(versions) == 2, versions
    v2 = next(v for v in versions if v != v1)
    scored = pd.read_parquet(st.predictions_dir / f"{SCORED}.parquet")
    assert set(scored["model_version"]) == {v1}
    return Trained(path, v1, v2, scored)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_SERVE_API_KEY"}
    return {**env, **extra}


@dataclass
class Server:
    """One ``mlops serve`` process and what it printed."""

    proc: subprocess.Popen[bytes]
    url: str
    out: Path
    err: Path
    key: str | None = None
    returncode: int | None = field(default=None)

    def client(self, key: str | None = "default") -> httpx.Client:
        k = self.key if key == "default" else key
        headers = {"Authorization": f"Bearer {k}"} if k else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def stop(self, sig: int = signal.SIGINT) -> int:
        """Stop as Ctrl-C or a process manager does, and wait for the process to exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"serve did not exit on signal {sig}:\n{self.output()[-3000:]}")
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@contextlib.contextmanager
def serving(params: Path, name: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start ``mlops serve`` on a free loopback port; wait for /ready; kill it at the end."""
    port = free_port()
    out, err = params.with_name(f"serve-{name}.out"), params.with_name(f"serve-{name}.err")
    cmd = [sys.executable, "-m", "mlops", "--params", str(params), "serve", "--port", str(port)]
    full = env or server_env()
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            cmd, cwd=params.parent, env=full, stdout=o, stderr=e, start_new_session=True
        )
    srv = Server(proc, f"http://127.0.0.1:{port}", out, err, full.get("MLOPS_SERVE_API_KEY"))
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve exited with {proc.returncode}:\n{srv.output()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{srv.url}/ready", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"serve not ready after {READY_TIMEOUT_S}s:\n{srv.output()[-3000:]}")
            time.sleep(0.25)
        yield srv
    finally:
        if proc.poll() is None:
            srv.kill()


@pytest.fixture(scope="module")
def plain(trained: Trained) -> Iterator[Server]:
    """A server of the champion alone; it never re-reads the aliases while other tests move them."""
    trained.aliases(trained.v1)
    params = trained.variant(
        "plain", {"max_batch_rows": MAX_ROWS, "max_body_bytes": MAX_BODY, "poll_seconds": 3600}
    )
    with serving(params, "plain") as srv:
        yield srv
        srv.stop()


def metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The /metrics samples by name and labels (parsed as Prometheus parses them)."""
    from prometheus_client.parser import text_string_to_metric_families

    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def until(fn: Any, what: str, timeout: float = 120) -> Any:
    """``fn()`` once it is truthy; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (got := fn()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return got


def served(st: Settings, prefix: str) -> pd.DataFrame:
    """The prediction log's rows of the requests whose id starts with ``prefix``."""
    df = traffic.read(st)
    assert not df.empty, "the prediction log is empty"
    return df[df["request_id"].str.startswith(prefix)].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# One server of the champion: answers, refusals, v2, metrics, readiness


def test_a_key_alone_gets_the_prediction_batch_scoring_made(trained: Trained, plain: Server):
    # given keys of the scored week, half predicted late and half on time by batch scoring
    keys = trained.keys(4, label=1) + trained.keys(4, label=0)
    with plain.client() as http:
        # when each key is sent alone, and then all of them in one batch
        single = [http.post("/predict", json={"flight_id": k}) for k in keys]
        batch = http.post("/predict", json={"rows": [{"flight_id": k} for k in keys]})

    # then every answer is the champion's, with the batch's probability and label
    assert [r.status_code for r in single] == [200] * len(keys)
    assert batch.status_code == 200
    answers = [r.json()["predictions"][0] for r in single]
    assert batch.json()["predictions"] == answers  # in the order sent
    for key, got in zip(keys, answers, strict=True):
        want = trained.batch(key)
        assert got["flight_id"] == key
        assert got["prediction"] == want["prediction"], key
        assert got["predicted_label"] == want["predicted_label"], key
        assert (got["model_name"], got["model_version"], got["arm"]) == (
            trained.params.model_name,
            trained.v1,
            "champion",
        )
    assert {a["predicted_label"] for a in answers} == {0, 1}
    # and each response names its request id, taken from the client when it sends one
    assert all(r.json()["request_id"] == r.headers["x-request-id"] for r in single)


def test_an_answer_explained_on_request_adds_up_to_the_models_own_output(
    trained: Trained, plain: Server
):
    # given two scored keys, asked for with explanations of every feature
    keys = trained.keys(2)
    n = len(trained.params.contract.feature_names)
    with plain.client() as http:
        full = http.post(
            f"/predict?explain=true&top_k={n}", json={"rows": [{"flight_id": k} for k in keys]}
        )
        top = http.post("/predict?explain=true", json={"flight_id": keys[0]})
        plain_answer = http.post("/predict", json={"flight_id": keys[0]})
        bad = http.post("/predict?explain=true&top_k=0", json={"flight_id": keys[0]})
    assert full.status_code == top.status_code == 200
    # then the base plus every contribution is the log-odds of the probability answered
    for got in full.json()["predictions"]:
        ex = got["explanation"]
        assert ex["output"] == "log-odds" and ex["method"] == "TreeSHAP (XGBoost)"
        assert len(ex["top"]) == n
        margin = ex["base"] + sum(t["contribution"] for t in ex["top"])
        p = got["prediction"]
        assert margin == pytest.approx(math.log(p / (1 - p)), abs=1e-4)
        sizes = [abs(t["contribution"]) for t in ex["top"]]
        assert sizes == sorted(sizes, reverse=True)
    # and by default the five largest, with the answer itself unchanged
    one = top.json()["predictions"][0]
    assert len(one["explanation"]["top"]) == 5
    assert one["explanation"]["top"] == full.json()["predictions"][0]["explanation"]["top"][:5]
    assert "explanation" not in plain_answer.json()["predictions"][0]
    assert {k: v for k, v in one.items() if k != "explanation"} == plain_answer.json()[
        "predictions"
    ][0]
    # a bad top_k is refused naming it
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "top_k"


def test_a_row_sent_with_all_its_features_is_predicted_from_them(trained: Trained, plain: Server):
    # given a scored row's own features, as the offline feature file holds them
    params, st = trained.params, trained.st
    rows = pd.concat(features.batches(params, features.feature_file(params, st, SCORED), 10_000))
    key = trained.keys(1, label=1)[0]
    row = rows[rows["flight_id"] == key].iloc[0]
    body = {"flight_id": key}
    for f in params.contract.features:
        v = row[f.name]
        body[f.name] = None if pd.isna(v) else (int(v) if f.dtype == "int" else v)
    # when it is sent with them, and again with one of them changed
    with plain.client() as http:
        same = http.post("/predict", json=body, headers={"x-request-id": "features-same"})
        storm = {"temp": 110.0, "precip": 4.0, "visib": 0.0, "wind_speed": 60.0}
        hot = http.post("/predict", json={**body, **storm})
    # then the first is batch scoring's prediction and the second is another one
    assert same.status_code == 200 and hot.status_code == 200
    assert same.headers["x-request-id"] == "features-same"
    got = same.json()["predictions"][0]["prediction"]
    assert got == trained.batch(key)["prediction"]
    assert hot.json()["predictions"][0]["prediction"] != got


BAD = [
    # (case, body, field, words of the rule, error type)
    ("wrong type", {"sched_hour": "12"}, "sched_hour", "int", "int_type"),
    ("above range", {"temp": 500.0}, "temp", "<= 120", "less_than_equal"),
    ("below range", {"distance": -1.0}, "distance", ">= 0", "greater_than_equal"),
    (
        "category outside the set",
        {"origin": "XXX"},
        "origin",
        "one of EWR, JFK, LGA",
        "literal_error",
    ),
    ("null where not nullable", {"sched_hour": None}, "sched_hour", "not null", "int_type"),
    ("unknown field", {"colour": "red"}, "colour", "not in the contract", "extra_forbidden"),
]


@pytest.mark.parametrize(("case", "extra", "field", "rule", "kind"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_row_gets_422_naming_the_field_and_the_rule(
    trained: Trained, plain: Server, case: str, extra: dict, field: str, rule: str, kind: str
):
    # given a known key with one bad field
    key = trained.keys(1)[0]
    # when it is sent alone and inside a batch of good rows
    with plain.client() as http:
        alone = http.post("/predict", json={"flight_id": key, **extra})
        rows = [{"flight_id": key}, {"flight_id": key, **extra}]
        batched = http.post("/predict", json={"rows": rows})
    # then both are refused with 422, the error naming the field, its rule and the input
    for resp, loc in ((alone, [field]), (batched, ["rows", 1, field])):
        assert resp.status_code == 422, (case, resp.text)
        errors = resp.json()["detail"]
        assert len(errors) == 1, errors
        e = errors[0]
        assert (e["field"], e["loc"], e["type"]) == (field, loc, kind)
        assert rule in e["rule"], e
        assert e["input"] == next(iter(extra.values()))


@pytest.mark.parametrize(
    ("case", "body", "field", "rule", "kind"),
    [
        ("missing key", {"temp": 50.0}, "flight_id", "entity key", "missing"),
        ("not JSON", b"{not json", "body", "JSON", "json_invalid"),
        ("not a row", [1, 2], "body", "row object", "model_type"),
        ("empty batch", {"rows": []}, "rows", "non-empty", "too_short"),
        ("rows beside another field", {"rows": [], "x": 1}, "x", "rows", "extra_forbidden"),
        (
            "unknown key without features",
            {"flight_id": "no-such"},
            "sched_hour",
            "not null",
            "missing_feature",
        ),
    ],
)
def test_a_bad_request_gets_422_never_500(
    plain: Server, case: str, body: Any, field: str, rule: str, kind: str
):
    # when a request that cannot be answered is sent
    with plain.client() as http:
        if isinstance(body, bytes):
            resp = http.post("/predict", content=body, headers={"content-type": "application/json"})
        else:
            resp = http.post("/predict", json=body)
    # then it gets 422 and its first error names the field and the rule at fault
    assert resp.status_code == 422, (case, resp.text)
    errors = resp.json()["detail"]
    assert {"loc", "field", "msg", "rule", "type"} <= set(errors[0]), errors
    assert errors[0]["field"] == field, errors
    assert rule in errors[0]["rule"] + errors[0]["msg"], errors
    assert errors[0]["type"] == kind, errors


def test_an_unknown_key_names_every_feature_the_store_lacks(plain: Server):
    # when a key the online store never saw is sent without features
    with plain.client() as http:
        resp = http.post("/predict", json={"flight_id": "XX-1-2013-07-10 12:00:00+00:00"})
    # then each required feature is named, and the nullable ones are not
    assert resp.status_code == 422
    errors = resp.json()["detail"]
    assert {e["field"] for e in errors} == {"sched_hour", "distance"}
    assert all(e["type"] == "missing_feature" for e in errors)
    assert all("not in the online store for flight_id=" in e["msg"] for e in errors)


def test_batches_over_the_row_limit_and_bodies_over_the_byte_limit_are_refused(
    trained: Trained, plain: Server
):
    key = trained.keys(1)[0]
    big = json.dumps({"rows": [{"flight_id": key * 20}] * 200}).encode()
    assert len(big) > MAX_BODY

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    with plain.client() as http:
        # when a batch one row over serve.max_batch_rows is sent
        over = http.post("/predict", json={"rows": [{"flight_id": key}] * (MAX_ROWS + 1)})
        # and one at the limit
        at = http.post("/predict", json={"rows": [{"flight_id": key}] * MAX_ROWS})
        # and a body over serve.max_body_bytes, with its length and streamed without it
        sized = http.post("/predict", content=big, headers={"content-type": "application/json"})
        streamed = http.post("/predict", content=chunks())
        # then the server still answers
        after = http.post("/predict", json={"flight_id": key})

    # then the batch over the limit is 422 naming the setting, the one at it is answered
    assert over.status_code == 422
    e = over.json()["detail"][0]
    assert e["field"] == "rows" and "serve.max_batch_rows" in e["rule"] + e["msg"]
    assert at.status_code == 200 and len(at.json()["predictions"]) == MAX_ROWS
    # and both big bodies are 413 naming the setting, never 500
    assert "content-length" not in streamed.request.headers
    for resp in (sized, streamed):
        assert resp.status_code == 413, resp.text
        assert "serve.max_body_bytes" in resp.json()["detail"]
    assert after.status_code == 200


def test_the_v2_protocol_answers_what_predict_answers(trained: Trained, plain: Server):
    # given three scored keys
    keys = trained.keys(3)
    name = trained.params.model_name
    body = {
        "id": "v2-request-1",
        "inputs": [{"name": "flight_id", "datatype": "BYTES", "shape": [3, 1], "data": keys}],
    }
    with plain.client() as http:
        # when they are sent as an Open Inference Protocol v2 request
        resp = http.post(f"/v2/models/{name}/infer", json=body)
        meta = http.get(f"/v2/models/{name}")
        ready = http.get(f"/v2/models/{name}/ready")
        server = http.get("/v2")
        other = http.post("/v2/models/no_such_model/infer", json=body)
        # and with a value of the wrong type, and without inputs
        bad = {
            "inputs": [*body["inputs"], {"name": "temp", "datatype": "BYTES", "data": ["hot"] * 3}]
        }
        wrong = http.post(f"/v2/models/{name}/infer", json=bad)
        empty = http.post(f"/v2/models/{name}/infer", json={"id": "x"})

    # then the outputs are batch scoring's, named and typed as v2 says
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["model_name"], out["model_version"], out["id"]) == (
        name,
        trained.v1,
        "v2-request-1",
    )
    outputs = {o["name"]: o for o in out["outputs"]}
    assert outputs["prediction"]["datatype"] == "FP64" and outputs["prediction"]["shape"] == [3]
    assert outputs["prediction"]["data"] == [trained.batch(k)["prediction"] for k in keys]
    assert outputs["predicted_label"]["data"] == [trained.batch(k)["predicted_label"] for k in keys]
    assert outputs["arm"]["data"] == ["champion"] * 3
    # and the metadata lists the keys and features as inputs
    assert meta.status_code == 200
    c = trained.params.contract
    assert [i["name"] for i in meta.json()["inputs"]] == [*c.entity_keys, *c.feature_names]
    assert meta.json()["versions"] == [trained.v1]
    assert ready.json() == {"name": name, "ready": True}
    assert server.status_code == 200 and server.json()["name"] == "mlops"
    # and an unknown model is 404, a bad value or a missing input list 422 naming it
    assert other.status_code == 404
    assert wrong.status_code == 422
    assert [(e["field"], e["loc"]) for e in wrong.json()["detail"]] == [
        ("temp", ["inputs", i, "temp"]) for i in range(3)
    ]
    assert empty.status_code == 422 and empty.json()["detail"][0]["field"] == "inputs"


def test_metrics_count_what_was_answered(trained: Trained, plain: Server):
    keys = trained.keys(5)
    with plain.client() as http:
        before = metrics(http)
        # when two requests are answered (one row, then four), and one is refused
        assert http.post("/predict", json={"flight_id": keys[0]}).status_code == 200
        rows = {"rows": [{"flight_id": k} for k in keys[1:]]}
        assert http.post("/predict", json=rows).status_code == 200
        assert http.post("/predict", json={"flight_id": keys[0], "temp": 999}).status_code == 422
        after = metrics(http)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    # then /metrics parses, and every family moved by exactly what was done
    v1 = trained.v1
    assert delta("mlops_serve_requests_total", endpoint="/predict", status="200") == 2
    assert delta("mlops_serve_requests_total", endpoint="/predict", status="422") == 1
    assert delta("mlops_serve_errors_total", status="422") == 1
    assert delta("mlops_serve_request_duration_seconds_count", endpoint="/predict") == 3
    assert delta("mlops_serve_predictions_total", arm="champion", model_version=v1) == 5
    assert delta("mlops_serve_arm_request_duration_seconds_count", arm="champion") == 2
    assert delta("mlops_serve_feature_read_duration_seconds_count") == 2
    assert delta("mlops_serve_feature_rows_total") == 5
    assert delta("mlops_serve_log_rows_total") == 5
    assert sample(after, "mlops_serve_request_duration_seconds_sum", endpoint="/predict") > 0
    name = trained.params.model_name
    assert (
        sample(after, "mlops_serve_model_info", arm="champion", model_name=name, model_version=v1)
        == 1
    )
    assert sample(after, "mlops_serve_registry_degraded") == 0
    assert sample(after, "mlops_serve_model_swaps_total") == 0
    # the histogram's buckets are cumulative and end with every request
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (n, labels), v in after.items()
        if n == "mlops_serve_request_duration_seconds_bucket" and ("endpoint", "/predict") in labels
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (
        float("inf"),
        sample(after, "mlops_serve_request_duration_seconds_count", endpoint="/predict"),
    )


def test_ready_and_health(trained: Trained, plain: Server):
    with plain.client() as http:
        # when a load balancer asks whether the server is alive and ready
        ready, v2_ready = http.get("/ready"), http.get("/v2/health/ready")
        live, v2_live = http.get("/health"), http.get("/v2/health/live")
    # then it is ready, serving the champion, with the online store reachable
    assert ready.status_code == 200 and v2_ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["versions"] == {"champion": trained.v1}
    assert (body["online_store"], body["registry"]) == ("ok", "ok")
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert v2_live.status_code == 200


# ---------------------------------------------------------------------------------------
# A server of its own per scenario


def test_a_promotion_under_load_swaps_the_version_with_no_failed_request_and_logs_every_answer(
    trained: Trained,
):
    # given a server of v1 that re-reads the aliases every second, under steady load
    trained.aliases(trained.v1)
    params = trained.variant("swap", {"poll_seconds": 1})
    keys = trained.keys(40)
    answered: dict[int, list[tuple[str, int, str | None]]] = {}
    stop = threading.Event()

    def load(worker: int, srv: Server) -> None:
        got = answered.setdefault(worker, [])
        with srv.client() as http:
            i = 0
            while not stop.is_set():
                rid = f"swap-{worker}-{i}"
                try:
                    r = http.post(
                        "/predict",
                        json={"flight_id": keys[i % len(keys)]},
                        headers={"x-request-id": rid},
                    )
                    version = r.json()["predictions"][0]["model_version"] if r.is_success else None
                    got.append((rid, r.status_code, version))
                except httpx.HTTPError as exc:
                    got.append((rid, -1, repr(exc)))
                i += 1
                time.sleep(0.01)

    def seen(version: str) -> int:
        return sum(1 for g in list(answered.values()) for _, _, v in list(g) if v == version)

    def wait_for(version: str, n: int, what: str) -> None:
        deadline = time.monotonic() + 120
        while seen(version) < n:
            assert time.monotonic() < deadline, f"{what}: {seen(version)} answers by v{version}"
            time.sleep(0.1)

    with serving(params, "swap") as srv:
        workers = [threading.Thread(target=load, args=(w, srv)) for w in range(2)]
        for t in workers:
            t.start()
        try:
            wait_for(trained.v1, 30, "load before the promotion")
            # when v2 is promoted by hand while the requests keep coming
            name = trained.params.model_name
            assert (
                main(
                    [
                        "--params",
                        str(params),
                        "promote",
                        name,
                        trained.v2,
                        "--by",
                        "test",
                        "--reason",
                        "swap under load",
                        "--override",
                    ]
                )
                == 0
            )
            # then the server swaps v2 in (within a few poll intervals) and keeps answering
            wait_for(trained.v2, 30, "load after the promotion")
        finally:
            stop.set()
            for t in workers:
                t.join(60)
        with srv.client() as http:
            m = metrics(http)
            ready = http.get("/ready").json()
        code = srv.stop(signal.SIGINT)

    # then every request was answered with 200, by v1 and then by v2, never back
    results = [r for g in answered.values() for r in g]
    assert [r for r in results if r[1] != 200] == []
    for g in answered.values():
        versions = [v for _, _, v in g]
        first_v2 = versions.index(trained.v2)
        assert set(versions[:first_v2]) == {trained.v1}
        assert set(versions[first_v2:]) == {trained.v2}
    assert sample(m, "mlops_serve_model_swaps_total") == 1
    assert (
        sample(
            m, "mlops_serve_model_info", arm="champion", model_name=name, model_version=trained.v2
        )
        == 1
    )
    assert (
        sample(
            m, "mlops_serve_model_info", arm="champion", model_name=name, model_version=trained.v1
        )
        == 0
    )
    assert ready["versions"] == {"champion": trained.v2} and ready["swaps"] == 1

    # and after the clean stop the prediction log holds every answered request, once,
    # with the version that answered it
    assert code == 0, srv.output()[-3000:]
    log = served(trained.st, "swap-")
    answers = log[log["arm"] != "shadow"]
    assert len(answers) == len(results)
    assert sorted(answers["request_id"]) == sorted(rid for rid, _, _ in results)
    want = {rid: v for rid, _, v in results}
    assert all(
        want[r] == v for r, v in zip(answers["request_id"], answers["model_version"], strict=True)
    )
    assert set(answers["model_version"]) == {trained.v1, trained.v2}
    assert (answers["latency_ms"] > 0).all()
    # and the access log on stdout has a JSON line per request, with its id and status
    lines = [json.loads(x) for x in srv.out.read_text().splitlines() if x.startswith("{")]
    logged = {x["request_id"]: x["status"] for x in lines if x["path"] == "/predict"}
    assert all(logged.get(rid) == 200 for rid, _, _ in results)


def test_an_alias_moved_to_a_version_that_cannot_load_keeps_the_loaded_one_until_it_moves_on(
    trained: Trained,
):
    # given a server of v1 that re-reads the aliases every second
    trained.aliases(trained.v1)
    broken = trained.broken_version()
    params = trained.variant("broken", {"poll_seconds": 1})
    key = trained.keys(1)[0]
    with serving(params, "broken") as srv, srv.client() as http:
        # when the champion alias moves to a version whose files are damaged
        trained.aliases(broken)
        degraded = until(
            lambda: (r := http.get("/ready").json())["registry"] != "ok" and r, "no degraded state"
        )
        during = http.post("/predict", json={"flight_id": key})
        m = metrics(http)
        # and then on to a good version
        trained.aliases(trained.v2)
        healed = until(
            lambda: (r := http.get("/ready").json())["versions"]["champion"] == trained.v2 and r,
            "the server stopped following the aliases after a version failed to load",
        )
        after = http.post("/predict", json={"flight_id": key})

    # then it kept answering with v1, and said it is degraded and why
    assert during.status_code == 200
    assert during.json()["predictions"][0]["model_version"] == trained.v1
    assert degraded["status"] == "degraded" and degraded["versions"] == {"champion": trained.v1}
    assert "features.json" in degraded["registry"] or "JSON" in degraded["registry"]
    assert sample(m, "mlops_serve_registry_degraded") == 1
    # and once the alias moved on, it served the good version and was ready again
    assert after.json()["predictions"][0]["model_version"] == trained.v2
    assert (healed["status"], healed["registry"]) == ("ready", "ok")


def test_a_canary_answers_its_share_of_keys_and_each_key_always_gets_the_same_arm(
    trained: Trained,
):
    # given v1 champion and v2 challenger, with the challenger answering 30% of keys
    trained.aliases(trained.v1, trained.v2)
    params = trained.variant("canary", {"canary_share": 0.3})
    keys = trained.keys(300)
    assert len(set(keys)) == 300
    with serving(params, "canary") as srv, srv.client() as http:
        # when 300 distinct keys are asked for, in batches, then some again one by one
        first = []
        for i in range(0, len(keys), 100):
            resp = http.post(
                "/predict", json={"rows": [{"flight_id": k} for k in keys[i : i + 100]]}
            )
            assert resp.status_code == 200, resp.text
            first += resp.json()["predictions"]
        again = {}
        for k in keys[:40] * 2:
            resp = http.post("/predict", json={"flight_id": k})
            assert resp.status_code == 200, resp.text
            again.setdefault(k, []).append(resp.json()["predictions"][0]["arm"])
        reversed_batch = http.post(
            "/predict", json={"rows": [{"flight_id": k} for k in reversed(keys[:100])]}
        ).json()["predictions"]

    # then about 30% of keys are the challenger's, exactly those the stable hash picks
    arm = {p["flight_id"]: p["arm"] for p in first}
    share = sum(a == "challenger" for a in arm.values()) / len(arm)
    assert 0.2 <= share <= 0.4, share
    assert all(
        (arm[k] == "challenger") == in_canary(key_text({"flight_id": k}, ["flight_id"]), 0.3)
        for k in keys
    )
    # and each arm answers with its own version
    assert {p["model_version"] for p in first if p["arm"] == "challenger"} == {trained.v2}
    assert {p["model_version"] for p in first if p["arm"] == "champion"} == {trained.v1}
    # and a key keeps its arm, alone or in another batch order
    assert all(set(arms) == {arm[k]} for k, arms in again.items())
    assert all(p["arm"] == arm[p["flight_id"]] for p in reversed_batch)
    # and the challenger's answers are what v2 predicts for the same rows in batch
    p, st = trained.params, trained.st
    rows = pd.concat(features.batches(p, features.feature_file(p, st, SCORED), 10_000))
    canary = [x for x in first if x["arm"] == "challenger"]
    subset = rows.set_index("flight_id").loc[[x["flight_id"] for x in canary]].reset_index()
    want = connect(st).load(p.model_name, trained.v2).predict(subset, p.contract)
    assert [x["prediction"] for x in canary] == list(want)
    # and the champion's are batch scoring's
    champ = [x for x in first if x["arm"] == "champion"]
    want = [trained.batch(x["flight_id"])["prediction"] for x in champ]
    assert [x["prediction"] for x in champ] == want


def test_a_shadow_challenger_scores_every_row_and_never_answers(trained: Trained):
    # given v1 champion and v2 challenger in shadow
    trained.aliases(trained.v1, trained.v2)
    params = trained.variant("shadow", {"shadow": True})
    keys = trained.keys(30)
    with serving(params, "shadow") as srv:
        with srv.client() as http:
            # when rows are asked for one by one and in batches
            answers: dict[str, list[dict]] = {}
            for i, k in enumerate(keys[:10]):
                rid = f"shadow-single-{i}"
                resp = http.post("/predict", json={"flight_id": k}, headers={"x-request-id": rid})
                assert resp.status_code == 200, resp.text
                answers[rid] = resp.json()["predictions"]
            for i in range(10, 30, 10):
                rid = f"shadow-batch-{i}"
                body = {"rows": [{"flight_id": k} for k in keys[i : i + 10]]}
                resp = http.post("/predict", json=body, headers={"x-request-id": rid})
                assert resp.status_code == 200, resp.text
                answers[rid] = resp.json()["predictions"]
            m = metrics(http)
        # and the server is stopped as a process manager stops it
        code = srv.stop(signal.SIGTERM)

    # then every answer is the champion's
    rows = [p for ps in answers.values() for p in ps]
    assert len(rows) == 30
    assert {(p["arm"], p["model_version"]) for p in rows} == {("champion", trained.v1)}
    assert sample(m, "mlops_serve_predictions_total", arm="shadow", model_version=trained.v2) == 30
    assert (
        sample(m, "mlops_serve_predictions_total", arm="champion", model_version=trained.v1) == 30
    )
    # and the log holds each answered row once and its shadow score by v2 once
    assert code in (0, -signal.SIGTERM), srv.output()[-3000:]
    log = served(trained.st, "shadow-")
    answered = log[log["arm"] == "champion"]
    shadow = log[log["arm"] == "shadow"]
    assert len(log) == len(answered) + len(shadow)
    pairs = {(rid, p["flight_id"]) for rid, ps in answers.items() for p in ps}
    assert (
        set(zip(answered["request_id"], answered["flight_id"], strict=True)) == pairs
        and len(answered) == 30
    )
    assert (
        set(zip(shadow["request_id"], shadow["flight_id"], strict=True)) == pairs
        and len(shadow) == 30
    )
    assert set(shadow["model_version"]) == {trained.v2}
    assert set(answered["model_version"]) == {trained.v1}
    # the logged champion scores are the answers; the shadow's are v2's own
    by_key = {p["flight_id"]: p["prediction"] for p in rows}
    assert answered["prediction"].tolist() == [by_key[k] for k in answered["flight_id"]]
    merged = answered.merge(shadow, on=["request_id", "flight_id"], suffixes=("", "_shadow"))
    assert (merged["prediction"] != merged["prediction_shadow"]).any()
    # the features used are logged with the rows
    assert answered["distance"].notna().all() and answered["sched_hour"].notna().all()


def test_an_api_key_is_required_except_on_health_endpoints(trained: Trained):
    # given a server started with MLOPS_SERVE_API_KEY set
    trained.aliases(trained.v1)
    params = trained.variant("key", {})
    key = trained.keys(1)[0]
    body = {"flight_id": key}
    name = trained.params.model_name
    v2 = {"inputs": [{"name": "flight_id", "datatype": "BYTES", "shape": [1], "data": [key]}]}
    env = server_env(MLOPS_SERVE_API_KEY=API_KEY)
    with serving(params, "key", env=env) as srv, srv.client(key=None) as anon:
        # when requests come without the key, with a wrong one, and with it
        missing = anon.post("/predict", json=body)
        wrong = anon.post("/predict", json=body, headers={"Authorization": "Bearer nope"})
        v2_missing = anon.post(f"/v2/models/{name}/infer", json=v2)
        bearer = anon.post("/predict", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        header = anon.post("/predict", json=body, headers={"X-API-Key": API_KEY})
        health = [anon.get(p) for p in ("/health", "/ready", "/v2/health/live", "/metrics")]

    # then without the right key it is 401 naming the variable, and with it 200
    for resp in (missing, wrong, v2_missing):
        assert resp.status_code == 401, resp.text
        assert "MLOPS_SERVE_API_KEY" in resp.json()["detail"]
    assert bearer.status_code == 200 and header.status_code == 200
    assert bearer.json()["predictions"][0]["prediction"] == trained.batch(key)["prediction"]
    # and health, readiness and metrics stay open
    assert [r.status_code for r in health] == [200] * 4
    # and the key never appears in what the server printed
    assert API_KEY not in srv.output()


def test_binding_beyond_loopback_without_a_key_is_refused(trained: Trained):
    # when serve is asked to listen on every interface without MLOPS_SERVE_API_KEY
    params = trained.variant("open", {})
    cmd = [
        sys.executable,
        "-m",
        "mlops",
        "--params",
        str(params),
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
    ]
    done = subprocess.run(cmd, env=server_env(), capture_output=True, text=True, timeout=300)
    # then it exits non-zero before serving, saying which variable to set
    assert done.returncode != 0
    assert "MLOPS_SERVE_API_KEY" in done.stderr
    assert "0.0.0.0" in done.stderr


@pytest.fixture
def redis_online(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The scored week materialised into a Redis db of its own, flushed before and after."""
    redis = pytest.importorskip("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    client.flushdb()
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    monkeypatch.setenv("MLOPS_FEAST_ONLINE", url)
    assert main(["--params", str(trained.params_path), "materialize", "--partitions", SCORED]) == 0
    assert client.dbsize() > 0
    try:
        yield url
    finally:
        client.flushdb()


def test_features_from_a_redis_online_store_give_the_batch_prediction(
    trained: Trained, redis_online: str
):
    # given the scored week in Redis and a server reading its features from there
    trained.aliases(trained.v1)
    params = trained.variant("redis", {})
    keys = trained.keys(4, label=1) + trained.keys(4, label=0)
    env = server_env(MLOPS_FEAST_ONLINE=redis_online)
    with serving(params, "redis", env=env) as srv, srv.client() as http:
        # when the keys alone are sent
        resp = http.post("/predict", json={"rows": [{"flight_id": k} for k in keys]})
        ready = http.get("/ready")
    # then the answers are batch scoring's
    assert resp.status_code == 200, resp.text
    got = resp.json()["predictions"]
    assert [p["prediction"] for p in got] == [trained.batch(k)["prediction"] for k in keys]
    assert [p["predicted_label"] for p in got] == [
        trained.batch(k)["predicted_label"] for k in keys
    ]
    assert ready.json()["online_store"] == "ok"


# ---------------------------------------------------------------------------------------
# What was served, read back: drift of the served rows, and per-arm status with outcomes


def test_served_traffic_gets_a_drift_report_and_status_shows_each_arm_with_its_outcomes(
    trained: Trained, capsys: pytest.CaptureFixture[str]
):
    # given a canary server that answered 80 scored keys, stopped cleanly
    trained.aliases(trained.v1, challenger=trained.v2)
    params = trained.variant("arms", {"canary_share": 0.5})
    keys = trained.keys(80)
    with serving(params, "arms") as srv, srv.client() as http:
        answers = [http.post("/predict", json={"flight_id": k}).json() for k in keys]
        assert srv.stop() == 0
    ids = {a["request_id"] for a in answers}
    arms = {a["predictions"][0]["arm"] for a in answers}
    assert arms == {CHAMPION, CHALLENGER}
    st = trained.st
    before = traffic.read(st)
    answered = before[before["arm"] != "shadow"]
    assert ids <= set(answered["request_id"])

    # when the scored week's outcomes are joined (mlops label)
    assert main(["--params", str(trained.params_path), "label", "--partitions", SCORED]) == 0
    capsys.readouterr()
    # and status is asked for, as JSON
    assert main(["--params", str(trained.params_path), "status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    serving_ = next(r for r in rows if r["model"] == trained.params.model_name)["serving"]
    # then every answered row of the log is counted, per arm, with its outcomes where known
    assert serving_["rows"] == len(answered)
    known = set(pd.read_parquet(st.labels_dir / f"{SCORED}.parquet")["flight_id"])
    for arm in (CHAMPION, CHALLENGER):
        got = serving_["arms"][arm]
        assert got["rows"] == int((answered["arm"] == arm).sum())
        assert got["latency_ms"]["p50"] is not None and got["latency_ms"]["p99"] >= 0
        # the rows whose keys the label store now holds are labelled (cancelled flights not)
        mine = answered[answered["arm"] == arm]
        assert got["labelled"] == int(mine["flight_id"].isin(known).sum()) > 0
        assert got["performance"] is not None and 0 <= got["performance"]["roc_auc"] <= 1

    # when the served partition is monitored
    assert main(["--params", str(trained.params_path), "monitor", "--served"]) == 0
    # then each partition the log holds has its drift report, made from the answered rows
    pids = traffic.served_partitions(st)
    assert pids
    for pid in pids:
        summary = json.loads((st.reports_dir / "served" / pid / "drift.json").read_text())
        assert summary["partition"] == pid and summary["source"] == "served"
        assert summary["rows"]["current"] == int((traffic.read(st, pid)["arm"] != "shadow").sum())
        assert (st.reports_dir / "served" / pid / "drift.html").stat().st_size > 10_000
