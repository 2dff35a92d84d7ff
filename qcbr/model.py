"""QCBRClassifier: case-based reasoning whose similarity is the fidelity of quantum states.

The CBR cycle is the API:

* **retrieve** -- ``retrieve(X, k)``: the k stored cases whose encoded states have the highest
  fidelity with the query's (exact: one batched matrix product over the case memory; sampled:
  shot-based circuits on qiskit-aer).
* **reuse** -- ``reuse="vote"``: the class of the k nearest cases, weighted by their fidelity;
  ``reuse="variational"``: the qCBR paper's data re-uploading variational classifier
  (``qcbr.variational``), trained on the case memory, adapts the solution.
* **revise** -- ``revise(X, y_true)``: predictions whose confidence is below ``epsilon`` are
  flagged for review; ground truth, when it arrives, corrects them.
* **retain** -- ``retain(X, y)``: a *new* fitted model whose memory also holds the revised cases
  (the old model stays as it was, so a deployed version never changes under its users).

Kernel bandwidth decides everything: the zz map with qiskit's ``alpha=2`` makes every pair of
states nearly orthogonal on 4+ qubits (fidelities ~ 1/2^n), neighbours become random and accuracy
collapses. ``alpha="auto"`` (and ``k="auto"``) are chosen by stratified cross-validation, and the
chosen kernel's concentration is reported in ``kernel_diagnostics_``.

Parameters (scikit-learn style, only stored by ``__init__``):

feature_map : "zz" | "angle" | "amplitude"
n_qubits : int or None. None = min(encoded features, 8) for zz/angle (encoded features = numeric
    + booleans + one column per category); for amplitude, the fewest qubits whose 2**n amplitudes
    hold the encoded features (at most 8). When the encoded features exceed the budget, PCA
    keeps the leading components.
reps : zz repetitions; also the number of re-uploading layers for ``reuse="variational"``.
alpha : zz bandwidth (float > 0) or "auto" (CV over ``ALPHA_GRID``). Ignored by angle/amplitude.
k : neighbours in the vote (int) or "auto" (CV over ``K_GRID``).
reuse : "vote" | "variational".
similarity : "exact" | "sampled" (``shots`` and ``noise`` as in
    ``qcbr.similarity.sampled_fidelity_matrix``). Hyperparameters are always chosen with exact
    fidelities (the sampled estimator's expectation); only predictions are sampled.
epsilon : confidence below which ``revise`` flags a prediction.
random_state : seeds CV folds and the variational initialisation.

Learned attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_`` (DataFrame input
with string column names), ``feature_schema_``, ``n_qubits_``, ``alpha_``, ``k_``,
``cv_results_`` ({"alpha=..,k=..": mean CV accuracy}), ``cv_table_`` (the same as rows with std
and the kernel's mean off-diagonal fidelity), ``kernel_diagnostics_``, ``preprocessor_``,
``feature_map_``, ``X_memory_`` (encoded cases), ``y_memory_`` (class codes), ``case_ids_``,
``variational_`` (reuse="variational" only).

Persistence is ``save(dir)`` / ``QCBRClassifier.load(dir)``: JSON + npz + SHA-256 manifest
(``qcbr.artifact``), never pickle. Loading and exact prediction import no qiskit.
"""
from __future__ import annotations

import math
import numbers
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from qcbr.errors import ArtifactError, InputError
from qcbr.preprocessing import CATEGORICAL, NUMERIC, Preprocessor, is_frame

ProgressFn = Callable[[float, str], None]

FEATURE_MAPS = ("zz", "angle", "amplitude")
REUSES = ("vote", "variational")
SIMILARITIES = ("exact", "sampled")
#: zz bandwidths tried by alpha="auto", roughly log-spaced from qiskit's default 2.0 down to
#: 0.01: on 8-qubit data (wine, breast cancer after PCA) CV keeps choosing the small end, where
#: the kernel's neighbour ranking has converged, so the grid reaches below 0.05
ALPHA_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.6, 1.0, 2.0)
#: neighbour counts tried by k="auto"
K_GRID = (1, 3, 5, 7, 11, 15)
#: alpha used when the data are too small for CV (a class with a single case)
FALLBACK_ALPHA = 0.35
MAX_AUTO_QUBITS = 8
#: CV runs on a stratified subsample of at most this many cases (its Gram matrix is n x n)
CV_MAX_CASES = 2000
#: the variational classifier trains on a stratified subsample of at most this many cases
VQC_MAX_CASES = 2000
#: kernel diagnostics use at most this many cases
DIAG_MAX_CASES = 400
#: amplitude input = centred angles plus this constant component, so every row has a state
AMPLITUDE_OFFSET = np.pi / 2
MODEL_FORMAT = "qcbr-model"
MODEL_VERSION = 1


class QCBRClassifier(ClassifierMixin, BaseEstimator):
    """Quantum case-based reasoning classifier; see the module docstring for the why and the how."""

    def __init__(self, feature_map: str = "zz", n_qubits: int | None = None, reps: int = 2,
                 alpha: float | str = "auto", k: int | str = 5, reuse: str = "vote",
                 similarity: str = "exact", shots: int = 1024, noise: Any = None,
                 epsilon: float = 0.6, random_state: Any = None):
        self.feature_map = feature_map
        self.n_qubits = n_qubits
        self.reps = reps
        self.alpha = alpha
        self.k = k
        self.reuse = reuse
        self.similarity = similarity
        self.shots = shots
        self.noise = noise
        self.epsilon = epsilon
        self.random_state = random_state

    # ================================================================== fit
    def fit(self, X: Any, y: Any, case_ids: Any = None, progress: ProgressFn | None = None) -> "QCBRClassifier":
        """Fit the preprocessing, choose alpha/k (CV when "auto"), store the case memory."""
        from sklearn.utils import check_random_state

        self._check_params()
        report = progress or (lambda fraction, message: None)
        Xv = self._validate_X(X, reset=True)
        y = self._validate_y(y, len(Xv))
        classes, y_enc = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise InputError(
                f"y has only one class ({_py(classes[0])!r}); a classifier needs cases of at least "
                "2 classes to tell apart"
            )
        ids = _case_ids(case_ids, len(y_enc))
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**31 - 1))

        pre, n_qubits = self._fit_preprocessor(Xv)
        A = pre.transform(Xv)
        self.preprocessor_ = pre
        self.n_qubits_ = n_qubits
        self.classes_ = classes
        self.feature_schema_ = [dict(c) for c in pre.schema_]
        self.X_memory_ = self._map_input(A)
        self.y_memory_ = y_enc.astype(np.int64)
        self.case_ids_ = ids

        alphas = [None] if self.feature_map != "zz" else (
            list(ALPHA_GRID) if self.alpha == "auto" else [float(self.alpha)])
        ks = list(K_GRID) if self.k == "auto" else [int(self.k)]
        cv_share = 0.3 if self.reuse == "variational" else 1.0
        self.cv_results_: dict[str, float] = {}
        self.cv_table_: list[dict] = []
        chosen = None
        if len(alphas) * len(ks) > 1:
            chosen = self._cross_validate(alphas, ks, seed, lambda f, m: report(cv_share * f, m))
        if chosen is None:  # nothing to tune, or too few cases per class to cross-validate
            alpha = None if self.feature_map != "zz" else (
                FALLBACK_ALPHA if self.alpha == "auto" else float(self.alpha))
            chosen = (alpha, 5 if self.k == "auto" else int(self.k))
        self.alpha_ = None if chosen[0] is None else float(chosen[0])
        self.k_ = int(min(chosen[1], len(y_enc)))
        self._build_memory()
        self.kernel_diagnostics_ = self._diagnostics(seed)
        if self.reuse == "variational":
            self.variational_ = self._fit_variational(seed, None,
                                                      lambda f, m: report(cv_share + (1 - cv_share) * f, m))
        report(1.0, f"fitted: {len(y_enc)} cases, alpha={self.alpha_}, k={self.k_}")
        return self

    def _check_params(self) -> None:
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map={self.feature_map!r}: choose one of {', '.join(FEATURE_MAPS)}")
        if self.n_qubits is not None and (not _is_int(self.n_qubits) or not 1 <= self.n_qubits <= 16):
            raise ValueError(f"n_qubits={self.n_qubits!r}: give an integer in 1..16, or None for min(features, 8)")
        if not _is_int(self.reps) or self.reps < 1:
            raise ValueError(f"reps={self.reps!r}: give an integer >= 1")
        if self.alpha != "auto" and not (_is_real(self.alpha) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha={self.alpha!r}: give a number > 0 (e.g. 0.35) or 'auto' to tune it by CV")
        if self.k != "auto" and (not _is_int(self.k) or self.k < 1):
            raise ValueError(f"k={self.k!r}: give an integer >= 1 or 'auto' to tune it by CV")
        if self.reuse not in REUSES:
            raise ValueError(f"reuse={self.reuse!r}: choose one of {', '.join(REUSES)}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity={self.similarity!r}: choose one of {', '.join(SIMILARITIES)}")
        if not _is_int(self.shots) or self.shots < 1:
            raise ValueError(f"shots={self.shots!r}: give an integer >= 1 (e.g. 1024)")
        if not (_is_real(self.epsilon) and 0.0 <= self.epsilon <= 1.0):
            raise ValueError(f"epsilon={self.epsilon!r}: give a confidence threshold in [0, 1]")

    def _fit_preprocessor(self, Xv: Any) -> tuple[Preprocessor, int]:
        if self.feature_map == "amplitude":
            budget = 2 ** (self.n_qubits or MAX_AUTO_QUBITS) - 1  # one amplitude is the constant
            pre = Preprocessor(budget).fit(Xv)
            n_qubits = self.n_qubits or max(1, math.ceil(math.log2(pre.n_outputs_ + 1)))
            return pre, int(n_qubits)
        budget = self.n_qubits or MAX_AUTO_QUBITS
        pre = Preprocessor(budget).fit(Xv)
        if self.n_qubits is not None and pre.n_outputs_ < self.n_qubits:
            raise ValueError(
                f"n_qubits={self.n_qubits} but the data have only {pre.n_outputs_} encoded features "
                f"({pre.output_names_}); the {self.feature_map} map puts one feature on each qubit, so "
                f"use n_qubits <= {pre.n_outputs_} (or None)"
            )
        return pre, int(pre.n_outputs_)

    def _map_input(self, A: np.ndarray) -> np.ndarray:
        """Preprocessed angles -> the feature map's input rows."""
        if self.feature_map == "amplitude":
            return np.hstack([A - np.pi / 2, np.full((len(A), 1), AMPLITUDE_OFFSET)])
        return A

    def _make_map(self, alpha: float | None):
        from qcbr.encoding import get_feature_map

        if self.feature_map == "zz":
            return get_feature_map("zz", self.n_qubits_, reps=int(self.reps), alpha=float(alpha))
        if self.feature_map == "amplitude":
            return get_feature_map("amplitude", self.n_qubits_, n_features=self.X_memory_.shape[1])
        return get_feature_map("angle", self.n_qubits_)

    def _build_memory(self) -> None:
        from qcbr.similarity import CaseMemory

        self.feature_map_ = self._make_map(self.alpha_)
        self.memory_ = CaseMemory(self.feature_map_, self.X_memory_)

    def _cross_validate(self, alphas: list, ks: list[int], seed: int, report: ProgressFn):
        """Stratified k-fold accuracy of every (alpha, k); returns the best, or None if CV is impossible."""
        from sklearn.model_selection import StratifiedKFold, train_test_split

        from qcbr.similarity import fidelity_matrix, kernel_diagnostics

        Xm, y = self.X_memory_, self.y_memory_
        if len(y) > CV_MAX_CASES:
            counts = np.bincount(y)
            strat = y if counts.min() >= 2 else None
            sub, _ = train_test_split(np.arange(len(y)), train_size=CV_MAX_CASES, stratify=strat, random_state=seed)
            Xm, y = Xm[np.sort(sub)], y[np.sort(sub)]
        counts = np.bincount(y)
        n_splits = int(min(5, counts[counts > 0].min()))
        if n_splits < 2:
            warnings.warn(
                f"a class has a single case, so alpha/k cannot be cross-validated; using alpha="
                f"{FALLBACK_ALPHA}, k=5. Add cases to every class to tune them.", UserWarning, stacklevel=3)
            return None
        folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(Xm, y))
        kmax = max(ks)
        n_classes = len(self.classes_)
        scores: dict[tuple, list[float]] = {(a, kk): [] for a in alphas for kk in ks}
        offdiag: dict[Any, float] = {}
        for ai, alpha in enumerate(alphas):
            fm = self._make_map(alpha)
            K = fidelity_matrix(Xm, Xm, fm)
            m = min(len(y), DIAG_MAX_CASES)
            offdiag[alpha] = float(kernel_diagnostics(K[:m, :m], feature_map=fm)["mean_offdiag"])
            for tr, va in folds:
                Kva = K[np.ix_(va, tr)]
                top = min(kmax, len(tr))
                idx = np.argsort(-Kva, axis=1, kind="stable")[:, :top]
                sc = np.take_along_axis(Kva, idx, axis=1)
                labels = y[tr][idx]
                for kk in ks:
                    proba = _vote(labels[:, :kk], sc[:, :kk], n_classes)
                    scores[(alpha, kk)].append(float(np.mean(np.argmax(proba, axis=1) == y[va])))
            best_here = max(np.mean(scores[(alpha, kk)]) for kk in ks)
            what = f"alpha={alpha:g}" if alpha is not None else self.feature_map
            report((ai + 1) / len(alphas), f"cross-validating {what}: best accuracy {best_here:.3f} "
                   f"({ai + 1}/{len(alphas)}, {n_splits} folds)")
        rows = []
        for (alpha, kk), accs in scores.items():
            key = f"alpha={alpha:g},k={kk}" if alpha is not None else f"k={kk}"
            self.cv_results_[key] = float(np.mean(accs))
            rows.append({"alpha": alpha, "k": kk, "mean_accuracy": float(np.mean(accs)),
                         "std_accuracy": float(np.std(accs)), "mean_offdiag": offdiag[alpha],
                         "n_splits": n_splits})
        self.cv_table_ = rows
        # best mean accuracy; ties -> steadier across folds -> larger alpha (the less flat kernel,
        # whose weights still mean something) -> larger k (a confidence that is not all-or-nothing)
        best = min(rows, key=lambda r: (-round(r["mean_accuracy"], 12), round(r["std_accuracy"], 12),
                                        -(r["alpha"] or 0.0), -r["k"]))
        return best["alpha"], best["k"]

    def _diagnostics(self, seed: int) -> dict:
        from qcbr.similarity import fidelity_matrix, kernel_diagnostics

        n = len(self.y_memory_)
        pick = np.sort(np.random.default_rng(seed).choice(n, size=min(n, DIAG_MAX_CASES), replace=False))
        Xp = self.X_memory_[pick]
        return kernel_diagnostics(fidelity_matrix(Xp, Xp, self.feature_map_), feature_map=self.feature_map_)

    def _fit_variational(self, seed: int, init: np.ndarray | None, report: ProgressFn):
        from qcbr.variational import ReuploadingClassifier

        vqc = ReuploadingClassifier(self.n_qubits_, int(self.reps), random_state=seed)
        A, y = self._angles(self.X_memory_), self.y_memory_
        if len(y) > VQC_MAX_CASES:
            from sklearn.model_selection import train_test_split

            strat = y if np.bincount(y).min() >= 2 else None
            keep, _ = train_test_split(np.arange(len(y)), train_size=VQC_MAX_CASES, stratify=strat,
                                       random_state=seed)
            A, y = A[np.sort(keep)], y[np.sort(keep)]
        return vqc.fit(A, y, n_classes=len(self.classes_), init=init, progress=report)

    def _angles(self, Xm: np.ndarray) -> np.ndarray:
        """Feature-map input -> the preprocessed angles (what the variational classifier reads)."""
        if self.feature_map == "amplitude":
            return Xm[:, :-1] + np.pi / 2
        return Xm

    # ============================================================ validation
    def _validate_X(self, X: Any, *, reset: bool, align: bool = False) -> Any:
        """Frame (named columns) or 2-D array, checked against what fit saw."""
        from scipy import sparse
        from sklearn.utils.validation import check_array

        if sparse.issparse(X):
            raise TypeError("Sparse data was passed for X, but QCBRClassifier needs dense rows: "
                            "convert it with X.toarray() first")
        if isinstance(X, Mapping):
            X = [X]
        if isinstance(X, (list, tuple)) and X and all(isinstance(r, Mapping) for r in X):
            X = pd.DataFrame(list(X))  # JSON records: names carry meaning, order does not
            align = True
        if is_frame(X):
            named = all(isinstance(c, str) for c in X.columns)
            if reset:
                if X.shape[0] == 0 or X.shape[1] == 0:
                    raise InputError(f"Found array with shape {X.shape} while a minimum of 1 sample and "
                                     "1 feature(s) is required; give a non-empty table")
                self.n_features_in_ = int(X.shape[1])
                if named:
                    self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
                elif hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
                numeric = all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t)
                              for t in X.dtypes)
                if named or not numeric:
                    return X
                X = X.to_numpy()
            else:
                fitted = getattr(self, "feature_names_in_", None)
                if fitted is not None and named:
                    given = list(X.columns)
                    if given != list(fitted):
                        if align and set(given) == set(fitted) and len(given) == len(fitted):
                            return X[list(fitted)]
                        raise InputError(_names_message(list(fitted), given))
                    return X
                X = X.to_numpy(dtype=object) if not reset and self._mixed() else X.to_numpy()
        if not reset and self._mixed():
            arr = np.asarray(X, dtype=object)
            if arr.ndim == 1 and align:
                arr = arr[None, :]
            if arr.ndim != 2:
                raise InputError(f"Expected a 2-D table (rows x features), got shape {arr.shape}; "
                                 "wrap a single row as [row]")
            self._check_count(arr.shape[1])
            return arr
        try:
            arr = check_array(X, dtype="numeric", input_name="X")
        except ValueError as exc:
            raise InputError(f"{exc} (QCBRClassifier takes a table of numbers, or a DataFrame with "
                             "numeric, categorical and boolean columns)") from exc
        if reset:
            self.n_features_in_ = int(arr.shape[1])
            if not is_frame(X) and hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            self._check_count(arr.shape[1])
        return arr

    def _check_count(self, n: int) -> None:
        if n != self.n_features_in_:
            names = getattr(self, "feature_names_in_", None)
            hint = f" ({list(names)})" if names is not None else ""
            raise InputError(
                f"X has {n} features, but QCBRClassifier is expecting {self.n_features_in_} features as "
                f"input{hint}; send one value per feature, in the order of fit"
            )

    def _mixed(self) -> bool:
        return any(c["type"] != NUMERIC for c in self.preprocessor_.schema_)

    @staticmethod
    def _validate_y(y: Any, n: int) -> np.ndarray:
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import check_array, column_or_1d

        if y is None:
            raise ValueError("requires y to be passed, but the target y is None")
        y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if len(y) != n:
            raise InputError(f"X has {n} rows but y has {len(y)} labels; give one label per case")
        if y.dtype == object:
            kinds = {type(v) for v in y}
            if len(kinds) > 1:
                raise InputError(f"labels mix types {sorted(k.__name__ for k in kinds)}; use one type (e.g. all strings)")
        return y

    def _encode(self, X: Any, align: bool = False) -> np.ndarray:
        """Rows -> the feature map's input (validated, preprocessed)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        return self._map_input(self.preprocessor_.transform(self._validate_X(X, reset=False, align=align)))

    def encode(self, X: Any) -> np.ndarray:
        """The feature map's input rows for X, e.g. to draw ``self.feature_map_.circuit(row)``."""
        return self._encode(X, align=True)

    # ============================================================ retrieve
    def _neighbours(self, Xm: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(min(k, len(self.y_memory_)))
        if self.similarity == "exact":
            return self.memory_.top_k(Xm, k)
        from qcbr.similarity import sampled_fidelity_matrix

        seed = self.random_state if _is_int(self.random_state) else None
        K = sampled_fidelity_matrix(Xm, self.X_memory_, self.feature_map_, shots=int(self.shots),
                                    noise=self.noise, seed=seed)
        idx = np.argsort(-K, axis=1, kind="stable")[:, :k]
        return idx, np.take_along_axis(K, idx, axis=1)

    def retrieve(self, X: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the case memory (q, k) and their fidelities, most similar first."""
        if k is not None and (not _is_int(k) or k < 1):
            raise InputError(f"k={k!r}: give a positive integer number of cases to retrieve")
        Xm = self._encode(X, align=True)
        return self._neighbours(Xm, k or self.k_)

    # ================================================================ reuse
    def _proba(self, Xm: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        if self.reuse == "variational":
            return self.variational_.predict_proba(self._angles(Xm))
        idx, sc = neighbours if neighbours is not None else self._neighbours(Xm, self.k_)
        return _vote(self.y_memory_[idx[:, :self.k_]], sc[:, :self.k_], len(self.classes_))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order."""
        return self._proba(self._encode(X))

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def predict_records(self, X: Any, top_k: int | None = None) -> list[dict]:
        """The serving shape per row (JSON-ready), from one batched similarity computation.

        ``{label, confidence, probabilities: {class: p}, flagged, similar_cases: [{case_id, label,
        score}]}``; ``top_k`` similar cases per row (default ``k_``). Records (dicts) and frames
        are matched to the fitted columns by name.
        """
        if top_k is not None and (not _is_int(top_k) or top_k < 0):
            raise InputError(f"top_k={top_k!r}: give a number of similar cases >= 0")
        return self._records(self._encode(X, align=True), self.k_ if top_k is None else int(top_k))

    def _records(self, Xm: np.ndarray, top: int,
                 neighbours: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict]:
        if neighbours is None:
            neighbours = self._neighbours(Xm, max(self.k_, top, 1))
        idx, sc = neighbours
        proba = self._proba(Xm, neighbours)
        classes = [_py(c) for c in self.classes_]
        keys = [str(c) for c in classes]
        shown = idx[:, :top]  # gather only the shown cases (never the whole memory per request)
        ids = self.case_ids_[shown].tolist()
        ymem = self.y_memory_[shown].tolist()
        best = np.argmax(proba, axis=1)
        conf = proba[np.arange(len(proba)), best]
        flagged = (conf < self.epsilon).tolist()
        out = []
        for r, (b, c) in enumerate(zip(best.tolist(), conf.tolist())):
            out.append({
                "label": classes[b],
                "confidence": c,
                "probabilities": dict(zip(keys, proba[r].tolist())),
                "flagged": flagged[r],
                "similar_cases": [{"case_id": i, "label": classes[y], "score": s}
                                  for i, y, s in zip(ids[r], ymem[r], sc[r, :top].tolist())],
            })
        return out

    def explain(self, x: Any) -> dict:
        """One row's prediction with its k most similar cases; per-feature factors for product maps.

        For the angle map the fidelity is a product over features, ``prod_i cos^2((x_i - y_i)/2)``
        on the encoded angles, so each factor says how much feature i alone lowers the similarity
        (1 = identical on that feature). Other maps entangle features: no factors.
        """
        if isinstance(x, pd.Series):
            x = x.to_frame().T.infer_objects()
        elif not isinstance(x, Mapping) and not is_frame(x):
            arr = np.asarray(x, dtype=object)
            x = arr[None, :] if arr.ndim == 1 else arr
        Xm = self._encode(x, align=True)
        if len(Xm) != 1:
            raise InputError(f"explain takes one row, got {len(Xm)}; call it once per row")
        neighbours = self._neighbours(Xm, self.k_)
        rec = self._records(Xm, self.k_, neighbours)[0]
        idx = neighbours[0][0]
        names = list(self.preprocessor_.output_names_)
        if self.feature_map_.is_product and self.feature_map_.name == "angle":
            for case, j in zip(rec["similar_cases"], idx.tolist()):
                f = np.cos((Xm[0] - self.X_memory_[j]) / 2.0) ** 2
                case["factors"] = dict(zip(names, f.tolist()))
        rec.update({
            "feature_map": self.feature_map_.params,
            "encoded_features": names,
            "encoded": self._angles(Xm)[0].tolist(),
            "reuse": self.reuse,
            "k": self.k_,
        })
        return rec

    # =============================================================== revise
    def revise(self, X: Any, y_true: Any = None) -> dict:
        """Flag low-confidence predictions; with ground truth, list the corrections.

        Returns ``predictions``, ``confidence``, ``flagged`` (confidence < epsilon) and, when
        ``y_true`` is given (None/NaN entries = not known yet): ``corrections`` (rows whose known
        label differs from the prediction), ``labels`` (known truth, else the prediction: the
        revised solutions to ``retain``) and the error rates among flagged and unflagged rows.
        """
        proba = self._proba(self._encode(X, align=True))
        best = np.argmax(proba, axis=1)
        pred = self.classes_[best]
        conf = proba[np.arange(len(best)), best]
        flagged = conf < self.epsilon
        out: dict[str, Any] = {"predictions": pred, "confidence": conf, "flagged": flagged,
                               "n_flagged": int(flagged.sum()), "epsilon": float(self.epsilon)}
        if y_true is None:
            return out
        truth = np.asarray(y_true, dtype=object).ravel()
        if len(truth) != len(pred):
            raise InputError(f"y_true has {len(truth)} labels for {len(pred)} rows; give one per row "
                             "(None where the truth is not known yet)")
        known = np.array([not _is_missing(v) for v in truth], dtype=bool)
        wrong = known & np.array([k and _py(t) != _py(p) for k, t, p in zip(known, truth, pred)], dtype=bool)
        labels = np.where(known, truth, pred.astype(object))
        out["corrections"] = [
            {"index": int(i), "predicted": _py(pred[i]), "label": _py(truth[i]), "flagged": bool(flagged[i])}
            for i in np.flatnonzero(wrong)
        ]
        out["labels"] = labels
        out["known"] = known
        out["error_rate_flagged"] = _rate(wrong, known & flagged)
        out["error_rate_unflagged"] = _rate(wrong, known & ~flagged)
        return out

    # =============================================================== retain
    def retain(self, X: Any, y: Any, case_ids: Any = None) -> "QCBRClassifier":
        """A new fitted model whose memory also holds these cases; ``self`` is left unchanged.

        The preprocessing and the chosen alpha/k are kept (the stored cases' encodings must not
        move); a new class in ``y`` simply joins ``classes_``. The variational classifier, if
        any, is retrained on the larger memory, warm-started from the current parameters.
        """
        from sklearn.base import clone
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        Xm = self._encode(X, align=True)
        y_new = np.asarray(self._validate_y(np.asarray(y), len(Xm)))
        old_labels = self.classes_[self.y_memory_]
        if (self.classes_.dtype.kind in "biuf") != (y_new.dtype.kind in "biuf"):
            raise InputError(
                f"retained labels have type {y_new.dtype} but the model's classes are {self.classes_.dtype}; "
                "use the same kind of labels (numbers or text)")
        if self.classes_.dtype.kind in "biuf":
            all_labels = np.concatenate([old_labels, y_new.astype(self.classes_.dtype, copy=False)])
        elif self.classes_.dtype.kind == "U" and y_new.dtype.kind == "U":
            all_labels = np.concatenate([old_labels, y_new])
        else:
            all_labels = np.concatenate([old_labels.astype(object), y_new.astype(object)])
        classes, codes = np.unique(all_labels, return_inverse=True)
        new_ids = _case_ids(case_ids, len(y_new), start=self.case_ids_)
        ids = np.concatenate([self.case_ids_, new_ids])
        if len(np.unique(ids)) != len(ids):
            clash = sorted(set(self.case_ids_.tolist()) & set(new_ids.tolist()))[:5]
            raise InputError(f"case ids {clash} are already in the case memory; give new, unique case ids")

        new = clone(self)
        for name in ("n_features_in_", "feature_schema_", "preprocessor_", "n_qubits_", "alpha_",
                     "cv_results_", "cv_table_", "kernel_diagnostics_"):
            setattr(new, name, getattr(self, name))
        if hasattr(self, "feature_names_in_"):
            new.feature_names_in_ = self.feature_names_in_
        new.classes_ = classes
        new.X_memory_ = np.vstack([self.X_memory_, Xm])
        new.y_memory_ = codes.astype(np.int64)
        new.case_ids_ = ids
        new.k_ = self.k_
        new._build_memory()
        if self.reuse == "variational":
            same = len(classes) == len(self.classes_)
            init = self.variational_.params_ if same else None
            seed = int(np.random.default_rng(len(ids)).integers(2**31 - 1))
            new.variational_ = new._fit_variational(seed, init, lambda f, m: None)
        return new

    # ========================================================== persistence
    def save(self, directory: str | Path) -> dict:
        """Write model.json + arrays.npz + MANIFEST.json (SHA-256 of each) into ``directory``."""
        from sklearn.utils.validation import check_is_fitted

        from qcbr import __version__
        from qcbr.artifact import write_artifact

        check_is_fitted(self)
        params = self.get_params()
        if not (params["random_state"] is None or _is_int(params["random_state"])):
            params["random_state"] = None  # a RandomState object has no JSON form
        params = {k: _py(v) for k, v in params.items()}
        ids = self.case_ids_
        meta = {
            "format": MODEL_FORMAT, "version": MODEL_VERSION, "qcbr_version": __version__,
            "params": params,
            "classes": [_py(c) for c in self.classes_],
            "classes_dtype": self.classes_.dtype.str if self.classes_.dtype != object else "object",
            "n_features_in": self.n_features_in_,
            "feature_names_in": None if not hasattr(self, "feature_names_in_") else [str(n) for n in self.feature_names_in_],
            "feature_schema": self.feature_schema_,
            "n_qubits": self.n_qubits_, "alpha": self.alpha_, "k": self.k_,
            "cv_results": self.cv_results_, "cv_table": self.cv_table_,
            "kernel_diagnostics": self.kernel_diagnostics_,
            "feature_map": self.feature_map_.params,
            "preprocessor": self.preprocessor_.to_dict(),
            "variational": self.variational_.to_dict() if hasattr(self, "variational_") else None,
            "n_cases": int(len(self.y_memory_)),
        }
        arrays = {"memory_X": self.X_memory_, "memory_y": self.y_memory_,
                  "case_ids": ids if ids.dtype.kind in "iu" else ids.astype(str)}
        arrays.update({f"pre__{k}": v for k, v in self.preprocessor_.to_arrays().items()})
        if hasattr(self, "variational_"):
            arrays.update({f"var__{k}": v for k, v in self.variational_.to_arrays().items()})
        return write_artifact(directory, meta, arrays)

    @classmethod
    def load(cls, directory: str | Path) -> "QCBRClassifier":
        """The model saved in ``directory``, after checking every file against the manifest."""
        from qcbr.artifact import read_artifact

        meta, arrays = read_artifact(directory)
        where = Path(directory) / "model.json"
        if meta.get("format") != MODEL_FORMAT:
            raise ArtifactError(f"{where} is not a qcbr model (format {meta.get('format')!r})")
        if meta.get("version") != MODEL_VERSION:
            raise ArtifactError(f"{where} is model format version {meta.get('version')!r}; this qcbr "
                                f"reads version {MODEL_VERSION} (upgrade qcbr or re-train)")
        try:
            model = cls(**meta["params"])
            dtype = meta["classes_dtype"]
            model.classes_ = (np.array(meta["classes"], dtype=object) if dtype == "object"
                              else np.asarray(meta["classes"], dtype=np.dtype(dtype)))
            model.n_features_in_ = int(meta["n_features_in"])
            if meta["feature_names_in"] is not None:
                model.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
            model.feature_schema_ = meta["feature_schema"]
            model.n_qubits_ = int(meta["n_qubits"])
            model.alpha_ = None if meta["alpha"] is None else float(meta["alpha"])
            model.k_ = int(meta["k"])
            model.cv_results_ = dict(meta["cv_results"])
            model.cv_table_ = list(meta["cv_table"])
            model.kernel_diagnostics_ = dict(meta["kernel_diagnostics"])
            model.preprocessor_ = Preprocessor.from_dict(
                meta["preprocessor"], {k[5:]: v for k, v in arrays.items() if k.startswith("pre__")})
            model.X_memory_ = np.asarray(arrays["memory_X"], dtype=float)
            model.y_memory_ = np.asarray(arrays["memory_y"], dtype=np.int64)
            model.case_ids_ = arrays["case_ids"]
            n = int(meta["n_cases"])
            if not (len(model.X_memory_) == len(model.y_memory_) == len(model.case_ids_) == n):
                raise ValueError(f"the case memory holds {len(model.X_memory_)} rows, "
                                 f"{len(model.y_memory_)} labels and {len(model.case_ids_)} ids, expected {n}")
            if n and (model.y_memory_.min() < 0 or model.y_memory_.max() >= len(model.classes_)):
                raise ValueError("case labels point outside the class list")
            model._build_memory()
            if model.feature_map_.params != meta["feature_map"]:
                raise ValueError(f"feature map {model.feature_map_.params} differs from the saved "
                                 f"{meta['feature_map']}")
            if meta["variational"] is not None:
                from qcbr.variational import ReuploadingClassifier

                model.variational_ = ReuploadingClassifier.from_dict(
                    meta["variational"], {k[5:]: v for k, v in arrays.items() if k.startswith("var__")})
        except ArtifactError:
            raise
        except Exception as exc:  # KeyError, ValueError, TypeError from an inconsistent artifact
            raise ArtifactError(f"the model artifact in {str(directory)!r} is inconsistent "
                                f"({type(exc).__name__}: {exc}); re-train or re-export it") from exc
        return model


# ================================================================ helpers
def _vote(labels: np.ndarray, scores: np.ndarray, n_classes: int) -> np.ndarray:
    """Similarity-weighted class shares of the retrieved cases, rows summing to 1."""
    q = labels.shape[0]
    w = np.clip(scores, 0.0, None)
    proba = np.zeros((q, n_classes))
    rows = np.repeat(np.arange(q), labels.shape[1])
    np.add.at(proba, (rows, labels.ravel()), w.ravel())
    total = proba.sum(axis=1)
    empty = total <= 0  # every retrieved fidelity is 0: fall back to an unweighted vote
    if empty.any():
        counts = np.zeros((int(empty.sum()), n_classes))
        sub = labels[empty]
        np.add.at(counts, (np.repeat(np.arange(len(sub)), sub.shape[1]), sub.ravel()), 1.0)
        proba[empty] = counts
        total = proba.sum(axis=1)
    return proba / total[:, None]


def _case_ids(case_ids: Any, n: int, start: np.ndarray | None = None) -> np.ndarray:
    if case_ids is None:
        if start is None or start.dtype.kind in "iu":
            first = 0 if start is None or not len(start) else int(start.max()) + 1
            return np.arange(first, first + n, dtype=np.int64)
        return np.asarray([f"case-{len(start) + i}" for i in range(n)])
    ids = np.asarray(case_ids)
    if ids.ndim != 1 or len(ids) != n:
        raise InputError(f"case_ids has shape {ids.shape} for {n} cases; give one id per case")
    if ids.dtype.kind in "iu" and (start is None or start.dtype.kind in "iu"):
        ids = ids.astype(np.int64)
    else:
        if start is not None and start.dtype.kind in "iu":
            raise InputError("case_ids must be integers like the ids already in the case memory")
        ids = np.asarray([str(v) for v in ids])
    if len(np.unique(ids)) != n:
        raise InputError("case_ids repeat; every case needs a unique id")
    return ids


def _names_message(fitted: list[str], given: list[str]) -> str:
    """scikit-learn's wording (tools match on it) plus how to fix it."""
    msg = "The feature names should match those that were passed during fit.\n"
    unexpected = sorted(set(given) - set(fitted))
    missing = sorted(set(fitted) - set(given))

    def listed(names: Sequence[str]) -> str:
        return "".join(f"- {n}\n" for n in names[:5]) + ("- ...\n" if len(names) > 5 else "")

    if unexpected:
        msg += "Feature names unseen at fit time:\n" + listed(unexpected)
    if missing:
        msg += "Feature names seen at fit time, yet now missing:\n" + listed(missing)
    if not unexpected and not missing:
        msg += "Feature names must be in the same order as they were in fit.\n"
    return msg + f"Send the columns {fitted}."


def _py(v: Any) -> Any:
    """numpy scalars -> plain Python (JSON-able) values."""
    return v.item() if isinstance(v, np.generic) else v


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _rate(wrong: np.ndarray, mask: np.ndarray) -> float | None:
    return float(wrong[mask].mean()) if mask.any() else None
