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

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import io
from mlops.config import Contract, Params, Settings, Validate

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

log = logging.getLogger(__name__)

START_PARAM = "partition_start"
END_PARAM = "partition_end"
KEY_MOSTLY_PARAM = "key_unique_mostly"
KEEP_VALIDATIONS = 10
DOCS_INDEX = Path("uncommitted/data_docs/local_site/index.html")

_INTS = [
    *(f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)),
    *(f"{s}Int{b}Dtype" for s in ("", "U") for b in (8, 16, 32, 64)),
]
_FLOATS = ["float16", "float32", "float64", "Float32Dtype", "Float64Dtype"]
_BOOLS = ["bool", "BooleanDtype"]
# Object columns are checked value by value against ``str``; StringDtype columns by dtype.
_STRINGS = ["str", "StringDtype"]
# GX's type-list check cannot match a tz-aware dtype on pandas; ExpectColumnTypeToBe can.
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"


class ValidationFailed(Exception):
    """One or more partitions broke the data contract and were quarantined.

    Attributes:
        failures: partition -> summary (as written to its ``validation.json``).
    """

    def __init__(self, message: str, failures: dict[str, dict[str, Any]]) -> None:
        super().__init__(message)
        self.failures = failures


# --------------------------------------------------------------------------- pure core
def _feature_types(dtype: str, nulls_allowed: bool) -> list[str]:
    if dtype == "float":
        return [*_FLOATS, *_INTS]
    if dtype == "int":
        # pandas stores an int column holding NaN as float64
        return [*_INTS, *_FLOATS] if nulls_allowed else list(_INTS)
    if dtype == "bool":
        return list(_BOOLS)
    return list(_STRINGS)


def build_suite(
    contract: Contract,
    cfg: Validate,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    name: str = "contract",
) -> gx.ExpectationSuite:
    """Derive the expectation suite from the data contract alone.

    Args:
        contract: The data contract.
        cfg: ``validate`` settings (duplicate-key allowance, extra expectations).
        interval: The partition's ``[start, end)``. Without it the timestamp bounds are the
            suite parameters ``partition_start``/``partition_end``, so one stored suite
            serves every partition (``suite_parameters`` gives their values, and that of
            ``key_unique_mostly``, used whenever ``cfg.max_duplicate_keys`` > 0).
        name: The suite name.

    Returns:
        An ExpectationSuite not yet attached to any Data Context.

    Raises:
        ValueError: An extra expectation is unknown or its kwargs are invalid.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    ts, target = contract.timestamp, contract.target
    exps: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=contract.columns, exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=contract.min_rows, max_value=contract.max_rows
        ),
    ]
    for key in contract.entity_keys:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=key))
    dup: dict[str, Any] = (
        {"mostly": {"$PARAMETER": KEY_MOSTLY_PARAM}} if cfg.max_duplicate_keys else {}
    )
    if len(contract.entity_keys) == 1:
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=contract.entity_keys[0], **dup))
    else:
        exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=contract.entity_keys, **dup))

    start: Any = {"$PARAMETER": START_PARAM}
    end: Any = {"$PARAMETER": END_PARAM}
    if interval is not None:
        start, end = interval
    exps += [
        gxe.ExpectColumnValuesToNotBeNull(column=ts),
        gxe.ExpectColumnTypeToBe(column=ts, type_=TIMESTAMP_DTYPE),
        gxe.ExpectColumnValuesToBeBetween(
            column=ts, min_value=start, max_value=end, strict_max=True
        ),
    ]

    for f in contract.features:
        exps.append(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=f.name, type_list=_feature_types(f.dtype, f.max_null_fraction > 0)
            )
        )
        if f.max_null_fraction < 1:
            exps.append(
                gxe.ExpectColumnValuesToNotBeNull(column=f.name, mostly=1.0 - f.max_null_fraction)
            )
        if f.min is not None or f.max is not None:
            exps.append(
                gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min, max_value=f.max)
            )
        if f.categories:
            exps.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=f.name,
                    value_set=list(f.categories),
                    mostly=1.0 - f.unseen_category_tolerance,
                )
            )

    exps.append(gxe.ExpectColumnValuesToNotBeNull(column=target))
    if contract.task == "classification":
        exps += [
            gxe.ExpectColumnValuesToBeInTypeList(column=target, type_list=[*_BOOLS, *_INTS]),
            gxe.ExpectColumnValuesToBeInSet(column=target, value_set=[0, 1, True, False]),
        ]
    else:
        exps.append(
            gxe.ExpectColumnValuesToBeInTypeList(column=target, type_list=[*_FLOATS, *_INTS])
        )
        if contract.target_min is not None or contract.target_max is not None:
            exps.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=target, min_value=contract.target_min, max_value=contract.target_max
                )
            )

    exps += [_extra(i, spec) for i, spec in enumerate(cfg.extra_expectations)]
    return gx.ExpectationSuite(name=name, expectations=exps)


def _extra(i: int, spec: dict[str, Any]) -> Any:
    """Turn ``{"type": "expect_...", "kwargs": {...}}`` into a GX expectation.

    The kwargs are the expectation's own fields, so ``severity``/``mostly`` go there too.
    """
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.registry import get_expectation_impl

    where = f"validate.extra_expectations[{i}]"
    unknown = set(spec) - {"type", "kwargs"}
    if unknown or not isinstance(spec.get("type"), str):
        raise ValueError(
            f"{where}: expected {{'type': 'expect_...', 'kwargs': {{...}}}}, "
            f"got keys {sorted(spec)}"
        )
    try:
        cls = get_expectation_impl(spec["type"])
    except ExpectationNotFoundError:
        raise ValueError(
            f"{where}: unknown expectation type {spec['type']!r} (use a GX name such as "
            f"'expect_column_values_to_be_between')"
        ) from None
    try:
        return cls(**(spec.get("kwargs") or {}))
    except Exception as exc:  # pydantic errors name the bad kwarg
        raise ValueError(f"{where} ({spec['type']}): invalid kwargs: {exc}") from None


def suite_parameters(pid: str, rows: int, cfg: Validate) -> dict[str, Any]:
    """The per-partition values of the suite parameters ``build_suite`` leaves open.

    ``max_duplicate_keys`` counts rows whose key also appears on another row (as GX does:
    one key on two rows is 2), turned into a ``mostly`` for this partition's row count.
    """
    start, end = io.partition_interval(pid)
    out: dict[str, Any] = {START_PARAM: start, END_PARAM: end}
    if cfg.max_duplicate_keys:
        # +0.5 keeps float rounding on the right side of the bound
        out[KEY_MOSTLY_PARAM] = max(0.0, 1.0 - (cfg.max_duplicate_keys + 0.5) / max(rows, 1))
    return out


def for_gx(df: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Undo storage-only differences GX's exact dtype checks would reject.

    A tz-aware timestamp in another unit (``us`` from Arrow writers) is viewed as ``ns``, and
    a pandas ``category`` column as its plain values, which GX then checks one by one. Only
    the frame handed to GX changes; the validated file is the raw file, byte for byte.
    """
    import pandas as pd

    changes: dict[str, Any] = {}
    ts = df.get(contract.timestamp)
    if isinstance(ts, pd.Series) and isinstance(ts.dtype, pd.DatetimeTZDtype):
        if ts.dtype.unit != "ns":
            changes[contract.timestamp] = ts.dt.as_unit("ns")
    for col in df.columns:
        if isinstance(df[col], pd.Series) and isinstance(df[col].dtype, pd.CategoricalDtype):
            changes[col] = df[col].astype(object)
    return df.assign(**changes) if changes else df


# --------------------------------------------------------------------------- results
_SKIP_KWARGS = {"column", "column_list", "result_format", "catch_exceptions", "batch_id"}


def _short(v: Any, n: int = 6) -> str:
    if isinstance(v, dict) and "$PARAMETER" in v:
        return f"${v['$PARAMETER']}"
    if isinstance(v, list | tuple) and len(v) > n:
        return "[" + ", ".join(map(str, v[:n])) + f", ... {len(v)} values]"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


def _rule(etype: str, kw: dict[str, Any]) -> str:
    """``expect_x [min, max]``-style text for people."""
    if "min_value" in kw or "max_value" in kw:
        lo, hi = kw.get("min_value"), kw.get("max_value")
        right = ")" if kw.get("strict_max") else "]"
        args = f"[{_short(lo)}, {_short(hi)}{right}"
    elif "value_set" in kw:
        args = _short(kw["value_set"])
    elif "type_list" in kw:
        args = _short(kw["type_list"], 3)
    elif "type_" in kw:
        args = str(kw["type_"])
    elif "column_set" in kw:
        args = f"{len(kw['column_set'])} contract columns"
    else:
        args = ", ".join(
            f"{k}={_short(v)}" for k, v in kw.items() if k not in _SKIP_KWARGS and k != "mostly"
        )
    mostly = kw.get("mostly")
    if mostly is not None and mostly != 1:
        args += f" mostly={_short(mostly) if isinstance(mostly, dict) else f'{mostly:.4g}'}"
    return f"{etype} {args.strip()}".strip()


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for v in info.values():  # keyed by metric id when a metric raised
        if isinstance(v, dict) and v.get("raised_exception"):
            return str(v.get("exception_message"))
    return None


def _observed(
    etype: str, res: dict[str, Any], column: str | None, columns: set[str], exc: str | None
) -> str:
    if exc is not None:
        if column is not None and column not in columns:
            return "column missing"
        return f"could not evaluate: {exc.strip().splitlines()[-1][:200]}"
    if "details" in res and isinstance(res["details"], dict) and "mismatched" in res["details"]:
        mm = res["details"]["mismatched"]
        return "; ".join(f"{k} {sorted(map(str, v))}" for k, v in mm.items()) or "mismatch"
    if "observed_value" in res:
        return f"observed {_short(res['observed_value'])}"
    if res.get("unexpected_count") is not None:
        n, pct = res["unexpected_count"], res.get("unexpected_percent") or 0.0
        if etype == "expect_column_values_to_not_be_null":
            return f"{n:,} nulls ({pct:.2f}%)"
        sample = list(dict.fromkeys(map(str, res.get("partial_unexpected_list") or [])))[:5]
        eg = f", e.g. {', '.join(sample)}" if sample and n else ""
        return f"{n:,} unexpected values ({pct:.2f}%){eg}"
    return ""


def summarize(vr: Any, columns: list[str], order: list[str] | None = None) -> dict[str, Any]:
    """Turn a GX suite validation result into a per-expectation summary.

    ``columns`` are the batch's columns (to tell a missing column from an error); ``order``
    lists expectation ids in suite order, so results read like the contract (GX groups them).

    Each expectation gets a status: ``passed``, ``warned`` (successful within its
    ``mostly`` tolerance, or unsuccessful with severity warning/info) or ``failed``
    (unsuccessful and critical). The partition succeeds when nothing failed.
    """
    present = {str(c) for c in columns}
    rank = {eid: i for i, eid in enumerate(order or [])}
    rows = []
    for r in sorted(vr.results, key=lambda r: rank.get(r.expectation_config.id, len(rank))):
        cfg = r.expectation_config
        kw = dict(cfg.kwargs)
        column = kw.get("column")
        if column is None and kw.get("column_list"):
            column = ",".join(kw["column_list"])
        res = r.result or {}
        exc = _exception_message(r.exception_info)
        severity = str(getattr(cfg.severity, "value", cfg.severity) or "critical")
        unexpected = res.get("unexpected_count")
        if not r.success:
            status = "failed" if severity == "critical" else "warned"
        elif unexpected and cfg.type != "expect_column_values_to_not_be_null":
            # nulls within max_null_fraction are part of the contract, not news
            status = "warned"
        else:
            status = "passed"
        rows.append(
            {
                "expectation": cfg.type,
                "column": column,
                "rule": _rule(cfg.type, kw),
                "severity": severity,
                "success": bool(r.success),
                "status": status,
                "observed": _observed(cfg.type, res, kw.get("column"), present, exc),
                "unexpected_count": unexpected,
                "unexpected_percent": res.get("unexpected_percent"),
            }
        )
    failed = [x for x in rows if x["status"] == "failed"]
    return {
        "success": not failed,
        "statistics": {
            "evaluated": len(rows),
            "passed": sum(x["status"] == "passed" for x in rows),
            "warned": sum(x["status"] == "warned" for x in rows),
            "failed": len(failed),
        },
        "failed": failed,
        "warnings": [x for x in rows if x["status"] == "warned"],
        "expectations": rows,
    }


def describe_failure(path: str, summary: dict[str, Any]) -> str:
    """One line naming the file and, per failed expectation, column, rule and observation."""
    if summary.get("error"):
        return f"{path} failed validation: {summary['error']}"
    parts, missing = [], []
    for x in summary["failed"]:
        if x["observed"] == "column missing":
            missing.append(x["column"])
            continue
        where = f"column {x['column']!r}" if x["column"] else "table"
        parts.append(f"{where}: {x['rule']}: {x['observed']}")
    for col in dict.fromkeys(missing):
        parts.append(f"column {col!r}: missing, its expectations could not run")
    return f"{path} failed validation: " + "; ".join(parts)


# --------------------------------------------------------------------------- GX context
def _names(project: str) -> dict[str, str]:
    return {
        "datasource": f"{project}_pandas",
        "asset": "raw_partition",
        "batch": "whole_partition",
        "suite": f"{project}_contract",
        "validation": f"{project}_raw_partition",
        "checkpoint": f"{project}_validate",
    }


def get_context(gx_root: Path) -> Any:
    """Open the GX file context rooted at ``gx_root``, creating it on first use.

    Analytics and progress bars are switched off and saved in ``great_expectations.yml``
    (only written when they change).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="file", context_root_dir=str(gx_root))
    changed = False
    bars = ctx.variables.progress_bars  # a dict once read back from the yml
    globally = bars.get("globally") if isinstance(bars, dict) else getattr(bars, "globally", None)
    if globally is not False:
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        changed = True
    if ctx.config.analytics_enabled is not False:
        ctx.config.analytics_enabled = False
        changed = True
    if changed:
        ctx.variables.save()
    return ctx


def _keep_ids(ctx: Any, suite: Any) -> Any:
    """Give unchanged expectations their stored ids, so a re-run rewrites the suite identically.

    GX's own ``add_or_update`` compares expectations including their id, so a freshly built
    suite would get new ids on every run and the committed suite file would churn.
    """
    from great_expectations.exceptions import DataContextError

    try:
        stored = ctx.suites.get(suite.name)
    except DataContextError:
        return suite

    def key(e: Any) -> tuple[str, dict[str, Any]]:
        d = e.dict(exclude={"id", "rendered_content"})
        d["meta"], d["notes"] = d.get("meta") or None, d.get("notes") or None  # {} == None
        return e.expectation_type, d  # compared with ==, so a stored 1 matches a built 1.0

    pool = [(key(e), e.id) for e in stored.expectations]
    for e in suite.expectations:
        k = key(e)
        match = next((i for i, (sk, _) in enumerate(pool) if sk == k), None)
        e.id = pool.pop(match)[1] if match is not None else None
    return suite


def ensure_checkpoint(ctx: Any, params: Params) -> Any:
    """Create or update the suite, validation definition and checkpoint under stable names.

    Names derive from ``params.project`` (``<project>_contract``, ``<project>_validate``...),
    so re-running updates the same definitions instead of adding new ones.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    n = _names(params.project)
    try:
        ds = ctx.data_sources.get(n["datasource"])
    except KeyError:
        ds = ctx.data_sources.add_pandas(n["datasource"])
    try:
        asset = ds.get_asset(n["asset"])
    except LookupError:
        asset = ds.add_dataframe_asset(n["asset"])
    try:
        batch = asset.get_batch_definition(n["batch"])
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe(n["batch"])

    suite = _keep_ids(ctx, build_suite(params.contract, params.validate_cfg, name=n["suite"]))
    suite = ctx.suites.add_or_update(suite)
    vd = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=n["validation"], data=batch, suite=suite)
    )
    actions: list[Any] = (
        [UpdateDataDocsAction(name="update_data_docs")]
        if params.validate_cfg.build_data_docs
        else []
    )
    return ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=n["checkpoint"],
            validation_definitions=[vd],
            actions=actions,
            result_format="BASIC",
        )
    )


def prune_validations(gx_root: Path, keep: int = KEEP_VALIDATIONS) -> int:
    """Delete all but the newest ``keep`` stored validation results and their docs pages."""
    root = gx_root / "uncommitted" / "validations"
    if not root.is_dir():
        return 0
    files = sorted(root.rglob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    site = gx_root / "uncommitted" / "data_docs" / "local_site" / "validations"
    for old in files[keep:]:
        old.unlink(missing_ok=True)
        (site / old.relative_to(root)).with_suffix(".html").unlink(missing_ok=True)
    for base in (root, site):
        if base.is_dir():
            for d in sorted((p for p in base.rglob("*") if p.is_dir()), reverse=True):
                if not any(d.iterdir()):
                    d.rmdir()
    return max(0, len(files) - keep)


@contextmanager
def _locked(gx_root: Path) -> Iterator[None]:
    """Serialise GX work across processes: GX rewrites its config and docs non-atomically."""
    lock = gx_root / "uncommitted" / ".validate.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
    except Exception as exc:
        # e.g. duplicate column names, which GX would otherwise check one of silently
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        summary.update(
            success=False, error=f"cannot be read as Parquet ({type(exc).__name__}: {reason})"
        )
        summary["duration_s"] = round(time.perf_counter() - t0, 3)
        return summary, None

    prune_validations(st.gx_root, KEEP_VALIDATIONS - 1)
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


def run(params: Params, st: Settings, partitions: list[str]) -> dict[str, dict[str, Any]]:
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
    paths = {pid: io.partition_file(st.raw_dir, pid) for pid in partitions}
    for pid, path in paths.items():
        io.partition_interval(pid)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: raw partition {pid!r} not found; run `mlops ingest` for it first"
            )

    passed: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    messages: list[str] = []
    with io.exclusive(st.state_dir / "locks", "validate", partitions), _locked(st.gx_root):
        ctx = get_context(st.gx_root)
        checkpoint = ensure_checkpoint(ctx, params)
        for pid, path in paths.items():
            summary, gx_result = _check(checkpoint, params, st, pid, path)
            if summary["success"]:
                _copy_atomic(path, io.partition_file(st.validated_dir, pid))
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
