"""The product's main flow, clicked through in Chromium by the three roles on one live server.

data scientist: upload iris on Cases -> launch a run on Training and follow it to Completed ->
register it on Registry; manager: approve it on Registry; data scientist: deploy a staging
endpoint on Endpoints and follow it to InService; business user: predict on Predict (label,
confidence, similar cases), give feedback, find both on My predictions; then predict a batch
from a Windows-1252 CSV with ';' and decimal commas (the finished batch panel must stop polling).

Each step waits for what the page must show (the pages poll with st.fragment(run_every)),
saves a screenshot (tests/artifacts/browser/flow-<nn>-...png) and checks that no page shows an
exception or a traceback. Training runs for real (a background job on the local backend): the
form's fixed alpha and k keep it to seconds, the timeout allows for a busy machine.
"""
from __future__ import annotations

import re

import pytest

from tests.browser.helpers import go_to, login, logout, main_text, problems, screenshot, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

TRAINING_TIMEOUT = 300_000  # ms
ENDPOINT_TIMEOUT = 180_000
SETOSA = {"sepal_length": "5.1", "sepal_width": "3.5", "petal_length": "1.4", "petal_width": "0.2"}


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory):
    """scikit-learn's iris as the CSV an analyst would upload (plain column names, a text label)."""
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=dict(zip(data.feature_names, SETOSA)))
    frame["species"] = [data.target_names[t] for t in frame.pop("target")]
    path = tmp_path_factory.mktemp("upload") / "iris.csv"
    frame.to_csv(path, index=False)
    return path


def clean(page, step: str) -> None:
    found = problems(page)
    assert not found, f"{step}: {found}"


def shot(page, n: int, name: str) -> None:
    clean(page, name)
    screenshot(page, f"flow-{n:02d}-{name}")


def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")))
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label``."""
    # type and press Enter: react-aria closes the option list when the page scrolls under a mouse pick
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label)
    field = box.locator("input")
    field.scroll_into_view_if_needed()
    field.click()
    field.fill(option)
    page.get_by_role("option", name=option, exact=True).wait_for()
    page.keyboard.press("Enter")
    assert field.input_value() == option


@pytest.fixture(scope="module")
def batch_csv(tmp_path_factory):
    """Three new flowers as a German Excel saves them: Windows-1252, ';' between fields, decimal commas."""
    rows = [";".join(SETOSA)] + [";".join(v.replace(".", ",") for v in values) for values in (
        ("5.0", "3.4", "1.5", "0.2"), ("6.4", "3.2", "4.5", "1.5"), ("6.3", "3.3", "6.0", "2.5"))]
    path = tmp_path_factory.mktemp("batch") / "neue-blumen.csv"
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("cp1252"))
    return path


def test_upload_train_register_approve_deploy_predict_feedback(dashboard, accounts, page, iris_csv, batch_csv):
    url = dashboard.url
    frames: list[int] = []  # messages the browser sends the server (reruns, widget changes)
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(len(payload or b""))))
    scientist, manager, analyst = accounts["data_scientist"], accounts["manager"], accounts["business"]

    # --- data scientist: upload the cases
    login(page, url, *scientist)
    go_to(page, "Cases")
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Case file")
    uploader.locator('input[type="file"]').set_input_files(str(iris_csv))
    page.get_by_text("Schema review").wait_for()
    page.get_by_text(re.compile(r"Valid: 150 cases, 4 features, 3 classes")).wait_for()
    wait_idle(page)
    shot(page, 1, "scientist-cases-reviewed")
    page.get_by_role("button", name="Upload dataset").click()
    page.get_by_text(re.compile(r"Stored iris version [0-9a-f]{12} \(150 rows\)")).wait_for()
    wait_idle(page)
    shot(page, 2, "scientist-cases-stored")

    # --- launch a quick run (fixed alpha and k: no cross-validation grid) and follow it
    go_to(page, "Training")
    for toggle in ("Tune alpha by cross-validation", "Tune k by cross-validation"):
        switch = page.locator('[data-testid="stCheckbox"]').filter(has_text=toggle).locator("input")
        assert switch.is_checked(), toggle
        page.get_by_text(toggle, exact=True).click()
        assert not switch.is_checked(), toggle
    page.get_by_label("alpha (when not tuned)").fill("0.5")
    page.get_by_label("k (when not tuned)").fill("5")
    shot(page, 3, "scientist-training-form")
    page.get_by_role("button", name="Launch run").click()
    live = page.locator('[data-testid="stMain"] h3').filter(has_text=re.compile(r"iris|training|qcbr", re.I))
    live.first.wait_for(timeout=60_000)
    job_name = live.first.inner_text().split()[0]
    page.get_by_text(re.compile(r"Validation accuracy \d\.\d{3}")).wait_for(timeout=TRAINING_TIMEOUT)
    accuracy = float(re.search(r"Validation accuracy (\d\.\d{3})", main_text(page)).group(1))
    assert accuracy >= 0.8, f"iris with zz, alpha 0.5, k 5 should classify well; got {accuracy}"
    wait_idle(page)
    assert "Completed" in page.locator('[data-testid="stMain"] h3').filter(has_text=job_name).first.inner_text()
    shot(page, 4, "scientist-training-completed")

    # --- register it
    go_to(page, "Registry")
    page.get_by_role("button", name="Register", exact=True).click()
    page.get_by_text("Registered version 1: waiting for a manager's approval.").wait_for()
    wait_idle(page)
    assert "PendingManualApproval" in main_text(page)
    shot(page, 5, "scientist-registry-registered")
    logout(page)

    # --- manager: approve with a comment
    login(page, url, *manager)
    go_to(page, "Registry")
    page.get_by_label("Comment (recorded with your decision)").fill("browser test: iris accuracy acceptable")
    page.get_by_role("button", name="Approve").click()
    page.locator('[data-testid="stMain"] h3').filter(has_text="Version 1").filter(has_text="Approved").wait_for()
    wait_idle(page)
    shot(page, 6, "manager-registry-approved")
    page.get_by_role("tab", name="Approval history").click()
    page.get_by_text("No decision yet.").wait_for(state="detached", timeout=5_000)
    shot(page, 7, "manager-registry-history")
    # the suggested endpoint name follows the stage the manager picks
    assert page.get_by_label("Endpoint name", exact=True).input_value() == "qcbr-staging"
    page.locator('[data-testid="stRadio"]').filter(has_text="Stage").get_by_text("prod", exact=True).click()
    page.wait_for_function("() => document.querySelector('input[aria-label=\"Endpoint name\"]')?.value === 'qcbr-prod'")
    wait_idle(page)
    logout(page)

    # --- data scientist: deploy a staging endpoint and follow it to InService
    login(page, url, *scientist)
    go_to(page, "Endpoints")
    assert page.get_by_label("Endpoint name").input_value() == "qcbr-staging"
    page.get_by_role("button", name="Deploy", exact=True).click()
    heading = page.locator('[data-testid="stMain"] h3').filter(has_text="qcbr-staging")
    heading.first.wait_for(timeout=60_000)
    heading.filter(has_text="InService").first.wait_for(timeout=ENDPOINT_TIMEOUT)
    wait_idle(page)
    assert "staging" in heading.first.inner_text() and "v1" in heading.first.inner_text()
    shot(page, 8, "scientist-endpoints-inservice")
    logout(page)

    # --- business user: predict one case, see why, give feedback
    login(page, url, *analyst, landing_title="Predict")
    form = page.locator('[data-testid="stForm"]').filter(has=page.get_by_role("button", name="Predict"))
    for name, value in SETOSA.items():
        form.get_by_label(name, exact=True).fill(value)
    form.get_by_role("button", name="Predict").click()
    page.get_by_text("Why: the most similar stored cases").wait_for(timeout=60_000)
    wait_idle(page)
    assert metric(page, "Prediction") == "setosa"
    confidence = float(metric(page, "Confidence"))
    assert 0.5 < confidence <= 1.0
    assert metric(page, "Model version") == "1"
    similar = page.locator('[data-testid="stDataFrame"]').last
    similar.locator('[role="gridcell"]').first.wait_for(state="attached")
    cells = similar.locator('[role="gridcell"]').all_inner_texts()
    assert any(re.fullmatch(r"case-\d{4}", c.strip()) for c in cells), cells
    assert "setosa" in [c.strip() for c in cells], cells
    shot(page, 9, "analyst-predict-result")
    choose(page, "True label", "setosa")
    page.get_by_role("button", name="Send feedback").click()
    page.get_by_text("Thanks: recorded as ground truth for this prediction.").wait_for()
    wait_idle(page)
    shot(page, 10, "analyst-predict-feedback")

    go_to(page, "My predictions")
    assert metric(page, "Predictions") == "1"
    assert metric(page, "With feedback") == "1"
    assert metric(page, "Correct where known") == "100%"
    shot(page, 11, "analyst-my-predictions")

    # --- business user: a batch from a European spreadsheet (Windows-1252, ';', decimal commas)
    go_to(page, "Predict")
    page.get_by_role("tab", name="Batch (CSV)").click()
    page.locator('[data-testid="stFileUploader"]').filter(has_text="Cases to predict").locator(
        'input[type="file"]').set_input_files(str(batch_csv))
    page.get_by_role("button", name="Predict all").click()
    page.get_by_text("3 predictions; ").wait_for(timeout=60_000)
    wait_idle(page)
    sent = len(frames)
    page.wait_for_timeout(3_000)
    assert len(frames) == sent, "the finished batch panel still polls the server"
    shot(page, 12, "analyst-predict-batch")
    go_to(page, "My predictions")
    page.wait_for_timeout(1_500)  # a stray fragment rerun from Predict would blank this page
    assert metric(page, "Predictions") == "2"
    shot(page, 13, "analyst-my-predictions-batch")
    logout(page)
