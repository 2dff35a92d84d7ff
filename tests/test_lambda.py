"""The Lambda handler end to end: API Gateway event -> boto3 -> real server process -> stored prediction."""
from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from qcbr.serving import lambda_function as lf
from qcbr.serving.capture import read_capture_file
from qcbr.serving.payload import PayloadError
from qcbr.storage import LocalObjectStore
from tests.test_serving_server import ROW, fit_model_dir, free_port, start_server, stop_process

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def bucket_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("s3")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory, bucket_root):
    model_dir = fit_model_dir(tmp_path_factory.mktemp("model") / "m")
    proc, url = start_server(model_dir, "--endpoint-name", "churn", "--model-version", "7",
                             "--capture-root", str(bucket_root / "bucket" / "capture"))
    yield url
    stop_process(proc)


@pytest.fixture
def store(bucket_root) -> LocalObjectStore:
    return LocalObjectStore(bucket_root, "bucket")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, server_url):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "SAGEMAKER_RUNTIME_ENDPOINT_URL": server_url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ENDPOINT_NAME", raising=False)
    monkeypatch.delenv("PREDICTIONS_BUCKET", raising=False)


def event(body, endpoint="churn", content_type="application/json", b64=False, authorizer=None, stage=None):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return {
        "resource": "/endpoints/{endpoint}/predict", "path": f"/endpoints/{endpoint}/predict",
        "httpMethod": "POST", "headers": {"content-type": content_type} if content_type else {},
        "body": body, "isBase64Encoded": b64,
        "pathParameters": {"endpoint": endpoint} if endpoint else None, "stageVariables": stage,
        "requestContext": {"identity": {"sourceIp": "127.0.0.1", "user": None},
                           "authorizer": authorizer if authorizer is not None else {"principalId": "alice"}},
    }


def call(ev, store):
    resp = lf.handler(ev, None, store=store)
    assert set(resp) >= {"statusCode", "headers", "body"}
    assert resp["headers"]["Content-Type"] == "application/json"
    return resp["statusCode"], json.loads(resp["body"])


def test_one_row_is_predicted_stored_and_captured(store, bucket_root):
    status, body = call(event({"instances": [ROW]}), store)
    assert status == 200, body
    iid = body["inference_id"]
    assert re.fullmatch(UUID, iid)
    assert body["endpoint"] == "churn" and body["model_version"] == 7
    (pred,) = body["predictions"]
    assert pred["inference_id"] == iid
    assert set(pred) >= {"label", "confidence", "probabilities", "flagged", "similar_cases"}
    keys = [k for k in store.list("predictions/") if iid in k]
    assert len(keys) == 1 and re.fullmatch(rf"predictions/\d{{4}}/\d\d/\d\d/{iid}\.json", keys[0])
    record = json.loads(store.get(keys[0]))
    assert record["inference_id"] == iid and record["user"] == "alice" and record["model_version"] == 7
    assert record["request"] == [ROW] and record["response"] == body
    assert datetime.fromisoformat(record["time"]).tzinfo is not None
    assert keys[0].startswith(f"predictions/{datetime.fromisoformat(record['time']):%Y/%m/%d}/")
    # the endpoint's data capture carries the same inference id (monitoring joins on it)
    import time

    deadline = time.monotonic() + 5
    found = []
    while not found and time.monotonic() < deadline:
        found = [r for f in (bucket_root / "bucket" / "capture" / "churn").rglob("*.jsonl")
                 for r in read_capture_file(f) if r["eventMetadata"].get("inferenceId") == iid]
        time.sleep(0.05)
    assert len(found) == 1


def test_batch_rows_get_suffixed_ids(store):
    status, body = call(event({"instances": [ROW, list(ROW.values()), ROW]}), store)
    assert status == 200
    iid = body["inference_id"]
    assert [p["inference_id"] for p in body["predictions"]] == [f"{iid}-0", f"{iid}-1", f"{iid}-2"]


def test_one_record_object_csv_with_header_and_base64(store):
    status, body = call(event(ROW), store)
    assert status == 200 and len(body["predictions"]) == 1
    csv_text = "a,b,c,d,plan,active\n0.3,-1.2,0.8,0.1,pro,true\n1,2,3,4,basic,false\n"
    status, body = call(event(csv_text, content_type="text/csv"), store)
    assert status == 200 and len(body["predictions"]) == 2
    record = json.loads(store.get(next(k for k in store.list("predictions/") if body["inference_id"] in k)))
    assert record["request"][1] == {"a": "1", "b": "2", "c": "3", "d": "4", "plan": "basic", "active": "false"}
    status, body = call(event(base64.b64encode(json.dumps(ROW).encode()).decode(), b64=True), store)
    assert status == 200


@pytest.mark.parametrize(
    "ev, status, needle",
    [
        (event("{nope"), 400, "not valid JSON"),
        (event(""), 400, "empty request body"),
        (event({"instances": []}), 400, "no instances"),
        (event({}), 400, "no instances"),
        (event([1, 2]), 400, "no instances"),
        (event({"instances": {"a": 1}}), 400, "must be a list"),
        (event({"instances": [1, 2]}), 400, "are not objects or lists"),
        (event("a,b", content_type="application/xml"), 415, "unsupported content type"),
        (event("%%%", b64=True), 400, "base64"),
        (event(ROW, endpoint=None), 400, "no endpoint named"),
    ],
)
def test_bad_input_is_rejected_before_the_endpoint(store, ev, status, needle):
    before = len(list(store.list("predictions/")))
    code, body = call(ev, store)
    assert code == status and needle in body["error"]
    assert len(list(store.list("predictions/"))) == before


def test_endpoint_4xx_passes_through_with_its_message(store):
    before = len(list(store.list("predictions/")))
    code, body = call(event({"instances": [[1, 2, 3]]}), store)
    assert code == 400 and "3 values, expected 6 features" in body["error"]
    code, body = call(event({"instances": [{**ROW, "plan": ["x"]}]}), store)
    assert code == 400 and "feature 'plan'" in body["error"]
    code, body = call(event({"instances": [ROW]}, endpoint="other"), store)
    assert code == 404 and "'other'" in body["error"]
    assert len(list(store.list("predictions/"))) == before


def test_unreachable_endpoint_is_502(store):
    dead = f"http://127.0.0.1:{free_port()}"
    code, body = call(event({"instances": [ROW]}, stage={"runtimeEndpointUrl": dead}), store)
    assert code == 502 and "unreachable" in body["error"]


def test_endpoint_name_from_env_and_user_from_cognito(store, monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", "churn")
    claims = {"claims": {"cognito:username": "bob", "email": "bob@example.com"}}
    code, body = call(event({"instances": [ROW]}, endpoint=None, authorizer=claims), store)
    assert code == 200
    record = json.loads(store.get(next(k for k in store.list("predictions/") if body["inference_id"] in k)))
    assert record["user"] == "bob"
    code, body = call(event({"instances": [ROW]}, authorizer={}), store)
    record = json.loads(store.get(next(k for k in store.list("predictions/") if body["inference_id"] in k)))
    assert record["user"] == "anonymous"


def test_a_prediction_that_cannot_be_stored_is_an_error(tmp_path):
    class FullDisk(LocalObjectStore):
        def put(self, key, data):
            raise OSError(28, "No space left on device")

    code, body = call(event({"instances": [ROW]}), FullDisk(tmp_path, "b"))
    assert code == 500 and "could not be stored" in body["error"] and body["detail"]["inference_id"]


def test_module_store_hook_and_s3_bucket_from_env(monkeypatch, tmp_path):
    """In Lambda there is no store argument: PREDICTIONS_BUCKET names an S3 bucket (moto server here)."""
    import boto3
    from moto.server import ThreadedMotoServer

    hook = LocalObjectStore(tmp_path, "hooked")
    monkeypatch.setattr(lf, "STORE", hook)
    resp = lf.handler(event({"instances": [ROW]}), None)
    iid = json.loads(resp["body"])["inference_id"]
    assert any(iid in k for k in hook.list("predictions/"))
    monkeypatch.setattr(lf, "STORE", None)

    assert lf.handler(event({"instances": [ROW]}), None)["statusCode"] == 500  # no bucket configured

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("PREDICTIONS_BUCKET", "preds")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="preds")
        resp = lf.handler(event({"instances": [ROW]}), None)
        assert resp["statusCode"] == 200, resp["body"]
        iid = json.loads(resp["body"])["inference_id"]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="preds", Prefix="predictions/")["Contents"]]
        assert len(keys) == 1 and keys[0].endswith(f"/{iid}.json")
        assert json.loads(s3.get_object(Bucket="preds", Key=keys[0])["Body"].read())["inference_id"] == iid
    finally:
        moto.stop()


def test_submit_ground_truth_writes_sagemaker_record(store):
    when = datetime(2024, 5, 6, 13, 45, tzinfo=timezone.utc)
    rec = lf.submit_ground_truth(store, "abc-123-1", "churn", time=when)
    assert rec == {"groundTruthData": {"data": "churn", "encoding": "CSV"},
                   "eventMetadata": {"eventId": "abc-123-1"}, "eventVersion": "0"}
    raw = store.get("ground-truth/2024/05/06/13/abc-123-1.jsonl")
    assert raw.endswith(b"\n") and json.loads(raw) == rec
    assert lf.submit_ground_truth(store, "x1", 2, time=when)["groundTruthData"]["data"] == "2"
    for bad in ("", "../etc/passwd", "a/b", None):
        with pytest.raises(PayloadError):
            lf.submit_ground_truth(store, bad, "churn")
    with pytest.raises(PayloadError, match="no label"):
        lf.submit_ground_truth(store, "abc", " ")
