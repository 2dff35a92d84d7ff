"""The training entrypoint against SageMaker's training-container contract (a temporary /opt/ml)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qcbr.training import train as entry

REPO = Path(__file__).resolve().parents[1]


def opt_ml(root: Path, cases, hps: dict[str, str]) -> Path:
    """Lay out an /opt/ml root the way SageMaker (and the local supervisor) does."""
    channel = root / "input" / "data" / "train"
    channel.mkdir(parents=True)
    (channel / "cases.parquet").write_bytes(cases.to_parquet_bytes())
    (channel / "schema.json").write_text(json.dumps(cases.schema))
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    return root


def sm_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "QCBR_", "TRAINING_JOB"))}
    env.update({"SM_ROOT": str(root), "PYTHONPATH": str(REPO)}, **extra)
    return env


def run_in_process(monkeypatch, root: Path) -> int:
    for key in list(os.environ):
        if key.startswith(("SM_", "QCBR_OPT_ML", "TRAINING_JOB")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SM_ROOT", str(root))
    return entry.main()


# -- hyperparameters -------------------------------------------------------------------------------
def test_hyperparameters_are_parsed_from_strings():
    parsed = entry.parse_hyperparameters({
        "feature_map": "angle", "n_qubits": "4", "reps": "3", "alpha": "0.5", "k": "auto", "noise": "0.01",
        "epsilon": "0.7", "random_state": "none", "validation_fraction": "0.25", "sagemaker_program": "x",
    })
    assert parsed == {"feature_map": "angle", "n_qubits": 4, "reps": 3, "alpha": 0.5, "k": "auto", "noise": 0.01,
                      "epsilon": 0.7, "random_state": None, "validation_fraction": 0.25}
    assert entry.parse_hyperparameters({"alpha": "auto", "k": "7", "noise": "fake_manila"})["k"] == 7


@pytest.mark.parametrize("hps, fragment", [
    ({"feature_mapp": "zz"}, "unknown hyperparameter(s) feature_mapp"),
    ({"feature_map": "rbf"}, "feature_map='rbf' must be one of angle, zz, amplitude"),
    ({"k": "0"}, "k='0' must be a whole number >= 1"),
    ({"k": "2.5"}, "k='2.5' must be a whole number"),
    ({"alpha": "-1"}, "alpha='-1' must be"),
    ({"epsilon": "1.5"}, "epsilon='1.5' must be between 0.0 and 1.0"),
    ({"validation_fraction": "0.9"}, "validation_fraction='0.9' must be between 0.0 and 0.5"),
    ({"similarity": "approx"}, "similarity='approx' must be one of exact, sampled"),
])
def test_bad_hyperparameters_name_the_problem(hps, fragment):
    with pytest.raises(ValueError) as info:
        entry.parse_hyperparameters(hps)
    assert fragment in str(info.value)


# -- a whole training run ----------------------------------------------------------------------------
@pytest.mark.slow
def test_standalone_run_in_a_temporary_opt_ml_writes_the_contracted_files(tmp_path, iris_cases):
    """`python -m qcbr.training.train` as the BYOC container's `train` runs it: only SM_ROOT moved."""
    root = opt_ml(tmp_path / "opt" / "ml", iris_cases, {"feature_map": "zz", "k": "5", "random_state": "0"})
    done = subprocess.run([sys.executable, "-m", "qcbr.training.train"], cwd=tmp_path, env=sm_env(root),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    model_dir = root / "model"
    for name in ("model.json", "arrays.npz", "MANIFEST.json", "metrics.json", "statistics.json",
                 "constraints.json", "model_card.md"):
        assert (model_dir / name).is_file(), name
    assert not (root / "output" / "failure").exists()

    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["labels"] == ["setosa", "versicolor", "virginica"]
    assert metrics["validation:n"] == 30 and metrics["train:n"] == 120 and metrics["n"] == 150
    matrix = metrics["validation:confusion_matrix"]
    # stratified: 10 of each class held out, so every row of the confusion matrix sums to 10
    assert [sum(row) for row in matrix] == [10, 10, 10]
    correct = sum(matrix[i][i] for i in range(3))
    assert metrics["validation:accuracy"] == pytest.approx(correct / 30)
    assert metrics["validation:accuracy"] >= 0.85
    assert set(metrics["validation:recall"]) == {"setosa", "versicolor", "virginica"}
    assert metrics["validation:recall"]["setosa"] == pytest.approx(matrix[0][0] / 10)
    assert 0.5 <= metrics["cv:accuracy"] <= 1.0
    assert metrics["k"] == 5 and metrics["alpha"] > 0

    progress = json.loads((root / "output" / "data" / "progress.json").read_text())
    assert progress["fraction"] == 1.0 and progress["message"] == "Completed"
    schema = json.loads((root / "output" / "data" / "feature_schema.json").read_text())
    assert schema["classes"] == metrics["labels"] and len(schema["features"]) == 4
    assert "validation accuracy" in done.stdout

    from qcbr.model import QCBRClassifier

    model = QCBRClassifier.load(model_dir)  # manifest verified
    assert model.alpha_ == pytest.approx(metrics["alpha"]) and model.k_ == 5
    assert len(model.case_ids_) == 150  # refit on all cases after validation
    assert model.score(iris_cases.features, iris_cases.y) >= 0.9
    card = (model_dir / "model_card.md").read_text()
    assert f"| validation accuracy | {metrics['validation:accuracy']:.4f} |" in card
    assert "| training job | local-training |" in card  # TRAINING_JOB_NAME unset: the default name
    constraints = json.loads((model_dir / "constraints.json").read_text())
    assert {f["name"] for f in constraints["features"]} == set(iris_cases.features.columns)


def test_bad_hyperparameter_fails_with_reason_and_exit_1(tmp_path, iris_cases, monkeypatch):
    root = opt_ml(tmp_path / "ml", iris_cases, {"feature_map": "zz", "reps": "zero"})
    assert run_in_process(monkeypatch, root) == 1
    failure = (root / "output" / "failure").read_text()
    assert "reps='zero' must be a whole number" in failure
    assert not (root / "model" / "MANIFEST.json").exists()


def test_split_is_stratified_and_refuses_classes_it_cannot_split():
    """CaseBase already refuses such case bases; the entrypoint still checks (SageMaker may hand it any file)."""
    import numpy as np

    X = np.arange(40).reshape(20, 2)
    y = np.array(["a"] * 14 + ["b"] * 6)
    X_tr, X_val, y_tr, y_val, ids_tr, _ = entry.split(X, y, [f"c{i}" for i in range(20)], 0.25, seed=0)
    assert sorted(y_val.tolist()) == ["a"] * 4 + ["b"] or sorted(y_val.tolist()) == ["a"] * 3 + ["b"] * 2
    assert len(y_tr) + len(y_val) == 20 and len(ids_tr) == len(y_tr)
    with pytest.raises(ValueError, match="class\\(es\\) b have a single case"):
        entry.split(X[:15], y[:15], None, 0.2, seed=0)
    with pytest.raises(ValueError, match="single class"):
        entry.split(X[:5], y[:5], None, 0.2, seed=0)


def test_missing_channel_files_fail_with_the_channel_path(tmp_path, monkeypatch):
    root = tmp_path / "ml"
    (root / "input" / "data" / "train").mkdir(parents=True)
    assert run_in_process(monkeypatch, root) == 1
    failure = (root / "output" / "failure").read_text()
    assert "must hold cases.parquet and schema.json" in failure and str(root / "input" / "data" / "train") in failure


def test_sm_hps_overrides_the_hyperparameters_file_and_progress_is_reported(tmp_path, iris_cases, monkeypatch):
    root = opt_ml(tmp_path / "ml", iris_cases, {"feature_map": "nonsense"})
    monkeypatch.setenv("SM_HPS", json.dumps({"feature_map": "angle", "k": "3", "validation_fraction": "0.2"}))
    seen: list[tuple[float, str]] = []
    original = entry.Progress.__call__

    def spy(self, fraction, message, force=False):
        seen.append((fraction, message))
        return original(self, fraction, message, force=True)

    monkeypatch.setattr(entry.Progress, "__call__", spy)
    monkeypatch.setenv("SM_ROOT", str(root))
    assert entry.main() == 0, (root / "output" / "failure").read_text()
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    assert metrics["k"] == 3 and metrics["alpha"] is None  # angle map: no bandwidth
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 5
