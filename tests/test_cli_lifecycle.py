"""The lifecycle through the `qcbr` command, end to end, in a temporary QCBR_HOME."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from qcbr.cli import main
from qcbr.cli.lifecycle import ProgressBar
from qcbr.lifecycle.local import procs
from qcbr.storage import read_json
from tests.conftest import local_backend, wait_for

SETOSA = {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def iris_csv(tmp_path, iris_cases):
    path = tmp_path / "iris.csv"
    path.write_bytes(iris_cases.frame.to_csv(index=False).encode())
    return path


# -- the whole flow ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_end_to_end_upload_train_register_approve_deploy_predict_truth_delete(
        capsys, qcbr_home, iris_csv, monkeypatch):
    code, out, err = run(capsys, "cases", "upload", iris_csv, "--label", "species", "--name", "iris", "--json")
    assert code == 0, err
    sha = json.loads(out)["Sha256"]

    # train, waiting, with a progress bar on stderr
    code, out, err = run(capsys, "train", "--dataset", "iris", "--hp", "feature_map=zz", "--hp", "k=5",
                         "--hp", "random_state=0", "--job-name", "cli-job", "--wait", "--json")
    assert code == 0, err
    job = json.loads(out)
    assert job["TrainingJobName"] == "cli-job" and job["TrainingJobStatus"] == "Completed"
    assert job["HyperParameters"] == {"feature_map": "zz", "k": "5", "random_state": "0"}
    assert job["Lineage"]["DatasetSha256"] == sha
    assert "started training job cli-job" in err and "100% Completed" in err and "[#" in err
    code, out, err = run(capsys, "jobs", "list", "--json")
    assert [j["TrainingJobName"] for j in json.loads(out)] == ["cli-job"]
    code, out, _ = run(capsys, "jobs", "describe", "cli-job")
    assert code == 0 and "TrainingJobStatus: Completed" in out and "validation:accuracy" in out

    # register: the accuracy condition refuses, then a plain registration works
    code, out, err = run(capsys, "models", "register", "--job", "cli-job", "--min-accuracy", "1")
    assert code == 1 and err.count("\n") == 1 and "below the required 1.0000; not registered" in err
    code, out, err = run(capsys, "models", "register", "--job", "cli-job", "--json")
    assert code == 0, err
    version = json.loads(out)
    assert version["ModelPackageVersion"] == 1 and version["ModelApprovalStatus"] == "PendingManualApproval"

    # prod needs approval
    code, _, err = run(capsys, "endpoints", "deploy", "--model", "1", "--name", "cli-ep", "--stage", "prod")
    assert code == 1 and "only Approved versions go to prod" in err and err.startswith("qcbr: error: ")
    code, out, err = run(capsys, "models", "approve", "1", "--comment", "looks good", "--json")
    assert code == 0 and json.loads(out)["ModelApprovalStatus"] == "Approved"
    code, out, _ = run(capsys, "models", "describe", "1", "--json")
    history = json.loads(out)["ApprovalHistory"]
    assert [(h["Status"], h["By"], h["Comment"]) for h in history][-1] == ("Approved", "operator", "looks good")

    code, out, err = run(capsys, "endpoints", "deploy", "--model", "1", "--name", "cli-ep", "--stage", "prod",
                         "--wait", "--json")
    assert code == 0, err
    endpoint = json.loads(out)
    assert endpoint["EndpointStatus"] == "InService" and endpoint["Stage"] == "prod"
    url = endpoint["EndpointUrl"]
    code, out, _ = run(capsys, "endpoints", "list", "--json")
    assert [(e["EndpointName"], e["EndpointUrl"]) for e in json.loads(out)] == [("cli-ep", url)]
    code, out, _ = run(capsys, "models", "describe", "1", "--json")
    assert json.loads(out)["Lineage"]["Endpoints"] == ["cli-ep"]

    # predict through the CLI (the Lambda handler inside), JSON and CSV
    code, out, err = run(capsys, "predict", "--endpoint", "cli-ep", "--json", json.dumps(SETOSA), "--raw")
    assert code == 0, err
    answer = json.loads(out)
    inference_id = answer["inference_id"]
    assert answer["predictions"][0]["label"] == "setosa" and answer["model_version"] in (1, "1")
    csv_file = qcbr_home.parent / "rows.csv"
    csv_file.write_text("sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n"
                        "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    code, out, err = run(capsys, "predict", "--endpoint", "cli-ep", "--csv", csv_file)
    assert code == 0, err
    assert "setosa" in out and "virginica" in out and "INFERENCE ID" in out

    # an unmodified boto3 client on the EndpointUrl
    import boto3

    client = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    raw = client.invoke_endpoint(EndpointName="cli-ep", Body=json.dumps({"instances": [SETOSA]}),
                                 ContentType="application/json")
    assert json.loads(raw["Body"].read())["predictions"][0]["label"] == "setosa"

    # the Lambda handler called directly with an API Gateway proxy event (as in AWS)
    from qcbr.serving.lambda_function import handler

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    backend = local_backend(qcbr_home)
    event = {"httpMethod": "POST", "path": "/endpoints/cli-ep/predict", "pathParameters": {"endpoint": "cli-ep"},
             "headers": {"Content-Type": "application/json"}, "stageVariables": {"runtimeEndpointUrl": url},
             "requestContext": {"authorizer": {"principalId": "lambda-user"}},
             "body": json.dumps({"instances": [SETOSA]}), "isBase64Encoded": False}
    response = handler(event, None, store=backend.store)
    assert response["statusCode"] == 200, response["body"]
    lambda_id = json.loads(response["body"])["inference_id"]
    bad = handler({**event, "body": "{not json"}, None, store=backend.store)
    assert bad["statusCode"] == 400 and "not valid JSON" in json.loads(bad["body"])["error"]

    # every prediction is stored, every request captured
    day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    for stored_id in (inference_id, lambda_id):
        assert backend.store.exists(f"predictions/{day}/{stored_id}.json")
    assert {p["user"] for p in backend.list_predictions(endpoint="cli-ep")} == {"operator", "lambda-user"}

    def captured():
        files = list(backend.store.path("capture/cli-ep/AllTraffic").rglob("*.jsonl"))
        text = "".join(f.read_text() for f in files)
        return text if inference_id in text and lambda_id in text else None
    text = wait_for(captured, 20, "capture records of both invocations")
    assert len([line for line in text.splitlines() if line.strip()]) == 4  # JSON, CSV, boto3, Lambda
    assert list(backend.store.path("capture/cli-ep/AllTraffic").glob("*/*/*/*/*.jsonl"))  # yyyy/mm/dd/hh/

    # ground truth
    code, out, err = run(capsys, "ground-truth", inference_id, "setosa", "--json")
    assert code == 0, err
    truth = json.loads(out)
    assert truth == {"groundTruthData": {"data": "setosa", "encoding": "CSV"},
                     "eventMetadata": {"eventId": inference_id}, "eventVersion": "0"}
    files = list(backend.store.path("ground-truth").rglob(f"{inference_id}.jsonl"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == truth
    code, _, err = run(capsys, "ground-truth", inference_id, "tulip")
    assert code == 1 and "label 'tulip' is not a class" in err

    # delete
    pid = read_json(backend.paths.endpoint_record("cli-ep"))["Internal"]["Variant"]["Pid"]
    gateway = read_json(backend.paths.gateway)["Pid"]
    code, out, err = run(capsys, "endpoints", "delete", "cli-ep")
    assert code == 0 and "deleted endpoint cli-ep" in out
    assert not procs.is_alive(pid)
    assert not procs.is_alive(gateway)  # the last endpoint took the gateway with it
    code, _, err = run(capsys, "endpoints", "describe", "cli-ep")
    assert code == 1 and "no endpoint named 'cli-ep'" in err
    actions = [e["action"] for e in backend.audit_log(limit=None)]
    for action in ("upload_dataset", "create_training_job", "register_model", "approve_model", "create_endpoint",
                   "submit_ground_truth", "delete_endpoint"):
        assert action in actions


@pytest.mark.slow
def test_demo_is_clearly_labelled_and_idempotent(capsys, qcbr_home):
    code, out, err = run(capsys, "demo", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["Demo"] is True and "DEMO" in first["Description"]
    assert first["DatasetName"] == "demo-iris" and first["EndpointName"] == "demo-staging"
    assert first["ModelApprovalStatus"] == "Approved" and first["EndpointStatus"] == "InService"
    assert first["Reused"] == {"dataset": False, "training_job": False, "model_version": False, "endpoint": False}
    backend = local_backend(qcbr_home)
    approval = backend.describe_model_version(first["ModelPackageVersion"])["ApprovalHistory"][-1]
    assert approval["By"] == "qcbr-demo" and approval["Comment"].startswith("DEMO:")

    code, out, err = run(capsys, "demo", "--json")
    assert code == 0, err
    second = json.loads(out)
    assert second["Reused"] == {"dataset": True, "training_job": True, "model_version": True, "endpoint": True}
    for key in ("DatasetSha256", "TrainingJobName", "ModelPackageVersion", "EndpointUrl"):
        assert second[key] == first[key]
    assert len(backend.list_training_jobs()) == 1 and len(backend.list_model_versions()) == 1

    code, out, err = run(capsys, "predict", "--endpoint", "demo-staging", "--json", json.dumps(SETOSA))
    assert code == 0 and "setosa" in out


# -- exit codes and messages ------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ("train", "--dataset", "iris", "--hp", "novalue"),
    ("train",),
    ("models", "approve", "abc"),
    ("models", "register", "--job", "j", "--min-accuracy", "2"),
    ("endpoints", "deploy", "--model", "1", "--name", "e", "--stage", "qa"),
    ("predict", "--endpoint", "e"),
    ("jobs",),
])
def test_usage_errors_exit_2(capsys, qcbr_home, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "usage:" in err


@pytest.mark.parametrize("argv, message", [
    (("train", "--dataset", "nope"), "qcbr: error: no dataset named 'nope'; upload one"),
    (("jobs", "describe", "nope"), "qcbr: error: no training job named 'nope'"),
    (("jobs", "stop", "nope"), "qcbr: error: no training job named 'nope'"),
    (("models", "describe", "7"), "qcbr: error: model group 'qcbr' has no version 7"),
    (("endpoints", "describe", "nope"), "qcbr: error: no endpoint named 'nope'"),
    (("endpoints", "delete", "nope"), "qcbr: error: no endpoint named 'nope'"),
    (("ground-truth", "abc-123", "setosa"), "qcbr: error: no stored prediction has inference id 'abc-123'"),
])
def test_failures_exit_1_with_one_clear_line(capsys, qcbr_home, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_empty_lists_say_what_to_do(capsys, qcbr_home):
    assert run(capsys, "jobs", "list")[1].startswith("no training jobs yet; start one with `qcbr train")
    assert run(capsys, "models", "list")[1].startswith("no model versions yet")
    assert run(capsys, "endpoints", "list")[1].startswith("no endpoints; deploy one")
    for group in ("jobs", "models", "endpoints"):
        code, out, _ = run(capsys, group, "list", "--json")
        assert code == 0 and json.loads(out) == []


def test_a_dashboard_user_acts_with_their_role(capsys, qcbr_home, iris_csv, monkeypatch):
    from qcbr.users import UserStore

    store = UserStore(qcbr_home, rounds=4)
    store.add("bea", "business", "a-long-password-1")
    store.add("dan", "data_scientist", "a-long-password-2")
    monkeypatch.setenv("QCBR_USER", "dan")
    assert run(capsys, "cases", "upload", iris_csv, "--label", "species", "--name", "iris")[0] == 0
    monkeypatch.setenv("QCBR_USER", "bea")
    code, out, err = run(capsys, "train", "--dataset", "iris")
    assert code == 1 and "user 'bea' (business user) may not create training job" in err
    code, _, err = run(capsys, "models", "approve", "1")
    assert code == 1 and "may not approve model" in err
    assert local_backend(qcbr_home).list_training_jobs() == []


def test_the_installed_command_runs_in_its_own_process(qcbr_home):
    out = subprocess.run([sys.executable, "-m", "qcbr", "jobs", "list", "--json"], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0 and json.loads(out.stdout) == []
    bad = subprocess.run([sys.executable, "-m", "qcbr", "endpoints", "describe", "x"], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ))
    assert bad.returncode == 1 and bad.stderr == "qcbr: error: no endpoint named 'x'; see `qcbr endpoints list`\n"


def test_progress_bar_writes_a_line_per_change_when_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    bar.update(0.0, "Loading cases")
    bar.update(0.0, "Loading cases")
    bar.update(0.55, "cross-validating")
    bar.update(1.0, "Completed")
    bar.close()
    assert stream.getvalue().splitlines() == [
        "[..........]   0% Loading cases",
        "[######....]  55% cross-validating",
        "[##########] 100% Completed",
    ]
