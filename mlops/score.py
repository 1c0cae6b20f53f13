"""score: batch predictions for a partition with the ``champion`` model.

The alias is resolved once to an exact version, and every prediction row carries the
model name and that version. Features come from Feast. Rows are predicted and written in
chunks into a temporary Parquet file that is renamed into place when complete, so a
killed run leaves the previous predictions untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import faults, io, models
from mlops.config import Params, Settings

if TYPE_CHECKING:
    import pandas as pd

    from mlops.registry import Loaded


def predict_chunks(
    df: pd.DataFrame, loaded: Loaded, params: Params, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """Pure core: prediction frames of at most ``chunk_rows`` rows, in input order."""
    import pandas as pd

    c = params.contract
    kind = "xgboost" if loaded.flavor == "xgboost" else "sklearn"
    for start in range(0, max(len(df), 1), chunk_rows):
        part = df.iloc[start : start + chunk_rows]
        if part.empty:
            return
        x = models.align_categories(models.matrix(part, c), loaded.categories)
        pred = models.predict(loaded.model, models.fit_input(x, kind), c.task)
        out = part[[*c.entity_keys, c.timestamp]].reset_index(drop=True)
        out["prediction"] = pred
        if c.task == "classification":
            out["predicted_label"] = (pred >= 0.5).astype("int8")
        out["model_name"] = pd.Series([loaded.name] * len(out), dtype="string")
        out["model_version"] = pd.Series([loaded.version] * len(out), dtype="string")
        yield out


def write_predictions(target, chunks: Iterator[pd.DataFrame]) -> int:  # type: ignore[no-untyped-def]
    """Stream chunks into one Parquet file atomically; return the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0
    with io.atomic_path(target) as tmp:
        writer = None
        try:
            for chunk in chunks:
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
                rows += len(chunk)
                faults.point("score.chunk_written")
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"{target}: nothing to score (no rows)")
    return rows


def run(params: Params, st: Settings, partition: str) -> dict[str, Any]:
    """Score one partition with the current champion; return where and with what.

    A second run for the same partition while one is going is refused. The previous
    predictions stay in place until the new file is complete.
    """
    target = io.partition_file(st.predictions_dir, partition)  # refuses a malformed id
    with io.exclusive(st.state_dir / "locks", "score", [partition]):
        return _run(params, st, partition, target)


def _run(params: Params, st: Settings, partition: str, target: Path) -> dict[str, Any]:
    from mlops import materialize
    from mlops.registry import CHAMPION, RegistryError, load, retry, version_by_alias

    t0 = time.perf_counter()
    name = params.model_name
    mv = retry(lambda: version_by_alias(st, name, CHAMPION), f"resolve {name}@{CHAMPION}")
    if mv is None:
        raise RegistryError(
            f"model {name!r} has no '{CHAMPION}' version; train and promote first"
        )
    loaded = retry(lambda: load(st, name, mv.version), f"load {name} v{mv.version}")
    df = materialize.scoring_frame(params, st, [partition])
    rows = write_predictions(target, predict_chunks(df, loaded, params, params.score.chunk_rows))
    meta = {"partition": partition, "rows": rows, "path": str(target),
            "model_name": loaded.name, "model_version": loaded.version,
            "run_id": loaded.run_id}
    io.write_json(target.with_suffix(".json"), meta)
    print(f"score: {partition} {rows:,} rows with {loaded.name} v{loaded.version} -> {target} "
          f"in {time.perf_counter() - t0:.1f}s")
    return meta
