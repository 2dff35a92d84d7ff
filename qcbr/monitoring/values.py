"""How a single captured value is read: missing, numeric (integral or not), or a category.

Training frames come typed (pandas dtypes) while captured requests arrive as JSON or CSV text, so
both sides go through the same canonical forms here; otherwise "1" (CSV) and 1 (JSON) and 1.0
(pandas) would count as three categories and every CSV request would look like drift.
"""
from __future__ import annotations

import math
from typing import Any

MISSING, OK, MISMATCH = "missing", "ok", "mismatch"
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip() == "":
        return True
    try:  # pandas NA / NaT
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, (list, dict, tuple)) else False
    except (TypeError, ValueError):
        return False


def parse_number(value: Any) -> tuple[float, str]:
    """(value as float, MISSING|OK|MISMATCH). Booleans and non-finite numbers are mismatches."""
    if is_missing(value):
        return math.nan, MISSING
    if isinstance(value, bool):
        return math.nan, MISMATCH
    if isinstance(value, (int, float)) or type(value).__module__ == "numpy":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return math.nan, MISMATCH
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return math.nan, MISMATCH
    else:
        return math.nan, MISMATCH
    if not math.isfinite(number):
        return math.nan, MISMATCH
    return number, OK


def canon_category(value: Any, boolean: bool = False) -> str | None:
    """Canonical string of a category: None when missing; integral floats drop '.0'; booleans
    become 'true'/'false' (and so do 1/0/yes/no when the feature is boolean)."""
    if is_missing(value):
        return None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "true" if bool(value) else "false"
    if isinstance(value, float) or type(value).__module__ == "numpy":
        try:
            number = float(value)
            if math.isfinite(number) and number.is_integer():
                value = int(number)
        except (TypeError, ValueError):
            pass
    text = str(value).strip()
    if boolean:
        low = text.lower()
        if low in _TRUE:
            return "true"
        if low in _FALSE:
            return "false"
    elif text.lower() in ("true", "false"):
        return text.lower()
    return text


def canon_label(value: Any) -> str | None:
    """Labels compare as canonical strings: ground truth arrives as CSV text, predictions as JSON."""
    return canon_category(value)
