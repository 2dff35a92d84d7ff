"""Reading a job's model.tar.gz from S3: safely extracted, manifest-verified, then inspected.

Registering a version must not trust a tarball blindly: members are extracted only when they
are regular files with plain relative names (no links, no ``..``, no absolute paths), and the
model is loaded through ``QCBRClassifier.load``, which checks every file against the SHA-256
manifest before anything is parsed.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from qcbr.errors import ArtifactError

MAX_MEMBER_BYTES = 2 << 30


def safe_extract(data: bytes, target: Path) -> list[str]:
    """Extract a model.tar.gz held in memory; refuse anything but plain files and folders."""
    names: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar.getmembers():
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts:
                    raise ArtifactError(f"model.tar.gz member {member.name!r} escapes the model folder; refusing it")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ArtifactError(f"model.tar.gz member {member.name!r} is not a regular file; refusing it")
                if member.size > MAX_MEMBER_BYTES:
                    raise ArtifactError(f"model.tar.gz member {member.name!r} is larger than 2 GiB; refusing it")
                parts = [p for p in path.parts if p not in ("", ".")]
                if not parts:
                    continue
                out = target.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                out.write_bytes(source.read() if source else b"")
                names.append("/".join(parts))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactError(f"model.tar.gz is not a readable tar.gz archive ({type(exc).__name__}: {exc})") from None
    return names


def inspect_model(data: bytes) -> dict[str, Any]:
    """What the registry needs from an artifact: metrics, baseline files, feature schema, classes."""
    from qcbr.model import QCBRClassifier

    with tempfile.TemporaryDirectory(prefix="qcbr-artifact-") as tmp:
        root = Path(tmp)
        safe_extract(data, root)
        model = QCBRClassifier.load(root)  # verifies the manifest; ArtifactError on any mismatch

        def read(name: str) -> Any:
            path = root / name
            if not path.is_file():
                return None
            try:
                return json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                raise ArtifactError(f"{name} in model.tar.gz is not valid JSON") from None

        metrics = read("metrics.json") or {}
        files = {name: (root / name).read_bytes() for name in ("metrics.json", "statistics.json",
                                                                 "constraints.json", "model_card.md")
                 if (root / name).is_file()}
        classes = [str(c) for c in getattr(model, "classes_", [])]
        schema = list(getattr(model, "feature_schema_", None) or [])
        return {"metrics": metrics, "files": files, "classes": classes, "features": schema,
                "model_dir_files": sorted(os.listdir(root))}


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The record's ModelMetrics: name -> float for every plain number in metrics.json."""
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and value == value:
            out[str(key)] = float(value)
    return out
