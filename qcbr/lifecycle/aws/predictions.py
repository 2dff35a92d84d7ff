"""Invocation through the API's Lambda handler, the prediction store and ground truth, in S3.

``invoke`` builds the proxy event API Gateway sends and calls the very handler the endpoint
stack deploys (``qcbr.serving.lambda_function.handler``) with this backend's S3 bucket and
``sagemaker-runtime`` client: the handler calls ``InvokeEndpoint`` and stores the prediction at
``predictions/yyyy/mm/dd/<id>.json``. Ground truth goes through the handler module's own writer
(SageMaker's ``groundTruthData`` lines under ``ground-truth/yyyy/mm/dd/hh/``), so the records
are byte-for-byte those of the local backend.
"""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qcbr.errors import InputError, NotFoundError, StateError
from qcbr.lifecycle.aws.clients import AwsClients
from qcbr.lifecycle.aws.records import append_audit, get_json
from qcbr.roles import Actor, require

PREDICTIONS = "predictions"
GROUND_TRUTH = "ground-truth"
_ROW_SUFFIX = re.compile(r"^(?P<base>.+)-(?P<row>\d+)$")
_ID = re.compile(r"^[A-Za-z0-9._:-]+$")


class Predictions:
    def __init__(self, clients: AwsClients, store: Any, endpoints: Any):
        self.clients = clients
        self.store = store
        self.endpoints = endpoints

    # -- invoke ---------------------------------------------------------------------------------
    def invoke(self, actor: Actor, endpoint: str, body: bytes | str | dict | list,
               content_type: str = "application/json") -> dict:
        require(actor, "invoke_endpoint")
        from qcbr.serving.lambda_function import handler

        record = self.endpoints.describe(endpoint)
        if record["EndpointStatus"] not in ("InService", "Updating"):
            raise StateError(
                f"endpoint {endpoint} is {record['EndpointStatus']}"
                + (f" ({record['FailureReason']})" if record.get("FailureReason") else "")
                + "; it answers once InService"
            )
        if isinstance(body, (dict, list)):
            body = json.dumps(body if isinstance(body, dict) else {"instances": body})
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        event = {
            "resource": "/endpoints/{endpoint}/predict",
            "path": f"/endpoints/{endpoint}/predict",
            "httpMethod": "POST",
            "headers": {"Content-Type": content_type, "Accept": "application/json"},
            "pathParameters": {"endpoint": endpoint},
            "queryStringParameters": None,
            "stageVariables": None,
            "requestContext": {
                "stage": "qcbr", "httpMethod": "POST", "resourcePath": "/endpoints/{endpoint}/predict",
                "authorizer": {"principalId": actor.name, "role": actor.role},
                "identity": {"user": actor.name},
            },
            "body": body,
            "isBase64Encoded": False,
        }
        response = handler(event, None, store=self.store, runtime_client=self.clients.runtime)
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

    # -- prediction store -----------------------------------------------------------------------
    def _keys(self, prefix: str) -> list[str]:
        return list(self.store.list(prefix + "/"))

    def _read_many(self, keys: list[str]) -> list[dict]:
        def one(key: str) -> dict | None:
            try:
                return json.loads(self.store.get(key))
            except (NotFoundError, ValueError):
                return None

        if not keys:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
            return [r for r in pool.map(one, keys) if r is not None]

    def list(self, endpoint: str | None = None, user: str | None = None, limit: int | None = None) -> list[dict]:
        """Newest first, filtered; reads one day's objects at a time until ``limit`` is reached."""
        days: dict[str, list[str]] = {}
        for key in self._keys(PREDICTIONS):
            parts = key.split("/")
            if len(parts) == 5 and parts[4].endswith(".json"):
                days.setdefault("/".join(parts[1:4]), []).append(key)
        out: list[dict] = []
        for day in sorted(days, reverse=True):
            batch = [r for r in self._read_many(days[day])
                     if (not endpoint or r.get("endpoint") == endpoint) and (not user or r.get("user") == user)]
            batch.sort(key=lambda r: r.get("time") or "", reverse=True)
            out.extend(batch)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def _index(self) -> dict[str, str]:
        """inference id (of the call) -> key of its stored record."""
        index = {}
        for key in self._keys(PREDICTIONS):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json"):
                index[name[:-5]] = key
        return index

    def find(self, inference_id: str, index: dict[str, str] | None = None) -> tuple[dict, dict]:
        """The stored record holding ``inference_id`` and that row's prediction."""
        index = self._index() if index is None else index
        candidates = [inference_id]
        match = _ROW_SUFFIX.match(inference_id)
        if match:
            candidates.append(match.group("base"))
        for base in candidates:
            if not _ID.match(base) or base not in index:
                continue
            record = get_json(self.store, index[base], default=None) or {}
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
        append_audit(self.store, actor, "submit_ground_truth", str(inference_id), label=text,
                     endpoint=record.get("endpoint"), predicted=row.get("label"))
        return result

    def list_ground_truth(self, endpoint: str | None = None) -> list[dict]:
        """SageMaker ground-truth records, newest first, with what they label (as the local backend)."""
        keys = sorted((k for k in self._keys(GROUND_TRUTH) if k.endswith(".jsonl") and len(k.split("/")) == 6),
                      reverse=True)
        if not keys:
            return []
        index = self._index()
        texts = dict(zip(keys, self._read_texts(keys)))
        found: dict[str, dict] = {}
        for key in keys:
            y, m, d, h = key.split("/")[1:5]
            for line in texts[key].splitlines():
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
                    record, row = self.find(inference_id, index)
                    item.update(endpoint=record.get("endpoint"), model_version=record.get("model_version"),
                                predicted_label=row.get("label"))
                except NotFoundError:
                    item.update(endpoint=None, model_version=None, predicted_label=None)
                found[inference_id] = item
        items = list(found.values())
        if endpoint:
            items = [i for i in items if i.get("endpoint") == endpoint]
        return items

    def _read_texts(self, keys: list[str]) -> list[str]:
        def one(key: str) -> str:
            try:
                return self.store.get(key).decode("utf-8", "replace")
            except NotFoundError:
                return ""

        with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
            return list(pool.map(one, keys))
