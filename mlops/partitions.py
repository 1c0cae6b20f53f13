"""Partition ids and the time they cover: parsing, naming, arithmetic.

A partition is a half-open UTC interval named by its start: ``2013-01`` (month),
``2013-W05`` (ISO week) or ``2013-01-05`` (day). Every stage, the CLI and the Airflow
adapter parse ids here, which is also what keeps an id from the CLI or a DAG from
naming a path outside the data root.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

PID = re.compile(r"\d{4}-\d{2}|\d{4}-\d{2}-\d{2}|\d{4}-W\d{2}")
EXPECTED = "expected 2013-01, 2013-W05 or 2013-01-05"


def is_id(text: str) -> bool:
    """Whether ``text`` has the shape of a partition id."""
    return PID.fullmatch(text) is not None


def check(pid: str) -> str:
    """Return ``pid`` when it is a partition id; raise ValueError naming it otherwise."""
    if not is_id(pid):
        raise ValueError(f"partition {pid!r} is not a partition id ({EXPECTED})")
    return pid


def ids(ts: pd.Series, freq: str) -> pd.Series:
    """Name the partition of each timestamp: 2013-01 (month), 2013-W05 (week), 2013-01-05."""
    if freq == "month":
        return ts.dt.strftime("%Y-%m")
    if freq == "day":
        return ts.dt.strftime("%Y-%m-%d")
    if freq == "week":
        iso = ts.dt.isocalendar()
        return iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2)
    raise ValueError(f"unknown partition frequency {freq!r}")


def interval(pid: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The half-open UTC interval [start, end) a partition id covers."""
    import pandas as pd

    try:
        check(pid)
        if "-W" in pid:
            year, week = pid.split("-W")
            start = pd.Timestamp.fromisocalendar(int(year), int(week), 1).tz_localize("UTC")
            return start, start + pd.Timedelta(days=7)
        if pid.count("-") == 1:
            start = pd.Timestamp(f"{pid}-01", tz="UTC")
            return start, start + pd.DateOffset(months=1)
        start = pd.Timestamp(pid, tz="UTC")
        return start, start + pd.Timedelta(days=1)
    except ValueError:
        raise ValueError(f"partition {pid!r} is not a partition id ({EXPECTED})") from None


def start(pid: str) -> pd.Timestamp:
    """The first instant of a partition (a sort key)."""
    return interval(pid)[0]


def of(start: Any, freq: str) -> str:
    """The ``freq`` partition id that holds the instant ``start``."""
    import pandas as pd

    ts = pd.Series([pd.Timestamp(start).tz_convert("UTC")])
    return str(ids(ts, freq).iloc[0])


def file(folder: Path, pid: str) -> Path:
    """``<folder>/<pid>.parquet``; an id that is not a partition id (``../x``) is refused."""
    return folder / f"{check(pid)}.parquet"


def previous(last: str, n: int, freq: str) -> list[str]:
    """The ``n`` partitions ending with ``last`` (inclusive), oldest first."""
    import pandas as pd

    first, _ = interval(last)
    step = {
        "month": pd.DateOffset(months=1),
        "week": pd.Timedelta(days=7),
        "day": pd.Timedelta(days=1),
    }[freq]
    return [of(first - step * i, freq) for i in range(n - 1, -1, -1)]


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
                f"MLOPS_SCORING_CRON match ingest.partition={freq!r}"
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
