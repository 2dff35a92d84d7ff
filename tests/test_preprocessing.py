"""Preprocessor: mixed tables -> angles in [0, pi], persisted without pickle, strict at predict."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qcbr.errors import InputError
from qcbr.preprocessing import Preprocessor


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    return pd.DataFrame({
        "age": rng.normal(40, 10, n),
        "income": rng.normal(5e4, 1e4, n),
        "city": rng.choice(["paris", "rome", "oslo"], n),
        "member": rng.choice([True, False], n),
        "newsletter": rng.choice(["yes", "no"], n),
    })


def test_schema_types_and_angle_range(frame):
    pre = Preprocessor().fit(frame)
    types = {c["name"]: c["type"] for c in pre.schema_}
    assert types == {"age": "numeric", "income": "numeric", "city": "categorical",
                     "member": "boolean", "newsletter": "boolean"}
    assert next(c for c in pre.schema_ if c["name"] == "city")["categories"] == ["oslo", "paris", "rome"]
    A = pre.transform(frame)
    assert A.shape == (40, 2 + 3 + 1 + 1) and A.dtype == np.float64
    assert A.min() >= 0.0 and A.max() <= np.pi
    # each training column spans the whole [0, pi] range (min -> 0, max -> pi)
    np.testing.assert_allclose(A.min(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(A.max(axis=0), np.pi, atol=1e-12)


def test_booleans_are_zero_one_and_text_booleans_understood(frame):
    pre = Preprocessor().fit(frame)
    A = pre.transform(frame)
    member = pre.output_names_.index("member")
    news = pre.output_names_.index("newsletter")
    np.testing.assert_allclose(A[:, member], np.where(frame["member"], np.pi, 0.0))
    np.testing.assert_allclose(A[:, news], np.where(frame["newsletter"] == "yes", np.pi, 0.0))


def test_unknown_category_encodes_as_all_zeros(frame):
    pre = Preprocessor().fit(frame)
    row = frame.iloc[[0]].copy()
    row["city"] = "lima"
    A = pre.transform(row)
    city_cols = [i for i, n in enumerate(pre.output_names_) if n.startswith("city=")]
    assert len(city_cols) == 3
    np.testing.assert_array_equal(A[0, city_cols], 0.0)
    # a known category lights exactly its own column
    row["city"] = "rome"
    B = pre.transform(row)
    assert B[0, pre.output_names_.index("city=rome")] == pytest.approx(np.pi)


def test_values_outside_training_range_are_clipped(frame):
    pre = Preprocessor().fit(frame)
    rows = frame.iloc[[0, 1]].copy()
    rows["age"] = [-1e6, 1e6]
    A = pre.transform(rows)
    j = pre.output_names_.index("age")
    assert A[0, j] == 0.0 and A[1, j] == np.pi


def test_constant_column_maps_to_half_pi():
    X = np.column_stack([np.arange(10.0), np.full(10, 3.0)])
    A = Preprocessor().fit(X).transform(X)
    np.testing.assert_allclose(A[:, 1], np.pi / 2)


def test_pca_reduces_to_budget_and_keeps_the_main_direction():
    rng = np.random.default_rng(1)
    t = rng.normal(size=200)
    X = np.column_stack([t + 0.01 * rng.normal(size=200) for _ in range(10)])  # one direction
    pre = Preprocessor(n_components=3).fit(X)
    A = pre.transform(X)
    assert A.shape == (200, 3) and pre.output_names_ == ["pc1", "pc2", "pc3"]
    assert abs(np.corrcoef(A[:, 0], t)[0, 1]) > 0.99
    # refitting gives the same angles (SVD signs are fixed)
    np.testing.assert_array_equal(Preprocessor(3).fit(X).transform(X), A)


def test_budget_above_feature_count_keeps_features():
    X = np.random.default_rng(2).normal(size=(30, 4))
    pre = Preprocessor(n_components=8).fit(X)
    assert pre.n_outputs_ == 4 and not pre.uses_pca_


def test_persistence_round_trip_is_exact_and_json(frame):
    pre = Preprocessor(n_components=4).fit(frame)
    d = json.loads(json.dumps(pre.to_dict()))
    arrays = {k: np.array(v) for k, v in pre.to_arrays().items()}
    assert all(a.dtype != object for a in arrays.values())
    back = Preprocessor.from_dict(d, arrays)
    probe = frame.sample(10, random_state=0)
    np.testing.assert_array_equal(back.transform(probe), pre.transform(probe))


def test_from_dict_rejects_inconsistent_arrays(frame):
    pre = Preprocessor().fit(frame)
    arrays = pre.to_arrays()
    arrays["num_mean"] = np.zeros(5)
    with pytest.raises(ValueError, match="do not match"):
        Preprocessor.from_dict(pre.to_dict(), arrays)


def test_column_order_does_not_matter_for_frames(frame):
    pre = Preprocessor().fit(frame)
    np.testing.assert_array_equal(pre.transform(frame[frame.columns[::-1]]), pre.transform(frame))


def test_array_fitted_preprocessor_takes_rows_by_position():
    X = np.random.default_rng(3).normal(size=(20, 3))
    pre = Preprocessor().fit(X)
    np.testing.assert_array_equal(pre.transform(pd.DataFrame(X, columns=["a", "b", "c"])), pre.transform(X))


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["income"]), r"missing column\(s\) \['income'\]"),
    (lambda f: f.assign(extra=1), r"unexpected column\(s\) \['extra'\]"),
    (lambda f: f.assign(age=[np.nan] + [1.0] * (len(f) - 1)), r"column 'age' has missing values \(NaN\) in row 0"),
    (lambda f: f.assign(age=["x"] * len(f)), r"column 'age' is numeric but has non-numeric values .*'x'"),
    (lambda f: f.assign(member=["maybe"] * len(f)), r"column 'member' is boolean .*'maybe'"),
    (lambda f: f.assign(city=[None] * len(f)), r"column 'city' has missing values"),
    (lambda f: f.assign(age=[np.inf] * len(f)), r"column 'age' has infinite values"),
])
def test_errors_at_predict_name_the_problem(frame, mutate, message):
    pre = Preprocessor().fit(frame)
    with pytest.raises(InputError, match=message):
        pre.transform(mutate(frame.copy()))


def test_errors_for_arrays():
    pre = Preprocessor().fit(np.zeros((5, 3)) + np.arange(5)[:, None])
    with pytest.raises(InputError, match="X has 2 features, but the model is expecting 3"):
        pre.transform(np.zeros((2, 2)))
    with pytest.raises(InputError, match="2-D table"):
        pre.transform(np.zeros(3))
    assert issubclass(InputError, ValueError)


def test_many_bad_rows_are_summarised(frame):
    pre = Preprocessor().fit(frame)
    bad = frame.copy()
    bad["age"] = np.nan
    with pytest.raises(InputError, match=r"rows 0, 1, 2, 3, 4 and 35 more"):
        pre.transform(bad)


def test_fit_rejects_missing_categories():
    with pytest.raises(InputError, match="column 'c' has missing values"):
        Preprocessor().fit(pd.DataFrame({"a": [1.0, 2.0], "c": ["x", None]}))


@pytest.mark.parametrize("pca", [None, 2])
def test_numeric_arrays_skip_pandas_with_the_same_bits_and_errors(pca):
    """The serving path's numeric rows (no DataFrame) give exactly what the DataFrame path gives;
    anything the fast path does not take (NaN, inf, wrong width, bools) keeps its messages."""
    rng = np.random.default_rng(3)
    train = pd.DataFrame(rng.normal(size=(50, 4)) * [1, 10, 100, 1000], columns=list("abcd"))
    pre = Preprocessor(pca).fit(train)
    rows = np.vstack([rng.normal(size=(7, 4)) * [1, 10, 100, 1000], [[1e9, -1e9, 0, 0]]])
    via_frame = pre.transform(pd.DataFrame(rows, columns=list("abcd")))
    assert np.array_equal(pre.transform(rows), via_frame)                      # float64 rows
    assert np.array_equal(pre.transform(rows.astype(np.float32)),
                          pre.transform(pd.DataFrame(rows.astype(np.float32), columns=list("abcd"))))
    ints = np.arange(8).reshape(2, 4)
    assert np.array_equal(pre.transform(ints), pre.transform(pd.DataFrame(ints, columns=list("abcd"))))
    bad = rows[:2].copy()
    bad[1, 2] = np.nan
    with pytest.raises(InputError, match=r"column 'c' has missing values \(NaN\) in row 1"):
        pre.transform(bad)
    bad[1, 2] = np.inf
    with pytest.raises(InputError, match=r"column 'c' has infinite values in row 1"):
        pre.transform(bad)
    with pytest.raises(InputError, match="X has 3 features, but the model is expecting 4"):
        pre.transform(rows[:, :3])
