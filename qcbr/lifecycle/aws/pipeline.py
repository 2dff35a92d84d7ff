"""What the deploy pipeline's build and test steps run (infra/buildspec.yml, modes deploy/test).

``deploy_config`` resolves the latest Approved version and writes the endpoint stack's
CloudFormation template-configuration files (``staging-config.json``, ``prod-config.json``),
uploading the Lambda zip under a key named by its SHA-256 (same code, same key, no update).
``call_api`` sends a SigV4-signed request (service ``execute-api``) to the IAM-authorised API;
``smoke_test`` uses it to send held-out cases of the deployed version's dataset to staging.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from qcbr.errors import ConfigError, NotFoundError, StateError
from qcbr.lifecycle.aws.clients import translate
from qcbr.storage import atomic_write_json

STAGE_FILES = {"staging": "staging-config.json", "prod": "prod-config.json"}


def upload_lambda_zip(backend: Any) -> str:
    from qcbr.lifecycle.aws.lambda_zip import build

    package = build()
    key = f"lambda/qcbr-lambda-{package.sha256[:16]}.zip"
    if not backend.store.exists(key):
        backend.store.put(key, package.data)
    return key


def deploy_config(backend: Any, out_dir: str | os.PathLike, instance_type: str | None = None,
                  version: int | None = None) -> dict:
    """Write the two stages' parameter files for ``version`` (default: the latest Approved)."""
    config = backend.config
    record = backend.describe_model_version(version) if version else backend.latest_approved_version()
    if record is None:
        raise StateError(f"no Approved version in model package group {backend.project}; approve one with "
                         "`qcbr models approve VERSION` (that also starts the deploy pipeline)")
    if record["ModelApprovalStatus"] != "Approved":
        raise StateError(f"model version {record['ModelPackageVersion']} is {record['ModelApprovalStatus']}; "
                         "the pipeline deploys Approved versions only")
    if not config.aws_role_arn:
        raise ConfigError("set QCBR_AWS_ROLE_ARN (the project stack's SageMakerExecutionRoleArn output)")
    key = upload_lambda_zip(backend)
    out = Path(out_dir)
    written = {}
    for stage, filename in STAGE_FILES.items():
        parameters = {
            "ProjectName": backend.project,
            "Stage": stage,
            "ModelPackageArn": record["ModelPackageArn"],
            "ModelVersion": str(record["ModelPackageVersion"]),
            "ExecutionRoleArn": config.aws_role_arn,
            "BucketName": config.bucket,
            "LambdaCodeKey": key,
            "TrainingImageUri": record.get("Image") or config.aws_image_uri or "",
            "TrainingInstanceType": config.aws_instance_type,
            "InstanceType": instance_type or config.aws_instance_type,
        }
        document = {"Parameters": parameters,
                    "Tags": {"qcbr:project": backend.project, "qcbr:stage": stage,
                             "qcbr:model-version": str(record["ModelPackageVersion"])}}
        atomic_write_json(out / filename, document)
        written[stage] = str(out / filename)
    return {"ModelPackageVersion": record["ModelPackageVersion"], "ModelPackageArn": record["ModelPackageArn"],
            "LambdaCodeKey": key, "Files": written}


def call_api(url: str, body: Any, region: str, content_type: str = "application/json",
             session: Any = None, timeout: float = 60.0) -> tuple[int, dict]:
    """POST a SigV4-signed request (service execute-api) and return (status, JSON body)."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    credentials = (session or boto3.session.Session()).get_credentials()
    if credentials is None:
        raise ConfigError("no AWS credentials to sign the API call: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                          "AWS_SECRET_ACCESS_KEY; the caller needs execute-api:Invoke on the API")
    request = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": content_type})
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
    prepared = urllib.request.Request(url, data=data, method="POST", headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise StateError(f"cannot reach {url}: {exc.reason}") from None
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, {"error": raw[:300].decode("utf-8", "replace")}


def stack_outputs(backend: Any, stack: str) -> dict[str, str]:
    with translate(f"reading stack {stack}", not_found=f"no CloudFormation stack {stack}; has the deploy run?"):
        stacks = backend.clients.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    if not stacks:
        raise NotFoundError(f"no CloudFormation stack {stack}")
    described = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    outputs.update({f"param:{p['ParameterKey']}": p.get("ParameterValue", "") for p in described.get("Parameters", [])})
    return outputs


def smoke_test(backend: Any, stack: str, rows: int = 3) -> dict:
    """Send ``rows`` cases of the deployed version's dataset to the stack's API; raise unless all answer."""
    outputs = stack_outputs(backend, stack)
    url = outputs.get("ApiUrl")
    if not url:
        raise StateError(f"stack {stack} has no ApiUrl output; is it an endpoint stack?")
    version = int(outputs.get("param:ModelVersion") or 0)
    record = backend.describe_model_version(version)
    lineage = record["Lineage"]
    cases = backend.load_dataset(lineage["DatasetName"], lineage["DatasetSha256"])
    sample = cases.features.head(rows)
    instances = json.loads(sample.to_json(orient="records"))
    status, answer = call_api(url.rstrip("/") + "/predict", {"instances": instances}, backend.clients.region)
    if status != 200:
        raise StateError(f"staging API answered HTTP {status}: {answer.get('error') or answer}")
    predictions = answer.get("predictions") or []
    if len(predictions) != len(instances):
        raise StateError(f"staging API answered {len(predictions)} predictions for {len(instances)} cases")
    if str(answer.get("model_version")) != str(version):
        raise StateError(f"staging serves model version {answer.get('model_version')}, expected {version}")
    return {"Stack": stack, "ApiUrl": url, "ModelPackageVersion": version, "Cases": len(instances),
            "Labels": [p.get("label") for p in predictions]}
