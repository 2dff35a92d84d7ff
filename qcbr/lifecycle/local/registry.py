"""The model registry on MLflow's: SageMaker's model-package vocabulary over MLflow model versions.

A project's model package group is one MLflow registered model; each version is registered from
a Completed training job's run and starts ``PendingManualApproval``. MLflow has no approval
states (its stages are deprecated), so the state and its history live in model-version tags:
``ModelApprovalStatus`` and one ``approval.NNNN`` tag per decision (status, who, comment, time),
an append-only audit trail. Metrics and hyperparameters are snapshotted as tags at registration
(a finished run never changes), and the input schema is read from the run's artifacts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from qcbr.errors import NotFoundError
from qcbr.lifecycle.checks import (accuracy_of, check_decision, check_min_accuracy, check_registrable,
                                   decision_action)
from qcbr.lifecycle.local.audit import append_audit
from qcbr.lifecycle.local.jobs import JobManager
from qcbr.lifecycle.local.state import Paths, file_lock
from qcbr.lifecycle.local.tracking import Tracking, uri_to_path
from qcbr.lifecycle.records import utcnow
from qcbr.roles import Actor, require

PENDING, APPROVED, REJECTED = "PendingManualApproval", "Approved", "Rejected"
HISTORY_PREFIX = "approval."


def package_arn(project: str, version: int) -> str:
    return f"arn:aws:sagemaker:local:000000000000:model-package/{project.lower()}/{version}"


class Registry:
    def __init__(self, paths: Paths, tracking: Tracking, jobs: JobManager, project: str,
                 endpoints_for: Callable[[int], list[str]]):
        self.paths = paths
        self.tracking = tracking
        self.jobs = jobs
        self.project = project
        self.endpoints_for = endpoints_for

    def _lock(self):
        return file_lock(self.paths.lock("registry"))

    # -- records --------------------------------------------------------------------------------
    def _record(self, mv: Any) -> dict:
        tags = dict(mv.tags or {})
        version = int(mv.version)
        history = [json.loads(tags[k]) for k in sorted(t for t in tags if t.startswith(HISTORY_PREFIX))]
        schema = None
        try:
            artifact_dir = uri_to_path(mv.source).parent
            schema_file = artifact_dir / "feature_schema.json"
            if schema_file.is_file():
                schema = json.loads(schema_file.read_text())
        except (ValueError, OSError):
            schema = None
        return {
            "ModelPackageGroupName": self.project,
            "ModelPackageVersion": version,
            "ModelPackageArn": package_arn(self.project, version),
            "ModelApprovalStatus": tags.get("ModelApprovalStatus", PENDING),
            "ModelPackageDescription": mv.description or "",
            "CreationTime": tags.get("CreationTime"),
            "LastModifiedTime": history[-1]["Time"] if history else tags.get("CreationTime"),
            "CreatedBy": tags.get("CreatedBy"),
            "ModelDataUrl": tags.get("ModelDataUrl"),
            "ModelMetrics": json.loads(tags.get("ModelMetrics", "{}")),
            "HyperParameters": json.loads(tags.get("HyperParameters", "{}")),
            "ApprovalHistory": history,
            "Lineage": {
                "DatasetName": tags.get("DatasetName"),
                "DatasetSha256": tags.get("DatasetSha256"),
                "TrainingJobName": tags.get("TrainingJobName"),
                "MlflowRunId": mv.run_id,
                "Endpoints": self.endpoints_for(version),
            },
            "FeatureSchema": schema,
        }

    def describe(self, version: int) -> dict:
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise NotFoundError(f"{version!r} is not a model version number; see `qcbr models list`") from None
        return self._record(self.tracking.get_version(number))

    def list(self) -> list[dict]:
        """Newest first."""
        return [self._record(mv) for mv in reversed(self.tracking.list_versions())]

    def latest_approved(self) -> dict | None:
        for record in self.list():
            if record["ModelApprovalStatus"] == APPROVED:
                return record
        return None

    # -- mutations ------------------------------------------------------------------------------
    def register(self, actor: Actor, job_name: str, min_accuracy: float | None = None, description: str = "") -> dict:
        require(actor, "register_model")
        job = self.jobs.describe(job_name, log_lines=0)
        check_registrable(job)
        metrics = {m["MetricName"]: float(m["Value"]) for m in job["FinalMetricDataList"]}
        accuracy = accuracy_of(metrics)
        check_min_accuracy(job_name, accuracy, min_accuracy)
        with self._lock():
            for existing in self.tracking.list_versions():
                if (existing.tags or {}).get("TrainingJobName") == job_name:
                    return self._record(existing)  # registering a job twice is a no-op
            run_id = job["Lineage"]["MlflowRunId"]
            run = self.tracking.run(run_id)
            now = utcnow()
            first = {"Status": PENDING, "By": actor.name, "Comment": f"registered from training job {job_name}",
                     "Time": now}
            tags = {
                "ModelApprovalStatus": PENDING,
                "TrainingJobName": job_name,
                "DatasetName": job["Lineage"]["DatasetName"],
                "DatasetSha256": job["Lineage"]["DatasetSha256"],
                "CreatedBy": actor.name,
                "CreationTime": now,
                "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"],
                "ModelMetrics": json.dumps(metrics, sort_keys=True),
                "HyperParameters": json.dumps(job["HyperParameters"], sort_keys=True),
                "MinAccuracy": "" if min_accuracy is None else str(float(min_accuracy)),
                f"{HISTORY_PREFIX}0001": json.dumps(first, sort_keys=True),
            }
            source = str(Path(run["ArtifactDir"]) / "model")
            mv = self.tracking.create_version(run_id, Path(source).as_uri(), tags, description)
        append_audit(self.paths.audit, actor, "register_model", f"{self.project}/{mv.version}",
                     job=job_name, accuracy=accuracy, min_accuracy=min_accuracy)
        return self._record(mv)

    def decide(self, actor: Actor, version: int, status: str, comment: str = "") -> dict:
        """Approve or reject (``status``): one more approval.NNNN tag and the new status."""
        action = decision_action(status)
        require(actor, action)
        with self._lock():
            record = self.describe(version)
            current = record["ModelApprovalStatus"]
            check_decision(record["ModelPackageVersion"], current, status)
            entry = {"Status": status, "By": actor.name, "Comment": comment or "", "Time": utcnow()}
            index = len(record["ApprovalHistory"]) + 1
            self.tracking.set_version_tags(record["ModelPackageVersion"], {
                f"{HISTORY_PREFIX}{index:04d}": json.dumps(entry, sort_keys=True),
                "ModelApprovalStatus": status,
            })
        append_audit(self.paths.audit, actor, action, f"{self.project}/{record['ModelPackageVersion']}",
                     previous=current, status=status, comment=comment or "")
        return self.describe(version)
