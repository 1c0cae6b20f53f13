"""Online serving: ``mlops serve`` beside a bare FastAPI app and ``mlflow models serve``.

    python -m bench.run --stages serve

A demo project (``mlops run``: champion XGBoost v1, the features of 2013-07 online in
SQLite) gets a second version (``mlops train`` again with another seed) and the same
online features in Redis (db 10, flushed); it is kept under ``<work>/serve`` for the next
run. Servers have one worker each on 127.0.0.1. The load comes from another process
(``python -m bench.serve load``): an open-loop asyncio client on raw keep-alive sockets
that sends at a fixed rate whatever the answers and times every request from the moment
it was due, so a server that falls behind is charged for the queue it builds (the
client's own lateness is reported too). Every request's times are kept in
``<work>/serve/load/``. The machine may be shared: each comparison runs ``REPEAT`` times,
interleaved, and the least disturbed run is kept (all are recorded).

- One row per request (only the key: features from the online store) at 200 requests/s,
  SQLite and Redis: ``mlops serve`` against ``bench/bare_serve.py`` (FastAPI, Feast's
  ``get_online_features`` with the same feature service, the booster's
  ``inplace_predict``), both running, one under load at a time; their answers must be
  the same. Then ``mlflow models serve`` with the features in the request (it cannot
  read them): it refuses the registered XGBoost version (JSON arrives as ``object``
  columns, which XGBoost rejects), so the same booster is served from a pyfunc that
  casts the categories first. Each server also answers 1,000 requests one at a time.
- Batches of 100 and 1,000 rows, one request at a time: rows/s of ``mlops serve`` against
  Feast's online read plus ``inplace_predict`` of the same rows in one process (the
  booster on all cores as served, and on one thread).
- A champion swap under 200 requests/s from a cold start: the alias moves to v2 (``mlops
  promote MODEL V --override``) and back while the load runs; errors, when the new
  version first answered, and answers by the old version after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RATE = 200  # requests per second
SECONDS, WARMUP = 20, 5  # measured, after a warm-up that is not, per latency run
BATCHES = (100, 1_000)  # rows per request
BATCH_ROWS = 30_000  # rows sent per batch size (after 5 warm-up requests)
SWAP_SECONDS, SWAPS_AT = 50, (8, 28)  # load length; seconds in when the alias moves
KEYS = 2_000  # entity keys of the online partition, sampled once
AGREE = 50  # keys whose answers must be the same on every server
# A Redis db of its own: the tests use 11-13, bench/celery 14 and the online-write case 15.
REDIS_DB = 10
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
SWAP_SEED = 7
REPEAT = 3  # latency and batch runs, interleaved; the least disturbed is kept
SEQUENTIAL = 1_000  # single-row requests sent one at a time, after the paced runs


# --------------------------------------------------------------------------- load generator
STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})")
LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
VERSION = re.compile(rb'"model_version": ?"([^"]*)"')
IDLE_S = 2.0  # a pooled connection idle this long is closed, not reused


class Conn:
    """One keep-alive HTTP/1.1 connection: a request out, its response read back whole."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.used = time.perf_counter()

    def fresh(self) -> bool:
        """Still open and idle for less than the server's keep-alive (uvicorn: 5 s)."""
        return not self.r.at_eof() and time.perf_counter() - self.used < IDLE_S

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        return cls(*await asyncio.open_connection(host, port))

    async def call(self, raw: bytes) -> tuple[int, bytes]:
        self.w.write(raw)
        head = await self.r.readuntil(b"\r\n\r\n")
        m = STATUS.match(head)
        if m is None:
            raise ValueError(f"not an HTTP response: {head[:60]!r}")
        length = LENGTH.search(head)
        if length is not None:
            body = await self.r.readexactly(int(length.group(1)))
            self.used = time.perf_counter()
            return int(m.group(1)), body
        body = b""
        while b"chunked" in head.lower():
            size = int((await self.r.readuntil(b"\r\n")).strip(), 16)
            chunk = await self.r.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        self.used = time.perf_counter()
        return int(m.group(1)), body

    def close(self) -> None:
        self.w.close()


def http_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# due (s from the start), latency, service time, status (0: failed), version (or the error)
Rec = tuple[float, float, float, int, str]


async def _paced(cfg: dict[str, Any], raws: list[bytes]) -> tuple[list[Rec], float]:
    """Open loop: request i is due at start + i / rate and sent then, on an idle
    connection or a new one (at most ``connections`` in flight); latency counts from the
    due time, service time from the write."""
    clock = time.perf_counter  # uvloop's loop.time() is cached per iteration, in ms
    host, port, rate = cfg["host"], cfg["port"], cfg["rate"]
    idle: list[Conn] = []
    slots = asyncio.Semaphore(cfg["connections"])
    recs: list[Rec] = []
    start = clock() + 0.1
    wall_start = time.time() + 0.1

    async def one(i: int, due: float) -> None:
        async with slots:
            conn, sent = None, clock()
            while idle and conn is None:
                conn = idle.pop()
                if not conn.fresh():
                    conn.close()
                    conn = None
            try:
                conn = conn or await Conn.open(host, port)
                sent = clock()
                status, body = await asyncio.wait_for(conn.call(raws[i % len(raws)]), 10)
                idle.append(conn)
                m = VERSION.search(body)
                what = m.group(1).decode() if m else ""
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                status, what = 0, type(exc).__name__
                if conn is not None:
                    conn.close()
            done = clock()
        recs.append((due - start, done - due, done - sent, status, what))

    pending: set[asyncio.Task[None]] = set()
    for i in range(int((cfg["warmup"] + cfg["seconds"]) * rate)):
        due = start + i / rate
        wait = due - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(one(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    for conn in idle:
        conn.close()
    return [r for r in recs if r[0] >= cfg["warmup"]], wall_start


async def _closed(cfg: dict[str, Any], raws: list[bytes]) -> tuple[list[Rec], float]:
    """Closed loop on one connection: the next request goes when the answer is in."""
    clock = time.perf_counter
    conn = await Conn.open(cfg["host"], cfg["port"])
    for raw in raws[: cfg["warmup"]]:
        await conn.call(raw)
    recs: list[Rec] = []
    t0 = clock()
    for i in range(cfg["requests"]):
        sent = clock()
        status, body = await conn.call(raws[i % len(raws)])
        m = VERSION.search(body)
        done = clock()
        recs.append((sent - t0, done - sent, done - sent, status, m.group(1).decode() if m else ""))
    conn.close()
    return recs, clock() - t0


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (sorted here), in milliseconds."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, int(q / 100 * len(s) + 0.5) - 1))] * 1000, 3)


def summarize(recs: list[Rec]) -> dict[str, Any]:
    ok = [r for r in recs if r[3] == 200]
    lat = [r[1] for r in ok]
    statuses: dict[str, int] = {}
    for r in recs:  # a failed exchange counts under the exception's name
        key = str(r[3]) if r[3] else r[4]
        statuses[key] = statuses.get(key, 0) + 1
    span = (recs[-1][0] - recs[0][0]) if len(recs) > 1 else 0
    busy = max((r[0] + r[1] for r in recs), default=0) - min((r[0] for r in recs), default=0)
    return {
        "requests": len(recs),
        "errors": len(recs) - len(ok),
        "statuses": statuses,
        "achieved_rate": round((len(recs) - 1) / span, 1) if span else None,
        # answers per second from the first send to the last answer: below the rate, the
        # server could not keep up and its queue (the latency) grew all along
        "completed_rate": round(len(ok) / busy, 1) if busy else None,
        **{f"p{q:g}_ms": pct(lat, q) for q in (50, 90, 99, 99.9)},
        "max_ms": pct(lat, 100),
        "mean_ms": round(sum(lat) / len(lat) * 1000, 3) if lat else None,
        "service_p50_ms": pct([r[2] for r in ok], 50),
        "service_p99_ms": pct([r[2] for r in ok], 99),
        # How late the client sent (its own scheduling on a shared machine), p99.
        "client_late_p99_ms": pct([r[1] - r[2] for r in ok], 99),
    }


def load_main(cfg_path: str) -> int:
    """``python -m bench.serve load CONFIG``: run one load, write every request, print
    the summary as the last line."""
    cfg = json.loads(Path(cfg_path).read_text())
    bodies = json.loads(Path(cfg["bodies"]).read_text())
    raws = [http_request(cfg["host"], cfg["port"], cfg["path"], b.encode()) for b in bodies]
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    cpu0 = time.process_time()
    run = _paced if cfg["mode"] == "paced" else _closed
    recs, extra = asyncio.run(run(cfg, raws))
    out = summarize(recs)
    out["client_cpu_seconds"] = round(time.process_time() - cpu0, 2)
    if cfg["mode"] == "paced":
        out["wall_start"] = extra
    else:
        out["seconds"] = round(extra, 3)
    Path(cfg["records"]).write_text(json.dumps(recs))
    print("\n" + json.dumps(out))
    return 0


# --------------------------------------------------------------------------- the project
def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What every process of the stage gets: the bench variables, the venv's tools first."""
    from bench.run import ENV, PY

    env = {**os.environ, **ENV}
    env["PATH"] = f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLOPS_FEAST_ONLINE", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLOPS_DATA_ROOT", None)
    return {**env, **(extra or {})}


def _check(res: dict[str, Any], what: str) -> dict[str, Any]:
    if res.get("returncode") != 0:
        raise RuntimeError(f"{what} failed (exit {res.get('returncode')}); see {res['log']}")
    return res


def prepare(work: Path) -> dict[str, Any]:
    """The demo project, its second version, Redis, and the spec every server reads."""
    import yaml

    from bench.run import PY, project, redis_up, spawn, spawn_json

    base = work / "serve"
    root, logs = base / "proj", base / "logs"
    spec_path = base / "spec.json"
    if not spec_path.is_file():
        print("  serve: a demo project with a second version", flush=True)
        project(root, "demo", work)
        _check(spawn(_cli("params.yaml", "run"), logs / "demo.log", root), "demo")
        params = yaml.safe_load((root / "params.yaml").read_text())
        xgb = [c for c in params["train"]["candidates"] if c["kind"] == "xgboost"]
        params["train"].update(seed=SWAP_SEED, candidates=xgb)
        (root / "params-swap.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        cmd = _cli("params-swap.yaml", "train")
        _check(spawn(cmd, logs / "train-again.log", root), "second train")
        cmd = [PY, "-m", "bench.serve", "spec", str(root), str(spec_path)]
        _check(spawn_json(cmd, logs / "spec.log"), "spec")
    spec = json.loads(spec_path.read_text())
    spec["online"].pop("redis", None)
    if redis_up():
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
        cmd = _cli(
            "params.yaml", "materialize", "--partitions", spec["online_partition"], online=REDIS_URL
        )
        _check(spawn(cmd, logs / "materialize-redis.log", root), "materialize into Redis")
        spec["online"]["redis"] = spec["redis_config"]
    spec_path.write_text(json.dumps(spec, indent=1))
    return spec


def write_spec(root: Path, out: Path) -> dict[str, Any]:
    """``python -m bench.serve spec ROOT OUT``: the champion's files and threshold, the
    other version, the online stores, sampled keys with their features, and the pyfunc
    stand-in that ``mlflow models serve`` can answer with."""
    import mlflow
    import pandas as pd

    from mlops import features, registry
    from mlops.config import load_params, settings

    params_path = root / "params.yaml"
    p, st = load_params(params_path), settings(params_path)
    reg = registry.connect(st)
    name = p.model_name
    champ = reg.version_by_alias(name, registry.CHAMPION)
    versions = sorted(int(v.version) for v in reg.client.search_model_versions(f"name = '{name}'"))
    other = str(max(v for v in versions if v != int(champ.version)))
    uri = f"models:/{name}/{champ.version}"
    local = Path(mlflow.artifacts.download_artifacts(uri))
    meta_file = mlflow.artifacts.download_artifacts(
        run_id=champ.run_id, artifact_path="features.json"
    )
    meta = json.loads(Path(meta_file).read_text())
    latest = sorted(features.source_dir(p, st).glob("*.parquet"))[-1]
    df = pd.read_parquet(latest).sample(n=KEYS, random_state=0)
    key = p.contract.entity_keys[0]
    rows = [
        [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in r]
        for r in df[meta["features"]].astype(object).itertuples(index=False)
    ]
    (out.parent / "keys.json").write_text(json.dumps({"keys": df[key].tolist(), "rows": rows}))
    os.environ["MLOPS_FEAST_ONLINE"] = REDIS_URL
    redis_config = features.online_store_config(settings(params_path))
    os.environ.pop("MLOPS_FEAST_ONLINE")
    spec = {
        "root": str(root),
        "model_name": name,
        "champion": str(champ.version),
        "other": other,
        "key": key,
        "features": meta["features"],
        "categories": meta["categories"],
        "capped": sorted(meta.get("capped_categories") or {}),
        "threshold": registry.version_threshold(champ.tags, name, str(champ.version)),
        "model": str(next(local.rglob("model.ubj"))),
        "project": p.materialize.project,
        "service": features.service_name(p),
        "registry": str(st.data_root / "feast" / "registry.db"),
        "repo_path": str(st.feast_repo),
        "online": {"sqlite": features.online_store_config(st)},
        "redis_config": redis_config,
        "online_partition": latest.stem,
        "poll_seconds": p.serve.poll_seconds,
        "keys_file": str(out.parent / "keys.json"),
        "pyfunc": str(out.parent / "pyfunc"),
    }
    signature = mlflow.models.get_model_info(uri).signature
    save_pyfunc(Path(spec["pyfunc"]), spec, signature)
    out.write_text(json.dumps(spec, indent=1))
    return {"champion": spec["champion"], "other": other, "keys": KEYS}


def save_pyfunc(path: Path, spec: dict[str, Any], signature: Any) -> None:
    """The champion's booster as a pyfunc that gives the category columns their dtype
    (what MLflow's JSON input loses); the class is pickled by value, not by module."""
    import mlflow

    shutil.rmtree(path, ignore_errors=True)
    names, cats = spec["features"], spec["categories"]

    class CategoryCast(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def load_context(self, context: Any) -> None:
            import xgboost as xgb

            self.booster = xgb.Booster()
            self.booster.load_model(context.artifacts["booster"])

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            import pandas as pd

            x = model_input[names].copy()
            for k, c in cats.items():
                x[k] = pd.Categorical(x[k], categories=c)
            return self.booster.inplace_predict(x)

    mlflow.pyfunc.save_model(
        str(path),
        python_model=CategoryCast(),
        artifacts={"booster": spec["model"]},
        signature=signature,
        pip_requirements=["mlflow", "xgboost", "pandas"],
    )


# --------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(session: int) -> float:
    """User + system CPU of every live process of ``session`` (the server and children)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process in a session of its own; stopped with its children."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.name, self.proc, self.port, self.log = name, proc, port, log

    def post(self, path: str, body: Any) -> Any:
        data = json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return {"status": exc.code, **json.loads(raw)}
            except ValueError:
                return {"status": exc.code, "body": raw.decode(errors="replace")[:600]}

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)


@contextlib.contextmanager
def server(name: str, cmd: list[str], health: str, work: Path, **kw: Any) -> Iterator[Server]:
    """Start ``cmd`` (``{port}`` filled in), wait until ``health`` answers, stop it after."""
    port = free_port()
    log = work / "serve" / "logs" / f"server-{name}.log"
    fh = log.open("w")
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    try:
        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}")
            if time.perf_counter() - t0 > 180:
                raise RuntimeError(f"{name} not ready after 180 s; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        print(f"  {name}: ready in {time.perf_counter() - t0:.1f}s", flush=True)
        yield Server(name, proc, port, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        fh.close()


def mlops_server(spec: dict[str, Any], store: str, work: Path) -> Any:
    from bench.run import PY

    extra = {"MLOPS_FEAST_ONLINE": REDIS_URL} if store == "redis" else {}
    cmd = [str(Path(PY).with_name("mlops")), "--params", "params.yaml", "serve"]
    cmd += ["--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
    return server(f"mlops-{store}", cmd, "/ready", work, cwd=spec["root"], env=_env(extra))


def bare_server(spec: dict[str, Any], store: str, work: Path) -> Any:
    from bench.run import PY, REPO

    cmd = [PY, "-m", "bench.bare_serve", str(work / "serve" / "spec.json"), store, "{port}"]
    return server(f"bare-{store}", cmd, "/health", work, cwd=REPO, env=_env())


def mlflow_server(spec: dict[str, Any], uri: str, name: str, work: Path) -> Any:
    from bench.run import PY

    cmd = [str(Path(PY).with_name("mlflow")), "models", "serve", "-m", uri]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}", "-w", "1"]
    env = _env({"MLFLOW_TRACKING_URI": f"sqlite:///{spec['root']}/mlflow.db"})
    return server(name, cmd, "/ping", work, cwd=spec["root"], env=env)


# --------------------------------------------------------------------------- measuring
def bodies(spec: dict[str, Any], kind: str) -> list[str]:
    """Request bodies: one key (``key``), the features in MLflow's split frame
    (``mlflow``), or ``{"rows": [...]}`` of N keys (``rows:N``)."""
    data = json.loads(Path(spec["keys_file"]).read_text())
    keys, k = data["keys"], spec["key"]
    if kind == "key":
        return [json.dumps({k: v}) for v in keys]
    if kind == "mlflow":
        cols = spec["features"]
        return [
            json.dumps({"dataframe_split": {"columns": cols, "data": [r]}}) for r in data["rows"]
        ]
    n = int(kind.split(":")[1])
    return [json.dumps({"rows": [{k: v} for v in b]}) for b in batches(keys, n)]


def batches(keys: list[Any], n: int) -> list[list[Any]]:
    return [keys[i : i + n] for i in range(0, len(keys) - n + 1, n)]


def load(srv: Server, spec: dict[str, Any], kind: str, path: str, work: Path, **cfg: Any) -> Any:
    """Run one load against ``srv`` from another process; its summary, the server's CPU."""
    from bench.run import PY, spawn_json

    folder = work / "serve" / "load"
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{srv.name}-{kind.replace(':', '')}{cfg.pop('tag', '')}"
    (folder / f"{tag}-bodies.json").write_text(json.dumps(bodies(spec, kind)))
    conf = {"host": "127.0.0.1", "port": srv.port, "path": path, "connections": 32}
    conf.update({"mode": "paced", "rate": RATE, "seconds": SECONDS, "warmup": WARMUP, **cfg})
    conf.update(bodies=str(folder / f"{tag}-bodies.json"), records=str(folder / f"{tag}.json"))
    (folder / f"{tag}-config.json").write_text(json.dumps(conf))
    cmd = [PY, "-m", "bench.serve", "load", str(folder / f"{tag}-config.json")]
    if cfg.get("background"):
        env = _env()
        fh = (work / "serve" / "logs" / f"load-{tag}.log").open("w")
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), conf
    cpu0 = srv.cpu()
    res = spawn_json(cmd, work / "serve" / "logs" / f"load-{tag}.log")
    res["server_cpu_ms_per_request"] = round((srv.cpu() - cpu0) * 1000 / res["requests"], 3)
    res["records"] = conf["records"]
    shown = ", ".join(f"{k} {res.get(k)}" for k in ("p50_ms", "p99_ms", "errors"))
    print(f"  {tag}: {res.get('requests')} requests, {shown}", flush=True)
    return res


def answers(srv: Server, spec: dict[str, Any], kind: str, path: str) -> list[float | None]:
    """Predictions for the first ``AGREE`` keys, one request each."""
    out: list[float | None] = []
    for body in bodies(spec, kind)[:AGREE]:
        got = srv.post(path, json.loads(body))
        preds = got.get("predictions") if isinstance(got, dict) else None
        p = preds[0] if preds else None
        out.append(p["prediction"] if isinstance(p, dict) else p)
    return out


def agreement(a: list[float | None], b: list[float | None]) -> dict[str, Any]:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return {
        "keys": len(a),
        "answered": len(pairs),
        "equal": sum(x == y for x, y in pairs),
        "max_abs_diff": max((abs(x - y) for x, y in pairs), default=None),
    }


def inplace_main(spec_path: str, online: str, out_path: str) -> int:
    """``python -m bench.serve inplace SPEC STORE OUT``: per batch size, Feast's online
    read, the encoding and ``inplace_predict`` of the same batches, in this process; the
    booster as loaded (all cores, as the served model) and on one thread, each the
    fastest of ``REPEAT``."""
    import xgboost as xgb

    from bench.bare_serve import encoder, store

    spec = json.loads(Path(spec_path).read_text())
    keys = json.loads(Path(spec["keys_file"]).read_text())["keys"]
    fs = store(spec, online)
    service = fs.get_feature_service(spec["service"])
    booster = xgb.Booster()
    booster.load_model(spec["model"])
    encode, k = encoder(spec), spec["key"]

    def one(rows: list[dict[str, Any]]) -> Any:
        values = fs.get_online_features(features=service, entity_rows=rows).to_dict()
        return booster.inplace_predict(encode(values, len(rows)))

    out: dict[str, Any] = {str(n): {} for n in BATCHES}
    for _ in range(REPEAT):
        for threads, field in ((0, "rows_per_second"), (1, "one_thread_rows_per_second")):
            booster.set_param({"nthread": threads})
            for n in BATCHES:
                work = [[{k: v} for v in b] for b in batches(keys, n)]
                for rows in work[:5]:
                    one(rows)
                requests = BATCH_ROWS // n
                t0 = time.perf_counter()
                for i in range(requests):
                    one(work[i % len(work)])
                rate = round(requests * n / (time.perf_counter() - t0))
                got = out[str(n)]
                got.setdefault(f"{field}_repeats", []).append(rate)
                got[field] = max(got[field + "_repeats"])
                got["requests"] = requests
    Path(out_path).write_text(json.dumps(out))
    print("\n" + json.dumps(out))
    return 0


def best(runs: list[dict[str, Any]], field: str, low: bool = True) -> dict[str, Any]:
    """The least disturbed of repeated runs (lowest or highest ``field``), all recorded."""
    ranked = sorted(runs, key=lambda r: (r.get(field) is None, r.get(field) or 0))
    measured = [r for r in ranked if r.get(field) is not None] or ranked
    out = dict(measured[0] if low else measured[-1])
    out["repeats"] = {k: [r.get(k) for r in runs] for k in (field, "p50_ms", "load_1m")}
    return out


def batch_serve(srv: Server, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Closed loop, one request at a time, of each batch size: rows per second, the
    fastest of ``REPEAT``."""
    out = {}
    for n in BATCHES:
        runs = []
        for rep in range(REPEAT):
            res = load(
                srv,
                spec,
                f"rows:{n}",
                "/predict",
                work,
                mode="closed",
                requests=BATCH_ROWS // n,
                tag=f"-{rep}",
            )
            res["rows_per_second"] = (
                round(res["requests"] * n / res["seconds"]) if res.get("seconds") else None
            )
            runs.append(res)
        out[str(n)] = best(runs, "rows_per_second", low=False)
    return out


def single_rows(
    servers: dict[str, Server], spec: dict[str, Any], kind: str, path: str, work: Path
) -> dict[str, Any]:
    """Each server at 200 requests/s, interleaved ``REPEAT`` times (the lowest p99 kept),
    then one request at a time (no queue: the cost of one request)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for rep in range(REPEAT):
        for name, srv in servers.items():
            runs[name].append(load(srv, spec, kind, path, work, tag=f"-{rep}"))
    out = {name: best(r, "p99_ms") for name, r in runs.items()}
    for name, srv in servers.items():
        res = load(srv, spec, kind, path, work, mode="closed", requests=SEQUENTIAL, tag="-seq")
        out[name]["one_at_a_time"] = {
            k: res.get(k) for k in ("requests", "errors", "p50_ms", "p99_ms", "mean_ms")
        }
    return out


def _cli(*args: str, online: str | None = None) -> list[str]:
    """An ``mlops`` command on the project's own stores, whatever this shell points at."""
    from bench.run import PY

    unset = ["-u", "MLFLOW_TRACKING_URI", "-u", "MLOPS_DATA_ROOT", "-u", "MLOPS_FEAST_ONLINE"]
    online_env = [f"MLOPS_FEAST_ONLINE={online}"] if online else []
    return ["env", *unset, *online_env, str(Path(PY).with_name("mlops")), "--params", *args]


def swap(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """The champion moves to the other version and back while 200 requests/s run."""
    from bench.run import spawn

    name, moves = spec["model_name"], []
    with mlops_server(spec, "sqlite", work) as srv:
        proc, conf = load(
            srv,
            spec,
            "key",
            "/predict",
            work,
            tag="-swap",
            seconds=SWAP_SECONDS,
            warmup=0,
            background=True,
        )
        t0 = time.time()
        for at, version in zip(SWAPS_AT, (spec["other"], spec["champion"]), strict=True):
            time.sleep(max(0.0, t0 + at - time.time()))
            started = time.time()
            cmd = _cli("params.yaml", "promote", name, version, "--by", "bench", "--override")
            cmd += ["--reason", "bench: champion swap under load"]
            res = spawn(
                cmd, work / "serve" / "logs" / f"promote-v{version}.log", Path(spec["root"])
            )
            moves.append(
                {
                    "to": version,
                    "started": started,
                    "returned": time.time(),
                    "exit": res["returncode"],
                }
            )
        proc.wait(SWAP_SECONDS + 120)
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/ready", timeout=10) as resp:
            ready = json.loads(resp.read())
    log = (work / "serve" / "logs" / "load-mlops-sqlite-key-swap.log").read_text()
    summary = json.loads([ln for ln in log.splitlines() if ln.startswith("{")][-1])
    out = swap_analysis(summary, moves, json.loads(Path(conf["records"]).read_text()))
    out["server_swaps"] = ready.get("swaps")
    print(f"  swap: {out['errors']} errors; versions in order {out['versions_in_order']}")
    return out


def swap_analysis(summary: dict[str, Any], moves: list[dict[str, Any]], recs: list[Any]) -> Any:
    """Per move: when the new version first answered; answers by the old one after that,
    to requests already in flight (allowed: they finish on the models they started with)
    and to requests sent after it (stale: must be 0); p99 while the promote command ran
    and in the second around the first new answer (the load of the new version)."""
    t0 = summary["wall_start"]
    # completion and send times, wall clock
    done = sorted((t0 + r[0] + r[1], t0 + r[0] + r[1] - r[2], r) for r in recs)
    for i, m in enumerate(moves):
        end = moves[i + 1]["started"] if i + 1 < len(moves) else float("inf")
        window = [(t, sent, r) for t, sent, r in done if m["started"] <= t < end]
        first = next((t for t, _, r in window if r[4] == m["to"]), None)
        m["promote_seconds"] = round(m["returned"] - m["started"], 2)
        m["first_answer_after_return_s"] = (
            None if first is None else round(first - m["returned"], 2)
        )
        m["first_answer_after_start_s"] = None if first is None else round(first - m["started"], 2)
        old = [(t, sent) for t, sent, r in window if r[3] == 200 and r[4] != m["to"]]
        m["in_flight_old_answers"] = sum(1 for t, sent in old if first and t > first >= sent)
        m["stale_answers"] = sum(1 for _, sent in old if first and sent > first)
        during = [r[1] for t, _, r in done if m["started"] <= t <= m["returned"]]
        m["p99_ms_during_promote"] = pct(during, 99)
        near = [r[1] for t, _, r in done if first and abs(t - first) <= 0.5]
        m["p99_ms_around_first_answer"] = pct(near, 99)
    runs: list[list[Any]] = []  # versions by completion time
    for _, _, r in done:
        if r[3] == 200:
            if runs and runs[-1][0] == r[4]:
                runs[-1][1] += 1
            else:
                runs.append([r[4], 1])
    return {**summary, "moves": moves, "versions_in_order": runs}


def measure(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Every comparison; the servers of one online store run side by side, idle but for
    the one under load."""
    from bench.run import PY, spawn_json

    spec_path = work / "serve" / "spec.json"
    out: dict[str, Any] = {
        "rate": RATE,
        "seconds": SECONDS,
        "warmup_seconds": WARMUP,
        "repeat": REPEAT,
        "cpus": os.cpu_count(),
        "champion": spec["champion"],
        "other": spec["other"],
        "keys": KEYS,
        "online_partition": spec["online_partition"],
        "poll_seconds": spec["poll_seconds"],
        "latency": {},
        "batch": {},
        "agree": {},
        "load_1m": [round(os.getloadavg()[0], 2)],
    }
    ref: list[float | None] | None = None
    for store in spec["online"]:
        with mlops_server(spec, store, work) as fw, bare_server(spec, store, work) as bare:
            servers = {"mlops": fw, "bare": bare}
            out["latency"][store] = single_rows(servers, spec, "key", "/predict", work)
            mine = answers(fw, spec, "key", "/predict")
            out["agree"][f"bare-{store}"] = agreement(mine, answers(bare, spec, "key", "/predict"))
            served = batch_serve(fw, spec, work)
        if ref is None:
            ref = mine
        else:
            out["agree"][f"mlops-{store}-vs-sqlite"] = agreement(ref, mine)
        res_file = work / "serve" / f"inplace-{store}.json"
        cmd = [PY, "-m", "bench.serve", "inplace", str(spec_path), store, str(res_file)]
        inplace = spawn_json(cmd, work / "serve" / "logs" / f"inplace-{store}.log")
        out["batch"][store] = {
            n: {"serve": served[n], "inplace": inplace.get(n)} for n in map(str, BATCHES)
        }
    registered = f"models:/{spec['model_name']}/{spec['champion']}"
    with mlflow_server(spec, registered, "mlflow-registered", work) as srv:
        got = srv.post("/invocations", json.loads(bodies(spec, "mlflow")[0]))
        trace = str(got.get("stack_trace") or got.get("message") or got)
        out["mlflow_registered"] = {
            "uri": registered,
            "status": got.get("status", 200),
            "error": trace.strip().splitlines()[-1][:300],
        }
    with mlflow_server(spec, spec["pyfunc"], "mlflow-pyfunc", work) as srv:
        mlf = load(srv, spec, "mlflow", "/invocations", work)
        seq = load(
            srv,
            spec,
            "mlflow",
            "/invocations",
            work,
            mode="closed",
            requests=SEQUENTIAL,
            tag="-seq",
        )
        mlf["one_at_a_time"] = {
            k: seq.get(k) for k in ("requests", "errors", "p50_ms", "p99_ms", "mean_ms")
        }
        out["latency"]["request"] = {"mlflow": mlf}
        out["agree"]["mlflow"] = agreement(ref or [], answers(srv, spec, "mlflow", "/invocations"))
    out["swap"] = swap(spec, work)
    out["load_1m"].append(round(os.getloadavg()[0], 2))
    return out


def run_serve(work: Path) -> dict[str, Any]:
    """Prepare the project (kept under ``work/serve`` for the next run), then measure."""
    t0 = time.perf_counter()
    try:
        res = measure(prepare(work), work)
    except RuntimeError as exc:
        return {"error": str(exc)}
    res["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return res


# --------------------------------------------------------------------------- results
def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pair(fw: dict[str, Any], bare: dict[str, Any]) -> str:
    return (
        f"p50 {_ms(fw.get('p50_ms'))} / p99 {_ms(fw.get('p99_ms'))} ms against "
        f"{_ms(bare.get('p50_ms'))} / {_ms(bare.get('p99_ms'))} ms"
    )


def _seq(r: dict[str, Any]) -> str:
    return _ms((r.get("one_at_a_time") or {}).get("p50_ms"))


def caveat(res: dict[str, Any]) -> str:
    """What to keep in mind reading the numbers on this machine."""
    lat = [x for k, v in res.get("latency", {}).items() if k != "request" for x in v.values()]
    late = max((x.get("client_late_p99_ms") or 0 for x in lat), default=None)
    loads = [a for x in lat for a in (x.get("repeats") or {}).get("load_1m") or [x.get("load_1m")]]
    starts = [a[0] for a in loads if a]
    return (
        f"{res.get('cpus')} CPUs shared by the server, the load process and other work on "
        f"the machine (load average {min(starts, default=None)}-{max(starts, default=None)} "
        f"at the start of the runs; the least disturbed of {res.get('repeat', 1)} interleaved "
        f"runs is kept); the client sent at most {_ms(late)} ms late (p99)"
    )


ORDER = ("sqlite", "redis", "request", "mlops", "bare", "mlflow")  # in results.md
STORES = {"sqlite": "SQLite", "redis": "Redis"}


def rows(res: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The target rows of the serve stage."""
    if not res:
        return []
    if "latency" not in res:
        note = f"not measured: {res.get('error', 'run the serve stage')}"[:300]
        return [("serving: one row at 200 req/s, swap, batches", "demo", None, False, note)]
    out: list[tuple[Any, ...]] = []
    lat, agree = res["latency"], res.get("agree", {})
    mlf = lat.get("request", {}).get("mlflow", {})
    reg = res.get("mlflow_registered", {})
    for store, pair in sorted(lat.items(), key=lambda kv: ORDER.index(kv[0])):
        if store == "request":
            continue
        fw, bare, same = pair["mlops"], pair["bare"], agree.get(f"bare-{store}", {})
        q = _ratio(fw.get("p99_ms"), bare.get("p99_ms"))
        note = (
            f"mlops serve {_pair(fw, bare)} for the bare FastAPI app (Feast "
            f"get_online_features + booster.inplace_predict; {q}x at p99; p99 of each run "
            f"{fw.get('repeats', {}).get('p99_ms')} / {bare.get('repeats', {}).get('p99_ms')}); "
            f"{fw['requests']} requests per run at {fw.get('achieved_rate')} req/s, errors "
            f"{fw['errors']} / {bare['errors']}; server CPU per request "
            f"{fw.get('server_cpu_ms_per_request')} / {bare.get('server_cpu_ms_per_request')} ms; "
            f"one request at a time p50 {_seq(fw)} / {_seq(bare)} ms; answers equal on "
            f"{same.get('equal')}/{same.get('keys')} keys"
        )
        if store == "sqlite":
            note += (
                f"; mlflow models serve (features in the request; the same booster as a "
                f"pyfunc casting the categories) cannot keep 200 req/s: it answered "
                f"{mlf.get('completed_rate')} req/s (server CPU "
                f"{mlf.get('server_cpu_ms_per_request')} ms per request), so its queue grew to "
                f"p50 {_ms(mlf.get('p50_ms'))} / p99 {_ms(mlf.get('p99_ms'))} ms; one request "
                f"at a time p50 {_seq(mlf)} ms; answers equal on "
                f"{agree.get('mlflow', {}).get('equal')}/{AGREE}; the registered version "
                f"({reg.get('uri')}) itself is refused by it: HTTP {reg.get('status')} "
                f"{reg.get('error')}; {caveat(res)}"
            )
            p99 = fw.get("p99_ms")
            met = p99 is not None and q is not None and p99 <= 10 and q <= 1.5
            target = (
                "serve one row from SQLite at 200 req/s: p99 <= 1.5x bare FastAPI app, <= 10 ms"
            )
        else:
            met, target = (
                None,
                f"serve one row from {STORES[store]} at 200 req/s: p99 (no target; reported)",
            )
        out.append((target, "demo, 1 row/request", fw.get("p99_ms"), met, note))
    sw = res.get("swap") or {}
    moves = sw.get("moves") or []
    parts = [
        f"v{m['to']} first answered {m.get('first_answer_after_return_s')} s after `mlops "
        f"promote` returned ({m.get('promote_seconds')} s, exit {m.get('exit')}); then "
        f"{m.get('in_flight_old_answers')} answers by the old version to requests already "
        f"in flight and {m.get('stale_answers')} to requests sent later; p99 "
        f"{_ms(m.get('p99_ms_during_promote'))} ms while the promote ran, "
        f"{_ms(m.get('p99_ms_around_first_answer'))} ms within 0.5 s of the first new answer"
        for m in moves
    ]
    note = (
        f"{sw.get('requests')} requests at {sw.get('achieved_rate')} req/s over "
        f"{SWAP_SECONDS} s, alias moved twice; {'; '.join(parts)}; aliases re-read every "
        f"{res.get('poll_seconds')} s (serve.poll_seconds); versions in order "
        f"{sw.get('versions_in_order')} (by completion); p99 over the run "
        f"{_ms(sw.get('p99_ms'))} ms, from a cold start (no warm-up) and with the promote "
        f"command on the same CPUs; statuses {sw.get('statuses')}"
    )
    ok = all(
        m.get("exit") == 0
        and m.get("first_answer_after_start_s") is not None
        and m.get("stale_answers") == 0
        for m in moves
    )
    errors = sw.get("errors")
    target = "0 errors (and no stale answers) while the champion moves under 200 req/s"
    out.append((target, "demo, 1 row/request", errors, errors == 0 and ok and bool(moves), note))
    for store, sizes in sorted(res.get("batch", {}).items(), key=lambda kv: ORDER.index(kv[0])):
        for n, pair in sorted(sizes.items(), key=lambda kv: int(kv[0])):
            fw, bare = pair.get("serve") or {}, pair.get("inplace") or {}
            q = _ratio(fw.get("rows_per_second"), bare.get("rows_per_second"))
            note = (
                f"mlops serve {fw.get('rows_per_second')} rows/s (one request at a time, p50 "
                f"{_ms(fw.get('p50_ms'))} ms per request, errors {fw.get('errors')}) vs Feast "
                f"online read + inplace_predict in one process {bare.get('rows_per_second')} "
                f"rows/s with the booster on all cores as served "
                f"({bare.get('one_thread_rows_per_second')} rows/s on one thread: "
                f"{_ratio(fw.get('rows_per_second'), bare.get('one_thread_rows_per_second'))}x); "
                f"{BATCH_ROWS:,} rows per run, fastest of {res.get('repeat', 1)}"
            )
            target = (
                f"serve {int(n):,} rows/request ({store}) >= 0.7x in-process Feast read + predict"
            )
            out.append(
                (target, f"demo, {int(n):,} rows/request", q, q is not None and q >= 0.7, note)
            )
    return out


def markdown_lines(res: dict[str, Any] | None) -> list[str]:
    """The serving section of ``results.md``."""
    if not res or "latency" not in res:
        return []
    lines = [
        "",
        "## Serving",
        "",
        f"One worker per server on 127.0.0.1; the load ran in another process at {res['rate']} "
        f"requests/s (open loop, latency counted from each request's due time), "
        f"{res['seconds']} s measured after {res['warmup_seconds']} s of warm-up; then "
        f"{SEQUENTIAL:,} requests one at a time. {caveat(res)}. `bench/serve.py`.",
        "",
        "| online store | server | requests | errors | answered/s | p50 ms | p90 ms | p99 ms "
        "| max ms | server CPU ms/request | one at a time p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"mlops": "mlops serve", "bare": "bare FastAPI + Feast + booster"}
    names["mlflow"] = "mlflow models serve (features sent)"
    for store, servers in sorted(res["latency"].items(), key=lambda kv: ORDER.index(kv[0])):
        for name, r in sorted(servers.items(), key=lambda kv: ORDER.index(kv[0])):
            cells = [r.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
            lines.append(
                f"| {'-' if store == 'request' else store} | {names.get(name, name)} | "
                f"{r.get('requests')} | {r.get('errors')} | {r.get('completed_rate')} | "
                f"{' | '.join(map(_ms, cells))} | {r.get('server_cpu_ms_per_request')} | "
                f"{_seq(r)} |"
            )
    lines += [
        "",
        "| online store | rows/request | mlops serve rows/s | in-process rows/s (one thread) "
        "| ratio |",
        "|---|---|---|---|---|",
    ]
    for store, sizes in sorted(res.get("batch", {}).items(), key=lambda kv: ORDER.index(kv[0])):
        for n, pair in sorted(sizes.items(), key=lambda kv: int(kv[0])):
            a = (pair.get("serve") or {}).get("rows_per_second")
            inp = pair.get("inplace") or {}
            b, one = inp.get("rows_per_second"), inp.get("one_thread_rows_per_second")
            lines.append(f"| {store} | {int(n):,} | {a} | {b} ({one}) | {_ratio(a, b)} |")
    sw = res.get("swap") or {}
    if sw:
        moves = ", ".join(
            f"v{m['to']} answered {m.get('first_answer_after_return_s')} s after the promote "
            f"returned ({m.get('stale_answers')} stale answers)"
            for m in sw.get("moves") or []
        )
        lines += [
            "",
            f"Champion swap under load: {sw.get('requests')} requests, {sw.get('errors')} "
            f"errors; {moves}; versions in order {sw.get('versions_in_order')}.",
        ]
    return lines


if __name__ == "__main__":
    import logging
    import warnings

    verb, *rest = sys.argv[1:]
    if verb == "load":
        raise SystemExit(load_main(*rest))
    warnings.filterwarnings("ignore")
    for name in ("feast", "mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if verb == "inplace":
        raise SystemExit(inplace_main(*rest))
    if verb == "spec":
        print("\n" + json.dumps(write_spec(Path(rest[0]), Path(rest[1]))))
        raise SystemExit(0)
    raise SystemExit(f"unknown verb {verb!r}: load, inplace or spec")
