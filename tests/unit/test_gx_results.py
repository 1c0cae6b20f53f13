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


# --------------------------------------------------------------------------- retention
SITE = "local_site"


def page(root, run, time="20130115T000000.000000Z"):
    """Where validate records a result's Data Docs page (under project ``root``)."""
    site = f"{root}/great_expectations/uncommitted/data_docs/{SITE}/validations"
    return f"{site}/flights_contract/{run}/{time}/flights_pandas-raw_partition.html"


def key(run, time="20130115T000000.000000Z"):
    return f"flights_contract/{run}/{time}/flights_pandas-raw_partition"


def test_a_page_names_its_stored_result_wherever_the_project_now_lives() -> None:
    # given pages recorded under two project folders, and paths that are no results' pages
    # then each page names the same result, under the site's validations folder
    assert gx_results.result_key(page("/old/proj", "2013-W02"), SITE) == key("2013-W02")
    assert gx_results.result_key(page("/new/place", "2013-W02"), SITE) == key("2013-W02")
    assert gx_results.result_key(f"/p/{SITE}/index.html", SITE) is None
    assert gx_results.result_key("/p/other_site/validations/s/r/t/b.html", SITE) is None
    assert gx_results.result_key("", SITE) is None


def test_versions_need_the_result_that_passed_the_data_they_were_trained_on() -> None:
    # given the validations on record of four weeks
    summaries = {
        "2013-W02": {"success": True, "md5": "a" * 32, "data_docs_page": page("/p", "2013-W02")},
        "2013-W03": {"success": True, "md5": "b" * 32, "data_docs_page": page("/p", "2013-W03")},
        "2013-W04": {"success": True, "md5": "c" * 32, "data_docs_page": page("/p", "2013-W04")},
        "2013-W05": {"success": True, "md5": "d" * 32},  # built without Data Docs
    }
    # and versions trained on W02+W03, on an earlier W04 than the one on record, on W05,
    # and on a week never validated
    trained_on = [
        {"2013-W02": "a" * 32, "2013-W03": "b" * 32},
        {"2013-W04": "0" * 32},
        {"2013-W05": "d" * 32},
        {"2013-W09": "e" * 32},
    ]

    # when the needed results are worked out
    out = gx_results.needed(summaries, trained_on, SITE)

    # then only the results of the very data a version was trained on are needed
    assert out == {key("2013-W02"), key("2013-W03")}
    # and a failed validation on record is never what a version depends on
    failed = {"2013-W02": {**summaries["2013-W02"], "success": False}}
    assert gx_results.needed(failed, trained_on, SITE) == set()


def test_retention_keeps_every_needed_result_and_the_newest_others() -> None:
    # given five stored results, oldest first, two of them (an old and a new) needed
    stored = {f"r{i}": 1000.0 + i for i in range(5)}
    needed = {"r0", "r3", "gone"}  # "gone" is needed but no longer stored

    # when two others may stay
    kept = gx_results.retained(stored, needed, keep=2)

    # then the needed ones stay however old, plus the two newest of the rest
    assert kept == {"r0", "r3", "r4", "r2"}
    # and with none to keep beyond the needed, only they stay
    assert gx_results.retained(stored, needed, keep=0) == {"r0", "r3"}
    assert gx_results.retained(stored, set(), keep=0) == set()
    assert gx_results.retained(stored, set(), keep=10) == set(stored)


def test_a_script_drawn_table_becomes_plain_rows_sorted_and_linked() -> None:
    # given GX's index table block, drawn in the browser by bootstrap-table
    block = {
        "content_block_type": "bootstrap_table",
        "styling": {"body": {"classes": ["table-sm"]}},
        "table_columns": [
            {"field": "ok", "title": "Status", "align": "center"},
            {"field": "run_time", "title": "Run Time", "sortName": "_t"},
            {"field": "suite", "title": "Suite"},
        ],
        "table_options": {"sortName": "run_time", "sortOrder": "desc", "search": "true"},
        "table_data": [
            {
                "ok": "<i>y</i>",
                "run_time": "old",
                "_t": 1.0,
                "suite": '<a href="s.html">s</a>',
                "_table_row_link_path": "validations/old.html",
            },
            {
                "ok": "<i>y</i>",
                "run_time": "new",
                "_t": 2.0,
                "suite": '<a href="s.html">s</a>',
                "_table_row_link_path": "validations/new.html",
            },
        ],
    }

    # when turned into a plain table (each cell rendered by GX's own renderer)
    out = gx_results.static_table(block, lambda v: v)

    # then it is GX's static table: the headers, the newest row first, a link on every
    # cell without one of its own, and the script's options gone
    assert out["content_block_type"] == "table"
    assert out["header_row"] == ["Status", "Run Time", "Suite"]
    assert out["table"] == [
        [
            '<div class="text-center"><a href="validations/new.html"><i>y</i></a></div>',
            '<a href="validations/new.html">new</a>',
            '<a href="s.html">s</a>',
        ],
        [
            '<div class="text-center"><a href="validations/old.html"><i>y</i></a></div>',
            '<a href="validations/old.html">old</a>',
            '<a href="s.html">s</a>',
        ],
    ]
    assert out["styling"]["body"]["classes"] == ["table-sm", "table", "table-hover"]
    assert block["styling"]["body"]["classes"] == ["table-sm"]  # the block is left as it was
    assert not {"table_data", "table_columns", "table_options"} & out.keys()
