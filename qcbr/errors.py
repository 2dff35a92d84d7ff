"""Errors raised by qcbr.

Every error a user can cause carries a message that says what is wrong, where, and how to fix
it; the CLI and the dashboard show the message as is, never a traceback.
"""
from __future__ import annotations


class QCBRError(Exception):
    """Base class of every error qcbr raises on purpose."""


class CaseValidationError(QCBRError, ValueError):
    """A case base (file or frame) cannot be accepted as it is."""


class ArtifactError(QCBRError):
    """A model artifact is missing, corrupted or tampered with."""


class NotFoundError(QCBRError, LookupError):
    """A named thing (dataset, job, model version, endpoint, prediction) does not exist."""


class StateError(QCBRError):
    """The request is valid but not in the current state (e.g. prod deploy of an unapproved version)."""


class ConfigError(QCBRError):
    """Configuration (environment, config file, secrets) is missing or invalid."""


class RoleError(QCBRError, PermissionError):
    """The acting user's role may not perform this action."""


class AuthError(QCBRError):
    """A login failed: wrong name or password, or the account is locked after repeated failures."""


class InputError(QCBRError, ValueError):
    """Rows given to a fitted model do not match what it was fitted on (columns, count, values).

    A ValueError so that scikit-learn conventions hold; the serving layer answers it with a 4xx.
    """
