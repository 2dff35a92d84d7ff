"""The SageMaker Model Registry: one model package group per project, versions from jobs.

A version is registered from a Completed job's ``model.tar.gz`` with the project's image as its
inference container, ``PendingManualApproval``, ``ModelMetrics`` pointing at the job's
``metrics.json`` (and the Model Monitor baseline) copied under ``registry/`` in the bucket, and
its lineage in ``CustomerMetadataProperties``. SageMaker keeps only the latest
``ApprovalDescription``, so each approval or rejection is also kept as one JSON object under
``registry/<group>/versions/<n>/approvals/`` -- the approval history the records show.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qcbr.errors import ConfigError, NotFoundError
from qcbr.lifecycle.aws.artifacts import inspect_model, numeric_metrics
from qcbr.lifecycle.aws.clients import AwsClients, is_not_found, translate
from qcbr.lifecycle.aws.records import append_audit
from qcbr.lifecycle.checks import (accuracy_of, check_decision, check_min_accuracy, check_registrable,
                                   decision_action)
from qcbr.lifecycle.records import get_json, iso, put_json, utcnow
from qcbr.roles import Actor, require
from qcbr.storage import parse_s3_uri

CONTENT_TYPES = ["application/json", "text/csv"]
INFERENCE_INSTANCE_TYPES = ["ml.t2.medium", "ml.m5.large", "ml.m5.xlarge", "ml.c5.large", "ml.c5.xlarge"]


class Registry:
    def __init__(self, clients: AwsClients, store: Any, config: Any, jobs: Any, endpoint_map: Any):
        self.clients = clients
        self.store = store
        self.config = config
        self.jobs = jobs
        self.endpoint_map = endpoint_map  # () -> {version: [endpoint names]} (the endpoints part knows)
        self.group = config.project
        self._group_arn: str | None = None

    # -- group ----------------------------------------------------------------------------------
    def group_arn(self, create: bool = False) -> str | None:
        if self._group_arn:
            return self._group_arn
        sm = self.clients.sagemaker
        try:
            self._group_arn = sm.describe_model_package_group(ModelPackageGroupName=self.group)["ModelPackageGroupArn"]
        except Exception as exc:
            if not is_not_found(exc):
                with translate(f"reading model package group {self.group}"):
                    raise
            if not create:
                return None
            with translate(f"creating model package group {self.group}"):
                self._group_arn = sm.create_model_package_group(
                    ModelPackageGroupName=self.group,
                    ModelPackageGroupDescription=f"qCBR Studio model versions of project {self.group}",
                    Tags=[{"Key": "qcbr:project", "Value": self.group}],
                )["ModelPackageGroupArn"]
        return self._group_arn

    def package_arn(self, version: int) -> str:
        group_arn = self.group_arn()
        if group_arn is None:
            raise NotFoundError(f"no model version {version}: project {self.group!r} has no registered models yet")
        prefix, _, _name = group_arn.rpartition(":model-package-group/")
        return f"{prefix}:model-package/{self.group.lower()}/{int(version)}"

    def _key(self, version: int, name: str) -> str:
        return f"registry/{self.group}/versions/{int(version)}/{name}"

    # -- register -------------------------------------------------------------------------------
    def register(self, actor: Actor, job_name: str, min_accuracy: float | None = None, description: str = "") -> dict:
        require(actor, "register_model")
        job = self.jobs.describe(job_name, log_lines=0)
        check_registrable(job)
        marker = get_json(self.store, f"registry/{self.group}/jobs/{job_name}/version.json", default=None)
        if marker:
            return self.describe(marker["ModelPackageVersion"])  # registering a job twice is a no-op
        image = self.config.aws_image_uri or job["AlgorithmSpecification"].get("TrainingImage")
        if not image:
            raise ConfigError("set QCBR_AWS_IMAGE_URI: the registered version needs an inference image")
        artifact_uri = job["ModelArtifacts"]["S3ModelArtifacts"]
        bucket, key = parse_s3_uri(artifact_uri)
        with translate(f"downloading {artifact_uri}",
                       not_found=f"training job {job_name} is Completed but {artifact_uri} is missing; retrain"):
            data = self.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        info = inspect_model(data)
        metrics = numeric_metrics(info["metrics"])
        accuracy = accuracy_of(metrics)
        check_min_accuracy(job_name, accuracy, min_accuracy)

        # evidence next to the registry, referenced from ModelMetrics (SageMaker reads S3 URIs)
        evidence = {name: self.store.put(f"registry/{self.group}/jobs/{job_name}/{name}", blob)
                    for name, blob in info["files"].items()}
        model_metrics: dict[str, Any] = {}
        if "metrics.json" in evidence:
            model_metrics["ModelQuality"] = {"Statistics": {"ContentType": "application/json",
                                                            "S3Uri": evidence["metrics.json"]}}
        if "statistics.json" in evidence and "constraints.json" in evidence:
            model_metrics["ModelDataQuality"] = {
                "Statistics": {"ContentType": "application/json", "S3Uri": evidence["statistics.json"]},
                "Constraints": {"ContentType": "application/json", "S3Uri": evidence["constraints.json"]},
            }
        lineage = job["Lineage"]
        customer = {k: str(v)[:256] for k, v in {
            "DatasetName": lineage.get("DatasetName"), "DatasetSha256": lineage.get("DatasetSha256"),
            "TrainingJobName": job_name, "CreatedBy": actor.name, "qcbr:accuracy": accuracy,
        }.items() if v is not None}
        self.group_arn(create=True)
        request = {
            "ModelPackageGroupName": self.group,
            "ModelPackageDescription": (description or f"from training job {job_name}")[:1024],
            "InferenceSpecification": {
                "Containers": [{"Image": image, "ModelDataUrl": artifact_uri}],
                "SupportedContentTypes": CONTENT_TYPES,
                "SupportedResponseMIMETypes": ["application/json"],
                "SupportedRealtimeInferenceInstanceTypes": INFERENCE_INSTANCE_TYPES,
            },
            "ModelApprovalStatus": "PendingManualApproval",
            "MetadataProperties": {"GeneratedBy": job["TrainingJobArn"] or job_name},
            "CustomerMetadataProperties": customer,
        }
        if model_metrics:
            request["ModelMetrics"] = model_metrics
        with translate(f"registering job {job_name} in model package group {self.group}"):
            arn = self.clients.sagemaker.create_model_package(**request)["ModelPackageArn"]
            version = int(self.clients.sagemaker.describe_model_package(ModelPackageName=arn)["ModelPackageVersion"])
        now = utcnow()
        put_json(self.store, self._key(version, "record.json"), {
            "ModelPackageVersion": version,
            "CreatedBy": actor.name,
            "CreationTime": now,
            "HyperParameters": job["HyperParameters"],
            "ModelMetrics": metrics,
            "MinAccuracy": None if min_accuracy is None else float(min_accuracy),
            "FeatureSchema": {"label": self._label_of(lineage), "features": info["features"],
                              "classes": info["classes"]},
            "Lineage": {**lineage, "TrainingJobName": job_name},
        })
        self._history_entry(version, {"Status": "PendingManualApproval", "By": actor.name,
                                      "Comment": f"registered from training job {job_name}", "Time": now})
        put_json(self.store, f"registry/{self.group}/jobs/{job_name}/version.json",
                 {"ModelPackageVersion": version, "ModelPackageArn": arn})
        append_audit(self.store, actor, "register_model", f"{self.group}/{version}", job=job_name,
                     accuracy=accuracy)
        return self.describe(version)

    def _label_of(self, lineage: dict) -> str | None:
        name, sha = lineage.get("DatasetName"), lineage.get("DatasetSha256")
        if not name or not sha:
            return None
        schema = get_json(self.store, f"datasets/{name}/{sha}/schema.json", default=None) or {}
        return schema.get("label")

    def _history_entry(self, version: int, entry: dict) -> None:
        """One object per decision: an append-only trail with no read-modify-write to race."""
        put_json(self.store, self._key(int(version), f"approvals/{entry['Time'].replace(':', '')}-{entry['Status']}.json"),
                 entry)

    # -- read -----------------------------------------------------------------------------------
    def _raw(self, version: int) -> dict:
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise NotFoundError(f"model version {version!r} is not a number; see `qcbr models list`") from None
        arn = self.package_arn(version)
        with translate(f"describing model version {version}",
                       not_found=f"no model version {version} in group {self.group}; see `qcbr models list`"):
            return self.clients.sagemaker.describe_model_package(ModelPackageName=arn)

    def describe(self, version: int) -> dict:
        return self._record(self._raw(version))

    def history(self, version: int, raw: dict | None = None) -> list[dict]:
        entries = []
        for key in self.store.list(self._key(version, "approvals/")):
            entry = get_json(self.store, key, default=None)
            if entry:
                entries.append(entry)
        entries.sort(key=lambda e: e.get("Time") or "")
        status = (raw or {}).get("ModelApprovalStatus")
        if raw and status and (not entries or entries[-1].get("Status") != status):
            # decided outside qcbr (SageMaker Studio, the AWS CLI): SageMaker's own last word
            by = (raw.get("LastModifiedBy") or {}).get("UserProfileName")
            entries.append({"Status": status, "By": by, "Comment": raw.get("ApprovalDescription") or "",
                            "Time": iso(raw.get("LastModifiedTime")) or iso(raw.get("CreationTime"))})
        return entries

    def _record(self, raw: dict, endpoints: dict[int, list[str]] | None = None) -> dict:
        version = int(raw["ModelPackageVersion"])
        extra = get_json(self.store, self._key(version, "record.json"), default={}) or {}
        customer = raw.get("CustomerMetadataProperties") or {}
        containers = (raw.get("InferenceSpecification") or {}).get("Containers") or [{}]
        lineage = dict(extra.get("Lineage") or {
            "DatasetName": customer.get("DatasetName"), "DatasetSha256": customer.get("DatasetSha256"),
            "TrainingJobName": customer.get("TrainingJobName"), "MlflowRunId": None,
        })
        lineage.setdefault("MlflowRunId", None)
        lineage["Endpoints"] = (self.endpoint_map() if endpoints is None else endpoints).get(version, [])
        return {
            "ModelPackageGroupName": raw.get("ModelPackageGroupName") or self.group,
            "ModelPackageVersion": version,
            "ModelPackageArn": raw["ModelPackageArn"],
            "ModelApprovalStatus": raw.get("ModelApprovalStatus"),
            "ModelPackageDescription": raw.get("ModelPackageDescription"),
            "CreationTime": iso(raw.get("CreationTime")),
            "LastModifiedTime": iso(raw.get("LastModifiedTime")) or iso(raw.get("CreationTime")),
            "CreatedBy": extra.get("CreatedBy") or customer.get("CreatedBy"),
            "ModelDataUrl": containers[0].get("ModelDataUrl"),
            "Image": containers[0].get("Image"),
            "ModelMetrics": extra.get("ModelMetrics") or {},
            "HyperParameters": extra.get("HyperParameters") or {},
            "ApprovalDescription": raw.get("ApprovalDescription"),
            "ApprovalHistory": self.history(version, raw),
            "Lineage": lineage,
            "FeatureSchema": extra.get("FeatureSchema"),
        }

    def list(self) -> list[dict]:
        """Every version of the group, newest first."""
        if self.group_arn() is None:
            return []
        arns: list[str] = []
        with translate(f"listing model versions of {self.group}"):
            paginator = self.clients.sagemaker.get_paginator("list_model_packages")
            for page in paginator.paginate(ModelPackageGroupName=self.group, SortBy="CreationTime",
                                           SortOrder="Descending"):
                arns += [s["ModelPackageArn"] for s in page.get("ModelPackageSummaryList", [])]
        if not arns:
            return []

        endpoints = self.endpoint_map()

        def one(arn: str) -> dict:
            with translate(f"describing {arn}"):
                return self._record(self.clients.sagemaker.describe_model_package(ModelPackageName=arn), endpoints)

        with ThreadPoolExecutor(max_workers=min(8, len(arns))) as pool:
            out = list(pool.map(one, arns))
        out.sort(key=lambda r: r["ModelPackageVersion"], reverse=True)
        return out

    def latest_approved(self) -> dict | None:
        """The newest Approved version (SortOrder=Descending: the first summary is the newest)."""
        if self.group_arn() is None:
            return None
        with translate(f"finding the latest approved version of {self.group}"):
            page = self.clients.sagemaker.list_model_packages(
                ModelPackageGroupName=self.group, ModelApprovalStatus="Approved",
                SortBy="CreationTime", SortOrder="Descending", MaxResults=1,
            )
        summaries = page.get("ModelPackageSummaryList") or []
        if not summaries:
            return None
        with translate("describing the latest approved version"):
            return self._record(self.clients.sagemaker.describe_model_package(
                ModelPackageName=summaries[0]["ModelPackageArn"]))

    # -- approval -------------------------------------------------------------------------------
    def decide(self, actor: Actor, version: int, status: str, comment: str = "") -> dict:
        action = decision_action(status)
        require(actor, action)
        raw = self._raw(version)
        current = raw.get("ModelApprovalStatus")
        check_decision(version, current, status)
        comment = (comment or "").strip()
        description = f"{status} by {actor.name}" + (f": {comment}" if comment else "")
        customer = dict(raw.get("CustomerMetadataProperties") or {})
        update = {"ModelPackageArn": raw["ModelPackageArn"], "ModelApprovalStatus": status,
                  "ApprovalDescription": description[:1024]}
        if customer:  # AWS merges these on update, moto replaces them: send them whole
            update["CustomerMetadataProperties"] = customer
        with translate(f"setting model version {version} to {status}"):
            self.clients.sagemaker.update_model_package(**update)
        self._history_entry(int(version), {"Status": status, "By": actor.name, "Comment": comment,
                                           "Time": utcnow()})
        append_audit(self.store, actor, action, f"{self.group}/{int(version)}", comment=comment, previous=current)
        return self.describe(version)
