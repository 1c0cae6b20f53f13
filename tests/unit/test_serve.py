"""mlops serve's guard: who may bind where, the API key, body limits, timeouts, request ids
and the access log, around a small ASGI app driven with real ASGI messages."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse

from mlops.config import ConfigError, load_params
from mlops.serve_http import API_KEY_ENV, OPEN_PATHS, Guard, api_key, is_loopback
from mlops.serve_metrics import Metrics
from tests.conftest import FLIGHTS

KEY = "placeholder-key-for-tests"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_only_loopback_addresses_count_as_this_machine(host: str, loopback: bool):
    assert is_loopback(host) is loopback


def test_a_key_is_needed_to_bind_beyond_loopback():
    # a loopback bind needs none; with one set, every bind uses it
    assert api_key("127.0.0.1", {}) is None
    assert api_key("0.0.0.0", {API_KEY_ENV: KEY}) == KEY
    assert api_key("127.0.0.1", {API_KEY_ENV: KEY}) == KEY
    # without one (or with an empty one) any other interface is refused, naming the variable
    for env in ({}, {API_KEY_ENV: ""}):
        with pytest.raises(
            ConfigError, match=f"binding to 0.0.0.0 needs an API key: set {API_KEY_ENV}"
        ):
            api_key("0.0.0.0", env)


# ---------------------------------------------------------------------------------------
# the guard


def app() -> tuple[FastAPI, list[bytes]]:
    """Routes that echo the body they read, sleep, or answer; what the app received."""
    api, bodies = FastAPI(), []

    @api.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        raw = await request.body()
        bodies.append(raw)
        return JSONResponse({"bytes": len(raw), "id": request.scope["state"]["request_id"]})

    @api.get("/slow")
    async def slow() -> JSONResponse:
        await asyncio.sleep(30)
        return JSONResponse({})

    @api.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    return api, bodies


def guard(key: str | None = None, **serve: Any) -> tuple[Guard, list[bytes], Metrics]:
    params = load_params(FLIGHTS)
    params = params.model_copy(
        update={"serve": params.serve.model_copy(update={"max_body_bytes": 2048, **serve})}
    )
    api, bodies = app()
    metrics = Metrics()
    return Guard(api, params, metrics, key), bodies, metrics


def call(
    asgi: Any,
    path: str,
    method: str = "POST",
    chunks: list[bytes] | None = None,
    headers: dict[str, str] | None = None,
    length: bool = True,
) -> tuple[int, dict[str, str], Any]:
    """One request as a server sends it: the body in ``chunks`` (with its length or not)."""
    chunks = chunks if chunks is not None else [b""]
    hdrs = dict(headers or {})
    if length:
        hdrs["content-length"] = str(sum(map(len, chunks)))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in hdrs.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # the client waits for the answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asgi(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    out_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    parsed = json.loads(body) if body.startswith(b"{") else body.decode()
    return start["status"], out_headers, parsed


def test_with_a_key_only_the_health_endpoints_are_open():
    g, bodies, _ = guard(KEY)
    # when requests come without the key, with a wrong one, and with it either way
    missing = call(g, "/predict", chunks=[b"{}"])
    wrong = call(g, "/predict", chunks=[b"{}"], headers={"Authorization": "Bearer nope"})
    bearer = call(g, "/predict", chunks=[b"{}"], headers={"Authorization": f"Bearer {KEY}"})
    header = call(g, "/predict", chunks=[b"{}"], headers={"X-API-Key": KEY})
    health = call(g, "/health", method="GET")
    # then only the right key reaches the app, and the refusal names the variable
    assert [missing[0], wrong[0], bearer[0], header[0], health[0]] == [401, 401, 200, 200, 200]
    assert API_KEY_ENV in missing[2]["detail"]
    assert len(bodies) == 2
    assert "/health" in OPEN_PATHS and "/predict" not in OPEN_PATHS


def test_without_a_key_every_request_reaches_the_app():
    g, bodies, _ = guard(None)
    assert call(g, "/predict", chunks=[b"{}"])[0] == 200 and bodies == [b"{}"]


def test_a_request_id_is_kept_or_made_and_returned():
    g, _, _ = guard()
    status, headers, body = call(g, "/predict", headers={"X-Request-ID": "client-7"})
    assert status == 200 and headers["x-request-id"] == "client-7" == body["id"]
    _, made, body = call(g, "/predict")
    assert len(made["x-request-id"]) == 32 and made["x-request-id"] == body["id"]
    assert made["x-request-id"] != call(g, "/predict")[1]["x-request-id"]


def counts(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of ``metrics`` by name and labels.

    Compared before and after, never as totals, and each test counts labels of its own:
    Feast sets PROMETHEUS_MULTIPROC_DIR when imported, and then every Metrics of one
    process shares its values.
    """
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_a_body_over_the_limit_is_refused_whether_its_length_is_sent_or_not():
    g, bodies, metrics = guard()
    before = counts(metrics)
    big = [b"x" * 1000] * 3  # 3,000 bytes over a 2,048-byte limit
    # when it is sent with its length, and streamed in chunks without it
    sized = call(g, "/predict", chunks=big)
    streamed = call(g, "/predict", chunks=big, length=False)
    # then both are 413 naming the setting, and the app never saw either
    for status, _, body in (sized, streamed):
        assert status == 413
        assert "serve.max_body_bytes" in body["detail"]
    assert bodies == []
    # and a streamed body under the limit reaches the app whole
    status, _, body = call(g, "/predict", chunks=[b"a" * 1000, b"b" * 1000], length=False)
    assert status == 200 and body["bytes"] == 2000 and bodies == [b"a" * 1000 + b"b" * 1000]
    after = counts(metrics)
    assert (
        moved(before, after, "mlops_serve_requests_total", endpoint="/predict", status="413") == 2
    )
    assert moved(before, after, "mlops_serve_errors_total", status="413") == 2


def test_a_request_running_past_the_timeout_gets_504():
    g, _, metrics = guard(timeout_s=0.2)
    before = counts(metrics)
    status, _, body = call(g, "/slow", method="GET")
    assert status == 504 and body["detail"] == "timed out after 0.2s"
    assert moved(before, counts(metrics), "mlops_serve_errors_total", status="504") == 1


def test_every_request_gets_one_json_access_log_line(caplog):
    g, _, _ = guard(KEY)
    with caplog.at_level(logging.INFO, logger="mlops.serve.access"):
        call(g, "/predict", chunks=[b"{}"], headers={"X-API-Key": KEY, "X-Request-ID": "a-1"})
        call(g, "/predict", chunks=[b"{}"], headers={"X-Request-ID": "a-2"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "mlops.serve.access"]
    assert [(x["request_id"], x["status"], x["path"]) for x in lines] == [
        ("a-1", 200, "/predict"),
        ("a-2", 401, "/predict"),
    ]
    assert all(x["duration_ms"] >= 0 and x["client"] == "127.0.0.1" for x in lines)
    assert KEY not in caplog.text


def test_made_up_paths_share_one_metric_series_whatever_their_status():
    # given a server that requires a key
    g, _, metrics = guard(KEY)
    before = counts(metrics)
    # when made-up paths are asked for, without the key and with it, and a real one without
    for i in range(3):
        assert call(g, f"/wp-admin/{i}.php", method="GET")[0] == 401
    assert call(g, "/nothing-here", method="GET", headers={"X-API-Key": KEY})[0] == 404
    assert call(g, "/slow", method="GET")[0] == 401
    # then the made-up ones are counted under "other" and the real one under its path
    after = counts(metrics)
    assert not [k for k in after if "wp-admin" in str(k) or "nothing-here" in str(k)]
    name = "mlops_serve_requests_total"
    assert moved(before, after, name, endpoint="other", status="401") == 3
    assert moved(before, after, name, endpoint="other", status="404") == 1
    assert moved(before, after, name, endpoint="/slow", status="401") == 1
