"""Atomic file writes, partition naming and reading partitions back.

Every write goes to a temporary file in the target folder and is renamed into place,
so a task killed half-way leaves the previous good file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(target: Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return target


def write_json(target: Path, obj: Any) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_parquet(target: Path, df: pd.DataFrame) -> Path:
    """Write a DataFrame atomically and deterministically (same data, same bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return target


def md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- partitions
def partition_ids(ts: pd.Series, freq: str) -> pd.Series:
    """Name the partition of each timestamp: 2013-01 (month), 2013-W05 (week), 2013-01-05."""
    if freq == "month":
        return ts.dt.strftime("%Y-%m")
    if freq == "day":
        return ts.dt.strftime("%Y-%m-%d")
    if freq == "week":
        iso = ts.dt.isocalendar()
        return iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2)
    raise ValueError(f"unknown partition frequency {freq!r}")


def partition_interval(pid: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The half-open UTC interval [start, end) a partition id covers."""
    import pandas as pd

    try:
        if "-W" in pid:
            year, week = pid.split("-W")
            start = pd.Timestamp.fromisocalendar(int(year), int(week), 1).tz_localize("UTC")
            return start, start + pd.Timedelta(days=7)
        parts = pid.split("-")
        if len(parts) == 2:
            start = pd.Timestamp(f"{pid}-01", tz="UTC")
            return start, start + pd.DateOffset(months=1)
        if len(parts) == 3:
            start = pd.Timestamp(pid, tz="UTC")
            return start, start + pd.Timedelta(days=1)
    except ValueError:
        pass
    raise ValueError(
        f"partition {pid!r} is not a partition id (expected 2013-01, 2013-W05 or 2013-01-05)"
    )


def partition_for_interval(start: Any, freq: str) -> str:
    """The partition id that begins at ``start`` (an Airflow data interval start)."""
    import pandas as pd

    ts = pd.Series([pd.Timestamp(start).tz_convert("UTC")])
    return str(partition_ids(ts, freq).iloc[0])


def partition_file(folder: Path, pid: str) -> Path:
    return folder / f"{pid}.parquet"


def read_partitions(folder: Path, pids: list[str], what: str = "partition") -> pd.DataFrame:
    """Read and concatenate partitions; a missing one is an error naming its file."""
    import pandas as pd

    frames = []
    for pid in pids:
        path = partition_file(folder, pid)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: {what} {pid!r} not found; run the stage that writes it first"
            )
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
