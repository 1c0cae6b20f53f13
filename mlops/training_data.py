"""The training and holdout sets: validated rows whose outcome is known, with features.

A row's target is its own in the validated partition when present and not null, else
the one ``mlops label`` joined to it in the label store (``outcomes``), matched on the
entity keys: a partition scored before its outcomes arrived is ingested without them.
Rows whose outcome is still unknown are left out, counted and reported; a partition
with no known outcome at all is refused, naming the ``label`` run that brings them.

Features are joined point-in-time from the offline store (``features.retrieve``), one
row per label row, in timestamp-then-key order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlops import features, io, outcomes, partitions, provenance
from mlops.config import Params, Settings
from mlops.contract import Contract
from mlops.features import REDO, FeatureError

if TYPE_CHECKING:
    import pandas as pd


class LabelsMissing(FeatureError):
    """A partition of a training window or holdout has no known outcome yet."""


@dataclass(frozen=True)
class TrainingSet:
    """Rows with a known target and their features, and the rows left out per partition.

    Attributes:
        frame: keys, timestamp, features (contract order) and the target, typed as the
            label store types it (int8 0/1 for classification, float64 for regression).
        unlabelled: partition -> rows left out because their outcome is not known yet.
        from_store: partition -> rows whose target came from the label store.
    """

    frame: pd.DataFrame
    unlabelled: dict[str, int] = field(default_factory=dict)
    from_store: dict[str, int] = field(default_factory=dict)

    @property
    def left_out(self) -> int:
        """Rows of the window left out for want of a known target."""
        return sum(self.unlabelled.values())


def _read(st: Settings, contract: Contract, pid: str) -> pd.DataFrame:
    """Keys, timestamp and (when present) target of one validated partition."""
    import pandas as pd
    import pyarrow.parquet as pq

    path = partitions.file(st.validated_dir, pid)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: validated partition {pid!r} not found; run validate {pid} first"
        )
    names = pq.read_schema(path).names
    cols = [*contract.entity_keys, contract.timestamp, contract.target]
    return pd.read_parquet(path, columns=[col for col in cols if col in names])


def _in_order(labels: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Rows in timestamp-then-key order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if _is_sorted(labels, contract):
        return labels
    # Arrow sorts strings about 5x faster than pandas' multi-column sort_values.
    table = pa.Table.from_pandas(labels[[contract.timestamp, *contract.entity_keys]])
    order = pc.sort_indices(table, sort_keys=[(col, "ascending") for col in table.column_names])
    return labels.take(order.to_numpy()).reset_index(drop=True)


def read_labels(st: Settings, contract: Contract, pids: list[str]) -> pd.DataFrame:
    """Keys, timestamp and (when present) target of validated partitions, as stored.

    Sorted by timestamp, then keys. The target may be null (not known yet).
    """
    import pandas as pd

    frames = [_read(st, contract, pid) for pid in pids]
    labels = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return _in_order(labels, contract)


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


def known_targets(
    st: Settings, contract: Contract, pid: str, rows: pd.DataFrame, stage: str = "train"
) -> pd.DataFrame:
    """``rows`` of partition ``pid`` with the target of each row as far as it is known.

    ``rows`` holds the entity keys and, when the partition has one, its target column.
    A row's own target is kept when not null; otherwise the label store's outcome for
    its keys is taken; rows neither knows stay null. The target is int8 0/1
    (classification) or float64, and float64 with NaN where unknown.

    Raises:
        io.DuplicateKeys: the label store holds two outcomes for one key.
        FeatureError: the label store's keys cannot be matched to the partition's.
    """
    import numpy as np
    import pandas as pd

    keys, target = contract.entity_keys, contract.target
    own = (
        rows[target].to_numpy(dtype="float64", na_value=np.nan)
        if target in rows.columns
        else np.full(len(rows), np.nan)
    )
    store = outcomes.read(st, contract, pid)
    y = own
    if store is not None and np.isnan(own).any():
        where = f"{stage}: label store {outcomes.path(st, pid)}"
        io.one_to_one(store, keys, where, f"run `mlops label {pid}` again")
        try:
            joined = rows[keys].merge(store, on=keys, how="left", validate="m:1")
        except ValueError as exc:
            raise FeatureError(
                f"{where}: its keys {keys} do not match those of validated partition {pid} "
                f"({exc}); run `mlops label {pid}` again"
            ) from None
        y = np.where(np.isnan(own), joined[target].to_numpy(dtype="float64", na_value=np.nan), own)
    whole = contract.task == "classification" and not np.isnan(y).any()
    out = rows.drop(columns=[target], errors="ignore").reset_index(drop=True)
    out[target] = pd.Series(y.astype("int8") if whole else y)
    return out


def training_set(
    params: Params, st: Settings, pids: list[str], stage: str = "train"
) -> TrainingSet:
    """The rows of ``pids`` whose outcome is known, with their features; who was left out.

    Rows sharing a key and timestamp, in a validated partition or a feature file, are
    refused naming ``stage`` and the file. Rows whose target is not known (null in the
    validated partition and absent from the label store) are left out and counted.

    Raises:
        LabelsMissing: a partition has no row with a known target.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    c = params.contract
    frames, unlabelled, from_store = [], {}, {}
    for pid in pids:
        rows = _read(st, c, pid)
        own = int(rows[c.target].notna().sum()) if c.target in rows.columns else 0
        rows = known_targets(st, c, pid, rows, stage)
        known = rows[c.target].notna().to_numpy()
        if not known.any():
            raise LabelsMissing(
                f"{stage}: partition {pid} has no labels yet (scored without them); its "
                f"outcomes arrive through `mlops label {pid}`"
            )
        unlabelled[pid], from_store[pid] = int((~known).sum()), int(known.sum()) - own
        frames.append(rows if known.all() else rows[known])
    labels = _in_order(pd.concat(frames, ignore_index=True), c)
    if c.task == "classification":
        labels[c.target] = labels[c.target].astype("int8")
    _report(stage, unlabelled, from_store)

    keys = [*c.entity_keys, c.timestamp]
    entries = provenance.manifest(st)
    for pid in pids:
        path = features.feature_file(params, st, pid)
        provenance.require_features(st, pid, path, stage, entries)
        # Feast would join one of the rows sharing a key and timestamp to every label row.
        rows = pq.read_table(path, columns=keys)
        io.one_to_one(rows, keys, f"{stage}: feature file {path}", REDO.format(what=pid))
    where = f"validated partitions {', '.join(pids)} in {st.validated_dir}"
    out = features.retrieve(params, st, labels, stage, where)
    frame = out[[*keys, *c.feature_names, c.target]]
    return TrainingSet(frame, unlabelled, from_store)


def _report(stage: str, unlabelled: dict[str, int], from_store: dict[str, int]) -> None:
    left, stored = sum(unlabelled.values()), sum(from_store.values())
    if left:
        each = ", ".join(f"{pid} {n:,}" for pid, n in unlabelled.items() if n)
        print(f"{stage}: left out {left:,} row(s) whose outcome is not known yet ({each})")
    if stored:
        each = ", ".join(f"{pid} {n:,}" for pid, n in from_store.items() if n)
        print(f"{stage}: {stored:,} target(s) from the label store ({each})")


def training_frame(
    params: Params, st: Settings, pids: list[str], stage: str = "train"
) -> pd.DataFrame:
    """The training set of ``pids``: keys, timestamp, features (contract order), target.

    ``training_set``'s frame: only rows whose outcome is known.
    """
    return training_set(params, st, pids, stage).frame
