"""Two-sample drift statistics: reference (the training baseline) against current (captured traffic).

The statistics are computed here with numpy so that every step is visible and testable; scipy
supplies only the tail probabilities (``kstwo``, ``chi2``). Tests check each one against scipy's
reference implementation on known distributions.

Conventions (also in the report, so a reader knows what a number means):
- KS: two-sided two-sample Kolmogorov-Smirnov; the p-value is scipy's asymptotic one
  (``kstwo.sf(D, round(n*m/(n+m)))``, what ``ks_2samp(method="asymp")`` returns). With ties
  (integral features) the test is conservative: fewer false alarms, never more.
- PSI: bins are the reference's deciles (duplicate edges merged, open outer bins), each bin's
  share floored at ``epsilon`` (1e-4) so empty bins give a large but finite term.
- Normalised Wasserstein: the 1-D earth mover's distance divided by the reference's
  inter-quartile range (robust to outliers); by its standard deviation when the IQR is 0 (a
  feature concentrated on one value); unnormalised when both are 0. "0.1" therefore reads
  "the mass moved on average a tenth of the reference's IQR".
- Chi-squared: test of homogeneity on the 2 x K table (reference counts, current counts) without
  Yates' correction; the baseline is a sample too, so a goodness-of-fit test would over-alarm.
- Jensen-Shannon: distance (square root of the divergence) in base 2, so it lies in [0, 1].
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

PSI_EPSILON = 1e-4
PSI_BINS = 10


@dataclass(frozen=True)
class StatResult:
    statistic: float
    p_value: float


def _finite(values: Iterable[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ValueError(f"{what} has no finite values")
    return arr


def ks_2samp(reference: Iterable[float], current: Iterable[float]) -> StatResult:
    """Two-sided two-sample KS statistic (sup |F_ref - F_cur|) and asymptotic p-value."""
    from scipy.stats import kstwo

    a = np.sort(_finite(reference, "reference"))
    b = np.sort(_finite(current, "current"))
    n, m = a.size, b.size
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / n
    cdf_b = np.searchsorted(b, grid, side="right") / m
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    en = n * m / (n + m)
    p = float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return StatResult(d, p)


def psi_edges(reference: Iterable[float], bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles; outer bins are open (-inf, e0], ..., (ek, inf)."""
    ref = _finite(reference, "reference")
    inner = np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(inner)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(edges, values, side="right")
    counts = np.bincount(idx, minlength=edges.size + 1).astype(float)
    return counts / max(values.size, 1)


def psi(
    reference: Iterable[float], current: Iterable[float], bins: int = PSI_BINS, epsilon: float = PSI_EPSILON
) -> float:
    """Population stability index over the reference's quantile bins (see module notes)."""
    ref = _finite(reference, "reference")
    cur = _finite(current, "current")
    edges = psi_edges(ref, bins)
    p = np.maximum(bin_shares(ref, edges), epsilon)
    q = np.maximum(bin_shares(cur, edges), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def wasserstein(reference: Iterable[float], current: Iterable[float]) -> float:
    """1-D Wasserstein-1 distance between the two empirical distributions (integral of |F - G|)."""
    a = np.sort(_finite(reference, "reference"))
    b = np.sort(_finite(current, "current"))
    grid = np.sort(np.concatenate([a, b]))
    deltas = np.diff(grid)
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * deltas))


def scale_of(reference: Iterable[float]) -> tuple[float, str]:
    """The reference's spread used to normalise Wasserstein: IQR, else std, else 1."""
    ref = _finite(reference, "reference")
    q25, q75 = np.quantile(ref, [0.25, 0.75])
    iqr = float(q75 - q25)
    if iqr > 0:
        return iqr, "iqr"
    std = float(np.std(ref))
    if std > 0:
        return std, "std"
    return 1.0, "none"


def normalised_wasserstein(reference: Iterable[float], current: Iterable[float]) -> float:
    ref = _finite(reference, "reference")
    scale, _ = scale_of(ref)
    return wasserstein(ref, current) / scale


def _aligned(reference: Mapping[str, float], current: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    keys = sorted(set(reference) | set(current), key=str)
    ref = np.array([float(reference.get(k, 0.0)) for k in keys])
    cur = np.array([float(current.get(k, 0.0)) for k in keys])
    if (ref < 0).any() or (cur < 0).any():
        raise ValueError("category counts must be non-negative")
    return keys, ref, cur


def chi_squared(reference: Mapping[str, float], current: Mapping[str, float]) -> StatResult:
    """Chi-squared test of homogeneity of two category-count tables (no continuity correction)."""
    from scipy.stats import chi2

    _, ref, cur = _aligned(reference, current)
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    if ref.sum() == 0 or cur.sum() == 0:
        raise ValueError("both count tables need at least one observation")
    if ref.size < 2:
        return StatResult(0.0, 1.0)
    table = np.vstack([ref, cur])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return StatResult(stat, float(chi2.sf(stat, ref.size - 1)))


def jensen_shannon(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two category distributions."""
    _, ref, cur = _aligned(reference, current)
    if ref.sum() == 0 or cur.sum() == 0:
        raise ValueError("both count tables need at least one observation")
    p = ref / ref.sum()
    q = cur / cur.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return float(np.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0)))


def linf_distance(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """Largest absolute difference of category shares (Model Monitor's categorical distance)."""
    _, ref, cur = _aligned(reference, current)
    return float(np.max(np.abs(ref / ref.sum() - cur / cur.sum())))


def expected_calibration_error(confidence: Iterable[float], correct: Iterable[bool], bins: int = 10) -> float:
    """ECE: share-weighted |accuracy - mean confidence| over equal-width confidence bins."""
    conf = np.asarray(confidence, dtype=float).ravel()
    ok = np.asarray(correct, dtype=float).ravel()
    if conf.size != ok.size:
        raise ValueError("confidence and correct must have the same length")
    if conf.size == 0:
        raise ValueError("no predictions to calibrate")
    idx = np.clip(np.floor(np.clip(conf, 0.0, 1.0) * bins).astype(int), 0, bins - 1)
    ece = 0.0
    for b in np.unique(idx):
        sel = idx == b
        ece += sel.mean() * abs(ok[sel].mean() - conf[sel].mean())
    return float(ece)
