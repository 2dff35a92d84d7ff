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

import contextlib
import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from qcbr.encoding import (
    AmplitudeMap,
    AngleMap,
    FeatureMap,
    FeatureMapError,
    ZZMap,
    single_thread_blas,
)
from qcbr.errors import QCBRError

if TYPE_CHECKING:  # pragma: no cover
    from qiskit.circuit import QuantumCircuit

#: bytes of overlaps (complex Q x chunk) computed at once; bounds top-k memory over large N
CHUNK_BYTES = 16 * 2**20
#: angle maps use the O(n) closed form instead of 2**n-wide products from this many qubits on
ANGLE_CLOSED_FORM_FROM = 7
#: top-k for up to SCREEN_MAX_QUERIES queries over at least this many stored amplitudes screens
#: in complex64 first (one matrix-vector product per query: half the bytes of complex128, and
#: OpenBLAS's few-row complex GEMMs measured slower per query than that many GEMVs). Measured on
#: zz at 8 qubits (d = 256), one query, single BLAS thread: N = 10,000 -> 1.2 vs 2.6 ms warm,
#: 1.0 vs 5.9 ms inside the inference server (cache shared with the event loop and the client);
#: N = 1,000 -> 0.37 vs 0.41 ms; at N = 500 the two are equal. An endpoint coalesces concurrent
#: requests into batches of a few to ~16 rows, hence the query limit.
SCREEN_FROM_AMPLITUDES = 1 << 18
SCREEN_MAX_QUERIES = 16
#: this few queries make a matrix-vector-like (memory-bound) product: one BLAS thread
FEW_QUERIES = 4
#: the screening copy is rotated onto the stored states' principal axes from this many cases on
#: (smaller copies stay cache-resident, where reading all of it is as fast) while the rotation
#: costs at most ROTATE_MAX_WORK multiply-adds (N d^2) to build
ROTATE_FROM_CASES = 4096
ROTATE_MAX_WORK = 1 << 34
#: screening refines (reads more coefficients) until at most this many candidates remain
SCREEN_CANDIDATES = 256
#: exact overlaps of this many best-screened cases (at least 2k) bound the k-th best from below
SCREEN_PROBES = 16
#: products below this many multiply-adds (queries x cases x width) run on one BLAS thread
SMALL_PRODUCT = 1 << 23


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
    """One side of the overlaps (queries or stored cases) in its cheapest exact form.

    kind "complex": states ``v`` (m, d) complex128 (zz); "real": real vectors ``v`` whose dot
    product is the overlap (angle states for small n; amplitude rows, whose zero padding adds
    nothing); "angle": half-angle cos/sin ``cs`` (n, m, 2) for the product-state closed form.
    """

    kind: str
    m: int

    def __init__(self, fm: FeatureMap, X: Any) -> None:
        if isinstance(fm, AngleMap) and fm.n_qubits >= ANGLE_CLOSED_FORM_FROM:
            c, s = fm.half_angles(X)
            self.kind = "angle"
            self.cs = np.ascontiguousarray(np.stack([c.T, s.T], axis=-1))   # (n, m, 2)
            self.m = c.shape[0]
        elif isinstance(fm, (AngleMap, AmplitudeMap)):
            self.kind = "real"
            v = fm.real_statevectors(X) if isinstance(fm, AngleMap) else fm.normalised(X)
            self.v = np.ascontiguousarray(v)
            self.m = v.shape[0]
        else:
            self.kind = "complex"
            self.v = np.ascontiguousarray(fm.statevectors(X))
            self.m = self.v.shape[0]

    @property
    def nbytes(self) -> int:
        return self.cs.nbytes if self.kind == "angle" else self.v.nbytes

    def rows(self, idx: np.ndarray) -> "_Side":
        out = object.__new__(_Side)
        out.kind = self.kind
        if self.kind == "angle":
            out.cs = np.ascontiguousarray(self.cs[:, idx])
            out.m = out.cs.shape[1]
        else:
            out.v = self.v[idx]
            out.m = out.v.shape[0]
        return out


def _fidelity_into(q: _Side, s: _Side, lo: int, hi: int, out: np.ndarray,
                   buf: np.ndarray | None = None) -> None:
    """out[:, :hi-lo] = |<q_i|s_j>|^2 for stored rows lo..hi (out C-contiguous, (q.m, hi-lo))."""
    w = hi - lo
    if q.kind == "angle":
        # prod_i (cq cs + sq ss)^2: one rank-2 product per qubit
        qa, sa = q.cs, s.cs[:, lo:hi]
        np.matmul(qa[0], sa[0].T, out=out)
        tmp = (np.empty_like(out) if buf is None
               else buf.view(np.float64)[: out.size].reshape(out.shape))
        for i in range(1, qa.shape[0]):
            np.matmul(qa[i], sa[i].T, out=tmp)
            out *= tmp
        np.square(out, out=out)
        return
    if q.kind == "real":
        np.matmul(q.v, s.v[lo:hi].T, out=out)
        np.square(out, out=out)
        return
    G = np.empty((q.m, w), dtype=np.complex128) if buf is None else \
        buf[: q.m * w].reshape(q.m, w)
    np.matmul(q.vc, s.v[lo:hi].T, out=G)
    Gf = G.view(np.float64)
    np.square(Gf, out=Gf)
    np.add(Gf[:, 0::2], Gf[:, 1::2], out=out)


def _prepare_query(q: _Side) -> _Side:
    if q.kind == "complex" and not hasattr(q, "vc"):
        q.vc = np.ascontiguousarray(q.v.conj())
    return q


def _chunk_cols(Q: int, N: int) -> int:
    return max(1, min(N, CHUNK_BYTES // (16 * max(Q, 1))))


def _blas_context(q: _Side, s: _Side):
    """One BLAS thread for small products: a few queries (matrix-vector, memory-bound) or a few
    million multiply-adds gain nothing from a second thread, and on a busy machine an idle
    thread team turns a 0.3 ms product into a 50 ms one (measured medians)."""
    width = s.cs.shape[0] * 2 if s.kind == "angle" else s.v.shape[1]
    small = q.m <= FEW_QUERIES or q.m * s.m * width < SMALL_PRODUCT
    return single_thread_blas if small else contextlib.nullcontext()


def _fidelities(q: _Side, s: _Side) -> np.ndarray:
    _prepare_query(q)
    Q, N = q.m, s.m
    out = np.empty((Q, N))
    if Q == 0 or N == 0:
        return out
    C = _chunk_cols(Q, N)
    with _blas_context(q, s):
        if C >= N:
            _fidelity_into(q, s, 0, N, out)
            return out
        buf = np.empty(Q * C, dtype=np.complex128)
        blk = np.empty((Q, C))
        for lo in range(0, N, C):
            hi = min(N, lo + C)
            part = blk if hi - lo == C else np.empty((Q, hi - lo))
            _fidelity_into(q, s, lo, hi, part, buf)
            out[:, lo:hi] = part
    return out


def fidelity_matrix(XQ: Any, XS: Any, feature_map: FeatureMap) -> np.ndarray:
    """Exact fidelities float64 (len(XQ), len(XS)) between query rows and stored rows.

    Each side's states are built once and all pairs are one matrix product (zz: complex GEMM,
    then |.|^2; amplitude: cosine similarity squared; angle: the product-state closed form
    from 7 qubits on, where it beats 2**n-wide products).
    """
    fm = _check_map(feature_map)
    return _unit(_fidelities(_Side(fm, XQ), _Side(fm, XS)))


def _unit(F: np.ndarray) -> np.ndarray:
    """Clip rounding excursions (1 + 4e-16) back into [0, 1], where a fidelity lives."""
    return np.clip(F, 0.0, 1.0, out=F)


class _Screen:
    """Single-precision screening index of the stored states, with rigorous pruning bounds.

    Why: a top-k lookup for one query is a matrix-vector product over every stored state, so it
    is bound by memory bandwidth -- and on a busy machine bandwidth is what other processes take
    (10,000 zz states at 8 qubits: 41 MB in complex128; the same product measured 0.8 ms in a
    quiet loop and 6 ms inside a loaded server). Overlaps do not depend on the basis,
    <q|s> = <V^H q|V^H s> for unitary V; in the basis of the stored states' principal axes
    (eigenvectors of S^H S by decreasing weight) the first few dozen coefficients carry most of
    each state. So the screen reads the first b coefficients of every case (b = 32: an eighth of
    the single-precision copy), bounds the rest by Cauchy-Schwarz,
    |<q_tail|s_tail>| <= |q_tail| |s_tail|, and reads further blocks only while too many cases
    remain possible. The last stage is the whole single-precision product, as before.

    ``coef_t`` (d, N) complex64/float32: coefficients, transposed so that a block of leading
    coefficients is one contiguous slab; ``tails[i]`` float64 (N,): |s_tail| after ``cuts[i]``.
    """

    def __init__(self, side: "_Side") -> None:
        v = side.v
        N, d = v.shape
        self.complex = side.kind == "complex"
        dtype = np.complex64 if self.complex else np.float32
        self.basis_t: np.ndarray | None = None  # row i: <axis_i|, so coefficients = basis_t @ v
        if N >= ROTATE_FROM_CASES and d >= 64 and N * d * d <= ROTATE_MAX_WORK:
            sample = v if N <= 8192 else v[:: -(-N // 8192)]  # the axes need not be exact
            _, vecs = np.linalg.eigh(sample.conj().T @ sample)
            self.basis_t = np.ascontiguousarray(vecs[:, ::-1].T.conj())
            coef = v @ self.basis_t.T              # row j: <axis_i|s_j> for every axis i
            self.cuts = [b for b in (32, 64, 128, 256, 512, 1024, 2048, 4096) if b < d] + [d]
            sq = coef.real ** 2 + coef.imag ** 2 if self.complex else coef ** 2
            tail = np.cumsum(sq[:, ::-1], axis=1)[:, ::-1]  # tail[:, b] = sum over b..d-1
            # float32 (the screen's precision; rounding is covered by its tolerance)
            self.tails = [np.sqrt(tail[:, b]).astype(np.float32) for b in self.cuts[:-1]]
            del sq, tail
        else:
            coef = v
            self.cuts, self.tails = [d], []
        self.coef_t = np.ascontiguousarray(coef.T, dtype=dtype)

    @property
    def nbytes(self) -> int:
        extra = self.basis_t.nbytes if self.basis_t is not None else 0
        return self.coef_t.nbytes + extra + sum(t.nbytes for t in self.tails)

    def top_k(self, s: "_Side", q: "_Side", k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k for each query row (screen, then rescore the survivors in float64).

        Bounds, per stage with b coefficients read: the float32 partial overlap g_j differs from
        the exact partial overlap by at most 2 (b + 4) u for unit vectors (rounding both sides
        2u, complex products sqrt(5) u, the b-term sum (b - 1) u, doubled for safety); |g_j|,
        the float32 tail norms and the three float32 operations forming the bound (values <= 2)
        add at most 16u; the rotation is unitary to far below 1e-9, and |q_tail| is taken as
        sqrt(|q|^2 - |q_head|^2 + 1e-12) (float64), above the true tail norm. So
        UB_j = |g_j| + |q_tail| |s_tail,j| + tol >= |<q|s_j>|. A query's coefficients are
        computed a block at a time, as the stages need them. The exact overlaps of the
        SCREEN_PROBES best-screened cases give L <= the true k-th best |<q|s>|; a case with
        UB_j < L can be neither in the top-k nor tie with it, and is dropped.
        """
        N, d = self.coef_t.shape[1], self.coef_t.shape[0]
        u = float(np.finfo(np.float32).eps) / 2
        probes_n = min(N, max(SCREEN_PROBES, 2 * k))
        dtype = self.coef_t.dtype
        idx_out = np.empty((q.m, k), dtype=np.int64)
        sc_out = np.empty((q.m, k))
        fallback = max(4096, N // 8)
        for r in range(q.m):
            one = _prepare_query(q.rows(np.array([r])))
            qv = one.v[0]
            qc = one.vc[0] if self.complex else qv
            nq2 = float(np.vdot(qv, qv).real)
            head2 = 0.0
            g = None
            lo = 0
            for stage, b in enumerate(self.cuts):
                cq = self.basis_t[lo:b] @ qv if self.basis_t is not None else qv[lo:b]
                part = (cq.conj() if self.complex else cq).astype(dtype) @ self.coef_t[lo:b]
                g = part if g is None else np.add(g, part, out=g)
                lo = b
                A = np.abs(g)
                tol = np.float32(2.0 * (b + 4) * u + 16.0 * u + 1e-9)
                if b < d:
                    head2 += float(np.vdot(cq, cq).real)
                    q_tail = math.sqrt(max(0.0, nq2 - head2) + 1e-12)
                    UB = np.multiply(self.tails[stage], np.float32(q_tail))
                    UB += A
                else:
                    UB = A
                if stage == 0:  # L once: later stages would mostly probe the same cases
                    # the best-screened cases: at least probes_n of them (ties may add a few)
                    a_m = np.partition(A, N - probes_n)[N - probes_n]
                    probes = np.flatnonzero(A >= a_m)
                    exact = np.abs(s.v[probes] @ qc)
                    L = np.float32(np.partition(exact, exact.size - k)[exact.size - k] - 1e-9)
                cand = np.flatnonzero(UB >= L - tol)
                if cand.size <= SCREEN_CANDIDATES:
                    break
            if cand.size > fallback:  # flat kernel: screening gains nothing
                K = np.empty((1, s.m))
                _fidelity_into(one, s, 0, s.m, K)
                ci, cs = _top_k_rows(K, k)
            else:
                K = np.empty((1, cand.size))
                _fidelity_into(one, s.rows(cand), 0, cand.size, K)
                ci, cs = _top_k_rows(K, k)
                ci = cand[ci]
            idx_out[r], sc_out[r] = ci[0], cs[0]
        return idx_out, sc_out


class CaseMemory:
    """The stored cases' states, built once, for repeated similarity queries.

    Keep one per fitted model: building the states is the costly part for zz; each query is then
    a matrix product. ``top_k`` walks the cases in chunks (at most ``CHUNK_BYTES`` of overlaps
    at a time) and keeps only the running best k per query, so the Q x N matrix is never held.
    For a few queries against a large memory (a memory-bound matrix-vector product), it first
    screens with a single-precision index (``_Screen``: from ROTATE_FROM_CASES cases on, the
    states' coefficients on their principal axes, read a block at a time) and rescores the
    survivors exactly; every pruning bound includes a rigorous float32 error margin, so the
    result is the exact float64 top-k.
    """

    def __init__(self, feature_map: FeatureMap, XS: Any) -> None:
        self.feature_map = _check_map(feature_map)
        self._side = _Side(self.feature_map, XS)
        if self._side.m == 0:
            raise SimilarityError("CaseMemory needs at least one stored case, got none.")
        self._screen: _Screen | None = None

    @property
    def n_cases(self) -> int:
        return self._side.m

    @property
    def nbytes(self) -> int:
        """Bytes held for the stored cases (states or half-angles, plus any screening index)."""
        extra = self._screen.nbytes if self._screen is not None else 0
        return self._side.nbytes + extra

    def _screens(self, Q: int, k: int) -> bool:
        s = self._side
        return (s.kind != "angle" and Q <= SCREEN_MAX_QUERIES
                and s.m * s.v.shape[1] >= SCREEN_FROM_AMPLITUDES and s.m > 4 * k)

    def prepare(self) -> None:
        """Build the screening index now (a server calls this at load, not on its first request)."""
        if self._screen is None and self._screens(1, 1):
            self._screen = _Screen(self._side)

    def __len__(self) -> int:
        return self._side.m

    def fidelities(self, XQ: Any) -> np.ndarray:
        """Exact fidelities float64 (len(XQ), n_cases)."""
        return _unit(_fidelities(_Side(self.feature_map, XQ), self._side))

    def top_k(self, XQ: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar stored cases per query: (indices int64 (q,k), scores (q,k)).

        Sorted by descending score; equal scores keep the lower case index first. k larger than
        the memory returns every case.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise SimilarityError(f"k must be a positive integer, got {k!r}.")
        k = min(int(k), self.n_cases)
        q = _prepare_query(_Side(self.feature_map, XQ))
        Q, N = q.m, self.n_cases
        if Q == 0:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
        s = self._side
        if self._screens(Q, k):
            if self._screen is None:
                self._screen = _Screen(s)
            with single_thread_blas:  # memory-bound products: a second thread only adds contention
                best_i, best_s = self._screen.top_k(s, q, k)
            return best_i, _unit(best_s)
        C = max(k, _chunk_cols(Q, N))
        best_i = np.zeros((Q, 0), dtype=np.int64)
        best_s = np.zeros((Q, 0))
        buf = np.empty(Q * min(C, N), dtype=np.complex128)
        with _blas_context(q, s):
            for lo in range(0, N, C):
                hi = min(N, lo + C)
                K = np.empty((Q, hi - lo))
                _fidelity_into(q, s, lo, hi, K, buf)
                ci, cs = _top_k_rows(K, k)
                best_i, best_s = _merge(best_i, best_s, ci + lo, cs, k)
        return best_i, _unit(best_s)


def _top_k_rows(K: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns per row of K, sorted by score descending then column ascending."""
    Q, W = K.shape
    kk = min(k, W)
    if kk < W:
        part = np.argpartition(-K, kk - 1, axis=1)[:, :kk]
        # argpartition may cut a tie at the k-th score arbitrarily: pull in every column that
        # ties the k-th value, so the lower index wins as documented
        kth = np.take_along_axis(K, part, axis=1).min(axis=1, keepdims=True)
        if (np.count_nonzero(K >= kth, axis=1) > kk).any():
            part = np.argsort(-K, axis=1, kind="stable")[:, :kk]
    else:
        part = np.broadcast_to(np.arange(W), (Q, W))
    sc = np.take_along_axis(K, part, axis=1)
    order = np.lexsort((part, -sc), axis=-1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(sc, order, axis=1)


def _merge(ai: np.ndarray, as_: np.ndarray, bi: np.ndarray, bs: np.ndarray, k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    ci = np.concatenate([ai, bi], axis=1)
    cs = np.concatenate([as_, bs], axis=1)
    order = np.lexsort((ci, -cs), axis=-1)[:, :k]
    return np.take_along_axis(ci, order, axis=1), np.take_along_axis(cs, order, axis=1)


# ----------------------------------------------------------------------------------------------
# sampled similarity (qiskit-aer)
# ----------------------------------------------------------------------------------------------

METHODS = ("compute_uncompute", "swap")
#: pairs per simulator run; one run covers every request of ordinary size
MAX_BINDINGS_PER_RUN = 50_000


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

    # Small circuits: one OpenMP thread. Aer does not parallelise a <14-qubit statevector anyway,
    # and an idle thread team costs ~10x on a busy machine (measured). Parameters are bound inside
    # Aer's C++ loop (runtime binding) where the circuit allows it.
    opts: dict[str, Any] = {"max_parallel_threads": 1} if n_qubits_needed < 14 else {}
    if noise is None:
        return AerSimulator(runtime_parameter_bind_enable=True, **opts), None
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
        return AerSimulator(noise_model=nm, basis_gates=["u", "cx"],
                            runtime_parameter_bind_enable=True, **opts), "basis"
    if isinstance(noise, str):
        dev = fake_device(noise)
        if dev.num_qubits < n_qubits_needed:
            raise SimilarityError(
                f"fake device {noise!r} has {dev.num_qubits} qubits but this circuit needs "
                f"{n_qubits_needed}; pick a larger device (e.g. 'fake_brisbane', 127 qubits) or "
                "fewer qubits / the compute_uncompute method.")
        # (runtime binding rejects some device-transpiled parameter expressions: bind per experiment)
        return AerSimulator.from_backend(dev, **opts), "device"
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
    # bindings for every pair, row-major over (query, case); very large requests go in a few
    # runs of MAX_BINDINGS_PER_RUN (bounded memory, progress), never one run per pair
    present = set(tqc.parameters)
    # (parameter, side, column): the side is named, never told apart by identity -- XQ and XS
    # may be the very same array
    cols = [(p, "q", j) for j, p in enumerate(px) if p in present] + \
           [(p, "s", j) for j, p in enumerate(py) if p in present]
    total = Q * N
    p0 = np.empty(total)
    runs = max(1, -(-total // MAX_BINDINGS_PER_RUN))
    if progress:
        progress(0.0, f"sampling {total:,} pairs x {shots} shots on qiskit-aer")
    for r in range(runs):
        lo, hi = r * total // runs, (r + 1) * total // runs
        flat = np.arange(lo, hi)
        qi, si = flat // N, flat % N
        run_kw: dict[str, Any] = {"shots": int(shots)}
        if seed is not None:  # reproducible, and a different seed for every run
            run_kw["seed_simulator"] = int(seed) + lo
        if cols:
            run_kw["parameter_binds"] = [{
                p: (PQ[qi, j] if side == "q" else PS[si, j]).tolist() for p, side, j in cols}]
        result = sim.run(tqc, **run_kw).result()
        if not result.success:  # pragma: no cover - simulator failure
            raise SimilarityError(f"qiskit-aer failed: {result.status}")
        counts = [res.data.counts.get("0x0", 0) for res in result.results]
        p0[lo:hi] = np.asarray(counts if cols else counts * (hi - lo), dtype=float) / shots
        if progress:
            progress(hi / total, f"sampled {hi:,} of {total:,} pairs")
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
