"""The inference server: SageMaker's container contract, 4xx for every bad request, batching, capture.

In-process tests drive the real app through Starlette's TestClient; the process tests start
``python -m qcbr.serving.server`` on 127.0.0.1 and call it with an unmodified boto3
``sagemaker-runtime`` client (dummy credentials; the server ignores the signature).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import warnings

with warnings.catch_warnings():  # starlette's note that httpx2 is preferred; httpx is what we pin
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from qcbr.serving.capture import read_capture_file
from qcbr.serving.server import create_app

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["a", "b", "c", "d", "plan", "active"]


# ---------------------------------------------------------------------------- shared helpers
def fit_model_dir(path: Path, seed: int = 0) -> Path:
    """A small real QCBRClassifier (zz, 4 qubits, fixed alpha/k: no CV) saved to ``path``."""
    import pandas as pd
    from sklearn.datasets import make_classification

    from qcbr.model import QCBRClassifier

    X, y = make_classification(n_samples=200, n_features=4, n_informative=3, n_redundant=0,
                               n_classes=2, random_state=seed)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    frame["plan"] = np.where(X[:, 0] > 0, "pro", "basic")
    frame["active"] = X[:, 1] > 0
    model = QCBRClassifier(feature_map="zz", n_qubits=4, alpha=0.5, k=3, random_state=0)
    model.fit(frame, np.where(y == 1, "churn", "stay"))
    model.save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


def start_server(model_dir: Path, *extra: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qcbr.serving.server", "--model-dir", str(model_dir), "--port", str(port), *extra],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/ping", proc)
    return proc, url


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def runtime_client(url: str):
    import boto3
    from botocore.config import Config

    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"max_attempts": 1}))


def same_predictions(a: list[dict], b: list[dict]) -> bool:
    """Equal up to float rounding (BLAS may sum in another order for another batch size)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x["label"], x["flagged"]) == (y["label"], y["flagged"])
        assert x["confidence"] == pytest.approx(y["confidence"], abs=1e-9)
        assert x["probabilities"] == pytest.approx(y["probabilities"], abs=1e-9)
        assert [c["case_id"] for c in x["similar_cases"]] == [c["case_id"] for c in y["similar_cases"]]
        assert [c["score"] for c in x["similar_cases"]] == pytest.approx([c["score"] for c in y["similar_cases"]], abs=1e-9)
    return True


ROW = {"a": 0.3, "b": -1.2, "c": 0.8, "d": 0.1, "plan": "pro", "active": True}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return fit_model_dir(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def model(model_dir):
    from qcbr.model import QCBRClassifier

    return QCBRClassifier.load(model_dir)


@pytest.fixture(scope="module")
def client(model_dir, model):
    app = create_app(model_dir, endpoint_name="churn", model_version="3", model=model, max_body_bytes=20_000,
                     max_rows=50)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


# ---------------------------------------------------------------------------- contract
def test_ping_and_info(client, model):
    assert client.get("/ping").status_code == 200
    info = client.get("/info").json()
    assert info["model_version"] == 3 and info["endpoint"] == "churn"
    assert info["features"] == FEATURES
    assert info["feature_schema"][4] == {"name": "plan", "type": "categorical", "categories": ["basic", "pro"]}
    assert info["classes"] == ["churn", "stay"]
    assert info["epsilon"] == model.epsilon


def test_json_prediction_matches_the_model(client, model):
    row2 = [1.5, 0.2, -0.4, 2.0, "basic", False]
    r = client.post("/invocations", json={"instances": [ROW, row2]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    body = r.json()
    assert body["model_version"] == 3
    import pandas as pd

    expected = model.predict_records(pd.DataFrame([list(ROW.values()), row2], columns=FEATURES))
    assert same_predictions(body["predictions"], expected)
    first = body["predictions"][0]
    assert set(first) == {"label", "confidence", "probabilities", "flagged", "similar_cases"}
    assert len(first["similar_cases"]) == 3
    assert first["similar_cases"][0]["score"] >= first["similar_cases"][-1]["score"]
    assert first["flagged"] == (first["confidence"] < model.epsilon)


def test_one_record_csv_and_endpoint_path_agree(client):
    a = client.post("/invocations", json=ROW).json()["predictions"]
    csv_body = "plan,a,b,c,d,active\npro,0.3,-1.2,0.8,0.1,true\n"
    b = client.post("/invocations", content=csv_body, headers={"Content-Type": "text/csv"}).json()["predictions"]
    c = client.post("/endpoints/churn/invocations", json={"instances": [list(ROW.values())]}).json()["predictions"]
    assert same_predictions(a, b) and same_predictions(a, c)


def test_top_k_from_custom_attributes(client):
    r = client.post("/invocations", json=ROW, headers={"X-Amzn-SageMaker-Custom-Attributes": "top_k=7"})
    assert len(r.json()["predictions"][0]["similar_cases"]) == 7
    bad = client.post("/invocations", json=ROW, headers={"X-Amzn-SageMaker-Custom-Attributes": "top_k=x"})
    assert bad.status_code == 400 and "top_k" in bad.json()["error"]


@pytest.mark.parametrize(
    "path, body, ctype, status, needle",
    [
        ("/invocations", b"", "application/json", 400, "empty request body"),
        ("/invocations", b"{oops", "application/json", 400, "malformed JSON"),
        ("/invocations", b'{"instances": [[1, 2, 3]]}', "application/json", 400, "3 values, expected 6 features"),
        ("/invocations", b'{"a": 1}', "application/json", 400, "wrong feature names"),
        ("/invocations", b'{"instances": [[1, 2, 3, "x", "pro", true]]}', "application/json", 400,
         "row 0, feature 'd': expected a number"),
        ("/invocations", b'{"instances": [[1, 2, 3, 4, "pro", "maybe"]]}', "application/json", 400, "feature 'active'"),
        ("/invocations", b"1,2,3,4,pro\n", "text/csv", 400, "5 values, expected 6"),
        ("/invocations", b'1,2,"3\n', "text/csv", 400, "malformed CSV"),
        ("/invocations", b"1,2,3,4,pro,true", "text/plain", 415, "unsupported content type"),
        ("/invocations", json.dumps({"instances": [ROW] * 51}).encode(), "application/json", 413, "too many instances"),
        ("/endpoints/other/invocations", json.dumps(ROW).encode(), "application/json", 404, "'other' is not served"),
    ],
)
def test_bad_requests_get_4xx_json(client, path, body, ctype, status, needle):
    r = client.post(path, content=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    doc = r.json()
    assert needle in doc["error"]
    assert set(doc) >= {"error", "detail"}
    assert r.headers["x-amzn-errortype"]


def test_wrong_names_detail_lists_expected(client):
    r = client.post("/invocations", json={"a": 1, "b": 2, "c": 3, "d": 4, "plan": "pro", "activ": True})
    assert r.status_code == 400
    assert r.json()["detail"] == {"row": 0, "missing": ["active"], "unexpected": ["activ"], "expected": FEATURES}


def test_oversized_body_is_413_even_without_content_length(client):
    big = b'{"instances": [' + b"[1,2,3,4,\"pro\",true]," * 2000 + b"[1,2,3,4,\"pro\",true]]}"
    assert client.post("/invocations", content=big, headers={"Content-Type": "application/json"}).status_code == 413

    def chunks():
        for _ in range(30):
            yield b" " * 1000

    r = client.post("/invocations", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"]["limit"] == 20_000


def test_accept_and_method_and_unknown_path(client):
    assert client.post("/invocations", json=ROW, headers={"Accept": "text/html"}).status_code == 406
    assert client.post("/invocations", json=ROW, headers={"Accept": "application/json, */*"}).status_code == 200
    r = client.get("/invocations")
    assert r.status_code == 405 and "error" in r.json()
    assert client.get("/nope").status_code == 404


junk_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda ch: st.lists(ch, max_size=7) | st.dictionaries(st.sampled_from(FEATURES + ["x"]), ch, max_size=7),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        junk_json.map(lambda v: json.dumps(v).encode()),
        st.lists(junk_json, max_size=4).map(lambda v: json.dumps({"instances": v}).encode()),
        st.lists(st.lists(st.sampled_from(["1", "x", "", "pro", "true", "nan", "1e999", '"'] ), max_size=7), max_size=3)
        .map(lambda rows: "\n".join(",".join(r) for r in rows).encode()),
    ),
    ctype=st.sampled_from(["application/json", "text/csv", "", "application/x-www-form-urlencoded"]),
    path=st.sampled_from(["/invocations", "/endpoints/churn/invocations", "/endpoints/x/invocations"]),
)
def test_fuzz_never_500(client, body, ctype, path):
    r = client.post(path, content=body, headers={"Content-Type": ctype} if ctype else {})
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert r.json()["error"]


def test_concurrent_requests_are_batched_and_answered_correctly(model_dir, model):
    import httpx
    import pandas as pd

    app = create_app(model_dir, model=model)
    rng = np.random.default_rng(1)
    rows = [[*rng.normal(size=4).round(3).tolist(), ["basic", "pro"][i % 2], bool(i % 3)] for i in range(24)]
    expected = json.loads(json.dumps(model.predict_records(pd.DataFrame(rows, columns=FEATURES))))

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            bad = c.post("/invocations", json={"instances": [[1, 2]]})
            answers = await asyncio.gather(bad, *(c.post("/invocations", json={"instances": [r]}) for r in rows))
        return answers

    # a fresh thread has no running event loop, whatever other tests left in the main thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answers = pool.submit(asyncio.run, go()).result()
    assert answers[0].status_code == 400
    assert same_predictions([a.json()["predictions"][0] for a in answers[1:]], expected)
    batcher = app.state.batcher
    assert batcher.requests == 24 and batcher.batches < 24  # coalesced, each answer still its own row


def test_a_lone_request_runs_on_the_event_loop_and_a_cancelled_one_strands_nothing(model_dir, model):
    from qcbr.serving.payload import parse_body

    app = create_app(model_dir, model=model)
    batcher = app.state.batcher
    rows = parse_body(json.dumps(ROW).encode(), "application/json", app.state.schema).rows
    with TestClient(app) as c:  # one request, nothing else in flight: no model-thread hand-off
        ok = c.post("/invocations", json=ROW)
    assert ok.status_code == 200 and (batcher.batches, batcher.inline) == (1, 1)
    expected = json.loads(json.dumps(model.predict_records([ROW])))

    async def go():
        first = asyncio.create_task(batcher.submit(rows, None))
        await asyncio.sleep(0)  # first is now waiting one loop turn for company
        first.cancel()
        second = asyncio.create_task(batcher.submit(rows, None))
        with pytest.raises(asyncio.CancelledError):
            await first
        return await asyncio.wait_for(second, 30)  # would hang if the queue were left "running"

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(asyncio.run, go()).result()
    assert same_predictions(json.loads(json.dumps(answer)), expected)


def test_capture_records_every_answered_request(model_dir, model, tmp_path):
    app = create_app(model_dir, endpoint_name="churn", model_version=2, capture_root=tmp_path, model=model)
    with TestClient(app) as c:
        ok = c.post("/invocations", json=ROW, headers={"X-Amzn-SageMaker-Inference-Id": "inf-1"})
        assert ok.status_code == 200 and ok.json()["inference_id"] == "inf-1"
        c.post("/invocations", content="1,2,3,4,pro,true\n5,6,7,8,basic,false\n", headers={"Content-Type": "text/csv"})
        assert c.post("/invocations", json={"instances": [[1]]}).status_code == 400  # not captured
    files = list(tmp_path.rglob("*.jsonl"))
    assert len(files) == 1 and files[0].relative_to(tmp_path).parts[:2] == ("churn", "AllTraffic")
    records = read_capture_file(files[0])
    assert len(records) == 2
    first, second = records
    assert first["eventMetadata"]["inferenceId"] == "inf-1"
    assert json.loads(first["captureData"]["endpointInput"]["data"]) == ROW
    assert json.loads(first["captureData"]["endpointOutput"]["data"]) == ok.json()
    assert second["captureData"]["endpointInput"]["observedContentType"] == "text/csv"
    assert second["captureData"]["endpointInput"]["encoding"] == "CSV"
    assert len(json.loads(second["captureData"]["endpointOutput"]["data"])["predictions"]) == 2


# ---------------------------------------------------------------------------- real process + boto3
def test_process_with_boto3_client_and_sigterm_flush(model_dir, tmp_path):
    from botocore.exceptions import ClientError

    proc, url = start_server(model_dir, "--endpoint-name", "churn", "--model-version", "5",
                             "--capture-root", str(tmp_path))
    try:
        rt = runtime_client(url)
        resp = rt.invoke_endpoint(EndpointName="churn", Body=json.dumps({"instances": [ROW, ROW]}),
                                  ContentType="application/json", Accept="application/json", InferenceId="abc-123")
        body = json.loads(resp["Body"].read())
        assert resp["ContentType"] == "application/json"
        assert resp["InvokedProductionVariant"] == "AllTraffic"
        assert body["model_version"] == 5 and len(body["predictions"]) == 2
        csv_resp = rt.invoke_endpoint(EndpointName="churn", Body=b"0.3,-1.2,0.8,0.1,pro,true\n", ContentType="text/csv")
        assert same_predictions(json.loads(csv_resp["Body"].read())["predictions"], body["predictions"][:1])

        with pytest.raises(ClientError) as info:
            rt.invoke_endpoint(EndpointName="churn", Body=b'{"instances": [[1, 2]]}', ContentType="application/json")
        err = info.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert err["Error"]["Code"] == "ValidationError"
        assert "2 values, expected 6 features" in err["Error"]["Message"] and '"plan"' in err["Error"]["Message"]
        with pytest.raises(ClientError) as info:
            rt.invoke_endpoint(EndpointName="nope", Body=json.dumps(ROW), ContentType="application/json")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    finally:
        # uvicorn re-raises SIGTERM once its graceful shutdown (and our capture flush) is done
        assert stop_process(proc) in (0, -signal.SIGTERM)
    records = [r for f in tmp_path.rglob("*.jsonl") for r in read_capture_file(f)]
    assert len(records) == 2  # flushed on SIGTERM, errors not captured
    assert records[0]["eventMetadata"]["inferenceId"] == "abc-123"


def test_bad_model_dir_exits_1_with_a_reason(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "qcbr.serving.server", "--model-dir", str(tmp_path / "none"),
                        "--port", str(free_port())], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "cannot load the model from" in r.stderr and "Traceback" not in r.stderr
