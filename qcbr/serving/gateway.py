"""The local "SageMaker runtime": one stable URL in front of every local endpoint.

Clients (boto3 ``sagemaker-runtime`` with ``endpoint_url=``, the Lambda handler, the dashboard)
always call ``POST {gateway}/endpoints/{name}/invocations``; the gateway forwards to the variant
server currently routed for that endpoint. The routes live in a JSON file
``{"<endpoint>": "http://127.0.0.1:<port>"}`` that the backend rewrites atomically; the gateway
re-reads it whenever its stat (mtime, size, inode) changes, which it checks on every request, so a
switch takes effect at once without restarting anything.

Blue/green, the way the backend uses it (``write_routes`` + ``wait_acknowledged`` below):
start the new variant, wait for its /ping, rewrite the routes file, wait until ``GET /routes``
reports the new file's sha256, then SIGTERM the old variant (uvicorn lets in-flight requests
finish). A request that picked the old route just before the switch and finds the old server gone
(connection refused, or a pooled keep-alive connection the old server closed) never reached it,
so the gateway re-reads the routes and retries it; clients see no failure. Unknown endpoints get a
404 JSON; an unreachable upstream a 503 JSON with the reason.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from qcbr.serving.payload import PayloadError, dumps_json
from qcbr.serving.server import DEFAULT_MAX_BODY_BYTES, error_response, read_body
from qcbr.storage import atomic_write_bytes

log = logging.getLogger("qcbr.serving.gateway")

_FORWARD_REQUEST_B = (b"content-type", b"accept")
_FORWARD_RESPONSE = ("content-type", "x-amzn-invoked-production-variant", "x-amzn-errortype",
                     "x-amzn-sagemaker-custom-attributes")
_RETRYABLE_DELAYS = (0.0, 0.05, 0.2, 0.5)  # seconds before each retry of a request that never arrived


class RouteTable:
    """The routes file, re-read when its stat changes; a broken file keeps the last good table."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._stamp: tuple | None = None
        self.routes: dict[str, str] = {}
        self.sha256: str | None = None
        self.mtime_ns: int | None = None
        self.error: str | None = None
        self.loads = 0

    def current(self) -> dict[str, str]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp != ("missing",):
                self._stamp, self.routes, self.sha256, self.mtime_ns = ("missing",), {}, None, None
                self.error = f"routes file {self.path} does not exist"
            return self.routes
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._load(stamp)
        return self.routes

    def _load(self, stamp: tuple) -> None:
        try:
            raw = self.path.read_bytes()
            table = json.loads(raw)
            if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v.startswith(("http://", "https://"))
                for k, v in table.items()
            ):
                raise ValueError('expected {"<endpoint>": "http://host:port", ...}')
        except (OSError, ValueError) as exc:
            self.error = f"routes file {self.path} is invalid ({exc}); keeping the previous routes"
            log.error(self.error)
            self._stamp = stamp
            return
        self.routes = {k: v.rstrip("/") for k, v in table.items()}
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.mtime_ns = stamp[0]
        self.error = None
        self._stamp = stamp
        self.loads += 1

    def describe(self) -> dict[str, Any]:
        self.current()
        return {"path": str(self.path), "routes": self.routes, "sha256": self.sha256,
                "mtime_ns": self.mtime_ns, "loads": self.loads, "error": self.error}


def create_gateway_app(
    routes_file: str | os.PathLike,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    timeout: float = 60.0,
):
    """The gateway ASGI app (Starlette; FastAPI's router would add nothing here)."""
    import httpcore
    from starlette.applications import Starlette
    from starlette.routing import Route

    table = RouteTable(routes_file)
    state: dict[str, Any] = {}
    timeouts = {"timeout": {"connect": 5.0, "read": timeout, "write": timeout, "pool": timeout}}

    def pool() -> "httpcore.AsyncConnectionPool":
        # httpx's own transport, used directly: same pooling and keep-alive, a third less CPU
        # per forwarded request than going through httpx.AsyncClient's request/response models.
        p = state.get("pool")
        if p is None:
            p = state["pool"] = httpcore.AsyncConnectionPool(max_connections=256, max_keepalive_connections=64)
        return p

    async def _send(name: str, method: str, path: str, body: bytes | None, headers: list) -> Response:
        last = None
        for delay in _RETRYABLE_DELAYS:
            if delay:
                await asyncio.sleep(delay)
            base = table.current().get(name)
            if base is None:
                return error_response(404, f"endpoint {name!r} does not exist",
                                      {"endpoint": name, "known": sorted(table.routes)})
            try:
                r = await pool().request(method, base + path, headers=headers, content=body, extensions=timeouts)
            except (httpcore.ConnectError, httpcore.RemoteProtocolError, httpcore.PoolTimeout) as exc:
                # Never reached the server (refused, or a stale pooled connection it had closed):
                # safe to retry, typically against the route the backend just switched to.
                last = f"{type(exc).__name__}: {exc}"
                continue
            except httpcore.TimeoutException as exc:
                return error_response(504, f"endpoint {name!r} did not answer within {timeout:g}s",
                                      {"endpoint": name, "upstream": base, "reason": type(exc).__name__})
            except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
                return error_response(503, f"endpoint {name!r} failed while answering",
                                      {"endpoint": name, "upstream": base, "reason": f"{type(exc).__name__}: {exc}"})
            out_headers = {}
            media = None
            for k, v in r.headers:
                key = k.decode("latin-1").lower()
                if key == "content-type":
                    media = v.decode("latin-1")
                elif key in _FORWARD_RESPONSE:
                    out_headers[key] = v.decode("latin-1")
            return Response(r.content, status_code=r.status, headers=out_headers, media_type=media)
        return error_response(
            503, f"endpoint {name!r} is unreachable",
            {"endpoint": name, "upstream": table.routes.get(name), "reason": last},
        )

    async def invocations(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            body = await read_body(request, max_body_bytes)
        except PayloadError as exc:
            return error_response(exc.status, exc.message, exc.detail)
        headers = [(k, v) for k, v in request.headers.raw
                   if k.lower() in _FORWARD_REQUEST_B or k.lower().startswith(b"x-amzn-sagemaker-")]
        return await _send(name, "POST", "/invocations", body, headers)

    async def endpoint_ping(request: Request) -> Response:
        return await _send(request.path_params["name"], "GET", "/ping", None, [])

    async def endpoint_info(request: Request) -> Response:
        return await _send(request.path_params["name"], "GET", "/info", None, [])

    async def ping(_request: Request) -> Response:
        return Response(b"", status_code=200)

    async def routes(_request: Request) -> Response:
        return Response(dumps_json(table.describe()), media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return error_response(status, f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}",
                              {"routes": ["POST /endpoints/{name}/invocations", "GET /endpoints/{name}/ping",
                                          "GET /endpoints/{name}/info", "GET /routes", "GET /ping"]})

    async def internal(_request: Request, exc: Exception) -> Response:
        log.exception("gateway error")
        return error_response(500, "gateway internal error", f"{type(exc).__name__}: {exc}")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        yield
        p = state.pop("pool", None)
        if p is not None:
            await p.aclose()

    from starlette.exceptions import HTTPException

    app = Starlette(
        routes=[
            Route("/endpoints/{name}/invocations", invocations, methods=["POST"]),
            Route("/endpoints/{name}/ping", endpoint_ping, methods=["GET"]),
            Route("/endpoints/{name}/info", endpoint_info, methods=["GET"]),
            Route("/routes", routes, methods=["GET"]),
            Route("/ping", ping, methods=["GET"]),
        ],
        exception_handlers={HTTPException: not_found, Exception: internal},
        lifespan=lifespan,
    )
    app.state.routes = table
    return app


# --- helpers for the backend (stdlib only: the backend need not import httpcore) ---------------

def write_routes(path: str | os.PathLike, routes: dict[str, str]) -> str:
    """Atomically replace the routes file; returns the sha256 the gateway will acknowledge."""
    raw = json.dumps(dict(sorted(routes.items())), indent=2).encode()
    atomic_write_bytes(path, raw)
    return hashlib.sha256(raw).hexdigest()


def gateway_routes(gateway_url: str, timeout: float = 2.0) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(gateway_url.rstrip("/") + "/routes", timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_acknowledged(gateway_url: str, sha256: str, timeout: float = 10.0) -> None:
    """Block until the gateway serves the routes file whose content hashes to ``sha256``."""
    from qcbr.errors import StateError

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = gateway_routes(gateway_url)
            if last.get("sha256") == sha256:
                return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.02)
    raise StateError(
        f"the gateway at {gateway_url} did not pick up the new routes within {timeout:g}s (last answer: {last}); "
        "check that it is running and reads the same routes file"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qcbr.serving.gateway",
                                description="Local SageMaker runtime: routes /endpoints/{name}/invocations to endpoint servers.")
    p.add_argument("--routes", required=True, help='JSON file {"<endpoint>": "http://127.0.0.1:<port>"}')
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds an endpoint may take to answer")
    p.add_argument("--log-level", default="warning")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn

    app = create_gateway_app(args.routes, args.max_body_bytes, args.timeout)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
