"""The qCBR paper's reuse step: a data re-uploading variational quantum classifier.

Atchade Adelomou, Fauli & Alarcon ("Quantum case-based reasoning (qCBR)", Artificial
Intelligence Review, 2022) adapt the solution of retrieved cases with a variational classifier
built on data re-uploading (Perez-Salinas et al., Quantum 4, 226, 2020): the input is loaded again
in every layer, which is what lets a few qubits learn non-linear class boundaries.

Circuit, per layer ``l`` (qubit q, input row x of d features):

    RY(w[l, q] . x + b[l, q])  on each qubit      (the re-upload: a trainable affine map of x)
    RZ(theta[l, q])            on each qubit
    CZ(q, q + 1)               for q = 0 .. n-2    (an entangling chain)

then every qubit is measured. Class c's probability is the total probability of the basis states
whose index is c modulo the number of classes (so 2**n must be >= the number of classes).

Training is exact: the states of all rows are simulated together with numpy (one (rows, 2**n)
array, gates applied as vectorised butterflies), the gradient of the cross-entropy comes from an
adjoint (reverse-mode) sweep over the same gates, and scipy's L-BFGS-B minimises it. No per-row
simulator calls, no finite differences. ``circuit(x)`` gives the same circuit in qiskit for
drawing or running on hardware; tests check both agree to 1e-10.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

ProgressFn = Callable[[float, str], None]


def _bits(n: int) -> np.ndarray:
    """(n, 2**n) 0/1 matrix, qubit q = bit q of the basis index (qiskit's little-endian order)."""
    idx = np.arange(2**n)
    return (idx[None, :] >> np.arange(n)[:, None]) & 1


class ReuploadingClassifier:
    """Data re-uploading classifier on ``n_qubits`` qubits with ``n_layers`` layers.

    ``l2`` penalises the weights (keeps the re-upload maps from overfitting small case bases);
    ``maxiter`` bounds L-BFGS-B; ``restarts`` random initialisations are tried and the lowest
    loss kept (the loss landscape has local minima).
    """

    def __init__(self, n_qubits: int, n_layers: int = 2, *, l2: float = 1e-3, maxiter: int = 100,
                 restarts: int = 1, random_state: int | None = None):
        if n_qubits < 1 or n_layers < 1:
            raise ValueError(f"need n_qubits >= 1 and n_layers >= 1, got {n_qubits}, {n_layers}")
        self.n_qubits = int(n_qubits)
        self.n_layers = int(n_layers)
        self.l2 = float(l2)
        self.maxiter = int(maxiter)
        self.restarts = int(restarts)
        self.random_state = random_state
        bits = _bits(self.n_qubits)
        self._z = 1.0 - 2.0 * bits  # +1 for |0>, -1 for |1>
        chain = sum(bits[q] * bits[q + 1] for q in range(self.n_qubits - 1)) if self.n_qubits > 1 else 0
        self._cz = np.where(np.asarray(chain) % 2 == 1, -1.0, 1.0) * np.ones(2**self.n_qubits)

    # ------------------------------------------------------------- parameters
    def _shapes(self, d: int) -> list[tuple[int, ...]]:
        L, n = self.n_layers, self.n_qubits
        return [(L, n, d), (L, n), (L, n)]

    def _unpack(self, v: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out, pos = [], 0
        for shape in self._shapes(d):
            size = int(np.prod(shape))
            out.append(v[pos:pos + size].reshape(shape))
            pos += size
        return out[0], out[1], out[2]

    def _init(self, d: int, rng: np.random.Generator) -> np.ndarray:
        L, n = self.n_layers, self.n_qubits
        W = rng.normal(0.0, 0.3 / np.sqrt(d), size=(L, n, d))
        for q in range(n):  # start with qubit q reading feature q (mod d): a sensible re-upload
            W[:, q, q % d] += 1.0
        b = rng.normal(0.0, 0.1, size=(L, n))
        theta = rng.uniform(-np.pi, np.pi, size=(L, n))
        return np.concatenate([W.ravel(), b.ravel(), theta.ravel()])

    # ------------------------------------------------------------ simulation
    # States are held as (2**n, rows): the rows are the contiguous axis, so every gate is a few
    # long vectorised passes whatever the qubit (a (rows, 2**n) layout leaves inner loops of
    # length 2 for low qubits, which numpy runs an order of magnitude slower).

    def _halves(self, psi: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
        """Real views (2**(n-1-q), 2**q, 2*rows) of the amplitudes with qubit q = 0 and = 1."""
        v = psi.view(np.float64).reshape(2 ** (self.n_qubits - 1 - q), 2, 2**q, 2 * psi.shape[1])
        return v[:, 0], v[:, 1]

    def _ry(self, psi: np.ndarray, q: int, c: np.ndarray, s: np.ndarray) -> np.ndarray:
        """RY with a per-row angle on qubit q, in place on psi (2**n, rows) complex.

        RY is real, so it acts on real and imaginary parts alike: working on the float view
        halves the arithmetic of complex-times-real products. c, s: (2*rows,) cos/sin of a/2,
        each repeated for the real and imaginary part.
        """
        p0, p1 = self._halves(psi, q)
        old0 = p0.copy()
        p0 *= c
        p0 -= s * p1
        p1 *= c
        old0 *= s
        p1 += old0
        return psi

    def _diag(self, theta_l: np.ndarray) -> np.ndarray:
        """The layer's RZ gates and CZ chain as one diagonal (they all commute)."""
        return self._cz * np.exp(-0.5j * (theta_l @ self._z))

    @staticmethod
    def _cs(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(np.cos(a / 2), 2), np.repeat(np.sin(a / 2), 2)

    def _forward(self, X: np.ndarray, W, b, theta) -> tuple[np.ndarray, np.ndarray]:
        """Final states (2**n, rows) and the rotation angles (L, rows, n)."""
        B = X.shape[0]
        psi = np.zeros((2**self.n_qubits, B), dtype=np.complex128)
        psi[0] = 1.0
        A = np.einsum("lqd,bd->lbq", W, X) + b[:, None, :]
        for l in range(self.n_layers):
            for q in range(self.n_qubits):
                self._ry(psi, q, *self._cs(A[l, :, q]))
            psi *= self._diag(theta[l])[:, None]
        return psi, A

    def statevectors(self, X: Any) -> np.ndarray:
        """complex128 (rows, 2**n): the circuit's state before measurement, for each row."""
        self._check_fitted()
        X = self._check_X(X)
        W, b, theta = self._unpack(self.params_, self.n_features_in_)
        return np.ascontiguousarray(self._forward(X, W, b, theta)[0].T)

    def _class_probs(self, psi: np.ndarray, n_classes: int) -> np.ndarray:
        """(rows, classes) from states (2**n, rows)."""
        p = psi.real**2 + psi.imag**2
        owner = np.arange(p.shape[0]) % n_classes
        return np.stack([p[owner == c].sum(axis=0) for c in range(n_classes)], axis=1)

    def _loss_grad(self, v: np.ndarray, X: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[float, np.ndarray]:
        d = X.shape[1]
        W, b, theta = self._unpack(v, d)
        B = X.shape[0]
        psi, A = self._forward(X, W, b, theta)
        P = self._class_probs(psi, n_classes)
        py = P[np.arange(B), y] + 1e-12
        loss = -np.mean(np.log(py)) + self.l2 * float(np.sum(W * W))
        # dL/dp_i for each basis probability; lam = dL/dp * psi is the adjoint state
        owner = np.arange(psi.shape[0]) % n_classes
        g = np.where(owner[:, None] == y[None, :], (-1.0 / (B * py))[None, :], 0.0)
        lam = g * psi
        gW = np.zeros_like(W)
        gb = np.zeros_like(b)
        gtheta = np.zeros_like(theta)
        for l in range(self.n_layers - 1, -1, -1):
            # d/dtheta_q of D = (-i/2) z_q D, so 2 Re <lam | dD psi_in> = sum Im(conj(lam) psi_out) z_q
            im = lam.real * psi.imag - lam.imag * psi.real
            gtheta[l] = (self._z @ im).sum(axis=1)
            Dc = self._diag(theta[l]).conj()[:, None]
            psi *= Dc
            lam *= Dc
            for q in range(self.n_qubits - 1, -1, -1):
                c, s = self._cs(A[l, :, q])
                # dRY(a)/da psi_in = RY(pi)/2 psi_out, hence per row
                # dL/da = 2 Re <lam | dRY psi_in> = sum Re(conj(lam1) psi0 - conj(lam0) psi1)
                p0, p1 = self._halves(psi, q)
                l0, l1 = self._halves(lam, q)
                ga2 = np.einsum("hkb,hkb->b", l1, p0) - np.einsum("hkb,hkb->b", l0, p1)
                ga = ga2[0::2] + ga2[1::2]
                gW[l, q] = ga @ X
                gb[l, q] = ga.sum()
                self._ry(psi, q, c, -s)  # undo the gate: RY(a)^T = RY(-a)
                self._ry(lam, q, c, -s)
        gW += 2.0 * self.l2 * W
        return float(loss), np.concatenate([gW.ravel(), gb.ravel(), gtheta.ravel()])

    # -------------------------------------------------------------- training
    def fit(self, X: Any, y: Any, n_classes: int | None = None, init: np.ndarray | None = None,
            progress: ProgressFn | None = None) -> "ReuploadingClassifier":
        """Train on rows X (angles) and integer labels y in 0..n_classes-1."""
        from scipy.optimize import minimize

        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or not np.isfinite(X).all():
            raise ValueError(f"X must be a finite 2-D array, got shape {X.shape}")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise ValueError("y must be non-negative integer class codes, one per row of X")
        n_classes = int(n_classes if n_classes is not None else y.max() + 1)
        if n_classes > 2**self.n_qubits:
            raise ValueError(
                f"{n_classes} classes need at least {int(np.ceil(np.log2(n_classes)))} qubits for the "
                f"variational read-out, but it has {self.n_qubits}; raise n_qubits"
            )
        self.n_features_in_ = X.shape[1]
        self.n_classes_ = n_classes
        rng = np.random.default_rng(self.random_state)
        d = X.shape[1]
        starts = [np.asarray(init, dtype=float)] if init is not None else []
        starts += [self._init(d, rng) for _ in range(max(1, self.restarts) - len(starts))]
        best = None
        total = len(starts) * self.maxiter
        done = [0]

        def tick(_xk: np.ndarray) -> None:
            done[0] += 1
            if progress is not None and done[0] % 10 == 0:
                progress(min(1.0, done[0] / total), f"variational training: iteration {done[0]}")

        for i, v0 in enumerate(starts):
            if v0.shape != (sum(int(np.prod(s)) for s in self._shapes(d)),):
                raise ValueError("init does not match this classifier's parameter count")
            res = minimize(self._loss_grad, v0, args=(X, y, n_classes), jac=True, method="L-BFGS-B",
                           options={"maxiter": self.maxiter}, callback=tick)
            if best is None or res.fun < best.fun:
                best = res
            done[0] = (i + 1) * self.maxiter
        self.params_ = np.asarray(best.x, dtype=float)
        self.loss_ = float(best.fun)
        self.n_iter_ = int(best.nit)
        if progress is not None:
            progress(1.0, f"variational training done: loss {self.loss_:.4f}")
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        self._check_fitted()
        X = self._check_X(X)
        W, b, theta = self._unpack(self.params_, self.n_features_in_)
        return self._class_probs(self._forward(X, W, b, theta)[0], self.n_classes_)

    def predict(self, X: Any) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    # ----------------------------------------------------------------- qiskit
    def circuit(self, x: Any = None, measure: bool = True):
        """The classifier as a qiskit circuit: bound to row ``x``, or with x as free parameters."""
        from qiskit.circuit import ParameterVector, QuantumCircuit

        self._check_fitted()
        d = self.n_features_in_
        W, b, theta = self._unpack(self.params_, d)
        if x is None:
            xs: Any = ParameterVector("x", d)
        else:
            xs = np.asarray(x, dtype=float).ravel()
            if xs.shape != (d,):
                raise ValueError(f"x must have {d} features, got {xs.shape}")
        qc = QuantumCircuit(self.n_qubits, name="ReuploadingClassifier")
        for l in range(self.n_layers):
            for q in range(self.n_qubits):
                angle = float(b[l, q])
                for j in range(d):
                    angle = angle + float(W[l, q, j]) * xs[j]
                qc.ry(angle, q)
            for q in range(self.n_qubits):
                qc.rz(float(theta[l, q]), q)
            for q in range(self.n_qubits - 1):
                qc.cz(q, q + 1)
            if l < self.n_layers - 1:
                qc.barrier()
        if measure:
            qc.measure_all()
        return qc

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        self._check_fitted()
        return {"format": "qcbr-reuploading", "version": 1, "n_qubits": self.n_qubits,
                "n_layers": self.n_layers, "l2": self.l2, "maxiter": self.maxiter,
                "restarts": self.restarts, "n_features_in": self.n_features_in_,
                "n_classes": self.n_classes_, "loss": self.loss_, "n_iter": self.n_iter_,
                "random_state": self.random_state if isinstance(self.random_state, int) else None}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"params": self.params_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "ReuploadingClassifier":
        if d.get("format") != "qcbr-reuploading" or d.get("version") != 1:
            raise ValueError("not a version-1 re-uploading classifier")
        obj = cls(d["n_qubits"], d["n_layers"], l2=d["l2"], maxiter=d["maxiter"],
                  restarts=d["restarts"], random_state=d.get("random_state"))
        obj.n_features_in_ = int(d["n_features_in"])
        obj.n_classes_ = int(d["n_classes"])
        obj.loss_ = float(d["loss"])
        obj.n_iter_ = int(d["n_iter"])
        obj.params_ = np.asarray(arrays["params"], dtype=float)
        if obj.params_.shape != (sum(int(np.prod(s)) for s in obj._shapes(obj.n_features_in_)),):
            raise ValueError("re-uploading classifier parameters do not match its shape")
        return obj

    # ---------------------------------------------------------------- helpers
    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError("this ReuploadingClassifier is not fitted yet; call fit first")

    def _check_X(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features per row, got shape {X.shape}")
        return X
