"""The monitoring job: one execution over an endpoint's captured traffic.

An execution reads the capture window, runs the drift and constraint checks, prediction and
novelty drift, and decay from ground truth, then writes under
``monitoring/<endpoint>/<execution-id>/`` (``execution-id`` is the UTC start time,
``YYYY-MM-DDTHH-MM-SS-ffffffZ``, so names sort in time order):

- ``constraint_violations.json`` (Model Monitor format), ``statistics.json`` (the window's
  statistics, Model Monitor format), ``report.json`` (every statistic, threshold and verdict),
- ``execution.json`` last: the execution record (shaped like DescribeMonitoringExecution's
  summary). Its presence marks a finished execution; listings read only those.

A failure to read the inputs (no baseline, no or only unreadable capture) is an execution with
status ``Failed`` and a ``FailureReason`` saying what to fix, not an exception: a scheduled job
has nobody to raise to, and the dashboard shows failures like any other execution.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

from qcbr.errors import ArtifactError, NotFoundError, QCBRError
from qcbr.monitoring.baseline import Baseline, build_baseline
from qcbr.monitoring.capture import join_ground_truth, parse_time, read_capture, read_ground_truth
from qcbr.monitoring.decay import decay_report
from qcbr.monitoring.drift import (
    NOVELTY_FEATURE, PREDICTION_FEATURE, Thresholds, novelty_drift, prediction_drift, run_drift,
)
from qcbr.roles import Actor, require

PREFIX = "monitoring"
STATUSES = ("Completed", "CompletedWithViolations", "Failed")
Progress = Callable[[float, str], None]


def execution_id(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S-%fZ")


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(timezone.utc).isoformat() if dt else None


def _put_json(store, key: str, obj: Any) -> str:
    return store.put(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def _reference_accuracy(baseline: Baseline | None, model: dict | None) -> float | None:
    if baseline is not None and baseline.reference_accuracy is not None:
        return baseline.reference_accuracy
    metrics = (model or {}).get("ModelMetrics") or {}
    value = metrics.get("validation:accuracy")
    return float(value) if isinstance(value, (int, float)) else None


def _current_statistics(baseline: Baseline, inputs) -> dict:
    """The window's own statistics.json (Model Monitor writes one per execution)."""
    import pandas as pd

    columns, frame = [], pd.DataFrame(index=inputs.index)
    for f in baseline.statistics["features"]:
        name = f["name"]
        if name not in inputs.columns:
            continue
        if f["inferred_type"] == "String":
            columns.append({"name": name, "type": "categorical"})
            frame[name] = inputs[name]
        else:
            columns.append({"name": name, "type": "numeric"})
            frame[name] = pd.to_numeric(inputs[name], errors="coerce")
    if not columns or not len(frame):
        return {"version": 0.0, "dataset": {"item_count": int(len(inputs))}, "features": []}
    return build_baseline(frame, {"columns": columns})[0]


def _summary(drift: dict | None, prediction: dict | None, novelty: dict | None, decay: dict | None, n_rows: int) -> dict:
    decay = decay or {}
    overall = decay.get("overall") or {}
    return {
        "n_rows": n_rows,
        "drift_share": (drift or {}).get("drift_share"),
        "drifted_features": (drift or {}).get("drifted_features", []),
        "prediction_drifted": bool((prediction or {}).get("drifted")),
        "novel_share": (novelty or {}).get("novel_share"),
        "novelty_drifted": bool((novelty or {}).get("drifted")),
        "n_labelled": overall.get("n_labelled", 0),
        "accuracy": overall.get("accuracy"),
        "reference_accuracy": decay.get("reference_accuracy"),
        "accuracy_drop": decay.get("accuracy_drop"),
        "ece": overall.get("ece"),
        "decayed": bool(decay.get("decayed")),
    }


def run_monitoring(
    store,
    endpoint: str,
    since: Any = None,
    baseline: Any = None,
    model: dict | None = None,
    *,
    actor: Actor,
    until: Any = None,
    thresholds: Thresholds | dict | None = None,
    decay_freq: str = "D",
    schedule_name: str | None = None,
    now: datetime | None = None,
    failure: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Run one monitoring execution of ``endpoint`` over captured traffic in [since, until).

    ``baseline``: a model dir, a dict {statistics, constraints[, extras, metrics]} or a
    ``Baseline``. ``model``: the model version record (``describe_model_version``), used for the
    version and, if the baseline has no metrics, the reference accuracy. ``failure``: record a
    Failed execution with this reason without reading anything (the caller could not even find
    the baseline). Returns the execution record; see the module docstring for what is written.
    """
    require(actor, "run_monitoring")
    th = thresholds if isinstance(thresholds, Thresholds) else Thresholds.from_dict(thresholds)
    started = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    since_dt = parse_time(since, "since") if since is not None else None
    until_dt = parse_time(until, "until") if until is not None else None
    exec_id = execution_id(started)
    folder = f"{PREFIX}/{endpoint}/{exec_id}"
    report: dict[str, Any] = {
        "endpoint": endpoint, "execution_id": exec_id, "window": {"since": _iso(since_dt), "until": _iso(until_dt)},
        "model_version": (model or {}).get("ModelPackageVersion"), "thresholds": th.to_dict(),
    }
    step = progress or (lambda f, m: None)
    violations: list[dict] = []
    status, reason = "Failed", failure
    drift = prediction = novelty = decay = None
    n_rows = 0
    uris: dict[str, str | None] = {"ConstraintViolationsUri": None, "StatisticsUri": None}
    try:
        if reason is None:
            base = Baseline.coerce(baseline) if baseline is not None else None
            if base is None:
                raise ArtifactError("no baseline given: pass the model dir or its statistics/constraints")
            report["baseline_source"] = base.source
            order = base.extras.get("feature_order") or base.feature_names
            step(0.05, "reading captured traffic")
            capture = read_capture(store, endpoint, since_dt, until_dt, feature_order=order,
                                   progress=lambda f, m: step(0.05 + 0.5 * f, m))
            report.update(n_records=capture.n_records, n_rows=capture.n_rows, unreadable_records=capture.n_unreadable,
                          read_errors=capture.errors, capture_files=len(capture.keys))
            n_rows = capture.n_rows
            where = f"capture/{endpoint}/ in s3://{store.bucket}"
            window = f" since {_iso(since_dt)}" if since_dt else ""
            if capture.n_records == 0 and capture.n_unreadable:
                raise QCBRError(
                    f"all {capture.n_unreadable} captured records of {endpoint!r}{window} are unreadable "
                    f"(first: {capture.errors[0] if capture.errors else '?'}); fix or remove those files under {where}")
            if capture.n_records == 0:
                raise QCBRError(
                    f"no captured requests for endpoint {endpoint!r}{window} under {where}; invoke the endpoint "
                    "(data capture on) or widen --since")
            if report["model_version"] is None:
                versions = sorted({str(v) for v in capture.outputs["model_version"].dropna()})
                report["model_versions_seen"] = versions
            step(0.6, "comparing distributions")
            drift = run_drift(base.statistics, base.constraints, capture.inputs, th)
            prediction = prediction_drift(base.extras.get("class_mix"), capture.outputs["label"].dropna(), th)
            novelty = novelty_drift(base.extras.get("novelty"), capture.outputs["best_similarity"].dropna(), th)
            step(0.8, "joining ground truth")
            truth = read_ground_truth(store, since_dt)
            joined = join_ground_truth(capture.outputs, truth)
            decay = decay_report(joined, _reference_accuracy(base, model), freq=decay_freq,
                                 accuracy_drop=th.accuracy_drop, min_labelled=th.min_labelled,
                                 classes=sorted(base.extras.get("class_mix") or {}) or None)
            violations = list(drift["violations"])
            if prediction["drifted"]:
                violations.append({"feature_name": PREDICTION_FEATURE, "constraint_check_type": "baseline_drift_check",
                                   "description": f"predicted class mix drifted from the training mix: chi-squared p="
                                                  f"{prediction['p_value']:.2e}, Jensen-Shannon {prediction['js_distance']:.3f}"})
            if novelty["drifted"]:
                violations.append({"feature_name": NOVELTY_FEATURE, "constraint_check_type": "baseline_drift_check",
                                   "description": f"{novelty['novel_share']:.1%} of queries have a best similarity below the "
                                                  f"case memory's {th.novelty_quantile:.0%} quantile ({novelty['cutoff']:.3f}); "
                                                  f"expected {th.novelty_quantile:.0%} (binomial p={novelty['binomial_p_value']:.2e})"})
            step(0.9, "writing results")
            uris["ConstraintViolationsUri"] = _put_json(store, f"{folder}/constraint_violations.json", {"violations": violations})
            uris["StatisticsUri"] = _put_json(store, f"{folder}/statistics.json", _current_statistics(base, capture.inputs))
            status = "CompletedWithViolations" if violations else "Completed"
    except (ArtifactError, NotFoundError, QCBRError) as exc:
        status, reason = "Failed", str(exc)
    ended = datetime.now(timezone.utc)
    summary = _summary(drift, prediction, novelty, decay, n_rows)
    report.update(status=status, failure_reason=reason, summary=summary, drift=drift, prediction_drift=prediction,
                  novelty=novelty, decay=decay, violations=violations)
    uris["ReportUri"] = _put_json(store, f"{folder}/report.json", report)
    record = {
        "MonitoringScheduleName": schedule_name or f"{endpoint}-on-demand",
        "EndpointName": endpoint,
        "ExecutionId": exec_id,
        "MonitoringExecutionStatus": status,
        "ScheduledTime": _iso(started),
        "ProcessingStartTime": _iso(started),
        "ProcessingEndTime": _iso(ended),
        "FailureReason": reason,
        "ViolationsCount": len(violations),
        "ModelPackageVersion": report["model_version"],
        "Window": {"Since": _iso(since_dt), "Until": _iso(until_dt)},
        "Summary": summary,
        "CreatedBy": actor.name,
        **uris,
    }
    _put_json(store, f"{folder}/execution.json", record)
    step(1.0, status)
    return record


def list_executions(store, endpoint: str | None = None, limit: int | None = None) -> list[dict]:
    """Finished executions (newest first), of one endpoint or all."""
    prefix = f"{PREFIX}/{endpoint}/" if endpoint else f"{PREFIX}/"
    out = []
    for key in store.list(prefix):
        parts = key.split("/")
        if len(parts) != 4 or parts[-1] != "execution.json":
            continue
        try:
            out.append(json.loads(store.get(key)))
        except (ValueError, NotFoundError):
            continue
    out.sort(key=lambda r: (r.get("ScheduledTime") or "", r.get("ExecutionId") or ""), reverse=True)
    return out[:limit] if limit else out


def load_execution(store, endpoint: str, execution: str) -> dict:
    """{execution, report, violations} of one execution (violations empty for a Failed one)."""
    folder = f"{PREFIX}/{endpoint}/{execution}"
    try:
        record = json.loads(store.get(f"{folder}/execution.json"))
    except NotFoundError:
        raise NotFoundError(f"no monitoring execution {execution!r} for endpoint {endpoint!r}; "
                            "list them with `qcbr monitor executions --endpoint E`") from None
    report = json.loads(store.get(f"{folder}/report.json"))
    violations = []
    if store.exists(f"{folder}/constraint_violations.json"):
        violations = json.loads(store.get(f"{folder}/constraint_violations.json")).get("violations", [])
    return {"execution": record, "report": report, "violations": violations}


def latest_by_endpoint(store, endpoints: list[str] | None = None) -> list[dict]:
    """The newest execution of each endpoint (one record each; ``None`` status for endpoints never
    monitored): the Monitoring screen's verdict per endpoint."""
    latest: dict[str, dict] = {}
    for record in list_executions(store):
        latest.setdefault(record["EndpointName"], record)
    names = sorted(set(latest) | set(endpoints or []))
    return [latest.get(n) or {"EndpointName": n, "MonitoringExecutionStatus": None, "ScheduledTime": None,
                              "ViolationsCount": None, "Summary": {}} for n in names]


def executions_frame(records: list[dict]):
    """Executions as a time series (one row each) for the novelty/decay-over-time charts."""
    import pandas as pd

    rows = []
    for r in records:
        s = r.get("Summary") or {}
        rows.append({
            "time": r.get("ScheduledTime"), "endpoint": r.get("EndpointName"), "execution": r.get("ExecutionId"),
            "status": r.get("MonitoringExecutionStatus"), "violations": r.get("ViolationsCount"),
            "model_version": r.get("ModelPackageVersion"), "n_rows": s.get("n_rows"), "drift_share": s.get("drift_share"),
            "novel_share": s.get("novel_share"), "accuracy": s.get("accuracy"), "ece": s.get("ece"),
            "n_labelled": s.get("n_labelled"), "failure_reason": r.get("FailureReason"),
        })
    frame = pd.DataFrame(rows, columns=["time", "endpoint", "execution", "status", "violations", "model_version", "n_rows",
                                        "drift_share", "novel_share", "accuracy", "ece", "n_labelled", "failure_reason"])
    if len(frame):
        frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")  # isoformat() drops .000000
        frame = frame.sort_values("time").reset_index(drop=True)
    return frame


def _store_for(store, bucket: str):
    """The same kind of store on another bucket (a model artifact may live in another bucket)."""
    if bucket == store.bucket:
        return store
    from qcbr.storage import LocalObjectStore, S3ObjectStore

    if isinstance(store, LocalObjectStore):
        return LocalObjectStore(store.root, bucket)
    if isinstance(store, S3ObjectStore):
        return S3ObjectStore(bucket, store.client)
    raise ArtifactError(f"cannot read bucket {bucket!r} through a {type(store).__name__}")


def baseline_for_endpoint(backend, store, endpoint: str) -> tuple[Baseline, dict]:
    """(baseline, model version record) of the version ``endpoint`` serves, read from its model.tar.gz."""
    from qcbr.storage import parse_s3_uri

    described = backend.describe_endpoint(endpoint)
    version = described.get("ModelPackageVersion")
    if version is None:
        raise ArtifactError(f"endpoint {endpoint!r} names no model version; redeploy it with a registered version")
    record = backend.describe_model_version(int(version))
    url = record.get("ModelDataUrl")
    if not url:
        raise ArtifactError(f"model version {version} has no ModelDataUrl; re-register it from a completed training job")
    try:
        bucket, key = parse_s3_uri(url)
    except ValueError as exc:
        raise ArtifactError(f"model version {version}: {exc}") from None
    try:
        data = _store_for(store, bucket).get(key)
    except NotFoundError:
        raise ArtifactError(f"the artifact {url} of model version {version} is missing; retrain and re-register") from None
    return Baseline.from_tar_bytes(data, source=url), record


def monitor_endpoint(backend, store, endpoint: str, since: Any = None, *, actor: Actor, **kwargs) -> dict:
    """Find the endpoint's baseline through the backend and run one execution.

    An unknown endpoint raises ``NotFoundError``; a version without a usable baseline gives a
    Failed execution (so the schedule's history shows why nothing was checked).
    """
    require(actor, "run_monitoring")
    backend.describe_endpoint(endpoint)  # NotFoundError for a typo, before anything is written
    try:
        baseline, record = baseline_for_endpoint(backend, store, endpoint)
    except (ArtifactError, NotFoundError) as exc:
        return run_monitoring(store, endpoint, since, None, None, actor=actor, failure=str(exc), **kwargs)
    return run_monitoring(store, endpoint, since, baseline, record, actor=actor, **kwargs)
