"""Immutable dataset versions in the bucket: datasets/<name>/<sha256>/{cases.parquet, schema.json, meta.json}.

A version is addressed by the case base's content hash, so re-uploading identical content is a
no-op that returns the existing version; ``meta.json`` is written last and marks a complete one,
so an upload interrupted half-way is invisible and simply redone. ``cases.parquet`` + ``schema.json``
form the training channel a job downloads (the whole prefix is the ``train`` channel).

Both backends use this over their ObjectStore; a backend adds only what its storage needs: the
local one a lock per dataset name (processes share QCBR_HOME) and reading the Parquet file in place.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterator

from qcbr.errors import NotFoundError
from qcbr.lifecycle.records import Audit, check_dataset_name, get_json, put_json, utcnow
from qcbr.roles import Actor, require

PREFIX = "datasets"


class DatasetStore:
    def __init__(self, store: Any, audit: Audit, lock: Callable[[str], AbstractContextManager] | None = None,
                 name_location: bool = False):
        self.store = store
        self.audit = audit
        self.lock = lock or (lambda name: nullcontext())  # name -> context held around an upload
        self.name_location = name_location  # "no dataset named X" says where it looked

    def _prefix(self, name: str, sha: str) -> str:
        return f"{PREFIX}/{name}/{sha}"

    def upload(self, actor: Actor, case_base: Any, name: str) -> dict:
        require(actor, "upload_dataset")
        check_dataset_name(name)
        sha = case_base.sha256
        prefix = self._prefix(name, sha)
        with self.lock(name):
            if self.store.exists(f"{prefix}/meta.json"):
                record = self.describe(name, sha)
                record["Created"] = False
                return record
            frame = case_base.frame
            meta = {
                "DatasetName": name,
                "Sha256": sha,
                "Rows": int(len(frame)),
                "Columns": [str(c) for c in frame.columns],
                "Label": case_base.label,
                "IdColumn": case_base.id_column,
                "CreationTime": utcnow(),
                "CreatedBy": actor.name,
            }
            self.store.put(f"{prefix}/cases.parquet", case_base.to_parquet_bytes())
            self.store.put(f"{prefix}/schema.json", json.dumps(case_base.schema, indent=2, default=str).encode())
            put_json(self.store, f"{prefix}/meta.json", meta)
        self.audit(actor, "upload_dataset", name, sha256=sha, rows=meta["Rows"])
        record = self.describe(name, sha)
        record["Created"] = True
        return record

    def _record(self, name: str, sha: str) -> dict:
        prefix = self._prefix(name, sha)
        try:
            meta = get_json(self.store, f"{prefix}/meta.json")
            schema = get_json(self.store, f"{prefix}/schema.json")
        except NotFoundError:
            raise NotFoundError(f"dataset {name!r} has no version {sha}; see `qcbr cases list`") from None
        return {**meta, "S3Uri": self.store.uri(prefix + "/"), "Schema": schema, "Created": False}

    def _versions_under(self, prefix: str) -> list[dict]:
        out = []
        for key in self.store.list(prefix):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == "meta.json":
                out.append(self._record(parts[1], parts[2]))
        out.sort(key=lambda r: r["CreationTime"], reverse=True)
        return out

    def versions(self, name: str) -> list[dict]:
        return self._versions_under(f"{PREFIX}/{name}/")

    def list(self) -> list[dict]:
        """Every version of every dataset, newest first."""
        return self._versions_under(f"{PREFIX}/")

    def describe(self, name: str, sha256: str | None = None) -> dict:
        check_dataset_name(name)
        if sha256:
            return self._record(name, sha256)
        versions = self.versions(name)
        if not versions:
            known = sorted({r["DatasetName"] for r in self.list()})
            hint = (f"known datasets: {', '.join(known)}" if known
                    else "upload one with `qcbr cases upload FILE --label COL --name NAME`")
            where = f" in {self.store.uri(PREFIX + '/')}" if self.name_location else ""
            raise NotFoundError(f"no dataset named {name!r}{where}; {hint}")
        return versions[0]

    def load(self, name: str, sha256: str | None = None) -> Any:
        from qcbr.cases import CaseBase

        record = self.describe(name, sha256)
        with self.parquet_file(f"{self._prefix(name, record['Sha256'])}/cases.parquet") as path:
            return CaseBase.from_parquet(path, record["Schema"])

    @contextmanager
    def parquet_file(self, key: str) -> Iterator[str]:
        """A file holding the object ``key`` while the block runs (a download; local stores override)."""
        data = self.store.get(key)
        with tempfile.TemporaryDirectory(prefix="qcbr-dataset-") as tmp:
            path = os.path.join(tmp, "cases.parquet")
            with open(path, "wb") as fh:
                fh.write(data)
            yield path
