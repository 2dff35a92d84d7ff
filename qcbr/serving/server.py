"""The inference server: SageMaker's inference-container contract around a saved QCBRClassifier.

``GET /ping`` answers 200 once the model is loaded; ``POST /invocations`` (and
``POST /endpoints/{name}/invocations``, the path boto3's ``sagemaker-runtime`` client sends to an
``endpoint_url``) take ``application/json`` or ``text/csv`` and answer
``{"model_version", "predictions": [...]}``. The same module runs a local endpoint (the backend
starts it on 127.0.0.1) and the BYOC container (``serve`` with ``--host 0.0.0.0``).

Why the request path looks like this: the model and its similarity index are loaded once;
bodies are parsed without pandas (``qcbr.serving.payload``); concurrent requests are coalesced
into one batched ``predict_records`` call (``Batcher``: small batches on the event loop, large
ones on a model thread); responses are serialised with orjson; capture is queued, not written,
on the request path; the process freezes its start-up heap out of the garbage collector's way. Every error a client
can cause is a 4xx ``{"error", "detail", "message", "code"}`` (``message``/``code`` let botocore
surface it as ``ClientError``); a 500 only means a bug.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from qcbr.serving.payload import (
    DEFAULT_MAX_ROWS,
    SUPPORTED_CONTENT_TYPES,
    FeatureSchema,
    PayloadError,
    dumps_json,
    media_type,
    parse_body,
)

log = logging.getLogger("qcbr.serving.server")

DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker real-time endpoints' payload limit
INFERENCE_ID_HEADER = "x-amzn-sagemaker-inference-id"
CUSTOM_ATTRIBUTES_HEADER = "x-amzn-sagemaker-custom-attributes"
VARIANT_HEADER = "x-Amzn-Invoked-Production-Variant"
_JSON = "application/json"
_ERROR_CODES = {400: "ValidationError", 404: "ResourceNotFound", 405: "MethodNotAllowed",
                406: "NotAcceptable", 413: "PayloadTooLarge", 415: "UnsupportedMediaType",
                422: "ValidationError", 500: "InternalFailure", 503: "ServiceUnavailable"}


def error_response(status: int, error: str, detail: Any = None, headers: dict | None = None) -> Response:
    """The one error shape of the serving layer (also used by the gateway)."""
    code = _ERROR_CODES.get(status, "ValidationError" if status < 500 else "InternalFailure")
    message = error
    if detail:  # botocore keeps only "message": make it self-contained for boto3 callers
        message = f"{error}; detail: {dumps_json(detail).decode()}"[:2000]
    body = {"error": error, "detail": detail, "message": message, "code": code}
    hdrs = {"x-amzn-ErrorType": code}
    if headers:
        hdrs.update(headers)
    return Response(dumps_json(body), status_code=status, media_type=_JSON, headers=hdrs)


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes; past it, drain (so the client sees our 413) then raise."""
    declared = request.headers.get("content-length")
    hard_cap = max(4 * limit, 16 * 1024 * 1024)
    if declared is not None and declared.isdigit() and int(declared) > hard_cap:
        raise PayloadError(
            f"request body of {int(declared)} bytes exceeds the {limit}-byte limit", 413,
            {"bytes": int(declared), "limit": limit},
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > hard_cap:
            break
    if size > limit:
        raise PayloadError(
            f"request body of {size}{'+' if size > hard_cap else ''} bytes exceeds the {limit}-byte limit; "
            "send fewer instances per request", 413, {"bytes": size, "limit": limit},
        )
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Batcher:
    """Coalesce concurrent requests into one model call.

    No waiting window: a request that arrives while the model is idle runs at once (after one
    turn of the event loop, so that requests that arrived with it join it); requests that arrive
    while it is busy are taken together as the next batch. If a batch fails, each request is
    retried alone so that one bad request cannot fail its neighbours.

    Batches of up to ``inline_rows`` rows (what concurrent one-row clients make; a few ms of
    work) run on the event loop itself; larger ones on a model thread, so that /ping stays
    answered during a long request. Why not always the thread: the hand-off costs two thread
    wake-ups, and while the model thread computes, the event loop's every socket call waits for
    the GIL (CPython's convoy effect: up to the 5 ms switch interval each). Measured at 8
    concurrent clients on a loaded 2-CPU machine: p90 ~240 ms in some runs with the thread,
    ~18 ms without; at 1 client, p50 -0.2 ms.
    """

    def __init__(self, predict: Callable[[list[list[Any]], int | None], list[dict]], max_rows: int,
                 inline_rows: int = 16):
        self._predict = predict
        self._max_rows = max_rows
        self._inline_rows = inline_rows
        self._pending: list[tuple[list[list[Any]], int | None, asyncio.Future]] = []
        self._running = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qcbr-model")
        self.batches = 0
        self.requests = 0
        self.rows = 0
        self.inline = 0  # batches run on the event loop

    async def submit(self, rows: list[list[Any]], top_k: int | None) -> list[dict]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((rows, top_k, fut))
        if not self._running:
            self._running = True
            if len(self._pending) == 1 and len(rows) <= self._inline_rows:
                try:
                    await asyncio.sleep(0)  # one loop turn: requests that came with this one join
                except BaseException:  # cancelled: hand the queue to a drain so none is stranded
                    loop.create_task(self._drain())
                    raise
                if len(self._pending) == 1:  # alone: answer here, no task, no future
                    self._pending.clear()
                    self._count(1, len(rows), inline=True)
                    try:
                        return self._predict(rows, top_k)
                    finally:
                        self._running = False  # nothing can have queued: the loop was blocked
            loop.create_task(self._drain())
        return await fut

    def _count(self, requests: int, rows: int, inline: bool) -> None:
        self.batches += 1
        self.requests += requests
        self.rows += rows
        self.inline += inline

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                await asyncio.sleep(0)  # requests parsed meanwhile join this batch
                batch, size = [], 0
                rest = []
                key = self._pending[0][1]
                for item in self._pending:
                    if item[1] == key and (not batch or size + len(item[0]) <= self._max_rows):
                        batch.append(item)
                        size += len(item[0])
                    else:
                        rest.append(item)
                self._pending = rest
                await self._run_batch(loop, batch, key)
        finally:
            self._running = False

    async def _run_batch(self, loop, batch, top_k) -> None:
        rows = batch[0][0] if len(batch) == 1 else [r for item in batch for r in item[0]]
        inline = len(rows) <= self._inline_rows
        self._count(len(batch), len(rows), inline)
        try:
            if inline:
                out = self._predict(rows, top_k)
            else:
                out = await loop.run_in_executor(self._executor, self._predict, rows, top_k)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][2].done():
                    batch[0][2].set_exception(exc)
                return
            for item in batch:  # isolate the culprit
                await self._run_batch(loop, [item], top_k)
            return
        start = 0
        for item_rows, _k, fut in batch:
            end = start + len(item_rows)
            if not fut.done():
                fut.set_result(out[start:end])
            start = end

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def _manifest_version(model_dir: Path) -> str | None:
    manifest = model_dir / "MANIFEST.json"
    if manifest.is_file():
        return "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]
    return None


def _parse_version(value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _top_k_from(headers) -> int | None:
    raw = headers.get(CUSTOM_ATTRIBUTES_HEADER)
    if not raw:
        return None
    for part in raw.replace(";", ",").split(","):
        key, _, value = part.partition("=")
        if key.strip().lower() == "top_k":
            value = value.strip()
            if not value.isdigit() or not (1 <= int(value) <= 100):
                raise PayloadError(
                    f"CustomAttributes top_k={value!r} must be an integer from 1 to 100", 400,
                    {"attribute": "top_k", "got": value},
                )
            return int(value)
    return None


def _acceptable(accept: str | None) -> bool:
    if not accept:
        return True
    for part in accept.split(","):
        m = media_type(part)
        if m in ("application/json", "*/*", "application/*", ""):
            return True
    return False


def create_app(
    model_dir: str | os.PathLike,
    endpoint_name: str | None = None,
    model_version: Any = None,
    capture_root: str | os.PathLike | None = None,
    variant: str = "AllTraffic",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
    model: Any = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """Load the model once and build the app; raises ArtifactError if the model dir is bad.

    ``freeze_heap`` (the server process sets it): once started, move every object alive (the
    model, numpy/scipy/sklearn, the web stack: ~150,000 objects) out of the garbage collector's
    reach, so that its full collections, triggered by per-request garbage, scan only what
    requests create; unfrozen, each took 50+ ms on a busy machine and stalled every request
    in flight (what an endpoint's p99 is made of).
    """
    model_dir = Path(model_dir)
    if model is None:
        from qcbr.model import QCBRClassifier

        model = QCBRClassifier.load(model_dir)
    schema = FeatureSchema.from_model(model)
    memory = getattr(model, "memory_", None)
    if hasattr(memory, "prepare"):  # build the similarity search index now, not on request one
        memory.prepare()
    version = _parse_version(model_version) if model_version is not None else _manifest_version(model_dir)
    classes = [c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", [])]
    capture = None
    if capture_root is not None:
        from qcbr.serving.capture import CaptureWriter

        capture = CaptureWriter(capture_root, endpoint_name or "local", variant)

    def predict(rows: list[list[Any]], top_k: int | None) -> list[dict]:
        from qcbr.serving.payload import Parsed

        X = Parsed(rows, "JSON").to_model_input(schema)
        return model.predict_records(X, top_k=top_k)

    batcher = Batcher(predict, max_rows)
    info = {
        "endpoint": endpoint_name,
        "variant": variant,
        "model_version": version,
        "model_dir": str(model_dir),
        "features": schema.names,
        "feature_schema": schema.to_json(),
        "classes": classes,
        "epsilon": getattr(model, "epsilon", None),
        "k": getattr(model, "k_", getattr(model, "k", None)),
        "content_types": list(SUPPORTED_CONTENT_TYPES),
        "max_body_bytes": max_body_bytes,
        "max_rows": max_rows,
        "capture": capture is not None,
    }
    variant_header = {VARIANT_HEADER: variant}

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if freeze_heap:
            import gc

            gc.collect()
            gc.freeze()
        yield
        batcher.shutdown()
        if capture is not None:
            capture.close()

    app = FastAPI(title="qCBR inference server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.model = model
    app.state.schema = schema
    app.state.capture = capture
    app.state.batcher = batcher
    app.state.info = info

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "invalid request", json.loads(json.dumps(exc.errors(), default=str)))

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, exc: Exception) -> Response:  # a bug, not the client
        log.exception("unhandled error")
        return error_response(500, "internal server error", f"{type(exc).__name__}: {exc}")

    @app.get("/ping")
    async def ping() -> Response:
        return Response(b"", status_code=200, media_type=_JSON)

    @app.get("/endpoints/{name}/ping")
    async def endpoint_ping(name: str) -> Response:
        if endpoint_name is not None and name != endpoint_name:
            return _unknown_endpoint(name)
        return Response(b"", status_code=200, media_type=_JSON)

    @app.get("/info")
    async def get_info() -> Response:
        stats = {"requests": batcher.requests, "batches": batcher.batches, "rows": batcher.rows,
                 "inline": batcher.inline}
        if capture is not None:
            stats.update(capture_written=capture.written, capture_errors=capture.errors,
                         capture_last_error=capture.last_error)
        return Response(dumps_json({**info, "stats": stats}), media_type=_JSON)

    def _unknown_endpoint(name: str) -> Response:
        return error_response(
            404, f"endpoint {name!r} is not served here",
            {"endpoint": name, "served": endpoint_name},
        )

    async def invoke(request: Request) -> Response:
        try:
            body = await read_body(request, max_body_bytes)
            headers = request.headers
            if not _acceptable(headers.get("accept")):
                raise PayloadError(
                    f"cannot answer with Accept {headers.get('accept')!r}", 406, {"supported": [_JSON]}
                )
            top_k = _top_k_from(headers)
            content_type = headers.get("content-type") or _JSON
            parsed = parse_body(body, content_type, schema, max_rows)
            try:
                records = await batcher.submit(parsed.rows, top_k)
            except (PayloadError, ValueError) as exc:  # the model refused this input
                raise PayloadError(f"the model rejected the input: {exc}", 400, None) from exc
        except PayloadError as exc:
            return error_response(exc.status, exc.message, exc.detail, variant_header)
        inference_id = request.headers.get(INFERENCE_ID_HEADER)
        result: dict[str, Any] = {"model_version": version, "predictions": records}
        if inference_id:
            result["inference_id"] = inference_id
        out = dumps_json(result)
        if capture is not None:
            capture.record(body, media_type(content_type) or _JSON, parsed.encoding, out, _JSON,
                           inference_id, datetime.now(timezone.utc))
        return Response(out, media_type=_JSON, headers=variant_header)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        return await invoke(request)

    @app.post("/endpoints/{name}/invocations")
    async def endpoint_invocations(name: str, request: Request) -> Response:
        if endpoint_name is not None and name != endpoint_name:
            # drain the body so the client reads our 404 rather than a reset connection
            try:
                await read_body(request, max_body_bytes)
            except PayloadError:
                pass
            return _unknown_endpoint(name)
        return await invoke(request)

    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m qcbr.serving.server",
        description="Serve a saved QCBRClassifier with SageMaker's inference-container contract.",
    )
    p.add_argument("command", nargs="?", choices=["serve"],
                   help="SageMaker runs the container with 'serve'; accepted and ignored")
    p.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", DEFAULT_MODEL_DIR))
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; the container passes 0.0.0.0)")
    p.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    p.add_argument("--endpoint-name", default=None)
    p.add_argument("--model-version", default=None)
    p.add_argument("--capture-root", default=None, help="folder of the bucket's capture/ prefix")
    p.add_argument("--variant", default="AllTraffic")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds in-flight requests get to finish after SIGTERM")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--access-log", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from qcbr.errors import QCBRError

    try:
        app = create_app(
            args.model_dir, endpoint_name=args.endpoint_name, model_version=args.model_version,
            capture_root=args.capture_root, variant=args.variant,
            max_body_bytes=args.max_body_bytes, max_rows=args.max_rows, freeze_heap=True,
        )
    except (QCBRError, OSError) as exc:
        print(f"qcbr serve: cannot load the model from {args.model_dir}: {exc}", file=sys.stderr)
        return 1
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.access_log, timeout_graceful_shutdown=args.graceful_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
