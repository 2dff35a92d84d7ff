"""SageMaker endpoints: Model -> EndpointConfig (with data capture) -> Endpoint, blue/green updates.

Every deployment creates a new SageMaker Model and EndpointConfig named after the endpoint, the
version and the time. Creating an endpoint points it at that config; updating sends
``UpdateEndpoint`` with the new config and a blue/green deployment policy, so SageMaker brings up
the new fleet, shifts all traffic at once when it is healthy, and rolls back on failure.
Approved versions are deployed from the model package itself (``ModelPackageName``), as SageMaker
requires; a pending version may go to staging only, deployed from the package's own container
(image + ``model.tar.gz``). What SageMaker does not keep (stage, version, who) is in
``endpoints/<name>.json`` in the bucket. The endpoints the deploy pipeline creates
(infra/cloudformation/endpoint.yaml) have no such record: they are found by their
``qcbr:project`` tag, read-only here (the pipeline owns them), so the CLI and the dashboard can
query and monitor staging and prod all the same.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from qcbr.errors import ConfigError, NotFoundError, StateError
from qcbr.lifecycle.aws.clients import AwsClients, is_not_found, translate
from qcbr.lifecycle.aws.records import append_audit, resource_name
from qcbr.lifecycle.checks import check_deployable, check_updatable, deploy_action, endpoint_exists, require_delete
from qcbr.lifecycle.records import check_name, get_json, iso, put_json, utcnow
from qcbr.roles import Actor, require

VARIANT = "AllTraffic"
ACTIVE = ("Creating", "Updating")
# SageMaker's endpoint statuses -> the protocol's five
STATUS_MAP = {
    "Creating": "Creating", "Updating": "Updating", "SystemUpdating": "Updating", "RollingBack": "Updating",
    "InService": "InService", "Deleting": "Deleting", "Failed": "Failed", "OutOfService": "Failed",
    "UpdateRollbackFailed": "Failed",
}
BLUE_GREEN = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300},
        "TerminationWaitInSeconds": 120,
        "MaximumExecutionTimeoutInSeconds": 3600,
    }
}


class Endpoints:
    def __init__(self, clients: AwsClients, store: Any, config: Any, model_version: Callable[[int], dict]):
        self.clients = clients
        self.store = store
        self.config = config
        self.model_version = model_version  # the registry's describe

    # -- records --------------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return f"endpoints/{name}.json"

    def _read(self, name: str) -> dict:
        check_name("endpoint", name)
        record = get_json(self.store, self._key(name), default=None) or self._discovered(name)
        if record is None:
            raise NotFoundError(f"no endpoint named {name!r} in project {self.config.project}; see `qcbr endpoints list`")
        return record

    def _discovered(self, name: str, raw: dict | None = None) -> dict | None:
        """A pipeline-deployed endpoint of this project (tag qcbr:project), as a read-only record."""
        sm = self.clients.sagemaker
        raw = raw or self._describe_sm(name)
        if raw is None:
            return None
        try:
            tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=raw["EndpointArn"]).get("Tags", [])}
            if tags.get("qcbr:project") != self.config.project or tags.get("qcbr:managed-by") == "qcbr":
                return None  # another project's, or one of ours whose record is gone (being deleted)
            config = sm.describe_endpoint_config(EndpointConfigName=raw["EndpointConfigName"])
            model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
        except Exception as exc:
            if is_not_found(exc):
                return None
            with translate(f"reading endpoint {name}"):
                raise
        version = (model.get("PrimaryContainer") or {}).get("Environment", {}).get("QCBR_MODEL_VERSION")
        stack = tags.get("aws:cloudformation:stack-name")
        return {
            "EndpointName": name, "EndpointArn": raw["EndpointArn"], "Stage": tags.get("qcbr:stage"),
            "ModelPackageVersion": int(version) if version and version.isdigit() else None,
            "EndpointConfigName": raw["EndpointConfigName"], "Models": [], "EndpointConfigs": [],
            "CreationTime": iso(raw.get("CreationTime")), "LastModifiedTime": iso(raw.get("LastModifiedTime")),
            "CreatedBy": f"cloudformation:{stack}" if stack else "deploy pipeline", "ManagedBy": stack or "deploy pipeline",
        }

    def _recorded_names(self) -> list[str]:
        out = []
        for key in self.store.list("endpoints/"):
            rest = key[len("endpoints/"):]
            if "/" not in rest and rest.endswith(".json"):
                out.append(rest[:-5])
        return out

    def _pipeline_names(self) -> list[str]:
        names: list[str] = []
        with translate("listing SageMaker endpoints"):
            paginator = self.clients.sagemaker.get_paginator("list_endpoints")
            for page in paginator.paginate(NameContains=self.config.project):
                names += [e["EndpointName"] for e in page.get("Endpoints", [])]
        return names

    def names(self) -> list[str]:
        recorded = set(self._recorded_names())
        try:
            pipeline = self._pipeline_names()
        except ConfigError:
            pipeline = []  # no sagemaker:ListEndpoints: this caller sees the endpoints qcbr recorded
        found = {n for n in pipeline if n not in recorded and self._discovered(n) is not None}
        return sorted(recorded | found)

    def version_map(self) -> dict[int, list[str]]:
        """model version -> the endpoints serving it (one pass over the project's endpoints)."""
        out: dict[int, list[str]] = {}
        for name in self.names():
            try:
                record = self._read(name)
            except NotFoundError:
                continue
            if record.get("ModelPackageVersion") is not None:
                out.setdefault(int(record["ModelPackageVersion"]), []).append(name)
        return out

    def endpoints_for_version(self, version: int) -> list[str]:
        return self.version_map().get(int(version), [])

    def _endpoint_tags(self, stage: str) -> list[dict]:
        return [{"Key": "qcbr:project", "Value": self.config.project}, {"Key": "qcbr:stage", "Value": stage},
                {"Key": "qcbr:managed-by", "Value": "qcbr"}]

    def _writable(self, record: dict) -> None:
        if record.get("ManagedBy"):
            raise StateError(
                f"endpoint {record['EndpointName']} is managed by the deploy pipeline ({record['ManagedBy']}); "
                "approve a version to redeploy it, or delete its CloudFormation stack to remove it"
            )

    # -- SageMaker resources --------------------------------------------------------------------
    def _container(self, version: dict, endpoint: str) -> dict:
        env = {"QCBR_MODEL_VERSION": str(version["ModelPackageVersion"]), "QCBR_ENDPOINT_NAME": endpoint}
        if version["ModelApprovalStatus"] == "Approved":
            return {"ModelPackageName": version["ModelPackageArn"], "Environment": env}
        # SageMaker deploys a versioned package only once Approved; staging a pending one runs
        # the package's own container and artifact
        return {"Image": version["Image"], "ModelDataUrl": version["ModelDataUrl"], "Environment": env}

    def _create_config(self, name: str, version: dict, stage: str) -> tuple[str, str]:
        number = version["ModelPackageVersion"]
        model_name = resource_name(name, f"v{number}")
        config_name = model_name
        tags = [{"Key": "qcbr:project", "Value": self.config.project}, {"Key": "qcbr:stage", "Value": stage},
                {"Key": "qcbr:endpoint", "Value": name}, {"Key": "qcbr:model-version", "Value": str(number)}]
        sm = self.clients.sagemaker
        with translate(f"creating SageMaker model {model_name}"):
            sm.create_model(ModelName=model_name, ExecutionRoleArn=self._role(),
                            PrimaryContainer=self._container(version, name), Tags=tags)
        with translate(f"creating endpoint config {config_name}"):
            sm.create_endpoint_config(
                EndpointConfigName=config_name,
                ProductionVariants=[{
                    "VariantName": VARIANT, "ModelName": model_name, "InitialInstanceCount": 1,
                    "InstanceType": self._instance_type(), "InitialVariantWeight": 1.0,
                }],
                DataCaptureConfig={
                    "EnableCapture": True,
                    "InitialSamplingPercentage": 100,
                    "DestinationS3Uri": self.store.uri("capture"),
                    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                    # named content types are captured as text, not base64
                    "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"],
                                                 "CsvContentTypes": ["text/csv"]},
                },
                Tags=tags,
            )
        return model_name, config_name

    def _role(self) -> str:
        if not self.config.aws_role_arn:
            raise ConfigError("set QCBR_AWS_ROLE_ARN (the SageMaker execution role); run `qcbr aws check`")
        return self.config.aws_role_arn

    def _instance_type(self) -> str:
        import os

        return os.environ.get("QCBR_ENDPOINT_INSTANCE_TYPE") or self.config.aws_instance_type

    def _describe_sm(self, name: str) -> dict | None:
        try:
            return self.clients.sagemaker.describe_endpoint(EndpointName=name)
        except Exception as exc:
            if is_not_found(exc):
                return None
            with translate(f"describing endpoint {name}"):
                raise

    # -- read -----------------------------------------------------------------------------------
    def _public(self, record: dict, raw: dict | None) -> dict:
        if raw is None:
            status = "Deleting" if record.get("EndpointStatus") == "Deleting" else "Failed"
            reason = None if status == "Deleting" else "the SageMaker endpoint no longer exists (deleted outside qcbr?); restart it"
            variants = [{"VariantName": VARIANT, "ModelPackageVersion": record.get("ModelPackageVersion"),
                         "CurrentInstanceCount": 0, "DesiredInstanceCount": 1}]
        else:
            status = STATUS_MAP.get(raw.get("EndpointStatus"), "Failed")
            reason = raw.get("FailureReason")
            variants = [{
                "VariantName": v.get("VariantName", VARIANT),
                "ModelPackageVersion": record.get("ModelPackageVersion"),
                "CurrentInstanceCount": v.get("CurrentInstanceCount", 0),
                "DesiredInstanceCount": v.get("DesiredInstanceCount", 1),
            } for v in raw.get("ProductionVariants") or []] or [
                {"VariantName": VARIANT, "ModelPackageVersion": record.get("ModelPackageVersion"),
                 "CurrentInstanceCount": 0, "DesiredInstanceCount": 1}]
        return {
            "EndpointName": record["EndpointName"],
            "EndpointArn": (raw or {}).get("EndpointArn") or record.get("EndpointArn"),
            "EndpointStatus": status,
            "Stage": record["Stage"],
            "ModelPackageVersion": record.get("ModelPackageVersion"),
            "EndpointUrl": None,
            "EndpointConfigName": (raw or {}).get("EndpointConfigName") or record.get("EndpointConfigName"),
            "CreationTime": record.get("CreationTime"),
            "LastModifiedTime": iso((raw or {}).get("LastModifiedTime")) or record.get("LastModifiedTime"),
            "FailureReason": reason,
            "CreatedBy": record.get("CreatedBy"),
            "ManagedBy": record.get("ManagedBy"),
            "ProductionVariants": variants,
            "DataCaptureConfig": {"EnableCapture": True, "DestinationS3Uri": self.store.uri("capture"),
                                  "InitialSamplingPercentage": 100},
        }

    def describe(self, name: str) -> dict:
        record = self._read(name)
        return self._public(record, self._describe_sm(name))

    def list(self) -> list[dict]:
        names = self.names()
        if not names:
            return []

        def one(name: str) -> dict | None:
            try:
                return self.describe(name)
            except NotFoundError:
                return None

        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            return [r for r in pool.map(one, names) if r is not None]

    def wait(self, name: str, timeout: float = 1800.0, poll: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            record = self.describe(name)
            if record["EndpointStatus"] not in ACTIVE or time.monotonic() >= deadline:
                return record
            time.sleep(poll)

    # -- operations -----------------------------------------------------------------------------
    def create(self, actor: Actor, name: str, model_version: int, stage: str = "staging", wait: bool = False) -> dict:
        require(actor, deploy_action(stage))
        check_name("endpoint", name)
        version = self.model_version(int(model_version))
        check_deployable(version, stage)
        existing = get_json(self.store, self._key(name), default=None)
        raw = self._describe_sm(name)
        if existing or raw:
            what = (f"{STATUS_MAP.get(raw['EndpointStatus'], raw['EndpointStatus'])}" if raw else "recorded")
            raise endpoint_exists(name, what, (existing or {}).get("ModelPackageVersion"), version["ModelPackageVersion"])
        model_name, config_name = self._create_config(name, version, stage)
        with translate(f"creating endpoint {name}"):
            arn = self.clients.sagemaker.create_endpoint(
                EndpointName=name, EndpointConfigName=config_name, Tags=self._endpoint_tags(stage),
            )["EndpointArn"]
        now = utcnow()
        put_json(self.store, self._key(name), {
            "EndpointName": name, "EndpointArn": arn, "Stage": stage,
            "ModelPackageVersion": version["ModelPackageVersion"], "EndpointConfigName": config_name,
            "Models": [model_name], "EndpointConfigs": [config_name],
            "CreationTime": now, "LastModifiedTime": now, "CreatedBy": actor.name,
            "History": [{"ModelPackageVersion": version["ModelPackageVersion"], "Time": now, "By": actor.name}],
        })
        append_audit(self.store, actor, "create_endpoint", name, model_version=version["ModelPackageVersion"],
                     stage=stage)
        return self.wait(name) if wait else self.describe(name)

    def update(self, actor: Actor, name: str, model_version: int, wait: bool = False) -> dict:
        """Blue/green: a new EndpointConfig, then UpdateEndpoint; SageMaker shifts traffic when healthy."""
        record = self._read(name)
        require(actor, deploy_action(record["Stage"]))
        self._writable(record)
        version = self.model_version(int(model_version))
        check_deployable(version, record["Stage"])
        number = version["ModelPackageVersion"]
        check_updatable(name, self.describe(name)["EndpointStatus"])
        model_name, config_name = self._create_config(name, version, record["Stage"])
        with translate(f"updating endpoint {name} to model version {number}"):
            self.clients.sagemaker.update_endpoint(
                EndpointName=name, EndpointConfigName=config_name, RetainAllVariantProperties=False,
                DeploymentConfig=BLUE_GREEN,
            )
        now = utcnow()
        previous = record.get("ModelPackageVersion")
        record.update(ModelPackageVersion=number, EndpointConfigName=config_name, LastModifiedTime=now)
        record.setdefault("Models", []).append(model_name)
        record.setdefault("EndpointConfigs", []).append(config_name)
        record.setdefault("History", []).append({"ModelPackageVersion": number, "Time": now, "By": actor.name})
        put_json(self.store, self._key(name), record)
        append_audit(self.store, actor, "update_endpoint", name, model_version=number, previous_version=previous)
        return self.wait(name) if wait else self.describe(name)

    def restart(self, actor: Actor, name: str, wait: bool = False) -> dict:
        """SageMaker heals instances itself; a Failed or vanished endpoint is recreated from its config."""
        record = self._read(name)
        require(actor, deploy_action(record["Stage"]))
        self._writable(record)
        raw = self._describe_sm(name)
        status = STATUS_MAP.get(raw["EndpointStatus"], "Failed") if raw else "Failed"
        if status == "Deleting":
            raise StateError(f"endpoint {name} is being deleted; wait for it to go, then create it")
        if status != "Failed":
            return self.describe(name)
        version = self.model_version(int(record["ModelPackageVersion"]))
        if raw is not None:
            with translate(f"deleting failed endpoint {name}"):
                self.clients.sagemaker.delete_endpoint(EndpointName=name)
        model_name, config_name = self._create_config(name, version, record["Stage"])
        with translate(f"recreating endpoint {name}"):
            self.clients.sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config_name,
                                                   Tags=self._endpoint_tags(record["Stage"]))
        record.update(EndpointConfigName=config_name, LastModifiedTime=utcnow())
        record.setdefault("Models", []).append(model_name)
        record.setdefault("EndpointConfigs", []).append(config_name)
        put_json(self.store, self._key(name), record)
        append_audit(self.store, actor, "restart_endpoint", name, model_version=record["ModelPackageVersion"])
        return self.wait(name) if wait else self.describe(name)

    def delete(self, actor: Actor, name: str) -> None:
        record = self._read(name)
        require_delete(actor, record)
        self._writable(record)
        sm = self.clients.sagemaker
        record["EndpointStatus"] = "Deleting"
        put_json(self.store, self._key(name), record)
        for call, kwargs in ([(sm.delete_endpoint, {"EndpointName": name})]
                             + [(sm.delete_endpoint_config, {"EndpointConfigName": c}) for c in record.get("EndpointConfigs", [])]
                             + [(sm.delete_model, {"ModelName": m}) for m in record.get("Models", [])]):
            try:
                call(**kwargs)
            except Exception as exc:  # already gone is fine: delete is idempotent
                if not is_not_found(exc):
                    with translate(f"deleting {next(iter(kwargs.values()))} of endpoint {name}"):
                        raise
        self.store.delete(self._key(name))
        append_audit(self.store, actor, "delete_endpoint", name, model_version=record.get("ModelPackageVersion"),
                     stage=record.get("Stage"))
