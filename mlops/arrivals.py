"""The outcomes of a scored partition that have arrived: a labels file or folder, or the source.

``labels.path`` names CSV or Parquet files of the entity keys, the outcome
(``labels.column``, default the contract's target) and optionally when each became known
(``labels.known_at``); without it the source is read again and the partition's rows are
taken. Files are read a batch at a time and only each outcome's key hash, value and time
are kept (``outcomes.Outcomes``). Outcomes of the wrong type or outside the contract's set
or range, and missing columns, are refused naming the file, column and examples; null
outcomes, outcomes known after ``as_of``, rows of other partitions and keys that were
never scored are counted and skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mlops import partitions, source
from mlops.config import Params, Settings
from mlops.contract import Contract
from mlops.outcomes import (
    EXAMPLES,
    NO_TIME,
    LabelError,
    Outcomes,
    key_hash,
    member,
    shared_hash_keys,
    show,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MAX_FILES = 32_000  # each outcome remembers its file as an int16


def frame_keys(df: pd.DataFrame, kinds: dict[str, str], where: str) -> list[np.ndarray]:
    """Key columns of a labels frame as the predictions hold them (text, whole numbers, times)."""
    import pandas as pd

    out = []
    for k, kind in kinds.items():
        s = df[k]
        if kind == "string" and pd.api.types.infer_dtype(s, skipna=True) != "string":
            whole = s.dtype.kind == "f" and bool((s == s.round()).all())
            s = (s.astype("Int64") if whole else s).astype(str)
        elif kind == "int":
            num = pd.to_numeric(s, errors="coerce")
            bad = num.isna() | (num != num.round())
            if bad.any():
                raise LabelError(
                    f"{where}: key column {k!r} holds {int(bad.sum()):,} value(s) that are not "
                    f"whole numbers (e.g. {_examples(s[bad])}), but the predictions' {k!r} "
                    "are integers; write the keys as the scored partition has them"
                )
            s = num.astype("int64")
        elif kind == "time":
            s = pd.Series(_ns(source.to_utc(df, k, "UTC", where, setting=None)), index=s.index)
        out.append(s.to_numpy(dtype=object if kind == "string" else None))
    return out


def _examples(s: pd.Series, n: int = EXAMPLES) -> str:
    return ", ".join(show((v,)) for v in s.drop_duplicates().head(n).tolist())


# --------------------------------------------------------------------------- outcome values
def outcome_values(s: pd.Series, contract: Contract, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Pure: the known outcomes typed for the store (int8 0/1 or float64) and which are known.

    Classification takes 0/1/True/False only; regression numbers within the contract's
    ``target_min``/``target_max``. Anything else raises ``LabelError`` with examples.
    """
    import numpy as np
    import pandas as pd

    known = s.notna().to_numpy()
    v = s[known]
    col = f"{where}: outcome column {s.name!r}"
    cls = contract.task == "classification"
    if v.dtype == object:
        number = (int, float, np.number, np.bool_) if cls else (int, float, np.number)
        ok = v.map(lambda x: isinstance(x, number) and (cls or not isinstance(x, bool)))
        wrong = v[~ok.to_numpy(dtype=bool)]
    else:
        wrong = v if v.dtype.kind not in ("biuf" if cls else "iuf") else v.iloc[:0]
    if len(wrong):
        want = "0/1 or True/False" if cls else "numbers"
        raise LabelError(
            f"{col} holds {len(wrong):,} value(s) of the wrong type (e.g. {_examples(wrong)}); "
            f"a {contract.task} outcome is {want}; fix the file (or name the right column "
            "in labels.column)"
        )
    num = pd.to_numeric(v, errors="coerce").astype("float64")
    if contract.task == "classification":
        bad_mask = ~num.isin([0.0, 1.0])
        rule = "outside the contract's set {0, 1} (True/False)"
    else:
        lo, hi = contract.target_min, contract.target_max
        bad_mask = ~np.isfinite(num) | (num < (-np.inf if lo is None else lo))
        bad_mask |= num > (np.inf if hi is None else hi)
        rule = f"outside the contract's range [{lo}, {hi}] (contract.target_min/target_max)"
    if bad_mask.any():
        raise LabelError(
            f"{col} holds {int(bad_mask.sum()):,} value(s) {rule} (e.g. {_examples(v[bad_mask])}"
            "); fix the file or the contract"
        )
    dtype = "int8" if contract.task == "classification" else "float64"
    return num.to_numpy().astype(dtype), known


# --------------------------------------------------------------------------- reading
@dataclass
class Counts:
    """Rows read and those not joined, by why (``Arrived.read``)."""

    rows: int = 0
    not_known_yet: int = 0
    known_later: int = 0
    other_partitions: int = 0
    unknown_keys: int = 0
    unknown_examples: list[str] = field(default_factory=list)


def _ns(ts: pd.Series) -> np.ndarray:
    """Tz-aware timestamps as int64 nanoseconds since 1970 (UTC), whatever their unit."""
    return (
        ts.dt.tz_convert("UTC")
        .dt.tz_localize(None)
        .astype("datetime64[ns]")
        .to_numpy()
        .view("int64")
    )


class _Buffer:
    """Outcomes added batch by batch into arrays sized up front, grown when needed.

    A list of batches and its concatenation would hold every outcome twice.
    """

    def __init__(self, rows: int, task: str) -> None:
        import numpy as np

        y = "int8" if task == "classification" else "float64"
        self.n, self.cols = 0, [np.empty(rows, t) for t in ("uint64", y, "int64", "int16")]

    def add(self, *arrays: np.ndarray) -> None:
        import numpy as np

        end = self.n + len(arrays[0])
        if end > len(self.cols[0]):
            grown = [np.empty(max(end, 2 * len(c)), c.dtype) for c in self.cols]
            for new, old in zip(grown, self.cols, strict=True):
                new[: self.n] = old[: self.n]
            self.cols = grown
        for col, a in zip(self.cols, arrays, strict=True):
            col[self.n : end] = a
        self.n = end

    def outcomes(self) -> Outcomes:
        return Outcomes(*(c[: self.n] for c in self.cols))


def _rows(df: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """The rows of ``df`` to keep; ``df`` itself when that is all of them (no copy)."""
    return df if keep.all() else df.loc[keep]


def _label_files(where: Path) -> list[Path]:
    if where.is_dir():
        files = sorted(
            p
            for p in where.rglob("*")
            if p.is_file() and (".csv" in p.suffixes or p.suffix == ".parquet")
        )
        if not files:
            raise LabelError(f"{where}: labels.path names a folder without CSV or Parquet files")
        return files
    if not where.is_file():
        raise LabelError(f"{where}: labels file not found (labels.path)")
    return [where]


class Arrived:
    """The outcomes of a scored partition that have arrived (``arrived``), read in batches.

    From ``labels.path`` (CSV or Parquet files, keys + ``labels.column`` + optionally
    ``labels.known_at``; rows of other partitions are skipped when the file has the
    contract's timestamp), else from the source read again.
    """

    def __init__(
        self, params: Params, st: Settings, partition: str, as_of: datetime | None = None
    ) -> None:
        import pandas as pd

        cfg = params.labels
        self.params, self.st, self.partition = params, st, partition
        self.from_file = cfg is not None and cfg.path is not None
        c = params.contract
        self.column = (cfg.column if cfg is not None and self.from_file else None) or c.target
        self.known_at = cfg.known_at if cfg is not None and self.from_file else None
        at = pd.Timestamp(as_of or datetime.now(UTC))
        self.as_of = at.tz_localize("UTC") if at.tz is None else at.tz_convert("UTC")
        if cfg is not None and cfg.path is not None:
            self.path = source.resolve(cfg.path, st.root, st.allow_outside, key="labels.path")
            self.files = _label_files(self.path)
            if len(self.files) > MAX_FILES:
                raise LabelError(
                    f"{self.path}: labels.path holds {len(self.files):,} files, more than "
                    f"{MAX_FILES:,}; merge them into fewer files"
                )
        else:
            self.path = source.resolve(params.source.path, st.root, st.allow_outside)
            self.files = [self.path]

    @property
    def where(self) -> str:
        """The labels file or folder, or the source, for messages."""
        return str(self.path) if self.from_file else f"the source {self.path}"

    def _columns(self, f: Path) -> list[str]:
        import pandas as pd
        import pyarrow.parquet as pq

        c = self.params.contract
        try:
            names = (
                pq.read_schema(f).names
                if f.suffix == ".parquet"
                else list(pd.read_csv(f, nrows=0).columns)
            )
        except Exception as exc:
            raise LabelError(f"{f}: cannot read the labels file: {exc}") from exc
        want = [*c.entity_keys, self.column, *([self.known_at] if self.known_at else [])]
        missing = [k for k in want if k not in names]
        if missing:
            raise LabelError(
                f"{f}: the labels file lacks column(s) {missing} (entity keys "
                f"{c.entity_keys}, outcome labels.column={self.column!r}"
                + (f", labels.known_at={self.known_at!r}" if self.known_at else "")
                + f"); it has {names}"
            )
        return [*want, *([c.timestamp] if c.timestamp in names else [])]

    def frames(self, kinds: dict[str, str], batch_rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
        """(file index, rows) of every file, ``batch_rows`` at a time; the source at once."""
        import pandas as pd
        import pyarrow.parquet as pq

        c = self.params.contract
        if not self.from_file:
            df = source.load(self.params.source, self.st.root, self.st.allow_outside)
            missing = [k for k in [*c.entity_keys, c.target, c.timestamp] if k not in df.columns]
            if missing:
                raise LabelError(f"{self.where}: columns {missing} not found to label from")
            ts = df[c.timestamp]
            df = df.loc[partitions.ids(ts, self.params.ingest.partition) == self.partition]
            df = df[[*c.entity_keys, c.target]]
            for lo in range(0, len(df), batch_rows):
                yield 0, df.iloc[lo : lo + batch_rows]
            return
        for i, f in enumerate(self.files):
            cols = self._columns(f)
            try:
                if f.suffix == ".parquet":
                    with pq.ParquetFile(f) as pf:
                        for b in pf.iter_batches(batch_size=batch_rows, columns=cols):
                            yield i, b.to_pandas(deduplicate_objects=False)
                    continue
                source.check_csv_complete(f)
                text = {k: str for k, kind in kinds.items() if kind == "string"}
                chunks = pd.read_csv(f, usecols=cols, dtype=text, chunksize=batch_rows)
                for chunk in chunks:
                    yield i, chunk
            except (LabelError, source.SourceError):
                raise
            except Exception as exc:
                raise LabelError(f"{f}: cannot read the labels file: {exc}") from exc

    def read(
        self, kinds: dict[str, str], scored: np.ndarray, batch_rows: int
    ) -> tuple[Outcomes, Counts]:
        """The known outcomes of scored keys (``scored``: their sorted hashes), and counts.

        Null outcomes are not known yet; outcomes known after ``as_of`` are left for later;
        keys that were never scored are skipped; all counted, none dropped silently.
        """
        import numpy as np
        import pyarrow.parquet as pq

        c = self.params.contract
        keys, counts = c.entity_keys, Counts()
        parquet = [f for f in self.files if f.suffix == ".parquet" and self.from_file]
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in parquet)
        buf = _Buffer(rows if len(parquet) == len(self.files) else 1 << 16, c.task)
        for i, df in self.frames(kinds, batch_rows):
            where = str(self.files[i])
            counts.rows += len(df)
            keep = np.ones(len(df), bool)
            if self.from_file and c.timestamp in df.columns:
                ts = source.to_utc(df, c.timestamp, "UTC", where, setting=None)
                keep = (
                    partitions.ids(ts, self.params.ingest.partition) == self.partition
                ).to_numpy()
                counts.other_partitions += int((~keep).sum())
            known_y, known = outcome_values(df[self.column], c, where)
            y = np.zeros(len(df), known_y.dtype)
            y[known] = known_y
            counts.not_known_yet += int((keep & ~known).sum())
            keep &= known
            t = np.full(len(df), NO_TIME, "int64")
            if self.known_at:
                t[keep] = self._times(_rows(df, keep), where)
                later = keep & (t > self.as_of.as_unit("ns").value)
                counts.known_later += int(later.sum())
                keep &= ~later
            no_key = keep & df[keys].isna().any(axis=1).to_numpy()
            if no_key.any():
                self._unknown(counts, df.loc[no_key, keys])
                keep &= ~no_key
            sub = _rows(df, keep)
            if len(sub) < len(df):
                y, t = y[keep], t[keep]
            cols = frame_keys(sub, kinds, where)
            h = key_hash(cols)
            clash = shared_hash_keys(h, cols)
            if len(clash):
                raise LabelError(
                    f"{where}: keys {show(tuple(sub[keys].iloc[int(clash[0])]))} and another "
                    "share a 64-bit key hash; this cannot be joined safely, report it"
                )
            _, found = member(scored, h)
            if not found.all():
                self._unknown(counts, sub.loc[~found, keys])
                h, y, t = h[found], y[found], t[found]
            buf.add(h, y, t, np.full(len(h), i, "int16"))
        return buf.outcomes(), counts

    def _times(self, df: pd.DataFrame, where: str) -> np.ndarray:
        col = str(self.known_at)
        missing = df[col].isna()
        if missing.any():
            keys = self.params.contract.entity_keys
            key = show(tuple(df.loc[missing, keys].iloc[0]))
            raise LabelError(
                f"{where}: labels.known_at column {col!r} is empty in {int(missing.sum()):,} "
                f"row(s) that have an outcome (e.g. key {key}); give each outcome the time it "
                "became known, or unset labels.known_at"
            )
        return _ns(source.to_utc(df, col, "UTC", where, setting=None))

    def _unknown(self, counts: Counts, rows: pd.DataFrame) -> None:
        counts.unknown_keys += len(rows)
        room = EXAMPLES - len(counts.unknown_examples)
        if room > 0 and len(rows):
            counts.unknown_examples += [show(r) for r in rows.head(room).itertuples(index=False)]


def arrived(params: Params, st: Settings, partition: str, as_of: datetime | None = None) -> Arrived:
    """The outcomes of ``partition`` that have arrived by ``as_of`` (None: now)."""
    return Arrived(params, st, partition, as_of)
