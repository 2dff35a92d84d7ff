"""The monitoring baseline, written next to every model at training time.

Three files in the model dir (and so in its ``model.tar.gz``):

- ``statistics.json`` and ``constraints.json`` in SageMaker Model Monitor's formats, so both
  backends and Model Monitor-aware tools read them the same.
- ``monitoring_baseline.json`` (qCBR's own): what Model Monitor's formats have no place for: the
  training class mix (prediction drift) and the leave-one-out best-similarity distribution of the
  case memory (novelty drift).

Drift needs the reference sample itself, not only summaries (KS, PSI and Wasserstein are
two-sample statistics). Each numeric feature's ``distribution.kll.sketch.data`` therefore holds a
uniform sample without replacement of up to ``sample_size`` (2,000) present values in one level,
sorted. With ``n <= sample_size`` that is exactly what a KLL sketch of that ``k`` holds (all items,
level 0); above it, each kept item stands for ``n / sample_size`` items. ``sketch.parameters``
records ``k`` (the sample size) and ``c`` (0.64, Model Monitor's value) so readers that expect a
KLL sketch still parse it. Categorical features need no sample: their buckets are exact counts.
"""
from __future__ import annotations

import io
import json
import math
import os
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from qcbr.errors import ArtifactError, CaseValidationError
from qcbr.monitoring.values import canon_category
from qcbr.storage import atomic_write_json, read_json

SAMPLE_SIZE = 2000
DOMAIN_LIMIT = 50  # categorical features with more distinct values get no domain constraint
BUCKET_LIMIT = 1000  # most frequent categories kept in the statistics
KLL_BUCKETS = 10
FEATURE_TYPES = ("numeric", "categorical", "boolean")
EXTRAS_FILE = "monitoring_baseline.json"
BASELINE_FILES = ("statistics.json", "constraints.json", EXTRAS_FILE, "metrics.json")

DEFAULT_MONITORING_CONFIG = {
    "evaluate_constraints": "Enabled",
    "emit_metrics": "Enabled",
    "datatype_check_threshold": 1.0,
    "domain_content_threshold": 1.0,
    "distribution_constraints": {
        "perform_comparison": "Enabled",
        "comparison_threshold": 0.1,
        "comparison_method": "Robust",
    },
}


def feature_columns(frame, schema: dict | None) -> list[tuple[str, str]]:
    """(name, numeric|categorical|boolean) for each feature, in the schema's order.

    Without a schema the dtypes decide; id and label columns are never features.
    """
    import pandas as pd

    if schema is None:
        out = []
        for name in frame.columns:
            dtype = frame[name].dtype
            if pd.api.types.is_bool_dtype(dtype):
                out.append((str(name), "boolean"))
            elif pd.api.types.is_numeric_dtype(dtype):
                out.append((str(name), "numeric"))
            else:
                out.append((str(name), "categorical"))
        return out
    columns = schema.get("columns") if isinstance(schema, dict) else None
    if not isinstance(columns, list):
        raise CaseValidationError("schema has no 'columns' list; pass the CaseBase's .schema dict")
    out = []
    for col in columns:
        name, kind = str(col.get("name")), col.get("type")
        if kind not in FEATURE_TYPES:
            continue  # id / label
        if name not in frame.columns:
            raise CaseValidationError(
                f"schema feature {name!r} is not a column of the frame (columns: {', '.join(map(str, frame.columns))}); "
                "pass case_base.features with case_base.schema"
            )
        out.append((name, kind))
    if not out:
        raise CaseValidationError("schema declares no feature columns (numeric, categorical or boolean)")
    return out


def _integral(series, numbers) -> bool:
    import pandas as pd

    if pd.api.types.is_integer_dtype(series.dtype):
        return True
    # an integer column promoted to float by missing values
    present = numbers[np.isfinite(numbers)]
    return bool(series.isna().any() and present.size and np.all(present == np.round(present)))


def _sample(values: np.ndarray, size: int, seed: int) -> np.ndarray:
    if values.size <= size:
        return np.sort(values)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(values, size=size, replace=False))


def _num(x: float, integral: bool) -> float | int:
    return int(x) if integral else float(x)


def _numeric_feature(name: str, series, sample_size: int, seed: int) -> tuple[dict, dict]:
    import pandas as pd

    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    present = numbers[np.isfinite(numbers)]
    n_present = int(present.size)
    n_missing = int(len(series) - n_present)
    integral = _integral(series, numbers)
    inferred = "Integral" if integral else "Fractional"
    stats: dict[str, Any] = {"common": {"num_present": n_present, "num_missing": n_missing}}
    if n_present:
        lo, hi = float(present.min()), float(present.max())
        edges = np.linspace(lo, hi, KLL_BUCKETS + 1) if hi > lo else np.array([lo, hi])
        counts = np.histogram(present, bins=edges)[0] if hi > lo else np.array([n_present])
        sample = _sample(present, sample_size, seed)
        stats.update(
            mean=float(present.mean()),
            sum=float(present.sum()),
            std_dev=float(present.std()),
            min=_num(lo, integral),
            max=_num(hi, integral),
            distribution={
                "kll": {
                    "buckets": [
                        {"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]), "count": float(counts[i])}
                        for i in range(len(counts))
                    ],
                    "sketch": {
                        "parameters": {"c": 0.64, "k": float(sample_size)},
                        "data": [[_num(v, integral) for v in sample]],
                    },
                }
            },
        )
    else:
        stats.update(mean=None, sum=None, std_dev=None, min=None, max=None)
    feature = {"name": name, "inferred_type": inferred, "numerical_statistics": stats}
    constraint = {
        "name": name,
        "inferred_type": inferred,
        "completeness": (n_present / len(series)) if len(series) else 0.0,
        "num_constraints": {"is_non_negative": bool(n_present and present.min() >= 0)},
    }
    return feature, constraint


def _categorical_feature(name: str, series, boolean: bool) -> tuple[dict, dict]:
    values = [canon_category(v, boolean=boolean) for v in series.tolist()]
    present = [v for v in values if v is not None]
    counts: dict[str, int] = {}
    for v in present:
        counts[v] = counts.get(v, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    feature = {
        "name": name,
        "inferred_type": "String",
        "string_statistics": {
            "common": {"num_present": len(present), "num_missing": len(values) - len(present)},
            "distinct_count": float(len(counts)),
            "distribution": {
                "categorical": {"buckets": [{"value": v, "count": float(c)} for v, c in ordered[:BUCKET_LIMIT]]}
            },
        },
    }
    constraint: dict[str, Any] = {
        "name": name,
        "inferred_type": "String",
        "completeness": (len(present) / len(values)) if values else 0.0,
    }
    if 0 < len(counts) <= DOMAIN_LIMIT:
        constraint["string_constraints"] = {"domains": sorted(counts)}
    return feature, constraint


def build_baseline(frame, schema: dict | None = None, sample_size: int = SAMPLE_SIZE, seed: int = 0) -> tuple[dict, dict]:
    """(statistics, constraints) of the training features in Model Monitor's formats."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise CaseValidationError(f"build_baseline needs a pandas DataFrame of features, got {type(frame).__name__}")
    if len(frame) == 0:
        raise CaseValidationError("cannot build a monitoring baseline from an empty frame")
    if sample_size < 10:
        raise ValueError("sample_size must be at least 10")
    features, constraints = [], []
    for i, (name, kind) in enumerate(feature_columns(frame, schema)):
        series = frame[name]
        if kind == "numeric":
            f, c = _numeric_feature(name, series, sample_size, seed + i)
        else:
            f, c = _categorical_feature(name, series, boolean=(kind == "boolean"))
        features.append(f)
        constraints.append(c)
    statistics = {"version": 0.0, "dataset": {"item_count": int(len(frame))}, "features": features}
    constraint_doc = {"version": 0.0, "features": constraints, "monitoring_config": json.loads(json.dumps(DEFAULT_MONITORING_CONFIG))}
    return statistics, constraint_doc


def class_mix(labels) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in list(labels):
        key = canon_category(v)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def novelty_baseline(model, X, max_rows: int = SAMPLE_SIZE, seed: int = 0) -> dict:
    """Leave-one-out best similarity of the case memory: for each stored case, its highest
    fidelity to any *other* stored case. Production queries from the training distribution have
    best similarities distributed like this; a shift to lower values means new cases unlike
    anything remembered.

    ``X`` must be the features the model was fitted on, in the same order (row i is memory
    case i), as ``model.retrieve`` indexes its memory in fit order.
    """
    n = len(X)
    if n < 2:
        raise CaseValidationError("the novelty baseline needs at least 2 stored cases")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max_rows), replace=False))
    subset = X.iloc[rows] if hasattr(X, "iloc") else np.asarray(X)[rows]
    indices, scores = model.retrieve(subset, k=2)
    indices, scores = np.asarray(indices), np.asarray(scores, dtype=float)
    best = np.where(indices[:, 0] == rows, scores[:, 1], scores[:, 0])
    values = np.sort(best)
    return {
        "method": "leave_one_out_best_similarity",
        "n_cases": int(n),
        "n_sampled": int(values.size),
        "values": [float(v) for v in values],
        "quantiles": {f"p{q:02d}": float(np.quantile(values, q / 100)) for q in (1, 5, 25, 50)},
    }


def build_extras(frame, schema: dict | None, labels=None, model=None, novelty: dict | None = None) -> dict:
    extras: dict[str, Any] = {
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(),
        "feature_order": [name for name, _ in feature_columns(frame, schema)],
        "label": (schema or {}).get("label") if isinstance(schema, dict) else None,
        "class_mix": class_mix(labels) if labels is not None else None,
        "novelty": novelty,
    }
    if novelty is None and model is not None:
        extras["novelty"] = novelty_baseline(model, frame)
    return extras


def write_baseline(model_dir: str | os.PathLike, frame, schema: dict | None = None, labels=None, model=None,
                   novelty: dict | None = None) -> dict[str, str]:
    """Write statistics.json, constraints.json and monitoring_baseline.json into ``model_dir``.

    The training entrypoint calls this with ``case_base.features``, ``case_base.schema``, the
    labels (for the class mix) and the fitted model (for the novelty baseline; ``frame`` must be
    what it was fitted on), or an already computed ``novelty`` (``novelty_baseline``'s dict).
    Returns the paths written.
    """
    model_dir = Path(model_dir)
    statistics, constraints = build_baseline(frame, schema)
    extras = build_extras(frame, schema, labels=labels, model=model, novelty=novelty)
    paths = {
        "statistics": model_dir / "statistics.json",
        "constraints": model_dir / "constraints.json",
        "extras": model_dir / EXTRAS_FILE,
    }
    atomic_write_json(paths["statistics"], statistics)
    atomic_write_json(paths["constraints"], constraints)
    atomic_write_json(paths["extras"], extras)
    return {k: str(v) for k, v in paths.items()}


@dataclass
class Baseline:
    """A loaded baseline: Model Monitor's two documents plus qCBR's extras and the model's metrics."""

    statistics: dict
    constraints: dict
    extras: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    source: str = "<dicts>"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for doc, what in ((self.statistics, "statistics.json"), (self.constraints, "constraints.json")):
            if not isinstance(doc, dict) or not isinstance(doc.get("features"), list):
                raise ArtifactError(f"{what} from {self.source} has no 'features' list; rebuild the baseline with qcbr")
        for f in self.statistics["features"]:
            if not isinstance(f, dict) or "name" not in f or f.get("inferred_type") not in ("Integral", "Fractional", "String"):
                raise ArtifactError(
                    f"statistics.json from {self.source} has a malformed feature entry {str(f)[:80]!r}; "
                    "each needs a name and an inferred_type Integral|Fractional|String"
                )

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.statistics["features"]]

    def constraint(self, name: str) -> dict:
        for c in self.constraints.get("features", []):
            if c.get("name") == name:
                return c
        return {}

    @property
    def monitoring_config(self) -> dict:
        merged = json.loads(json.dumps(DEFAULT_MONITORING_CONFIG))
        cfg = self.constraints.get("monitoring_config") or {}
        for k, v in cfg.items():
            if k == "distribution_constraints" and isinstance(v, dict):
                merged[k].update(v)
            else:
                merged[k] = v
        return merged

    @property
    def reference_accuracy(self) -> float | None:
        for key in ("validation:accuracy", "validation_accuracy", "accuracy"):
            value = self.metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                return float(value)
        return None

    @classmethod
    def from_dicts(cls, statistics: dict, constraints: dict, extras: dict | None = None, metrics: dict | None = None,
                   source: str = "<dicts>") -> "Baseline":
        return cls(statistics, constraints, extras or {}, metrics or {}, source)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "Baseline":
        path = Path(path)
        docs = {}
        for name in BASELINE_FILES:
            p = path / name
            if not p.is_file():
                if name in ("statistics.json", "constraints.json"):
                    raise ArtifactError(f"no {name} in {path}; the model dir lacks a monitoring baseline (retrain it)")
                docs[name] = {}
                continue
            try:
                docs[name] = read_json(p)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ArtifactError(f"{p} is not valid JSON ({exc}); rebuild the baseline") from None
        return cls(docs["statistics.json"], docs["constraints.json"], docs[EXTRAS_FILE], docs["metrics.json"], str(path))

    @classmethod
    def from_tar_bytes(cls, data: bytes, source: str = "model.tar.gz") -> "Baseline":
        """Read the baseline files out of a model.tar.gz in memory (nothing is extracted to disk)."""
        found: dict[str, dict] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                for member in tar.getmembers():
                    base = os.path.basename(member.name)
                    depth = len([p for p in member.name.split("/") if p not in ("", ".")])
                    if base not in BASELINE_FILES or not member.isfile() or member.size > 256 * 1024 * 1024:
                        continue
                    if base in found and depth > found[base]["_depth"]:
                        continue  # prefer the top-level copy
                    fh = tar.extractfile(member)
                    if fh is None:
                        continue
                    try:
                        found[base] = {"_depth": depth, "doc": json.loads(fh.read())}
                    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                        raise ArtifactError(f"{base} in {source} is not valid JSON ({exc})") from None
        except tarfile.TarError as exc:
            raise ArtifactError(f"{source} is not a readable tar.gz ({exc})") from None
        for name in ("statistics.json", "constraints.json"):
            if name not in found:
                raise ArtifactError(
                    f"{source} has no {name}: this model version was trained without a monitoring baseline; "
                    "retrain it with the current qcbr to monitor it"
                )
        doc = {k: v["doc"] for k, v in found.items()}
        return cls(doc["statistics.json"], doc["constraints.json"], doc.get(EXTRAS_FILE, {}), doc.get("metrics.json", {}), source)

    @classmethod
    def coerce(cls, obj: Any) -> "Baseline":
        """A Baseline from a Baseline, a model dir, or a dict {statistics, constraints[, extras, metrics]}."""
        if isinstance(obj, Baseline):
            return obj
        if isinstance(obj, (str, os.PathLike)):
            return cls.from_dir(obj)
        if isinstance(obj, dict) and "statistics" in obj and "constraints" in obj:
            return cls.from_dicts(obj["statistics"], obj["constraints"], obj.get("extras"), obj.get("metrics"))
        if isinstance(obj, (tuple, list)) and len(obj) == 2:
            return cls.from_dicts(obj[0], obj[1])
        raise ArtifactError(
            "baseline must be a model dir, a (statistics, constraints) pair or a dict with 'statistics' and 'constraints'"
        )


def reference_sample(feature: dict) -> np.ndarray:
    """The numeric reference values kept in a feature's kll sketch (all levels concatenated)."""
    dist = (feature.get("numerical_statistics") or {}).get("distribution") or {}
    data = ((dist.get("kll") or {}).get("sketch") or {}).get("data") or []
    values = [float(v) for level in data for v in level if v is not None]
    return np.asarray(values, dtype=float)


def reference_counts(feature: dict) -> dict[str, float]:
    dist = (feature.get("string_statistics") or {}).get("distribution") or {}
    buckets = (dist.get("categorical") or {}).get("buckets") or []
    return {str(b["value"]): float(b["count"]) for b in buckets if "value" in b}
