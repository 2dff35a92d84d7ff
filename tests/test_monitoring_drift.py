"""Baseline formats, constraint checks and the synthetic-shift checks of the drift job."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qcbr.errors import ArtifactError, CaseValidationError
from qcbr.monitoring.baseline import Baseline, build_baseline, reference_sample, write_baseline
from qcbr.monitoring.drift import Thresholds, features_frame, novelty_drift, prediction_drift, run_drift

SCHEMA = {
    "label": "churn",
    "id_column": "customer",
    "columns": [
        {"name": "customer", "type": "id"},
        {"name": "income", "type": "numeric"},
        {"name": "age", "type": "numeric"},
        {"name": "score", "type": "numeric"},
        {"name": "segment", "type": "categorical"},
        {"name": "active", "type": "boolean"},
        {"name": "churn", "type": "label"},
    ],
}
FEATURES = ["income", "age", "score", "segment", "active"]
SEGMENTS = ["retail", "sme", "corporate", "public"]


def make_frame(n: int, seed: int, shift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 0.4, n) * (1.5 if shift else 1.0)
    age = rng.poisson(40 + (6 if shift else 0), n).astype(int)
    score = rng.normal(0, 1, n)
    probs = [0.1, 0.2, 0.3, 0.4] if shift else [0.4, 0.3, 0.2, 0.1]
    segment = rng.choice(SEGMENTS, size=n, p=probs)
    active = rng.random(n) < 0.6
    return pd.DataFrame({"income": income, "age": age, "score": score, "segment": segment, "active": active})


@pytest.fixture(scope="module")
def baseline():
    train = make_frame(3000, seed=100)
    train.insert(0, "customer", [f"c{i}" for i in range(len(train))])
    train["churn"] = np.where(train["score"] > 0.5, "yes", "no")
    return build_baseline(train.drop(columns=["churn"]), SCHEMA)


def test_statistics_and_constraints_follow_model_monitor_formats(baseline):
    statistics, constraints = baseline
    assert statistics["version"] == 0.0 and statistics["dataset"]["item_count"] == 3000
    by_name = {f["name"]: f for f in statistics["features"]}
    assert list(by_name) == FEATURES  # schema order, id and label excluded
    assert by_name["income"]["inferred_type"] == "Fractional"
    assert by_name["age"]["inferred_type"] == "Integral"
    assert by_name["segment"]["inferred_type"] == by_name["active"]["inferred_type"] == "String"
    num = by_name["income"]["numerical_statistics"]
    assert num["common"] == {"num_present": 3000, "num_missing": 0}
    assert set(num) >= {"mean", "sum", "std_dev", "min", "max", "distribution"}
    kll = num["distribution"]["kll"]
    assert sum(b["count"] for b in kll["buckets"]) == 3000
    assert kll["sketch"]["parameters"] == {"c": 0.64, "k": 2000.0}
    sample = reference_sample(by_name["income"])
    assert sample.size == 2000 and np.all(np.diff(sample) >= 0)
    assert num["min"] <= sample.min() and sample.max() <= num["max"]
    cat = by_name["segment"]["string_statistics"]
    buckets = {b["value"]: b["count"] for b in cat["distribution"]["categorical"]["buckets"]}
    assert set(buckets) == set(SEGMENTS) and sum(buckets.values()) == 3000 and cat["distinct_count"] == 4
    active = {b["value"] for b in by_name["active"]["string_statistics"]["distribution"]["categorical"]["buckets"]}
    assert active == {"true", "false"}
    cons = {c["name"]: c for c in constraints["features"]}
    assert cons["income"]["completeness"] == 1.0 and cons["income"]["num_constraints"]["is_non_negative"] is True
    assert cons["score"]["num_constraints"]["is_non_negative"] is False
    assert cons["segment"]["string_constraints"]["domains"] == sorted(SEGMENTS)
    cfg = constraints["monitoring_config"]
    assert cfg["distribution_constraints"] == {"perform_comparison": "Enabled", "comparison_threshold": 0.1, "comparison_method": "Robust"}
    assert cfg["datatype_check_threshold"] == 1.0 and cfg["evaluate_constraints"] == "Enabled"
    json.dumps(statistics), json.dumps(constraints)  # JSON-able as is


def test_integer_column_with_missing_values_stays_integral():
    frame = pd.DataFrame({"n": [1, 2, None, 4], "x": [0.5, 1.5, 2.0, None]})
    statistics, constraints = build_baseline(frame)
    types = {f["name"]: f["inferred_type"] for f in statistics["features"]}
    assert types == {"n": "Integral", "x": "Fractional"}
    assert {c["name"]: c["completeness"] for c in constraints["features"]} == {"n": 0.75, "x": 0.75}


def test_build_baseline_rejects_bad_input():
    with pytest.raises(CaseValidationError, match="empty frame"):
        build_baseline(pd.DataFrame({"a": []}))
    with pytest.raises(CaseValidationError, match="'missing' is not a column"):
        build_baseline(pd.DataFrame({"a": [1]}), {"columns": [{"name": "missing", "type": "numeric"}]})


def test_unshifted_traffic_is_clean(baseline):
    report = run_drift(*baseline, make_frame(500, seed=17))
    assert report["status"] == "Completed", report["violations"]
    assert report["drifted_features"] == [] and report["drift_share"] == 0.0
    table = features_frame(report)
    assert list(table["feature"]) == FEATURES and set(table["verdict"]) == {"ok"}
    assert report["thresholds"]["alpha_per_feature"] == pytest.approx(0.01 / 5)


def test_shifted_features_are_flagged_and_unshifted_ones_are_not(baseline):
    current = make_frame(500, seed=8, shift=True)
    report = run_drift(*baseline, current)
    assert report["status"] == "CompletedWithViolations"
    assert set(report["drifted_features"]) == {"income", "age", "segment"}
    by = {f["name"]: f for f in report["features"]}
    assert by["score"]["verdict"] == "ok" and by["active"]["verdict"] == "ok"
    inc = by["income"]
    assert inc["metrics"]["ks_p_value"] < inc["thresholds"]["ks_p_value"]
    assert inc["metrics"]["psi"] > 0.1 and inc["metrics"]["wasserstein_normalised"] > 0.1
    assert by["segment"]["metrics"]["js_distance"] > 0.1
    drift_violations = [v for v in report["violations"] if v["constraint_check_type"] == "baseline_drift_check"]
    assert {v["feature_name"] for v in drift_violations} == {"income", "age", "segment"}
    dist = inc["distribution"]
    assert dist["kind"] == "numeric" and len(dist["edges"]) == len(dist["reference"]) + 1
    assert sum(dist["current"]) == pytest.approx(1.0)
    assert by["segment"]["distribution"]["kind"] == "categorical"


def test_false_alarm_rate_over_20_seeds_is_at_most_5_percent_per_feature(baseline):
    alarms = {f: 0 for f in FEATURES}
    for seed in range(20):
        report = run_drift(*baseline, make_frame(500, seed=1000 + seed))
        for f in report["features"]:
            if f["drifted"] or f["violations"]:
                alarms[f["name"]] += 1
    rates = {f: n / 20 for f, n in alarms.items()}
    print("false-alarm rate per feature over 20 unshifted seeds:", rates)
    assert all(r <= 0.05 for r in rates.values()), rates


def test_detection_power_over_20_shifted_seeds(baseline):
    hits = {f: 0 for f in ("income", "age", "segment")}
    for seed in range(20):
        report = run_drift(*baseline, make_frame(300, seed=2000 + seed, shift=True))
        for name in report["drifted_features"]:
            if name in hits:
                hits[name] += 1
    print("detection rate per shifted feature over 20 seeds (n=300):", {k: v / 20 for k, v in hits.items()})
    assert all(v == 20 for v in hits.values()), hits


def test_csv_text_values_read_like_typed_values(baseline):
    typed = make_frame(300, seed=9, shift=True)
    text = typed.map(lambda v: str(v))  # what a CSV request carries
    a, b = run_drift(*baseline, typed), run_drift(*baseline, text)
    assert a["drifted_features"] == b["drifted_features"]
    assert [v["constraint_check_type"] for v in a["violations"]] == [v["constraint_check_type"] for v in b["violations"]]
    assert a["features"][0]["metrics"]["ks_statistic"] == pytest.approx(b["features"][0]["metrics"]["ks_statistic"])


def test_constraint_checks(baseline):
    current = make_frame(200, seed=11).drop(columns=["score"])
    current["age"] = current["age"].astype(object)
    current.loc[:4, "age"] = 41.5  # not Integral
    current.loc[5:7, "income"] = None  # baseline was complete
    current.loc[8, "income"] = -5.0  # is_non_negative
    current["segment"] = current["segment"].astype(object)
    current.loc[9, "segment"] = "government"  # outside the domain (too rare to shift the distribution)
    current["channel"] = "web"  # not in the baseline
    report = run_drift(*baseline, current)
    assert report["status"] == "CompletedWithViolations"
    found = {(v["feature_name"], v["constraint_check_type"]) for v in report["violations"]}
    assert found == {
        ("score", "missing_column_check"),
        ("age", "data_type_check"),
        ("income", "completeness_check"),
        ("income", "data_type_check"),
        ("segment", "categorical_values_check"),
        ("channel", "extra_column_check"),
    }
    seg = next(v for v in report["violations"] if v["constraint_check_type"] == "categorical_values_check")
    assert "'government' (1)" in seg["description"]
    age = next(v for v in report["violations"] if v["feature_name"] == "age")
    assert "5 of 200 values" in age["description"]
    by = {f["name"]: f for f in report["features"]}
    assert by["score"]["verdict"] == "missing" and by["age"]["verdict"] == "violation"
    assert by["active"]["verdict"] == "ok"


def test_json_booleans_and_numbers_read_as_the_boolean_categories(baseline):
    current = make_frame(300, seed=12)
    current["active"] = [1 if v else 0 for v in current["active"]]
    report = run_drift(*baseline, current)
    assert report["status"] == "Completed", report["violations"]


def test_simple_method_and_disabled_comparison(baseline):
    statistics, constraints = baseline
    simple = json.loads(json.dumps(constraints))
    simple["monitoring_config"]["distribution_constraints"]["comparison_method"] = "Simple"
    report = run_drift(statistics, simple, make_frame(500, seed=13, shift=True))
    by = {f["name"]: f for f in report["features"]}
    assert by["income"]["statistic"] == "ks_statistic" and by["income"]["drifted"]
    assert by["segment"]["statistic"] == "linf_distance" and by["segment"]["drifted"]
    off = json.loads(json.dumps(constraints))
    off["monitoring_config"]["distribution_constraints"]["perform_comparison"] = "Disabled"
    assert run_drift(statistics, off, make_frame(500, seed=13, shift=True))["drifted_features"] == []


def test_thresholds_are_parameters(baseline):
    strict = run_drift(*baseline, make_frame(500, seed=14, shift=True), thresholds={"psi": 50.0, "wasserstein": 50.0, "js": 0.9})
    assert strict["drifted_features"] == []
    with pytest.raises(ValueError, match="unknown thresholds"):
        Thresholds.from_dict({"alfa": 0.1})
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Thresholds(alpha=1.5)


def test_prediction_drift_on_the_class_mix():
    train_mix = {"no": 700, "yes": 300}
    rng = np.random.default_rng(0)
    same = rng.choice(["no", "yes"], 400, p=[0.7, 0.3])
    moved = rng.choice(["no", "yes"], 400, p=[0.3, 0.7])
    assert prediction_drift(train_mix, same)["drifted"] is False
    out = prediction_drift(train_mix, moved)
    assert out["drifted"] is True and out["p_value"] < 1e-6 and out["current"]["yes"] > 0.6
    assert prediction_drift(None, moved)["evaluated"] is False


def test_novelty_drift_on_best_similarities():
    rng = np.random.default_rng(1)
    reference = {"values": sorted(rng.beta(8, 2, 2000).tolist())}
    same = novelty_drift(reference, rng.beta(8, 2, 400))
    assert same["evaluated"] and not same["drifted"]
    assert same["novel_share"] == pytest.approx(0.05, abs=0.035)
    novel = novelty_drift(reference, np.r_[rng.beta(8, 2, 300), rng.beta(2, 8, 100)])
    assert novel["drifted"] and novel["novel_share"] > 0.25 and novel["binomial_p_value"] < 1e-6
    assert novelty_drift({}, [0.5])["evaluated"] is False


def test_baseline_round_trips_through_model_dir_and_tar(tmp_path, baseline):
    import io
    import tarfile

    train = make_frame(400, seed=3)
    paths = write_baseline(tmp_path, train, None, labels=np.where(train["score"] > 0, "yes", "no"))
    loaded = Baseline.from_dir(tmp_path)
    assert loaded.feature_names == FEATURES and set(loaded.extras["class_mix"]) == {"yes", "no"}
    assert loaded.extras["feature_order"] == FEATURES
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in paths.values():
            tar.add(p, arcname=p.split("/")[-1])
        (tmp_path / "metrics.json").write_text(json.dumps({"validation:accuracy": 0.91}))
        tar.add(tmp_path / "metrics.json", arcname="metrics.json")
    from_tar = Baseline.from_tar_bytes(buf.getvalue())
    assert from_tar.statistics == loaded.statistics and from_tar.reference_accuracy == 0.91
    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w:gz") as tar:
        tar.add(tmp_path / "metrics.json", arcname="metrics.json")
    with pytest.raises(ArtifactError, match="no statistics.json"):
        Baseline.from_tar_bytes(empty.getvalue())
    with pytest.raises(ArtifactError, match="not a readable tar.gz"):
        Baseline.from_tar_bytes(b"not a tar")
    (tmp_path / "statistics.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Baseline.from_dir(tmp_path)


def test_novelty_baseline_is_the_leave_one_out_best_fidelity(fitted_model, iris_cases):
    """Checked against the full fidelity matrix of the case memory with its diagonal removed."""
    from qcbr.monitoring.baseline import novelty_baseline
    from qcbr.similarity import fidelity_matrix

    X = iris_cases.features
    out = novelty_baseline(fitted_model, X)
    K = fidelity_matrix(fitted_model.X_memory_, fitted_model.X_memory_, fitted_model.feature_map_)
    np.fill_diagonal(K, -np.inf)
    expected = np.sort(K.max(axis=1))
    assert out["n_cases"] == out["n_sampled"] == 150
    np.testing.assert_allclose(out["values"], expected, atol=1e-9)
    assert out["quantiles"]["p05"] == pytest.approx(np.quantile(expected, 0.05))
    sub = novelty_baseline(fitted_model, X, max_rows=40, seed=1)
    assert sub["n_sampled"] == 40 and set(np.round(sub["values"], 9)) <= set(np.round(expected, 9))
