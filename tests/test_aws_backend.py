"""AwsBackend against moto's server on 127.0.0.1: every call goes over HTTP to moto.

Where moto cannot stand in for SageMaker (it runs no training and serves no container), the
helpers in test_aws_helpers do what SageMaker would, with the project's own container
entrypoint, and say so; calls moto lacks (StopTrainingJob, UpdateEndpoint) go through botocore's
Stubber with the exact request asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from qcbr.errors import ConfigError, InputError, NotFoundError, RoleError, StateError
from qcbr.roles import Actor
from tests.test_aws_helpers import (FAST_HPS, IRIS_ROW, ROOT, ServeContainer, aws_env, backend_for,  # noqa: F401
                                    client, complete_training_job, iris_case_base, moto_url,
                                    queue_endpoint_answer, s3_json, s3_keys)

DS = Actor("dana", "data_scientist")
MANAGER = Actor("maria", "manager")
BUSINESS = Actor("bob", "business")

JOB_KEYS = {"TrainingJobName", "TrainingJobArn", "TrainingJobStatus", "SecondaryStatus", "FailureReason",
            "HyperParameters", "InputDataConfig", "OutputDataConfig", "ModelArtifacts", "CreationTime",
            "TrainingStartTime", "TrainingEndTime", "FinalMetricDataList", "Progress", "Log", "Lineage", "CreatedBy"}
VERSION_KEYS = {"ModelPackageGroupName", "ModelPackageVersion", "ModelPackageArn", "ModelApprovalStatus",
                "ModelPackageDescription", "CreationTime", "CreatedBy", "ModelDataUrl", "ModelMetrics",
                "HyperParameters", "ApprovalHistory", "Lineage", "FeatureSchema"}
ENDPOINT_KEYS = {"EndpointName", "EndpointArn", "EndpointStatus", "Stage", "ModelPackageVersion", "EndpointUrl",
                 "CreationTime", "LastModifiedTime", "FailureReason", "CreatedBy", "ProductionVariants"}


def test_local_backend_imports_nothing_from_aws(tmp_path):
    """import qcbr + get_backend() on the local backend: no boto3, botocore or sagemaker in sys.modules."""
    code = (
        "import sys, qcbr\n"
        "from qcbr.lifecycle import get_backend\n"
        "b = get_backend()\n"
        "assert b.name == 'local', b.name\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'sagemaker', 's3transfer'))\n"
        "print(','.join(bad))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "QCBR_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_aws_backend_imports_boto3_only_when_used(tmp_path, aws_env):
    code = (
        "import sys\n"
        "from qcbr.lifecycle import get_backend\n"
        "b = get_backend()\n"
        "assert b.name == 'aws'\n"
        "print('boto3' in sys.modules)\n"
        "b.list_datasets()\n"
        "print('boto3' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=aws_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_clients_honour_aws_endpoint_url(aws_env):
    backend = backend_for(aws_env)
    assert backend.clients.s3.meta.endpoint_url == moto_url()
    assert backend.clients.sagemaker.meta.endpoint_url == moto_url()
    assert backend.clients.runtime.meta.endpoint_url == moto_url()


def test_endpoint_url_from_config_file_only(tmp_path, aws_env, monkeypatch):
    """A URL set only in the config file is passed explicitly; boto3 could not know it otherwise."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    env = {k: v for k, v in aws_env.items() if k != "AWS_ENDPOINT_URL"}
    config_file = tmp_path / "qcbr.toml"
    config_file.write_text(f'aws_endpoint_url = "{moto_url()}"\n')
    env["QCBR_CONFIG"] = str(config_file)
    monkeypatch.setenv("QCBR_CONFIG", str(config_file))
    backend = backend_for(env)
    assert backend.clients.sagemaker.meta.endpoint_url == moto_url()
    assert backend.list_datasets() == []  # it really talks to moto


def test_missing_bucket_is_a_config_error(aws_env):
    env = {k: v for k, v in aws_env.items() if k != "QCBR_AWS_BUCKET"}
    with pytest.raises(ConfigError, match="QCBR_AWS_BUCKET"):
        backend_for(env)


def test_no_credentials_says_how_to_fix(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backend = backend_for({k: v for k, v in aws_env.items() if not k.startswith("AWS_ACCESS")})
    with pytest.raises(ConfigError, match="no AWS credentials.*qcbr aws check"):
        backend.describe_training_job("anything")


# -- datasets ---------------------------------------------------------------------------------------
def test_dataset_upload_uses_the_local_keys(aws_env):
    backend = backend_for(aws_env)
    bucket = aws_env["QCBR_AWS_BUCKET"]
    cases = iris_case_base()
    with pytest.raises(RoleError):
        backend.upload_dataset(BUSINESS, cases, "iris")
    assert s3_keys(bucket, "datasets/") == []

    record = backend.upload_dataset(DS, cases, "iris")
    prefix = f"datasets/iris/{cases.sha256}/"
    assert sorted(s3_keys(bucket, "datasets/")) == [prefix + "cases.parquet", prefix + "meta.json", prefix + "schema.json"]
    assert record["Created"] is True
    assert record["S3Uri"] == f"s3://{bucket}/{prefix}"
    assert record["Rows"] == 150 and record["Label"] == "species" and record["CreatedBy"] == "dana"
    assert s3_json(bucket, prefix + "schema.json") == json.loads(json.dumps(cases.schema, default=str))

    again = backend.upload_dataset(DS, cases, "iris")
    assert again["Created"] is False and again["Sha256"] == record["Sha256"]
    assert [d["Sha256"] for d in backend.list_datasets()] == [cases.sha256]
    loaded = backend.load_dataset("iris")
    assert loaded.sha256 == cases.sha256
    with pytest.raises(NotFoundError, match="no dataset named 'nope'.*known datasets: iris"):
        backend.describe_dataset("nope")


# -- training jobs ----------------------------------------------------------------------------------
def _uploaded(backend):
    return backend.upload_dataset(DS, iris_case_base(), "iris")


def test_create_training_job_sends_the_sagemaker_request(aws_env):
    backend = backend_for(aws_env)
    dataset = _uploaded(backend)
    record = backend.create_training_job(DS, "iris", {"feature_map": "angle", "k": 5, "alpha": 1.0})
    name = record["TrainingJobName"]
    assert name.startswith(f"{aws_env['QCBR_PROJECT']}-iris-")
    assert JOB_KEYS <= set(record)

    raw = client("sagemaker").describe_training_job(TrainingJobName=name)  # what moto received
    assert raw["AlgorithmSpecification"]["TrainingImage"] == aws_env["QCBR_AWS_IMAGE_URI"]
    assert raw["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert raw["RoleArn"] == aws_env["QCBR_AWS_ROLE_ARN"]
    assert raw["HyperParameters"] == {"feature_map": "angle", "k": "5", "alpha": "1.0"}
    channel = raw["InputDataConfig"][0]
    assert channel["ChannelName"] == "train"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == dataset["S3Uri"]
    assert channel["DataSource"]["S3DataSource"]["S3DataType"] == "S3Prefix"
    assert raw["OutputDataConfig"]["S3OutputPath"] == f"s3://{aws_env['QCBR_AWS_BUCKET']}/jobs"
    assert raw["ResourceConfig"]["InstanceType"] == "ml.m5.large"

    assert record["Lineage"] == {"DatasetName": "iris", "DatasetSha256": dataset["Sha256"], "MlflowRunId": None}
    assert record["CreatedBy"] == "dana"
    # moto completes jobs at once and reports where SageMaker would put the artifact
    assert record["TrainingJobStatus"] == "Completed"
    assert record["ModelArtifacts"]["S3ModelArtifacts"] == (
        f"s3://{aws_env['QCBR_AWS_BUCKET']}/jobs/{name}/output/model.tar.gz")
    assert record["Progress"] == {"Fraction": 1.0, "Message": "Completed"}
    assert record["Log"] == ""  # no CloudWatch log group yet


def test_training_job_refusals_happen_before_any_aws_call(aws_env):
    backend = backend_for(aws_env)
    _uploaded(backend)
    with pytest.raises(RoleError):
        backend.create_training_job(BUSINESS, "iris", {})
    with pytest.raises(StateError, match="unknown hyperparameter.*colour"):
        backend.create_training_job(DS, "iris", {"colour": "blue"})
    with pytest.raises(NotFoundError, match="no dataset named 'nope'"):
        backend.create_training_job(DS, "nope", {})
    env = {k: v for k, v in aws_env.items() if k != "QCBR_AWS_IMAGE_URI"}
    with pytest.raises(ConfigError, match="QCBR_AWS_IMAGE_URI"):
        backend_for(env).create_training_job(DS, "iris", {})
    assert client("sagemaker").list_training_jobs(NameContains=aws_env["QCBR_PROJECT"])["TrainingJobSummaries"] == []


def test_job_list_is_the_projects_and_log_comes_from_cloudwatch(aws_env):
    backend = backend_for(aws_env)
    _uploaded(backend)
    first = backend.create_training_job(DS, "iris", FAST_HPS, job_name=f"{aws_env['QCBR_PROJECT']}-one")
    # a job of someone else in the same account: not this project's
    client("sagemaker").create_training_job(
        TrainingJobName=f"{aws_env['QCBR_PROJECT']}-foreign", RoleArn=aws_env["QCBR_AWS_ROLE_ARN"],
        AlgorithmSpecification={"TrainingImage": aws_env["QCBR_AWS_IMAGE_URI"], "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": "s3://elsewhere/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60})
    names = [j["TrainingJobName"] for j in backend.list_training_jobs()]
    assert names == [first["TrainingJobName"]]
    assert backend.list_training_jobs()[0]["Log"] == ""

    complete_training_job(first["TrainingJobName"])  # stand-in: SageMaker's container log in CloudWatch
    record = backend.describe_training_job(first["TrainingJobName"])
    assert "validation accuracy" in record["Log"]
    assert record["Log"].rstrip().endswith("done")
    with pytest.raises(NotFoundError, match="no training job named 'ghost'"):
        backend.describe_training_job("ghost")


def test_stop_training_job_request_is_exact(aws_env):
    """moto has no StopTrainingJob: botocore's Stubber checks the exact request and plays SageMaker."""
    from botocore.stub import Stubber

    backend = backend_for(aws_env)
    _uploaded(backend)
    name = backend.create_training_job(DS, "iris", FAST_HPS)["TrainingJobName"]
    with pytest.raises(StateError, match="is Completed; only an InProgress job can be stopped"):
        backend.stop_training_job(DS, name)  # moto's job is Completed

    raw = client("sagemaker").describe_training_job(TrainingJobName=name)
    now = datetime.now(timezone.utc)
    running = {**{k: v for k, v in raw.items() if k != "ResponseMetadata"}, "TrainingJobStatus": "InProgress",
               "SecondaryStatus": "Training", "ModelArtifacts": {"S3ModelArtifacts": ""},
               "SecondaryStatusTransitions": [{"Status": "Training", "StartTime": now,
                                               "StatusMessage": "Training image download completed."}]}
    stopping = {**running, "TrainingJobStatus": "Stopping", "SecondaryStatus": "Stopping"}
    sm = backend.clients.sagemaker
    with Stubber(sm) as stub:
        stub.add_response("describe_training_job", running, {"TrainingJobName": name})
        stub.add_response("stop_training_job", {}, {"TrainingJobName": name})
        stub.add_response("describe_training_job", stopping, {"TrainingJobName": name})
        with pytest.raises(RoleError):
            backend.stop_training_job(BUSINESS, name)
        record = backend.stop_training_job(DS, name)
        stub.assert_no_pending_responses()
    assert record["TrainingJobStatus"] == "Stopping"
    assert record["ModelArtifacts"] is None
    assert record["Progress"]["Fraction"] < 1.0


# -- registry ---------------------------------------------------------------------------------------
def _trained_job(backend, env) -> str:
    _uploaded(backend)
    name = backend.create_training_job(DS, "iris", FAST_HPS)["TrainingJobName"]
    complete_training_job(name)  # stand-in: the model.tar.gz SageMaker would have written
    return name


def test_register_approve_reject_and_latest_approved(aws_env):
    backend = backend_for(aws_env)
    bucket, project = aws_env["QCBR_AWS_BUCKET"], aws_env["QCBR_PROJECT"]
    job = _trained_job(backend, aws_env)
    assert backend.list_model_versions() == [] and backend.latest_approved_version() is None
    with pytest.raises(RoleError):
        backend.register_model(BUSINESS, job)
    with pytest.raises(StateError, match="below the required 0.9999"):
        backend.register_model(DS, job, min_accuracy=0.9999)

    v1 = backend.register_model(DS, job, description="first")
    assert VERSION_KEYS <= set(v1)
    assert v1["ModelPackageVersion"] == 1 and v1["ModelApprovalStatus"] == "PendingManualApproval"
    assert v1["ModelDataUrl"] == f"s3://{bucket}/jobs/{job}/output/model.tar.gz"
    assert v1["Lineage"]["TrainingJobName"] == job and v1["Lineage"]["DatasetName"] == "iris"
    assert v1["FeatureSchema"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert v1["FeatureSchema"]["label"] == "species"
    assert [f["name"] for f in v1["FeatureSchema"]["features"]] == list(IRIS_ROW)
    assert 0.8 < v1["ModelMetrics"]["validation:accuracy"] <= 1.0
    assert [h["Status"] for h in v1["ApprovalHistory"]] == ["PendingManualApproval"]

    raw = client("sagemaker").describe_model_package(ModelPackageName=v1["ModelPackageArn"])  # what moto received
    container = raw["InferenceSpecification"]["Containers"][0]
    assert container == {"Image": aws_env["QCBR_AWS_IMAGE_URI"], "ModelDataUrl": v1["ModelDataUrl"]}
    assert raw["ModelPackageGroupName"] == project
    assert raw["CustomerMetadataProperties"]["TrainingJobName"] == job
    assert raw["CustomerMetadataProperties"]["DatasetSha256"] == v1["Lineage"]["DatasetSha256"]
    metrics_uri = raw["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    assert metrics_uri == f"s3://{bucket}/registry/{project}/jobs/{job}/metrics.json"
    assert s3_json(bucket, metrics_uri.split(f"{bucket}/", 1)[1])["validation:accuracy"] == v1["ModelMetrics"]["validation:accuracy"]
    assert raw["ModelMetrics"]["ModelDataQuality"]["Constraints"]["S3Uri"].endswith("/constraints.json")

    assert backend.register_model(DS, job)["ModelPackageVersion"] == 1  # the same job twice: a no-op

    with pytest.raises(RoleError):
        backend.approve_model(DS, 1, "looks fine")
    approved = backend.approve_model(MANAGER, 1, "validated on Q3")
    assert approved["ModelApprovalStatus"] == "Approved"
    raw = client("sagemaker").describe_model_package(ModelPackageName=v1["ModelPackageArn"])
    assert raw["ModelApprovalStatus"] == "Approved"
    assert raw["ApprovalDescription"] == "Approved by maria: validated on Q3"
    assert raw["CustomerMetadataProperties"]["TrainingJobName"] == job  # lineage survives the update
    assert [(h["Status"], h["By"], h["Comment"]) for h in approved["ApprovalHistory"]] == [
        ("PendingManualApproval", "dana", f"registered from training job {job}"),
        ("Approved", "maria", "validated on Q3")]
    with pytest.raises(StateError, match="already Approved"):
        backend.approve_model(MANAGER, 1)

    job2 = backend.create_training_job(DS, "iris", FAST_HPS)["TrainingJobName"]
    complete_training_job(job2)
    v2 = backend.register_model(DS, job2)
    assert v2["ModelPackageVersion"] == 2
    rejected = backend.reject_model(MANAGER, 2, "drifts")
    assert rejected["ModelApprovalStatus"] == "Rejected"
    assert [v["ModelPackageVersion"] for v in backend.list_model_versions()] == [2, 1]

    calls = []
    backend.clients.sagemaker.meta.events.register(
        "provide-client-params.sagemaker.ListModelPackages", lambda params, **_: calls.append(dict(params)))
    latest = backend.latest_approved_version()
    assert latest["ModelPackageVersion"] == 1
    assert calls[-1]["SortOrder"] == "Descending" and calls[-1]["ModelApprovalStatus"] == "Approved"
    assert calls[-1]["ModelPackageGroupName"] == project

    audit = [e["action"] for e in backend.audit_log(limit=None)]
    for action in ("upload_dataset", "create_training_job", "register_model", "approve_model", "reject_model"):
        assert action in audit
    with pytest.raises(NotFoundError, match="no model version 9"):
        backend.describe_model_version(9)


# -- endpoints, invocation, predictions, ground truth -----------------------------------------------
def _registered(backend, env) -> dict:
    job = _trained_job(backend, env)
    return backend.register_model(DS, job)


def test_endpoints_deploy_with_data_capture_and_delete(aws_env):
    backend = backend_for(aws_env)
    bucket = aws_env["QCBR_AWS_BUCKET"]
    v1 = _registered(backend, aws_env)
    sm = client("sagemaker")
    with pytest.raises(StateError, match="only Approved versions go to prod"):
        backend.create_endpoint(MANAGER, "churn-prod", 1, stage="prod")
    with pytest.raises(RoleError):
        backend.create_endpoint(BUSINESS, "churn-staging", 1)

    staging = backend.create_endpoint(DS, "churn-staging", 1, stage="staging", wait=True)
    assert ENDPOINT_KEYS <= set(staging)
    assert staging["EndpointStatus"] == "InService" and staging["Stage"] == "staging"
    assert staging["ModelPackageVersion"] == 1 and staging["EndpointUrl"] is None
    raw = sm.describe_endpoint(EndpointName="churn-staging")
    config = sm.describe_endpoint_config(EndpointConfigName=raw["EndpointConfigName"])
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["DestinationS3Uri"] == f"s3://{bucket}/capture"
    assert capture["CaptureContentTypeHeader"] == {"JsonContentTypes": ["application/json"],
                                                   "CsvContentTypes": ["text/csv"]}
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    # a pending version is staged from the package's own container (SageMaker deploys packages once Approved)
    assert model["PrimaryContainer"]["Image"] == aws_env["QCBR_AWS_IMAGE_URI"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == v1["ModelDataUrl"]
    assert model["PrimaryContainer"]["Environment"]["QCBR_MODEL_VERSION"] == "1"
    assert backend.describe_model_version(1)["Lineage"]["Endpoints"] == ["churn-staging"]

    with pytest.raises(StateError, match="already exists"):
        backend.create_endpoint(DS, "churn-staging", 1)

    backend.approve_model(MANAGER, 1, "ok")
    prod = backend.create_endpoint(MANAGER, "churn-prod", 1, stage="prod")
    assert prod["Stage"] == "prod"
    prod_config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(EndpointName="churn-prod")["EndpointConfigName"])
    prod_model = sm.describe_model(ModelName=prod_config["ProductionVariants"][0]["ModelName"])
    assert prod_model["PrimaryContainer"]["ModelPackageName"] == v1["ModelPackageArn"]
    assert sorted(e["EndpointName"] for e in backend.list_endpoints()) == ["churn-prod", "churn-staging"]

    with pytest.raises(RoleError):
        backend.delete_endpoint(DS, "churn-prod")  # taking prod down is a manager's call
    backend.delete_endpoint(DS, "churn-staging")
    with pytest.raises(Exception, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName="churn-staging")
    with pytest.raises(Exception, match="Could not find"):
        sm.describe_endpoint_config(EndpointConfigName=raw["EndpointConfigName"])
    with pytest.raises(NotFoundError):
        backend.describe_endpoint("churn-staging")
    assert [e["EndpointName"] for e in backend.list_endpoints()] == ["churn-prod"]


def test_update_endpoint_is_blue_green_with_a_new_config(aws_env):
    """moto has no UpdateEndpoint: the Stubber asserts the exact request; the new config is real in moto."""
    from botocore.stub import ANY, Stubber

    backend = backend_for(aws_env)
    _registered(backend, aws_env)
    backend.create_endpoint(DS, "blue", 1)
    job2 = backend.create_training_job(DS, "iris", FAST_HPS)["TrainingJobName"]
    complete_training_job(job2)
    v2 = backend.register_model(DS, job2)
    backend.approve_model(MANAGER, 2)

    moto_sm = backend.clients.sagemaker
    stubbed = client("sagemaker")
    seen = {}

    class Split:
        """SageMaker client: UpdateEndpoint to the stub, every other call to moto."""

        def __getattr__(self, name):
            return getattr(moto_sm, name)

        def update_endpoint(self, **kwargs):
            seen.update(kwargs)
            return stubbed.update_endpoint(**kwargs)

    backend.clients._clients["sagemaker"] = Split()
    with Stubber(stubbed) as stub:
        stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/blue"}, {
            "EndpointName": "blue",
            "EndpointConfigName": ANY,
            "RetainAllVariantProperties": False,
            "DeploymentConfig": {"BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300},
                "TerminationWaitInSeconds": 120, "MaximumExecutionTimeoutInSeconds": 3600}},
        })
        with pytest.raises(RoleError):
            backend.update_endpoint(BUSINESS, "blue", 2)
        record = backend.update_endpoint(DS, "blue", 2)
        stub.assert_no_pending_responses()
    new_config = moto_sm.describe_endpoint_config(EndpointConfigName=seen["EndpointConfigName"])
    new_model = moto_sm.describe_model(ModelName=new_config["ProductionVariants"][0]["ModelName"])
    assert new_model["PrimaryContainer"]["ModelPackageName"] == v2["ModelPackageArn"]
    assert new_config["DataCaptureConfig"]["CaptureContentTypeHeader"]["JsonContentTypes"] == ["application/json"]
    assert record["ModelPackageVersion"] == 2
    assert backend.describe_model_version(2)["Lineage"]["Endpoints"] == ["blue"]


def test_invoke_stores_predictions_and_ground_truth(aws_env, tmp_path):
    backend = backend_for(aws_env)
    bucket = aws_env["QCBR_AWS_BUCKET"]
    v1 = _registered(backend, aws_env)
    backend.create_endpoint(DS, "live", 1)
    body = json.dumps({"instances": [IRIS_ROW, {**IRIS_ROW, "petal length (cm)": 5.5, "petal width (cm)": 2.1}]})

    # stand-in for the SageMaker endpoint: the real `serve` container answers; moto returns that answer
    tarball = client("s3").get_object(Bucket=bucket, Key=v1["ModelDataUrl"].split(f"{bucket}/", 1)[1])["Body"].read()
    server = ServeContainer(tarball, tmp_path, model_version="1", endpoint="live")
    try:
        status, answer = server.invoke(body.encode())
    finally:
        server.close()
    assert status == 200
    queue_endpoint_answer(answer)

    result = backend.invoke(BUSINESS, "live", body)
    assert result["endpoint"] == "live" and result["model_version"] == 1
    labels = [p["label"] for p in result["predictions"]]
    assert labels == ["setosa", "virginica"]
    base = result["inference_id"]
    assert [p["inference_id"] for p in result["predictions"]] == [f"{base}-0", f"{base}-1"]

    day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    key = f"predictions/{day}/{base}.json"
    assert s3_keys(bucket, "predictions/") == [key]
    stored = s3_json(bucket, key)
    assert stored["user"] == "bob" and stored["model_version"] == 1 and stored["endpoint"] == "live"
    assert stored["request"] == json.loads(body)["instances"]
    assert backend.list_predictions(endpoint="live")[0]["inference_id"] == base
    assert backend.list_predictions(user="someone-else") == []

    with pytest.raises(InputError, match="not a class"):
        backend.submit_ground_truth(BUSINESS, f"{base}-1", "dragon")
    with pytest.raises(NotFoundError):
        backend.submit_ground_truth(BUSINESS, "no-such-id", "setosa")
    truth = backend.submit_ground_truth(BUSINESS, f"{base}-1", "versicolor")
    assert truth == {"groundTruthData": {"data": "versicolor", "encoding": "CSV"},
                     "eventMetadata": {"eventId": f"{base}-1"}, "eventVersion": "0"}
    gt_keys = s3_keys(bucket, "ground-truth/")
    assert len(gt_keys) == 1 and gt_keys[0].endswith(f"/{base}-1.jsonl")
    assert gt_keys[0].startswith(f"ground-truth/{day}/")
    listed = backend.list_ground_truth(endpoint="live")
    assert [(g["inference_id"], g["label"], g["predicted_label"]) for g in listed] == [
        (f"{base}-1", "versicolor", "virginica")]


def test_invoke_errors_map_to_qcbr_errors(aws_env):
    backend = backend_for(aws_env)
    _registered(backend, aws_env)
    backend.create_endpoint(DS, "odd", 1)
    queue_endpoint_answer("not json at all", "text/plain")  # stand-in: a broken container
    with pytest.raises(StateError, match="HTTP 502"):
        backend.invoke(BUSINESS, "odd", {"instances": [IRIS_ROW]})
    with pytest.raises(InputError, match="empty request body|no instances"):
        backend.invoke(BUSINESS, "odd", {"instances": []})
    with pytest.raises(NotFoundError, match="no endpoint named 'ghost'"):
        backend.invoke(BUSINESS, "ghost", {"instances": [IRIS_ROW]})
    assert s3_keys(aws_env["QCBR_AWS_BUCKET"], "predictions/") == []


def test_restart_recreates_a_vanished_endpoint(aws_env):
    backend = backend_for(aws_env)
    _registered(backend, aws_env)
    backend.create_endpoint(DS, "phoenix", 1)
    client("sagemaker").delete_endpoint(EndpointName="phoenix")  # deleted outside qcbr
    gone = backend.describe_endpoint("phoenix")
    assert gone["EndpointStatus"] == "Failed" and "no longer exists" in gone["FailureReason"]
    back = backend.restart_endpoint(DS, "phoenix")
    assert back["EndpointStatus"] == "InService"
    assert client("sagemaker").describe_endpoint(EndpointName="phoenix")["EndpointStatus"] == "InService"


# -- the protocol and the monitoring scheduler --------------------------------------------------------
def test_both_backends_satisfy_the_backend_protocol(aws_env, tmp_path):
    from qcbr.config import load_config
    from qcbr.lifecycle.base import Backend
    from qcbr.lifecycle.local import LocalBackend

    assert isinstance(backend_for(aws_env), Backend)
    assert isinstance(LocalBackend(load_config(env={"QCBR_HOME": str(tmp_path / "home")})), Backend)


def _monitoring_rule(name: str, expression: str = "rate(1 hour)", state: str = "ENABLED") -> None:
    """As the endpoint stack's MonitoringSchedule (infra/cloudformation/endpoint.yaml) creates it."""
    client("events").put_rule(Name=name, ScheduleExpression=expression, State=state,
                              Description="Runs qcbr's monitoring job on this endpoint's data capture.")


def test_monitoring_scheduler_is_the_endpoint_stacks_eventbridge_rules(aws_env):
    backend = backend_for(aws_env)
    project = aws_env["QCBR_PROJECT"]
    with pytest.raises(StateError, match=f"project {project} has no monitoring rules.*endpoint.yaml"):
        backend.start_monitoring_scheduler(MANAGER)
    assert backend.monitoring_scheduler_status()["running"] is False

    _monitoring_rule(f"{project}-staging-monitoring", "rate(30 minutes)")
    _monitoring_rule(f"{project}-prod-monitoring", "rate(1 hour)", state="DISABLED")
    _monitoring_rule(f"{project}-model-approved", "rate(5 minutes)")  # the project's, not monitoring
    _monitoring_rule(f"other{project}-staging-monitoring")  # another project's
    status = backend.monitoring_scheduler_status()
    assert status["running"] is True and status["pid"] is None and status["every_minutes"] == 30.0
    assert [(r["Name"], r["State"], r["Endpoint"], r["Stage"], r["EveryMinutes"]) for r in status["rules"]] == [
        (f"{project}-prod-monitoring", "DISABLED", f"{project}-prod", "prod", 60.0),
        (f"{project}-staging-monitoring", "ENABLED", f"{project}-staging", "staging", 30.0)]
    assert f"/aws/lambda/{project}-staging-monitoring" in status["log"]

    with pytest.raises(RoleError):
        backend.stop_monitoring_scheduler(BUSINESS)
    stopped = backend.stop_monitoring_scheduler(MANAGER)
    events = client("events")
    assert {events.describe_rule(Name=f"{project}-{s}-monitoring")["State"] for s in ("staging", "prod")} == {"DISABLED"}
    assert stopped["running"] is False and stopped["every_minutes"] == 30.0  # the rules' own schedule
    assert events.describe_rule(Name=f"{project}-model-approved")["State"] == "ENABLED"
    assert events.describe_rule(Name=f"other{project}-staging-monitoring")["State"] == "ENABLED"

    started = backend.start_monitoring_scheduler(DS, every_minutes=5)
    assert {events.describe_rule(Name=f"{project}-{s}-monitoring")["State"] for s in ("staging", "prod")} == {"ENABLED"}
    assert started["running"] is True and started == backend.monitoring_scheduler_status()
    (start,) = backend.audit_log(1, "start_monitoring_scheduler")
    assert start["user"] == "dana" and start["details"]["rules"] == [f"{project}-prod-monitoring",
                                                                      f"{project}-staging-monitoring"]
    assert backend.audit_log(1, "stop_monitoring_scheduler")[0]["user"] == "maria"
