"""The local backend: the whole lifecycle on one machine, state in QCBR_HOME (see backend.py)."""
from qcbr.lifecycle.local.backend import LocalBackend

__all__ = ["LocalBackend"]
