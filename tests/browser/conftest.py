"""Fixtures for the browser tests: one real dashboard server and one real Chromium per session.

The server is ``streamlit run dashboard/app.py`` in a subprocess with a temporary QCBR_HOME on a
free port of 127.0.0.1. Nobody creates accounts beforehand: the first visit triggers the first
start's banner, and the tests read the three printed passwords from the server's output, as an
operator would. Teardown kills the server's process group and every process the lifecycle
started from that home (training jobs, inference servers, the gateway).

First-paint numbers measured by the tests are collected in ``PAINTS`` and printed at the end of
the run (and written to tests/artifacts/browser/first_paint.json); nothing is asserted on them.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.browser.helpers import ARTIFACTS, CHROMIUM, Dashboard, launch_chromium, open_login, screenshot
from tests.conftest import kill_home_processes

# role -> the name of the account the first start creates for it (qcbr.users.INITIAL_ACCOUNTS)
ROLES = {"business": "analyst", "data_scientist": "scientist", "manager": "manager"}

PAINTS: list[dict] = []


@pytest.fixture(scope="package")
def dashboard(tmp_path_factory):
    """The running dashboard; its output (minus passwords) is kept as tests/artifacts/browser/streamlit.log."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    work = tmp_path_factory.mktemp("dashboard")
    server = Dashboard(home=work / "home", log_path=work / "streamlit.log").start()
    try:
        yield server
    finally:
        server.stop()
        kill_home_processes(server.home)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "streamlit.log").write_text(re.sub(r"password \S+", "password ********", server.output()))


@pytest.fixture(scope="package")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh profile; each test opens its own tab (its own Streamlit session)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = launch_chromium(pw, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="package")
def accounts(dashboard, browser) -> dict[str, tuple[str, str]]:
    """role -> (name, password) of the initial accounts, read from the first start's banner."""
    page = browser.new_page()
    try:
        paint = open_login(page, dashboard.url)
        notice = page.get_by_text("passwords were printed once in the terminal")
        notice.wait_for()
        PAINTS.append({"role": "(logged out)", "what": paint.what, "ms": round(paint.ms, 1)})
    finally:
        page.close()
    printed = dashboard.printed_passwords()
    assert printed, f"the first start printed no passwords; server output:\n{dashboard.output()}"
    by_role = {role: (name, password) for name, (role, password) in printed.items()}
    assert set(by_role) == set(ROLES), printed.keys()
    return by_role


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request):
    """A new tab, closed afterwards; a failing test leaves FAILED-<test>.png next to the screenshots."""
    tab = browser.new_page()
    try:
        yield tab
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
            try:
                screenshot(tab, f"FAILED-{name}")
            except Exception:  # noqa: BLE001 - the test's own failure is what matters
                pass
        tab.close()


def pytest_terminal_summary(terminalreporter):
    if not PAINTS:
        return
    terminalreporter.section("dashboard first paint (Chromium; target <= 2500 ms, not asserted)")
    for row in PAINTS:
        terminalreporter.write_line(f"{row['role']:<16} {row['what']:<44} {row['ms']:>8.1f} ms")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "first_paint.json").write_text(json.dumps(PAINTS, indent=2) + "\n")
