"""Decay: how well the endpoint's predictions hold up once the truth is known.

Input is the join of captured predictions and ground truth (``capture.join_ground_truth``):
one row per labelled prediction with ``time``, ``predicted``, ``actual``, ``confidence``,
``correct``. Accuracy, per-class recall and calibration (ECE) are computed overall and per time
window; the accuracy drop is measured against the model's validation accuracy, and only called
decay once enough labels exist (``min_labelled``) for the drop to mean something.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qcbr.monitoring.stats import expected_calibration_error


def _metrics(frame, classes: list[str]) -> dict[str, Any]:
    n = int(len(frame))
    out: dict[str, Any] = {"n_labelled": n, "accuracy": None, "ece": None, "recall": {}}
    if n == 0:
        return out
    correct = frame["correct"].astype(bool).to_numpy()
    out["accuracy"] = float(correct.mean())
    conf = frame["confidence"].to_numpy(dtype=float)
    ok = np.isfinite(conf)
    if ok.any():
        out["ece"] = expected_calibration_error(conf[ok], correct[ok])
    actual = frame["actual"].astype(str).to_numpy()
    for cls in classes:
        sel = actual == cls
        out["recall"][cls] = float(correct[sel].mean()) if sel.any() else None
    return out


def decay_report(joined, reference_accuracy: float | None = None, freq: str = "D",
                 accuracy_drop: float = 0.1, min_labelled: int = 30, classes: list[str] | None = None) -> dict:
    """Overall and per-window accuracy, recall per class and ECE; ``decayed`` when the overall
    accuracy is ``accuracy_drop`` or more below ``reference_accuracy`` on at least ``min_labelled``
    labels. ``freq`` is a pandas offset alias (``"h"``, ``"D"``, ``"W"``)."""
    import pandas as pd

    if classes is None:
        seen = set(joined["actual"].astype(str)) | set(joined["predicted"].astype(str)) if len(joined) else set()
        classes = sorted(seen)
    overall = _metrics(joined, classes)
    windows = []
    if len(joined):
        times = pd.to_datetime(joined["time"], utc=True)
        if freq.upper().startswith(("W", "M")):  # calendar periods: weeks, months
            starts = times.dt.tz_convert(None).dt.to_period(freq.upper()[0]).dt.start_time.dt.tz_localize("UTC")
        else:
            starts = times.dt.floor(freq)
        for start, group in joined.groupby(starts.rename("window_start"), sort=True):
            rec = _metrics(group, classes)
            rec["window_start"] = pd.Timestamp(start).isoformat()
            windows.append(rec)
    drop = None
    if reference_accuracy is not None and overall["accuracy"] is not None:
        drop = float(reference_accuracy - overall["accuracy"])
    enough = overall["n_labelled"] >= min_labelled
    return {
        "evaluated": overall["n_labelled"] > 0,
        "freq": freq,
        "classes": classes,
        "reference_accuracy": reference_accuracy,
        "overall": overall,
        "accuracy_drop": drop,
        "enough_labels": enough,
        "thresholds": {"accuracy_drop": accuracy_drop, "min_labelled": min_labelled},
        "decayed": bool(enough and drop is not None and drop >= accuracy_drop),
        "windows": windows,
    }


def windows_frame(report: dict):
    """Decay windows as a flat table (one row per window; recall_<class> columns) for charts."""
    import pandas as pd

    rows = []
    for w in report.get("windows", []):
        row = {"window_start": w["window_start"], "n_labelled": w["n_labelled"], "accuracy": w["accuracy"], "ece": w["ece"]}
        for cls, r in (w.get("recall") or {}).items():
            row[f"recall_{cls}"] = r
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True)
    return frame
