"""The API's second Lambda: ``POST /train`` -> ``CreateTrainingJob`` on a chosen dataset version.

The project template has two entry points into training: a Git commit (CodeBuild runs
infra/buildspec.yml) and an API call, which is this handler behind the same IAM-authorised API
Gateway as the prediction Lambda. It takes the proxy event, validates the JSON body and starts
the job through the configured backend -- on AWS the ``AwsBackend`` (environment from the
endpoint stack: QCBR_BACKEND=aws, QCBR_AWS_BUCKET, QCBR_AWS_ROLE_ARN, QCBR_AWS_IMAGE_URI, ...);
locally the CLI and dashboard make the very same ``create_training_job`` call.

Body: ``{"dataset": NAME, "dataset_sha256"?: SHA, "hyperparameters"?: {name: value},
"job_name"?: NAME}``. Who may call is IAM's decision (``execute-api:Invoke`` on ``POST /train``);
the caller's IAM identity is recorded as the job's creator, acting as a data scientist.
Answers: 201 with the TrainingJob record; 400 bad body; 403 role; 404 unknown dataset;
409 job name taken; 500 misconfigured function; 502 AWS failed.
"""
from __future__ import annotations

import base64
import json
from typing import Any

_BACKEND = None  # kept warm between invocations of the same Lambda instance
BODY_KEYS = ("dataset", "dataset_sha256", "hyperparameters", "job_name")


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def handler(event: dict, context: Any = None, *, backend: Any = None) -> dict:
    """API Gateway proxy handler; always answers with a proxy response."""
    from qcbr.errors import ConfigError, NotFoundError, QCBRError, RoleError, StateError

    try:
        body = _body(event or {})
        actor = _actor(event or {})
        record = (backend or _backend()).create_training_job(
            actor, body["dataset"], body.get("hyperparameters") or {},
            job_name=body.get("job_name"), dataset_sha256=body.get("dataset_sha256"),
        )
        return _proxy(201, record)
    except _HttpError as exc:
        return _proxy(exc.status, {"error": exc.message})
    except RoleError as exc:
        return _proxy(403, {"error": str(exc)})
    except NotFoundError as exc:
        return _proxy(404, {"error": str(exc)})
    except ConfigError as exc:
        return _proxy(500, {"error": f"the function is misconfigured: {exc}"})
    except StateError as exc:
        text = str(exc)
        if text.startswith("AWS failed"):
            return _proxy(502, {"error": text})
        return _proxy(409 if "already exists" in text else 400, {"error": text})
    except (QCBRError, ValueError) as exc:
        return _proxy(400, {"error": str(exc)})


def _backend():
    global _BACKEND
    if _BACKEND is None:
        from qcbr.lifecycle import get_backend

        _BACKEND = get_backend()
    return _BACKEND


def _body(event: dict) -> dict:
    raw = event.get("body")
    if raw in (None, ""):
        raise _HttpError(400, 'empty request body; send {"dataset": "NAME", "hyperparameters": {...}}')
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw, validate=True)
        except (ValueError, TypeError):
            raise _HttpError(400, "body is flagged base64 but is not valid base64") from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _HttpError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _HttpError(400, 'body must be a JSON object like {"dataset": "NAME"}')
    unknown = sorted(set(body) - set(BODY_KEYS))
    if unknown:
        raise _HttpError(400, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(BODY_KEYS)}")
    if not isinstance(body.get("dataset"), str) or not body["dataset"].strip():
        raise _HttpError(400, 'missing "dataset": name the dataset to train on (see `qcbr cases list`)')
    hps = body.get("hyperparameters")
    if hps is not None and (not isinstance(hps, dict) or any(isinstance(v, (dict, list)) for v in hps.values())):
        raise _HttpError(400, '"hyperparameters" must be an object of name -> value, e.g. {"feature_map": "zz"}')
    for key in ("dataset_sha256", "job_name"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _HttpError(400, f'"{key}" must be a string')
    return body


def _actor(event: dict):
    """The IAM caller (API Gateway's AWS_IAM auth put it in the identity), as a data scientist."""
    from qcbr.roles import Actor

    ctx = event.get("requestContext") or {}
    ident = ctx.get("identity") or {}
    auth = ctx.get("authorizer") or {}
    name = (auth.get("principalId") or ident.get("userArn") or ident.get("caller") or ident.get("user")
            or "api")
    return Actor(str(name), "data_scientist")


def _proxy(status: int, body: dict) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "isBase64Encoded": False,
            "body": json.dumps(body, default=str)}
