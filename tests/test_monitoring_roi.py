"""ROI: assumptions with an audit trail, per-version ROI from confusion matrices, production ROI."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from qcbr.errors import QCBRError, RoleError
from qcbr.monitoring.roi import (
    DEFAULT_ASSUMPTIONS, assumptions_audit, break_even, compare_versions, cumulative_value_curve, endpoint_uptime, kpi_deltas,
    get_assumptions, production_roi, roi_summary, update_assumptions, version_roi,
)
from qcbr.roles import Actor
from qcbr.storage import LocalObjectStore

MANAGER = Actor("maria", "manager")
ASSUME = {**DEFAULT_ASSUMPTIONS, "value_correct": 10.0, "default_error_cost": 20.0, "error_costs": {"churn->stay": 100.0},
          "monthly_volume": 1000, "hourly_price": 0.5, "instance_count": 2, "training_cost": 300.0}
METRICS = {"labels": ["churn", "stay"], "validation:confusion_matrix": [[30, 10], [5, 55]]}


def test_assumptions_are_edited_by_managers_with_an_audit_trail(tmp_path):
    store = LocalObjectStore(tmp_path, "b")
    first = get_assumptions(store, "churn")
    assert first["is_assumption"] and first["updated_by"] is None and first["value_correct"] == 10.0
    with pytest.raises(RoleError, match="only a manager may"):
        update_assumptions(Actor("dan", "data_scientist"), store, "churn", {"value_correct": 5})
    update_assumptions(MANAGER, store, "churn", {"value_correct": 12, "monthly_volume": 5000})
    update_assumptions(Actor("mo", "manager"), store, "churn", {"error_costs": {"churn -> stay": 80}})
    now = get_assumptions(store, "churn")
    assert now["value_correct"] == 12.0 and now["monthly_volume"] == 5000 and now["error_costs"] == {"churn->stay": 80.0}
    assert now["updated_by"] == "mo"
    audit = assumptions_audit(store, "churn")
    assert [(e["who"], e["field"], e["old"], e["new"]) for e in audit][:1] == [("mo", "error_costs", {}, {"churn->stay": 80.0})]
    assert {(e["field"], e["old"], e["new"]) for e in audit[1:]} == {("value_correct", 10.0, 12.0), ("monthly_volume", 10000, 5000)}
    assert all(e["role"] == "manager" and e["when"] for e in audit)
    assert update_assumptions(MANAGER, store, "churn", {"value_correct": 12}) == now  # no change, no audit entry
    assert len(assumptions_audit(store, "churn")) == 3
    assert get_assumptions(store, "other")["updated_by"] is None  # per project


@pytest.mark.parametrize("bad,match", [
    ({"hourly_price": -1}, "must be >= 0"), ({"monthly_volume": 10.5}, "whole number"),
    ({"error_costs": {"churn": 3}}, "truth->predicted"), ({"instance_count": 0}, ">= 1"),
    ({"value_correct": "ten"}, "must be a number"), ({"colour": "red"}, "unknown ROI assumptions"),
])
def test_bad_assumptions_are_refused_with_the_field_named(tmp_path, bad, match):
    store = LocalObjectStore(tmp_path, "b")
    with pytest.raises(QCBRError, match=match):
        update_assumptions(MANAGER, store, "p", bad)
    assert assumptions_audit(store, "p") == []


def test_version_roi_from_the_confusion_matrix():
    r = version_roi(METRICS, ASSUME, horizon_months=12, version=3)
    # per prediction: .30*10 + .55*10 - .10*100 (churn predicted stay) - .05*20 = -2.5
    assert r["value_per_prediction"] == pytest.approx(0.30 * 10 + 0.55 * 10 - 0.10 * 100 - 0.05 * 20)
    assert r["accuracy"] == pytest.approx(0.85)
    hosting = 0.5 * 2 * 730
    assert r["monthly_hosting_cost"] == pytest.approx(hosting)
    assert r["monthly_net"] == pytest.approx(-2.5 * 1000 - hosting)
    assert r["break_even_months"] is None and r["break_even_monthly_volume"] is None
    good = version_roi({"labels": ["churn", "stay"], "validation:confusion_matrix": [[40, 0], [5, 55]]}, ASSUME)
    per = 0.95 * 10 - 0.05 * 20
    assert good["value_per_prediction"] == pytest.approx(per)
    assert good["break_even_months"] == pytest.approx(300 / (per * 1000 - hosting))
    assert good["break_even_monthly_volume"] == pytest.approx(hosting / per)
    assert good["roi"] == pytest.approx((per * 1000 * 12 - (hosting * 12 + 300)) / (hosting * 12 + 300))
    curve = cumulative_value_curve(good, 300, months=3)
    assert list(curve["cumulative_net"]) == pytest.approx([-300 + good["monthly_net"] * m for m in range(4)])
    with pytest.raises(QCBRError, match="no usable validation confusion matrix"):
        version_roi({"labels": ["a"]}, ASSUME)


def test_compare_versions_ranks_by_value():
    table = compare_versions([{"version": 1, "metrics": METRICS},
                              {"version": 2, "metrics": {"labels": ["churn", "stay"], "validation:confusion_matrix": [[40, 0], [5, 55]]}},
                              {"version": 3, "metrics": {}}], ASSUME)
    assert list(table["version"]) == [1, 2, 3]
    assert table.loc[1, "monthly_net"] > table.loc[0, "monthly_net"]
    assert "no usable validation confusion matrix" in table.loc[2, "note"]


def test_production_roi_over_time_and_break_even():
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    rng = np.random.default_rng(0)
    times = [t0 + timedelta(hours=float(h)) for h in rng.uniform(0, 72, 600)]
    preds = pd.DataFrame({"time": times})
    lab_idx = rng.choice(600, 300, replace=False)
    actual = rng.choice(["churn", "stay"], 300)
    predicted = np.where(rng.random(300) < 0.9, actual, np.where(actual == "churn", "stay", "churn"))
    labelled = pd.DataFrame({"time": [times[i] for i in lab_idx], "actual": actual, "predicted": predicted})
    assume = {**ASSUME, "training_cost": 500.0}
    frame = production_roi(preds, labelled, [(t0, t0 + timedelta(days=3))], assume, freq="D")
    assert list(frame["window_start"]) == [pd.Timestamp(t0 + timedelta(days=d)) for d in range(3)]
    assert frame["predictions"].sum() == 600 and frame["labelled"].sum() == 300
    assert list(frame["hosting_cost"]) == pytest.approx([24 * 1.0] * 3)
    assert list(frame["training_cost"]) == [500.0, 0.0, 0.0]
    day0 = labelled[[t < t0 + timedelta(days=1) for t in labelled["time"]]]
    values = [10.0 if a == p else -(100.0 if (a, p) == ("churn", "stay") else 20.0) for a, p in zip(day0["actual"], day0["predicted"])]
    n0 = sum(t < t0 + timedelta(days=1) for t in times)
    assert frame.loc[0, "realised_value"] == pytest.approx(sum(values))
    assert frame.loc[0, "estimated_value"] == pytest.approx(sum(values) / len(values) * n0)
    assert frame["cumulative_net"].iloc[-1] == pytest.approx(frame["net"].sum())
    summary = roi_summary(frame, assume)
    assert summary["predictions"] == 600 and summary["cost"] == pytest.approx(72 + 500)
    assert summary["accuracy"] == pytest.approx(float(np.mean(actual == predicted)))
    # break-even: negative until cumulative net turns >= 0
    synthetic = pd.DataFrame({"window_start": [1, 2, 3, 4], "cumulative_net": [-5.0, -1.0, 2.0, 4.0]})
    assert break_even(synthetic) == 3
    assert break_even(synthetic.assign(cumulative_net=[-5.0, -4.0, -3.0, -1.0])) is None


def test_endpoint_uptime():
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    assert endpoint_uptime({"CreationTime": "2026-03-01T00:00:00+00:00"}, now) == [(now - timedelta(days=1), now)]
    assert endpoint_uptime({}, now) == []


def test_kpi_deltas_compare_the_last_period_with_the_one_before():
    starts = pd.date_range("2026-03-01", periods=14, freq="D", tz="UTC")
    frame = pd.DataFrame({"window_start": starts, "predictions": [10] * 7 + [20] * 7, "labelled": [5] * 14,
                          "accuracy": [0.8] * 7 + [0.9] * 7, "realised_value": [1.0] * 14,
                          "estimated_value": [2.0] * 7 + [5.0] * 7, "hosting_cost": [1.0] * 14,
                          "training_cost": [0.0] * 14, "net": [0.0] * 14, "cumulative_net": [0.0] * 14, "roi": [0.0] * 14})
    k = kpi_deltas(frame, ASSUME, period_days=7)
    assert k["current"]["predictions"] == 140 and k["previous"]["predictions"] == 70
    assert k["delta"]["predictions"] == 70
    assert k["delta"]["accuracy"] == pytest.approx(0.1)
    assert k["delta"]["value"] == pytest.approx(7 * 5.0 - 7 * 2.0)
    assert kpi_deltas(frame.iloc[:0], ASSUME)["delta"] == {}
