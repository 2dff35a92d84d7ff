"""A realistic home for the Monitoring and Overview screen tests, built once per test session.

``seeded_home`` runs the real local lifecycle: iris dataset -> training job (fixed alpha, so no
cross-validation of alpha) -> register -> approve -> staging endpoint -> invocations through the
Lambda handler (captured by the server) -> ground truth for most of them. ``history_endpoint``
adds a second endpoint on the same version with a long synthetic history written in the data
capture and ground-truth formats (for the warm-rerun timings). Both are cached in the session's
stash, so the two test modules share one home, and the session's clean-up kills every process.
"""
from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import QCBR_ENV, kill_home_processes, local_backend

ENDPOINT = "mon-dash"
HISTORY_ENDPOINT = "mon-dash-history"
HYPERPARAMETERS = {"feature_map": "zz", "alpha": "0.5", "k": "5", "random_state": "0"}
N_REQUESTS = 12  # of 4 rows each
N_LABELLED = 40

_HOME = pytest.StashKey[dict]()
_HISTORY = pytest.StashKey[dict]()


def _captured_rows(store, endpoint: str) -> int:
    """Instances in the endpoint's complete capture lines (the writer flushes in the background)."""
    n = 0
    for key in store.list(f"capture/{endpoint}/"):
        data = store.get(key)
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            if line.strip():
                body = json.loads(json.loads(line)["captureData"]["endpointInput"]["data"])
                n += len(body["instances"])
    return n


def seeded_home(request, tmp_path_factory) -> dict:
    """{home, backend, endpoint, version, labelled: [(inference id, label)], rows} (see module doc)."""
    stash = request.session.stash
    if _HOME in stash:
        return stash[_HOME]
    from qcbr.cases import demo_case_base
    from qcbr.roles import OPERATOR

    home = tmp_path_factory.mktemp("monitoring-screens")
    request.config.add_cleanup(lambda: kill_home_processes(home))
    backend = local_backend(home)
    cases = demo_case_base("iris")
    backend.upload_dataset(OPERATOR, cases, "iris")
    job = backend.create_training_job(OPERATOR, "iris", HYPERPARAMETERS, job_name="mon-dash-train")
    job = backend.wait_training_job(job["TrainingJobName"], timeout=300, poll=0.2)
    assert job["TrainingJobStatus"] == "Completed", (job["FailureReason"], job["Log"])
    version = backend.register_model(OPERATOR, job["TrainingJobName"])["ModelPackageVersion"]
    backend.approve_model(OPERATOR, version, "fixture")
    backend.create_endpoint(OPERATOR, ENDPOINT, version, wait=True)

    frame, features = cases.frame, list(cases.features.columns)
    rng = random.Random(0)
    picked = rng.sample(range(len(frame)), N_REQUESTS * 4)
    sent = []
    for i in range(N_REQUESTS):
        rows = picked[4 * i:4 * i + 4]
        result = backend.invoke(OPERATOR, ENDPOINT, {"instances": [
            {f: float(frame.iloc[r][f]) for f in features} for r in rows]})
        sent += [(p["inference_id"], str(frame.iloc[r]["species"])) for p, r in zip(result["predictions"], rows)]
    deadline = time.monotonic() + 30
    while _captured_rows(backend.store, ENDPOINT) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.2)  # the server's capture writer flushes every 0.2 s
    assert _captured_rows(backend.store, ENDPOINT) == len(sent)
    for iid, label in sent[:N_LABELLED]:
        backend.submit_ground_truth(OPERATOR, iid, label)
    state = {"home": home, "backend": backend, "endpoint": ENDPOINT, "version": version,
             "labelled": sent[:N_LABELLED], "rows": len(sent), "features": features}
    stash[_HOME] = state
    return state


def use_home(monkeypatch, home) -> None:
    """Point this test's environment (the dashboard's config, get_backend) at ``home``."""
    for key in QCBR_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("QCBR_HOME", str(home))
    monkeypatch.setenv("QCBR_BCRYPT_ROUNDS", "4")


def history_endpoint(request, seeded: dict, days: int = 60, rows_per_hour: int = 70, batch: int = 10,
                     labelled_share: float = 0.2, executions: int = 200) -> dict:
    """A second endpoint (same version) with ``days`` of synthetic traffic: ``rows_per_hour``
    captured rows per hour in requests of ``batch`` instances, ground truth for a share of them,
    and ``executions`` monitoring executions (copies of one real execution at earlier times)."""
    stash = request.session.stash
    if _HISTORY in stash:
        return stash[_HISTORY]
    from qcbr.cases import demo_case_base
    from qcbr.monitoring.job import execution_id, monitor_endpoint
    from qcbr.roles import OPERATOR
    from qcbr.serving.capture import capture_record
    from qcbr.serving.lambda_function import ground_truth_record

    backend, store = seeded["backend"], seeded["backend"].store
    backend.create_endpoint(OPERATOR, HISTORY_ENDPOINT, seeded["version"], wait=True)
    cases = demo_case_base("iris")
    frame, features = cases.frame, list(cases.features.columns)
    classes = sorted(frame["species"].astype(str).unique())
    rng = random.Random(1)
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    n_rows = n_labelled = 0
    for h in range(days * 24, 0, -1):
        hour = now - timedelta(hours=h)
        lines, truth = [], []
        for r in range(rows_per_hour // batch):
            rows = [rng.randrange(len(frame)) for _ in range(batch)]
            request_id = f"hist-{h}-{r}"
            preds = []
            for i, row in enumerate(rows):
                actual = str(frame.iloc[row]["species"])
                label = actual if rng.random() < 0.9 else rng.choice(classes)
                conf = round(rng.uniform(0.5, 1.0), 3)
                preds.append({"inference_id": f"{request_id}-{i}", "label": label, "confidence": conf,
                              "probabilities": {c: (conf if c == label else (1 - conf) / 2) for c in classes},
                              "flagged": conf < 0.6,
                              "similar_cases": [{"case_id": str(cases.case_ids[row]), "label": actual,
                                                 "score": round(rng.uniform(0.6, 1.0), 3)}]})
                if rng.random() < labelled_share:
                    truth.append(json.dumps(ground_truth_record(f"{request_id}-{i}", actual)))
            body = json.dumps({"instances": [{f: float(frame.iloc[row][f]) for f in features} for row in rows]}).encode()
            out = json.dumps({"model_version": seeded["version"], "predictions": preds}).encode()
            when = hour + timedelta(minutes=rng.randrange(60))
            lines.append(json.dumps(capture_record(body, "application/json", "JSON", out, "application/json",
                                                   request_id, when)))
            n_rows += len(rows)
        stamp = hour.strftime("%Y/%m/%d/%H")
        store.put(f"capture/{HISTORY_ENDPOINT}/AllTraffic/{stamp}/synthetic.jsonl", ("\n".join(lines) + "\n").encode())
        if truth:
            store.put(f"ground-truth/{stamp}/synthetic.jsonl", ("\n".join(truth) + "\n").encode())
            n_labelled += len(truth)
    # one real execution over the last day, then copies of it at earlier times (a long schedule's trail)
    record = monitor_endpoint(backend, store, HISTORY_ENDPOINT, now - timedelta(days=1), actor=OPERATOR)
    folder = f"monitoring/{HISTORY_ENDPOINT}/{record['ExecutionId']}"
    files = {name: store.get(f"{folder}/{name}") for name in ("report.json", "statistics.json",
                                                               "constraint_violations.json")
             if store.exists(f"{folder}/{name}")}
    for i in range(1, executions):
        when = now - timedelta(hours=6 * i)
        copy_id = execution_id(when)
        for name, blob in files.items():
            store.put(f"monitoring/{HISTORY_ENDPOINT}/{copy_id}/{name}", blob)
        store.put(f"monitoring/{HISTORY_ENDPOINT}/{copy_id}/execution.json", json.dumps(
            {**record, "ExecutionId": copy_id, "ScheduledTime": when.isoformat(),
             "MonitoringScheduleName": f"{HISTORY_ENDPOINT}-schedule"}).encode())
    state = {"endpoint": HISTORY_ENDPOINT, "rows": n_rows, "labelled": n_labelled, "executions": executions,
             "execution": record}
    stash[_HISTORY] = state
    return state
