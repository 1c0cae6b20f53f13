"""The request schema of mlops serve: generated from the data contract, strict, and every
error names the field, its contract rule and what was sent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mlops.config import load_params
from mlops.request_schema import RequestError, Schema, nullable, rule
from tests.conftest import FLIGHTS

CONTRACT = load_params(FLIGHTS).contract
KEY = "UA-1545-2013-01-01 10:00:00+00:00"
SHAPE = {"loc", "field", "msg", "rule", "type"}


@pytest.fixture
def schema() -> Schema:
    return Schema.build(CONTRACT, {"flight_id": "string"}, max_rows=3)


def errors_of(fn: Any, *args: Any) -> list[dict[str, Any]]:
    with pytest.raises(RequestError) as exc:
        fn(*args)
    errors = exc.value.errors
    assert errors, "a RequestError without errors"
    for e in errors:
        assert set(e) >= SHAPE, e
    return errors


def test_a_key_alone_is_a_row_whose_features_are_left_to_the_store(schema: Schema):
    # when a row carrying only its key is parsed
    (row,) = schema.parse({"flight_id": KEY})
    # then the key is kept, every feature is unset, and the row says only the key was sent
    assert row.values["flight_id"] == KEY
    assert row.given == {"flight_id"}
    assert all(row.values[f] is None for f in CONTRACT.feature_names)
    assert row.values[CONTRACT.timestamp] is None


def test_sent_features_and_an_iso_timestamp_are_kept_with_their_types(schema: Schema):
    # when a row sends features of each dtype (a JSON integer for a float) and a timestamp
    body = {
        "flight_id": KEY,
        "event_ts": "2013-01-01T10:00:00Z",
        "carrier": "UA",
        "dest": "IAH",
        "sched_hour": 10,
        "temp": 39,
        "pressure": None,
    }
    (row,) = schema.parse(body)
    # then they keep their values, and the row records exactly what was sent
    v = row.values
    assert (v["carrier"], v["dest"], v["sched_hour"]) == ("UA", "IAH", 10)
    assert v["temp"] == 39.0 and isinstance(v["temp"], float)
    assert v["pressure"] is None
    assert v["event_ts"] == datetime(2013, 1, 1, 10, tzinfo=UTC)
    assert row.given == set(body)


def test_a_batch_is_a_list_of_rows_under_rows(schema: Schema):
    rows = schema.parse({"rows": [{"flight_id": "a"}, {"flight_id": "b", "temp": 1.5}]})
    assert [r.values["flight_id"] for r in rows] == ["a", "b"]
    assert [r.given for r in rows] == [{"flight_id"}, {"flight_id", "temp"}]


@pytest.mark.parametrize(
    ("extra", "field", "kind", "words"),
    [
        ({"sched_hour": "10"}, "sched_hour", "int_type", "contract: int"),
        ({"sched_hour": 10.5}, "sched_hour", "int_type", "contract: int"),
        ({"sched_hour": True}, "sched_hour", "int_type", "contract: int"),
        ({"sched_hour": 24}, "sched_hour", "less_than_equal", "<= 23"),
        ({"sched_hour": None}, "sched_hour", "int_type", "not null"),
        ({"temp": "warm"}, "temp", "float_type", "contract: float"),
        ({"temp": 121.0}, "temp", "less_than_equal", "<= 120"),
        ({"humid": -0.1}, "humid", "greater_than_equal", ">= 0"),
        ({"origin": "BOS"}, "origin", "literal_error", "one of EWR, JFK, LGA"),
        ({"carrier": "ZZ"}, "carrier", "literal_error", "one of 9E, AA"),
        ({"dest": 7}, "dest", "string_type", "contract: category, nullable"),
        ({"wind": 3.0}, "wind", "extra_forbidden", "not in the contract"),
        ({"event_ts": "yesterday"}, "event_ts", "datetime_from_date_parsing", "ISO 8601"),
    ],
)
def test_a_field_outside_the_contract_is_named_with_its_rule_and_input(
    schema: Schema, extra: dict[str, Any], field: str, kind: str, words: str
):
    # when one field breaks the contract
    errors = errors_of(schema.parse, {"flight_id": KEY, **extra})
    # then the one error names it, the rule it breaks and what was sent
    assert len(errors) == 1, errors
    (e,) = errors
    assert (e["loc"], e["field"], e["type"]) == ([field], field, kind)
    assert words in e["rule"], e["rule"]
    assert e["input"] == next(iter(extra.values()))


def test_a_nullable_category_takes_null_and_an_open_one_any_text(schema: Schema):
    (row,) = schema.parse({"flight_id": KEY, "carrier": None, "dest": "XYZ"})
    assert row.values["carrier"] is None and row.values["dest"] == "XYZ"


def test_every_bad_field_of_every_row_is_reported_where_it_is(schema: Schema):
    # when a batch has a good row and a row with two bad fields
    body = {"rows": [{"flight_id": "a"}, {"flight_id": "b", "temp": "x", "origin": "BOS"}]}
    errors = errors_of(schema.parse, body)
    # then both are reported, located in the second row
    assert sorted((tuple(e["loc"]), e["field"]) for e in errors) == [
        (("rows", 1, "origin"), "origin"),
        (("rows", 1, "temp"), "temp"),
    ]


def test_a_missing_key_is_named_and_an_int_key_must_be_an_int(schema: Schema):
    (e,) = errors_of(schema.parse, {"temp": 1.0})
    assert (e["field"], e["type"]) == ("flight_id", "missing")
    assert e["rule"] == "entity key: str, required"
    assert "input" not in e
    by_int = Schema.build(CONTRACT, {"flight_id": "int"}, max_rows=3)
    assert by_int.parse({"flight_id": 7})[0].values["flight_id"] == 7
    (e,) = errors_of(by_int.parse, {"flight_id": "7"})
    assert (e["field"], e["type"], e["input"]) == ("flight_id", "int_type", "7")


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        ([{"flight_id": KEY}], "body", "model_type"),
        ("flight", "body", "model_type"),
        ({"rows": []}, "rows", "too_short"),
        ({"rows": {"flight_id": KEY}}, "rows", "list_type"),
        ({"rows": [{"flight_id": KEY}], "model": "x"}, "model", "extra_forbidden"),
        ({"rows": [1]}, "rows", "model_type"),
    ],
)
def test_a_body_that_is_not_a_row_or_a_batch_is_refused(
    schema: Schema, body: Any, field: str, kind: str
):
    (e,) = errors_of(schema.parse, body)
    assert (e["field"], e["type"]) == (field, kind), e
    assert e["rule"].startswith("request:") or "row" in e["msg"]


def test_a_batch_over_the_row_limit_is_refused_naming_the_setting(schema: Schema):
    # given a schema of at most three rows per request
    assert len(schema.parse({"rows": [{"flight_id": KEY}] * 3})) == 3
    # when four are sent
    (e,) = errors_of(schema.parse, {"rows": [{"flight_id": KEY}] * 4})
    # then the error names the setting and its value
    assert (e["loc"], e["field"], e["type"]) == (["rows"], "rows", "too_long")
    assert e["rule"] == "serve.max_batch_rows: at most 3 rows"
    assert "4 rows" in e["msg"]


def test_the_error_message_is_the_first_error(schema: Schema):
    with pytest.raises(RequestError, match=r"^temp: Input should be a valid number"):
        schema.parse({"flight_id": KEY, "temp": "x"})


def test_v2_inputs_are_named_columns_of_one_length(schema: Schema):
    # when a v2 request sends a key column and a feature column, one as [N, 1]
    body = {
        "id": 42,
        "inputs": [
            {"name": "flight_id", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]},
            {"name": "temp", "datatype": "FP64", "shape": [2], "data": [10.0, None]},
        ],
    }
    rows, rid = schema.v2_rows(body)
    # then they are rows like /predict's, and the id comes back as text
    assert rid == "42"
    assert [(r.values["flight_id"], r.values["temp"]) for r in rows] == [("a", 10.0), ("b", None)]
    assert rows[0].given == {"flight_id", "temp"}
    assert schema.v2_rows({"inputs": body["inputs"]})[1] is None


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["inputs"]),
        ({"inputs": "x"}, ["inputs"]),
        ({"inputs": [{"name": "flight_id"}]}, ["inputs", 0]),
        (
            {
                "inputs": [
                    {"name": "flight_id", "data": ["a", "b"]},
                    {"name": "temp", "data": [1.0]},
                ]
            },
            ["inputs"],
        ),
        (
            {"inputs": [{"name": "flight_id", "data": ["a"]}, {"name": "temp", "data": ["hot"]}]},
            ["inputs", 0, "temp"],
        ),
    ],
)
def test_a_bad_v2_request_is_refused_with_the_same_error_shape(
    schema: Schema, body: dict, loc: list
):
    (e,) = errors_of(schema.v2_rows, body)
    assert e["loc"] == loc


def test_v2_metadata_lists_keys_and_features_with_their_types(schema: Schema):
    meta = schema.v2_metadata("flight_delay", ["3"])
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert list(types) == [*CONTRACT.entity_keys, *CONTRACT.feature_names]
    assert (types["flight_id"], types["origin"], types["sched_hour"], types["temp"]) == (
        "BYTES",
        "BYTES",
        "INT64",
        "FP64",
    )
    assert [o["name"] for o in meta["outputs"]] == ["prediction", "predicted_label"]
    assert meta["versions"] == ["3"]


def test_rules_quote_the_contract():
    assert rule(CONTRACT.feature("sched_hour")) == "contract: int, >= 0, <= 23, not null"
    assert rule(CONTRACT.feature("origin")) == "contract: category, one of EWR, JFK, LGA, nullable"
    assert nullable(CONTRACT.feature("pressure")) and not nullable(CONTRACT.feature("distance"))
