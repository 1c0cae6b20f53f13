"""The Markdown of ``mlops ci report``: pure functions of the check ``ci.report`` builds.

Sections, in the order a reviewer reads them: the gate's decision with its reasons; the
holdout metrics of the base revision's model and of this revision's candidate side by
side; the gate metric per slice for both (the model card's slice table); ``dvc params
diff`` and ``dvc metrics diff`` against the base, as DVC prints them.
"""

from __future__ import annotations

from typing import Any

from mlops import models

# The most values of one slice column the table lists (largest first).
MAX_SLICE_ROWS = 12


def _num(value: Any) -> str:
    return "–" if value is None or value != value else f"{value:.4f}"


def _change(metric: str, new: Any, old: Any) -> str:
    """``+0.0123 (better)``: the change from ``old`` to ``new``, and whether it is better."""
    if new is None or old is None or new != new or old != old:
        return "–"
    delta = new - old
    higher = models.HIGHER_IS_BETTER.get(metric)
    if abs(delta) < 0.00005:  # zero at the four decimals shown
        return "+0.0000"
    if higher is None:
        return f"{delta:+.4f}"
    return f"{delta:+.4f} ({'better' if (delta > 0) == higher else 'worse'})"


def metrics_table(ev: dict[str, Any]) -> list[str]:
    """Pure: metric | base | candidate | change; the gate metric first and in bold."""
    metric = ev["metric"]
    cand = ev["candidate"]["metrics"]
    champ = (ev.get("champion") or {}).get("metrics") or {}
    names = [metric, *sorted(k for k in {*cand, *champ} if k != metric)]
    base_v = (ev.get("champion") or {}).get("version")
    head = f"base (v{base_v})" if base_v else "base"
    lines = [
        f"| metric | {head} | candidate (v{ev['candidate']['version']}) | change |",
        "|---|---:|---:|---|",
    ]
    for name in names:
        label = f"**{name}** (gate)" if name == metric else name
        old, new = champ.get(name), cand.get(name)
        lines.append(f"| {label} | {_num(old)} | {_num(new)} | {_change(name, new, old)} |")
    return lines


def slice_table(slices: dict[str, Any], metric: str) -> list[str]:
    """Pure: column | value | rows | base | candidate | change, for the gate metric."""
    cand = slices.get("candidate") or {}
    base = slices.get("base") or {}
    if not cand:
        return ["No slice columns: the contract declares no category feature with few levels."]
    lines = [
        f"| slice | value | rows | base {metric} | candidate {metric} | change |",
        "|---|---|---:|---:|---:|---|",
    ]
    for column, rows in cand.items():
        old_rows = {r["value"]: r for r in base.get(column, [])}
        for r in rows[:MAX_SLICE_ROWS]:
            new = r["metrics"].get(metric)
            old = old_rows.get(r["value"], {}).get("metrics", {}).get(metric)
            note = f" ({r['note']})" if r.get("note") else ""
            lines.append(
                f"| {column} | {r['value']} | {r['rows']:,}{note} | {_num(old)} | {_num(new)} "
                f"| {_change(metric, new, old)} |"
            )
        if len(rows) > MAX_SLICE_ROWS:
            lines.append(f"| {column} | … {len(rows) - MAX_SLICE_ROWS} more | | | | |")
    return lines


def verdict(check: dict[str, Any]) -> str:
    """Pure: the one-line decision, as the job summary's first line shows it."""
    ev = check["evaluation"]
    word = "PASSED" if check["promote"] else "FAILED"
    same = str(ev["candidate"]["version"]) == str(check["base_version"])
    what = (
        "the candidate is the base revision's model (same data, params and code)"
        if same
        else f"candidate v{ev['candidate']['version']} vs base v{check['base_version']}"
    )
    gain = check.get("gain")
    by = f", {ev['metric']} {gain:+.4f}" if gain is not None else ""
    return f"Gate {word}: {what}{by}"


def render(check: dict[str, Any]) -> str:
    """Pure: the whole report (Markdown)."""
    ev = check["evaluation"]
    gate = check["gate"]
    lines = [
        f"# Model check: {check['model_name']}",
        "",
        f"**{verdict(check)}**",
        "",
        f"This revision ({check['head_sha'][:10]}) against `{check['base']}` "
        f"({check['base_sha'][:10]}): both trained on the project's slice and scored on the "
        f"same holdout ({', '.join(ev['holdout_partitions'])}, {ev['rows']:,} rows). "
        f"Gate: {ev['metric']} floor {gate['floor']}, minimum improvement "
        f"{gate['min_improvement']}.",
        "",
        "## Gate decision",
        "",
        *[f"- {r}" for r in check["reasons"]],
        "",
        "## Holdout metrics",
        "",
        *metrics_table(ev),
        "",
        "## By slice",
        "",
        *slice_table(check["slices"], ev["metric"]),
        "",
        "## `dvc params diff`",
        "",
        check["params_diff"] or "No parameter changed.",
        "",
        "## `dvc metrics diff`",
        "",
        check["metrics_diff"] or "No metric changed.",
        "",
        f"Checked in {check['seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"
