"""The monitoring job end to end on real capture files (written by the serving layer's
CaptureWriter) and SageMaker ground-truth records in a temporary LocalObjectStore."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from qcbr.errors import RoleError
from qcbr.monitoring.baseline import write_baseline
from qcbr.monitoring.job import executions_frame, list_executions, load_execution, run_monitoring
from qcbr.roles import OPERATOR, Actor
from qcbr.serving.capture import CaptureWriter
from qcbr.storage import LocalObjectStore
from tests.test_monitoring_drift import SCHEMA, make_frame

ENDPOINT = "churn-prod"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


def predict_rows(frame: pd.DataFrame, rng, novel: bool = False, wrong: float = 0.1) -> tuple[list[dict], list[str]]:
    """Endpoint-shaped predictions (predict_records rows) and the true labels behind them."""
    truth = np.where(frame["score"].to_numpy(dtype=float) > 0.5, "yes", "no")
    rows, labels = [], []
    for t in truth:
        flip = rng.random() < wrong
        label = ("no" if t == "yes" else "yes") if flip else t
        conf = float(rng.uniform(0.55, 0.95))
        best = float(rng.beta(2, 8) if novel else rng.beta(8, 2))
        rows.append({"label": label, "confidence": conf, "probabilities": {label: conf, ("no" if label == "yes" else "yes"): 1 - conf},
                     "flagged": conf < 0.6, "similar_cases": [{"case_id": f"c{rng.integers(1000)}", "label": t, "score": best}]})
        labels.append(str(t))
    return rows, labels


def write_traffic(store: LocalObjectStore, frame: pd.DataFrame, start: datetime, rng, batch: int = 1, csv: bool = False,
                  novel: bool = False, wrong: float = 0.1, version: int = 1) -> dict[str, str]:
    """Capture ``frame`` as requests of ``batch`` rows, one minute apart; returns inference id -> true label."""
    writer = CaptureWriter(store.path("capture"), ENDPOINT, flush_interval=60)
    truth: dict[str, str] = {}
    features = [c for c in frame.columns]
    for i in range(0, len(frame), batch):
        part = frame.iloc[i:i + batch]
        preds, labels = predict_rows(part, rng, novel=novel, wrong=wrong)
        rid = str(uuid.uuid4())
        if csv:
            body = "\n".join(",".join(str(v) for v in row) for row in part.itertuples(index=False)).encode()
            ctype, enc = "text/csv", "CSV"
        else:
            records = json.loads(part.to_json(orient="records"))
            body, ctype, enc = json.dumps({"instances": records}).encode(), "application/json", "JSON"
        out = json.dumps({"model_version": version, "predictions": preds}).encode()
        writer.record(body, ctype, enc, out, "application/json", inference_id=rid, when=start + timedelta(minutes=i // batch))
        for j, label in enumerate(labels):
            truth[rid if len(part) == 1 else f"{rid}-{j}"] = label
    writer.close()
    assert features == list(frame.columns)
    return truth


def write_ground_truth(store: LocalObjectStore, truth: dict[str, str], when: datetime) -> None:
    """SageMaker groundTruthData lines, one file per inference id (the backend's layout)."""
    for iid, label in truth.items():
        rec = {"groundTruthData": {"data": label, "encoding": "CSV"}, "eventMetadata": {"eventId": iid}, "eventVersion": "0"}
        store.put(f"ground-truth/{when:%Y/%m/%d/%H}/{iid}.jsonl", (json.dumps(rec) + "\n").encode())


@pytest.fixture()
def setup(tmp_path):
    store = LocalObjectStore(tmp_path / "s3", "qcbr-local")
    train = make_frame(3000, seed=100)
    labels = np.where(train["score"] > 0.5, "yes", "no")
    rng = np.random.default_rng(0)
    novelty = {"method": "leave_one_out_best_similarity", "values": sorted(rng.beta(8, 2, 2000).tolist())}
    model_dir = tmp_path / "model"
    write_baseline(model_dir, train, SCHEMA | {"columns": [c for c in SCHEMA["columns"] if c["name"] in train.columns]},
                   labels=labels, novelty=novelty)
    (model_dir / "metrics.json").write_text(json.dumps({"validation:accuracy": 0.9}))
    return store, model_dir


def test_clean_window_completes_and_a_shifted_one_has_violations(setup):
    store, model_dir = setup
    rng = np.random.default_rng(1)
    clean = write_traffic(store, make_frame(400, seed=21), T0, rng)
    write_ground_truth(store, clean, T0 + timedelta(hours=30))
    day2 = T0 + timedelta(days=2)
    shifted = write_traffic(store, make_frame(400, seed=22, shift=True), day2, rng, batch=5, csv=True, novel=True, wrong=0.45)
    write_ground_truth(store, shifted, day2 + timedelta(hours=12))

    first = run_monitoring(store, ENDPOINT, T0, model_dir, actor=OPERATOR, until=day2, now=T0 + timedelta(days=1))
    assert first["MonitoringExecutionStatus"] == "Completed", load_execution(store, ENDPOINT, first["ExecutionId"])["violations"]
    assert first["ViolationsCount"] == 0 and first["FailureReason"] is None
    s = first["Summary"]
    assert s["n_rows"] == 400 and s["drift_share"] == 0 and not s["novelty_drifted"] and not s["prediction_drifted"]
    assert s["n_labelled"] == 400 and s["accuracy"] == pytest.approx(0.9, abs=0.05) and not s["decayed"]

    second = run_monitoring(store, ENDPOINT, day2, model_dir, actor=OPERATOR, now=day2 + timedelta(days=1))
    assert second["MonitoringExecutionStatus"] == "CompletedWithViolations"
    s = second["Summary"]
    assert s["n_rows"] == 400 and set(s["drifted_features"]) == {"income", "age", "segment"}
    assert s["novelty_drifted"] and s["novel_share"] > 0.5
    assert s["decayed"] and s["accuracy"] < 0.7 and s["accuracy_drop"] >= 0.2 and s["n_labelled"] == 400

    loaded = load_execution(store, ENDPOINT, second["ExecutionId"])
    checks = {(v["feature_name"], v["constraint_check_type"]) for v in loaded["violations"]}
    assert {("income", "baseline_drift_check"), ("novelty:best_similarity", "baseline_drift_check")} <= checks
    assert loaded["violations"] == json.loads(store.get(f"monitoring/{ENDPOINT}/{second['ExecutionId']}/constraint_violations.json"))["violations"]
    report = loaded["report"]
    assert report["status"] == "CompletedWithViolations" and report["n_records"] == 80  # 400 rows in batches of 5
    assert [f["name"] for f in report["drift"]["features"]] == ["income", "age", "score", "segment", "active"]
    assert report["decay"]["windows"] and report["decay"]["windows"][0]["n_labelled"] == 400
    window_stats = json.loads(store.get(f"monitoring/{ENDPOINT}/{second['ExecutionId']}/statistics.json"))
    assert window_stats["dataset"]["item_count"] == 400 and len(window_stats["features"]) == 5

    history = list_executions(store, ENDPOINT)
    assert [h["ExecutionId"] for h in history] == [second["ExecutionId"], first["ExecutionId"]]
    frame = executions_frame(history)
    assert list(frame["status"]) == ["Completed", "CompletedWithViolations"]
    assert frame["novel_share"].iloc[1] > frame["novel_share"].iloc[0]


def test_failed_executions_say_why(setup, tmp_path):
    store, model_dir = setup
    none = run_monitoring(store, ENDPOINT, "2026-01-01T00:00:00Z", model_dir, actor=OPERATOR)
    assert none["MonitoringExecutionStatus"] == "Failed"
    assert "no captured requests for endpoint 'churn-prod' since 2026-01-01T00:00:00+00:00" in none["FailureReason"]
    store.put(f"capture/{ENDPOINT}/AllTraffic/2026/03/02/08/garbage.jsonl", b"{not json\n[1,2]\n")
    bad = run_monitoring(store, ENDPOINT, None, model_dir, actor=OPERATOR)
    assert bad["MonitoringExecutionStatus"] == "Failed"
    assert "all 2 captured records" in bad["FailureReason"] and "garbage.jsonl:1" in bad["FailureReason"]
    nobase = run_monitoring(store, ENDPOINT, None, tmp_path / "nowhere", actor=OPERATOR)
    assert nobase["MonitoringExecutionStatus"] == "Failed" and "no statistics.json" in nobase["FailureReason"]
    report = load_execution(store, ENDPOINT, nobase["ExecutionId"])
    assert report["violations"] == [] and report["report"]["failure_reason"] == nobase["FailureReason"]
    assert len(list_executions(store)) == 3


def test_partly_unreadable_capture_is_reported_not_fatal(setup):
    store, model_dir = setup
    write_traffic(store, make_frame(100, seed=5), T0, np.random.default_rng(3))
    key = next(k for k in store.list(f"capture/{ENDPOINT}/") if k.endswith(".jsonl"))
    store.put(key, store.get(key) + b"{torn line\n" + b'{"captureData": {"endpointInput": {"data": "[1"}}}' + b"\n" + b'{"half')
    record = run_monitoring(store, ENDPOINT, None, model_dir, actor=OPERATOR)
    report = load_execution(store, ENDPOINT, record["ExecutionId"])["report"]
    assert record["MonitoringExecutionStatus"] == "Completed"
    assert report["n_records"] == 100 and report["unreadable_records"] == 2  # the unterminated last line is skipped
    assert len(report["read_errors"]) == 2


def test_running_needs_the_role(setup):
    store, model_dir = setup
    with pytest.raises(RoleError, match="may not run monitoring"):
        run_monitoring(store, ENDPOINT, None, model_dir, actor=Actor("bob", "business"))
    assert list_executions(store) == []


def test_same_results_on_s3_as_on_the_local_bucket(setup):
    """The job reads through qcbr.storage only: copy the bucket to S3 (moto's server) and compare."""
    from qcbr.storage import S3ObjectStore
    from tests.test_aws_helpers import client

    store, model_dir = setup
    rng = np.random.default_rng(4)
    truth = write_traffic(store, make_frame(200, seed=31, shift=True), T0, rng, batch=3, novel=True)
    write_ground_truth(store, truth, T0 + timedelta(hours=2))
    s3 = client("s3")
    bucket = f"mon-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    remote = S3ObjectStore(bucket, s3)
    for key in store.list(""):
        remote.put(key, store.get(key))
    local_rec = run_monitoring(store, ENDPOINT, None, model_dir, actor=OPERATOR, now=T0 + timedelta(days=1))
    s3_rec = run_monitoring(remote, ENDPOINT, None, model_dir, actor=OPERATOR, now=T0 + timedelta(days=1))
    assert s3_rec["MonitoringExecutionStatus"] == local_rec["MonitoringExecutionStatus"] == "CompletedWithViolations"
    assert s3_rec["Summary"] == local_rec["Summary"]
    assert s3_rec["ReportUri"] == f"s3://{bucket}/monitoring/{ENDPOINT}/{s3_rec['ExecutionId']}/report.json"
    assert [r["ExecutionId"] for r in list_executions(remote, ENDPOINT)] == [s3_rec["ExecutionId"]]
    loaded = load_execution(remote, ENDPOINT, s3_rec["ExecutionId"])
    assert loaded["violations"] == load_execution(store, ENDPOINT, local_rec["ExecutionId"])["violations"]


def test_latest_execution_per_endpoint(setup):
    from qcbr.monitoring.job import latest_by_endpoint

    store, model_dir = setup
    write_traffic(store, make_frame(60, seed=41), T0, np.random.default_rng(5))
    run_monitoring(store, ENDPOINT, None, model_dir, actor=OPERATOR, now=T0 + timedelta(hours=1))
    newest = run_monitoring(store, ENDPOINT, "2030-01-01", model_dir, actor=OPERATOR, now=T0 + timedelta(hours=2))
    rows = latest_by_endpoint(store, [ENDPOINT, "never-monitored"])
    assert [r["EndpointName"] for r in rows] == [ENDPOINT, "never-monitored"]
    assert rows[0]["ExecutionId"] == newest["ExecutionId"] and rows[0]["MonitoringExecutionStatus"] == "Failed"
    assert rows[1]["MonitoringExecutionStatus"] is None


def test_a_complete_last_line_without_newline_is_read_on_s3_and_locally(setup):
    """SageMaker's capture files need not end with a newline: 40 records are 40 rows, not 39; a torn
    last line (a writer killed mid-write) is still skipped, on S3 (moto's server) as on the local bucket."""
    from qcbr.monitoring.capture import complete_lines, read_capture
    from qcbr.storage import S3ObjectStore
    from tests.test_aws_helpers import client

    store, _ = setup
    write_traffic(store, make_frame(40, seed=51), T0, np.random.default_rng(6))
    (key,) = [k for k in store.list(f"capture/{ENDPOINT}/") if k.endswith(".jsonl")]
    data = store.get(key)
    assert data.endswith(b"\n") and data.count(b"\n") == 40
    unterminated = data[:-1]
    torn = data + data.splitlines()[0][:57]
    bucket = f"cap-{uuid.uuid4().hex[:12]}"
    client("s3").create_bucket(Bucket=bucket)
    remote = S3ObjectStore(bucket, client("s3"))
    for target in (store, remote):
        target.put(key, unterminated)
        read = read_capture(target, ENDPOINT)
        assert read.n_rows == 40 and read.n_records == 40 and read.n_unreadable == 0
        target.put(key, torn)
        read = read_capture(target, ENDPOINT)
        assert read.n_rows == 40 and read.n_unreadable == 0  # the torn line is neither a row nor an error
    assert complete_lines(b'{"a": 1}\n{"b": 2}') == b'{"a": 1}\n{"b": 2}\n'
    assert complete_lines(b'{"a": 1}\n{"b": ') == b'{"a": 1}\n'
    assert complete_lines(b'{"a": 1}\n[1, 2]') == b'{"a": 1}\n'  # not a record: as good as torn
    assert complete_lines(b'{"a": 1}\n{"b": "\xc3') == b'{"a": 1}\n'  # cut inside a UTF-8 character
    assert complete_lines(b'{"a": 1}\n') == b'{"a": 1}\n' and complete_lines(b"") == b""
