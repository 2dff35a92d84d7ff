"""The `qcbr` command on the aws backend, in subprocesses, against moto's server.

QCBR_BACKEND=aws and AWS_ENDPOINT_URL point every command at moto on 127.0.0.1 with dummy
credentials. Two stand-ins for SageMaker (see test_aws_helpers): the training job's artifact is
produced by the project's `train` entrypoint, and the endpoint's answer by its `serve`
entrypoint, queued in moto for InvokeEndpoint.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from tests.test_aws_helpers import (IRIS_ROW, ServeContainer, base_env, client, complete_training_job,
                                    iris_case_base, make_project, queue_endpoint_answer, run_cli, s3_json,
                                    s3_keys)


def _ok(done) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
    return done.stdout


def _lines(stdout: str) -> dict[str, str]:
    """checklist line name -> status"""
    out = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("["):
            status, rest = line[1:].split("]", 1)
            out[rest.split()[0] if not rest.strip().startswith(("instance", "model", "endpoint")) else
                " ".join(rest.split()[:2])] = status
    return out


def test_aws_check_all_set(tmp_path):
    env = make_project(tmp_path)
    done = run_cli(["aws", "check"], env)
    out = _ok(done)
    status = _lines(out)
    assert status == {"backend": "ok", "project": "ok", "region": "ok", "endpoint url": "info",
                      "instance type": "ok", "credentials": "ok", "bucket": "ok", "role": "ok", "image": "ok",
                      "model registry": "info"}, out
    assert "account 123456789012" in out and "all set" in out
    items = json.loads(_ok(run_cli(["aws", "check", "--json"], env)))
    assert not any(i["problem"] for i in items)


def test_aws_check_says_exactly_what_is_missing(tmp_path):
    env = make_project(tmp_path)
    for key in ("QCBR_AWS_BUCKET", "QCBR_AWS_ROLE_ARN", "QCBR_AWS_IMAGE_URI", "QCBR_BACKEND"):
        env.pop(key)
    done = run_cli(["aws", "check"], env)
    assert done.returncode == 1
    status = _lines(done.stdout)
    assert status["backend"] == status["bucket"] == status["role"] == status["image"] == "MISSING"
    assert status["credentials"] == "ok"
    for hint in ("export QCBR_BACKEND=aws", "export QCBR_AWS_BUCKET=", "export QCBR_AWS_ROLE_ARN=",
                 "export QCBR_AWS_IMAGE_URI=", "4 problem(s)"):
        assert hint in done.stdout


def test_aws_check_finds_wrong_resources(tmp_path):
    env = make_project(tmp_path, trust_service="ec2.amazonaws.com", push_image=False, create_bucket=False)
    env["QCBR_AWS_INSTANCE_TYPE"] = "m5.large"
    done = run_cli(["aws", "check"], env)
    assert done.returncode == 1
    status = _lines(done.stdout)
    assert status["bucket"] == status["role"] == status["image"] == status["instance type"] == "FAIL"
    assert "does not exist: deploy infra/cloudformation/project.yaml" in done.stdout
    assert "trust policy must allow the service principal sagemaker.amazonaws.com" in done.stdout
    assert "is not pushed" in done.stdout
    assert "is not a SageMaker instance type" in done.stdout

    env["QCBR_AWS_IMAGE_URI"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/no-such-repo:v1"
    env["QCBR_AWS_ROLE_ARN"] = "arn:aws:iam::123456789012:role/no-such-role"
    done = run_cli(["aws", "check"], env)
    assert "no-such-repo', which does not exist" in done.stdout
    assert "no-such-role does not exist" in done.stdout


def test_aws_check_without_region_or_credentials(tmp_path):
    env = base_env(tmp_path)
    env.pop("AWS_DEFAULT_REGION")
    env.update(QCBR_BACKEND="aws")
    done = run_cli(["aws", "check"], env)
    assert done.returncode == 1
    assert "export AWS_DEFAULT_REGION=" in done.stdout
    env = base_env(tmp_path)
    env.pop("AWS_ACCESS_KEY_ID")
    env.pop("AWS_SECRET_ACCESS_KEY")
    done = run_cli(["aws", "check"], env)
    assert done.returncode == 1
    assert _lines(done.stdout)["credentials"] == "FAIL"
    assert "AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY" in done.stdout


@pytest.mark.slow
def test_cli_full_lifecycle_on_aws(tmp_path):
    """upload -> train -> register -> approve -> deploy (staging, prod) -> predict -> ground truth -> delete."""
    env = make_project(tmp_path)
    bucket, project = env["QCBR_AWS_BUCKET"], env["QCBR_PROJECT"]
    frame = iris_case_base().frame
    cases_csv = tmp_path / "iris.csv"
    frame.to_csv(cases_csv, index=False)

    _ok(run_cli(["cases", "upload", str(cases_csv), "--label", "species", "--name", "iris"], env))
    assert any(k.endswith("/cases.parquet") for k in s3_keys(bucket, "datasets/iris/"))

    job = json.loads(_ok(run_cli(["train", "--dataset", "iris", "--hp", "feature_map=angle", "--hp", "alpha=1.0",
                                  "--hp", "k=5", "--hp", "random_state=0", "--wait", "--json"], env)))
    name = job["TrainingJobName"]
    assert job["TrainingJobStatus"] == "Completed"  # moto completes jobs at once
    assert client("sagemaker").describe_training_job(TrainingJobName=name)["AlgorithmSpecification"][
        "TrainingImage"] == env["QCBR_AWS_IMAGE_URI"]
    complete_training_job(name)  # stand-in: the model.tar.gz and log SageMaker would have produced
    described = json.loads(_ok(run_cli(["jobs", "describe", name, "--json"], env)))
    assert "validation accuracy" in described["Log"]
    assert [j["TrainingJobName"] for j in json.loads(_ok(run_cli(["jobs", "list", "--json"], env)))] == [name]

    version = json.loads(_ok(run_cli(["models", "register", "--job", name, "--json"], env)))
    assert version["ModelPackageVersion"] == 1 and version["ModelApprovalStatus"] == "PendingManualApproval"
    denied = run_cli(["endpoints", "deploy", "--model", "1", "--name", f"{project}-prod", "--stage", "prod"], env)
    assert denied.returncode == 1 and "only Approved versions go to prod" in denied.stderr
    _ok(run_cli(["models", "approve", "1", "--comment", "validated"], env))
    listed = json.loads(_ok(run_cli(["models", "list", "--json"], env)))
    assert listed[0]["ModelApprovalStatus"] == "Approved"
    assert client("sagemaker").describe_model_package(ModelPackageName=version["ModelPackageArn"])[
        "ApprovalDescription"] == "Approved by operator: validated"

    endpoint = json.loads(_ok(run_cli(["endpoints", "deploy", "--model", "1", "--name", f"{project}-prod",
                                       "--stage", "prod", "--wait", "--json"], env)))
    assert endpoint["EndpointStatus"] == "InService" and endpoint["Stage"] == "prod"
    assert client("sagemaker").describe_endpoint(EndpointName=f"{project}-prod")["EndpointStatus"] == "InService"

    # stand-in for the endpoint: the real `serve` container answers, moto hands that to InvokeEndpoint
    request = {"instances": [IRIS_ROW]}
    tar = client("s3").get_object(Bucket=bucket, Key=f"jobs/{name}/output/model.tar.gz")["Body"].read()
    server = ServeContainer(tar, tmp_path, model_version="1", endpoint=f"{project}-prod")
    try:
        status, answer = server.invoke(json.dumps(request).encode())
    finally:
        server.close()
    assert status == 200
    queue_endpoint_answer(answer)
    result = json.loads(_ok(run_cli(["predict", "--endpoint", f"{project}-prod", "--json", json.dumps(request),
                                     "--raw"], env)))
    assert result["predictions"][0]["label"] == "setosa" and result["model_version"] == 1
    inference_id = result["predictions"][0]["inference_id"]
    day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    stored = s3_json(bucket, f"predictions/{day}/{inference_id}.json")
    assert stored["user"] == "operator" and stored["request"] == request["instances"]

    _ok(run_cli(["ground-truth", inference_id, "setosa"], env))
    (gt_key,) = s3_keys(bucket, "ground-truth/")
    line = client("s3").get_object(Bucket=bucket, Key=gt_key)["Body"].read().decode().strip()
    assert json.loads(line) == {"groundTruthData": {"data": "setosa", "encoding": "CSV"},
                                "eventMetadata": {"eventId": inference_id}, "eventVersion": "0"}

    _ok(run_cli(["endpoints", "delete", f"{project}-prod"], env))
    assert json.loads(_ok(run_cli(["endpoints", "list", "--json"], env))) == []
    with pytest.raises(Exception, match="Could not find endpoint"):
        client("sagemaker").describe_endpoint(EndpointName=f"{project}-prod")


def test_cli_errors_are_one_line(tmp_path):
    env = make_project(tmp_path)
    done = run_cli(["jobs", "describe", "ghost"], env)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "no training job named 'ghost'" in done.stderr
    env["QCBR_USER"] = ""
    done = run_cli(["train", "--dataset", "nope"], env)
    assert done.returncode == 1 and "no dataset named 'nope'" in done.stderr



def test_aws_call_signs_with_sigv4_for_execute_api(tmp_path):
    """`qcbr aws call` against a stand-in for API Gateway on 127.0.0.1 that verifies the SigV4
    signature (recomputed with botocore from the received request) before running the real
    prediction Lambda handler, whose endpoint answer moto returns (queued: moto serves no container)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from qcbr.serving.lambda_function import handler
    from qcbr.storage import S3ObjectStore

    env = make_project(tmp_path)
    bucket = env["QCBR_AWS_BUCKET"]
    seen: dict = {}

    class FakeApiGateway(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            auth = self.headers["Authorization"]
            seen["auth"] = auth
            scope = re.search(r"Credential=([^,]+)", auth).group(1).split("/")
            signed = re.search(r"SignedHeaders=([^,]+)", auth).group(1).split(";")
            request = AWSRequest(method="POST", url=f"http://{self.headers['Host']}{self.path}", data=body,
                                 headers={h: self.headers[h] for h in signed})
            request.context["timestamp"] = self.headers["X-Amz-Date"]
            signer = SigV4Auth(Credentials("testing", "testing"), scope[3], scope[2])
            expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
            if scope[3] != "execute-api" or not auth.endswith(f"Signature={expected}"):
                self._send(403, {"message": "The request signature we calculated does not match"})
                return
            event = {"httpMethod": "POST", "path": self.path, "body": body.decode(), "isBase64Encoded": False,
                     "pathParameters": {"endpoint": "e-staging"},
                     "headers": {"Content-Type": self.headers["Content-Type"]},
                     "requestContext": {"identity": {"userArn": f"arn:aws:iam::123456789012:user/{scope[0]}"}}}
            response = handler(event, None, store=S3ObjectStore(bucket, client=client("s3")),
                               runtime_client=client("sagemaker-runtime"))
            self._send(response["statusCode"], json.loads(response["body"]))

        def _send(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApiGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        queue_endpoint_answer(json.dumps({"model_version": 2, "predictions": [
            {"label": "setosa", "confidence": 0.97, "probabilities": {"setosa": 0.97}, "flagged": False,
             "similar_cases": []}]}))
        url = f"http://127.0.0.1:{server.server_address[1]}/staging/predict"
        done = run_cli(["aws", "call", url, "--json", json.dumps({"instances": [IRIS_ROW]})], env)
        answer = json.loads(_ok(done))
        assert answer["predictions"][0]["label"] == "setosa" and answer["model_version"] == 2
        assert "/us-east-1/execute-api/aws4_request" in seen["auth"]
        stored = s3_json(bucket, s3_keys(bucket, "predictions/")[0])
        assert stored["user"] == "arn:aws:iam::123456789012:user/testing"

        wrong = run_cli(["aws", "call", url, "--json", "{}"], {**env, "AWS_SECRET_ACCESS_KEY": "not-the-key"})
        assert wrong.returncode == 1 and "signature" in wrong.stdout
    finally:
        server.shutdown()
        thread.join()
