"""The Monitoring screen: its figures (pure functions on real reports), its cache, and AppTests per
role on a home seeded through the real local backend (tests/monitoring_seed.py): verdicts, Run now
(a background task polled by the page), feature distributions, decay, violations, the schedule
and the scheduler process, the adjustment policy and its history; and warm reruns on a long
history."""
from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboard import monitoring_figures as mf
from dashboard.monitoring_data import TTLCache
from dashboard.testing import app_as, open_page, texts
from tests.conftest import open_on_endpoint, open_over_90_days, page_refused, rerun_times
from tests.monitoring_seed import history_endpoint


# ------------------------------------------------------------------------------ figures
def _drift_report(shift: float):
    """A real drift report: baseline of 500 rows, current window of 400 rows with ``x`` shifted."""
    from qcbr.monitoring.baseline import build_baseline
    from qcbr.monitoring.drift import run_drift

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 500), "y": rng.normal(5, 2, 500),
                        "colour": rng.choice(["red", "blue", "green"], 500)})
    schema = {"columns": [{"name": "x", "type": "numeric"}, {"name": "y", "type": "numeric"},
                          {"name": "colour", "type": "categorical"}]}
    statistics_, constraints = build_baseline(ref, schema)
    cur = pd.DataFrame({"x": rng.normal(shift, 1, 400), "y": rng.normal(5, 2, 400),
                        "colour": rng.choice(["red", "blue", "green"], 400, p=[0.8, 0.1, 0.1])})
    return run_drift(statistics_, constraints, cur)


def test_feature_distribution_overlays_reference_and_current_bins():
    report = _drift_report(shift=2.0)
    by = {f["name"]: f for f in report["features"]}
    assert by["x"]["drifted"] and not by["y"]["drifted"]
    fig = mf.feature_distribution(by["x"]["distribution"], "x")
    assert isinstance(fig, go.Figure)
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert [t.name for t in fig.data] == ["reference (training)", "current (captured)"]
    edges = by["x"]["distribution"]["edges"]
    assert len(fig.data[0].x) == len(edges) - 1
    assert np.allclose(fig.data[0].x, (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2)
    assert fig.layout.barmode == "overlay"
    assert abs(sum(fig.data[0].y) - 1) < 1e-9 and abs(sum(fig.data[1].y) - 1) < 1e-9
    # the shift shows: the current mass sits to the right of the reference's
    centres = np.asarray(fig.data[0].x)
    assert np.dot(centres, fig.data[1].y) - np.dot(centres, fig.data[0].y) > 1.5


def test_feature_distribution_of_a_categorical_feature_groups_categories():
    by = {f["name"]: f for f in _drift_report(0.0)["features"]}
    fig = mf.feature_distribution(by["colour"]["distribution"], "colour")
    assert fig.layout.barmode == "group"
    assert set(fig.data[0].x) == {"red", "blue", "green"} and list(fig.data[0].x) == list(fig.data[1].x)
    red = list(fig.data[1].x).index("red")
    assert fig.data[1].y[red] > 0.7 and fig.data[0].y[red] < 0.45


def test_missing_pieces_give_an_explaining_empty_figure():
    for fig in (mf.feature_distribution(None, "x"), mf.novelty_distribution({"evaluated": False, "note": "no scores"}),
                mf.class_mix(None), mf.executions_over_time(pd.DataFrame()), mf.decay_over_time(pd.DataFrame()),
                mf.traffic_over_time(pd.DataFrame())):
        assert isinstance(fig, go.Figure) and not fig.data
        assert fig.layout.annotations and fig.layout.annotations[0].text
    assert "no scores" in mf.novelty_distribution({"evaluated": False, "note": "no scores"}).layout.annotations[0].text


def test_novelty_and_class_mix_figures_from_real_drift_functions():
    from qcbr.monitoring.drift import novelty_drift, prediction_drift

    rng = np.random.default_rng(1)
    memory = {"values": rng.uniform(0.7, 1.0, 300).tolist()}
    novelty = novelty_drift(memory, rng.uniform(0.3, 1.0, 200))
    fig = mf.novelty_distribution(novelty)
    assert [t.name for t in fig.data] == ["reference (training)", "current (captured)"]
    assert any(s.type == "line" and abs(s.x0 - novelty["cutoff"]) < 1e-12 for s in fig.layout.shapes)
    assert f"{novelty['novel_share']:.1%}" in fig.layout.title.text
    mix = prediction_drift({"a": 50, "b": 50}, ["a"] * 90 + ["b"] * 10)
    fig = mf.class_mix(mix)
    assert [list(t.x) for t in fig.data] == [["a", "b"], ["a", "b"]]
    assert list(fig.data[1].y) == [0.9, 0.1] and list(fig.data[0].y) == [0.5, 0.5]


def test_decay_over_time_has_accuracy_recall_per_class_and_ece():
    from qcbr.monitoring.decay import decay_report, windows_frame

    rng = np.random.default_rng(2)
    n = 300
    times = pd.Timestamp("2024-05-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 3 * 24, n), unit="h")
    actual = rng.choice(["a", "b"], n)
    correct = rng.random(n) < np.where(times < pd.Timestamp("2024-05-03", tz="UTC"), 0.9, 0.6)
    predicted = np.where(correct, actual, np.where(actual == "a", "b", "a"))
    joined = pd.DataFrame({"time": times, "predicted": predicted, "actual": actual,
                           "confidence": rng.uniform(0.5, 1, n), "correct": correct})
    report = decay_report(joined, reference_accuracy=0.9, freq="D")
    windows = windows_frame(report)
    fig = mf.decay_over_time(windows, 0.9)
    assert [t.name for t in fig.data] == ["accuracy", "recall a", "recall b", "calibration error (ECE)"]
    assert len(fig.data[0].x) == 3
    assert np.allclose(fig.data[0].y, windows["accuracy"])
    assert fig.data[0].y[-1] < fig.data[0].y[0]  # the decay shows
    assert any(s.type == "line" and s.y0 == 0.9 for s in fig.layout.shapes)


def test_executions_over_time_marks_failed_runs():
    from qcbr.monitoring.job import executions_frame

    records = [
        {"ScheduledTime": "2024-05-01T00:00:00+00:00", "EndpointName": "e", "ExecutionId": "1",
         "MonitoringExecutionStatus": "Completed", "ViolationsCount": 0,
         "Summary": {"drift_share": 0.0, "novel_share": 0.04, "accuracy": 0.95, "ece": 0.05}},
        {"ScheduledTime": "2024-05-02T00:00:00.250000+00:00", "EndpointName": "e", "ExecutionId": "2",
         "MonitoringExecutionStatus": "CompletedWithViolations", "ViolationsCount": 2,
         "Summary": {"drift_share": 0.5, "novel_share": 0.3, "accuracy": None, "ece": None}},
        {"ScheduledTime": "2024-05-03T00:00:00+00:00", "EndpointName": "e", "ExecutionId": "3",
         "MonitoringExecutionStatus": "Failed", "ViolationsCount": 0, "FailureReason": "no captured requests",
         "Summary": {}},
    ]
    fig = mf.executions_over_time(executions_frame(records))
    names = [t.name for t in fig.data]
    assert names == ["drifted features (share)", "novel queries (share)", "accuracy (ground truth)",
                     "calibration error (ECE)", "failed execution"]
    assert list(fig.data[0].y) == [0.0, 0.5]
    assert list(fig.data[-1].text) == ["no captured requests"]


def test_traffic_over_time_stacks_labelled_on_unlabelled():
    daily = pd.DataFrame({"day": pd.to_datetime(["2024-05-01", "2024-05-02"], utc=True),
                          "predictions": [10, 20], "labelled": [3, 0], "correct": [2, 0]})
    fig = mf.traffic_over_time(daily)
    assert fig.layout.barmode == "stack"
    assert list(fig.data[0].y) == [7, 20] and list(fig.data[1].y) == [3, 0]


# -------------------------------------------------------------------------------- cache
def test_ttl_cache_reuses_within_ttl_reloads_after_and_stays_bounded():
    cache = TTLCache(max_entries=3)
    calls = []

    def load(v):
        calls.append(v)
        return v

    assert cache.get(("s", "k", 1), 60, lambda: load(1)) == 1
    assert cache.get(("s", "k", 1), 60, lambda: load(99)) == 1  # cached
    assert cache.get(("s", "k", 2), 0.0, lambda: load(2)) == 2
    assert cache.get(("s", "k", 2), 0.0, lambda: load(3)) == 3  # expired at once
    for i in range(10, 14):
        cache.get(("s", "other", i), 60, lambda i=i: load(i))
    assert len(cache._data) == 3  # least recently used dropped
    cache.clear("other")
    assert not cache._data
    assert calls == [1, 2, 3, 10, 11, 12, 13]
    # a changed fingerprint of the sources reloads before the ttl is up
    assert cache.get(("s", "t", 1), 60, lambda: load("a"), version=("f1",)) == "a"
    assert cache.get(("s", "t", 1), 60, lambda: load("b"), version=("f1",)) == "a"
    assert cache.get(("s", "t", 1), 60, lambda: load("c"), version=("f2",)) == "c"
    assert calls[-2:] == ["a", "c"]


# ----------------------------------------------------------------------- empty and roles
@pytest.mark.parametrize("role", ["data_scientist", "manager"])
def test_empty_home_explains_the_next_step(empty_home, role):
    at = open_page(app_as(role, empty_home), "monitoring")
    assert not at.exception, [e.message for e in at.exception]
    assert "Nothing to monitor yet" in texts(at) and "deploy one on **Endpoints**" in texts(at)
    assert not at.error


def test_a_business_user_cannot_reach_monitoring(empty_home):
    direct = page_refused(empty_home, "monitoring", "business")
    assert not direct.exception
    assert "Monitoring is not available to a business user" in texts(direct)
    assert not direct.title and not direct.button


# ---------------------------------------------------------------------- seeded lifecycle
# (fixtures ``seeded`` and ``home``: tests/conftest.py)
def table(at, *columns: str) -> pd.DataFrame:
    """The first table on the page with these columns (read-only tables carry no key in AppTest)."""
    for frame in at.dataframe:
        if set(columns) <= set(frame.value.columns):
            return frame.value
    raise AssertionError(f"no table with columns {columns}; tables: {[list(f.value.columns) for f in at.dataframe]}")


def _open(role, home, endpoint="mon-dash", name=None):
    return open_on_endpoint("monitoring", "mon_endpoint", role, home, endpoint, name)


def _run_now(at, window="Last 24 hours", apply=False):
    from dashboard.state import tasks

    at.selectbox(key="mon_run_window").set_value(window)
    at.toggle(key="mon_run_apply").set_value(apply)
    at.button(key="mon_run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    job = at.session_state["qcbr_mon_task"]
    task = tasks().wait(job["id"], timeout=120)
    assert task.error is None, task.error
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return task.result


@pytest.mark.slow
@pytest.mark.parametrize("role", ["data_scientist", "manager"])
def test_before_any_run_the_endpoint_says_so(home, seeded, role):
    at = _open(role, home)
    verdicts = table(at, "endpoint", "verdict")
    row = verdicts[verdicts["endpoint"] == "mon-dash"].iloc[0]
    if row["verdict"] == "Not run yet":  # (another role's test may have run it already)
        assert "No monitoring runs for mon-dash yet" in texts(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Predictions (recent)"] == str(seeded["rows"])
    assert metrics["Ground truth"] == str(len(seeded["labelled"]))
    assert metrics["Endpoints in service"] in ("1", "2")
    assert any(c.key == "mon_traffic" for c in at.get("plotly_chart"))
    assert at.button(key="mon_run").label == "Run now"


@pytest.mark.slow
def test_run_now_produces_an_execution_the_page_shows(home, seeded):
    from qcbr.monitoring.job import list_executions

    store = seeded["backend"].store
    before = len(list_executions(store, "mon-dash"))
    at = _open("data_scientist", home)
    result = _run_now(at)
    record = result["execution"]
    assert record["MonitoringExecutionStatus"] in ("Completed", "CompletedWithViolations")
    assert record["CreatedBy"] == "test-scientist" and record["Summary"]["n_rows"] == seeded["rows"]
    assert len(list_executions(store, "mon-dash")) == before + 1
    # the page now shows it: verdict, the execution selected, per-feature table, distributions
    assert at.selectbox(key="mon_execution").value == record["ExecutionId"]
    verdicts = table(at, "endpoint", "verdict")
    row = verdicts[verdicts["endpoint"] == "mon-dash"].iloc[0]
    assert row["verdict"] in ("OK", "Violations") and row["violations"] == record["ViolationsCount"]
    features = table(at, "feature", "statistic")
    assert list(features["feature"]) == seeded["features"]
    assert {"statistic", "threshold", "drifted"} <= set(features.columns)
    chart = next(c for c in at.get("plotly_chart") if c.key == "mon_feature_fig")
    assert "reference vs current" in chart.proto.spec
    assert "Last run: mon-dash" in texts(at)
    # decay from the 40 labels
    assert record["Summary"]["n_labelled"] == len(seeded["labelled"])
    assert "Labelled predictions" in [m.label for m in at.metric]
    assert any(c.key == "mon_decay_fig" for c in at.get("plotly_chart"))


@pytest.mark.slow
def test_manager_sees_the_execution_and_picks_a_feature(home, seeded):
    at = _open("manager", home)
    if "mon_execution" not in [s.key for s in at.selectbox]:
        _run_now(at)
    feature = seeded["features"][2]
    at.selectbox(key="mon_feature").set_value(feature).run()
    assert not at.exception
    chart = next(c for c in at.get("plotly_chart") if c.key == "mon_feature_fig")
    assert f"{feature}: reference vs current" in chart.proto.spec
    assert any(c.key == "mon_novelty_fig" for c in at.get("plotly_chart"))
    assert any(c.key == "mon_history_fig" for c in at.get("plotly_chart"))
    assert "No constraint violations" in texts(at) or len(table(at, "feature_name", "constraint_check_type"))


@pytest.mark.slow
def test_policy_edit_is_saved_and_in_the_history(home, seeded):
    from qcbr.monitoring.policy import get_policy, policy_history

    store = seeded["backend"].store
    at = _open("manager", home)
    at.number_input(key="mon_pol_max_drift_share_mon-dash").set_value(0.5)
    at.checkbox(key="mon_pol_max_accuracy_drop_on_mon-dash").uncheck()  # off
    at.number_input(key="mon_pol_cooldown_mon-dash").set_value(2.0)
    at.button(key="FormSubmitter:mon_policy_form_mon-dash-Save policy").click().run()
    assert not at.exception, [e.message for e in at.exception]
    policy = get_policy(store, "mon-dash")
    assert policy["configured"] and policy["max_drift_share"] == 0.5 and policy["max_accuracy_drop"] is None
    assert policy["cooldown_hours"] == 2.0 and policy["updated_by"] == "test-manager"
    edit = policy_history(store, "mon-dash", kind="edit")[0]
    assert edit["by"] == "test-manager"
    assert edit["changes"]["max_drift_share"] == {"old": 0.3, "new": 0.5}
    history = table(at, "kind", "fired")
    assert history.iloc[0]["kind"] == "edit" and "max_drift_share: 0.3 → 0.5" in history.iloc[0]["details"]


@pytest.mark.slow
def test_run_now_can_apply_the_policy_and_the_decision_is_recorded(home, seeded):
    from qcbr.monitoring.policy import policy_history

    store = seeded["backend"].store
    at = _open("data_scientist", home)
    result = _run_now(at, window="Everything captured", apply=True)
    decision = result["decision"]
    assert decision is not None and decision["kind"] == "decision"
    assert decision["execution"] == result["execution"]["ExecutionId"]
    # 48 clean rows: nothing reaches the thresholds, or too little data to act on
    assert decision["fire"] is False and decision["action"] is None
    assert policy_history(store, "mon-dash", kind="decision")[0]["key"] == decision["key"]
    history = table(at, "kind", "fired")
    assert history.iloc[0]["kind"] == "decision" and not history.iloc[0]["fired"]
    assert "did not fire" in texts(at)


@pytest.mark.slow
def test_schedule_and_scheduler_start_stop(home, seeded):
    from qcbr.monitoring.scheduler import load_schedules

    backend = seeded["backend"]
    at = _open("data_scientist", home)
    at.number_input(key="mon_sched_every_mon-dash").set_value(30.0)
    at.checkbox(key="mon_sched_windowed_mon-dash").check()
    at.number_input(key="mon_sched_window_mon-dash").set_value(120.0)
    at.button(key="FormSubmitter:mon_schedule_form_mon-dash-Save schedule").click().run()
    assert not at.exception, [e.message for e in at.exception]
    saved = load_schedules(home)["mon-dash"]
    assert saved["every_minutes"] == 30.0 and saved["window_minutes"] == 120.0 and saved["enabled"]
    assert saved["updated_by"] == "test-scientist"
    assert "mon-dash: every 30 min, enabled" in texts(at)

    assert not backend.monitoring_scheduler_status()["running"]
    at.number_input(key="mon_sched_wake").set_value(60.0)
    at.button(key="mon_sched_start").click().run()
    assert not at.exception, [e.message for e in at.exception]
    status = backend.monitoring_scheduler_status()
    try:
        assert status["running"] and status["every_minutes"] == 60.0
        assert f"pid {status['pid']}" in texts(at)
        assert backend.audit_log(1, "start_monitoring_scheduler")[0]["user"] == "test-scientist"
        at.button(key="mon_sched_stop").click().run()
        assert not at.exception
        assert not backend.monitoring_scheduler_status()["running"]
        assert "stopped" in texts(at)
    finally:
        from qcbr.monitoring.scheduler import stop_scheduler

        stop_scheduler(home, grace=0.0)


@pytest.mark.slow
def test_new_traffic_and_labels_show_on_the_next_rerun(home, seeded):
    """The cached traffic is re-read as soon as today's capture or ground truth changes."""
    from qcbr.roles import OPERATOR
    from tests.monitoring_seed import ENDPOINT, _captured_rows

    backend = seeded["backend"]
    at = _open("manager", home)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Predictions (recent)"] == str(seeded["rows"])
    result = backend.invoke(OPERATOR, ENDPOINT, {"instances": [[5.9, 3.0, 5.1, 1.8], [5.0, 3.4, 1.5, 0.2]]})
    deadline = time.monotonic() + 30
    while _captured_rows(backend.store, ENDPOINT) < seeded["rows"] + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    seeded["rows"] += 2
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Predictions (recent)"] == str(seeded["rows"])
    backend.submit_ground_truth(OPERATOR, result["predictions"][0]["inference_id"], "virginica")
    seeded["labelled"].append((result["predictions"][0]["inference_id"], "virginica"))
    at.run()
    assert {m.label: m.value for m in at.metric}["Ground truth"] == str(len(seeded["labelled"]))


@pytest.mark.slow
def test_an_execution_without_ground_truth_explains_how_labels_arrive(home, seeded):
    from qcbr.monitoring.job import monitor_endpoint
    from qcbr.roles import OPERATOR
    from tests.monitoring_seed import ENDPOINT, _captured_rows

    backend = seeded["backend"]
    since = datetime.now(timezone.utc)
    time.sleep(0.01)
    backend.invoke(OPERATOR, ENDPOINT, {"instances": [[6.3, 2.9, 5.6, 1.8]]})
    deadline = time.monotonic() + 30
    while _captured_rows(backend.store, ENDPOINT) < seeded["rows"] + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    seeded["rows"] += 1
    record = monitor_endpoint(backend, backend.store, ENDPOINT, since, actor=OPERATOR)
    assert record["Summary"]["n_rows"] == 1 and record["Summary"]["n_labelled"] == 0
    # a run made outside the page shows there within LISTING_TTL; don't wait for the cache to expire
    from dashboard import monitoring_data

    monitoring_data.clear()
    at = _open("data_scientist", home)
    at.selectbox(key="mon_execution").set_value(record["ExecutionId"]).run()
    assert not at.exception, [e.message for e in at.exception]
    text = texts(at)
    assert "No ground truth in this window yet" in text and "`qcbr ground-truth`" in text
    assert not any(c.key == "mon_decay_fig" for c in at.get("plotly_chart"))


@pytest.mark.slow
def test_warm_reruns_stay_fast_on_a_long_history(request, home, seeded):
    """60 days x 24 h x 70 captured rows (100,800), 20% labelled, 200 executions: the first run
    reads them; reruns (widget changes) reuse the cached aggregates."""
    history = history_endpoint(request, seeded)
    at, cold = open_over_90_days("monitoring", "mon", home, history["endpoint"])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Predictions (recent)"] == f"{history['rows']:,}"
    assert metrics["Ground truth"] == f"{history['labelled']:,}"
    assert len(at.selectbox(key="mon_execution").options) == history["executions"]
    warm = rerun_times(at, 5)
    print(f"\nmonitoring page, {history['rows']:,} captured rows, {history['labelled']:,} labelled, "
          f"{history['executions']} executions: first run {cold:.2f} s, warm reruns "
          f"{', '.join(f'{1000 * w:.0f}' for w in warm)} ms (median {1000 * statistics.median(warm):.0f} ms)")
    assert statistics.median(warm) < 0.5
