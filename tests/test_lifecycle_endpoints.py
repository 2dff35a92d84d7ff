"""Endpoints as real uvicorn processes behind the local gateway; invocation through the Lambda handler.

Uses the session's ``lifecycle`` home (versions 1 Approved, 2 Pending, 3 Rejected);
each test makes its own endpoint names and deletes what it creates.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone

import pytest

from qcbr.errors import InputError, NotFoundError, RoleError, StateError
from qcbr.lifecycle.local import procs
from qcbr.roles import OPERATOR, Actor
from qcbr.storage import read_json
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

SCIENTIST = Actor("dan", "data_scientist")
MANAGER = Actor("meg", "manager")
BUSINESS = Actor("bea", "business")
SETOSA = {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}
VIRGINICA = {"sepal length (cm)": 6.7, "sepal width (cm)": 3.0, "petal length (cm)": 5.2, "petal width (cm)": 2.3}


def runtime(url: str):
    """An unmodified boto3 sagemaker-runtime client pointed at the endpoint's URL."""
    import boto3
    from botocore.config import Config

    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"max_attempts": 0}, max_pool_connections=4))


def call(client, name: str, body, content_type: str = "application/json") -> dict:
    payload = body if isinstance(body, (bytes, str)) else json.dumps(body)
    out = client.invoke_endpoint(EndpointName=name, Body=payload, ContentType=content_type, Accept="application/json")
    return json.loads(out["Body"].read())


def variant(backend, name: str) -> dict:
    return read_json(backend.paths.endpoint_record(name))["Internal"]["Variant"]


@pytest.fixture()
def endpoint(lifecycle):
    """Deploys version 1 to staging under a unique name; deleted afterwards."""
    created = []

    def deploy(name: str, version: int = 1, stage: str = "staging") -> dict:
        record = lifecycle.backend.create_endpoint(OPERATOR, name, version, stage, wait=True)
        created.append(name)
        assert record["EndpointStatus"] == "InService", record["FailureReason"]
        return record

    yield deploy
    for name in created:
        try:
            lifecycle.backend.delete_endpoint(OPERATOR, name)
        except NotFoundError:
            pass


def test_deploy_serves_boto3_and_the_lambda_handler_and_stores_everything(lifecycle, endpoint):
    b = lifecycle.backend
    record = endpoint("ep-basic")
    url = record["EndpointUrl"]
    assert url.startswith("http://127.0.0.1:") and record["Stage"] == "staging"
    assert record["ModelPackageVersion"] == 1 and record["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert read_json(b.paths.gateway)["Url"] == url  # the EndpointUrl is the gateway, not the variant
    assert record["ProductionVariants"][0]["VariantUrl"] != url
    extracted = b.paths.endpoint_models("ep-basic") / "1"
    assert (extracted / "MANIFEST.json").is_file()

    # 1. boto3, JSON and CSV
    client = runtime(url)
    answer = call(client, "ep-basic", {"instances": [SETOSA, VIRGINICA]})
    assert answer["model_version"] in (1, "1")
    assert [p["label"] for p in answer["predictions"]] == ["setosa", "virginica"]
    top = answer["predictions"][0]
    assert set(top["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert top["similar_cases"][0]["case_id"].startswith("iris-") and 0 < top["similar_cases"][0]["score"] <= 1
    csv = "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"
    assert [p["label"] for p in call(client, "ep-basic", csv, "text/csv")["predictions"]] == ["setosa", "virginica"]
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        call(client, "ep-basic", {"instances": [{"sepal length (cm)": 5.1}]})
    assert 400 <= info.value.response["ResponseMetadata"]["HTTPStatusCode"] < 500

    # 2. the Lambda handler, as the backend calls it
    result = b.invoke(BUSINESS, "ep-basic", {"instances": [SETOSA]})
    inference_id = result["inference_id"]
    assert result["endpoint"] == "ep-basic" and result["predictions"][0]["label"] == "setosa"
    assert result["predictions"][0]["inference_id"] == inference_id
    day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    stored = json.loads(b.store.get(f"predictions/{day}/{inference_id}.json"))
    assert stored["user"] == "bea" and stored["request"] == [SETOSA] and stored["model_version"] in (1, "1")
    mine = b.list_predictions(endpoint="ep-basic", user="bea")
    assert [p["inference_id"] for p in mine] == [inference_id]
    with pytest.raises(InputError, match="refused the request"):
        b.invoke(BUSINESS, "ep-basic", {"instances": [{"petal": "x"}]})

    # 3. the same invocation reached capture, with the Lambda's inference id
    def captured():
        files = list(b.store.path("capture/ep-basic/AllTraffic").rglob("*.jsonl"))
        lines = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
        return lines if any(x["eventMetadata"].get("inferenceId") == inference_id for x in lines) else None
    lines = wait_for(captured, 15, "data capture files")
    assert len(lines) >= 3
    assert {"endpointInput", "endpointOutput"} <= set(lines[0]["captureData"])

    # 4. ground truth (revise) for that prediction
    truth = b.submit_ground_truth(BUSINESS, inference_id, "setosa")
    assert truth["groundTruthData"]["data"] == "setosa" and truth["eventMetadata"]["eventId"] == inference_id
    listed = b.list_ground_truth(endpoint="ep-basic")
    assert [(g["inference_id"], g["label"], g["predicted_label"]) for g in listed] == [(inference_id, "setosa", "setosa")]
    with pytest.raises(InputError, match="label 'rose' is not a class of model version 1"):
        b.submit_ground_truth(BUSINESS, inference_id, "rose")
    with pytest.raises(NotFoundError, match="no stored prediction has inference id"):
        b.submit_ground_truth(BUSINESS, "0000-not-an-id", "setosa")

    # 5. lineage: the version knows where it runs
    assert "ep-basic" in b.describe_model_version(1)["Lineage"]["Endpoints"]
    assert "ep-basic" in [e["EndpointName"] for e in b.list_endpoints()]


def test_only_approved_versions_go_to_prod_and_rejected_never(lifecycle, endpoint):
    b = lifecycle.backend
    with pytest.raises(StateError, match="model version 2 is PendingManualApproval; only Approved versions go to prod"):
        b.create_endpoint(MANAGER, "ep-prod", 2, stage="prod")
    with pytest.raises(StateError, match="model version 3 is Rejected; a rejected version cannot be deployed"):
        b.create_endpoint(SCIENTIST, "ep-rejected", 3)
    with pytest.raises(RoleError):
        b.create_endpoint(SCIENTIST, "ep-prod", 1, stage="prod")
    with pytest.raises(NotFoundError, match="has no version 42"):
        b.create_endpoint(MANAGER, "ep-prod", 42, stage="prod")
    assert not b.paths.endpoint_record("ep-prod").exists() and not b.paths.endpoint_record("ep-rejected").exists()
    record = endpoint("ep-prod", 1, "prod")
    assert record["Stage"] == "prod"
    with pytest.raises(StateError, match="endpoint 'ep-prod' already exists"):
        b.create_endpoint(MANAGER, "ep-prod", 1, stage="prod")
    with pytest.raises(RoleError, match="may not deploy prod"):
        b.delete_endpoint(SCIENTIST, "ep-prod")  # taking prod down is a prod change


def test_a_killed_endpoint_shows_failed_and_restart_brings_it_back(lifecycle, endpoint):
    b = lifecycle.backend
    record = endpoint("ep-kill")
    old = variant(b, "ep-kill")
    os.kill(old["Pid"], signal.SIGKILL)
    wait_for(lambda: not procs.is_alive(old["Pid"]), 10, "the server to die")
    failed = b.describe_endpoint("ep-kill")
    assert failed["EndpointStatus"] == "Failed"
    assert "not running" in failed["FailureReason"] and "qcbr endpoints restart ep-kill" in failed["FailureReason"]
    assert failed["ProductionVariants"][0]["CurrentInstanceCount"] == 0
    with pytest.raises(StateError, match="endpoint ep-kill is Failed"):
        b.invoke(OPERATOR, "ep-kill", SETOSA)
    with pytest.raises(StateError, match="only an InService endpoint can be updated"):
        b.update_endpoint(OPERATOR, "ep-kill", 2)

    back = b.restart_endpoint(SCIENTIST, "ep-kill", wait=True)
    assert back["EndpointStatus"] == "InService" and back["FailureReason"] is None
    assert variant(b, "ep-kill")["Pid"] != old["Pid"]
    assert back["EndpointUrl"] == record["EndpointUrl"]
    assert b.invoke(OPERATOR, "ep-kill", SETOSA)["predictions"][0]["label"] == "setosa"


def test_endpoints_and_gateway_outlive_their_starter_and_are_reattached(lifecycle, endpoint, monkeypatch):
    b = lifecycle.backend
    record = endpoint("ep-attach")
    lifecycle.env(monkeypatch)
    # another process (a new CLI command) sees it InService at the same URL
    out = subprocess.run([sys.executable, "-m", "qcbr", "endpoints", "describe", "ep-attach", "--json"],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["EndpointStatus"] == "InService" and seen["EndpointUrl"] == record["EndpointUrl"]

    # the gateway dies: the next describe brings it back on the same port, routes intact
    gateway = read_json(b.paths.gateway)
    os.killpg(gateway["Pid"], signal.SIGKILL)
    wait_for(lambda: not procs.is_alive(gateway["Pid"]), 10, "the gateway to die")
    again = b.describe_endpoint("ep-attach")
    assert again["EndpointStatus"] == "InService"
    assert read_json(b.paths.gateway)["Pid"] != gateway["Pid"]
    assert again["EndpointUrl"] == record["EndpointUrl"]
    assert call(runtime(again["EndpointUrl"]), "ep-attach", SETOSA)["predictions"][0]["label"] == "setosa"


def test_blue_green_update_with_8_concurrent_clients_fails_no_request(lifecycle, endpoint):
    b = lifecycle.backend
    record = endpoint("ep-bg", 1)
    url = record["EndpointUrl"]
    old = variant(b, "ep-bg")
    stop = threading.Event()
    errors: list[str] = []
    versions: list[list] = [[] for _ in range(8)]
    counts = [0] * 8

    def client_loop(i: int) -> None:
        client = runtime(url)
        while not stop.is_set():
            try:
                answer = call(client, "ep-bg", {"instances": [SETOSA if i % 2 else VIRGINICA]})
                versions[i].append(str(answer["model_version"]))
                counts[i] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                errors.append(f"client {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: all(c >= 3 for c in counts), 30, "traffic on the old version")
    updated = b.update_endpoint(SCIENTIST, "ep-bg", 2)
    after_switch = [c for c in counts]
    wait_for(lambda: all(c >= a + 3 for c, a in zip(counts, after_switch)), 30, "traffic on the new version")
    stop.set()
    for t in threads:
        t.join(30)

    assert errors == []
    assert updated["EndpointStatus"] == "InService" and updated["ModelPackageVersion"] == 2
    assert updated["EndpointUrl"] == url
    for seen in versions:
        assert seen[0] == "1" and seen[-1] == "2"
        assert seen == sorted(seen)  # once a client saw version 2 it never saw 1 again
    assert sum(counts) > 48
    assert not procs.is_alive(old["Pid"])
    assert variant(b, "ep-bg")["ModelPackageVersion"] == 2
    assert not (b.paths.endpoint_models("ep-bg") / "1").exists()
    print(f"blue/green: {sum(counts)} requests from 8 clients, 0 failed")


def test_delete_stops_the_server_and_removes_the_route(lifecycle):
    b = lifecycle.backend
    b.create_endpoint(OPERATOR, "ep-delete", 1, wait=True)
    record = b.describe_endpoint("ep-delete")
    pid = variant(b, "ep-delete")["Pid"]
    b.delete_endpoint(SCIENTIST, "ep-delete")
    assert not procs.is_alive(pid)
    assert "ep-delete" not in read_json(b.paths.routes)
    assert not b.paths.endpoint_models("ep-delete").exists()
    with pytest.raises(NotFoundError, match="no endpoint named 'ep-delete'"):
        b.describe_endpoint("ep-delete")
    if procs.ping(record["EndpointUrl"]):  # other endpoints keep the gateway up: it now answers 404
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError) as info:
            call(runtime(record["EndpointUrl"]), "ep-delete", SETOSA)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "ep-delete" not in b.describe_model_version(1)["Lineage"]["Endpoints"]


def test_create_returns_creating_and_the_endpoint_becomes_in_service_on_ping(lifecycle):
    b = lifecycle.backend
    first = b.create_endpoint(OPERATOR, "ep-async", 1)
    try:
        assert first["EndpointStatus"] in ("Creating", "InService")
        ready = wait_for(lambda: b.describe_endpoint("ep-async")["EndpointStatus"] == "InService" or None, 120,
                         "InService")
        assert ready and b.wait_endpoint("ep-async")["EndpointStatus"] == "InService"
    finally:
        b.delete_endpoint(OPERATOR, "ep-async")


def test_a_server_that_exits_before_ping_fails_with_its_reason(lifecycle, monkeypatch):
    import socket

    b = lifecycle.backend
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    real_free_port = procs.free_port
    monkeypatch.setattr(procs, "free_port", lambda host="127.0.0.1": port)
    try:
        record = b.create_endpoint(OPERATOR, "ep-noport", 1, wait=True)
        assert record["EndpointStatus"] == "Failed"
        assert "exited before answering /ping" in record["FailureReason"]
        assert "qcbr endpoints restart ep-noport" in record["FailureReason"]
        monkeypatch.setattr(procs, "free_port", real_free_port)
        assert b.restart_endpoint(OPERATOR, "ep-noport", wait=True)["EndpointStatus"] == "InService"
    finally:
        taken.close()
        b.delete_endpoint(OPERATOR, "ep-noport")


def test_a_tampered_model_is_refused_on_restart(lifecycle):
    from qcbr.errors import StateError as Refused

    b = lifecycle.backend
    b.create_endpoint(OPERATOR, "ep-tamper", 1, wait=True)
    try:
        model_json = b.paths.endpoint_models("ep-tamper") / "1" / "model.json"
        model_json.write_text(model_json.read_text().replace("setosa", "setosb"))
        with pytest.raises(Refused, match="could not start the inference server"):
            b.restart_endpoint(OPERATOR, "ep-tamper")
        record = b.describe_endpoint("ep-tamper")
        assert record["EndpointStatus"] == "Failed"
        assert "model.json does not match its SHA-256 in the manifest" in record["FailureReason"]
    finally:
        b.delete_endpoint(OPERATOR, "ep-tamper")

