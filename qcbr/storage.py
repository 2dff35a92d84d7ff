"""Object storage with S3's shape: a bucket of keys holding bytes.

``LocalObjectStore`` maps ``s3://bucket/key`` to ``<root>/bucket/key`` one to one; ``S3ObjectStore``
is boto3. Both write atomically (a reader never sees half an object). ``open_store(config)`` picks
the one the configured backend uses; boto3 is imported only for the aws backend.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Protocol

from qcbr.errors import NotFoundError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(path: str | os.PathLike, default=None):
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        if default is not None:
            return default
        raise


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key


class ObjectStore(Protocol):
    bucket: str

    def put(self, key: str, data: bytes) -> str: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def delete(self, key: str) -> None: ...
    def uri(self, key: str) -> str: ...


class LocalObjectStore:
    """A bucket on the local disk at ``root/bucket``."""

    def __init__(self, root: str | os.PathLike, bucket: str):
        self.root = Path(root)
        self.bucket = bucket
        self.base = (self.root / bucket).resolve()

    def path(self, key: str) -> Path:
        p = (self.base / key).resolve()
        if self.base not in p.parents and p != self.base:
            raise ValueError(f"key {key!r} escapes the bucket")
        return p

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, data: bytes) -> str:
        atomic_write_bytes(self.path(key), data)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no object {self.uri(key)}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        start = self.path(prefix) if prefix else self.base
        folder = start if start.is_dir() else start.parent
        if not folder.exists():
            return
        for dirpath, _dirs, files in os.walk(folder):
            for name in sorted(files):
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                key = str(Path(dirpath, name).relative_to(self.base))
                if key.startswith(prefix):
                    yield key

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass


class S3ObjectStore:
    """A real S3 bucket through boto3 (honours AWS_ENDPOINT_URL, e.g. moto's server)."""

    def __init__(self, bucket: str, client=None):
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client
        self.bucket = bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise NotFoundError(f"no object {self.uri(key)}") from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception as exc:  # botocore ClientError 404
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


def open_store(config=None) -> ObjectStore:
    """The project's bucket for the configured backend."""
    from qcbr.config import load_config

    config = config or load_config()
    if config.backend == "aws":
        return S3ObjectStore(config.bucket)
    return LocalObjectStore(config.s3_root, config.bucket)
