"""A model card's facts rendered for people: shared blocks, then Markdown or HTML.

Pure functions: ``blocks`` turns the card (``mlops.card.build``) into headings,
paragraphs, key-value lists and tables; ``to_markdown`` and ``to_html`` render them.
"""

from __future__ import annotations

import html
from typing import Any

Block = tuple[Any, ...]


def blocks(card: dict[str, Any]) -> list[Block]:
    """Pure: the card as a list of blocks that both renderers share."""
    c, tr, ho = card, card["training"], card["holdout"]
    hold = tr.get("holdout", [])
    fitted = tr.get("fitted") or [p for p in tr["partitions"] if p not in hold]
    fmt = _fmt
    out: list[Block] = [
        ("h1", f"Model card: {c['model']} v{c['version']}"),
        ("p", f"Generated {c['generated_at']} from MLflow run {c['run_id']}."),
    ]
    out += [("h2", "Intended use"), ("p", c["intended_use"])]
    out += [
        ("h2", "Model"),
        (
            "kv",
            [
                ("Registered model", f"{c['model']} version {c['version']}"),
                ("Aliases", ", ".join("@" + a for a in c["aliases"]) or "none"),
                ("Candidate", f"{c.get('candidate') or '-'} ({c.get('kind') or '-'})"),
                (
                    "Hyper-parameters",
                    ", ".join(
                        f"{k}={v}"
                        for k, v in c.get("params", {}).items()
                        if k not in ("kind", "train_partitions")
                    )
                    or "-",
                ),
                (
                    "Task",
                    f"{c['task']}: target {c['target']}, one row per "
                    f"{', '.join(c['entity_keys'])} at {c['timestamp']}",
                ),
                ("Code revision", c.get("code_revision") or "-"),
            ],
        ),
    ]
    out += [
        ("h2", "Training data"),
        (
            "kv",
            [
                ("Trained on", f"{', '.join(fitted)}{_span(tr.get('window'))}"),
                ("Held out", f"{', '.join(hold) or '-'}{_span(tr.get('holdout_window'))}"),
                ("Data hash", f"{tr['data_hash']} (md5 over the partitions' DVC hashes)"),
                ("Feature service", f"{c.get('feature_service') or '-'} (Feast)"),
            ],
        ),
        (
            "table",
            ["Partition", "Use", "DVC md5", "Rows"],
            [
                [
                    p,
                    "holdout" if p in hold else "training",
                    tr["md5"].get(p, "-"),
                    fmt(tr.get("rows", {}).get(p)),
                ]
                for p in tr["partitions"]
            ],
        ),
    ]
    feats = c["features"]
    out += [
        ("h2", "Features"),
        (
            "table",
            ["Feature", "Type", "Categories", "Importance"],
            [
                [f["name"], f["dtype"], f.get("categories") or "-", fmt(f.get("importance"))]
                for f in feats
            ],
        ),
    ]
    metric_names = sorted(ho["metrics"])
    out += [
        ("h2", "Holdout metrics"),
        (
            "p",
            f"Holdout {', '.join(ho['partitions'])}: {ho['rows']:,} rows. Gate metric: "
            f"{c['metric']}.",
        ),
        (
            "table",
            ["Metric", "Holdout (now)", "Recorded at training"],
            [[k, fmt(ho["metrics"][k]), fmt(ho.get("recorded", {}).get(k))] for k in metric_names],
        ),
    ]
    for col, rows in c["slices"].items():
        names = _slice_metric_names(c["task"], c["metric"])
        out += [
            ("h3", f"By {col}"),
            (
                "table",
                [col, "Rows", "Share", "Mean prediction", *names],
                [
                    [
                        r["value"],
                        f"{r['rows']:,}",
                        f"{r['share']:.1%}",
                        fmt(r["mean_prediction"]),
                        *(
                            [fmt(r["metrics"].get(m)) for m in names]
                            if r["metrics"]
                            else [r.get("note", "-")] + ["-"] * (len(names) - 1)
                        ),
                    ]
                    for r in rows
                ],
            ),
        ]
    if not c["slices"]:
        out += [
            (
                "p",
                "No slice columns: the contract declares no closed category list; "
                "pass slice columns explicitly.",
            )
        ]
    out += _explanations(c.get("explanations"))
    g, a = c["gate"], c["approval"]
    out += [
        ("h2", "Promotion gate"),
        (
            "kv",
            [("Decision", g.get("decision") or "not run"), ("Reasons", g.get("reasons") or "-")],
        ),
    ]
    out += [
        ("h2", "Approval"),
        (
            "kv",
            [
                ("Status", a.get("status") or "-"),
                ("By", a.get("by") or "-"),
                ("At", a.get("at") or "-"),
                ("Note", a.get("note") or "-"),
                ("Override", a.get("override") or "no"),
            ],
        ),
    ]
    if c.get("monitoring"):
        out += [
            ("h2", "Monitoring"),
            (
                "table",
                ["Partition", "Drift share", "Breach"],
                [
                    [m["partition"], fmt(m.get("drift_share")), "yes" if m.get("breach") else "no"]
                    for m in c["monitoring"]
                ],
            ),
        ]
    out += _realised(c)
    out += [("h2", "Known limitations"), ("ul", c["limitations"])]
    return out


COMPANIONS = {
    "classification": ["roc_auc", "average_precision", "precision", "recall", "f1", "log_loss"],
    "regression": ["rmse", "mae", "r2"],
}


def _explanations(ex: dict[str, Any] | None) -> list[Block]:
    """Pure: the SHAP section: mean |contribution| per feature, overall and per slice."""
    out: list[Block] = [("h2", "Why it predicts what it does (SHAP)")]
    if not ex:
        return out + [("p", "Not explained: the card was made without explanations.")]
    if ex.get("error"):
        return out + [("p", f"Not explained: {ex['error']}")]
    out += [
        (
            "p",
            f"Mean absolute contribution of each feature to the model's {ex['output']}, "
            f"on {ex['rows']:,} holdout rows (of {ex['of_rows']:,}), by {ex['method']}. "
            f"Base value {_fmt(ex['base'])}: for each row, the base plus its features' "
            f"contributions is the model's {ex['output']}."
            + (
                f" Per slice, a value with fewer than {ex['min_rows']} of those rows gets "
                f"more of its own ({ex['slice_rows']:,} rows in all)."
                if ex.get("slice_rows", ex["rows"]) > ex["rows"]
                else ""
            ),
        ),
        ("bars", list(ex["overall"].items())),
    ]
    for col, rows in ex["slices"].items():
        out += [
            ("h3", f"SHAP by {col}"),
            (
                "table",
                [col, "Rows explained", "Top features (mean |SHAP|)"],
                [
                    [
                        r["value"],
                        f"{r['rows']:,}",
                        ", ".join(f"{k} {v:.4f}" for k, v in r["top"].items())
                        if "top" in r
                        else f"fewer than {ex['min_rows']} rows",
                    ]
                    for r in rows
                ],
            ),
        ]
    return out


def _realised(c: dict[str, Any]) -> list[Block]:
    """Pure: the realised-performance section: per labelled partition, then by slice."""
    fmt, metric, found = _fmt, c["metric"], c.get("realised") or []
    out: list[Block] = [("h2", "Realised performance")]
    if not found:
        return [
            *out,
            ("p", "No labelled partition yet: `mlops label PARTITION` measures one."),
        ]
    others = [m for m in COMPANIONS.get(c["task"], []) if m != metric]
    out.append(
        (
            "p",
            f"How v{c['version']} did on each labelled partition (its label runs in MLflow), "
            f"against its holdout {metric}. A breach: worse than the holdout by more than "
            "monitor.max_performance_drop, or past promote.floor.",
        )
    )
    rows, reasons = [], []
    for r in found:
        overall = r.get("overall") or {}
        value, holdout = r.get("value", overall.get(metric)), r.get("holdout")
        change = None if value is None or holdout is None else value - holdout
        rows.append(
            [
                r["partition"],
                fmt(overall.get("rows")),
                fmt(value),
                fmt(holdout),
                "-" if change is None else f"{change:+.4f}",
                *(fmt(overall.get(m)) for m in others),
                "yes" if r.get("breach") else "no",
            ]
        )
        reasons += [f"{r['partition']}: {why}" for why in r.get("reasons") or []]
    head = ["Partition", "Labelled rows", metric, "Holdout", "Change", *others, "Breach"]
    out.append(("table", head, rows))
    if reasons:
        out.append(("ul", reasons))
    columns = sorted({col for r in found for col in r.get("slices") or {}})
    for col in columns:
        values: dict[str, dict[str, str]] = {}
        for r in found:
            for s in (r.get("slices") or {}).get(col, []):
                v = (s.get("metrics") or {}).get(metric)
                cell = f"{fmt(v)} ({s['rows']:,})" if v is not None else f"- ({s['rows']:,})"
                values.setdefault(s["value"], {})[r["partition"]] = cell
        pids = [r["partition"] for r in found]
        out += [
            ("h3", f"Realised {metric} by {col} (rows)"),
            (
                "table",
                [col, *pids],
                [[v, *(cells.get(p, "-") for p in pids)] for v, cells in values.items()],
            ),
        ]
    return out


def _span(window: list[str] | None) -> str:
    return f" ({window[0]} to {window[1]})" if window else ""


def _slice_metric_names(task: str, metric: str) -> list[str]:
    base = (
        ["positive_rate", "roc_auc", "average_precision", "log_loss"]
        if task == "classification"
        else ["rmse", "mae", "r2"]
    )
    return base if metric in base else [*base, metric]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if v == v else "nan"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(bs: list[Block]) -> str:
    """Pure: render blocks as GitHub-flavoured Markdown."""
    lines: list[str] = []
    for b in bs:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + b[1], ""]
        elif kind == "p":
            lines += [b[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in b[1]] + [""]
        elif kind == "kv":
            lines += ["| | |", "|---|---|"]
            lines += [f"| **{_md_cell(k)}** | {_md_cell(v)} |" for k, v in b[1]] + [""]
        elif kind == "bars":
            top = max((v for _, v in b[1]), default=0) or 1
            lines += ["| Feature | Mean \\|SHAP\\| | |", "|---|---:|---|"]
            lines += [f"| {_md_cell(k)} | {v:.4f} | {'█' * round(20 * v / top)} |" for k, v in b[1]]
            lines.append("")
        elif kind == "table":
            head, rows = b[1], b[2]
            lines.append("| " + " | ".join(map(_md_cell, head)) + " |")
            lines.append("|" + "---|" * len(head))
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows] + [""]
    return "\n".join(lines).rstrip() + "\n"


def to_html(bs: list[Block], title: str) -> str:
    """Pure: render blocks as one self-contained HTML page (everything escaped)."""
    e = html.escape
    body: list[str] = []
    for b in bs:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{e(b[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in b[1]) + "</ul>")
        elif kind == "kv":
            body.append(
                "<table class='kv'>"
                + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in b[1])
                + "</table>"
            )
        elif kind == "bars":
            top = max((v for _, v in b[1]), default=0) or 1
            body.append(
                "<table class='bars'><thead><tr><th>Feature</th><th>Mean |SHAP|</th><th></th>"
                "</tr></thead><tbody>"
                + "".join(
                    f"<tr><td>{e(str(k))}</td><td>{v:.4f}</td><td><div class='bar' "
                    f"style='width:{100 * v / top:.1f}%'></div></td></tr>"
                    for k, v in b[1]
                )
                + "</tbody></table>"
            )
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:.5em 0 1em}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
        "th{background:#f3f3f3}"
        ".bars td:last-child{width:20em}.bar{background:#4c78a8;height:.9em}"
    )
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{e(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
