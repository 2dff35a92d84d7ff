"""Paths and concurrency primitives for the local backend's state in QCBR_HOME.

Several processes share QCBR_HOME (the CLI, the dashboard, job supervisors), so every
read-modify-write of shared JSON goes through an ``fcntl.flock`` on a lock file and ends in an
atomic rename: a reader never sees half a file and two writers never lose each other's update.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from qcbr.storage import atomic_write_json, read_json


class Paths:
    """Where each piece of local state lives (docs/INTERNALS.md, "Local state layout")."""

    def __init__(self, home: str | os.PathLike):
        self.home = Path(home).resolve()

    @property
    def locks(self) -> Path:
        return self.home / "locks"

    @property
    def jobs(self) -> Path:
        return self.home / "jobs"

    def job(self, name: str) -> Path:
        return self.jobs / name

    @property
    def endpoints(self) -> Path:
        return self.home / "endpoints"

    def endpoint_record(self, name: str) -> Path:
        return self.endpoints / f"{name}.json"

    def endpoint_models(self, name: str) -> Path:
        return self.endpoints / name

    @property
    def gateway(self) -> Path:
        return self.home / "gateway.json"

    @property
    def routes(self) -> Path:
        return self.home / "routes.json"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def audit(self) -> Path:
        return self.home / "audit.jsonl"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.home / "mlartifacts"

    def lock(self, name: str) -> Path:
        return self.locks / f"{name}.lock"


@contextmanager
def file_lock(path: str | os.PathLike, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock on ``path`` (created if missing) for the duration of the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def update_json(path: Path, lock: Path, change: Callable[[Any], Any], default: Any = None) -> Any:
    """Read ``path``, apply ``change`` (which may mutate and/or return the new value), write it back.

    ``change`` returning None means "I mutated the value in place". The whole cycle runs under
    ``lock``; the write is atomic.
    """
    with file_lock(lock):
        try:
            value = read_json(path)
        except FileNotFoundError:
            if default is None:
                raise
            value = default() if callable(default) else default
        new = change(value)
        value = value if new is None else new
        atomic_write_json(path, value)
        return value


@contextmanager
def try_lock(path: str | os.PathLike) -> Iterator[bool]:
    """Take the lock if it is free; yields False (without waiting) when another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
