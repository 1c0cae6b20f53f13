"""materialize: publish validated partitions as Feast features, offline and online.

Each partition's feature rows (keys, timestamp, features, typed as the feature view
declares) go to its own file in the Feast offline source, stamped with the raw version
they were made from (a validated file of an earlier version is refused). The online store
then gets the latest row per entity through Feast's ``write_to_online_store``, in chunks.
The Feast definitions and every read live in ``mlops.features``.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TypedDict

from mlops import faults, features, io, observe, partitions, provenance
from mlops.config import Params, Settings
from mlops.contract import Contract
from mlops.features import FeatureError, KeyType, source_dir

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)
ONLINE_CHUNK_ROWS = 50_000


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


# --------------------------------------------------------------------------- run
class Materialized(TypedDict):
    """What ``materialize`` published: partitions, rows, the offline source, the online load."""

    partitions: list[str]
    rows: int
    source: str
    online: str
    seconds: float


def run(params: Params, st: Settings, pids: list[str]) -> Materialized:
    """Publish validated ``pids`` to the offline source and the online store.

    Each partition replaces its own feature file, so re-running one is idempotent. The
    online store is then loaded with the latest row per entity over ``online_interval``.
    """
    t0 = time.perf_counter()
    if not pids:
        raise ValueError("materialize: no partitions given")
    for pid in pids:
        partitions.interval(pid)
    features.online_store_config(st)  # a bad MLOPS_FEAST_ONLINE fails before any work
    with io.exclusive(st.state_dir / "locks", "materialize", pids):
        return _run(params, st, pids, t0)


def _read_validated(
    st: Settings, pids: list[str]
) -> tuple[pd.DataFrame, list[int], list[str | None]]:
    """All validated partitions as one frame, one after another, row counts and versions.

    Read and converted once for all, so a thousand small partitions cost little more
    than their rows. A validated file made from an earlier raw version than the current
    one is refused (``provenance.Stale``), naming validate to re-run.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, md5s = [], []
    entries = provenance.manifest(st)
    for pid in pids:
        path = partitions.file(st.validated_dir, pid)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: validated partition {pid!r} not found; run `mlops validate` for it first"
            )
        tables.append(pq.read_table(path))
        found = provenance.made_from(tables[-1].schema)
        redo = f"`mlops validate --partitions {pid}`"
        provenance.require(st, pid, found, "materialize", path, redo, entries)
        md5s.append(found)
    sizes = [t.num_rows for t in tables]
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowInvalid:  # partitions stored with other types: pandas unifies them
        import pandas as pd

        frames = [t.to_pandas() for t in tables]
        return pd.concat(frames, ignore_index=True), sizes, md5s
    return table.to_pandas().reset_index(drop=True), sizes, md5s


def _check_keys(
    st: Settings, pids: list[str], sizes: list[int], rows: pd.DataFrame, c: Contract
) -> None:
    """Refuse a partition whose entity key is not unique: a join would pick a row at random."""
    import numpy as np

    part = np.repeat(np.arange(len(pids)), sizes)
    dup = rows[c.entity_keys].assign(_part=part).duplicated(keep=False).to_numpy()
    if dup.any():
        i = int(part[dup][0])
        keys = rows.loc[dup & (part == i), c.entity_keys].drop_duplicates().head(5)
        shown = ", ".join(map(str, keys.itertuples(index=False, name=None)))
        raise FeatureError(
            f"{partitions.file(st.validated_dir, pids[i])}: entity key "
            f"{'+'.join(c.entity_keys)} is not unique ({int((dup & (part == i)).sum())} rows "
            f"share a key, e.g. {shown}); validate drops such rows, so this file did not come "
            "from `mlops validate`: re-run validate for it"
        )


def _run(params: Params, st: Settings, pids: list[str], t0: float) -> Materialized:
    import pandas as pd

    c = params.contract
    df, sizes, md5s = _read_validated(st, pids)
    first = df.iloc[: sizes[0]]
    key_types: dict[str, KeyType] = {
        k: "int" if k in first and pd.api.types.is_integer_dtype(first[k]) else "string"
        for k in c.entity_keys
    }
    try:
        rows_df = feature_rows(df, c, key_types)
    except FeatureError:
        # name the partition at fault
        start = 0
        for pid, n in zip(pids, sizes, strict=True):
            try:
                feature_rows(df.iloc[start : start + n], c, key_types)
            except FeatureError as exc:
                raise FeatureError(f"{partitions.file(st.validated_dir, pid)}: {exc}") from None
            start += n
        raise
    _check_keys(st, pids, sizes, rows_df, c)
    keys = []
    start = 0
    for pid, n, md5 in zip(pids, sizes, md5s, strict=True):
        part = rows_df.iloc[start : start + n].reset_index(drop=True)
        path = partitions.file(source_dir(params, st), pid)
        io.write_parquet(path, part, provenance.metadata(md5))
        keys.append(part[c.entity_keys])
        start += n
    rows = sum(len(k) for k in keys)
    fs = features.store(params, st)

    online = "off"
    if params.materialize.online != "off":
        # Online serving needs the latest values per entity: with "latest" only the newest
        # partition of this call is loaded (older ones were loaded by their own runs).
        pick = (
            range(len(pids))
            if params.materialize.online == "all"
            else [max(range(len(pids)), key=lambda i: pids[i])]
        )
        start, end = online_interval(
            params,
            st,
            [pids[i] for i in pick],
            pd.concat([keys[i] for i in pick], ignore_index=True),
        )
        faults.point("materialize.before_online")
        latest = latest_rows(params, st, start, end)
        _load_online(fs, params, st, pids, latest)
        online = f"{fs.config.online_store.type} [{start:%Y-%m-%d}, {end:%Y-%m-%d})"
    secs = time.perf_counter() - t0
    observe.rows(rows, rows)
    print(
        f"materialize: {', '.join(pids)} {rows:,} rows -> {source_dir(params, st)}, "
        f"online {online} in {secs:.1f}s"
    )
    return Materialized(
        partitions=list(pids),
        rows=rows,
        source=str(source_dir(params, st)),
        online=online,
        seconds=round(secs, 3),
    )


def _describe_online(st: Settings) -> str:
    """The online store for messages: type and place, never a password."""
    cfg = features.online_store_config(st)
    if cfg["type"] == "redis":
        return f"redis {cfg['connection_string'].split(',')[0]}"
    return f"{cfg['type']} {cfg.get('path', '')}".strip()


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


def latest_rows(
    params: Params, st: Settings, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """The latest feature row per entity with a timestamp in ``[start, end)``.

    Read from the offline feature files, in entity-key order: what Feast's
    ``materialize`` of that interval loads online.

    String keys are ordered by byte length, then value: the order of Feast's serialised
    entity keys, so the online store's primary-key index is filled in order.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    c = params.contract
    tables = []
    for f in sorted(source_dir(params, st).glob("*.parquet")):
        lo, hi = partitions.interval(f.stem)
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
    fs: FeatureStore, params: Params, st: Settings, parts: list[str], rows: pd.DataFrame
) -> None:
    """Write ``rows`` to the online store with back-off while it is unreachable.

    Tries ``Settings.retry_attempts`` times, waiting ``retry_delay_s``, doubled each time.
    The offline feature files are already complete; a failure leaves them as written and
    re-running materialize loads the online store.
    """
    import sqlite3

    errors = _online_errors()

    def transient(exc: BaseException) -> bool:
        # a broken SQLite file or schema is not a busy one
        return isinstance(exc, errors) and not (
            isinstance(exc, sqlite3.OperationalError) and "locked" not in str(exc)
        )

    def write() -> None:
        with features.lock(st):
            _quietly(
                _write_online, retried=errors, fs=fs, view=params.materialize.project, rows=rows
            )

    def warn(exc: BaseException, delay: float) -> None:
        log.warning(
            "online store %s unavailable (%s); retrying in %.1fs",
            _describe_online(st),
            io.redact(str(exc)),
            delay,
        )

    try:
        io.retry(
            write, transient, attempts=st.retry_attempts, delay=st.retry_delay_s, on_retry=warn
        )
    except errors as exc:
        if not transient(exc):
            raise
        raise FeatureError(
            f"online store {_describe_online(st)} unavailable after "
            f"{st.retry_attempts} tries ({type(exc).__name__}: {io.redact(str(exc))}); the "
            f"offline features of {', '.join(parts)} in {source_dir(params, st)} are "
            "complete; re-run materialize when the online store is back"
        ) from exc


def online_interval(
    params: Params, st: Settings, pids: list[str], keys: pd.DataFrame
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The interval to load online.

    The partitions' own, extended to the newest partition on file when a later partition
    holds one of the same entities.

    The online stores keep the last write, not the latest timestamp (SQLite always, Redis
    with ``skip_dedup``), so a backfill must load the newer rows again to leave the latest
    value in place.
    """
    import pandas as pd

    intervals = [partitions.interval(p) for p in pids]
    start, end = min(i[0] for i in intervals), max(i[1] for i in intervals)
    later = [
        f for f in source_dir(params, st).glob("*.parquet") if partitions.interval(f.stem)[0] >= end
    ]
    names = params.contract.entity_keys

    def index(df: pd.DataFrame) -> pd.Index:
        return pd.Index(df[names[0]]) if len(names) == 1 else pd.MultiIndex.from_frame(df[names])

    mine = index(keys)
    for f in later:
        if index(pd.read_parquet(f, columns=names)).isin(mine).any():
            return start, max(partitions.interval(g.stem)[1] for g in later)
    return start, end


def _quietly(fn: Any, retried: tuple[type[BaseException], ...] = (), **kwargs: Any) -> Any:
    """Call ``fn`` without Feast's banners and progress bars.

    They are shown if it fails with an error other than ``retried`` (tried again).
    """
    buf = _io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            return fn(**kwargs)
    except BaseException as exc:
        if not isinstance(exc, retried):
            sys.stderr.write(buf.getvalue())
        raise


def repo_objects(repo_file: str) -> dict[str, Any]:
    """The Feast objects a ``feature_repo/`` module exposes to the Feast CLI.

    ``feast apply`` run inside the folder collects them from the module's globals. The
    params file is ``$MLOPS_PARAMS``, else the project's ``params.yaml`` beside the folder.
    """
    from pathlib import Path

    from feast import Project

    from mlops.config import load_params, params_path, settings

    path = params_path(default=Path(repo_file).resolve().parent.parent / "params.yaml")
    params = load_params(path)
    defs = features.definitions(params, settings(path))
    # one entity per contract key (Feast allows one join key per entity); the project
    # must match `project` in feature_store.yaml, or `feast apply` stops
    return {
        "project": Project(name=params.materialize.project),
        **{f"entity_{e.name}": e for e in defs.entities},
        "source": defs.source,
        "feature_view": defs.view,
        "feature_service": defs.service,
    }
