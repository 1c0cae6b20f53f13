"""ingest: cut the source into partitions, write them as Parquet and version them with DVC.

Each partition lands at ``<data_root>/raw/<partition>.parquet``, projected onto the data
contract's columns, is tracked with ``dvc add`` and pushed to the DVC remote. The content
hash DVC recorded is kept in ``<data_root>/state/ingest.json`` for lineage, beside every
earlier version of the partition (``provenance.updated``): a re-ingest of corrected data
makes the downstream files stale, and the stages after it refuse them until re-run.

In a replay of historical data (``labels.withhold``) the partitions after
``train.partitions`` are written without the target column, as production rows arrive
before their outcome; ``mlops label`` joins the outcomes later.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypedDict

from mlops import faults, io, observe, partitions, provenance
from mlops.config import Params, Settings
from mlops.contract import Contract
from mlops.source import load

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class Ingested(TypedDict):
    """One ingested partition, as ``state/ingest.json`` records it."""

    path: str
    md5: str
    rows: int
    source: str
    at: str


def split_partitions(
    df: pd.DataFrame, contract: Contract, ts_col: str, freq: str, wanted: list[str]
) -> dict[str, pd.DataFrame]:
    """Pure core: project rows onto the contract and cut out the wanted partitions.

    Columns the contract names but the source lacks are left out, so validation reports
    them; a wanted partition with no rows comes back empty, also for validation to judge.
    """
    import numpy as np
    import pandas as pd

    for pid in wanted:
        partitions.check(pid)
    keep = [c for c in contract.columns if c in df.columns]
    pids = partitions.ids(df[ts_col], freq)
    # One pass over the rows for all partitions, not one comparison per partition.
    rows = pd.Series(range(len(df))).groupby(pids.to_numpy(), sort=False).indices
    empty = np.array([], dtype=np.intp)
    out = {}
    for pid in wanted:
        part = df.iloc[rows.get(pid, empty)][keep]
        out[pid] = (
            part.sort_values([contract.timestamp, *contract.entity_keys]).reset_index(drop=True)
            if contract.timestamp in part.columns
            else part.reset_index(drop=True)
        )
    return out


def run(params: Params, st: Settings, pids: list[str]) -> dict[str, Ingested]:
    """Ingest ``pids`` from the source; return partition -> {path, md5, rows}."""
    t0 = time.perf_counter()
    for pid in pids:
        partitions.check(pid)  # a malformed id fails before the source is read
    with io.exclusive(st.state_dir / "locks", "ingest", pids):
        return _run(params, st, pids, t0)


def _run(params: Params, st: Settings, pids: list[str], t0: float) -> dict[str, Ingested]:
    from mlops.versioning import track

    # A damaged manifest stops ingest here, before any partition is rewritten or tracked.
    provenance.manifest(st)
    df = load(params.source, st.root, allow_outside=st.allow_outside)
    parts = split_partitions(
        df, params.contract, params.source.timestamp_column, params.ingest.partition, pids
    )
    withheld = [pid for pid in parts if params.withholds_target(pid)]
    for pid in withheld:
        parts[pid] = parts[pid].drop(columns=[params.contract.target], errors="ignore")
    paths = []
    for pid, part in parts.items():
        paths.append(io.write_parquet(partitions.file(st.raw_dir, pid), part))
    faults.point("ingest.before_track")
    hashes = track(st.data_root, paths, push=params.ingest.push, wait_s=st.dvc_lock_wait_s)

    at = datetime.now(UTC).isoformat(timespec="seconds")
    result: dict[str, Ingested] = {}
    # Ingests of other partitions may run at once: read, update and write under one lock.
    with io.file_lock(st.state_dir / "locks" / f"{provenance.MANIFEST}.lock"):
        manifest = provenance.manifest(st)
        for (pid, part), path in zip(parts.items(), paths, strict=True):
            entry = Ingested(
                path=str(path.relative_to(st.root)) if path.is_relative_to(st.root) else str(path),
                md5=hashes[str(path)],
                rows=len(part),
                source=params.source.path,
                at=at,
            )
            manifest = provenance.updated(manifest, pid, entry)
            entry["at"] = manifest[pid]["at"]  # the first ingest of the same bytes
            result[pid] = entry
        io.write_json(provenance.manifest_path(st), manifest)
    rows = sum(len(p) for p in parts.values())
    for pid, part in parts.items():
        observe.rows(None, len(part), pid)
    pushed = ", pushed" if params.ingest.push else ""
    held = (
        f"; target {params.contract.target!r} withheld from {', '.join(withheld)} "
        "(labels.withhold: its outcomes arrive through `mlops label`)"
        if withheld
        else ""
    )
    print(
        f"ingest: {len(parts)} partition(s), {rows:,} rows -> {st.raw_dir} "
        f"(dvc tracked{pushed}){held} in {time.perf_counter() - t0:.1f}s"
    )
    return result
