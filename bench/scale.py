"""Scale the real demo partitions up to benchmark sizes, keeping their structure.

The input is the real monthly partitions of 2013 as ``ingest`` writes them (the demo
``params.yaml``). A group of months is scaled jointly to a row count by replicating each
month: every month keeps its share of the rows, so the seasons stay where they are.
Replica 0 is the real rows unchanged; every other replica of a row gets

- a fresh entity key: ``<flight_id>-r<replica>``;
- a timestamp shifted by a random 1-59 minutes, which keeps it in the same hour, day and
  month (so the partition, the hour of day and the weather it was joined to still hold);
- small Gaussian jitter on the continuous weather features (``jitter`` times the
  column's standard deviation in that month), clipped to the contract's range; nulls
  stay null. Plane attributes, schedule, categories and the label are copied.

The last replica of a month is a random subset of its rows, so any row count can be
reached. Everything is drawn from one seeded generator: the same seed and sizes give
the same files.

    python -m bench.scale --from data --to /tmp/bench/1M --rows 1000000
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops import io, partitions
from mlops.config import Contract

JITTERED = ["temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib"]
"""Continuous measurements that get jitter; everything else is copied."""

TRAIN_MONTHS = [f"2013-{m:02d}" for m in range(1, 7)]
SCORE_MONTHS = ["2013-07"]


def parse_size(text: str) -> int:
    """``100k``, ``1M``, ``5M`` or a plain number of rows."""
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def month_targets(sizes: dict[str, int], rows: int) -> dict[str, int]:
    """Split ``rows`` over months in proportion to their real sizes (largest remainder)."""
    total = sum(sizes.values())
    exact = {m: rows * n / total for m, n in sizes.items()}
    out = {m: int(v) for m, v in exact.items()}
    short = rows - sum(out.values())
    for m in sorted(exact, key=lambda m: exact[m] - out[m], reverse=True)[:short]:
        out[m] += 1
    return out


def replicate(
    df: pd.DataFrame,
    rows: int,
    contract: Contract,
    rng: np.random.Generator,
    jitter: float = 0.02,
) -> pd.DataFrame:
    """Pure core: ``rows`` rows made of ``df`` (one month) and jittered copies of it.

    Returns rows sorted by timestamp then key, as ``ingest`` writes them.
    """
    key = contract.entity_keys[0]
    ts = contract.timestamp
    n = len(df)
    full, rest = divmod(rows, n)
    std = {c: float(np.nanstd(df[c].to_numpy(dtype="float64"))) for c in JITTERED if c in df}
    parts = []
    for r in range(full + (1 if rest else 0)):
        part = df if r < full else df.iloc[np.sort(rng.choice(n, size=rest, replace=False))]
        if r == 0:
            parts.append(part)
            continue
        m = len(part)
        changes: dict[str, object] = {
            key: part[key].astype(str) + f"-r{r}",
            ts: part[ts] + pd.to_timedelta(rng.integers(1, 60, size=m), unit="min"),
        }
        for c, s in std.items():
            f = contract.feature(c)
            x = part[c].to_numpy(dtype="float64") + rng.normal(0.0, jitter * s, size=m)
            changes[c] = np.clip(
                x, f.min if f.min is not None else -np.inf, f.max if f.max is not None else np.inf
            )
        parts.append(part.assign(**changes))
    out = pd.concat(parts, ignore_index=True)
    # Arrow sorts strings much faster than pandas' multi-column sort_values.
    table = pa.table({"t": out[ts].to_numpy(), "k": out[key].to_numpy(dtype=object)})
    order = pc.sort_indices(table, sort_keys=[("t", "ascending"), ("k", "ascending")])
    return out.take(order.to_numpy()).reset_index(drop=True)


def scale_group(
    frames: dict[str, pd.DataFrame],
    rows: int,
    contract: Contract,
    seed: int,
    jitter: float = 0.02,
) -> Iterable[tuple[str, pd.DataFrame]]:
    """Scale a group of months jointly to ``rows`` rows; yields (month, frame) lazily."""
    targets = month_targets({m: len(f) for m, f in frames.items()}, rows)
    for i, (month, df) in enumerate(sorted(frames.items())):
        rng = np.random.default_rng([seed, i, rows])
        yield month, replicate(df, targets[month], contract, rng, jitter)


def scale_project(
    source_data: Path,
    target_data: Path,
    contract: Contract,
    train_rows: int,
    score_rows: int,
    seed: int = 2013,
    jitter: float = 0.02,
    train_months: list[str] = TRAIN_MONTHS,
    score_months: list[str] = SCORE_MONTHS,
) -> dict[str, int]:
    """Write scaled partitions into ``target_data``/raw and /validated.

    The training months are scaled jointly to ``train_rows`` (the training set size) and
    the scoring months to ``score_rows`` (the batch that is scored and monitored).

    Returns:
        month -> rows written.
    """
    written: dict[str, int] = {}
    for months, rows, salt in ((train_months, train_rows, 0), (score_months, score_rows, 1)):
        frames = {m: pd.read_parquet(partitions.file(source_data / "validated", m)) for m in months}
        for month, df in scale_group(frames, rows, contract, seed + salt, jitter):
            for sub in ("raw", "validated"):
                io.write_parquet(partitions.file(target_data / sub, month), df)
            written[month] = len(df)
    return written


def main(argv: list[str] | None = None) -> int:
    from mlops.config import load_params

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--from",
        dest="src",
        type=Path,
        required=True,
        help="data root holding validated/<month>.parquet of the real demo",
    )
    ap.add_argument("--to", dest="dst", type=Path, required=True, help="data root to write")
    ap.add_argument(
        "--rows",
        type=parse_size,
        required=True,
        help="rows of the training window and of the scored month (e.g. 1M)",
    )
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--seed", type=int, default=2013)
    ap.add_argument("--jitter", type=float, default=0.02)
    a = ap.parse_args(argv)
    contract = load_params(a.params).contract
    written = scale_project(a.src, a.dst, contract, a.rows, a.rows, a.seed, a.jitter)
    print(f"scale: {sum(written.values()):,} rows in {len(written)} partitions -> {a.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
