"""Atomic file writes, partition naming and reading partitions back.

Every write goes to a temporary file in the target folder and is renamed into place,
so a task killed half-way leaves the previous good file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import faults

if TYPE_CHECKING:
    import pandas as pd

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


class DiskFull(OSError):
    """A write ran out of space; the target file was left as it was."""


class Busy(RuntimeError):
    """Another process is running the same stage on the same partition or model."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    """Delete temporary files of ``target`` left by processes that were killed mid-write.

    Temporary names carry the writer's pid, so a live writer's file is never touched.
    """
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and (
        exc.errno in _FULL or any(t in str(exc) for t in _FULL_TEXT)
    )


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    A failed or killed write leaves ``target`` as it was. Out of space, ``DiskFull`` names
    the target. Leftovers of writers killed earlier are removed on the next write.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        faults.point("io.before_rename", target.name)
        os.replace(tmp_path, target)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if _is_full(exc):
            full = DiskFull(
                f"{target}: cannot write, the disk is full ({exc}); the previous file is "
                "unchanged; free space and re-run"
            )
            full.errno = getattr(exc, "errno", None) or errno.ENOSPC
            raise full from exc
        raise


@contextmanager
def exclusive(lock_dir: Path, stage: str, keys: list[str]) -> Iterator[None]:
    """Refuse to run ``stage`` on ``keys`` while another process runs it on any of them.

    One lock file per key (``<lock_dir>/<stage>.<key>.lock``) held with ``flock``; the
    kernel releases it when the holder exits or is killed, so a crash never leaves a stale
    lock. A second run is refused at once with ``Busy`` rather than queued, so the same
    partition is never written twice at the same time.
    """
    bad = [k for k in keys if not k or "/" in k or k.startswith(".")]
    if bad:
        raise ValueError(f"{stage}: {bad} cannot name a lock file (no '/' or leading '.')")
    lock_dir.mkdir(parents=True, exist_ok=True)
    held = []
    try:
        for key in sorted(set(keys)):
            path = lock_dir / f"{stage}.{key}.lock"
            fh = path.open("a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                fh.close()
                raise Busy(
                    f"{stage} {key}: already running in process {holder} (lock {path}); "
                    "this run was refused so nothing is written twice; re-run when it ends"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            held.append(fh)
        yield
    finally:
        for fh in held:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


def redact(text: str) -> str:
    """Hide credentials in messages: ``user:password@`` in URLs and ``password=...``
    in connection strings."""
    text = re.sub(r"(://)[^/@\s]+@", r"\1***@", text)
    return re.sub(r"(password=)[^,\s]+", r"\1***", text)


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
# Also what keeps ids from the CLI or a DAG from naming a path outside the data root.
_PID = re.compile(r"\d{4}-\d{2}|\d{4}-\d{2}-\d{2}|\d{4}-W\d{2}")


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
        if not _PID.fullmatch(pid):
            raise ValueError(pid)
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
    """``<folder>/<pid>.parquet``; an id that is not a partition id (``../x``) is refused."""
    if not _PID.fullmatch(pid):
        raise ValueError(
            f"partition {pid!r} is not a partition id (expected 2013-01, 2013-W05 or 2013-01-05)"
        )
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
