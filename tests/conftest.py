"""Shared fixtures: an isolated QCBR_HOME, the iris case base, a small fitted model, a lifecycle
home with trained and registered model versions, a demo-seeded home, and the Monitoring/Overview
screens' homes (empty and seeded); plus helpers the test modules import (``wait_for``, the
dashboard's page helpers).

Every fixture that can leave processes behind (training supervisors, inference servers, the
gateway) kills their process groups in its finalizer, so a failing test never leaks servers.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

QCBR_ENV = ("QCBR_HOME", "QCBR_USER", "QCBR_BACKEND", "QCBR_CONFIG", "QCBR_PROJECT", "QCBR_BUCKET")


def local_backend(home: str | os.PathLike, **env: str):
    """A LocalBackend on ``home`` without touching os.environ (safe in session fixtures)."""
    from qcbr.config import load_config
    from qcbr.lifecycle.local import LocalBackend

    return LocalBackend(load_config(env={"QCBR_HOME": str(home), **env}))


def kill_home_processes(home: str | os.PathLike) -> None:
    """SIGKILL every process group a LocalBackend on ``home`` started (jobs, servers, gateway)."""
    if Path(home).is_dir():
        local_backend(home).kill_all_processes()


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 50 ms until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def demo_home(tmp_path_factory, name: str) -> Iterator[tuple[Path, Any, dict]]:
    """(home, LocalBackend, seed_demo summary): a fresh home seeded with the demo, the environment
    (QCBR_HOME, fast bcrypt, no backend/config/user overrides) pointing at it while the block runs;
    every process it started is killed afterwards. For module fixtures (monkeypatch is per test)."""
    home = tmp_path_factory.mktemp(name)
    mp = pytest.MonkeyPatch()
    mp.setenv("QCBR_HOME", str(home))
    mp.setenv("QCBR_BCRYPT_ROUNDS", "4")
    for var in ("QCBR_BACKEND", "QCBR_CONFIG", "QCBR_USER"):
        mp.delenv(var, raising=False)
    from qcbr.config import load_config
    from qcbr.lifecycle.local import LocalBackend
    from qcbr.roles import OPERATOR

    backend = LocalBackend(load_config())
    try:
        yield home, backend, backend.seed_demo(OPERATOR)
    finally:
        backend.kill_all_processes()
        mp.undo()


@pytest.fixture()
def qcbr_home(tmp_path, monkeypatch) -> Path:
    """A fresh QCBR_HOME in the environment (and cwd in tmp_path); its processes die afterwards."""
    home = tmp_path / "qcbr-home"
    for key in QCBR_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("QCBR_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    yield home
    kill_home_processes(home)


@pytest.fixture()
def backend(qcbr_home):
    """A LocalBackend on the test's own QCBR_HOME."""
    return local_backend(qcbr_home)


@pytest.fixture(scope="session")
def iris_cases():
    """scikit-learn's iris as a validated CaseBase (150 cases, 3 classes, ids iris-0001...)."""
    from qcbr.cases import demo_case_base

    return demo_case_base("iris")


@pytest.fixture(scope="session")
def fitted_model(iris_cases):
    """A QCBRClassifier (zz, alpha tuned by CV, k=5) fitted on all iris cases."""
    from qcbr.model import QCBRClassifier

    return QCBRClassifier(feature_map="zz", k=5, random_state=0).fit(
        iris_cases.features, iris_cases.y, case_ids=iris_cases.case_ids
    )


@pytest.fixture(scope="session")
def saved_model_dir(fitted_model, tmp_path_factory) -> Path:
    """``fitted_model`` saved (model.json, arrays.npz, MANIFEST.json); treat as read-only."""
    path = tmp_path_factory.mktemp("saved-model") / "model"
    fitted_model.save(path)
    return path


class Lifecycle:
    """What the ``lifecycle`` fixture built; ``backend`` is a LocalBackend on ``home``."""

    def __init__(self, home: Path):
        self.home = home
        self.backend = local_backend(home)
        self.dataset: dict = {}
        self.jobs: list[dict] = []
        self.versions: list[dict] = []

    def env(self, monkeypatch) -> None:
        """Point the environment (the CLI, get_backend) at this home for one test."""
        for key in QCBR_ENV:
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("QCBR_HOME", str(self.home))


@pytest.fixture(scope="session")
def lifecycle(tmp_path_factory, iris_cases):
    """A home with the iris dataset and three training jobs run at the same time, registered as
    versions 1 (Approved), 2 (PendingManualApproval) and 3 (Rejected). Shared by the whole
    session: tests add their own endpoints/jobs with unique names and leave the versions' states
    as they found them.
    """
    from qcbr.roles import OPERATOR

    life = Lifecycle(tmp_path_factory.mktemp("lifecycle") / "home")
    try:
        b = life.backend
        life.dataset = b.upload_dataset(OPERATOR, iris_cases, "iris")
        hps = [{"feature_map": "zz", "k": "5", "random_state": str(seed)} for seed in (0, 1, 2)]
        started = [b.create_training_job(OPERATOR, "iris", hp, job_name=f"iris-fixture-{i}")
                   for i, hp in enumerate(hps, start=1)]
        life.jobs = [b.wait_training_job(job["TrainingJobName"], timeout=300, poll=0.2) for job in started]
        for job in life.jobs:
            assert job["TrainingJobStatus"] == "Completed", (job["FailureReason"], job["Log"])
        life.versions = [b.register_model(OPERATOR, job["TrainingJobName"]) for job in life.jobs]
        life.versions[0] = b.approve_model(OPERATOR, life.versions[0]["ModelPackageVersion"], "fixture")
        life.versions[2] = b.reject_model(OPERATOR, life.versions[2]["ModelPackageVersion"], "fixture")
        yield life
    finally:
        kill_home_processes(life.home)


# -- the Monitoring and Overview screens (tests/monitoring_seed.py) ---------------------------------
@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    """A home with nothing in it, the dashboard's environment pointing at it."""
    from tests.monitoring_seed import use_home

    use_home(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def seeded(request, tmp_path_factory) -> dict:
    """The screens' seeded home, built once per session (``monitoring_seed.seeded_home``)."""
    from tests.monitoring_seed import seeded_home

    return seeded_home(request, tmp_path_factory)


@pytest.fixture
def home(seeded, monkeypatch) -> Path:
    """``seeded``'s home, the dashboard's environment pointing at it for this test."""
    from tests.monitoring_seed import use_home

    use_home(monkeypatch, seeded["home"])
    return seeded["home"]


def page_refused(home: Path, key: str, role: str):
    """Check that the app's navigation offers ``role`` no page ``key``; then return the page script
    ``pages/<key>.py`` run by itself for that logged-in role (a user typing the page's URL)."""
    from streamlit.testing.v1 import AppTest

    from dashboard.testing import REPO_ROOT, app_as, ensure_user, page_path

    at = app_as(role, home).run()
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page(page_path(key))
    name = ensure_user(home, role)
    direct = AppTest.from_file(str(REPO_ROOT / "pages" / f"{key}.py"), default_timeout=60)
    direct.session_state["qcbr_user"] = {"name": name, "role": role, "via": "local"}
    return direct.run()


def open_on_endpoint(key: str, select: str, role: str, home: Path, endpoint: str, name: str | None = None):
    """Page ``key`` opened as ``role`` with ``endpoint`` picked in its endpoint selectbox ``select``."""
    from dashboard.testing import app_as, open_page

    at = open_page(app_as(role, home, name=name), key)
    assert not at.exception, [e.message for e in at.exception]
    if at.selectbox(key=select).value != endpoint:
        at.selectbox(key=select).set_value(endpoint).run()
        assert not at.exception, [e.message for e in at.exception]
    return at


def open_over_90_days(key: str, prefix: str, home: Path, endpoint: str):
    """(page ``key`` opened by a manager on the last 90 days with ``endpoint`` picked, the seconds
    that first run with ``endpoint`` took); the page's selectboxes are ``<prefix>_period/_endpoint``."""
    from dashboard.testing import app_as, open_page

    at = open_page(app_as("manager", home), key)
    at.selectbox(key=f"{prefix}_period").set_value("Last 90 days")
    started = time.perf_counter()
    at.selectbox(key=f"{prefix}_endpoint").set_value(endpoint).run(timeout=300)
    cold = time.perf_counter() - started
    assert not at.exception, [e.message for e in at.exception]
    return at, cold


def rerun_times(at, reruns: int = 5) -> list[float]:
    """Seconds each of ``reruns`` reruns of ``at`` took; every one must end without an exception."""
    times = []
    for _ in range(reruns):
        started = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - started)
        assert not at.exception
    return times
