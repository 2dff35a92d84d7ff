"""Invocation, the prediction store and ground truth on the local bucket (``qcbr.lifecycle.predictions``).

What is local: the handler reaches the endpoint through the local runtime gateway (the stage
variable ``runtimeEndpointUrl``) with a runtime client holding placeholder credentials, because
botocore refuses to sign a request without any and a laptop may have none; and the bucket is a
folder, so keys are found with globs (a day's predictions, one inference id) instead of a full
listing, and read in place.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterator

from qcbr.lifecycle.local.audit import append_audit
from qcbr.lifecycle.local.endpoints import EndpointManager
from qcbr.lifecycle.local.state import Paths
from qcbr.lifecycle.predictions import GROUND_TRUTH, PREDICTIONS, PredictionStore
from qcbr.storage import LocalObjectStore


class LocalPredictions(PredictionStore):
    read_workers = 1  # local files: threads would only add overhead

    def __init__(self, paths: Paths, store: LocalObjectStore, endpoints: EndpointManager):
        super().__init__(store, endpoints, partial(append_audit, paths.audit))
        self.paths = paths
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

    def route(self, record: dict) -> tuple[Any, str, dict | None, dict]:
        url = record["EndpointUrl"] or self.endpoints.gateway_url(start=True)
        return self._runtime_client(url), "local", {"runtimeEndpointUrl": url}, {"sourceIp": "127.0.0.1"}

    def read_many(self, keys: list[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key in keys:  # keys come from our own globs: no need to resolve them against the bucket
            try:
                out.append((self.store.base / key).read_bytes())
            except OSError:
                out.append(None)
        return out

    def _keys(self, paths) -> list[str]:
        return [str(p.relative_to(self.store.base)) for p in paths]

    def prediction_days(self) -> Iterator[list[str]]:
        root = self.store.path(PREDICTIONS)
        if not root.is_dir():
            return
        days = [d for d in root.glob("*/*/*") if d.is_dir()]
        for day in sorted(days, key=lambda d: d.relative_to(root).parts, reverse=True):
            yield self._keys(day.glob("*.json"))

    def locator(self) -> Callable[[str], list[str]]:
        root = self.store.path(PREDICTIONS)
        return lambda base: self._keys(root.glob(f"*/*/*/{base}.json")) if root.is_dir() else []

    def ground_truth_keys(self) -> list[str]:
        root = self.store.path(GROUND_TRUTH)
        return self._keys(sorted(root.glob("*/*/*/*/*.jsonl"), reverse=True)) if root.is_dir() else []
