"""Local endpoints: one inference-server process per endpoint behind one local runtime gateway.

Each endpoint is a detached ``python -m qcbr.serving.server`` (SageMaker's inference-container
contract) on 127.0.0.1 and an allocated port, serving a model version extracted from its
``model.tar.gz`` into ``QCBR_HOME/endpoints/<name>/<version>/``. Clients never see that port:
they call the gateway (``python -m qcbr.serving.gateway``, one per QCBR_HOME, its address in
``gateway.json``) at ``{EndpointUrl}/endpoints/<name>/invocations``, which is exactly what an
unmodified boto3 ``sagemaker-runtime`` client sends with ``endpoint_url=EndpointUrl``. The
gateway follows ``routes.json``; rewriting it is how blue/green switches without a failed request.

The processes outlive whoever started them. The record ``endpoints/<name>.json`` is reconciled
with reality on every read: a server that died shows Failed (``restart`` brings it back); a
gateway that died is restarted on the same port when possible (it holds no state but the routes).

Two locks per endpoint: an operation lock held for a whole create/update/restart/delete (they
take seconds and must not interleave) and a short record lock around each read-modify-write, so
``describe`` never waits for an operation in progress.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from qcbr.errors import NotFoundError, StateError
from qcbr.lifecycle.checks import check_deployable, check_updatable, deploy_action, endpoint_exists, require_delete
from qcbr.lifecycle.local import procs
from qcbr.lifecycle.local.audit import append_audit
from qcbr.lifecycle.local.jobs import python_env
from qcbr.lifecycle.local.state import Paths, file_lock, try_lock, update_json
from qcbr.lifecycle.records import check_name, parse_time, utcnow
from qcbr.roles import Actor, require
from qcbr.storage import LocalObjectStore, atomic_write_json, parse_s3_uri, read_json

SERVER_MODULE = "qcbr.serving.server"
GATEWAY_MODULE = "qcbr.serving.gateway"
CREATE_TIMEOUT_S = 120.0  # model load time allowed before an endpoint is declared Failed
STOP_GRACE_S = 30.0  # uvicorn drains in-flight requests within this
ACTIVE = ("Creating", "Updating")


def endpoint_arn(name: str) -> str:
    return f"arn:aws:sagemaker:local:000000000000:endpoint/{name.lower()}"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as uvicorn binds: connections of a killed predecessor in TIME_WAIT do not block it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class EndpointManager:
    def __init__(self, paths: Paths, store: LocalObjectStore, model_version: Callable[[int], dict]):
        self.paths = paths
        self.store = store
        self.model_version = model_version  # the registry's describe_model_version

    # -- records --------------------------------------------------------------------------------
    def _record_lock(self, name: str) -> Path:
        return self.paths.lock(f"endpoint-{name}")

    def _op_lock(self, name: str) -> Path:
        return self.paths.lock(f"endpoint-{name}.op")

    def _read(self, name: str) -> dict:
        check_name("endpoint", name)
        try:
            return read_json(self.paths.endpoint_record(name))
        except FileNotFoundError:
            raise NotFoundError(f"no endpoint named {name!r}; see `qcbr endpoints list`") from None

    def _update(self, name: str, change: Callable[[dict], Any]) -> dict:
        return update_json(self.paths.endpoint_record(name), self._record_lock(name), change)

    def _set_status(self, name: str, status: str, reason: str | None = None, **fields: Any) -> dict:
        def change(r: dict) -> None:
            r["EndpointStatus"] = status
            r["FailureReason"] = reason
            r["LastModifiedTime"] = utcnow()
            for key, value in fields.items():
                if key in ("Variant",):
                    r["Internal"][key] = value
                else:
                    r[key] = value
        return self._update(name, change)

    def names(self) -> list[str]:
        if not self.paths.endpoints.is_dir():
            return []
        return sorted(p.stem for p in self.paths.endpoints.glob("*.json") if not p.name.startswith("."))

    def endpoints_for_version(self, version: int) -> list[str]:
        out = []
        for name in self.names():
            try:
                record = read_json(self.paths.endpoint_record(name))
            except (FileNotFoundError, ValueError):
                continue
            if record.get("ModelPackageVersion") == version and record.get("EndpointStatus") != "Deleting":
                out.append(name)
        return out

    # -- processes ------------------------------------------------------------------------------
    def _variant_alive(self, variant: dict | None) -> bool:
        return bool(variant) and procs.is_alive(variant.get("Pid"), SERVER_MODULE, variant.get("ModelDir", ""))

    def _prepare_model(self, name: str, version: dict) -> Path:
        """Extract model.tar.gz into endpoints/<name>/<version>/ and verify its manifest."""
        from qcbr.errors import ArtifactError
        from qcbr.model import QCBRClassifier

        number = version["ModelPackageVersion"]
        target = self.paths.endpoint_models(name) / str(number)
        if (target / "MANIFEST.json").is_file():
            QCBRClassifier.load(target)  # raises ArtifactError if anything changed on disk
            return target
        bucket, key = parse_s3_uri(version["ModelDataUrl"])
        if bucket != self.store.bucket:
            raise ArtifactError(f"{version['ModelDataUrl']} is not in the local bucket {self.store.bucket}")
        archive = self.store.path(key)
        if not archive.is_file():
            raise ArtifactError(f"model artifact {version['ModelDataUrl']} of version {number} is missing")
        staging = target.parent / f".{number}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        staging.mkdir(parents=True)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(staging, filter="data")
            QCBRClassifier.load(staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def _start_variant(self, name: str, version: dict) -> dict:
        model_dir = self._prepare_model(name, version)
        number = version["ModelPackageVersion"]
        port = procs.free_port()
        log = self.paths.endpoint_models(name) / "logs" / f"v{number}-{port}.log"
        argv = [
            sys.executable, "-m", SERVER_MODULE, "--model-dir", str(model_dir), "--host", "127.0.0.1",
            "--port", str(port), "--endpoint-name", name, "--model-version", str(number),
            "--capture-root", str(self.store.path("capture")),
        ]
        pid = procs.spawn_detached(argv, log, env=python_env(), cwd=self.paths.home)
        return {
            "VariantName": "AllTraffic", "Pid": pid, "Port": port, "Url": f"http://127.0.0.1:{port}",
            "ModelPackageVersion": number, "ModelDir": str(model_dir), "StartTime": utcnow(), "Log": str(log),
        }

    def _stop_variant(self, variant: dict | None, grace: float = STOP_GRACE_S) -> None:
        if variant and variant.get("Pid"):
            procs.stop_group(variant["Pid"], grace, SERVER_MODULE, variant.get("ModelDir", ""))

    def _exit_reason(self, variant: dict, what: str) -> str:
        tail = procs.log_tail(Path(variant.get("Log", "")), max_lines=20).strip().splitlines()
        last = next((line for line in reversed(tail) if line.strip()), "")
        return f"{what} (pid {variant.get('Pid')}, port {variant.get('Port')})" + (f"; last log line: {last}" if last else "")

    # -- gateway --------------------------------------------------------------------------------
    def _gateway_alive(self, info: dict | None) -> bool:
        return bool(info) and procs.is_alive(info.get("Pid"), GATEWAY_MODULE, str(self.paths.routes))

    def gateway_info(self) -> dict | None:
        try:
            return read_json(self.paths.gateway)
        except (FileNotFoundError, ValueError):
            return None

    def gateway_url(self, start: bool = True) -> str | None:
        """The running gateway's base URL, starting (or re-starting) it if needed and ``start``."""
        # gateway.json is written only after the gateway answered /ping, so a live pid with the
        # gateway's command line is enough: a slow answer under load must never get it restarted
        info = self.gateway_info()
        if self._gateway_alive(info):
            return info["Url"]
        if not start:
            return None
        with file_lock(self.paths.lock("gateway")):
            info = self.gateway_info()
            if self._gateway_alive(info):
                return info["Url"]
            return self._start_gateway(info)

    def _start_gateway(self, previous: dict | None) -> str:
        from qcbr.serving.gateway import write_routes

        if not self.paths.routes.is_file():
            with file_lock(self.paths.lock("routes")):
                if not self.paths.routes.is_file():
                    write_routes(self.paths.routes, {})
        last_error = ""
        for attempt in range(3):
            port = previous.get("Port") if previous and attempt == 0 else None
            if not port or not port_is_free(port):
                port = procs.free_port()
            url = f"http://127.0.0.1:{port}"
            log = self.paths.logs / "gateway.log"
            pid = procs.spawn_detached(
                [sys.executable, "-m", GATEWAY_MODULE, "--routes", str(self.paths.routes),
                 "--host", "127.0.0.1", "--port", str(port)],
                log, env=python_env(), cwd=self.paths.home,
            )
            if procs.wait_ping(url, 30.0, pid, GATEWAY_MODULE):
                atomic_write_json(self.paths.gateway, {"Pid": pid, "Port": port, "Url": url, "StartTime": utcnow(),
                                                       "Routes": str(self.paths.routes), "Log": str(log)})
                return url
            procs.stop_group(pid, 2.0, GATEWAY_MODULE)
            last_error = procs.log_tail(log, max_lines=5)
        raise StateError(f"the local runtime gateway did not start; see {self.paths.logs / 'gateway.log'}: {last_error[-300:]}")

    def stop_gateway(self) -> None:
        with file_lock(self.paths.lock("gateway")):
            info = self.gateway_info()
            if self._gateway_alive(info):
                procs.stop_group(info["Pid"], 5.0, GATEWAY_MODULE)

    def _set_route(self, name: str, url: str | None) -> None:
        """Point ``name`` at ``url`` (None removes it) and wait until the gateway serves the change."""
        from qcbr.serving.gateway import wait_acknowledged, write_routes

        with file_lock(self.paths.lock("routes")):
            routes = read_json(self.paths.routes, default={}) if self.paths.routes.is_file() else {}
            if url is None:
                routes.pop(name, None)
            else:
                routes[name] = url
            sha = write_routes(self.paths.routes, routes)
            if url is None and not routes:
                return  # nothing left to route; the gateway need not be up to drop a name
            gateway = self.gateway_url(start=url is not None)
            if gateway:
                wait_acknowledged(gateway, sha, timeout=10.0)

    # -- reconcile ------------------------------------------------------------------------------
    def reconcile(self, name: str) -> dict:
        record = self._read(name)
        status = record["EndpointStatus"]
        variant = record["Internal"].get("Variant")
        if status == "InService" and self._variant_alive(variant):
            return record
        if status in ("Failed",):
            return record
        if status in ("Updating", "Deleting"):
            with try_lock(self._op_lock(name)) as free:
                if not free:
                    return record  # the operation is in progress in another process
                # its process died mid-way: settle on what is actually running
                if status == "Deleting":
                    return record  # `delete` again finishes it
                status = "InService"
        if status == "Creating" and self._variant_alive(variant) and procs.ping(variant["Url"], timeout=1.0):
            return self._settle(name, "InService", None)
        if status == "Creating" and self._variant_alive(variant):
            since = parse_time(record["Internal"].get("StatusSince") or record["LastModifiedTime"])
            if since and (datetime.now(timezone.utc) - since).total_seconds() > CREATE_TIMEOUT_S:
                self._stop_variant(variant, grace=2.0)
                return self._settle(name, "Failed", self._exit_reason(
                    variant, f"the inference server did not answer /ping within {CREATE_TIMEOUT_S:g} s"))
            return record
        if status == "Creating" and variant is None:
            since = parse_time(record["LastModifiedTime"])
            with try_lock(self._op_lock(name)) as free:
                if free and since and (datetime.now(timezone.utc) - since).total_seconds() > 30:
                    return self._settle(name, "Failed", "the endpoint's server was never started")
            return record
        if status == "InService" and self._variant_alive(variant):
            return self._settle(name, "InService", None)
        what = ("the inference server exited before answering /ping" if status == "Creating"
                else "the inference server process is not running")
        return self._settle(name, "Failed", self._exit_reason(variant or {}, what)
                            + f"; restart it with `qcbr endpoints restart {name}`")

    def _settle(self, name: str, status: str, reason: str | None) -> dict:
        def change(r: dict) -> None:
            if r["EndpointStatus"] == status:
                return
            r["EndpointStatus"] = status
            r["FailureReason"] = reason if status == "Failed" else r.get("FailureReason")
            r["LastModifiedTime"] = utcnow()
        return self._update(name, change)

    def _public(self, record: dict, gateway: str | None) -> dict:
        out = {k: v for k, v in record.items() if k != "Internal"}
        variant = record["Internal"].get("Variant") or {}
        alive = self._variant_alive(variant)
        out["EndpointUrl"] = gateway
        out["ProductionVariants"] = [{
            "VariantName": "AllTraffic",
            "ModelPackageVersion": variant.get("ModelPackageVersion", record.get("ModelPackageVersion")),
            "CurrentInstanceCount": 1 if alive else 0,
            "DesiredInstanceCount": 1,
            "VariantUrl": variant.get("Url"),
            "Pid": variant.get("Pid"),
        }]
        out["DataCaptureConfig"] = {"EnableCapture": True, "DestinationS3Uri": self.store.uri("capture"),
                                    "InitialSamplingPercentage": 100}
        return out

    def _gateway_for(self, records: list[dict]) -> str | None:
        if any(r["EndpointStatus"] in ("InService", "Creating", "Updating") for r in records):
            try:
                return self.gateway_url(start=True)  # re-attach, or bring a dead gateway back
            except StateError:
                return None
        info = self.gateway_info()
        return info["Url"] if info and self._gateway_alive(info) else None

    def describe(self, name: str) -> dict:
        record = self.reconcile(name)
        return self._public(record, self._gateway_for([record]))

    def list(self) -> list[dict]:
        records = []
        for name in self.names():
            try:
                records.append(self.reconcile(name))
            except (NotFoundError, ValueError, KeyError):
                continue
        gateway = self._gateway_for(records) if records else None
        return [self._public(r, gateway) for r in records]

    def wait(self, name: str, timeout: float = CREATE_TIMEOUT_S + 10) -> dict:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            record = self.describe(name)
            if record["EndpointStatus"] not in ACTIVE or time.monotonic() >= deadline:
                return record
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    # -- operations -----------------------------------------------------------------------------
    def create(self, actor: Actor, name: str, model_version: int, stage: str = "staging", wait: bool = False) -> dict:
        require(actor, deploy_action(stage))
        check_name("endpoint", name)
        version = self.model_version(int(model_version))
        check_deployable(version, stage)
        with file_lock(self._op_lock(name)):
            path = self.paths.endpoint_record(name)
            if path.is_file():
                existing = read_json(path)
                raise endpoint_exists(name, existing["EndpointStatus"], existing["ModelPackageVersion"],
                                      version["ModelPackageVersion"])
            now = utcnow()
            record = {
                "EndpointName": name, "EndpointArn": endpoint_arn(name), "EndpointStatus": "Creating",
                "Stage": stage, "ModelPackageVersion": version["ModelPackageVersion"],
                "CreationTime": now, "LastModifiedTime": now, "FailureReason": None, "CreatedBy": actor.name,
                "Internal": {"Variant": None, "StatusSince": now},
            }
            self.paths.endpoints.mkdir(parents=True, exist_ok=True)
            with file_lock(self._record_lock(name)):
                atomic_write_json(path, record)
            self._launch(name, version)
        append_audit(self.paths.audit, actor, "create_endpoint", name,
                     model_version=version["ModelPackageVersion"], stage=stage)
        return self.wait(name) if wait else self.describe(name)

    def _launch(self, name: str, version: dict) -> None:
        """Start a variant for a Creating record and route to it; failures end Failed and raise."""
        try:
            variant = self._start_variant(name, version)
        except Exception as exc:
            self._set_status(name, "Failed", f"could not start the inference server: {exc}")
            raise StateError(f"endpoint {name}: could not start the inference server: {exc}") from exc
        self._update(name, lambda r: r["Internal"].update(Variant=variant, StatusSince=utcnow()))
        try:
            self._set_route(name, variant["Url"])
        except Exception as exc:
            self._stop_variant(variant, grace=2.0)
            self._set_status(name, "Failed", f"could not route the gateway to the endpoint: {exc}")
            raise StateError(f"endpoint {name}: could not route the gateway to it: {exc}") from exc

    def update(self, actor: Actor, name: str, model_version: int, timeout: float = CREATE_TIMEOUT_S) -> dict:
        """Blue/green: start the new server, wait for /ping, switch the route, drain the old one."""
        record = self._read(name)
        require(actor, deploy_action(record["Stage"]))
        version = self.model_version(int(model_version))
        check_deployable(version, record["Stage"])
        number = version["ModelPackageVersion"]
        with file_lock(self._op_lock(name)):
            record = self.reconcile(name)
            check_updatable(name, record["EndpointStatus"])
            old = record["Internal"]["Variant"]
            self._set_status(name, "Updating", None)
            new = None
            try:
                new = self._start_variant(name, version)
                if not procs.wait_ping(new["Url"], timeout, new["Pid"], SERVER_MODULE, new["ModelDir"]):
                    raise StateError(self._exit_reason(new, f"the new server for version {number} did not answer /ping"))
                self._set_route(name, new["Url"])
            except Exception as exc:
                if new is not None:
                    self._stop_variant(new, grace=2.0)
                # the old variant still serves: roll back to it, as SageMaker does
                self._set_status(name, "InService", f"update to model version {number} failed: {exc}")
                raise StateError(f"endpoint {name}: update to model version {number} failed: {exc}") from exc
            self._set_status(name, "InService", None, ModelPackageVersion=number, Variant=new)
            self._stop_variant(old)
            if old and old.get("ModelPackageVersion") != number:
                shutil.rmtree(self.paths.endpoint_models(name) / str(old["ModelPackageVersion"]), ignore_errors=True)
        append_audit(self.paths.audit, actor, "update_endpoint", name,
                     model_version=number, previous_version=(old or {}).get("ModelPackageVersion"))
        return self.describe(name)

    def restart(self, actor: Actor, name: str, wait: bool = False) -> dict:
        record = self._read(name)
        require(actor, deploy_action(record["Stage"]))
        with file_lock(self._op_lock(name)):
            record = self._read(name)
            if record["EndpointStatus"] == "Deleting":
                raise StateError(f"endpoint {name} is being deleted; delete it again to finish, then create it")
            version = self.model_version(int(record["ModelPackageVersion"]))
            self._stop_variant(record["Internal"].get("Variant"), grace=5.0)
            self._set_status(name, "Creating", None, Variant=None)
            self._update(name, lambda r: r["Internal"].update(StatusSince=utcnow()))
            self._launch(name, version)
        append_audit(self.paths.audit, actor, "restart_endpoint", name, model_version=version["ModelPackageVersion"])
        return self.wait(name) if wait else self.describe(name)

    def delete(self, actor: Actor, name: str) -> None:
        require_delete(actor, self._read(name))
        with file_lock(self._op_lock(name)):
            record = self._read(name)
            self._set_status(name, "Deleting", None)
            self._set_route(name, None)
            self._stop_variant(record["Internal"].get("Variant"))
            with file_lock(self._record_lock(name)):
                self.paths.endpoint_record(name).unlink(missing_ok=True)
            shutil.rmtree(self.paths.endpoint_models(name), ignore_errors=True)
        with file_lock(self.paths.lock("routes")):
            # the last endpoint is gone: stop the gateway too (under the routes lock, so a create
            # adding its route meanwhile is either seen here or starts a fresh gateway after)
            routes = read_json(self.paths.routes, default={}) if self.paths.routes.is_file() else {}
            if not routes:
                self.stop_gateway()
        append_audit(self.paths.audit, actor, "delete_endpoint", name,
                     model_version=record.get("ModelPackageVersion"), stage=record.get("Stage"))

    def kill_all(self) -> None:
        """SIGKILL every endpoint server and the gateway (tests and clean-up)."""
        for name in self.names():
            try:
                variant = read_json(self.paths.endpoint_record(name))["Internal"].get("Variant")
            except (FileNotFoundError, ValueError, KeyError):
                continue
            if self._variant_alive(variant):
                procs.signal_group(variant["Pid"], signal.SIGKILL)
        info = self.gateway_info()
        if self._gateway_alive(info):
            procs.signal_group(info["Pid"], signal.SIGKILL)
