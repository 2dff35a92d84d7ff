"""Invocation through the API's Lambda handler, the prediction store, and ground truth.

``invoke`` builds the API Gateway proxy event API Gateway would send and calls the very same
``qcbr.serving.lambda_function.handler`` the AWS stack deploys: the handler calls the endpoint
through boto3 ``sagemaker-runtime`` (here pointed at the local gateway via the stage variable
``runtimeEndpointUrl``) and stores the prediction in the bucket. Only two things are injected:
the local bucket (the handler's ``store``) and a runtime client with placeholder credentials,
because botocore refuses to sign a request without any and a laptop may have none.
"""
from __future__ import annotations

import json
import re
from typing import Any

from qcbr.errors import InputError, NotFoundError, StateError
from qcbr.lifecycle.local.audit import append_audit
from qcbr.lifecycle.local.endpoints import EndpointManager
from qcbr.lifecycle.local.state import Paths
from qcbr.roles import Actor, require
from qcbr.storage import LocalObjectStore

PREDICTIONS = "predictions"
GROUND_TRUTH = "ground-truth"
_ROW_SUFFIX = re.compile(r"^(?P<base>.+)-(?P<row>\d+)$")


class PredictionStore:
    def __init__(self, paths: Paths, store: LocalObjectStore, endpoints: EndpointManager):
        self.paths = paths
        self.store = store
        self.endpoints = endpoints
        self._clients: dict[str, Any] = {}

    def _runtime_client(self, url: str):
        client = self._clients.get(url)
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                aws_access_key_id="local", aws_secret_access_key="local",
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                              read_timeout=60, max_pool_connections=32),
            )
            self._clients[url] = client
        return client

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
        url = record["EndpointUrl"] or self.endpoints.gateway_url(start=True)
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
            "stageVariables": {"runtimeEndpointUrl": url},
            "requestContext": {
                "stage": "local", "httpMethod": "POST", "resourcePath": "/endpoints/{endpoint}/predict",
                "authorizer": {"principalId": actor.name, "role": actor.role},
                "identity": {"sourceIp": "127.0.0.1", "user": actor.name},
            },
            "body": body,
            "isBase64Encoded": False,
        }
        response = handler(event, None, store=self.store, runtime_client=self._runtime_client(url))
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
    def _days(self, prefix: str) -> list[Any]:
        root = self.store.path(prefix)
        if not root.is_dir():
            return []
        days = [d for d in root.glob("*/*/*") if d.is_dir()]
        return sorted(days, key=lambda d: d.relative_to(root).parts, reverse=True)

    def list(self, endpoint: str | None = None, user: str | None = None, limit: int | None = None) -> list[dict]:
        """Newest first, filtered; reads one day's folder at a time until ``limit`` is reached."""
        out: list[dict] = []
        for day in self._days(PREDICTIONS):
            batch = []
            for path in day.glob("*.json"):
                try:
                    record = json.loads(path.read_bytes())
                except (ValueError, OSError):
                    continue
                if endpoint and record.get("endpoint") != endpoint:
                    continue
                if user and record.get("user") != user:
                    continue
                batch.append(record)
            batch.sort(key=lambda r: r.get("time") or "", reverse=True)
            out.extend(batch)
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def find(self, inference_id: str) -> tuple[dict, dict]:
        """The stored record holding ``inference_id`` and that row's prediction."""
        candidates = [inference_id]
        match = _ROW_SUFFIX.match(inference_id)
        if match:
            candidates.append(match.group("base"))
        root = self.store.path(PREDICTIONS)
        for base in candidates:
            if not re.match(r"^[A-Za-z0-9._:-]+$", base):
                break
            for path in root.glob(f"*/*/*/{base}.json") if root.is_dir() else []:
                record = json.loads(path.read_bytes())
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
        append_audit(self.paths.audit, actor, "submit_ground_truth", str(inference_id),
                     label=text, endpoint=record.get("endpoint"), predicted=row.get("label"))
        return result

    def list_ground_truth(self, endpoint: str | None = None) -> list[dict]:
        """SageMaker ground-truth records, newest first, each with what it labels alongside.

        Extra keys next to the SageMaker fields: ``inference_id``, ``label``, ``time`` (the hour
        folder), ``endpoint``, ``model_version`` and ``predicted_label`` (from the prediction store).
        """
        root = self.store.path(GROUND_TRUTH)
        if not root.is_dir():
            return []
        found: dict[str, dict] = {}
        for path in sorted(root.glob("*/*/*/*/*.jsonl"), reverse=True):
            y, m, d, h = path.relative_to(root).parts[:4]
            for line in path.read_text(errors="replace").splitlines():
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
                    record, row = self.find(inference_id)
                    item.update(endpoint=record.get("endpoint"), model_version=record.get("model_version"),
                                predicted_label=row.get("label"))
                except NotFoundError:
                    item.update(endpoint=None, model_version=None, predicted_label=None)
                found[inference_id] = item
        items = list(found.values())
        if endpoint:
            items = [i for i in items if i.get("endpoint") == endpoint]
        return items
