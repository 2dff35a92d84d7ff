"""The process that runs one local training job from start to a final status.

Started detached by ``JobManager.create``; it outlives the CLI command or dashboard that
launched it. It lays out the /opt/ml-shaped job directory, runs the SageMaker training
entrypoint (``python -m qcbr.training.train``) as a child, and records the outcome:

- exit 0 -> tar ``model/`` to ``s3://<bucket>/jobs/<job>/output/model.tar.gz``, log the MLflow run
  (params, metrics, artifacts), Completed;
- non-zero exit or a signal -> Failed with the reason (``output/failure``, or "training process
  killed by SIGKILL"), no artifact;
- SIGTERM to the supervisor (``stop_training_job``) -> SIGTERM to training, SIGKILL after a
  grace period, Stopped.

Usage: ``python -m qcbr.lifecycle.local.supervisor --job-dir JOBS/<job>``
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from qcbr.lifecycle.local.jobs import finish, transition, update_status
from qcbr.lifecycle.local.state import Paths
from qcbr.lifecycle.records import utcnow
from qcbr.storage import LocalObjectStore, atomic_write_json, read_json

STOP_GRACE_S = 10.0
TRAIN_MODULE = "qcbr.training.train"


def signal_reason(returncode: int) -> str:
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"training process killed by {name}"


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric scalars as they are; one level of dicts as ``name:key`` (per-class recall)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, (int, float)) and not isinstance(inner, bool):
                    out[f"{key}:{sub}"] = float(inner)
    return out


def tar_model(model_dir: Path) -> bytes:
    """model.tar.gz with the files at its root, as SageMaker extracts it into /opt/ml/model."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(model_dir)))
    return buf.getvalue()


class Supervisor:
    def __init__(self, job_dir: Path):
        self.job_dir = job_dir.resolve()
        self.record = read_json(job_dir / "status.json")
        internal = self.record["Internal"]
        self.name = self.record["TrainingJobName"]
        self.paths = Paths(internal["Home"])
        self.store = LocalObjectStore(internal["S3Root"], internal["Bucket"])
        self.project = internal["Project"]
        self.stop_requested = False
        self.child: subprocess.Popen | None = None
        self.run_id: str | None = None
        self._tracking = None

    def say(self, message: str) -> None:
        print(f"[supervisor {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def update(self, change) -> dict:
        self.record = update_status(self.job_dir, change)
        return self.record

    @property
    def tracking(self):
        if self._tracking is None:
            from qcbr.lifecycle.local.tracking import Tracking

            self._tracking = Tracking(self.paths, self.project)
        return self._tracking

    def _on_term(self, signum, frame) -> None:
        self.stop_requested = True
        if self.child is not None and self.child.poll() is None:
            try:
                self.child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    # -- steps ----------------------------------------------------------------------------------
    def layout(self) -> None:
        """The /opt/ml contract: config files, the train channel, empty model/ and output/."""
        hps = self.record["HyperParameters"]
        config = self.job_dir / "input" / "config"
        atomic_write_json(config / "hyperparameters.json", hps)
        atomic_write_json(config / "inputdataconfig.json", {
            "train": {"ContentType": "application/x-parquet", "TrainingInputMode": "File",
                      "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
        })
        atomic_write_json(config / "resourceconfig.json", {
            "current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo",
        })
        channel = self.job_dir / "input" / "data" / "train"
        channel.mkdir(parents=True, exist_ok=True)
        lineage = self.record["Lineage"]
        prefix = f"datasets/{lineage['DatasetName']}/{lineage['DatasetSha256']}"
        for filename in ("cases.parquet", "schema.json"):
            source = self.store.path(f"{prefix}/{filename}")
            if not source.is_file():
                raise FileNotFoundError(f"dataset file {self.store.uri(prefix + '/' + filename)} is missing")
            shutil.copyfile(source, channel / filename)
        for folder in ("model", "output/data", "code"):
            (self.job_dir / folder).mkdir(parents=True, exist_ok=True)

    def start_training(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.update({
            "SM_ROOT": str(self.job_dir),
            "QCBR_OPT_ML": str(self.job_dir),
            "SM_MODEL_DIR": str(self.job_dir / "model"),
            "SM_CHANNEL_TRAIN": str(self.job_dir / "input" / "data" / "train"),
            "SM_CHANNELS": json.dumps(["train"]),
            "SM_HPS": json.dumps(self.record["HyperParameters"]),
            "SM_OUTPUT_DIR": str(self.job_dir / "output"),
            "SM_OUTPUT_DATA_DIR": str(self.job_dir / "output" / "data"),
            "SM_INPUT_DIR": str(self.job_dir / "input"),
            "SM_INPUT_CONFIG_DIR": str(self.job_dir / "input" / "config"),
            "SM_CURRENT_HOST": "algo-1",
            "SM_HOSTS": json.dumps(["algo-1"]),
            "TRAINING_JOB_NAME": self.name,
            "TRAINING_JOB_ARN": self.record["TrainingJobArn"],
            "QCBR_DATASET_NAME": self.record["Lineage"]["DatasetName"],
            "PYTHONUNBUFFERED": "1",
        })
        return subprocess.Popen(
            [sys.executable, "-m", TRAIN_MODULE], cwd=self.job_dir, env=env,
            stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=subprocess.STDOUT,
        )

    def wait_training(self) -> int:
        assert self.child is not None
        stop_deadline: float | None = None
        while True:
            try:
                return self.child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if self.stop_requested:
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + STOP_GRACE_S
                    self.child.send_signal(signal.SIGTERM)
                elif time.monotonic() > stop_deadline:
                    self.say("training did not stop after SIGTERM; sending SIGKILL")
                    self.child.kill()

    def failure_reason(self, returncode: int) -> str:
        failure = self.job_dir / "output" / "failure"
        if failure.is_file():
            text = failure.read_text(errors="replace").strip()
            if text:
                return text[:1024]
        if returncode < 0:
            return signal_reason(returncode)
        return f"training process exited with code {returncode} and wrote no output/failure; see the job log"

    def publish(self) -> tuple[str, dict[str, float], dict]:
        """Upload model.tar.gz and log the MLflow run; returns (artifact URI, metrics, raw metrics)."""
        model_dir = self.job_dir / "model"
        metrics_file = model_dir / "metrics.json"
        if not (model_dir / "MANIFEST.json").is_file() or not metrics_file.is_file():
            raise RuntimeError("training exited 0 but model/ lacks MANIFEST.json or metrics.json")
        raw = read_json(metrics_file)
        metrics = flatten_metrics(raw)
        key = f"jobs/{self.name}/output/model.tar.gz"
        artifact = self.job_dir / "output" / "model.tar.gz"
        artifact.write_bytes(tar_model(model_dir))
        uri = self.store.put(key, artifact.read_bytes())
        if self.run_id:
            self.tracking.log_metrics(self.run_id, metrics)
            self.tracking.log_artifact(self.run_id, artifact, "model")
            for filename in ("model_card.md", "statistics.json", "constraints.json", "metrics.json"):
                if (model_dir / filename).is_file():
                    self.tracking.log_artifact(self.run_id, model_dir / filename)
            schema = self.job_dir / "output" / "data" / "feature_schema.json"
            if schema.is_file():
                self.tracking.log_artifact(self.run_id, schema)
        return uri, metrics, raw

    def start_run(self) -> None:
        lineage = self.record["Lineage"]
        params = dict(self.record["HyperParameters"])
        params.update({"dataset_name": lineage["DatasetName"], "dataset_sha256": lineage["DatasetSha256"]})
        self.run_id = self.tracking.start_run(self.name, params, {
            "TrainingJobName": self.name,
            "DatasetName": lineage["DatasetName"],
            "DatasetSha256": lineage["DatasetSha256"],
            "CreatedBy": self.record.get("CreatedBy") or "",
            "mlflow.source.name": TRAIN_MODULE,
            "mlflow.user": self.record.get("CreatedBy") or "",
        })
        run_id = self.run_id

        def note(r: dict) -> None:
            r["Lineage"]["MlflowRunId"] = run_id

        self.update(note)

    # -- main -----------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)

        def begin(r: dict) -> None:
            r["Internal"]["SupervisorPid"] = os.getpid()
            r["TrainingStartTime"] = utcnow()
            transition(r, "Downloading", "Downloading the training data")
        self.update(begin)
        try:
            if self.stop_requested:
                return self.end_stopped()
            self.say(f"job {self.name}: laying out {self.job_dir}")
            self.layout()
            if self.stop_requested:
                return self.end_stopped()

            self.child = self.start_training()
            child_pid = self.child.pid

            def training(r: dict) -> None:
                r["Internal"]["TrainingPid"] = child_pid
                transition(r, "Training", "Training image download completed. Training in progress.")
            self.update(training)
            self.say(f"started {TRAIN_MODULE} (pid {child_pid})")
            try:
                self.start_run()  # overlaps with training: mlflow takes a while to import
            except Exception as exc:  # noqa: BLE001 - recorded as the failure reason
                self.child.kill()
                self.child.wait()
                return self.end_failed(f"could not start the MLflow run: {type(exc).__name__}: {exc}")
            returncode = self.wait_training()
            self.say(f"training exited with code {returncode}")
            if self.stop_requested:
                return self.end_stopped()
            if returncode != 0:
                return self.end_failed(self.failure_reason(returncode))

            self.update(lambda r: transition(r, "Uploading", "Uploading generated training model"))
            try:
                uri, metrics, _raw = self.publish()
            except Exception as exc:  # noqa: BLE001
                self.store.delete(f"jobs/{self.name}/output/model.tar.gz")
                return self.end_failed(f"could not publish the model: {type(exc).__name__}: {exc}")
            if self.run_id:
                self.tracking.end_run(self.run_id, "FINISHED")

            def completed(r: dict) -> None:
                r["ModelArtifacts"] = {"S3ModelArtifacts": uri}
                r["FinalMetricDataList"] = [
                    {"MetricName": k, "Value": v, "Timestamp": utcnow()} for k, v in sorted(metrics.items())
                ]
                finish(r, "Completed", "Completed", "Training job completed")
            self.update(completed)
            self.say(f"completed; model at {uri}")
            return 0
        except Exception as exc:  # noqa: BLE001 - never leave the record InProgress
            if self.child is not None and self.child.poll() is None:
                self.child.kill()
                self.child.wait()
            self.store.delete(f"jobs/{self.name}/output/model.tar.gz")
            return self.end_failed(f"training job supervisor failed: {type(exc).__name__}: {exc}")

    def end_failed(self, reason: str) -> int:
        self.say(f"failed: {reason}")
        self.update(lambda r: finish(r, "Failed", "Failed", "Training job failed", reason))
        self._close_run("FAILED")
        return 1

    def end_stopped(self) -> int:
        self.say("stopped")
        self.store.delete(f"jobs/{self.name}/output/model.tar.gz")
        self.update(lambda r: finish(r, "Stopped", "Stopped", "Training job stopped"))
        self._close_run("KILLED")
        return 0

    def _close_run(self, status: str) -> None:
        if self.run_id:
            try:
                self.tracking.end_run(self.run_id, status)
            except Exception as exc:  # noqa: BLE001
                self.say(f"could not close MLflow run {self.run_id}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    return Supervisor(args.job_dir).run()


if __name__ == "__main__":
    sys.exit(main())
