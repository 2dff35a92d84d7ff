"""Similarity: exact fidelities, top-k retrieval, shot-based fidelities on qiskit-aer, diagnostics."""
from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit.quantum_info import Statevector, state_fidelity

import qcbr.similarity as sim
from qcbr.encoding import get_feature_map
from qcbr.similarity import (
    CaseMemory,
    SimilarityError,
    fake_device,
    fidelity_matrix,
    kernel_diagnostics,
    sampled_fidelity_matrix,
)

MAPS = {
    "angle3": lambda: get_feature_map("angle", 3),             # real statevector product
    "angle8": lambda: get_feature_map("angle", 8),             # closed form prod cos^2
    "zz4": lambda: get_feature_map("zz", 4, alpha=0.6),
    "zz5lin": lambda: get_feature_map("zz", 5, reps=3, entanglement="linear", alpha=1.1),
    "amp3": lambda: get_feature_map("amplitude", 3, n_features=6),
}


def _rows(fm, m, seed):
    return np.random.default_rng(seed).uniform(0, np.pi, (m, fm.n_features))


@pytest.mark.parametrize("key", MAPS)
def test_fidelity_matrix_is_exact(key):
    fm = MAPS[key]()
    XQ, XS = _rows(fm, 5, 1), _rows(fm, 40, 2)
    K = fidelity_matrix(XQ, XS, fm)
    assert K.shape == (5, 40) and K.dtype == np.float64
    ref = np.abs(fm.statevectors(XQ).conj() @ fm.statevectors(XS).T) ** 2
    assert np.max(np.abs(K - ref)) <= 1e-12
    # independent reference: qiskit simulates the circuits, for a few pairs
    for i, j in [(0, 0), (4, 39), (2, 17)]:
        f = state_fidelity(Statevector(fm.circuit(XQ[i])), Statevector(fm.circuit(XS[j])))
        assert abs(K[i, j] - f) <= 1e-10
    G = fidelity_matrix(XS, XS, fm)
    assert np.allclose(np.diag(G), 1.0, atol=1e-12) and np.allclose(G, G.T, atol=1e-14)
    assert G.min() >= -1e-15 and G.max() <= 1 + 1e-12


def test_angle_closed_form_is_the_product_of_cosines():
    fm = get_feature_map("angle", 9)
    XQ, XS = _rows(fm, 3, 3), _rows(fm, 7, 4)
    ref = np.prod(np.cos((XQ[:, None, :] - XS[None, :, :]) / 2) ** 2, axis=2)
    assert np.max(np.abs(fidelity_matrix(XQ, XS, fm) - ref)) <= 1e-14


@pytest.mark.parametrize("key", MAPS)
def test_chunked_equals_unchunked(key, monkeypatch):
    fm = MAPS[key]()
    XQ, XS = _rows(fm, 6, 5), _rows(fm, 101, 6)
    full = fidelity_matrix(XQ, XS, fm)
    mem = CaseMemory(fm, XS)
    top_full = mem.top_k(XQ, 7)
    monkeypatch.setattr(sim, "CHUNK_BYTES", 16 * 6 * 9)  # 9 cases per chunk, last one partial
    # BLAS may round differently for other shapes: equal to the last bits, not bitwise
    assert np.max(np.abs(fidelity_matrix(XQ, XS, fm) - full)) <= 1e-14
    i, s = mem.top_k(XQ, 7)
    assert np.array_equal(i, top_full[0]) and np.max(np.abs(s - top_full[1])) <= 1e-14


@pytest.mark.parametrize("key", MAPS)
def test_top_k_is_the_sorted_best_k(key):
    fm = MAPS[key]()
    XS = _rows(fm, 300, 7)
    XQ = _rows(fm, 4, 8)
    mem = CaseMemory(fm, XS)
    assert mem.n_cases == len(mem) == 300
    idx, sc = mem.top_k(XQ, 5)
    K = fidelity_matrix(XQ, XS, fm)
    ref = np.argsort(-K, axis=1, kind="stable")[:, :5]
    assert idx.dtype == np.int64 and idx.shape == (4, 5)
    assert np.array_equal(idx, ref)
    assert np.max(np.abs(sc - np.take_along_axis(K, ref, axis=1))) <= 1e-14
    assert np.all(np.diff(sc, axis=1) <= 0)
    assert np.max(np.abs(mem.fidelities(XQ) - K)) <= 1e-14


def test_top_k_ties_keep_the_lower_index_and_k_is_capped():
    fm = get_feature_map("zz", 3, alpha=0.5)
    XS = _rows(fm, 30, 9)
    XS[[4, 11, 25]] = XS[17]  # four identical cases
    mem = CaseMemory(fm, XS)
    idx, sc = mem.top_k(XS[17:18], 3)
    assert idx.tolist() == [[4, 11, 17]] and np.allclose(sc, 1.0)
    idx, sc = mem.top_k(XS[:2], 100)
    assert idx.shape == (2, 30) and sorted(idx[0].tolist()) == list(range(30))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(SimilarityError, match="k must be a positive integer"):
            mem.top_k(XS[:1], bad)
    with pytest.raises(SimilarityError, match="at least one stored case"):
        CaseMemory(fm, np.zeros((0, 3)))


@pytest.mark.parametrize("name", ["zz", "amplitude"])
def test_screened_top_k_is_exact_even_for_near_ties(name, monkeypatch):
    """The complex64 screening of large memories must return the exact float64 top-k."""
    fm = get_feature_map(name, 6, **({"alpha": 0.4} if name == "zz" else {}))
    rng = np.random.default_rng(10)
    XS = rng.uniform(0, np.pi, (3000, fm.n_features))
    q = XS[123].copy()
    # near-ties far below float32 resolution around the query and around the 5th place
    XS[200:240] = q + rng.normal(0, 1e-6, (40, fm.n_features))
    mem = CaseMemory(fm, XS)
    before = mem.nbytes
    monkeypatch.setattr(sim, "SCREEN_FROM_AMPLITUDES", 1)
    idx, sc = mem.top_k(np.vstack([q, XS[7]]), 5)
    assert mem.nbytes == before * 3 // 2  # the single-precision screening copy was built
    K = fidelity_matrix(np.vstack([q, XS[7]]), XS, fm)
    ref = np.argsort(-K, axis=1, kind="stable")[:, :5]
    assert np.array_equal(idx, ref)
    assert np.max(np.abs(sc - np.take_along_axis(K, ref, axis=1))) <= 1e-14


@pytest.mark.parametrize("name,alpha", [("zz", 0.4), ("zz", 3.0), ("amplitude", None)])
@pytest.mark.parametrize("candidates", [4, 256])
def test_rotated_screen_top_k_is_exact(name, alpha, candidates, monkeypatch):
    """The principal-axes screen (block by block, Cauchy-Schwarz on the rest) must return the
    exact float64 top-k: near-ties below float32 resolution, a flat kernel (alpha=3: every
    case looks alike), batches of queries, and refinement through every stage."""
    fm = get_feature_map(name, 7, **({"alpha": alpha} if alpha else {}))
    rng = np.random.default_rng(11)
    XS = rng.uniform(0, np.pi, (900, fm.n_features))
    XQ = rng.uniform(0, np.pi, (16, fm.n_features))
    XQ[0] = XS[5]
    XS[300:330] = XS[5] + rng.normal(0, 1e-6, (30, fm.n_features))  # ties around the 1st..5th
    XS[600:610] = XS[5]                                               # exact ties: lower index wins
    monkeypatch.setattr(sim, "SCREEN_FROM_AMPLITUDES", 1)
    monkeypatch.setattr(sim, "ROTATE_FROM_CASES", 1)
    monkeypatch.setattr(sim, "SCREEN_CANDIDATES", candidates)
    mem = CaseMemory(fm, XS)
    K = fidelity_matrix(XQ, XS, fm)
    for k in (1, 5, 40):
        idx, sc = mem.top_k(XQ, k)
        ref = np.argsort(-K, axis=1, kind="stable")[:, :k]
        assert np.array_equal(idx, ref), (k, idx[:2], ref[:2])
        assert np.max(np.abs(sc - np.take_along_axis(K, ref, axis=1))) <= 1e-14
    screen = mem._screen
    assert screen is not None and screen.basis_t is not None and screen.cuts == [32, 64, 128]
    assert mem.nbytes > mem._side.nbytes + screen.coef_t.nbytes  # the axes and tail norms count


def test_fidelity_matrix_rejects_what_is_not_a_feature_map():
    with pytest.raises(SimilarityError, match="get_feature_map"):
        fidelity_matrix(np.ones((1, 2)), np.ones((1, 2)), "zz")


# -------------------------------------------------------------------------- sampled


def _binomial_bound(p: np.ndarray, shots: int, scale: float = 1.0) -> np.ndarray:
    """5 standard errors of the estimate (and one count of slack for p ~ 0 or 1)."""
    return scale * (5 * np.sqrt(np.clip(p * (1 - p), 0, None) / shots) + 1.0 / shots)


def test_compute_uncompute_agrees_with_exact_within_shot_noise():
    fm = get_feature_map("zz", 3, alpha=0.7)
    XQ, XS = _rows(fm, 3, 11), _rows(fm, 5, 12)
    XS[0] = XQ[0]
    shots = 4000
    K = fidelity_matrix(XQ, XS, fm)
    Ks = sampled_fidelity_matrix(XQ, XS, fm, shots=shots, seed=7)
    assert Ks.shape == (3, 5)
    assert np.all(np.abs(Ks - K) <= _binomial_bound(K, shots))
    assert Ks[0, 0] == 1.0  # identical rows: U(x) U(x)^dagger = identity, every shot reads 0
    # the seed makes runs reproducible
    assert np.array_equal(Ks, sampled_fidelity_matrix(XQ, XS, fm, shots=shots, seed=7))


def test_swap_test_agrees_with_exact_within_shot_noise():
    fm = get_feature_map("angle", 2)
    XQ, XS = _rows(fm, 2, 13), _rows(fm, 4, 14)
    shots = 4000
    K = fidelity_matrix(XQ, XS, fm)
    Ks = sampled_fidelity_matrix(XQ, XS, fm, shots=shots, method="swap", seed=3)
    p0 = (1 + K) / 2  # P(ancilla = 0); F = 2 P0 - 1 doubles the error
    assert np.all(np.abs(Ks - K) <= _binomial_bound(p0, shots, scale=2.0))
    assert Ks.min() >= 0.0 and Ks.max() <= 1.0


def test_amplitude_map_sampled():
    fm = get_feature_map("amplitude", 2)
    XQ, XS = _rows(fm, 2, 15), _rows(fm, 3, 16)
    K = fidelity_matrix(XQ, XS, fm)
    Ks = sampled_fidelity_matrix(XQ, XS, fm, shots=4000, seed=5)
    assert np.all(np.abs(Ks - K) <= _binomial_bound(K, 4000))


def test_all_pairs_go_to_the_simulator_in_one_run(monkeypatch):
    from qiskit_aer import AerSimulator

    calls = []
    real_run = AerSimulator.run

    def counting_run(self, circuits, **kw):  # a spy: records the call, then really runs it
        binds = kw.get("parameter_binds") or [{}]
        calls.append({len(values) for values in binds[0].values()})
        return real_run(self, circuits, **kw)

    monkeypatch.setattr(AerSimulator, "run", counting_run)
    fm = get_feature_map("zz", 2, alpha=0.5)
    sampled_fidelity_matrix(_rows(fm, 4, 1), _rows(fm, 6, 2), fm, shots=64, seed=1)
    assert calls == [{24}]  # one run, 4 x 6 bindings of every parameter


def test_depolarising_noise_lowers_the_fidelity_of_equal_rows():
    fm = get_feature_map("zz", 2, alpha=0.5)
    X = _rows(fm, 2, 17)
    ideal = sampled_fidelity_matrix(X, X, fm, shots=2000, seed=1, noise=0.0)
    noisy = sampled_fidelity_matrix(X, X, fm, shots=2000, seed=1, noise=0.05)
    assert np.allclose(np.diag(ideal), 1.0)
    assert np.all(np.diag(noisy) < 0.97) and np.all(np.diag(noisy) > 0.3)


def test_fake_device_noise_by_either_name():
    fm = get_feature_map("angle", 2)
    X = np.array([[0.3, 1.0]])
    a = sampled_fidelity_matrix(X, X, fm, shots=2000, seed=2, noise="fake_manila")
    b = sampled_fidelity_matrix(X, X, fm, shots=2000, seed=2, noise="FakeManilaV2")
    assert a.shape == (1, 1) and a[0, 0] == b[0, 0]
    assert 0.8 < a[0, 0] < 1.0  # a real device's noise model: close to, but below, 1
    assert fake_device("manila").num_qubits == 5


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "hadamard"}, "unknown method 'hadamard'.*compute_uncompute, swap"),
    ({"shots": 0}, "shots must be a positive integer"),
    ({"noise": 1.5}, r"depolarising level must be a number in \[0, 1\]"),
    ({"noise": "fake_nowhere"}, "unknown fake device 'fake_nowhere'.*fake_"),
    ({"noise": [0.1]}, "noise=.* is not understood"),
    ({"seed": "x"}, "seed must be an integer"),
    ({"noise": "fake_manila", "method": "swap"}, "has 5 qubits but this circuit needs 7"),
])
def test_sampled_errors_are_actionable(kwargs, match):
    fm = get_feature_map("angle", 3)
    X = np.ones((1, 3))
    with pytest.raises(SimilarityError, match=match):
        sampled_fidelity_matrix(X, X, fm, **kwargs)


# -------------------------------------------------------------------------- diagnostics


def test_default_zz_concentrates_and_small_alpha_does_not():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, np.pi, (60, 8))
    hot = get_feature_map("zz", 8, alpha=2.0)
    d = kernel_diagnostics(fidelity_matrix(X, X, hot), feature_map=hot)
    assert d["concentrated"] is True
    assert d["mean_offdiag"] < 3 / 2**8
    assert d["effective_rank"] > 50
    assert "alpha=2" in d["hint"] and "lower alpha" in d["hint"] and "1/2^n" in d["hint"]
    cool = get_feature_map("zz", 8, alpha=0.05)
    d2 = kernel_diagnostics(fidelity_matrix(X, X, cool), feature_map=cool)
    assert d2["concentrated"] is False
    assert d2["mean_offdiag"] > 0.2 and d2["effective_rank"] < d["effective_rank"]
    assert "informative" in d2["hint"]


def test_effective_rank_and_flat_kernels():
    d = kernel_diagnostics(np.eye(10))
    assert math.isclose(d["effective_rank"], 10.0) and d["mean_offdiag"] == 0.0
    assert d["concentrated"] is True
    ones = kernel_diagnostics(np.ones((8, 8)))
    assert math.isclose(ones["effective_rank"], 1.0)
    assert ones["concentrated"] is True and "barely separates" in ones["hint"]
    assert set(d) == {"mean_offdiag", "std_offdiag", "effective_rank", "concentrated", "hint"}
    with pytest.raises(SimilarityError, match="2-D"):
        kernel_diagnostics(np.ones(3))
    with pytest.raises(SimilarityError, match="NaN"):
        kernel_diagnostics(np.array([[1.0, np.nan], [np.nan, 1.0]]))


def test_large_requests_split_into_few_runs_with_progress(monkeypatch):
    fm = get_feature_map("angle", 2)
    XQ, XS = _rows(fm, 3, 21), _rows(fm, 5, 22)
    monkeypatch.setattr(sim, "MAX_BINDINGS_PER_RUN", 4)  # 15 pairs -> 4 runs
    seen = []
    split = sampled_fidelity_matrix(XQ, XS, fm, shots=2000, seed=9,
                                    progress=lambda f, msg: seen.append((f, msg)))
    assert np.array_equal(split, sampled_fidelity_matrix(XQ, XS, fm, shots=2000, seed=9))
    K = fidelity_matrix(XQ, XS, fm)
    assert np.all(np.abs(split - K) <= _binomial_bound(K, 2000))
    assert [f for f, _ in seen] == [0.0, 3 / 15, 7 / 15, 11 / 15, 1.0]
    assert "15 pairs x 2000 shots" in seen[0][1]


def test_the_same_array_on_both_sides_is_a_gram_matrix():
    """Regression: passing one array as both XQ and XS must still pair row i with row j."""
    fm = get_feature_map("zz", 2, alpha=0.8)
    X = _rows(fm, 4, 23)
    K = fidelity_matrix(X, X, fm)
    Ks = sampled_fidelity_matrix(X, X, fm, shots=4000, seed=2)
    assert np.all(np.abs(Ks - K) <= _binomial_bound(K, 4000))
    assert np.allclose(np.diag(Ks), 1.0) and Ks[0, 1] < 0.99


@pytest.mark.parametrize("name", ["zz", "angle", "amplitude"])
def test_fidelities_stay_in_the_unit_interval_even_for_identical_cases(name):
    # identical rows give |<s|s>|^2 = 1 up to rounding (seen: 1.0000000000000004 in served scores)
    fm = get_feature_map(name, 4)
    X = np.random.default_rng(3).uniform(0, np.pi, size=(200, fm.n_features))
    F = fidelity_matrix(X, X, fm)
    assert F.min() >= 0.0 and F.max() <= 1.0
    assert np.allclose(np.diag(F), 1.0, atol=1e-12)
    memory = CaseMemory(fm, X)
    _, scores = memory.top_k(X[:20], 3)
    assert scores.max() <= 1.0 and np.allclose(scores[:, 0], 1.0, atol=1e-12)
    assert memory.fidelities(X[:5]).max() <= 1.0
