"""The automated-adjustment policy: decisions (pure), storage with history, notifications."""
from __future__ import annotations

import pytest

from qcbr.errors import QCBRError, RoleError
from qcbr.monitoring.notifications import notify, read_notifications
from qcbr.monitoring.policy import (
    DEFAULT_POLICY, evaluate_policy, get_policy, policy_history, set_policy, validate_policy,
)
from qcbr.roles import Actor
from qcbr.storage import LocalObjectStore

MANAGER = Actor("maria", "manager")


def report(**summary) -> dict:
    base = {"n_rows": 500, "drift_share": 0.0, "drifted_features": [], "novel_share": 0.05, "n_labelled": 100,
            "accuracy": 0.9, "reference_accuracy": 0.92, "accuracy_drop": 0.02}
    return {"status": "Completed", "summary": {**base, **summary}}


def test_quiet_traffic_does_not_fire_and_says_why():
    d = evaluate_policy(DEFAULT_POLICY, report())
    assert d["fire"] is False
    assert d["reasons"] == ["drift share 0.000 < 0.300", "novel share 0.050 < 0.200", "accuracy drop 0.020 < 0.100"]
    assert [c["exceeded"] for c in d["checks"]] == [False, False, False]


@pytest.mark.parametrize("summary,expected", [
    ({"drift_share": 0.4, "drifted_features": ["a", "b"]}, "drift share 0.400 >= 0.300 (2 drifted feature(s): a, b; 500 rows)"),
    ({"novel_share": 0.35}, "novel share 0.350 >= 0.200 (500 rows)"),
    ({"accuracy": 0.7, "accuracy_drop": 0.22}, "accuracy drop 0.220 >= 0.100 (accuracy 70.0% vs validation 92.0% on 100 labelled)"),
])
def test_each_threshold_fires_on_its_own(summary, expected):
    d = evaluate_policy(DEFAULT_POLICY, report(**summary))
    assert d["fire"] is True and d["reasons"] == [expected]


def test_too_little_data_disabled_checks_failed_runs_and_disabled_policy_do_not_fire():
    small = evaluate_policy(DEFAULT_POLICY, report(n_rows=10, drift_share=1.0, n_labelled=5, accuracy_drop=0.5))
    assert small["fire"] is False and all("too little data" in r for r in small["reasons"][:1])
    off = evaluate_policy({**DEFAULT_POLICY, "max_accuracy_drop": None}, report(accuracy_drop=0.5))
    assert off["fire"] is False and "accuracy drop: not checked (no threshold)" in off["reasons"]
    failed = evaluate_policy(DEFAULT_POLICY, {"MonitoringExecutionStatus": "Failed", "FailureReason": "no captured requests"})
    assert failed["fire"] is False and "no captured requests" in failed["reasons"][0]
    disabled = evaluate_policy({**DEFAULT_POLICY, "enabled": False}, report(drift_share=1.0))
    assert disabled == {"fire": False, "reasons": ["the policy is disabled"], "checks": []}


def test_execution_record_works_as_input_too():
    record = {"MonitoringExecutionStatus": "CompletedWithViolations", "Summary": report(novel_share=0.5)["summary"]}
    assert evaluate_policy(DEFAULT_POLICY, record)["fire"] is True


@pytest.mark.parametrize("bad,match", [
    ({"max_drift_share": 1.5}, "between 0 and 1"),
    ({"min_labelled": 0}, "whole number >= 1"),
    ({"enabled": "yes"}, "true or false"),
    ({"cooldown_hours": -1}, ">= 0"),
    ({"max_drift": 0.2}, "unknown policy settings"),
])
def test_validation_names_the_setting(bad, match):
    with pytest.raises(QCBRError, match=match):
        validate_policy(bad)


def test_policies_are_stored_with_an_edit_history(tmp_path):
    store = LocalObjectStore(tmp_path, "bucket")
    assert get_policy(store, "ep")["configured"] is False
    with pytest.raises(RoleError):
        set_policy(Actor("bob", "business"), store, "ep", {"max_drift_share": 0.5})
    set_policy(MANAGER, store, "ep", {"max_drift_share": 0.5})
    updated = set_policy(Actor("dan", "data_scientist"), store, "ep", {"max_novel_share": 0.1, "max_drift_share": 0.5})
    assert updated["max_drift_share"] == 0.5 and updated["max_novel_share"] == 0.1 and updated["updated_by"] == "dan"
    again = get_policy(store, "ep")
    assert again["configured"] and again["max_novel_share"] == 0.1
    edits = policy_history(store, "ep", kind="edit")
    assert [e["by"] for e in edits] == ["dan", "maria"]
    assert edits[0]["changes"] == {"max_novel_share": {"old": 0.2, "new": 0.1}}
    assert edits[1]["changes"] == {"max_drift_share": {"old": 0.3, "new": 0.5}}
    with pytest.raises(QCBRError):
        set_policy(MANAGER, store, "ep", {"max_drift_share": 2})
    assert get_policy(store, "ep")["max_drift_share"] == 0.5  # a rejected edit changes nothing


def test_notifications_append_and_read_newest_first(tmp_path):
    notify(tmp_path, "retrain_started", "first", endpoint="a")
    notify(tmp_path, "model_pending_approval", "second", endpoint="b", model_version=4)
    with open(tmp_path / "notifications.jsonl", "ab") as fh:
        fh.write(b'{"torn')
    items = read_notifications(tmp_path)
    assert [n["message"] for n in items] == ["second", "first"]
    assert items[0]["details"] == {"model_version": 4}
    assert [n["message"] for n in read_notifications(tmp_path, endpoint="a")] == ["first"]
    assert read_notifications(tmp_path / "none") == []


def test_stored_policies_evaluate_as_is(tmp_path):
    store = LocalObjectStore(tmp_path, "bucket")
    assert evaluate_policy(get_policy(store, "ep"), report(drift_share=0.5))["fire"] is True
    set_policy(MANAGER, store, "ep", {"max_drift_share": 0.6})
    assert evaluate_policy(get_policy(store, "ep"), report(drift_share=0.5))["fire"] is False


def test_who_acts_when_a_manager_triggered_run_fires(tmp_path):
    """A manager may run monitoring but not train: with the default (unconfigured) policy nobody
    authorised a retrain, so it is refused; once the policy is configured, its retrain runs as the
    system actor (here it gets as far as the endpoint, which this bare home does not have)."""
    from qcbr.config import load_config
    from qcbr.lifecycle.local import LocalBackend
    from qcbr.monitoring.policy import SYSTEM_ACTOR, acting_actor, apply_policy

    backend = LocalBackend(load_config(env={"QCBR_HOME": str(tmp_path / "home")}))
    shifted = {**report(drift_share=0.6, drifted_features=["a"]), "ExecutionId": "x1"}
    refused = apply_policy(backend, backend.store, "ep", shifted, actor=MANAGER)
    assert refused["fire"] is True and refused["triggered_by"] == "maria"
    assert refused["action"]["status"] == "Error" and "may not create training job" in refused["action"]["reason"]

    set_policy(Actor("dan", "data_scientist"), backend.store, "ep", {"max_drift_share": 0.5})
    assert acting_actor(get_policy(backend.store, "ep"), MANAGER) == SYSTEM_ACTOR == Actor("qcbr-monitor", "operator")
    acted = apply_policy(backend, backend.store, "ep", shifted, actor=MANAGER)
    assert acted["action"]["status"] == "Error" and "no endpoint named 'ep'" in acted["action"]["reason"]
    assert backend.list_training_jobs() == []
