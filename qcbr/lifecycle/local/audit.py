"""The audit log: one JSON line per mutating call, appended to QCBR_HOME/audit.jsonl.

Who did what and when is part of the approval trail the registry promises; appends are
serialised with a lock so concurrent processes never interleave half lines.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qcbr.lifecycle.local.state import file_lock
from qcbr.lifecycle.records import audit_entry, select_audit
from qcbr.roles import Actor


def append_audit(path: Path, actor: Actor, action: str, target: str, **details: Any) -> dict:
    entry = audit_entry(actor, action, target, details)
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    return entry


def read_audit(path: Path, limit: int | None = None, action: str | None = None) -> list[dict]:
    """Newest first; a torn last line (a writer killed mid-write) is skipped, not fatal."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []

    def entries():
        for line in reversed(lines):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield None

    return select_audit(entries(), limit, action)
