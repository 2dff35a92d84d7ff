"""The main action of every page on the real local backend: predict, feedback, batch, launch, stop,
register, approve, deploy, update, test, delete, circuits, demo button.

One seeded home per module (the demo: iris, a trained and approved model, a staging endpoint);
the tests run in file order and build on each other like a user would.
"""
from __future__ import annotations

import time

import pytest

from dashboard import nav
from dashboard.state import demo_seeder, tasks
from dashboard.testing import app_as, open_page, texts
from tests.conftest import demo_home

pytestmark = pytest.mark.slow

IRIS_FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with demo_home(tmp_path_factory, "flow") as (home, backend, summary):
        yield {"home": home, "backend": backend, "summary": summary}


def button(at, label):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def endpoint(demo) -> str:
    return demo["backend"].list_endpoints()[0]["EndpointName"]


def test_seed_demo_button_runs_qcbr_demo_in_the_background(demo):
    # no prediction yet, so the overview still shows the checklist and the demo button
    at = open_page(app_as("data_scientist", demo["home"]), "overview")
    assert "Make a prediction" in texts(at)
    at.button(key="overview_demo_seed").click().run()
    assert not at.exception, [e.message for e in at.exception]
    seeder = demo_seeder(str(demo["home"]))
    assert seeder.proc is not None and seeder.proc.args[1:] == ["-m", "qcbr", "demo"]
    assert seeder.status() in ("running", "completed")
    seeder.proc.wait(timeout=180)  # idempotent: the demo exists, so it only checks each step
    at.run()
    assert seeder.status() == "completed", seeder.log_tail()
    assert "The demo is ready" in texts(at)
    assert "DEMO ready" in texts(at)  # the end of its log


def test_business_user_predicts_from_the_generated_form_and_gives_feedback(demo):
    at = open_page(app_as("business", demo["home"]), "predict")
    assert not at.exception, [e.message for e in at.exception]
    for name, value in zip(IRIS_FEATURES, [5.1, 3.5, 1.4, 0.2]):
        at.number_input(key=f"pred_f_{name}").set_value(value)
    button(at, "Predict").click().run()
    assert not at.exception, [e.message for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Prediction"] == "setosa"
    assert 0 < float(metrics["Confidence"]) <= 1
    similar = next(d.value for d in at.dataframe if "case_id" in d.value.columns)
    assert len(similar) >= 1 and similar["score"].between(0, 1).all()

    at.selectbox(key="pred_truth").set_value("setosa")
    button(at, "Send feedback").click().run()
    assert "recorded as ground truth" in texts(at)
    truth = demo["backend"].list_ground_truth()
    assert [t["groundTruthData"]["data"] for t in truth] == ["setosa"]

    mine = open_page(app_as("business", demo["home"]), "my_predictions")
    assert not mine.exception
    values = {m.label: m.value for m in mine.metric}
    assert values["Predictions"] == "1" and values["With feedback"] == "1" and values["Correct where known"] == "100%"


def test_batch_csv_runs_in_the_background_and_offers_a_download(demo):
    from qcbr.cases import demo_case_base

    frame = demo_case_base("iris").features.head(30)
    at = open_page(app_as("business", demo["home"]), "predict")
    at.file_uploader(key="pred_batch_file").upload("batch.csv", frame.to_csv(index=False).encode(), "text/csv")
    at.run()
    at.button(key="pred_batch_run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    task = tasks().wait(at.session_state["qcbr_pred_batch"], timeout=120)
    assert task.error is None
    at.run()
    assert "30 predictions" in texts(at)
    assert at.get("download_button")
    assert list(task.result.columns[-6:]) == ["prediction", "confidence", "flagged", "most_similar_case",
                                              "similarity", "inference_id"]


def test_batch_csv_with_missing_columns_says_which(demo):
    at = open_page(app_as("business", demo["home"]), "predict")
    at.file_uploader(key="pred_batch_file").upload("bad.csv", b"a,b\n1,2\n", "text/csv")
    at.run()
    at.button(key="pred_batch_run").click().run()
    assert "lacks the columns sepal length (cm)" in at.error[0].value


def test_scientist_launches_a_run_follows_it_and_compares(demo):
    at = open_page(app_as("data_scientist", demo["home"]), "training")
    assert not at.exception
    at.toggle(key="train_auto_alpha").set_value(False)
    at.number_input(key="train_alpha").set_value(0.5)
    at.toggle(key="train_auto_k").set_value(False)
    at.text_input(key="train_job_name").set_value("flow-fixed")
    button(at, "Launch run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    job = demo["backend"].describe_training_job("flow-fixed")
    assert job["HyperParameters"]["alpha"] == "0.5" and job["CreatedBy"] == "test-scientist"
    assert at.session_state["qcbr_training_job"] == "flow-fixed"
    assert "flow-fixed" in texts(at)

    done = demo["backend"].wait_training_job("flow-fixed", timeout=300)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    time.sleep(2.1)  # listings are reused for 2 s
    at.run()
    assert "Validation accuracy" in texts(at)
    assert "Register it as a model version" in texts(at)  # not registered yet
    assert any(c.key == "train_compare_fig" for c in at.get("plotly_chart"))  # demo run + this one


def test_scientist_stops_a_run(demo):
    at = open_page(app_as("data_scientist", demo["home"]), "training")
    at.text_input(key="train_job_name").set_value("flow-stop")
    button(at, "Launch run").click().run()
    assert at.session_state["qcbr_training_job"] == "flow-stop"
    at.selectbox(key="train_watch").set_value("flow-stop").run()
    at.button(key="train_stop").click().run()
    assert not at.exception, [e.message for e in at.exception]
    record = demo["backend"].wait_training_job("flow-stop", timeout=60)
    assert record["TrainingJobStatus"] == "Stopped"


def test_register_then_the_library_refuses_prod_for_an_unapproved_version_then_the_manager_approves(demo):
    ds = open_page(app_as("data_scientist", demo["home"]), "registry")
    assert ds.selectbox(key="reg_job").value == "flow-fixed"
    assert ds.radio(key="reg_stage").options == ["staging"]  # no prod for a data scientist
    button(ds, "Register").click().run()
    assert not ds.exception, [e.message for e in ds.exception]
    assert "Registered version 2" in texts(ds)
    assert demo["backend"].describe_model_version(2)["ModelApprovalStatus"] == "PendingManualApproval"
    time.sleep(2.1)  # listings are reused for 2 s
    run = open_page(app_as("data_scientist", demo["home"]), "training")
    run.selectbox(key="train_watch").set_value("flow-fixed").run()
    assert "Registered as version 2 (PendingManualApproval)" in texts(run)
    assert "Register it as a model version" not in texts(run)

    mgr = open_page(app_as("manager", demo["home"]), "registry")
    assert "wait for your decision" in texts(mgr)
    mgr.selectbox(key="reg_version").set_value(2).run()
    mgr.radio(key="reg_stage").set_value("prod")
    mgr.text_input(key="reg_endpoint").set_value("flow-prod")
    button(mgr, "Deploy this version").click().run()
    assert not mgr.exception
    assert mgr.error and mgr.error[0].value.startswith("Could not deploy:")  # the library's check, shown nicely

    mgr.text_area(key="reg_comment").set_value("checked on the flow test")
    button(mgr, "Approve").click().run()
    assert not mgr.exception, [e.message for e in mgr.exception]
    record = demo["backend"].describe_model_version(2)
    assert record["ModelApprovalStatus"] == "Approved"
    assert record["ApprovalHistory"][-1]["By"] == "test-manager"
    assert record["ApprovalHistory"][-1]["Comment"] == "checked on the flow test"
    mgr.run()
    assert "Model card" in texts(mgr) and "checked on the flow test" in texts(mgr)  # rendered live, approvals included


def test_scientist_updates_the_endpoint_blue_green_and_tests_it_with_json(demo):
    name = endpoint(demo)
    at = open_page(app_as("data_scientist", demo["home"]), "endpoints")
    assert not at.exception, [e.message for e in at.exception]
    at.selectbox(key="ep_update_version").set_value(2)
    button(at, "Update endpoint").click().run()
    assert not at.exception, [e.message for e in at.exception]
    ready = demo["backend"].wait_endpoint(name, timeout=120)
    assert ready["EndpointStatus"] == "InService" and ready["ModelPackageVersion"] == 2
    time.sleep(2.1)
    at.run()
    assert not at.exception
    at.button(key="ep_test_send").click().run()
    assert not at.exception, [e.message for e in at.exception]
    result = at.json[0].value
    assert '"model_version"' in result and '"predictions"' in result
    at.text_area(key="ep_test_body").set_value("{not json")
    at.button(key="ep_test_send").click().run()
    assert "not valid JSON" in at.error[0].value


def test_scientist_deploys_a_second_endpoint_and_deletes_it(demo):
    at = open_page(app_as("data_scientist", demo["home"]), "endpoints")
    at.text_input(key="ep_new_name").set_value("flow-extra")
    at.selectbox(key="ep_new_version").set_value(1)
    button(at, "Deploy").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="ep_select").value == "flow-extra"
    assert demo["backend"].wait_endpoint("flow-extra", timeout=120)["EndpointStatus"] == "InService"
    at.run()
    assert at.button(key="ep_delete").disabled  # needs the confirmation first
    at.checkbox(key="ep_delete_confirm").check().run()
    at.button(key="ep_delete").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert "flow-extra" not in [e["EndpointName"] for e in demo["backend"].list_endpoints()]


def test_circuits_page_draws_compares_and_samples(demo):
    at = open_page(app_as("data_scientist", demo["home"]), "circuits")
    assert not at.exception, [e.message for e in at.exception]
    assert at.get("imgs") or at.get("image")
    keys = {c.key for c in at.get("plotly_chart")}
    assert {"circ_gates", "circ_heatmap", "circ_nearest", "circ_kernel_fig"} <= keys
    at.selectbox(key="circ_device").set_value("fake_manila").run()
    assert "Depth on fake_manila" in [m.label for m in at.metric]
    at.number_input(key="circ_alpha").set_value(0.3).run()
    assert at.success or at.warning  # the diagnostic's plain-words hint
    at.button(key="circ_run_sampled").click().run()
    task = tasks().wait(at.session_state["qcbr_circ_task"]["id"], timeout=120)
    assert task.error is None
    at.run()
    table = next(d.value for d in at.dataframe if "abs error" in d.value.columns)
    assert len(table) == 6  # 4 cases -> 6 pairs
    assert (table["abs error"] < 0.2).all()


def test_overview_and_monitoring_render_with_data(demo):
    # the monitoring engineer owns these screens' content; here: they open on a busy home
    for role in ("manager", "data_scientist"):
        for key in ("monitoring", "overview"):
            at = open_page(app_as(role, demo["home"]), key)
            assert not at.exception, [e.message for e in at.exception]
            assert [t.value for t in at.title][:1] == [nav.BY_KEY[key].title]
