"""Reading what the endpoint saw: data-capture files and ground truth, from any object store.

Data capture follows SageMaker's JSONL layout, ``capture/<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl``,
one record per request::

    {"captureData": {"endpointInput":  {"observedContentType", "mode": "INPUT",  "data", "encoding"},
                     "endpointOutput": {"observedContentType", "mode": "OUTPUT", "data", "encoding"}},
     "eventMetadata": {"eventId", "inferenceId", "inferenceTime"}, "eventVersion": "0"}

``encoding`` is JSON, CSV or BASE64. A request may carry several instances; each becomes one row.
Ground truth is SageMaker's ``groundTruthData`` record under ``ground-truth/yyyy/mm/dd/hh/``, its
``eventMetadata.eventId`` naming the prediction's inference id.

Everything goes through ``qcbr.storage`` object stores, so the same code reads the local bucket and S3.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from qcbr.errors import QCBRError
from qcbr.monitoring.values import canon_label

_HOUR_PATH = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]+$")
MAX_ERRORS_KEPT = 20


def parse_time(value: Any, what: str = "time") -> datetime:
    """A timezone-aware UTC datetime from ISO-8601 text or a datetime (naive means UTC)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise QCBRError(
                f"{what} {value!r} is not an ISO-8601 time; write it like 2024-05-01T12:00:00Z or 2024-05-01"
            ) from None
    else:
        raise QCBRError(f"{what} must be an ISO-8601 string or a datetime, got {type(value).__name__}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def key_hour(key: str) -> datetime | None:
    """The hour a yyyy/mm/dd/hh/<file> key was written in (UTC), or None for other keys."""
    m = _HOUR_PATH.search(key)
    if not m:
        return None
    try:
        return datetime(*map(int, m.groups()), tzinfo=timezone.utc)
    except ValueError:
        return None


def _in_hours(keys: Iterable[str], since: datetime | None, until: datetime | None) -> list[str]:
    out = []
    for key in keys:
        hour = key_hour(key)
        if hour is None:
            continue
        if since is not None and hour + timedelta(hours=1) <= since:
            continue
        if until is not None and hour > until:
            continue
        out.append(key)
    return sorted(out)


def capture_keys(store, endpoint: str, since: datetime | None = None, until: datetime | None = None) -> list[str]:
    """Capture files of ``endpoint`` (every variant) whose hour overlaps [since, until]."""
    return [k for k in _in_hours(store.list(f"capture/{endpoint}/"), since, until) if k.endswith(".jsonl")]


def decode_payload(part: dict) -> tuple[str, str]:
    """(content type, text) of a captureData.endpointInput/endpointOutput."""
    if not isinstance(part, dict) or "data" not in part:
        raise ValueError("capture part has no 'data'")
    data = part["data"]
    encoding = str(part.get("encoding", "JSON")).upper()
    ctype = str(part.get("observedContentType") or ("text/csv" if encoding == "CSV" else "application/json"))
    if encoding == "BASE64":
        text = base64.b64decode(data).decode("utf-8")
    elif isinstance(data, str):
        text = data
    else:  # some writers inline the JSON value
        text = json.dumps(data)
    return ctype.split(";")[0].strip().lower(), text


def parse_instances(text: str, content_type: str, feature_order: list[str] | None) -> list[dict]:
    """The request's instances as {feature: raw value} dicts (values as sent: text for CSV)."""
    if "csv" in content_type:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        first = [c.strip() for c in rows[0]] if rows else []
        if len(rows) > 1 and feature_order and set(first) <= set(feature_order):
            header, rows = first, rows[1:]  # an optional header row of feature names
        else:
            header = list(feature_order or [])
        return [_list_row(r, header) for r in rows]
    body = json.loads(text)
    if isinstance(body, dict) and "instances" in body:
        items = body["instances"]
    elif isinstance(body, dict) and "inputs" in body:
        items = body["inputs"]
    elif isinstance(body, list):
        items = body
    else:
        items = [body]
    if not isinstance(items, list):
        raise ValueError("'instances' is not a list")
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(dict(item))
        elif isinstance(item, list):
            out.append(_list_row(item, list(feature_order or [])))
        else:
            raise ValueError(f"an instance is neither an object nor a list: {str(item)[:40]!r}")
    return out


def _list_row(values: list, header: list[str]) -> dict:
    # without a feature order (callers that need only the outputs), values keep positional names
    row = {name: (values[i] if i < len(values) else None) for i, name in enumerate(header)}
    for j in range(len(header), len(values)):
        row[f"_col{j}"] = values[j]
    return row


def parse_predictions(text: str) -> tuple[list[dict], Any]:
    """(prediction rows, model_version) from the endpoint's response body."""
    body = json.loads(text)
    if isinstance(body, dict) and isinstance(body.get("predictions"), list):
        return body["predictions"], body.get("model_version")
    if isinstance(body, list):
        return body, None
    raise ValueError("response has no 'predictions' list")


def _best_similarity(pred: dict) -> float | None:
    cases = pred.get("similar_cases") if isinstance(pred, dict) else None
    scores = [c.get("score") for c in cases or [] if isinstance(c, dict) and isinstance(c.get("score"), (int, float))]
    return float(max(scores)) if scores else None


@dataclass
class CaptureData:
    """Captured traffic of one window: ``inputs`` (raw feature values, one row per instance) and
    ``outputs`` (the matching prediction fields, same index)."""

    inputs: Any  # DataFrame
    outputs: Any  # DataFrame
    n_records: int = 0
    n_unreadable: int = 0
    errors: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return int(len(self.inputs))


OUTPUT_COLUMNS = [
    "inference_id", "request_id", "event_id", "time", "model_version", "label", "confidence",
    "flagged", "best_similarity", "top_case_id", "probabilities",
]


def row_inference_id(pred: dict, request_id: str, i: int, n: int) -> str:
    """One id per predicted row: the row's own ``inference_id`` when the response has one, the
    request's for single-instance requests, else ``<request>-<i>``."""
    if isinstance(pred, dict) and pred.get("inference_id"):
        return str(pred["inference_id"])
    return request_id if n == 1 else f"{request_id}-{i}"


def parse_capture_record(record: dict, feature_order: list[str] | None) -> tuple[list[dict], list[dict]]:
    """(input rows, output rows) of one capture record; raises ValueError when unreadable."""
    if not isinstance(record, dict) or "captureData" not in record:
        raise ValueError("not a capture record (no captureData)")
    cap = record["captureData"]
    meta = record.get("eventMetadata") or {}
    when = parse_time(meta.get("inferenceTime"), "inferenceTime") if meta.get("inferenceTime") else None
    ctype, text = decode_payload(cap.get("endpointInput"))
    inputs = parse_instances(text, ctype, feature_order)
    preds: list[dict] = []
    version = None
    if cap.get("endpointOutput") is not None:
        _, out_text = decode_payload(cap["endpointOutput"])
        preds, version = parse_predictions(out_text)
        if len(preds) != len(inputs):
            raise ValueError(f"{len(inputs)} instances but {len(preds)} predictions")
    request_id = str(meta.get("inferenceId") or meta.get("eventId") or "")
    outputs = []
    for i in range(len(inputs)):
        pred = preds[i] if i < len(preds) else {}
        top = (pred.get("similar_cases") or [{}])[0] if isinstance(pred, dict) and pred.get("similar_cases") else {}
        conf = pred.get("confidence") if isinstance(pred, dict) else None
        outputs.append({
            "inference_id": row_inference_id(pred, request_id, i, len(inputs)),
            "request_id": request_id,
            "event_id": str(meta.get("eventId") or ""),
            "time": when,
            "model_version": version,
            "label": canon_label(pred.get("label")) if isinstance(pred, dict) else None,
            "confidence": float(conf) if isinstance(conf, (int, float)) else None,
            "flagged": pred.get("flagged") if isinstance(pred, dict) else None,
            "best_similarity": _best_similarity(pred),
            "top_case_id": top.get("case_id") if isinstance(top, dict) else None,
            "probabilities": pred.get("probabilities") if isinstance(pred, dict) else None,
        })
    return inputs, outputs


def complete_lines(data: bytes) -> bytes:
    """``data`` without a torn last line.

    A last line without a newline is either torn (being written right now, or its writer was
    killed mid-write) or complete: SageMaker's capture files need not end with a newline. A record
    is one JSON object, and no proper prefix of one parses, so the last line is kept exactly when
    it parses as a JSON object.
    """
    end = data.rfind(b"\n") + 1
    tail = data[end:]
    if not tail.strip():
        return data
    try:
        whole = isinstance(json.loads(tail), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        whole = False
    return data + b"\n" if whole else data[:end]


def read_capture(store, endpoint: str, since: Any = None, until: Any = None,
                 feature_order: list[str] | None = None, progress=None) -> CaptureData:
    """Every captured instance of ``endpoint`` with inferenceTime in [since, until).

    Unreadable lines are counted and described (file:line: why), not fatal; the caller decides
    whether what is left suffices.
    """
    import pandas as pd

    since_dt = parse_time(since, "since") if since is not None else None
    until_dt = parse_time(until, "until") if until is not None else None
    keys = capture_keys(store, endpoint, since_dt, until_dt)
    in_rows: list[dict] = []
    out_rows: list[dict] = []
    errors: list[str] = []
    n_records = n_bad = 0
    for k_i, key in enumerate(keys):
        if progress:
            progress(k_i / max(len(keys), 1), f"reading {key}")
        data = complete_lines(store.get(key))
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            n_bad += 1
            if len(errors) < MAX_ERRORS_KEPT:
                errors.append(f"{key}: not UTF-8 text ({exc})")
            continue
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                inputs, outputs = parse_capture_record(record, feature_order)
            except (ValueError, TypeError, KeyError, QCBRError, json.JSONDecodeError) as exc:
                n_bad += 1
                if len(errors) < MAX_ERRORS_KEPT:
                    errors.append(f"{key}:{line_no}: {exc}")
                continue
            when = outputs[0]["time"] if outputs else None
            if when is not None and ((since_dt and when < since_dt) or (until_dt and when >= until_dt)):
                continue
            n_records += 1
            in_rows.extend(inputs)
            out_rows.extend(outputs)
    if progress:
        progress(1.0, f"read {n_records} records from {len(keys)} files")
    inputs_df = pd.DataFrame(in_rows, dtype=object) if in_rows else pd.DataFrame()
    outputs_df = pd.DataFrame(out_rows, columns=OUTPUT_COLUMNS)
    if len(outputs_df):
        outputs_df["time"] = pd.to_datetime(outputs_df["time"], utc=True)
    return CaptureData(inputs_df, outputs_df, n_records, n_bad, errors, keys)


def read_ground_truth(store, since: Any = None) -> Any:
    """Ground-truth labels (DataFrame: inference_id, label, time) written at or after ``since``.

    A later label for the same inference id replaces an earlier one (analysts correct themselves).
    """
    import pandas as pd

    since_dt = parse_time(since, "since") if since is not None else None
    rows = []
    for key in _in_hours(store.list("ground-truth/"), since_dt, None):
        hour = key_hour(key)
        try:
            lines = store.get(key).decode("utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        for line in lines:
            try:
                rec = json.loads(line)
                gt = rec["groundTruthData"]
                iid = str(rec["eventMetadata"]["eventId"])
            except (ValueError, KeyError, TypeError):
                continue
            data = gt.get("data")
            if str(gt.get("encoding", "CSV")).upper() == "BASE64":
                data = base64.b64decode(data).decode("utf-8")
            elif str(gt.get("encoding", "CSV")).upper() == "JSON" and isinstance(data, str):
                try:
                    data = json.loads(data)
                except ValueError:
                    pass
            rows.append({"inference_id": iid, "label": canon_label(data), "time": hour, "_key": key})
    frame = pd.DataFrame(rows, columns=["inference_id", "label", "time", "_key"])
    if len(frame):
        frame = frame.sort_values(["time", "_key"], kind="stable").drop_duplicates("inference_id", keep="last")
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame.drop(columns="_key").reset_index(drop=True)


def join_ground_truth(outputs, truth) -> Any:
    """Captured predictions that have a ground-truth label: time, inference_id, predicted, actual,
    confidence, correct."""
    import pandas as pd

    cols = ["inference_id", "time", "predicted", "actual", "confidence", "correct", "best_similarity"]
    if outputs is None or truth is None or len(outputs) == 0 or len(truth) == 0:
        return pd.DataFrame(columns=cols)
    left = outputs[["inference_id", "time", "label", "confidence", "best_similarity"]].rename(columns={"label": "predicted"})
    right = truth[["inference_id", "label"]].rename(columns={"label": "actual"})
    joined = left.merge(right, on="inference_id", how="inner")
    joined["correct"] = joined["predicted"].astype(str) == joined["actual"].astype(str)
    return joined[cols].reset_index(drop=True)
