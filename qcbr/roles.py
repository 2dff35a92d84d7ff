"""Who may do what. Checked in the library for every mutating call; the dashboard only mirrors it.

Role ids: ``business``, ``data_scientist``, ``manager``; ``operator`` is the machine's operator
(the CLI without ``QCBR_USER``) and may do everything.
"""
from __future__ import annotations

from dataclasses import dataclass

from qcbr.errors import RoleError

ROLES = ("business", "data_scientist", "manager")
OPERATOR_ROLE = "operator"

ROLE_LABELS = {
    "business": "Business user",
    "data_scientist": "Data scientist",
    "manager": "Manager",
    OPERATOR_ROLE: "Operator",
}

# action -> roles allowed (the operator is always allowed)
PERMISSIONS: dict[str, frozenset[str]] = {
    "upload_dataset": frozenset({"data_scientist"}),
    "create_training_job": frozenset({"data_scientist"}),
    "stop_training_job": frozenset({"data_scientist"}),
    "register_model": frozenset({"data_scientist"}),
    "approve_model": frozenset({"manager"}),
    "reject_model": frozenset({"manager"}),
    "deploy_staging": frozenset({"data_scientist", "manager"}),
    "deploy_prod": frozenset({"manager"}),
    "delete_endpoint": frozenset({"data_scientist", "manager"}),
    "invoke_endpoint": frozenset({"business", "data_scientist", "manager"}),
    "submit_ground_truth": frozenset({"business", "data_scientist", "manager"}),
    "run_monitoring": frozenset({"data_scientist", "manager"}),
    "set_monitoring_policy": frozenset({"data_scientist", "manager"}),
    "edit_roi": frozenset({"manager"}),
    "seed_demo": frozenset({"data_scientist"}),
    "manage_users": frozenset(),
}


@dataclass(frozen=True)
class Actor:
    """The user on whose behalf a call is made."""

    name: str
    role: str

    def __post_init__(self) -> None:
        if self.role not in ROLES and self.role != OPERATOR_ROLE:
            raise ValueError(
                f"unknown role {self.role!r} for user {self.name!r}; use one of {', '.join(ROLES)}"
            )

    def can(self, action: str) -> bool:
        if action not in PERMISSIONS:
            raise KeyError(f"unknown action {action!r}")
        return self.role == OPERATOR_ROLE or self.role in PERMISSIONS[action]


OPERATOR = Actor("operator", OPERATOR_ROLE)


def require(actor: Actor, action: str) -> None:
    """Raise RoleError unless ``actor`` may perform ``action``."""
    if not isinstance(actor, Actor):
        raise TypeError(f"actor must be a qcbr.roles.Actor, got {type(actor).__name__}")
    if not actor.can(action):
        allowed = sorted(PERMISSIONS[action])
        who = " or ".join(ROLE_LABELS[r].lower() for r in allowed) or "the operator"
        raise RoleError(
            f"user {actor.name!r} ({ROLE_LABELS[actor.role].lower()}) may not {action.replace('_', ' ')}; "
            f"only a {who} may"
        )
