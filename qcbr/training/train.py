"""The training entrypoint: SageMaker's training-container contract around QCBRClassifier.

The same module runs a local training job (the supervisor starts it in a job directory laid out
like ``/opt/ml``) and the BYOC container's ``train`` on SageMaker. It reads the ``train`` channel
(``cases.parquet`` + ``schema.json``) and string hyperparameters, holds out a stratified
validation split, fits with cross-validation of the kernel bandwidth and k (reporting progress),
scores the held-out split, refits on all cases with the chosen bandwidth and k, and writes into
the model dir: the model (``QCBRClassifier.save``), ``metrics.json``, the monitoring baseline
(``statistics.json``, ``constraints.json``) and ``model_card.md``. On any error the reason goes
to ``<root>/output/failure`` and the exit code is 1, as SageMaker expects.

Paths (docs/INTERNALS.md, "Training job contract"): the root ``/opt/ml`` moves with ``SM_ROOT`` or
``QCBR_OPT_ML``; ``SM_MODEL_DIR``, ``SM_CHANNEL_TRAIN``, ``SM_OUTPUT_DATA_DIR`` and ``SM_HPS``
override single pieces.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

FEATURE_MAPS = ("angle", "zz", "amplitude")
SIMILARITIES = ("exact", "sampled")
KNOWN = (
    "feature_map", "n_qubits", "reps", "alpha", "k", "reuse", "similarity", "shots", "noise",
    "epsilon", "random_state", "validation_fraction",
)
DEFAULT_VALIDATION_FRACTION = 0.2


# -- hyperparameters -------------------------------------------------------------------------------
def _none(value: str) -> bool:
    return value.strip().lower() in ("", "none", "null")


def _int(name: str, value: str, low: int = 1) -> int:
    try:
        number = int(float(value)) if float(value).is_integer() else None
    except ValueError:
        number = None
    if number is None or number < low:
        raise ValueError(f"{name}={value!r} must be a whole number >= {low}")
    return number


def _float(name: str, value: str, low: float | None = None, high: float | None = None) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} must be a number") from None
    if (low is not None and number < low) or (high is not None and number > high) or number != number:
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value!r} must be {bounds}")
    return number


def parse_hyperparameters(raw: dict[str, Any]) -> dict[str, Any]:
    """String hyperparameters (SageMaker's form) -> typed values; ValueError says which is wrong.

    Returns the QCBRClassifier keyword arguments plus ``validation_fraction``. Keys SageMaker's
    own tooling adds (``sagemaker_*``) are ignored; any other unknown key is an error, because a
    misspelt hyperparameter silently falling back to a default is worse than a failed job.
    """
    out: dict[str, Any] = {"validation_fraction": DEFAULT_VALIDATION_FRACTION}
    unknown = sorted(k for k in raw if k not in KNOWN and not str(k).startswith(("sagemaker_", "_")))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    for key, value in raw.items():
        if key not in KNOWN:
            continue
        value = str(value).strip()
        if key == "feature_map":
            if value not in FEATURE_MAPS:
                raise ValueError(f"feature_map={value!r} must be one of {', '.join(FEATURE_MAPS)}")
            out[key] = value
        elif key == "similarity":
            if value not in SIMILARITIES:
                raise ValueError(f"similarity={value!r} must be one of {', '.join(SIMILARITIES)}")
            out[key] = value
        elif key == "reuse":
            if not value:
                raise ValueError("reuse must name a reuse strategy, e.g. 'vote'")
            out[key] = value
        elif key == "n_qubits":
            out[key] = None if _none(value) or value.lower() == "auto" else _int(key, value)
        elif key in ("reps", "shots"):
            out[key] = _int(key, value)
        elif key == "alpha":
            out[key] = "auto" if value.lower() == "auto" else _float(key, value, low=1e-9)
        elif key == "k":
            out[key] = "auto" if value.lower() == "auto" else _int(key, value)
        elif key == "noise":
            if _none(value):
                out[key] = None
            elif value.startswith("fake_"):
                out[key] = value
            else:
                out[key] = _float(key, value, 0.0, 1.0)
        elif key == "epsilon":
            out[key] = _float(key, value, 0.0, 1.0)
        elif key == "random_state":
            out[key] = None if _none(value) else _int(key, value, low=0)
        elif key == "validation_fraction":
            out[key] = _float(key, value, 0.0, 0.5)
    return out


# -- paths and progress ----------------------------------------------------------------------------
class Paths:
    def __init__(self, env: dict[str, str] | None = None):
        env = os.environ if env is None else env
        self.root = Path(env.get("SM_ROOT") or env.get("QCBR_OPT_ML") or "/opt/ml")
        self.model = Path(env.get("SM_MODEL_DIR") or self.root / "model")
        self.train = Path(env.get("SM_CHANNEL_TRAIN") or self.root / "input" / "data" / "train")
        self.output_data = Path(env.get("SM_OUTPUT_DATA_DIR") or self.root / "output" / "data")
        self.failure = self.root / "output" / "failure"
        self.hps_file = self.root / "input" / "config" / "hyperparameters.json"
        self.hps_env = env.get("SM_HPS")
        self.job_name = env.get("TRAINING_JOB_NAME") or "local-training"

    def hyperparameters(self) -> dict[str, str]:
        if self.hps_env:
            try:
                data = json.loads(self.hps_env)
            except json.JSONDecodeError as exc:
                raise ValueError(f"SM_HPS is not JSON: {exc}") from None
        elif self.hps_file.is_file():
            try:
                data = json.loads(self.hps_file.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.hps_file} is not JSON: {exc}") from None
        else:
            data = {}
        if not isinstance(data, dict):
            raise ValueError("hyperparameters must be a JSON object of name -> string")
        return {str(k): str(v) for k, v in data.items()}


class Progress:
    """Writes ``progress.json`` atomically, at most every 0.2 s (and always the last word)."""

    def __init__(self, path: Path):
        self.path = path
        self._last = 0.0

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        from qcbr.storage import atomic_write_json

        now = time.time()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        fraction = max(0.0, min(1.0, float(fraction)))
        atomic_write_json(self.path, {"fraction": fraction, "message": str(message), "time": now})

    def span(self, start: float, end: float) -> Callable[[float, str], None]:
        """A callback for a sub-task that maps its 0..1 onto start..end of the whole job."""
        return lambda f, m: self(start + (end - start) * max(0.0, min(1.0, float(f))), m)


def log(message: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the job ---------------------------------------------------------------------------------------
def cv_accuracy(model: Any) -> float | None:
    """Mean cross-validated accuracy of the (alpha, k) the fit chose; None when nothing was tuned."""
    rows = getattr(model, "cv_table_", None) or []
    for row in rows:
        if row.get("k") == getattr(model, "k_", None) and row.get("alpha") == getattr(model, "alpha_", None):
            return float(row["mean_accuracy"])
    results = getattr(model, "cv_results_", None) or {}
    return float(max(results.values())) if results else None


def split(X, y, ids, fraction: float, seed: int):
    """Stratified hold-out: every class keeps at least one case on each side."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    labels, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
    if len(labels) < 2:
        raise ValueError(f"the case base has a single class ({labels[0] if len(labels) else 'none'}); "
                         "a classifier needs cases of at least two classes")
    rare = [str(lab) for lab, c in zip(labels, counts) if c < 2]
    if rare:
        raise ValueError(f"class(es) {', '.join(rare)} have a single case; add cases (at least 2 per class) "
                         "or drop those classes")
    if fraction <= 0:
        return X, None, y, None, ids, None
    n = len(y)
    # at least one case of every class held out; with >= 2 per class and fraction <= 0.5 the
    # training side keeps at least one of each as well
    n_test = max(len(labels), int(round(n * fraction)))
    index = np.arange(n)
    tr, te = train_test_split(index, test_size=n_test, stratify=np.asarray(y).astype(str), random_state=seed)
    take = (lambda obj, rows: obj.iloc[rows] if hasattr(obj, "iloc") else np.asarray(obj)[rows])
    return take(X, tr), take(X, te), take(y, tr), take(y, te), (take(ids, tr) if ids is not None else None), None


def evaluate(model: Any, X_val, y_val) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import confusion_matrix, recall_score

    classes = list(model.classes_)
    y_true = np.asarray(y_val)
    y_pred = np.asarray(model.predict(X_val))
    matrix = confusion_matrix(y_true, y_pred, labels=classes)
    recall = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {
        "validation:accuracy": float(np.mean(y_true == y_pred)),
        "validation:recall": {str(c): float(r) for c, r in zip(classes, recall)},
        "validation:confusion_matrix": matrix.tolist(),
        "validation:n": int(len(y_true)),
    }


def model_card(job_name: str, hps: dict[str, str], metrics: dict[str, Any], model: Any, cases: Any) -> str:
    """The model card (qcbr.monitoring.model_card), from what this job knows: no registry yet."""
    from qcbr.monitoring.model_card import render_model_card

    dataset = dict(cases.summary())
    dataset["name"] = os.environ.get("QCBR_DATASET_NAME") or dataset.get("name")
    return render_model_card(metrics=metrics, dataset=dataset, bias_report=cases.bias_report(),
                             job_name=job_name, hyperparameters=hps, model=model)


def train(paths: Paths, progress: Progress) -> dict[str, Any]:
    from qcbr.cases import CaseBase
    from qcbr.model import QCBRClassifier
    from qcbr.storage import atomic_write_bytes, atomic_write_json

    raw_hps = paths.hyperparameters()
    params = parse_hyperparameters(raw_hps)
    fraction = params.pop("validation_fraction")
    progress(0.01, "Loading cases", force=True)
    parquet, schema_file = paths.train / "cases.parquet", paths.train / "schema.json"
    if not parquet.is_file() or not schema_file.is_file():
        raise FileNotFoundError(f"the train channel {paths.train} must hold cases.parquet and schema.json")
    schema = json.loads(schema_file.read_text())
    cases = CaseBase.from_parquet(parquet, schema)
    X, y, ids = cases.features, cases.y, cases.case_ids
    log(f"{len(y)} cases, {X.shape[1]} features, label {cases.label!r}; hyperparameters {raw_hps}")

    seed = params.get("random_state")
    X_tr, X_val, y_tr, y_val, ids_tr, _ = split(X, y, ids, fraction, 0 if seed is None else seed)
    progress(0.05, f"Fitting on {len(y_tr)} cases (cross-validating alpha and k)", force=True)
    model = QCBRClassifier(**params)
    model.fit(X_tr, y_tr, case_ids=ids_tr, progress=progress.span(0.05, 0.65))
    metrics: dict[str, Any] = {"train:n": int(len(y_tr))}
    if X_val is not None:
        progress(0.66, f"Scoring {len(y_val)} held-out cases", force=True)
        metrics.update(evaluate(model, X_val, y_val))
        log(f"validation accuracy {metrics['validation:accuracy']:.4f} on {len(y_val)} cases")
    cv = cv_accuracy(model)
    metrics["cv:accuracy"] = cv
    metrics["alpha"] = float(model.alpha_) if getattr(model, "alpha_", None) is not None else None
    metrics["k"] = int(model.k_) if getattr(model, "k_", None) is not None else None

    progress(0.7, f"Refitting on all {len(y)} cases", force=True)
    final = model
    if X_val is not None:
        from sklearn.base import clone

        final = clone(model)
        fixed = {}
        if metrics["alpha"] is not None:
            fixed["alpha"] = metrics["alpha"]
        if metrics["k"] is not None:
            fixed["k"] = metrics["k"]
        final.set_params(**fixed)
        final.fit(X, y, case_ids=ids, progress=progress.span(0.7, 0.9))
    metrics["labels"] = [str(c) for c in final.classes_]
    metrics["n"] = int(len(y))

    progress(0.92, "Saving the model", force=True)
    paths.model.mkdir(parents=True, exist_ok=True)
    final.save(paths.model)
    atomic_write_json(paths.model / "metrics.json", metrics)
    progress(0.95, "Writing the monitoring baseline", force=True)
    from qcbr.monitoring.baseline import write_baseline

    write_baseline(paths.model, X, cases.schema, labels=y, model=final)
    atomic_write_bytes(paths.model / "model_card.md",
                       model_card(paths.job_name, raw_hps, metrics, final, cases).encode())
    atomic_write_json(paths.output_data / "feature_schema.json", {
        "label": cases.label,
        "features": list(getattr(final, "feature_schema_", []) or []),
        "classes": [str(c) for c in final.classes_],
    })
    progress(1.0, "Completed", force=True)
    log("done")
    return metrics


def main() -> int:
    paths = Paths()
    progress = Progress(paths.output_data / "progress.json")
    try:
        train(paths, progress)
        return 0
    except BaseException as exc:  # noqa: BLE001 - SageMaker wants the reason in output/failure
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (ValueError, FileNotFoundError)) else str(exc)
        if isinstance(exc, KeyboardInterrupt):
            reason = "training interrupted"
        try:
            paths.failure.parent.mkdir(parents=True, exist_ok=True)
            paths.failure.write_text(reason[:4000])
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
