"""Aggregates the Cases page draws: per-column summaries and histograms, class balance, groups.

Computed once per dataset version (the page caches by sha256) so that a 100,000-case base costs
one pass, and the browser receives bins and counts, never the rows.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TOP_CATEGORIES = 20
BINS = 30


def column_profile(values: pd.Series, kind: str) -> dict[str, Any]:
    n = len(values)
    missing = int(values.isna().sum())
    out: dict[str, Any] = {
        "name": str(values.name), "type": kind, "missing": missing,
        "missing_fraction": missing / n if n else 0.0, "unique": int(values.nunique(dropna=True)),
    }
    present = values.dropna()
    if kind == "numeric":
        nums = pd.to_numeric(present, errors="coerce").dropna().to_numpy(dtype=float)
        nums = nums[np.isfinite(nums)]
        if nums.size:
            counts, edges = np.histogram(nums, bins=min(BINS, max(1, len(np.unique(nums[:5000])))))
            out.update(min=float(nums.min()), max=float(nums.max()), mean=float(nums.mean()),
                       std=float(nums.std()), histogram={"edges": edges.tolist(), "counts": counts.tolist()})
    elif kind in ("categorical", "boolean", "label"):
        counts = present.astype(str).value_counts()
        top = counts.head(TOP_CATEGORIES)
        out["top"] = {str(k): int(v) for k, v in top.items()}
        out["other"] = int(counts.iloc[TOP_CATEGORIES:].sum()) if len(counts) > TOP_CATEGORIES else 0
    return out


def profile(frame: pd.DataFrame, schema: dict) -> dict[str, Any]:
    """The whole profile of a case base, given its CaseBase schema dict."""
    types = {c["name"]: c["type"] for c in schema.get("columns", [])}
    cols = [column_profile(frame[name], types.get(name, "categorical")) for name in frame.columns]
    label = schema.get("label")
    balance: dict[str, int] = {}
    if label in frame.columns:
        balance = {str(k): int(v) for k, v in frame[label].astype(str).value_counts().sort_index().items()}
    return {
        "rows": int(len(frame)), "columns": cols,
        "missing": {c["name"]: c["missing_fraction"] for c in cols},
        "class_balance": balance,
    }


def group_rates(frame: pd.DataFrame, sensitive: str, label: str, max_groups: int = 20) -> dict[str, dict[str, float]]:
    """For each group of ``sensitive`` (the largest ``max_groups``), the share of each class."""
    groups = frame[sensitive].astype(str)
    keep = groups.value_counts().head(max_groups).index
    mask = groups.isin(keep)
    table = pd.crosstab(groups[mask], frame.loc[mask, label].astype(str), normalize="index")
    return {str(g): {str(c): float(v) for c, v in row.items()} for g, row in table.iterrows()}
