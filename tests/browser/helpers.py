"""Driving the real dashboard in Chromium: the server process, login, navigation, page checks.

Shared by the browser tests (through ``conftest.py``) and ``python -m bench.dashboard``, so the
benchmark measures first paint exactly the way the tests do. Nothing here asserts: helpers wait
for what the page must show and raise Playwright's TimeoutError when it does not appear.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "browser"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 900}
QCBR_ENV = ("QCBR_HOME", "QCBR_USER", "QCBR_BACKEND", "QCBR_CONFIG", "QCBR_PROJECT", "QCBR_BUCKET")

# "    analyst    role business        password Xyz..." as printed by dashboard.state.initial_accounts
PASSWORD_LINE = re.compile(r"^\s+(\S+)\s+role\s+(\S+)\s+password\s+(\S+)\s*$", re.M)

# JavaScript: whether the app's script run has ended (the attribute Streamlit's own e2e tests read)
IDLE = '() => document.querySelector(".stApp")?.getAttribute("data-test-script-state") === "notRunning"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dashboard:
    """One ``streamlit run dashboard/app.py`` process on 127.0.0.1 with its own QCBR_HOME."""

    home: Path
    log_path: Path
    script: Path = REPO_ROOT / "dashboard" / "app.py"
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    started_in: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "Dashboard":
        env = {k: v for k, v in os.environ.items() if k not in QCBR_ENV}
        env.update({"QCBR_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **self.extra_env})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(self.script), "--server.port", str(self.port),
                 "--server.headless", "true", "--server.address", "127.0.0.1"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: teardown kills it and anything it spawned
            )
        deadline = started + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode} before answering:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"streamlit did not answer /_stcore/health within {timeout:.0f} s:\n{self.output()}")
            time.sleep(0.2)
        self.started_in = time.monotonic() - started
        return self

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def printed_passwords(self, timeout: float = 30.0) -> dict[str, tuple[str, str]]:
        """{name: (role, password)} from the first start's banner (printed at the first visit)."""
        deadline = time.monotonic() + timeout
        while True:
            found = {m[0]: (m[1], m[2]) for m in PASSWORD_LINE.findall(self.output())}
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def launch_chromium(playwright, profile_dir: Path):
    """A headless Debian Chromium with a fresh profile (a persistent context: one per profile dir)."""
    context = playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, viewport=VIEWPORT,
    )
    context.set_default_timeout(30_000)
    return context


# ------------------------------------------------------------------------------- page helpers
def wait_idle(page, timeout: float = 60_000) -> None:
    """Wait until the script run (not fragments started later) has finished."""
    page.wait_for_function(IDLE, timeout=timeout)


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def problems(page) -> list[str]:
    """What must never be on a page: exceptions, tracebacks, errors the pages call unexpected."""
    found = []
    if page.locator('[data-testid="stException"]').count():
        found.append("an st.exception element: " + page.locator('[data-testid="stException"]').first.inner_text())
    body = page.locator("body").inner_text()
    for needle in ("Traceback", "an unexpected "):
        if needle in body:
            at = body.index(needle)
            found.append(f"{needle!r} in the page: …{body[max(0, at - 200):at + 300]}…")
    return found


def nav_titles(page) -> list[str]:
    """The page titles in the sidebar navigation, in order."""
    links = page.locator('[data-testid="stSidebarNavLink"]')
    links.first.wait_for()
    return [t.strip() for t in links.locator('[data-testid="stMarkdownContainer"]').all_inner_texts()]


def title_visible_js(title: str) -> str:
    """A function for ``wait_for_function``: performance.now() once an up-to-date h1 reads ``title``.

    The match is exact (trimmed), so "Predict" is not found in "My predictions"; stale elements
    (left from the previous page while the new script runs) do not count.
    """
    return (
        "() => { const want = " + json.dumps(title.strip()) + ";"
        " for (const h of document.querySelectorAll('[data-testid=stMain] h1')) {"
        "  const box = h.closest('[data-testid=stElementContainer]');"
        "  if (h.innerText.trim() === want && !(box && box.getAttribute('data-stale') === 'true'))"
        "   return performance.now(); }"
        " return false; }"
    )


def login_form_visible_js() -> str:
    return ("() => { const i = document.querySelector('input[aria-label=\"User name\"]');"
            " return i && i.offsetParent !== null ? performance.now() : false; }")


@dataclass
class Paint:
    """Milliseconds measured in the page with performance.now()."""

    what: str
    ms: float


def open_login(page, url: str, timeout: float = 60_000) -> Paint:
    """Load the app (a new Streamlit session) and time navigation start -> login form shown."""
    page.goto(url, wait_until="commit")
    at = page.wait_for_function(login_form_visible_js(), timeout=timeout, polling="raf").json_value()
    return Paint("navigation start -> login form", float(at))


def login(page, url: str, name: str, password: str, landing_title: str | None = None,
          timeout: float = 60_000) -> tuple[Paint, Paint | None]:
    """Log in through the real form; returns (login form paint, submit -> landing page title paint)."""
    form = open_login(page, url, timeout)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    button = page.get_by_role("button", name="Log in")
    clicked = page.evaluate("() => performance.now()")
    button.click()
    landing = None
    if landing_title:
        at = page.wait_for_function(title_visible_js(landing_title), timeout=timeout, polling="raf").json_value()
        landing = Paint("submit -> landing page title", float(at) - float(clicked))
    page.locator('[data-testid="stSidebar"]').get_by_text(name, exact=True).wait_for(timeout=timeout)
    wait_idle(page, timeout)
    return form, landing


def logout(page, timeout: float = 30_000) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Log out").click()
    page.get_by_label("User name").wait_for(timeout=timeout)


def go_to(page, nav_title: str, page_title: str | None = None, timeout: float = 60_000) -> Paint:
    """Click a sidebar link; time click -> the new page's title painted, then wait for the run to end.

    ``page_title`` is the page's h1 when it differs from its navigation title. Going to the page
    already shown measures nothing (its title is there before the click): callers avoid it.
    """
    clicked = page.evaluate(
        "(t) => { const links = [...document.querySelectorAll('[data-testid=stSidebarNavLink]')];"
        " const a = links.find(l => l.querySelector('[data-testid=stMarkdownContainer]')?.innerText.trim() === t);"
        " if (!a) return null; const now = performance.now(); a.click(); return now; }",
        nav_title,
    )
    if clicked is None:
        raise LookupError(f"no sidebar link {nav_title!r}; the navigation shows {nav_titles(page)}")
    at = page.wait_for_function(title_visible_js(page_title or nav_title), timeout=timeout,
                                polling="raf").json_value()
    wait_idle(page, timeout)
    return Paint(f"click -> {nav_title!r} title", float(at) - float(clicked))


def screenshot(page, name: str) -> Path:
    """A full-page PNG under tests/artifacts/browser/.

    Streamlit scrolls its main area inside the window, so a plain full-page shot stops at the
    window's height: the viewport is stretched to the content for the shot, then restored.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = page.evaluate(
        "() => Math.max(document.body.scrollHeight,"
        " ...[...document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer],"
        " [data-testid=stSidebarContent]')].map(e => e.scrollHeight))"
    )
    size = page.viewport_size or VIEWPORT
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height) + 40, 12_000))})
    page.wait_for_timeout(300)  # let the layout settle at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path
