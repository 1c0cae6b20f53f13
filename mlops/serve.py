"""serve: answer prediction requests online with the registry's champion.

``mlops serve`` starts an ASGI app (FastAPI on uvicorn) around :class:`mlops.predictor.
Predictor`: ``POST /predict`` (one row or ``{"rows": [...]}``; ``?explain=true`` adds each
answer's top SHAP contributions), the Open Inference
Protocol v2 (``/v2/...``), ``/health``, ``/ready`` and ``/metrics``. A background thread
re-reads the aliases every ``serve.poll_seconds`` and swaps a moved version in; answered
rows go to the prediction log (``mlops.traffic``), written off the request path.

Requests are checked against the contract (422 naming the field and the rule), bodies
above ``serve.max_body_bytes`` get 413 and requests running past ``serve.timeout_s`` 504.
``MLOPS_SERVE_API_KEY``, when set, is required on every request but the health and
metrics endpoints (``Authorization: Bearer <key>`` or ``X-API-Key``); binding to an
interface other than loopback without it is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request  # the route signatures are read at runtime
from starlette.responses import Response

from mlops.config import ENV_PARAMS, Params, Settings, load_params, settings
from mlops.predictor import SHADOW, Predictor
from mlops.registry import CHAMPION, RegistryError
from mlops.request_schema import RequestError
from mlops.serve_http import Guard, access_log, api_key
from mlops.serve_metrics import WORKERS_ENV

if TYPE_CHECKING:
    from mlops.serve_metrics import Metrics
    from mlops.traffic import Log

HOST_ENV = "MLOPS_SERVE_HOST"
INLINE_ROWS = 8  # requests of up to this many rows are predicted on the event loop
EXPLAIN_TOP_K = 5  # the contributions ``?explain=true`` returns per row unless top_k says
log = logging.getLogger(__name__)


def _json(obj: Any, status: int = 200) -> Response:
    import orjson

    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def build(
    params: Params,
    st: Settings,
    predictor: Predictor | None = None,
    key: str | None = None,
) -> FastAPI:
    """The ASGI app around ``predictor`` (loaded at startup when not loaded yet)."""
    from starlette.concurrency import run_in_threadpool

    from mlops import traffic
    from mlops.serve_metrics import CONTENT_TYPE, Metrics

    metrics = Metrics()
    pred = predictor or Predictor(params, st)
    pred.on_swap.append(metrics.swapped)
    if pred.arms is not None:
        metrics.swapped(pred.arms, None)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if pred.arms is None:
            await run_in_threadpool(pred.load)
        with contextlib.suppress(Exception):  # warm the store's connection; /ready reports it
            await run_in_threadpool(pred.check_store)
        plog = traffic.Log(params, st, pred.schema.key_types)
        stop = threading.Event()
        poller = threading.Thread(target=_poll, args=(pred, stop, metrics), daemon=True)
        poller.start()
        state["log"] = plog
        try:
            yield
        finally:
            stop.set()
            written = plog.close()
            log.info("prediction log: %d rows in %s", written, st.served_dir)

    app = FastAPI(title=f"mlops serve: {params.model_name}", lifespan=lifespan)
    name = params.model_name

    async def answer(request: Request, rows: list[Any], rid: str) -> Any:
        request.scope["state"]["rows"] = len(rows)
        t0 = time.perf_counter()
        if len(rows) <= INLINE_ROWS:  # a millisecond: cheaper here than a thread hand-off
            out = pred.predict(rows, rid)
        else:
            out = await run_in_threadpool(pred.predict, rows, rid)
        ms = (time.perf_counter() - t0) * 1000
        for rec in out.records:
            rec["latency_ms"] = ms
        plog: Log = state["log"]
        plog.append(out.records)
        metrics.log_rows.inc(len(out.records))
        if out.store_reads:
            metrics.feature_latency.observe(out.feature_seconds)
            metrics.feature_rows.inc(out.store_reads)
        arms: dict[tuple[str, str], int] = {}
        for rec in out.records:
            arms[(rec["arm"], rec["model_version"])] = (
                arms.get((rec["arm"], rec["model_version"]), 0) + 1
            )
        for (arm, version), n in arms.items():
            metrics.predictions.labels(arm, version).inc(n)
            if arm != SHADOW:
                metrics.arm_latency.labels(arm).observe(ms / 1000)
        return out

    async def body_of(request: Request) -> Any:
        import orjson

        raw = await request.body()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            err = {"loc": ["body"], "field": "body", "rule": "request: a JSON body"}
            raise RequestError(
                [{**err, "msg": f"not JSON: {exc}", "type": "json_invalid"}]
            ) from None

    def refused(exc: Exception) -> Response:
        if isinstance(exc, RequestError):
            return _json({"detail": exc.errors}, 422)
        return _json({"detail": str(exc)}, 503)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        rid = request.scope["state"]["request_id"]
        try:
            rows = pred.schema.parse(await body_of(request))
            out = await answer(request, rows, rid)
            top = explain_top_k(request.query_params.get("explain"), request.query_params)
            if top:
                await run_in_threadpool(explained, pred, out, top)
        except (RequestError, RegistryError) as exc:
            return refused(exc)
        return _json({"request_id": rid, "predictions": out.predictions})

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        rid = request.scope["state"]["request_id"]
        if model != name:
            return _json(
                {"error": f"model {model!r} is not served; this server serves {name!r}"}, 404
            )
        try:
            rows, given_id = pred.schema.v2_rows(await body_of(request))
            out = await answer(request, rows, rid)
        except RequestError as exc:
            return _json({"error": str(exc), "detail": exc.errors}, 422)
        except RegistryError as exc:
            return _json({"error": str(exc)}, 503)
        return _json(_v2_response(out.predictions, name, given_id or rid, params))

    @app.get("/v2/models/{model}")
    async def v2_model(model: str) -> Response:
        arms = pred.arms
        if model != name or arms is None:
            return _json({"error": f"model {model!r} is not served"}, 404)
        return _json(pred.schema.v2_metadata(name, list(arms.versions().values())))

    @app.get("/v2/models/{model}/ready")
    async def v2_model_ready(model: str) -> Response:
        ok = model == name and pred.arms is not None
        return _json({"name": model, "ready": ok}, 200 if ok else 503)

    @app.get("/v2")
    async def v2_server() -> Response:
        from importlib.metadata import version

        return _json({"name": "mlops", "version": version("mlops"), "extensions": []})

    @app.get("/health")
    @app.get("/v2/health/live")
    async def health() -> Response:
        return _json({"status": "alive"})

    @app.get("/ready")
    @app.get("/v2/health/ready")
    async def ready() -> Response:
        body, code = await run_in_threadpool(readiness, pred)
        return _json(body, code)

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.degraded.set(1 if pred.degraded else 0)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return Guard(app, params, metrics, key)  # type: ignore[return-value]


def explain_top_k(flag: str | None, query: Any) -> int:
    """Pure: how many features ``?explain=true[&top_k=K]`` asks for (0: no explanation)."""
    if (flag or "").lower() not in ("1", "true", "yes"):
        return 0
    try:
        k = int(query.get("top_k") or EXPLAIN_TOP_K)
    except ValueError:
        k = 0
    if not 1 <= k <= 50:
        err = {"loc": ["query", "top_k"], "field": "top_k", "rule": "an integer 1-50"}
        raise RequestError([{**err, "msg": "top_k must be 1 to 50", "type": "int_range"}])
    return k


def explained(pred: Predictor, out: Any, k: int) -> None:
    """Add ``explanation`` (base, output, the top ``k`` contributions) to each answer.

    The contributions are exact SHAP of the version that answered, on the features it was
    answered from (the log records, in row order per arm). ``mlops serve`` answers the
    request's ``?explain=true``; ``top_k`` sets how many (default ``EXPLAIN_TOP_K``).
    """
    import pandas as pd

    from mlops import explain

    arms = pred.arms
    c = pred.params.contract
    for arm in {p["arm"] for p in out.predictions}:
        model = None if arms is None else arms.champion if arm == CHAMPION else arms.challenger
        recs = [r for r in out.records if r["arm"] == arm]
        answers = [p for p in out.predictions if p["arm"] == arm]
        if model is None or model.loaded.version != answers[0]["model_version"]:
            for ans in answers:  # swapped out between the answer and now: not guessed
                ans["explanation"] = {"error": "the version that answered is no longer loaded"}
            continue
        why = explain.contributions(model.loaded, pd.DataFrame(recs), c)
        for i, (ans, row) in enumerate(zip(answers, explain.top_k(why, k), strict=True)):
            ans["explanation"] = {
                "base": float(why.base[i]),
                "output": why.output,
                "method": why.method,
                "top": row,
            }


def readiness(pred: Predictor) -> tuple[dict[str, Any], int]:
    """``/ready``: 200 when a model is loaded and the online store answers.

    A registry that cannot be read keeps the loaded versions: still 200, ``degraded``.
    """
    arms = pred.arms
    body: dict[str, Any] = {
        "model": pred.params.model_name,
        "versions": arms.versions() if arms else {},
        "swaps": pred.swaps,
        "registry": pred.degraded or "ok",
    }
    try:
        pred.check_store()
        body["online_store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
        body["online_store"] = f"unreachable: {type(exc).__name__}: {exc}"
    ok = arms is not None and body["online_store"] == "ok"
    body["status"] = ("degraded" if pred.degraded else "ready") if ok else "not ready"
    return body, 200 if ok else 503


def _poll(pred: Predictor, stop: threading.Event, metrics: Metrics) -> None:
    while not stop.wait(pred.params.serve.poll_seconds):
        pred.refresh()
        metrics.degraded.set(1 if pred.degraded else 0)


def _v2_response(
    preds: list[dict[str, Any]], name: str, rid: str, params: Params
) -> dict[str, Any]:
    n = len(preds)
    outputs = [
        {
            "name": "prediction",
            "datatype": "FP64",
            "shape": [n],
            "data": [p["prediction"] for p in preds],
        }
    ]
    if params.contract.task == "classification":
        data = [p["predicted_label"] for p in preds]
        outputs.append({"name": "predicted_label", "datatype": "INT64", "shape": [n], "data": data})
    for col in ("model_version", "arm"):
        outputs.append(
            {"name": col, "datatype": "BYTES", "shape": [n], "data": [p[col] for p in preds]}
        )
    versions = sorted({p["model_version"] for p in preds})
    return {"model_name": name, "model_version": ",".join(versions), "id": rid, "outputs": outputs}


def factory() -> FastAPI:
    """The app of one uvicorn worker, configured from the environment (``run`` sets it)."""
    from mlops import logs

    logs.setup()
    access_log()
    st = settings()
    logs.to_file(st.state_dir / "logs" / "mlops.log")
    host = os.environ.get(HOST_ENV, "127.0.0.1")
    return build(load_params(st.params_path), st, key=api_key(host))


def run(params: Params, st: Settings, host: str, port: int, workers: int = 1) -> None:
    """Serve until interrupted; the champion is loaded first, so a bad start fails fast."""
    import uvicorn

    key = api_key(host)
    access_log()
    pred = Predictor(params, st)
    arms = pred.load()
    versions = ", ".join(f"{a} v{v}" for a, v in arms.versions().items())
    print(f"serve: {params.model_name} {versions} on http://{host}:{port} ({workers} worker(s))")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,
        "log_level": "warning",
    }
    if workers == 1:
        uvicorn.run(build(params, st, pred, key), **options)
        return
    os.environ[HOST_ENV] = host
    os.environ[ENV_PARAMS] = str(st.params_path)
    st.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="serve-metrics-", dir=st.state_dir) as folder:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # the workers' metric files
        os.environ[WORKERS_ENV] = str(workers)
        uvicorn.run("mlops.serve:factory", factory=True, workers=workers, **options)
