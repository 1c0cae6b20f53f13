"""Great Expectations results, summarised for people, and which stored results to keep.

Per expectation: column, rule and what was observed, with a status (passed, warned,
failed); and one line per failure. ``retained`` decides which stored results survive
pruning: the newest few, and every one a registered model version depends on.
``static_table`` turns a Data Docs table drawn by a script into plain HTML rows.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import PurePath
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

UNIQUE = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")
NOT_NULL = "expect_column_values_to_not_be_null"
ROW_COUNT = "expect_table_row_count_to_be_between"
PARTIAL = 20  # GX's partial_unexpected_count in the BASIC result format
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


def _value(v: Any) -> str:
    """One unexpected value for people; a compound key reads ``(a=1, b=x)``."""
    if isinstance(v, dict):
        return "(" + ", ".join(f"{k}={x}" for k, x in v.items()) + ")"
    return str(v)


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
        sample = list(dict.fromkeys(map(_value, res.get("partial_unexpected_list") or [])))[:5]
        eg = f", e.g. {', '.join(sample)}" if sample and n else ""
        if etype in UNIQUE:
            return f"{n:,} rows with a duplicated key ({pct:.2f}%){eg}"
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
        if x["expectation"] in UNIQUE:
            parts[-1] += (
                " (entity keys must be unique within a partition: fix the source, or let up "
                "to N such rows through with validate.max_duplicate_keys: N in params.yaml; "
                "they are then dropped from the validated partition)"
            )
    for col in dict.fromkeys(missing):
        parts.append(f"column {col!r}: missing, its expectations could not run")
    return f"{path} failed validation: " + "; ".join(parts)


# --------------------------------------------------------------------------- many partitions
def _mostly(kw: dict[str, Any], values: dict[str, Any]) -> float:
    m: Any = kw.get("mostly")
    if isinstance(m, dict) and "$PARAMETER" in m:
        m = values[m["$PARAMETER"]]
    return 1.0 if m is None else float(m)


def _map_result(
    etype: str,
    kw: dict[str, Any],
    rows: int,
    nonnull: int | None,
    vals: list[Any],
    n: int,
    values: dict[str, Any],
) -> tuple[bool, dict[str, Any]]:
    """GX's own result of a map expectation from its counts (``_format_map_output``)."""
    if etype == NOT_NULL:
        success = rows == 0 or (rows - n) / rows >= _mostly(kw, values)
    elif rows == 0 or not nonnull:
        success = True  # vacuously, as GX has it
    else:
        success = (nonnull - n) / nonnull >= _mostly(kw, values)
    pct: float | None = None
    if rows > 0:
        pct = n / rows * 100 if nonnull is None else (n / nonnull * 100 if nonnull else None)
    result = {
        "element_count": rows,
        "unexpected_count": n,
        "unexpected_percent": pct,
        "partial_unexpected_list": vals[:PARTIAL],
    }
    return bool(success), result


def split_batch(
    vr: Any,
    suite: Any,
    batch_suite: Any,
    frame: pd.DataFrame,
    codes: np.ndarray,
    values: list[dict[str, Any]],
    rows_outside: dict[str, np.ndarray],
    batch_column: str,
) -> list[SimpleNamespace] | None:
    """Per-partition results of one GX run over many partitions, as GX gives them for each.

    ``frame`` holds the partitions one after the other (``codes``: each row's partition,
    0, 1, ...), ``vr`` is GX's run of ``batch_suite`` over it in the COMPLETE result format
    (every unexpected row listed). Each result is GX's own for a map expectation (counts,
    percent and the first unexpected values of that partition, ``mostly`` applied to it),
    the row count is the partition's, and a table-level result (columns, dtypes) holds for
    every partition alike, as they share one schema. ``values`` are each partition's suite
    parameters; ``rows_outside`` gives, per expectation id, the unexpected rows of an
    expectation whose bounds differ by partition (the timestamp's interval).

    Returns:
        One ``vr``-like object per partition (``summarize`` reads it), or None when an
        expectation raised and results cannot be split: validate each partition then.
    """
    import numpy as np

    n_parts = len(values)
    sizes = np.bincount(codes, minlength=n_parts)
    by_id = {r.expectation_config.id: r for r in vr.results}
    out: list[list[SimpleNamespace]] = [[] for _ in range(n_parts)]
    for e, be in zip(suite.expectations, batch_suite.expectations, strict=True):
        r = by_id[be.id]
        if _exception_message(r.exception_info) is not None:
            return None
        base, res = e.configuration, r.result or {}
        kw = dict(base.kwargs)
        configs = _configs(base, kw, values)
        if base.type == ROW_COUNT:
            lo, hi = kw.get("min_value"), kw.get("max_value")
            for i in range(n_parts):
                ok = (lo is None or sizes[i] >= lo) and (hi is None or sizes[i] <= hi)
                result = {"observed_value": int(sizes[i])}
                out[i].append(_outcome(configs[i], ok, result))
            continue
        if "unexpected_count" not in res and e.id not in rows_outside:
            res = dict(res)
            if isinstance(res.get("observed_value"), list):  # the columns, as each has them
                res["observed_value"] = [c for c in res["observed_value"] if c != batch_column]
            for i in range(n_parts):  # a table-level result: the same for one schema
                out[i].append(_outcome(configs[i], r.success, res))
            continue
        if e.id in rows_outside:
            idx = np.flatnonzero(rows_outside[e.id])
        else:
            # the rows GX found; its value list stops at 200, so values come from the rows
            idx = np.asarray(res.get("unexpected_index_list") or [], dtype=np.int64)
        if "column_list" in kw:
            keys = [k for k in kw["column_list"] if k != batch_column]
            listed = frame[keys].iloc[idx].to_dict("records")
        else:
            listed = frame[kw["column"]].iloc[idx].tolist()
        order = np.argsort(idx, kind="stable")
        idx, listed = idx[order], [listed[j] for j in order]
        cuts = np.searchsorted(codes[idx], np.arange(n_parts + 1))
        nulls = _nulls(frame, kw, base.type, codes, n_parts, batch_column)
        for i in range(n_parts):
            a, b = int(cuts[i]), int(cuts[i + 1])
            nonnull = None if nulls is None else int(sizes[i] - nulls[i])
            ok, result = _map_result(
                base.type, kw, int(sizes[i]), nonnull, listed[a : a + PARTIAL], b - a, values[i]
            )
            out[i].append(_outcome(configs[i], ok, result))
    return [SimpleNamespace(results=r) for r in out]


def _outcome(cfg: Any, success: Any, result: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(
        expectation_config=cfg, success=bool(success), result=result, exception_info=None
    )


def _configs(base: Any, kw: dict[str, Any], values: list[dict[str, Any]]) -> list[Any]:
    """The expectation's configuration per partition, its suite parameters filled in."""

    def one(v: dict[str, Any]) -> SimpleNamespace:
        filled = {
            k: v[x["$PARAMETER"]] if isinstance(x, dict) and "$PARAMETER" in x else x
            for k, x in kw.items()
        }
        return SimpleNamespace(id=base.id, type=base.type, kwargs=filled, severity=base.severity)

    if not any(isinstance(x, dict) and "$PARAMETER" in x for x in kw.values()):
        shared = one({})
        return [shared] * len(values)
    return [one(v) for v in values]


def _nulls(
    frame: pd.DataFrame,
    kw: dict[str, Any],
    etype: str,
    codes: np.ndarray,
    n: int,
    batch_column: str,
) -> np.ndarray | None:
    """Rows per partition a map expectation leaves out as missing (None: it counts all)."""
    import numpy as np

    if etype == NOT_NULL:
        return None
    if "column_list" in kw:  # compound keys: rows whose keys are all missing are ignored
        cols = [c for c in kw["column_list"] if c != batch_column]
        missing = frame[cols].isna().all(axis=1).to_numpy()
    else:
        missing = frame[kw["column"]].isna().to_numpy()
    return np.bincount(codes, weights=missing, minlength=n).astype(np.int64)


# --------------------------------------------------------------------------- retention
def result_key(page: str, site: str) -> str | None:
    """The stored result a Data Docs validation page shows, or None for another path.

    ``.../<site>/validations/<suite>/<run>/<time>/<batch>.html`` gives
    ``<suite>/<run>/<time>/<batch>``: the page's path under the site's ``validations/``,
    which is the result's path under ``uncommitted/validations/`` (without ``.json``).
    """
    parts = PurePath(page).parts
    for i in range(len(parts) - 3, -1, -1):
        if parts[i : i + 2] == (site, "validations") and page.endswith(".html"):
            return "/".join(parts[i + 2 :]).removesuffix(".html")
    return None


def needed(
    summaries: Mapping[str, Mapping[str, Any]],
    trained_on: Iterable[Mapping[str, str]],
    site: str,
) -> set[str]:
    """The stored results that registered model versions depend on.

    ``trained_on`` holds each version's training data, partition -> raw md5 (its
    ``mlops.data.md5`` tag); ``summaries`` each partition's validation on record
    (``state/validation/<partition>.json``: the md5 it validated and its Data Docs page).
    A version depends on the result that passed each of its partitions, as long as the
    record is of the data the version was trained on (the same md5).
    """
    out: set[str] = set()
    for data in trained_on:
        for pid, md5 in data.items():
            s = summaries.get(pid) or {}
            if md5 and s.get("success") and s.get("md5") == md5:
                key = result_key(str(s.get("data_docs_page") or ""), site)
                if key is not None:
                    out.add(key)
    return out


def retained(stored: Mapping[str, float], needed: Collection[str], keep: int) -> set[str]:
    """The stored results to keep: every ``needed`` one, and the newest ``keep`` others.

    ``stored`` maps each stored result to when it was stored; a needed result that is no
    longer stored is not in the answer.
    """
    rest = sorted(stored.keys() - set(needed), key=lambda k: (stored[k], k), reverse=True)
    return (stored.keys() & set(needed)) | set(rest[: max(keep, 0)])


# --------------------------------------------------------------------------- Data Docs
def static_table(block: Mapping[str, Any], render: Callable[[Any], Any]) -> dict[str, Any]:
    """A ``bootstrap_table`` block (drawn by the bootstrap-table script) as a plain ``table``.

    Rows are sorted as the script would sort them (``sortName``, ``sortOrder``); each cell
    is ``render``ed, and a row's link (``_table_row_link_path``) is put on every cell of
    it that holds no link of its own.
    """
    columns = [dict(c) for c in block.get("table_columns") or []]
    options = dict(block.get("table_options") or {})
    rows = [dict(r) for r in block.get("table_data") or []]
    by = options.get("sortName")
    if by:
        field = next((c.get("sortName", by) for c in columns if c.get("field") == by), by)
        rows.sort(key=lambda r: _sortable(r.get(field)), reverse=options.get("sortOrder") == "desc")
    table = []
    for r in rows:
        link, cells = r.get("_table_row_link_path"), []
        for c in columns:
            cell = str(render(r.get(c.get("field"), "")))
            if link and "<a " not in cell:
                cell = f'<a href="{html.escape(str(link))}">{cell}</a>'
            if c.get("align") == "center":
                cell = f'<div class="text-center">{cell}</div>'
            cells.append(cell)
        table.append(cells)
    styling = copy.deepcopy(dict(block.get("styling") or {}))
    body = styling.setdefault("body", {})
    body["classes"] = [*body.get("classes", []), "table", "table-hover"]
    drop = ("table_columns", "table_data", "table_options")
    return {
        **{k: v for k, v in block.items() if k not in drop},
        "content_block_type": "table",
        "styling": styling,
        "header_row": [str(c.get("title", c.get("field", ""))) for c in columns],
        "table": table,
    }


def _sortable(v: Any) -> tuple[int, float, str]:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return 0, float(v), ""
    return 1, 0.0, "" if v is None else str(v)
