"""Similarity between cases = fidelity |<psi(x)|psi(y)>|^2 of their encoded states.

Exact similarity never simulates a circuit per pair: every stored case's state is built once
(closed forms in ``qcbr.encoding``), then all Q x N overlaps are one matrix product -- or, for the
product-state ``angle`` map where it is cheaper, the closed form ``prod_i cos^2((x_i - y_i)/2)``;
for ``amplitude`` the overlap is the dot product of the normalised rows (cosine similarity).
``CaseMemory`` keeps the stored side and answers top-k queries in chunks over the cases, so a
large memory never materialises the full Q x N matrix.

Sampled similarity runs the real circuits on qiskit-aer with shots (compute-uncompute or swap
test), optionally with noise; all pairs go to the simulator in one run with parameter bindings.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from qcbr.encoding import AmplitudeMap, AngleMap, FeatureMap, FeatureMapError, ZZMap
from qcbr.errors import QCBRError

if TYPE_CHECKING:  # pragma: no cover
    from qiskit.circuit import QuantumCircuit

#: bytes of one Q x chunk block of overlaps kept at once by CaseMemory.top_k
CHUNK_BYTES = 32 * 2**20
#: angle maps use the O(n) closed form instead of 2**n-wide products from this many qubits on
ANGLE_CLOSED_FORM_FROM = 6


class SimilarityError(QCBRError, ValueError):
    """A similarity request cannot be served as asked (bad method, shots, noise, k...)."""


def _check_map(feature_map: Any) -> FeatureMap:
    if not isinstance(feature_map, FeatureMap):
        raise SimilarityError(
            "feature_map must be a qcbr FeatureMap (use qcbr.encoding.get_feature_map(name, "
            f"n_qubits, ...)), got {type(feature_map).__name__}.")
    return feature_map


# ----------------------------------------------------------------------------------------------
# exact similarity
# ----------------------------------------------------------------------------------------------

class _Side:
    """One side of the overlap (queries or cases) in the cheapest exact representation.

    kind "complex": states (m, d) complex128; "real": real vectors whose dot product is the
    overlap (angle states for small n, amplitude rows); "angle": cos/sin half-angles (m, n).
    """

    def __init__(self, fm: FeatureMap, X: Any) -> None:
        self.fm = fm
        if isinstance(fm, AngleMap):
            if fm.n_qubits >= ANGLE_CLOSED_FORM_FROM:
                self.kind = "angle"
                c, s = fm.half_angles(X)
                self.c, self.s = c, s
                self.m = c.shape[0]
            else:
                self.kind = "real"
                self.v = np.ascontiguousarray(fm.real_statevectors(X))
                self.m = self.v.shape[0]
        elif isinstance(fm, AmplitudeMap):
            self.kind = "real"
            self.v = np.ascontiguousarray(fm.normalised(X))  # zero padding adds nothing
            self.m = self.v.shape[0]
        else:
            self.kind = "complex"
            self.v = np.ascontiguousarray(fm.statevectors(X))
            self.m = self.v.shape[0]

    def take(self, idx: np.ndarray | slice) -> "_Side":
        out = object.__new__(_Side)
        out.fm, out.kind = self.fm, self.kind
        if self.kind == "angle":
            out.c, out.s = self.c[idx], self.s[idx]
            out.m = out.c.shape[0]
        else:
            out.v = self.v[idx]
            out.m = out.v.shape[0]
        return out

    @property
    def nbytes(self) -> int:
        return (self.c.nbytes + self.s.nbytes) if self.kind == "angle" else self.v.nbytes


def _fidelity_block(q: _Side, s: _Side, out: np.ndarray | None = None) -> np.ndarray:
    """|<q_i|s_j>|^2 for all pairs of two prepared sides, float64 (q.m, s.m)."""
    if q.kind == "angle":
        K = np.ones((q.m, s.m)) if out is None else out
        if out is not None:
            K.fill(1.0)
        for i in range(q.c.shape[1]):
            f = np.multiply.outer(q.c[:, i], s.c[:, i])
            f += np.multiply.outer(q.s[:, i], s.s[:, i])
            K *= f
        np.square(K, out=K)
        return K
    if q.kind == "real":
        G = np.matmul(q.v, s.v.T, out=out)
        np.square(G, out=G)
        return G
    G = q.v.conj() @ s.v.T
    K = np.square(G.real, out=out)
    K += np.square(G.imag)
    return K


def fidelity_matrix(XQ: Any, XS: Any, feature_map: FeatureMap) -> np.ndarray:
    """Exact fidelities float64 (len(XQ), len(XS)) between query rows and stored rows."""
    fm = _check_map(feature_map)
    return _fidelity_block(_Side(fm, XQ), _Side(fm, XS))


class CaseMemory:
    """The stored cases' states, built once, for repeated similarity queries.

    Keep one per fitted model: building the states is the costly part for zz; queries are then
    matrix products. ``top_k`` walks the cases in chunks (``CHUNK_BYTES`` of overlaps at a time)
    and keeps only the running best k per query.
    """

    def __init__(self, feature_map: FeatureMap, XS: Any) -> None:
        self.feature_map = _check_map(feature_map)
        self._side = _Side(self.feature_map, XS)
        if self._side.m == 0:
            raise SimilarityError("CaseMemory needs at least one stored case, got none.")

    @property
    def n_cases(self) -> int:
        return self._side.m

    def __len__(self) -> int:
        return self._side.m

    def fidelities(self, XQ: Any) -> np.ndarray:
        """Exact fidelities float64 (len(XQ), n_cases)."""
        return _fidelity_block(_Side(self.feature_map, XQ), self._side)

    def top_k(self, XQ: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar stored cases per query: (indices int64 (q,k), scores (q,k)).

        Sorted by descending score; ties keep the lower case index first.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise SimilarityError(f"k must be a positive integer, got {k!r}.")
        k = min(int(k), self.n_cases)
        q = _Side(self.feature_map, XQ)
        Q, N = q.m, self.n_cases
        if Q == 0:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
        chunk = max(k, min(N, CHUNK_BYTES // (16 * max(Q, 1))))
        best_i = np.zeros((Q, 0), dtype=np.int64)
        best_s = np.zeros((Q, 0))
        for start in range(0, N, chunk):
            stop = min(N, start + chunk)
            K = _fidelity_block(q, self._side.take(slice(start, stop)))
            kk = min(k, stop - start)
            part = np.argpartition(-K, kk - 1, axis=1)[:, :kk] if kk < K.shape[1] else \
                np.broadcast_to(np.arange(K.shape[1]), (Q, K.shape[1]))
            cand_s = np.concatenate([best_s, np.take_along_axis(K, part, axis=1)], axis=1)
            cand_i = np.concatenate([best_i, part + start], axis=1)
            keep = _select_sorted(cand_s, cand_i, k)
            best_s = np.take_along_axis(cand_s, keep, axis=1)
            best_i = np.take_along_axis(cand_i, keep, axis=1)
        return best_i, best_s


def _select_sorted(scores: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Positions of the best k per row, by score descending then case index ascending."""
    order = np.lexsort((idx, -scores), axis=1) if scores.ndim == 2 else None
    return order[:, :k]


# ----------------------------------------------------------------------------------------------
# sampled similarity (qiskit-aer)
# ----------------------------------------------------------------------------------------------

METHODS = ("compute_uncompute", "swap")


def _fake_backends() -> dict[str, str]:
    """normalised name -> class name of qiskit-ibm-runtime's fake devices."""
    import qiskit_ibm_runtime.fake_provider as fp

    out = {}
    for cls in dir(fp):
        if cls.startswith("Fake") and not cls.startswith(("FakeProvider", "FakeFractional")):
            out[_norm_device(cls)] = cls
    return out


def _norm_device(name: str) -> str:
    key = name.lower().replace("_", "").replace("-", "")
    if key.endswith("v2"):
        key = key[:-2]
    if not key.startswith("fake"):
        key = "fake" + key
    return key


def fake_device(name: str) -> Any:
    """A fake IBM device by a forgiving name: 'fake_manila', 'FakeManilaV2', 'manila'."""
    import qiskit_ibm_runtime.fake_provider as fp

    table = _fake_backends()
    cls = table.get(_norm_device(name))
    if cls is None:
        some = ", ".join(sorted(k.replace("fake", "fake_", 1) for k in table)[:8])
        raise SimilarityError(
            f"unknown fake device {name!r}: use a fake IBM device from qiskit-ibm-runtime, e.g. "
            f"{some} (or a class name such as 'FakeManilaV2').")
    return getattr(fp, cls)()


def _noise_setup(noise: Any, n_qubits_needed: int, seed: int | None):
    """(simulator, transpile target backend or None, description) for a noise choice."""
    from qiskit_aer import AerSimulator

    if noise is None:
        return AerSimulator(), None
    if isinstance(noise, (int, float)) and not isinstance(noise, bool):
        p = float(noise)
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise SimilarityError(
                f"noise={noise!r}: a depolarising level must be a number in [0, 1] (e.g. 0.01), "
                "or give the name of a fake IBM device such as 'fake_manila'.")
        from qiskit_aer.noise import NoiseModel, depolarizing_error

        nm = NoiseModel(basis_gates=["u", "cx"])
        if p > 0:
            nm.add_all_qubit_quantum_error(depolarizing_error(p, 1), ["u"])
            nm.add_all_qubit_quantum_error(depolarizing_error(p, 2), ["cx"])
        return AerSimulator(noise_model=nm, basis_gates=["u", "cx"]), "basis"
    if isinstance(noise, str):
        dev = fake_device(noise)
        if dev.num_qubits < n_qubits_needed:
            raise SimilarityError(
                f"fake device {noise!r} has {dev.num_qubits} qubits but this circuit needs "
                f"{n_qubits_needed}; pick a larger device (e.g. 'fake_brisbane', 127 qubits) or "
                "fewer qubits / the compute_uncompute method.")
        return AerSimulator.from_backend(dev), "device"
    raise SimilarityError(
        f"noise={noise!r} is not understood: use None (ideal), a depolarising level in [0, 1], "
        "or a fake IBM device name such as 'fake_manila'.")


def pair_circuit(feature_map: FeatureMap, method: str = "compute_uncompute"
                 ) -> tuple[QuantumCircuit, Any, Any]:
    """The measured pair circuit with free parameters for both rows: (circuit, xparams, yparams).

    compute_uncompute: U(x) then U(y)^dagger on n qubits, all measured; P(0...0) = fidelity.
    swap: ancilla + two registers, U(x) and U(y), controlled swaps; P(ancilla=0) = (1 + F)/2.
    """
    from qiskit.circuit import ClassicalRegister, QuantumCircuit, QuantumRegister

    fm = _check_map(feature_map)
    ux, px = fm.parameterized("x")
    uy, py = fm.parameterized("y")
    n = fm.n_qubits
    if method == "compute_uncompute":
        qc = QuantumCircuit(n, name="compute_uncompute")
        qc.compose(ux, range(n), inplace=True)
        qc.compose(uy.inverse(), range(n), inplace=True)
        qc.measure_all()
        return qc, px, py
    if method == "swap":
        anc, a, b = QuantumRegister(1, "anc"), QuantumRegister(n, "a"), QuantumRegister(n, "b")
        c = ClassicalRegister(1, "c")
        qc = QuantumCircuit(anc, a, b, c, name="swap_test")
        qc.compose(ux, a, inplace=True)
        qc.compose(uy, b, inplace=True)
        qc.h(anc[0])
        for i in range(n):
            qc.cswap(anc[0], a[i], b[i])
        qc.h(anc[0])
        qc.measure(anc[0], c[0])
        return qc, px, py
    raise SimilarityError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")


def sampled_fidelity_matrix(XQ: Any, XS: Any, feature_map: FeatureMap, shots: int = 1024,
                            method: str = "compute_uncompute", noise: Any = None,
                            seed: int | None = None,
                            progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    """Shot-based fidelities (len(XQ), len(XS)) from qiskit-aer, all pairs in one run.

    noise: None (ideal), a depolarising level p in [0, 1] (1-qubit channel p after each 1-qubit
    gate, 2-qubit channel p after each CX), or a fake IBM device name ('fake_manila') whose
    coupling map, basis and noise model are used. For the swap test F = 2 P(0) - 1, clipped to
    [0, 1].
    """
    from qiskit import transpile

    fm = _check_map(feature_map)
    if method not in METHODS:
        raise SimilarityError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise SimilarityError(f"shots must be a positive integer (e.g. 1024), got {shots!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise SimilarityError(f"seed must be an integer or None, got {seed!r}.")
    PQ = fm.parameter_values(XQ)
    PS = fm.parameter_values(XS)
    Q, N = PQ.shape[0], PS.shape[0]
    if Q == 0 or N == 0:
        return np.zeros((Q, N))
    need = fm.n_qubits if method == "compute_uncompute" else 2 * fm.n_qubits + 1
    sim, target = _noise_setup(noise, need, seed)
    qc, px, py = pair_circuit(fm, method)
    tseed = 0 if seed is None else int(seed)
    if target == "basis":
        tqc = transpile(qc, basis_gates=["u", "cx"], optimization_level=0, seed_transpiler=tseed)
    else:
        tqc = transpile(qc, backend=sim, optimization_level=1 if target else 0,
                        seed_transpiler=tseed)
    # bindings for every pair, row-major over (query, case)
    binds: dict[Any, list[float]] = {}
    xs = np.repeat(PQ, N, axis=0)
    ys = np.tile(PS, (Q, 1))
    present = set(tqc.parameters)
    for j, p in enumerate(px):
        if p in present:
            binds[p] = xs[:, j].tolist()
    for j, p in enumerate(py):
        if p in present:
            binds[p] = ys[:, j].tolist()
    if progress:
        progress(0.0, f"sampling {Q * N} pairs x {shots} shots on qiskit-aer")
    run_kw: dict[str, Any] = {"shots": int(shots)}
    if seed is not None:
        run_kw["seed_simulator"] = int(seed)
    if binds:
        run_kw["parameter_binds"] = [binds]
    result = sim.run(tqc, **run_kw).result()
    if not result.success:  # pragma: no cover - simulator failure
        raise SimilarityError(f"qiskit-aer failed: {result.status}")
    p0 = np.empty(Q * N)
    for i, r in enumerate(result.results):
        p0[i] = r.data.counts.get("0x0", 0) / shots
    if len(result.results) == 1 and Q * N > 1:  # no free parameters left: same circuit for all
        p0[:] = p0[0]
    if progress:
        progress(1.0, "sampling done")
    F = p0 if method == "compute_uncompute" else np.clip(2.0 * p0 - 1.0, 0.0, 1.0)
    return F.reshape(Q, N)


# ----------------------------------------------------------------------------------------------
# diagnostics
# ----------------------------------------------------------------------------------------------

def kernel_diagnostics(K: Any, n_qubits: int | None = None,
                       feature_map: FeatureMap | None = None) -> dict[str, Any]:
    """How informative a fidelity (Gram) matrix is, in numbers and in plain words.

    ``effective_rank`` = exp(entropy of the normalised eigenvalues): ~1 when all cases look
    alike, ~m when the states are mutually orthogonal (K ~ identity). ``concentrated`` is set when
    off-diagonal fidelities sit near 1/2^n (random-like states) or barely vary at all; either way
    similarity stops telling cases apart and accuracy drops.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] == 0 or K.shape[1] == 0:
        raise SimilarityError(f"kernel_diagnostics needs a non-empty 2-D matrix, got shape {K.shape}.")
    if not np.isfinite(K).all():
        raise SimilarityError("kernel_diagnostics: the matrix has NaN or infinite entries.")
    if feature_map is not None and n_qubits is None:
        n_qubits = _check_map(feature_map).n_qubits
    square = K.shape[0] == K.shape[1]
    if square:
        off = K[~np.eye(K.shape[0], dtype=bool)]
        lam = np.linalg.eigvalsh(0.5 * (K + K.T))
    else:
        off = K.ravel()
        lam = np.linalg.svd(K, compute_uv=False) ** 2
    lam = np.clip(lam, 0.0, None)
    if lam.sum() > 0:
        p = lam / lam.sum()
        p = p[p > 0]
        eff = float(np.exp(-(p * np.log(p)).sum()))
    else:
        eff = 0.0
    mean = float(off.mean()) if off.size else float("nan")
    std = float(off.std()) if off.size else float("nan")
    m = K.shape[0]
    floor = 2.0 ** -n_qubits if n_qubits else None
    near_floor = bool(off.size and floor is not None and n_qubits >= 3 and mean <= 1.5 * floor)
    near_identity = bool(off.size and mean < 0.05 and eff > 0.9 * min(K.shape))
    tiny_spread = bool(off.size and std < 1e-3)
    concentrated = near_floor or near_identity or tiny_spread
    what = _describe_map(feature_map)
    if not off.size:
        hint = "one case only: nothing to compare."
    elif concentrated and mean < 0.5:
        lvl = f"1/2^n = {floor:.3g}" if floor else "0"
        hint = (f"{what} has concentrated: off-diagonal fidelities ~ {mean:.3g} (close to {lvl}), "
                "the states are nearly orthogonal so every case looks equally unlike the others; "
                "lower alpha (alpha='auto' tuning does this), use fewer reps or fewer qubits.")
    elif concentrated:
        hint = (f"{what} barely separates cases: all fidelities ~ {mean:.3g} with spread "
                f"{std:.2g}; raise alpha or spread the features over [0, pi].")
    else:
        hint = (f"{what} is informative: mean off-diagonal fidelity {mean:.3g} (spread {std:.2g}), "
                f"effective rank {eff:.1f} of {m}.")
    return {"mean_offdiag": mean, "std_offdiag": std, "effective_rank": eff,
            "concentrated": bool(concentrated), "hint": hint}


def _describe_map(fm: FeatureMap | None) -> str:
    if fm is None:
        return "the kernel"
    if isinstance(fm, ZZMap):
        return f"the zz map with alpha={fm.alpha:g}, reps={fm.reps} on {fm.n_qubits} qubits"
    return f"the {fm.name} map on {fm.n_qubits} qubits"


__all__ = [
    "CaseMemory", "SimilarityError", "fidelity_matrix", "kernel_diagnostics", "pair_circuit",
    "sampled_fidelity_matrix", "fake_device", "FeatureMapError",
]
