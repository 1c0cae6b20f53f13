"""suite: the expectation suite derived from the data contract alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops import partitions, suite
from mlops.config import Params, Settings, Validate, load_params, settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> tuple[Params, Settings]:
    """A project in tmp_path with the repo's params.yaml."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return load_params(tmp_path / "params.yaml"), settings(tmp_path / "params.yaml")


def test_suite_is_derived_from_the_contract(project):
    # given the demo contract and a partition interval
    params, _ = project
    start, end = partitions.interval("2013-01")

    # when the suite is built
    built = suite.build_suite(params.contract, params.validate_cfg, (start, end))

    # then it checks the exact column set, keys, the timestamp interval and each feature
    by = {(e.expectation_type, getattr(e, "column", None)) for e in built.expectations}
    assert ("expect_table_columns_to_match_set", None) in by
    assert ("expect_column_values_to_be_unique", "flight_id") in by
    assert ("expect_column_type_to_be", "event_ts") in by
    for f in params.contract.features:
        assert ("expect_column_values_to_be_in_type_list", f.name) in by
    ts_range = next(
        e
        for e in built.expectations
        if e.expectation_type == "expect_column_values_to_be_between" and e.column == "event_ts"
    )
    assert (ts_range.min_value, ts_range.max_value, ts_range.strict_max) == (start, end, True)
    pressure_nulls = next(
        e
        for e in built.expectations
        if e.expectation_type == "expect_column_values_to_not_be_null" and e.column == "pressure"
    )
    assert pressure_nulls.mostly == pytest.approx(0.75)
    target = next(
        e
        for e in built.expectations
        if e.expectation_type == "expect_column_values_to_be_in_set" and e.column == "is_delayed"
    )
    assert target.value_set == [0, 1, True, False]


def test_compound_keys_and_extra_expectations_by_name(project):
    # given a contract with two entity keys and one extra expectation from params
    params, _ = project
    contract = params.contract.model_copy(update={"entity_keys": ["flight_id", "carrier"]})
    contract = contract.model_copy(
        update={"features": [f for f in contract.features if f.name != "carrier"]}
    )
    cfg = Validate(
        extra_expectations=[
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {"column": "temp", "min_value": 0},
            }
        ]
    )

    # when the suite is built
    built = suite.build_suite(contract, cfg)

    # then the keys are checked together and the extra expectation is present
    types = [e.expectation_type for e in built.expectations]
    assert "expect_compound_columns_to_be_unique" in types
    assert types[-1] == "expect_column_mean_to_be_between"


def test_unknown_extra_expectation_names_the_setting(project):
    params, _ = project
    cfg = Validate(extra_expectations=[{"type": "expect_the_moon", "kwargs": {}}])

    with pytest.raises(ValueError, match=r"validate.extra_expectations\[0\].*expect_the_moon"):
        suite.build_suite(params.contract, cfg)


def test_suite_over_many_partitions_keeps_the_order_and_keys_each_partition(project):
    # given the demo contract, allowing duplicate keys
    params, _ = project
    cfg = Validate(max_duplicate_keys=3)

    # when the suite for one run over many partitions is built beside the stored one
    one = suite.build_suite(params.contract, cfg)
    many = suite.build_suite(params.contract, cfg, batch_column=suite.PARTITION_COLUMN)

    # then the expectations line up, keys are unique per partition (every duplicate listed),
    # and the partition column is an expected column
    assert [e.expectation_type for e in one.expectations][4:] == [
        e.expectation_type for e in many.expectations
    ][4:]
    assert len(one.expectations) == len(many.expectations)
    unique = many.expectations[3]
    assert unique.expectation_type == "expect_compound_columns_to_be_unique"
    assert unique.column_list == ["flight_id", suite.PARTITION_COLUMN] and unique.mostly == 1
    assert suite.PARTITION_COLUMN in many.expectations[0].column_set
    assert suite.PARTITION_COLUMN not in one.expectations[0].column_set


def _target_rules(built, target: str) -> list[str]:
    return [e.expectation_type for e in built.expectations if getattr(e, "column", None) == target]


def test_the_target_is_checked_on_its_values_and_may_hold_nulls(project):
    # given the demo contract (classification) and a regression variant with a range
    params, _ = project
    regression = params.contract.model_copy(
        update={"task": "regression", "target_min": -100.0, "target_max": 1000.0}
    )

    # when the suites of partitions with the target column are built
    cls = suite.build_suite(params.contract, params.validate_cfg)
    reg = suite.build_suite(regression, params.validate_cfg)

    # then the target's type and set (or range) are checked, and no rule refuses its nulls
    assert _target_rules(cls, "is_delayed") == [
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_in_set",
    ]
    types = next(e for e in cls.expectations if getattr(e, "column", None) == "is_delayed")
    assert {"bool", "BooleanDtype", "int8", "float64"} <= set(types.type_list)
    assert _target_rules(reg, "is_delayed") == [
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_between",
    ]
    assert "is_delayed" in cls.expectations[0].column_set


def test_a_partition_without_the_target_column_gets_no_target_expectations(project):
    # given the demo contract
    params, _ = project

    # when the suites of partitions without the target column are built, alone and batched
    with_target = suite.build_suite(params.contract, params.validate_cfg)
    without = suite.build_suite(params.contract, params.validate_cfg, labelled=False)
    batched = suite.build_suite(
        params.contract, params.validate_cfg, batch_column=suite.PARTITION_COLUMN, labelled=False
    )

    # then they expect every other contract column, check the rest alike, and no target
    others = [c for c in params.contract.columns if c != "is_delayed"]
    assert sorted(without.expectations[0].column_set) == sorted(others)
    assert sorted(batched.expectations[0].column_set) == sorted([*others, suite.PARTITION_COLUMN])
    assert _target_rules(without, "is_delayed") == [] == _target_rules(batched, "is_delayed")
    n = len(_target_rules(with_target, "is_delayed"))
    assert [e.expectation_type for e in without.expectations] == [
        e.expectation_type for e in with_target.expectations
    ][:-n]
    assert len(batched.expectations) == len(without.expectations)
