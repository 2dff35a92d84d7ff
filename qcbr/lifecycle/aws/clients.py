"""boto3 clients for the aws backend, created lazily, plus AWS errors turned into qcbr errors.

boto3 is imported here, inside functions, and only when the aws backend is used: with the local
backend nothing AWS-specific is imported or contacted. ``AWS_ENDPOINT_URL`` (and boto3's
per-service ``AWS_ENDPOINT_URL_<SERVICE>``) are honoured by boto3 itself; we pass an explicit
``endpoint_url`` only when the URL came from the config file, so the environment's per-service
overrides keep working.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from qcbr.errors import ConfigError, NotFoundError, QCBRError, StateError

SETUP_HINT = "run `qcbr aws check` to see what is missing"
_NOT_FOUND_CODES = {
    "NoSuchKey", "NoSuchBucket", "404", "NotFound", "ResourceNotFound", "ResourceNotFoundException",
    "NoSuchEntity", "RepositoryNotFoundException", "ImageNotFoundException",
}
_ACCESS_CODES = {
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
}


class AwsClients:
    """One boto3 session and one client per service, shared by the backend's parts (thread-safe)."""

    def __init__(self, config: Any):
        self.config = config
        self._lock = threading.Lock()
        self._session = None
        self._clients: dict[str, Any] = {}
        self._account: str | None = None

    @property
    def region(self) -> str:
        region = self.config.aws_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError(
                "no AWS region: set AWS_DEFAULT_REGION (e.g. export AWS_DEFAULT_REGION=eu-west-1) "
                f"or aws_region in the config file; {SETUP_HINT}"
            )
        return region

    def _endpoint_url(self) -> str | None:
        url = self.config.aws_endpoint_url
        if not url or url == os.environ.get("AWS_ENDPOINT_URL"):
            return None  # boto3 reads AWS_ENDPOINT_URL (and per-service overrides) itself
        return url

    def client(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                import boto3
                from botocore.config import Config as BotoConfig

                if self._session is None:
                    self._session = boto3.session.Session(region_name=self.region)
                client = self._session.client(
                    service,
                    endpoint_url=self._endpoint_url(),
                    config=BotoConfig(retries={"max_attempts": 5, "mode": "standard"},
                                      connect_timeout=10, read_timeout=70),
                )
                self._clients[service] = client
            return client

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def sagemaker(self) -> Any:
        return self.client("sagemaker")

    @property
    def runtime(self) -> Any:
        return self.client("sagemaker-runtime")

    @property
    def logs(self) -> Any:
        return self.client("logs")

    @property
    def events(self) -> Any:
        return self.client("events")

    def account_id(self) -> str:
        if self._account is None:
            with translate("reading the caller identity (sts get-caller-identity)"):
                self._account = self.client("sts").get_caller_identity()["Account"]
        return self._account


def error_code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""


def error_message(exc: BaseException) -> str:
    if hasattr(exc, "response"):
        return str(exc.response.get("Error", {}).get("Message") or exc)
    return str(exc)


def is_not_found(exc: BaseException) -> bool:
    """SageMaker says 'not found' with a ValidationException; S3 and IAM have proper codes."""
    code = error_code(exc)
    if code in _NOT_FOUND_CODES:
        return True
    message = error_message(exc).lower()
    return code == "ValidationException" and ("not found" in message or "could not find" in message
                                              or "does not exist" in message)


@contextmanager
def translate(doing: str, not_found: str | None = None) -> Iterator[None]:
    """Turn botocore errors into qcbr errors that say what failed and what to do about it."""
    try:
        yield
    except QCBRError:
        raise
    except Exception as exc:
        from botocore.exceptions import (BotoCoreError, ClientError, EndpointConnectionError,
                                         NoCredentialsError, NoRegionError, PartialCredentialsError)

        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            raise ConfigError(
                f"no AWS credentials while {doing}: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; "
                f"{SETUP_HINT}"
            ) from None
        if isinstance(exc, NoRegionError):
            raise ConfigError(f"no AWS region while {doing}: set AWS_DEFAULT_REGION; {SETUP_HINT}") from None
        if isinstance(exc, EndpointConnectionError):
            raise ConfigError(
                f"cannot reach AWS while {doing} ({exc}); check the network or AWS_ENDPOINT_URL"
            ) from None
        if isinstance(exc, ClientError):
            code, message = error_code(exc), error_message(exc)
            if not_found is not None and is_not_found(exc):
                raise NotFoundError(not_found) from None
            if code in _ACCESS_CODES:
                raise ConfigError(
                    f"AWS refused {doing}: {code}: {message}; check the credentials and the IAM policy "
                    f"(infra/cloudformation/project.yaml grants what qcbr needs); {SETUP_HINT}"
                ) from None
            raise StateError(f"AWS failed {doing}: {code}: {message}") from None
        if isinstance(exc, BotoCoreError):
            raise StateError(f"AWS failed {doing}: {exc}") from None
        raise
