"""Registry and Endpoints as a manager on the seeded demo: what the version really uses, and
deploy forms whose endpoint name follows the stage and never silently lands in the wrong stage.
"""
from __future__ import annotations

import pytest

from dashboard.testing import app_as, open_page, texts
from tests.conftest import demo_home

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with demo_home(tmp_path_factory, "deploy") as (home, backend, summary):
        yield {"home": home, "backend": backend, "summary": summary}


def test_registry_shows_the_tuned_alpha_and_k_not_auto(demo):
    version = demo["backend"].describe_model_version(1)
    assert version["HyperParameters"]["alpha"] == "auto"  # the demo tunes alpha
    at = open_page(app_as("manager", demo["home"]), "registry")
    assert not at.exception, [e.message for e in at.exception]
    shown = {m.label: m.value for m in at.metric}
    assert shown["alpha (tuned)"] == f"{version['ModelMetrics']['alpha']:g}"
    assert shown["k"] == f"{version['ModelMetrics']['k']:g}" == version["HyperParameters"]["k"]
    assert "auto" not in shown.values()


@pytest.mark.parametrize("page, stage_key, name_key", [("registry", "reg_stage", "reg_endpoint"),
                                                       ("endpoints", "ep_new_stage", "ep_new_name")])
def test_the_suggested_endpoint_name_follows_the_stage(demo, page, stage_key, name_key):
    at = open_page(app_as("manager", demo["home"]), page)
    assert at.text_input(key=name_key).value == "qcbr-staging"
    at.radio(key=stage_key).set_value("prod").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.text_input(key=name_key).value == "qcbr-prod"
    at.radio(key=stage_key).set_value("staging").run()
    assert at.text_input(key=name_key).value == "qcbr-staging"


def test_prod_under_the_name_of_a_staging_endpoint_is_refused_not_a_staging_update(demo):
    staging = demo["summary"]["EndpointName"]
    before = demo["backend"].describe_endpoint(staging)
    at = open_page(app_as("manager", demo["home"]), "registry")
    at.radio(key="reg_stage").set_value("prod").run()
    at.text_input(key="reg_endpoint").set_value(staging)
    next(b for b in at.button if b.label == "Deploy this version").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert f"{staging} is a staging endpoint" in texts(at)
    after = demo["backend"].describe_endpoint(staging)
    assert (after["Stage"], after["EndpointStatus"], after["LastModifiedTime"]) == (
        "staging", "InService", before["LastModifiedTime"])


def test_the_predict_form_starts_from_a_typical_case_and_shows_the_training_range(demo):
    at = open_page(app_as("business", demo["home"]), "predict")
    assert not at.exception, [e.message for e in at.exception]
    field = at.number_input(key="pred_f_sepal length (cm)")
    assert field.value == 5.8  # iris' median sepal length, not 0 (no flower has that)
    assert field.help == "training cases: 4.3 to 7.9 (median 5.8)"
    assert at.number_input(key="pred_f_petal width (cm)").value == 1.3


def test_a_run_whose_process_is_killed_shows_failed_with_the_reason_and_its_log(demo):
    import os
    import signal

    from qcbr.roles import OPERATOR
    from tests.conftest import wait_for

    backend = demo["backend"]
    job = backend.create_training_job(OPERATOR, demo["summary"]["DatasetName"],
                                      {"feature_map": "zz", "similarity": "sampled"}, job_name="deploy-killed")
    name = job["TrainingJobName"]
    pid = wait_for(lambda: _internal(demo["home"], name).get("TrainingPid"), what="the training process")
    # a run launched outside the page is listed there within the 2 s listing cache; don't race it
    from dashboard.state import clear_listings

    clear_listings()
    at = open_page(app_as("data_scientist", demo["home"]), "training")
    at.selectbox(key="train_watch").set_value(name).run()
    assert "InProgress" in texts(at)
    os.kill(pid, signal.SIGKILL)
    assert backend.wait_training_job(name, timeout=60, poll=0.1)["TrainingJobStatus"] == "Failed"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert f"### {name} :red-badge[Failed]" in texts(at)
    assert "Failed: training process killed by SIGKILL" in [e.value for e in at.error]
    log = next(e for e in at.expander if e.label == "Log")
    assert log.proto.expanded and "killed by SIGKILL" in texts(at)


def _internal(home, name: str) -> dict:
    import json

    try:
        return json.loads((home / "jobs" / name / "status.json").read_text()).get("Internal") or {}
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet
        return {}
