"""score: batch predictions for a partition with the ``champion`` model.

The alias is resolved once to an exact version, and every prediction row carries the
model name and that version. The rows scored are the partition's own feature rows, as
``materialize`` wrote them to the Feast offline source: the point-in-time join of a row's
keys and timestamp against the same rows returns that row's features (keys are unique
within a partition, checked before scoring, and partitions do not overlap in time), so
they are streamed from the file in chunks instead of joined whole. Each chunk is
predicted and written into a temporary Parquet file that is renamed into place when
complete, so memory does not grow with the partition and a killed run leaves the
previous predictions untouched.

The feature file must be made from the partition's current raw version (``provenance``);
the sidecar records that version (``input_md5``) and the predictions' own md5. Every
predictions file is also kept in ``<data_root>/archive/predictions/<partition>/<model>/
v<version>/<input md5>.parquet`` (a hard link, with its sidecar), put there before it
replaces the previous one: a rescore by another champion or of re-ingested data never
loses what was answered before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

from mlops import explain, faults, features, io, observe, partitions, provenance, thresholds
from mlops.config import Params, Settings
from mlops.registry import CHAMPION, Loaded, RegistryError, connect

if TYPE_CHECKING:
    import pandas as pd


def predict_frame(part: pd.DataFrame, loaded: Loaded, params: Params) -> pd.DataFrame:
    """Pure core: keys, timestamp, prediction (and label), model name and version.

    A classifier's label is ``prediction >= threshold``, the threshold the version was
    trained with (:func:`threshold`). With ``score.explain_top_k`` each row also gets its
    top contributing features (``explain.top_columns``).
    """
    import pandas as pd

    c = params.contract
    pred = loaded.predict(part, c)
    out = part[[*c.entity_keys, c.timestamp]].reset_index(drop=True)
    out["prediction"] = pred
    if c.task == "classification":
        out["predicted_label"] = (pred >= threshold(loaded)).astype("int8")
    out["model_name"] = pd.Series([loaded.name] * len(out), dtype="string")
    out["model_version"] = pd.Series([loaded.version] * len(out), dtype="string")
    k = params.score.explain_top_k
    if k:
        why = explain.contributions(loaded, part, c, approximate=not params.score.explain_exact)
        for col, values in explain.top_columns(why, k).items():
            out[col] = pd.Series(values, dtype="string" if "feature" in col else "float64")
    return out


def threshold(loaded: Loaded) -> float:
    """The version's decision threshold; 0.5 for one loaded without it."""
    return thresholds.DEFAULT_THRESHOLD if loaded.threshold is None else loaded.threshold


def predict_batches(
    batches: Iterable[pd.DataFrame], loaded: Loaded, params: Params
) -> Iterator[pd.DataFrame]:
    """Prediction frames for each non-empty input frame, in input order."""
    for part in batches:
        if len(part):
            yield predict_frame(part, loaded, params)


def write_predictions(
    target: Path,
    chunks: Iterable[pd.DataFrame],
    before_rename: Callable[[Path, int], None] | None = None,
) -> int:
    """Stream chunks into one Parquet file atomically; return the row count.

    ``before_rename(complete_file, rows)`` runs once the file is complete, before it
    replaces ``target`` (to archive it first).
    """
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
        if before_rename is not None:
            before_rename(tmp, rows)
    return rows


def check_keys(params: Params, path: Path, partition: str) -> None:
    """Refuse a feature file whose rows share an entity key.

    Predictions are joined back to features and labels on the keys (``monitor``, labels
    arriving later), so two rows with one key would be mixed up there.
    """
    import pyarrow.parquet as pq

    keys = params.contract.entity_keys
    io.one_to_one(
        pq.read_table(path, columns=keys),
        keys,
        f"score {partition}: feature file {path}",
        features.REDO.format(what=partition),
    )


class Scored(TypedDict):
    """Where a partition's predictions are and which model made them (also the sidecar)."""

    partition: str
    rows: int
    path: str
    model_name: str
    model_version: str
    run_id: str
    input_md5: str | None
    md5: str
    archived: str
    threshold: float | None
    explanations: NotRequired[dict[str, object]]


def run(params: Params, st: Settings, partition: str) -> Scored:
    """Score one partition with the current champion; return where and with what.

    A second run for the same partition while one is going is refused. The previous
    predictions stay in place until the new file is complete.
    """
    target = partitions.file(st.predictions_dir, partition)  # refuses a malformed id
    with io.exclusive(st.state_dir / "locks", "score", [partition]):
        return _run(params, st, partition, target)


def _run(params: Params, st: Settings, partition: str, target: Path) -> Scored:
    t0 = time.perf_counter()
    name = params.model_name
    path = features.feature_file(params, st, partition)
    check_keys(params, path, partition)  # bad data fails before the registry is asked
    made = provenance.require_features(st, partition, path, "score")
    reg = connect(st)
    mv = reg.retry(lambda: reg.version_by_alias(name, CHAMPION), f"resolve {name}@{CHAMPION}")
    if mv is None:
        raise RegistryError(f"model {name!r} has no '{CHAMPION}' version; train and promote first")
    loaded = reg.retry(lambda: reg.load(name, mv.version), f"load {name} v{mv.version}")
    archived = provenance.archive_file(
        st, partition, loaded.name, loaded.version, made or io.md5(path)
    )
    meta = Scored(
        partition=partition,
        rows=0,
        path=str(target),
        model_name=loaded.name,
        model_version=loaded.version,
        run_id=loaded.run_id,
        input_md5=made,
        md5="",
        archived=str(archived),
        threshold=threshold(loaded) if params.contract.task == "classification" else None,
    )
    if params.score.explain_top_k:
        fast = loaded.flavor == "xgboost" and not params.score.explain_exact
        meta["explanations"] = {"top_k": params.score.explain_top_k, "approximate": fast}

    def archive(complete: Path, rows: int) -> None:
        # Archived first: once the new file is in place, the archive already holds it.
        meta["rows"], meta["md5"] = rows, io.md5(complete)
        io.write_json(archived.with_suffix(".json"), meta)
        io.link(complete, archived)

    batches = features.batches(params, path, params.score.chunk_rows)
    rows = write_predictions(target, predict_batches(batches, loaded, params), archive)
    io.write_json(target.with_suffix(".json"), meta)
    observe.rows(rows, rows, partition)
    at = f" at threshold {meta['threshold']:.4f}" if meta["threshold"] is not None else ""
    print(
        f"score: {partition} {rows:,} rows with {loaded.name} v{loaded.version}{at} -> {target} "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return meta
