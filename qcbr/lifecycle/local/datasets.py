"""Dataset versions in the local bucket (``qcbr.lifecycle.datasets`` over QCBR_HOME's store).

What is local: uploads of one dataset name are serialised with a file lock, because any number
of processes (CLI, dashboard sessions) share QCBR_HOME; and a version's Parquet file is read in
place rather than copied.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator

from qcbr.lifecycle.datasets import DatasetStore
from qcbr.lifecycle.local.audit import append_audit
from qcbr.lifecycle.local.state import Paths, file_lock
from qcbr.storage import LocalObjectStore


class LocalDatasets(DatasetStore):
    def __init__(self, paths: Paths, store: LocalObjectStore):
        super().__init__(store, partial(append_audit, paths.audit),
                         lock=lambda name: file_lock(paths.lock(f"dataset-{name}")))
        self.paths = paths

    @contextmanager
    def parquet_file(self, key: str) -> Iterator[Any]:
        yield self.store.path(key)
