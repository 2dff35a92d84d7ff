"""``LocalBackend``: the Backend protocol on one machine, state in QCBR_HOME.

A facade over small managers (datasets, jobs + supervisor, MLflow tracking/registry, endpoints +
gateway, predictions); each one owns a slice of QCBR_HOME and its own locks, so any number of
backend instances in any number of processes (CLI commands, dashboard sessions, supervisors)
can share one home safely. Constructing it is cheap: nothing starts, mlflow and boto3 load on
first use.
"""
from __future__ import annotations

from typing import Any, Callable

from qcbr.config import Config, load_config
from qcbr.lifecycle.local.audit import append_audit, read_audit
from qcbr.lifecycle.local.datasets import DatasetStore
from qcbr.lifecycle.local.endpoints import EndpointManager
from qcbr.lifecycle.local.jobs import JobManager
from qcbr.lifecycle.local.predictions import PredictionStore
from qcbr.lifecycle.local.registry import Registry
from qcbr.lifecycle.local.state import Paths
from qcbr.lifecycle.local.tracking import Tracking
from qcbr.roles import Actor, require
from qcbr.storage import LocalObjectStore


class LocalBackend:
    name = "local"

    def __init__(self, config: Config | None = None):
        self.config = config or load_config()
        self.project = self.config.project
        self.paths = Paths(self.config.home)
        self.paths.home.mkdir(parents=True, exist_ok=True)
        self.store = LocalObjectStore(self.config.s3_root, self.config.bucket)
        self.datasets = DatasetStore(self.paths, self.store)
        self.jobs = JobManager(self.paths, self.store, self.project)
        self.tracking = Tracking(self.paths, self.project)
        self.endpoints = EndpointManager(self.paths, self.store, self.describe_model_version)
        self.registry = Registry(self.paths, self.tracking, self.jobs, self.project, self.endpoints.endpoints_for_version)
        self.predictions = PredictionStore(self.paths, self.store, self.endpoints)

    def __repr__(self) -> str:
        return f"LocalBackend(home={str(self.paths.home)!r}, project={self.project!r})"

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
        record = self.datasets.describe(dataset, dataset_sha256)
        return self.jobs.create(actor, record, hyperparameters or {}, job_name)

    def describe_training_job(self, name: str) -> dict:
        return self.jobs.describe(name)

    def list_training_jobs(self) -> list[dict]:
        return self.jobs.list()

    def stop_training_job(self, actor: Actor, name: str, wait: float = 0.0) -> dict:
        return self.jobs.stop(actor, name, wait=wait)

    def wait_training_job(self, name: str, timeout: float | None = None,
                          progress: Callable[[dict], None] | None = None, poll: float = 0.5) -> dict:
        """Block until the job leaves InProgress/Stopping; ``progress(record)`` after each poll."""
        import time

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
        """The job's MLflow run (params, metrics, artifact dir), or None before it exists."""
        run_id = self.jobs.describe(name, log_lines=0)["Lineage"]["MlflowRunId"]
        return self.tracking.run(run_id) if run_id else None

    # registry
    def register_model(self, actor: Actor, job_name: str, min_accuracy: float | None = None,
                       description: str = "") -> dict:
        return self.registry.register(actor, job_name, min_accuracy, description)

    def list_model_versions(self) -> list[dict]:
        return self.registry.list()

    def describe_model_version(self, version: int) -> dict:
        return self.registry.describe(version)

    def approve_model(self, actor: Actor, version: int, comment: str = "") -> dict:
        return self.registry.approve(actor, version, comment)

    def reject_model(self, actor: Actor, version: int, comment: str = "") -> dict:
        return self.registry.reject(actor, version, comment)

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

    def wait_endpoint(self, name: str, timeout: float = 130.0) -> dict:
        """Block until the endpoint leaves Creating/Updating (InService or Failed)."""
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

    # extras
    def audit_log(self, limit: int | None = 100, action: str | None = None) -> list[dict]:
        """Who did what, newest first."""
        return read_audit(self.paths.audit, limit, action)

    def seed_demo(self, actor: Actor, progress: Callable[[float, str], None] | None = None) -> dict:
        from qcbr.lifecycle.local.demo import seed_demo

        return seed_demo(self, actor, progress=progress)

    # monitoring scheduler: a detached process here; on AWS an EventBridge schedule drives the job
    def start_monitoring_scheduler(self, actor: Actor, every_minutes: float = 5.0) -> dict:
        """Start the scheduler that runs due monitoring schedules (a no-op when one already runs);
        returns ``monitoring_scheduler_status()``."""
        from qcbr.monitoring.scheduler import start_scheduler

        require(actor, "set_monitoring_policy")
        status = start_scheduler(self.paths.home, every_minutes)
        append_audit(self.paths.audit, actor, "start_monitoring_scheduler", "monitoring-scheduler",
                     every_minutes=status.get("every_minutes"), pid=status.get("pid"))
        return status

    def stop_monitoring_scheduler(self, actor: Actor) -> dict:
        from qcbr.monitoring.scheduler import stop_scheduler

        require(actor, "set_monitoring_policy")
        status = stop_scheduler(self.paths.home)
        append_audit(self.paths.audit, actor, "stop_monitoring_scheduler", "monitoring-scheduler")
        return status

    def monitoring_scheduler_status(self) -> dict:
        """``{running, pid, started, every_minutes, log}``."""
        from qcbr.monitoring.scheduler import scheduler_status

        return scheduler_status(self.paths.home)

    def kill_all_processes(self) -> None:
        """SIGKILL every process this home started (jobs, endpoint servers, gateway, monitoring
        scheduler): tests' clean-up."""
        from qcbr.monitoring.scheduler import stop_scheduler

        self.jobs.kill_all()
        self.endpoints.kill_all()
        stop_scheduler(self.paths.home, grace=0.0)
