"""Process-wide objects the pages share: the configured backend, background tasks, the demo seeder.

Everything heavy is built once per process with ``st.cache_resource`` and keyed by QCBR_HOME
(and backend/project), so pointing QCBR_HOME elsewhere gives a fresh backend and a test never
sees another test's state. Long work never runs inside a page script: it goes to a background
task (a thread here, for in-process work like sampled similarity and batch predictions) or a
subprocess (the demo seeding, training jobs through the backend), and the page polls it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from qcbr.config import Config, load_config
from qcbr.roles import Actor, require

REPO_ROOT = Path(__file__).resolve().parents[1]


class BackendUnavailable(Exception):
    """The configured backend cannot be opened (module not installed, bad configuration)."""


def config() -> Config:
    """The effective configuration, read on every run (environment and file are cheap to read)."""
    return load_config()


@st.cache_resource(show_spinner=False, max_entries=8)
def _open_backend(key: tuple[str, str, str, str], _config: Config):
    from qcbr.lifecycle import get_backend

    return get_backend(_config)


def backend():
    """The cached Backend for the current configuration; BackendUnavailable says why not."""
    from qcbr.errors import QCBRError

    try:
        cfg = config()
    except QCBRError as exc:
        raise BackendUnavailable(f"The configuration is invalid: {exc}") from None
    key = (cfg.backend, str(cfg.home), cfg.project, cfg.bucket)
    try:
        return _open_backend(key, cfg)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("qcbr"):
            raise BackendUnavailable(
                f"The {cfg.backend} backend ({exc.name}) is not part of this installation yet, so there is "
                "nothing to show here. Update the checkout, or switch backends with QCBR_BACKEND."
            ) from None
        raise BackendUnavailable(f"The {cfg.backend} backend needs the package {exc.name!r}: pip install it.") from None
    except QCBRError as exc:
        raise BackendUnavailable(f"The {cfg.backend} backend could not be opened: {exc}") from None


class ListingCache:
    """Backend listings reused for a couple of seconds.

    Reruns come in bursts (every widget change) and the registry and job listings read several
    files and MLflow's database; one read serves the burst. Mutations clear it, so the page
    shows the state on disk. (A plain dict, not st.cache_data: nothing gets pickled.)
    """

    def __init__(self, ttl: float = 2.0):
        self.ttl = ttl
        self._data: dict[tuple, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        value = load()
        with self._lock:
            self._data[key] = (time.monotonic(), value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


@st.cache_resource(show_spinner=False)
def _listing_cache() -> ListingCache:
    return ListingCache()


def listing(method: str, **kwargs: Any) -> Any:
    """``backend().<method>(**kwargs)``, shared by reruns within the cache's short lifetime."""
    cfg = config()
    key = (cfg.backend, str(cfg.home), cfg.project, method, tuple(sorted(kwargs.items())))
    return _listing_cache().get(key, lambda: getattr(backend(), method)(**kwargs))


def clear_listings() -> None:
    """Forget cached listings after a mutation."""
    _listing_cache().clear()


# --------------------------------------------------------------------------- qiskit import
class _QiskitKeeper:
    """Imports qiskit in a thread that never exits.

    qiskit 2.6's Rust extension keeps per-thread state from the thread that first imported it:
    once that thread has exited, creating a ParameterVector in any later thread segfaults the
    whole process. Streamlit runs every rerun in a fresh thread, so the first page to import
    qiskit would crash the second rerun. Importing it here, in a thread that lives as long as the
    process, keeps that state valid for every script thread after it.
    """

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name="qcbr-qiskit-keeper", daemon=True).start()

    def _run(self) -> None:
        try:
            import qiskit  # noqa: F401
            from qiskit.circuit import ParameterVector

            ParameterVector("warmup", 1)
        except BaseException as exc:  # noqa: BLE001 - reported to the page that needs qiskit
            self.error = exc
        finally:
            self.ready.set()
        threading.Event().wait()  # stay alive for the life of the process

    def wait(self, timeout: float = 120.0) -> None:
        self.ready.wait(timeout)
        if self.error is not None:
            raise self.error


@st.cache_resource(show_spinner=False)
def _qiskit_keeper() -> _QiskitKeeper:
    return _QiskitKeeper()


def start_qiskit_import() -> None:
    """Begin importing qiskit in the keeper thread (non-blocking; the app calls it on start)."""
    _qiskit_keeper()


def qiskit_ready() -> None:
    """Block until qiskit is imported by the keeper thread; pages call it before any qiskit use."""
    _qiskit_keeper().wait()


# --------------------------------------------------------------------------- first start
@st.cache_resource(show_spinner=False)
def initial_accounts(home: str) -> bool:
    """Create one account per role on the very first start and print the passwords once.

    Like Jupyter's token: the terminal that started the dashboard is the one place they appear.
    Returns whether accounts were created now; the passwords are never kept.
    """
    from qcbr.users import INITIAL_ACCOUNTS, UserStore

    passwords = UserStore(home).ensure_initial_accounts()
    if passwords:
        lines = [
            "",
            "=" * 72,
            "qCBR Studio: first start. Dashboard accounts were created (shown only this once):",
        ]
        for name, password in passwords.items():
            lines.append(f"    {name:<10} role {INITIAL_ACCOUNTS[name]:<15} password {password}")
        lines += [
            f"Stored as bcrypt hashes in {Path(home) / 'users.json'}.",
            "Change them with `qcbr users set-password NAME`; add people with `qcbr users add`.",
            "=" * 72,
            "",
        ]
        print("\n".join(lines), file=sys.stdout, flush=True)
    return bool(passwords)


# --------------------------------------------------------------------------- background tasks
@dataclass
class Task:
    """One piece of in-process background work and what it has reported so far."""

    id: str
    label: str
    owner: str
    future: Future
    started: float = field(default_factory=time.time)
    fraction: float = 0.0
    message: str = "queued"
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.future.done()

    @property
    def error(self) -> BaseException | None:
        return self.future.exception() if self.future.done() else None

    @property
    def result(self) -> Any:
        return self.future.result() if self.future.done() and not self.future.exception() else None


class TaskRunner:
    """A small thread pool for work that must not block a page (it polls with a fragment)."""

    def __init__(self, workers: int = 2, keep: int = 64):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qcbr-task")
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def submit(self, label: str, owner: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        """Run ``fn(*args, progress=report, **kwargs)``; ``report(fraction, message)`` updates the task."""
        task_id = uuid.uuid4().hex[:12]
        holder: dict[str, Task] = {}

        def report(fraction: float, message: str = "") -> None:
            task = holder["task"]
            task.fraction = max(0.0, min(1.0, float(fraction)))
            task.message = message or task.message

        def run() -> Any:
            report(0.0, "running")
            try:
                out = fn(*args, progress=report, **kwargs)
                report(1.0, "done")
                return out
            except BaseException:
                holder["task"].message = "failed"
                print(f"qcbr dashboard task {label!r} failed:\n{traceback.format_exc()}", file=sys.stderr)
                raise
            finally:
                holder["task"].finished = time.time()

        with self._lock:
            holder["task"] = Task(task_id, label, owner, Future())
            future = self._pool.submit(run)
            holder["task"].future = future
            self._tasks[task_id] = holder["task"]
            if len(self._tasks) > self._keep:
                for old in [t for t in self._tasks.values() if t.done][: len(self._tasks) - self._keep]:
                    del self._tasks[old.id]
        return task_id

    def get(self, task_id: str | None) -> Task | None:
        return self._tasks.get(task_id) if task_id else None

    def wait(self, task_id: str, timeout: float = 30.0) -> Task:
        """Block until the task ends (tests and the CLI only; pages poll instead)."""
        task = self._tasks[task_id]
        try:
            task.future.result(timeout=timeout)
        except Exception:
            pass
        return task


@st.cache_resource(show_spinner=False)
def tasks() -> TaskRunner:
    return TaskRunner()


# --------------------------------------------------------------------------- demo seeding
class DemoSeeder:
    """Runs ``python -m qcbr demo`` as a subprocess and reports on it; one per QCBR_HOME."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.log_path = self.home / "dashboard" / "demo-seed.log"
        self.proc: subprocess.Popen | None = None
        self.started: float | None = None
        self._lock = threading.Lock()

    def start(self, actor: Actor, env: dict[str, str] | None = None) -> None:
        require(actor, "seed_demo")
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                return  # already running: a second click must not start a second seeding
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            run_env = {**os.environ, **(env or {}), "QCBR_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
            run_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), run_env.get("PYTHONPATH")]))
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "qcbr", "demo"], cwd=REPO_ROOT, env=run_env, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )
            self.started = time.time()

    def status(self) -> str:
        """idle | running | completed | failed."""
        if self.proc is None:
            return "idle"
        code = self.proc.poll()
        if code is None:
            return "running"
        return "completed" if code == 0 else "failed"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@st.cache_resource(show_spinner=False)
def demo_seeder(home: str) -> DemoSeeder:
    return DemoSeeder(Path(home))


# --------------------------------------------------------------------------- artifacts
def _artifact_file(model_data_url: str, filename: str) -> bytes | None:
    """One file of a version's model.tar.gz (by its base name), or None when the artifact lacks it."""
    import io
    import tarfile

    from qcbr.storage import open_store, parse_s3_uri

    bucket, key = parse_s3_uri(model_data_url)
    cfg = config()
    store = open_store(cfg)
    if bucket != store.bucket:
        from qcbr.storage import LocalObjectStore

        store = LocalObjectStore(cfg.s3_root, bucket) if cfg.backend == "local" else type(store)(bucket)
    data = store.get(key)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.rsplit("/", 1)[-1] == filename:
                fh = tar.extractfile(member)
                return fh.read() if fh else None
    return None


@st.cache_resource(show_spinner=False, max_entries=32)
def model_card(home: str, model_data_url: str | None) -> str | None:
    """``model_card.md`` from a version's model.tar.gz (the artifact is immutable: cache by URL)."""
    if not model_data_url:
        return None
    data = _artifact_file(model_data_url, "model_card.md")
    return data.decode("utf-8", errors="replace") if data is not None else None


@st.cache_resource(show_spinner=False, max_entries=32)
def numeric_ranges(home: str, model_data_url: str | None) -> dict[str, dict[str, float]]:
    """{feature: {min, median, max}} of the numeric training features, from the baseline
    ``statistics.json`` in the model artifact ({} when it has none): what a form starts from."""
    import json

    import numpy as np

    if not model_data_url:
        return {}
    data = _artifact_file(model_data_url, "statistics.json")
    if data is None:
        return {}
    out = {}
    for feature in json.loads(data).get("features") or []:
        stats = feature.get("numerical_statistics")
        if not stats or stats.get("min") is None or stats.get("max") is None:
            continue
        sample = (((stats.get("distribution") or {}).get("kll") or {}).get("sketch") or {}).get("data") or []
        flat = [v for row in sample for v in (row if isinstance(row, list) else [row])]
        median = float(np.median(flat)) if flat else float(stats.get("mean", stats["min"]))
        out[str(feature.get("name"))] = {"min": float(stats["min"]), "median": median, "max": float(stats["max"])}
    return out


@st.cache_resource(show_spinner=False)
def _ping_cache() -> ListingCache:
    return ListingCache(ttl=15.0)


def ping_latency(url: str | None) -> float | None:
    """Seconds for ``GET {url}/ping`` (None when unreachable or no URL), measured at most every 15 s."""
    if not url:
        return None

    def measure() -> float | None:
        import httpx

        started = time.perf_counter()
        try:
            response = httpx.get(url.rstrip("/") + "/ping", timeout=1.0)
        except httpx.HTTPError:
            return None
        return time.perf_counter() - started if response.status_code == 200 else None

    return _ping_cache().get((url,), measure)
