"""The model check's report is a pure function of the check: decision, tables, diffs."""

from __future__ import annotations

from typing import Any

from mlops import ci_report


def _check(cand: float, base: float, passed: bool, **extra: Any) -> dict[str, Any]:
    check: dict[str, Any] = {
        "model_name": "flight_delay",
        "base": "origin/main",
        "base_sha": "a" * 40,
        "head_sha": "b" * 40,
        "base_version": "1",
        "evaluation": {
            "metric": "roc_auc",
            "rows": 1234,
            "holdout_partitions": ["2013-03"],
            "candidate": {"version": "2", "metrics": {"roc_auc": cand, "log_loss": 0.40}},
            "champion": {"version": "1", "metrics": {"roc_auc": base, "log_loss": 0.45}},
        },
        "promote": passed,
        "reasons": ["roc_auc 0.7100 >= floor 0.6: yes", "gain over champion ... : no"],
        "gain": cand - base,
        "gate": {"floor": 0.6, "min_improvement": 0.005},
        "slices": {
            "candidate": {
                "origin": [
                    {"value": "EWR", "rows": 500, "metrics": {"roc_auc": 0.72}},
                    {"value": "LGA", "rows": 3, "metrics": {}, "note": "fewer than 50 rows"},
                ]
            },
            "base": {"origin": [{"value": "EWR", "rows": 500, "metrics": {"roc_auc": 0.70}}]},
        },
        "params_diff": "| Path | Param | HEAD | workspace |",
        "metrics_diff": "| Path | Metric | HEAD | workspace | Change |",
        "seconds": 42.0,
    }
    check.update(extra)
    return check


def test_the_report_opens_on_the_verdict_and_lists_every_reason() -> None:
    text = ci_report.render(_check(0.71, 0.70, passed=False))
    lines = text.splitlines()
    assert lines[0] == "# Model check: flight_delay"
    assert lines[2] == "**Gate FAILED: candidate v2 vs base v1, roc_auc +0.0100**"
    assert "- gain over champion ... : no" in lines
    assert "1,234 rows" in text and "2013-03" in text and "floor 0.6" in text


def test_the_metrics_table_puts_the_gate_metric_first_and_says_which_way_is_better() -> None:
    table = ci_report.metrics_table(_check(0.71, 0.70, passed=True)["evaluation"])
    assert table[0] == "| metric | base (v1) | candidate (v2) | change |"
    assert table[2] == "| **roc_auc** (gate) | 0.7000 | 0.7100 | +0.0100 (better) |"
    # lower is better for log loss: a drop is an improvement
    assert table[3] == "| log_loss | 0.4500 | 0.4000 | -0.0500 (better) |"


def test_the_slice_table_sets_each_slice_beside_the_base_and_marks_small_ones() -> None:
    check = _check(0.71, 0.70, passed=True)
    table = ci_report.slice_table(check["slices"], "roc_auc")
    assert "| origin | EWR | 500 | 0.7000 | 0.7200 | +0.0200 (better) |" in table
    assert "| origin | LGA | 3 (fewer than 50 rows) | – | – | – |" in table


def test_a_long_slice_column_is_cut_with_a_count_of_the_rest() -> None:
    rows = [{"value": f"v{i}", "rows": 100 - i, "metrics": {"roc_auc": 0.7}} for i in range(20)]
    table = ci_report.slice_table({"candidate": {"carrier": rows}}, "roc_auc")
    assert len([r for r in table if r.startswith("| carrier | v")]) == ci_report.MAX_SLICE_ROWS
    assert table[-1].startswith(f"| carrier | … {20 - ci_report.MAX_SLICE_ROWS} more")


def test_a_change_too_small_to_show_is_neither_better_nor_worse() -> None:
    assert ci_report._change("roc_auc", 0.70001, 0.70002) == "+0.0000"
    assert ci_report._change("roc_auc", None, 0.7) == "–"


def test_no_slice_column_is_said_in_words() -> None:
    assert ci_report.slice_table({}, "rmse")[0].startswith("No slice columns")


def test_an_unchanged_revision_says_its_candidate_is_the_base_model() -> None:
    check = _check(0.70, 0.70, passed=False, base_version="2", gain=None)
    check["evaluation"]["champion"] = None
    verdict = ci_report.verdict(check)
    assert verdict.startswith("Gate FAILED: the candidate is the base revision's model")
    assert "+" not in verdict


def test_empty_diffs_are_said_in_words() -> None:
    text = ci_report.render(_check(0.75, 0.70, passed=True, params_diff="", metrics_diff=""))
    assert "**Gate PASSED" in text
    assert "No parameter changed." in text and "No metric changed." in text
