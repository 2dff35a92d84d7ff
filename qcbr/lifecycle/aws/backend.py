"""``AwsBackend``: the Backend protocol on SageMaker, S3 and the SageMaker Model Registry.

A facade over small parts (datasets, training jobs, registry, endpoints, predictions), each a
slice of the project's bucket and of SageMaker, mirroring ``LocalBackend`` part for part: the
same keys in the bucket, the same record shapes, the same role checks. Constructing it contacts
nothing; boto3 loads on the first call. ``AWS_ENDPOINT_URL`` points every client at another
endpoint (moto's server in the tests).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from qcbr.config import Config, load_config
from qcbr.errors import ConfigError, StateError
from qcbr.lifecycle.aws.clients import AwsClients
from qcbr.lifecycle.aws.datasets import S3Datasets
from qcbr.lifecycle.aws.endpoints import Endpoints
from qcbr.lifecycle.aws.predictions import Predictions
from qcbr.lifecycle.aws.registry import Registry
from qcbr.lifecycle.aws.training import TrainingJobs
from qcbr.roles import Actor


class AwsBackend:
    name = "aws"

    def __init__(self, config: Config | None = None):
        self.config = config or load_config()
        if not self.config.bucket:
            raise ConfigError(
                "the aws backend needs a bucket: set QCBR_AWS_BUCKET (the project stack's BucketName output); "
                "run `qcbr aws check` to see what is missing"
            )
        self.project = self.config.project
        self.clients = AwsClients(self.config)
        self._store = None
        self.datasets = S3Datasets(_LazyStore(self))
        self.jobs = TrainingJobs(self.clients, self.datasets.store, self.config)
        self.endpoints = Endpoints(self.clients, self.datasets.store, self.config, self.describe_model_version)
        self.registry = Registry(self.clients, self.datasets.store, self.config, self.jobs,
                                 self.endpoints.version_map)
        self.predictions = Predictions(self.clients, self.datasets.store, self.endpoints)

    def __repr__(self) -> str:
        return f"AwsBackend(bucket={self.config.bucket!r}, project={self.project!r})"

    @property
    def store(self):
        """The project bucket as an ObjectStore (boto3 S3 behind it)."""
        if self._store is None:
            from qcbr.storage import S3ObjectStore

            self._store = S3ObjectStore(self.config.bucket, client=self.clients.s3)
        return self._store

    # datasets
    def upload_dataset(self, actor: Actor, case_base: Any, name: str) -> dict:
        return self.datasets.upload(actor, case_base, name)

    def list_datasets(self) -> list[dict]:
        return self.datasets.list()

    def describe_dataset(self, name: str, sha256: str | None = None) -> dict:
        return self.datasets.describe(name, sha256)

    def load_dataset(self, name: str, sha256: str | None = None) -> Any:
        return self.datasets.load(name, sha256)

    # training jobs
    def create_training_job(self, actor: Actor, dataset: str, hyperparameters: dict[str, Any],
                            job_name: str | None = None, dataset_sha256: str | None = None) -> dict:
        from qcbr.roles import require

        require(actor, "create_training_job")  # before any AWS call
        record = self.datasets.describe(dataset, dataset_sha256)
        return self.jobs.create(actor, record, hyperparameters or {}, job_name)

    def describe_training_job(self, name: str) -> dict:
        return self.jobs.describe(name)

    def list_training_jobs(self) -> list[dict]:
        return self.jobs.list()

    def stop_training_job(self, actor: Actor, name: str, wait: float = 0.0) -> dict:
        record = self.jobs.stop(actor, name)
        deadline = time.monotonic() + wait
        while record["TrainingJobStatus"] in ("InProgress", "Stopping") and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            record = self.jobs.describe(name)
        return record

    def wait_training_job(self, name: str, timeout: float | None = None,
                          progress: Callable[[dict], None] | None = None, poll: float = 10.0) -> dict:
        """Block until the job leaves InProgress/Stopping; ``progress(record)`` after each poll."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.jobs.describe(name, log_lines=0)
            if progress is not None:
                progress(record)
            if record["TrainingJobStatus"] not in ("InProgress", "Stopping"):
                return self.jobs.describe(name)
            if deadline is not None and time.monotonic() >= deadline:
                return self.jobs.describe(name)
            time.sleep(poll)

    def training_job_run(self, name: str) -> dict | None:
        """Runs are MLflow's, which the aws backend does not use: metrics are on the job and version."""
        return None

    # registry
    def register_model(self, actor: Actor, job_name: str, min_accuracy: float | None = None,
                       description: str = "") -> dict:
        return self.registry.register(actor, job_name, min_accuracy, description)

    def list_model_versions(self) -> list[dict]:
        return self.registry.list()

    def describe_model_version(self, version: int) -> dict:
        return self.registry.describe(version)

    def approve_model(self, actor: Actor, version: int, comment: str = "") -> dict:
        return self.registry.decide(actor, version, "Approved", comment)

    def reject_model(self, actor: Actor, version: int, comment: str = "") -> dict:
        return self.registry.decide(actor, version, "Rejected", comment)

    def latest_approved_version(self) -> dict | None:
        return self.registry.latest_approved()

    # endpoints
    def create_endpoint(self, actor: Actor, name: str, model_version: int, stage: str = "staging",
                        wait: bool = False) -> dict:
        return self.endpoints.create(actor, name, model_version, stage, wait=wait)

    def update_endpoint(self, actor: Actor, name: str, model_version: int) -> dict:
        return self.endpoints.update(actor, name, model_version)

    def describe_endpoint(self, name: str) -> dict:
        return self.endpoints.describe(name)

    def list_endpoints(self) -> list[dict]:
        return self.endpoints.list()

    def delete_endpoint(self, actor: Actor, name: str) -> None:
        self.endpoints.delete(actor, name)

    def restart_endpoint(self, actor: Actor, name: str, wait: bool = False) -> dict:
        return self.endpoints.restart(actor, name, wait=wait)

    def wait_endpoint(self, name: str, timeout: float = 1800.0) -> dict:
        """Block until the endpoint leaves Creating/Updating (SageMaker takes minutes)."""
        return self.endpoints.wait(name, timeout)

    # invocation, prediction store, ground truth
    def invoke(self, actor: Actor, endpoint: str, body: bytes | str | dict,
               content_type: str = "application/json") -> dict:
        return self.predictions.invoke(actor, endpoint, body, content_type)

    def list_predictions(self, endpoint: str | None = None, user: str | None = None,
                         limit: int | None = None) -> list[dict]:
        return self.predictions.list(endpoint, user, limit)

    def submit_ground_truth(self, actor: Actor, inference_id: str, label: Any) -> dict:
        return self.predictions.submit_ground_truth(actor, inference_id, label)

    def list_ground_truth(self, endpoint: str | None = None) -> list[dict]:
        return self.predictions.list_ground_truth(endpoint)

    # extras (as LocalBackend)
    def audit_log(self, limit: int | None = 100, action: str | None = None) -> list[dict]:
        """Who did what, newest first (one object per entry under audit/ in the bucket)."""
        import json

        keys = sorted(self.store.list("audit/"), reverse=True)
        out: list[dict] = []
        for key in keys:
            try:
                entry = json.loads(self.store.get(key))
            except ValueError:
                continue
            if action and entry.get("action") != action:
                continue
            out.append(entry)
            if limit is not None and len(out) >= limit:
                break
        return out

    def seed_demo(self, actor: Actor, progress: Callable[[float, str], None] | None = None) -> dict:
        raise StateError(
            "the demo seeds the local backend only (it trains and serves on this machine); "
            "unset QCBR_BACKEND or set QCBR_BACKEND=local to run `qcbr demo`"
        )

    def kill_all_processes(self) -> None:
        """Nothing to kill: SageMaker runs the jobs and endpoints."""


class _LazyStore:
    """The bucket store, created on first use so that constructing the backend contacts nothing."""

    def __init__(self, backend: AwsBackend):
        self._backend = backend

    @property
    def bucket(self) -> str:
        return self._backend.config.bucket

    def __getattr__(self, name: str):
        return getattr(self._backend.store, name)
