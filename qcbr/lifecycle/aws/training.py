"""SageMaker training jobs with the project's BYOC image, read back in the local backend's shape.

The job runs the same entrypoint as a local job (``train`` in infra/docker -> ``python -m
qcbr.training.train``) on the dataset version's S3 prefix as channel ``train``, and SageMaker
writes ``s3://<bucket>/jobs/<job>/output/model.tar.gz`` -- the very key the local backend uses.
What SageMaker does not keep (who started the job, the dataset lineage) goes to
``jobs/<job>/qcbr-job.json`` in the bucket; the job list is the set of those files, so it shows
this project's jobs only. Progress comes from SageMaker's status transitions and the log tail from
CloudWatch Logs (``/aws/sagemaker/TrainingJobs``), when the caller may read it.
"""
from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qcbr.errors import ConfigError, NotFoundError, StateError
from qcbr.lifecycle.aws.clients import AwsClients, translate
from qcbr.lifecycle.aws.records import append_audit
from qcbr.lifecycle.checks import ACTIVE_JOB as ACTIVE
from qcbr.lifecycle.checks import check_stoppable, prepare_training_job
from qcbr.lifecycle.records import get_json, iso, job_lineage, put_json, slug, stamp, training_channel
from qcbr.roles import Actor, require

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
META = "qcbr-job.json"
MAX_RUNTIME_S = 6 * 3600
# SageMaker scrapes these from the job's log into FinalMetricDataList (train.py logs the line).
METRIC_DEFINITIONS = [
    {"Name": "validation:accuracy", "Regex": r"validation accuracy ([0-9]*\.?[0-9]+)"},
]
# Where a job is along its SecondaryStatus trail (SageMaker reports no finer progress).
SECONDARY_FRACTION = {
    "Pending": 0.01, "Starting": 0.02, "LaunchingMLInstances": 0.05, "PreparingTrainingStack": 0.08,
    "Downloading": 0.10, "DownloadingTrainingImage": 0.12, "Training": 0.20, "Updating": 0.20,
    "Restarting": 0.20, "Uploading": 0.95, "Completed": 1.0,
}
_LOG_PREFIX = re.compile(r"^\[train \d\d:\d\d:\d\d\] ")


def default_job_name(project: str, dataset: str) -> str:
    """Starts with the project, so IAM policies can scope to training-job/<project>-*."""
    import secrets

    tail = f"-{stamp()}-{secrets.token_hex(2)}"
    head = slug(f"{project}-{dataset}", 63 - len(tail))
    return f"{head}{tail}"


class TrainingJobs:
    def __init__(self, clients: AwsClients, store: Any, config: Any):
        self.clients = clients
        self.store = store
        self.config = config

    # -- create ---------------------------------------------------------------------------------
    def _require_setup(self) -> tuple[str, str]:
        missing = [env for env, value in (("QCBR_AWS_IMAGE_URI", self.config.aws_image_uri),
                                          ("QCBR_AWS_ROLE_ARN", self.config.aws_role_arn)) if not value]
        if missing:
            raise ConfigError(
                f"cannot start a SageMaker training job: set {' and '.join(missing)} "
                "(the project stack's outputs ImageRepositoryUri:<tag> and SageMakerExecutionRoleArn); "
                "run `qcbr aws check` to see what is missing"
            )
        return self.config.aws_image_uri, self.config.aws_role_arn

    def request(self, name: str, dataset: dict, hps: dict[str, str], actor: Actor) -> dict:
        """The CreateTrainingJob request (the start_training Lambda sends the very same)."""
        image, role = self._require_setup()
        return {
            "TrainingJobName": name,
            "HyperParameters": hps,
            "AlgorithmSpecification": {
                "TrainingImage": image,
                "TrainingInputMode": "File",
                "MetricDefinitions": METRIC_DEFINITIONS,
            },
            "RoleArn": role,
            "InputDataConfig": [training_channel(dataset["S3Uri"])],
            "OutputDataConfig": {"S3OutputPath": self.store.uri("jobs")},
            "ResourceConfig": {"InstanceType": self.config.aws_instance_type, "InstanceCount": 1,
                               "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": MAX_RUNTIME_S},
            "Environment": {"QCBR_DATASET_NAME": dataset["DatasetName"]},
            "Tags": [
                {"Key": "qcbr:project", "Value": self.config.project},
                {"Key": "qcbr:dataset", "Value": dataset["DatasetName"]},
                {"Key": "qcbr:dataset-sha256", "Value": dataset["Sha256"]},
                {"Key": "qcbr:created-by", "Value": slug(actor.name, 200)},
            ],
        }

    def create(self, actor: Actor, dataset: dict, hyperparameters: dict[str, Any],
               job_name: str | None = None) -> dict:
        name, hps = prepare_training_job(actor, hyperparameters, job_name,
                                         lambda: default_job_name(self.config.project, dataset["DatasetName"]))
        request = self.request(name, dataset, hps, actor)
        meta = {
            "TrainingJobName": name,
            "Project": self.config.project,
            "CreatedBy": actor.name,
            "Lineage": job_lineage(dataset),
        }
        if self._meta(name) is not None or self._exists(name):
            raise StateError(f"training job {name!r} already exists; pick another --job-name")
        # the lineage first, so the job is never listed without it; removed again if the start fails
        put_json(self.store, f"jobs/{name}/{META}", meta)
        sm = self.clients.sagemaker
        try:
            with translate(f"starting training job {name}"):
                sm.create_training_job(**request)
        except StateError as exc:
            self.store.delete(f"jobs/{name}/{META}")
            if "ResourceInUse" in str(exc) or "already" in str(exc).lower():
                raise StateError(f"training job {name!r} already exists; pick another --job-name") from None
            raise
        append_audit(self.store, actor, "create_training_job", name, dataset=dataset["DatasetName"],
                     sha256=dataset["Sha256"], hyperparameters=hps)
        return self.describe(name)

    # -- read -----------------------------------------------------------------------------------
    def _meta(self, name: str) -> dict | None:
        return get_json(self.store, f"jobs/{name}/{META}", default=None)

    def _exists(self, name: str) -> bool:
        try:
            self._describe_raw(name)
            return True
        except NotFoundError:
            return False

    def _describe_raw(self, name: str) -> dict:
        if not isinstance(name, str) or not name or "/" in name:
            raise NotFoundError(f"no training job named {name!r}")
        with translate(f"describing training job {name}",
                       not_found=f"no training job named {name!r}; see `qcbr jobs list`"):
            return self.clients.sagemaker.describe_training_job(TrainingJobName=name)

    def describe(self, name: str, log_lines: int = 60) -> dict:
        raw = self._describe_raw(name)
        return self._record(raw, self._meta(name), log_lines)

    def _record(self, raw: dict, meta: dict | None, log_lines: int) -> dict:
        meta = meta or {}
        status = raw.get("TrainingJobStatus", "InProgress")
        secondary = raw.get("SecondaryStatus") or status
        trail = [
            {"Status": t.get("Status"), "StartTime": iso(t.get("StartTime")), "EndTime": iso(t.get("EndTime")),
             "StatusMessage": t.get("StatusMessage", "")}
            for t in raw.get("SecondaryStatusTransitions") or []
        ]
        completed = status == "Completed"
        artifacts = (raw.get("ModelArtifacts") or {}).get("S3ModelArtifacts") if completed else None
        log = self.log_tail(raw["TrainingJobName"], log_lines) if log_lines else ""
        lineage = dict(meta.get("Lineage") or {"DatasetName": None, "DatasetSha256": None, "MlflowRunId": None})
        algo = raw.get("AlgorithmSpecification") or {}
        return {
            "TrainingJobName": raw["TrainingJobName"],
            "TrainingJobArn": raw.get("TrainingJobArn"),
            "TrainingJobStatus": status,
            "SecondaryStatus": secondary,
            "SecondaryStatusTransitions": trail,
            "FailureReason": raw.get("FailureReason"),
            "HyperParameters": dict(raw.get("HyperParameters") or {}),
            "AlgorithmSpecification": {"TrainingImage": algo.get("TrainingImage"),
                                       "TrainingInputMode": algo.get("TrainingInputMode", "File")},
            "InputDataConfig": raw.get("InputDataConfig") or [],
            "OutputDataConfig": {"S3OutputPath": (raw.get("OutputDataConfig") or {}).get("S3OutputPath")},
            "ResourceConfig": raw.get("ResourceConfig"),
            "ModelArtifacts": {"S3ModelArtifacts": artifacts} if artifacts else None,
            "CreationTime": iso(raw.get("CreationTime")),
            "TrainingStartTime": iso(raw.get("TrainingStartTime")),
            "TrainingEndTime": iso(raw.get("TrainingEndTime")),
            "LastModifiedTime": iso(raw.get("LastModifiedTime")),
            "FinalMetricDataList": [
                {"MetricName": m.get("MetricName"), "Value": m.get("Value")}
                for m in raw.get("FinalMetricDataList") or []
            ],
            "Progress": progress(status, secondary, trail, raw.get("FailureReason"), log),
            "Log": log,
            "Lineage": lineage,
            "CreatedBy": meta.get("CreatedBy"),
        }

    def names(self) -> list[str]:
        """This project's jobs: those with a qcbr-job.json under jobs/ in the bucket."""
        s3 = self.clients.s3
        names: list[str] = []
        with translate(f"listing s3://{self.store.bucket}/jobs/"):
            paginator = s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.store.bucket, Prefix="jobs/", Delimiter="/"):
                for entry in page.get("CommonPrefixes", []):
                    names.append(entry["Prefix"][len("jobs/"):].rstrip("/"))
        return names

    def list(self) -> list[dict]:
        """Newest first, without logs (describe a job for its log)."""
        def one(name: str) -> dict | None:
            meta = self._meta(name)
            if meta is None:
                return None
            try:
                return self._record(self._describe_raw(name), meta, log_lines=0)
            except NotFoundError:
                return None

        names = self.names()
        if not names:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            out = [r for r in pool.map(one, names) if r is not None]
        out.sort(key=lambda r: r["CreationTime"] or "", reverse=True)
        return out

    def log_tail(self, name: str, max_lines: int = 60) -> str:
        """The last lines of the job's CloudWatch log streams; empty when there are none (yet)."""
        logs = self.clients.logs
        try:
            streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{name}/")
            lines: list[tuple[int, str]] = []
            for stream in streams.get("logStreams", [])[:4]:
                events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream["logStreamName"],
                                             limit=max_lines, startFromHead=False)
                lines += [(e.get("timestamp", 0), e.get("message", "").rstrip("\n")) for e in events.get("events", [])]
        except Exception as exc:  # no log group yet, no logs:GetLogEvents permission, logs unreachable
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(exc, (BotoCoreError, ClientError)):
                return ""  # the tail is a convenience: never fail a describe for it
            raise
        lines.sort(key=lambda item: item[0])
        return "\n".join(message for _, message in lines[-max_lines:])

    # -- stop -----------------------------------------------------------------------------------
    def stop(self, actor: Actor, name: str, wait: float = 0.0) -> dict:
        """StopTrainingJob; with ``wait`` (seconds) poll until SageMaker says Stopped (or another end)."""
        require(actor, "stop_training_job")
        check_stoppable(name, self.describe(name, log_lines=0)["TrainingJobStatus"])
        with translate(f"stopping training job {name}"):
            self.clients.sagemaker.stop_training_job(TrainingJobName=name)
        append_audit(self.store, actor, "stop_training_job", name)
        record = self.describe(name)
        deadline = time.monotonic() + wait
        while record["TrainingJobStatus"] in ACTIVE and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            record = self.describe(name)
        return record


def progress(status: str, secondary: str, trail: list[dict], failure: str | None, log: str) -> dict:
    """``{Fraction, Message}`` from the status trail; the message is the newest log line if any."""
    if status == "Completed":
        return {"Fraction": 1.0, "Message": "Completed"}
    if status in ("Failed", "Stopped"):
        fraction = max([SECONDARY_FRACTION.get(t["Status"], 0.0) for t in trail if t["Status"] in SECONDARY_FRACTION]
                       or [0.0])
        return {"Fraction": min(fraction, 0.99), "Message": failure or status}
    fraction = SECONDARY_FRACTION.get(secondary, 0.0)
    message = trail[-1]["StatusMessage"] if trail else secondary
    last = [line for line in log.splitlines() if line.strip()]
    if last and secondary == "Training":
        message = _LOG_PREFIX.sub("", last[-1]).strip() or message
    return {"Fraction": min(fraction, 0.99), "Message": message}
