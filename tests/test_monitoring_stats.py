"""Every drift statistic against scipy's reference implementation on known distributions."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as ss
from scipy.spatial.distance import jensenshannon

from qcbr.monitoring import stats


@pytest.mark.parametrize("shift,n,m", [(0.0, 400, 300), (0.3, 500, 200), (1.0, 60, 80)])
def test_ks_matches_scipy_on_normals(shift, n, m):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=n), rng.normal(shift, 1.0, size=m)
    ours = stats.ks_2samp(a, b)
    ref = ss.ks_2samp(a, b, method="asymp")
    assert ours.statistic == pytest.approx(ref.statistic, abs=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
    exact = ss.ks_2samp(a, b, method="exact")
    assert ours.p_value == pytest.approx(exact.pvalue, abs=0.02)


def test_ks_with_ties_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.poisson(3, size=700), rng.poisson(3.4, size=500)
    ours = stats.ks_2samp(a, b)
    ref = ss.ks_2samp(a, b, method="asymp")
    assert ours.statistic == pytest.approx(ref.statistic, abs=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


def test_ks_ignores_non_finite_and_rejects_empty():
    assert stats.ks_2samp([1.0, np.nan, 2.0, 3.0], [1.0, 2.0, np.inf, 3.0]).statistic == 0.0
    with pytest.raises(ValueError, match="current has no finite values"):
        stats.ks_2samp([1.0, 2.0], [np.nan])


@pytest.mark.parametrize("dist", ["normal", "lognormal", "exponential"])
def test_wasserstein_matches_scipy(dist):
    rng = np.random.default_rng(3)
    draw = {"normal": lambda s: rng.normal(s, 2, 900), "lognormal": lambda s: rng.lognormal(s, 0.5, 900),
            "exponential": lambda s: rng.exponential(1 + s, 700)}[dist]
    a, b = draw(0.0), draw(0.4)
    assert stats.wasserstein(a, b) == pytest.approx(ss.wasserstein_distance(a, b), rel=1e-10)


def test_normalised_wasserstein_recovers_a_mean_shift_in_iqr_units():
    rng = np.random.default_rng(4)
    a = rng.normal(0, 1, 200_000)
    b = a + 0.5  # a pure location shift moves every unit of mass by 0.5
    iqr = ss.norm.ppf(0.75) - ss.norm.ppf(0.25)
    assert stats.normalised_wasserstein(a, b) == pytest.approx(0.5 / iqr, rel=0.01)
    # a constant reference falls back to std, then to 1
    assert stats.scale_of([2.0, 2.0, 2.0]) == (1.0, "none")
    assert stats.scale_of([0, 0, 0, 0, 0, 0, 0, 0, 1, 10])[1] == "std"


def test_psi_against_the_analytic_normal_shift():
    """PSI over the reference's deciles equals the sum over the same bins of the exact normal
    probabilities (scipy's cdf), up to sampling error."""
    rng = np.random.default_rng(5)
    ref = rng.normal(0, 1, 400_000)
    cur = rng.normal(0.5, 1, 400_000)
    edges = stats.psi_edges(ref)
    bounds = np.concatenate([[-np.inf], edges, [np.inf]])
    p = np.diff(ss.norm.cdf(bounds))
    q = np.diff(ss.norm.cdf(bounds, loc=0.5))
    analytic = float(np.sum((q - p) * np.log(q / p)))
    assert stats.psi(ref, cur) == pytest.approx(analytic, rel=0.02)
    assert 0.15 < analytic < 0.25  # sanity: below the symmetric KL mu^2 = 0.25
    assert stats.psi(ref, ref) == pytest.approx(0.0, abs=1e-12)


def test_psi_epsilon_keeps_empty_bins_finite():
    ref = np.arange(100, dtype=float)
    cur = np.full(50, 1000.0)  # everything in the last bin
    value = stats.psi(ref, cur)
    assert np.isfinite(value) and value > 5


def test_chi_squared_matches_chi2_contingency():
    rng = np.random.default_rng(6)
    cats = ["a", "b", "c", "d"]
    ref = dict(zip(cats, rng.multinomial(2000, [0.4, 0.3, 0.2, 0.1]).astype(float)))
    cur = dict(zip(cats, rng.multinomial(300, [0.3, 0.3, 0.25, 0.15]).astype(float)))
    ours = stats.chi_squared(ref, cur)
    table = np.array([[ref[c] for c in cats], [cur[c] for c in cats]])
    chi2, p, dof, _ = ss.chi2_contingency(table, correction=False)
    assert ours.statistic == pytest.approx(chi2, rel=1e-10)
    assert ours.p_value == pytest.approx(p, rel=1e-9)


def test_chi_squared_handles_new_and_absent_categories_and_binary():
    ours = stats.chi_squared({"x": 50, "y": 50, "z": 0}, {"x": 10, "w": 5})
    table = np.array([[50, 50, 0], [10, 0, 5]], dtype=float)
    chi2, p, _, _ = ss.chi2_contingency(table, correction=False)
    assert ours.statistic == pytest.approx(chi2) and ours.p_value == pytest.approx(p)
    binary = stats.chi_squared({"t": 70, "f": 30}, {"t": 40, "f": 60})
    chi2, p, _, _ = ss.chi2_contingency(np.array([[70, 30], [40, 60]]), correction=False)
    assert binary.p_value == pytest.approx(p)
    assert stats.chi_squared({"only": 5}, {"only": 7}).p_value == 1.0


def test_chi_squared_p_value_is_uniformish_under_the_null():
    """Against scipy.stats.chisquare on equal expected counts: same statistic for a 1-vs-uniform case."""
    obs = np.array([30, 20, 25, 25], dtype=float)
    ref = {k: 1e9 for k in "abcd"}  # an (almost) known population: homogeneity -> goodness of fit
    ours = stats.chi_squared(ref, dict(zip("abcd", obs)))
    gof = ss.chisquare(obs)
    assert ours.statistic == pytest.approx(gof.statistic, rel=1e-6)
    assert ours.p_value == pytest.approx(gof.pvalue, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jensen_shannon_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 50, size=6).astype(float)
    q = rng.integers(0, 50, size=6).astype(float)
    p[0] = 0  # a category missing on one side
    keys = list("abcdef")
    ours = stats.jensen_shannon(dict(zip(keys, p)), dict(zip(keys, q)))
    assert ours == pytest.approx(jensenshannon(p / p.sum(), q / q.sum(), base=2), rel=1e-10)
    assert stats.jensen_shannon({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    assert stats.jensen_shannon({"a": 3, "b": 1}, {"a": 6, "b": 2}) == pytest.approx(0.0, abs=1e-12)


def test_ece_against_a_hand_computed_case():
    conf = [0.95, 0.95, 0.65, 0.65, 0.65, 0.65]
    correct = [1, 1, 1, 0, 0, 0]
    # bin 0.9-1.0: acc 1.0 vs conf .95 -> .05 * 2/6; bin 0.6-0.7: acc .25 vs .65 -> .4 * 4/6
    assert stats.expected_calibration_error(conf, correct) == pytest.approx(0.05 * 2 / 6 + 0.4 * 4 / 6)
    perfect = stats.expected_calibration_error(np.full(1000, 0.8), np.r_[np.ones(800), np.zeros(200)])
    assert perfect == pytest.approx(0.0, abs=1e-12)
