"""The scheduled monitoring job on AWS: EventBridge -> this Lambda -> a SageMaker Processing job.

Monitoring is qcbr's own computation on both backends (SageMaker Model Monitor's file formats,
our statistics), so on AWS it runs in the project's own image: the endpoint stack's EventBridge
rule calls ``handler`` on its schedule, which starts a Processing job running the container's
``monitor`` mode (``qcbr monitor run --endpoint <endpoint>``) with the execution role. The job
reads the endpoint's data capture and ground truth from the bucket and writes
``monitoring/<endpoint>/<execution>/`` exactly as the local scheduler does. The Lambda itself
needs only boto3 (it ships in the zip `qcbr lambda package` builds).

Environment (set by infra/cloudformation/endpoint.yaml): QCBR_PROJECT, QCBR_AWS_BUCKET,
QCBR_AWS_ROLE_ARN, QCBR_AWS_IMAGE_URI, QCBR_MONITOR_ENDPOINT, QCBR_MONITOR_INSTANCE_TYPE.
"""
from __future__ import annotations

import os
import secrets
from datetime import datetime, timezone
from typing import Any

REQUIRED = ("QCBR_PROJECT", "QCBR_AWS_BUCKET", "QCBR_AWS_ROLE_ARN", "QCBR_AWS_IMAGE_URI", "QCBR_MONITOR_ENDPOINT")
MAX_RUNTIME_S = 3600


def processing_job_request(env: dict[str, str], now: datetime | None = None) -> dict:
    """The CreateProcessingJob request for one monitoring execution of ``QCBR_MONITOR_ENDPOINT``."""
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise ValueError(f"the monitoring function is misconfigured: set {', '.join(missing)}")
    now = now or datetime.now(timezone.utc)
    project, endpoint = env["QCBR_PROJECT"], env["QCBR_MONITOR_ENDPOINT"]
    name = f"{project}-mon-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"[:63]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    return {
        "ProcessingJobName": name,
        "RoleArn": env["QCBR_AWS_ROLE_ARN"],
        "AppSpecification": {"ImageUri": env["QCBR_AWS_IMAGE_URI"], "ContainerArguments": ["monitor"]},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": 1, "InstanceType": env.get("QCBR_MONITOR_INSTANCE_TYPE") or "ml.m5.large",
            "VolumeSizeInGB": 5}},
        "StoppingCondition": {"MaxRuntimeInSeconds": MAX_RUNTIME_S},
        "Environment": {
            "QCBR_BACKEND": "aws", "QCBR_PROJECT": project, "QCBR_AWS_BUCKET": env["QCBR_AWS_BUCKET"],
            "QCBR_MONITOR_ENDPOINT": endpoint, "AWS_DEFAULT_REGION": region, "QCBR_HOME": "/tmp/qcbr",
        },
        "Tags": [{"Key": "qcbr:project", "Value": project}, {"Key": "qcbr:endpoint", "Value": endpoint},
                 {"Key": "qcbr:job", "Value": "monitoring"}],
    }


def handler(event: dict | None = None, context: Any = None, *, client: Any = None) -> dict:
    """EventBridge scheduled event -> start the monitoring Processing job; returns its name and ARN."""
    request = processing_job_request(dict(os.environ))
    if client is None:
        import boto3

        client = boto3.client("sagemaker")
    arn = client.create_processing_job(**request)["ProcessingJobArn"]
    return {"ProcessingJobName": request["ProcessingJobName"], "ProcessingJobArn": arn,
            "Endpoint": request["Environment"]["QCBR_MONITOR_ENDPOINT"]}
