"""The refusals both backends make before they change anything, with one wording.

A user sees the same rule and the same fix whichever backend runs: who may deploy to which stage,
which versions may go where, which jobs may be stopped or registered, what "already" means.
Backend-agnostic (no boto3, no local state).
"""
from __future__ import annotations

from typing import Any, Callable

from qcbr.errors import StateError
from qcbr.lifecycle.base import STAGES
from qcbr.lifecycle.records import check_name, stringify_hyperparameters
from qcbr.roles import Actor, require

ACTIVE_JOB = ("InProgress", "Stopping")


# -- training jobs ---------------------------------------------------------------------------------
def prepare_training_job(actor: Actor, hyperparameters: dict[str, Any] | None, job_name: str | None,
                         default_name: Callable[[], str]) -> tuple[str, dict[str, str]]:
    """(job name, string hyperparameters) for a new job, or the refusal: role, hyperparameters, name."""
    require(actor, "create_training_job")
    from qcbr.training.train import parse_hyperparameters

    hps = stringify_hyperparameters(hyperparameters)
    try:
        parse_hyperparameters(hps)
    except ValueError as exc:
        raise StateError(f"hyperparameters not accepted: {exc}") from None
    return (check_name("training job", job_name) if job_name else default_name()), hps


def check_stoppable(name: str, status: str) -> None:
    if status not in ACTIVE_JOB:
        raise StateError(f"training job {name} is {status}; only an InProgress job can be stopped")


# -- registry --------------------------------------------------------------------------------------
def check_registrable(job: dict) -> None:
    if job["TrainingJobStatus"] != "Completed":
        raise StateError(
            f"training job {job['TrainingJobName']} is {job['TrainingJobStatus']}; only a Completed job can be registered"
            + (f" (it failed: {job['FailureReason']})" if job.get("FailureReason") else "")
        )


def accuracy_of(metrics: dict[str, Any]) -> float | None:
    """The accuracy a registration condition is checked against: validation, else cross-validation."""
    for key in ("validation:accuracy", "cv:accuracy"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return None


def check_min_accuracy(job_name: str, accuracy: float | None, min_accuracy: float | None) -> None:
    if min_accuracy is None:
        return
    if accuracy is None:
        raise StateError(f"training job {job_name} reported no accuracy, so the condition "
                         f"accuracy >= {min_accuracy:g} cannot be checked; not registered")
    if accuracy < float(min_accuracy):
        raise StateError(
            f"model from training job {job_name} has validation accuracy {accuracy:.4f}, below the "
            f"required {float(min_accuracy):.4f}; not registered (retrain, or lower --min-accuracy)"
        )


def decision_action(status: str) -> str:
    """The role action behind an approval decision (``Approved`` or ``Rejected``)."""
    return "approve_model" if status == "Approved" else "reject_model"


def check_decision(version: Any, current: str | None, status: str) -> None:
    if current == status:
        raise StateError(f"model version {version} is already {status}")


# -- endpoints -------------------------------------------------------------------------------------
def deploy_action(stage: str) -> str:
    if stage not in STAGES:
        raise StateError(f"stage {stage!r} is not a stage; use one of {', '.join(STAGES)}")
    return f"deploy_{stage}"


def check_deployable(version: dict, stage: str) -> None:
    status = version["ModelApprovalStatus"]
    number = version["ModelPackageVersion"]
    if status == "Rejected":
        raise StateError(f"model version {number} is Rejected; a rejected version cannot be deployed")
    if stage == "prod" and status != "Approved":
        raise StateError(
            f"model version {number} is {status}; only Approved versions go to prod "
            f"(a manager approves with `qcbr models approve {number}`)"
        )


def endpoint_exists(name: str, what: str, serving: Any, wanted: Any) -> StateError:
    """The refusal to create ``name`` again (``what``: its status; ``serving``: its model version)."""
    return StateError(
        f"endpoint {name!r} already exists ({what}, model version {serving}); switch its version with "
        f"`qcbr endpoints update {name} --model {wanted}`, or delete it first"
    )


def check_updatable(name: str, status: str) -> None:
    if status != "InService":
        raise StateError(
            f"endpoint {name} is {status}; only an InService endpoint can be updated "
            f"(bring it back with `qcbr endpoints restart {name}`)"
        )


def require_delete(actor: Actor, record: dict) -> None:
    require(actor, "delete_endpoint")
    if record["Stage"] == "prod":
        require(actor, "deploy_prod")  # taking prod down is a prod change
