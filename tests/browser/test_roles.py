"""Each role logs in through the real form, sees only its pages, visits each of them, logs out.

Every page a role can open is visited in Chromium and saved as a full-page screenshot
(tests/artifacts/browser/role-<role>-<nn>-<page>.png); no page may show an exception or a
traceback. The landing page's first paint is measured and printed (not asserted).
"""
from __future__ import annotations

import pytest

from dashboard import nav
from qcbr.roles import ROLE_LABELS
from tests.browser.conftest import PAINTS
from tests.browser.helpers import go_to, login, logout, nav_titles, open_login, problems, screenshot

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("role", ["business", "data_scientist", "manager"])
def test_role_logs_in_sees_only_its_pages_and_logs_out(role, dashboard, accounts, page):
    name, password = accounts[role]
    landing = nav.BY_KEY[nav.HOME[role]]
    form_paint, landing_paint = login(page, dashboard.url, name, password, landing_title=landing.title)
    PAINTS.append({"role": role, "what": form_paint.what, "ms": round(form_paint.ms, 1)})
    PAINTS.append({"role": role, "what": f"{landing_paint.what} ({landing.title})", "ms": round(landing_paint.ms, 1)})
    PAINTS.append({"role": role, "what": "login form + landing page (typing excluded)",
                   "ms": round(form_paint.ms + landing_paint.ms, 1)})

    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert name in sidebar
    assert ROLE_LABELS[role] in sidebar
    assert "Backend: local" in sidebar

    mine = [spec.title for spec in nav.pages_for(role)]
    assert nav_titles(page) == mine
    others = [spec.title for spec in nav.PAGES if spec.title not in mine]
    if role != "data_scientist":
        assert others, "this role should miss some pages"
    sidebar_links = page.locator('[data-testid="stSidebarNav"]').inner_text()
    for title in others:
        assert title not in sidebar_links, f"{role} sees {title!r}"

    assert not problems(page), problems(page)
    for i, spec in enumerate(nav.pages_for(role), start=1):
        if spec.key != nav.HOME[role]:  # the landing page is already shown
            go_to(page, spec.title)
        assert page.url.rstrip("/").endswith(spec.key) or spec.key == nav.HOME[role], page.url
        assert not problems(page), (spec.key, problems(page))
        screenshot(page, f"role-{role}-{i:02d}-{spec.key}")

    logout(page)
    assert page.locator('[data-testid="stSidebarNavLink"]').count() == 0
    assert page.get_by_role("button", name="Log out").count() == 0
    assert page.get_by_label("User name").input_value() == ""


def test_wrong_password_is_refused_in_the_form(dashboard, accounts, page):
    open_login(page, dashboard.url)
    page.get_by_label("User name").fill("nobody-here")
    page.get_by_label("Password", exact=True).fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("wrong user name or password").wait_for()
    assert page.locator('[data-testid="stSidebarNavLink"]').count() == 0
    assert not problems(page), problems(page)
    screenshot(page, "login-refused")
