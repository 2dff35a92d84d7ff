"""The CloudFormation templates: cfn-lint clean, least privilege, the pipeline's shape, and the
endpoint stack actually created (CREATE_COMPLETE) in moto's CloudFormation on 127.0.0.1.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qcbr.errors import StateError
from qcbr.roles import Actor
from tests.test_aws_helpers import (FAST_HPS, IRIS_ROW, ROOT, aws_env, backend_for, client,  # noqa: F401
                                    complete_training_job, iris_case_base, queue_endpoint_answer, run_cli, s3_keys)

TEMPLATES = sorted((ROOT / "infra" / "cloudformation").glob("*.yaml"))
CFN_LINT = [str(Path(sys.executable).parent / "cfn-lint")]  # the console script pip installed


def _load(path: Path) -> dict:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.loads(path.read_text(), str(path))


def _resources(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_every_template_passes_cfn_lint():
    assert {p.name for p in TEMPLATES} >= {"project.yaml", "endpoint.yaml"}
    done = subprocess.run([*CFN_LINT, "--format", "parseable", *map(str, TEMPLATES)], capture_output=True,
                          text=True, timeout=300)
    errors = [line for line in done.stdout.splitlines() if re.search(r":E\d{4}:", line)]
    assert errors == [], done.stdout
    assert done.returncode & 3 == 0, done.stdout + done.stderr  # 1: cfn-lint failed to run, 2: errors


def test_cfn_lint_would_catch_a_broken_template(tmp_path):
    """The lint test is not vacuous: a bad attribute and runtime in a copy are errors."""
    broken = tmp_path / "endpoint.yaml"
    text = (ROOT / "infra" / "cloudformation" / "endpoint.yaml").read_text()
    broken.write_text(text.replace("!GetAtt Model.ModelName", "!GetAtt Model.ModelNickname", 1)
                      .replace("Runtime: python3.11", "Runtime: python2.9", 1))
    done = subprocess.run([*CFN_LINT, "--format", "parseable", str(broken)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode & 2
    assert "ModelNickname" in done.stdout and "python2.9" in done.stdout


def _statements(template: dict) -> list[tuple[str, dict]]:
    out = []
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        if res["Type"] == "AWS::S3::BucketPolicy":
            docs.append(props["PolicyDocument"])
        for doc in docs:
            out += [(name, st) for st in doc["Statement"]]
    return out


# actions that AWS only grants on "*" (no resource-level permissions)
STAR_OK = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "sagemaker:ListTrainingJobs",
           "sagemaker:ListModelPackages", "sagemaker:ListEndpoints"}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_iam_is_least_privilege(path):
    template = _load(path)
    statements = _statements(template)
    assert statements
    for owner, st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all("*" not in a for a in actions if st["Effect"] == "Allow"), (owner, actions)
        if st["Effect"] == "Allow" and st.get("Resource") == "*":
            assert set(actions) <= STAR_OK, (owner, actions)
        if "iam:PassRole" in actions and st.get("Resource") != {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${ProjectName}-*"}:
            assert "Condition" in st, f"{owner}: PassRole without iam:PassedToService"


def test_project_stack_resources():
    template = _load(ROOT / "infra" / "cloudformation" / "project.yaml")
    (bucket,) = _resources(template, "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert props["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                       "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    (policy,) = _resources(template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["PolicyDocument"]["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert _resources(template, "AWS::ECR::Repository")
    (group,) = _resources(template, "AWS::SageMaker::ModelPackageGroup").values()
    assert group["Properties"]["ModelPackageGroupName"] == {"Ref": "ProjectName"}

    (build,) = _resources(template, "AWS::CodeBuild::Project").values()
    assert build["Properties"]["Source"]["BuildSpec"] == "infra/buildspec.yml"
    assert (ROOT / "infra" / "buildspec.yml").is_file()
    assert build["Properties"]["Environment"]["PrivilegedMode"] is True  # docker build

    pipelines = _resources(template, "AWS::CodePipeline::Pipeline")
    deploy = pipelines["DeployPipeline"]["Properties"]["Stages"]
    assert [s["Name"] for s in deploy] == ["Source", "Build", "DeployStaging", "TestStaging", "ApproveProd", "DeployProd"]
    kinds = [s["Actions"][0]["ActionTypeId"]["Provider"] for s in deploy]
    assert kinds == ["CodeStarSourceConnection", "CodeBuild", "CloudFormation", "CodeBuild", "Manual", "CloudFormation"]
    for stage in (deploy[2], deploy[5]):
        config = stage["Actions"][0]["Configuration"]
        assert config["TemplatePath"] == "DeployArtifact::infra/cloudformation/endpoint.yaml"
    build_stages = pipelines["ModelBuildPipeline"]["Properties"]["Stages"]
    assert [s["Actions"][0]["ActionTypeId"]["Provider"] for s in build_stages] == ["CodeStarSourceConnection", "CodeBuild"]
    modes = {json.loads(a["Configuration"]["EnvironmentVariables"])[0]["value"]
             for p in pipelines.values() for s in p["Properties"]["Stages"] for a in s["Actions"]
             if "EnvironmentVariables" in a.get("Configuration", {})}
    assert modes == {"model", "deploy", "test"}

    (rule,) = _resources(template, "AWS::Events::Rule").values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["SageMaker Model Package State Change"]
    assert pattern["detail"]["ModelPackageGroupName"] == [{"Ref": "ProjectName"}]
    assert pattern["detail"]["ModelApprovalStatus"] == ["Approved"]
    assert "${DeployPipeline}" in rule["Properties"]["Targets"][0]["Arn"]["Fn::Sub"]


def test_endpoint_stack_wiring_matches_the_code():
    template = _load(ROOT / "infra" / "cloudformation" / "endpoint.yaml")
    (config,) = _resources(template, "AWS::SageMaker::EndpointConfig").values()
    capture = config["Properties"]["DataCaptureConfig"]
    assert capture["CaptureContentTypeHeader"] == {"JsonContentTypes": ["application/json"], "CsvContentTypes": ["text/csv"]}
    assert capture["DestinationS3Uri"] == {"Fn::Sub": "s3://${BucketName}/capture"}
    (model,) = _resources(template, "AWS::SageMaker::Model").values()
    assert model["Properties"]["PrimaryContainer"]["ModelPackageName"] == {"Ref": "ModelPackageArn"}
    methods = _resources(template, "AWS::ApiGateway::Method")
    assert {m["Properties"]["AuthorizationType"] for m in methods.values()} == {"AWS_IAM"}
    functions = _resources(template, "AWS::Lambda::Function")
    handlers = {f["Properties"]["Handler"] for f in functions.values()}
    from qcbr.lifecycle.aws.lambda_zip import HANDLERS

    assert handlers == {"qcbr.serving.lambda_function.handler", "qcbr.serving.start_training.handler",
                        "qcbr.lifecycle.aws.monitoring_schedule.handler"} == {f"{m}.handler" for m in HANDLERS}
    (schedule,) = _resources(template, "AWS::Events::Rule").values()
    assert schedule["Properties"]["ScheduleExpression"] == {"Ref": "MonitoringScheduleExpression"}
    assert schedule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["MonitorFunction", "Arn"]}
    monitor_env = functions["MonitorFunction"]["Properties"]["Environment"]["Variables"]
    from qcbr.lifecycle.aws.monitoring_schedule import REQUIRED

    assert set(REQUIRED) <= set(monitor_env)
    import importlib

    for handler in handlers:
        module, _, attr = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr))
    predict_env = functions["PredictFunction"]["Properties"]["Environment"]["Variables"]
    source = (ROOT / "qcbr" / "serving" / "lambda_function.py").read_text()
    for name in ("ENDPOINT_NAME", "PREDICTIONS_BUCKET"):  # what the handler reads
        assert name in predict_env and f'"{name}"' in source


@pytest.mark.slow
def test_endpoint_stack_reaches_create_complete_in_moto(aws_env, tmp_path):
    """deploy-config (as the deploy pipeline's build) -> CreateStack in moto -> CREATE_COMPLETE."""
    backend = backend_for(aws_env)
    bucket, project = aws_env["QCBR_AWS_BUCKET"], aws_env["QCBR_PROJECT"]
    ds, manager = Actor("d", "data_scientist"), Actor("m", "manager")
    backend.upload_dataset(ds, iris_case_base(), "iris")
    job = backend.create_training_job(ds, "iris", FAST_HPS)["TrainingJobName"]
    complete_training_job(job)  # stand-in for SageMaker's training (see test_aws_helpers)
    backend.register_model(ds, job)

    refused = run_cli(["aws", "deploy-config", "--out-dir", str(tmp_path)], aws_env)
    assert refused.returncode == 1 and "no Approved version" in refused.stderr
    backend.approve_model(manager, 1, "ok")
    done = run_cli(["aws", "deploy-config", "--out-dir", str(tmp_path), "--json"], aws_env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    staging = json.loads((tmp_path / "staging-config.json").read_text())
    prod = json.loads((tmp_path / "prod-config.json").read_text())
    assert {k: v for k, v in staging["Parameters"].items() if k != "Stage"} == {
        k: v for k, v in prod["Parameters"].items() if k != "Stage"}
    params = staging["Parameters"]
    assert params["ModelPackageArn"] == backend.describe_model_version(1)["ModelPackageArn"]
    assert params["LambdaCodeKey"] == result["LambdaCodeKey"] and params["LambdaCodeKey"] in s3_keys(bucket, "lambda/")

    cf = client("cloudformation")
    stack = f"{project}-staging"
    cf.create_stack(StackName=stack, TemplateBody=(ROOT / "infra" / "cloudformation" / "endpoint.yaml").read_text(),
                    Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
                    Capabilities=["CAPABILITY_IAM"])
    described = cf.describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    resources = {r["LogicalResourceId"]: r for r in cf.list_stack_resources(StackName=stack)["StackResourceSummaries"]}
    template = _load(ROOT / "infra" / "cloudformation" / "endpoint.yaml")
    assert set(resources) == set(template["Resources"])
    assert {r["ResourceStatus"] for r in resources.values()} == {"CREATE_COMPLETE"}

    sm = client("sagemaker")
    endpoint_name = resources["Endpoint"]["PhysicalResourceId"].rsplit("/", 1)[-1]
    endpoint = sm.describe_endpoint(EndpointName=endpoint_name)
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert config["DataCaptureConfig"]["CaptureContentTypeHeader"]["CsvContentTypes"] == ["text/csv"]
    assert config["DataCaptureConfig"]["DestinationS3Uri"] == f"s3://{bucket}/capture"
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["PrimaryContainer"]["ModelPackageName"] == params["ModelPackageArn"]
    lam = client("lambda")
    predict = lam.get_function(FunctionName=f"{project}-staging-predict")["Configuration"]
    assert predict["Handler"] == "qcbr.serving.lambda_function.handler"
    assert predict["Environment"]["Variables"]["PREDICTIONS_BUCKET"] == bucket
    train = lam.get_function(FunctionName=f"{project}-staging-start-training")["Configuration"]
    assert train["Handler"] == "qcbr.serving.start_training.handler"
    assert train["Environment"]["Variables"]["QCBR_AWS_ROLE_ARN"] == aws_env["QCBR_AWS_ROLE_ARN"]
    events = client("events")
    rule = events.describe_rule(Name=f"{project}-staging-monitoring")
    assert rule["ScheduleExpression"] == "rate(1 hour)" and rule["State"] == "ENABLED"
    monitor = lam.get_function(FunctionName=f"{project}-staging-monitoring")["Configuration"]
    assert monitor["Handler"] == "qcbr.lifecycle.aws.monitoring_schedule.handler"
    assert events.list_targets_by_rule(Rule=f"{project}-staging-monitoring")["Targets"][0]["Arn"] == monitor["FunctionArn"]
    # the backend's monitoring scheduler is this rule (and every other stage's)
    scheduler = backend.monitoring_scheduler_status()
    assert [(r["Name"], r["Endpoint"], r["State"]) for r in scheduler["rules"]] == [
        (f"{project}-staging-monitoring", f"{project}-staging", "ENABLED")]
    assert scheduler["running"] is True and scheduler["every_minutes"] == 60.0
    api = client("apigateway")
    api_id = resources["Api"]["PhysicalResourceId"]
    paths = {r["path"]: r for r in api.get_resources(restApiId=api_id)["items"]}
    assert {"/predict", "/train"} <= set(paths)
    for path in ("/predict", "/train"):
        method = api.get_method(restApiId=api_id, resourceId=paths[path]["id"], httpMethod="POST")
        assert method["authorizationType"] == "AWS_IAM"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    assert outputs["ApiUrl"] == f"https://{api_id}.execute-api.us-east-1.amazonaws.com/staging"

    # the pipeline's endpoint is visible to the CLI/dashboard, answers, and is read-only there
    listed = {e["EndpointName"]: e for e in backend.list_endpoints()}
    assert listed[endpoint_name]["Stage"] == "staging" and listed[endpoint_name]["ModelPackageVersion"] == 1
    assert backend.describe_model_version(1)["Lineage"]["Endpoints"] == [endpoint_name]
    answer = {"model_version": 1, "predictions": [{"label": "setosa", "confidence": 1.0, "flagged": False,
                                                   "probabilities": {"setosa": 1.0}, "similar_cases": []}]}
    queue_endpoint_answer(json.dumps(answer))  # stand-in: moto serves no container
    assert backend.invoke(Actor("b", "business"), endpoint_name, {"instances": [IRIS_ROW]})["predictions"][0]["label"] == "setosa"
    with pytest.raises(StateError, match="managed by the deploy pipeline"):
        backend.delete_endpoint(manager, endpoint_name)
