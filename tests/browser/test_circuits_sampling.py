"""The sampled-fidelity comparison on Circuits & similarity, run in Chromium.

It runs as a background task that the page polls once a second; once its result is drawn the
page must stop polling (a finished panel that keeps rerunning recomputes the exact fidelities and
re-sends the figure every second for as long as the tab stays open).
"""
from __future__ import annotations

import re

import pytest

from tests.browser.helpers import go_to, login, logout, problems, screenshot, wait_idle

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def wine(dashboard, monkeypatch_module):
    """A dataset of its own in the dashboard's home, stored through the library as the CLI would."""
    monkeypatch_module.setenv("QCBR_HOME", str(dashboard.home))
    from qcbr.cases import CaseBase, demo_case_base
    from qcbr.lifecycle import get_backend
    from qcbr.roles import OPERATOR

    wine = demo_case_base("wine")
    cases = CaseBase.from_frame(wine.frame.iloc[::4], label=wine.label, id_column=wine.id_column, name="wine-sample")
    return get_backend().upload_dataset(OPERATOR, cases, "wine-sample")["DatasetName"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_a_finished_sampled_comparison_stops_polling(dashboard, accounts, page, wine):
    frames: list[int] = []  # messages the browser sends the server (reruns, widget changes)
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(len(payload or b""))))
    login(page, dashboard.url, *accounts["data_scientist"])
    go_to(page, "Circuits & similarity")
    field = page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Dataset", exact=True)
    field.click()
    field.fill(wine)
    page.get_by_role("option", name=wine, exact=True).click()
    wait_idle(page)
    page.get_by_role("tab", name="Exact vs sampled").click()
    page.get_by_role("button", name="Run sampled comparison").click()
    page.get_by_text(re.compile(r"Mean absolute error \d\.\d{4} over 6 pairs")).wait_for(timeout=120_000)
    wait_idle(page)
    sent = len(frames)
    page.wait_for_timeout(3_000)
    assert len(frames) == sent, "the finished sampled comparison still polls the server"
    assert not problems(page), problems(page)
    screenshot(page, "circuits-sampled-done")
    logout(page)
