"""Test-only helpers that mlops does not need itself."""

from __future__ import annotations

import contextlib
import io as _io
import sys
from typing import TYPE_CHECKING

from mlops import features, io, partitions, provenance, training_data

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pandas as pd

    from mlops.config import Params, Settings
    from mlops.registry import Loaded


class _Tee(_io.StringIO):
    """Keeps what is written and passes it on."""

    def __init__(self, through: object) -> None:
        super().__init__()
        self.through = through

    def write(self, text: str) -> int:
        self.through.write(text)  # type: ignore[attr-defined]
        return super().write(text)


def run_ok(*argv: str) -> None:
    """``mlops *argv`` exits 0; if not, the assertion says what the command printed last."""
    from mlops.cli import main

    err = _Tee(sys.stderr)
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error")]
    assert code == 0, (errors or err.getvalue().splitlines() or ["(nothing on stderr)"])[-1]


def scoring_frame(params: Params, st: Settings, pids: list[str]) -> pd.DataFrame:
    """Rows of ``pids`` to score with their point-in-time features; the target when present.

    What ``materialize.scoring_frame`` returned: the labels of the validated partitions
    (each one must have been materialised) joined through the feature service.
    """
    c = params.contract
    labels = training_data.read_labels(st, c, pids)
    target = [c.target] if c.target in labels.columns else []
    for pid in pids:
        features.feature_file(params, st, pid)
    frame = features.retrieve(params, st, labels)
    return frame[[*c.entity_keys, c.timestamp, *c.feature_names, *target]]


def predict_chunks(
    df: pd.DataFrame, loaded: Loaded, params: Params, n: int
) -> Iterator[pd.DataFrame]:
    """Prediction frames of ``df``, ``n`` rows at a time."""
    from mlops import score

    return score.predict_batches((df.iloc[i : i + n] for i in range(0, len(df), n)), loaded, params)


def shared_flight(
    st: Settings, months: dict[str, pd.DataFrame], gaps: bool = False
) -> tuple[str, pd.Timestamp]:
    """Validate January and February so that one flight has temp 10 in January and 20 in
    February; with ``gaps``, another February row has missing features too.

    Returns the flight id and its January timestamp.
    """
    jan, feb = months["2013-01"].copy(), months["2013-02"].copy()
    flight = jan.loc[0, "flight_id"]
    jan.loc[0, "temp"] = 10.0
    feb.loc[5, ["flight_id", "temp"]] = [flight, 20.0]
    if gaps:
        feb.loc[6, ["temp", "carrier", "sched_hour"]] = [None, None, None]
    io.write_parquet(partitions.file(st.validated_dir, "2013-01"), jan)
    io.write_parquet(partitions.file(st.validated_dir, "2013-02"), feb)
    return flight, jan.loc[0, "event_ts"]


def copy_key_in_feature_file(
    params: Params, st: Settings, pid: str, source: str, onto: str, cols: tuple[str, ...]
) -> None:
    """Corrupt a materialised feature file: the row of flight ``onto`` gets ``source``'s
    values in ``cols`` (``materialize`` itself refuses to write a duplicated key).

    The file keeps the raw version it was stamped with, so it is still current and what
    is refused downstream is the duplicated key, not a stale file.
    """
    import pandas as pd

    path = features.source_dir(params, st) / f"{pid}.parquet"
    made = provenance.made_from(path)
    df = pd.read_parquet(path)
    src = df.index[df["flight_id"] == source][0]
    dst = df["flight_id"] == onto
    for col in cols:
        df.loc[dst, col] = df.loc[src, col]
    io.write_parquet(path, df, provenance.metadata(made))


def record_raw(st: Settings, pid: str) -> str:
    """Record the raw file of ``pid`` as its current version in the ingest manifest.

    For tests that plant a damaged raw file as a bad upstream would deliver it, where
    ``ingest`` (which projects onto the contract) cannot write it; returns its md5.
    """
    path = partitions.file(st.raw_dir, pid)
    md5 = io.md5(path)
    entries = provenance.manifest(st)
    entry = {**(entries.get(pid) or {}), "md5": md5, "at": "planted by a test"}
    entry.pop("history", None)
    io.write_json(provenance.manifest_path(st), provenance.updated(entries, pid, entry))
    return md5
