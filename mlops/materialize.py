"""materialize: publish validated partitions as Feast features, offline and online.

The Feast objects derive from the data contract: one entity per key, a Parquet source
with one file per partition at ``<data_root>/features/<project>/<partition>.parquet``,
a feature view over the contract's features and a feature service ``<project>_model``.
The offline store is DuckDB: the default file store silently drops entity rows.

Training and scoring sets come from ``get_historical_features`` (point-in-time correct)
and always hold exactly one row per label row, in timestamp-then-key order. (``score``
streams a partition's own feature file instead: that join returns its rows unchanged.)
The online store gets the latest row per entity through Feast's
``write_to_online_store``, in chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlops import faults, io
from mlops.config import ConfigError, Contract, Params, Settings

if TYPE_CHECKING:
    import pandas as pd
    from feast import Entity, FeatureService, FeatureStore, FeatureView, FileSource, RepoConfig

log = logging.getLogger(__name__)
ENV_ONLINE = "MLOPS_FEAST_ONLINE"
FINGERPRINT_TAG = "mlops_definitions"
KeyType = Literal["string", "int"]

_ROW = "__mlops_row"
_ENTITY_TS = "event_timestamp"  # the name Feast expects; any other name makes it print a notice
_STORES: dict[tuple[str, ...], FeatureStore] = {}
ONLINE_CHUNK_ROWS = 50_000


class FeatureError(RuntimeError):
    """Features are missing or a retrieval broke its row-count guarantee."""


# --------------------------------------------------------------------------- definitions
@dataclass(frozen=True)
class Definitions:
    """The Feast objects of one project, in declaration order."""

    entities: tuple[Entity, ...]
    source: FileSource
    view: FeatureView
    service: FeatureService

    def objects(self) -> list[Any]:
        return [*self.entities, self.source, self.view, self.service]


def service_name(params: Params) -> str:
    return f"{params.materialize.project}_model"


def source_dir(params: Params, st: Settings) -> Path:
    """Folder of the offline feature files, one Parquet file per partition."""
    return st.features_dir / params.materialize.project


def infer_key_types(params: Params, st: Settings) -> dict[str, KeyType]:
    """Entity key types as the data says: the feature files, else validated partitions.

    Keys default to strings when no data exists yet.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = params.contract.entity_keys
    for folder in (source_dir(params, st), st.validated_dir):
        files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        if files:
            schema = pq.read_schema(files[-1])
            return {
                k: "int"
                if k in schema.names and pa.types.is_integer(schema.field(k).type)
                else "string"
                for k in keys
            }
    return dict.fromkeys(keys, "string")


def fingerprint(params: Params, st: Settings, key_types: dict[str, KeyType]) -> str:
    """A short hash of everything the definitions derive from."""
    c = params.contract
    spec = {
        "keys": [[k, key_types[k]] for k in c.entity_keys],
        "timestamp": c.timestamp,
        "features": [[f.name, f.dtype] for f in c.features],
        "materialize": params.materialize.model_dump(),
        "path": str(source_dir(params, st)),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def definitions(
    params: Params, st: Settings, key_types: dict[str, KeyType] | None = None
) -> Definitions:
    """Build entity, source, feature view and feature service from the data contract."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.data_format import ParquetFormat
    from feast.types import Bool, Float64, Int64, String

    c = params.contract
    name = params.materialize.project
    key_types = key_types or infer_key_types(params, st)
    value_types = {"string": ValueType.STRING, "int": ValueType.INT64}
    key_dtypes = {"string": String, "int": Int64}
    # Must match the Parquet types exactly: Float64 over float32 breaks materialize.
    dtypes = {"float": Float64, "int": Int64, "category": String, "bool": Bool}

    entities = tuple(
        Entity(name=k, join_keys=[k], value_type=value_types[key_types[k]]) for k in c.entity_keys
    )
    source = FileSource(
        name=f"{name}_source",
        path=str(source_dir(params, st) / "*.parquet"),
        timestamp_field=c.timestamp,
        file_format=ParquetFormat(),
    )
    view = FeatureView(
        name=name,
        entities=list(entities),
        ttl=timedelta(days=params.materialize.ttl_days),
        schema=[Field(name=k, dtype=key_dtypes[key_types[k]]) for k in c.entity_keys]
        + [Field(name=f.name, dtype=dtypes[f.dtype]) for f in c.features],
        source=source,
        online=params.materialize.online != "off",
        tags={FINGERPRINT_TAG: fingerprint(params, st, key_types)},
    )
    service = FeatureService(name=service_name(params), features=[view])
    return Definitions(entities, source, view, service)


# --------------------------------------------------------------------------- store
def online_store_config(st: Settings) -> dict[str, Any]:
    """Online store from ``MLOPS_FEAST_ONLINE``: unset or ``sqlite`` (under the data root),
    ``sqlite:///abs/path.db`` or ``redis://host:port/db``."""
    value = os.environ.get(ENV_ONLINE, "").strip()
    if value in ("", "sqlite"):
        return {"type": "sqlite", "path": str(st.data_root / "feast" / "online.db")}
    if value.startswith("sqlite:///"):
        return {"type": "sqlite", "path": value[len("sqlite:///") - 1 :]}
    if value.startswith(("redis://", "rediss://")):
        from urllib.parse import urlsplit

        url = urlsplit(value)
        parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"]
        db = url.path.strip("/")
        if db:
            if not db.isdigit():
                raise ConfigError(f"{ENV_ONLINE}={value!r}: the Redis db must be a number")
            parts.append(f"db={db}")
        if url.password:
            parts.append(f"password={url.password}")
        if url.scheme == "rediss":
            parts.append("ssl=true")
        # Without skip_dedup Feast reads every entity's stored timestamp before writing it.
        # Not needed: materialize writes only the latest row per entity, and re-loads newer
        # partitions after a backfill (online_interval), so the last write is the latest.
        return {"type": "redis", "connection_string": ",".join(parts), "skip_dedup": True}
    raise ConfigError(
        f"{ENV_ONLINE}={value!r} is not an online store; use 'sqlite', 'sqlite:///abs/path.db' "
        "or 'redis://host:port/db'"
    )


def repo_config(params: Params, st: Settings) -> RepoConfig:
    """The Feast RepoConfig built from Settings (``feature_store.yaml`` is for the CLI)."""
    from feast import RepoConfig

    return RepoConfig(
        project=params.materialize.project,
        provider="local",
        registry=str(st.data_root / "feast" / "registry.db"),
        online_store=online_store_config(st),
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=st.feast_repo,
    )


def store(params: Params, st: Settings) -> FeatureStore:
    """A FeatureStore with the definitions applied; applied only when they changed.

    The definitions carry a fingerprint tag, so a registry that already holds them is
    left alone (also across processes). Stores are cached per process.
    """
    from feast import FeatureStore

    key_types = infer_key_types(params, st)
    fp = fingerprint(params, st, key_types)
    online = online_store_config(st)
    registry = st.data_root / "feast" / "registry.db"
    cache_key = (str(registry), json.dumps(online, sort_keys=True), fp)
    fs = _STORES.get(cache_key)
    if fs is not None and registry.is_file():
        return fs
    (st.data_root / "feast").mkdir(parents=True, exist_ok=True)
    fs = FeatureStore(config=repo_config(params, st))
    if not _applied(fs, params, fp):
        with _lock(st):
            fs.refresh_registry()
            if not _applied(fs, params, fp):
                fs.apply(definitions(params, st, key_types).objects())
    _STORES[cache_key] = fs
    return fs


@contextlib.contextmanager
def _lock(st: Settings) -> Iterator[None]:
    """Serialise registry and online-store writes of processes on this host.

    The file registry is rewritten whole and SQLite allows one writer, so two tasks
    materialising at once would otherwise lose an update or fail on a locked database.
    Not re-entrant: never nest it.
    """
    import fcntl

    path = st.data_root / "feast" / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _applied(fs: FeatureStore, params: Params, fp: str) -> bool:
    from feast.errors import FeastObjectNotFoundException

    try:
        view = fs.get_feature_view(params.materialize.project)
        fs.get_feature_service(service_name(params))
    except (FeastObjectNotFoundException, FileNotFoundError):
        return False
    return view.tags.get(FINGERPRINT_TAG) == fp


# --------------------------------------------------------------------------- pure core
def feature_rows(
    df: pd.DataFrame, contract: Contract, key_types: dict[str, KeyType]
) -> pd.DataFrame:
    """Project rows onto keys, timestamp and features, typed as the feature view declares.

    Every partition file gets the same Parquet schema whatever its nulls, and the
    timestamp is stored in microseconds: DuckDB cannot cast TIMESTAMPTZ_NS, which
    breaks materialize.
    """
    import pandas as pd

    missing = [
        c
        for c in [*contract.entity_keys, contract.timestamp, *contract.feature_names]
        if c not in df.columns
    ]
    if missing:
        raise FeatureError(f"validated rows lack contract column(s) {missing}")
    out = pd.DataFrame(index=df.index)
    for k in contract.entity_keys:
        if df[k].isna().any():
            raise FeatureError(f"entity key column {k!r} has {int(df[k].isna().sum())} null(s)")
        out[k] = df[k].astype("int64" if key_types[k] == "int" else "string")
    ts = pd.to_datetime(df[contract.timestamp])
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    out[contract.timestamp] = ts.astype("datetime64[us, UTC]")
    pandas_types = {"float": "float64", "int": "Int64", "category": "string", "bool": "boolean"}
    for f in contract.features:
        try:
            out[f.name] = df[f.name].astype(pandas_types[f.dtype])
        except (TypeError, ValueError) as exc:
            raise FeatureError(f"column {f.name!r} does not hold {f.dtype} values: {exc}") from None
    return out.reset_index(drop=True)


def restore_dtypes(df: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Give retrieved features their contract dtypes.

    Categories are Python strings (None when missing); ints and bools are int64/bool,
    or float64 with NaN when a value is missing; floats are float64.
    """
    import numpy as np

    for f in contract.features:
        s = df[f.name]
        if f.dtype == "category":
            df[f.name] = s.astype(object).where(s.notna(), None)
        elif f.dtype == "float" or s.isna().any():
            if s.dtype != "float64":
                masked = s.astype("boolean" if f.dtype == "bool" else "Float64")
                df[f.name] = masked.to_numpy(dtype="float64", na_value=np.nan)
        else:
            df[f.name] = s.astype("int64" if f.dtype == "int" else "bool")
    return df


# --------------------------------------------------------------------------- run
def run(params: Params, st: Settings, partitions: list[str]) -> dict[str, Any]:
    """Publish validated ``partitions`` to the offline source and the online store.

    Each partition replaces its own feature file, so re-running one is idempotent. The
    online store is then loaded with the latest row per entity over ``online_interval``.
    """
    t0 = time.perf_counter()
    if not partitions:
        raise ValueError("materialize: no partitions given")
    for pid in partitions:
        io.partition_interval(pid)
    online_store_config(st)  # a bad MLOPS_FEAST_ONLINE fails before any work
    with io.exclusive(st.state_dir / "locks", "materialize", partitions):
        return _run(params, st, partitions, t0)


def _run(params: Params, st: Settings, partitions: list[str], t0: float) -> dict[str, Any]:
    import pandas as pd

    c = params.contract
    keys = []
    key_types: dict[str, KeyType] | None = None
    for pid in partitions:
        df = io.read_partitions(st.validated_dir, [pid], what="validated partition")
        key_types = key_types or {
            k: "int" if k in df and pd.api.types.is_integer_dtype(df[k]) else "string"
            for k in c.entity_keys
        }
        try:
            rows_df = feature_rows(df, c, key_types)
        except FeatureError as exc:
            raise FeatureError(f"{io.partition_file(st.validated_dir, pid)}: {exc}") from None
        io.write_parquet(io.partition_file(source_dir(params, st), pid), rows_df)
        keys.append(rows_df[c.entity_keys])
    rows = sum(len(k) for k in keys)
    fs = store(params, st)

    online = "off"
    if params.materialize.online != "off":
        # Online serving needs the latest values per entity: with "latest" only the newest
        # partition of this call is loaded (older ones were loaded by their own runs).
        pick = (
            range(len(partitions))
            if params.materialize.online == "all"
            else [max(range(len(partitions)), key=lambda i: partitions[i])]
        )
        start, end = online_interval(
            params,
            st,
            [partitions[i] for i in pick],
            pd.concat([keys[i] for i in pick], ignore_index=True),
        )
        faults.point("materialize.before_online")
        latest = latest_rows(params, st, start, end)
        _load_online(fs, params, st, partitions, latest)
        online = f"{fs.config.online_store.type} [{start:%Y-%m-%d}, {end:%Y-%m-%d})"
    secs = time.perf_counter() - t0
    print(
        f"materialize: {', '.join(partitions)} {rows:,} rows -> {source_dir(params, st)}, "
        f"online {online} in {secs:.1f}s"
    )
    return {
        "partitions": list(partitions),
        "rows": rows,
        "source": str(source_dir(params, st)),
        "online": online,
        "seconds": round(secs, 3),
    }


def _online_errors() -> tuple[type[BaseException], ...]:
    """Errors that may mean the online store is unreachable or busy, worth another try."""
    import sqlite3

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, sqlite3.OperationalError]
    try:
        import redis.exceptions as rx

        errors += [rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError]
    except ImportError:
        pass
    return tuple(errors)


def _describe_online(st: Settings) -> str:
    """The online store for messages: type and place, never a password."""
    cfg = online_store_config(st)
    if cfg["type"] == "redis":
        return f"redis {cfg['connection_string'].split(',')[0]}"
    return f"{cfg['type']} {cfg.get('path', '')}".strip()


def latest_rows(
    params: Params, st: Settings, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """The latest feature row per entity with a timestamp in ``[start, end)``, from the
    offline feature files, in entity-key order: what Feast's ``materialize`` of that
    interval loads online.

    String keys are ordered by byte length, then value: the order of Feast's serialised
    entity keys, so the online store's primary-key index is filled in order.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    c = params.contract
    tables = []
    for f in sorted(source_dir(params, st).glob("*.parquet")):
        lo, hi = io.partition_interval(f.stem)
        if lo < end and hi > start:
            t = pq.read_table(f, columns=[*c.entity_keys, c.timestamp, *c.feature_names])
            ts = t.column(c.timestamp)
            keep = pc.and_(
                pc.greater_equal(ts, pa.scalar(start.to_pydatetime(), ts.type)),
                pc.less(ts, pa.scalar(end.to_pydatetime(), ts.type)),
            )
            tables.append(t.filter(keep))
    if not tables:
        return pa.schema([]).empty_table().to_pandas()
    table = pa.concat_tables(tables)
    sort: list[tuple[str, str]] = []
    for k in c.entity_keys:
        kind = table.column(k).type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            name = f"__len_{k}"
            table = table.append_column(name, pc.binary_length(table.column(k)))
            sort.append((name, "ascending"))
        sort.append((k, "ascending"))
    # Newest first within an entity, so the first row of each entity is its latest.
    order = pc.sort_indices(table, sort_keys=[*sort, (c.timestamp, "descending")])
    df = table.take(order).select([*c.entity_keys, c.timestamp, *c.feature_names]).to_pandas()
    return df.drop_duplicates(c.entity_keys, keep="first", ignore_index=True)


def _write_online(fs: FeatureStore, view: str, rows: pd.DataFrame) -> None:
    """Feast's own online write of ``rows``, ``ONLINE_CHUNK_ROWS`` at a time.

    Feast builds every row's protobufs before writing, so one call over millions of rows
    holds them all; chunks keep memory flat.
    """
    for i in range(0, len(rows), ONLINE_CHUNK_ROWS):
        fs.write_to_online_store(view, rows.iloc[i : i + ONLINE_CHUNK_ROWS])


def _load_online(
    fs: FeatureStore, params: Params, st: Settings, partitions: list[str], rows: pd.DataFrame
) -> None:
    """Write ``rows`` to the online store with back-off while it is unreachable.

    Tries ``MLOPS_RETRY_ATTEMPTS`` times (default 4), waiting ``MLOPS_RETRY_DELAY_S``
    (default 1 s), doubled each time. The offline feature files are already complete; a
    failure leaves them as written and re-running materialize loads the online store.
    """
    import sqlite3

    attempts = max(1, int(os.environ.get("MLOPS_RETRY_ATTEMPTS", "4")))
    delay = float(os.environ.get("MLOPS_RETRY_DELAY_S", "1"))
    transient = _online_errors()
    for i in range(attempts):
        try:
            with _lock(st):
                _quietly(
                    _write_online,
                    retried=transient,
                    fs=fs,
                    view=params.materialize.project,
                    rows=rows,
                )
            return
        except transient as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" not in str(exc):
                raise  # a broken SQLite file or schema, not a busy one
            if i == attempts - 1:
                raise FeatureError(
                    f"online store {_describe_online(st)} unavailable after {attempts} tries "
                    f"({type(exc).__name__}: {io.redact(str(exc))}); the offline features of "
                    f"{', '.join(partitions)} in {source_dir(params, st)} are complete; "
                    "re-run materialize when the online store is back"
                ) from exc
            log.warning(
                "online store %s unavailable (%s); retrying in %.1fs",
                _describe_online(st),
                io.redact(str(exc)),
                delay,
            )
            time.sleep(delay)
            delay *= 2


def online_interval(
    params: Params, st: Settings, partitions: list[str], keys: pd.DataFrame
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The interval to load online: the partitions', extended to the newest partition on
    file when a later partition holds one of the same entities.

    The online stores keep the last write, not the latest timestamp (SQLite always, Redis
    with ``skip_dedup``), so a backfill must load the newer rows again to leave the latest
    value in place.
    """
    import pandas as pd

    intervals = [io.partition_interval(p) for p in partitions]
    start, end = min(i[0] for i in intervals), max(i[1] for i in intervals)
    later = [
        f
        for f in source_dir(params, st).glob("*.parquet")
        if io.partition_interval(f.stem)[0] >= end
    ]
    names = params.contract.entity_keys

    def index(df: pd.DataFrame) -> pd.Index:
        return pd.Index(df[names[0]]) if len(names) == 1 else pd.MultiIndex.from_frame(df[names])

    mine = index(keys)
    for f in later:
        if index(pd.read_parquet(f, columns=names)).isin(mine).any():
            return start, max(io.partition_interval(g.stem)[1] for g in later)
    return start, end


def _quietly(fn: Any, retried: tuple[type[BaseException], ...] = (), **kwargs: Any) -> Any:
    """Call ``fn`` without Feast's banners and progress bars; show them if it fails with
    an error other than ``retried`` (those will be tried again)."""
    buf = _io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            return fn(**kwargs)
    except BaseException as exc:
        if not isinstance(exc, retried):
            sys.stderr.write(buf.getvalue())
        raise


# --------------------------------------------------------------------------- retrieval
def feature_file(params: Params, st: Settings, partition: str) -> Path:
    """A partition's offline feature file; FeatureError naming it when not materialised."""
    path = io.partition_file(source_dir(params, st), partition)
    if not path.is_file():
        raise FeatureError(
            f"{path}: no features for partition {partition!r}; run `materialize {partition}` first"
        )
    return path

def retrieve(params: Params, st: Settings, labels: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of the feature service onto ``labels`` (keys + timestamp + any).

    Returns ``labels`` in its own row order with the features appended, one row per label
    row: anything else raises FeatureError.
    """
    import numpy as np
    import pandas as pd

    c = params.contract
    fs = store(params, st)
    n = len(labels)
    entity_df = pd.DataFrame({k: labels[k].reset_index(drop=True) for k in c.entity_keys})
    entity_df[_ENTITY_TS] = labels[c.timestamp].reset_index(drop=True)
    entity_df[_ROW] = np.arange(n, dtype="int64")
    job = fs.get_historical_features(
        entity_df=entity_df, features=fs.get_feature_service(service_name(params))
    )
    table = job.to_arrow()
    rows = table.column(_ROW).to_numpy()
    if table.num_rows != n or not (np.bincount(rows, minlength=n) == 1).all():
        raise FeatureError(
            f"feature retrieval returned {table.num_rows:,} rows for {n:,} label rows "
            f"(feature service {service_name(params)!r}); expected exactly one per label row"
        )
    order = np.empty(n, dtype="int64")
    order[rows] = np.arange(n)
    features = table.select(c.feature_names).take(order).to_pandas()
    out = pd.concat([labels.reset_index(drop=True), features], axis=1)
    return restore_dtypes(out, c)


def read_labels(st: Settings, contract: Contract, partitions: list[str]) -> pd.DataFrame:
    """Keys, timestamp and (when present) target of validated partitions, sorted by
    timestamp then keys."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    frames = []
    for pid in partitions:
        path = io.partition_file(st.validated_dir, pid)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: validated partition {pid!r} not found; run validate {pid} first"
            )
        names = pq.read_schema(path).names
        cols = [*contract.entity_keys, contract.timestamp, contract.target]
        frames.append(pd.read_parquet(path, columns=[col for col in cols if col in names]))
    labels = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if _is_sorted(labels, contract):
        return labels
    # Arrow sorts strings about 5x faster than pandas' multi-column sort_values.
    table = pa.Table.from_pandas(labels[[contract.timestamp, *contract.entity_keys]])
    order = pc.sort_indices(table, sort_keys=[(col, "ascending") for col in table.column_names])
    return labels.take(order.to_numpy()).reset_index(drop=True)


def _is_sorted(df: pd.DataFrame, contract: Contract) -> bool:
    """Cheap check for the usual case: rows already in timestamp-then-key order."""
    ts = df[contract.timestamp]
    if len(contract.entity_keys) != 1 or not ts.is_monotonic_increasing:
        return False
    t = (
        ts.to_numpy(dtype="datetime64[ns]")
        if ts.dt.tz is None
        else ts.dt.tz_convert(None).to_numpy()
    )
    k = df[contract.entity_keys[0]].to_numpy()
    return bool(((t[1:] != t[:-1]) | (k[1:] >= k[:-1])).all())


def _frame(params: Params, st: Settings, partitions: list[str], need_target: bool) -> pd.DataFrame:
    c = params.contract
    labels = read_labels(st, c, partitions)
    target = [c.target] if c.target in labels.columns else []
    if need_target and not target:
        raise FeatureError(f"validated partitions {partitions} lack the target {c.target!r}")
    for pid in partitions:
        feature_file(params, st, pid)
    return retrieve(params, st, labels)[[*c.entity_keys, c.timestamp, *c.feature_names, *target]]


def training_frame(params: Params, st: Settings, partitions: list[str]) -> pd.DataFrame:
    """The training set of ``partitions``: keys, timestamp, features (contract order), target.

    Features are joined point-in-time from the offline store, one row per label row,
    sorted by timestamp then keys.
    """
    return _frame(params, st, partitions, need_target=True)


def scoring_frame(params: Params, st: Settings, partitions: list[str]) -> pd.DataFrame:
    """Rows of ``partitions`` to score, with features; the target is kept when present."""
    return _frame(params, st, partitions, need_target=False)


def online_features(
    params: Params, st: Settings, entity_rows: list[dict[str, Any]]
) -> pd.DataFrame:
    """Latest feature values from the online store, columns in contract order.

    Unknown entities come back with missing values. The online store applies no TTL.
    """
    import pandas as pd

    c = params.contract
    if params.materialize.online == "off":
        raise ConfigError("materialize.online is 'off': there is no online store to read")
    fs = store(params, st)
    resp = fs.get_online_features(
        features=fs.get_feature_service(service_name(params)), entity_rows=entity_rows
    ).to_dict()
    out = pd.DataFrame({name: resp[name] for name in [*c.entity_keys, *c.feature_names]})
    return restore_dtypes(out, c)
