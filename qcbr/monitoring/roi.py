"""Return on investment, from business assumptions that managers edit and everyone can read.

The numbers are only as good as the assumptions, so they are stored and shown as such: each
project has one assumptions document (``roi/<project>/assumptions.json`` in the bucket) and every
change leaves an audit object (who, role, when, field, old -> new) under ``roi/<project>/audit/``.

Value model: a correct prediction is worth ``value_correct`` (or ``value_correct_by_class[c]``);
predicting ``p`` for a case whose truth is ``t`` costs ``error_costs["t->p"]`` (else
``default_error_cost``). Hosting costs ``hourly_price * instance_count`` per hour of uptime
(730 h a month); training is a one-off ``training_cost``.

- ``version_roi``: expected monthly value of a model version from its validation confusion
  matrix (``metrics.json``: ``labels`` and ``validation:confusion_matrix``, rows = truth), at the
  assumed monthly volume; ROI over a horizon; break-even month and volume.
- ``production_roi``: realised value per time window from ground truth (labelled predictions),
  extrapolated to all predictions of the window, minus hosting over the endpoint's uptime and
  the training cost; cumulative net and the break-even time.

Everything here is a pure function returning dicts or DataFrames, except the assumptions store.
"""
from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np

from qcbr.errors import NotFoundError, QCBRError
from qcbr.roles import Actor, require

HOURS_PER_MONTH = 730.0
PREFIX = "roi"
DEFAULT_ASSUMPTIONS: dict[str, Any] = {
    "currency": "EUR",
    "value_correct": 10.0,
    "value_correct_by_class": {},
    "default_error_cost": 25.0,
    "error_costs": {},  # "truth->predicted": cost
    "monthly_volume": 10_000,
    "instance_type": "ml.m5.large",
    "hourly_price": 0.115,
    "instance_count": 1,
    "training_cost": 50.0,
}
_MONEY = ("value_correct", "default_error_cost", "hourly_price", "training_cost")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _number(name: str, value: Any, integer: bool = False, minimum: float = 0.0) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QCBRError(f"ROI assumption {name!r} must be a number, got {value!r}")
    if value < minimum:
        raise QCBRError(f"ROI assumption {name!r} must be >= {minimum:g}, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise QCBRError(f"ROI assumption {name!r} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def validate_assumptions(assumptions: dict) -> dict:
    """A complete, checked assumptions document; QCBRError names the field to fix."""
    if not isinstance(assumptions, dict):
        raise QCBRError("ROI assumptions must be an object of field -> value")
    unknown = set(assumptions) - set(DEFAULT_ASSUMPTIONS) - {"updated_by", "updated_at", "project", "is_assumption"}
    if unknown:
        raise QCBRError(f"unknown ROI assumptions {sorted(unknown)}; known: {sorted(DEFAULT_ASSUMPTIONS)}")
    out = {**DEFAULT_ASSUMPTIONS, **{k: v for k, v in assumptions.items() if k in DEFAULT_ASSUMPTIONS}}
    for name in _MONEY:
        out[name] = _number(name, out[name])
    out["monthly_volume"] = _number("monthly_volume", out["monthly_volume"], integer=True)
    out["instance_count"] = _number("instance_count", out["instance_count"], integer=True, minimum=1)
    for name in ("currency", "instance_type"):
        if not isinstance(out[name], str) or not out[name].strip():
            raise QCBRError(f"ROI assumption {name!r} must be a non-empty text")
    costs = out["error_costs"]
    if not isinstance(costs, dict):
        raise QCBRError('ROI assumption "error_costs" must map "truth->predicted" to a cost')
    clean = {}
    for pair, cost in costs.items():
        truth, sep, pred = str(pair).partition("->")
        if not sep or not truth.strip() or not pred.strip() or truth.strip() == pred.strip():
            raise QCBRError(f'error cost key {pair!r} must read "truth->predicted" with two different classes, e.g. "churn->stay"')
        clean[f"{truth.strip()}->{pred.strip()}"] = _number(f"error_costs[{pair}]", cost)
    out["error_costs"] = clean
    by_class = out["value_correct_by_class"]
    if not isinstance(by_class, dict):
        raise QCBRError('ROI assumption "value_correct_by_class" must map a class to a value')
    out["value_correct_by_class"] = {str(k): _number(f"value_correct_by_class[{k}]", v) for k, v in by_class.items()}
    return out


# -- assumptions store -----------------------------------------------------------------------------

def _key(project: str) -> str:
    return f"{PREFIX}/{project}/assumptions.json"


def get_assumptions(store, project: str) -> dict:
    """The project's assumptions (defaults until a manager edits them); ``is_assumption`` is always True."""
    try:
        stored = json.loads(store.get(_key(project)))
    except NotFoundError:
        return {**DEFAULT_ASSUMPTIONS, "project": project, "updated_by": None, "updated_at": None, "is_assumption": True}
    return {**validate_assumptions(stored), "project": project, "updated_by": stored.get("updated_by"),
            "updated_at": stored.get("updated_at"), "is_assumption": True}


def update_assumptions(actor: Actor, store, project: str, changes: dict) -> dict:
    """Change some assumptions (managers only); one audit entry per changed field."""
    require(actor, "edit_roi")
    old = get_assumptions(store, project)
    current = {k: old[k] for k in DEFAULT_ASSUMPTIONS}
    new = validate_assumptions({**current, **changes})
    when = _now()
    diffs = [(k, current[k], new[k]) for k in DEFAULT_ASSUMPTIONS if current[k] != new[k]]
    if not diffs:
        return old
    doc = {**new, "updated_by": actor.name, "updated_at": when}
    store.put(_key(project), json.dumps(doc, indent=2, sort_keys=True).encode())
    stamp = datetime.fromisoformat(when).strftime("%Y-%m-%dT%H-%M-%S-%fZ")
    for field_name, before, after in diffs:
        entry = {"who": actor.name, "role": actor.role, "when": when, "field": field_name, "old": before, "new": after}
        store.put(f"{PREFIX}/{project}/audit/{stamp}-{uuid.uuid4().hex[:8]}.json", json.dumps(entry, sort_keys=True).encode())
    return {**doc, "project": project, "is_assumption": True}


def assumptions_audit(store, project: str, limit: int | None = None) -> list[dict]:
    """Changes to the assumptions, newest first."""
    out = []
    for key in sorted(store.list(f"{PREFIX}/{project}/audit/"), reverse=True):
        try:
            out.append(json.loads(store.get(key)))
        except (ValueError, NotFoundError):
            continue
        if limit is not None and len(out) >= limit:
            break
    return out


# -- value of outcomes -----------------------------------------------------------------------------

def outcome_value(assumptions: dict, truth: Any, predicted: Any) -> float:
    t, p = str(truth), str(predicted)
    if t == p:
        return float(assumptions.get("value_correct_by_class", {}).get(t, assumptions["value_correct"]))
    return -float(assumptions.get("error_costs", {}).get(f"{t}->{p}", assumptions["default_error_cost"]))


def value_matrix(labels: list, assumptions: dict) -> np.ndarray:
    """Value of each (truth row, predicted column) outcome."""
    return np.array([[outcome_value(assumptions, t, p) for p in labels] for t in labels], dtype=float)


def monthly_hosting_cost(assumptions: dict) -> float:
    return float(assumptions["hourly_price"]) * int(assumptions["instance_count"]) * HOURS_PER_MONTH


def version_roi(metrics: dict, assumptions: dict, horizon_months: int = 12, version: Any = None) -> dict:
    """Expected ROI of a model version from its validation confusion matrix (see module notes)."""
    a = validate_assumptions({k: v for k, v in assumptions.items() if k in DEFAULT_ASSUMPTIONS})
    labels = [str(x) for x in metrics.get("labels") or []]
    matrix = np.asarray(metrics.get("validation:confusion_matrix") or [], dtype=float)
    if not labels or matrix.shape != (len(labels), len(labels)) or matrix.sum() <= 0:
        raise QCBRError(
            f"model version {version if version is not None else ''} has no usable validation confusion matrix "
            "(metrics.json needs 'labels' and a square 'validation:confusion_matrix'); retrain with validation_fraction > 0"
        )
    joint = matrix / matrix.sum()
    values = value_matrix(labels, a)
    per_prediction = float(np.sum(joint * values))
    benefit = per_prediction * a["monthly_volume"]
    hosting = monthly_hosting_cost(a)
    net = benefit - hosting
    cost = hosting * horizon_months + a["training_cost"]
    gain = benefit * horizon_months
    error_cost = float(-np.sum(joint * np.minimum(values, 0)) * a["monthly_volume"])
    return {
        "version": version,
        "currency": a["currency"],
        "accuracy": float(np.trace(joint)),
        "value_per_prediction": per_prediction,
        "monthly_value": benefit,
        "monthly_error_cost": error_cost,
        "monthly_hosting_cost": hosting,
        "monthly_net": net,
        "horizon_months": horizon_months,
        "horizon_net": gain - cost,
        "roi": (gain - cost) / cost if cost > 0 else None,
        "break_even_months": (a["training_cost"] / net) if net > 0 else None,
        "break_even_monthly_volume": (hosting / per_prediction) if per_prediction > 0 else None,
        "is_estimate": True,
    }


def compare_versions(versions: Iterable[dict], assumptions: dict, horizon_months: int = 12):
    """One row per version ({"version", "metrics"} each); versions without a matrix get a note."""
    import pandas as pd

    rows = []
    for v in versions:
        try:
            rows.append(version_roi(v.get("metrics") or {}, assumptions, horizon_months, v.get("version")))
        except QCBRError as exc:
            rows.append({"version": v.get("version"), "note": str(exc)})
    return pd.DataFrame(rows)


def cumulative_value_curve(roi: dict, training_cost: float, months: int = 24):
    """Cumulative net by month (month 0 = the training cost) for a break-even chart."""
    import pandas as pd

    month = np.arange(months + 1)
    return pd.DataFrame({"month": month, "cumulative_net": -float(training_cost) + roi["monthly_net"] * month})


# -- production ------------------------------------------------------------------------------------

def _overlap_hours(start, end, intervals) -> float:
    total = 0.0
    for a, b in intervals:
        lo, hi = max(start, a), min(end, b)
        if hi > lo:
            total += (hi - lo).total_seconds() / 3600.0
    return total


def production_roi(predictions, labelled, uptime: list[tuple[Any, Any]], assumptions: dict, freq: str = "D",
                   include_training: bool = True):
    """ROI over time in production, one row per window.

    ``predictions``: DataFrame with a ``time`` column (every prediction served); ``labelled``:
    DataFrame with ``time``, ``predicted``, ``actual`` (``capture.join_ground_truth``);
    ``uptime``: (start, end) intervals the endpoint ran. The realised value of labelled
    predictions is extrapolated to the window's unlabelled ones at the same mean value per
    prediction (``estimated_value``). Columns: window_start, predictions, labelled, accuracy,
    realised_value, estimated_value, hosting_cost, training_cost, net, cumulative_net, roi.
    """
    import pandas as pd

    a = validate_assumptions({k: v for k, v in assumptions.items() if k in DEFAULT_ASSUMPTIONS})
    cols = ["window_start", "predictions", "labelled", "accuracy", "realised_value", "estimated_value", "hosting_cost",
            "training_cost", "net", "cumulative_net", "roi"]
    times = pd.to_datetime(predictions["time"], utc=True) if len(predictions) else pd.Series([], dtype="datetime64[ns, UTC]")
    intervals = [(pd.Timestamp(s).tz_convert("UTC") if pd.Timestamp(s).tzinfo else pd.Timestamp(s).tz_localize("UTC"),
                  pd.Timestamp(e).tz_convert("UTC") if pd.Timestamp(e).tzinfo else pd.Timestamp(e).tz_localize("UTC"))
                 for s, e in uptime]
    starts = [t for t in list(times) + [s for s, _ in intervals]]
    if not starts:
        return pd.DataFrame(columns=cols)
    first = min(starts).floor(freq)
    last = max(list(times) + [e - pd.Timedelta(microseconds=1) for _, e in intervals]).floor(freq)  # ends are exclusive
    windows = pd.date_range(first, last, freq=freq)
    step = pd.tseries.frequencies.to_offset(freq)
    lab = labelled.copy() if len(labelled) else pd.DataFrame(columns=["time", "predicted", "actual"])
    if len(lab):
        lab["time"] = pd.to_datetime(lab["time"], utc=True)
        lab["value"] = [outcome_value(a, t, p) for t, p in zip(lab["actual"], lab["predicted"])]
    rows = []
    hourly = a["hourly_price"] * a["instance_count"]
    for i, start in enumerate(windows):
        end = start + step
        n_pred = int(((times >= start) & (times < end)).sum())
        in_w = lab[(lab["time"] >= start) & (lab["time"] < end)] if len(lab) else lab
        n_lab = int(len(in_w))
        realised = float(in_w["value"].sum()) if n_lab else 0.0
        estimated = realised / n_lab * n_pred if n_lab else None
        hosting = _overlap_hours(start, end, intervals) * hourly
        training = a["training_cost"] if (include_training and i == 0) else 0.0
        value = estimated if estimated is not None else realised
        net = value - hosting - training
        cost = hosting + training
        rows.append({"window_start": start, "predictions": n_pred, "labelled": n_lab,
                     "accuracy": float((in_w["actual"].astype(str) == in_w["predicted"].astype(str)).mean()) if n_lab else None,
                     "realised_value": realised, "estimated_value": estimated, "hosting_cost": hosting,
                     "training_cost": training, "net": net, "roi": (value - cost) / cost if cost > 0 else None})
    frame = pd.DataFrame(rows, columns=[c for c in cols if c != "cumulative_net"])
    frame["cumulative_net"] = frame["net"].cumsum()
    return frame[cols]


def break_even(frame) -> Any:
    """The first window whose cumulative net is >= 0 after having been negative, else None."""
    if frame is None or len(frame) == 0:
        return None
    below = False
    for start, value in zip(frame["window_start"], frame["cumulative_net"]):
        if value < 0:
            below = True
        elif below:
            return start
    return None if below else frame["window_start"].iloc[0]


def roi_summary(frame, assumptions: dict) -> dict:
    """Totals for the Overview's KPIs."""
    if frame is None or len(frame) == 0:
        return {"predictions": 0, "labelled": 0, "accuracy": None, "value": 0.0, "cost": 0.0, "net": 0.0, "roi": None,
                "break_even": None, "currency": assumptions.get("currency", "EUR"), "is_estimate": True}
    value = float(frame["estimated_value"].fillna(frame["realised_value"]).sum())
    cost = float(frame["hosting_cost"].sum() + frame["training_cost"].sum())
    labelled = int(frame["labelled"].sum())
    correct = float((frame["accuracy"].fillna(0) * frame["labelled"]).sum())
    be = break_even(frame)
    return {"predictions": int(frame["predictions"].sum()), "labelled": labelled,
            "accuracy": correct / labelled if labelled else None, "value": value, "cost": cost, "net": value - cost,
            "roi": (value - cost) / cost if cost > 0 else None, "break_even": be.isoformat() if be is not None else None,
            "currency": assumptions.get("currency", "EUR"), "is_estimate": True}


def kpi_deltas(frame, assumptions: dict, period_days: int = 7, now: Any = None) -> dict:
    """The Overview's KPIs for the last ``period_days`` and their change against the period before:
    ``{"current": roi_summary, "previous": roi_summary, "delta": {kpi: current - previous}}``."""
    import pandas as pd

    if frame is None or len(frame) == 0:
        empty = roi_summary(frame, assumptions)
        return {"current": empty, "previous": empty, "delta": {}}
    starts = pd.to_datetime(frame["window_start"], utc=True)
    end = pd.Timestamp(now).tz_convert("UTC") if now is not None and pd.Timestamp(now).tzinfo else (
        pd.Timestamp(now).tz_localize("UTC") if now is not None else starts.max() + pd.Timedelta(days=1))
    span = pd.Timedelta(days=period_days)
    cur = frame[(starts >= end - span) & (starts < end)]
    prev = frame[(starts >= end - 2 * span) & (starts < end - span)]
    a, b = roi_summary(cur, assumptions), roi_summary(prev, assumptions)
    delta = {k: (a[k] - b[k]) if isinstance(a[k], (int, float)) and isinstance(b[k], (int, float)) and not isinstance(a[k], bool)
             else None for k in ("predictions", "labelled", "accuracy", "value", "cost", "net", "roi")}
    return {"current": a, "previous": b, "delta": delta}


def endpoint_uptime(endpoint_record: dict, now: datetime | None = None) -> list[tuple[datetime, datetime]]:
    """Uptime intervals of an endpoint from its record: creation until now while it exists."""
    created = endpoint_record.get("CreationTime")
    if not created:
        return []
    start = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    end = now or datetime.now(timezone.utc)
    return [(start, end)] if end > start else []


def version_metrics(store, version_record: dict) -> dict:
    """The ``metrics.json`` of a model version (its confusion matrix included), read from the
    version's model.tar.gz through the object store (the registry keeps only scalar metrics)."""
    import io
    import tarfile

    from qcbr.monitoring.job import _store_for
    from qcbr.storage import parse_s3_uri

    url = version_record.get("ModelDataUrl")
    if not url:
        raise QCBRError(f"model version {version_record.get('ModelPackageVersion')} has no ModelDataUrl")
    bucket, key = parse_s3_uri(url)
    try:
        data = _store_for(store, bucket).get(key)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.split("/")[-1] == "metrics.json":
                    fh = tar.extractfile(member)
                    if fh is not None:
                        return json.loads(fh.read())
    except (tarfile.TarError, ValueError, NotFoundError) as exc:
        raise QCBRError(f"cannot read metrics.json from {url}: {exc}") from None
    raise QCBRError(f"{url} holds no metrics.json; retrain this version with the current qcbr")


def production_inputs(store, endpoint: str, since: Any = None) -> tuple[Any, Any]:
    """(every captured prediction with its time, the labelled ones) of ``endpoint`` since ``since``."""
    from qcbr.monitoring.capture import join_ground_truth, read_capture, read_ground_truth

    capture = read_capture(store, endpoint, since)
    truth = read_ground_truth(store, since)
    return capture.outputs, join_ground_truth(capture.outputs, truth)
