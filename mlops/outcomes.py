"""The label store: outcomes joined to a scored partition's predictions (``label``).

``<data_root>/labels/<partition>.parquet`` holds one row per labelled prediction: the
contract's entity keys, the target (as the contract types it) and ``known_at``, when the
outcome became known (null when the labels source does not say). Its sidecar
``<partition>.json`` records how many predictions are labelled and each batch that
arrived. Training reads the target from here for rows ingested without one.

Outcomes are joined on a 64-bit hash of their keys, so only the hash, the outcome and
its time are held for a whole partition; the keys themselves are read a batch at a time.
Within a batch, rows sharing a hash are checked to share their keys too. ``merge`` is
the one rule for outcomes of one key: the latest known wins, and two different outcomes
known at the same time (or both with no time) are a conflict; so labels arriving in
several batches end in the same store as one batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import partitions
from mlops.config import Settings
from mlops.contract import Contract

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

KNOWN_AT = "known_at"
NO_TIME = -(2**63)
"""``known_at`` of an outcome whose time is not known (sorts before every real time)."""
EXAMPLES = 5


class LabelError(ValueError):
    """Outcomes cannot be joined as given; the message names the file, column and fix."""


class Conflict(ValueError):
    """One key has different outcomes known at the same time (raised by ``merge``)."""

    def __init__(self, key_hash: int, values: list[Any], origins: list[int]) -> None:
        super().__init__(f"key hash {key_hash:016x}: conflicting outcomes {values}")
        self.key_hash, self.values, self.origins = key_hash, values, origins


def path(st: Settings, partition: str) -> Path:
    """The label store file of ``partition`` (refuses a malformed id)."""
    return partitions.file(st.labels_dir, partition)


def sidecar(st: Settings, partition: str) -> Path:
    """The JSON summary beside the label store file of ``partition``."""
    return path(st, partition).with_suffix(".json")


def read(st: Settings, contract: Contract, partition: str) -> pd.DataFrame | None:
    """The outcomes joined to ``partition`` so far: keys and target; None when none arrived."""
    import pandas as pd

    p = path(st, partition)
    if not p.is_file():
        return None
    return pd.read_parquet(p, columns=[*contract.entity_keys, contract.target])


# --------------------------------------------------------------------------- outcomes by hash
@dataclass
class Outcomes:
    """Outcomes by key hash: ``hash`` (uint64), ``target``, ``known_at`` (ns UTC or NO_TIME).

    ``origin`` says where each came from: an index into the files read (int16), -1 for
    the store.
    """

    hash: np.ndarray
    target: np.ndarray
    known_at: np.ndarray
    origin: np.ndarray

    def __len__(self) -> int:
        return len(self.hash)

    def sorted(self) -> Outcomes:
        """The same outcomes in hash order."""
        order = self.hash.argsort(kind="stable")
        return Outcomes(*(a[order] for a in (self.hash, self.target, self.known_at, self.origin)))


@dataclass
class Merged:
    """What ``merge`` did: arrived rows collapsed, keys added, keys given another outcome."""

    duplicates: int
    new: int
    changed: int


def empty(task: str) -> Outcomes:
    """No outcomes, typed for ``task``."""
    import numpy as np

    dtype = "int8" if task == "classification" else "float64"
    return Outcomes(*(np.empty(0, t) for t in ("uint64", dtype, "int64", "int16")))


def concat(parts: list[Outcomes], task: str) -> Outcomes:
    """One ``Outcomes`` of several."""
    import numpy as np

    kept = [p for p in parts if len(p)] or parts[:1] or [empty(task)]
    cols = zip(*((p.hash, p.target, p.known_at, p.origin) for p in kept), strict=True)
    return Outcomes(*(np.concatenate(c) for c in cols))


def merge(stored: Outcomes | None, arrived: Outcomes) -> tuple[Outcomes, Merged]:
    """Pure: one outcome per key of ``stored`` and ``arrived`` together, in hash order.

    The outcome known latest wins; the same outcome again is collapsed. Different outcomes
    at the same latest time (both without a time, say) raise ``Conflict``. Merging batch
    after batch gives what merging them all at once gives, and merging what is stored
    again changes nothing. ``stored`` holds one row per key.
    """
    import numpy as np

    n_stored = 0 if stored is None else len(stored)
    rows = arrived
    if stored is not None:  # stored rows are told apart by their origin, -1
        rows = concat([stored, arrived], "regression")
        rows.origin[:n_stored] = -1
    order = rows.hash.argsort()
    h = rows.hash[order]
    same = h[1:] == h[:-1]
    if same.any():  # a key seen more than once: its rows in known_at order
        order = np.lexsort((rows.known_at, rows.hash))
        h = rows.hash[order]
    y, t, org = (a[order] for a in (rows.target, rows.known_at, rows.origin))
    del order
    if not same.any():  # every key once (the usual first batch): nothing to decide
        return Outcomes(h, y, t, org), Merged(0, len(arrived), 0)
    last = np.r_[~same, True]
    ends = np.flatnonzero(last)
    tied = np.flatnonzero(same & (t[1:] == t[:-1]) & (y[1:] != y[:-1]))
    at_end = tied[t[ends[np.searchsorted(ends, tied + 1)]] == t[tied]]
    if len(at_end):  # a tie at the key's latest time: which outcome holds is unknown
        i = j = int(at_end[0])
        while i > 0 and h[i - 1] == h[j] and t[i - 1] == t[j]:
            i -= 1
        k = int(ends[np.searchsorted(ends, j)]) + 1
        raise Conflict(int(h[j]), y[i:k].tolist(), org[i:k].tolist())
    changed = 0
    if n_stored:
        was = np.flatnonzero(org == -1)
        changed = int((y[was] != y[ends[np.searchsorted(ends, was)]]).sum())
    out = Outcomes(h[last], y[last], t[last], org[last])
    distinct = np.sort(arrived.hash)
    seen = int((distinct[1:] != distinct[:-1]).sum()) + 1 if len(distinct) else 0
    return out, Merged(len(arrived) - seen, len(out) - n_stored, changed)


def member(sorted_hash: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``h`` is in ``sorted_hash``, and whether it is there at all."""
    import numpy as np

    if not len(sorted_hash):
        return np.zeros(len(h), "int64"), np.zeros(len(h), bool)
    # Sorted needles walk the haystack in order: several times faster than random ones.
    order = h.argsort()
    i = np.empty(len(h), "int64")
    i[order] = np.searchsorted(sorted_hash, h[order])
    np.minimum(i, len(sorted_hash) - 1, out=i)
    return i, sorted_hash[i] == h


# --------------------------------------------------------------------------- keys
def key_kind(t: pa.DataType) -> str:
    """How a key column is compared: as ``string``, ``int``, ``time`` or ``other`` values."""
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    if pa.types.is_integer(t):
        return "int"
    return "time" if pa.types.is_timestamp(t) else "other"


def arrow_keys(table: pa.Table | pa.RecordBatch, keys: list[str]) -> list[pa.Array]:
    """Key columns of a predictions (or store) batch as ``key_hash`` takes them.

    Text, 64-bit integers, and times as nanoseconds since 1970 (UTC).
    """
    import pyarrow as pa

    out = []
    for k in keys:
        col = table.column(k)
        kind = key_kind(col.type)
        if kind == "time":
            col = col.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
        elif kind == "int":
            col = col.cast(pa.int64())
        elif kind == "string" and pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        out.append(col)
    return out


def key_hash(columns: list[Any]) -> np.ndarray:
    """A 64-bit hash per row of the key columns (``arrow_keys``/``arrivals.frame_keys``).

    DuckDB's ``hash`` over the columns: text hashes alike whether it came from Arrow or
    Python strings, and several times faster than hashing Python objects one by one.
    """
    import numpy as np
    import pyarrow as pa

    names = [f"k{i}" for i in range(len(columns))]
    con = _duckdb()
    con.register("mlops_keys", pa.table(dict(zip(names, columns, strict=True))))
    try:
        sql = f"SELECT hash({', '.join(names)}) AS h FROM mlops_keys"
        return np.asarray(con.execute(sql).fetchnumpy()["h"], dtype="uint64")
    finally:
        con.unregister("mlops_keys")


_local = threading.local()


def _duckdb() -> Any:
    """This thread's in-memory DuckDB connection (used only to hash keys)."""
    import duckdb

    if not hasattr(_local, "con"):
        _local.con = duckdb.connect()
    return _local.con


def shared_hash_keys(h: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """Rows of one batch sharing their hash with a row of other keys (a collision)."""
    import numpy as np

    order = h.argsort(kind="stable")
    same = np.flatnonzero(h[order][1:] == h[order][:-1])
    a, b = order[same], order[same + 1]
    differ = np.zeros(len(same), bool)
    for col in columns:
        differ |= col[a] != col[b]
    return b[differ]


def show(values: tuple[Any, ...]) -> str:
    """A key for a message: the value, or the tuple of values of several keys."""
    text = [repr(v) if isinstance(v, str) else str(v) for v in values]
    return text[0] if len(text) == 1 else "(" + ", ".join(text) + ")"


def schema(predictions: pa.Schema, contract: Contract) -> pa.Schema:
    """The store's columns: the predictions' keys, the target, ``known_at`` (UTC).

    The target is typed as the contract says: int8 0/1, or float64 for regression.
    """
    import pyarrow as pa

    target = pa.int8() if contract.task == "classification" else pa.float64()
    keys = [predictions.field(k) for k in contract.entity_keys]
    return pa.schema([*keys, (contract.target, target), (KNOWN_AT, pa.timestamp("ns", tz="UTC"))])


def table(
    keys: list[pa.Array], target: np.ndarray, known_at: np.ndarray, to: pa.Schema
) -> pa.Table:
    """Store rows of schema ``to`` from key columns, outcomes and times (NO_TIME: null)."""
    import pyarrow as pa

    known = pa.array(known_at, mask=known_at == NO_TIME).cast(pa.timestamp("ns", tz="UTC"))
    return pa.Table.from_arrays([*keys, pa.array(target), known], schema=to)


def stored(st: Settings, contract: Contract, partition: str, batch_rows: int) -> Outcomes | None:
    """The outcomes in ``partition``'s label store by key hash (store order); None if none."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    p = path(st, partition)
    if not p.is_file():
        return None
    dtype = "int8" if contract.task == "classification" else "float64"
    parts = []
    try:
        with pq.ParquetFile(p) as pf:
            cols = [*contract.entity_keys, contract.target, KNOWN_AT]
            for b in pf.iter_batches(batch_size=batch_rows, columns=cols):
                t = b.column(KNOWN_AT).cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
                parts.append(
                    Outcomes(
                        key_hash(arrow_keys(b, contract.entity_keys)),
                        b.column(contract.target).to_numpy(zero_copy_only=False).astype(dtype),
                        pc.fill_null(t, NO_TIME).to_numpy(),
                        np.full(b.num_rows, -1, "int16"),
                    )
                )
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise LabelError(
            f"{p}: the label store of {partition} cannot be read ({exc}); restore it from a "
            f"backup, or remove it and its .json and re-run `mlops label {partition}`"
        ) from exc
    return concat(parts, contract.task)
