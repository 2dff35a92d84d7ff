"""The Overview & ROI screen: its figures (pure functions on real ROI computations) and AppTests per
role: empty states, KPIs with deltas and ROI over time on a home seeded through the real local
backend (tests/monitoring_seed.py), the per-version comparison, the assumptions editor (managers,
audited; a data scientist is refused by the library and the refusal is shown), and warm reruns on
a long history."""
from __future__ import annotations

import statistics
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboard import monitoring_figures as mf
from dashboard.testing import app_as, ensure_user, open_page, texts
from tests.conftest import open_on_endpoint, open_over_90_days, page_refused, rerun_times
from tests.monitoring_seed import history_endpoint

ASSUMED = {"value_correct": 10.0, "default_error_cost": 25.0, "monthly_volume": 1000, "hourly_price": 0.1,
           "instance_count": 1, "training_cost": 500.0}


# ------------------------------------------------------------------------------ figures
def _production(days: int = 10):
    """Real ``production_roi`` of a synthetic endpoint: 40 predictions a day, half labelled, 90% right."""
    from qcbr.monitoring.roi import production_roi, validate_assumptions

    rng = np.random.default_rng(0)
    start = pd.Timestamp("2024-05-01", tz="UTC")
    times = start + pd.to_timedelta(rng.uniform(0, days * 24, 40 * days), unit="h")
    predictions = pd.DataFrame({"time": times})
    lab = predictions.sample(frac=0.5, random_state=0).copy()
    lab["actual"] = rng.choice(["a", "b"], len(lab))
    lab["predicted"] = np.where(rng.random(len(lab)) < 0.9, lab["actual"], np.where(lab["actual"] == "a", "b", "a"))
    uptime = [(start.to_pydatetime(), (start + pd.Timedelta(days=days)).to_pydatetime())]
    assumed = validate_assumptions(ASSUMED)
    return production_roi(predictions, lab, uptime, assumed, freq="D"), assumed


def test_roi_over_time_has_net_bars_cumulative_line_and_break_even():
    from qcbr.monitoring.roi import break_even

    frame, assumed = _production()
    be = break_even(frame)
    assert be is not None  # the training cost is paid back within the ten days
    fig = mf.roi_over_time(frame, "EUR", be)
    assert isinstance(fig, go.Figure)
    assert [t.type for t in fig.data] == ["bar", "scatter"]
    assert np.allclose(fig.data[0].y, frame["net"]) and np.allclose(fig.data[1].y, frame["cumulative_net"])
    colours = list(fig.data[0].marker.color)
    assert colours == [mf.GOOD if v >= 0 else mf.BAD for v in frame["net"]]
    assert colours[0] == mf.BAD  # day one carries the training cost
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert any(s.x0 == pd.Timestamp(be).timestamp() * 1000 for s in lines)
    assert not any(s.x0 == pd.Timestamp(be).timestamp() * 1000 for s in mf.roi_over_time(frame, "EUR").layout.shapes)


def test_version_comparison_and_break_even_projection_from_confusion_matrices():
    from qcbr.monitoring.roi import compare_versions, cumulative_value_curve

    good = {"labels": ["a", "b"], "validation:confusion_matrix": [[45, 5], [5, 45]]}
    poor = {"labels": ["a", "b"], "validation:confusion_matrix": [[30, 20], [20, 30]]}
    frame = compare_versions([{"version": 1, "metrics": good}, {"version": 2, "metrics": poor},
                              {"version": 3, "metrics": {}}], ASSUMED)
    assert frame["note"].notna().tolist() == [False, False, True]
    fig = mf.version_comparison(frame, "EUR")
    assert [t.name for t in fig.data] == ["value", "error cost", "hosting", "net"]
    assert list(fig.data[0].x) == ["v1", "v2"]  # version 3 has no matrix
    assert np.allclose(fig.data[3].y, frame["monthly_net"].iloc[:2])
    assert fig.data[3].y[0] > 0 > fig.data[3].y[1]  # 90% accuracy pays, 60% does not at these costs
    assert fig.layout.barmode == "relative"
    curves = {f"v{r['version']}": cumulative_value_curve(r, ASSUMED["training_cost"], months=12)
              for r in frame.iloc[:2].to_dict("records")}
    projection = mf.break_even_projection(curves, "EUR")
    assert [t.name for t in projection.data] == ["v1", "v2"]
    assert projection.data[0].y[0] == -ASSUMED["training_cost"] and projection.data[0].y[-1] > 0
    assert projection.data[1].y[-1] < projection.data[1].y[0]


def test_error_pairs_never_mix_two_models_classes():
    from dashboard.monitoring_data import error_pairs

    iris = {"FeatureSchema": {"classes": ["setosa", "versicolor", "virginica"]}}
    churn = {"FeatureSchema": {"classes": ["yes", "no"]}}
    pairs = error_pairs([churn, iris, dict(iris), {"FeatureSchema": None}])
    assert pairs == ["no->yes", "yes->no", "setosa->versicolor", "setosa->virginica", "versicolor->setosa",
                     "versicolor->virginica", "virginica->setosa", "virginica->versicolor"]
    assert error_pairs([]) == []


def test_empty_inputs_give_explaining_figures_and_series():
    for fig in (mf.roi_over_time(pd.DataFrame()), mf.break_even_projection({}),
                mf.version_comparison(pd.DataFrame({"version": [1], "note": ["no matrix"]}))):
        assert not fig.data and fig.layout.annotations[0].text
    frame, _ = _production(3)
    series = mf.kpi_series(frame, ["predictions", "accuracy", "missing"])
    assert series["predictions"] == [float(v) for v in frame["predictions"]] and "missing" not in series
    assert mf.kpi_series(pd.DataFrame(), ["net"]) == {"net": []}


# ----------------------------------------------------------------------- empty and roles
def test_empty_home_manager_sees_next_steps_and_the_assumptions_editor(empty_home):
    at = open_page(app_as("manager", empty_home), "overview")
    assert not at.exception, [e.message for e in at.exception]
    text = texts(at)
    assert "Getting started" in text and "No endpoint serves predictions yet" in text
    assert "No model versions yet" in text and "These are **assumptions**" in text
    assert "As a manager" in text and "No changes yet: the defaults apply." in text
    assert at.button(key="ov_a_save").label == "Save assumptions"
    assert at.number_input(key="ov_a_value_correct").value == 10.0
    assert not at.error


def test_empty_home_data_scientist_sees_assumptions_read_only(empty_home):
    at = open_page(app_as("data_scientist", empty_home), "overview")
    assert not at.exception, [e.message for e in at.exception]
    assert "Managers set the assumptions; you see the result." in texts(at)
    assert "ov_a_save" not in [b.key for b in at.button] and not at.number_input
    shown = next(d.value for d in at.dataframe if "assumption" in d.value.columns)
    assert dict(zip(shown["assumption"], shown["value"]))["Value of a correct prediction"] == "10.0"
    assert not at.error


def test_a_business_user_cannot_reach_the_overview(empty_home):
    direct = page_refused(empty_home, "overview", "business")
    assert "Overview & ROI is not available to a business user" in texts(direct)
    assert not direct.title and not direct.metric


# ---------------------------------------------------------------------- seeded lifecycle
# (fixtures ``seeded`` and ``home``: tests/conftest.py)
def _open(role, home, endpoint="mon-dash", name=None):
    return open_on_endpoint("overview", "ov_endpoint", role, home, endpoint, name)


def _expected(seeded, assumed):
    """The KPIs the page should show, computed straight from the library on the same files."""
    from qcbr.monitoring.roi import endpoint_uptime, kpi_deltas, production_inputs, production_roi

    backend = seeded["backend"]
    since = datetime.now(timezone.utc) - timedelta(days=30)
    outputs, labelled = production_inputs(backend.store, "mon-dash", since)
    frame = production_roi(outputs, labelled, endpoint_uptime(backend.describe_endpoint("mon-dash")), assumed, "D")
    return kpi_deltas(frame, assumed, 7, now=datetime.now(timezone.utc))["current"]


@pytest.mark.slow
@pytest.mark.parametrize("role", ["data_scientist", "manager"])
def test_kpis_roi_and_versions_for_each_role(home, seeded, role):
    from qcbr.monitoring.roi import get_assumptions, version_metrics, version_roi

    backend = seeded["backend"]
    at = _open(role, home)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Model versions"] == "1"
    assert metrics["Predictions"] == str(seeded["rows"])
    assumed = get_assumptions(backend.store, "qcbr")
    expected = _expected(seeded, assumed)
    assert metrics["Accuracy (ground truth)"] == f"{100 * expected['accuracy']:.1f}%"
    assert expected["labelled"] == len(seeded["labelled"])
    assert metrics["Net value (estimate)"] == f"{assumed['currency']} {expected['net']:,.0f}"
    assert any(c.key == "ov_roi_fig" for c in at.get("plotly_chart"))
    assert "Getting started" not in texts(at)  # the project went all the way
    versions = next(d.value for d in at.dataframe if "monthly_net" in d.value.columns)
    record = backend.describe_model_version(seeded["version"])
    direct = version_roi(version_metrics(backend.store, record), assumed, 12, seeded["version"])
    row = versions[versions["version"] == seeded["version"]].iloc[0]
    assert row["status"] == "Approved"
    assert row["monthly_net"] == pytest.approx(direct["monthly_net"])
    assert row["accuracy"] == pytest.approx(direct["accuracy"])
    assert {"ov_versions_fig", "ov_breakeven_fig"} <= {c.key for c in at.get("plotly_chart")}
    assert ("ov_a_save" in [b.key for b in at.button]) == (role == "manager")


@pytest.mark.slow
def test_a_manager_saves_assumptions_and_the_change_is_audited(home, seeded):
    from qcbr.monitoring.roi import assumptions_audit, get_assumptions

    store = seeded["backend"].store
    before = get_assumptions(store, "qcbr")
    at = _open("manager", home)
    new_value = before["value_correct"] + 7.0
    at.number_input(key="ov_a_value_correct").set_value(new_value)
    at.number_input(key="ov_a_monthly_volume").set_value(before["monthly_volume"] + 500)
    at.button(key="ov_a_save").click().run()
    assert not at.exception, [e.message for e in at.exception]
    after = get_assumptions(store, "qcbr")
    assert after["value_correct"] == new_value and after["monthly_volume"] == before["monthly_volume"] + 500
    assert after["updated_by"] == "test-manager"
    audit = assumptions_audit(store, "qcbr")
    latest = {e["field"]: e for e in audit[:2]}
    assert latest["value_correct"]["old"] == before["value_correct"] and latest["value_correct"]["new"] == new_value
    assert all(e["who"] == "test-manager" and e["role"] == "manager" for e in latest.values())
    assert "Assumptions saved (monthly_volume, value_correct)" in texts(at)
    trail = next(d.value for d in at.dataframe if "assumption" in d.value.columns and "who" in d.value.columns)
    assert set(trail["assumption"].iloc[:2]) == {"value_correct", "monthly_volume"}
    # the KPIs follow the new assumptions at once
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Net value (estimate)"] == f"{after['currency']} {_expected(seeded, after)['net']:,.0f}"
    assert at.number_input(key="ov_a_value_correct").value == new_value


@pytest.mark.slow
def test_a_data_scientist_cannot_save_assumptions_the_refusal_is_shown(home, seeded):
    """A manager's role is changed to data scientist while the editor is open: the click runs as
    the data scientist, the library refuses (RoleError), nothing is written, the page says why."""
    from qcbr.monitoring.roi import assumptions_audit, get_assumptions

    store = seeded["backend"].store
    before, audit_before = get_assumptions(store, "qcbr"), assumptions_audit(store, "qcbr")
    at = _open("manager", home, name="demoted-manager")
    at.number_input(key="ov_a_training_cost").set_value(before["training_cost"] + 100)
    ensure_user(home, "data_scientist", name="demoted-manager")
    at.button(key="ov_a_save").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert get_assumptions(store, "qcbr") == before and assumptions_audit(store, "qcbr") == audit_before
    refusal = "\n".join(e.value for e in at.error)
    assert "Not allowed" in refusal and "may not edit roi" in refusal and "demoted-manager" in refusal
    assert "ov_a_save" not in [b.key for b in at.button]  # the editor is gone for a data scientist
    assert "Managers set the assumptions" in texts(at)


@pytest.mark.slow
def test_warm_reruns_stay_fast_on_a_long_history(request, home, seeded):
    """The same long history as the Monitoring screen's timing (100,800 captured rows over 60 days)."""
    history = history_endpoint(request, seeded)
    at, cold = open_over_90_days("overview", "ov", home, history["endpoint"])
    assert any(c.key == "ov_roi_fig" for c in at.get("plotly_chart"))
    # the KPI covers the day windows that start within the last 7 days (70 rows an hour)
    predictions = int({m.label: m.value for m in at.metric}["Predictions"].replace(",", ""))
    assert 6 * 24 * 70 <= predictions <= 7 * 24 * 70
    warm = rerun_times(at, 5)
    print(f"\noverview page, {history['rows']:,} captured rows over 60 days: first run {cold:.2f} s, warm reruns "
          f"{', '.join(f'{1000 * w:.0f}' for w in warm)} ms (median {1000 * statistics.median(warm):.0f} ms)")
    assert statistics.median(warm) < 0.5
