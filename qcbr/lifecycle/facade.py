"""The Backend protocol as a facade over a backend's parts, written once for both backends.

Each backend builds the same five parts over its own storage and services -- ``datasets``,
``jobs``, ``registry``, ``endpoints``, ``predictions`` -- with the same method names, and an
audit log (``audit`` to append, ``read_audit`` to read). ``PartsBackend`` maps the protocol onto
them; a backend class adds its constructor and what only it has (runs, the demo, processes,
the monitoring scheduler).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from qcbr.lifecycle.checks import ACTIVE_JOB
from qcbr.lifecycle.records import Audit
from qcbr.roles import Actor, require


class PartsBackend:
    name: str
    project: str
    datasets: Any
    jobs: Any
    registry: Any
    endpoints: Any
    predictions: Any
    audit: Audit  # (actor, action, target, **details) -> entry
    read_audit: Callable[[int | None, str | None], list[dict]]  # (limit, action) -> entries, newest first

    training_poll_s = 10.0  # wait_training_job's default poll
    endpoint_wait_s = 1800.0  # wait_endpoint's default timeout

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
        require(actor, "create_training_job")  # before reading anything: no dataset names to outsiders
        record = self.datasets.describe(dataset, dataset_sha256)
        return self.jobs.create(actor, record, hyperparameters or {}, job_name)

    def describe_training_job(self, name: str) -> dict:
        return self.jobs.describe(name)

    def list_training_jobs(self) -> list[dict]:
        return self.jobs.list()

    def stop_training_job(self, actor: Actor, name: str, wait: float = 0.0) -> dict:
        return self.jobs.stop(actor, name, wait=wait)

    def wait_training_job(self, name: str, timeout: float | None = None,
                          progress: Callable[[dict], None] | None = None, poll: float | None = None) -> dict:
        """Block until the job leaves InProgress/Stopping; ``progress(record)`` after each poll."""
        poll = self.training_poll_s if poll is None else poll
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.jobs.describe(name, log_lines=0)
            if progress is not None:
                progress(record)
            if record["TrainingJobStatus"] not in ACTIVE_JOB or (deadline is not None and time.monotonic() >= deadline):
                return self.jobs.describe(name)
            time.sleep(poll)

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

    def wait_endpoint(self, name: str, timeout: float | None = None) -> dict:
        """Block until the endpoint leaves Creating/Updating (InService or Failed)."""
        return self.endpoints.wait(name, self.endpoint_wait_s if timeout is None else timeout)

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

    # the audit log
    def audit_log(self, limit: int | None = 100, action: str | None = None) -> list[dict]:
        """Who did what, newest first."""
        return self.read_audit(limit, action)

    def record_audit(self, actor: Actor, action: str, target: str, **details: Any) -> dict:
        """Append an entry for what a caller did through the backend on someone's behalf (the
        monitoring policy's automated retrain: its system actor and who triggered it)."""
        return self.audit(actor, action, target, **details)
