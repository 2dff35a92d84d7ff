"""The API's Lambda: API Gateway proxy event -> SageMaker endpoint -> prediction stored -> response.

The same function runs in AWS Lambda (behind API Gateway, REST API v1 proxy integration) and
locally, where the backend calls ``handler`` directly. Nothing in it is local-only; the two
differences are injected:

- where the endpoint lives: ``event["stageVariables"]["runtimeEndpointUrl"]`` or the env var
  ``SAGEMAKER_RUNTIME_ENDPOINT_URL`` (the local gateway's URL); absent, boto3 talks to AWS.
- where predictions go: ``handler(event, context, store=...)`` (the local backend passes a
  ``LocalObjectStore``); else the module-level ``STORE`` if a caller set it; else an
  ``S3ObjectStore`` on the bucket named by env ``PREDICTIONS_BUCKET`` (the Lambda case).

Endpoint name: ``pathParameters.endpoint`` (``POST /endpoints/{endpoint}/predict``) or env
``ENDPOINT_NAME``. The user stored with each prediction comes from the authorizer (Cognito claims
``cognito:username``/``username``/``email``, or ``principalId`` — the local backend puts the
acting user there), else the IAM identity, else ``"anonymous"``.

Inference ids: each call gets a new uuid ``<id>``; a one-row request's prediction carries
``<id>``, row ``i`` of a batch carries ``<id>-<i>``. The record lands at
``predictions/yyyy/mm/dd/<id>.json``; ``submit_ground_truth`` writes SageMaker's ground-truth
line for any of those ids to ``ground-truth/yyyy/mm/dd/hh/<inference-id>.jsonl``.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import uuid
from datetime import datetime, timezone
from typing import Any

from qcbr.serving.payload import PayloadError

STORE = None  # optional module-level ObjectStore hook (see module docstring)
PREDICTIONS_PREFIX = "predictions"
GROUND_TRUTH_PREFIX = "ground-truth"
_INFERENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_clients: dict[tuple, Any] = {}


def handler(event: dict, context: Any = None, *, store=None, runtime_client=None) -> dict:
    """API Gateway proxy handler; always returns a proxy response, never raises for bad input."""
    try:
        return _handle(event or {}, store, runtime_client)
    except _HttpError as exc:
        return _proxy(exc.status, {"error": exc.message, "detail": exc.detail, "message": exc.message})


class _HttpError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None):
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


def _handle(event: dict, store, runtime_client) -> dict:
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    endpoint = ((event.get("pathParameters") or {}).get("endpoint") or os.environ.get("ENDPOINT_NAME") or "").strip()
    if not endpoint:
        raise _HttpError(400, "no endpoint named: call /endpoints/{endpoint}/... or set ENDPOINT_NAME")
    content_type = (headers.get("content-type") or "application/json").split(";", 1)[0].strip().lower()
    raw = _body_bytes(event)
    if content_type == "text/csv":
        body, instances = _csv_request(raw)
    elif content_type in ("application/json", ""):
        content_type = "application/json"
        body, instances = _json_request(raw)
    else:
        raise _HttpError(415, f"unsupported content type {content_type!r}; send application/json or text/csv",
                         {"supported": ["application/json", "text/csv"]})

    inference_id = str(uuid.uuid4())
    now = datetime.now(timezone.utc)
    client = runtime_client or _runtime_client(_runtime_url(event))
    response = _invoke(client, endpoint, body, content_type, inference_id)

    predictions = response.get("predictions")
    if not isinstance(predictions, list):
        raise _HttpError(502, f"endpoint {endpoint!r} answered without a predictions list", {"endpoint": endpoint})
    if len(predictions) == 1:
        ids = [inference_id]
    else:
        ids = [f"{inference_id}-{i}" for i in range(len(predictions))]
    if content_type == "text/csv":
        instances = _csv_instances(instances, len(predictions))
    result = {
        "inference_id": inference_id,
        "endpoint": endpoint,
        "model_version": response.get("model_version"),
        "predictions": [{"inference_id": pid, **pred} for pid, pred in zip(ids, predictions)],
    }
    record = {
        "inference_id": inference_id,
        "endpoint": endpoint,
        "model_version": response.get("model_version"),
        "time": now.isoformat(),
        "user": _user(event),
        "request": instances,
        "response": result,
    }
    target = store if store is not None else (STORE if STORE is not None else _s3_store())
    key = prediction_key(inference_id, now)
    try:
        target.put(key, json.dumps(record, default=_jsonable).encode())
    except Exception as exc:  # the caller must know the prediction was not recorded
        raise _HttpError(500, f"the prediction was made but could not be stored at {key}: {type(exc).__name__}: {exc}",
                         {"inference_id": inference_id}) from exc
    return _proxy(200, result, {"X-Amzn-SageMaker-Inference-Id": inference_id})


def _body_bytes(event: dict) -> bytes:
    body = event.get("body")
    if body is None or body == "":
        raise _HttpError(400, 'empty request body; send {"instances": [...]}')
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (ValueError, TypeError):
            raise _HttpError(400, "body is flagged base64 but is not valid base64") from None
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _json_request(raw: bytes) -> tuple[bytes, list]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _HttpError(400, f"body is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _HttpError(400, f"'instances' must be a list, got {type(instances).__name__}")
    elif isinstance(doc, dict) and doc:
        instances = [doc]  # one record
    else:
        instances = None
    if not instances:
        raise _HttpError(400, 'no instances: send {"instances": [{feature: value, ...}, ...]} or one record object')
    bad = [i for i, inst in enumerate(instances) if not isinstance(inst, (dict, list))]
    if bad:
        raise _HttpError(400, f"instances {bad[:10]} are not objects or lists of values", {"rows": bad[:100]})
    return json.dumps({"instances": instances}).encode(), instances


def _csv_request(raw: bytes) -> tuple[bytes, list]:
    try:
        text = raw.decode("utf-8-sig")
        rows = [r for r in csv.reader(io.StringIO(text), strict=True) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _HttpError(400, f"body is not valid UTF-8 CSV: {exc}") from None
    if not rows:
        raise _HttpError(400, "no instances: the CSV body has no rows")
    return raw, rows


def _csv_instances(rows: list[list[str]], n_predictions: int) -> list:
    """With one row more than predictions the first was a header: store records, not bare rows."""
    if len(rows) == n_predictions + 1:
        header = [c.strip() for c in rows[0]]
        return [dict(zip(header, r)) for r in rows[1:]]
    return rows


def _invoke(client, endpoint: str, body: bytes, content_type: str, inference_id: str) -> dict:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        resp = client.invoke_endpoint(
            EndpointName=endpoint, Body=body, ContentType=content_type,
            Accept="application/json", InferenceId=inference_id,
        )
        payload = resp["Body"].read()
    except ClientError as exc:
        err = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 502)
        message = err.get("Message") or str(exc)
        if err.get("Code") == "ModelError":  # AWS wraps the container's own status
            status = int(exc.response.get("OriginalStatusCode") or 424)
            message = exc.response.get("OriginalMessage") or message
        if 400 <= status < 500:
            detail = {"endpoint": endpoint, "code": err.get("Code")}
            if status == 400 and "not found" in message.lower() and "endpoint" in message.lower():
                status = 404
            raise _HttpError(status, message, detail) from None
        raise _HttpError(502, f"endpoint {endpoint!r} failed: {message}",
                         {"endpoint": endpoint, "status": status, "code": err.get("Code")}) from None
    except BotoCoreError as exc:
        raise _HttpError(502, f"endpoint {endpoint!r} is unreachable: {exc}", {"endpoint": endpoint}) from None
    try:
        return json.loads(payload)
    except ValueError:
        raise _HttpError(502, f"endpoint {endpoint!r} answered with a body that is not JSON",
                         {"endpoint": endpoint, "body": payload[:200].decode("utf-8", "replace")}) from None


def _runtime_url(event: dict) -> str | None:
    stage = event.get("stageVariables") or {}
    return stage.get("runtimeEndpointUrl") or os.environ.get("SAGEMAKER_RUNTIME_ENDPOINT_URL") or None


def _runtime_client(endpoint_url: str | None):
    """One cached client per URL (Lambda keeps the module warm between invocations)."""
    key = (endpoint_url, os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    client = _clients.get(key)
    if client is None:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "sagemaker-runtime", endpoint_url=endpoint_url, region_name=key[1] or "us-east-1",
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )
        _clients[key] = client
    return client


def _s3_store():
    from qcbr.storage import S3ObjectStore

    bucket = os.environ.get("PREDICTIONS_BUCKET")
    if not bucket:
        raise _HttpError(500, "the function is misconfigured: set PREDICTIONS_BUCKET to the predictions bucket")
    return S3ObjectStore(bucket)


def _user(event: dict) -> str:
    ctx = event.get("requestContext") or {}
    auth = ctx.get("authorizer") or {}
    claims = auth.get("claims") or {}
    for value in (claims.get("cognito:username"), claims.get("username"), claims.get("email"),
                  auth.get("principalId"), auth.get("user")):
        if value:
            return str(value)
    ident = ctx.get("identity") or {}
    for value in (ident.get("cognitoIdentityId"), ident.get("user"), ident.get("userArn"), ident.get("caller")):
        if value:
            return str(value)
    return "anonymous"


def _proxy(status: int, body: dict, headers: dict | None = None) -> dict:
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    return {"statusCode": status, "headers": hdrs, "isBase64Encoded": False,
            "body": json.dumps(body, default=_jsonable)}


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def prediction_key(inference_id: str, when: datetime) -> str:
    return f"{PREDICTIONS_PREFIX}/{when.astimezone(timezone.utc):%Y/%m/%d}/{inference_id}.json"


def ground_truth_key(inference_id: str, when: datetime) -> str:
    return f"{GROUND_TRUTH_PREFIX}/{when.astimezone(timezone.utc):%Y/%m/%d/%H}/{inference_id}.jsonl"


def ground_truth_record(inference_id: str, label: Any) -> dict:
    """SageMaker's ground-truth line; ``data`` is text (encoding CSV), as Model Monitor expects."""
    return {
        "groundTruthData": {"data": label if isinstance(label, str) else str(_jsonable(label) if hasattr(label, "item") else label),
                            "encoding": "CSV"},
        "eventMetadata": {"eventId": inference_id},
        "eventVersion": "0",
    }


def submit_ground_truth(store, inference_id: str, label: Any, time: datetime | None = None) -> dict:
    """Write the true label for a served prediction (the CBR *revise* step reads these)."""
    if not isinstance(inference_id, str) or not _INFERENCE_ID.match(inference_id):
        raise PayloadError(
            f"inference id {inference_id!r} is not valid: use the inference_id a prediction returned "
            "(letters, digits, '-', '_', '.', ':')", 400, {"inference_id": str(inference_id)[:100]},
        )
    if label is None or (isinstance(label, str) and not label.strip()):
        raise PayloadError(f"no label given for inference {inference_id}; pass the true class", 400, None)
    when = time or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    record = ground_truth_record(inference_id, label)
    store.put(ground_truth_key(inference_id, when), (json.dumps(record) + "\n").encode())
    return record
