"""The Lambda side: the start_training handler, and the zip `qcbr lambda package` builds.

The zip is proved self-sufficient by running every handler out of it in an interpreter that
sees only the standard library, boto3 and its dependencies (what the Lambda runtime has),
against moto's server. moto serves no endpoint container: the prediction handler's answer is
queued through moto's endpoint-results API (a stand-in, as the helpers explain).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from qcbr.roles import Actor
from qcbr.serving.start_training import handler
from tests.test_aws_helpers import (FAST_HPS, IRIS_ROW, ROOT, aws_env, backend_for, client,  # noqa: F401
                                    iris_case_base, queue_endpoint_answer, run_cli, s3_json, s3_keys)

DS = Actor("dana", "data_scientist")


def _event(body, identity=None) -> dict:
    return {"resource": "/train", "path": "/train", "httpMethod": "POST",
            "headers": {"Content-Type": "application/json"},
            "requestContext": {"identity": identity or {"userArn": "arn:aws:iam::123456789012:user/alice"}},
            "body": body if isinstance(body, str) or body is None else json.dumps(body), "isBase64Encoded": False}


def test_start_training_handler_starts_a_job(aws_env):
    backend = backend_for(aws_env)
    dataset = backend.upload_dataset(DS, iris_case_base(), "iris")
    response = handler(_event({"dataset": "iris", "hyperparameters": {"feature_map": "angle", "k": 5}}), None,
                       backend=backend)
    assert response["statusCode"] == 201, response["body"]
    record = json.loads(response["body"])
    raw = client("sagemaker").describe_training_job(TrainingJobName=record["TrainingJobName"])
    assert raw["HyperParameters"] == {"feature_map": "angle", "k": "5"}
    assert raw["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == dataset["S3Uri"]
    assert record["CreatedBy"] == "arn:aws:iam::123456789012:user/alice"
    assert record["Lineage"]["DatasetSha256"] == dataset["Sha256"]


@pytest.mark.parametrize("body, status, message", [
    (None, 400, "empty request body"),
    ("{not json", 400, "not valid JSON"),
    ([1, 2], 400, "must be a JSON object"),
    ({"hyperparameters": {}}, 400, 'missing "dataset"'),
    ({"dataset": "iris", "colour": "red"}, 400, "unknown field"),
    ({"dataset": "iris", "hyperparameters": {"k": [1]}}, 400, "name -> value"),
    ({"dataset": "iris", "hyperparameters": {"feature_map": "nope"}}, 400, "feature_map='nope'"),
    ({"dataset": "ghost"}, 404, "no dataset named 'ghost'"),
])
def test_start_training_handler_refuses_bad_requests(aws_env, body, status, message):
    backend = backend_for(aws_env)
    backend.upload_dataset(DS, iris_case_base(), "iris")
    response = handler(_event(body), None, backend=backend)
    assert response["statusCode"] == status
    assert message in json.loads(response["body"])["error"]
    assert client("sagemaker").list_training_jobs(NameContains=aws_env["QCBR_PROJECT"])["TrainingJobSummaries"] == []


def test_start_training_handler_duplicate_name_is_409(aws_env):
    backend = backend_for(aws_env)
    backend.upload_dataset(DS, iris_case_base(), "iris")
    name = f"{aws_env['QCBR_PROJECT']}-fixed"
    first = handler(_event({"dataset": "iris", "job_name": name, "hyperparameters": FAST_HPS}), None, backend=backend)
    assert first["statusCode"] == 201
    again = handler(_event({"dataset": "iris", "job_name": name}), None, backend=backend)
    assert again["statusCode"] == 409 and "already exists" in json.loads(again["body"])["error"]


def test_lambda_zip_is_deterministic_and_holds_every_handler(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "QCBR_"))}
    env["PYTHONPATH"] = str(ROOT)
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    for out in (first, second):
        done = run_cli(["lambda", "package", "--out", str(out), "--json"], env)
        assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert first.read_bytes() == second.read_bytes()
    assert summary["Sha256"] == hashlib.sha256(second.read_bytes()).hexdigest()
    with zipfile.ZipFile(second) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {"qcbr/serving/lambda_function.py", "qcbr/serving/start_training.py", "qcbr/serving/payload.py",
                "qcbr/storage.py", "qcbr/lifecycle/aws/backend.py", "qcbr/training/train.py",
                "qcbr/lifecycle/aws/monitoring_schedule.py"} <= set(names)
        # nothing that needs numpy/pandas/qiskit, and no local backend
        assert not any(n.startswith(("qcbr/lifecycle/local/", "qcbr/model", "qcbr/cases", "qcbr/encoding")) for n in names)
        assert all(n.endswith(".py") for n in names)
    assert "qcbr.model" in summary["LeftOut"]


def _runtime_only_path(tmp_path: Path) -> Path:
    """A folder exposing only what the Lambda Python runtime ships besides the stdlib: boto3 and deps."""
    import boto3

    site = Path(boto3.__file__).resolve().parent.parent
    deps = tmp_path / "runtime"
    deps.mkdir()
    for name in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py"):
        assert (site / name).exists(), name
        (deps / name).symlink_to(site / name)
    return deps


def _run_from_zip(tmp_path: Path, env: dict[str, str], code: str) -> dict:
    zip_path = tmp_path / "lambda.zip"
    done = run_cli(["lambda", "package", "--out", str(zip_path)], {**env, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    task = tmp_path / "task"  # what Lambda unpacks to /var/task
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(task)
    run_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    run_env["PYTHONPATH"] = f"{task}{os.pathsep}{_runtime_only_path(tmp_path)}"
    # -S: no site-packages at all, so anything missing from the zip fails the import
    done = subprocess.run([sys.executable, "-S", "-c", code], env=run_env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_handler_runs_from_the_zip_with_only_the_lambda_runtime(aws_env, tmp_path):
    backend = backend_for(aws_env)
    bucket = aws_env["QCBR_AWS_BUCKET"]
    backend.upload_dataset(DS, iris_case_base(), "iris")

    train_event = _event({"dataset": "iris", "hyperparameters": FAST_HPS})
    result = _run_from_zip(tmp_path, aws_env, (
        "import json, sys\n"
        "assert not any(m.startswith(('numpy', 'pandas', 'qiskit')) for m in sys.modules)\n"
        "from qcbr.serving.start_training import handler\n"
        f"r = handler({train_event!r})\n"
        "assert not any(m.startswith(('numpy', 'pandas', 'qiskit')) for m in sys.modules)\n"
        "print(json.dumps(r))\n"))
    assert result["statusCode"] == 201, result["body"]
    job = json.loads(result["body"])["TrainingJobName"]
    assert client("sagemaker").describe_training_job(TrainingJobName=job)["TrainingJobStatus"] == "Completed"

    # stand-in for the SageMaker endpoint: moto returns this answer to InvokeEndpoint
    answer = {"model_version": 7, "predictions": [{"label": "setosa", "confidence": 0.9,
                                                   "probabilities": {"setosa": 0.9, "versicolor": 0.1},
                                                   "flagged": False, "similar_cases": []}]}
    queue_endpoint_answer(json.dumps(answer))
    predict_env = {**aws_env, "ENDPOINT_NAME": "prod-endpoint", "PREDICTIONS_BUCKET": bucket}
    predict_event = {"httpMethod": "POST", "headers": {"Content-Type": "application/json"},
                     "requestContext": {"identity": {"userArn": "arn:aws:iam::123456789012:user/bob"}},
                     "body": json.dumps({"instances": [IRIS_ROW]}), "isBase64Encoded": False}
    (tmp_path / "p").mkdir()
    result = _run_from_zip(tmp_path / "p", predict_env, (
        "import json\n"
        "from qcbr.serving.lambda_function import handler\n"
        f"print(json.dumps(handler({predict_event!r}, None)))\n"))
    assert result["statusCode"] == 200, result["body"]
    body = json.loads(result["body"])
    assert body["model_version"] == 7 and body["predictions"][0]["label"] == "setosa"
    day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    assert s3_keys(bucket, "predictions/") == [f"predictions/{day}/{body['inference_id']}.json"]
    stored = s3_json(bucket, f"predictions/{day}/{body['inference_id']}.json")
    assert stored["user"] == "arn:aws:iam::123456789012:user/bob" and stored["endpoint"] == "prod-endpoint"

    (tmp_path / "m").mkdir()
    monitor_env = {**aws_env, "QCBR_MONITOR_ENDPOINT": "prod-endpoint"}
    result = _run_from_zip(tmp_path / "m", monitor_env, (
        "import json\n"
        "from qcbr.lifecycle.aws.monitoring_schedule import handler\n"
        "print(json.dumps(handler({'source': 'aws.events'}, None)))\n"))
    job = client("sagemaker").describe_processing_job(ProcessingJobName=result["ProcessingJobName"])
    assert job["AppSpecification"]["ImageUri"] == aws_env["QCBR_AWS_IMAGE_URI"]
