"""Atomic file writes, file locks, retries, redaction, and the one-row-per-key check.

Every write goes to a temporary file in the target folder and is renamed into place,
so a task killed half-way leaves the previous good file. Every join on keys checks
first that its sides have one row per key (``one_to_one``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mlops import faults

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

T = TypeVar("T")
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


class DiskFull(OSError):
    """A write ran out of space; the target file was left as it was."""


class Busy(RuntimeError):
    """Another process is running the same stage on the same partition or model."""


class DuplicateKeys(ValueError):
    """Rows share a key where a join needs one row per key; the message names where."""


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
def atomic_path(target: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    A failed or killed write leaves ``target`` as it was. Out of space, ``DiskFull`` names
    the target. Leftovers of writers killed earlier are removed on the next write.
    ``mode`` (e.g. 0o600 for a password file) is the file's mode from before its first
    byte is written to the moment it replaces ``target``, so a secret is never readable
    by others, not even briefly; without it the file gets the mode a plain open() would.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        if mode is not None:
            os.chmod(tmp_path, mode)  # mkstemp made it 0600: nobody else could open it
        yield tmp_path
        if mode is None:
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


_held = threading.local()


@contextmanager
def file_lock(
    path: Path, wait: float | None = None, busy: Callable[[str], BaseException] | None = None
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block.

    ``wait`` None blocks until the lock is free, 0 refuses at once, and a number of
    seconds polls that long. Refused, ``busy(holder_pid)`` (default ``Busy``) is raised.
    The kernel releases the lock when its holder exits or is killed, so a crash never
    leaves a stale lock. Re-entrant within a thread; other threads and processes
    conflict (``flock`` conflicts between separate opens of a file, also in one process).
    """
    held: set[str] = _held.__dict__.setdefault("paths", set())
    key = str(path.resolve())
    if key in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if wait is None else time.monotonic() + wait
    with path.open("a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "unknown"
                    raise (busy or _busy(path))(holder) from None
                time.sleep(0.05)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _busy(path: Path) -> Callable[[str], BaseException]:
    return lambda holder: Busy(f"{path}: held by process {holder}; re-run when it ends")


@contextmanager
def exclusive(lock_dir: Path, stage: str, keys: list[str]) -> Iterator[None]:
    """Refuse to run ``stage`` on ``keys`` while another process runs it on any of them.

    One lock file per key (``<lock_dir>/<stage>.<key>.lock``). A second run is refused
    at once with ``Busy`` rather than queued, so the same partition is never written
    twice at the same time.
    """
    bad = [k for k in keys if not k or "/" in k or k.startswith(".")]
    if bad:
        raise ValueError(f"{stage}: {bad} cannot name a lock file (no '/' or leading '.')")
    with ExitStack() as stack:
        for key in sorted(set(keys)):
            path = lock_dir / f"{stage}.{key}.lock"

            def busy(holder: str, key: str = key, path: Path = path) -> Busy:
                return Busy(
                    f"{stage} {key}: already running in process {holder} (lock {path}); "
                    "this run was refused so nothing is written twice; re-run when it ends"
                )

            stack.enter_context(file_lock(path, wait=0, busy=busy))
        yield


def retry(
    fn: Callable[[], T],
    transient: Callable[[BaseException], bool],
    attempts: int | None = None,
    wait_s: float | None = None,
    delay: float = 1.0,
    max_delay: float = 300.0,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """Call ``fn``; after an error ``transient`` accepts, wait and call it again.

    Gives up after ``attempts`` calls or once ``wait_s`` seconds have passed (whichever
    is given), re-raising the last error; an error that is not transient is raised at
    once. The wait starts at ``delay`` and doubles, up to ``max_delay``.
    """
    deadline = None if wait_s is None else time.monotonic() + wait_s
    tries = 0
    while True:
        tries += 1
        try:
            return fn()
        except Exception as exc:
            out_of_tries = attempts is not None and tries >= attempts
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if not transient(exc) or out_of_tries or out_of_time:
                raise
            if on_retry is not None:
                on_retry(exc, delay)
        time.sleep(delay)
        delay = min(delay * 2, max_delay)


def redact(text: str) -> str:
    """Hide credentials in a message, a traceback or a log line.

    Every secret the environment holds (``settings.secrets``: passwords, tokens and keys,
    the password of each connection URL) is replaced wherever it appears, also when it is
    quoted without its URL; then ``user:password@`` in any URL and ``password=...``.
    """
    from mlops.settings import secrets

    for secret in secrets():
        text = text.replace(secret, "***")
    text = re.sub(r"(://)[^/@\s]+@", r"\1***@", text)
    return re.sub(r"(?i)\b(password|passwd|token)=[^&,\s]+", r"\1=***", text)


def write_text(target: Path, text: str, mode: int | None = None) -> Path:
    """Write ``text`` to ``target`` atomically; return ``target``.

    ``mode`` (0o600 for a secret) applies from before the first byte (see ``atomic_path``).
    """
    with atomic_path(target, mode) as tmp:
        tmp.write_text(text)
    return target


def write_json(target: Path, obj: Any) -> Path:
    """Write ``obj`` as sorted, indented JSON atomically; return ``target``."""
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class DamagedState(ValueError):
    """A state file cannot be read; the message names the file and what to do."""


def read_json(path: Path, missing: Any = None, fix: str = "") -> Any:
    """Read a JSON state file; ``missing`` is returned when it does not exist (if given).

    A damaged file (truncated, edited by hand, not UTF-8) raises ``DamagedState`` naming
    the file, where it breaks and ``fix`` (what to do about it), never a bare JSON error.
    Callers read their state before they write anything, so a damaged file stops a stage
    before it has changed a thing.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        if missing is not None:
            return missing
        raise
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise DamagedState(f"{path}: cannot be read ({exc}). {fix}".rstrip()) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DamagedState(
            f"{path}: damaged state file, not valid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}). {fix or 'Restore it from a backup or remove it.'}"
        ) from None


def write_parquet(
    target: Path, df: pd.DataFrame, metadata: dict[bytes, bytes] | None = None
) -> Path:
    """Write a DataFrame atomically and deterministically (same data, same bytes).

    ``metadata`` is added to the file's schema metadata (e.g. the raw version it was
    made from, ``provenance.metadata``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return target


def md5(path: Path) -> str:
    """The md5 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def link(src: Path, target: Path) -> Path:
    """Put ``src``'s bytes at ``target`` atomically: a hard link, else a copy; ``target``.

    A hard link shares the bytes (no second copy on disk); where links are not possible
    (another file system) the file is copied. Either way ``target`` appears whole or not.
    """
    import shutil

    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    return target


# --------------------------------------------------------------------------- parquet rows
def read_rows(path: Path, positions: np.ndarray, columns: list[str]) -> pa.Table:
    """Rows at sorted ``positions`` of a Parquet file, read one row group at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    with pq.ParquetFile(path) as pf:
        start = 0
        for i in range(pf.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            lo, hi = np.searchsorted(positions, [start, start + n])
            if hi > lo:
                group = pf.read_row_group(i, columns=columns)
                parts.append(group.take(pa.array(positions[lo:hi] - start)))
            start += n
        schema = pf.schema_arrow
    if not parts:
        return schema.empty_table().select(columns)
    return pa.concat_tables(parts)


def matching_rows(path: Path, keys: pa.Table, columns: list[str], batch_rows: int) -> pa.Table:
    """Rows of a Parquet file whose key columns (those of ``keys``) are in ``keys``.

    The file is streamed in batches, so memory follows ``keys`` and ``batch_rows``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = keys.column_names
    parts = []
    with pq.ParquetFile(path) as pf:
        wanted = keys.cast(pa.schema([pf.schema_arrow.field(k) for k in names]))
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            parts.append(pa.Table.from_batches([batch]).join(wanted, keys=names, join_type="inner"))
        schema = pf.schema_arrow
    if not parts:
        return schema.empty_table().select(columns)
    return pa.concat_tables(parts).select(columns)


# --------------------------------------------------------------------------- keys
def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


def duplicate_keys(
    rows: pd.DataFrame | pa.Table, keys: list[str], n: int = 5
) -> tuple[int, int, list[str]]:
    """Rows that share their ``keys`` with another row: row count, key count, ``n`` examples.

    Missing key values count as equal to each other. Examples are in order of first
    appearance, formatted for messages (a tuple when there are several keys).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(rows, pa.Table):
        groups = rows.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
        shared = groups.filter(pc.greater(groups["count_all"], 1))
        if not shared.num_rows:
            return 0, 0, []
        total, n_keys = int(pc.sum(shared["count_all"]).as_py()), shared.num_rows
        examples = [tuple(r[k] for k in keys) for r in shared.select(keys).slice(0, n).to_pylist()]
    else:
        dup = rows.duplicated(keys, keep=False)
        if not dup.any():
            return 0, 0, []
        distinct = rows.loc[dup, keys].drop_duplicates()
        total, n_keys = int(dup.sum()), len(distinct)
        examples = list(distinct.head(n).itertuples(index=False, name=None))
    return total, n_keys, [_show(e[0] if len(keys) == 1 else e) for e in examples]


def one_to_one(rows: pd.DataFrame | pa.Table, keys: list[str], where: str, fix: str) -> None:
    """Refuse rows that share their ``keys``: a join on them would copy or mix up rows.

    Args:
        rows: one side of a join (a DataFrame or an Arrow table holding ``keys``).
        keys: the join keys.
        where: the stage and the file (or table) the rows come from, for the message.
        fix: what to do about it, for the message.

    Raises:
        DuplicateKeys: naming ``where``, the keys, how many rows share them and examples.
    """
    total, n_keys, examples = duplicate_keys(rows, keys)
    if total:
        raise DuplicateKeys(
            f"{where}: {total:,} rows share {n_keys:,} value(s) of the key {keys} "
            f"(e.g. {', '.join(examples)}); a join on {keys} needs one row per key, so "
            f"nothing was joined; {fix}"
        )
