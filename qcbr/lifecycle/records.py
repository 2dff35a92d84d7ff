"""What both backends write alike: times, names, JSON objects, audit entries, hyperparameters,
the training channel and lineage.

Records carry SageMaker's field names and ISO-8601 UTC times so that the CLI's ``--json`` output,
the dashboard and either backend read the same; one definition here is what keeps them the same.
Backend-agnostic: standard library and ``qcbr`` only (no boto3), so the Lambda zip can carry it.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from qcbr.errors import NotFoundError, StateError

# SageMaker's resource-name rule (training jobs, models, endpoint configs, endpoints)
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")

# audit(actor, action, target, **details) -> the entry written; each backend keeps its own log
Audit = Callable[..., dict]


# -- times -----------------------------------------------------------------------------------------
def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def iso(value: Any) -> str | None:
    """Datetimes (boto3 returns them; naive means UTC) and strings -> the records' ISO-8601 UTC text."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return str(value)


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def stamp() -> str:
    """The time part of generated names (UTC, sortable, no separators SageMaker refuses)."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


# -- names -----------------------------------------------------------------------------------------
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


def slug(text: str, limit: int, fallback: str = "x") -> str:
    """``text`` as letters, digits and single hyphens, at most ``limit`` long (never empty)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:limit].strip("-") or fallback


# -- JSON objects in a bucket (any qcbr.storage.ObjectStore) ---------------------------------------
def get_json(store: Any, key: str, default: Any = NotFoundError) -> Any:
    try:
        return json.loads(store.get(key))
    except NotFoundError:
        if default is NotFoundError:
            raise
        return default


def put_json(store: Any, key: str, value: Any) -> str:
    return store.put(key, json.dumps(value, indent=2, sort_keys=True, default=str).encode())


# -- the audit log ---------------------------------------------------------------------------------
def audit_entry(actor: Any, action: str, target: str, details: dict[str, Any], time: str | None = None) -> dict:
    """One entry, as both backends store it: ``{time, user, role, action, target, details?}``."""
    entry = {"time": time or utcnow(), "user": actor.name, "role": actor.role, "action": action, "target": target}
    if details:
        entry["details"] = details
    return entry


def select_audit(entries: Iterable[dict | None], limit: int | None = None, action: str | None = None) -> list[dict]:
    """``entries`` (newest first; None for an unreadable one, skipped) filtered by action, up to ``limit``.

    Lazy in ``entries``: a backend passes a generator and reads no more entries than it returns.
    """
    out: list[dict] = []
    for entry in entries:
        if entry is None or (action and entry.get("action") != action):
            continue
        out.append(entry)
        if limit is not None and len(out) >= limit:
            break
    return out


# -- training jobs ---------------------------------------------------------------------------------
def stringify_hyperparameters(hps: dict[str, Any] | None) -> dict[str, str]:
    """SageMaker passes hyperparameters as strings only; so do local jobs."""
    out: dict[str, str] = {}
    for key, value in (hps or {}).items():
        if value is None:
            continue
        out[str(key)] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def training_channel(s3_uri: str) -> dict:
    """The job's ``train`` input channel: the dataset version's whole prefix (cases + schema)."""
    return {
        "ChannelName": "train",
        "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": s3_uri, "S3DataDistributionType": "FullyReplicated",
        }},
        "ContentType": "application/x-parquet",
        "InputMode": "File",
    }


def job_lineage(dataset: dict) -> dict:
    """A new job's Lineage from its dataset record (the run id is filled in once there is one)."""
    return {"DatasetName": dataset["DatasetName"], "DatasetSha256": dataset["Sha256"], "MlflowRunId": None}
