"""The measured cases: each stage as the framework runs it, and the bare computation.

Every case runs in a fresh interpreter (``python -m bench.cases CASE ARGS_JSON OUT``) so
that time and memory never mix. Imports and inputs are prepared before the measured
section; inside it, time and the peak resident memory of the section are recorded
(the kernel's high-water mark is reset at the start of the section). The orchestrator
(``bench.run``) adds the peak RSS of the whole process from ``wait4``.

Bare cases use pandas, numpy, scipy, pyarrow, sqlite3, redis, xgboost and scikit-learn
directly; they read their configuration from ``params.yaml`` but call no ``mlops`` code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TRAIN_MONTHS = [f"2013-{m:02d}" for m in range(1, 7)]
SCORE_MONTH = "2013-07"
REDIS_URL = "redis://127.0.0.1:6379/13"  # a db of its own, flushed before every write


# --------------------------------------------------------------------------- measuring
def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))  # type: ignore[union-attr]


class Timer:
    """Named measured sections: seconds, RSS at the start and peak RSS within."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, float]] = {}
        self.process_peak_kb = 0

    def process_peak_mb(self) -> float:
        """Peak RSS of the whole process (resetting the high-water mark loses it, so the
        mark is read before every reset)."""
        self.process_peak_kb = max(self.process_peak_kb, _status("VmHWM"))
        return round(self.process_peak_kb / 1024, 1)

    @contextlib.contextmanager
    def section(self, name: str = "main") -> Iterator[None]:
        import gc

        gc.collect()
        self.process_peak_mb()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass
        rss0 = _status("VmRSS")
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        yield
        secs = time.perf_counter() - t0
        self.sections[name] = {
            "seconds": round(secs, 3),
            "cpu_seconds": round(time.process_time() - cpu0, 3),
            "start_rss_mb": round(rss0 / 1024, 1),
            "peak_rss_mb": round(_status("VmHWM") / 1024, 1),
            "added_peak_mb": round((_status("VmHWM") - rss0) / 1024, 1),
        }


class Args:
    """What every case gets: the project, the work folder and the size label."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.raw = d
        self.params_path = Path(d["params"])
        self.work = Path(d["work"])
        self.size = d.get("size", "")
        self.extra = d.get("extra", {})

    def load(self) -> tuple[Any, Any]:
        from mlops.config import load_params, settings

        return load_params(self.params_path), settings(self.params_path)

    def contract(self) -> Any:
        from mlops.config import load_params

        return load_params(self.params_path).contract

    @property
    def data(self) -> Path:
        return self.params_path.parent / "data"


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("great_expectations", "feast", "mlflow", "evidently", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --------------------------------------------------------------------------- checksums
def frame_digest(df: Any, contract: Any, cols: list[str] | None = None) -> dict[str, Any]:
    """An order-sensitive fingerprint of keys and values, blind to storage dtypes."""
    import numpy as np
    import pandas as pd

    out: dict[str, Any] = {"rows": int(len(df))}
    key = contract.entity_keys[0]
    out[key] = hashlib.md5("\n".join(df[key].astype(str)).encode()).hexdigest()[:12]
    for c in cols or contract.feature_names:
        s = df[c]
        if s.dtype == object or isinstance(s.dtype, pd.StringDtype | pd.CategoricalDtype):
            vals = s.astype(object).where(s.notna(), None).map(lambda v: "" if v is None else v)
            out[c] = hashlib.md5("\n".join(vals).encode()).hexdigest()[:12]
        else:
            x = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            out[c] = [int(np.isnan(x).sum()), round(float(np.nansum(x)), 4)]
    return out


# --------------------------------------------------------------------------- validate
def validate_framework(a: Args, tm: Timer) -> dict[str, Any]:
    import great_expectations  # noqa: F401  (import cost stays outside the measurement)

    from mlops import validate

    p, st = a.load()
    with tm.section():
        res = validate.run(p, st, [SCORE_MONTH])[SCORE_MONTH]
    return {"success": res["success"], "rows": res["rows"], **res["statistics"]}


def validate_gx(a: Args, tm: Timer) -> dict[str, Any]:
    """Great Expectations' own run of the same stored checkpoint and suite."""
    import great_expectations as gx
    import pandas as pd
    import yaml

    root = a.params_path.parent
    project = yaml.safe_load(a.params_path.read_text())["project"]
    path = a.data / "raw" / f"{SCORE_MONTH}.parquet"
    start = pd.Timestamp(f"{SCORE_MONTH}-01", tz="UTC")
    with tm.section():
        ctx = gx.get_context(mode="file", context_root_dir=str(root / "great_expectations"))
        cp = ctx.checkpoints.get(f"{project}_validate")
        df = pd.read_parquet(path)
        res = cp.run(
            batch_parameters={"dataframe": df},
            expectation_parameters={
                "partition_start": start,
                "partition_end": start + pd.DateOffset(months=1),
            },
        )
    (vr,) = res.run_results.values()
    return {"success": bool(res.success), "rows": len(df), "evaluated": len(vr.results)}


def pandas_checks(df: Any, contract: Any, start: Any, end: Any) -> dict[str, bool]:
    """The contract suite as vectorised pandas checks; name -> passed."""
    import pandas as pd

    checks: dict[str, bool] = {}
    n = len(df)
    checks["columns"] = set(df.columns) == set(contract.columns)
    checks["row_count"] = n >= contract.min_rows and (
        contract.max_rows is None or n <= contract.max_rows
    )
    for k in contract.entity_keys:
        checks[f"{k}:not_null"] = bool(df[k].notna().all())
    checks["keys:unique"] = not bool(df.duplicated(contract.entity_keys).any())
    ts = df[contract.timestamp]
    checks["ts:not_null"] = bool(ts.notna().all())
    checks["ts:type"] = str(ts.dtype) == "datetime64[ns, UTC]"
    checks["ts:in_partition"] = bool(((ts >= start) & (ts < end)).all())
    for f in contract.features:
        s = df[f.name]
        if f.dtype == "category":
            checks[f"{f.name}:type"] = pd.api.types.infer_dtype(s, skipna=True) in (
                "string",
                "empty",
            )
        elif f.dtype == "bool":
            checks[f"{f.name}:type"] = pd.api.types.is_bool_dtype(s)
        else:
            checks[f"{f.name}:type"] = pd.api.types.is_numeric_dtype(s)
        nulls = int(s.isna().sum())
        if f.max_null_fraction < 1:
            checks[f"{f.name}:nulls"] = nulls <= f.max_null_fraction * n
        if f.min is not None or f.max is not None:
            v = s.dropna()
            ok = True
            if f.min is not None:
                ok &= bool((v >= f.min).all())
            if f.max is not None:
                ok &= bool((v <= f.max).all())
            checks[f"{f.name}:range"] = ok
        if f.categories:
            v = s.dropna()
            bad = int((~v.isin(f.categories)).sum())
            checks[f"{f.name}:set"] = bad <= f.unseen_category_tolerance * max(len(v), 1)
    y = df[contract.target]
    checks["target:not_null"] = bool(y.notna().all())
    if contract.task == "classification":
        checks["target:type"] = pd.api.types.is_bool_dtype(y) or pd.api.types.is_integer_dtype(y)
        checks["target:set"] = bool(y.isin([0, 1, True, False]).all())
    return checks


def validate_pandas(a: Args, tm: Timer) -> dict[str, Any]:
    import pandas as pd

    contract = a.contract()
    path = a.data / "raw" / f"{SCORE_MONTH}.parquet"
    start = pd.Timestamp(f"{SCORE_MONTH}-01", tz="UTC")
    with tm.section():
        df = pd.read_parquet(path)
        checks = pandas_checks(df, contract, start, start + pd.DateOffset(months=1))
    return {
        "success": all(checks.values()),
        "rows": len(df),
        "evaluated": len(checks),
        "failed": [k for k, v in checks.items() if not v],
    }


# --------------------------------------------------------------------------- materialize
def retrieve_framework(a: Args, tm: Timer) -> dict[str, Any]:
    """The training-set retrieval as ``train`` runs it (Feast, DuckDB offline store)."""
    import feast  # noqa: F401
    import feast.infra.offline_stores.duckdb  # noqa: F401

    from mlops import io, materialize

    p, st = a.load()
    with tm.section():
        df = materialize.training_frame(p, st, TRAIN_MONTHS)
    io.write_parquet(a.work / "train_frame.parquet", df)
    return {"digest": frame_digest(df, p.contract)}


def retrieve_bare(a: Args, tm: Timer) -> dict[str, Any]:
    """The same point-in-time join with pandas ``merge_asof``, reads and sort included."""
    import pandas as pd
    import yaml

    c = a.contract()
    key, ts = c.entity_keys[0], c.timestamp
    project = yaml.safe_load(a.params_path.read_text())["materialize"]["project"]
    ttl = pd.Timedelta(days=yaml.safe_load(a.params_path.read_text())["materialize"]["ttl_days"])
    feat_dir = a.data / "features" / project
    with tm.section():
        labels = pd.concat(
            [
                pd.read_parquet(a.data / "validated" / f"{m}.parquet", columns=[key, ts, c.target])
                for m in TRAIN_MONTHS
            ],
            ignore_index=True,
        )
        feats = pd.concat(
            [pd.read_parquet(feat_dir / f"{m}.parquet") for m in TRAIN_MONTHS], ignore_index=True
        )
        t_join = time.perf_counter()
        feats[ts] = feats[ts].astype(labels[ts].dtype)
        feats[key] = feats[key].astype(labels[key].dtype)
        labels = labels.sort_values([ts, key], kind="stable", ignore_index=True)
        feats = feats.sort_values(ts, kind="stable", ignore_index=True)
        df = pd.merge_asof(labels, feats, on=ts, by=key, direction="backward", tolerance=ttl)
        join_s = time.perf_counter() - t_join
    assert len(df) == len(labels)
    return {"digest": frame_digest(df, c), "join_seconds": round(join_s, 3)}


# --------------------------------------------------------------------------- online store
def _online_env(store: str) -> None:
    if store == "redis":
        os.environ["MLOPS_FEAST_ONLINE"] = REDIS_URL
    else:
        os.environ.pop("MLOPS_FEAST_ONLINE", None)


def _sqlite_table(a: Args) -> tuple[Path, str]:
    import yaml

    project = yaml.safe_load(a.params_path.read_text())["materialize"]["project"]
    return a.data / "feast" / "online.db", f"{project}_{project}"


def empty_online(a: Args, store: str) -> None:
    """Empty the online store before a write, so every writer starts from the same state."""
    if store == "redis":
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        return
    import sqlite3

    path, table = _sqlite_table(a)
    with sqlite3.connect(path) as con:
        con.execute(f'DELETE FROM "{table}"')
    con = sqlite3.connect(path)
    con.execute("VACUUM")
    con.close()


def online_count(a: Args, store: str) -> int:
    if store == "redis":
        import redis

        return int(redis.Redis.from_url(REDIS_URL).dbsize())
    import sqlite3

    path, table = _sqlite_table(a)
    with sqlite3.connect(path) as con:
        return int(con.execute(f'SELECT count(DISTINCT entity_key) FROM "{table}"').fetchone()[0])


def check_online(a: Args, n: int = 300) -> dict[str, Any]:
    """Read a sample of entities back through Feast and compare with the feature file."""
    import numpy as np
    import pandas as pd

    from mlops import materialize

    p, st = a.load()
    c = p.contract
    key = c.entity_keys[0]
    src = pd.read_parquet(materialize.source_dir(p, st) / f"{SCORE_MONTH}.parquet")
    sample = src.sample(n=min(n, len(src)), random_state=0).reset_index(drop=True)
    got = materialize.online_features(p, st, [{key: k} for k in sample[key]])
    bad = 0
    for f in c.features:
        x, y = sample[f.name], got[f.name]
        if f.dtype == "category":
            same = x.astype(object).where(x.notna(), None).tolist() == y.tolist()
        else:
            xv = pd.to_numeric(x).to_numpy(dtype="float64", na_value=np.nan)
            yv = pd.to_numeric(y).to_numpy(dtype="float64", na_value=np.nan)
            same = bool(np.allclose(xv, yv, equal_nan=True))
        bad += not same
    return {"checked_entities": len(sample), "mismatched_columns": bad}


def online_framework(a: Args, tm: Timer) -> dict[str, Any]:
    """``materialize`` of the scored month as the stage runs it; its Feast write timed apart."""
    store = a.extra.get("store", "sqlite")
    _online_env(store)
    import feast
    import feast.infra.offline_stores.duckdb  # noqa: F401

    from mlops import materialize

    p, st = a.load()
    materialize.store(p, st)  # registry up to date before the clock starts (as in a rerun)
    empty_online(a, store)
    # Feast's online writes are timed inside the stage: `materialize` (the interval) and
    # `write_to_online_store` (pushing frames), whichever the stage uses.
    spent: dict[str, float] = {}
    originals = {
        n: getattr(feast.FeatureStore, n) for n in ("materialize", "write_to_online_store")
    }
    for n, fn in originals.items():
        setattr(feast.FeatureStore, n, _timed(fn, spent, n))
    with tm.section():
        res = materialize.run(p, st, [SCORE_MONTH])
    for n, fn in originals.items():
        setattr(feast.FeatureStore, n, fn)
    inner = {
        "feast_online_write_seconds": round(sum(spent.values()), 3),
        "feast_calls_seconds": {k: round(v, 3) for k, v in spent.items()},
    }
    return {
        "rows": res["rows"],
        **inner,
        "entities_in_store": online_count(a, store),
        **check_online(a),
    }


def _entity_key_bytes(join_key: str, values: list[str]) -> list[bytes]:
    """Feast's entity key serialisation v3 for one string join key."""
    k = join_key.encode()
    head = struct.pack("<I", 1) + struct.pack("<I", 2) + struct.pack("<I", len(k)) + k
    string_type = struct.pack("<I", 2)
    out = []
    for v in values:
        b = v.encode()
        out.append(head + string_type + struct.pack("<I", len(b)) + b)
    return out


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _value_bytes(col: Any, dtype: str) -> tuple[list[bytes], list[str | None]]:
    """Serialised Feast ``Value`` messages and their text, built column-wise."""
    import numpy as np
    import pandas as pd

    n = len(col)
    if dtype == "float":
        x = pd.to_numeric(col).to_numpy(dtype="float64", na_value=np.nan)
        buf = np.empty((n, 9), dtype=np.uint8)
        buf[:, 0] = 0x29  # field 5 (double_val), 64-bit
        buf[:, 1:] = x.astype("<f8").view(np.uint8).reshape(n, 8)
        raw = buf.tobytes()
        null = np.isnan(x)
        vals = [b"" if null[i] else raw[9 * i : 9 * i + 9] for i in range(n)]
        texts = [None if null[i] else v for i, v in enumerate(map(str, x.tolist()))]
        return vals, texts
    if dtype == "int":
        ints = col.astype("Int64")
        cache: dict[Any, tuple[bytes, str | None]] = {}
        vals, texts = [], []
        for v in ints.tolist():
            if v not in cache:
                cache[v] = (b"", None) if v is pd.NA else (b"\x20" + _varint(int(v)), str(v))
            b, t = cache[v]
            vals.append(b)
            texts.append(t)
        return vals, texts
    cache2: dict[Any, tuple[bytes, str | None]] = {}
    vals, texts = [], []
    for v in col.astype(object).where(col.notna(), None).tolist():
        if v not in cache2:
            if v is None:
                cache2[v] = (b"", None)
            else:
                e = str(v).encode()
                cache2[v] = (b"\x12" + _varint(len(e)) + e, str(v))
        b, t = cache2[v]
        vals.append(b)
        texts.append(t)
    return vals, texts


def _epoch_seconds(ts: Any) -> list[int]:
    """Whole seconds since the epoch, as Feast stores event timestamps."""
    import pandas as pd

    return (
        (ts.dt.tz_convert("UTC").dt.tz_localize(None) - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    ).tolist()


def _latest(a: Args) -> tuple[Any, Any]:
    import pandas as pd
    import yaml

    c = a.contract()
    project = yaml.safe_load(a.params_path.read_text())["materialize"]["project"]
    df = pd.read_parquet(a.data / "features" / project / f"{SCORE_MONTH}.parquet")
    df = df.sort_values(c.timestamp, kind="stable").drop_duplicates(c.entity_keys, keep="last")
    return df.reset_index(drop=True), c


def online_bare_sqlite(a: Args, tm: Timer) -> dict[str, Any]:
    """The same latest-per-entity rows into the same SQLite table with ``executemany``."""
    import sqlite3

    path, table = _sqlite_table(a)
    empty_online(a, "sqlite")
    with sqlite3.connect(path) as con:
        cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
    assert cols[:4] == ["entity_key", "feature_name", "value", "value_text"], cols
    with tm.section():
        df, c = _latest(a)
        key = c.entity_keys[0]
        eks = _entity_key_bytes(key, df[key].astype(str).tolist())
        epoch = _epoch_seconds(df[c.timestamp])
        encoded = [(f.name, *_value_bytes(df[f.name], f.dtype)) for f in c.features]
        # Primary-key order turns the B-tree inserts into appends: what a bulk load does.
        order = sorted(range(len(eks)), key=eks.__getitem__)

        def rows() -> Iterator[tuple[Any, ...]]:
            for i in order:
                ek, ts = eks[i], epoch[i]
                for name, vals, texts in encoded:
                    yield (ek, name, vals[i], texts[i], None, ts, None)

        con = sqlite3.connect(path)
        with con:
            con.executemany(
                f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, '
                "vector_value, event_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
                "value_text = excluded.value_text, vector_value = excluded.vector_value, "
                "event_ts = excluded.event_ts, created_ts = excluded.created_ts",
                rows(),
            )
        con.close()
    _online_env("sqlite")
    return {"rows": len(df), "entities_in_store": online_count(a, "sqlite"), **check_online(a)}


def online_bare_redis(a: Args, tm: Timer) -> dict[str, Any]:
    """The same latest-per-entity rows into Redis, Feast's layout, one pipeline per chunk."""
    import mmh3
    import redis
    import yaml

    project = yaml.safe_load(a.params_path.read_text())["materialize"]["project"]
    empty_online(a, "redis")
    r = redis.Redis.from_url(REDIS_URL)
    with tm.section():
        df, c = _latest(a)
        key = c.entity_keys[0]
        suffix = project.encode()
        eks = [ek + suffix for ek in _entity_key_bytes(key, df[key].astype(str).tolist())]
        fields = [
            struct.pack("<Q", mmh3.hash(f"{project}:{f.name}", signed=False))[:4]
            for f in c.features
        ]
        encoded = [_value_bytes(df[f.name], f.dtype)[0] for f in c.features]
        secs = _epoch_seconds(df[c.timestamp])
        ts_cache: dict[int, bytes] = {}
        ts_key = f"_ts:{project}".encode()
        chunk = 20_000
        for lo in range(0, len(df), chunk):
            pipe = r.pipeline(transaction=False)
            for i in range(lo, min(lo + chunk, len(df))):
                s = secs[i]
                if s not in ts_cache:
                    ts_cache[s] = b"\x08" + _varint(s)  # google.protobuf.Timestamp seconds
                mapping = {ts_key: ts_cache[s]}
                for fk, vals in zip(fields, encoded, strict=True):
                    mapping[fk] = vals[i]
                pipe.hset(eks[i], mapping=mapping)
            pipe.execute()
    _online_env("redis")
    return {"rows": len(df), "entities_in_store": online_count(a, "redis"), **check_online(a)}


# --------------------------------------------------------------------------- train
def _one_candidate(p: Any, kind: str) -> Any:
    cand = next(c for c in p.train.candidates if c.kind == kind)
    return p.model_copy(update={"train": p.train.model_copy(update={"candidates": [cand]})})


def _train_frame(a: Args) -> Any:
    import pandas as pd

    path = a.work / "train_frame.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run the materialize cases of this size first")
    return pd.read_parquet(path)


def train_framework(a: Args, tm: Timer) -> dict[str, Any]:
    """``fit_candidates`` for one candidate, then its MLflow logging and registration."""
    import mlflow
    import sklearn.ensemble  # noqa: F401
    import xgboost  # noqa: F401

    from mlops import models, train
    from mlops.registry import client, experiment_id

    kind = a.extra["kind"]
    p0, st = a.load()
    p = _one_candidate(p0, kind)
    df = _train_frame(a)
    train_df, hold_df = train.split(df, p)
    with tm.section("fit"):
        fitted, cats = train.fit_candidates(train_df, hold_df, p)
    (f,) = fitted
    c = p.contract
    x_ho = models.align_categories(models.matrix(hold_df, c), cats)
    y_ho = models.target(hold_df, c)
    reference = train_df.sample(
        n=min(len(train_df), train.REFERENCE_ROWS), random_state=p.train.seed
    ).sort_index()
    cl = client(st)
    exp_id = experiment_id(st, p.model_name)
    lineage = train._lineage(p, st)
    # MLflow's own calls are timed apart from the framework's plots and reference scoring.
    from mlflow.models.model import Model

    spent: dict[str, float] = {}
    # Every flavour's log_model goes through Model.log.
    log = Model.log.__func__  # type: ignore[attr-defined]
    Model.log = classmethod(_timed(log, spent, "Model.log (log_model)"))  # type: ignore[method-assign]
    for attr in ("log_artifacts", "register_model"):
        setattr(mlflow, attr, _timed(getattr(mlflow, attr), spent, f"mlflow.{attr}"))
    calls = {}
    # The evaluation artifacts (plots, importance, the monitor's reference predictions)
    # are computed before logging, as train.run does, and timed apart from it.
    tmp = tempfile.TemporaryDirectory()
    with tm.section("evaluation_artifacts"):
        out = train.evaluation_artifacts(
            f, p, x_ho, y_ho, reference, cats, Path(tmp.name) / "first"
        )
    # The first model logged in a process also pays one-off imports (skops, MLflow's map
    # of installed packages); train.run logs every candidate in one process, so the same
    # model is logged a second time to show the per-model cost.
    for section in ("log_register", "log_register_again"):
        spent.clear()
        with tm.section(section):
            run_id, uri = train.log_candidate(f, p, st, exp_id, x_ho, cats, lineage, out)
            # As train.run registers: the version and its tags in one request.
            tags = {"mlops.candidate": f.candidate.name, "mlops.run_id": run_id, **lineage}
            cl.set_tag(run_id, "mlops.selected", "true")
            mlflow.register_model(uri, f"{p.model_name}_bench", await_registration_for=0, tags=tags)
        calls[section] = {k: round(v, 3) for k, v in spent.items()}
    tmp.cleanup()
    return {
        "rows": {"train": len(train_df), "holdout": len(hold_df)},
        "metrics": f.metrics,
        "fit_only_seconds": round(f.fit_seconds, 3),
        "mlflow_calls_seconds": calls["log_register"],
        "mlflow_calls_seconds_again": calls["log_register_again"],
    }


def _timed(fn: Callable[..., Any], spent: dict[str, float], name: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def bare_matrix(df: Any, contract: Any, cats: dict[str, list[str]]) -> Any:
    import pandas as pd

    out = {}
    for f in contract.features:
        col = df[f.name]
        if f.dtype == "category":
            out[f.name] = pd.Categorical(col.astype(object), categories=cats[f.name])
        else:
            out[f.name] = pd.to_numeric(col).astype("float64")
    return pd.DataFrame(out)


def train_bare(a: Args, tm: Timer) -> dict[str, Any]:
    """The same estimator with the same hyper-parameters on the same rows, no framework."""
    import numpy as np
    import pandas as pd
    import yaml
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from xgboost import XGBClassifier

    kind = a.extra["kind"]
    raw = yaml.safe_load(a.params_path.read_text())
    c = a.contract()
    cand = next(x for x in raw["train"]["candidates"] if x["kind"] == kind)
    seed = raw["train"].get("seed", 42)
    df = _train_frame(a)
    # The split is outside the measured section, as train.split is for the framework.
    month = df[c.timestamp].dt.strftime("%Y-%m").to_numpy()
    hold = month == sorted(raw["train"]["partitions"])[-1]
    tr, ho = df[~hold], df[hold]
    with tm.section("fit"):
        cat_cols = [f.name for f in c.features if f.dtype == "category"]
        cats = {
            f.name: (f.categories or sorted(tr[f.name].dropna().astype(str).unique()))
            for f in c.features
            if f.dtype == "category"
        }
        y_tr = tr[c.target].to_numpy().astype(np.int32)
        y_ho = ho[c.target].to_numpy().astype(np.int32)
        if kind == "xgboost":
            model = XGBClassifier(
                enable_categorical=True,
                random_state=seed,
                tree_method="hist",
                n_jobs=2,
                **cand["params"],
            )
            x_tr, x_ho = bare_matrix(tr, c, cats), bare_matrix(ho, c, cats)
        else:
            # HistGradientBoosting's own categorical support on ordinal codes, categories
            # in the order an OrdinalEncoder learns them (sorted values seen in training).
            order = [*cat_cols, *[f.name for f in c.features if f.dtype != "category"]]
            seen = {n: sorted(tr[n].dropna().astype(str).unique()) for n in cat_cols}

            def codes(d: pd.DataFrame) -> np.ndarray:
                cols = []
                for n in order:
                    if n in seen:
                        k = pd.Categorical(d[n].astype(object), categories=seen[n]).codes
                        cols.append(np.where(k < 0, np.nan, k).astype("float64"))
                    else:
                        cols.append(pd.to_numeric(d[n]).to_numpy(dtype="float64", na_value=np.nan))
                return np.column_stack(cols)

            model = HistGradientBoostingClassifier(
                random_state=seed, categorical_features=list(range(len(cat_cols))), **cand["params"]
            )
            x_tr, x_ho = codes(tr), codes(ho)
        t_fit = time.perf_counter()
        model.fit(x_tr, y_tr)
        fit_only = time.perf_counter() - t_fit
        pred = model.predict_proba(x_ho)[:, 1]
        auc = float(roc_auc_score(y_ho, pred))
    return {
        "rows": {"train": len(tr), "holdout": len(ho)},
        "metrics": {"roc_auc": auc},
        "fit_only_seconds": round(fit_only, 3),
    }


# --------------------------------------------------------------------------- score
def score_framework(a: Args, tm: Timer) -> dict[str, Any]:
    import feast  # noqa: F401
    import feast.infra.offline_stores.duckdb  # noqa: F401
    import mlflow  # noqa: F401
    import xgboost  # noqa: F401

    from mlops import score

    p, st = a.load()
    with tm.section():
        meta = score.run(p, st, SCORE_MONTH)
    return {
        "rows": meta["rows"],
        "model_version": meta["model_version"],
        "prediction_sum": _prediction_sum(Path(meta["path"])),
    }


def _prediction_sum(path: Path) -> float:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return round(
        float(pc.sum(pq.read_table(path, columns=["prediction"])["prediction"]).as_py()), 3
    )


def champion_files(a: Args) -> dict[str, Any]:
    """Where the champion's native model file and feature metadata are (resolved untimed)."""
    import mlflow

    from mlops.registry import CHAMPION, client, version_by_alias

    p, st = a.load()
    client(st)
    mv = version_by_alias(st, p.model_name, CHAMPION)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{p.model_name}/{mv.version}"))
    feats = Path(
        mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="features.json")
    )
    model_file = next(local.rglob("model.ubj"))
    return {
        "model": str(model_file),
        "meta": json.loads(feats.read_text()),
        "name": p.model_name,
        "version": str(mv.version),
    }


def score_bare(a: Args, tm: Timer) -> dict[str, Any]:
    """XGBoost ``inplace_predict`` on the partition, with the same Parquet read and write."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb

    champ = champion_files(a)
    c = a.contract()
    cats = champ["meta"]["categories"]
    key, ts = c.entity_keys[0], c.timestamp
    out_path = a.work / "bare_predictions.parquet"
    with tm.section():
        booster = xgb.Booster()
        booster.load_model(champ["model"])
        df = pd.read_parquet(
            a.data / "validated" / f"{SCORE_MONTH}.parquet", columns=[key, ts, *c.feature_names]
        )
        pred = booster.inplace_predict(bare_matrix(df, c, cats))
        out = pa.table(
            {
                key: df[key].to_numpy(),
                ts: df[ts],
                "prediction": pred.astype("float64"),
                "predicted_label": (pred >= 0.5).astype("int8"),
                "model_name": pa.array(np.full(len(df), champ["name"]), pa.string()),
                "model_version": pa.array(np.full(len(df), champ["version"]), pa.string()),
            }
        )
        pq.write_table(out, out_path, compression="zstd")
    return {"rows": len(df), "prediction_sum": _prediction_sum(out_path)}


# --------------------------------------------------------------------------- monitor
def monitor_inputs(a: Args) -> tuple[Any, Any]:
    """Reference (the scaled training window) and current (the scored month), N rows each,
    with the champion's predictions; written once per size and reused."""
    import pandas as pd
    import xgboost as xgb

    ref_path, cur_path = a.work / "monitor_reference.parquet", a.work / "monitor_current.parquet"
    if ref_path.is_file() and cur_path.is_file():
        return pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    champ = champion_files(a)
    c = a.contract()
    booster = xgb.Booster()
    booster.load_model(champ["model"])
    frames = []
    for months in (TRAIN_MONTHS, [SCORE_MONTH]):
        df = pd.concat(
            [pd.read_parquet(a.data / "validated" / f"{m}.parquet") for m in months],
            ignore_index=True,
        )
        df["prediction"] = booster.inplace_predict(
            bare_matrix(df, c, champ["meta"]["categories"])
        ).astype("float64")
        frames.append(df)
    frames[0].to_parquet(ref_path)
    frames[1].to_parquet(cur_path)
    return frames[0], frames[1]


def monitor_framework(a: Args, tm: Timer) -> dict[str, Any]:
    """``monitor.run`` on the in-memory frames: Evidently on samples of max_rows, HTML, JSON."""
    import evidently  # noqa: F401
    import evidently.metrics  # noqa: F401

    from mlops import monitor

    p, st = a.load()
    ref, cur = monitor_inputs(a)
    with tm.section():
        res = monitor.run(p, st, SCORE_MONTH, ref, cur)
    cols = {k: {"value": v["value"], "drifted": v["drifted"]} for k, v in res["columns"].items()}
    for side in ("prediction_drift", "target_drift"):
        if res[side]:
            cols[res[side]["column"]] = {
                "value": res[side]["value"],
                "drifted": res[side]["drifted"],
            }
    return {
        "rows": res["rows"],
        "columns": cols,
        "breach": res["breach"],
        "performance": res["performance"],
    }


def drift_stats(ref: Any, cur: Any, contract: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Per-column drift with numpy/scipy: the monitor's methods, thresholds and decisions."""
    import numpy as np
    import pandas as pd
    from scipy import stats
    from scipy.spatial import distance

    def wasserstein(r: np.ndarray, c: np.ndarray) -> float:
        return float(stats.wasserstein_distance(r, c) / max(float(np.std(r)), 0.001))

    def jensenshannon(r: pd.Series, c: pd.Series) -> float:
        rc, cc = r.value_counts(), c.value_counts()
        keys = rc.index.union(cc.index)
        pr = rc.reindex(keys, fill_value=0).to_numpy() / len(r)
        pc_ = cc.reindex(keys, fill_value=0).to_numpy() / len(c)
        return float(distance.jensenshannon(pr, pc_))

    kinds = {
        f.name: "categorical" if f.dtype in ("category", "bool") else "numerical"
        for f in contract.features
    }
    kinds[contract.target] = "categorical" if contract.task == "classification" else "numerical"
    kinds["prediction"] = "numerical"
    out = {}
    for col, kind in kinds.items():
        r, c = ref[col].dropna(), cur[col].dropna()
        if kind == "numerical":
            value = wasserstein(r.to_numpy(dtype="float64"), c.to_numpy(dtype="float64"))
            thr = cfg["numerical_threshold"]
        else:
            value = jensenshannon(r, c)
            thr = cfg["categorical_threshold"]
        out[col] = {"value": round(value, 6), "drifted": bool(value >= thr)}
    return out


def ks_stats(ref: Any, cur: Any, contract: Any) -> dict[str, float]:
    from scipy import stats

    return {
        f.name: float(stats.ks_2samp(ref[f.name].dropna(), cur[f.name].dropna()).pvalue)
        for f in contract.features
        if f.dtype in ("float", "int")
    }


def monitor_bare(a: Args, tm: Timer) -> dict[str, Any]:
    """The monitor's per-column statistics with numpy/scipy on the full data."""
    import numpy as np
    import yaml
    from sklearn import metrics as m

    c = a.contract()
    cfg = yaml.safe_load(a.params_path.read_text())["monitor"]
    ref, cur = monitor_inputs(a)
    with tm.section():
        cols = drift_stats(ref, cur, c, cfg)
        y, pred = cur[c.target].to_numpy().astype(int), cur["prediction"].to_numpy()
        perf = {
            "roc_auc": float(m.roc_auc_score(y, pred)),
            "log_loss": float(m.log_loss(y, np.clip(pred, 1e-7, 1 - 1e-7))),
            "accuracy": float(m.accuracy_score(y, pred >= 0.5)),
        }
    with tm.section("ks"):
        ks = ks_stats(ref, cur, c)
    # The same statistics on the monitor's own samples, for the sampled-vs-full comparison.
    n, seed = int(cfg["max_rows"]), 42
    sref = ref.sample(n=n, random_state=seed).sort_index() if len(ref) > n else ref
    scur = cur.sample(n=n, random_state=seed).sort_index() if len(cur) > n else cur
    sampled = drift_stats(sref, scur, c, cfg)
    return {
        "rows": {"reference": len(ref), "current": len(cur)},
        "columns": cols,
        "sampled_columns": sampled,
        "performance": perf,
        "ks_pvalues": ks,
    }


def monitor_stage(a: Args, tm: Timer) -> dict[str, Any]:
    """``monitor`` as the pipeline runs it on the scored month (features from Feast,
    predictions from the file, the reference from the champion's MLflow run)."""
    import evidently.metrics  # noqa: F401
    import feast  # noqa: F401
    import feast.infra.offline_stores.duckdb  # noqa: F401
    import mlflow  # noqa: F401

    from mlops import monitor

    p, st = a.load()
    with tm.section():
        res = monitor.run_partition(p, st, SCORE_MONTH)
    return {"rows": res["rows"], "breach": res["breach"]}


# --------------------------------------------------------------------------- setup
def setup(a: Args, tm: Timer) -> dict[str, Any]:
    """Untimed preparation of a scaled project: feature files and Feast registry, the GX
    checkpoint, the MLflow database and a champion (XGBoost on a sample of the window)."""
    import pandas as pd

    from mlops import io, materialize, models, train, validate
    from mlops.registry import CHAMPION, client, experiment_id, version_by_alias

    p, st = a.load()
    c = p.contract
    key_types = {k: "string" for k in c.entity_keys}
    for m in [*TRAIN_MONTHS, SCORE_MONTH]:
        out = io.partition_file(materialize.source_dir(p, st), m)
        if not out.is_file():
            df = pd.read_parquet(io.partition_file(st.validated_dir, m))
            io.write_parquet(out, materialize.feature_rows(df, c, key_types))
    materialize.store(p, st)
    with validate._locked(st.gx_root):
        validate.ensure_checkpoint(validate.get_context(st.gx_root), p)
    client(st)
    exp_id = experiment_id(st, p.model_name)
    if version_by_alias(st, p.model_name, CHAMPION) is None:
        import mlflow

        pc = _one_candidate(p, "xgboost")
        df = pd.concat(
            [pd.read_parquet(io.partition_file(st.validated_dir, m)) for m in TRAIN_MONTHS],
            ignore_index=True,
        )
        df = df.sample(n=min(len(df), 200_000), random_state=0).sort_values(c.timestamp)
        tr, ho = train.split(df, pc)
        (f,), cats = train.fit_candidates(tr, ho, pc)
        x_ho = models.align_categories(models.matrix(ho, c), cats)
        ref = tr.sample(n=min(len(tr), train.REFERENCE_ROWS), random_state=0).sort_index()
        with tempfile.TemporaryDirectory() as tmp:
            out = train.evaluation_artifacts(
                f, pc, x_ho, models.target(ho, c), ref, cats, Path(tmp)
            )
            run_id, uri = train.log_candidate(
                f, pc, st, exp_id, x_ho, cats, train._lineage(pc, st), out
            )
        mv = mlflow.register_model(uri, p.model_name, await_registration_for=0)
        client(st).set_registered_model_alias(p.model_name, CHAMPION, mv.version)
    return {"champion": str(version_by_alias(st, p.model_name, CHAMPION).version)}


CASES: dict[str, Callable[[Args, Timer], dict[str, Any]]] = {
    "setup": setup,
    "validate.framework": validate_framework,
    "validate.gx": validate_gx,
    "validate.pandas": validate_pandas,
    "retrieve.framework": retrieve_framework,
    "retrieve.bare": retrieve_bare,
    "online.framework": online_framework,
    "online.bare_sqlite": online_bare_sqlite,
    "online.bare_redis": online_bare_redis,
    "train.framework": train_framework,
    "train.bare": train_bare,
    "score.framework": score_framework,
    "score.bare": score_bare,
    "monitor.framework": monitor_framework,
    "monitor.bare": monitor_bare,
    "monitor.stage": monitor_stage,
}


def main(argv: list[str]) -> int:
    name, args_json, out_path = argv
    for k, v in (
        ("DVC_NO_ANALYTICS", "1"),
        ("GX_ANALYTICS_ENABLED", "false"),
        ("MLFLOW_DISABLE_TELEMETRY", "true"),
        ("FEAST_USAGE", "False"),
    ):
        os.environ.setdefault(k, v)
    _quiet()
    t0 = time.perf_counter()
    tm = Timer()
    result: dict[str, Any] = {"case": name}
    try:
        result["out"] = CASES[name](Args(json.loads(args_json)), tm)
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - reported in the results, the run goes on
        result.update(
            ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-4000:]
        )
    result["sections"] = tm.sections
    result["process_peak_rss_mb"] = tm.process_peak_mb()
    result["process_seconds"] = round(time.perf_counter() - t0, 2)
    Path(out_path).write_text(json.dumps(result, indent=1, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
