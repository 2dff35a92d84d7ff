"""Feature maps: classical rows -> quantum states, as qiskit circuits and as fast statevectors.

Each map has two faces that must agree to 1e-10 (the property tests hold them to it):

* ``.circuit(x)`` -- the real qiskit circuit, to draw, export as OpenQASM 3, transpile for a
  device, or run on a shot-based simulator;
* ``.statevectors(X)`` -- the same states for many rows at once, built from closed forms with
  numpy (never one simulation per row), because similarity over thousands of cases needs them.

Maps:

``angle``
    ``RY(x_i)`` on qubit ``i``: a product state, ``cos(x_i/2)|0> + sin(x_i/2)|1>`` per qubit.
    The fidelity of two rows has the closed form ``prod_i cos^2((x_i - y_i)/2)``.
``zz``
    Exactly ``qiskit.circuit.library.zz_feature_map(n, reps, entanglement, alpha)``: ``reps``
    times a Hadamard layer followed by the diagonal phase layer
    ``exp(i*alpha*(sum_i x_i b_i + sum_(i,j) (pi - x_i)(pi - x_j) (b_i xor b_j)))`` over the
    computational basis ``b`` (``P`` gates and ``CX-P-CX`` blocks are exactly these phases, with no
    global phase). ``alpha`` is the kernel bandwidth: qiskit's default ``alpha=2`` makes states of
    different rows nearly orthogonal for n >~ 4 (fidelities ~ 1/2^n, "concentration").
``amplitude``
    The row, zero-padded to ``2**n`` and normalised, is the state's amplitude vector. The fidelity
    of two rows is therefore their **cosine similarity squared**: the encoding is scale-invariant
    and a row of zeros has no state. The circuit is a Moettoenen-style tree of uniformly
    controlled RY rotations (RY and CX gates only), so it exports and transpiles like the others;
    its free parameters are the tree's rotation angles (``parameter_values(X)`` computes them).
"""
from __future__ import annotations

import abc
import math
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from qcbr.errors import QCBRError

if TYPE_CHECKING:  # pragma: no cover
    from qiskit.circuit import ParameterVector, QuantumCircuit

MAX_QUBITS = 20
_BLOCK_AMPLITUDES = 1 << 16  # rows per block * 2**n: ~1 MB of complex128, cache-resident
FEATURE_MAPS = ("angle", "zz", "amplitude")
ENTANGLEMENTS = ("full", "linear", "reverse_linear", "circular")


class FeatureMapError(QCBRError, ValueError):
    """A feature map was asked for with bad parameters, or given rows it cannot encode."""


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _bits(n: int) -> np.ndarray:
    """(n, 2**n) 0/1 matrix: row i holds bit i (qubit i, little-endian as in qiskit) of each index."""
    idx = np.arange(2**n, dtype=np.int64)
    return ((idx[None, :] >> np.arange(n, dtype=np.int64)[:, None]) & 1).astype(np.float64)


class _SingleThreadBLAS:
    """Run small GEMMs on one BLAS thread: waking the pool for 16x16 blocks costs more than the
    work, and on a busy machine multi-threaded small GEMMs stall (measured: 7 ms vs 1 ms).
    Re-entrant and thread-safe: the first entrant limits, the last one restores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter: Any = None
        self._controller: Any = None
        self._available = True

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0 and self._available:
                try:
                    if self._controller is None:
                        from threadpoolctl import ThreadpoolController

                        self._controller = ThreadpoolController()
                    self._limiter = self._controller.limit(limits=1, user_api="blas")
                except Exception:  # pragma: no cover - threadpoolctl missing or unsupported
                    self._available = False
                    self._limiter = None
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


single_thread_blas = _SingleThreadBLAS()


def fwht(v: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh-Hadamard transform along the last axis (length 2**n), in place.

    ``H^{(x)n} = fwht / sqrt(2**n)``. Plain butterflies over all rows at once; used for small
    arrays (tree angles). States use ``_wht_cols``, which runs the same transform as GEMMs.
    """
    d = v.shape[-1]
    lead = v.shape[:-1]
    h = 1
    while h < d:
        w = v.reshape(*lead, d // (2 * h), 2, h)
        a = w[..., 0, :].copy()
        b = w[..., 1, :]
        w[..., 0, :] += b
        np.subtract(a, b, out=b)
        h *= 2
    return v


_WHT_CHUNK = 5  # bits per Hadamard block: 32 x 32 matrices keep the GEMMs cache-resident


def _hadamard(k: int) -> np.ndarray:
    """The unnormalised 2**k x 2**k Walsh-Hadamard matrix (Sylvester order = qiskit's order)."""
    H = np.ones((1, 1))
    for _ in range(k):
        H = np.block([[H, H], [H, -H]])
    return H


_HCACHE: dict[int, np.ndarray] = {}


def _hblock(k: int) -> np.ndarray:
    if k not in _HCACHE:
        _HCACHE[k] = np.ascontiguousarray(_hadamard(k))
    return _HCACHE[k]


def _wht_cols(z: np.ndarray) -> np.ndarray:
    """Unnormalised WHT of each column of a C-contiguous complex128 (2**n, m) array -> new array.

    ``H^{(x)n} = H^{(x)c_k} (x) ... (x) H^{(x)c_1}``: each block of <= 5 qubits is one stacked real
    GEMM on the float64 view, so the transform is a few BLAS calls instead of n butterfly passes.
    """
    d, m = z.shape
    n = d.bit_length() - 1
    if n == 0:
        return z.copy()
    k = -(-n // _WHT_CHUNK)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    cur = z.view(np.float64)  # (d, 2m)
    s = 0
    for c in sizes:
        above = d >> (s + c)
        blk = cur.reshape(above, 2**c, (1 << s) * 2 * m)
        cur = np.matmul(_hblock(c), blk) if above > 1 else _hblock(c) @ blk[0]
        s += c
    return np.ascontiguousarray(cur).reshape(d, 2 * m).view(np.complex128)


def _check_rows(X: Any, n_features: int | None, name: str, *, max_features: int | None = None
                ) -> np.ndarray:
    """Rows as a float64 (m, f) array; errors name the row/column that is wrong."""
    try:
        arr = np.asarray(X)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise FeatureMapError(f"{name}: cannot read the input as a numeric array ({exc}).") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise FeatureMapError(
            f"{name}: input must be numeric (got dtype {arr.dtype}); preprocess the cases first "
            "(qcbr.preprocessing.Preprocessor turns any case table into angles in [0, pi]).")
    if np.iscomplexobj(arr):
        raise FeatureMapError(f"{name}: input must be real numbers, got complex values.")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise FeatureMapError(
            f"{name}: expected one row (1-D) or a table of rows (2-D), got an array of shape "
            f"{arr.shape}.")
    f = arr.shape[1]
    if n_features is not None and f != n_features:
        raise FeatureMapError(
            f"{name}: expects {n_features} features per row, got {f}. Use n_qubits={f} for this "
            f"data, or reduce the data to {n_features} features (PCA in the preprocessor).")
    if max_features is not None and not 1 <= f <= max_features:
        raise FeatureMapError(
            f"{name}: takes 1..{max_features} features per row (2**n_qubits), got {f}. Use "
            f"n_qubits >= {max(1, math.ceil(math.log2(max(f, 1))))} or reduce the features.")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows, cols = np.nonzero(bad)
        where = ", ".join(f"(row {r}, feature {c})" for r, c in list(zip(rows, cols))[:5])
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise FeatureMapError(
            f"{name}: input has NaN or infinite values at {where}{more}; impute or drop them "
            "before encoding.")
    return arr


def _zz_levels_t(k: int, singles: np.ndarray, pair: dict[tuple[int, int], np.ndarray],
                 out: np.ndarray | None = None) -> np.ndarray:
    """exp(i (sum_i s_i b_i + sum_(i<j) p_ij (b_i xor b_j))) over k bits, as (2**k, m).

    Adding bit L to the diagonal D over bits < L gives ``[D * P, D * c * conj(P)]`` with
    ``P(b) = prod_{j<L} e^{i p_jL b_j}`` built by doubling and ``c = e^{i (s_L + sum_j p_jL)}``.
    """
    m = singles.shape[1]
    d = 1 << k
    D = np.empty((d, m), dtype=np.complex128) if out is None else out
    D[0] = 1.0
    D[1] = np.exp(1j * singles[0])
    if k == 1:
        return D
    P = np.empty((d // 2, m), dtype=np.complex128)
    Pc = np.empty((d // 2, m), dtype=np.complex128)
    for L in range(1, k):
        h = 1 << L
        js = [j for j in range(L) if (j, L) in pair]
        tot = singles[L].copy()
        for j in js:
            tot += pair[(j, L)]
        P[0] = 1.0
        Pc[0] = np.exp(1j * tot)
        for j in range(L):
            lo, hi = 1 << j, 1 << (j + 1)
            if (j, L) in pair:
                w = np.exp(1j * pair[(j, L)])
                np.multiply(P[:lo], w, out=P[lo:hi])
                np.multiply(Pc[:lo], w.conj(), out=Pc[lo:hi])
            else:
                P[lo:hi] = P[:lo]
                Pc[lo:hi] = Pc[:lo]
        np.multiply(D[:h], Pc[:h], out=D[h : 2 * h])
        D[:h] *= P[:h]
    return D


def _zz_diag_t(bits: list[int], singles: np.ndarray, pair: dict[tuple[int, int], np.ndarray],
               out: np.ndarray | None = None) -> np.ndarray:
    """Phase diagonal (2**k, m) for bits 0..k-1; large k split into a low and a high half.

    With b = (low, high): ``b_i xor b_j = b_i + b_j - 2 b_i b_j`` turns each cross pair into
    single-bit phases on both halves plus ``e^{-2i p_ij b_i b_j}``; for a fixed high pattern
    that last factor is a product over low bits, so the whole diagonal is
    ``A(low) * B(high) * prod_i g_i(high)^{b_i}`` -- a handful of array operations.
    """
    k = len(bits)
    m = singles.shape[1]
    if k <= 4:
        return _zz_levels_t(k, singles, pair, out)
    lo_n = k // 2
    hi_n = k - lo_n
    s_lo = singles[:lo_n].copy()
    s_hi = singles[lo_n:].copy()
    p_lo: dict[tuple[int, int], np.ndarray] = {}
    p_hi: dict[tuple[int, int], np.ndarray] = {}
    cross = np.zeros((lo_n, hi_n, m))
    for (i, j), p in pair.items():
        if j < lo_n:
            p_lo[(i, j)] = p
        elif i >= lo_n:
            p_hi[(i - lo_n, j - lo_n)] = p
        else:
            s_lo[i] += p
            s_hi[j - lo_n] += p
            cross[i, j - lo_n] = p
    A = _zz_diag_t(bits[:lo_n], s_lo, p_lo)                   # (2**lo, m)
    B = _zz_diag_t(bits[lo_n:], s_hi, p_hi)                   # (2**hi, m)
    dl, dh = 1 << lo_n, 1 << hi_n
    # g_i(high) = prod_{j high} e^{-2i p_ij b_j}: doubling over the high bits, all i at once
    G = np.empty((lo_n, dh, m), dtype=np.complex128)
    G[:, 0] = 1.0
    e = np.exp(-2j * cross)                                   # (lo, hi, m)
    for t in range(hi_n):
        np.multiply(G[:, : 1 << t], e[:, t][:, None, :], out=G[:, 1 << t : 2 << t])
    D = np.empty((dh * dl, m), dtype=np.complex128) if out is None else out
    D3 = D.reshape(dh, dl, m)
    D3[:, 0] = B
    for i in range(lo_n):
        np.multiply(D3[:, : 1 << i], G[i][:, None, :], out=D3[:, 1 << i : 2 << i])
    D3 *= A[None, :, :]
    return D


# ----------------------------------------------------------------------------------------------
# feature maps
# ----------------------------------------------------------------------------------------------

class FeatureMap(abc.ABC):
    """Base of the three maps; subclasses give the circuit and the closed-form statevectors."""

    name: str = ""
    is_product: bool = False

    def __init__(self, n_qubits: int) -> None:
        self.n_qubits = int(n_qubits)

    # --- description ---------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """JSON-able description; ``get_feature_map(**fm.params)`` rebuilds an equal map."""
        return {"name": self.name, "n_qubits": self.n_qubits, **self._extra_params()}

    def _extra_params(self) -> dict[str, Any]:
        return {}

    @property
    def n_features(self) -> int:
        return self.n_qubits

    @property
    def dim(self) -> int:
        return 2**self.n_qubits

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if k != "name")
        return f"get_feature_map({self.name!r}, {args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureMap) and self.params == other.params

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, str(v)) for k, v in self.params.items())))

    # --- inputs --------------------------------------------------------------------------
    def check(self, X: Any) -> np.ndarray:
        """Validate rows for this map; returns float64 (m, n_features)."""
        return _check_rows(X, self.n_features, f"{self.name} feature map")

    def parameter_values(self, X: Any) -> np.ndarray:
        """Values for ``parameterized()``'s parameters, one row per input row."""
        return self.check(X)

    # --- circuits ------------------------------------------------------------------------
    @abc.abstractmethod
    def parameterized(self, prefix: str = "x") -> tuple[QuantumCircuit, ParameterVector]:
        """The circuit with free parameters (a ParameterVector named ``prefix``)."""

    @cached_property
    def _template(self) -> tuple[QuantumCircuit, ParameterVector]:
        return self.parameterized()

    def circuit(self, x: Any) -> QuantumCircuit:
        """The bound circuit of one row (a plain QuantumCircuit of standard gates)."""
        arr = np.asarray(x)
        if arr.ndim != 1:
            raise FeatureMapError(
                f"{self.name} feature map: circuit(x) takes one row (1-D), got shape {arr.shape}; "
                "use statevectors(X) for many rows.")
        values = self.parameter_values(arr)[0]
        qc, params = self._template
        return qc.assign_parameters(dict(zip(params, values.tolist())), inplace=False)

    # --- states --------------------------------------------------------------------------
    @abc.abstractmethod
    def statevectors(self, X: Any) -> np.ndarray:
        """complex128 (m, 2**n): the state of each row, qiskit's little-endian order."""


class AngleMap(FeatureMap):
    """RY(x_i) on qubit i: product states, the cheapest map and the one with per-feature factors."""

    name = "angle"
    is_product = True

    def parameterized(self, prefix: str = "x") -> tuple[QuantumCircuit, ParameterVector]:
        from qiskit.circuit import ParameterVector, QuantumCircuit

        p = ParameterVector(prefix, self.n_qubits)
        qc = QuantumCircuit(self.n_qubits, name="AngleMap")
        for i in range(self.n_qubits):
            qc.ry(p[i], i)
        return qc, p

    def half_angles(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """cos(x/2), sin(x/2): the per-qubit amplitudes."""
        Xc = self.check(X)
        h = 0.5 * Xc
        return np.cos(h), np.sin(h)

    def real_statevectors(self, X: Any) -> np.ndarray:
        """float64 (m, 2**n): RY product states are real."""
        c, s = self.half_angles(X)
        m, n = c.shape
        out = np.stack([c[:, n - 1], s[:, n - 1]], axis=1)
        for i in range(n - 2, -1, -1):
            q = np.stack([c[:, i], s[:, i]], axis=1)
            out = (out[:, :, None] * q[:, None, :]).reshape(m, -1)
        return out

    def statevectors(self, X: Any) -> np.ndarray:
        return self.real_statevectors(X).astype(np.complex128)


class ZZMap(FeatureMap):
    """qiskit's zz_feature_map; states from phase layers and Walsh-Hadamard transforms."""

    name = "zz"

    def __init__(self, n_qubits: int, reps: int = 2, entanglement: str = "full",
                 alpha: float = 2.0) -> None:
        super().__init__(n_qubits)
        self.reps = int(reps)
        self.entanglement = str(entanglement)
        self.alpha = float(alpha)

    def _extra_params(self) -> dict[str, Any]:
        return {"reps": self.reps, "entanglement": self.entanglement, "alpha": self.alpha}

    @cached_property
    def pairs(self) -> list[tuple[int, int]]:
        """The ZZ couplings, as qiskit's entanglement strings define them."""
        n = self.n_qubits
        if n < 2:
            return []
        if self.entanglement == "full":
            return [(i, j) for i in range(n) for j in range(i + 1, n)]
        if self.entanglement == "linear":
            return [(i, i + 1) for i in range(n - 1)]
        if self.entanglement == "reverse_linear":
            return [(i, i + 1) for i in range(n - 2, -1, -1)]
        # circular: linear plus (n-1, 0) when that is a new pair
        lin = [(i, i + 1) for i in range(n - 1)]
        return ([(n - 1, 0)] + lin) if n > 2 else lin

    @cached_property
    def _phase_basis(self) -> np.ndarray:
        """(n + P, 2**n): bit b_i rows then parity b_i xor b_j rows; phase = alpha * F(x) @ this."""
        B = _bits(self.n_qubits)
        if not self.pairs:
            return B
        ii = np.array([p[0] for p in self.pairs])
        jj = np.array([p[1] for p in self.pairs])
        par = np.abs(B[ii] - B[jj])
        return np.ascontiguousarray(np.concatenate([B, par], axis=0))

    def phase_features(self, X: Any) -> np.ndarray:
        """(m, n + P): x_i, then (pi - x_i)(pi - x_j) per coupled pair."""
        Xc = self.check(X)
        if not self.pairs:
            return Xc
        ii = np.array([p[0] for p in self.pairs])
        jj = np.array([p[1] for p in self.pairs])
        Y = np.pi - Xc
        return np.concatenate([Xc, Y[:, ii] * Y[:, jj]], axis=1)

    def phases(self, X: Any) -> np.ndarray:
        """(m, 2**n) real phases of the diagonal layer (the direct formula; ``diagonal`` is the
        fast way to their exponentials)."""
        return self.alpha * (self.phase_features(X) @ self._phase_basis)

    def parameterized(self, prefix: str = "x") -> tuple[QuantumCircuit, ParameterVector]:
        from qiskit.circuit import ParameterVector, QuantumCircuit
        from qiskit.circuit.library import pauli_feature_map, zz_feature_map

        if self.n_qubits == 1:  # qiskit's zz_feature_map needs 2 qubits; one qubit has no ZZ
            qc = pauli_feature_map(1, reps=self.reps, alpha=self.alpha, paulis=["z"],
                                   parameter_prefix=prefix, name="ZZFeatureMap")
        else:
            qc = zz_feature_map(self.n_qubits, reps=self.reps, entanglement=self.entanglement,
                                alpha=self.alpha, parameter_prefix=prefix, name="ZZFeatureMap")
        params = sorted(qc.parameters, key=lambda p: p.index)
        vec = params[0].vector if params else ParameterVector(prefix, 0)
        named = QuantumCircuit(self.n_qubits, name="ZZFeatureMap")  # register "q", like the others
        named.compose(qc, inplace=True)
        return named, vec

    def diagonal(self, X: Any) -> np.ndarray:
        """complex128 (m, 2**n): exp(i * phases) without evaluating 2**n exponentials per row.

        The phase is a sum over qubits and coupled pairs, so its exponential is a product of
        u_i = e^{i alpha x_i} per set bit and v_ij = e^{i alpha phi_ij} per odd pair parity. Adding
        qubit L (the new top bit) to a diagonal D over bits < L gives ``[D * P, D * c * conj(P)]``
        with ``P(b) = prod_{j<L coupled} v_jL^{b_j}`` (built by doubling) and
        ``c = u_L * prod_j v_jL``: n + P exponentials and ~4 * 2**n complex multiplications per row.
        """
        Xc = self.check(X)
        return np.ascontiguousarray(self._diagonal_t(Xc).T)

    def _diagonal_t(self, Xc: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The diagonal transposed, (2**n, m): the block's rows are the contiguous axis, so every
        doubling step is one contiguous block operation whatever its width."""
        n = self.n_qubits
        a = self.alpha
        Xt = Xc.T
        Y = np.pi - Xt
        singles = a * Xt                                               # (n, m)
        pair = {(i, j): a * (Y[i] * Y[j]) for i, j in self._sorted_pairs}
        return _zz_diag_t(list(range(n)), singles, pair, out)

    @cached_property
    def _sorted_pairs(self) -> list[tuple[int, int]]:
        return sorted({(min(i, j), max(i, j)) for i, j in self.pairs})

    def statevectors(self, X: Any) -> np.ndarray:
        Xc = self.check(X)
        with single_thread_blas:
            return self._statevectors(Xc)

    def _statevectors(self, Xc: np.ndarray) -> np.ndarray:
        m, d = Xc.shape[0], self.dim
        out = np.empty((m, d), dtype=np.complex128)
        scale = 1.0 / math.sqrt(d)
        block = max(1, _BLOCK_AMPLITUDES // d)
        D = np.empty((d, min(block, m)), dtype=np.complex128)
        for start in range(0, m, block):
            stop = min(m, start + block)
            Db = self._diagonal_t(Xc[start:stop], out=D[:, : stop - start] if stop - start
                                  == D.shape[1] else None)
            Db *= scale                    # first rep: H|0...0> is the uniform state 1/sqrt(d)
            psi = Db
            for _ in range(self.reps - 1):
                psi = _wht_cols(psi)
                psi *= Db                  # D/sqrt(d) applied after each H layer
            out[start:stop] = psi.T
        return out


class AmplitudeMap(FeatureMap):
    """Row -> normalised amplitude vector. Fidelity = cosine similarity squared."""

    name = "amplitude"

    def __init__(self, n_qubits: int, n_features: int | None = None) -> None:
        super().__init__(n_qubits)
        self._n_features = None if n_features is None else int(n_features)

    def _extra_params(self) -> dict[str, Any]:
        return {} if self._n_features is None else {"n_features": self._n_features}

    @property
    def n_features(self) -> int:
        return self.dim if self._n_features is None else self._n_features

    def check(self, X: Any) -> np.ndarray:
        return _check_rows(X, self._n_features, "amplitude feature map", max_features=self.dim)

    def normalised(self, X: Any) -> np.ndarray:
        """float64 (m, f): each row divided by its norm (the state before zero-padding)."""
        Xc = self.check(X)
        norms = np.linalg.norm(Xc, axis=1)
        zero = norms == 0.0
        if zero.any():
            rows = np.nonzero(zero)[0]
            raise FeatureMapError(
                f"amplitude feature map: row(s) {rows[:5].tolist()} are all zeros and have no "
                "quantum state (amplitudes must have a non-zero norm). Shift the features "
                "(e.g. angles in [0, pi] plus a constant) or use the angle/zz map.")
        return Xc / norms[:, None]

    def real_statevectors(self, X: Any) -> np.ndarray:
        U = self.normalised(X)
        out = np.zeros((U.shape[0], self.dim))
        out[:, : U.shape[1]] = U
        return out

    def statevectors(self, X: Any) -> np.ndarray:
        return self.real_statevectors(X).astype(np.complex128)

    # --- circuit: a tree of uniformly controlled RY rotations ----------------------------
    # Level l acts on qubit t = n-1-l, controlled by the l qubits above it. Its 2**l tree angles
    # a_c (c = value of the control qubits t+1.. as an integer) split each branch's weight
    # between b_t = 0 and 1. A uniformly controlled RY is realised with 2**l RY(theta_i) and
    # 2**l CX in Gray-code order: a_c = sum_i (-1)^{popcount(c & g(i))} theta_i, g(i) = i ^ (i>>1),
    # so theta = W[g] a / 2**l (W the Walsh-Hadamard matrix). The parameters are the thetas.

    def tree_angles(self, X: Any) -> list[np.ndarray]:
        """Per level l, (m, 2**l) RY angles of the state-preparation tree."""
        A = self.real_statevectors(X)
        m, n = A.shape[0], self.n_qubits
        out = []
        for level in range(n):
            t = n - 1 - level
            blocks = A.reshape(m, 2**level, 2, 2**t)
            if t == 0:
                a0, a1 = blocks[..., 0, 0], blocks[..., 1, 0]
            else:
                a0 = np.linalg.norm(blocks[:, :, 0, :], axis=-1)
                a1 = np.linalg.norm(blocks[:, :, 1, :], axis=-1)
            out.append(2.0 * np.arctan2(a1, a0))
        return out

    def parameter_values(self, X: Any) -> np.ndarray:
        """(m, 2**n - 1) gate angles theta for ``parameterized()``, level by level."""
        cols = []
        for level, a in enumerate(self.tree_angles(X)):
            k = 2**level
            g = np.arange(k) ^ (np.arange(k) >> 1)
            theta = fwht(a.copy()) / k  # W a / k, W symmetric
            cols.append(theta[:, g])
        return np.concatenate(cols, axis=1)

    def parameterized(self, prefix: str = "x") -> tuple[QuantumCircuit, ParameterVector]:
        from qiskit.circuit import ParameterVector, QuantumCircuit

        n = self.n_qubits
        p = ParameterVector(prefix, 2**n - 1)
        qc = QuantumCircuit(n, name="AmplitudeMap")
        pos = 0
        for level in range(n):
            t = n - 1 - level
            k = 2**level
            for i in range(k):
                qc.ry(p[pos + i], t)
                if level == 0:
                    continue
                g_now, g_next = i ^ (i >> 1), ((i + 1) % k) ^ (((i + 1) % k) >> 1)
                bit = (g_now ^ g_next).bit_length() - 1
                qc.cx(t + 1 + bit, t)
            pos += k
        return qc, p


# ----------------------------------------------------------------------------------------------
# factory
# ----------------------------------------------------------------------------------------------

_PARAMS = {
    "angle": set(),
    "zz": {"reps", "entanglement", "alpha"},
    "amplitude": {"n_features"},
}


def get_feature_map(name: str, n_qubits: int, **params: Any) -> FeatureMap:
    """Build a feature map by name; every bad argument gets a message that says how to fix it."""
    if not isinstance(name, str) or name.lower() not in FEATURE_MAPS:
        raise FeatureMapError(
            f"unknown feature map {name!r}; choose one of {', '.join(FEATURE_MAPS)}.")
    name = name.lower()
    if isinstance(n_qubits, bool) or not isinstance(n_qubits, (int, np.integer)):
        raise FeatureMapError(f"n_qubits must be an integer in 1..{MAX_QUBITS}, got {n_qubits!r}.")
    if not 1 <= int(n_qubits) <= MAX_QUBITS:
        raise FeatureMapError(
            f"n_qubits={n_qubits} is out of range: use 1..{MAX_QUBITS} (statevectors have 2**n "
            "amplitudes; reduce the features with PCA to fit the qubit budget).")
    unknown = set(params) - _PARAMS[name]
    if unknown:
        allowed = ", ".join(sorted(_PARAMS[name])) or "none"
        raise FeatureMapError(
            f"feature map {name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
            f"its parameters are: {allowed}.")
    n = int(n_qubits)
    if name == "angle":
        return AngleMap(n)
    if name == "zz":
        reps = params.get("reps", 2)
        if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < 1:
            raise FeatureMapError(f"zz feature map: reps must be an integer >= 1, got {reps!r}.")
        ent = params.get("entanglement", "full")
        if ent not in ENTANGLEMENTS:
            raise FeatureMapError(
                f"zz feature map: unknown entanglement {ent!r}; choose one of "
                f"{', '.join(ENTANGLEMENTS)}.")
        alpha = params.get("alpha", 2.0)
        try:
            alpha_f = float(alpha)
        except (TypeError, ValueError):
            alpha_f = float("nan")
        if isinstance(alpha, bool) or not math.isfinite(alpha_f) or alpha_f <= 0:
            raise FeatureMapError(
                f"zz feature map: alpha must be a finite number > 0, got {alpha!r} (smaller alpha "
                "= wider kernel; qiskit's default is 2.0).")
        return ZZMap(n, reps=int(reps), entanglement=ent, alpha=alpha_f)
    nf = params.get("n_features")
    if nf is not None:
        if isinstance(nf, bool) or not isinstance(nf, (int, np.integer)) or not 1 <= nf <= 2**n:
            raise FeatureMapError(
                f"amplitude feature map: n_features must be an integer in 1..{2**n} (2**n_qubits), "
                f"got {nf!r}; use more qubits or fewer features.")
    return AmplitudeMap(n, n_features=None if nf is None else int(nf))


def feature_map_from_params(params: dict[str, Any]) -> FeatureMap:
    """Inverse of ``FeatureMap.params`` (for model artifacts)."""
    p = dict(params)
    try:
        name = p.pop("name")
        n = p.pop("n_qubits")
    except KeyError as exc:
        raise FeatureMapError(f"feature map description is missing {exc.args[0]!r}: {params!r}")
    return get_feature_map(name, n, **p)
