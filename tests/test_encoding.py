"""Feature maps: closed-form statevectors must equal qiskit's simulation of the same circuit."""
from __future__ import annotations

import numpy as np
import pytest
from qiskit.quantum_info import Statevector

from qcbr.encoding import FeatureMapError, get_feature_map


def _maps(n: int):
    yield get_feature_map("angle", n)
    yield get_feature_map("amplitude", n)
    for ent in ("full", "linear", "circular"):
        yield get_feature_map("zz", n, reps=2, entanglement=ent, alpha=0.8)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_statevectors_match_qiskit(n):
    rng = np.random.default_rng(n)
    for fm in _maps(n):
        X = rng.uniform(0, np.pi, (3, fm.n_features))
        S = fm.statevectors(X)
        assert S.shape == (3, 2**n) and S.dtype == np.complex128
        for i in range(3):
            ref = Statevector(fm.circuit(X[i])).data
            assert np.max(np.abs(S[i] - ref)) < 1e-10, fm


def test_unknown_name_is_actionable():
    with pytest.raises(FeatureMapError, match="angle, zz, amplitude"):
        get_feature_map("pauli", 3)
