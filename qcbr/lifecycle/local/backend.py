"""``LocalBackend``: the Backend protocol on one machine, state in QCBR_HOME.

A facade (``qcbr.lifecycle.facade``) over small managers (datasets, jobs + supervisor, MLflow
tracking/registry, endpoints + gateway, predictions); each one owns a slice of QCBR_HOME and its
own locks, so any number of backend instances in any number of processes (CLI commands, dashboard
sessions, supervisors) can share one home safely. Constructing it is cheap: nothing starts,
mlflow and boto3 load on first use.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from qcbr.config import Config, load_config
from qcbr.lifecycle.facade import PartsBackend
from qcbr.lifecycle.local.audit import append_audit, read_audit
from qcbr.lifecycle.local.datasets import LocalDatasets
from qcbr.lifecycle.local.endpoints import EndpointManager
from qcbr.lifecycle.local.jobs import JobManager
from qcbr.lifecycle.local.predictions import LocalPredictions
from qcbr.lifecycle.local.registry import Registry
from qcbr.lifecycle.local.state import Paths
from qcbr.lifecycle.local.tracking import Tracking
from qcbr.roles import Actor, require
from qcbr.storage import LocalObjectStore


class LocalBackend(PartsBackend):
    name = "local"
    training_poll_s = 0.5
    endpoint_wait_s = 130.0

    def __init__(self, config: Config | None = None):
        self.config = config or load_config()
        self.project = self.config.project
        self.paths = Paths(self.config.home)
        self.paths.home.mkdir(parents=True, exist_ok=True)
        self.store = LocalObjectStore(self.config.s3_root, self.config.bucket)
        self.audit = partial(append_audit, self.paths.audit)
        self.read_audit = partial(read_audit, self.paths.audit)
        self.datasets = LocalDatasets(self.paths, self.store)
        self.jobs = JobManager(self.paths, self.store, self.project)
        self.tracking = Tracking(self.paths, self.project)
        self.endpoints = EndpointManager(self.paths, self.store, self.describe_model_version)
        self.registry = Registry(self.paths, self.tracking, self.jobs, self.project, self.endpoints.endpoints_for_version)
        self.predictions = LocalPredictions(self.paths, self.store, self.endpoints)

    def __repr__(self) -> str:
        return f"LocalBackend(home={str(self.paths.home)!r}, project={self.project!r})"

    def training_job_run(self, name: str) -> dict | None:
        """The job's MLflow run (params, metrics, artifact dir), or None before it exists."""
        run_id = self.jobs.describe(name, log_lines=0)["Lineage"]["MlflowRunId"]
        return self.tracking.run(run_id) if run_id else None

    def seed_demo(self, actor: Actor, progress: Callable[[float, str], None] | None = None) -> dict:
        from qcbr.lifecycle.local.demo import seed_demo

        return seed_demo(self, actor, progress=progress)

    # monitoring scheduler: a detached process here; on AWS the endpoint stacks' EventBridge rules
    def start_monitoring_scheduler(self, actor: Actor, every_minutes: float = 5.0) -> dict:
        """Start the scheduler that runs due monitoring schedules (a no-op when one already runs);
        returns ``monitoring_scheduler_status()``."""
        from qcbr.monitoring.scheduler import start_scheduler

        require(actor, "set_monitoring_policy")
        status = start_scheduler(self.paths.home, every_minutes)
        self.audit(actor, "start_monitoring_scheduler", "monitoring-scheduler",
                   every_minutes=status.get("every_minutes"), pid=status.get("pid"))
        return status

    def stop_monitoring_scheduler(self, actor: Actor) -> dict:
        from qcbr.monitoring.scheduler import stop_scheduler

        require(actor, "set_monitoring_policy")
        status = stop_scheduler(self.paths.home)
        self.audit(actor, "stop_monitoring_scheduler", "monitoring-scheduler")
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
