"""Local backend building blocks: locked state, detached processes, datasets, roles, reconciliation.

Fast tests (no training): they run in a fresh QCBR_HOME each.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qcbr.errors import NotFoundError, RoleError, StateError
from qcbr.lifecycle import get_backend
from qcbr.lifecycle.base import Backend
from qcbr.lifecycle.local import LocalBackend, procs
from qcbr.lifecycle.local.state import Paths, update_json
from qcbr.roles import OPERATOR, Actor
from qcbr.storage import read_json

BUSINESS = Actor("bea", "business")
SCIENTIST = Actor("dan", "data_scientist")
MANAGER = Actor("meg", "manager")


def test_get_backend_returns_a_local_backend_that_satisfies_the_protocol(qcbr_home):
    backend = get_backend()
    assert isinstance(backend, LocalBackend) and isinstance(backend, Backend)
    assert backend.paths.home == qcbr_home.resolve()
    assert backend.store.base == (qcbr_home / "s3" / "qcbr-local").resolve()


def test_constructing_the_backend_imports_nothing_heavy(tmp_path):
    code = ("import sys, os; os.environ['QCBR_HOME'] = sys.argv[1]; from qcbr.lifecycle import get_backend; "
            "get_backend(); print(','.join(m for m in ('mlflow', 'boto3', 'qiskit', 'pandas', 'sklearn', 'fastapi') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "home")], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == ""


# -- concurrency ------------------------------------------------------------------------------------
def _increment(path: str, lock: str, times: int) -> None:
    for _ in range(times):
        update_json(Path(path), Path(lock), lambda v: {"n": v["n"] + 1}, default={"n": 0})


def test_update_json_loses_no_update_across_processes(tmp_path):
    path, lock = tmp_path / "counter.json", tmp_path / "counter.lock"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_increment, args=(str(path), str(lock), 40)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert read_json(path) == {"n": 160}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no half-written leftovers


# -- detached processes -----------------------------------------------------------------------------
def test_detached_process_outlives_its_starter_in_its_own_group_and_is_stopped(tmp_path):
    marker = "qcbr-test-sleeper"
    pid = procs.spawn_detached([sys.executable, "-c", "import time, sys; print('up', flush=True); time.sleep(60)",
                                marker], tmp_path / "sleeper.log")
    try:
        assert procs.is_alive(pid, marker)
        assert not procs.is_alive(pid, "something-else")  # a recycled pid would not match
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # own session: survives our terminal
        assert os.getppid() != pid
        deadline = time.monotonic() + 10
        while "up" not in (tmp_path / "sleeper.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "up" in (tmp_path / "sleeper.log").read_text()
        procs.stop_group(pid, 5.0, marker)
        deadline = time.monotonic() + 5
        while procs.is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not procs.is_alive(pid)
    finally:
        procs.signal_group(pid, signal.SIGKILL)


def test_stop_group_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    pid = procs.spawn_detached([sys.executable, "-c", code, "qcbr-test-stubborn"], tmp_path / "stubborn.log")
    try:
        deadline = time.monotonic() + 10
        while "ready" not in (tmp_path / "stubborn.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        procs.stop_group(pid, 0.5, "qcbr-test-stubborn")
        deadline = time.monotonic() + 5
        while procs.is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not procs.is_alive(pid)
        assert time.monotonic() - started >= 0.5
    finally:
        procs.signal_group(pid, signal.SIGKILL)


def test_a_dead_pid_is_not_alive():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not procs.is_alive(int(done.stdout))
    assert not procs.is_alive(None)


# -- datasets ---------------------------------------------------------------------------------------
def test_upload_is_immutable_and_identical_reupload_is_a_noop(backend, iris_cases):
    first = backend.upload_dataset(SCIENTIST, iris_cases, "iris")
    assert first["Created"] is True and first["Sha256"] == iris_cases.sha256
    assert first["Rows"] == 150 and first["Label"] == "species" and first["IdColumn"] == "case_id"
    assert first["S3Uri"] == f"s3://qcbr-local/datasets/iris/{iris_cases.sha256}/"
    folder = backend.store.path(f"datasets/iris/{iris_cases.sha256}")
    assert sorted(p.name for p in folder.iterdir()) == ["cases.parquet", "meta.json", "schema.json"]
    stamp = (folder / "cases.parquet").stat().st_mtime_ns

    again = backend.upload_dataset(SCIENTIST, iris_cases, "iris")
    assert again["Created"] is False and again["Sha256"] == first["Sha256"]
    assert again["CreationTime"] == first["CreationTime"]
    assert (folder / "cases.parquet").stat().st_mtime_ns == stamp

    loaded = backend.load_dataset("iris")
    assert loaded.sha256 == iris_cases.sha256 and len(loaded) == 150
    assert backend.describe_dataset("iris")["Schema"]["label"] == "species"
    assert [d["Sha256"] for d in backend.list_datasets()] == [iris_cases.sha256]
    actions = [e["action"] for e in backend.audit_log()]
    assert actions.count("upload_dataset") == 1  # the no-op re-upload changed nothing


def test_a_second_version_is_listed_newest_first(backend, iris_cases):
    from qcbr.cases import CaseBase

    backend.upload_dataset(OPERATOR, iris_cases, "iris")
    frame = iris_cases.frame.iloc[:120].reset_index(drop=True)
    smaller = CaseBase.from_frame(frame, label="species", id_column="case_id")
    second = backend.upload_dataset(OPERATOR, smaller, "iris")
    assert second["Created"] and second["Sha256"] != iris_cases.sha256
    assert backend.describe_dataset("iris")["Sha256"] == second["Sha256"]
    assert backend.describe_dataset("iris", iris_cases.sha256)["Rows"] == 150
    assert [d["Rows"] for d in backend.list_datasets()] == [120, 150]


def test_dataset_errors_are_specific(backend, iris_cases):
    with pytest.raises(NotFoundError, match="no dataset named 'nope'; upload one"):
        backend.describe_dataset("nope")
    with pytest.raises(StateError, match="dataset name '../x' is not valid"):
        backend.upload_dataset(OPERATOR, iris_cases, "../x")
    backend.upload_dataset(OPERATOR, iris_cases, "iris")
    with pytest.raises(NotFoundError, match="known datasets: iris"):
        backend.describe_dataset("irs")
    with pytest.raises(NotFoundError, match="has no version abc"):
        backend.describe_dataset("iris", "abc")


# -- roles ------------------------------------------------------------------------------------------
def test_every_mutating_call_checks_the_role_before_doing_anything(backend, iris_cases):
    with pytest.raises(RoleError, match="may not upload dataset"):
        backend.upload_dataset(BUSINESS, iris_cases, "iris")
    assert backend.list_datasets() == []
    backend.upload_dataset(SCIENTIST, iris_cases, "iris")
    with pytest.raises(RoleError, match="may not create training job"):
        backend.create_training_job(MANAGER, "iris", {})
    with pytest.raises(RoleError):
        backend.stop_training_job(BUSINESS, "any")
    with pytest.raises(RoleError, match="may not register model"):
        backend.register_model(MANAGER, "any")
    with pytest.raises(RoleError, match="may not approve model"):
        backend.approve_model(SCIENTIST, 1)
    with pytest.raises(RoleError, match="may not reject model"):
        backend.reject_model(BUSINESS, 1)
    with pytest.raises(RoleError, match="may not deploy prod"):
        backend.create_endpoint(SCIENTIST, "e", 1, stage="prod")
    with pytest.raises(RoleError, match="may not deploy staging"):
        backend.create_endpoint(BUSINESS, "e", 1, stage="staging")
    with pytest.raises(RoleError, match="may not seed demo"):
        backend.seed_demo(MANAGER)
    assert backend.list_training_jobs() == []
    refused = {e["action"] for e in backend.audit_log()}
    assert refused == {"upload_dataset"}  # refusals leave no trace of a change


def test_unknown_stage_is_refused(backend):
    with pytest.raises(StateError, match="stage 'qa' is not a stage"):
        backend.create_endpoint(OPERATOR, "e", 1, stage="qa")


# -- training job records ---------------------------------------------------------------------------
def test_bad_hyperparameters_are_refused_before_a_job_starts(backend, iris_cases):
    backend.upload_dataset(OPERATOR, iris_cases, "iris")
    with pytest.raises(StateError, match="hyperparameters not accepted: unknown hyperparameter\\(s\\) kk"):
        backend.create_training_job(OPERATOR, "iris", {"kk": 3})
    with pytest.raises(StateError, match="training job name 'bad_name' is not valid"):
        backend.create_training_job(OPERATOR, "iris", {}, job_name="bad_name")
    with pytest.raises(NotFoundError, match="no dataset named 'other'"):
        backend.create_training_job(OPERATOR, "other", {})
    assert backend.list_training_jobs() == []


def test_a_job_whose_supervisor_vanished_becomes_failed_not_in_progress_forever(backend, iris_cases):
    """Simulates a job whose supervisor was killed without a trace (e.g. the machine rebooted)."""
    backend.upload_dataset(OPERATOR, iris_cases, "iris")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    job_dir = Paths(backend.paths.home).job("ghost-job")
    job_dir.mkdir(parents=True)
    record = {
        "TrainingJobName": "ghost-job", "TrainingJobArn": "arn", "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Training",
        "SecondaryStatusTransitions": [{"Status": "Training", "StartTime": "2020-01-01T00:00:00+00:00",
                                        "EndTime": None, "StatusMessage": "Training"}],
        "FailureReason": None, "HyperParameters": {}, "InputDataConfig": [], "OutputDataConfig": {},
        "ModelArtifacts": None, "CreationTime": "2020-01-01T00:00:00+00:00", "TrainingStartTime": None,
        "TrainingEndTime": None, "FinalMetricDataList": [], "CreatedBy": "operator",
        "Lineage": {"DatasetName": "iris", "DatasetSha256": iris_cases.sha256, "MlflowRunId": None},
        "Internal": {"SupervisorPid": int(dead.stdout), "TrainingPid": None},
    }
    (job_dir / "status.json").write_text(json.dumps(record))
    described = backend.describe_training_job("ghost-job")
    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"].startswith("job process disappeared (supervisor pid ")
    assert described["TrainingEndTime"] and "Internal" not in described
    assert read_json(job_dir / "status.json")["TrainingJobStatus"] == "Failed"  # persisted, not just shown
    with pytest.raises(StateError, match="ghost-job is Failed; only a Completed job can be registered"):
        backend.register_model(OPERATOR, "ghost-job")
    with pytest.raises(StateError, match="only an InProgress job can be stopped"):
        backend.stop_training_job(OPERATOR, "ghost-job")
    with pytest.raises(NotFoundError, match="no training job named 'nope'"):
        backend.describe_training_job("nope")


def test_invoke_refuses_a_body_that_is_not_utf8_before_touching_the_endpoint(backend):
    from qcbr.errors import InputError
    from qcbr.roles import OPERATOR

    with pytest.raises(InputError, match=r"not UTF-8 text \(byte 3 is b'\\xe9'\).*save the CSV or JSON as UTF-8"):
        backend.invoke(OPERATOR, "no-such-endpoint", b"5.1\xe9,3.5\n", content_type="text/csv")
