"""Shared set-up for the aws tests: moto's server on 127.0.0.1 and the stand-ins for SageMaker.

moto's ``ThreadedMotoServer`` runs once per test process on a random free port; every AWS call
of the code under test goes there over HTTP through ``AWS_ENDPOINT_URL`` (no in-process
patching). Each test gets its own project, bucket, IAM role and ECR image, so tests never see
each other's state.

moto records SageMaker requests but runs nothing: a "Completed" training job has no model and
an endpoint has no container. Where a test needs what SageMaker would have produced, it uses
the stand-ins below, which do what SageMaker does with the project's own container entrypoint:
``complete_training_job`` downloads the job's channel, runs ``infra/docker/entrypoint.sh train``
in an /opt/ml-shaped temp dir, uploads ``model.tar.gz`` where SageMaker would and writes the
job's log to CloudWatch Logs; ``queue_endpoint_answer`` gets the real inference server's answer
(``entrypoint.sh serve``) and queues it in moto's ``/moto-api/static/sagemaker/endpoint-results``
so that ``InvokeEndpoint`` returns it.
"""
from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "infra" / "docker" / "entrypoint.sh"
REGION = "us-east-1"
ACCOUNT = "123456789012"
FAST_HPS = {"feature_map": "angle", "alpha": "1.0", "k": "5", "random_state": "0"}
IRIS_ROW = {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}

_server = None
_server_lock = threading.Lock()
_model_cache: dict[tuple, tuple[bytes, list[str]]] = {}


def moto_url() -> str:
    """moto's server for this process (started on first use, on a free port of 127.0.0.1)."""
    global _server
    with _server_lock:
        if _server is None:
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
            _server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            _server.start()
        host, port = _server.get_host_and_port()
    return f"http://{host}:{port}"


def base_env(tmp_path: Path) -> dict[str, str]:
    """Dummy credentials, moto's URL, and nothing from the machine's own AWS configuration."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "QCBR_", "SAGEMAKER_")) and k not in ("ENDPOINT_NAME", "PREDICTIONS_BUCKET")}
    env.update({
        "AWS_ENDPOINT_URL": moto_url(),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "QCBR_HOME": str(tmp_path / "qcbr-home"),
        "PYTHONPATH": str(ROOT),
    })
    return env


def client(service: str):
    import boto3

    return boto3.client(service, endpoint_url=moto_url(), region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_project(tmp_path: Path, trust_service: str = "sagemaker.amazonaws.com", push_image: bool = True,
                 create_bucket: bool = True) -> dict[str, str]:
    """A fresh project in moto (bucket, SageMaker role, ECR repo + image) and its environment."""
    project = f"p{uuid.uuid4().hex[:10]}"
    bucket = f"{project}-bucket"
    if create_bucket:
        client("s3").create_bucket(Bucket=bucket)
    role = client("iam").create_role(
        RoleName=f"{project}-sagemaker",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": trust_service}, "Action": "sts:AssumeRole"}]}),
    )["Role"]["Arn"]
    ecr = client("ecr")
    repo = ecr.create_repository(repositoryName=project)["repository"]["repositoryUri"]
    if push_image:
        ecr.put_image(repositoryName=project, imageTag="v1", imageManifest=json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                       "digest": "sha256:" + uuid.uuid4().hex * 2},
            "layers": []}))
    env = base_env(tmp_path)
    env.update({
        "QCBR_BACKEND": "aws",
        "QCBR_PROJECT": project,
        "QCBR_AWS_BUCKET": bucket,
        "QCBR_AWS_ROLE_ARN": role,
        "QCBR_AWS_IMAGE_URI": f"{repo}:v1",
        "QCBR_AWS_INSTANCE_TYPE": "ml.m5.large",
    })
    return env


@pytest.fixture
def aws_env(tmp_path, monkeypatch) -> dict[str, str]:
    """A project in moto, with this process's environment pointing at it (boto3 reads os.environ)."""
    env = make_project(tmp_path)
    for key in list(os.environ):
        if key.startswith(("AWS_", "QCBR_")):
            monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key.startswith(("AWS_", "QCBR_")):
            monkeypatch.setenv(key, value)
    return env


def backend_for(env: dict[str, str]):
    from qcbr.config import load_config
    from qcbr.lifecycle import get_backend

    return get_backend(load_config(env))


def iris_case_base():
    from qcbr.cases import demo_case_base

    return demo_case_base("iris")


# -- stand-ins for what SageMaker would do ---------------------------------------------------------
def _train_in_container(channel: dict[str, bytes], hps: dict[str, str], job_name: str) -> tuple[bytes, list[str]]:
    """Run the BYOC image's `train` entrypoint (no Docker: the script itself) on /opt/ml in a temp dir."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="opt-ml-") as tmp:
        root = Path(tmp)
        train = root / "input" / "data" / "train"
        train.mkdir(parents=True)
        for name, data in channel.items():
            (train / name).write_bytes(data)
        (root / "input" / "config").mkdir(parents=True)
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hps))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "QCBR_OPT_ML"))}
        env.update({"SM_ROOT": str(root), "TRAINING_JOB_NAME": job_name, "PYTHONPATH": str(ROOT),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
        done = subprocess.run(["bash", str(ENTRYPOINT), "train"], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"training entrypoint failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:  # SageMaker tars the model dir's contents
            for path in sorted((root / "model").iterdir()):
                tar.add(path, arcname=path.name)
        return buf.getvalue(), done.stdout.splitlines()


def complete_training_job(job_name: str) -> str:
    """Stand in for SageMaker: train on the job's channel, upload model.tar.gz, write the job's log.

    moto reports every job Completed at once with ModelArtifacts at
    <S3OutputPath>/<job>/output/model.tar.gz but writes nothing there; this writes what SageMaker
    would have (the entrypoint's real output) so the registry and endpoints get a real model.
    """
    from qcbr.storage import parse_s3_uri

    sm, s3, logs = client("sagemaker"), client("s3"), client("logs")
    job = sm.describe_training_job(TrainingJobName=job_name)
    bucket, prefix = parse_s3_uri(job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"])
    channel = {}
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        name = obj["Key"][len(prefix):].lstrip("/")
        if name in ("cases.parquet", "schema.json"):
            channel[name] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    hps = job["HyperParameters"]
    key = (channel["cases.parquet"], json.dumps(hps, sort_keys=True))
    if key not in _model_cache:  # the same data and hyperparameters train the same model
        _model_cache[key] = _train_in_container(channel, hps, job_name)
    data, log_lines = _model_cache[key]
    out_bucket, out_key = parse_s3_uri(job["ModelArtifacts"]["S3ModelArtifacts"])
    s3.put_object(Bucket=out_bucket, Key=out_key, Body=data)
    group = "/aws/sagemaker/TrainingJobs"
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    stream = f"{job_name}/algo-1-{int(time.time())}"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream,
                        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(log_lines)])
    return job["ModelArtifacts"]["S3ModelArtifacts"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeContainer:
    """The BYOC image's `serve` entrypoint on 127.0.0.1, serving a model.tar.gz (no Docker)."""

    def __init__(self, model_tar: bytes, tmp: Path, model_version: str = "1", endpoint: str = "e"):
        self.root = tmp / "opt-ml-serve"
        (self.root / "model").mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(model_tar), mode="r:gz") as tar:
            tar.extractall(self.root / "model", filter="data")
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "QCBR_OPT_ML"))}
        env.update({"SM_ROOT": str(self.root), "QCBR_MODEL_VERSION": model_version, "QCBR_ENDPOINT_NAME": endpoint,
                    "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})
        self.log = open(tmp / "serve.log", "wb")
        self.proc = subprocess.Popen(["bash", str(ENTRYPOINT), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"serve entrypoint did not answer /ping: {(tmp / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def invoke(self, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        request = urllib.request.Request(f"{self.url}/invocations", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def queue_endpoint_answer(body: bytes | str, content_type: str = "application/json") -> None:
    """Queue the next InvokeEndpoint answer in moto (moto serves no container; this stands in)."""
    if isinstance(body, bytes):
        body = body.decode()
    request = urllib.request.Request(
        f"{moto_url()}/moto-api/static/sagemaker/endpoint-results", method="POST",
        data=json.dumps({"account_id": ACCOUNT, "region": REGION, "results": [{
            "Body": body, "ContentType": content_type, "InvokedProductionVariant": "AllTraffic",
            "CustomAttributes": ""}]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status in (200, 201)


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    s3 = client("s3")
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def s3_json(bucket: str, key: str):
    return json.loads(client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def run_cli(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qcbr", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=env.get("QCBR_HOME_CWD", str(ROOT)))

