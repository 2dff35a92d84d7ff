"""Request-body parsing: every bad body becomes a PayloadError with a 4xx status and a useful message."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcbr.serving.payload import FeatureSchema, FeatureSpec, PayloadError, parse_body

NUMERIC = FeatureSchema([FeatureSpec("a", "numeric"), FeatureSpec("b", "numeric"), FeatureSpec("c", "numeric")])
MIXED = FeatureSchema([
    FeatureSpec("age", "numeric"),
    FeatureSpec("plan", "categorical", ("basic", "pro")),
    FeatureSpec("active", "boolean"),
])
JSON = "application/json"
CSV = "text/csv"


def test_json_instances_records_and_lists_in_feature_order():
    body = json.dumps({"instances": [{"c": 3, "a": 1, "b": 2}, [4, 5.5, "6"]]}).encode()
    parsed = parse_body(body, JSON, NUMERIC)
    assert parsed.rows == [[1.0, 2.0, 3.0], [4.0, 5.5, 6.0]]
    assert parsed.encoding == "JSON"
    X = parsed.to_model_input(NUMERIC)
    assert isinstance(X, np.ndarray) and X.dtype == np.float64 and X.shape == (2, 3)


def test_one_record_object_and_charset_parameter():
    parsed = parse_body(b'{"a": 1, "b": 2, "c": 3}', "application/json; charset=utf-8", NUMERIC)
    assert parsed.rows == [[1.0, 2.0, 3.0]]


def test_csv_with_and_without_header_and_reordered_header():
    assert parse_body(b"1,2,3\n4,5,6\n", CSV, NUMERIC).rows == [[1, 2, 3], [4, 5, 6]]
    assert parse_body(b"a,b,c\n1,2,3\n", CSV, NUMERIC).rows == [[1, 2, 3]]
    parsed = parse_body(b"c,a,b\r\n3,1,2\r\n", "text/csv; charset=utf-8", NUMERIC)
    assert parsed.rows == [[1, 2, 3]] and parsed.encoding == "CSV"


def test_mixed_types_coerced_and_frame_built():
    body = json.dumps({"instances": [{"age": 30, "plan": "pro", "active": "yes"}, [41, "enterprise", 0]]}).encode()
    parsed = parse_body(body, JSON, MIXED)
    assert parsed.rows == [[30.0, "pro", True], [41.0, "enterprise", False]]
    X = parsed.to_model_input(MIXED)
    assert X.dtype == object and X.shape == (2, 3) and X[1].tolist() == [41.0, "enterprise", False]
    frame = parsed.to_frame(MIXED)
    assert list(frame.columns) == ["age", "plan", "active"]
    assert frame["active"].dtype == bool and frame["age"].dtype == np.float64
    csv_rows = parse_body(b"age,plan,active\n30,basic,true\n", CSV, MIXED).rows
    assert csv_rows == [[30.0, "basic", True]]


@pytest.mark.parametrize(
    "body, ctype, status, needle",
    [
        (b"", JSON, 400, "empty"),
        (b"   \n", CSV, 400, "empty"),
        (b"{not json", JSON, 400, "malformed JSON"),
        (b'"just a string"', JSON, 400, "must be an object"),
        (b'{"instances": 5}', JSON, 400, "'instances' must be a list"),
        (b'{"instances": []}', JSON, 400, "no instances"),
        (b'{"instances": [[1, 2]]}', JSON, 400, "2 values, expected 3"),
        (b'{"instances": [{"a": 1, "b": 2, "d": 3}]}', JSON, 400, "wrong feature names"),
        (b'{"instances": [[1, 2, "x"]]}', JSON, 400, "feature 'c': expected a number"),
        (b'{"instances": [[1, true, 3]]}', JSON, 400, "feature 'b'"),
        (b'{"instances": [[1, null, 3]]}', JSON, 400, "feature 'b'"),
        (b"1,2,inf\n", CSV, 400, "expected a finite number"),
        (b'{"instances": [[1, 2, 3]], "extra": 1}', JSON, 400, "unexpected top-level keys"),
        (b'{"instances": ["abc"]}', JSON, 400, "an instance must be an object or a list"),
        (b"1,2\n", CSV, 400, "2 values, expected 3"),
        (b"a,b,zz\n1,2,3\n", CSV, 400, "header does not match"),
        (b'1,2,"3\n', CSV, 400, "malformed CSV"),
        (b"1,2,\x00\n", CSV, 400, "NUL"),
        (b"\xff\xfe,1,2", CSV, 400, "UTF-8"),
        (b"1,2,3", "application/xml", 415, "unsupported content type"),
        (b"[" * 100000, JSON, 400, "malformed JSON"),
    ],
)
def test_bad_bodies_name_the_problem(body, ctype, status, needle):
    with pytest.raises(PayloadError) as info:
        parse_body(body, ctype, NUMERIC)
    assert info.value.status == status
    assert needle in info.value.message


def test_type_error_says_which_row_and_field():
    body = json.dumps({"instances": [[1, 2, 3], [1, "two", 3]]}).encode()
    with pytest.raises(PayloadError) as info:
        parse_body(body, JSON, NUMERIC)
    assert info.value.detail == {"row": 1, "feature": "b", "expected": "a number", "got": "two"}


def test_wrong_names_lists_missing_unexpected_and_expected():
    with pytest.raises(PayloadError) as info:
        parse_body(b'{"a": 1, "b": 2, "x": 3}', JSON, NUMERIC)
    assert info.value.detail["missing"] == ["c"]
    assert info.value.detail["unexpected"] == ["x"]
    assert info.value.detail["expected"] == ["a", "b", "c"]


def test_row_limit_is_413():
    body = json.dumps({"instances": [[1, 2, 3]] * 11}).encode()
    with pytest.raises(PayloadError) as info:
        parse_body(body, JSON, NUMERIC, max_rows=10)
    assert info.value.status == 413
    assert parse_body(body, JSON, NUMERIC, max_rows=11).rows[10] == [1, 2, 3]


def test_unknown_category_passes_through_known_by_text():
    schema = FeatureSchema([FeatureSpec("n", "numeric"), FeatureSpec("code", "categorical", (1, 2))])
    assert parse_body(b"5,2\n", CSV, schema).rows == [[5.0, 2]]
    with pytest.raises(PayloadError):
        parse_body(b'{"n": 1, "code": [1]}', JSON, schema)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.lists(json_values, max_size=3).map(lambda v: json.dumps({"instances": v}).encode()),
        st.lists(st.lists(st.text(max_size=5), max_size=4), max_size=4).map(
            lambda rows: "\n".join(",".join(r) for r in rows).encode()
        ),
    ),
    ctype=st.sampled_from([JSON, CSV, "text/csv; charset=utf-8", "", "text/plain"]),
)
def test_fuzz_only_payload_errors_with_4xx(body, ctype):
    for schema in (NUMERIC, MIXED):
        try:
            parsed = parse_body(body, ctype, schema)
        except PayloadError as exc:
            assert 400 <= exc.status < 500
            assert exc.message
        else:
            assert all(len(r) == len(schema.names) for r in parsed.rows)
            parsed.to_model_input(schema)  # whatever passed validation must convert cleanly
            parsed.to_frame(schema)
