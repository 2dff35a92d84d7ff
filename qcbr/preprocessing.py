"""From raw case features to rotation angles in [0, pi], fitted on the training cases.

Feature maps take angles, and a kernel's bandwidth only means something if every feature spans
the same range; so numbers are standardised, categories one-hot encoded, booleans made 0/1, the
result optionally reduced by PCA to the qubit budget (a feature costs a qubit), and each output
column mapped linearly from its training range onto [0, pi] (values outside that range at predict
time are clipped to its ends). Everything fitted is plain numbers and strings, so it is saved as
JSON + npz with the model (no pickle).

At predict time rows come from users and HTTP clients: every mismatch (missing or unexpected
columns, wrong count, NaN, text in a numeric column) raises ``InputError`` (a ValueError) naming
the column and rows, which the serving layer turns into a 4xx.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from qcbr.errors import InputError

NUMERIC, CATEGORICAL, BOOLEAN = "numeric", "categorical", "boolean"
_TRUE = frozenset({"true", "t", "yes", "y"})
_FALSE = frozenset({"false", "f", "no", "n"})
_MAX_LISTED = 5


def is_frame(X: Any) -> bool:
    return isinstance(X, pd.DataFrame)


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    listed = ", ".join(str(int(r)) for r in rows[:_MAX_LISTED])
    more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
    return f"row{'s' if len(rows) > 1 else ''} {listed}{more}"


def _bool_value(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return 1.0
    if isinstance(value, str) and value.strip().lower() in _FALSE:
        return 0.0
    return None


def _missing(values: pd.Series) -> np.ndarray:
    return values.isna().to_numpy()


def infer_column_type(values: pd.Series) -> str:
    """numeric, boolean or categorical, from the dtype and (for text columns) the values."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return BOOLEAN
    if pd.api.types.is_numeric_dtype(dtype):
        return NUMERIC
    present = values.dropna()
    if len(present) and all(_bool_value(v) is not None for v in present.unique()):
        return BOOLEAN
    return CATEGORICAL


class Preprocessor:
    """Fitted map from raw features to angles in [0, pi]; see the module docstring for why.

    ``n_components``: the output budget (qubits for angle/zz, 2**n_qubits for amplitude). When
    the expanded features (after one-hot) exceed it, PCA keeps the leading ``n_components``
    directions; otherwise the expanded features are kept as they are, so the output width is
    ``min(n_components, n_expanded)``.
    """

    def __init__(self, n_components: int | None = None):
        if n_components is not None and (not isinstance(n_components, (int, np.integer)) or n_components < 1):
            raise ValueError(f"n_components must be a positive integer or None, got {n_components!r}")
        self.n_components = None if n_components is None else int(n_components)

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None) -> "Preprocessor":
        frame = self._as_frame(X, fitting=True)
        if len(frame) == 0:
            raise InputError("cannot fit the preprocessor on 0 rows; give at least one case")
        columns = []
        for name in frame.columns:
            kind = infer_column_type(frame[name])
            entry: dict[str, Any] = {"name": name, "type": kind}
            if kind == CATEGORICAL:
                values = frame[name]
                if _missing(values).any():
                    raise InputError(
                        f"column {name!r} has missing values in {_rows(_missing(values))}; "
                        "fill or drop them before fitting (CaseBase imputes them with missing='impute')"
                    )
                entry["categories"] = sorted({str(v) for v in values})
            columns.append(entry)
        self.schema_ = columns
        self.feature_names_ = [c["name"] for c in columns]
        self.n_features_in_ = len(columns)
        self.from_array_ = not is_frame(X)

        numeric = [c["name"] for c in columns if c["type"] == NUMERIC]
        raw = self._numeric_block(frame, numeric)
        self.num_mean_ = raw.mean(axis=0) if numeric else np.zeros(0)
        std = raw.std(axis=0) if numeric else np.zeros(0)
        self.num_scale_ = np.where(std > 1e-12, std, 1.0)
        Z = self._expand(frame)
        self.expanded_names_ = self._expanded_names()

        m = Z.shape[1]
        if self.n_components is not None and self.n_components < m:
            self.pca_mean_ = Z.mean(axis=0)
            _, _, vt = np.linalg.svd(Z - self.pca_mean_, full_matrices=False)
            comps = np.zeros((self.n_components, m))
            r = min(self.n_components, vt.shape[0])
            comps[:r] = vt[:r]
            # SVD signs are arbitrary; fix them so refits on the same data give the same angles
            pivot = np.argmax(np.abs(comps), axis=1)
            signs = np.sign(comps[np.arange(len(comps)), pivot])
            comps *= np.where(signs == 0, 1.0, signs)[:, None]
            self.pca_components_ = comps
            Z = (Z - self.pca_mean_) @ comps.T
            self.output_names_ = [f"pc{i + 1}" for i in range(self.n_components)]
        else:
            self.pca_mean_ = np.zeros(0)
            self.pca_components_ = np.zeros((0, m))
            self.output_names_ = list(self.expanded_names_)
        self.low_ = Z.min(axis=0)
        self.high_ = Z.max(axis=0)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X).transform(X)

    @property
    def n_outputs_(self) -> int:
        return len(self.low_)

    @property
    def uses_pca_(self) -> bool:
        return self.pca_components_.shape[0] > 0

    # ------------------------------------------------------------ transform
    def transform(self, X: Any) -> np.ndarray:
        """Angles in [0, pi], float64, shape (n_rows, n_outputs_)."""
        if not hasattr(self, "low_"):
            raise RuntimeError("this Preprocessor is not fitted yet; call fit first")
        Z = self._numeric_fast(X)
        if Z is None:
            Z = self._expand(self._as_frame(X, fitting=False))
        if self.uses_pca_:
            Z = (Z - self.pca_mean_) @ self.pca_components_.T
        span = self.high_ - self.low_
        flat = span <= 1e-12
        angles = np.pi * (Z - self.low_) / np.where(flat, 1.0, span)
        angles[:, flat] = np.pi / 2  # a feature constant in training carries no information
        return np.clip(angles, 0.0, np.pi)

    # --------------------------------------------------------------- helpers
    def _numeric_fast(self, X: Any) -> np.ndarray | None:
        """Standardised columns straight from a finite numeric array of the right width, else None.

        The serving path sends one all-numeric row per request; building a DataFrame for it cost
        more (~0.5 ms) than the rest of preprocessing. Same arithmetic as ``_expand`` (so the
        same bits); anything unusual (frames, object or bool arrays, NaN/inf, wrong shape) takes
        the DataFrame path, which owns the error messages.
        """
        if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype.kind not in "iuf":
            return None
        if X.shape[1] != self.n_features_in_ or any(c["type"] != NUMERIC for c in self.schema_):
            return None
        raw = X.astype(np.float64, copy=False)
        if not np.isfinite(raw).all():
            return None
        return (raw - self.num_mean_) / self.num_scale_

    def _as_frame(self, X: Any, *, fitting: bool) -> pd.DataFrame:
        if is_frame(X):
            frame = X
            names = [str(c) for c in frame.columns]
            if len(set(names)) != len(names):
                dup = sorted({n for n in names if names.count(n) > 1})
                raise InputError(f"columns {dup} appear more than once; give each feature one column")
            frame = frame.set_axis(names, axis=1)
            if fitting:
                return frame.reset_index(drop=True)
            expected = self.feature_names_
            if self.from_array_ and names != expected:
                # fitted on an unnamed array: columns are taken by position
                return self._as_frame(frame.to_numpy(dtype=object), fitting=False)
            missing = [n for n in expected if n not in names]
            extra = [n for n in names if n not in expected]
            if missing or extra:
                parts = []
                if missing:
                    parts.append(f"missing column(s) {missing}")
                if extra:
                    parts.append(f"unexpected column(s) {extra}")
                raise InputError(
                    f"{' and '.join(parts)}; the model was fitted on the columns {expected} "
                    "(names must match exactly; order does not matter here)"
                )
            return frame[expected].reset_index(drop=True)
        arr = np.asarray(X, dtype=None if not isinstance(X, (list, tuple)) else object)
        if arr.ndim != 2:
            raise InputError(
                f"expected a 2-D table (rows x features), got an array with {arr.ndim} dimension(s) "
                f"of shape {arr.shape}; wrap a single row as [row]"
            )
        if fitting:
            names = [f"x{i}" for i in range(arr.shape[1])]
        else:
            names = self.feature_names_
            if arr.shape[1] != len(names):
                raise InputError(
                    f"X has {arr.shape[1]} features, but the model is expecting {len(names)} features "
                    f"as input ({names}); send the values in that order"
                )
        if arr.dtype.kind in "biuf":
            return pd.DataFrame(arr, columns=names)
        return pd.DataFrame(arr.astype(object), columns=names).infer_objects()

    def _numeric_block(self, frame: pd.DataFrame, names: list[str]) -> np.ndarray:
        out = np.empty((len(frame), len(names)))
        for j, name in enumerate(names):
            values = frame[name]
            missing = _missing(values)
            if missing.any():
                raise InputError(
                    f"column {name!r} has missing values (NaN) in {_rows(missing)}; fill them in "
                    "(e.g. with the training mean) or drop those rows"
                )
            if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
                col = values.to_numpy(dtype=float)
            else:
                parsed = pd.to_numeric(values, errors="coerce")
                bad = parsed.isna().to_numpy()
                if bad.any():
                    first = values.iloc[int(np.flatnonzero(bad)[0])]
                    raise InputError(
                        f"column {name!r} is numeric but has non-numeric values in {_rows(bad)} "
                        f"(e.g. {first!r}); send numbers"
                    )
                col = parsed.to_numpy(dtype=float)
            if not np.isfinite(col).all():
                raise InputError(
                    f"column {name!r} has infinite values in {_rows(~np.isfinite(col))}; send finite numbers"
                )
            out[:, j] = col
        return out

    def _expand(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        numeric = [c["name"] for c in self.schema_ if c["type"] == NUMERIC]
        for col in self.schema_:
            name, kind = col["name"], col["type"]
            values = frame[name]
            if kind == NUMERIC:
                j = numeric.index(name)
                raw = self._numeric_block(frame, [name])[:, 0]
                blocks.append(((raw - self.num_mean_[j]) / self.num_scale_[j])[:, None])
            elif kind == BOOLEAN:
                missing = _missing(values)
                if missing.any():
                    raise InputError(f"column {name!r} has missing values in {_rows(missing)}; send true or false")
                mapped = np.array([_bool_value(v) for v in values.to_numpy(dtype=object)], dtype=object)
                bad = np.array([m is None for m in mapped], dtype=bool)
                if bad.any():
                    first = values.iloc[int(np.flatnonzero(bad)[0])]
                    raise InputError(
                        f"column {name!r} is boolean but has values that are not true/false in "
                        f"{_rows(bad)} (e.g. {first!r}); send true/false (or yes/no)"
                    )
                blocks.append(mapped.astype(float)[:, None])
            else:
                missing = _missing(values)
                if missing.any():
                    raise InputError(
                        f"column {name!r} has missing values in {_rows(missing)}; send one of its "
                        f"categories (an unseen category is allowed and encodes as none of them)"
                    )
                cats = col["categories"]
                text = values.astype(str).to_numpy()
                blocks.append((text[:, None] == np.asarray(cats, dtype=object)[None, :]).astype(float))
        if not blocks:
            return np.zeros((len(frame), 0))
        return np.hstack(blocks)

    def _expanded_names(self) -> list[str]:
        names: list[str] = []
        for col in self.schema_:
            if col["type"] == CATEGORICAL:
                names.extend(f"{col['name']}={c}" for c in col["categories"])
            else:
                names.append(col["name"])
        return names

    # ---------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """The JSON half of the fitted state; ``to_arrays`` is the npz half."""
        return {
            "format": "qcbr-preprocessor",
            "version": 1,
            "n_components": self.n_components,
            "schema": self.schema_,
            "from_array": self.from_array_,
            "expanded_names": self.expanded_names_,
            "output_names": self.output_names_,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "num_mean": self.num_mean_,
            "num_scale": self.num_scale_,
            "pca_mean": self.pca_mean_,
            "pca_components": self.pca_components_,
            "low": self.low_,
            "high": self.high_,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "Preprocessor":
        if d.get("format") != "qcbr-preprocessor" or d.get("version") != 1:
            raise ValueError(f"not a version-1 qcbr preprocessor: {d.get('format')!r} v{d.get('version')!r}")
        pre = cls(d["n_components"])
        pre.schema_ = [dict(c) for c in d["schema"]]
        pre.feature_names_ = [c["name"] for c in pre.schema_]
        pre.n_features_in_ = len(pre.schema_)
        pre.from_array_ = bool(d["from_array"])
        pre.expanded_names_ = list(d["expanded_names"])
        pre.output_names_ = list(d["output_names"])
        for key in ("num_mean", "num_scale", "pca_mean", "pca_components", "low", "high"):
            setattr(pre, f"{key}_", np.asarray(arrays[key], dtype=float))
        n_num = sum(c["type"] == NUMERIC for c in pre.schema_)
        m = len(pre.expanded_names_)
        if (pre.num_mean_.shape != (n_num,) or pre.num_scale_.shape != (n_num,)
                or pre.pca_components_.shape[1:] != (m,) or pre.low_.shape != pre.high_.shape
                or len(pre.low_) != len(pre.output_names_)):
            raise ValueError("preprocessor arrays do not match its schema (inconsistent artifact)")
        return pre
