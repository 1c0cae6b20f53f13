"""The feature store: Feast definitions derived from the contract, and every read.

The Feast objects derive from the data contract: one entity per key, a Parquet source
with one file per partition at ``<data_root>/features/<project>/<partition>.parquet``,
a feature view over the contract's features and a feature service ``<project>_model``.
The offline store is DuckDB: the default file store silently drops entity rows.

Training and evaluation sets (``training_data``) come from ``get_historical_features``
(point-in-time correct, ``retrieve``) and always hold exactly one row per label row:
label rows or feature rows sharing a key and timestamp are refused (``io.one_to_one``).
``score`` streams a partition's own feature file instead (``batches``): that join
returns its rows unchanged. Online reads (``online_features``) use the same feature
service. Writing features is ``materialize``'s job; this module only reads, and
applies the definitions a read needs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlops import io, partitions
from mlops.config import ConfigError, Params, Settings
from mlops.contract import Contract

if TYPE_CHECKING:
    import pandas as pd
    from feast import Entity, FeatureService, FeatureStore, FeatureView, FileSource, RepoConfig

FINGERPRINT_TAG = "mlops_definitions"
KeyType = Literal["string", "int"]

_ROW = "__mlops_row"
_ENTITY_TS = "event_timestamp"  # the name Feast expects; any other name makes it print a notice
_STORES: dict[tuple[str, ...], FeatureStore] = {}
# What to do about rows sharing a key: validate drops them (validate.max_duplicate_keys).
REDO = "run validate and materialize on {what} again (see validate.max_duplicate_keys)"


class FeatureError(RuntimeError):
    """Features are missing or a retrieval broke its row-count guarantee."""


def load_feast() -> None:
    """Import Feast once per process, without typeguard's import-time instrumentation.

    Feast decorates its classes with ``typeguard.typechecked``, which re-parses and
    recompiles every decorated module as it is imported: about 3 s of each process's
    start (``python -O`` turns the decorator off the same way). Only the decorator is
    replaced, and only while Feast's modules are first imported; Feast itself is
    unchanged, and every call into it is checked by its own code as before.
    """
    if "feast.feature_store" in sys.modules:
        return
    import typeguard

    def unchecked(target: Any = None, **_: Any) -> Any:
        return (lambda t: t) if target is None else target

    checked, typeguard.typechecked = typeguard.typechecked, unchecked
    try:
        import feast.feature_store  # noqa: F401
    finally:
        typeguard.typechecked = checked


# --------------------------------------------------------------------------- definitions
@dataclass(frozen=True)
class Definitions:
    """The Feast objects of one project, in declaration order."""

    entities: tuple[Entity, ...]
    source: FileSource
    view: FeatureView
    service: FeatureService

    def objects(self) -> list[Any]:
        """The objects to ``apply``, in declaration order."""
        return [*self.entities, self.source, self.view, self.service]


def service_name(params: Params) -> str:
    """The feature service that trains and serves the model: ``<project>_model``."""
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
    load_feast()
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
    """The online store named by ``Settings.online_store`` (``MLOPS_FEAST_ONLINE``).

    Unset or ``sqlite`` (under the data root), ``sqlite:///abs/path.db`` or
    ``redis://host:port/db``.
    """
    value = st.online_store
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
                raise ConfigError(f"MLOPS_FEAST_ONLINE={value!r}: the Redis db must be a number")
            parts.append(f"db={db}")
        if url.password:
            parts.append(f"password={url.password}")
        if url.scheme == "rediss":
            parts.append("ssl=true")
        # skip_dedup: Feast would read each entity's stored timestamp before writing it; but
        # materialize writes the latest row per entity (online_interval), the last write wins.
        return {"type": "redis", "connection_string": ",".join(parts), "skip_dedup": True}
    raise ConfigError(
        f"MLOPS_FEAST_ONLINE={value!r} is not an online store; use 'sqlite', "
        "'sqlite:///abs/path.db' or 'redis://host:port/db'"
    )


def repo_config(params: Params, st: Settings) -> RepoConfig:
    """The Feast RepoConfig built from Settings (``feature_store.yaml`` is for the CLI)."""
    load_feast()
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
    load_feast()
    from feast import FeatureStore

    key_types = infer_key_types(params, st)
    fp = fingerprint(params, st, key_types)
    online = online_store_config(st)
    registry = st.data_root / "feast" / "registry.db"
    cache_key = (str(registry), json.dumps(online, sort_keys=True), fp)
    fs = _STORES.get(cache_key)
    if fs is not None and registry.is_file():
        return fs
    from google.protobuf.message import DecodeError

    (st.data_root / "feast").mkdir(parents=True, exist_ok=True)
    fs = FeatureStore(config=repo_config(params, st))
    try:
        if not _applied(fs, params, fp):
            with lock(st):
                fs.refresh_registry()
                if not _applied(fs, params, fp):
                    fs.apply(definitions(params, st, key_types).objects())
    except DecodeError as exc:  # truncated or overwritten: the registry names no file
        raise FeatureError(
            f"{registry}: damaged Feast registry, cannot be read ({exc}); it holds only "
            "definitions derived from params.yaml: delete it and re-run `mlops materialize`"
        ) from None
    _STORES[cache_key] = fs
    return fs


@contextmanager
def lock(st: Settings) -> Iterator[None]:
    """Serialise registry and online-store writes of processes on this host.

    The file registry is rewritten whole and SQLite allows one writer, so two tasks
    materialising at once would otherwise lose an update or fail on a locked database.
    """
    with io.file_lock(st.data_root / "feast" / ".lock"):
        yield


def _applied(fs: FeatureStore, params: Params, fp: str) -> bool:
    from feast.errors import FeastObjectNotFoundException

    try:
        view = fs.get_feature_view(params.materialize.project)
        fs.get_feature_service(service_name(params))
    except (FeastObjectNotFoundException, FileNotFoundError):
        return False
    return view.tags.get(FINGERPRINT_TAG) == fp


# --------------------------------------------------------------------------- reads
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


# --------------------------------------------------------------------------- retrieval
def feature_file(params: Params, st: Settings, partition: str) -> Path:
    """A partition's offline feature file, as ``materialize`` wrote it.

    Raises:
        FileNotFoundError: the partition was never validated.
        FeatureError: the partition was validated but not materialised.
    """
    validated = partitions.file(st.validated_dir, partition)
    if not validated.is_file():
        raise FileNotFoundError(
            f"{validated}: validated partition {partition!r} not found; run validate "
            f"{partition} first"
        )
    path = partitions.file(source_dir(params, st), partition)
    if not path.is_file():
        raise FeatureError(
            f"{path}: no features for partition {partition!r}; run `materialize {partition}` first"
        )
    return path


def batches(params: Params, path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Rows of a feature file, ``chunk_rows`` at a time, in file order.

    Columns are keys, timestamp and features in contract order, with the dtypes a
    retrieval gives them (``restore_dtypes``).
    """
    import pyarrow.parquet as pq

    c = params.contract
    columns = [*c.entity_keys, c.timestamp, *c.feature_names]
    with pq.ParquetFile(path) as pf:
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
            yield restore_dtypes(batch.to_pandas(), c)


def retrieve(
    params: Params, st: Settings, labels: pd.DataFrame, stage: str = "features", where: str = ""
) -> pd.DataFrame:
    """Point-in-time join of the feature service onto ``labels`` (keys + timestamp + any).

    Returns ``labels`` in its own row order with the features appended, one row per label
    row. Label rows sharing a key and timestamp are refused (``io.DuplicateKeys``), and
    any other result shape too (FeatureError), naming ``stage`` and ``where`` they are from.
    """
    import numpy as np
    import pandas as pd

    c = params.contract
    fs = store(params, st)
    n = len(labels)
    entity_df = pd.DataFrame({k: labels[k].reset_index(drop=True) for k in c.entity_keys})
    entity_df[_ENTITY_TS] = labels[c.timestamp].reset_index(drop=True)
    what = f"{stage}: label rows{where and ' of ' + where}"
    io.one_to_one(entity_df, [*c.entity_keys, _ENTITY_TS], what, REDO.format(what="them"))
    entity_df[_ROW] = np.arange(n, dtype="int64")
    job = fs.get_historical_features(
        entity_df=entity_df, features=fs.get_feature_service(service_name(params))
    )
    table = job.to_arrow()
    rows = table.column(_ROW).to_numpy()
    if table.num_rows != n or not (np.bincount(rows, minlength=n) == 1).all():
        raise FeatureError(
            f"{stage}: feature retrieval returned {table.num_rows:,} rows for {n:,} label rows "
            f"(feature service {service_name(params)!r}); expected exactly one per label row: "
            f"the feature files in {source_dir(params, st)} may hold rows sharing a key and "
            f"timestamp; {REDO.format(what='their partitions')}"
        )
    order = np.empty(n, dtype="int64")
    order[rows] = np.arange(n)
    features = table.select(c.feature_names).take(order).to_pandas()
    out = pd.concat([labels.reset_index(drop=True), features], axis=1)
    return restore_dtypes(out, c)


def online_reader(
    params: Params, st: Settings
) -> Callable[[list[dict[str, Any]]], dict[str, list[Any]]]:
    """A function from entity rows to their latest online feature values, by feature name.

    The store and feature service are looked up once, so each call is one online read.
    Unknown entities come back as None. The online store applies no TTL.
    """
    if params.materialize.online == "off":
        raise ConfigError("materialize.online is 'off': there is no online store to read")
    fs = store(params, st)
    service = fs.get_feature_service(service_name(params))
    names = params.contract.feature_names

    def read(entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        resp = fs.get_online_features(features=service, entity_rows=entity_rows).to_dict()
        return {name: resp[name] for name in names}

    return read


def online_features(
    params: Params, st: Settings, entity_rows: list[dict[str, Any]]
) -> pd.DataFrame:
    """Latest feature values from the online store, columns in contract order.

    Unknown entities come back with missing values. The online store applies no TTL.
    """
    import pandas as pd

    c = params.contract
    values = online_reader(params, st)(entity_rows)
    out = pd.DataFrame({k: [r[k] for r in entity_rows] for k in c.entity_keys})
    for name in c.feature_names:
        out[name] = values[name]
    return restore_dtypes(out, c)
