"""Notifications for the dashboard: one JSON line each in ``QCBR_HOME/notifications.jsonl``.

Written by the automated-adjustment policy (a retrain started, a new version awaiting approval)
and read by the dashboard's bell. Appends are whole lines in one ``write`` under an exclusive
lock, so concurrent schedulers and CLI runs never interleave; a reader skips a torn last line.
"""
from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FILE = "notifications.jsonl"


def _path(home: str | os.PathLike) -> Path:
    return Path(home) / FILE


def notify(home: str | os.PathLike, kind: str, message: str, endpoint: str | None = None, level: str = "info",
           **details: Any) -> dict:
    import fcntl

    entry = {"id": uuid.uuid4().hex, "time": datetime.now(timezone.utc).isoformat(), "kind": kind, "level": level,
             "endpoint": endpoint, "message": message, "details": details}
    path = _path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    return entry


def read_notifications(home: str | os.PathLike, limit: int | None = None, endpoint: str | None = None,
                       kind: str | None = None) -> list[dict]:
    """Newest first."""
    try:
        lines = _path(home).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if (endpoint and entry.get("endpoint") != endpoint) or (kind and entry.get("kind") != kind):
            continue
        out.append(entry)
        if limit is not None and len(out) >= limit:
            break
    return out
