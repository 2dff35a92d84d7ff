"""Data drift, constraint checks, prediction drift and novelty drift against a baseline.

Verdict rule (``comparison_method`` "Robust", Model Monitor's default): a feature has drifted when
its two-sample test is significant *and* the shift is large enough to matter:

- numeric: KS p-value < alpha / n_features, and PSI >= ``psi`` or normalised Wasserstein >=
  ``wasserstein``;
- categorical: chi-squared p-value < alpha / n_features, and Jensen-Shannon >= ``js``.

Significance guards against noise on small windows (PSI alone is biased upwards there); the effect
size guards against trivial shifts that large windows make significant. Dividing ``alpha`` by the
number of features (Bonferroni) bounds the chance of *any* false alarm on unshifted traffic by
``alpha`` (default 0.01), so each feature's false-alarm rate is at most alpha / n_features.
``comparison_method`` "Simple" uses the distance alone: Model Monitor's L-infinity distance (the
KS statistic for numeric features) > ``comparison_threshold``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from qcbr.monitoring import stats
from qcbr.monitoring.baseline import Baseline, reference_counts, reference_sample
from qcbr.monitoring.values import MISMATCH, MISSING, canon_category, is_missing, parse_number

CHECK_TYPES = (
    "data_type_check", "completeness_check", "baseline_drift_check",
    "missing_column_check", "extra_column_check", "categorical_values_check",
)
PREDICTION_FEATURE = "prediction:label"
NOVELTY_FEATURE = "novelty:best_similarity"
DIST_BINS = 20
DIST_CATEGORIES = 30


@dataclass(frozen=True)
class Thresholds:
    """Every threshold the job applies; defaults chosen so unshifted traffic rarely alarms."""

    alpha: float = 0.01  # family-wise false-alarm rate over the features (Bonferroni)
    psi: float = 0.1
    wasserstein: float | None = None  # None: the constraints' comparison_threshold (0.1)
    js: float | None = None  # None: the constraints' comparison_threshold (0.1)
    completeness_alpha: float = 0.01  # binomial test: fewer present values than the baseline's rate explains
    prediction_alpha: float = 0.01
    prediction_js: float = 0.1
    novelty_quantile: float = 0.05  # "novel" = best similarity below this baseline quantile
    novelty_alpha: float = 0.01
    novelty_share: float = 0.15  # flagged when the novel share reaches this (expected: novelty_quantile)
    accuracy_drop: float = 0.1
    min_labelled: int = 30

    def __post_init__(self) -> None:
        for name in ("alpha", "completeness_alpha", "prediction_alpha", "novelty_alpha", "novelty_quantile"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"threshold {name}={v} must lie strictly between 0 and 1")
        for name in ("psi", "wasserstein", "js", "prediction_js", "novelty_share", "accuracy_drop"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"threshold {name}={v} must be non-negative")

    @classmethod
    def from_dict(cls, d: dict | None) -> "Thresholds":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown thresholds {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def _violation(feature: str, check: str, description: str) -> dict:
    return {"feature_name": feature, "constraint_check_type": check, "description": description}


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _completeness_p(n_present: int, n: int, completeness: float) -> float:
    """P(at most n_present present of n) if values were present at the baseline's rate."""
    from scipy.stats import binom

    if n == 0:
        return 1.0
    if completeness >= 1.0:
        return 1.0 if n_present >= n else 0.0
    return float(binom.cdf(n_present, n, completeness))


def _numeric_distribution(ref: np.ndarray, cur: np.ndarray) -> dict:
    both = np.concatenate([ref, cur]) if cur.size else ref
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, DIST_BINS + 1)
    share = lambda v: (np.histogram(v, bins=edges)[0] / max(v.size, 1)).tolist()  # noqa: E731
    return {"kind": "numeric", "edges": edges.tolist(), "reference": share(ref), "current": share(cur)}


def _categorical_distribution(ref: dict[str, float], cur: dict[str, float]) -> dict:
    rt, ct = sum(ref.values()) or 1.0, sum(cur.values()) or 1.0
    cats = sorted(set(ref) | set(cur), key=lambda c: (-ref.get(c, 0.0) / rt - cur.get(c, 0.0) / ct, c))[:DIST_CATEGORIES]
    return {
        "kind": "categorical",
        "categories": cats,
        "reference": [ref.get(c, 0.0) / rt for c in cats],
        "current": [cur.get(c, 0.0) / ct for c in cats],
    }


def _numeric_values(series) -> tuple[np.ndarray, int, int, int, int]:
    """(finite values, n_missing, n_mismatch, n_integral, n_numeric) of a column."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        arr = series.to_numpy(dtype=float)
        finite = np.isfinite(arr)
        nan = np.isnan(arr)
        values = arr[finite]
        return values, int(nan.sum()), int((~finite & ~nan).sum()), int(np.sum(values == np.round(values))), int(values.size)
    values, n_missing, n_mismatch = [], 0, 0
    for raw in series.tolist():
        number, state = parse_number(raw)
        if state == MISSING:
            n_missing += 1
        elif state == MISMATCH:
            n_mismatch += 1
        else:
            values.append(number)
    arr = np.asarray(values, dtype=float)
    return arr, n_missing, n_mismatch, int(np.sum(arr == np.round(arr))), int(arr.size)


def check_feature(feature: dict, constraint: dict, series, n_features: int, th: Thresholds, cfg: dict) -> tuple[dict, list[dict]]:
    """One feature's statistics, thresholds, verdict and violations."""
    name = feature["name"]
    inferred = feature["inferred_type"]
    numeric = inferred in ("Integral", "Fractional")
    n_rows = int(len(series))
    dist_cfg = cfg["distribution_constraints"]
    comparison = str(dist_cfg.get("perform_comparison", "Enabled")).lower() == "enabled"
    robust = str(dist_cfg.get("comparison_method", "Robust")).lower() == "robust"
    distance_t = float(dist_cfg.get("comparison_threshold", 0.1))
    evaluate = str(cfg.get("evaluate_constraints", "Enabled")).lower() == "enabled"
    alpha_eff = th.alpha / max(n_features, 1)
    violations: list[dict] = []
    out: dict[str, Any] = {
        "name": name, "inferred_type": inferred, "kind": "numeric" if numeric else "categorical",
        "n_rows": n_rows, "metrics": {}, "thresholds": {}, "exceeded": {}, "drifted": False,
        "violations": [], "note": None, "distribution": None,
    }

    if numeric:
        values, n_missing, n_mismatch, n_integral, n_num = _numeric_values(series)
        n_present = n_rows - n_missing
        matching = n_num if inferred == "Fractional" else n_integral
    else:
        domain_bool = set((constraint.get("string_constraints") or {}).get("domains") or []) <= {"true", "false"} and bool(
            (constraint.get("string_constraints") or {}).get("domains"))
        cats = [canon_category(v, boolean=domain_bool) for v in series.tolist()]
        present = [c for c in cats if c is not None]
        n_present, n_missing = len(present), n_rows - len(present)
        matching = n_present  # anything reads as a string
    out.update(n_present=n_present, n_missing=n_missing, completeness=(n_present / n_rows) if n_rows else None)
    baseline_completeness = float(constraint.get("completeness", 1.0)) if constraint else None
    out["baseline_completeness"] = baseline_completeness
    type_share = (matching / n_present) if n_present else None
    out["type_match_share"] = type_share

    if evaluate:
        dt_threshold = float(cfg.get("datatype_check_threshold", 1.0))
        if type_share is not None and type_share < dt_threshold:
            bad = n_present - matching
            violations.append(_violation(
                name, "data_type_check",
                f"{bad} of {n_present} values of {name!r} are not {inferred} (type match {_fmt(type_share)} < "
                f"datatype_check_threshold {dt_threshold})"))
        if numeric and (constraint.get("num_constraints") or {}).get("is_non_negative") and values.size and values.min() < 0:
            violations.append(_violation(
                name, "data_type_check",
                f"{int((values < 0).sum())} negative values of {name!r} (min {_fmt(float(values.min()))}) but the baseline "
                "constraint is_non_negative holds"))
        if baseline_completeness is not None and n_rows:
            p = _completeness_p(n_present, n_rows, baseline_completeness)
            out["metrics"]["completeness_p_value"] = p
            if p < th.completeness_alpha:
                violations.append(_violation(
                    name, "completeness_check",
                    f"completeness of {name!r} is {_fmt(n_present / n_rows)} ({n_missing} of {n_rows} missing), below the "
                    f"baseline's {_fmt(baseline_completeness)} (binomial p={_fmt(p)} < {th.completeness_alpha})"))
        domains = (constraint.get("string_constraints") or {}).get("domains") if not numeric else None
        if domains and n_present:
            dom = set(domains)
            outside: dict[str, int] = {}
            for c in present:
                if c not in dom:
                    outside[c] = outside.get(c, 0) + 1
            in_share = 1 - sum(outside.values()) / n_present
            out["metrics"]["domain_share"] = in_share
            dc_threshold = float(cfg.get("domain_content_threshold", 1.0))
            if in_share < dc_threshold:
                top = ", ".join(f"{k!r} ({v})" for k, v in sorted(outside.items(), key=lambda kv: -kv[1])[:5])
                violations.append(_violation(
                    name, "categorical_values_check",
                    f"{sum(outside.values())} of {n_present} values of {name!r} are outside the baseline domain: {top} "
                    f"(in-domain share {_fmt(in_share)} < domain_content_threshold {dc_threshold})"))

    if numeric:
        ref = reference_sample(feature)
        if ref.size == 0 or values.size == 0:
            out["note"] = "no reference values in the baseline" if ref.size == 0 else "no numeric values in this window"
        else:
            ks = stats.ks_2samp(ref, values)
            psi = stats.psi(ref, values)
            scale, how = stats.scale_of(ref)
            wn = stats.wasserstein(ref, values) / scale
            w_t = th.wasserstein if th.wasserstein is not None else distance_t
            out["metrics"].update(ks_statistic=ks.statistic, ks_p_value=ks.p_value, psi=psi, wasserstein_normalised=wn)
            out["normalised_by"] = how
            if robust:
                out["thresholds"].update(ks_p_value=alpha_eff, psi=th.psi, wasserstein_normalised=w_t)
                out["exceeded"].update(ks_p_value=ks.p_value < alpha_eff, psi=psi >= th.psi, wasserstein_normalised=wn >= w_t)
                drifted = out["exceeded"]["ks_p_value"] and (out["exceeded"]["psi"] or out["exceeded"]["wasserstein_normalised"])
            else:
                out["thresholds"].update(ks_statistic=distance_t)
                out["exceeded"].update(ks_statistic=ks.statistic > distance_t)
                drifted = out["exceeded"]["ks_statistic"]
            out["statistic"], out["value"], out["threshold"] = ("ks_p_value", ks.p_value, alpha_eff) if robust else (
                "ks_statistic", ks.statistic, distance_t)
            out["drifted"] = bool(drifted and comparison)
            out["distribution"] = _numeric_distribution(ref, values)
            if out["drifted"]:
                violations.append(_violation(
                    name, "baseline_drift_check",
                    f"{name!r} drifted: KS {_fmt(ks.statistic)} (p={_fmt(ks.p_value)} < {_fmt(alpha_eff)}), PSI {_fmt(psi)} "
                    f"(threshold {th.psi}), Wasserstein/{how} {_fmt(wn)} (threshold {w_t})"))
    else:
        ref_counts = reference_counts(feature)
        cur_counts: dict[str, float] = {}
        for c in present:
            cur_counts[c] = cur_counts.get(c, 0.0) + 1.0
        if not ref_counts or not cur_counts:
            out["note"] = "no reference categories in the baseline" if not ref_counts else "no values in this window"
        else:
            chi = stats.chi_squared(ref_counts, cur_counts)
            js = stats.jensen_shannon(ref_counts, cur_counts)
            linf = stats.linf_distance(ref_counts, cur_counts)
            js_t = th.js if th.js is not None else distance_t
            out["metrics"].update(chi_squared=chi.statistic, chi_squared_p_value=chi.p_value, js_distance=js, linf_distance=linf)
            if robust:
                out["thresholds"].update(chi_squared_p_value=alpha_eff, js_distance=js_t)
                out["exceeded"].update(chi_squared_p_value=chi.p_value < alpha_eff, js_distance=js >= js_t)
                drifted = out["exceeded"]["chi_squared_p_value"] and out["exceeded"]["js_distance"]
            else:
                out["thresholds"].update(linf_distance=distance_t)
                out["exceeded"].update(linf_distance=linf > distance_t)
                drifted = out["exceeded"]["linf_distance"]
            out["statistic"], out["value"], out["threshold"] = ("chi_squared_p_value", chi.p_value, alpha_eff) if robust else (
                "linf_distance", linf, distance_t)
            out["drifted"] = bool(drifted and comparison)
            out["distribution"] = _categorical_distribution(ref_counts, cur_counts)
            if out["drifted"]:
                violations.append(_violation(
                    name, "baseline_drift_check",
                    f"{name!r} drifted: chi-squared {_fmt(chi.statistic)} (p={_fmt(chi.p_value)} < {_fmt(alpha_eff)}), "
                    f"Jensen-Shannon {_fmt(js)} (threshold {js_t})"))

    out["violations"] = sorted({v["constraint_check_type"] for v in violations})
    out["verdict"] = "drift" if out["drifted"] else ("violation" if violations else ("ok" if not out["note"] else "not_evaluated"))
    return out, violations


def run_drift(statistics: dict, constraints: dict, current, thresholds: Thresholds | dict | None = None) -> dict:
    """Compare ``current`` (a DataFrame of feature values, raw or typed) against the baseline.

    Returns the report: per feature its statistics, thresholds and verdict; the Model Monitor
    ``violations`` list; ``status`` Completed or CompletedWithViolations; the drift share.
    """
    import pandas as pd

    th = thresholds if isinstance(thresholds, Thresholds) else Thresholds.from_dict(thresholds)
    baseline = Baseline.from_dicts(statistics, constraints)
    if not isinstance(current, pd.DataFrame):
        raise TypeError(f"current must be a pandas DataFrame, got {type(current).__name__}")
    cfg = baseline.monitoring_config
    names = baseline.feature_names
    features, violations = [], []
    for feature in statistics["features"]:
        name = feature["name"]
        if name not in current.columns:
            violations.append(_violation(name, "missing_column_check", f"feature {name!r} of the baseline is absent from the captured requests"))
            features.append({"name": name, "inferred_type": feature["inferred_type"],
                             "kind": "numeric" if feature["inferred_type"] != "String" else "categorical",
                             "n_rows": int(len(current)), "metrics": {}, "thresholds": {}, "exceeded": {},
                             "drifted": False, "violations": ["missing_column_check"], "verdict": "missing",
                             "note": "column absent", "distribution": None})
            continue
        rec, v = check_feature(feature, baseline.constraint(name), current[name], len(names), th, cfg)
        features.append(rec)
        violations.extend(v)
    for extra in current.columns:
        if str(extra) not in names and not all(is_missing(x) for x in current[extra].tolist()):
            violations.append(_violation(str(extra), "extra_column_check",
                                         f"column {str(extra)!r} is in the captured requests but not in the baseline"))
    drifted = [f["name"] for f in features if f["drifted"]]
    return {
        "status": "CompletedWithViolations" if violations else "Completed",
        "n_rows": int(len(current)),
        "thresholds": {**th.to_dict(), "alpha_per_feature": th.alpha / max(len(names), 1),
                       "comparison_method": cfg["distribution_constraints"].get("comparison_method"),
                       "comparison_threshold": cfg["distribution_constraints"].get("comparison_threshold")},
        "features": features,
        "drifted_features": drifted,
        "drift_share": len(drifted) / len(features) if features else 0.0,
        "violations": violations,
    }


def prediction_drift(class_mix: dict | None, predicted_labels, thresholds: Thresholds | None = None) -> dict:
    """Class mix of the predictions against the training labels' mix (chi-squared + JS)."""
    th = thresholds or Thresholds()
    labels = [canon_category(v) for v in list(predicted_labels)]
    labels = [v for v in labels if v is not None]
    out: dict[str, Any] = {"evaluated": False, "n": len(labels), "drifted": False, "note": None,
                           "thresholds": {"p_value": th.prediction_alpha, "js_distance": th.prediction_js}}
    if not class_mix:
        out["note"] = "the baseline has no training class mix"
        return out
    if not labels:
        out["note"] = "no predictions in this window"
        return out
    cur: dict[str, float] = {}
    for v in labels:
        cur[v] = cur.get(v, 0.0) + 1.0
    ref = {str(k): float(v) for k, v in class_mix.items()}
    chi = stats.chi_squared(ref, cur)
    js = stats.jensen_shannon(ref, cur)
    rt, ct = sum(ref.values()), sum(cur.values())
    out.update(
        evaluated=True, chi_squared=chi.statistic, p_value=chi.p_value, js_distance=js,
        reference={k: ref.get(k, 0.0) / rt for k in sorted(set(ref) | set(cur))},
        current={k: cur.get(k, 0.0) / ct for k in sorted(set(ref) | set(cur))},
        drifted=bool(chi.p_value < th.prediction_alpha and js >= th.prediction_js),
    )
    return out


def novelty_drift(novelty: dict | None, best_similarities, thresholds: Thresholds | None = None) -> dict:
    """How many queries are unlike anything remembered, against the case memory's own
    leave-one-out best similarities: the share below the baseline's ``novelty_quantile`` (5% on
    unshifted traffic) with a one-sided binomial test, plus KS on the whole distribution."""
    from scipy.stats import binomtest

    th = thresholds or Thresholds()
    cur = np.asarray([float(v) for v in list(best_similarities) if v is not None and np.isfinite(v)], dtype=float)
    out: dict[str, Any] = {"evaluated": False, "n": int(cur.size), "drifted": False, "note": None,
                           "thresholds": {"novel_share": th.novelty_share, "p_value": th.novelty_alpha,
                                          "quantile": th.novelty_quantile}}
    ref = np.asarray((novelty or {}).get("values") or [], dtype=float)
    if ref.size == 0:
        out["note"] = "the baseline has no novelty (best-similarity) distribution"
        return out
    if cur.size == 0:
        out["note"] = "no captured best-similarity scores in this window"
        return out
    cutoff = float(np.quantile(ref, th.novelty_quantile))
    novel = int(np.sum(cur < cutoff))
    share = novel / cur.size
    p = float(binomtest(novel, cur.size, th.novelty_quantile, alternative="greater").pvalue)
    ks = stats.ks_2samp(ref, cur)
    out.update(
        evaluated=True, cutoff=cutoff, novel_count=novel, novel_share=share, expected_share=th.novelty_quantile,
        binomial_p_value=p, ks_statistic=ks.statistic, ks_p_value=ks.p_value,
        reference_median=float(np.median(ref)), current_median=float(np.median(cur)),
        drifted=bool(p < th.novelty_alpha and share >= th.novelty_share),
        distribution=_numeric_distribution(ref, cur),
    )
    return out


def features_frame(report: dict):
    """The per-feature table the Monitoring screen shows (one row per feature)."""
    import pandas as pd

    rows = []
    for f in report.get("features", []):
        m = f.get("metrics", {})
        rows.append({
            "feature": f["name"], "type": f["inferred_type"], "verdict": f["verdict"], "drifted": f["drifted"],
            "statistic": f.get("statistic"), "value": f.get("value"), "threshold": f.get("threshold"),
            "ks_statistic": m.get("ks_statistic"), "psi": m.get("psi"), "wasserstein_normalised": m.get("wasserstein_normalised"),
            "chi_squared_p_value": m.get("chi_squared_p_value"), "js_distance": m.get("js_distance"),
            "completeness": f.get("completeness"), "violations": ", ".join(f.get("violations", [])),
        })
    return pd.DataFrame(rows)
