"""``AwsBackend``: the Backend protocol on SageMaker, S3 and the SageMaker Model Registry.

A facade (``qcbr.lifecycle.facade``) over small parts (datasets, training jobs, registry,
endpoints, predictions), each a slice of the project's bucket and of SageMaker, mirroring
``LocalBackend`` part for part: the same keys in the bucket, the same record shapes, the same role
checks. Constructing it contacts nothing; boto3 loads on the first call. ``AWS_ENDPOINT_URL``
points every client at another endpoint (moto's server in the tests).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from qcbr.config import Config, load_config
from qcbr.errors import ConfigError, StateError
from qcbr.lifecycle.aws.clients import AwsClients
from qcbr.lifecycle.aws.datasets import S3Datasets
from qcbr.lifecycle.aws.endpoints import Endpoints
from qcbr.lifecycle.aws.monitoring_rules import MonitoringRules
from qcbr.lifecycle.aws.predictions import Predictions
from qcbr.lifecycle.aws.records import append_audit, read_audit
from qcbr.lifecycle.aws.registry import Registry
from qcbr.lifecycle.aws.training import TrainingJobs
from qcbr.lifecycle.facade import PartsBackend
from qcbr.roles import Actor, require


class AwsBackend(PartsBackend):
    name = "aws"
    training_poll_s = 10.0
    endpoint_wait_s = 1800.0  # SageMaker takes minutes

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
        bucket = _LazyStore(self)
        self.audit = partial(append_audit, bucket)
        self.read_audit = partial(read_audit, bucket)
        self.datasets = S3Datasets(bucket)
        self.jobs = TrainingJobs(self.clients, bucket, self.config)
        self.endpoints = Endpoints(self.clients, bucket, self.config, self.describe_model_version)
        self.registry = Registry(self.clients, bucket, self.config, self.jobs, self.endpoints.version_map)
        self.predictions = Predictions(self.clients, bucket, self.endpoints)
        self.monitoring_rules = MonitoringRules(self.clients, self.project)

    def __repr__(self) -> str:
        return f"AwsBackend(bucket={self.config.bucket!r}, project={self.project!r})"

    @property
    def store(self):
        """The project bucket as an ObjectStore (boto3 S3 behind it)."""
        if self._store is None:
            from qcbr.storage import S3ObjectStore

            self._store = S3ObjectStore(self.config.bucket, client=self.clients.s3)
        return self._store

    def training_job_run(self, name: str) -> dict | None:
        """Runs are MLflow's, which the aws backend does not use: metrics are on the job and version."""
        return None

    def seed_demo(self, actor: Actor, progress: Callable[[float, str], None] | None = None) -> dict:
        raise StateError(
            "the demo seeds the local backend only (it trains and serves on this machine); "
            "unset QCBR_BACKEND or set QCBR_BACKEND=local to run `qcbr demo`"
        )

    def kill_all_processes(self) -> None:
        """Nothing to kill: SageMaker runs the jobs and endpoints."""

    # monitoring scheduler: the endpoint stacks' EventBridge rules (see monitoring_rules.py)
    def start_monitoring_scheduler(self, actor: Actor, every_minutes: float = 5.0) -> dict:
        """Enable the project's monitoring rules; returns ``monitoring_scheduler_status()``.

        ``every_minutes`` is the local scheduler's wake-up interval: here each rule keeps its
        stack's schedule, which the status reports (``every_minutes``, ``rules``)."""
        require(actor, "set_monitoring_policy")
        rules = self.monitoring_rules.set_enabled(True)
        self.audit(actor, "start_monitoring_scheduler", "monitoring-scheduler",
                   rules=[r["Name"] for r in rules], requested_every_minutes=every_minutes)
        return self.monitoring_rules.status(rules)

    def stop_monitoring_scheduler(self, actor: Actor) -> dict:
        """Disable the project's monitoring rules (on-demand runs still work)."""
        require(actor, "set_monitoring_policy")
        rules = self.monitoring_rules.set_enabled(False)
        self.audit(actor, "stop_monitoring_scheduler", "monitoring-scheduler", rules=[r["Name"] for r in rules])
        return self.monitoring_rules.status(rules)

    def monitoring_scheduler_status(self) -> dict:
        """``{running, pid (None), started (None), every_minutes, log (the rules' log groups), rules}``."""
        return self.monitoring_rules.status()


class _LazyStore:
    """The bucket store, created on first use so that constructing the backend contacts nothing."""

    def __init__(self, backend: AwsBackend):
        self._backend = backend

    @property
    def bucket(self) -> str:
        return self._backend.config.bucket

    def __getattr__(self, name: str):
        return getattr(self._backend.store, name)
