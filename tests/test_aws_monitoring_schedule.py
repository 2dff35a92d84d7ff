"""Scheduled monitoring on AWS: the schedule's Lambda starts a Processing job running the image's
`monitor` mode, which is `qcbr monitor run` on the aws backend. Against moto's server on 127.0.0.1.

moto records the Processing job but runs no container, so the `monitor` mode is run here directly
(the entrypoint script, no Docker), and the endpoint's data capture, which SageMaker would have
written, is written in SageMaker's capture format by the test (a stand-in, as test_aws_helpers says).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from qcbr.lifecycle.aws.monitoring_schedule import handler, processing_job_request
from qcbr.roles import Actor
from tests.test_aws_helpers import (ENTRYPOINT, FAST_HPS, IRIS_ROW, aws_env, backend_for, client,  # noqa: F401
                                    complete_training_job, iris_case_base, s3_json, s3_keys)


def _schedule_env(env: dict[str, str], endpoint: str) -> dict[str, str]:
    return {**env, "QCBR_MONITOR_ENDPOINT": endpoint, "QCBR_MONITOR_INSTANCE_TYPE": "ml.t3.medium"}


def test_schedule_lambda_starts_the_monitoring_processing_job(aws_env, monkeypatch):
    env = _schedule_env(aws_env, f"{aws_env['QCBR_PROJECT']}-prod")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sm = client("sagemaker")
    sent = []
    sm.meta.events.register("provide-client-params.sagemaker.CreateProcessingJob",
                            lambda params, **_: sent.append(json.loads(json.dumps(params))))
    result = handler({"source": "aws.events", "detail-type": "Scheduled Event"}, None, client=sm)
    (request,) = sent
    assert result["ProcessingJobName"] == request["ProcessingJobName"]
    assert request["ProcessingJobName"].startswith(f"{aws_env['QCBR_PROJECT']}-mon-")
    assert len(request["ProcessingJobName"]) <= 63
    assert request["AppSpecification"] == {"ImageUri": aws_env["QCBR_AWS_IMAGE_URI"], "ContainerArguments": ["monitor"]}
    assert request["RoleArn"] == aws_env["QCBR_AWS_ROLE_ARN"]
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.t3.medium"
    assert request["Environment"] == {
        "QCBR_BACKEND": "aws", "QCBR_PROJECT": aws_env["QCBR_PROJECT"], "QCBR_AWS_BUCKET": aws_env["QCBR_AWS_BUCKET"],
        "QCBR_MONITOR_ENDPOINT": f"{aws_env['QCBR_PROJECT']}-prod", "AWS_DEFAULT_REGION": "us-east-1",
        "QCBR_HOME": "/tmp/qcbr"}
    job = client("sagemaker").describe_processing_job(ProcessingJobName=result["ProcessingJobName"])  # in moto
    assert job["AppSpecification"]["ContainerArguments"] == ["monitor"]
    assert job["ProcessingJobArn"] == result["ProcessingJobArn"]


def test_schedule_lambda_names_what_is_missing():
    with pytest.raises(ValueError, match="set QCBR_AWS_IMAGE_URI, QCBR_MONITOR_ENDPOINT"):
        processing_job_request({"QCBR_PROJECT": "p", "QCBR_AWS_BUCKET": "b", "QCBR_AWS_ROLE_ARN": "r"})


def _capture_lines(n: int, when: datetime) -> bytes:
    """n requests as SageMaker's data capture writes them (JSON captured as text, see CaptureContentTypeHeader)."""
    lines = []
    for i in range(n):
        row = {**IRIS_ROW, "petal length (cm)": 1.4 + (i % 5) * 0.1}
        answer = {"model_version": 1, "predictions": [{"label": "setosa", "confidence": 0.95, "flagged": False,
                                                       "probabilities": {"setosa": 0.95, "versicolor": 0.03, "virginica": 0.02},
                                                       "similar_cases": []}]}
        lines.append(json.dumps({
            "captureData": {
                "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                  "data": json.dumps({"instances": [row]}), "encoding": "JSON"},
                "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                   "data": json.dumps(answer), "encoding": "JSON"}},
            "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceId": f"req-{i}",
                              "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "eventVersion": "0"}))
    return ("\n".join(lines) + "\n").encode()


def test_monitor_mode_runs_the_monitoring_job_on_s3_capture(aws_env):
    backend = backend_for(aws_env)
    bucket = aws_env["QCBR_AWS_BUCKET"]
    ds = Actor("dana", "data_scientist")
    backend.upload_dataset(ds, iris_case_base(), "iris")
    job = backend.create_training_job(ds, "iris", FAST_HPS)["TrainingJobName"]
    complete_training_job(job)  # stand-in for SageMaker training (model.tar.gz with the monitoring baseline)
    backend.register_model(ds, job)
    backend.create_endpoint(ds, "watched", 1)
    now = datetime.now(timezone.utc)
    client("s3").put_object(Bucket=bucket, Key=f"capture/watched/AllTraffic/{now:%Y/%m/%d/%H}/{uuid.uuid4()}.jsonl",
                            Body=_capture_lines(30, now))  # stand-in: what SageMaker's data capture writes

    missing = subprocess.run(["bash", str(ENTRYPOINT), "monitor"], env={**aws_env, "PATH": os.environ["PATH"]},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "QCBR_MONITOR_ENDPOINT" in missing.stderr

    env = {**aws_env, "QCBR_MONITOR_ENDPOINT": "watched",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ENTRYPOINT), "monitor"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    execution = json.loads(done.stdout)
    assert execution["EndpointName"] == "watched"
    assert execution["MonitoringExecutionStatus"] in ("Completed", "CompletedWithViolations")
    assert execution["ModelPackageVersion"] == 1
    assert execution["Summary"]["n_rows"] == 30
    keys = s3_keys(bucket, "monitoring/watched/")
    assert {k.rsplit("/", 1)[-1] for k in keys} >= {"execution.json", "statistics.json", "constraint_violations.json"}
    stored = s3_json(bucket, next(k for k in keys if k.endswith("execution.json")))
    assert stored["ExecutionId"] == execution["ExecutionId"]
