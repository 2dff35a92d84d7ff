"""Turn an invocation body (JSON or CSV) into model input, or say precisely what is wrong with it.

The inference server must answer every bad request with a 4xx that names the field, the row and
what was expected, and never let junk reach the model (where it would surface as a 500). This
module is pure Python on purpose: it runs once per request, so it never builds a pandas frame
(the model takes arrays in feature order) and uses orjson when installed.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from qcbr.errors import QCBRError

try:  # orjson is several times faster than json for small bodies; optional.
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None
import json as _json

JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv",)
SUPPORTED_CONTENT_TYPES = ("application/json", "text/csv")
DEFAULT_MAX_ROWS = 1000
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class PayloadError(QCBRError, ValueError):
    """A request body the model cannot take; carries the HTTP status and a structured detail."""

    def __init__(self, message: str, status: int = 400, detail: Any = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    type: str  # numeric | categorical | boolean
    categories: tuple = ()


@dataclass
class FeatureSchema:
    """The model's input columns, in the order the model expects them."""

    features: list[FeatureSpec]
    names: list[str] = field(init=False)
    all_numeric: bool = field(init=False)

    def __post_init__(self) -> None:
        self.names = [f.name for f in self.features]
        self._index = {n: i for i, n in enumerate(self.names)}
        self.all_numeric = all(f.type == "numeric" for f in self.features)

    @classmethod
    def from_model(cls, model: Any) -> "FeatureSchema":
        """Read ``feature_schema_`` (falling back to ``feature_names_in_``, all numeric)."""
        schema = getattr(model, "feature_schema_", None)
        if schema:
            feats = [
                FeatureSpec(str(f["name"]), str(f.get("type", "numeric")), tuple(f.get("categories") or ()))
                for f in schema
            ]
        else:
            names = getattr(model, "feature_names_in_", None)
            if names is None:
                n = int(getattr(model, "n_features_in_"))
                names = [f"x{i}" for i in range(n)]
            feats = [FeatureSpec(str(n), "numeric") for n in names]
        return cls(feats)

    def to_json(self) -> list[dict]:
        out = []
        for f in self.features:
            d: dict[str, Any] = {"name": f.name, "type": f.type}
            if f.categories:
                d["categories"] = list(f.categories)
            out.append(d)
        return out


@dataclass
class Parsed:
    """Validated rows, each a list of Python values in the schema's feature order."""

    rows: list[list[Any]]
    encoding: str  # "JSON" | "CSV" (SageMaker capture's vocabulary)

    def to_model_input(self, schema: FeatureSchema):
        """A float64 array when every feature is numeric, else an object array in feature order.

        Never a DataFrame: the model matches arrays to its features by position, and building a
        frame per request costs more than the rest of the request path together.
        """
        import numpy as np

        dtype = np.float64 if schema.all_numeric else object
        return np.array(self.rows, dtype=dtype).reshape(len(self.rows), len(schema.names))

    def to_frame(self, schema: FeatureSchema):
        """The rows as a typed DataFrame (for display and exports, not the request path)."""
        import pandas as pd

        frame = pd.DataFrame(self.rows, columns=schema.names)
        for spec in schema.features:
            if spec.type == "numeric":
                frame[spec.name] = frame[spec.name].astype("float64")
            elif spec.type == "boolean":
                frame[spec.name] = frame[spec.name].astype(bool)
        return frame

    def records(self, schema: FeatureSchema) -> list[dict]:
        return [dict(zip(schema.names, row)) for row in self.rows]


def media_type(content_type: str | None) -> str:
    """``'Application/JSON; charset=utf-8'`` -> ``'application/json'``; missing -> ``''``."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def loads_json(body: bytes) -> Any:
    if _orjson is not None:
        return _orjson.loads(body)
    return _json.loads(body)


def dumps_json(obj: Any) -> bytes:
    """Serialise a response, converting numpy scalars/arrays the model may hand back."""
    if _orjson is not None:
        return _orjson.dumps(obj, default=_json_default, option=_orjson.OPT_SERIALIZE_NUMPY)
    return _json.dumps(obj, default=_json_default, separators=(",", ":")).encode()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def parse_body(
    body: bytes,
    content_type: str | None,
    schema: FeatureSchema,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Parsed:
    """Validate ``body`` against ``schema``; raise PayloadError (4xx) saying what to fix."""
    mtype = media_type(content_type)
    if not body or not body.strip():
        raise PayloadError(
            "empty request body",
            400,
            {"expected": 'a JSON object {"instances": [...]} or CSV rows', "features": schema.names},
        )
    if mtype in JSON_TYPES or mtype == "":
        rows = _parse_json(body, schema)
        encoding = "JSON"
    elif mtype in CSV_TYPES:
        rows = _parse_csv(body, schema)
        encoding = "CSV"
    else:
        raise PayloadError(
            f"unsupported content type {mtype!r}",
            415,
            {"supported": list(SUPPORTED_CONTENT_TYPES)},
        )
    if not rows:
        raise PayloadError("the request holds no instances", 400, {"features": schema.names})
    if len(rows) > max_rows:
        raise PayloadError(
            f"too many instances: {len(rows)} rows, at most {max_rows} per request; split the batch",
            413,
            {"rows": len(rows), "max_rows": max_rows},
        )
    return Parsed(rows, encoding)


# --- JSON ---------------------------------------------------------------------------------------

def _parse_json(body: bytes, schema: FeatureSchema) -> list[list[Any]]:
    try:
        doc = loads_json(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PayloadError("malformed JSON body", 400, {"reason": str(exc)}) from None
    if isinstance(doc, dict):
        if "instances" in doc:
            extra = sorted(set(doc) - {"instances"})
            if extra:
                raise PayloadError(
                    f"unexpected top-level keys {extra}; send only 'instances'", 400,
                    {"unexpected": extra},
                )
            instances = doc["instances"]
            if not isinstance(instances, list):
                raise PayloadError(
                    f"'instances' must be a list of records or value lists, got {_tname(instances)}", 400,
                    {"features": schema.names},
                )
        else:
            instances = [doc]  # one record object
    elif isinstance(doc, list):
        instances = doc
    else:
        raise PayloadError(
            f'the JSON body must be an object ({{"instances": [...]}} or one record), got {_tname(doc)}',
            400, {"features": schema.names},
        )
    return [_row_from_instance(inst, i, schema) for i, inst in enumerate(instances)]


def _row_from_instance(inst: Any, row: int, schema: FeatureSchema) -> list[Any]:
    names = schema.names
    if isinstance(inst, dict):
        if len(inst) != len(names) or any(k not in schema._index for k in inst):
            missing = [n for n in names if n not in inst]
            unexpected = [str(k) for k in inst if k not in schema._index]
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unexpected:
                parts.append(f"unexpected {unexpected}")
            raise PayloadError(
                f"row {row}: wrong feature names ({'; '.join(parts)})", 400,
                {"row": row, "missing": missing, "unexpected": unexpected, "expected": names},
            )
        values = [inst[n] for n in names]
    elif isinstance(inst, list):
        if len(inst) != len(names):
            raise PayloadError(
                f"row {row}: {len(inst)} values, expected {len(names)} features", 400,
                {"row": row, "got": len(inst), "expected": names},
            )
        values = inst
    else:
        raise PayloadError(
            f"row {row}: an instance must be an object or a list of {len(names)} values, got {_tname(inst)}",
            400, {"row": row, "expected": names},
        )
    return [_coerce(v, spec, row, from_text=False) for v, spec in zip(values, schema.features)]


# --- CSV ----------------------------------------------------------------------------------------

def _parse_csv(body: bytes, schema: FeatureSchema) -> list[list[Any]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError("CSV body is not UTF-8 text", 400, {"reason": str(exc)}) from None
    if "\x00" in text:
        raise PayloadError("malformed CSV: the body holds NUL bytes", 400, None)
    try:
        raw = [r for r in csv.reader(io.StringIO(text), strict=True) if r and any(c.strip() for c in r)]
    except csv.Error as exc:
        raise PayloadError("malformed CSV body", 400, {"reason": str(exc)}) from None
    if not raw:
        return []
    names = schema.names
    order = None
    first = [c.strip() for c in raw[0]]
    if _looks_like_header(first, schema):
        missing = [n for n in names if n not in first]
        unexpected = [c for c in first if c not in schema._index]
        if missing or unexpected or len(first) != len(names):
            raise PayloadError(
                "CSV header does not match the model's features", 400,
                {"missing": missing, "unexpected": unexpected, "expected": names},
            )
        order = [first.index(n) for n in names]
        raw = raw[1:]
    rows = []
    for i, cells in enumerate(raw):
        if len(cells) != len(names):
            raise PayloadError(
                f"row {i}: {len(cells)} values, expected {len(names)} features", 400,
                {"row": i, "got": len(cells), "expected": names},
            )
        if order is not None:
            cells = [cells[j] for j in order]
        rows.append([_coerce(c.strip(), spec, i, from_text=True) for c, spec in zip(cells, schema.features)])
    return rows


def _looks_like_header(cells: Sequence[str], schema: FeatureSchema) -> bool:
    """A first row naming at least one feature, which is not itself a valid data row, is a header."""
    if not any(c in schema._index for c in cells):
        return False
    if len(cells) != len(schema.names):
        return True
    try:
        for c, spec in zip(cells, schema.features):
            _coerce(c, spec, 0, from_text=True)
    except PayloadError:
        return True
    return False


# --- values -------------------------------------------------------------------------------------

def _coerce(value: Any, spec: FeatureSpec, row: int, from_text: bool) -> Any:
    kind = spec.type
    if kind == "numeric":
        if isinstance(value, bool):
            raise _type_error(value, spec, row, "a number")
        if isinstance(value, (int, float)):
            try:
                x = float(value)
            except OverflowError:
                raise _type_error(value, spec, row, "a finite number") from None
        elif isinstance(value, str):
            try:
                x = float(value)
            except ValueError:
                raise _type_error(value, spec, row, "a number") from None
        else:
            raise _type_error(value, spec, row, "a number")
        if not math.isfinite(x):
            raise _type_error(value, spec, row, "a finite number")
        return x
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            s = value.strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
        raise _type_error(value, spec, row, "a boolean (true/false)")
    # categorical: any scalar; matched to a known category by value or by its text.
    if value is None or isinstance(value, (dict, list)) or (from_text and value == ""):
        raise _type_error(value, spec, row, "a category" + _cats(spec))
    if isinstance(value, float) and not math.isfinite(value):
        raise _type_error(value, spec, row, "a category" + _cats(spec))
    if spec.categories and value not in spec.categories:
        text = str(value)
        for cat in spec.categories:
            if str(cat) == text:
                return cat
        return text if isinstance(spec.categories[0], str) else value
    return value


def _cats(spec: FeatureSpec) -> str:
    if not spec.categories:
        return ""
    shown = list(spec.categories[:10])
    return f" (one of {shown}{' ...' if len(spec.categories) > 10 else ''})"


def _type_error(value: Any, spec: FeatureSpec, row: int, expected: str) -> PayloadError:
    if isinstance(value, (bool, type(None))) or (isinstance(value, float) and math.isfinite(value)):
        shown = value
    elif isinstance(value, int) and abs(value) < 2**53:
        shown = value
    else:
        shown = str(value)[:60]
    return PayloadError(
        f"row {row}, feature {spec.name!r}: expected {expected}, got {shown!r}",
        400,
        {"row": row, "feature": spec.name, "expected": expected, "got": shown},
    )


def _tname(obj: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(obj), type(obj).__name__
    )
