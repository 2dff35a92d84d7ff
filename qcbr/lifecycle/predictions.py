"""Invocation through the API's Lambda handler, the prediction store and ground truth, in the bucket.

``invoke`` builds the proxy event API Gateway would send and calls the very handler the endpoint
stack deploys (``qcbr.serving.lambda_function.handler``) with the backend's bucket and a
``sagemaker-runtime`` client: the handler calls ``InvokeEndpoint`` and stores the prediction at
``predictions/yyyy/mm/dd/<id>.json``. Ground truth goes through the handler module's own writer
(SageMaker's ``groundTruthData`` lines under ``ground-truth/yyyy/mm/dd/hh/``), so both backends
write the same records byte for byte.

A backend says only how to reach its endpoints (``route``) and, where its storage allows a
faster way, how to enumerate keys (``prediction_days``, ``locator``, ``ground_truth_keys``,
``read_many``); the defaults use nothing but the ObjectStore interface.
"""
from __future__ import annotations

import abc

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

from qcbr.errors import InputError, NotFoundError, StateError
from qcbr.lifecycle.records import Audit
from qcbr.roles import Actor, require

PREDICTIONS = "predictions"
GROUND_TRUTH = "ground-truth"
_ROW_SUFFIX = re.compile(r"^(?P<base>.+)-(?P<row>\d+)$")
_ID = re.compile(r"^[A-Za-z0-9._:-]+$")


def proxy_event(actor: Actor, endpoint: str, body: str, content_type: str, stage: str,
                stage_variables: dict | None, identity: dict) -> dict:
    """The API Gateway proxy event of ``POST /endpoints/{endpoint}/predict`` by ``actor``."""
    return {
        "resource": "/endpoints/{endpoint}/predict",
        "path": f"/endpoints/{endpoint}/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": content_type, "Accept": "application/json"},
        "pathParameters": {"endpoint": endpoint},
        "queryStringParameters": None,
        "stageVariables": stage_variables,
        "requestContext": {
            "stage": stage, "httpMethod": "POST", "resourcePath": "/endpoints/{endpoint}/predict",
            "authorizer": {"principalId": actor.name, "role": actor.role},
            "identity": {**identity, "user": actor.name},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def answer(endpoint: str, response: dict) -> dict:
    """The handler's proxy response -> the invocation result, or the qcbr error its status means."""
    status = int(response.get("statusCode", 500))
    try:
        payload = json.loads(response.get("body") or "{}")
    except ValueError:
        payload = {"error": response.get("body")}
    if status == 200:
        return payload
    message = payload.get("error") or payload.get("message") or f"HTTP {status}"
    detail = payload.get("detail")
    text = f"endpoint {endpoint} refused the request: {message}" + (f" ({json.dumps(detail)[:300]})" if detail else "")
    if status == 404:
        raise NotFoundError(text)
    if 400 <= status < 500:
        raise InputError(text)
    raise StateError(f"endpoint {endpoint} failed to answer (HTTP {status}): {message}")


class PredictionStore(abc.ABC):
    """Over any ObjectStore; ``endpoints`` is the backend's endpoint part (``describe``)."""

    read_workers = 16  # objects fetched at once (network latency dominates on S3)

    def __init__(self, store: Any, endpoints: Any, audit: Audit):
        self.store = store
        self.endpoints = endpoints
        self.audit = audit

    # -- invoke ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def route(self, record: dict) -> tuple[Any, str, dict | None, dict]:
        """(sagemaker-runtime client, API stage name, stage variables, extra identity) for an endpoint."""

    def invoke(self, actor: Actor, endpoint: str, body: bytes | str | dict | list,
               content_type: str = "application/json") -> dict:
        require(actor, "invoke_endpoint")
        from qcbr.serving.lambda_function import handler

        if isinstance(body, bytes):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"the request body is not UTF-8 text (byte {exc.start} is {body[exc.start:exc.start + 1]!r}); "
                    "save the CSV or JSON as UTF-8 and send it again"
                ) from None

        record = self.endpoints.describe(endpoint)
        if record["EndpointStatus"] not in ("InService", "Updating"):
            raise StateError(
                f"endpoint {endpoint} is {record['EndpointStatus']}"
                + (f" ({record['FailureReason']})" if record.get("FailureReason") else "")
                + "; it answers once InService"
            )
        client, stage, stage_variables, identity = self.route(record)
        if isinstance(body, (dict, list)):
            body = json.dumps(body if isinstance(body, dict) else {"instances": body})
        event = proxy_event(actor, endpoint, body, content_type, stage, stage_variables, identity)
        return answer(endpoint, handler(event, None, store=self.store, runtime_client=client))

    # -- reading the bucket ---------------------------------------------------------------------
    def read_many(self, keys: list[str]) -> list[bytes | None]:
        """The objects' bytes in ``keys`` order (None for one that vanished)."""
        def one(key: str) -> bytes | None:
            try:
                return self.store.get(key)
            except NotFoundError:
                return None

        if not keys:
            return []
        if self.read_workers <= 1 or len(keys) == 1:
            return [one(k) for k in keys]
        with ThreadPoolExecutor(max_workers=min(self.read_workers, len(keys))) as pool:
            return list(pool.map(one, keys))

    def _records(self, keys: list[str]) -> list[dict]:
        out = []
        for data in self.read_many(keys):
            try:
                record = json.loads(data) if data is not None else None
            except ValueError:
                record = None
            if isinstance(record, dict):
                out.append(record)
        return out

    def prediction_days(self) -> Iterable[list[str]]:
        """The stored records' keys, one list per day, newest day first."""
        days: dict[str, list[str]] = {}
        for key in self.store.list(PREDICTIONS + "/"):
            parts = key.split("/")
            if len(parts) == 5 and parts[4].endswith(".json"):
                days.setdefault("/".join(parts[1:4]), []).append(key)
        return [days[day] for day in sorted(days, reverse=True)]

    def locator(self) -> Callable[[str], list[str]]:
        """inference id of a call -> the keys of its stored record (one listing, reused)."""
        index: dict[str, list[str]] = {}
        for key in self.store.list(PREDICTIONS + "/"):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json"):
                index.setdefault(name[:-5], []).append(key)
        return lambda base: index.get(base, [])

    def ground_truth_keys(self) -> list[str]:
        """ground-truth/yyyy/mm/dd/hh/*.jsonl, newest first."""
        return sorted((k for k in self.store.list(GROUND_TRUTH + "/") if k.endswith(".jsonl") and len(k.split("/")) == 6),
                      reverse=True)

    # -- prediction store -----------------------------------------------------------------------
    def list(self, endpoint: str | None = None, user: str | None = None, limit: int | None = None) -> list[dict]:
        """Newest first, filtered; reads one day at a time until ``limit`` is reached."""
        out: list[dict] = []
        for keys in self.prediction_days():
            batch = [r for r in self._records(keys)
                     if (not endpoint or r.get("endpoint") == endpoint) and (not user or r.get("user") == user)]
            batch.sort(key=lambda r: r.get("time") or "", reverse=True)
            out.extend(batch)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def find(self, inference_id: str, locate: Callable[[str], list[str]] | None = None) -> tuple[dict, dict]:
        """The stored record holding ``inference_id`` (a call's id, or ``<call>-<row>``) and that row."""
        locate = locate or self.locator()
        candidates = [inference_id]
        match = _ROW_SUFFIX.match(inference_id)
        if match:
            candidates.append(match.group("base"))
        for base in candidates:
            if not _ID.match(base):
                continue
            for record in self._records(locate(base)):
                for row in record.get("response", {}).get("predictions", []):
                    if row.get("inference_id") == inference_id:
                        return record, row
        raise NotFoundError(f"no stored prediction has inference id {inference_id!r}; see `qcbr predict` output "
                            "or the My predictions page for valid ids")

    # -- ground truth ---------------------------------------------------------------------------
    def submit_ground_truth(self, actor: Actor, inference_id: str, label: Any) -> dict:
        require(actor, "submit_ground_truth")
        from qcbr.serving.lambda_function import submit_ground_truth
        from qcbr.serving.payload import PayloadError

        record, row = self.find(str(inference_id))
        classes = list((row.get("probabilities") or {}).keys())
        text = label if isinstance(label, str) else str(label)
        if classes and text not in classes:
            raise InputError(
                f"label {text!r} is not a class of model version {record.get('model_version')} "
                f"(classes: {', '.join(classes)})"
            )
        try:
            result = submit_ground_truth(self.store, str(inference_id), text)
        except PayloadError as exc:
            raise InputError(exc.message) from None
        self.audit(actor, "submit_ground_truth", str(inference_id), label=text, endpoint=record.get("endpoint"),
                   predicted=row.get("label"))
        return result

    def list_ground_truth(self, endpoint: str | None = None) -> list[dict]:
        """SageMaker ground-truth records, newest first, each with what it labels alongside.

        Extra keys next to the SageMaker fields: ``inference_id``, ``label``, ``time`` (the hour
        folder), ``endpoint``, ``model_version`` and ``predicted_label`` (from the prediction store).
        """
        keys = self.ground_truth_keys()
        if not keys:
            return []
        locate = self.locator()
        found: dict[str, dict] = {}
        for key, data in zip(keys, self.read_many(keys)):
            y, m, d, h = key.split("/")[1:5]
            for line in (data or b"").decode("utf-8", "replace").splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                inference_id = item.get("eventMetadata", {}).get("eventId")
                if not inference_id or inference_id in found:
                    continue  # newest label wins
                item["inference_id"] = inference_id
                item["label"] = item.get("groundTruthData", {}).get("data")
                item["time"] = f"{y}-{m}-{d}T{h}:00:00+00:00"
                try:
                    record, row = self.find(inference_id, locate)
                    item.update(endpoint=record.get("endpoint"), model_version=record.get("model_version"),
                                predicted_label=row.get("label"))
                except NotFoundError:
                    item.update(endpoint=None, model_version=None, predicted_label=None)
                found[inference_id] = item
        items = list(found.values())
        if endpoint:
            items = [i for i in items if i.get("endpoint") == endpoint]
        return items
