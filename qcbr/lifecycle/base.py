"""The Backend protocol: the one interface the CLI and the dashboard use for the lifecycle.

Two implementations keep the same contracts (DESIGN.md, "Contracts"): ``LocalBackend``
(``qcbr.lifecycle.local``, the default: files under QCBR_HOME, subprocess jobs, MLflow on SQLite,
uvicorn endpoints) and ``AwsBackend`` (``qcbr.lifecycle.aws``: S3, SageMaker, Model Registry).

Records are plain dicts with SageMaker's field names so that ``--json`` output, the dashboard and
the aws backend read the same. Times are timezone-aware ISO-8601 strings (UTC).

Record shapes (keys always present; ``None`` where not known yet):

Dataset (``describe_dataset``)::
    DatasetName, Sha256, S3Uri (the version's prefix), Rows, Columns (list of names), Label,
    IdColumn, Schema (the CaseBase schema dict), CreationTime, CreatedBy, Created (False when an
    identical upload already existed)

TrainingJob (``describe_training_job``; shaped like DescribeTrainingJob)::
    TrainingJobName, TrainingJobArn, TrainingJobStatus (InProgress|Completed|Failed|Stopped|Stopping),
    SecondaryStatus (Starting|Downloading|Training|Uploading|Completed|Failed|Stopped|...),
    FailureReason, HyperParameters (str -> str), InputDataConfig (list, channel "train"),
    OutputDataConfig {S3OutputPath}, ModelArtifacts {S3ModelArtifacts} (None until Completed),
    CreationTime, TrainingStartTime, TrainingEndTime, FinalMetricDataList [{MetricName, Value}],
    Progress {Fraction (0..1), Message}, Log (str: the tail of the job's log),
    Lineage {DatasetName, DatasetSha256, MlflowRunId}, CreatedBy

ModelPackage (``describe_model_version``)::
    ModelPackageGroupName, ModelPackageVersion (int, from 1), ModelPackageArn,
    ModelApprovalStatus (PendingManualApproval|Approved|Rejected), ModelPackageDescription,
    CreationTime, CreatedBy, ModelDataUrl (s3:// model.tar.gz), ModelMetrics (name -> float),
    HyperParameters, ApprovalHistory [{Status, By, Comment, Time}],
    Lineage {DatasetName, DatasetSha256, TrainingJobName, MlflowRunId, Endpoints [names]},
    FeatureSchema (the model's input schema: [{name, type, categories?}] and label classes)

Endpoint (``describe_endpoint``)::
    EndpointName, EndpointArn, EndpointStatus (Creating|InService|Updating|Failed|Deleting),
    Stage (staging|prod), ModelPackageVersion, EndpointUrl (base URL; local only, else None),
    CreationTime, LastModifiedTime, FailureReason, CreatedBy,
    ProductionVariants [{VariantName: "AllTraffic", ModelPackageVersion, CurrentInstanceCount}]

Invocation result (``invoke``; the Lambda's response body)::
    {"inference_id", "endpoint", "model_version", "predictions": [
        {"inference_id", "label", "confidence", "probabilities": {class: p}, "flagged" (bool:
         confidence < epsilon), "similar_cases": [{"case_id", "label", "score"}]}]}

Prediction record (``list_predictions``; stored at predictions/yyyy/mm/dd/<inference-id>.json)::
    inference_id, endpoint, model_version, time, user, request (the instances), response (as above)

Ground truth record (SageMaker's format, ``submit_ground_truth``)::
    {"groundTruthData": {"data": label, "encoding": "CSV"},
     "eventMetadata": {"eventId": inference_id}, "eventVersion": "0"}
``list_ground_truth`` returns those records (newest label per inference id) with extra keys next to
SageMaker's: inference_id, label, time, endpoint, model_version, predicted_label.

ModelPackage.FeatureSchema is ``{"label": str, "features": [{name, type, categories?}],
"classes": [str]}`` (None when the run logged no schema).

Beyond the core calls (added by the lifecycle issue; both backends implement them):
- ``wait_training_job(name, timeout=None, progress=None, poll=...)``: block until the job leaves
  InProgress/Stopping, calling ``progress(record)`` after each poll (the CLI's progress bar);
  ``stop_training_job(..., wait=seconds)`` waits for Stopped.
- ``create_endpoint(..., wait=False)`` / ``restart_endpoint(..., wait=False)`` return at once
  (Creating) unless ``wait``; ``wait_endpoint(name, timeout)`` blocks until it leaves
  Creating/Updating. ``update_endpoint`` blocks until the switch is done (blue/green).
- ``training_job_run(name)``: the job's MLflow run ``{RunId, Status, Params, Metrics, Tags,
  ArtifactUri, ArtifactDir}`` (local), None where there is no MLflow (aws).
- ``audit_log(limit=100, action=None)``: who did what, newest first
  (``{time, user, role, action, target, details?}``).
- ``seed_demo(actor, progress=None)``: the idempotent demo (role ``seed_demo``; local only)
  returning ``{Demo, DatasetName, DatasetSha256, TrainingJobName, ModelPackageVersion,
  ModelApprovalStatus, EndpointName, EndpointStatus, EndpointUrl, Reused}``.
- ``kill_all_processes()``: SIGKILL every process the backend started (tests' clean-up).
- ``start_monitoring_scheduler(actor, every_minutes=5.0)`` / ``stop_monitoring_scheduler(actor)``
  (role ``set_monitoring_policy``, audited) / ``monitoring_scheduler_status()`` -> ``{running, pid,
  started, every_minutes, log}``: what runs scheduled monitoring. Local: the scheduler process
  (``qcbr.monitoring.scheduler``; ``every_minutes`` is its wake-up interval). AWS: the endpoint
  stacks' EventBridge rules ``<project>-<stage>-monitoring``, enabled/disabled; ``pid`` and
  ``started`` are None, ``every_minutes`` is the rules' own schedule, and ``rules`` lists them.
- ``record_audit(actor, action, target, **details)`` -> the entry: appends to ``audit_log`` what a
  caller did through the backend on someone's behalf (the monitoring policy's automated retrain).
Deleting a prod endpoint needs ``deploy_prod`` as well as ``delete_endpoint``.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from qcbr.roles import Actor

TRAINING_STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
ENDPOINT_STATUSES = ("Creating", "InService", "Updating", "Failed", "Deleting")
STAGES = ("staging", "prod")


@runtime_checkable
class Backend(Protocol):
    name: str  # "local" | "aws"
    project: str  # the model package group name

    # datasets
    def upload_dataset(self, actor: Actor, case_base: Any, name: str) -> dict: ...
    def list_datasets(self) -> list[dict]: ...
    def describe_dataset(self, name: str, sha256: str | None = None) -> dict: ...
    def load_dataset(self, name: str, sha256: str | None = None) -> Any: ...  # -> CaseBase

    # training jobs
    def create_training_job(
        self, actor: Actor, dataset: str, hyperparameters: dict[str, Any],
        job_name: str | None = None, dataset_sha256: str | None = None,
    ) -> dict: ...
    def describe_training_job(self, name: str) -> dict: ...
    def list_training_jobs(self) -> list[dict]: ...
    def stop_training_job(self, actor: Actor, name: str, wait: float = 0.0) -> dict: ...

    # registry
    def register_model(
        self, actor: Actor, job_name: str, min_accuracy: float | None = None, description: str = "",
    ) -> dict: ...
    def list_model_versions(self) -> list[dict]: ...
    def describe_model_version(self, version: int) -> dict: ...
    def approve_model(self, actor: Actor, version: int, comment: str = "") -> dict: ...
    def reject_model(self, actor: Actor, version: int, comment: str = "") -> dict: ...
    def latest_approved_version(self) -> dict | None: ...

    # endpoints
    def create_endpoint(
        self, actor: Actor, name: str, model_version: int, stage: str = "staging", wait: bool = False,
    ) -> dict: ...
    def update_endpoint(self, actor: Actor, name: str, model_version: int) -> dict: ...
    def describe_endpoint(self, name: str) -> dict: ...
    def list_endpoints(self) -> list[dict]: ...
    def delete_endpoint(self, actor: Actor, name: str) -> None: ...
    def restart_endpoint(self, actor: Actor, name: str, wait: bool = False) -> dict: ...

    # invocation, prediction store, ground truth
    def invoke(self, actor: Actor, endpoint: str, body: bytes | str | dict, content_type: str = "application/json") -> dict: ...
    def list_predictions(self, endpoint: str | None = None, user: str | None = None, limit: int | None = None) -> list[dict]: ...
    def submit_ground_truth(self, actor: Actor, inference_id: str, label: Any) -> dict: ...
    def list_ground_truth(self, endpoint: str | None = None) -> list[dict]: ...

    # waiting, runs, audit, demo, clean-up (see the module docstring)
    def wait_training_job(
        self, name: str, timeout: float | None = None, progress: Callable[[dict], None] | None = None,
        poll: float = ...,
    ) -> dict: ...
    def wait_endpoint(self, name: str, timeout: float = ...) -> dict: ...
    def training_job_run(self, name: str) -> dict | None: ...
    def audit_log(self, limit: int | None = 100, action: str | None = None) -> list[dict]: ...
    def record_audit(self, actor: Actor, action: str, target: str, **details: Any) -> dict: ...
    def seed_demo(self, actor: Actor, progress: Callable[[float, str], None] | None = None) -> dict: ...
    def kill_all_processes(self) -> None: ...

    # the monitoring scheduler (a process locally, EventBridge rules on AWS; see the module docstring)
    def start_monitoring_scheduler(self, actor: Actor, every_minutes: float = 5.0) -> dict: ...
    def stop_monitoring_scheduler(self, actor: Actor) -> dict: ...
    def monitoring_scheduler_status(self) -> dict: ...
