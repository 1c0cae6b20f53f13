"""Read a tabular source described by config: files, lookups joined on, derived columns."""

from __future__ import annotations

import logging
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from mlops.config import Derived, Join, Source

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The source cannot be read as configured; the message names file and column."""


def resolve(path: str, root: Path) -> Path:
    """Resolve a source path: ``pkg://package/rel`` is package data, else root-relative."""
    if path.startswith("pkg://"):
        package, _, rel = path[len("pkg://") :].partition("/")
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SourceError(f"{path}: package {package!r} is not installed")
        return Path(list(spec.submodule_search_locations)[0]) / rel
    p = Path(path)
    return p if p.is_absolute() else root / p


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
        df[col] = to_utc(df, col, "UTC", str(path))
    return df


def to_utc(df: pd.DataFrame, col: str, tz: str, where: str, fmt: str | None = None) -> pd.Series:
    """Parse a column to tz-aware UTC timestamps; naive values are taken to be in ``tz``."""
    import pandas as pd

    if col not in df.columns:
        raise SourceError(f"{where}: timestamp column {col!r} is missing")
    try:
        ts = pd.to_datetime(df[col], format=fmt, utc=False)
        if getattr(ts.dt, "tz", None) is None:
            ts = ts.dt.tz_localize(tz)
        return ts.dt.tz_convert("UTC")
    except (ValueError, TypeError) as exc:
        raise SourceError(f"{where}: column {col!r} is not a timestamp: {exc}") from exc


def _join(df: pd.DataFrame, join: Join, root: Path) -> pd.DataFrame:
    path = resolve(join.path, root)
    lookup = read_table(path, "parquet" if path.suffix == ".parquet" else "csv", join.parse_dates)
    lookup = lookup.rename(columns=join.rename)
    missing = [c for c in [*join.keys, *join.columns] if c not in lookup.columns]
    if missing:
        raise SourceError(f"{path}: join columns {missing} not found")
    missing_left = [c for c in join.keys if c not in df.columns]
    if missing_left:
        raise SourceError(f"source: join keys {missing_left} for {path.name} not found")
    lookup = lookup[[*join.keys, *join.columns]].drop_duplicates(join.keys, keep="last")
    return df.merge(lookup, on=join.keys, how="left", validate="many_to_one")


def _derive(df: pd.DataFrame, d: Derived) -> pd.Series:
    if d.concat is not None:
        missing = [c for c in d.concat if c not in df.columns]
        if missing:
            raise SourceError(f"source.derive {d.name!r}: columns {missing} not found")
        out = df[d.concat[0]].astype(str)
        for c in d.concat[1:]:
            out = out + d.sep + df[c].astype(str)
        return out
    try:
        return df.eval(d.expr)
    except Exception as exc:
        raise SourceError(f"source.derive {d.name!r}: cannot evaluate {d.expr!r}: {exc}") from exc


def load(src: Source, root: Path) -> pd.DataFrame:
    """Read the source with its joins and derived columns; timestamps in UTC."""
    path = resolve(src.path, root)
    df = read_table(path, src.format).rename(columns=src.rename)
    df[src.timestamp_column] = to_utc(
        df, src.timestamp_column, src.timezone, str(path), src.timestamp_format
    )
    for join in src.joins:
        df = _join(df, join, root)
    for d in src.derive:
        df[d.name] = _derive(df, d)
    if src.dropna:
        missing = [c for c in src.dropna if c not in df.columns]
        if missing:
            raise SourceError(f"source.dropna: columns {missing} not found in {path}")
        before = len(df)
        df = df.dropna(subset=src.dropna)
        log.info("dropped %d rows without %s", before - len(df), src.dropna)
    return df
