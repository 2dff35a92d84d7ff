"""Cached reads behind the Monitoring and Overview screens.

Both screens summarise what piles up over time (captured traffic, ground truth, monitoring
executions, model artifacts). Reading it is the slow part, so each read lives in a small
per-process cache: listings and capture aggregates for a few seconds (a burst of reruns reads
the bucket once), immutable things (an execution's report, a version's metrics.json) for longer.
Only aggregates are kept (per-window counts, a few columns), never whole capture files, so the
memory used stays small however long the history. Mutations on the screens call ``clear()``.

A plain dict, not ``st.cache_data``: nothing gets pickled, and values are shared by reference,
so callers treat returned frames and dicts as read-only.
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pandas as pd
import streamlit as st

from dashboard.state import config

LISTING_TTL = 5.0  # executions, schedules, policies, notifications
TRAFFIC_TTL = 600.0  # capture + ground-truth aggregates (the expensive read); re-read sooner when the fingerprint moves
ARTIFACT_TTL = 3600.0  # execution reports and version metrics never change once written
MAX_ENTRIES = 256
MAX_EXECUTIONS = 500  # per endpoint, for the over-time charts


class TTLCache:
    """A bounded map of key -> (expiry, value); the least recently used entry goes first."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._data: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, ttl: float, load: Callable[[], Any], version: Any = None) -> Any:
        """The cached value while it is younger than ``ttl`` and was loaded at the same ``version``
        (a cheap fingerprint of its sources), else ``load()``."""
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and hit[0] > now and hit[1] == version:
                self._data.move_to_end(key)
                return hit[2]
        value = load()  # outside the lock: one slow read must not block other sessions
        with self._lock:
            self._data[key] = (time.monotonic() + ttl, version, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return value

    def clear(self, kind: str | None = None) -> None:
        with self._lock:
            if kind is None:
                self._data.clear()
            else:
                for key in [k for k in self._data if k[1] == kind]:
                    del self._data[key]


@st.cache_resource(show_spinner=False)
def _cache() -> TTLCache:
    return TTLCache()


def _scope() -> tuple:
    cfg = config()
    return (cfg.backend, str(cfg.home), cfg.project, cfg.bucket)


def _cached(kind: str, args: tuple, ttl: float, load: Callable[[], Any], version: Any = None) -> Any:
    return _cache().get((_scope(), kind, *args), ttl, load, version)


def clear(kind: str | None = None) -> None:
    """Forget cached reads (all, or one kind: executions, traffic, policy, schedules, ...)."""
    _cache().clear(kind)


@st.cache_resource(show_spinner=False, max_entries=8)
def _open_store(scope: tuple):
    from qcbr.storage import open_store

    return open_store(config())


def store():
    """The project's object store (the bucket the monitoring files live in)."""
    return _open_store(_scope())


def home():
    return config().home


# ------------------------------------------------------------------------------ monitoring
def executions(endpoint: str, limit: int = MAX_EXECUTIONS) -> list[dict]:
    """Finished executions of ``endpoint``, newest first."""
    from qcbr.monitoring.job import list_executions

    return _cached("executions", (endpoint, limit), LISTING_TTL, lambda: list_executions(store(), endpoint, limit))


def latest_by_endpoint(endpoints: tuple[str, ...]) -> list[dict]:
    from qcbr.monitoring.job import latest_by_endpoint as latest

    return _cached("executions", ("latest", endpoints), LISTING_TTL, lambda: latest(store(), list(endpoints)))


def execution_details(endpoint: str, execution_id: str) -> dict:
    """{execution, report, violations} of one finished execution (immutable once written)."""
    from qcbr.monitoring.job import load_execution

    return _cached("execution", (endpoint, execution_id), ARTIFACT_TTL,
                   lambda: load_execution(store(), endpoint, execution_id))


def policy(endpoint: str) -> dict:
    from qcbr.monitoring.policy import get_policy

    return _cached("policy", (endpoint,), LISTING_TTL, lambda: get_policy(store(), endpoint))


def policy_history(endpoint: str, limit: int = 100) -> list[dict]:
    from qcbr.monitoring.policy import policy_history as history

    return _cached("policy", ("history", endpoint, limit), LISTING_TTL, lambda: history(store(), endpoint, limit))


def notifications(endpoint: str | None = None, limit: int = 50) -> list[dict]:
    from qcbr.monitoring.notifications import read_notifications

    return _cached("notifications", (endpoint, limit), LISTING_TTL,
                   lambda: read_notifications(home(), limit=limit, endpoint=endpoint))


def schedules() -> tuple[dict, dict]:
    """(schedules by endpoint, the scheduler's last run per endpoint)."""
    from qcbr.monitoring.scheduler import load_schedules, load_state

    return _cached("schedules", (), LISTING_TTL, lambda: (load_schedules(home()), load_state(home())))


# ------------------------------------------------------------------------------- traffic
def _since(days: int | None) -> datetime | None:
    return None if not days else datetime.now(timezone.utc) - timedelta(days=days)


def _fingerprint(endpoint: str) -> tuple:
    """What changed lately: the capture and ground-truth objects of today and yesterday (UTC) with
    their sizes where the store tells them. New traffic and new labels land there (capture in the
    hour it is served, ground truth in the hour it is given), so a cached read whose fingerprint
    still matches is the state on disk, without reading the whole history again."""
    s = store()
    sized = hasattr(s, "path")
    today = datetime.now(timezone.utc)
    out = []
    for day in (today - timedelta(days=1), today):
        stamp = day.strftime("%Y/%m/%d")
        for prefix in (f"capture/{endpoint}/AllTraffic/{stamp}/", f"ground-truth/{stamp}/"):
            for key in s.list(prefix):
                try:
                    size = s.path(key).stat().st_size if sized else None
                except FileNotFoundError:
                    continue
                out.append((key, size))
    return tuple(out)


def _read_traffic(endpoint: str, days: int | None, fingerprint: tuple) -> dict:
    from qcbr.monitoring.capture import join_ground_truth, read_capture, read_ground_truth

    since = _since(days)
    capture = read_capture(store(), endpoint, since)
    outputs = capture.outputs
    truth = read_ground_truth(store(), since)
    labelled = join_ground_truth(outputs, truth)
    # keep the few columns the screens aggregate, not the captured payloads
    predictions = outputs[["time", "confidence", "flagged", "model_version"]].reset_index(drop=True)
    labelled = labelled[["time", "predicted", "actual", "confidence", "correct"]].reset_index(drop=True)
    return {
        "since": since,
        "predictions": predictions,
        "labelled": labelled,
        "summary": {
            "predictions": int(len(predictions)),
            "flagged": int(predictions["flagged"].fillna(False).astype(bool).sum()) if len(predictions) else 0,
            "labelled": int(len(labelled)),
            "accuracy": float(labelled["correct"].astype(bool).mean()) if len(labelled) else None,
        },
        "daily": _daily(predictions, labelled),
        "n_unreadable": capture.n_unreadable,
        "fingerprint": fingerprint,
        "read_at": datetime.now(timezone.utc),
    }


def _daily(p: pd.DataFrame, lab: pd.DataFrame) -> pd.DataFrame:
    per_day = pd.DataFrame({"predictions": p.groupby(p["time"].dt.floor("D")).size()}) if len(p) else pd.DataFrame(
        {"predictions": pd.Series(dtype=int)})
    if len(lab):
        g = lab.groupby(pd.to_datetime(lab["time"], utc=True).dt.floor("D"))
        per_day = per_day.join(pd.DataFrame({"labelled": g.size(), "correct": g["correct"].sum()}), how="outer")
    else:
        per_day["labelled"], per_day["correct"] = 0, 0
    per_day = per_day.fillna(0).astype(int)
    per_day.index.name = "day"
    return per_day.reset_index()


def traffic(endpoint: str, days: int | None = 30) -> dict:
    """Captured predictions and their ground truth for the last ``days`` days (None: all):
    ``{since, predictions (time, confidence, flagged, model_version), labelled (time, predicted,
    actual, confidence, correct), summary {predictions, flagged, labelled, accuracy}, daily
    (day, predictions, labelled, correct), n_unreadable, fingerprint, read_at}``. Re-read when
    today's capture or ground truth changed (see ``_fingerprint``)."""
    fingerprint = _fingerprint(endpoint)
    return _cached("traffic", (endpoint, days), TRAFFIC_TTL, lambda: _read_traffic(endpoint, days, fingerprint),
                   version=fingerprint)


# ----------------------------------------------------------------------------------- ROI
def assumptions(project: str) -> dict:
    from qcbr.monitoring.roi import get_assumptions

    return _cached("roi", ("assumptions", project), LISTING_TTL, lambda: get_assumptions(store(), project))


def assumptions_audit(project: str, limit: int = 200) -> list[dict]:
    from qcbr.monitoring.roi import assumptions_audit as audit

    return _cached("roi", ("audit", project, limit), LISTING_TTL, lambda: audit(store(), project, limit))


def _assumptions_key(a: dict) -> str:
    from qcbr.monitoring.roi import DEFAULT_ASSUMPTIONS

    return json.dumps({k: a.get(k) for k in DEFAULT_ASSUMPTIONS}, sort_keys=True, default=str)


def _clip(intervals: list[tuple], since: datetime | None) -> list[tuple]:
    if since is None:
        return intervals
    return [(max(s, since), e) for s, e in intervals if e > since]


def production(endpoint_record: dict, days: int | None, freq: str, assumed: dict) -> pd.DataFrame:
    """``roi.production_roi`` of one endpoint over the last ``days`` days, per ``freq`` window."""
    from qcbr.monitoring.roi import endpoint_uptime, production_roi

    name = endpoint_record["EndpointName"]

    t = traffic(name, days)

    def load() -> pd.DataFrame:
        uptime = _clip(endpoint_uptime(endpoint_record), t["since"])
        return production_roi(t["predictions"], t["labelled"], uptime, assumed, freq=freq)

    key = (name, endpoint_record.get("CreationTime"), days, freq, _assumptions_key(assumed))
    # uptime grows with the clock: a minute's staleness is fine, a new read of the traffic is not
    return _cached("traffic", ("production", *key), 60.0, load, version=t["read_at"])


def version_metrics(version_record: dict) -> dict | None:
    """A version's metrics.json (with its validation confusion matrix), None when unreadable."""
    from qcbr.errors import QCBRError
    from qcbr.monitoring.roi import version_metrics as read

    def load() -> dict | None:
        try:
            return read(store(), version_record)
        except QCBRError:
            return None

    return _cached("artifact", ("metrics", version_record.get("ModelDataUrl")), ARTIFACT_TTL, load)


def compare_versions(version_records: list[dict], assumed: dict, horizon_months: int = 12) -> pd.DataFrame:
    """``roi.compare_versions`` over registered versions (their metrics read from the artifacts)."""
    from qcbr.monitoring.roi import compare_versions as compare

    def load() -> pd.DataFrame:
        rows = [{"version": v["ModelPackageVersion"], "metrics": version_metrics(v) or {}} for v in version_records]
        frame = compare(rows, assumed, horizon_months)
        status = {v["ModelPackageVersion"]: v.get("ModelApprovalStatus") for v in version_records}
        if len(frame):
            frame.insert(1, "status", frame["version"].map(status))
        return frame

    key = (tuple((v["ModelPackageVersion"], v.get("ModelDataUrl"), v.get("ModelApprovalStatus")) for v in version_records),
           _assumptions_key(assumed), horizon_months)
    return _cached("roi", ("compare", *key), LISTING_TTL, load)


def error_pairs(version_records: list[dict]) -> list[str]:
    """"truth->predicted" for every kind of error some version can make, each version's classes apart.

    The ROI assumptions are per project and may cover several models; pairing one model's class
    with another's ("no->setosa") names an error no model can make.
    """
    pairs: dict[str, None] = {}
    for v in version_records:
        classes = sorted({str(c) for c in ((v.get("FeatureSchema") or {}).get("classes") or [])})
        pairs.update((f"{t}->{p}", None) for t in classes for p in classes if t != p)
    return list(pairs)
