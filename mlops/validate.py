"""validate: check raw partitions against the data contract with Great Expectations.

The expectation suite is derived from the data contract alone (``build_suite``). ``run``
validates each ``<data_root>/raw/<partition>.parquet`` through a GX Checkpoint in the file
context at ``great_expectations/``. A passing partition is copied to
``<data_root>/validated/``, stamped with the raw version (md5) it was made from, which must
be the one ``ingest`` recorded (``provenance``), and its summary written to
``<data_root>/state/validation/``; a failing or unreadable one is moved to
``<data_root>/quarantine/<partition>/`` beside a ``validation.json`` and
``ValidationFailed`` is raised naming the file, column and rule.

The target is not required: a partition without the target column (rows to score whose
outcome is not known yet) is checked against the suite without it,
``<project>_contract_unlabelled``, and a target column may hold nulls; the summary counts
``labelled_rows`` and ``unlabelled_rows`` of the validated copy.

Many partitions are checked in one GX run over their rows (``_check_many``), each
partition's result derived from the rows GX lists; a partition that fails is then checked
again on its own, so its quarantine report holds GX's own result for it. Data Docs are
built once per call.

Entity keys must be unique within a partition. Within ``validate.max_duplicate_keys``
the partition passes, but every row of a duplicated key is left out of its validated copy
(which of them is right cannot be known) and the summary says how many and which.

Severity: an expectation fails a partition only when it is unsuccessful and its GX severity
is ``critical`` (the default). Values within a rule's ``mostly`` tolerance (unseen
categories, duplicate keys, then dropped) and unsuccessful ``warning``/``info`` expectations
are reported as warnings and let the partition through; nulls within
``max_null_fraction`` are allowed. Validation results are kept: the newest
``KEEP_VALIDATIONS`` and every one a registered version's training data passed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import gx_context, io, observe, partitions, provenance
from mlops.config import Params, Settings
from mlops.gx_context import DOCS_INDEX, KEEP_VALIDATIONS
from mlops.gx_results import UNIQUE, describe_failure, split_batch, summarize
from mlops.suite import PARTITION_COLUMN, START_PARAM, build_suite, for_gx, suite_parameters

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)
EXAMPLES = 5  # duplicated keys named in a summary


class ValidationFailed(Exception):
    """One or more partitions broke the data contract and were quarantined.

    Attributes:
        failures: partition -> summary (as written to its ``validation.json``).
    """

    def __init__(self, message: str, failures: dict[str, dict[str, Any]]) -> None:
        super().__init__(message)
        self.failures = failures


# --------------------------------------------------------------------------- run
def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _quarantine(st: Settings, pid: str, src: Path, report: dict[str, Any]) -> Path:
    """Move the raw partition and its DVC pointer to ``quarantine/<pid>/`` with the report."""
    folder = st.quarantine_dir / pid
    io.write_json(folder / "validation.json", report)
    os.replace(src, folder / src.name)
    pointer = src.with_name(src.name + ".dvc")
    if pointer.is_file():
        os.replace(pointer, folder / pointer.name)
    return folder


def _base(checkpoint: Any, st: Settings, pid: str, path: Path) -> dict[str, Any]:
    return {
        "partition": pid,
        "file": _rel(path, st.root),
        "suite": checkpoint.validation_definitions[0].suite.name,
        "checkpoint": checkpoint.name,
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _read(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """The partition, or why it cannot be read."""
    import pandas as pd

    try:
        return pd.read_parquet(path), None
    except Exception as exc:  # noqa: BLE001 - any reader error means an unreadable file
        # e.g. duplicate column names, which GX would otherwise check one of silently
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        return None, f"cannot be read as Parquet ({type(exc).__name__}: {reason})"


def _docs(summary: dict[str, Any], params: Params, st: Settings, key: Any) -> None:
    if params.validate_cfg.build_data_docs:
        site = st.gx_root / DOCS_INDEX.parent
        summary["data_docs"] = str(st.gx_root / DOCS_INDEX)
        summary["data_docs_page"] = str(
            site.joinpath("validations", *key.to_tuple()).with_suffix(".html")
        )


def _prune(params: Params, st: Settings) -> None:  # the newest, and those versions need
    needed = lambda: gx_context.needed_validations(st, params.model_name)  # noqa: E731
    gx_context.prune_validations(st.gx_root, KEEP_VALIDATIONS - 1, needed)


def _check(
    checkpoint: Any, params: Params, st: Settings, pid: str, path: Path
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Validate one raw partition; return our summary and GX's full result (if it ran)."""
    t0 = time.perf_counter()
    summary = _base(checkpoint, st, pid, path)
    df, error = _read(path)
    if df is None:
        summary.update(success=False, error=error)
        summary["duration_s"] = round(time.perf_counter() - t0, 3)
        return summary, None

    from great_expectations.validator.v1_validator import Validator

    _prune(params, st)
    vd = checkpoint.validation_definitions[0]
    validator = Validator(
        batch_definition=vd.batch_definition,
        batch_parameters={"dataframe": for_gx(df, params.contract)},
        result_format="BASIC",
    )
    vr = validator.validate_expectation_suite(
        vd.suite, suite_parameters(pid, len(df), params.validate_cfg)
    )
    key = gx_context.store_result(checkpoint, vr, validator, pid)
    summary["rows"] = len(df)
    summary.update(summarize(vr, list(df.columns), [e.id for e in vd.suite.expectations]))
    _docs(summary, params, st, key)
    summary["duration_s"] = round(time.perf_counter() - t0, 3)
    return summary, vr.to_json_dict()


def _schema(table: pa.Table) -> str:
    """Arrow types and pandas dtypes of a file (not its row count, also in the metadata)."""
    pandas = (table.schema.pandas_metadata or {}).get("columns")
    return table.schema.remove_metadata().to_string() + json.dumps(pandas, sort_keys=True)


def _check_many(
    checkpoint: Any,
    params: Params,
    st: Settings,
    group: dict[str, pa.Table],
    paths: dict[str, Path],
) -> dict[str, dict[str, Any]] | None:
    """Validate partitions of one schema in one GX run; each partition's summary.

    Returns None when GX's results cannot be split by partition (an expectation raised).
    """
    import numpy as np
    import pandas as pd
    from great_expectations.validator.v1_validator import Validator

    t0 = time.perf_counter()
    c, cfg = params.contract, params.validate_cfg
    pids = list(group)
    vd = checkpoint.validation_definitions[0]
    suite = vd.suite
    labelled = c.target in next(iter(group.values())).column_names
    batch_suite = build_suite(
        c, cfg, name=suite.name, batch_column=PARTITION_COLUMN, labelled=labelled
    )
    for e, be in zip(suite.expectations, batch_suite.expectations, strict=True):
        be.id = e.id
    import pyarrow as pa

    sizes = [t.num_rows for t in group.values()]
    # One conversion for all: what pd.read_parquet gives per file, one file after another.
    frame = for_gx(pa.concat_tables(group.values()).to_pandas().reset_index(drop=True), c)
    codes = np.repeat(np.arange(len(pids)), sizes)
    frame[PARTITION_COLUMN] = np.asarray(pids, dtype=object)[codes]
    values = [suite_parameters(pid, n, cfg) for pid, n in zip(pids, sizes, strict=True)]
    bounds = [partitions.interval(pid) for pid in pids]
    span = {
        "partition_start": min(b[0] for b in bounds),
        "partition_end": max(b[1] for b in bounds),
    }
    if cfg.max_duplicate_keys:
        span["key_unique_mostly"] = 0.0
    # Each row against its own partition's interval (GX sees the span of all of them).
    ts = frame[c.timestamp]
    starts = np.array([b[0].value for b in bounds], dtype=np.int64)[codes]
    ends = np.array([b[1].value for b in bounds], dtype=np.int64)[codes]
    ns = ts.array.asi8 if isinstance(ts.dtype, pd.DatetimeTZDtype) else None
    if ns is None:
        return None
    outside = ts.notna().to_numpy() & ((ns < starts) | (ns >= ends))
    ts_rule = next(
        e.id
        for e in suite.expectations
        if getattr(e, "min_value", None) == {"$PARAMETER": START_PARAM}
    )
    _prune(params, st)
    validator = Validator(
        batch_definition=vd.batch_definition,
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE"},
    )
    vr = validator.validate_expectation_suite(batch_suite, span)
    split = split_batch(
        vr, suite, batch_suite, frame, codes, values, {ts_rule: outside}, PARTITION_COLUMN
    )
    if split is None:
        return None
    key = gx_context.store_result(
        checkpoint, vr, validator, f"{len(pids)}_partitions_{pids[0]}_to_{pids[-1]}"
    )
    each = round((time.perf_counter() - t0) / len(pids), 3)
    order = [e.id for e in suite.expectations]
    out = {}
    for pid, n, part in zip(pids, sizes, split, strict=True):
        summary = _base(checkpoint, st, pid, paths[pid])
        summary["rows"] = n
        summary.update(summarize(part, group[pid].column_names, order))
        _docs(summary, params, st, key)
        summary["duration_s"] = each
        out[pid] = summary
    return out


def _validate_all(
    checkpoint: Any, params: Params, st: Settings, paths: dict[str, Path]
) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
    """Every partition's summary (and GX's own result where it failed), in order.

    Partitions sharing a schema are checked in one GX run; one failing there is checked
    again alone, so what is quarantined with it is GX's own result for it. ``paths`` all
    have the target column or all lack it, as ``checkpoint``'s suite expects.
    """
    import pyarrow.parquet as pq

    out: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {}
    groups: dict[str, dict[str, pa.Table]] = {}
    target = params.contract.target
    cols = set(params.contract.columns)
    for pid, path in paths.items():
        try:
            table = pq.read_table(path)
        except Exception:  # noqa: BLE001 - checked alone, which names the reader's error
            continue
        names = table.column_names
        if (
            not params.validate_cfg.extra_expectations  # may be table-level: one by one
            and len(set(names)) == len(names)
            and set(names) == (cols if target in names else cols - {target})
            and PARTITION_COLUMN not in cols
        ):
            groups.setdefault(_schema(table), {})[pid] = table
    for group in groups.values():
        if len(group) > 1:
            for pid, summary in (_check_many(checkpoint, params, st, group, paths) or {}).items():
                if summary["success"]:
                    out[pid] = (summary, None)
    return {
        pid: out[pid] if pid in out else _check(checkpoint, params, st, pid, path)
        for pid, path in paths.items()
    }


def _drop_duplicates(params: Params, summary: dict[str, Any], df: pd.DataFrame) -> Any:
    """The rows to keep: none of a duplicated key; say so in the summary.

    Which of the rows sharing a key is right cannot be known, so none of them is kept.
    """
    keys = params.contract.entity_keys
    dup = df.duplicated(keys, keep=False).to_numpy()
    shared = df.loc[dup, keys].drop_duplicates()
    examples = [
        str(r[0])
        if len(keys) == 1
        else "(" + ", ".join(f"{k}={v}" for k, v in zip(keys, r, strict=True)) + ")"
        for r in shared.head(EXAMPLES).itertuples(index=False)
    ]
    summary["dropped_duplicates"] = {
        "columns": keys,
        "rows": int(dup.sum()),
        "keys": len(shared),
        "examples": examples,
    }
    summary["rows_validated"] = int(len(df) - dup.sum())
    return ~dup


def _publish(params: Params, st: Settings, pid: str, src: Path, summary: dict[str, Any]) -> None:
    """Write the validated copy, stamped with the raw version it was made from."""
    import pandas as pd
    import pyarrow.parquet as pq

    dst = partitions.file(st.validated_dir, pid)
    table = pq.read_table(src)
    unique = next((x for x in summary["expectations"] if x["expectation"] in UNIQUE), None)
    if unique is not None and unique["unexpected_count"]:
        table = table.filter(_drop_duplicates(params, summary, pd.read_parquet(src)))
    summary["labelled_rows"] = _labelled(table, params.contract.target)
    summary["unlabelled_rows"] = table.num_rows - summary["labelled_rows"]
    with io.atomic_path(dst) as tmp:
        pq.write_table(provenance.stamp(table, summary["md5"]), tmp, compression="zstd")
    summary["validated_md5"] = io.md5(dst)
    io.write_json(st.state_dir / "validation" / f"{pid}.json", summary)
    stats = summary["statistics"]
    warned = f" ({stats['warned']} warned)" if stats["warned"] else ""
    unknown = summary["unlabelled_rows"]
    print(
        f"validate: {pid} passed {stats['evaluated']} expectations{warned} on "
        f"{summary['rows']:,} rows{f' ({unknown:,} without a target)' if unknown else ''} "
        f"in {summary['duration_s']:.1f}s"
    )
    dropped = summary.get("dropped_duplicates")
    if dropped:
        print(
            f"validate: {pid}: dropped {dropped['rows']:,} row(s) sharing "
            f"{dropped['keys']:,} {'+'.join(dropped['columns'])} key(s) (e.g. "
            f"{', '.join(dropped['examples'])}) from {_rel(dst, st.root)}: which of them is "
            f"right cannot be known (validate.max_duplicate_keys="
            f"{params.validate_cfg.max_duplicate_keys} lets the partition pass)"
        )
    for w in summary["warnings"]:
        log.warning("%s: column %r: %s: %s", summary["file"], w["column"], w["rule"], w["observed"])


def _labelled(table: pa.Table, target: str) -> int:
    """Rows whose target is known (not null, not NaN); none without the target column."""
    import pyarrow.compute as pc

    if target not in table.column_names:
        return 0
    missing = pc.is_null(table.column(target), nan_is_null=True)
    return table.num_rows - int(pc.sum(missing.cast("int64")).as_py() or 0)


def _by_target(params: Params, paths: dict[str, Path]) -> dict[bool, dict[str, Path]]:
    """The partitions with the target column (True) and those without it (False)."""
    import pyarrow.parquet as pq

    out: dict[bool, dict[str, Path]] = {}
    for pid, path in paths.items():
        try:
            labelled = params.contract.target in pq.read_schema(path).names
        except Exception:  # noqa: BLE001 - the full suite's check then names the reader's error
            labelled = True
        out.setdefault(labelled, {})[pid] = path
    return out


def _raw_versions(st: Settings, paths: dict[str, Path]) -> dict[str, str]:
    """Each raw file's md5; refused unless it is the version ``ingest`` recorded.

    A raw file changed since (written by hand, copied in) would be validated, and its
    outputs traced, as a version the manifest does not know.
    """
    entries = provenance.manifest(st)
    out = {}
    for pid, path in paths.items():
        out[pid] = io.md5(path)
        now = provenance.current(st, pid, entries)
        if now is not None and now != out[pid]:
            raise provenance.Stale(
                f"{path}: raw partition {pid} is not the version ingest recorded (md5 "
                f"{out[pid]}, {provenance.manifest_path(st)} says {now}); it was changed "
                f"after ingest: re-run `mlops ingest --partitions {pid}` to version it, "
                "then validate"
            )
    return out


def run(params: Params, st: Settings, pids: list[str]) -> dict[str, dict[str, Any]]:
    """Validate raw partitions; copy passing ones to validated/, quarantine the rest.

    The GX context and checkpoint are set up once per call, and Data Docs built once.
    Every partition is checked even when an earlier one fails, so one bad month does not
    hold back the others.

    Returns:
        partition -> summary (also written to ``state/validation/<partition>.json``).

    Raises:
        FileNotFoundError: A raw partition is missing (nothing is validated then).
        provenance.Stale: A raw file is not the version ingest recorded (nor is any).
        ValidationFailed: Some partitions failed or could not be read; each was moved to
            ``quarantine/<partition>/``. Passing partitions were still written.
    """
    t_run = time.perf_counter()
    paths = {pid: partitions.file(st.raw_dir, pid) for pid in pids}
    for pid, path in paths.items():
        partitions.check(pid)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: raw partition {pid!r} not found; run `mlops ingest` for it first"
            )
    md5s = _raw_versions(st, paths)

    passed: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    messages: list[str] = []
    with io.exclusive(st.state_dir / "locks", "validate", pids), gx_context.locked(st.gx_root):
        ctx = gx_context.get_context(st.gx_root)
        results = {}
        for labelled, group in _by_target(params, paths).items():
            checkpoint = gx_context.ensure_checkpoint(ctx, params, labelled)
            results.update(_validate_all(checkpoint, params, st, group))
        if params.validate_cfg.build_data_docs:
            ctx.build_data_docs()
        for pid, path in paths.items():
            summary, gx_result = results[pid]
            summary.setdefault("md5", md5s[pid])
            failed_n = (summary.get("statistics") or {}).get("failed", 1)
            observe.gauge("mlops_validation_failed_expectations", failed_n, partition=pid)
            observe.gauge("mlops_validation_quarantined", observe.flag(not summary["success"]), pid)
            observe.rows(summary.get("rows"), summary.get("rows") if summary["success"] else 0, pid)
            if summary["success"]:
                _publish(params, st, pid, path, summary)
                passed[pid] = summary
            else:
                message = describe_failure(summary["file"], summary)
                report = {**summary, "message": message, "gx_result": gx_result}
                folder = _quarantine(st, pid, path, report)
                failed[pid] = summary
                messages.append(message)
                print(f"validate: {pid} FAILED, moved to {_rel(folder, st.root)}/")
    log.info("validate: %d partition(s) in %.1fs", len(paths), time.perf_counter() - t_run)
    if failed:
        where = _rel(st.quarantine_dir, st.root)
        raise ValidationFailed(
            "\n".join(messages)
            + f"\n{len(failed)} partition(s) moved to {where}/<partition>/ with validation.json; "
            "fix the source or the contract in params.yaml, then re-run ingest and validate.",
            failed,
        )
    return passed
