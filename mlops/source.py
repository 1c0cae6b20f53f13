"""Read a tabular source described by config: files, lookups joined on, derived columns.

Timestamps are parsed to UTC and refused when implausible (a misread format); a lookup
must have one row per join key; paths may not leave the project root unless
``MLOPS_ALLOW_PATHS_OUTSIDE_ROOT=1``.
"""

from __future__ import annotations

import hashlib
import io as _io
import logging
import re
import tokenize
from collections.abc import Iterable
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import io
from mlops.config import ENV_ALLOW_OUTSIDE, Derived, Join, Source

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The source cannot be read as configured; the message names file and column."""


def resolve(path: str, root: Path, allow_outside: bool = False, key: str = "source.path") -> Path:
    """Resolve a source path: ``pkg://package/rel`` is package data, else root-relative.

    A path that leaves the project root (absolute, or through ``..`` or a link) is
    refused unless ``allow_outside`` (``Settings.allow_outside``); ``key`` names the
    setting in the message.
    """
    if path.startswith("pkg://"):
        package, _, rel = path[len("pkg://") :].partition("/")
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SourceError(f"{path}: package {package!r} is not installed")
        return Path(list(spec.submodule_search_locations)[0]) / rel
    p = Path(path)
    full = p if p.is_absolute() else root / p
    if not allow_outside and not full.resolve().is_relative_to(root.resolve()):
        raise SourceError(
            f"{key}={path!r} resolves to {full.resolve()}, outside the project root {root}; "
            "move the data into the project folder (relative paths start there), use a "
            f"pkg:// path, or set {ENV_ALLOW_OUTSIDE}=1 to allow it"
        )
    return full


def _files(path: Path, fmt: str) -> list[Path]:
    if path.is_dir():
        pattern = "*.parquet" if fmt == "parquet" else "*.csv*"
        files = sorted(p for p in path.rglob(pattern) if p.is_file())
        if not files:
            raise SourceError(f"{path}: folder holds no {pattern} files")
        return files
    if not path.is_file():
        raise SourceError(f"{path}: source file not found")
    return [path]


def check_csv_complete(path: Path) -> None:
    """Refuse a plain CSV file cut off mid-row (a truncated copy or download).

    pandas fills a short last row with missing values instead of failing, so a file that
    does not end with a newline and whose last row has fewer fields than its header is
    taken to be truncated.
    """
    import csv

    if path.suffix != ".csv":
        return  # compressed files fail in the decompressor when truncated
    size = path.stat().st_size
    with path.open("rb") as fh:
        header = fh.readline()
        fh.seek(max(0, size - (1 << 16)))
        tail = fh.read()
    if not tail or tail.endswith(b"\n") or b"\n" not in tail:
        return
    last = tail.rsplit(b"\n", 1)[1].decode("utf-8", "replace")
    first = header.decode("utf-8", "replace")
    want = len(next(csv.reader([first]), []))
    got = len(next(csv.reader([last]), []))
    if got < want:
        raise SourceError(
            f"{path}: file looks truncated: it ends mid-row (last row has {got} of {want} "
            "fields and no final newline); copy or download it again"
        )


def read_table(path: Path, fmt: str, parse_dates: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file or folder; an unreadable file is named in the error."""
    import pandas as pd

    frames = []
    for f in _files(path, fmt):
        try:
            if fmt == "parquet" or f.suffix == ".parquet":
                frames.append(pd.read_parquet(f))
            else:
                check_csv_complete(f)
                frames.append(pd.read_csv(f, low_memory=False))
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{f}: cannot read as {fmt}: {exc}") from exc
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for col in parse_dates or []:
        df[col] = to_utc(df, col, "UTC", str(path), setting=None)
    return df


def to_utc(
    df: pd.DataFrame,
    col: str,
    tz: str,
    where: str,
    fmt: str | None = None,
    setting: str | None = "source.timestamp_format",
) -> pd.Series:
    """Parse a column to tz-aware UTC timestamps; naive values are taken to be in ``tz``.

    With a format, numbers are read as their digits (a year column ``2013`` with
    ``%Y``); ``%s`` reads seconds since 1970 (UTC). Values that parse to implausible times
    (all before 1971, or any more than a year ahead) are refused, naming the column,
    what was seen and ``setting``, the format to set: a number read without a format is
    otherwise taken as nanoseconds since 1970 and every row lands on 1970-01-01.
    """
    import pandas as pd

    if col not in df.columns:
        raise SourceError(f"{where}: timestamp column {col!r} is missing")
    raw = df[col]
    try:
        if fmt == "%s":
            ts = pd.to_datetime(pd.to_numeric(raw), unit="s", utc=True)
        else:
            text = _as_text(raw) if fmt and raw.dtype.kind in "iuf" else raw
            ts = pd.to_datetime(text, format=fmt, utc=False)
        if getattr(ts.dt, "tz", None) is None:
            ts = ts.dt.tz_localize(tz)
        ts = ts.dt.tz_convert("UTC")
    except (ValueError, TypeError) as exc:
        fix = f"; set {setting} to the values' format" if setting else ""
        raise SourceError(f"{where}: column {col!r} is not a timestamp{fix}: {exc}") from exc
    _check_plausible(ts, raw, col, where, setting)
    return ts


def _as_text(s: pd.Series) -> pd.Series:
    """Numbers as their digits (whole floats without ``.0``), missing values kept."""
    if s.dtype.kind == "f":
        present = s.dropna()
        if (present == present.round()).all():
            s = s.astype("Int64")
    return s.astype("string")


def _check_plausible(
    ts: pd.Series, raw: pd.Series, col: str, where: str, setting: str | None
) -> None:
    import pandas as pd

    present = ts.dropna()
    if len(ts) and present.empty:
        raise SourceError(
            f"{where}: timestamp column {col!r} has no value in {len(ts):,} rows; "
            "name the right column in source.timestamp_column"
        )
    if present.empty:
        return
    lo, hi = present.min(), present.max()
    ahead = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=366)
    if hi >= pd.Timestamp("1971-01-01", tz="UTC") and hi <= ahead:
        return
    try:
        seen = f"values {_text(raw.min())} .. {_text(raw.max())}"
    except TypeError:
        seen = f"values such as {_text(raw.dropna().iloc[0])}"
    why = "all before 1971" if hi < pd.Timestamp("1971-01-01", tz="UTC") else "beyond next year"
    raise SourceError(
        f"{where}: timestamp column {col!r} parsed to {lo} .. {hi} ({why}) from {seen}: "
        f"the format is misread; {_format_hint(raw, setting)}"
    )


def _text(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


# What numbers in a timestamp column usually are: (lowest, highest, what, format to set).
_NUMBER_FORMATS = (
    (1000, 9999, "years", "'%Y'"),
    (1e7, 99_991_231, "dates written as digits", "'%Y%m%d'"),
    (1e8, 1e10, "unix times (seconds since 1970)", "'%s'"),
    (1e11, 1e13, "unix times in milliseconds (not read: store seconds)", "'%s'"),
)


def _format_hint(raw: pd.Series, setting: str | None) -> str:
    """What to set, guessed from the raw values: years, dates as digits, unix seconds."""
    import pandas as pd

    where = f"set {setting} to" if setting else "store the column as text timestamps, e.g."
    if raw.dtype.kind not in "iuf":
        return f"{where} the values' format, e.g. '%d/%m/%Y %H:%M'"
    present = pd.to_numeric(raw).dropna()
    lo, hi = float(present.min()), float(present.max())
    for low, high, what, fmt in _NUMBER_FORMATS:
        if low <= lo and hi <= high:
            return f"the values look like {what}: {where} {fmt}"
    return f"{where} the values' format (e.g. '%Y' for years, '%s' for unix seconds)"


def _join(df: pd.DataFrame, join: Join, i: int, root: Path, allow_outside: bool) -> pd.DataFrame:
    key = f"source.joins[{i}]"
    path = resolve(join.path, root, allow_outside, f"{key}.path")
    fmt = "parquet" if path.suffix == ".parquet" else "csv"
    lookup = read_table(path, fmt, join.parse_dates)
    lookup = lookup.rename(columns=join.rename)
    missing = [c for c in [*join.keys, *join.columns] if c not in lookup.columns]
    if missing:
        raise SourceError(f"{path}: join columns {missing} not found")
    missing_left = [c for c in join.keys if c not in df.columns]
    if missing_left:
        raise SourceError(f"source: join keys {missing_left} for {path.name} not found")
    # Picking one of several rows per key would join values the data does not support.
    io.one_to_one(
        lookup,
        join.keys,
        f"{key} lookup {path}",
        f"name keys that identify one row of the lookup in {key}.keys, or remove the "
        "repeated rows from the file",
    )
    lookup = lookup[[*join.keys, *join.columns]]
    return df.merge(lookup, on=join.keys, how="left", validate="many_to_one")


def _derive(df: pd.DataFrame, d: Derived, row_columns: list[str]) -> pd.Series:
    if d.hash is not None:
        return row_key(df, row_columns if d.hash == "row" else d.hash, f"source.derive {d.name!r}")
    if d.concat is not None:
        missing = [c for c in d.concat if c not in df.columns]
        if missing:
            raise SourceError(f"source.derive {d.name!r}: columns {missing} not found")
        out = as_str(df[d.concat[0]])
        for c in d.concat[1:]:
            out = out + d.sep + as_str(df[c])
        return out
    expr = str(d.expr)  # the one left: Derived holds exactly one of the three
    try:
        out = df.eval(expr)
    except Exception as exc:
        raise SourceError(f"source.derive {d.name!r}: cannot evaluate {expr!r}: {exc}") from exc
    return keep_missing(df, out, named_columns(expr, df.columns))


def as_str(s: pd.Series) -> pd.Series:
    """``s.astype(str)``, formatting each distinct value once for times, integers and flags.

    Formatting a timestamp is slow and a key column repeats few of them (336k flights,
    7k hours). Text and floats are converted value by value, as ``astype(str)`` does:
    hashing would merge values that print differently (``1``/``1.0``/``True``, ``-0.0``).
    """
    import pandas as pd

    if s.dtype.kind not in "iubMm":
        return s.astype(str)
    codes, uniques = pd.factorize(s, use_na_sentinel=False)
    text = pd.Series(uniques).astype(str).to_numpy(dtype=object)
    return pd.Series(text[codes], index=s.index, name=s.name, dtype=object)


def named_columns(expr: str, columns: Iterable[object]) -> list[str]:
    """The columns a ``pandas.eval`` expression names: plain or `backquoted`, not in strings."""
    quoted = re.findall(r"`([^`]+)`", expr)
    plain = re.sub(r"`[^`]+`", " 0 ", expr)
    try:
        tokens = tokenize.generate_tokens(_io.StringIO(plain).readline)
        names = [t.string for t in tokens if t.type == tokenize.NAME]
    except (tokenize.TokenError, SyntaxError):
        names = re.findall(r"[A-Za-z_]\w*", plain)
    known = {str(c) for c in columns}
    return [n for n in dict.fromkeys([*quoted, *names]) if n in known]


def keep_missing(df: pd.DataFrame, out: Any, names: list[str]) -> Any:
    """``out`` with a null wherever a column in ``names`` is null on that row.

    A missing outcome must stay missing: ``arr_delay > 15`` is False for a missing
    ``arr_delay`` otherwise. A flag that gains nulls becomes pandas' nullable boolean;
    values computed without nulls keep their dtype.
    """
    import pandas as pd

    if not names or not isinstance(out, pd.Series):
        return out
    missing = df[names].isna().any(axis=1)
    if not missing.any():
        return out
    if out.dtype == bool:
        out = out.astype("boolean")
    return out.mask(missing)


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a fixed, well-spread mix of 64-bit values."""
    import numpy as np

    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _column_hash(s: pd.Series) -> np.ndarray:
    """A 64-bit hash per value that does not depend on how the file stored it.

    Whole floats hash as integers (a column that gains a missing value turns float),
    times as nanoseconds since 1970 in UTC (any unit or zone), booleans as 0/1, other
    values as their text (BLAKE2b, once per distinct value), and every kind of missing
    value as one marker.
    """
    import numpy as np
    import pandas as pd

    missing = s.isna().to_numpy()
    kind = s.dtype.kind
    if kind == "M":
        times = s.dt.tz_convert("UTC").dt.tz_localize(None) if s.dt.tz is not None else s
        bits = times.astype("datetime64[ns]").to_numpy().view("int64").view("uint64")
    elif kind == "f":
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        whole = np.isfinite(v) & (v == np.round(v)) & (np.abs(v) < 2.0**53)
        ints = np.where(whole, v, 0).astype("int64").view("uint64")
        bits = np.where(whole, ints, v.view("uint64") ^ np.uint64(0x5BD1E995))
    elif kind == "u":
        bits = s.to_numpy(dtype="uint64", na_value=0)
    elif kind in "ib":
        bits = s.to_numpy(dtype="int64", na_value=0).view("uint64")
    else:
        codes, uniques = pd.factorize(s.astype(object).map(str, na_action="ignore"))
        digests = [hashlib.blake2b(u.encode(), digest_size=8).digest() for u in uniques]
        table = np.frombuffer(b"".join(digests) or bytes(8), dtype="<u8")
        bits = table[np.maximum(codes, 0)]
    out = _mix(bits.astype("uint64"))
    out[missing] = np.uint64(0x6A09E667F3BCC908)
    return out


def row_key(df: pd.DataFrame, columns: list[str], what: str) -> pd.Series:
    """A stable 16-hex-digit key per row: a 64-bit hash of ``columns``' values, in order.

    The same values give the same key in every process and run, whatever the order of
    rows and columns in the file and whether a number was stored as int or float.
    Identical rows get identical keys (validation then reports them as duplicates).
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceError(f"{what}: columns {missing} not found to hash")
    h = np.full(len(df), 0x243F6A8885A308D3, dtype="uint64")
    for c in columns:
        h = _mix((h * np.uint64(0x9E3779B97F4A7C15)) ^ _column_hash(df[c]))
    return pd.Series([f"{x:016x}" for x in h.tolist()], index=df.index, dtype=object)


def _dropna(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    if not columns:
        return df
    before = len(df)
    df = df.dropna(subset=columns)
    log.info("dropped %d rows without %s", before - len(df), columns)
    return df


def load(src: Source, root: Path, allow_outside: bool = False) -> pd.DataFrame:
    """Read the source with its joins and derived columns; timestamps in UTC.

    ``source.dropna`` drops rows before the derived columns are computed; columns only
    derive creates are checked after it. A derived ``expr`` is null on rows where a
    column it names is null (``keep_missing``): a missing outcome is never a False.
    ``allow_outside`` is ``Settings.allow_outside``.
    """
    path = resolve(src.path, root, allow_outside)
    df = read_table(path, src.format)
    # Row hashes cover the file's own columns in the order of their names in the file,
    # so renaming a column in params.yaml does not change the keys.
    row_columns = [src.rename.get(c, c) for c in sorted(map(str, df.columns))]
    df = df.rename(columns=src.rename)
    df[src.timestamp_column] = to_utc(
        df, src.timestamp_column, src.timezone, str(path), src.timestamp_format
    )
    for i, join in enumerate(src.joins):
        df = _join(df, join, i, root, allow_outside)
    df = _dropna(df, [c for c in src.dropna if c in df.columns])
    for d in src.derive:
        df[d.name] = _derive(df, d, row_columns)
    missing = [c for c in src.dropna if c not in df.columns]
    if missing:
        raise SourceError(f"source.dropna: columns {missing} not found in {path}")
    return _dropna(df, src.dropna)
