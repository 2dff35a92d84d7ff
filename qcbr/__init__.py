"""qCBR Studio's library: quantum case-based reasoning and its MLOps lifecycle.

Never imports streamlit. Heavy pieces (qiskit, mlflow, boto3) load only when used.
"""
from __future__ import annotations

from qcbr.errors import (
    ArtifactError,
    CaseValidationError,
    ConfigError,
    NotFoundError,
    QCBRError,
    RoleError,
    StateError,
)

__version__ = "0.1.0"

_LAZY = {
    "CaseBase": "qcbr.cases",
    "QCBRClassifier": "qcbr.model",
    "get_feature_map": "qcbr.encoding",
    "fidelity_matrix": "qcbr.similarity",
    "sampled_fidelity_matrix": "qcbr.similarity",
    "kernel_diagnostics": "qcbr.similarity",
    "get_backend": "qcbr.lifecycle",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qcbr' has no attribute {name!r}")


__all__ = [
    "ArtifactError", "CaseValidationError", "ConfigError", "NotFoundError", "QCBRError",
    "RoleError", "StateError", *_LAZY,
]
