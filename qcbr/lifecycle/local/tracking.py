"""MLflow on SQLite in QCBR_HOME: one run per training job, and the model registry.

mlflow is imported only here and only when first used (it takes a second or two). Every call
holds a file lock: SQLite tolerates one writer at a time, and two supervisors finishing at once
(or a registration racing a job) must queue rather than fail with "database is locked".
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

from qcbr.errors import NotFoundError
from qcbr.lifecycle.local.state import Paths, file_lock

_METRIC_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]+")


def metric_key(name: str) -> str:
    return _METRIC_KEY_BAD.sub("_", str(name))[:250]


def uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"not a local artifact location: {uri}")
    return Path(unquote(parsed.path))


class Tracking:
    def __init__(self, paths: Paths, project: str):
        self.paths = paths
        self.project = project
        self._client = None
        self._experiment_id: str | None = None

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.paths.mlflow_db}"

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        with file_lock(self.paths.lock("mlflow")):
            yield self._get_client()

    def _get_client(self):
        if self._client is None:
            for name in ("mlflow", "alembic", "sqlalchemy"):
                logging.getLogger(name).setLevel(logging.WARNING)
            from mlflow.tracking import MlflowClient

            self.paths.home.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    def _experiment(self, client) -> str:
        if self._experiment_id is None:
            exp = client.get_experiment_by_name(self.project)
            if exp is None:
                location = (self.paths.mlartifacts / self.project).resolve()
                location.mkdir(parents=True, exist_ok=True)
                self._experiment_id = client.create_experiment(self.project, artifact_location=location.as_uri())
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    # -- runs -----------------------------------------------------------------------------------
    def start_run(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        from mlflow.entities import Param, RunTag

        with self._locked() as client:
            run = client.create_run(self._experiment(client), run_name=run_name, tags=tags)
            if params:
                client.log_batch(run.info.run_id, params=[Param(str(k), str(v)[:6000]) for k, v in params.items()])
            return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, 0) for k, v in metrics.items()]
        with self._locked() as client:
            for start in range(0, len(items), 500):
                client.log_batch(run_id, metrics=items[start:start + 500])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        with self._locked() as client:
            client.log_artifact(run_id, str(path), artifact_path)

    def end_run(self, run_id: str, status: str) -> None:
        """status: FINISHED | FAILED | KILLED."""
        with self._locked() as client:
            run = client.get_run(run_id)
            if run.info.status in ("RUNNING", "SCHEDULED"):
                client.set_terminated(run_id, status)

    def run(self, run_id: str) -> dict:
        from mlflow.exceptions import MlflowException

        with self._locked() as client:
            try:
                run = client.get_run(run_id)
            except MlflowException:
                raise NotFoundError(f"no MLflow run {run_id} in {self.uri}") from None
        return {
            "RunId": run.info.run_id,
            "Status": run.info.status,
            "Params": dict(run.data.params),
            "Metrics": dict(run.data.metrics),
            "Tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            "ArtifactUri": run.info.artifact_uri,
            "ArtifactDir": str(uri_to_path(run.info.artifact_uri)),
        }

    # -- registry -------------------------------------------------------------------------------
    def _ensure_model(self, client) -> None:
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(self.project)
        except MlflowException:
            client.create_registered_model(
                self.project, description=f"qCBR model package group for project {self.project}"
            )

    def create_version(self, run_id: str, source: str, tags: dict[str, str], description: str = "") -> Any:
        with self._locked() as client:
            self._ensure_model(client)
            return client.create_model_version(
                self.project, source=source, run_id=run_id, tags=tags, description=description or None
            )

    def get_version(self, version: int) -> Any:
        if not self.paths.mlflow_db.exists():  # nothing registered yet: no need to create the store
            raise NotFoundError(f"model group {self.project!r} has no version {version}; see `qcbr models list`")
        from mlflow.exceptions import MlflowException

        with self._locked() as client:
            try:
                return client.get_model_version(self.project, str(int(version)))
            except MlflowException:
                raise NotFoundError(
                    f"model group {self.project!r} has no version {version}; see `qcbr models list`"
                ) from None

    def set_version_tags(self, version: int, tags: dict[str, str]) -> None:
        with self._locked() as client:
            for key, value in tags.items():
                client.set_model_version_tag(self.project, str(int(version)), key, value)

    def list_versions(self) -> list[Any]:
        if not self.paths.mlflow_db.exists():
            return []
        with self._locked() as client:
            versions = client.search_model_versions(f"name='{self.project}'")
        return sorted(versions, key=lambda mv: int(mv.version))
