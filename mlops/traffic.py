"""The prediction log of ``mlops serve``, and what it says per arm.

Every answered row is appended (keys, the contract timestamp, the features used, the
prediction and label, model name, version, arm, request id, latency and time), and so is
every shadow score (arm ``shadow``). Rows are buffered in memory and written by a
background thread every ``serve.log_flush_seconds`` or ``serve.log_flush_rows``, never on
the request path, one Parquet file per flush and partition under
``<data_root>/served/<partition>/``; :meth:`Log.close` writes what is left on a clean
shutdown. Files are written atomically and named by process, so several workers never
share one. The partition is the contract timestamp's (``ingest.partition``), so served
traffic is a source like any other (README, "Serving").

:func:`summary` reads the log back: per arm, rows, versions and latency, and realised
performance for the rows whose outcomes the label store holds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import io, outcomes, partitions, performance_metrics
from mlops.config import Params, Settings

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)
EXTRA = ("prediction", "predicted_label", "model_name", "model_version", "arm", "request_id")


def schema(params: Params, key_types: Mapping[str, str]) -> pa.Schema:
    """The log's Arrow schema: fixed by the contract, so every file has the same one."""
    import pyarrow as pa

    c = params.contract
    ts = pa.timestamp("us", tz="UTC")
    types = {"float": pa.float64(), "int": pa.int64(), "category": pa.string(), "bool": pa.bool_()}
    fields = [(k, pa.int64() if key_types.get(k) == "int" else pa.string()) for k in c.entity_keys]
    fields.append((c.timestamp, ts))
    fields += [(f.name, types[f.dtype]) for f in c.features]
    fields += [
        ("prediction", pa.float64()),
        ("predicted_label", pa.int8()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("arm", pa.string()),
        ("request_id", pa.string()),
        ("served_at", ts),
        ("latency_ms", pa.float64()),
    ]
    return pa.schema(fields)


class Log:
    """Append-only, buffered, written off the request path; :meth:`close` loses nothing."""

    def __init__(
        self, params: Params, st: Settings, key_types: Mapping[str, str], start: bool = True
    ) -> None:
        """Prepare the folder and schema; start the writer thread unless ``start`` is False."""
        cfg = params.serve
        self.folder = st.served_dir
        self.freq = params.ingest.partition
        self.timestamp = params.contract.timestamp
        self.schema = schema(params, key_types)
        self.flush_rows, self.flush_seconds = cfg.log_flush_rows, cfg.log_flush_seconds
        self.written = 0
        self.files: list[Path] = []
        self._buf: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._seq = 0
        self._thread = threading.Thread(target=self._loop, name="prediction-log", daemon=True)
        if start:
            self._thread.start()

    @property
    def pending(self) -> int:
        """Rows appended and not yet written."""
        return len(self._buf)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Queue rows; the writer is woken when ``serve.log_flush_rows`` are waiting."""
        with self._lock:
            self._buf.extend(records)
            full = len(self._buf) >= self.flush_rows
        if full:
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except OSError:  # a full disk: the rows stay queued and the next flush retries
                log.exception("prediction log: write to %s failed; retrying", self.folder)
            except Exception:  # noqa: BLE001 - rows the schema refuses: set aside, go on
                self._set_aside()

    def flush(self) -> int:
        """Write what is queued, one file per partition; return the rows written."""
        with self._write_lock:
            with self._lock:
                batch, self._buf = self._buf, []
            if not batch:
                return 0
            try:
                self._write(batch)
            except BaseException:
                with self._lock:
                    self._buf[:0] = batch
                raise
            self.written += len(batch)
            return len(batch)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist(batch, schema=self.schema)
        ts = table.column(self.timestamp).to_pandas()
        pids = partitions.ids(ts.dt.tz_convert("UTC"), self.freq)
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        for pid in sorted(set(pids)):
            rows = table.filter(pa.array((pids == pid).to_numpy()))
            target = self.folder / pid / f"{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_table(target, rows)
            self.files.append(target)

    def _set_aside(self) -> None:
        """Write the queued rows that cannot be made into the log's schema as JSON lines.

        One bad row must not stop the log: they go to ``<served>/rejected/`` with the error.
        """
        import json

        with self._write_lock, self._lock:
            batch, self._buf = self._buf, []
        if not batch:
            return
        log.exception("prediction log: %d rows do not fit its schema; set aside", len(batch))
        target = self.folder / "rejected" / f"{time.time_ns()}-{os.getpid()}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(r, default=str) + "\n" for r in batch)
        io.write_text(target, lines)

    def close(self, timeout: float = 30) -> int:
        """Stop the writer and write everything still queued; return the rows written."""
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.flush()
        return self.written


def _write_table(target: Path, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    with io.atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def files(st: Settings, partition: str | None = None) -> list[Path]:
    """The log's files, of one partition or all, oldest partition first."""
    root = st.served_dir
    if not root.is_dir():
        return []
    folders = [root / partition] if partition else sorted(p for p in root.iterdir() if p.is_dir())
    return [f for d in folders if d.is_dir() for f in sorted(d.glob("*.parquet"))]


def read(st: Settings, partition: str | None = None) -> pd.DataFrame:
    """The logged rows (answered and shadow) of one partition or all."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    found = files(st, partition)
    if not found:
        return pd.DataFrame()
    return pa.concat_tables([pq.read_table(f) for f in found]).to_pandas()


def current(params: Params, st: Settings, partition: str) -> tuple[pd.DataFrame, int, str, str]:
    """A seeded sample of one partition's answered rows, for a drift report.

    At most ``monitor.max_rows`` rows in log order, with their features and prediction;
    also the number of answered rows and the model name and version that answered most.

    Raises:
        FileNotFoundError: nothing was served in ``partition``.
    """
    df = read(st, partition)
    if df.empty:
        raise FileNotFoundError(
            f"{st.served_dir / partition}: nothing was served in {partition}; "
            f"partitions served: {', '.join(served_partitions(st)) or 'none'}"
        )
    answered = df[df["arm"] != "shadow"].reset_index(drop=True)
    total = len(answered)
    if total > params.monitor.max_rows:
        answered = answered.sample(n=params.monitor.max_rows, random_state=42).sort_index()
    top = answered.groupby(["model_name", "model_version"]).size().idxmax()
    return answered, total, str(top[0]), str(top[1])


def served_partitions(st: Settings) -> list[str]:
    """The partitions the log holds rows of, oldest first."""
    root = st.served_dir
    found = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return sorted((p for p in found if partitions.is_id(p)), key=partitions.sort_key)


def _outcomes(params: Params, st: Settings) -> pd.DataFrame | None:
    """Every outcome the label store holds, by key (the last stored wins)."""
    import pandas as pd

    c = params.contract
    stores = sorted(st.labels_dir.glob("*.parquet")) if st.labels_dir.is_dir() else []
    parts = [outcomes.read(st, c, p.stem) for p in stores if partitions.is_id(p.stem)]
    kept = [p for p in parts if p is not None and len(p)]
    if not kept:
        return None
    return pd.concat(kept, ignore_index=True).drop_duplicates(c.entity_keys, keep="last")


def summary(params: Params, st: Settings) -> dict[str, Any]:
    """Per arm: rows, versions, request latency percentiles, and realised performance so far.

    An arm's realised performance is over its rows whose outcomes have reached the label
    store (``mlops label``); ``labelled`` counts them.
    """
    import numpy as np

    df = read(st)
    if df.empty:
        return {"rows": 0, "arms": {}, "files": 0}
    c = params.contract
    truth = _outcomes(params, st)
    if truth is not None:
        df = df.merge(truth, on=c.entity_keys, how="left", suffixes=("", "_known"))
    arms: dict[str, Any] = {}
    for arm, g in df.groupby("arm", sort=True):
        # One latency per request: a batch's rows share theirs.
        lat = g.drop_duplicates("request_id")["latency_ms"].dropna().to_numpy()
        entry: dict[str, Any] = {
            "rows": len(g),
            "versions": {str(k): int(v) for k, v in g["model_version"].value_counts().items()},
            "latency_ms": {
                "p50": float(np.percentile(lat, 50)) if len(lat) else None,
                "p99": float(np.percentile(lat, 99)) if len(lat) else None,
            },
            "first": g["served_at"].min().isoformat(),
            "last": g["served_at"].max().isoformat(),
            "labelled": 0,
            "performance": None,
        }
        if truth is not None:
            known = g[g[c.target].notna()].sort_values("prediction", kind="stable")
            entry["labelled"] = len(known)
            if len(known):
                y = known[c.target].to_numpy()
                p = known["prediction"].to_numpy(dtype="float64")
                if c.task == "classification":
                    label = known["predicted_label"].fillna(0).to_numpy(dtype="int8")
                    entry["performance"], _ = performance_metrics.binary(y.astype("int8"), p, label)
                else:
                    entry["performance"], _ = performance_metrics.regression(y.astype("float64"), p)
        arms[str(arm)] = entry
    return {"rows": int((df["arm"] != "shadow").sum()), "arms": arms, "files": len(files(st))}


def last_seen(st: Settings) -> float | None:
    """When the newest log file was written (epoch seconds), or None."""
    found = files(st)
    return max(f.stat().st_mtime for f in found) if found else None


def age(st: Settings) -> str:
    """How long ago serving last wrote, for people."""
    seen = last_seen(st)
    if seen is None:
        return "never"
    secs = time.time() - seen
    return f"{secs:.0f}s ago" if secs < 120 else f"{secs / 60:.0f} min ago"
