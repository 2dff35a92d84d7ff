"""Small helpers shared by the aws backend's parts: times, names, JSON objects in the bucket.

Records carry SageMaker's field names and ISO-8601 UTC times, exactly as the local backend
writes them, so that the CLI's ``--json`` output and the dashboard read both backends alike.
"""
from __future__ import annotations

import json
import re
import secrets
from datetime import datetime, timezone
from typing import Any

from qcbr.errors import NotFoundError, StateError

# SageMaker's resource-name rule (jobs, models, endpoint configs, endpoints)
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def iso(value: Any) -> str | None:
    """boto3 datetimes (and strings) -> ISO-8601 UTC, the records' time format."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return str(value)


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise StateError(
            f"{kind} name {name!r} is not valid: use 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit (e.g. 'churn-staging')"
        )
    return name


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not DATASET_NAME_RE.match(name):
        raise StateError(
            f"dataset name {name!r} is not valid: use 1-63 letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'churn-2024')"
        )
    return name


def slug(text: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:limit].strip("-") or "x"


def resource_name(base: str, suffix: str) -> str:
    """``<base>-<suffix>-<time>-<rand>`` cut to SageMaker's 63 characters, base shortened first."""
    tail = f"-{suffix}-{stamp()}-{secrets.token_hex(2)}"
    return f"{slug(base, 63 - len(tail))}{tail}"


def get_json(store: Any, key: str, default: Any = NotFoundError) -> Any:
    try:
        return json.loads(store.get(key))
    except NotFoundError:
        if default is NotFoundError:
            raise
        return default


def put_json(store: Any, key: str, value: Any) -> str:
    return store.put(key, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


def append_audit(store: Any, actor: Any, action: str, target: str, **details: Any) -> dict:
    """One object per entry under audit/ (S3 has no append; keys sort by time)."""
    now = datetime.now(timezone.utc)
    entry = {"time": now.isoformat(timespec="milliseconds"), "user": actor.name, "role": actor.role,
             "action": action, "target": target}
    if details:
        entry["details"] = details
    key = f"audit/{now:%Y/%m/%d/%H%M%S%f}-{slug(action, 30)}-{secrets.token_hex(3)}.json"
    put_json(store, key, entry)
    return entry
