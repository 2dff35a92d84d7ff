"""Helpers for driving the dashboard with ``streamlit.testing.v1.AppTest`` (tests and benchmarks).

``app_as(role, home)`` returns an AppTest of the real entrypoint with a user of that role
logged in: the user exists in ``home``'s users file (so the per-run role check passes) and the
session holds it, as after a successful login form. QCBR_HOME must point at ``home``.
"""
from __future__ import annotations

import os
from pathlib import Path

from streamlit.testing.v1 import AppTest

from dashboard import nav

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = REPO_ROOT / "dashboard" / "app.py"
NAMES = {"business": "test-analyst", "data_scientist": "test-scientist", "manager": "test-manager"}


def ensure_user(home: str | os.PathLike, role: str, name: str | None = None) -> str:
    from qcbr.errors import NotFoundError
    from qcbr.users import UserStore

    name = name or NAMES[role]
    store = UserStore(home, rounds=4)
    try:
        if store.actor(name).role == role:
            return name
        store.remove(name)
    except NotFoundError:
        pass
    store.add(name, role, f"{name}-password")
    return name


def app_as(role: str, home: str | os.PathLike, name: str | None = None, timeout: float = 60) -> AppTest:
    """The entrypoint with ``role`` logged in (not run yet)."""
    if Path(os.environ.get("QCBR_HOME", "")).resolve() != Path(home).resolve():
        raise RuntimeError("set QCBR_HOME to the same home before using app_as (monkeypatch.setenv)")
    name = ensure_user(home, role, name)
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.session_state["qcbr_user"] = {"name": name, "role": role, "via": "local"}
    return at


def page_path(key: str) -> str:
    """A page's path relative to the entrypoint, as ``AppTest.switch_page`` wants it."""
    return os.path.relpath(nav.BY_KEY[key].path, APP.parent)


def open_page(at: AppTest, key: str, timeout: float | None = None) -> AppTest:
    """Run the entrypoint once (registering the role's pages), then switch to ``key`` and run it."""
    if not getattr(at, "_registered_pages", None):
        at.run(timeout=timeout)
    return at.switch_page(page_path(key)).run(timeout=timeout)


def texts(at: AppTest) -> str:
    """All visible text of the last run (markdown, captions, alerts, titles), for assertions."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success",
                 "code", "text"):
        parts += [str(getattr(e, "value", "")) for e in getattr(at, kind)]
    return "\n".join(parts)
