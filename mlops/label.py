"""label: join the outcomes that have arrived to a scored partition's predictions.

Outcomes come from ``labels.path`` or the source read again (``arrivals``). They are
joined one-to-one on the entity keys to the partition's predictions and merged with
what the label store already holds (``outcomes.merge``: the latest known outcome wins),
so labels arriving in several batches end in the same store as one batch, and a rerun
with nothing new changes nothing. Every refusal (bad types, missing columns, conflicting
outcomes, a partition not yet scored) happens before anything is written; the store is
then written atomically, in prediction order, and its sidecar after it.

Memory does not grow with the keys' text: predictions, the feature file (read alongside
them for the slice columns, in the same row order) and labels files are streamed in
batches, and only key hashes, outcomes and times are held for the whole partition. The
labelled predictions then go to ``performance`` for the realised metrics and report.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

from mlops import arrivals, card, faults, features, io, observe, outcomes, partitions, provenance
from mlops.config import Params, Settings
from mlops.outcomes import LabelError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

PREDICTION = "prediction"
PREDICTED_LABEL = "predicted_label"
HISTORY = 50


class Labelled(TypedDict):
    """What a partition's label store holds after this run, and how it got there (sidecar).

    ``new``, ``changed``, ``duplicates``, ``unknown_keys`` and the other skips describe
    this run's batch; ``history`` has one entry per batch that changed the store. The
    sidecar is this without ``performance`` (that is ``performance.json``).
    """

    partition: str
    path: str
    labels_from: str
    predictions: int
    labelled: int
    unlabelled: int
    new: int
    changed: int
    unknown_keys: int
    unknown_examples: list[str]
    duplicates: int
    not_known_yet: int
    known_later: int
    other_partitions: int
    dropped: int
    as_of: str
    model_name: str
    model_version: str
    predictions_md5: str
    store_md5: str | None
    history: list[dict[str, Any]]
    performance: dict[str, Any] | None


def run(params: Params, st: Settings, partition: str, as_of: datetime | None = None) -> Labelled:
    """Join the outcomes of ``partition`` known by ``as_of`` (None: now) to its predictions.

    One label of a partition at a time. Refused before anything is written when the
    partition is not scored or the outcomes are not fit to join (``LabelError``).
    """
    store = outcomes.path(st, partition)  # refuses a malformed id
    with io.exclusive(st.state_dir / "locks", "label", [partition]):
        return _run(params, st, partition, store, as_of)


def _run(
    params: Params, st: Settings, partition: str, store: Path, as_of: datetime | None
) -> Labelled:
    t0 = time.perf_counter()
    c, batch = params.contract, params.score.chunk_rows
    pred_path = partitions.file(st.predictions_dir, partition)
    redo = f"mlops score --partitions {partition}"
    if not pred_path.is_file() or not pred_path.with_suffix(".json").is_file():
        raise LabelError(
            f"labels for {partition} cannot be joined: it has not been scored; run `{redo}` first"
        )
    meta = io.read_json(pred_path.with_suffix(".json"), fix=f"Re-run `{redo}`.")
    provenance.require(st, partition, meta.get("input_md5"), "label", pred_path, redo)
    feat_path = features.feature_file(params, st, partition)
    provenance.require_features(st, partition, feat_path, "label")
    side = outcomes.sidecar(st, partition)
    before = io.read_json(side, missing={}, fix=f"Remove it and re-run `mlops label {partition}`.")

    kinds, scored = _scored_keys(pred_path, c.entity_keys, batch)
    n_scored = len(scored)
    _check_unique(scored, pred_path, c.entity_keys, redo, batch)
    got = arrivals.arrived(params, st, partition, as_of)
    arrived, counts = got.read(kinds, scored, batch)
    old = outcomes.stored(st, c, partition, batch)
    dropped = 0
    if old is not None:
        _, still = outcomes.member(scored, old.hash)
        dropped = int((~still).sum())
        old = outcomes.Outcomes(
            old.hash[still], old.target[still], old.known_at[still], old.origin[still]
        )
    try:
        merged, stats = outcomes.merge(old, arrived)
    except outcomes.Conflict as exc:
        raise LabelError(_conflict(exc, partition, got, store, pred_path, batch)) from None

    pred_md5 = io.md5(pred_path)
    rejoined = before.get("predictions_md5", pred_md5) != pred_md5
    same = old is not None and dropped == 0 and _equal(old, merged)
    write = (not same or rejoined) and (len(merged) > 0 or old is not None)
    del arrived, old, scored  # only the merged outcomes are needed from here on
    scored_rows: pd.DataFrame | None = None
    if write or len(merged):
        scored_rows = _join(params, pred_path, feat_path, merged, store if write else None)
    store_md5 = io.md5(store) if store.is_file() else None

    out = Labelled(
        partition=partition,
        path=str(store),
        labels_from=got.where,
        predictions=n_scored,
        labelled=len(merged),
        unlabelled=n_scored - len(merged),
        new=stats.new,
        changed=stats.changed,
        unknown_keys=counts.unknown_keys,
        unknown_examples=counts.unknown_examples,
        duplicates=stats.duplicates,
        not_known_yet=counts.not_known_yet,
        known_later=counts.known_later,
        other_partitions=counts.other_partitions,
        dropped=dropped,
        as_of=got.as_of.isoformat(),
        model_name=str(meta.get("model_name")),
        model_version=str(meta.get("model_version")),
        predictions_md5=pred_md5,
        store_md5=store_md5,
        history=list(before.get("history", [])),
        performance=None,
    )
    changed_since = before.get("store_md5") != store_md5
    if not write and changed_since and store_md5:
        # The store was written by a run killed before its sidecar: that run's batch.
        out["new"] = max(0, len(merged) - int(before.get("labelled", 0)))
    if write or changed_since:
        view: dict[str, Any] = dict(out)
        entry = {k: view[k] for k in ("as_of", "new", "changed", "dropped", "labelled")}
        out["history"] = [*out["history"], {**entry, "predictions_md5": pred_md5}][-HISTORY:]
    if write or changed_since or not side.is_file() or rejoined:
        io.write_json(side, {k: v for k, v in out.items() if k != "performance"})
    print(_line(out, time.perf_counter() - t0))
    observe.rows(n_scored, len(merged), partition)
    observe.gauge("mlops_labelled_rows", len(merged), partition, version=out["model_version"])

    if scored_rows is not None and len(scored_rows):
        from mlops import performance

        keep = ("predictions", "labelled", "unlabelled", "new", "unknown_keys")
        found = {k: v for k, v in out.items() if k in keep}
        version = out["model_version"]
        realised = performance.run(
            params, st, partition, scored_rows, model_version=version, counts=found
        )
        out["performance"] = dict(realised)
    return out


def _line(out: Labelled, secs: float) -> str:
    """The one summary line, as the other stages print it."""
    view: dict[str, Any] = dict(out)
    skipped = [f"+{out['new']:,} new"]
    for key, what in (
        ("changed", "changed"),
        ("unknown_keys", "unknown keys skipped"),
        ("duplicates", "duplicates collapsed"),
        ("not_known_yet", "not known yet"),
        ("known_later", "known after the as-of time"),
        ("other_partitions", "rows of other partitions"),
        ("dropped", "stored outcomes no longer scored"),
    ):
        if view[key]:
            skipped.append(f"{view[key]:,} {what}")
    none = "; no outcomes yet" if not out["labelled"] else ""
    return (
        f"label: {out['partition']} {out['labelled']:,}/{out['predictions']:,} predictions "
        f"labelled ({', '.join(skipped)}){none} -> {out['path']} in {secs:.1f}s"
    )


def _equal(old: outcomes.Outcomes, merged: outcomes.Outcomes) -> bool:
    """Whether the store (any order) holds exactly the merged outcomes (hash order)."""
    if len(old) != len(merged):
        return False
    i, found = outcomes.member(merged.hash, old.hash)
    if not found.all():
        return False
    return bool(
        (merged.target[i] == old.target).all() and (merged.known_at[i] == old.known_at).all()
    )


# --------------------------------------------------------------------------- predictions
def _scored_keys(pred_path: Path, keys: list[str], batch: int) -> tuple[dict[str, str], np.ndarray]:
    """How each key is compared, and the sorted key hashes of the prediction rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(pred_path) as pf:
            names = pf.schema_arrow.names
            missing = [k for k in keys if k not in names]
            if missing:
                raise LabelError(
                    f"{pred_path}: predictions lack the key column(s) {missing}; re-run score"
                )
            kinds = {k: outcomes.key_kind(pf.schema_arrow.field(k).type) for k in keys}
            out, n = np.empty(pf.metadata.num_rows, "uint64"), 0
            for b in pf.iter_batches(batch_size=batch, columns=keys):
                out[n : n + b.num_rows] = outcomes.key_hash(outcomes.arrow_keys(b, keys))
                n += b.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise LabelError(f"{pred_path}: predictions cannot be read ({exc}); re-run score") from exc
    out.sort()
    return kinds, out


def _keys_of(pred_path: Path, keys: list[str], key_hash: int, batch: int) -> list[str]:
    """The keys of the prediction rows whose key hash is ``key_hash``, for messages."""
    import numpy as np
    import pyarrow.parquet as pq

    found = []
    with pq.ParquetFile(pred_path) as pf:
        for b in pf.iter_batches(batch_size=batch, columns=keys):
            hit = np.flatnonzero(outcomes.key_hash(outcomes.arrow_keys(b, keys)) == key_hash)
            found += [outcomes.show(tuple(b.column(k)[int(i)].as_py() for k in keys)) for i in hit]
    return found


def _check_unique(scored: np.ndarray, path: Path, keys: list[str], redo: str, batch: int) -> None:
    """Refuse predictions two of whose rows share a key (or, unheard of, a key hash)."""
    import numpy as np

    dup = np.flatnonzero(scored[1:] == scored[:-1])
    if not len(dup):
        return
    a, b = _keys_of(path, keys, int(scored[dup[0]]), batch)[:2]
    if a == b:
        raise LabelError(
            f"{path}: {len(dup):,} prediction rows share their key with another (e.g. {a}); "
            f"labels are joined one-to-one on {keys}; run `{redo}` again"
        )
    raise LabelError(f"{path}: keys {a} and {b} share a 64-bit key hash; report it")


def _conflict(
    exc: outcomes.Conflict,
    partition: str,
    got: arrivals.Arrived,
    store: Path,
    pred_path: Path,
    batch: int,
) -> str:
    key = _keys_of(pred_path, got.params.contract.entity_keys, exc.key_hash, batch)[0]
    where = sorted(
        {f"the label store {store}" if o < 0 else str(got.files[o]) for o in exc.origins}
    )
    fix = "remove the wrong row"
    if got.known_at is None:
        fix += (
            ", or name the column of when each outcome became known in labels.known_at "
            "(the latest known outcome then wins)"
        )
    elif min(exc.origins) < 0:
        fix += " or give the new outcome a later known_at than the stored one"
    return (
        f"labels for {partition}: key {key} has conflicting outcomes "
        f"{sorted(set(exc.values))} known at the same time, in {' and '.join(where)}; a key has "
        f"one outcome, so nothing was joined; {fix}"
    )


class _Rows:
    """Exactly ``n`` rows at a time of a Parquet file, whatever its own batch sizes."""

    def __init__(self, pf: pq.ParquetFile, columns: list[str], batch: int) -> None:
        self._it = pf.iter_batches(batch_size=batch, columns=columns)
        self._buf: list[pa.RecordBatch] = []
        self._n = 0

    def take(self, n: int) -> pa.Table | None:
        import pyarrow as pa

        while self._n < n:
            b = next(self._it, None)
            if b is None:
                break
            self._buf.append(b)
            self._n += b.num_rows
        if not self._buf:
            return None
        t = pa.Table.from_batches(self._buf)
        rest = t.slice(n)
        self._buf, self._n = rest.to_batches(), rest.num_rows
        return t.slice(0, n)


def _join(
    params: Params,
    pred_path: Path,
    feat_path: Path,
    merged: outcomes.Outcomes,
    out: Path | None,
) -> pd.DataFrame:
    """Stream predictions and features; return the labelled predictions with their slices.

    With ``out``, the store is written there (atomically) in prediction order.
    """
    import pyarrow.parquet as pq

    c = params.contract
    text = [s for s in card.slice_columns(c) if c.feature(s).dtype == "category"]
    with pq.ParquetFile(pred_path) as pf, pq.ParquetFile(feat_path, read_dictionary=text) as ff:
        schema = outcomes.schema(pf.schema_arrow, params.contract)
        if out is None:
            return _pass(params, (pf, ff, feat_path), merged, None, schema)
        with io.atomic_path(out) as tmp:
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                frame = _pass(params, (pf, ff, feat_path), merged, writer, schema)
            faults.point("label.before_store", out.name)
        return frame


class _Codes:
    """A slice column of the labelled rows as category codes, categories found as read."""

    def __init__(self, n: int) -> None:
        import numpy as np

        self.codes, self.index = np.full(n, -1, "int32"), dict[Any, int]()

    def put(self, at: int, col: pa.ChunkedArray) -> None:
        import numpy as np
        import pyarrow as pa

        for chunk in col.chunks:
            enc = chunk if pa.types.is_dictionary(chunk.type) else chunk.dictionary_encode()
            values = enc.dictionary.to_pylist()
            lut = np.array([*(self.index.setdefault(v, len(self.index)) for v in values), -1])
            idx = enc.indices.fill_null(len(values)).to_numpy()
            self.codes[at : at + len(chunk)] = lut[idx]
            at += len(chunk)

    def column(self) -> pd.Categorical:
        import pandas as pd

        return pd.Categorical.from_codes(self.codes, categories=list(self.index))


def _pass(
    params: Params,
    files: tuple[pq.ParquetFile, pq.ParquetFile, Path],
    merged: outcomes.Outcomes,
    writer: pq.ParquetWriter | None,
    schema: pa.Schema,
) -> pd.DataFrame:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    pf, ff, feat_path = files
    c, n_out = params.contract, len(merged)
    keys, batch, slices = c.entity_keys, params.score.chunk_rows, card.slice_columns(c)
    cls = c.task == "classification"
    cols = [*keys, PREDICTION, *([PREDICTED_LABEL] if cls else [])]
    # The labelled rows are as many as the merged outcomes: every one has a scored key.
    got = {c.target: np.empty(n_out, merged.target.dtype), PREDICTION: np.empty(n_out)}
    if cls:
        got[PREDICTED_LABEL] = np.empty(n_out, "int8")
    codes = {s: _Codes(n_out) for s in slices}
    feats = _Rows(ff, [*keys, *slices], batch)
    offset = filled = 0
    for b in pf.iter_batches(batch_size=batch, columns=cols):
        n = b.num_rows
        f = feats.take(n)
        if (
            f is None
            or f.num_rows != n
            or any(
                not pa.chunked_array([b.column(k)]).equals(f.column(k).cast(b.column(k).type))
                for k in keys
            )
        ):
            _out_of_order(feat_path, offset)
        offset += n
        idx, hit = outcomes.member(merged.hash, outcomes.key_hash(outcomes.arrow_keys(b, keys)))
        rows, j = np.flatnonzero(hit), idx[hit]
        at = slice(filled, filled + len(j))
        got[c.target][at] = merged.target[j]
        for name in cols[len(keys) :]:
            got[name][at] = b.column(name).to_numpy()[rows]
        for s in slices:
            codes[s].put(filled, f.column(s).take(pa.array(rows)))
        if writer is not None and len(j):
            kept = [b.column(k).take(pa.array(rows)) for k in keys]
            writer.write_table(outcomes.table(kept, merged.target[j], merged.known_at[j], schema))
        filled += len(j)
    if feats.take(1) is not None:
        _out_of_order(feat_path, offset)
    if filled != n_out:
        raise LabelError(
            f"{len(merged) - filled:,} outcomes matched no prediction row on the second read; "
            "the predictions changed while labelling: re-run label"
        )
    return pd.DataFrame({**got, **{s: codes[s].column() for s in slices}})


def _out_of_order(feat_path: Path, row: int) -> NoReturn:
    raise LabelError(
        f"{feat_path}: the feature file does not hold the predictions' rows in their order "
        f"(from row {row:,}): they were made from another feature file; re-run score on the "
        "partition"
    )
