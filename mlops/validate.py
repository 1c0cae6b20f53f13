"""validate: check raw partitions against the data contract with Great Expectations.

The expectation suite is derived from the data contract alone (``build_suite``). ``run``
validates each ``<data_root>/raw/<partition>.parquet`` through a GX Checkpoint in the file
context at ``great_expectations/``. A passing partition is copied to
``<data_root>/validated/`` and its summary written to ``<data_root>/state/validation/``; a
failing or unreadable one is moved to ``<data_root>/quarantine/<partition>/`` beside a
``validation.json`` and ``ValidationFailed`` is raised naming the file, column and rule.

Severity: an expectation fails a partition only when it is unsuccessful and its GX severity
is ``critical`` (the default). Values that break a rule but stay within its ``mostly``
tolerance (unseen categories within ``unseen_category_tolerance``, duplicate keys within
``validate.max_duplicate_keys``) and unsuccessful ``warning``/``info`` expectations (e.g. an
extra expectation with ``severity: warning`` in its kwargs) are reported as warnings and let
the partition through. Nulls within ``max_null_fraction`` are simply allowed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops import gx_context, io, partitions
from mlops.config import Params, Settings
from mlops.gx_context import DOCS_INDEX, KEEP_VALIDATIONS
from mlops.gx_results import describe_failure, summarize
from mlops.suite import for_gx, suite_parameters

log = logging.getLogger(__name__)


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


def _copy_atomic(src: Path, dst: Path) -> Path:
    with io.atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def _quarantine(st: Settings, pid: str, src: Path, report: dict[str, Any]) -> Path:
    """Move the raw partition and its DVC pointer to ``quarantine/<pid>/`` with the report."""
    folder = st.quarantine_dir / pid
    io.write_json(folder / "validation.json", report)
    os.replace(src, folder / src.name)
    pointer = src.with_name(src.name + ".dvc")
    if pointer.is_file():
        os.replace(pointer, folder / pointer.name)
    return folder


def _check(
    checkpoint: Any, params: Params, st: Settings, pid: str, path: Path
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Validate one raw partition; return our summary and GX's full result (if it ran)."""
    import pandas as pd
    from great_expectations.core.run_identifier import RunIdentifier

    t0 = time.perf_counter()
    summary: dict[str, Any] = {
        "partition": pid,
        "file": _rel(path, st.root),
        "suite": checkpoint.validation_definitions[0].suite.name,
        "checkpoint": checkpoint.name,
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader error means an unreadable file
        # e.g. duplicate column names, which GX would otherwise check one of silently
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        summary.update(
            success=False, error=f"cannot be read as Parquet ({type(exc).__name__}: {reason})"
        )
        summary["duration_s"] = round(time.perf_counter() - t0, 3)
        return summary, None

    gx_context.prune_validations(st.gx_root, KEEP_VALIDATIONS - 1)
    result = checkpoint.run(
        batch_parameters={"dataframe": for_gx(df, params.contract)},
        expectation_parameters=suite_parameters(pid, len(df), params.validate_cfg),
        run_id=RunIdentifier(run_name=pid, run_time=datetime.now(UTC)),
    )
    ((key, vr),) = result.run_results.items()
    summary["rows"] = len(df)
    suite = checkpoint.validation_definitions[0].suite
    summary.update(summarize(vr, list(df.columns), [e.id for e in suite.expectations]))
    if params.validate_cfg.build_data_docs:
        site = st.gx_root / DOCS_INDEX.parent
        summary["data_docs"] = str(st.gx_root / DOCS_INDEX)
        summary["data_docs_page"] = str(
            site.joinpath("validations", *key.to_tuple()).with_suffix(".html")
        )
    summary["duration_s"] = round(time.perf_counter() - t0, 3)
    return summary, vr.to_json_dict()


def run(params: Params, st: Settings, pids: list[str]) -> dict[str, dict[str, Any]]:
    """Validate raw partitions; copy passing ones to validated/, quarantine the rest.

    The GX context and checkpoint are set up once per call. Every partition is checked
    even when an earlier one fails, so one bad month does not hold back the others.

    Returns:
        partition -> summary (also written to ``state/validation/<partition>.json``).

    Raises:
        FileNotFoundError: A raw partition is missing (nothing is validated then).
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

    passed: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    messages: list[str] = []
    with io.exclusive(st.state_dir / "locks", "validate", pids), gx_context.locked(st.gx_root):
        ctx = gx_context.get_context(st.gx_root)
        checkpoint = gx_context.ensure_checkpoint(ctx, params)
        for pid, path in paths.items():
            summary, gx_result = _check(checkpoint, params, st, pid, path)
            if summary["success"]:
                _copy_atomic(path, partitions.file(st.validated_dir, pid))
                io.write_json(st.state_dir / "validation" / f"{pid}.json", summary)
                passed[pid] = summary
                stats = summary["statistics"]
                warned = f" ({stats['warned']} warned)" if stats["warned"] else ""
                print(
                    f"validate: {pid} passed {stats['evaluated']} expectations{warned} on "
                    f"{summary['rows']:,} rows in {summary['duration_s']:.1f}s"
                )
                for w in summary["warnings"]:
                    log.warning(
                        "%s: column %r: %s: %s",
                        summary["file"],
                        w["column"],
                        w["rule"],
                        w["observed"],
                    )
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
