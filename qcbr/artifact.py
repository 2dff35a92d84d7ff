"""Model artifacts as plain data: one JSON file, one ``.npz`` of arrays and a SHA-256 manifest.

Artifacts travel (tarballs, buckets, registries) and are loaded when an endpoint starts, so they
hold data only: pickle would run code chosen by whoever wrote the file. Every listed file is read
once, hashed and compared with ``MANIFEST.json`` before anything is parsed from those very bytes,
so a truncated, corrupted or edited file is refused with an ``ArtifactError`` that names it.

The manifest guards against accidents and naive tampering; it is not a signature (whoever can
rewrite a file can rewrite the manifest too). Registries add that trust on top.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from qcbr.errors import ArtifactError
from qcbr.storage import atomic_write_bytes

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = "qcbr-manifest"
MANIFEST_VERSION = 1
JSON_NAME = "model.json"
NPZ_NAME = "arrays.npz"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, no NaN) so the same model always hashes the same."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False).encode("utf-8")


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Arrays as an uncompressed .npz (loads faster than compressed; artifacts are small)."""
    clean: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise TypeError(
                f"array {name!r} has dtype object, which .npz can only store with pickle; "
                "convert it to numbers or fixed-width strings first"
            )
        clean[name] = arr
    buf = io.BytesIO()
    np.savez(buf, **clean)
    return buf.getvalue()


def write_manifest(directory: str | os.PathLike, names: list[str]) -> dict:
    """Hash the named files of ``directory`` into its MANIFEST.json (written last, atomically)."""
    directory = Path(directory)
    files = {}
    for name in sorted(set(names)):
        _check_plain_name(name)
        path = directory / name
        files[name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": files}
    atomic_write_bytes(directory / MANIFEST, json_bytes(manifest))
    return manifest


def write_artifact(
    directory: str | os.PathLike,
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    *,
    extra_files: Mapping[str, bytes] | None = None,
) -> dict:
    """Write ``model.json`` + ``arrays.npz`` (+ extra files) and the manifest over all of them.

    Each file is written atomically and the manifest last, so a reader that races a writer sees
    either the old complete artifact or a manifest mismatch, never a half-written model it trusts.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payloads = {JSON_NAME: json_bytes(dict(meta)), NPZ_NAME: npz_bytes(arrays)}
    for name, data in (extra_files or {}).items():
        _check_plain_name(name)
        if name in payloads or name == MANIFEST:
            raise ValueError(f"extra file name {name!r} clashes with the artifact's own files")
        payloads[name] = bytes(data)
    for name, data in payloads.items():
        atomic_write_bytes(directory / name, data)
    return write_manifest(directory, list(payloads))


def verify_manifest(
    directory: str | os.PathLike, required: tuple[str, ...] = (JSON_NAME, NPZ_NAME)
) -> dict[str, bytes]:
    """Check every file the manifest lists; return their verified bytes by name.

    Raises ArtifactError naming the file and what is wrong (missing, size, hash), so that an
    operator knows whether to re-download, re-train or investigate.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"model artifact folder {str(directory)!r} does not exist or is not a folder")
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except FileNotFoundError:
        raise ArtifactError(
            f"{manifest_path} is missing: this folder is not a complete qcbr model artifact "
            "(save it again with QCBRClassifier.save, or re-extract the model.tar.gz)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({exc}); the artifact is corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactError(f"{manifest_path} is not a qcbr manifest; the artifact is corrupted")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ArtifactError(
            f"{manifest_path} has manifest version {manifest.get('version')!r}; this qcbr reads "
            f"version {MANIFEST_VERSION} (upgrade qcbr or re-save the model)"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{manifest_path} lists no files; the artifact is corrupted")
    for name in required:
        if name not in files:
            raise ArtifactError(f"{manifest_path} does not list {name!r}; the artifact is incomplete")
    verified: dict[str, bytes] = {}
    for name, entry in files.items():
        try:
            _check_plain_name(name)
        except ValueError:
            raise ArtifactError(f"{manifest_path} lists {name!r}, which is not a plain file name; refusing it") from None
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise ArtifactError(f"{manifest_path} has no sha256 for {name!r}; the artifact is corrupted")
        path = directory / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{path} is listed in the manifest but missing; the artifact is incomplete") from None
        size = entry.get("size")
        if size is not None and size != len(data):
            raise ArtifactError(
                f"{path} has {len(data)} bytes but the manifest says {size}: the file is truncated or "
                "was changed after saving; do not use this model (re-download or re-train it)"
            )
        digest = sha256_bytes(data)
        if digest != entry["sha256"]:
            raise ArtifactError(
                f"{path} does not match its SHA-256 in the manifest (expected {entry['sha256'][:12]}..., "
                f"got {digest[:12]}...): the file is corrupted or was tampered with; do not use this model"
            )
        verified[name] = data
    return verified


def read_artifact(directory: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Verified ``(meta, arrays)`` of an artifact written by ``write_artifact``."""
    verified = verify_manifest(directory)
    path = Path(directory)
    try:
        meta = json.loads(verified[JSON_NAME])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path / JSON_NAME} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path / JSON_NAME} does not hold a JSON object")
    try:
        with np.load(io.BytesIO(verified[NPZ_NAME]), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as exc:  # object arrays need pickle: refused
        raise ArtifactError(f"{path / NPZ_NAME} holds data that needs pickle to load; refusing it ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError ...
        raise ArtifactError(f"{path / NPZ_NAME} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    return meta, arrays


def _check_plain_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name != os.path.basename(name):
        raise ValueError(f"{name!r} is not a plain file name")
