"""The model lifecycle: datasets -> training jobs -> registry -> endpoints -> predictions.

``get_backend()`` returns the configured backend (``local`` by default, ``aws`` when
``QCBR_BACKEND=aws``); nothing AWS-specific is imported while the local backend is active.
"""
from __future__ import annotations

from qcbr.lifecycle.base import Backend


def get_backend(config=None) -> Backend:
    from qcbr.config import load_config

    config = config or load_config()
    if config.backend == "aws":
        from qcbr.lifecycle.aws import AwsBackend

        return AwsBackend(config)
    from qcbr.lifecycle.local import LocalBackend

    return LocalBackend(config)


__all__ = ["Backend", "get_backend"]
