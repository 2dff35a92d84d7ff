"""Immutable dataset versions in the bucket: datasets/<name>/<sha256>/{cases.parquet, schema.json}.

A version is addressed by the case base's content hash, so re-uploading identical content is a
no-op that returns the existing version; ``meta.json`` is written last and marks a complete one.
"""
from __future__ import annotations

import json
import re
from typing import Any

from qcbr.errors import NotFoundError, StateError
from qcbr.lifecycle.local.audit import append_audit
from qcbr.lifecycle.local.state import Paths, file_lock, utcnow
from qcbr.roles import Actor, require
from qcbr.storage import LocalObjectStore

DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
PREFIX = "datasets"


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not DATASET_NAME_RE.match(name):
        raise StateError(
            f"dataset name {name!r} is not valid: use 1-63 letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'churn-2024')"
        )
    return name


class DatasetStore:
    def __init__(self, paths: Paths, store: LocalObjectStore):
        self.paths = paths
        self.store = store

    def _prefix(self, name: str, sha: str) -> str:
        return f"{PREFIX}/{name}/{sha}"

    def upload(self, actor: Actor, case_base: Any, name: str) -> dict:
        require(actor, "upload_dataset")
        check_dataset_name(name)
        sha = case_base.sha256
        prefix = self._prefix(name, sha)
        with file_lock(self.paths.lock(f"dataset-{name}")):
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
            self.store.put(f"{prefix}/meta.json", json.dumps(meta, indent=2).encode())
        append_audit(self.paths.audit, actor, "upload_dataset", name, sha256=sha, rows=meta["Rows"])
        record = self.describe(name, sha)
        record["Created"] = True
        return record

    def _record(self, name: str, sha: str) -> dict:
        prefix = self._prefix(name, sha)
        try:
            meta = json.loads(self.store.get(f"{prefix}/meta.json"))
            schema = json.loads(self.store.get(f"{prefix}/schema.json"))
        except NotFoundError:
            raise NotFoundError(f"dataset {name!r} has no version {sha}; see `qcbr cases list`") from None
        return {
            **meta,
            "S3Uri": self.store.uri(prefix + "/"),
            "Schema": schema,
            "Created": False,
        }

    def versions(self, name: str) -> list[dict]:
        folder = self.store.path(f"{PREFIX}/{name}")
        if not folder.is_dir():
            return []
        out = []
        for child in folder.iterdir():
            if (child / "meta.json").is_file():
                out.append(self._record(name, child.name))
        out.sort(key=lambda r: r["CreationTime"], reverse=True)
        return out

    def list(self) -> list[dict]:
        """Every version of every dataset, newest first."""
        root = self.store.path(PREFIX)
        if not root.is_dir():
            return []
        out: list[dict] = []
        for child in sorted(root.iterdir()):
            if child.is_dir() and DATASET_NAME_RE.match(child.name):
                out.extend(self.versions(child.name))
        out.sort(key=lambda r: r["CreationTime"], reverse=True)
        return out

    def describe(self, name: str, sha256: str | None = None) -> dict:
        check_dataset_name(name)
        if sha256:
            return self._record(name, sha256)
        versions = self.versions(name)
        if not versions:
            known = sorted({r["DatasetName"] for r in self.list()})
            hint = f"known datasets: {', '.join(known)}" if known else "upload one with `qcbr cases upload FILE --label COL --name NAME`"
            raise NotFoundError(f"no dataset named {name!r}; {hint}")
        return versions[0]

    def files(self, name: str, sha256: str) -> tuple[Any, Any]:
        """Local paths of a version's cases.parquet and schema.json."""
        prefix = self._prefix(name, sha256)
        return self.store.path(f"{prefix}/cases.parquet"), self.store.path(f"{prefix}/schema.json")

    def load(self, name: str, sha256: str | None = None) -> Any:
        from qcbr.cases import CaseBase

        record = self.describe(name, sha256)
        parquet, _ = self.files(name, record["Sha256"])
        return CaseBase.from_parquet(parquet, record["Schema"])
