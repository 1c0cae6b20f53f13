"""Partition ids and the time they cover: parsing, naming, arithmetic.

A partition is a half-open UTC interval named by its start: ``2013`` (year),
``2013-Q1`` (quarter), ``2013-01`` (month), ``2013-W05`` (ISO week) or ``2013-01-05``
(day). Ranges and shifts (``span``, ``shift``) use the standard library only, so that
loading ``params.yaml`` (also when a DAG file is parsed) imports no pandas. Every stage,
the CLI and the Airflow adapter parse ids here, which is also what keeps an id from the
CLI or a DAG from naming a path outside the data root.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

PID = re.compile(r"\d{4}|\d{4}-Q[1-4]|\d{4}-\d{2}|\d{4}-\d{2}-\d{2}|\d{4}-W\d{2}")
EXPECTED = "expected 2013, 2013-Q1, 2013-01, 2013-W05 or 2013-01-05"
FREQUENCIES = ("day", "week", "month", "quarter", "year")
# The cron of one scheduled run per partition, the default scoring cadence.
CRON = {
    "day": "0 0 * * *",
    "week": "0 0 * * 1",
    "month": "0 0 1 * *",
    "quarter": "0 0 1 */3 *",
    "year": "0 0 1 1 *",
}


def is_id(text: str) -> bool:
    """Whether ``text`` has the shape of a partition id."""
    return PID.fullmatch(text) is not None


def check(pid: str) -> str:
    """Return ``pid`` when it is a partition id; raise ValueError naming it otherwise."""
    if not is_id(pid):
        raise ValueError(f"partition {pid!r} is not a partition id ({EXPECTED})")
    return pid


def ids(ts: pd.Series, freq: str) -> pd.Series:
    """Name the partition of each timestamp: 2013, 2013-Q1, 2013-01, 2013-W05, 2013-01-05.

    Each distinct partition is named once (``_names``) and the names are spread over the
    rows: formatting every timestamp was most of ``ingest``'s own time.
    """
    if freq == "year":
        return _names(ts, ts.dt.year, lambda t: t.dt.strftime("%Y"))
    if freq == "quarter":
        return _names(
            ts,
            ts.dt.year * 10 + ts.dt.quarter,
            lambda t: t.dt.strftime("%Y") + "-Q" + t.dt.quarter.astype(str),
        )
    if freq == "month":
        return _names(ts, ts.dt.year * 100 + ts.dt.month, lambda t: t.dt.strftime("%Y-%m"))
    if freq == "day":
        code = (ts.dt.year * 100 + ts.dt.month) * 100 + ts.dt.day
        return _names(ts, code, lambda t: t.dt.strftime("%Y-%m-%d"))
    if freq == "week":

        def weeks(t: pd.Series) -> pd.Series:
            iso = t.dt.isocalendar()
            return iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2)

        iso = ts.dt.isocalendar()
        return _names(ts, iso["year"].astype("float64") * 100 + iso["week"], weeks)
    raise ValueError(f"unknown partition frequency {freq!r}")


def _names(ts: pd.Series, code: pd.Series, name: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``name(ts)``, computed on one timestamp per distinct ``code`` (null where ts is)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(code, use_na_sentinel=True)
    if len(uniques) == 0:
        return name(ts)
    first = np.unique(codes[codes >= 0], return_index=True)[1]
    rows = np.flatnonzero(codes >= 0)[first]
    names = name(ts.iloc[rows]).to_numpy(dtype=object)
    out = np.full(len(ts), np.nan, dtype=object)
    out[codes >= 0] = names[codes[codes >= 0]]
    return pd.Series(out, index=ts.index, name=ts.name)


def _bounds(pid: str) -> tuple[datetime, datetime]:
    """``interval`` in standard-library datetimes (UTC)."""
    check(pid)
    try:
        if "-W" in pid:
            year, week = pid.split("-W")
            first = datetime.combine(
                date.fromisocalendar(int(year), int(week), 1), datetime.min.time()
            )
            first = first.replace(tzinfo=UTC)
            return first, first + timedelta(days=7)
        if "-Q" in pid:
            year, q = pid.split("-Q")
            n = int(year) * 12 + (int(q) - 1) * 3
            return _month(n), _month(n + 3)
        if pid.count("-") == 0:
            return _month(int(pid) * 12), _month(int(pid) * 12 + 12)
        if pid.count("-") == 1:
            year, month = pid.split("-")
            if not 1 <= int(month) <= 12:
                raise ValueError(pid)
            n = int(year) * 12 + int(month) - 1
            return _month(n), _month(n + 1)
        first = datetime.strptime(pid, "%Y-%m-%d").replace(tzinfo=UTC)
        return first, first + timedelta(days=1)
    except ValueError:
        raise ValueError(f"partition {pid!r} is not a partition id ({EXPECTED})") from None


def _month(n: int) -> datetime:
    """The first instant of month number ``n`` (year * 12 + month - 1), UTC."""
    if not 12 <= n < 10_000 * 12:
        raise ValueError(n)
    return datetime(n // 12, n % 12 + 1, 1, tzinfo=UTC)


def _name(instant: datetime, freq: str) -> str:
    """The ``freq`` partition id that holds ``instant`` (UTC)."""
    if freq == "year":
        return f"{instant.year:04d}"
    if freq == "quarter":
        return f"{instant.year:04d}-Q{(instant.month - 1) // 3 + 1}"
    if freq == "month":
        return f"{instant.year:04d}-{instant.month:02d}"
    if freq == "week":
        year, week, _ = instant.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if freq == "day":
        return f"{instant:%Y-%m-%d}"
    raise ValueError(f"unknown partition frequency {freq!r} (one of {', '.join(FREQUENCIES)})")


def interval(pid: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The half-open UTC interval [start, end) a partition id covers."""
    import pandas as pd

    first, end = _bounds(pid)
    return pd.Timestamp(first), pd.Timestamp(end)


def sort_key(pid: str) -> datetime:
    """The first instant of a partition as a standard-library datetime (no pandas)."""
    return _bounds(pid)[0]


def frequency(pid: str) -> str:
    """The partition frequency an id is written in: ``2013-Q1`` is a quarter."""
    check(pid)
    if "-W" in pid:
        return "week"
    if "-Q" in pid:
        return "quarter"
    return ("year", "month", "day")[pid.count("-")]


def shift(pid: str, n: int, freq: str) -> str:
    """The ``freq`` partition ``n`` steps after ``pid`` (before it when ``n`` < 0)."""
    first, end = _bounds(pid)
    if freq == "day":
        return _name(first + timedelta(days=n), freq)
    if freq == "week":
        return _name(first + timedelta(days=7 * n), freq)
    months = {"month": 1, "quarter": 3, "year": 12}[freq]
    return _name(_month(first.year * 12 + first.month - 1 + months * n), freq)


def span(first: str, last: str, freq: str) -> list[str]:
    """Every ``freq`` partition from ``first`` to ``last`` (both included), oldest first.

    Raises:
        ValueError: An id is malformed or not a ``freq`` partition, or ``last`` comes
            before ``first``.
    """
    for pid in (first, last):
        if frequency(pid) != freq:
            raise ValueError(
                f"partition {pid!r} is not a {freq} partition (ingest.partition={freq!r})"
            )
    if _bounds(last)[0] < _bounds(first)[0]:
        raise ValueError(f"partition range {first!r} to {last!r}: {last!r} comes first")
    out = [first]
    while out[-1] != last:
        out.append(shift(out[-1], 1, freq))
    return out


def start(pid: str) -> pd.Timestamp:
    """The first instant of a partition (a sort key)."""
    return interval(pid)[0]


def of(start: Any, freq: str) -> str:
    """The ``freq`` partition id that holds the instant ``start``."""
    import pandas as pd

    return _name(pd.Timestamp(start).tz_convert("UTC").to_pydatetime(), freq)


def file(folder: Path, pid: str) -> Path:
    """``<folder>/<pid>.parquet``; an id that is not a partition id (``../x``) is refused."""
    return folder / f"{check(pid)}.parquet"


def previous(last: str, n: int, freq: str) -> list[str]:
    """The ``n`` partitions ending with ``last`` (inclusive), oldest first."""
    return [shift(last, -i, freq) for i in range(n - 1, -1, -1)]


def covering(begin: Any, end: Any, freq: str) -> list[str]:
    """The partitions a data interval covers exactly, oldest first.

    A monthly schedule over monthly partitions gives one; a weekly schedule over daily
    partitions gives seven.

    Raises:
        ValueError: The interval is missing, or does not start and end on ``freq``
            partition boundaries (the schedule does not match ``ingest.partition``).
    """
    import pandas as pd

    if begin is None or end is None:
        raise ValueError(
            "this run has no data interval; trigger it with a logical date, for example "
            "from the UI's 'Trigger' form or with `airflow dags trigger -l 2013-08-01 scoring`"
            ", or name the partitions in the run's `partitions` parameter"
        )
    s, e = pd.Timestamp(begin).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    out: list[str] = []
    cur = s
    while cur < e:
        pid = of(cur, freq)
        p_start, p_end = interval(pid)
        if p_start != cur or p_end > e:
            raise ValueError(
                f"data interval [{s:%Y-%m-%d %H:%M}, {e:%Y-%m-%d %H:%M}) is not made of whole "
                f"{freq} partitions ({pid} is [{p_start:%Y-%m-%d}, {p_end:%Y-%m-%d})); make "
                f"schedule.scoring in params.yaml match ingest.partition={freq!r} "
                f"(for example {CRON[freq]!r}, the default)"
            )
        out.append(pid)
        cur = p_end
    if not out:
        raise ValueError(f"data interval [{s}, {e}) is empty: no partition to score")
    return out


def named(requested: Iterable[str], freq: str) -> list[str]:
    """Partition ids named by a person, checked to be ``freq`` partitions, sorted."""
    out = set()
    for pid in requested:
        first, _ = interval(str(pid))  # raises on a malformed id
        if of(first, freq) != pid:
            raise ValueError(
                f"partition {pid!r} is not a {freq} partition (ingest.partition={freq!r}); "
                f"name partitions like {of(first, freq)!r}"
            )
        out.add(str(pid))
    return sorted(out, key=start)


def read(folder: Path, pids: list[str], what: str = "partition") -> pd.DataFrame:
    """Read and concatenate partition files; a missing one is an error naming its file."""
    import pandas as pd

    frames = []
    for pid in pids:
        path = file(folder, pid)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: {what} {pid!r} not found; run the stage that writes it first"
            )
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
