"""Dataset versions in the project's S3 bucket, under the local backend's keys (``qcbr.lifecycle.datasets``).

S3 needs no lock: a version's objects are content-addressed and ``meta.json`` goes last, so two
concurrent identical uploads write the same bytes. Loading downloads ``cases.parquet`` to a temp file.
"""
from __future__ import annotations

from functools import partial
from typing import Any

from qcbr.lifecycle.aws.records import append_audit
from qcbr.lifecycle.datasets import DatasetStore


class S3Datasets(DatasetStore):
    def __init__(self, store: Any):
        super().__init__(store, partial(append_audit, store), name_location=True)
