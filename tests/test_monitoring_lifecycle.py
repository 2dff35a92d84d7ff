"""Monitoring end to end on the local backend: a real endpoint (server + gateway + Lambda handler)
captures traffic, ground truth is submitted, ``qcbr monitor run`` reads the baseline from the
served version's model.tar.gz, and the adjustment policy fires (or not) in the session's
temporary QCBR_HOME: retrain on the retained case base, register PendingManualApproval, notify,
never deploy."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from qcbr.cli import main
from qcbr.monitoring.job import baseline_for_endpoint, list_executions
from qcbr.monitoring.notifications import read_notifications
from qcbr.monitoring.policy import apply_policy, complete_pending, policy_history, set_policy
from qcbr.monitoring.scheduler import load_state, run_due, set_schedule
from qcbr.roles import OPERATOR, Actor

pytestmark = pytest.mark.slow
ENDPOINT = "monitor-e2e"
SHIFTED = ["petal length (cm)", "petal width (cm)"]
MANAGER = Actor("meg", "manager")


def _captured_rows(store) -> int:
    n = 0
    for key in store.list(f"capture/{ENDPOINT}/"):
        data = store.get(key)
        n += data[: data.rfind(b"\n") + 1].count(b"\n")
    return n


def _send(backend, rows, batch: int) -> list[tuple[str, str]]:
    """Invoke with ``rows`` (feature dicts + '_label'), ``batch`` per request; (inference id, truth) per row."""
    out = []
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        result = backend.invoke(OPERATOR, ENDPOINT, {"instances": [{k: v for k, v in r.items() if k != "_label"} for r in part]})
        assert len(result["predictions"]) == len(part)
        out += [(p["inference_id"], r["_label"]) for p, r in zip(result["predictions"], part)]
    return out


@pytest.fixture(scope="module")
def traffic(lifecycle, iris_cases):
    """An endpoint on version 1 with 60 clean rows, then 60 rows with shifted petals; all labelled."""
    b = lifecycle.backend
    b.create_endpoint(OPERATOR, ENDPOINT, lifecycle.versions[0]["ModelPackageVersion"], wait=True)
    rng = np.random.default_rng(0)
    frame = iris_cases.frame
    features = list(iris_cases.features.columns)

    def rows(idx, shift: bool):
        out = []
        for i in idx:
            r = {f: float(frame.iloc[i][f]) for f in features}
            if shift:
                r["petal length (cm)"] += 2.5
                r["petal width (cm)"] += 1.0
            r["_label"] = str(frame.iloc[i]["species"])
            out.append(r)
        return out

    clean = _send(b, rows(rng.choice(len(frame), 60, replace=False), False), batch=1)
    while _captured_rows(b.store) < 60:
        time.sleep(0.2)
    middle = datetime.now(timezone.utc)
    time.sleep(0.05)
    shifted = _send(b, rows(rng.choice(len(frame), 60, replace=False), True), batch=4)
    deadline = time.monotonic() + 30
    while _captured_rows(b.store) < 60 + 15 and time.monotonic() < deadline:
        time.sleep(0.2)
    for iid, label in clean + shifted:
        b.submit_ground_truth(OPERATOR, iid, label)
    yield {"middle": middle, "clean": clean, "shifted": shifted}
    b.delete_endpoint(OPERATOR, ENDPOINT)


def _cli_run(capsys, *extra) -> tuple[int, dict]:
    code = main(["monitor", "run", "--endpoint", ENDPOINT, "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_baseline_comes_from_the_served_versions_artifact(lifecycle, traffic):
    baseline, record = baseline_for_endpoint(lifecycle.backend, lifecycle.backend.store, ENDPOINT)
    assert record["ModelPackageVersion"] == lifecycle.versions[0]["ModelPackageVersion"]
    assert baseline.source == record["ModelDataUrl"]
    assert baseline.feature_names == ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    assert baseline.extras["class_mix"] == {"setosa": 50, "versicolor": 50, "virginica": 50}
    assert baseline.extras["novelty"]["n_cases"] == 150 and len(baseline.extras["novelty"]["values"]) == 150
    assert baseline.reference_accuracy is not None


def test_cli_run_on_clean_traffic_completes(lifecycle, traffic, monkeypatch, capsys):
    lifecycle.env(monkeypatch)
    code, out = _cli_run(capsys, "--until", traffic["middle"].isoformat())
    assert code == 0, out
    assert out["MonitoringExecutionStatus"] == "Completed", out["violations"]
    assert out["violations"] == [] and out["Summary"]["n_rows"] == 60
    assert {f["name"] for f in out["features"]} == set(SHIFTED) | {"sepal length (cm)", "sepal width (cm)"}
    assert all(f["verdict"] == "ok" for f in out["features"])
    assert out["Summary"]["n_labelled"] == 60 and out["Summary"]["accuracy"] >= 0.8
    assert out["novelty"]["evaluated"] and out["novelty"]["novel_share"] <= 0.1  # stored cases are familiar
    assert out["prediction_drift"]["evaluated"] and not out["prediction_drift"]["drifted"]


def test_cli_run_on_shifted_traffic_reports_violations(lifecycle, traffic, monkeypatch, capsys):
    lifecycle.env(monkeypatch)
    code, out = _cli_run(capsys, "--since", traffic["middle"].isoformat())
    assert code == 0
    assert out["MonitoringExecutionStatus"] == "CompletedWithViolations"
    assert set(out["Summary"]["drifted_features"]) == set(SHIFTED)
    drift = [v for v in out["violations"] if v["constraint_check_type"] == "baseline_drift_check" and v["feature_name"] in SHIFTED]
    assert len(drift) == 2 and all("KS" in v["description"] for v in drift)
    by = {f["name"]: f for f in out["features"]}
    assert by["petal length (cm)"]["metrics"]["ks_p_value"] < by["petal length (cm)"]["thresholds"]["ks_p_value"]
    assert by["sepal width (cm)"]["verdict"] == "ok"
    assert out["Summary"]["n_rows"] == 60 and out["Summary"]["n_labelled"] == 60
    # the human-readable form of the same command
    assert main(["monitor", "run", "--endpoint", ENDPOINT, "--since", traffic["middle"].isoformat()]) == 0
    text = capsys.readouterr().out
    assert "CompletedWithViolations" in text and "violation baseline_drift_check on petal length (cm)" in text
    assert main(["monitor", "executions", "--endpoint", ENDPOINT, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["MonitoringExecutionStatus"] for r in listed[:2]] == ["CompletedWithViolations", "CompletedWithViolations"]


def test_cli_errors(lifecycle, traffic, monkeypatch, capsys):
    lifecycle.env(monkeypatch)
    assert main(["monitor", "run", "--endpoint", "no-such-endpoint"]) == 1
    assert "no-such-endpoint" in capsys.readouterr().err
    assert main(["monitor", "run", "--endpoint", ENDPOINT, "--since", "yesterday"]) == 1
    assert "is not an ISO-8601 time" in capsys.readouterr().err
    code, out = _cli_run(capsys, "--since", "2099-01-01T00:00:00Z")
    assert code == 1 and out["MonitoringExecutionStatus"] == "Failed"
    assert "no captured requests for endpoint 'monitor-e2e' since 2099-01-01" in out["FailureReason"]


def test_policy_does_not_fire_on_clean_traffic(lifecycle, traffic):
    b = lifecycle.backend
    clean = next(r for r in list_executions(b.store, ENDPOINT) if r["MonitoringExecutionStatus"] == "Completed")
    jobs_before = len(b.list_training_jobs())
    event = apply_policy(b, b.store, ENDPOINT, clean)
    assert event["fire"] is False and event["action"] is None
    assert len(b.list_training_jobs()) == jobs_before


def test_policy_fires_retrains_on_retained_cases_and_registers_pending(lifecycle, traffic, iris_cases):
    b = lifecycle.backend
    set_policy(OPERATOR, b.store, ENDPOINT, {"max_drift_share": 0.25, "cooldown_hours": 24})
    shifted = next(r for r in list_executions(b.store, ENDPOINT) if r["MonitoringExecutionStatus"] == "CompletedWithViolations")
    versions_before = {v["ModelPackageVersion"] for v in b.list_model_versions()}
    event = apply_policy(b, b.store, ENDPOINT, shifted, wait=True, timeout=300)
    assert event["fire"] is True and any(r.startswith("drift share 0.500 >= 0.250") for r in event["reasons"])
    action = event["action"]
    assert action["status"] == "Registered", action
    assert action["Dataset"]["Revised"] == 120 and action["Dataset"]["Sha256"] != lifecycle.dataset["Sha256"]
    new = b.describe_model_version(action["ModelPackageVersion"])
    assert new["ModelPackageVersion"] not in versions_before
    assert new["ModelApprovalStatus"] == "PendingManualApproval"
    assert new["Lineage"]["DatasetSha256"] == action["Dataset"]["Sha256"]
    retained = b.load_dataset("iris", action["Dataset"]["Sha256"])
    assert len(retained) == len(iris_cases) + 120
    # never deploys: the endpoint still serves version 1
    assert b.describe_endpoint(ENDPOINT)["ModelPackageVersion"] == lifecycle.versions[0]["ModelPackageVersion"]
    notes = read_notifications(lifecycle.home, endpoint=ENDPOINT)
    assert notes[0]["kind"] == "model_pending_approval" and notes[0]["details"]["model_version"] == new["ModelPackageVersion"]
    assert notes[1]["kind"] == "retrain_started"
    assert policy_history(b.store, ENDPOINT, kind="decision")[0]["action"]["status"] == "Registered"


def test_scheduler_tick_runs_the_job_and_respects_the_cooldown(lifecycle, traffic):
    b = lifecycle.backend
    set_schedule(OPERATOR, lifecycle.home, ENDPOINT, every_minutes=60, window_minutes=60 * 24)
    jobs_before = len(b.list_training_jobs())
    results = run_due(lifecycle.home, backend=b, store=b.store)
    mine = [r for r in results if r["endpoint"] == ENDPOINT]
    assert len(mine) == 1 and "error" not in mine[0], mine
    record = mine[0]["execution"]
    assert record["MonitoringScheduleName"] == f"{ENDPOINT}-schedule"
    assert record["MonitoringExecutionStatus"] == "CompletedWithViolations"  # the window holds the shifted traffic
    decision = mine[0]["decision"]
    assert decision["fire"] is True and decision["action"]["status"] == "Skipped"
    assert "cooldown" in decision["action"]["reason"]
    assert len(b.list_training_jobs()) == jobs_before
    assert load_state(lifecycle.home)[ENDPOINT]["last_status"] == "CompletedWithViolations"
    assert run_due(lifecycle.home, backend=b, store=b.store) == []  # not due again within the hour
    assert complete_pending(b, b.store, ENDPOINT) == []  # the retrain was already registered


def test_a_manager_triggered_run_retrains_as_the_policy_and_registers_pending(lifecycle, traffic):
    """A manager may not create training jobs, but the policy a data scientist configured may retrain:
    it does so as the system actor, audited with who triggered the run, and never deploys."""
    b = lifecycle.backend
    set_policy(Actor("dan", "data_scientist"), b.store, ENDPOINT, {"max_drift_share": 0.25, "cooldown_hours": 0})
    shifted = next(r for r in list_executions(b.store, ENDPOINT) if r["MonitoringExecutionStatus"] == "CompletedWithViolations")
    try:
        event = apply_policy(b, b.store, ENDPOINT, shifted, actor=MANAGER, wait=True, timeout=300)
    finally:
        set_policy(OPERATOR, b.store, ENDPOINT, {"cooldown_hours": 24})
    assert event["fire"] is True and event["triggered_by"] == "meg"
    action = event["action"]
    assert action["status"] == "Registered", action
    assert action["ActingAs"] == "qcbr-monitor" and action["TriggeredBy"] == "meg" and action["PolicyBy"] == "dan"
    new = b.describe_model_version(action["ModelPackageVersion"])
    assert new["ModelApprovalStatus"] == "PendingManualApproval" and new["CreatedBy"] == "qcbr-monitor"
    assert b.describe_training_job(action["TrainingJobName"])["CreatedBy"] == "qcbr-monitor"
    (retrain,) = b.audit_log(1, "automated_retrain")
    assert (retrain["user"], retrain["role"], retrain["target"]) == ("qcbr-monitor", "operator", ENDPOINT)
    assert retrain["details"]["triggered_by"] == "meg" and retrain["details"]["policy_by"] == "dan"
    assert retrain["details"]["job"] == action["TrainingJobName"]
    (registered,) = b.audit_log(1, "automated_register")
    assert registered["user"] == "qcbr-monitor" and registered["details"]["triggered_by"] == "meg"
    assert registered["details"]["model_version"] == new["ModelPackageVersion"]
    assert b.audit_log(1, "register_model")[0]["user"] == "qcbr-monitor"
    # never deploys: the endpoint still serves version 1
    assert b.describe_endpoint(ENDPOINT)["ModelPackageVersion"] == lifecycle.versions[0]["ModelPackageVersion"]


def test_roi_per_version_from_the_registered_artifacts(lifecycle):
    from qcbr.monitoring.roi import DEFAULT_ASSUMPTIONS, compare_versions, version_metrics

    b = lifecycle.backend
    versions = [b.describe_model_version(v["ModelPackageVersion"]) for v in lifecycle.versions]
    metrics = [version_metrics(b.store, v) for v in versions]
    for m, v in zip(metrics, versions):
        assert m["validation:accuracy"] == pytest.approx(v["ModelMetrics"]["validation:accuracy"])
        assert np.asarray(m["validation:confusion_matrix"]).shape == (3, 3)
    table = compare_versions([{"version": v["ModelPackageVersion"], "metrics": m} for v, m in zip(versions, metrics)],
                             DEFAULT_ASSUMPTIONS)
    assert list(table["version"]) == [v["ModelPackageVersion"] for v in versions]
    assert np.allclose(table["accuracy"], [m["validation:accuracy"] for m in metrics])
