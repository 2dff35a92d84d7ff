"""Training jobs as detached, supervised subprocesses in SageMaker's /opt/ml layout.

``JobManager`` creates the job directory and its ``status.json`` and starts the supervisor
(``qcbr.lifecycle.local.supervisor``), which runs the training entrypoint and records the outcome.
Describing a job reconciles the record with reality: a job whose supervisor is gone while the
record still says InProgress becomes Failed ("job process disappeared"), so no job stays
InProgress forever.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from qcbr.errors import NotFoundError, StateError
from qcbr.lifecycle.checks import ACTIVE_JOB as ACTIVE
from qcbr.lifecycle.checks import check_stoppable, prepare_training_job
from qcbr.lifecycle.local import procs
from qcbr.lifecycle.local.audit import append_audit
from qcbr.lifecycle.local.state import Paths, file_lock, update_json
from qcbr.lifecycle.records import job_lineage, parse_time, slug, stamp, training_channel, utcnow
from qcbr.roles import Actor, require
from qcbr.storage import LocalObjectStore, read_json

SUPERVISOR_MODULE = "qcbr.lifecycle.local.supervisor"
# a record with no supervisor pid this long after creation means the starter died mid-start
START_GRACE_S = 60.0
LOG_NAME = "job.log"


def job_arn(name: str) -> str:
    return f"arn:aws:sagemaker:local:000000000000:training-job/{name.lower()}"


def status_path(job_dir: Path) -> Path:
    return job_dir / "status.json"


def status_lock(job_dir: Path) -> Path:
    return job_dir / "status.lock"


def update_status(job_dir: Path, change: Callable[[dict], Any]) -> dict:
    return update_json(status_path(job_dir), status_lock(job_dir), change)


def transition(record: dict, secondary: str, message: str) -> None:
    """Move SecondaryStatus on, keeping SageMaker's SecondaryStatusTransitions trail."""
    now = utcnow()
    trail = record.setdefault("SecondaryStatusTransitions", [])
    if trail and trail[-1].get("EndTime") is None:
        trail[-1]["EndTime"] = now
    trail.append({"Status": secondary, "StartTime": now, "EndTime": None, "StatusMessage": message})
    record["SecondaryStatus"] = secondary


def finish(record: dict, status: str, secondary: str, message: str, reason: str | None = None) -> None:
    transition(record, secondary, message)
    record["SecondaryStatusTransitions"][-1]["EndTime"] = record["SecondaryStatusTransitions"][-1]["StartTime"]
    record["TrainingJobStatus"] = status
    record["FailureReason"] = reason
    record["TrainingEndTime"] = record.get("TrainingEndTime") or utcnow()
    record["LastModifiedTime"] = utcnow()


def default_job_name(dataset: str) -> str:
    return f"{slug(dataset, 30, fallback='job')}-{stamp()}-{secrets.token_hex(2)}"


def python_env() -> dict[str, str]:
    """The environment child processes get: ours, with this qcbr importable from any cwd."""
    import qcbr

    env = dict(os.environ)
    root = str(Path(qcbr.__file__).resolve().parent.parent)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class JobManager:
    def __init__(self, paths: Paths, store: LocalObjectStore, project: str):
        self.paths = paths
        self.store = store
        self.project = project

    # -- create ---------------------------------------------------------------------------------
    def create(self, actor: Actor, dataset: dict, hyperparameters: dict[str, Any], job_name: str | None = None) -> dict:
        name, hps = prepare_training_job(actor, hyperparameters, job_name,
                                         lambda: default_job_name(dataset["DatasetName"]))
        job_dir = self.paths.job(name)
        self.paths.jobs.mkdir(parents=True, exist_ok=True)
        try:
            job_dir.mkdir()
        except FileExistsError:
            raise StateError(f"training job {name!r} already exists; pick another --job-name") from None
        now = utcnow()
        record = {
            "TrainingJobName": name,
            "TrainingJobArn": job_arn(name),
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Starting",
            "SecondaryStatusTransitions": [
                {"Status": "Starting", "StartTime": now, "EndTime": None,
                 "StatusMessage": "Launching the training job supervisor"}
            ],
            "FailureReason": None,
            "HyperParameters": hps,
            "AlgorithmSpecification": {"TrainingImage": "qcbr-local", "TrainingInputMode": "File"},
            "InputDataConfig": [training_channel(dataset["S3Uri"])],
            "OutputDataConfig": {"S3OutputPath": self.store.uri("jobs")},
            "ModelArtifacts": None,
            "CreationTime": now,
            "TrainingStartTime": None,
            "TrainingEndTime": None,
            "LastModifiedTime": now,
            "FinalMetricDataList": [],
            "Lineage": job_lineage(dataset),
            "CreatedBy": actor.name,
            "Internal": {
                "Project": self.project,
                "Bucket": self.store.bucket,
                "S3Root": str(self.store.root),
                "Home": str(self.paths.home),
                "SupervisorPid": None,
                "TrainingPid": None,
            },
        }
        from qcbr.storage import atomic_write_json

        with file_lock(status_lock(job_dir)):
            atomic_write_json(status_path(job_dir), record)
        try:
            pid = procs.spawn_detached(
                [sys.executable, "-m", SUPERVISOR_MODULE, "--job-dir", str(job_dir)],
                job_dir / LOG_NAME, env=python_env(), cwd=job_dir,
            )
        except Exception as exc:
            update_status(job_dir, lambda r: finish(r, "Failed", "Failed", "Could not start", f"could not start the job: {exc}"))
            raise StateError(f"could not start training job {name}: {exc}") from None

        def set_pid(r: dict) -> None:
            # the supervisor may already have written it (and more); never go backwards
            r["Internal"]["SupervisorPid"] = r["Internal"].get("SupervisorPid") or pid

        update_status(job_dir, set_pid)
        append_audit(self.paths.audit, actor, "create_training_job", name,
                     dataset=dataset["DatasetName"], sha256=dataset["Sha256"], hyperparameters=hps)
        return self.describe(name)

    # -- read -----------------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise NotFoundError(f"no training job named {name!r}")
        job_dir = self.paths.job(name)
        if not status_path(job_dir).is_file():
            raise NotFoundError(f"no training job named {name!r}; see `qcbr jobs list`")
        return job_dir

    def _alive(self, job_dir: Path, record: dict) -> bool:
        return procs.is_alive(record["Internal"].get("SupervisorPid"), SUPERVISOR_MODULE, str(job_dir))

    def reconcile(self, job_dir: Path) -> dict:
        """Bring an active record in line with its processes (called on every describe)."""
        record = read_json(status_path(job_dir))
        if record["TrainingJobStatus"] not in ACTIVE or self._alive(job_dir, record):
            return record
        lost: dict[str, Any] = {}

        def settle(r: dict) -> None:
            # re-check under the lock: the supervisor writes its final status under it
            if r["TrainingJobStatus"] not in ACTIVE or self._alive(job_dir, r):
                return
            pid = r["Internal"].get("SupervisorPid")
            if pid is None:
                created = parse_time(r["CreationTime"])
                if created and (datetime.now(timezone.utc) - created).total_seconds() < START_GRACE_S:
                    return  # still starting
            lost["training_pid"] = r["Internal"].get("TrainingPid")
            lost["run_id"] = r["Lineage"].get("MlflowRunId")
            if r["TrainingJobStatus"] == "Stopping":
                finish(r, "Stopped", "Stopped", "Training job stopped")
                lost["status"] = "KILLED"
            else:
                reason = ("job process never started; launch the run again" if pid is None else
                          f"job process disappeared (supervisor pid {pid} is gone: killed, or the machine "
                          "restarted); launch the run again")
                finish(r, "Failed", "Failed", "Training job failed", reason)
                lost["status"] = "FAILED"
            r["ModelArtifacts"] = None

        record = update_status(job_dir, settle)
        if lost:
            # an orphaned training child must not keep running (or upload) behind a dead record
            tpid = lost.get("training_pid")
            if tpid and procs.is_alive(tpid, "qcbr.training.train"):
                os.kill(tpid, signal.SIGKILL)
            self.store.delete(f"jobs/{record['TrainingJobName']}/output/model.tar.gz")
            if lost.get("run_id"):
                self._close_run(lost["run_id"], lost["status"])
        return record

    def _close_run(self, run_id: str, status: str) -> None:
        try:
            from qcbr.lifecycle.local.tracking import Tracking

            Tracking(self.paths, self.project).end_run(run_id, status)
        except Exception:  # the job record is the truth; the run is best effort here
            pass

    def _public(self, job_dir: Path, record: dict, log_lines: int = 60) -> dict:
        out = {k: v for k, v in record.items() if k != "Internal"}
        try:
            progress = read_json(job_dir / "output" / "data" / "progress.json", default={})
        except ValueError:
            progress = {}
        if record["TrainingJobStatus"] == "Completed":
            fraction, message = 1.0, progress.get("message") or "Completed"
        else:
            fraction = float(progress.get("fraction", 0.0) or 0.0)
            message = progress.get("message") or record["SecondaryStatusTransitions"][-1].get("StatusMessage", "")
            if record["TrainingJobStatus"] in ("Failed", "Stopped"):
                message = record.get("FailureReason") or record["TrainingJobStatus"]
        out["Progress"] = {"Fraction": max(0.0, min(1.0, fraction)), "Message": message}
        out["Log"] = procs.log_tail(job_dir / LOG_NAME, max_lines=log_lines) if log_lines else ""
        return out

    def describe(self, name: str, log_lines: int = 60) -> dict:
        job_dir = self._dir(name)
        return self._public(job_dir, self.reconcile(job_dir), log_lines)

    def list(self) -> list[dict]:
        """Newest first; each reconciled, without the log (describe a job for it)."""
        if not self.paths.jobs.is_dir():
            return []
        out = []
        for job_dir in self.paths.jobs.iterdir():
            if status_path(job_dir).is_file():
                try:
                    out.append(self._public(job_dir, self.reconcile(job_dir), log_lines=0))
                except (ValueError, KeyError):  # an unreadable foreign folder is not a job
                    continue
        out.sort(key=lambda r: r["CreationTime"], reverse=True)
        return out

    def model_dir(self, name: str) -> Path:
        return self._dir(name) / "model"

    def output_data_dir(self, name: str) -> Path:
        return self._dir(name) / "output" / "data"

    # -- stop -----------------------------------------------------------------------------------
    def stop(self, actor: Actor, name: str, wait: float = 0.0) -> dict:
        require(actor, "stop_training_job")
        job_dir = self._dir(name)
        check_stoppable(name, self.reconcile(job_dir)["TrainingJobStatus"])
        pid_box: dict[str, Any] = {}

        def mark(r: dict) -> None:
            if r["TrainingJobStatus"] == "InProgress":
                r["TrainingJobStatus"] = "Stopping"
                transition(r, "Stopping", f"Stop requested by {actor.name}")
                r["LastModifiedTime"] = utcnow()
            pid_box["pid"] = r["Internal"].get("SupervisorPid")

        update_status(job_dir, mark)
        append_audit(self.paths.audit, actor, "stop_training_job", name)
        pid = pid_box.get("pid")
        if pid and procs.is_alive(pid, SUPERVISOR_MODULE, str(job_dir)):
            # the supervisor forwards SIGTERM to training and escalates to SIGKILL after a grace
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while True:
            record = self.describe(name)
            if record["TrainingJobStatus"] not in ACTIVE or time.monotonic() >= deadline:
                return record
            time.sleep(0.1)

    # -- processes ------------------------------------------------------------------------------
    def kill_all(self) -> None:
        """SIGKILL every job's process group (tests and `qcbr` clean-up)."""
        if not self.paths.jobs.is_dir():
            return
        for job_dir in self.paths.jobs.iterdir():
            try:
                record = read_json(status_path(job_dir))
            except (FileNotFoundError, ValueError):
                continue
            pid = record.get("Internal", {}).get("SupervisorPid")
            if pid and procs.is_alive(pid, SUPERVISOR_MODULE, str(job_dir)):
                procs.signal_group(pid, signal.SIGKILL)
            tpid = record.get("Internal", {}).get("TrainingPid")
            if tpid and procs.is_alive(tpid, "qcbr.training.train"):
                os.kill(tpid, signal.SIGKILL)
