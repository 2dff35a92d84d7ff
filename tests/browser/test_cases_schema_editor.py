"""Editing a column type in the Cases schema review (an ``st.data_editor``) in Chromium.

AppTest cannot edit a data editor, so this drives the real grid: double-click the type cell of
``region`` (numbers that are really category codes), pick ``categorical``, then pick an id
column, which shifts the editor's rows. The edit must stay on ``region`` (the editor's own state
is by row position) and the stored dataset version must hold exactly the reviewed types. A second
file uploaded in the same tab must show its own name, label and types, not the first file's (the
browser keeps showing, and sends back, a keyed widget's old value unless the server pushes a new one).
"""
from __future__ import annotations

import re

import pytest

from tests.browser.helpers import go_to, login, logout, main_text, problems, screenshot, wait_idle

pytestmark = pytest.mark.browser

ROW_HEIGHT = 35  # px: Streamlit's data grid rows and header

ZONES = "member,age,income,region,plan,outcome\n" + "".join(
    f"m{i:03d},{20 + i % 50},{30000 + 750 * i},{[10, 20, 30][i % 3]},{['basic', 'pro'][i % 2]},"
    f"{['yes', 'no'][(i // 2) % 2]}\n"
    for i in range(60)
)


# the data editor whose accessible grid (rendered a moment after the canvas) has a "region" row
FIND_GRID = ("(name) => [...document.querySelectorAll('[data-testid=stMain] [data-testid=stDataFrame]')].findIndex("
             "d => [...d.querySelectorAll('[role=gridcell]')].some(c => c.innerText.trim() === name))")


def types_grid(page, anchor: str = "region"):
    page.wait_for_function(f"(name) => ({FIND_GRID})(name) >= 0", arg=anchor)
    index = page.evaluate(FIND_GRID, anchor)
    return page.locator('[data-testid="stMain"] [data-testid="stDataFrame"]').nth(index)


def shown_types(page, anchor: str = "region") -> dict[str, str]:
    """{column: type} as the editor shows them (its accessible grid cells, two per row)."""
    cells = [c.strip() for c in types_grid(page, anchor).locator('[role="gridcell"]').all_inner_texts()]
    return dict(zip(cells[0::2], cells[1::2]))


def settled_types(page, expected: dict[str, str], timeout_ms: int = 15_000, anchor: str = "region") -> dict[str, str]:
    """The editor's types once they equal ``expected`` (the grid redraws a moment after a rerun), else as shown."""
    shown = shown_types(page, anchor)
    for _ in range(timeout_ms // 250):
        if shown == expected:
            break
        page.wait_for_timeout(250)
        shown = shown_types(page, anchor)
    return shown


def set_type(page, column: str, kind: str) -> None:
    """Double-click the type cell of ``column`` and pick ``kind`` in the cell's option list."""
    row = list(shown_types(page)).index(column)
    grid = types_grid(page)
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.dblclick(box["x"] + box["width"] * 0.75, box["y"] + ROW_HEIGHT * (row + 1) + ROW_HEIGHT / 2)
    page.get_by_role("option", name=kind, exact=True).click()
    page.keyboard.press("Escape")  # leave the grid so the edit is sent
    page.wait_for_function(
        "([c, k]) => { const cells = [...document.querySelectorAll('[data-testid=stDataFrame] [role=gridcell]')]"
        ".map(e => e.innerText.trim()); const i = cells.indexOf(c); return i >= 0 && cells[i + 1] === k; }",
        arg=[column, kind])
    wait_idle(page)


def choose(page, label: str, option: str) -> None:
    field = page.get_by_role("combobox", name=label, exact=True)
    field.click()
    field.fill(option)
    page.get_by_role("option", name=option, exact=True).wait_for()
    page.keyboard.press("Enter")
    wait_idle(page)


def test_a_type_edited_in_the_schema_review_is_what_gets_stored(dashboard, accounts, page, tmp_path, monkeypatch):
    path = tmp_path / "zones.csv"
    path.write_text(ZONES)
    login(page, dashboard.url, *accounts["data_scientist"])
    go_to(page, "Cases")
    page.locator('[data-testid="stFileUploader"]').filter(has_text="Case file").locator(
        'input[type="file"]').set_input_files(str(path))
    page.get_by_text("Schema review").wait_for()
    page.get_by_text(re.compile(r"Valid: 60 cases, 5 features, 2 classes")).wait_for()
    wait_idle(page)
    inferred = {"member": "categorical", "age": "numeric", "income": "numeric", "region": "numeric",
                "plan": "categorical"}
    assert settled_types(page, inferred) == inferred

    set_type(page, "region", "categorical")
    choose(page, "Id column", "member")  # one row fewer above region: the edit must follow the name
    reviewed = {"age": "numeric", "income": "numeric", "region": "categorical", "plan": "categorical"}
    assert settled_types(page, reviewed) == reviewed
    page.get_by_text(re.compile(r"Valid: 60 cases, 4 features, 2 classes")).wait_for()
    wait_idle(page)
    assert not problems(page), problems(page)
    screenshot(page, "cases-schema-review-edited")

    page.get_by_role("button", name="Upload dataset").click()
    page.get_by_text(re.compile(r"Stored zones version [0-9a-f]{12} \(60 rows\)")).wait_for()
    wait_idle(page)
    assert not problems(page), problems(page)
    assert "Traceback" not in main_text(page)

    # another file in the same tab: the form shows that file's name and label, not the last one's
    other = tmp_path / "sizes.csv"
    other.write_bytes(("Größe;Farbe;Klasse\n" + "".join(f"{1.5 + i / 100:.2f};{['grün', 'rot'][i % 2]};"
                                                           f"{['ja', 'nein'][i % 3 == 0]}\n" for i in range(30))
                       ).replace(".", ",").encode("cp1252"))
    page.locator('[data-testid="stFileUploader"]').filter(has_text="Case file").locator(
        'input[type="file"]').set_input_files(str(other))
    page.get_by_text(re.compile(r"Valid: 30 cases, 2 features, 2 classes")).wait_for()
    wait_idle(page)
    assert page.get_by_label("Dataset name", exact=True).input_value() == "sizes"
    assert page.get_by_role("combobox", name="Label column (the solution)", exact=True).input_value() == "Klasse"
    assert page.get_by_role("combobox", name="Id column", exact=True).input_value() == "(none)"
    assert settled_types(page, {"Größe": "numeric", "Farbe": "categorical"}, anchor="Farbe") == {
        "Größe": "numeric", "Farbe": "categorical"}
    screenshot(page, "cases-second-file")

    monkeypatch.setenv("QCBR_HOME", str(dashboard.home))
    from qcbr.lifecycle import get_backend

    stored = get_backend().describe_dataset("zones")
    types = {c["name"]: c["type"] for c in stored["Schema"]["columns"]}
    assert types == {"age": "numeric", "income": "numeric", "region": "categorical", "plan": "categorical",
                     "outcome": "label", "member": "id"}
    dataset = get_backend().load_dataset("zones", stored["Sha256"])
    assert sorted(dataset.frame["region"].astype(str).unique()) == ["10", "20", "30"]
    logout(page)
