"""Seed a clearly labelled demo: iris cases -> trained -> registered -> approved -> staging endpoint.

Idempotent: each step reuses what a previous run left (same dataset version, a completed demo
job with the same hyperparameters, its registered version, the running endpoint), so a second
``qcbr demo`` or dashboard click returns at once. Only the Backend protocol is used, so any
backend can seed it.

A data scientist may seed the demo but may not approve models; the demo's version is therefore
approved by the ``qcbr-demo`` operator identity, and the approval comment says so and who asked.
"""
from __future__ import annotations

from typing import Any, Callable

from qcbr.roles import OPERATOR_ROLE, Actor, require

DEMO_DATASET = "iris"
DEMO_ENDPOINT = "demo-staging"
# fixed so the demo is reproducible and trains in seconds (150 cases, 4 qubits: CV of alpha is cheap)
DEMO_HYPERPARAMETERS = {"feature_map": "zz", "alpha": "auto", "k": "5", "epsilon": "0.6", "random_state": "0"}
DEMO_APPROVER = "qcbr-demo"


def seed_demo(backend: Any, actor: Actor, progress: Callable[[float, str], None] | None = None,
              train_timeout: float = 600.0) -> dict:
    from qcbr.cases import demo_case_base
    from qcbr.errors import StateError

    require(actor, "seed_demo")
    say = progress or (lambda fraction, message: None)
    reused: dict[str, bool] = {}

    say(0.0, "Uploading the DEMO case base (scikit-learn's iris)")
    cases = demo_case_base(DEMO_DATASET)
    dataset = backend.upload_dataset(actor, cases, cases.name)
    reused["dataset"] = not dataset.get("Created", True)

    say(0.1, "Training the demo model")
    job = None
    for candidate in backend.list_training_jobs():
        same = (candidate["Lineage"]["DatasetSha256"] == dataset["Sha256"]
                and candidate["HyperParameters"] == DEMO_HYPERPARAMETERS)
        if same and candidate["TrainingJobStatus"] in ("Completed", "InProgress"):
            job = candidate
            break
    reused["training_job"] = job is not None
    if job is None:
        job = backend.create_training_job(actor, dataset["DatasetName"], DEMO_HYPERPARAMETERS,
                                          dataset_sha256=dataset["Sha256"])
    if job["TrainingJobStatus"] != "Completed":
        job = backend.wait_training_job(
            job["TrainingJobName"], timeout=train_timeout,
            progress=lambda r: say(0.1 + 0.6 * r["Progress"]["Fraction"], f"Training: {r['Progress']['Message']}"),
        )
    if job["TrainingJobStatus"] != "Completed":
        raise StateError(f"the demo training job {job['TrainingJobName']} ended {job['TrainingJobStatus']}: "
                         f"{job.get('FailureReason') or 'see `qcbr jobs describe ' + job['TrainingJobName'] + '`'}")

    say(0.75, "Registering and approving the demo model")
    version = backend.register_model(actor, job["TrainingJobName"], description="DEMO model (iris, qcbr demo)")
    number = version["ModelPackageVersion"]
    reused["model_version"] = len(version["ApprovalHistory"]) > 1 or version["ModelApprovalStatus"] != "PendingManualApproval"
    if version["ModelApprovalStatus"] != "Approved":
        approver = Actor(DEMO_APPROVER, OPERATOR_ROLE)
        version = backend.approve_model(approver, number, comment=f"DEMO: approved automatically by `qcbr demo` "
                                                                   f"(requested by {actor.name})")

    say(0.85, "Starting the demo staging endpoint")
    endpoint = None
    try:
        endpoint = backend.describe_endpoint(DEMO_ENDPOINT)
    except LookupError:
        endpoint = None
    deployer = actor if actor.can("deploy_staging") else Actor(DEMO_APPROVER, OPERATOR_ROLE)
    if endpoint is None:
        endpoint = backend.create_endpoint(deployer, DEMO_ENDPOINT, number, "staging", wait=True)
        reused["endpoint"] = False
    elif endpoint["EndpointStatus"] == "Failed":
        endpoint = backend.restart_endpoint(deployer, DEMO_ENDPOINT, wait=True)
        reused["endpoint"] = False
    elif endpoint["ModelPackageVersion"] != number and endpoint["EndpointStatus"] == "InService":
        endpoint = backend.update_endpoint(deployer, DEMO_ENDPOINT, number)
        reused["endpoint"] = False
    else:
        endpoint = backend.wait_endpoint(DEMO_ENDPOINT)
        reused["endpoint"] = True
    if endpoint["EndpointStatus"] != "InService":
        raise StateError(f"the demo endpoint {DEMO_ENDPOINT} is {endpoint['EndpointStatus']}: {endpoint.get('FailureReason')}")
    say(1.0, "Demo ready")
    return {
        "Demo": True,
        "Description": "DEMO DATA: scikit-learn's iris flowers, not business data",
        "DatasetName": dataset["DatasetName"],
        "DatasetSha256": dataset["Sha256"],
        "TrainingJobName": job["TrainingJobName"],
        "ModelPackageVersion": number,
        "ModelApprovalStatus": version["ModelApprovalStatus"],
        "EndpointName": DEMO_ENDPOINT,
        "EndpointStatus": endpoint["EndpointStatus"],
        "EndpointUrl": endpoint["EndpointUrl"],
        "Reused": reused,
    }
