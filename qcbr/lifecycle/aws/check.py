"""``qcbr aws check``: is this machine set up to drive the project on AWS, and if not, what to set.

Each check is one line of a checklist with the setting's environment name and the exact fix,
so a user can go from "nothing works" to a working configuration without reading code. The
checks call AWS read-only (STS, S3 HeadBucket, IAM GetRole, ECR DescribeImages, SageMaker
DescribeModelPackageGroup) and honour AWS_ENDPOINT_URL like every other call.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote

OK, MISSING, FAIL, INFO = "ok", "MISSING", "FAIL", "info"
IMAGE_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[A-Za-z0-9._-]+)|@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/(?:(?P<path>[\w+=,.@/-]*)/)?(?P<name>[\w+=,.@-]+)$")
INSTANCE_RE = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")


@dataclass
class Item:
    name: str
    status: str  # ok | MISSING | FAIL | info
    setting: str  # the env var (or resource) this line is about
    detail: str  # what was found, or exactly how to fix it

    @property
    def problem(self) -> bool:
        return self.status in (MISSING, FAIL)


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""


def run_checks(env: dict[str, str] | None = None) -> list[Item]:
    from qcbr.config import load_config
    from qcbr.errors import ConfigError

    env = dict(os.environ if env is None else env)
    items: list[Item] = []
    try:
        backend = load_config(env).backend
        # the AWS settings as the aws backend would read them, whichever backend is active now
        config = load_config({**env, "QCBR_BACKEND": "aws"})
    except ConfigError as exc:
        return [Item("config", FAIL, "QCBR_CONFIG / QCBR_*", str(exc))]

    # -- settings that need no AWS call --------------------------------------------------------
    if backend == "aws":
        items.append(Item("backend", OK, "QCBR_BACKEND", "aws"))
    else:
        items.append(Item("backend", MISSING, "QCBR_BACKEND",
                          f"is {backend!r}: export QCBR_BACKEND=aws (or backend = \"aws\" in the config file)"))
    project_set = bool(env.get("QCBR_PROJECT"))
    items.append(Item("project", OK, "QCBR_PROJECT",
                      f"{config.project}" + ("" if project_set else " (the default; export QCBR_PROJECT=<name> "
                                                                    "to match your project stack's ProjectName)")))
    region = config.aws_region
    if region:
        items.append(Item("region", OK, "AWS_DEFAULT_REGION", region))
    else:
        items.append(Item("region", MISSING, "AWS_DEFAULT_REGION",
                          "no region: export AWS_DEFAULT_REGION=<region> (e.g. eu-west-1), the region of your project stack"))
    if config.aws_endpoint_url:
        items.append(Item("endpoint url", INFO, "AWS_ENDPOINT_URL",
                          f"{config.aws_endpoint_url} (every AWS call goes there instead of AWS; unset it for real AWS)"))
    else:
        items.append(Item("endpoint url", INFO, "AWS_ENDPOINT_URL",
                          "not set: calls go to AWS (set it only to use another endpoint, e.g. moto's server)"))
    instance = config.aws_instance_type
    if INSTANCE_RE.match(instance or ""):
        items.append(Item("instance type", OK, "QCBR_AWS_INSTANCE_TYPE", instance))
    else:
        items.append(Item("instance type", FAIL, "QCBR_AWS_INSTANCE_TYPE",
                          f"{instance!r} is not a SageMaker instance type; export QCBR_AWS_INSTANCE_TYPE=ml.m5.large"))
    from qcbr.lifecycle.aws.clients import AwsClients

    clients = AwsClients(config)

    # -- credentials ---------------------------------------------------------------------------
    account = None
    if not region:
        items.append(Item("credentials", FAIL, "AWS credentials", "not checked: set AWS_DEFAULT_REGION first"))
    else:
        try:
            who = clients.client("sts").get_caller_identity()
            account = who["Account"]
            items.append(Item("credentials", OK, "AWS credentials", f"account {account} as {who.get('Arn')}"))
        except Exception as exc:
            items.append(Item("credentials", FAIL, "AWS credentials",
                              f"{type(exc).__name__}: {exc}. Set AWS_PROFILE (after `aws configure` or `aws sso login`) "
                              "or AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)"))
    reachable = account is not None

    # -- bucket --------------------------------------------------------------------------------
    bucket = config.bucket
    if not bucket:
        items.append(Item("bucket", MISSING, "QCBR_AWS_BUCKET",
                          "export QCBR_AWS_BUCKET=<the project stack's BucketName output>"))
    elif not reachable:
        items.append(Item("bucket", FAIL, "QCBR_AWS_BUCKET", f"{bucket}: not checked (no region or no working credentials)"))
    else:
        try:
            clients.s3.head_bucket(Bucket=bucket)
            items.append(Item("bucket", OK, "QCBR_AWS_BUCKET", f"s3://{bucket}"))
        except Exception as exc:
            code = _code(exc)
            why = ("does not exist: deploy infra/cloudformation/project.yaml and use its BucketName output"
                   if code in ("404", "NoSuchBucket", "NotFound") else
                   "exists but these credentials may not use it (403): use the project's account/role"
                   if code in ("403", "AccessDenied") else f"{type(exc).__name__}: {exc}")
            items.append(Item("bucket", FAIL, "QCBR_AWS_BUCKET", f"s3://{bucket} {why}"))

    # -- role ----------------------------------------------------------------------------------
    role_arn = config.aws_role_arn
    match = ROLE_RE.match(role_arn or "")
    if not role_arn:
        items.append(Item("role", MISSING, "QCBR_AWS_ROLE_ARN",
                          "export QCBR_AWS_ROLE_ARN=<the project stack's SageMakerExecutionRoleArn output>"))
    elif not match:
        items.append(Item("role", FAIL, "QCBR_AWS_ROLE_ARN",
                          f"{role_arn!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"))
    elif not reachable:
        items.append(Item("role", FAIL, "QCBR_AWS_ROLE_ARN", f"{role_arn}: not checked (no region or no working credentials)"))
    else:
        try:
            role = clients.client("iam").get_role(RoleName=match.group("name"))["Role"]
            trust = role.get("AssumeRolePolicyDocument") or {}
            if isinstance(trust, str):
                trust = json.loads(unquote(trust))
            if "sagemaker.amazonaws.com" in json.dumps(trust):
                items.append(Item("role", OK, "QCBR_AWS_ROLE_ARN", role_arn))
            else:
                items.append(Item("role", FAIL, "QCBR_AWS_ROLE_ARN",
                                  f"{role_arn} exists but SageMaker may not assume it: its trust policy must allow "
                                  "the service principal sagemaker.amazonaws.com"))
        except Exception as exc:
            code = _code(exc)
            why = ("does not exist: use the project stack's SageMakerExecutionRoleArn output"
                   if code == "NoSuchEntity" else
                   "could not be read (iam:GetRole denied); SageMaker may still accept it"
                   if code in ("AccessDenied", "AccessDeniedException") else f"{type(exc).__name__}: {exc}")
            items.append(Item("role", FAIL, "QCBR_AWS_ROLE_ARN", f"{role_arn} {why}"))

    # -- image ---------------------------------------------------------------------------------
    image = config.aws_image_uri
    match = IMAGE_RE.match(image or "")
    if not image:
        items.append(Item("image", MISSING, "QCBR_AWS_IMAGE_URI",
                          "export QCBR_AWS_IMAGE_URI=<ImageRepositoryUri output>:<tag> after pushing the image "
                          "(docker build -f infra/docker/Dockerfile ...; docs/aws.md, step 3)"))
    elif not match:
        items.append(Item("image", FAIL, "QCBR_AWS_IMAGE_URI",
                          f"{image!r} is not an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>)"))
    elif not reachable:
        items.append(Item("image", FAIL, "QCBR_AWS_IMAGE_URI", f"{image}: not checked (no region or no working credentials)"))
    else:
        image_id = {"imageDigest": match.group("digest")} if match.group("digest") else {
            "imageTag": match.group("tag") or "latest"}
        try:
            found = clients.client("ecr").describe_images(
                registryId=match.group("account"), repositoryName=match.group("repo"), imageIds=[image_id])
            pushed = found.get("imageDetails", [{}])[0].get("imagePushedAt")
            items.append(Item("image", OK, "QCBR_AWS_IMAGE_URI", f"{image}" + (f" (pushed {pushed})" if pushed else "")))
        except Exception as exc:
            code = _code(exc)
            why = ("is not pushed: build and push it (docs/aws.md, step 3)" if code == "ImageNotFoundException" else
                   f"names repository {match.group('repo')!r}, which does not exist: deploy the project stack "
                   "(its ImageRepositoryUri output)" if code == "RepositoryNotFoundException" else
                   f"{type(exc).__name__}: {exc}")
            items.append(Item("image", FAIL, "QCBR_AWS_IMAGE_URI", f"{image} {why}"))

    # -- registry group (created on first registration; informational) -----------------------
    if reachable:
        try:
            clients.sagemaker.describe_model_package_group(ModelPackageGroupName=config.project)
            items.append(Item("model registry", OK, "QCBR_PROJECT", f"model package group {config.project}"))
        except Exception as exc:
            code, message = _code(exc), str(exc).lower()
            if code == "ValidationException" and ("not found" in message or "does not exist" in message):
                items.append(Item("model registry", INFO, "QCBR_PROJECT",
                                  f"no model package group {config.project} yet (the project stack or the first "
                                  "`qcbr models register` creates it)"))
            else:
                items.append(Item("model registry", FAIL, "QCBR_PROJECT", f"{type(exc).__name__}: {exc}"))
    return items


def render(items: list[Item]) -> str:
    width = max(len(i.name) for i in items)
    lines = ["qCBR Studio on AWS: configuration check"]
    for item in items:
        mark = f"[{item.status}]".ljust(9)
        lines.append(f"  {mark} {item.name.ljust(width)}  {item.setting}: {item.detail}")
    problems = [i for i in items if i.problem]
    if problems:
        lines.append(f"{len(problems)} problem(s): fix the MISSING/FAIL lines above (docs/aws.md walks through "
                     "each setting), then run `qcbr aws check` again.")
    else:
        lines.append("all set: the aws backend can train, register and deploy.")
    return "\n".join(lines)


def as_json(items: list[Item]) -> list[dict[str, Any]]:
    return [asdict(i) | {"problem": i.problem} for i in items]
