"""What only the aws backend's parts share: SageMaker resource names and the audit log as objects.

Times, names and JSON objects are ``qcbr.lifecycle.records``, as on the local backend.
"""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from typing import Any

from qcbr.errors import NotFoundError
from qcbr.lifecycle.records import audit_entry, put_json, select_audit, slug, stamp

AUDIT_PREFIX = "audit/"


def resource_name(base: str, suffix: str) -> str:
    """``<base>-<suffix>-<time>-<rand>`` cut to SageMaker's 63 characters, base shortened first."""
    tail = f"-{suffix}-{stamp()}-{secrets.token_hex(2)}"
    return f"{slug(base, 63 - len(tail))}{tail}"


def append_audit(store: Any, actor: Any, action: str, target: str, **details: Any) -> dict:
    """One object per entry under audit/ (S3 has no append; keys sort by time)."""
    now = datetime.now(timezone.utc)
    entry = audit_entry(actor, action, target, details, time=now.isoformat(timespec="milliseconds"))
    key = f"{AUDIT_PREFIX}{now:%Y/%m/%d/%H%M%S%f}-{slug(action, 30)}-{secrets.token_hex(3)}.json"
    put_json(store, key, entry)
    return entry


def read_audit(store: Any, limit: int | None = 100, action: str | None = None) -> list[dict]:
    """Newest first; an unreadable object is skipped, and no more objects are read than returned."""
    def entries():
        for key in sorted(store.list(AUDIT_PREFIX), reverse=True):
            try:
                yield json.loads(store.get(key))
            except (ValueError, NotFoundError):
                yield None

    return select_audit(entries(), limit, action)
