"""Great Expectations results, summarised for people.

Per expectation: column, rule and what was observed, with a status (passed, warned,
failed); and one line per failure.
"""

from __future__ import annotations

from typing import Any

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
