"""The local runtime gateway: routing by endpoint name, live route reloads, blue/green with no failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from qcbr.errors import StateError
from qcbr.serving.gateway import RouteTable, gateway_routes, wait_acknowledged, write_routes
from tests.test_serving_server import (
    ROOT,
    ROW,
    fit_model_dir,
    free_port,
    runtime_client,
    start_server,
    stop_process,
    wait_http,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return fit_model_dir(tmp_path_factory.mktemp("model") / "m")


def start_gateway(routes: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qcbr.serving.gateway", "--port", str(port), "--routes", str(routes)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/ping", proc)
    return proc, url


def post(url: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_route_table_reloads_on_change_and_keeps_last_good(tmp_path):
    path = tmp_path / "routes.json"
    table = RouteTable(path)
    assert table.current() == {} and "does not exist" in table.error
    sha = write_routes(path, {"a": "http://127.0.0.1:1/"})
    assert table.current() == {"a": "http://127.0.0.1:1"} and table.sha256 == sha
    sha2 = write_routes(path, {"a": "http://127.0.0.1:2", "b": "http://127.0.0.1:3"})
    assert table.current()["a"] == "http://127.0.0.1:2" and table.sha256 == sha2
    path.write_text('{"a": 5}')  # broken: keep serving the previous routes
    assert table.current()["a"] == "http://127.0.0.1:2"
    assert "invalid" in table.error and table.describe()["sha256"] == sha2


def test_gateway_forwards_and_reports_unknown_and_down_endpoints(model_dir, tmp_path):
    from botocore.exceptions import ClientError

    server, server_url = start_server(model_dir, "--model-version", "4")
    routes = tmp_path / "routes.json"
    dead = f"http://127.0.0.1:{free_port()}"
    write_routes(routes, {"churn": server_url, "gone": dead})
    gw, gw_url = start_gateway(routes)
    try:
        rt = runtime_client(gw_url)
        resp = rt.invoke_endpoint(EndpointName="churn", Body=json.dumps(ROW), ContentType="application/json",
                                  InferenceId="gw-1")
        body = json.loads(resp["Body"].read())
        assert body["model_version"] == 4 and body["inference_id"] == "gw-1"
        assert resp["InvokedProductionVariant"] == "AllTraffic"
        csv = rt.invoke_endpoint(EndpointName="churn", Body=b"0.3,-1.2,0.8,0.1,pro,true\n", ContentType="text/csv")
        assert json.loads(csv["Body"].read())["predictions"][0]["label"] == body["predictions"][0]["label"]

        with pytest.raises(ClientError) as info:  # the server's 4xx passes through unchanged
            rt.invoke_endpoint(EndpointName="churn", Body=b"[[1]]", ContentType="application/json")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "1 values, expected 6 features" in info.value.response["Error"]["Message"]

        status, doc = post(gw_url + "/endpoints/nope/invocations", json.dumps(ROW).encode())
        assert status == 404 and doc["detail"]["known"] == ["churn", "gone"]
        status, doc = post(gw_url + "/endpoints/gone/invocations", json.dumps(ROW).encode())
        assert status == 503 and "unreachable" in doc["error"] and "Connect" in doc["detail"]["reason"]
        wait_http(gw_url + "/endpoints/churn/ping")
        info_doc = json.loads(__import__("urllib.request").request.urlopen(gw_url + "/endpoints/churn/info").read())
        assert info_doc["model_version"] == 4

        # a new route is visible as soon as the file changes; /routes acknowledges it
        sha = write_routes(routes, {"churn2": server_url})
        wait_acknowledged(gw_url, sha, timeout=5)
        assert gateway_routes(gw_url)["routes"] == {"churn2": server_url}
        assert post(gw_url + "/endpoints/churn/invocations", json.dumps(ROW).encode())[0] == 404
        assert post(gw_url + "/endpoints/churn2/invocations", json.dumps(ROW).encode())[0] == 200
        with pytest.raises(StateError, match="did not pick up"):
            wait_acknowledged(gw_url, "0" * 64, timeout=0.3)
    finally:
        stop_process(gw)
        stop_process(server)


@pytest.mark.slow
def test_blue_green_switches_with_8_clients_and_zero_failures(model_dir, tmp_path):
    """Two switches (v1 -> v2 -> v3) under load, each: start new, /ping, route, ack, SIGTERM old."""
    routes = tmp_path / "routes.json"
    old, old_url = start_server(model_dir, "--endpoint-name", "churn", "--model-version", "1")
    write_routes(routes, {"churn": old_url})
    gw, gw_url = start_gateway(routes)
    stop_flag = threading.Event()
    versions: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client_loop(w: int) -> None:
        rt = runtime_client(gw_url)  # retries off: any failure is counted
        while not stop_flag.is_set():
            try:
                resp = rt.invoke_endpoint(EndpointName="churn", Body=json.dumps({"instances": [ROW, ROW]}),
                                          ContentType="application/json")
                body = json.loads(resp["Body"].read())
                assert len(body["predictions"]) == 2
                with lock:
                    versions[body["model_version"]] += 1
            except Exception as exc:
                with lock:
                    failures.append(f"client {w}: {type(exc).__name__}: {exc}")
            time.sleep(0.01)  # think time: leaves CPU for the new variant's start-up on small machines

    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    exit_codes = []
    try:
        for version in (2, 3):
            time.sleep(0.5)
            new, new_url = start_server(model_dir, "--endpoint-name", "churn", "--model-version", str(version))
            wait_acknowledged(gw_url, write_routes(routes, {"churn": new_url}), timeout=5)
            exit_codes.append(stop_process(old))  # graceful: in-flight requests finish first
            old = new
        time.sleep(0.5)
    finally:
        stop_flag.set()
        for t in threads:
            t.join(timeout=30)
        stop_process(old)
        stop_process(gw)
    assert failures == []
    assert set(versions) == {1, 2, 3}, versions
    assert sum(versions.values()) > 50
    assert all(code in (0, -15) for code in exit_codes)
