"""Bad case files on the Cases page: the specific message in place, never a traceback, nothing stored.

A PNG saved under a .csv name and a CSV whose label has a single class are uploaded in Chromium;
each must show qcbr's message (what is wrong, with "Fix:") where the schema would be, and the
Upload button must not appear.
"""
from __future__ import annotations

import re

import pytest

from tests.browser.helpers import go_to, login, logout, main_text, problems, screenshot, wait_idle

pytestmark = pytest.mark.browser

# the smallest valid PNG: signature, IHDR, IDAT, IEND (1x1 pixel)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("bad-uploads")
    picture = folder / "scan.csv"
    picture.write_bytes(PNG)
    one_class = folder / "one-class.csv"
    one_class.write_text("height,weight,species\n" + "".join(f"{150 + i},{50 + i},setosa\n" for i in range(20)))
    return {"png": picture, "one_class": one_class}


def upload(page, path) -> None:
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Case file")
    uploader.locator('input[type="file"]').set_input_files(str(path))


@pytest.mark.parametrize("kind, message", [
    ("png", r"scan\.csv is not a CSV or Parquet file: it is a PNG image\. Fix: upload the table itself as CSV or Parquet"),
    ("one_class", r"label column 'species' in one-class\.csv has only one class \('setosa', 20 cases\); a classifier needs at "
                  r"least 2 classes\. Fix: "),
])
def test_bad_file_shows_the_specific_error_in_the_page(dashboard, accounts, page, bad_files, kind, message):
    login(page, dashboard.url, *accounts["data_scientist"])
    go_to(page, "Cases")
    upload(page, bad_files[kind])
    error = page.locator('[data-testid="stAlertContentError"]').filter(has_text=re.compile(message))
    error.wait_for(timeout=60_000)
    wait_idle(page)
    assert not problems(page), problems(page)
    assert page.get_by_role("button", name="Upload dataset").count() == 0
    assert "Traceback" not in main_text(page)
    screenshot(page, f"cases-bad-upload-{kind.replace('_', '-')}")
    logout(page)
