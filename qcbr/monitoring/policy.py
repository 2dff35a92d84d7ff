"""Automated adjustment: when monitoring says the model no longer fits, retrain it (never deploy).

A policy per endpoint holds thresholds on the drift share, the novelty share and the accuracy
drop. ``evaluate_policy`` is a pure function of the policy and one execution's report. When it
fires, ``apply_policy`` runs the action through the Backend protocol, so it works on both
backends: the CBR *retain* step -- the serving version's case base plus the production cases
whose ground truth has arrived (revised cases) as a new dataset version -- then a training job,
then ``register_model`` (PendingManualApproval), then a notification. Deploying stays a human
decision: nothing here creates or updates an endpoint.

Who acts: the retrain is the policy's own action, authorised by whoever configured the policy
(``set_policy`` needs ``set_monitoring_policy``). So once a policy is configured, its retrain and
registration run as the system actor ``SYSTEM_ACTOR`` (``qcbr-monitor``), whoever triggered the
monitoring run -- a manager may run monitoring but may not train -- and the audit log records
``automated_retrain`` / ``automated_register`` entries by it that name who triggered the run and
who configured the policy. An unconfigured (default) policy has authorised nothing: it acts with
the rights of whoever triggered the run, as any call would.

Storage (in the project bucket, JSON): ``monitoring-policies/<endpoint>/policy.json`` and one
object per event under ``monitoring-policies/<endpoint>/history/`` (edits and decisions;
one object each, so concurrent writers never lose an entry, on S3 too).
"""
from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from qcbr.errors import NotFoundError, QCBRError, StateError
from qcbr.roles import OPERATOR, OPERATOR_ROLE, Actor, require

PREFIX = "monitoring-policies"
SYSTEM_ACTOR = Actor("qcbr-monitor", OPERATOR_ROLE)  # the policy acting on its own (see the module doc)
DEFAULT_POLICY: dict[str, Any] = {
    "enabled": True,
    "max_drift_share": 0.3,  # fire when at least this share of features drifted
    "max_novel_share": 0.2,  # ... or this share of queries is novel (below the memory's 5% quantile)
    "max_accuracy_drop": 0.1,  # ... or accuracy fell this far below validation accuracy
    "min_rows": 30,  # drift/novelty need this many captured rows to count
    "min_labelled": 30,  # the accuracy drop needs this many ground-truth labels to count
    "cooldown_hours": 24.0,  # no new retrain within this time of the last one
    "hyperparameters": None,  # None: those of the serving version
    "min_accuracy": None,  # passed to register_model
}
_FRACTIONS = ("max_drift_share", "max_novel_share", "max_accuracy_drop")
_COUNTS = ("min_rows", "min_labelled")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _policy_key(endpoint: str) -> str:
    return f"{PREFIX}/{endpoint}/policy.json"


def validate_policy(policy: dict) -> dict:
    """A complete, checked policy (defaults filled in); QCBRError says which value to fix."""
    if not isinstance(policy, dict):
        raise QCBRError("a monitoring policy must be a JSON object")
    unknown = set(policy) - set(DEFAULT_POLICY) - {"endpoint", "updated_by", "updated_at", "configured"}
    if unknown:
        raise QCBRError(f"unknown policy settings {sorted(unknown)}; known: {sorted(DEFAULT_POLICY)}")
    out = {**DEFAULT_POLICY, **policy}
    if not isinstance(out["enabled"], bool):
        raise QCBRError(f"policy 'enabled' must be true or false, got {out['enabled']!r}")
    for key in _FRACTIONS:
        v = out[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
            raise QCBRError(f"policy {key!r} must be a fraction between 0 and 1 (or null to ignore it), got {v!r}")
    for key in _COUNTS:
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise QCBRError(f"policy {key!r} must be a whole number >= 1, got {v!r}")
    if isinstance(out["cooldown_hours"], bool) or not isinstance(out["cooldown_hours"], (int, float)) or out["cooldown_hours"] < 0:
        raise QCBRError(f"policy 'cooldown_hours' must be a number >= 0, got {out['cooldown_hours']!r}")
    if out["hyperparameters"] is not None and not isinstance(out["hyperparameters"], dict):
        raise QCBRError("policy 'hyperparameters' must be an object of name -> value, or null")
    if out["min_accuracy"] is not None and not (isinstance(out["min_accuracy"], (int, float)) and 0 <= out["min_accuracy"] <= 1):
        raise QCBRError(f"policy 'min_accuracy' must lie between 0 and 1, or be null; got {out['min_accuracy']!r}")
    return out


def evaluate_policy(policy: dict, execution_report: dict) -> dict:
    """Whether ``policy`` fires on one execution: ``{fire, reasons, checks}``.

    ``execution_report`` is ``report.json`` or the execution record (both carry the summary).
    ``reasons`` says why it fires, or why not; ``checks`` has each value against its threshold.
    """
    policy = validate_policy(policy)
    summary = execution_report.get("summary") or execution_report.get("Summary") or {}
    status = execution_report.get("status") or execution_report.get("MonitoringExecutionStatus")
    if not policy["enabled"]:
        return {"fire": False, "reasons": ["the policy is disabled"], "checks": []}
    if status == "Failed":
        why = execution_report.get("failure_reason") or execution_report.get("FailureReason") or "unknown"
        return {"fire": False, "reasons": [f"the monitoring execution failed ({why}); nothing to judge"], "checks": []}
    n_rows = summary.get("n_rows") or 0
    n_labelled = summary.get("n_labelled") or 0
    checks = []

    def check(name: str, value, threshold, enough: bool, basis: str) -> None:
        usable = threshold is not None and value is not None and not (isinstance(value, float) and math.isnan(value))
        exceeded = bool(usable and enough and value >= threshold)
        checks.append({"check": name, "value": value, "threshold": threshold, "enough_data": enough,
                       "basis": basis, "exceeded": exceeded})

    drifted = summary.get("drifted_features") or []
    check("drift_share", summary.get("drift_share"), policy["max_drift_share"], n_rows >= policy["min_rows"],
          f"{len(drifted)} drifted feature(s){': ' + ', '.join(drifted) if drifted else ''}; {n_rows} rows")
    check("novel_share", summary.get("novel_share"), policy["max_novel_share"], n_rows >= policy["min_rows"],
          f"{n_rows} rows")
    check("accuracy_drop", summary.get("accuracy_drop"), policy["max_accuracy_drop"], n_labelled >= policy["min_labelled"],
          f"accuracy {_pct(summary.get('accuracy'))} vs validation {_pct(summary.get('reference_accuracy'))} "
          f"on {n_labelled} labelled")
    reasons = []
    for c in checks:
        label = c["check"].replace("_", " ")
        if c["exceeded"]:
            reasons.append(f"{label} {_num(c['value'])} >= {_num(c['threshold'])} ({c['basis']})")
    fire = bool(reasons)
    if not fire:
        for c in checks:
            label = c["check"].replace("_", " ")
            if c["threshold"] is None:
                reasons.append(f"{label}: not checked (no threshold)")
            elif c["value"] is None:
                reasons.append(f"{label}: not measured in this execution")
            elif not c["enough_data"]:
                reasons.append(f"{label} {_num(c['value'])}: too little data to act ({c['basis']})")
            else:
                reasons.append(f"{label} {_num(c['value'])} < {_num(c['threshold'])}")
    return {"fire": fire, "reasons": reasons, "checks": checks}


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _pct(v) -> str:
    return f"{v:.1%}" if isinstance(v, (int, float)) else "n/a"


# -- storage --------------------------------------------------------------------------------------

def get_policy(store, endpoint: str) -> dict:
    """The endpoint's policy (the defaults, with ``configured: False``, until someone sets one)."""
    try:
        stored = json.loads(store.get(_policy_key(endpoint)))
    except NotFoundError:
        return {**DEFAULT_POLICY, "endpoint": endpoint, "configured": False}
    return {**validate_policy({k: v for k, v in stored.items() if k != "configured"}), "endpoint": endpoint, "configured": True}


def _history_put(store, endpoint: str, event: dict) -> dict:
    stamp = _now().strftime("%Y-%m-%dT%H-%M-%S-%fZ")
    key = f"{PREFIX}/{endpoint}/history/{stamp}-{uuid.uuid4().hex[:8]}.json"
    event = {"time": _now().isoformat(), "endpoint": endpoint, **event, "key": key}
    store.put(key, json.dumps(event, indent=2, sort_keys=True, default=str).encode())
    return event


def set_policy(actor: Actor, store, endpoint: str, changes: dict) -> dict:
    """Change some settings of the endpoint's policy; the edit (old -> new) goes to its history."""
    require(actor, "set_monitoring_policy")
    old = get_policy(store, endpoint)
    base = {k: v for k, v in old.items() if k in DEFAULT_POLICY}
    new = validate_policy({**base, **changes})
    record = {**new, "endpoint": endpoint, "updated_by": actor.name, "updated_at": _now().isoformat()}
    store.put(_policy_key(endpoint), json.dumps(record, indent=2, sort_keys=True).encode())
    diff = {k: {"old": base.get(k), "new": new[k]} for k in DEFAULT_POLICY if base.get(k) != new[k]}
    _history_put(store, endpoint, {"kind": "edit", "by": actor.name, "role": actor.role, "changes": diff})
    return {**record, "configured": True}


def policy_history(store, endpoint: str, limit: int | None = None, kind: str | None = None) -> list[dict]:
    """Edits and decisions, newest first."""
    keys = sorted(store.list(f"{PREFIX}/{endpoint}/history/"), reverse=True)
    out = []
    for key in keys:
        try:
            event = json.loads(store.get(key))
        except (ValueError, NotFoundError):
            continue
        if kind and event.get("kind") != kind:
            continue
        out.append(event)
        if limit is not None and len(out) >= limit:
            break
    return out


# -- the action ----------------------------------------------------------------------------------

def _home(backend) -> Any:
    config = getattr(backend, "config", None)
    if config is not None and getattr(config, "home", None) is not None:
        return config.home
    from qcbr.config import load_config

    return load_config().home


def revised_cases(store, endpoint: str, case_base, since: Any = None):
    """Production cases whose ground truth has arrived, as rows of ``case_base``'s columns
    (features as captured, the label from ground truth, the inference id as case id). Cases whose
    id is already in the case base are left out, so a retrain never duplicates them."""
    import pandas as pd

    from qcbr.monitoring.capture import join_ground_truth, read_capture, read_ground_truth

    features = list(case_base.features.columns)
    capture = read_capture(store, endpoint, since, feature_order=features)
    if capture.n_rows == 0:
        return pd.DataFrame(columns=list(case_base.frame.columns))
    truth = read_ground_truth(store, since)
    joined = join_ground_truth(capture.outputs, truth)
    if len(joined) == 0:
        return pd.DataFrame(columns=list(case_base.frame.columns))
    rows = capture.inputs.reindex(columns=features).copy()
    rows["_iid"] = capture.outputs["inference_id"].to_numpy()
    rows = rows.merge(joined[["inference_id", "actual"]], left_on="_iid", right_on="inference_id", how="inner")
    rows = rows.drop_duplicates("_iid", keep="last")
    out = rows[features].copy()
    out[case_base.label] = rows["actual"].to_numpy()
    if case_base.id_column:
        existing = {str(i) for i in case_base.case_ids}
        out[case_base.id_column] = rows["_iid"].astype(str).to_numpy()
        out = out[~out[case_base.id_column].isin(existing)]
    return out[[c for c in case_base.frame.columns]].reset_index(drop=True)


def acting_actor(policy: dict, triggered_by: Actor) -> Actor:
    """Who runs the policy's retrain: the system actor once someone configured the policy, else
    the trigger (whose own role must then allow training)."""
    return SYSTEM_ACTOR if policy.get("configured") else triggered_by


def retrain(backend, store, endpoint: str, actor: Actor, policy: dict, reasons: list[str]) -> dict:
    """Retain + retrain: a new dataset version (past cases + revised ones) and a training job on it."""
    described = backend.describe_endpoint(endpoint)
    version = backend.describe_model_version(int(described["ModelPackageVersion"]))
    lineage = version.get("Lineage") or {}
    name, sha = lineage.get("DatasetName"), lineage.get("DatasetSha256")
    if not name:
        raise StateError(f"model version {version['ModelPackageVersion']} has no dataset lineage; cannot retrain it")
    case_base = backend.load_dataset(name, sha)
    revised = revised_cases(store, endpoint, case_base, since=version.get("CreationTime"))
    dataset = {"DatasetName": name, "Sha256": sha, "Revised": int(len(revised))}
    if len(revised):
        new_cases = case_base.append(revised)
        uploaded = backend.upload_dataset(actor, new_cases, name)
        dataset["Sha256"] = uploaded["Sha256"]
    hps = policy.get("hyperparameters") or version.get("HyperParameters") or {}
    job = backend.create_training_job(actor, name, dict(hps), dataset_sha256=dataset["Sha256"])
    return {"status": "Training", "TrainingJobName": job["TrainingJobName"], "BaseModelVersion": version["ModelPackageVersion"],
            "Dataset": dataset, "Reasons": reasons}


def _finish(backend, store, endpoint: str, actor: Actor, policy: dict, action: dict, home) -> dict:
    """Register the finished job's model (PendingManualApproval) and notify; or note the failure.

    ``actor`` runs the registration: the system actor when the retrain ran as it."""
    from qcbr.monitoring.notifications import notify

    job = backend.describe_training_job(action["TrainingJobName"])
    status = job["TrainingJobStatus"]
    if status in ("InProgress", "Stopping"):
        return action
    if status != "Completed":
        action = {**action, "status": "TrainingFailed", "FailureReason": job.get("FailureReason") or status}
        notify(home, "retrain_failed", f"automated retrain of {endpoint} failed: {action['FailureReason']}",
               endpoint=endpoint, level="error", job=action["TrainingJobName"])
        return action
    description = f"automated retrain for endpoint {endpoint}: " + "; ".join(action.get("Reasons", []))
    try:
        registered = backend.register_model(actor, action["TrainingJobName"], policy.get("min_accuracy"), description[:1000])
    except StateError as exc:
        action = {**action, "status": "NotRegistered", "FailureReason": str(exc)}
        notify(home, "retrain_not_registered", f"automated retrain of {endpoint} not registered: {exc}",
               endpoint=endpoint, level="warning", job=action["TrainingJobName"])
        return action
    action = {**action, "status": "Registered", "ModelPackageVersion": registered["ModelPackageVersion"],
              "ModelApprovalStatus": registered["ModelApprovalStatus"]}
    backend.record_audit(actor, "automated_register", endpoint, job=action["TrainingJobName"],
                         model_version=registered["ModelPackageVersion"], status=registered["ModelApprovalStatus"],
                         triggered_by=action.get("TriggeredBy"), policy_by=action.get("PolicyBy"))
    notify(home, "model_pending_approval",
           f"model version {registered['ModelPackageVersion']} (automated retrain for {endpoint}) awaits approval",
           endpoint=endpoint, level="warning", model_version=registered["ModelPackageVersion"],
           job=action["TrainingJobName"], reasons=action.get("Reasons", []))
    return action


def retrain_actions(store, endpoint: str) -> list[tuple[dict, dict]]:
    """(decision event, its action as it stands now) for every decision that started a retrain,
    newest first; a later completion event supersedes the decision's own 'Training' action."""
    completions = {e.get("decision"): e.get("action") for e in policy_history(store, endpoint, kind="completion")}
    out = []
    for event in policy_history(store, endpoint, kind="decision"):
        action = event.get("action") or {}
        if action.get("TrainingJobName"):
            out.append((event, completions.get(event["key"]) or action))
    return out


def apply_policy(backend, store, endpoint: str, execution: dict, *, actor: Actor = OPERATOR, wait: bool = False,
                 timeout: float = 600.0, now: datetime | None = None) -> dict:
    """Evaluate the endpoint's policy on ``execution`` (record or report) and act if it fires.

    Returns the decision event stored in the history: ``{fire, reasons, checks, action}``, where
    ``action`` is None (not fired), Skipped (cooldown or a retrain still training), Training,
    Registered, TrainingFailed, NotRegistered, or Error. With ``wait`` it waits for the training
    job (up to ``timeout`` s) and registers it; else ``complete_pending`` does that later.
    """
    require(actor, "run_monitoring")
    policy = get_policy(store, endpoint)
    decision = evaluate_policy(policy, execution)
    action = None
    home = _home(backend)
    if decision["fire"]:
        started = retrain_actions(store, endpoint)
        last, last_action = started[0] if started else (None, None)
        now = now or _now()
        cooldown = timedelta(hours=float(policy["cooldown_hours"]))
        if last and last_action.get("status") == "Training":
            action = {"status": "Skipped", "reason": f"retrain {last_action['TrainingJobName']} is still in progress"}
        elif last and datetime.fromisoformat(last["time"]) + cooldown > now:
            action = {"status": "Skipped", "reason": f"cooldown: the last retrain started {last['time']} "
                                                     f"(cooldown {policy['cooldown_hours']} h)"}
        else:
            from qcbr.monitoring.notifications import notify

            runner = acting_actor(policy, actor)
            try:
                require(runner, "create_training_job")
                action = retrain(backend, store, endpoint, runner, policy, decision["reasons"])
                action.update(ActingAs=runner.name, TriggeredBy=actor.name, PolicyBy=policy.get("updated_by"))
                backend.record_audit(runner, "automated_retrain", endpoint, job=action["TrainingJobName"],
                                     triggered_by=actor.name, triggered_by_role=actor.role,
                                     policy_by=policy.get("updated_by"), reasons=decision["reasons"],
                                     execution=execution.get("ExecutionId") or execution.get("execution_id"))
                notify(home, "retrain_started", f"monitoring of {endpoint} started retraining: "
                       + "; ".join(decision["reasons"]), endpoint=endpoint, job=action["TrainingJobName"])
                if wait:
                    backend.wait_training_job(action["TrainingJobName"], timeout=timeout, poll=1.0)
                    action = _finish(backend, store, endpoint, runner, policy, action, home)
            except QCBRError as exc:
                action = {"status": "Error", "reason": str(exc)}
                notify(home, "retrain_failed", f"automated retrain of {endpoint} could not start: {exc}",
                       endpoint=endpoint, level="error")
    return _history_put(store, endpoint, {
        "kind": "decision", "execution": execution.get("ExecutionId") or execution.get("execution_id"),
        "fire": decision["fire"], "reasons": decision["reasons"], "checks": decision["checks"], "action": action,
        "triggered_by": actor.name,
    })


def complete_pending(backend, store, endpoint: str, *, actor: Actor = OPERATOR) -> list[dict]:
    """Register the models of finished automated retrains (called on every scheduler tick);
    returns the completion events written. A retrain that ran as the system actor is registered
    by it too; others by ``actor``, as before."""
    require(actor, "run_monitoring")
    policy = get_policy(store, endpoint)
    home = _home(backend)
    done = []
    for event, action in retrain_actions(store, endpoint):
        if action.get("status") != "Training":
            continue
        runner = SYSTEM_ACTOR if action.get("ActingAs") == SYSTEM_ACTOR.name else actor
        finished = _finish(backend, store, endpoint, runner, policy, action, home)
        if finished.get("status") != "Training":
            done.append(_history_put(store, endpoint, {"kind": "completion", "decision": event["key"], "action": finished}))
    return done
