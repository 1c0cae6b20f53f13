"""gx_results: GX validation results summarised per expectation, and the failure line."""

from __future__ import annotations

from types import SimpleNamespace

from mlops import gx_results


def result(etype, success, res=None, severity="critical", exc=None, eid=None, **kwargs):
    """A stand-in for one GX ExpectationValidationResult: what summarize reads."""
    cfg = SimpleNamespace(type=etype, kwargs=kwargs, severity=severity, id=eid)
    info = {"raised_exception": True, "exception_message": exc} if exc else {}
    return SimpleNamespace(
        expectation_config=cfg, result=res or {}, exception_info=info, success=success
    )


def test_statuses_follow_severity_and_tolerance_in_suite_order() -> None:
    # given results GX grouped its own way, and the suite's order
    results = [
        result(
            "expect_column_values_to_be_in_set",
            True,
            eid="c",
            column="dest",
            value_set=["A", "B"],
            mostly=0.99,
            res={
                "unexpected_count": 2,
                "unexpected_percent": 0.5,
                "partial_unexpected_list": ["ZZZ", "ZZZ", "YYY"],
            },
        ),
        result(
            "expect_column_values_to_not_be_null",
            True,
            eid="b",
            column="temp",
            mostly=0.75,
            res={"unexpected_count": 3, "unexpected_percent": 1.5},
        ),
        result(
            "expect_column_mean_to_be_between",
            False,
            eid="d",
            severity="warning",
            column="temp",
            min_value=1000,
            res={"observed_value": 12.5},
        ),
        result(
            "expect_column_values_to_be_between",
            False,
            eid="a",
            column="temp",
            min_value=-30.0,
            max_value=120.0,
            res={
                "unexpected_count": 1,
                "unexpected_percent": 0.25,
                "partial_unexpected_list": [500.0],
            },
        ),
    ]
    vr = SimpleNamespace(results=results)

    # when summarised
    out = gx_results.summarize(vr, ["dest", "temp"], order=["a", "b", "c", "d"])

    # then rows read like the contract, and only the critical failure fails the partition
    rows = out["expectations"]
    assert [r["expectation"] for r in rows] == [
        "expect_column_values_to_be_between",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_in_set",
        "expect_column_mean_to_be_between",
    ]
    assert [r["status"] for r in rows] == ["failed", "passed", "warned", "warned"]
    assert out["success"] is False
    assert out["statistics"] == {"evaluated": 4, "passed": 1, "warned": 2, "failed": 1}
    assert rows[0]["rule"] == "expect_column_values_to_be_between [-30.0, 120.0]"
    assert rows[0]["observed"] == "1 unexpected values (0.25%), e.g. 500.0"
    assert rows[1]["observed"] == "3 nulls (1.50%)"
    assert rows[2]["rule"] == "expect_column_values_to_be_in_set [A, B] mostly=0.99"
    assert rows[2]["observed"] == "2 unexpected values (0.50%), e.g. ZZZ, YYY"
    assert rows[3]["observed"] == "observed 12.5" and rows[3]["severity"] == "warning"


def test_failure_line_names_the_file_each_rule_and_missing_columns_once() -> None:
    # given a missing column (its two expectations raised) and a table-level failure
    results = [
        result(
            "expect_table_columns_to_match_set",
            False,
            column_set=["a", "b", "temp"],
            res={"details": {"mismatched": {"missing": ["temp"]}}},
        ),
        result("expect_column_values_to_not_be_null", False, column="temp", exc="KeyError: 'temp'"),
        result(
            "expect_column_values_to_be_between",
            False,
            column="temp",
            min_value=0,
            max_value=1,
            strict_max=True,
            exc="KeyError: 'temp'",
        ),
    ]
    summary = gx_results.summarize(SimpleNamespace(results=results), ["a", "b"])

    # when described
    line = gx_results.describe_failure("data/raw/2013-01.parquet", summary)

    # then one line names the file, the table rule with what was missing, and the column once
    assert line == (
        "data/raw/2013-01.parquet failed validation: "
        "table: expect_table_columns_to_match_set 3 contract columns: missing ['temp']; "
        "column 'temp': missing, its expectations could not run"
    )
    assert [r["observed"] for r in summary["failed"]][1:] == ["column missing"] * 2
    assert summary["failed"][2]["rule"] == "expect_column_values_to_be_between [0, 1)"
    # and an unreadable file is described by its error alone
    assert gx_results.describe_failure("x.parquet", {"error": "cannot be read as Parquet"}) == (
        "x.parquet failed validation: cannot be read as Parquet"
    )
