"""Feature maps: the closed-form statevectors must be the states of the real qiskit circuits."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qiskit import qasm3, transpile
from qiskit.circuit.library import zz_feature_map
from qiskit.quantum_info import Statevector

from qcbr.encoding import (
    ENTANGLEMENTS,
    FEATURE_MAPS,
    FeatureMapError,
    feature_map_from_params,
    get_feature_map,
)

ANGLE = st.floats(min_value=-2 * np.pi, max_value=2 * np.pi, allow_nan=False)


@st.composite
def map_and_rows(draw, n_min: int, n_max: int, max_rows: int):
    n = draw(st.integers(n_min, n_max))
    name = draw(st.sampled_from(FEATURE_MAPS))
    if name == "zz":
        fm = get_feature_map(
            "zz", n, reps=draw(st.integers(1, 3)), entanglement=draw(st.sampled_from(ENTANGLEMENTS)),
            alpha=draw(st.floats(0.05, 3.0)))
    elif name == "amplitude":
        nf = draw(st.integers(1, 2**n))
        fm = get_feature_map("amplitude", n, n_features=nf)
    else:
        fm = get_feature_map("angle", n)
    m = draw(st.integers(1, max_rows))
    rows = draw(st.lists(st.lists(ANGLE, min_size=fm.n_features, max_size=fm.n_features),
                         min_size=m, max_size=m))
    X = np.array(rows, dtype=float)
    if name == "amplitude":
        X[np.linalg.norm(X, axis=1) == 0, 0] = 1.0  # a zero row has no state (tested below)
    return fm, X


def _assert_matches_qiskit(fm, X):
    S = fm.statevectors(X)
    assert S.shape == (len(X), 2**fm.n_qubits) and S.dtype == np.complex128
    for i, x in enumerate(X):
        ref = Statevector(fm.circuit(x)).data
        assert np.max(np.abs(S[i] - ref)) <= 1e-10, (fm, x)
        assert abs(np.linalg.norm(S[i]) - 1.0) <= 1e-12


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(map_and_rows(1, 6, 4))
def test_statevectors_equal_qiskit_small_n(case):
    _assert_matches_qiskit(*case)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(map_and_rows(7, 10, 2))
def test_statevectors_equal_qiskit_large_n(case):
    _assert_matches_qiskit(*case)


@pytest.mark.parametrize("ent", ENTANGLEMENTS)
@pytest.mark.parametrize("n", [1, 2, 3, 9, 10])
def test_every_entanglement_at_the_edges(n, ent):
    """Fixed cases that hypothesis might not draw: n=1 and 2 (degenerate couplings) and n=9, 10."""
    rng = np.random.default_rng(n)
    fm = get_feature_map("zz", n, reps=2, entanglement=ent, alpha=2.0)
    _assert_matches_qiskit(fm, rng.uniform(0, np.pi, (2, n)))


def test_zz_circuit_is_qiskits_zz_feature_map():
    fm = get_feature_map("zz", 4, reps=3, entanglement="circular", alpha=0.7)
    x = np.array([0.1, 1.2, 2.3, 3.0])
    ours = fm.circuit(x)
    ref = zz_feature_map(4, reps=3, entanglement="circular", alpha=0.7)
    ref = ref.assign_parameters(dict(zip(sorted(ref.parameters, key=lambda p: p.index), x)))
    assert Statevector(ours).equiv(Statevector(ref))
    assert ours.count_ops() == ref.decompose().count_ops() or ours.count_ops() == ref.count_ops()


def test_many_rows_are_vectorised_and_blocked():
    """Rows spread over several internal blocks still come out in order, each exact."""
    rng = np.random.default_rng(0)
    fm = get_feature_map("zz", 8, alpha=0.9)
    X = rng.uniform(0, np.pi, (700, 8))  # > one block of rows at n=8
    S = fm.statevectors(X)
    for i in (0, 255, 256, 511, 699):
        assert np.max(np.abs(S[i] - Statevector(fm.circuit(X[i])).data)) <= 1e-10
    assert np.allclose(np.linalg.norm(S, axis=1), 1.0, atol=1e-12)


def test_angle_and_amplitude_closed_forms():
    x, y = np.array([0.3, 2.0, 1.1]), np.array([1.0, 0.5, 2.9])
    fm = get_feature_map("angle", 3)
    sx, sy = fm.statevectors(np.vstack([x, y]))
    assert abs(abs(np.vdot(sx, sy)) ** 2 - np.prod(np.cos((x - y) / 2) ** 2)) < 1e-14
    am = get_feature_map("amplitude", 2, n_features=3)
    a, b = am.statevectors(np.vstack([x, y]))
    cos = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
    assert abs(abs(np.vdot(a, b)) ** 2 - cos**2) < 1e-14  # fidelity = cosine similarity squared
    assert a[3] == 0  # zero-padded
    # scale invariance: the amplitude map cannot tell x from 5x
    assert np.allclose(am.statevectors(5 * x), am.statevectors(x))


def test_amplitude_accepts_short_rows_when_n_features_is_not_fixed():
    fm = get_feature_map("amplitude", 3)
    assert fm.n_features == 8
    S = fm.statevectors([[3.0, 4.0]])
    assert np.allclose(S[0, :2], [0.6, 0.8]) and np.all(S[0, 2:] == 0)
    with pytest.raises(FeatureMapError, match="1..8 features"):
        fm.statevectors(np.ones((1, 9)))


def test_circuits_draw_export_and_transpile():
    for fm, gate in ((get_feature_map("angle", 3), "Ry(0.2)"),
                     (get_feature_map("zz", 3, reps=2), "P(0.4)"),
                     (get_feature_map("amplitude", 3, n_features=5), "Ry(")):
        x = np.linspace(0.2, 2.5, fm.n_features)
        qc = fm.circuit(x)
        assert qc.num_parameters == 0 and qc.num_qubits == 3
        assert gate in str(qc.draw(output="text", fold=-1))
        text = qasm3.dumps(qc)
        assert text.startswith("OPENQASM 3") and "qubit[3] q;" in text
        assert Statevector(qasm3.loads(text)).equiv(Statevector(qc))  # the export round-trips
        t = transpile(qc, basis_gates=["rz", "sx", "cx"], optimization_level=1, seed_transpiler=1)
        assert set(t.count_ops()) <= {"rz", "sx", "cx"}
        assert Statevector(t).equiv(Statevector(qc))


def test_parameterized_and_parameter_values_agree_with_circuit():
    for fm in (get_feature_map("angle", 2), get_feature_map("zz", 2, reps=1),
               get_feature_map("amplitude", 2)):
        qc, params = fm.parameterized("x")
        X = np.array([[0.4, 1.3, 0.2, 2.2][: fm.n_features]])
        vals = fm.parameter_values(X)
        assert vals.shape == (1, len(params)) and qc.num_parameters == len(params)
        bound = qc.assign_parameters(dict(zip(params, vals[0])))
        assert np.allclose(Statevector(bound).data, fm.statevectors(X)[0], atol=1e-12)
    # amplitude: the tree's parameters are rotation angles, 2**n - 1 of them
    assert len(get_feature_map("amplitude", 4).parameterized()[1]) == 15


def test_params_are_json_and_rebuild_an_equal_map():
    for fm in (get_feature_map("angle", 5), get_feature_map("zz", 4, reps=3, entanglement="linear",
                                                            alpha=0.25),
               get_feature_map("amplitude", 3, n_features=6)):
        again = feature_map_from_params(json.loads(json.dumps(fm.params)))
        assert again == fm and hash(again) == hash(fm)
        assert again.params == fm.params
    assert get_feature_map("angle", 4).is_product
    assert not get_feature_map("zz", 4).is_product
    assert not get_feature_map("amplitude", 2).is_product
    assert get_feature_map("zz", 4).n_features == 4


@pytest.mark.parametrize("call, match", [
    (lambda: get_feature_map("pauli", 3), "unknown feature map 'pauli'.*angle, zz, amplitude"),
    (lambda: get_feature_map("zz", 0), r"n_qubits=0 is out of range: use 1..20"),
    (lambda: get_feature_map("zz", 21), r"n_qubits=21 is out of range"),
    (lambda: get_feature_map("zz", 2.5), "n_qubits must be an integer"),
    (lambda: get_feature_map("zz", 3, reps=0), "reps must be an integer >= 1"),
    (lambda: get_feature_map("zz", 3, entanglement="star"), "unknown entanglement 'star'.*full"),
    (lambda: get_feature_map("zz", 3, alpha=float("nan")), "alpha must be a finite number > 0"),
    (lambda: get_feature_map("zz", 3, alpha=-1), "alpha must be a finite number > 0"),
    (lambda: get_feature_map("angle", 3, reps=2), "'angle' has no parameter.*reps.*none"),
    (lambda: get_feature_map("amplitude", 2, n_features=5), "n_features must be an integer in 1..4"),
    (lambda: get_feature_map("zz", 3).statevectors(np.ones((2, 4))),
     "expects 3 features per row, got 4"),
    (lambda: get_feature_map("angle", 2).statevectors([[0.1, np.nan], [np.inf, 1]]),
     r"NaN or infinite values at \(row 0, feature 1\), \(row 1, feature 0\)"),
    (lambda: get_feature_map("angle", 2).statevectors([["a", "b"]]), "must be numeric"),
    (lambda: get_feature_map("amplitude", 2).statevectors([[0, 0, 0, 0], [1, 0, 0, 0]]),
     r"row\(s\) \[0\] are all zeros"),
    (lambda: get_feature_map("angle", 2).circuit(np.ones((2, 2))), "takes one row"),
])
def test_errors_say_what_to_fix(call, match):
    with pytest.raises(FeatureMapError, match=match):
        call()


def test_feature_map_error_is_a_value_error_and_qcbr_error():
    from qcbr.errors import QCBRError

    with pytest.raises(ValueError):
        get_feature_map("zz", 99)
    with pytest.raises(QCBRError):
        get_feature_map("zz", 99)


@pytest.mark.parametrize("ent", ENTANGLEMENTS)
@pytest.mark.parametrize("n", [1, 4, 5, 9, 12])
def test_fast_diagonal_equals_the_phase_formula(n, ent):
    """The doubling / half-split construction equals exp(i * alpha * phases) computed directly."""
    fm = get_feature_map("zz", n, entanglement=ent, alpha=1.3)
    X = np.random.default_rng(n).uniform(0, np.pi, (5, n))
    assert np.max(np.abs(fm.diagonal(X) - np.exp(1j * fm.phases(X)))) <= 1e-11


@pytest.mark.parametrize("n", [1, 3, 5, 6, 11, 13])
def test_blocked_walsh_hadamard_equals_butterflies(n):
    from qcbr.encoding import _wht_cols, fwht

    rng = np.random.default_rng(n)
    z = rng.normal(size=(2**n, 3)) + 1j * rng.normal(size=(2**n, 3))
    ref = fwht(np.ascontiguousarray(z.T).copy()).T
    assert np.max(np.abs(_wht_cols(np.ascontiguousarray(z)) - ref)) <= 1e-9 * 2 ** (n / 2)


def test_twenty_qubits_is_the_limit_and_works():
    fm = get_feature_map("zz", 20, entanglement="linear", alpha=0.3)
    S = fm.statevectors(np.full((1, 20), 0.5))
    assert S.shape == (1, 2**20) and abs(np.linalg.norm(S) - 1) < 1e-10
    a = get_feature_map("angle", 20).statevectors(np.linspace(0, 3, 20))
    assert abs(np.linalg.norm(a) - 1) < 1e-10
